"""The ingestion pipeline: validate → normalise units → dedup → store → SPC → alarms.

:class:`Ingestor` takes messages as they come off the broker (topic, payload bytes,
arrival time), in batches, and for every reading either accepts it (stored in the
readings store in its parameter's unit), counts it as a duplicate (its message id is
already stored), or quarantines it with the reason. The invariant the tests check:

    received = accepted + quarantined + duplicates + spooled

counted in readings (a payload that is not even a list of readings counts as one).

Accepted readings of good quality feed a streaming run-rule monitor per machine and
parameter; a rule that starts firing raises an :class:`AlarmEvent`, written to the graph
as an ``Alarm`` node linked to the machine, the parameter and the process run on the
machine at that time (one alarm per rule until the rule has been quiet for
``CLEAR_AFTER`` readings), and handed to the alarm sinks (the MQTT publisher, the GraphQL
subscription). An alarm on a parameter marked critical asks the line to stop.

A message that makes the pipeline throw (a bug its content triggers, not a refusal
with a reason) does not take the rest of its batch with it: the batch is split in two
and each half tried again, down to the one message that throws, which goes to the
quarantine alone with the exception as its reason; everything else of the batch is
stored and counted as usual. A failure of the stores themselves (the readings store,
the quarantine, the disk) is no message's fault: it propagates, and the caller keeps
the batch to try again (see :mod:`sqems.ingestion.mqtt`'s watchdog). :class:`Health`
says whether ingestion works and what went wrong last.

When a series' readings move past the end of a process run, the run's mean reading is
written as its ``RECORDED`` actual: the per-run summary the graph keeps (and the SPC
charts of :mod:`sqems.analysis.charts` plot).

Monitor limits: a parameter is judged against its specification as designed — centre
at the target (the middle of the limits without one) and sigma an eighth of the
tolerance, i.e. a centred process with Cpk 1.33 — so rule 1 fires three quarters of the
way from the centre to a spec limit, before parts go out of spec. A parameter without
both limits is stored but not watched.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from sqems.analysis.rules import RULES, RuleHit
from sqems.analysis.streaming import RuleMonitor
from sqems.errors import GraphUnavailable, SqemsError, ValidationFailed
from sqems.graph_model.nodes import Alarm, Parameter, Severity
from sqems.graph_model.store import Direction, Edge, GraphStore
from sqems.ingestion.payloads import (
    EARLIEST,
    ISO_TIME,
    MESSAGE_ID_CHARS,
    PREFIX,
    Quality,
    Topic,
    decode,
    decode_plain,
)
from sqems.ingestion.quarantine import Entry, NewEntry, Quarantine
from sqems.ingestion.readings import (
    EPOCH,
    BoolArray,
    FloatArray,
    ReadingBatch,
    ReadingsStore,
    micros_of,
)
from sqems.ingestion.runs import RunCalendar, RunSpan
from sqems.ingestion.spool import Spool, decode_alarm, decode_edges, decode_message
from sqems.ingestion.units import UnitConverter

log = logging.getLogger(__name__)

FUTURE_TOLERANCE = timedelta(minutes=5)
"""How far ahead of the arrival time a reading's timestamp may be (clock skew)."""
ALARM_RULES = ("nelson_1", "nelson_5")
"""The rules that raise alarms on the live stream: beyond 3 sigma, and two of three
beyond 2 sigma. The run rules (nine on one side, six rising) fire by chance every few
hundred readings of even a perfect process, which at 10 Hz is an alarm a minute per
sensor: they belong on the SPC charts of per-run summaries, not on raw streams."""


_MICROSECOND = timedelta(microseconds=1)
_EARLIEST_US = (EARLIEST - EPOCH) // _MICROSECOND
_TS = pa.timestamp("us", tz="UTC")
_TOLERANCE_US = FUTURE_TOLERANCE // _MICROSECOND
_ARROW_PARSE = pajson.ParseOptions(
    explicit_schema=pa.schema(
        [
            (
                "r",
                pa.list_(
                    pa.struct(
                        [
                            ("ts", pa.string()),
                            ("value", pa.float64()),
                            ("unit", pa.string()),
                            ("id", pa.string()),
                            ("quality", pa.string()),
                        ]
                    )
                ),
            )
        ]
    ),
    unexpected_field_behavior="error",
)
"""How the fast path reads a batch: each payload wrapped as ``{"r": payload}`` on a
line of its own, each field typed (a value of another JSON type fails the read), no
other field."""
_PLAIN_ID = r"^[!-~](.*[!-~])?$"
"""A message id with nothing to strip at either end."""
_QUALITIES = pa.array([q.value for q in Quality], pa.string())

