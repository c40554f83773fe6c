"""GraphQL fields of ingestion: its status, the quarantine, replays, and live alarms.

When ``sqems serve --ingest`` (or ``SQEMS_INGEST=true``) runs the MQTT ingestion in the
API process, ``ingestionStatus`` reports its counters and the ``alarms`` subscription
streams every alarm as it is raised. The quarantine is a file any process can read, so
``quarantine`` and ``replayQuarantined`` work either way (a replay needs the readings
store, which the process running the ingestion holds). When the ingestion runs as
worker processes (``sqems ingest --workers N``) rather than in the API process,
``ingestionStatus`` adds up their status files. ``ingestionStatus.edges`` lists the
edge agents beside the lines as their latest retained status says (see
:mod:`sqems.ingestion.edge_records`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import strawberry
from strawberry.types import Info

from sqems.errors import ValidationFailed
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.generate import Adapted, adapted, derived
from sqems.graphql.middleware import for_clients
from sqems.graphql.types import Connection, ConnectionEdge, after_key, keyset_page, page_size
from sqems.ingestion import quarantine as q
from sqems.ingestion import service
from sqems.ingestion.broker import BrokerAccess
from sqems.ingestion.edge_records import AgentCounters, EdgeState, merge_states
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.pipeline import AlarmEvent, Health, Ingestor
from sqems.ingestion.service import open_quarantine
from sqems.ingestion.workers import WorkerStatus, statuses, totals
from sqems.settings import Settings

RAW_BYTES = 2_048
"""How much of a quarantined payload a quarantine entry shows: a page of the largest
size is at most ``api_max_page_size`` times this, whatever the payloads weigh."""
WORKER_STALE_S = 5.0
"""A worker's status older than this (it writes one every half second) no longer says
it is connected: it stopped or hangs."""


class AlarmHub:
    """Fans alarms out from the ingestion thread to every subscriber's queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queues: set[asyncio.Queue[AlarmEvent]] = set()

    def publish(self, event: AlarmEvent) -> None:
        """Called on the ingestion thread."""
        for queue in list(self.queues):
            self.loop.call_soon_threadsafe(queue.put_nowait, event)


@dataclass(slots=True)
class IngestionRuntime:
    """The MQTT ingestion running inside the API process."""

    ingestor: Ingestor
    bridge: MqttIngestion
    hub: AlarmHub
    started_at: datetime = field(default_factory=datetime.now)


def _shown(text: str | None) -> str | None:
    return for_clients(text) if text else None


@adapted(
    Health,
    description="Whether ingestion works, and what went wrong last.",
    descriptions={
        "healthy": "Its worker runs (false from the moment one died until a restarted one "
        "gets through).",
        "restarts": "Workers the watchdog started again.",
    },
)
class IngestionHealth(Adapted):
    reason: str | None = derived(
        lambda h: _shown(h.reason), description="Why it is unhealthy, while it is."
    )
    last_error: str | None = derived(
        lambda h: _shown(h.last_error),
        description="The last failure: a worker that died, a message that made the "
        "pipeline throw (quarantined alone).",
    )


@strawberry.type(description="A model an edge agent runs.")
class EdgeModel:
    kind: str = strawberry.field(description="unit-judgement or batch-risk.")
    version: str


@adapted(
    AgentCounters,
    description="What an edge agent counted since it started, as its latest status says.",
    descriptions={
        "forwarded": "Records its queue delivered to the central broker.",
        "judged": "Units it judged.",
        "alarms": "Alarms it raised at the line.",
        "stop_commands": "Stop-line commands it sent.",
    },
)
class EdgeCounters(Adapted):
    pass


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@adapted(
    EdgeState,
    name="EdgeStatus",
    description="An edge agent beside a line, as its latest status (retained on the broker) says.",
    descriptions={
        "edge": "The agent's id.",
        "online": "Connected to the central broker (false once its will message came).",
        "queue_depth": "Records in its store-and-forward queue, not yet delivered.",
        "judgements_received": "Judgement messages the central system received from it.",
    },
)
class EdgeStatus(Adapted):
    last_seen: datetime = derived(
        lambda s: datetime.fromisoformat(s.last_seen),
        description="When the central system last heard from it (a status or a judgement).",
    )
    at: datetime | None = derived(
        lambda s: _time(s.at), description="The time the agent put on its latest status."
    )
    models: list[EdgeModel] = derived(
        lambda s: [EdgeModel(kind=k, version=v) for k, v in sorted(s.models.items())],
        description="The models it runs, with their versions.",
    )


