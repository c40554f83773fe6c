"""The FastAPI application: GraphQL at ``/graphql``, the web viewer at ``/viewer``,
health and readiness probes.

``create_app(settings)`` builds it; the lifespan opens the graph store and the access
store and closes them on shutdown (or uses ones handed in, which the caller closes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from typing import Any

import anyio.to_thread
import strawberry
from cross_web import HTTPException  # strawberry's HTTP errors
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.requests import HTTPConnection
from starlette.routing import Route, WebSocketRoute
from strawberry import UNSET
from strawberry.asgi import GraphQL

from graphql import GraphQLError, get_operation_ast, parse
from graphql import OperationType as GraphQLOperationType
from sqems.errors import BadRequest, Forbidden, SqemsError, Unauthenticated
from sqems.graph_model.open import open_store
from sqems.graph_model.store import GraphStore
from sqems.graphql.access import ACCESS_FILE, AccessStore, Role
from sqems.graphql.board import BoardHub
from sqems.graphql.context import Context
from sqems.graphql.ingestion import AlarmHub, IngestionRuntime
from sqems.graphql.middleware import RequestContext, error_body, for_clients
from sqems.graphql.pages import WEB, add_viewer_routes, page_policy
from sqems.graphql.schema import build_schema
from sqems.graphql.twin import ProgressHub
from sqems.ingestion import service
from sqems.quality.audit import AuditTrail, open_trail
from sqems.quality.capa import Workflow, open_on_critical_alarms
from sqems.quality.evidence import LIMITS as EVIDENCE_LIMITS
from sqems.quality.inspection import MAX_PHOTOS
from sqems.settings import Settings
from sqems.simulation.runner import TWIN_DIR, WhatIfRunner
from sqems.twin.fitting import Sampler

log = logging.getLogger("sqems.api")


def _token(request: HTTPConnection) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


UPLOADS = {"importBim": Role.ENGINEER, "attachCapaEvidence": Role.INSPECTOR,
           "reportDefect": Role.INSPECTOR}  # fmt: skip
"""The mutations that take a file, and the role each needs: only their multipart
requests, from a key with that role, get the upload limits."""


def _authorise_upload(scope: dict[str, Any], fields: frozenset[str]) -> None:
    """Refuse a multipart request unless its key works (``fields`` empty) or may send
    the files of ``fields``; a refusal is audited like any denied mutation."""
    connection = HTTPConnection(scope)
    access: AccessStore = connection.app.state.access
    principal = access.verify(_token(connection))
    needs = max((UPLOADS[f] for f in fields), default=Role.VIEWER)
    refusal: SqemsError | None = None
    if principal is None:
        refusal = Unauthenticated(
            "a multipart request (a file upload) needs a valid API key: send it as "
            "'Authorization: Bearer <key>'"
        )
    elif principal.role < needs:
        refusal = Forbidden(
            f"uploading to {', '.join(sorted(fields))} needs the {needs.label} role; key "
            f"{principal.id!r} ({principal.name}) is {principal.role.label}"
        )
    if refusal is not None:
        request_id = scope.get("state", {}).get("request_id")
        operation = ",".join(sorted(fields)) or "upload"
        access.record(principal, operation, {}, f"denied: {refusal.code}", request_id)
        raise refusal


class _View(GraphQL[Context, None]):
    """Strawberry's GraphQL endpoint, answering a request it cannot read with a typed
    JSON 400 (it answered plain text, or a 500 with a traceback in the log for a body
    that is JSON but not an object), and GraphiQL as the product's own page, whose
    scripts and styles come from this server (``_GRAPHIQL_PAGE``), not from a CDN.

    It is a plain route of the application, not a FastAPI router: a router solves its
    dependencies (the context) and wraps the endpoint on every request, which cost the
    server more than executing a small query. ``context`` makes each request's context
    from its connection (HTTP or WebSocket)."""

    max_tokens = 2_000
    """The most tokens a query may have (``SQEMS_API_MAX_TOKENS``)."""

    def __init__(
        self,
        schema: strawberry.Schema,
        context: Callable[[HTTPConnection], Awaitable[Context]],
        **options: Any,
    ) -> None:
        super().__init__(schema, **options)
        self._context = context

    async def get_context(self, request: Any, response: Any) -> Context:
        return await self._context(request)

    def parse_json(self, data: str | bytes) -> Any:
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise HTTPException(
                400, "the request body is not JSON in UTF-8 (or nests deeper than JSON may)"
            ) from exc
        if not isinstance(parsed, dict):
            raise HTTPException(
                400,
                "the request body must be a JSON object: "
                '{"query": "…", "variables": {…}, "operationName": "…"}',
            )
        return parsed

    async def execute_single(self, *args: Any, **kwargs: Any) -> Any:
        """A subscription sent as a plain HTTP request is refused with the way to send
        it: strawberry ran it as a query, failing inside with a traceback in the log."""
        data = kwargs.get("request_data")
        if data is not None and _is_subscription(data.query, data.operation_name, self.max_tokens):
            raise HTTPException(
                400,
                "a subscription runs over a WebSocket at this address "
                "(graphql-transport-ws or graphql-ws), not as an HTTP request",
            )
        return await super().execute_single(*args, **kwargs)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        try:
            return await super().run(request, context, root_value)
        except HTTPException as exc:
            return JSONResponse(error_body(BadRequest(exc.reason)), exc.status_code)

    async def render_graphql_ide(self, request: Any) -> HTMLResponse:
        nonce = secrets.token_urlsafe(18)
        html = _GRAPHIQL_PAGE.read_text().replace(_NONCE, nonce)
        policy = page_policy(html, styles=f"'nonce-{nonce}'", fonts="data:")
        return HTMLResponse(html, headers={"content-security-policy": policy})


def _is_subscription(query: str | None, operation: str | None, max_tokens: int) -> bool:
    """Whether ``query`` runs a subscription (an unreadable query, or one over
    ``max_tokens``, is left to the executor, which reports why)."""
    if not query or "subscription" not in query:
        return False
    try:
        chosen = get_operation_ast(parse(query, max_tokens=max_tokens), operation)
    except GraphQLError:
        return False
    return chosen is not None and chosen.operation == GraphQLOperationType.SUBSCRIPTION


_GRAPHIQL_PAGE = WEB / "graphiql.html"
"""GraphiQL's page: GraphiQL, React and the query builder from the pages' npm packages
(``/viewer/vendor/…``), nothing from elsewhere. Its Content-Security-Policy is the
pages' own, with two additions: styles by a nonce fresh for each response (the page's
own ``<style>``, and the ones GraphiQL's dialogs add, which take the nonce the page
hands them), and fonts as data: URLs (GraphiQL's stylesheet carries its fonts)."""
_NONCE = "CSP-NONCE"
"""Where the page's nonce goes."""


@contextmanager
def _ingestion(
    settings: Settings, store: GraphStore, trail: AuditTrail, loop: asyncio.AbstractEventLoop
) -> Iterator[IngestionRuntime]:
    """The MQTT ingestion inside the API process, its alarms fanned out to subscribers;
    a critical one opens a CAPA."""
    with service.ingestor(settings, store) as pipeline:
        hub = AlarmHub(loop)
        pipeline.sinks.append(hub.publish)
        pipeline.sinks.append(open_on_critical_alarms(Workflow(store, trail)))
        bridge = service.mqtt_ingestion(settings, pipeline)
        bridge.start()
        try:
            yield IngestionRuntime(pipeline, bridge, hub)
        finally:
            bridge.stop()


def create_app(
    settings: Settings,
    *,
    store: GraphStore | None = None,
    access: AccessStore | None = None,
) -> FastAPI:
    """The API for ``settings``; ``store``/``access`` override what settings would open.
    With ``settings.ingest`` the MQTT ingestion runs in the server too."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        own_access = access is None
        app.state.store = store or await anyio.to_thread.run_sync(lambda: open_store(settings))
        app.state.access = access or AccessStore(settings.data_dir / ACCESS_FILE)
        app.state.trail = open_trail(settings)
        app.state.ingestion = None
        app.state.board = None
        app.state.whatif = WhatIfRunner(
            app.state.store, settings.data_dir / TWIN_DIR, Sampler.of(settings)
        )
        app.state.whatif_hub = ProgressHub(asyncio.get_running_loop())
        app.state.whatif.listeners.add(app.state.whatif_hub.publish)
        try:
            with ExitStack() as stack:
                if settings.ingest:
                    loop = asyncio.get_running_loop()
                    app.state.ingestion = await anyio.to_thread.run_sync(
                        lambda: stack.enter_context(
                            _ingestion(settings, app.state.store, app.state.trail, loop)
                        )
                    )
                alarms = app.state.ingestion.hub if app.state.ingestion else None
                app.state.board = BoardHub(app.state.store, app.state.trail, alarms)
                await app.state.board.start()
                log.info(
                    "api ready",
                    extra={"store": app.state.store.description, "ingest": settings.ingest},
                )
                try:
                    yield
                finally:
                    await app.state.board.stop()
        finally:
            await anyio.to_thread.run_sync(app.state.whatif.close)
            if own_store:
                app.state.store.close()
            if own_access:
                app.state.access.close()
            app.state.trail.close()

    app = FastAPI(
        title="SQEMS",
        description="The quality knowledge graph: traceability, recall scope, containment.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    async def context(request: HTTPConnection) -> Context:
        # a primary-key lookup in a local SQLite file: cheaper inline than a thread hop
        token = _token(request)
        principal = request.app.state.access.verify(token)
        return Context(
            store=request.app.state.store,
            access=request.app.state.access,
            settings=settings,
            principal=principal,
            token=token,
            request_id=getattr(request.state, "request_id", ""),
            ingestion=request.app.state.ingestion,
            whatif=request.app.state.whatif,
            whatif_hub=request.app.state.whatif_hub,
            trail=request.app.state.trail,
            board=request.app.state.board,
        )

    graphql = _View(
        build_schema(settings),
        context,
        graphql_ide="graphiql",
        multipart_uploads_enabled=True,  # importBim; RequestContext checks the key and sizes
    )
    graphql.max_tokens = settings.api_max_tokens
    app.router.routes += [
        Route("/graphql", graphql, methods=["GET", "POST"], include_in_schema=False),
        WebSocketRoute("/graphql", graphql),
    ]
    add_viewer_routes(app, settings, _token)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        """The graph store answers, and the ingestion running here (if any) works."""
        store_ = request.app.state.store
        try:
            nodes = await anyio.to_thread.run_sync(store_.count)
        except SqemsError as exc:
            reason = for_clients(exc.message)
            return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
        ingestion = request.app.state.ingestion
        if ingestion is not None and not ingestion.ingestor.health.healthy:
            reason = for_clients(f"ingestion is unhealthy: {ingestion.ingestor.health.reason}")
            return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
        # the store's description names its file: a client gets it without the path
        where = for_clients(store_.description)
        return JSONResponse({"status": "ready", "store": where, "nodes": nodes})

    app.add_middleware(
        RequestContext,
        timeout_s=settings.api_request_timeout_s,
        uploads={
            "importBim": settings.bim_max_bytes,
            "attachCapaEvidence": max(EVIDENCE_LIMITS.values()),
            "reportDefect": MAX_PHOTOS * EVIDENCE_LIMITS["photo"],
        },
        authorise_upload=_authorise_upload,
        max_tokens=settings.api_max_tokens,
    )

    return app