RETRY_S = 5.0
"""How long to wait before trying the graph store again after it failed."""
CLEAR_AFTER = 50
"""Readings without the rule firing that close an open alarm."""
RELOAD_S = 30.0
"""How long what the graph said about a machine (where it is, or that it is none) is
trusted before a topic that disagrees makes the pipeline look again."""
OUTAGES: tuple[type[Exception], ...] = (OSError, sqlite3.OperationalError, duckdb.OperationalError)
"""Failures of the stores, not of a message: the batch is kept and tried again."""
FAULT_TOPIC = f"{PREFIX}/ingestion/alarm"
"""Where alarms about ingestion itself (a worker died, a batch's alarms may be missing)
are published."""


class _Part(NamedTuple):
    """One message's readings in a batch: rows ``start`` to ``stop``."""

    series: _Series
    start: int
    stop: int


class _Plain(NamedTuple):
    """A message's readings as the fast path reads them."""

    series: _Series
    ids: pa.Array
    micros: npt.NDArray[np.int64]
    values: pa.Array
    quality: pa.Array


class Message(NamedTuple):
    topic: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    alarm: Alarm
    topic: Topic | None
    """The series (its site and line as the graph places the machine); None for an
    alarm about ingestion itself."""
    run: str | None
    critical: bool
    """The parameter is marked critical: the line is asked to stop."""


@dataclass(slots=True)
class Health:
    """Whether ingestion works, and the last thing that went wrong (kept after it
    recovers, so a look at the status shows what happened)."""

    healthy: bool = True
    reason: str | None = None
    """Why it is unhealthy, while it is."""
    last_error: str | None = None
    last_error_at: datetime | None = None
    restarts: int = 0
    """How often the watchdog restarted a worker."""


@dataclass(slots=True)
class Counters:
    received: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    alarms: int = 0
    spooled: int = 0
    """Readings waiting in the spool for the graph store to come back."""

    def add(self, other: Counters) -> None:
        self.received += other.received
        self.accepted += other.accepted
        self.quarantined += other.quarantined
        self.duplicates += other.duplicates
        self.alarms += other.alarms
        self.spooled += other.spooled


@dataclass(frozen=True, slots=True)
class _Place:
    """Where the graph puts a machine, and the parameters its steps have."""

    site: str
    line: str
    parameters: frozenset[str]
    loaded: float
    """When it was read from the graph (monotonic seconds)."""


@dataclass(slots=True)
class _Series:
    """What the pipeline knows about one machine's parameter."""

    topic: Topic
    """Its topic with the site and line the graph gives the machine."""
    parameter: Parameter
    number: int
    """The series' number in the readings store."""
    monitor: RuleMonitor | None
    quiet: dict[str, int] = field(default_factory=dict)
    """Rules with an open alarm → readings since the rule last fired."""
    run: RunSpan | None = None
    """The run the latest reading fell in; summarised when a reading falls outside it."""


