"""The engineers' live board over GraphQL: ``board`` and the ``boardUpdates`` subscription.

The server keeps one :class:`BoardHub`. It learns of changes from two places: the
alarms of the ingestion running in the server (a queue on its
:class:`~sqems.graphql.ingestion.AlarmHub`, as the ``alarms`` subscription has), and the
audit trail, every API or CLI change to a CAPA, batch, unit or defect writing an entry
there: a watcher reads the trail's last sequence number every ``poll_s`` (one indexed
SQL read on a connection of its own) and counts a change when it moves. A change waits
``debounce_s`` for the ones that follow it, then the board is computed once, on a
worker thread, and handed to every subscriber; nobody watching, nothing is computed
(the next subscriber computes it afresh).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncGenerator
from contextlib import suppress

import anyio.to_thread
import strawberry
from strawberry.types import Info

from sqems.errors import AuditUnavailable, SqemsError, ValidationFailed
from sqems.graph_model.store import GraphStore
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.generate import Adapted, adapted
from sqems.graphql.ingestion import AlarmHub
from sqems.ingestion.pipeline import AlarmEvent
from sqems.quality import board as b
from sqems.quality.audit import AuditTrail

log = logging.getLogger(__name__)
DEBOUNCE_S = 0.3
"""How long a change waits for the ones that follow it before the board is recomputed."""
POLL_S = 0.5
"""How often the watcher reads the audit trail's last sequence number."""


@adapted(
    b.CardLinks,
    description="Relative URLs of the existing pages a card opens (null: nothing to show).",
    descriptions={
        "root_cause": "/investigate?complaint=… when a complaint is involved, else the SPC "
        "chart of the alarm's parameter on its machine (/dashboard?parameter=…&machine=…).",
        "recall": "/trace?parameter=…&machine=…&from=… for an alarm's excursion, "
        "/trace?batch=… for a defect's or complaint's batch.",
        "view3d": "/viewer?line=…, the line of the machine concerned.",
    },
)
class CardLinks(Adapted):
    pass


@adapted(
    b.AlarmCard,
    description="An open (not cleared) alarm.",
    descriptions={
        "severity": "minor, major or critical.",
        "capa": "The uid of the CAPA addressing the alarm (an open one first), or null.",
    },
)
class AlarmCard(Adapted):
    pass


@adapted(
    b.CapaCard,
    description="An open CAPA.",
    descriptions={
        "overdue": "Past its due date.",
        "addresses": "The uids of the defects, complaints and alarms it addresses.",
    },
)
class CapaCard(Adapted):
    pass


@adapted(
    b.CapaColumn,
    description="The open CAPAs in one workflow state.",
    descriptions={"cards": "Soonest due first (those without a due date last, oldest first)."},
)
class CapaColumn(Adapted):
    pass


@adapted(
    b.OverdueItem,
    description="A CAPA or one of its containment or corrective actions past its due date.",
    descriptions={
        "kind": '"capa" or "action".',
        "capa": "The CAPA's uid (for an action: the CAPA it belongs to).",
        "title": "The CAPA's title, or the action's text.",
        "days_overdue": "Whole days past due (0 on the day it fell due).",
    },
)
class OverdueItem(Adapted):
    pass


@adapted(
    b.Board,
    description="The engineers' board: open alarms, open CAPAs by state, overdue items.",
    descriptions={
        "alarms": "Open alarms, newest first, at most 50.",
        "alarm_count": "How many alarms are open (the list shows the newest 50).",
        "columns": "One per open CAPA state, in workflow order: reported, triaged, "
        "assigned, in_action, verifying, reopened.",
        "overdue": "CAPAs and their actions past due, oldest first.",
    },
)
class Board(Adapted):
    pass


class _TrailHead:
    """The audit trail's last sequence number, read on a read-only connection of its own
    (the trail's connection serialises writers; a reader under WAL waits for none)."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail
        self._db: sqlite3.Connection | None = None
        if trail.path is not None:
            try:
                self._db = sqlite3.connect(
                    f"file:{trail.path}?mode=ro", uri=True, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise AuditUnavailable(
                    f"the audit trail {trail.path} cannot be read for the board: {exc}"
                ) from exc

    def last(self, seen: int) -> int:
        """The newest entry's seq (``seen`` or more)."""
        if self._db is None:  # an in-memory trail: read through the trail itself
            while entries := self.trail.entries(after=seen, limit=1_000):
                seen = entries[-1].seq
            return seen
        try:
            row = self._db.execute("SELECT max(seq) FROM trail").fetchone()
        except sqlite3.Error as exc:
            raise AuditUnavailable(
                f"the audit trail {self.trail.path} cannot be read for the board: {exc}"
            ) from exc
        return max(seen, row[0] or 0)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