def edge_statuses(
    runtime: IngestionRuntime | None, found: list[WorkerStatus | None]
) -> list[EdgeState]:
    """The edges the ingestion in this server heard from, or the workers did."""
    if runtime is not None:
        return runtime.bridge.edge_records.states()
    return merge_states(s.edges for s in found if s is not None)


@strawberry.type(description="How ingestion is doing.")
class IngestionStatus:
    running: bool = strawberry.field(description="The MQTT ingestion runs in this server.")
    connected: bool = strawberry.field(description="It is connected to the broker.")
    health: IngestionHealth | None = strawberry.field(
        description="Its health; null when ingestion does not run in this server."
    )
    broker: str
    received: int
    accepted: int
    quarantined: int
    duplicates: int
    alarms: int
    spooled: int = strawberry.field(description="Readings waiting for the graph store.")
    quarantine_open: int = strawberry.field(description="Quarantined and not replayed OK.")
    quarantine_kept: int = strawberry.field(description="Every entry ever kept.")
    broker_dropped: int | None = strawberry.field(
        description=(
            "Messages the broker dropped since it started, for any subscriber, because a "
            "queue was full (its max_queued_messages): lost before SQEMS saw them. Null "
            "until the broker has reported it."
        )
    )
    workers: int = strawberry.field(
        default=0,
        description="How many ingestion worker processes (`sqems ingest --workers N`) the "
        "counters add up, from their status files, when ingestion does not run in this "
        "server; then `connected` says every one of them reported a connection in the "
        "last few seconds. 0 when the counters are this server's own.",
    )
    edges: list[EdgeStatus] = strawberry.field(
        default_factory=list,
        description="The edge agents beside the lines that reported to the central broker, by id.",
    )


@adapted(
    q.Entry,
    description="Something ingestion refused, kept whole with the reason.",
    descriptions={
        "item": "The reading's position in the payload.",
        "size": "The whole payload's length in bytes.",
    },
    after={"size": "raw", "raw_truncated": "size"},
)
class QuarantineEntry(Adapted):
    raw: str = derived(
        lambda e: e.raw[:RAW_BYTES].decode("utf-8", errors="backslashreplace"),
        description=f"The payload as received (UTF-8, escaped): its first {RAW_BYTES:,} "
        "bytes, the whole of it with `sqems quarantine show ID`.",
    )
    raw_truncated: bool = derived(
        lambda e: len(e.raw[:RAW_BYTES]) < e.size,
        description="`raw` is only the payload's start.",
    )


@strawberry.type(description="An alarm raised on the live readings.")
class LiveAlarm:
    uid: str
    rule: str
    severity: str
    raised_at: datetime
    machine: str | None = strawberry.field(description="Null for an alarm about ingestion.")
    parameter: str | None
    run: str | None
    value: float | None
    message: str
    stop_line: bool = strawberry.field(description="The parameter is critical: stop the line.")

    @classmethod
    def of(cls, e: AlarmEvent) -> LiveAlarm:
        a = e.alarm
        return cls(
            uid=a.uid,
            rule=a.rule,
            severity=a.severity.value,
            raised_at=a.raised_at,
            machine=e.topic.machine if e.topic else None,
            parameter=e.topic.parameter if e.topic else None,
            run=e.run,
            value=a.value,
            message=a.message,
            stop_line=e.critical,
        )


def _runtime(info: Info[Context, None]) -> IngestionRuntime | None:
    runtime: IngestionRuntime | None = info.context.ingestion
    return runtime


def _workers(settings: Settings) -> list[WorkerStatus | None]:
    """The status of each worker of the data directory's latest worker count (the one
    whose files were written last); empty when workers never ran there."""
    latest: list[WorkerStatus | None] = []
    when = ""
    for count in service.worker_counts(settings):
        found = statuses(lambda p: service.status_path(settings, p), count)
        written = max((s.updated_at for s in found if s is not None), default="")
        if written > when:
            latest, when = found, written
    return latest


def _of_workers(
    settings: Settings, found: list[WorkerStatus | None], open_: int, kept: int
) -> IngestionStatus:
    c = totals(found)
    now = datetime.now(UTC)

    def live(s: WorkerStatus | None) -> bool:
        if s is None or not s.connected:
            return False
        return (now - datetime.fromisoformat(s.updated_at)).total_seconds() <= WORKER_STALE_S

    dropped = [s.broker_dropped for s in found if s is not None and s.broker_dropped is not None]
    return IngestionStatus(
        running=False,
        connected=all(live(s) for s in found),
        health=None,
        broker=BrokerAccess.of(settings).url,
        received=c.received,
        accepted=c.accepted,
        quarantined=c.quarantined,
        duplicates=c.duplicates,
        alarms=c.alarms,
        spooled=c.spooled,
        quarantine_open=open_,
        quarantine_kept=kept,
        broker_dropped=max(dropped) if dropped else None,  # one broker: the latest count
        workers=len(found),
        edges=[EdgeStatus.of(e) for e in edge_statuses(None, found)],
    )