class Ingestor:
    """Validate, store and watch readings; see the module docstring."""

    def __init__(
        self,
        graph: GraphStore,
        readings: ReadingsStore,
        quarantine: Quarantine,
        *,
        sinks: Sequence[Callable[[AlarmEvent], None]] = (),
        converter: UnitConverter | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.graph = graph
        self.readings = readings
        self.quarantine = quarantine
        self.sinks = list(sinks)
        self.convert = converter or UnitConverter()
        self.counters = Counters()
        self.spool = spool if spool is not None else Spool(None)
        self._next_drain = 0.0
        self._series: dict[tuple[str, str], _Series] = {}
        self._topics: dict[str, Topic] = {}
        self._places: dict[str, _Place | float] = {}
        """Machine -> where it is, or the monotonic time it was found to be no machine."""
        self.runs = RunCalendar(graph)
        self.health = Health()
        self._lock = threading.Lock()
        self._replaying = False

    # --- the pipeline ------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, received_at: datetime | None = None) -> Counters:
        """Ingest one message; the counts of this message."""
        return self.handle_many([Message(topic, payload, received_at or datetime.now(UTC))])

    def handle_many(self, messages: Iterable[Message]) -> Counters:
        """Ingest messages in one write to the readings store; the counts of this batch.

        Raises only what :data:`OUTAGES` names (a store failed): then nothing of the
        batch is counted or quarantined, and the caller tries it again."""
        with self._lock:
            self._drain()
            counts, rejected = self._isolating(list(messages))
            counts.quarantined += self.quarantine.add(rejected)
            self.counters.add(counts)
            return counts

    def fault(
        self,
        what: str,
        exc: BaseException | None = None,
        *,
        down: bool = False,
        alarm: bool = False,
    ) -> None:
        """Note a failure: logged and kept as the last error; with ``down`` ingestion is
        unhealthy until :meth:`recovered`; with ``down`` or ``alarm`` the alarm sinks
        hear of it (an ``ingestion_down`` or ``ingestion_fault`` alarm)."""
        reason = what if exc is None else f"{what}: {type(exc).__name__}: {exc}"
        now = datetime.now(UTC)
        self.health.last_error, self.health.last_error_at = reason, now
        log.error(reason, exc_info=exc, extra={"down": down})
        if down:
            self.health.healthy, self.health.reason = False, reason
        if down or alarm:
            event = Alarm(
                uid=f"ALM-INGESTION-{now.strftime('%Y%m%dT%H%M%S%fZ')}",
                raised_at=now,
                rule="ingestion_down" if down else "ingestion_fault",
                severity=Severity.CRITICAL,
                message=reason[:2_000],
            )
            self._tell(AlarmEvent(event, None, None, critical=False))

    def recovered(self) -> None:
        """Ingestion works again (a restarted worker got through)."""
        if not self.health.healthy:
            self.health.healthy, self.health.reason = True, None
            log.warning("ingestion works again", extra={"restarts": self.health.restarts})

    def drain(self) -> None:
        """Finish what waits in the spool, if the graph store answers again."""
        with self._lock:
            self._next_drain = 0.0
            self._drain()

    def _drain(self) -> None:
        if not len(self.spool) or time.monotonic() < self._next_drain:
            return
        items = self.spool.take()
        alarms = [decode_alarm(i) for i in items if i["kind"] == "alarm"]
        summaries = [e for i in items if i["kind"] == "edges" for e in decode_edges(i)]
        messages = [Message(*decode_message(i)) for i in items if i["kind"] == "message"]
        try:
            if alarms or summaries:
                with self.graph.transaction() as batch:
                    batch.add_nodes(a for a, _ in alarms)
                    batch.add_edges(e for _, edges in alarms for e in edges)
                    batch.add_edges(summaries)
        except GraphUnavailable:
            self.spool.put_back(items)
            self._next_drain = time.monotonic() + RETRY_S
            return
        try:
            counts, rejected = self._isolating(messages, first_time=False)
            counts.quarantined += self.quarantine.add(rejected)
        except OUTAGES:
            self.spool.put_back([i for i in items if i["kind"] == "message"])
            raise
        self.counters.add(counts)
        log.info("drained the spool", extra={"alarms": len(alarms), "messages": len(messages)})

    def replay(self, entry_id: int) -> Entry:
        """Run a quarantined entry through the pipeline again (after its cause was
        fixed) and record the outcome on it: ``accepted``, ``duplicate`` or the reason
        it is still refused. The entry and its raw bytes stay either way."""
        entry = self.quarantine.get(entry_id)
        if not entry.source.startswith("mqtt:"):
            raise ValidationFailed(
                f"quarantine entry {entry_id} came from {entry.source}; re-import the file"
            )
        payload = _item(entry.raw, entry.item)
        message = Message(entry.source.removeprefix("mqtt:"), payload, _parse_time(entry))
        with self._lock:
            self._replaying = True
            # the graph may hold now what it lacked when the entry was refused
            self._places.clear()
            try:
                counts, rejected = self._isolating([message])
            finally:
                self._replaying = False
        if counts.accepted:
            outcome = "accepted"
        elif counts.duplicates:
            outcome = "duplicate"
        else:
            outcome = "; ".join(r.reason for r in rejected) or "refused"
        return self.quarantine.mark_replayed(entry_id, outcome)

    def _isolating(
        self, messages: list[Message], *, first_time: bool = True
    ) -> tuple[Counters, list[NewEntry]]:
        """:meth:`_ingest`, and when it throws (but not for an outage), each half of
        ``messages`` again, down to the message that throws: it alone is refused, with
        the exception as the reason."""
        try:
            return self._ingest(messages, first_time=first_time)
        except OUTAGES:
            raise
        except Exception as exc:  # isolated below: kept in the quarantine, logged
            if len(messages) > 1:
                half = len(messages) // 2
                counts, rejected = self._isolating(messages[:half], first_time=first_time)
                more, also = self._isolating(messages[half:], first_time=first_time)
                counts.add(more)
                return counts, rejected + also
            return self._poisoned(messages[0], exc, first_time)

    def _poisoned(
        self, message: Message, exc: Exception, first_time: bool
    ) -> tuple[Counters, list[NewEntry]]:
        """The counts and quarantine entry of a message that made the pipeline throw:
        one reading received and refused, as for a payload that is not a reading."""
        self.fault(f"message on {message.topic} made the pipeline fail; quarantined", exc)
        counts = Counters(received=1)
        if not first_time:  # back from the spool: its readings were counted spooled
            spooled = len(decode(message.payload).readings)
            counts.received -= spooled
            counts.spooled -= spooled
        reason = (
            f"processing failed ({type(exc).__name__}: {exc}); kept whole: replay it once "
            "the fault is fixed"
        )
        source = f"mqtt:{message.topic}"
        return counts, [NewEntry(source, reason, message.payload, None, message.received_at)]

    def _ingest(
        self, messages: list[Message], *, first_time: bool = True
    ) -> tuple[Counters, list[NewEntry]]:
        """Sort, store and watch ``messages``; nothing changes outside the returned
        counts and entries until the readings are stored (so a batch that throws
        can be tried again)."""
        counts = Counters()
        rejected: list[NewEntry] = []
        batch = ReadingBatch()
        parts: list[_Part] = []
        spool: list[Message] = []
        for message, plain in zip(messages, self._plain(messages), strict=True):
            if plain is None:
                self._sort(message, counts, rejected, batch, parts, spool, first_time)
                continue
            if first_time:
                counts.received += len(plain.micros)
            else:  # back from the spool: counted when it arrived
                counts.spooled -= len(plain.micros)
            start = len(batch)
            batch.extend(
                plain.series.number,
                plain.ids,
                plain.micros,
                plain.values,
                plain.quality,
                message.received_at,
            )
            parts.append(_Part(plain.series, start, len(batch)))
        fresh = self.readings.write(batch)
        for message in spool:
            self.spool.add_message(message.topic, message.payload, message.received_at)
        if spool:
            self._next_drain = time.monotonic() + RETRY_S
        stored = int(fresh.sum())
        counts.accepted += stored
        counts.duplicates += len(batch) - stored
        # only what was stored is watched: a redelivered reading was seen already
        try:
            counts.alarms += self._watch(batch, parts, fresh)
        except OUTAGES:
            raise
        except Exception as exc:  # the readings are stored: say so loudly, lose nothing
            what = "watching the stored readings failed: alarms may be missing"
            self.fault(what, exc, alarm=True)
        return counts, rejected

    def _plain(self, messages: list[Message]) -> list[_Plain | None]:
        """The fast path: each message that is the usual kind — a list of valid
        readings of a series already known and placed, in the parameter's unit, each
        time after :data:`EARLIEST` and not after the arrival time (+
        :data:`FUTURE_TOLERANCE`) — as columns; None for any other message, which
        :meth:`_sort` reads one reading at a time and so finds the reason to refuse
        what it refuses (the tests hold both ways to the same rows, counts and
        reasons).

        The messages are first read together by Arrow's JSON reader, straight into
        columns and without the interpreter's lock; a batch it cannot read as a whole
        (a payload of another shape, a value of the wrong type) is read message by
        message with :func:`decode_plain` instead."""
        out: list[_Plain | None] = [None] * len(messages)
        known = [self._known(m.topic) for m in messages]
        chosen = [k for k, m in enumerate(messages) if known[k] and _arrow_ready(m.payload)]
        if not chosen or not self._read_arrow(messages, known, chosen, out):
            chosen = [k for k in range(len(messages)) if known[k]]
            self._read_plain(messages, known, chosen, out)
        return out

    def _read_arrow(
        self,
        messages: list[Message],
        known: list[_Series | None],
        chosen: list[int],
        out: list[_Plain | None],
    ) -> bool:
        """:meth:`_plain` for messages ``chosen``, read by Arrow; False when Arrow
        cannot read them all (nothing is set in ``out`` then)."""
        text = b"".join([b'{"r":' + messages[k].payload + b"}\n" for k in chosen])
        try:
            table = pajson.read_json(
                pa.py_buffer(text),
                read_options=pajson.ReadOptions(use_threads=False, block_size=len(text) + 1),
                parse_options=_ARROW_PARSE,
            )
        except Exception:  # not all plain: the next way finds which
            return False
        if table.num_rows != len(chosen):  # a payload held more than one JSON value
            return False
        lists = table.column("r").combine_chunks()
        sizes = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
        stamps, values, units, ids, quality = lists.flatten().flatten()
        owner = np.repeat(np.arange(len(chosen)), sizes)
        expected = pa.array([known[k].parameter.unit for k in chosen], pa.string())  # type: ignore[union-attr]
        dated = _true(pc.match_substring_regex(stamps, ISO_TIME))
        fine = (
            dated
            & _true(pc.is_finite(values))
            & _true(pc.equal(units, expected.take(pa.array(owner))))
            & _true(pc.match_substring_regex(ids, _PLAIN_ID))
            & _true(pc.less_equal(pc.utf8_length(ids), MESSAGE_ID_CHARS))
            & (_true(pc.is_null(quality)) | _true(pc.is_in(quality, _QUALITIES)))
        )
        stamps = pc.if_else(pa.array(dated), stamps, "1970-01-01T00:00:00Z")
        self._finish(
            messages,
            known,
            chosen,
            out,
            stamps,
            sizes,
            fine,
            ids,
            values,
            pc.fill_null(quality, "good"),
        )
        return True

    def _read_plain(
        self,
        messages: list[Message],
        known: list[_Series | None],
        chosen: list[int],
        out: list[_Plain | None],
    ) -> None:
        """:meth:`_plain` for messages ``chosen``, read one message at a time by
        :func:`decode_plain`."""
        kept: list[int] = []
        stamps: list[str] = []
        ids: list[str] = []
        values: list[float] = []
        quality: list[str] = []
        sizes: list[int] = []
        for k in chosen:
            readings = decode_plain(messages[k].payload)
            if readings is None:
                continue
            units = [r["unit"] for r in readings]
            if units.count(known[k].parameter.unit) != len(units):  # type: ignore[union-attr]
                continue  # another unit: converted by the careful path
            kept.append(k)
            sizes.append(len(readings))
            stamps += [r["ts"] for r in readings]
            ids += [r["id"] for r in readings]
            values += [r["value"] for r in readings]
            quality += [r.get("quality", "good") for r in readings]
        if kept:
            fine = np.ones(len(stamps), dtype=np.bool_)
            self._finish(
                messages,
                known,
                kept,
                out,
                pa.array(stamps, pa.string()),
                np.asarray(sizes, dtype=np.int64),
                fine,
                pa.array(ids, pa.string()),
                pa.array(values, pa.float64()),
                pa.array(quality, pa.string()),
            )

    def _finish(
        self,
        messages: list[Message],
        known: list[_Series | None],
        chosen: list[int],
        out: list[_Plain | None],
        stamps: pa.Array,
        sizes: npt.NDArray[np.int64],
        fine: BoolArray,
        ids: pa.Array,
        values: pa.Array,
        quality: pa.Array,
    ) -> None:
        """Read the times of the ``chosen`` messages' readings, and set in ``out`` each
        message whose readings are all ``fine`` and on time."""
        try:
            micros = _micros(stamps)
        except pa.ArrowInvalid:  # a date that does not exist: find its message
            starts = np.cumsum(sizes) - sizes
            micros = np.concatenate(
                [_micros_or_none(stamps.slice(a, n)) for a, n in zip(starts, sizes, strict=True)]
            )
        arrived = np.asarray(
            [(messages[k].received_at - EPOCH) // _MICROSECOND for k in chosen], np.int64
        )
        owner = np.repeat(np.arange(len(chosen)), sizes)
        fine = fine & (micros >= _EARLIEST_US) & (micros <= arrived[owner] + _TOLERANCE_US)
        refused = np.bincount(owner[~fine], minlength=len(chosen))
        start = 0
        for j, k in enumerate(chosen):
            n = int(sizes[j])
            if n and not refused[j]:
                series = known[k]
                assert series is not None
                out[k] = _Plain(
                    series,
                    ids.slice(start, n),
                    micros[start : start + n],
                    values.slice(start, n),
                    quality.slice(start, n),
                )
            start += n

    def _known(self, name: str) -> _Series | None:
        """The series of topic ``name`` if it is known and its machine placed where the
        topic says (what :meth:`_series_of` would answer without asking the graph)."""
        topic = self._topics.get(name)
        if topic is None:
            return None
        series = self._series.get((topic.machine, topic.parameter))
        place = self._places.get(topic.machine)
        if (
            series is None
            or not isinstance(place, _Place)
            or (topic.site, topic.line) != (place.site, place.line)
        ):
            return None
        return series

    def _sort(
        self,
        message: Message,
        counts: Counters,
        rejected: list[NewEntry],
        batch: ReadingBatch,
        parts: list[_Part],
        spool: list[Message],
        first_time: bool = True,
    ) -> None:
        """Decode one message, quarantine what is wrong with it and add the rest to
        ``batch`` (noting the message's part of it in ``parts``), or to ``spool`` when
        the graph store does not answer."""
        source = f"mqtt:{message.topic}"

        def refuse(reason: str, item: int | None = None) -> None:
            rejected.append(NewEntry(source, reason, message.payload, item, message.received_at))

        payload = decode(message.payload)
        readings = payload.readings
        if first_time:
            counts.received += len(readings) + len(payload.rejected)
            for b in payload.rejected:
                refuse(b.reason, b.item)
        else:  # back from the spool: counted (and its bad parts refused) when it arrived
            counts.spooled -= len(readings)
        if not readings:
            return
        try:
            topic = self._topic(message.topic)
            series = self._series_of(topic)
        except GraphUnavailable as exc:
            if self._replaying:  # a replay says so and leaves the entry as it was
                for item in payload.items:
                    refuse(str(exc), item)
                return
            # not the message's fault: keep it to try again when the store is back
            spool.append(message)
            counts.spooled += len(readings)
            return
        except SqemsError as exc:
            for item in payload.items:
                refuse(str(exc), item)
            return
        unit = series.parameter.unit
        latest = message.received_at + FUTURE_TOLERANCE
        if max(r.ts for r in readings) <= latest and all(r.unit == unit for r in readings):
            # the usual message: on time and in the parameter's unit
            values = [r.value for r in readings]
        else:
            kept, values = [], []
            for reading, item in zip(readings, payload.items, strict=True):
                if reading.ts > latest:
                    refuse(
                        f"timestamp {reading.ts.isoformat()} is after the arrival time "
                        f"{message.received_at.isoformat()} (+{FUTURE_TOLERANCE}): check "
                        "the sender's clock",
                        item,
                    )
                    continue
                try:
                    values.append(self.convert(reading.value, reading.unit, unit))
                except ValidationFailed as exc:
                    refuse(str(exc), item)
                    continue
                kept.append(reading)
            readings = kept
            if not readings:
                return
        start = len(batch)
        batch.extend(
            series.number,
            [r.id for r in readings],
            micros_of([r.ts for r in readings]),
            values,
            [r.quality for r in readings],
            message.received_at,
        )
        parts.append(_Part(series, start, len(batch)))

    def _topic(self, name: str) -> Topic:
        found = self._topics.get(name)
        if found is None:
            found = Topic.parse(name)
            if len(self._topics) < 100_000:  # a flood of bad topics cannot fill memory
                self._topics[name] = found
        return found

    def _series_of(self, topic: Topic) -> _Series:
        """The series of ``topic``, once its site, line, machine and parameter agree
        with the graph (a reading on a line the machine is not on would send its
        alarm's stop-line command to the wrong line)."""
        place = self._place(topic.machine)
        key = (topic.machine, topic.parameter)
        if (topic.site, topic.line) != (place.site, place.line) or (
            key not in self._series and topic.parameter not in place.parameters
        ):
            place = self._place(topic.machine, again=True)  # the graph may have changed
        if (topic.site, topic.line) != (place.site, place.line):
            raise ValidationFailed(
                f"topic {topic} puts machine {topic.machine} on {topic.site}/{topic.line}, "
                f"but the graph has it on {place.site}/{place.line}: fix the sender's topic "
                "(or the graph) and replay"
            )
        found = self._series.get(key)
        if found is not None:
            return found
        spec = self.graph.get_many([topic.parameter]).get(topic.parameter)
        if not isinstance(spec, Parameter):
            raise ValidationFailed(
                f"parameter {topic.parameter} is not in the graph: load it (or fix the "
                "topic) and replay"
            )
        if topic.parameter not in place.parameters:
            raise ValidationFailed(
                f"parameter {topic.parameter} belongs to no step machine {topic.machine} "
                "can perform: fix the topic (or link them in the graph) and replay"
            )
        number = self.readings.series_id(
            topic.site, topic.line, topic.machine, topic.parameter, spec.unit
        )
        series = _Series(topic, spec, number, monitor_for(spec))
        self._series[key] = series
        return series

    def _place(self, machine: str, *, again: bool = False) -> _Place:
        """Where the graph puts ``machine``: cached, and looked up again after
        ``RELOAD_S`` when it was not a machine, or ``again`` (the topic disagrees)."""
        found = self._places.get(machine)
        loaded = found.loaded if isinstance(found, _Place) else found
        if isinstance(found, _Place) and not again:
            return found
        if loaded is None or time.monotonic() - loaded > RELOAD_S:
            before, found = found, self._load_place(machine)
            if isinstance(before, _Place) and (
                not isinstance(found, _Place)
                or (found.site, found.line) != (before.site, before.line)
            ):  # the machine moved: its series start again under its new place
                self._series = {k: v for k, v in self._series.items() if k[0] != machine}
            if len(self._places) < 100_000:  # a flood of bad topics cannot fill memory
                self._places[machine] = found
        if isinstance(found, _Place):
            return found
        raise ValidationFailed(
            f"machine {machine} is not in the graph, or on no line of a site: load it (or "
            "fix the topic) and replay"
        )

    def _load_place(self, machine: str) -> _Place | float:
        if self.graph.label_of(machine) != "Machine":
            return time.monotonic()
        lines = [e.dst for e in self.graph.edges([machine], {"PART_OF": Direction.OUT})]
        sites = [e.dst for e in self.graph.edges(lines, {"PART_OF": Direction.OUT})]
        if len(lines) != 1 or len(sites) != 1:
            return time.monotonic()
        steps = [e.dst for e in self.graph.edges([machine], {"CAN_PERFORM": Direction.OUT})]
        parameters = self.graph.edges(steps, {"PARAMETER_OF": Direction.IN}) if steps else []
        return _Place(sites[0], lines[0], frozenset(e.src for e in parameters), time.monotonic())

    # --- SPC and alarms ------------------------------------------------------------------

    def _watch(self, batch: ReadingBatch, parts: list[_Part], fresh: BoolArray) -> int:
        """Follow each series' runs and rules over the batch's stored readings."""
        if not parts:
            return 0
        rows_of: dict[tuple[str, str], list[npt.NDArray[np.int64]]] = {}
        for part in parts:
            key = (part.series.topic.machine, part.series.topic.parameter)
            rows_of.setdefault(key, []).append(np.arange(part.start, part.stop))
        seconds = batch.seconds()
        values = batch.values()
        good = batch.good()
        raised: list[AlarmEvent] = []
        finished: list[tuple[Topic, Parameter, RunSpan]] = []
        for key, chunks in rows_of.items():
            rows = np.concatenate(chunks)
            rows = rows[fresh[rows]]
            if not rows.size:
                continue
            rows = rows[np.argsort(seconds[rows], kind="stable")]
            series = self._series[key]
            topic = series.topic  # the graph's site and line, whatever the sender said
            self._follow_runs(topic, series, seconds[rows], finished)
            if series.monitor is None:
                continue
            watched = rows[good[rows]]
            first = series.monitor.points
            hits = series.monitor.push_many(values[watched])
            for point, rule in opened(series.quiet, hits, first, watched.size):
                row = int(watched[point])
                raised.append(self._alarm(topic, series, rule, batch.time(row), float(values[row])))
        if raised:
            raised.sort(key=lambda e: (e.alarm.raised_at, e.alarm.uid))
            self._record(raised)
        if finished:
            self._summarise(finished)
        return len(raised)

    def _follow_runs(
        self,
        topic: Topic,
        series: _Series,
        seconds: FloatArray,
        finished: list[tuple[Topic, Parameter, RunSpan]],
    ) -> None:
        """Move the series from run to run along its readings (in time order); a run
        it leaves is finished and gets its summary."""
        i = 0
        while i < seconds.size:
            run = series.run
            if run is not None and run.start <= seconds[i] <= run.end:
                # the readings that follow in the same run need nothing
                outside = np.flatnonzero((seconds[i:] < run.start) | (seconds[i:] > run.end))
                if not outside.size:
                    return
                i += int(outside[0])
                continue
            if run is not None:
                finished.append((topic, series.parameter, run))
            series.run, until = self.runs.span_at(topic.machine, float(seconds[i]))
            if series.run is None:  # a gap between runs: skip to its end
                i += int(np.searchsorted(seconds[i:], until, side="left"))

    def _summarise(self, finished: list[tuple[Topic, Parameter, RunSpan]]) -> None:
        """Write each finished run's mean reading as its ``RECORDED`` actual."""
        edges = []
        for topic, spec, run in finished:
            mean = self.readings.mean(topic.machine, topic.parameter, run.start, run.end)
            if mean is not None:
                edges.append(recorded_edge(run.uid, spec.uid, spec.unit, mean))
        if not edges:
            return
        try:
            self.graph.upsert_edges(edges)
        except GraphUnavailable:
            self.spool.add_edges(edges)
            self._next_drain = time.monotonic() + RETRY_S

    def _alarm(
        self, topic: Topic, series: _Series, rule: str, ts: datetime, value: float
    ) -> AlarmEvent:
        spec = series.parameter
        alarm = alarm_for(topic, spec, rule, ts, value)
        run = self.runs.run_at(topic.machine, ts)
        return AlarmEvent(alarm, topic, run.uid if run else None, spec.critical)

    def _record(self, events: list[AlarmEvent]) -> None:
        edges: list[Edge] = []
        for e in events:
            uid = e.alarm.uid
            assert e.topic is not None  # raised on readings, so on a series
            edges.append(Edge("RAISED_ON", uid, e.topic.machine))
            edges.append(Edge("RAISED_ON", uid, e.topic.parameter))
            if e.run is not None:
                edges.append(Edge("RAISED_ON", uid, e.run))
        try:
            with self.graph.transaction() as batch:
                batch.add_nodes(e.alarm for e in events)
                batch.add_edges(edges)
        except GraphUnavailable:
            by_alarm = [(e.alarm, [x for x in edges if x.src == e.alarm.uid]) for e in events]
            self.spool.add_alarms(by_alarm)
            self._next_drain = time.monotonic() + RETRY_S
        for event in events:
            self._tell(event)

    def _tell(self, event: AlarmEvent) -> None:
        """Hand ``event`` to every alarm sink."""
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:  # a sink failing must not lose the readings or alarms
                log.exception("alarm sink failed", extra={"alarm": event.alarm.uid})


def alarm_for(topic: Topic, spec: Parameter, rule: str, ts: datetime, value: float) -> Alarm:
    """The alarm ``rule`` raises on the reading ``value`` at ``ts`` of ``topic``'s series.

    Its uid is made of the machine, parameter, rule and the reading's time, so whoever
    raises it on the same readings (central ingestion, an edge agent) makes one node."""
    stamp = ts.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return Alarm(
        uid=f"ALM-{topic.machine}-{topic.parameter}-{rule}-{stamp}",
        raised_at=ts,
        rule=rule,
        severity=Severity.CRITICAL if spec.critical else Severity.MAJOR,
        value=value,
        message=f"{RULES[rule].title}: {spec.name} on {topic.machine} at {value:g} {spec.unit}",
    )


def opened(
    quiet: dict[str, int], hits: list[RuleHit], first: int, size: int
) -> list[tuple[int, str]]:
    """The hits (as positions in the batch of ``size`` watched readings that started at
    monitor point ``first``) that open an alarm, updating the series' open alarms
    (``quiet``: rules with an open alarm → readings since the rule last fired).

    An alarm stays open while its rule keeps firing and closes after ``CLEAR_AFTER``
    readings without it: a value hovering at a limit raises one alarm, not one each
    time the noise carries it back over. So a hit opens an alarm when its rule has not
    fired in the ``CLEAR_AFTER`` readings before it.
    """
    at: dict[str, list[int]] = {}
    for hit in hits:
        at.setdefault(hit.rule, []).append(hit.point - first)
    found = []
    for rule in sorted(at.keys() | quiet.keys()):
        since = quiet.get(rule)
        last = None if since is None else -1 - since  # where the rule last fired
        for point in at.get(rule, ()):
            if last is None or point - last - 1 >= CLEAR_AFTER:
                found.append((point, rule))
            last = point
        assert last is not None
        since = size - 1 - last
        if since >= CLEAR_AFTER:
            quiet.pop(rule, None)
        else:
            quiet[rule] = since
    return sorted(found)


def recorded_edge(run: str, parameter: str, unit: str, mean: float) -> Edge:
    """The ``RECORDED`` actual of a run: its mean reading of ``parameter`` (in the
    parameter's ``unit``), as the graph keeps it. The lake's summaries job writes its
    per-run means through this too."""
    return Edge("RECORDED", run, parameter, {"value": round(mean, 6), "unit": unit})


def monitor_for(spec: Parameter) -> RuleMonitor | None:
    """A run-rule monitor for ``spec`` judged against its design (see the module
    docstring); None for a parameter without both limits."""
    if spec.lsl is None or spec.usl is None:
        return None
    center = spec.target if spec.target is not None else (spec.lsl + spec.usl) / 2
    return RuleMonitor(center, (spec.usl - spec.lsl) / 8.0, rules=ALARM_RULES)


def _micros(stamps: pa.Array) -> npt.NDArray[np.int64]:
    """ISO 8601 timestamps (as :data:`~sqems.ingestion.payloads.ISO_TIME` admits) as
    microseconds since the epoch; ``pyarrow.ArrowInvalid`` for a date that does not
    exist (the 30th of February)."""
    micros: npt.NDArray[np.int64] = stamps.cast(_TS).cast(pa.int64()).to_numpy()
    return micros


def _micros_or_none(stamps: pa.Array) -> npt.NDArray[np.int64]:
    """The times of one message's readings; a message with a date that does not exist
    gets times before :data:`EARLIEST`, which send it to the careful path."""
    try:
        return _micros(stamps)
    except pa.ArrowInvalid:
        return np.full(len(stamps), _EARLIEST_US - 1, dtype=np.int64)


def _arrow_ready(payload: bytes) -> bool:
    """Whether Arrow's JSON reader may read ``payload`` on one line of its own: a list,
    without line breaks, and without a ``null`` (Arrow reads a null as a missing field,
    which for the quality would mean "good"; the careful path refuses it)."""
    return (
        payload[:1] == b"["
        and b"\n" not in payload
        and b"\r" not in payload
        and (b"null" not in payload)
    )


def _true(mask: pa.Array) -> BoolArray:
    """An Arrow boolean array as NumPy, null as False."""
    true: BoolArray = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    return true


def _item(raw: bytes, item: int | None) -> bytes:
    """The payload to replay: the whole message, or only the reading at ``item``."""
    if item is None:
        return raw
    data = json.loads(raw)
    if isinstance(data, dict):
        data = data["readings"]
    return json.dumps(data[item]).encode()


def _parse_time(entry: Entry) -> datetime:
    # the original arrival time keeps the future-timestamp check as it was
    return datetime.fromisoformat(entry.received_at)