class BoardHub:
    """The board of one server, recomputed once per change for all its subscribers."""

    def __init__(
        self,
        store: GraphStore,
        trail: AuditTrail,
        alarms: AlarmHub | None = None,
        *,
        debounce_s: float = DEBOUNCE_S,
        poll_s: float = POLL_S,
    ) -> None:
        self.store = store
        self.trail = trail
        self.alarms = alarms
        self.debounce_s = debounce_s
        self.poll_s = poll_s
        self.computed = 0
        """Boards computed for subscribers so far (one per change while watched)."""
        self._head = _TrailHead(trail)
        self._changed = asyncio.Event()
        self._published = asyncio.Condition()
        self._latest: b.Board | None = None
        self._version = 0
        self._watching = 0
        self._computing = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        seen = await anyio.to_thread.run_sync(self._head.last, 0)
        self._tasks = [
            asyncio.create_task(self._watch_trail(seen), name="board-trail"),
            asyncio.create_task(self._publish(), name="board-publish"),
        ]
        if self.alarms is not None:
            self._tasks.append(asyncio.create_task(self._watch_alarms(), name="board-alarms"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._head.close()

    @property
    def subscribers(self) -> int:
        """Subscriptions listening now."""
        return self._watching

    def changed(self) -> None:
        """Something the board shows may have changed."""
        self._changed.set()

    async def compute(self) -> b.Board:
        """A fresh board, on a worker thread."""
        return await anyio.to_thread.run_sync(b.snapshot, self.store)

    async def updates(self) -> AsyncGenerator[b.Board, None]:
        """The board now, then after every change, until the caller stops listening."""
        self._watching += 1
        try:
            async with self._computing:
                if self._latest is None:
                    self._latest = await self.compute()
                seen, board = self._version, self._latest
            yield board
            while True:
                async with self._published:
                    while self._version <= seen:
                        await self._published.wait()
                    seen, latest = self._version, self._latest
                if latest is not None:
                    yield latest
        finally:
            self._watching -= 1

    async def _publish(self) -> None:
        while True:
            await self._changed.wait()
            await asyncio.sleep(self.debounce_s)
            self._changed.clear()
            async with self._computing:
                if not self._watching:
                    self._latest = None  # stale: the next subscriber computes it
                    continue
                try:
                    latest = await self.compute()
                except SqemsError as exc:
                    # the store is away: the subscribers keep the board they have, and
                    # the next change tries again
                    log.warning("the board could not be recomputed: %s", exc.message)
                    continue
                self.computed += 1
                # the version moves with the board, under the same lock: a subscriber
                # arriving now gets this board once, not again as an update
                async with self._published:
                    self._latest = latest
                    self._version += 1
                    self._published.notify_all()

    async def _watch_trail(self, seen: int) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                last = await anyio.to_thread.run_sync(self._head.last, seen)
            except AuditUnavailable as exc:
                log.warning("the board cannot read the audit trail: %s", exc.message)
                continue
            if last != seen:
                seen = last
                self.changed()

    async def _watch_alarms(self) -> None:
        assert self.alarms is not None
        queue: asyncio.Queue[AlarmEvent] = asyncio.Queue()
        self.alarms.queues.add(queue)
        try:
            while True:
                await queue.get()
                self.changed()
        finally:
            self.alarms.queues.discard(queue)


def _hub(info: Info[Context, None]) -> BoardHub:
    hub = info.context.board
    if not isinstance(hub, BoardHub):
        raise ValidationFailed("the live board does not run in this server (`sqems serve` runs it)")
    return hub


@strawberry.type
class BoardQuery:
    @strawberry.field(description="The engineers' board as it is now (viewer).")
    async def board(self, info: Info[Context, None]) -> Board:
        ctx = info.context
        ctx.require(Role.VIEWER)
        return Board.of(await ctx.call(b.snapshot, ctx.store))


@strawberry.type
class BoardSubscription:
    @strawberry.subscription(
        description="The board at once, then a fresh one after every change: an alarm of "
        "the ingestion running here, or any change the audit trail records (viewer)."
    )
    async def board_updates(self, info: Info[Context, None]) -> AsyncGenerator[Board, None]:
        info.context.require(Role.VIEWER)
        updates = _hub(info).updates()
        try:
            async for board in updates:
                yield Board.of(board)
        finally:
            await updates.aclose()
