"""What every resolver of one request can reach: the store, the caller, the loaders."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from sqems.errors import Forbidden, SqemsError, Unauthenticated
from sqems.graph_model.nodes import Node
from sqems.graph_model.store import GraphStore
from sqems.graph_model.traceability import Traceability
from sqems.graphql.access import AccessStore, ApiKey, Role
from sqems.settings import Settings

R = TypeVar("R")


class Context(BaseContext):
    """Per request. Store calls run on worker threads (they block); ``nodes`` batches
    every node lookup of one request tick into a single ``get_many``."""

    def __init__(
        self,
        *,
        store: GraphStore,
        access: AccessStore,
        settings: Settings,
        principal: ApiKey | None,
        request_id: str,
        token: str | None = None,
        ingestion: Any = None,
        whatif: Any = None,
        whatif_hub: Any = None,
        trail: Any = None,
        board: Any = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.trace = Traceability(store)
        self.access = access
        self.settings = settings
        self.principal = principal
        self.token = token
        """The key the caller sent, to check again that it still works (subscriptions)."""
        self.request_id = request_id
        self.ingestion = ingestion
        """The MQTT ingestion running in this server (an ``IngestionRuntime``), if any."""
        self.whatif = whatif
        """The server's ``WhatIfRunner``, which runs scenarios in the background."""
        self.whatif_hub = whatif_hub
        """Its progress, fanned out to subscribers (a ``ProgressHub``)."""
        self.trail = trail
        """The audit trail of quality records (an ``AuditTrail``)."""
        self.board = board
        """The server's live board (a ``BoardHub``), which subscriptions listen to."""
        self.nodes: DataLoader[str, Node | None] = DataLoader(load_fn=self._load_nodes)

    async def call(self, fn: Callable[..., R], *args: Any) -> R:
        """Run a blocking store or domain call on a worker thread.

        The thread inherits the request's deadline (:mod:`sqems.deadline`). When the
        request times out, the answer goes at once and the thread is left to stop at its
        next deadline check."""
        return await anyio.to_thread.run_sync(lambda: fn(*args), abandon_on_cancel=True)

    async def _load_nodes(self, uids: list[str]) -> list[Node | None]:
        found = await self.call(self.store.get_many, uids)
        return [found.get(uid) for uid in uids]

    async def audited(
        self, operation: str, role: Role, arguments: dict[str, Any], action: Callable[[], R]
    ) -> R:
        """Check the role, run the action on a worker thread, and write the attempt to
        the API's audit log (allowed or not, and how it ended).

        Unlike :meth:`call`, the action is not abandoned when the request times out: a
        change runs to its end (or to a deadline check, which fails it with ``TIMEOUT``)
        and the answer waits for it, so the log says how the change really ended."""
        outcome = "failed: INTERNAL_ERROR"

        def act() -> R:
            nonlocal outcome
            try:
                result = action()
            except SqemsError as exc:
                outcome = f"failed: {exc.code}"
                raise
            outcome = "ok"
            return result

        try:
            try:
                self.require(role)
            except SqemsError as exc:
                outcome = f"denied: {exc.code}"
                raise
            change = asyncio.ensure_future(anyio.to_thread.run_sync(act))
            try:
                return await asyncio.shield(change)
            except asyncio.CancelledError:
                await asyncio.wait({change})  # the outcome is known once it is done
                raise
        finally:
            await anyio.to_thread.run_sync(
                lambda: self.access.record(
                    self.principal, operation, arguments, outcome, self.request_id
                )
            )

    def key_revoked(self) -> bool:
        """Whether the key this caller was let in with has been revoked since."""
        return self.principal is not None and self.access.verify(self.token) is None

    def require(self, role: Role) -> ApiKey:
        """The caller, if their key grants ``role``; a typed error otherwise.

        Over a WebSocket, a browser cannot send headers: the key may come in the
        ``connection_init`` payload instead, as ``{"authorization": "Bearer <key>"}``.
        """
        if self.principal is None and isinstance(self.connection_params, dict):
            sent = self.connection_params.get("authorization") or ""
            token = sent[7:].strip() if sent.lower().startswith("bearer ") else sent.strip()
            self.token = token or None
            self.principal = self.access.verify(self.token)
        if self.principal is None:
            raise Unauthenticated(
                "a valid API key is required: send it as 'Authorization: Bearer <key>' "
                "(create one with `sqems apikey create`)"
            )
        if self.principal.role < role:
            raise Forbidden(
                f"this needs the {role.label} role; key {self.principal.id!r} "
                f"({self.principal.name}) is {self.principal.role.label}"
            )
        return self.principal
