"""What edge agents send the central system: unit judgements and their own status.

An edge agent (``sqems edge run``) beside a line publishes, through its
store-and-forward queue, on the central broker:

- ``sqems/v1/{site}/{line}/edge/{edge}/judgement``: one unit judgement,
  ``{"id", "edge", "unit", "batch", "judged_at", "probability", "verdict", "threshold",
  "model": {"kind", "product", "version"}}``;
- ``sqems/v1/{site}/{line}/edge/{edge}/status`` (retained; the will message says
  ``online: false``): ``{"edge", "site", "line", "online", "at", "models": {kind:
  version}, "queue_depth", "forwarded", "judged", "alarms", "stop_commands"}``.

These topics have seven levels, so the readings subscription (six) never sees them;
:class:`~sqems.ingestion.mqtt.MqttIngestion` subscribes to :data:`SUBSCRIPTION` as well
and hands them to :class:`EdgeRecords`.

A judgement becomes a ``Judgement`` node (uid: its id, ``<edge>/<unit>/<model
version>``) linked ``JUDGES`` to its unit. The same id again is one node, counted as a
duplicate (the edge delivers at least once). A payload that is not a judgement, or
whose topic and body disagree (another edge, site or line), goes to the quarantine with
the reason.

A judgement of a unit the graph does not hold yet is not refused: units come into the
graph from the plant's ERP/MES exports, often after the line has made and judged them.
The ``Judgement`` node is written at once (it is a fact about the line, and queries by
edge or verdict see it) and its ``JUDGES`` link waits in a small SQLite file beside the
spool (``edge-pending.db``), tried again every :data:`RETRY_S` and linked the moment the
unit appears; ``pending`` counts what waits. Nothing is lost across a restart: the
waiting link is on disk before the message is acknowledged.

Forwarded alarms (``…/{machine}/{parameter}/alarm``) are not subscribed to: the edge
forwards the readings that raised them, the central pipeline runs the same rules on the
same readings in order, and an alarm's uid is made of its machine, parameter, rule and
reading time (:func:`~sqems.ingestion.pipeline.alarm_for`), so the central alarm *is*
the edge's alarm, one node. Listening to them would also hear the central system's own.

Edge status messages are kept per edge, the latest by the edge's own ``at`` time, with
when central last heard from it, for ``ingestionStatus.edges``, ``sqems ingest``'s
status files and the dashboard.

>>> EdgeTopic.parse("sqems/v1/SITE-1/LINE-A/edge/EDGE-A1/status").kind
'status'
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from sqems.errors import GraphUnavailable, ValidationFailed
from sqems.graph_model.nodes import Judgement, JudgementVerdict, Uid
from sqems.graph_model.store import Edge, GraphStore
from sqems.ingestion.payloads import PREFIX, check_levels
from sqems.ingestion.quarantine import NewEntry, Quarantine

log = logging.getLogger(__name__)


def subscription_for(readings: str) -> str:
    """The edge records of the sites and lines a reading subscription covers: a
    deployment that takes ``sqems/v1/SITE-B/+/+/+`` takes the edges of site B only.

    >>> subscription_for("sqems/v1/SITE-B/+/+/+")
    'sqems/v1/SITE-B/+/edge/+/+'
    """
    site, line = readings.split("/")[2:4]
    return f"{PREFIX}/{site}/{line}/edge/+/+"


SUBSCRIPTION = subscription_for(f"{PREFIX}/+/+/+/+")
"""Judgements and status of every edge agent (seven levels: apart from readings)."""
KINDS = ("judgement", "status")
RETRY_S = 5.0
"""How often judgements waiting for their unit are tried again."""
PENDING_FILE = "edge-pending.db"

Version = Annotated[str, StringConstraints(min_length=1, max_length=100)]
ModelKind = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelRef(_Strict):
    kind: ModelKind
    product: Uid
    version: Version


class JudgementPayload(_Strict):
    """A judgement as an edge sends it. Strict: numbers are JSON numbers, a verdict is
    ``pass`` or ``suspect``, nothing else is accepted."""

    id: Uid
    edge: Uid
    unit: Uid
    batch: Uid | None = None
    judged_at: AwareDatetime = Field(strict=False)
    probability: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    verdict: Literal["pass", "suspect"]
    threshold: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    model: ModelRef

    def node(self) -> Judgement:
        return Judgement(
            uid=self.id,
            judged_at=self.judged_at,
            probability=self.probability,
            verdict=JudgementVerdict(self.verdict),
            threshold=self.threshold,
            model_kind=self.model.kind,
            model_product=self.model.product,
            model_version=self.model.version,
            edge=self.edge,
        )


class StatusPayload(_Strict):
    """An edge's status as it publishes it (the will message may carry only ``edge``
    and ``online``)."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    edge: Uid
    site: Uid | None = None
    line: Uid | None = None
    online: bool
    at: AwareDatetime | None = Field(default=None, strict=False)
    models: dict[ModelKind, Version] = Field(default_factory=dict)
    queue_depth: int | None = Field(default=None, ge=0)
    forwarded: int = Field(default=0, ge=0)
    judged: int = Field(default=0, ge=0)
    alarms: int = Field(default=0, ge=0)
    stop_commands: int = Field(default=0, ge=0)


