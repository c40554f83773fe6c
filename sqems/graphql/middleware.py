"""ASGI middleware around every request: request id, size and time limits, one log line.

Written against ASGI directly rather than Starlette's ``BaseHTTPMiddleware``, which
costs a task and a stream per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from sqems import deadline, logs
from sqems.errors import SqemsError, TimedOut, ValidationFailed

log = logging.getLogger("sqems.api")

Scope = dict[str, Any]
Message = dict[str, Any]


class RequestContext:
    """Give each HTTP request an id (``X-Request-ID``, taken from the client if sent),
    stop it after ``timeout_s`` with a typed ``TIMEOUT`` error, refuse a body over
    ``max_body`` bytes with a typed 413, and log it.

    A multipart request (a file upload) may carry ``max_upload`` bytes and take
    ``upload_timeout_s``: an IFC model is large and takes a while to tessellate.
    """

    def __init__(
        self,
        app: Any,
        timeout_s: float,
        *,
        max_body: int = 1 << 20,
        max_upload: int = 256 << 20,
        upload_timeout_s: float = 900.0,
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.max_body = max_body
        self.max_upload = max_upload
        self.upload_timeout_s = upload_timeout_s

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        token = logs.request_id.set(rid)
        began = time.perf_counter()
        status = 500
        started = False
        upload = headers.get(b"content-type", b"").startswith(b"multipart/form-data")
        # the form's other parts (operations, map) come on top of the file
        limit = self.max_upload + (64 << 10) if upload else self.max_body
        timeout_s = self.upload_timeout_s if upload else self.timeout_s
        declared = headers.get(b"content-length", b"")
        received = 0
        too_large = declared.isdigit() and int(declared) > limit

        async def counted_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message: Message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # a body without a length, or longer than it said
                too_large = True
                return {"type": "http.disconnect"}
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            if too_large:
                await self._too_large(send_with_id, limit)
            else:
                # the deadline stops the request's worker threads at their next check
                with deadline.within(timeout_s):
                    async with asyncio.timeout(timeout_s):
                        await self.app(scope, counted_receive, send_with_id)
                if too_large and not started:
                    await self._too_large(send_with_id, limit)
        except TimeoutError:
            if not started:
                await self._timed_out(send_with_id, timeout_s)
        except Exception:
            if not (too_large and not started):
                raise
            await self._too_large(send_with_id, limit)
        finally:
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "ms": round((time.perf_counter() - began) * 1000, 1),
                },
            )
            logs.request_id.reset(token)

    async def _timed_out(self, send: Any, timeout_s: float) -> None:
        error = TimedOut(f"the request took longer than {timeout_s:g} s and was stopped")
        await _error(send, 504, error)

    async def _too_large(self, send: Any, limit: int) -> None:
        error = ValidationFailed(
            f"the request body is over the limit of {limit / 2**20:.1f} MiB "
            "(files: SQEMS_BIM_MAX_BYTES)"
        )
        await _error(send, 413, error)


async def _error(send: Any, status: int, error: SqemsError) -> None:
    body = json.dumps(
        {"errors": [{"message": error.message, "extensions": error.extensions}]}
    ).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})
