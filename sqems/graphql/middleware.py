"""ASGI middleware around every request: request id, time limit, one log line.

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

from sqems import logs
from sqems.errors import TimedOut

log = logging.getLogger("sqems.api")

Scope = dict[str, Any]
Message = dict[str, Any]


class RequestContext:
    """Give each HTTP request an id (``X-Request-ID``, taken from the client if sent),
    stop it after ``timeout_s`` with a typed ``TIMEOUT`` error, and log it."""

    def __init__(self, app: Any, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

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

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s):
                await self.app(scope, receive, send_with_id)
        except TimeoutError:
            if not started:
                await self._timed_out(send_with_id)
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

    async def _timed_out(self, send: Any) -> None:
        error = TimedOut(f"the request took longer than {self.timeout_s:g} s and was stopped")
        body = json.dumps(
            {"errors": [{"message": error.message, "extensions": error.extensions}]}
        ).encode()
        await send({
            "type": "http.response.start",
            "status": 504,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})