class EdgeTopic(NamedTuple):
    site: str
    line: str
    edge: str
    kind: str

    @classmethod
    def parse(cls, topic: str) -> EdgeTopic:
        """The parts of an edge topic; :class:`ValidationFailed` says what is wrong."""
        parts = topic.split("/")
        if len(parts) != 7 or "/".join(parts[:2]) != PREFIX or parts[4] != "edge":
            raise ValidationFailed(f"topic {topic!r} is not {PREFIX}/<site>/<line>/edge/<edge>/…")
        if parts[6] not in KINDS:
            raise ValidationFailed(
                f"topic {topic!r}: {parts[6]!r} is not an edge record ({', '.join(KINDS)})"
            )
        check_levels(topic, (("site", parts[2]), ("line", parts[3]), ("edge", parts[5])))
        return cls(parts[2], parts[3], parts[5], parts[6])


def is_edge_topic(topic: str) -> bool:
    """Whether ``topic`` is under :data:`SUBSCRIPTION` (matched as the broker does)."""
    parts = topic.split("/")
    return len(parts) == 7 and parts[0] == "sqems" and parts[1] == "v1" and parts[4] == "edge"


@dataclass(slots=True)
class EdgeCounters:
    """What central made of edge records since it started."""

    judgements: int = 0
    """Messages on judgement topics: stored + duplicates + those quarantined."""
    stored: int = 0
    """New ``Judgement`` nodes written."""
    duplicates: int = 0
    """Judgements whose id the graph already held."""
    quarantined: int = 0
    pending: int = 0
    """Judgements whose unit is not in the graph yet (their link waits)."""
    linked_late: int = 0
    """Waiting judgements linked once their unit appeared."""
    statuses: int = 0


@dataclass(slots=True)
class AgentCounters:
    """What an edge agent counted since it started, as its latest status says."""

    forwarded: int = 0
    """Records its queue delivered to the central broker."""
    judged: int = 0
    """Units it judged."""
    alarms: int = 0
    """Alarms it raised at the line."""
    stop_commands: int = 0
    """Stop-line commands it sent."""


@dataclass(slots=True)
class EdgeState:
    """The latest status of one edge agent, and when central last heard from it."""

    edge: str
    site: str
    line: str
    online: bool
    last_seen: str
    """When central received its latest status or judgement (ISO 8601, UTC)."""
    at: str | None = None
    """The time the edge put on its latest status."""
    models: dict[str, str] = field(default_factory=dict)
    """The version of each kind of model it runs."""
    queue_depth: int | None = None
    """Records waiting in its store-and-forward queue."""
    counters: AgentCounters = field(default_factory=AgentCounters)
    judgements_received: int = 0
    """Judgement messages central received from it."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> EdgeState:
        """The state written by :meth:`as_dict` (unknown keys ignored)."""
        found = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        counted = found.get("counters") or {}
        known = AgentCounters.__dataclass_fields__
        found["counters"] = AgentCounters(**{k: int(v) for k, v in counted.items() if k in known})
        found["models"] = dict(found.get("models") or {})
        return cls(**found)


def merge_states(groups: Iterable[Iterable[EdgeState]]) -> list[EdgeState]:
    """One state per edge from several workers' reports. An edge's status topic and its
    judgement topic may have different owning workers: the status is the latest by the
    edge's own time, ``last_seen`` the latest of all, ``judgements_received`` the sum."""
    found: dict[str, list[EdgeState]] = {}
    for group in groups:
        for state in group:
            found.setdefault(state.edge, []).append(state)
    merged = []
    for edge in sorted(found):
        states = found[edge]
        latest = max(states, key=lambda x: (x.at or "", x.last_seen))
        one = EdgeState.of(latest.as_dict())
        one.last_seen = max(x.last_seen for x in states)
        one.judgements_received = sum(x.judgements_received for x in states)
        merged.append(one)
    return merged