@strawberry.type
class IngestionQuery:
    @strawberry.field(description="Counters of the running ingestion and the quarantine.")
    async def ingestion_status(self, info: Info[Context, None]) -> IngestionStatus:
        ctx = info.context
        ctx.require(Role.VIEWER)
        runtime = _runtime(info)

        def answer() -> IngestionStatus:
            with _quarantine(ctx) as store:
                kept, open_ = store.count(), store.count(open_only=True)
            if runtime is None:
                found = _workers(ctx.settings)
                if found:
                    return _of_workers(ctx.settings, found, open_, kept)
            c = runtime.ingestor.counters if runtime else None
            h = runtime.ingestor.health if runtime else None
            return IngestionStatus(
                running=runtime is not None,
                connected=bool(runtime and runtime.bridge.connected.is_set()),
                health=IngestionHealth.of(h) if h else None,
                broker=BrokerAccess.of(ctx.settings).url,
                received=c.received if c else 0,
                accepted=c.accepted if c else 0,
                quarantined=c.quarantined if c else 0,
                duplicates=c.duplicates if c else 0,
                alarms=c.alarms if c else 0,
                spooled=c.spooled if c else 0,
                quarantine_open=open_,
                quarantine_kept=kept,
                broker_dropped=runtime.bridge.broker_dropped if runtime else None,
                edges=[EdgeStatus.of(e) for e in edge_statuses(runtime, [])],
            )

        return await ctx.call(answer)

    @strawberry.field(description="Quarantined entries, oldest first, a page at a time.")
    async def quarantine(
        self,
        info: Info[Context, None],
        first: int = 50,
        after: str | None = None,
        include_replayed: bool = False,
    ) -> Connection[QuarantineEntry]:
        ctx = info.context
        ctx.require(Role.VIEWER)

        size = page_size(first, ctx.settings.api_max_page_size)
        start = after_key(after)

        def answer() -> tuple[list[q.Entry], int]:
            with _quarantine(ctx) as store:
                rows = store.entries(
                    after=start, limit=size + 1, open_only=not include_replayed, raw_bytes=RAW_BYTES
                )
                return rows, store.count(open_only=not include_replayed)

        rows, total = await ctx.call(answer)
        page = keyset_page(rows, size, lambda e: e.id, total)
        return Connection(
            edges=[
                ConnectionEdge(cursor=e.cursor, node=QuarantineEntry.of(e.node)) for e in page.edges
            ],
            page_info=page.page_info,
            total_count=page.total_count,
        )


@strawberry.type
class IngestionSubscription:
    @strawberry.subscription(description="Alarms as the running ingestion raises them.")
    async def alarms(self, info: Info[Context, None]) -> AsyncGenerator[LiveAlarm, None]:
        info.context.require(Role.VIEWER)
        runtime = _runtime(info)
        if runtime is None:
            raise ValidationFailed(
                "ingestion does not run in this server: start it with `sqems serve --ingest`"
            )
        queue: asyncio.Queue[AlarmEvent] = asyncio.Queue()
        runtime.hub.queues.add(queue)
        try:
            while True:
                yield LiveAlarm.of(await queue.get())
        finally:
            runtime.hub.queues.discard(queue)


def replay(ctx: Context, ids: list[int]) -> list[q.Entry]:
    """Replay entries through the running ingestion's pipeline."""
    runtime: IngestionRuntime | None = ctx.ingestion
    if runtime is None:
        raise ValidationFailed(
            "replays run through the ingestion pipeline, which does not run in this server: "
            "start it with `sqems serve --ingest`, or use `sqems quarantine replay` where "
            "`sqems ingest` runs"
        )
    if not 1 <= len(ids) <= ctx.settings.api_max_page_size:
        raise ValidationFailed(f"replay 1 to {ctx.settings.api_max_page_size} entries at once")
    return [runtime.ingestor.replay(i) for i in ids]


@contextmanager
def _quarantine(ctx: Context) -> Iterator[q.Quarantine]:
    """The running ingestion's quarantine, or the data directory's opened for a moment."""
    runtime: IngestionRuntime | None = ctx.ingestion
    if runtime is not None:
        yield runtime.ingestor.quarantine
        return
    opened = open_quarantine(ctx.settings)
    try:
        yield opened
    finally:
        opened.close()
