"""ASGI middleware around every request: request id, size and time limits, security
headers, one log line; and the JSON body of an error answered outside GraphQL.

Written against ASGI directly rather than Starlette's ``BaseHTTPMiddleware``, which
costs a task and a stream per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, parse
from sqems import deadline, logs
from sqems.errors import Forbidden, SqemsError, TimedOut, Unauthenticated, ValidationFailed

log = logging.getLogger("sqems.api")

Scope = dict[str, Any]
Message = dict[str, Any]
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
"""On every answer; each page adds its own Content-Security-Policy."""
OPERATIONS_PART = 64 << 10
"""What a multipart request may send before its operation is known: the ``operations``
part, and the ``map`` beside it."""


class RequestContext:
    """Give each HTTP request an id (``X-Request-ID``, taken from the client if sent),
    stop it after ``timeout_s`` with a typed ``TIMEOUT`` error, refuse a body over
    ``max_body`` bytes with a typed 413, add :data:`SECURITY_HEADERS` to the answer, and
    log it.

    A file upload — a multipart request whose operation is a mutation of only the
    fields of ``uploads`` (``importBim``, ``attachCapaEvidence``) — may carry as many
    bytes as the largest of those fields takes (``uploads[field]``) and take
    ``upload_timeout_s``: an IFC model is large and takes a while to tessellate. The
    operation is read from the form's first part (``operations``, first by the
    multipart request spec; at most :data:`OPERATIONS_PART` bytes are read to find it).
    ``authorise_upload(scope, fields)`` says who may: it raises
    :class:`Unauthenticated` or :class:`Forbidden`, answered as a 401 or 403. It is
    asked before a byte of any multipart body is read (``fields`` empty: is there a
    valid key at all?), and again for the upload's fields once they are known, before
    the file is read. Any other multipart request keeps the ordinary limits.
    """

    def __init__(
        self,
        app: Any,
        timeout_s: float,
        *,
        max_body: int = 1 << 20,
        uploads: Mapping[str, int] | None = None,
        upload_timeout_s: float = 900.0,
        authorise_upload: Callable[[Scope, frozenset[str]], None] | None = None,
        max_tokens: int = 2_000,
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.max_body = max_body
        self.uploads = dict(uploads or {})
        self.upload_timeout_s = upload_timeout_s
        self.authorise_upload = authorise_upload
        self.max_tokens = max_tokens

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
        boundary = _boundary(headers.get(b"content-type", b""))
        limit, timeout_s = self.max_body, self.timeout_s
        declared = headers.get(b"content-length", b"")
        received = 0
        too_large = False
        buffered: list[Message] = []

        async def counted_receive() -> Message:
            nonlocal received, too_large
            if buffered:  # what was read to find the operation, handed on first
                return buffered.pop(0)
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
                message["headers"] = [
                    *message.get("headers", []),
                    *SECURITY_HEADERS,
                    (b"x-request-id", rid.encode()),
                ]
            await send(message)

        try:
            async with asyncio.timeout(timeout_s) as budget:
                if boundary is not None:
                    if self.authorise_upload is not None:  # a valid key, before the body
                        self.authorise_upload(scope, frozenset())
                    # the form's first part, to see whether the operation is an upload
                    buffered[:] = await self._first_part(counted_receive, boundary)
                    fields = frozenset() if too_large else self._upload(buffered, boundary)
                    if fields:
                        if self.authorise_upload is not None:  # the role, before the file
                            self.authorise_upload(scope, fields)
                        # the form's other parts (operations, map) come on top of the file
                        limit = max(self.uploads[f] for f in fields) + OPERATIONS_PART
                        timeout_s = self.upload_timeout_s
                        budget.reschedule(asyncio.get_running_loop().time() + timeout_s)
                too_large = too_large or (declared.isdigit() and int(declared) > limit)
                if too_large:
                    await self._too_large(send_with_id, limit)
                    return
                # the deadline stops the request's worker threads at their next check
                with deadline.within(timeout_s - (time.perf_counter() - began)):
                    await self.app(scope, counted_receive, send_with_id)
            if too_large and not started:
                await self._too_large(send_with_id, limit)
        except TimeoutError:
            if not started:
                await self._timed_out(send_with_id, timeout_s)
        except (Unauthenticated, Forbidden) as exc:
            await _error(send_with_id, 401 if isinstance(exc, Unauthenticated) else 403, exc)
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

    @staticmethod
    async def _first_part(receive: Callable[[], Any], boundary: bytes) -> list[Message]:
        """The messages of the body up to the end of its first part (or all of it, or
        up to the allowance, whichever comes first)."""
        messages: list[Message] = []
        body = b""
        while True:
            message: Message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if (
                message["type"] != "http.request"
                or not message.get("more_body")
                or _part(body, boundary) is not None
                or len(body) > OPERATIONS_PART
            ):
                return messages

    def _upload(self, messages: list[Message], boundary: bytes) -> frozenset[str]:
        """The upload fields the form's ``operations`` part selects, if it is a
        mutation of upload fields only; none otherwise."""
        body = b"".join(m.get("body", b"") for m in messages)
        part = _part(body, boundary)
        if part is None or part[0] != "operations":
            return frozenset()
        try:
            operations = json.loads(part[1])
            document = parse(operations["query"], max_tokens=self.max_tokens)
            name = operations.get("operationName")
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError, GraphQLError):
            return frozenset()  # the GraphQL layer answers it with its reason
        chosen = [
            d for d in document.definitions
            if isinstance(d, OperationDefinitionNode)
            and (name is None or (d.name is not None and d.name.value == name))
        ]  # fmt: skip
        if len(chosen) != 1 or chosen[0].operation is not OperationType.MUTATION:
            return frozenset()
        selections = chosen[0].selection_set.selections
        if not all(isinstance(s, FieldNode) for s in selections):
            return frozenset()  # a fragment: not an upload this check can vouch for
        fields = frozenset(s.name.value for s in selections if isinstance(s, FieldNode))
        return fields if fields <= self.uploads.keys() else frozenset()

    async def _timed_out(self, send: Any, timeout_s: float) -> None:
        error = TimedOut(f"the request took longer than {timeout_s:g} s and was stopped")
        await _error(send, 504, error)

    async def _too_large(self, send: Any, limit: int) -> None:
        error = ValidationFailed(
            f"the request body is over the limit of {limit / 2**20:.1f} MiB "
            "(files: SQEMS_BIM_MAX_BYTES)"
        )
        await _error(send, 413, error)


_DIRECTORIES = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"()<>,;]+/)+")
"""The directories of an absolute filesystem path in a message (not a URL's path, an
MQTT topic or a unit like m/s: those do not start with a lone slash)."""


def for_clients(message: str) -> str:
    """``message`` with the directories of every absolute path left out: where the
    server keeps its files is not a client's business (the log keeps the whole message).

    >>> for_clients("SN-1 is not in the graph (store: embedded at /srv/sqems/graph.db)")
    'SN-1 is not in the graph (store: embedded at graph.db)'
    >>> for_clients("neo4j at neo4j://db:7687; topic sqems/v1/S/L/M/P")
    'neo4j at neo4j://db:7687; topic sqems/v1/S/L/M/P'
    """
    return _DIRECTORIES.sub("", message)


def error_body(error: SqemsError) -> dict[str, Any]:
    """The JSON of an error answered outside GraphQL, in the shape of a GraphQL one."""
    return {"errors": [{"message": for_clients(error.message), "extensions": error.extensions}]}


async def _error(send: Any, status: int, error: SqemsError) -> None:
    body = json.dumps(error_body(error)).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _boundary(content_type: bytes) -> bytes | None:
    """The boundary of a ``multipart/form-data`` body, None for any other."""
    if not content_type.lower().startswith(b"multipart/form-data"):
        return None
    found = re.search(rb'boundary="?([^";]+)"?', content_type)
    return found.group(1) if found else b""


def _part(body: bytes, boundary: bytes) -> tuple[str, bytes] | None:
    """The name and content of a multipart body's first part, once ``body`` holds all
    of it."""
    delimiter = b"--" + boundary
    start = body.find(delimiter)
    head_end = body.find(b"\r\n\r\n", start) if start >= 0 else -1
    end = body.find(b"\r\n" + delimiter, head_end + 4) if head_end >= 0 else -1
    if end < 0:
        return None
    name = re.search(rb'name="([^"]*)"', body[start:head_end])
    return (name.group(1).decode("latin-1") if name else ""), body[head_end + 4 : end]