class _Pending:
    """Judgement→unit links waiting for their unit (a SQLite file, or memory)."""

    def __init__(self, path: Path | None) -> None:
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path), check_same_thread=False, timeout=30
        )
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS pending (judgement TEXT PRIMARY KEY, unit TEXT NOT "
                "NULL, since TEXT NOT NULL)"
            )

    def add(self, links: list[tuple[str, str]]) -> None:
        now = datetime.now(UTC).isoformat()
        with self._db:
            self._db.executemany(
                "INSERT INTO pending VALUES (?, ?, ?) ON CONFLICT (judgement) DO NOTHING",
                [(j, u, now) for j, u in links],
            )

    def all(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._db.execute("SELECT judgement, unit FROM pending")]

    def remove(self, judgements: list[str]) -> None:
        with self._db:
            self._db.executemany(
                "DELETE FROM pending WHERE judgement = ?", [(j,) for j in judgements]
            )

    def __len__(self) -> int:
        count: int = self._db.execute("SELECT count(*) FROM pending").fetchone()[0]
        return count

    def close(self) -> None:
        self._db.close()


class EdgeRecords:
    """Judgements into the graph, edge statuses into memory; see the module docstring.

    ``pending`` is the file where links wait for their unit (None: in memory)."""

    def __init__(self, graph: GraphStore, quarantine: Quarantine, pending: Path | None) -> None:
        self.graph = graph
        self.quarantine = quarantine
        self.counters = EdgeCounters()
        self._edges: dict[str, EdgeState] = {}
        self._lock = threading.Lock()
        self._pending = _Pending(pending)
        self.counters.pending = len(self._pending)
        self._next_retry = 0.0

    def close(self) -> None:
        self._pending.close()

    def states(self) -> list[EdgeState]:
        """Every edge heard from, by id (copies: safe to read on another thread)."""
        with self._lock:
            return [EdgeState.of(self._edges[e].as_dict()) for e in sorted(self._edges)]

    def handle_many(self, messages: Iterable[tuple[str, bytes, datetime]]) -> None:
        """Take a batch of (topic, payload, received at) off the edge topics. Raises only
        :class:`~sqems.errors.GraphUnavailable` (nothing of the batch is counted then:
        the caller keeps it and tries again)."""
        batch = list(messages)
        judged: list[tuple[JudgementPayload, EdgeTopic, datetime, bytes]] = []
        refused: list[NewEntry] = []
        statuses: list[tuple[StatusPayload, EdgeTopic, datetime]] = []
        for topic, payload, received in batch:
            try:
                where = EdgeTopic.parse(topic)
                if where.kind == "judgement":
                    j = _read(JudgementPayload, payload, "judgement")
                    _agrees(where, j.edge)
                    judged.append((j, where, received, payload))
                else:
                    s = _read(StatusPayload, payload, "edge status")
                    _agrees(where, s.edge, s.site, s.line)
                    statuses.append((s, where, received))
            except ValidationFailed as exc:
                refused.append(NewEntry(f"mqtt:{topic}", exc.message, payload, None, received))
        with self._lock:
            stored, duplicates, bad = self._write([j for j, _, _, _ in judged])
            refused += [
                NewEntry(f"mqtt:{_topic_of(w)}", reason, raw, None, r)
                for j, w, r, raw in judged
                if (reason := bad.get(j.id)) is not None
            ]
            quarantined = self.quarantine.add(refused)
            c = self.counters
            c.judgements += sum(1 for t, _, _ in batch if t.endswith("/judgement"))
            c.stored += stored
            c.duplicates += duplicates
            c.pending = len(self._pending)
            c.quarantined += quarantined
            c.statuses += len(statuses)
            for j, where, received, _ in judged:
                if j.id not in bad:
                    self._heard(where, received).judgements_received += 1
            for s, where, received in statuses:
                self._status(s, where, received)
        self.retry()

    def retry(self, *, now: bool = False) -> int:
        """Link waiting judgements whose unit is in the graph by now (at most every
        :data:`RETRY_S` unless ``now``); how many were linked."""
        if not now and time.monotonic() < self._next_retry:
            return 0
        self._next_retry = time.monotonic() + RETRY_S
        with self._lock:
            waiting = self._pending.all()
            if not waiting:
                return 0
            try:
                held = self.graph.labels([x for link in waiting for x in link])
                ready = [
                    (j, u)
                    for j, u in waiting
                    if held.get(u) == "Unit" and held.get(j) == "Judgement"
                ]
                if ready:
                    self.graph.upsert_edges(Edge("JUDGES", j, u) for j, u in ready)
            except GraphUnavailable as exc:
                log.warning("cannot link waiting judgements yet: %s", exc)
                return 0
            self._pending.remove([j for j, _ in ready])
            self.counters.pending = len(self._pending)
            self.counters.linked_late += len(ready)
        if ready:
            log.info("linked judgements whose unit arrived", extra={"linked": len(ready)})
        return len(ready)

    def _write(self, judged: list[JudgementPayload]) -> tuple[int, int, dict[str, str]]:
        """Write new judgements and their links: (stored, duplicates, refused by id
        with the reason). A duplicate's link is written again, or set waiting, too (an
        upsert: harmless), so a batch that failed half-way and comes again completes."""
        if not judged:
            return 0, 0, {}
        first: dict[str, JudgementPayload] = {}
        for j in judged:
            first.setdefault(j.id, j)
        labels = self.graph.labels([*first, *(j.unit for j in first.values())])
        bad: dict[str, str] = {}
        good: list[JudgementPayload] = []
        for uid, j in first.items():
            held = labels.get(uid)
            if held is not None and held != "Judgement":
                bad[uid] = f"judgement {uid}: the uid already belongs to a {held}"
            elif (unit := labels.get(j.unit)) not in (None, "Unit"):
                bad[uid] = f"judgement {uid}: {j.unit} is a {unit}, not a unit"
            else:
                good.append(j)
        new = [j for j in good if labels.get(j.id) is None]
        duplicates = sum(1 for j in judged if j.id not in bad) - len(new)
        linked = [j for j in good if labels.get(j.unit) == "Unit"]
        waiting = [(j.id, j.unit) for j in good if labels.get(j.unit) is None]
        with self.graph.transaction() as batch:
            batch.add_nodes(j.node() for j in new)
            batch.add_edges(Edge("JUDGES", j.id, j.unit) for j in linked)
        if waiting:  # on disk before the message is acknowledged
            self._pending.add(waiting)
        return len(new), duplicates, bad

    def _heard(self, where: EdgeTopic, received: datetime) -> EdgeState:
        state = self._edges.get(where.edge)
        if state is None:
            state = EdgeState(where.edge, where.site, where.line, True, received.isoformat())
            self._edges[where.edge] = state
        state.last_seen = max(state.last_seen, received.isoformat())
        return state

    def _status(self, s: StatusPayload, where: EdgeTopic, received: datetime) -> None:
        at = s.at.astimezone(UTC).isoformat() if s.at else None
        state = self._heard(where, received)
        newer = at is None or state.at is None or at >= state.at
        if not s.online:
            # the will message carries the time of the connection it was left with:
            # offline whenever it comes, but nothing older than what we hold
            state.online = False
        elif not newer:
            return  # an older status delivered late
        else:
            state.online = True
        if not newer:
            return
        state.at = at or state.at
        if s.models:
            state.models = dict(s.models)
        if s.queue_depth is not None:
            state.queue_depth = s.queue_depth
        if s.at is not None:  # a will message carries no counters: keep the last ones
            state.counters = AgentCounters(s.forwarded, s.judged, s.alarms, s.stop_commands)


M = TypeVar("M", bound=BaseModel)


def _read(model: type[M], payload: bytes, what: str) -> M:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationFailed(f"{what} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationFailed(f"{what} must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(record)"
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            parts.append(f"{where}: {err['msg']}{shown}")
        raise ValidationFailed(f"{what}: " + "; ".join(parts)) from None


def _agrees(where: EdgeTopic, edge: str, site: str | None = None, line: str | None = None) -> None:
    for name, said, topic in (("edge", edge, where.edge), ("site", site, where.site)):
        if said is not None and said != topic:
            raise ValidationFailed(f"the payload's {name} {said!r} is not the topic's {topic!r}")
    if line is not None and line != where.line:
        raise ValidationFailed(f"the payload's line {line!r} is not the topic's {where.line!r}")


def _topic_of(where: EdgeTopic) -> str:
    return f"{PREFIX}/{where.site}/{where.line}/edge/{where.edge}/{where.kind}"
