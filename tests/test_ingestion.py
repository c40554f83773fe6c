"""Ingestion: payloads, units, the quarantine, the readings store and the pipeline.

The pipeline runs against a real embedded graph holding a small generated plant, a
real DuckDB readings store and a real SQLite quarantine.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.errors import ValidationFailed
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import Parameter
from sqems.graph_model.store import Edge
from sqems.ingestion.payloads import Topic, decode
from sqems.ingestion.pipeline import AlarmEvent, Ingestor, Message
from sqems.ingestion.quarantine import NewEntry, Quarantine
from sqems.ingestion.readings import ReadingBatch, ReadingsStore, micros_of
from sqems.ingestion.units import UnitConverter

PEAK = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK"
TORQUE = "sqems/v1/SITE-1/LINE-ASM/M-SCREW-1/P-TORQUE"
T0 = datetime(2026, 1, 6, 8, 0, tzinfo=UTC)


def reading(
    i: int, value: float, *, unit: str = "degC", at: datetime | None = None, **extra: Any
) -> dict[str, Any]:
    ts = (at or T0 + timedelta(seconds=i)).isoformat()
    return {"ts": ts, "value": value, "unit": unit, "id": f"m-{i}", **extra}


def payload(*items: dict[str, Any]) -> bytes:
    return json.dumps(items[0] if len(items) == 1 else list(items)).encode()


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphStore]:
    with EmbeddedGraphStore(None) as store:
        load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
        yield store


@pytest.fixture
def ingestor(graph: GraphStore, tmp_path: Path) -> Iterator[Ingestor]:
    readings = ReadingsStore(tmp_path / "readings.duckdb")
    quarantine = Quarantine(tmp_path / "quarantine.db")
    yield Ingestor(graph, readings, quarantine)
    readings.close()
    quarantine.close()


# --- payloads and topics ------------------------------------------------------------------


def test_a_payload_may_be_one_reading_a_list_or_an_object_with_readings() -> None:
    one = reading(1, 240.0)
    assert len(decode(payload(one))[0]) == 1
    assert len(decode(payload(one, reading(2, 241.0)))[0]) == 2
    assert len(decode(json.dumps({"readings": [one]}).encode())[0]) == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[]", "no readings"),
        (payload(reading(1, 240.0, at=datetime(2026, 1, 6))), "ts: Input should have timezone"),
        (json.dumps({**reading(1, 0.0), "value": "hot"}).encode(), "value:"),
        (b'{"ts": "2026-01-06T08:00:00Z", "value": 1e400, "unit": "degC", "id": "x"}', "finite"),
        (payload({k: v for k, v in reading(1, 1.0).items() if k != "id"}), "id: Field required"),
        (payload({**reading(1, 1.0), "colour": "red"}), "colour: Extra inputs"),
        # a value is a JSON number: `true` raised a critical alarm once, as 1.0
        (payload(reading(1, True)), "value: Input should be a valid number (got True)"),
        (payload(reading(1, "243")), "value: Input should be a valid number (got '243')"),
        # a clock reset to year 1 (at +01:00 it is before year 1 in UTC) or to 1970
        (
            payload(reading(1, 1.0, at=datetime.fromisoformat("0001-01-01T00:00:01+01:00"))),
            "outside the calendar",
        ),
        (payload(reading(1, 1.0, at=datetime(1970, 1, 1, tzinfo=UTC))), "sender's clock"),
    ],
)
def test_a_bad_payload_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    readings, _, rejected = decode(raw)
    assert readings == []
    assert len(rejected) == 1 and reason in rejected[0].reason
    assert rejected[0].raw == raw


def test_in_a_list_each_reading_stands_alone() -> None:
    readings, items, rejected = decode(payload(reading(1, 240.0), {"value": 3}, reading(3, 242.0)))
    assert [(r.id, item) for r, item in zip(readings, items, strict=True)] == [
        ("m-1", 0),
        ("m-3", 2),
    ]
    assert [r.item for r in rejected] == [1]


@pytest.mark.parametrize(
    "topic",
    [
        "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2",
        "other/v1/S/L/M/P",
        "sqems/v1/S/L/M/P/x",
        "sqems/v1/S/L/M 2/P",
    ],
)
def test_a_topic_outside_the_scheme_is_refused(topic: str) -> None:
    with pytest.raises(ValidationFailed, match="topic"):
        Topic.parse(topic)


# --- units ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "to", "expected"),
    [
        (212.0, "degF", "degC", 100.0),
        (2.5, "bar", "kPa", 250.0),
        (150.0, "um", "mm", 0.15),
        (1.0, "N*m", "N*m", 1.0),
        (100.0, "cm/min", "m/s", 1 / 60),
        (4.0, "kN", "N", 4000.0),
    ],
)
def test_units_convert_to_the_parameters_unit(
    value: float, unit: str, to: str, expected: float
) -> None:
    assert UnitConverter()(value, unit, to) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("unit", "reason"), [("psi", "cannot be converted"), ("blorp", "not a unit")]
)
def test_a_unit_of_another_dimension_or_none_is_refused(unit: str, reason: str) -> None:
    with pytest.raises(ValidationFailed, match=reason):
        UnitConverter()(1.0, unit, "degC")


@pytest.mark.parametrize(
    ("value", "unit", "reason"),
    [
        (1.0, "kelvin**0", "not a unit of measure (KeyError"),  # pint's parser: KeyError
        (1.0, "m/0", "not a unit of measure (ZeroDivisionError"),
        (1e308, "km", "not a finite number"),  # inf metres
    ],
)
def test_an_odd_unit_or_a_value_that_converts_to_infinity_is_refused(
    value: float, unit: str, reason: str
) -> None:
    with pytest.raises(ValidationFailed, match=re.escape(reason)):
        UnitConverter()(value, unit, "m")


# --- the pipeline --------------------------------------------------------------------------


def test_readings_are_stored_in_the_parameters_unit(ingestor: Ingestor) -> None:
    counts = ingestor.handle(PEAK, payload(reading(1, 464.0, unit="degF")), T0)
    assert (counts.received, counts.accepted) == (1, 1)
    ((_, value),) = ingestor.readings.series("M-REFLOW-2", "P-REFLOW-PEAK")
    assert value == pytest.approx(240.0)


def test_a_redelivered_message_is_a_duplicate_not_a_second_reading(ingestor: Ingestor) -> None:
    message = payload(reading(1, 240.0), reading(2, 241.0))
    ingestor.handle(PEAK, message, T0)
    again = ingestor.handle(PEAK, message, T0)
    assert (again.accepted, again.duplicates) == (0, 2)
    assert ingestor.readings.count() == 2


def test_a_reading_is_its_series_message_id_and_time(ingestor: Ingestor) -> None:
    """A sensor counting its messages from 1 again after a reboot sends new readings
    under old ids; another sensor may use the same ids: neither is a duplicate."""
    ingestor.handle(PEAK, payload(reading(1, 240.0), reading(2, 241.0)), T0)
    rebooted = payload(reading(1, 242.0, at=T0 + timedelta(hours=1)))
    assert ingestor.handle(PEAK, rebooted, T0 + timedelta(hours=1)).accepted == 1
    other = payload(reading(1, 2.3, unit="N*m"))
    assert ingestor.handle(TORQUE, other, T0).accepted == 1
    twice = payload(reading(7, 240.0), reading(7, 240.0))
    assert (ingestor.handle(PEAK, twice, T0).duplicates, ingestor.readings.count()) == (1, 5)


def test_a_store_of_the_first_layout_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as db:
        db.execute(
            "CREATE TABLE readings (message_id VARCHAR PRIMARY KEY, site VARCHAR, line "
            "VARCHAR, machine VARCHAR, parameter VARCHAR, ts TIMESTAMPTZ, value DOUBLE, "
            "unit VARCHAR, quality VARCHAR, received_at TIMESTAMPTZ)"
        )
        db.execute(
            "INSERT INTO readings VALUES ('m-1', 'SITE-1', 'LINE-PCB', 'M-REFLOW-2', "
            "'P-REFLOW-PEAK', ?, 240.5, 'degC', 'good', ?)",
            [T0, T0],
        )
    store = ReadingsStore(path)
    try:
        assert store.series("M-REFLOW-2", "P-REFLOW-PEAK") == [(T0, 240.5)]
        batch = ReadingBatch()
        number = store.series_id("SITE-1", "LINE-PCB", "M-REFLOW-2", "P-REFLOW-PEAK", "degC")
        batch.extend(number, ["m-1", "m-2"], micros_of([T0, T0]), [240.5, 241.0], ["good"] * 2, T0)
        assert store.write(batch).tolist() == [False, True]
        assert store.count() == 2
    finally:
        store.close()


def test_alarms_and_summaries_do_not_depend_on_how_readings_are_batched(
    graph: GraphStore, tmp_path: Path
) -> None:
    """The same stream, one message at a time or all in one batch, raises the same
    alarms (opened and closed by the same readings) and writes the same run means."""
    machine = max(
        ("M-REFLOW-1", "M-REFLOW-2"), key=lambda m: len(graph.edges([m], {"ON": Direction.IN}))
    )
    topic = f"sqems/v1/SITE-1/LINE-PCB/{machine}/P-REFLOW-PEAK"
    runs = sorted(
        (span, r)
        for e in graph.edges([machine], {"ON": Direction.IN})
        if (span := graph.get(r := e.src).interval())
    )
    assert len(runs) == 2
    rng = random.Random(5)
    items = []
    for (start, end), _ in runs:
        for k in range(120):
            value = 242.5 + rng.gauss(0, 0.4) + (7.0 if 40 <= k % 60 < 43 else 0.0)
            at = datetime.fromtimestamp(start + (end - start) * k / 120, UTC)
            items.append(reading(len(items), value, at=at))
    after = datetime.fromtimestamp(runs[-1][0][1] + 30, UTC)  # closes the last run
    items.append(reading(len(items), 242.5, at=after))
    arrival = after + timedelta(seconds=30)

    def run(name: str, messages: list[bytes]) -> tuple[list[tuple[str, datetime]], Any]:
        store = EmbeddedGraphStore(None)
        load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
        raised: list[AlarmEvent] = []
        ingestor = Ingestor(
            store,
            ReadingsStore(tmp_path / f"{name}.duckdb"),
            Quarantine(tmp_path / f"{name}.db"),
            sinks=[raised.append],
        )
        for m in messages:
            ingestor.handle(topic, m, arrival)
        means = {
            e.src: e.props
            for e in store.edges(["P-REFLOW-PEAK"], {"RECORDED": Direction.IN})
            if e.src in {r for _, r in runs}
        }
        return [(e.alarm.rule, e.alarm.raised_at) for e in raised], means

    one_by_one = run("single", [payload(i) for i in items])
    together = run("batch", [payload(*items)])
    assert one_by_one == together
    assert len(one_by_one[0]) >= 6 and len(one_by_one[1]) == 2


@pytest.mark.parametrize(
    ("topic", "item", "reason"),
    [
        ("sqems/v1/SITE-1/LINE-PCB/M-NOPE/P-REFLOW-PEAK", reading(1, 240.0), "M-NOPE is not"),
        ("sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-NOPE", reading(1, 240.0), "P-NOPE is not"),
        (PEAK, reading(1, 240.0, unit="bar"), "cannot be converted"),
        (PEAK, reading(1, 240.0, at=T0 + timedelta(hours=2)), "sender's clock"),
        ("sqems/v1/SITE-1", reading(1, 240.0), "is not sqems/v1"),
    ],
)
def test_what_cannot_be_accepted_is_quarantined_whole_with_the_reason(
    ingestor: Ingestor, topic: str, item: dict[str, Any], reason: str
) -> None:
    raw = payload(item)
    counts = ingestor.handle(topic, raw, T0)
    assert (counts.received, counts.quarantined, counts.accepted) == (1, 1, 0)
    (entry,) = ingestor.quarantine.entries()
    assert reason in entry.reason
    assert entry.raw == raw
    assert entry.source == f"mqtt:{topic}"


MESSAGES = st.lists(
    st.tuples(
        st.sampled_from([PEAK, TORQUE, "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-NOPE", "bad"]),
        st.lists(
            st.one_of(
                st.builds(
                    lambda i, v: reading(i, v, unit="degC"), st.integers(0, 40), st.floats(200, 300)
                ),
                st.builds(lambda i: reading(i, 2.3, unit="N*m"), st.integers(0, 40)),
                st.just({"value": "garbage"}),
            ),
            min_size=0,
            max_size=4,
        ),
    ),
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages=MESSAGES)
def test_every_reading_is_accepted_quarantined_or_a_duplicate(
    graph: GraphStore, tmp_path_factory: pytest.TempPathFactory, messages: list[Any]
) -> None:
    folder = tmp_path_factory.mktemp("invariant")
    readings, quarantine = ReadingsStore(folder / "r.duckdb"), Quarantine(folder / "q.db")
    try:
        ingestor = Ingestor(graph, readings, quarantine)
        for topic, items in messages:
            ingestor.handle(topic, json.dumps(items).encode(), T0)
        c = ingestor.counters
        sent = sum(max(1, len(items)) for _, items in messages)
        assert c.received == sent == c.accepted + c.quarantined + c.duplicates + c.spooled
        assert readings.count() == c.accepted
        assert quarantine.count() == c.quarantined
    finally:
        readings.close()
        quarantine.close()


GOOD_STAMPS = st.builds(
    # as senders write them: offsets, fractions of every length, Z
    lambda s, offset, digits, zulu: (
        ((T0 + timedelta(seconds=s)).astimezone(timezone(timedelta(minutes=offset))))
        .isoformat(timespec=digits)
        .replace("+00:00", "Z" if zulu else "+00:00")
    ),
    st.floats(-1e6, 1e6),
    st.integers(-23 * 60, 23 * 60),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
    st.booleans(),
)
ODD_STAMPS = [  # refused, or read only by the careful path
    "2026-02-30T08:00:00Z",
    "2026-01-06T08:00:00",
    "2026-01-06T08:00:00.1234567Z",
    "2026-01-06 08:00:00Z",
    "1999-12-31T23:59:59Z",
    "2000-01-01T00:30:00+01:00",
    "2999-01-01T00:00:00Z",
    "0001-01-01T00:30:00+01:00",
    "2026-01-06T08:00:00+24:00",
    "2026-01-06t08:00:00z",
    "1767686400",
]
GOOD_ITEMS = st.fixed_dictionaries(
    {
        "ts": GOOD_STAMPS,
        "value": st.one_of(st.floats(200, 300), st.integers(200, 300)),
        "unit": st.just("degC"),
        "id": st.integers(0, 30).map(lambda i: f"m-{i}"),
    },
    optional={"quality": st.sampled_from(["good", "bad", "uncertain"])},
)
ODD_ITEMS = st.fixed_dictionaries(
    {
        "ts": st.one_of(GOOD_STAMPS, st.sampled_from(ODD_STAMPS)),
        "value": st.one_of(st.floats(200, 300), st.just(True), st.just(None)),
        "unit": st.sampled_from(["degC", "degF", " degC", "furlong"]),
        "id": st.sampled_from(["m-1", " m-1 ", "", "null", "x" * 201, "m\n1", "\u00a0m"]),
    },
    optional={"quality": st.sampled_from(["good", "fine", None]), "extra": st.just(1)},
)
MESSAGE_ITEMS = st.one_of(
    st.lists(GOOD_ITEMS, min_size=1, max_size=5),
    st.lists(st.one_of(GOOD_ITEMS, ODD_ITEMS), min_size=0, max_size=4),
)


def both_ways(graph: GraphStore, batches: list[list[bytes]]) -> list[Any]:
    """Rows stored, counts and quarantine entries of ``batches`` (of payloads on
    PEAK, after one message that makes the series known), once as the pipeline reads
    them and once with every message read one reading at a time; and how many
    messages took the fast path."""
    outcomes: list[Any] = []
    for careful in (False, True):
        readings, quarantine = ReadingsStore(None), Quarantine(None)
        try:
            ingestor = Ingestor(graph, readings, quarantine)
            fast = 0
            plain = ingestor._plain

            def counted(messages: list[Message], plain: Any = plain) -> list[Any]:
                nonlocal fast
                found = plain(messages)
                fast += sum(f is not None for f in found)
                return found

            ingestor._plain = (  # type: ignore[method-assign]
                (lambda messages: [None] * len(messages)) if careful else counted
            )
            ingestor.handle(PEAK, payload(reading(0, 240.0), reading(-1, 240.0)), T0)
            for batch in batches:
                arrived = T0 + timedelta(days=30)
                ingestor.handle_many([Message(PEAK, raw, arrived) for raw in batch])
            with readings._lock:
                rows = readings._db.execute(
                    "SELECT series, message_id, epoch_us(ts), value, quality, "
                    "epoch_us(received_at) FROM samples ORDER BY ALL"
                ).fetchall()
            entries = [(e.item, e.reason, e.raw) for e in quarantine.entries()]
            outcomes.append(((rows, ingestor.counters, entries), fast))
        finally:
            readings.close()
            quarantine.close()
    (fast, used), (careful_way, _) = outcomes
    assert fast == careful_way
    c = fast[1]
    assert c.received == c.accepted + c.quarantined + c.duplicates
    return [*fast, used]


def test_the_fast_path_refuses_each_odd_reading_as_the_careful_path_does(
    graph: GraphStore,
) -> None:
    """Each odd reading, alone among good ones in a batch Arrow reads whole, or making
    Arrow give up on its batch: the same rows, counts and reasons as one reading at a
    time, and the good messages still take the fast path."""
    good = [reading(k, 240.0 + k, at=T0 + timedelta(seconds=k)) for k in range(1, 4)]
    odd: list[dict[str, Any]] = [
        *({"ts": ts} for ts in ODD_STAMPS),
        {"value": float("inf")},
        {"value": True},
        {"value": "241"},
        {"unit": "degF"},
        {"unit": " degC"},
        {"id": " m-9"},
        {"id": "x" * 201},
        {"id": "m\u00a0"},
        {"quality": None},
        {"quality": "fine"},
        {"extra": 1},
    ]
    batches = []
    for k, change in enumerate(odd):
        items = [{**reading(100 + k, 250.0), **change}, *good]
        batches.append([payload(*good), json.dumps(items).encode(), payload(*good)])
    batches.append([b"[]", b"{}", payload(good[0]), b'[{"ts": 1}] {"r": []}'])
    _, counts, entries, fast = both_ways(graph, batches)
    assert fast >= 2 * len(odd)  # the good messages beside the odd one took it
    reasons = " ".join(reason for _, reason, _ in entries)
    for words in ("not JSON", "timezone", "before 2000", "after the arrival", "finite", "extra"):
        assert words.lower() in reasons.lower()
    assert counts.quarantined >= 12


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.lists(MESSAGE_ITEMS.map(lambda items: json.dumps(items).encode()), max_size=6),
        min_size=1,
        max_size=3,
    )
)
def test_the_fast_path_stores_and_refuses_exactly_what_the_careful_path_does(
    graph: GraphStore, batches: list[list[bytes]]
) -> None:
    """The usual message (a list of good readings of a series already seen) skips the
    per-reading models; batches of any mix give the same rows, counts and quarantine
    entries (with their reasons) as reading each message one reading at a time."""
    both_ways(graph, batches)


def test_a_drift_raises_one_alarm_linked_to_machine_parameter_and_run(
    ingestor: Ingestor, graph: GraphStore
) -> None:
    raised: list[AlarmEvent] = []
    ingestor.sinks.append(raised.append)
    run = next(
        e.src for e in graph.edges(["M-REFLOW-2"], {"ON": Direction.IN})
    )  # a run on the oven, and a time inside it
    start = graph.get(run).interval()
    assert start is not None
    at = datetime.fromtimestamp(start[0] + 60, UTC)
    # at target, then far above it: rule 1 (beyond 3 sigma) fires from the first point
    # above and rule 5 (two of three beyond 2 sigma) from the second; they keep firing,
    # but each raises one alarm, when it starts
    values = [242.5] * 5 + [249.5] * 5
    items = [reading(100 + i, v, at=at + timedelta(seconds=i)) for i, v in enumerate(values)]
    counts = ingestor.handle(PEAK, payload(*items), at + timedelta(minutes=1))
    assert counts.alarms == len(raised) == 2
    assert {e.alarm.rule: e.alarm.raised_at for e in raised} == {
        "nelson_1": at + timedelta(seconds=5),
        "nelson_5": at + timedelta(seconds=6),
    }
    event = raised[0]
    assert event.critical
    assert event.run == run
    linked = {e.dst for e in graph.edges([event.alarm.uid], {"RAISED_ON": Direction.OUT})}
    assert linked == {"M-REFLOW-2", "P-REFLOW-PEAK", run}


def test_readings_export_as_parquet_by_day_and_line(ingestor: Ingestor, tmp_path: Path) -> None:
    ingestor.handle(PEAK, payload(reading(1, 240.0), reading(2, 241.0)), T0)
    ingestor.handle(
        TORQUE,
        payload(reading(3, 2.3, unit="N*m", at=T0 + timedelta(days=1))),
        T0 + timedelta(days=1),
    )
    assert ingestor.readings.export_parquet(tmp_path / "parquet") == 3
    parts = sorted(
        str(p.parent.relative_to(tmp_path / "parquet"))
        for p in (tmp_path / "parquet").rglob("*.parquet")
    )
    assert parts == ["day=2026-01-06/line=LINE-PCB", "day=2026-01-07/line=LINE-ASM"]


def test_a_quarantined_reading_is_accepted_on_replay_once_its_cause_is_fixed(
    ingestor: Ingestor, graph: GraphStore
) -> None:
    topic = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-ZONE-3"
    raw = payload(reading(7, 190.0), {"value": "bad"}, reading(8, 191.0))
    ingestor.handle(topic, raw, T0)
    entries = ingestor.quarantine.entries()
    assert [e.item for e in entries] == [1, 0, 2]  # the bad one, then the unknown parameter
    still = ingestor.replay(entries[1].id)
    assert still.outcome is not None and "P-REFLOW-ZONE-3 is not in the graph" in still.outcome

    graph.upsert_nodes(
        [
            Parameter(
                uid="P-REFLOW-ZONE-3",
                name="zone 3 temperature",
                unit="degC",
                lsl=180,
                usl=200,
                target=190,
            )
        ]
    )
    # and measured on a step the oven performs
    (step,) = [e.dst for e in graph.edges(["M-REFLOW-2"], {"CAN_PERFORM": Direction.OUT})]
    graph.upsert_edges([Edge("PARAMETER_OF", "P-REFLOW-ZONE-3", step)])
    done = [ingestor.replay(e.id) for e in entries]
    assert [e.outcome for e in done][1:] == ["accepted", "accepted"]
    assert done[0].outcome is not None and "value:" in done[0].outcome
    assert ingestor.readings.count() == 2
    assert [e.id for e in ingestor.quarantine.entries()] == [entries[0].id]
    assert ingestor.quarantine.get(entries[1].id).raw == raw  # kept as received
    assert ingestor.replay(entries[1].id).outcome == "duplicate"


def test_a_finished_runs_mean_reading_becomes_its_recorded_actual(
    ingestor: Ingestor, graph: GraphStore
) -> None:
    ovens = {
        m: [e.src for e in graph.edges([m], {"ON": Direction.IN})]
        for m in ("M-REFLOW-1", "M-REFLOW-2")
    }
    machine = max(ovens, key=lambda m: len(ovens[m]))
    spans = sorted((span, r) for r in ovens[machine] if (span := graph.get(r).interval()))
    ((a_start, a_end), first), ((b_start, _), _) = spans[0], spans[1]
    inside = [datetime.fromtimestamp(a_start + (a_end - a_start) * k / 6, UTC) for k in (1, 2, 3)]
    items = [
        reading(500 + i, v, at=t)
        for i, (v, t) in enumerate(zip([241.0, 242.0, 246.0], inside, strict=True))
    ]
    # a reading in the next run closes the first one
    items.append(reading(510, 243.0, at=datetime.fromtimestamp(b_start + 1, UTC)))
    topic = f"sqems/v1/SITE-1/LINE-PCB/{machine}/P-REFLOW-PEAK"
    ingestor.handle(topic, payload(*items), datetime.fromtimestamp(b_start + 60, UTC))
    recorded = {e.dst: e.props for e in graph.edges([first], {"RECORDED": Direction.OUT})}
    assert recorded["P-REFLOW-PEAK"] == {"value": 243.0, "unit": "degC"}


# --- poison messages and misplaced topics --------------------------------------------------


def excursion(graph: GraphStore, tag: str) -> tuple[list[dict[str, Any]], datetime]:
    """Readings inside a run of the oven: on target, then far above (both alarm rules
    fire: the peak temperature is critical), and their arrival time."""
    run = next(e.src for e in graph.edges(["M-REFLOW-2"], {"ON": Direction.IN}))
    span = graph.get(run).interval()
    assert span is not None
    at = datetime.fromtimestamp(span[0] + 60, UTC)
    values = [242.5] * 5 + [249.5] * 5
    items = [
        {**reading(i, v, at=at + timedelta(seconds=i)), "id": f"{tag}-{i}"}
        for i, v in enumerate(values)
    ]
    return items, at + timedelta(minutes=1)


def test_poison_readings_are_refused_and_the_rest_of_the_batch_alarms_as_usual(
    ingestor: Ingestor, graph: GraphStore
) -> None:
    """Each of these once stopped ingestion (a KeyError from pint, inf in the readings
    store then a failing monitor, an OverflowError raising the alarm); `true` raised a
    critical alarm."""
    raised: list[AlarmEvent] = []
    ingestor.sinks.append(raised.append)
    items, arrival = excursion(graph, "good")
    at = datetime.fromisoformat(items[0]["ts"])
    poison = [
        {**reading(900, 243.0, at=at), "unit": "kelvin**0"},
        {**reading(901, 1e308, at=at), "unit": "km"},
        reading(902, 260.0, at=datetime.fromisoformat("0001-01-01T00:00:01+01:00")),
        reading(903, True, at=at),
        reading(904, "243", at=at),
    ]
    paste = "sqems/v1/SITE-1/LINE-PCB/M-PRINT-2/P-PASTE-THICK"  # in um: 1e308 km is inf
    messages = [Message(paste if "km" in str(p) else PEAK, payload(p), arrival) for p in poison[:3]]
    messages += [Message(PEAK, payload(i), arrival) for i in items]
    messages += [Message(PEAK, payload(*poison[3:]), arrival)]
    counts = ingestor.handle_many(messages)
    assert (counts.received, counts.accepted, counts.quarantined) == (15, 10, 5)
    assert counts.alarms == len(raised) == 2 and all(e.critical for e in raised)
    reasons = [e.reason for e in ingestor.quarantine.entries()]
    for expected in ("KeyError", "not a finite number", "calendar", "(got True)", "(got '243')"):
        assert sum(expected in r for r in reasons) == 1, (expected, reasons)
    assert ingestor.readings.count() == 10
    assert max(v for _, v in ingestor.readings.series("M-REFLOW-2", "P-REFLOW-PEAK")) == 249.5
    assert ingestor.health.healthy and ingestor.health.last_error is None


class KeyErrorOnOddUnits(UnitConverter):
    """The unit converter as it was: pint's KeyError for ``kelvin**0`` escaped it."""

    def __call__(self, value: float, unit: str, to: str) -> float:
        if "**0" in unit:
            raise KeyError("kelvin")
        return super().__call__(value, unit, to)


def test_a_message_that_makes_the_pipeline_throw_is_quarantined_alone(
    graph: GraphStore, tmp_path: Path
) -> None:
    """Whatever a message triggers, it takes only itself down: the batch is tried
    again in halves, the one that throws is kept with the exception, the rest counts."""
    raised: list[AlarmEvent] = []
    ingestor = Ingestor(
        graph,
        ReadingsStore(tmp_path / "r.duckdb"),
        Quarantine(tmp_path / "q.db"),
        sinks=[raised.append],
        converter=KeyErrorOnOddUnits(),
    )
    items, arrival = excursion(graph, "split")
    poison = payload({**items[0], "id": "poison", "unit": "kelvin**0"})
    messages = [Message(PEAK, payload(i), arrival) for i in items]
    messages.insert(7, Message(PEAK, poison, arrival))
    counts = ingestor.handle_many(messages)
    assert (counts.received, counts.accepted, counts.quarantined) == (11, 10, 1)
    assert counts.alarms == 2 and {e.alarm.rule for e in raised} == {"nelson_1", "nelson_5"}
    (entry,) = ingestor.quarantine.entries()
    assert entry.raw == poison and entry.item is None
    assert "processing failed (KeyError: 'kelvin')" in entry.reason
    h = ingestor.health
    assert h.healthy and h.last_error is not None and "KeyError" in h.last_error
    c = ingestor.counters
    assert c.received == c.accepted + c.quarantined + c.duplicates + c.spooled
    ingestor.readings.close()
    ingestor.quarantine.close()


def test_a_topic_that_misplaces_its_machine_is_refused_and_stop_line_goes_to_its_line(
    ingestor: Ingestor, graph: GraphStore
) -> None:
    """A reading on a line the oven is not on, batched just before a real excursion,
    once sent the excursion's stop-line command to the bogus line."""
    raised: list[AlarmEvent] = []
    ingestor.sinks.append(raised.append)
    items, arrival = excursion(graph, "placed")
    at = datetime.fromisoformat(items[0]["ts"])
    bogus = "sqems/v1/SITE-9/LINE-NOWHERE/M-REFLOW-2/P-REFLOW-PEAK"
    torque_on_oven = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-TORQUE"
    messages = [
        Message(bogus, payload(reading(500, 250.0, at=at)), arrival),
        Message(torque_on_oven, payload(reading(501, 2.3, unit="N*m", at=at)), arrival),
        Message(PEAK, payload(*items), arrival),
    ]
    counts = ingestor.handle_many(messages)
    assert (counts.accepted, counts.quarantined, counts.alarms) == (10, 2, 2)
    first, second = ingestor.quarantine.entries()
    assert first.source == f"mqtt:{bogus}"
    assert "the graph has it on SITE-1/LINE-PCB" in first.reason
    assert "P-TORQUE belongs to no step machine M-REFLOW-2" in second.reason
    assert {e.topic.command for e in raised if e.topic} == {"sqems/v1/SITE-1/LINE-PCB/command"}


# --- the quarantine's size -----------------------------------------------------------------


def bad_readings(n: int) -> bytes:
    """A message of ``n`` readings, each refused (its value is not a number)."""
    return payload(*[{**reading(i, 0.0), "value": f"hot-{i}"} for i in range(n)])


def file_size(path: Path) -> int:
    """The size of a SQLite file once its write-ahead log is written back into it."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path.stat().st_size


def test_a_message_of_many_bad_readings_is_kept_once_not_once_per_reading(
    ingestor: Ingestor, tmp_path: Path
) -> None:
    """1,000 refused readings of a 91 KiB message once added 1,000 copies of it."""
    raw = bad_readings(1_000)
    assert 80_000 < len(raw) < 100_000
    path = tmp_path / "quarantine.db"
    ingestor.quarantine.add([])  # the file exists with its schema
    before = file_size(path)
    assert ingestor.handle(PEAK, raw, T0).quarantined == 1_000
    once = file_size(path)
    ingestor.handle(PEAK, raw, T0)  # delivered again: its bytes are not kept again
    twice = file_size(path)
    assert ingestor.quarantine.count() == 2_000
    # the payload once, and a short row (source, reason, time) per refused reading
    assert once - before < 4 * len(raw), f"one message grew the file {once - before:,} bytes"
    assert twice - once < 3 * len(raw), f"its redelivery grew it {twice - once:,} bytes"
    entries = ingestor.quarantine.entries(limit=2_000, raw_bytes=64)
    assert all(len(e.raw) == 64 and e.size == len(raw) and e.truncated for e in entries)
    assert ingestor.quarantine.get(entries[999].id).raw == raw  # whole, as received
    replayed = ingestor.replay(entries[999].id)  # the one reading, as before
    assert replayed.outcome is not None and "(got 'hot-999')" in replayed.outcome


def test_a_quarantine_of_the_first_layout_keeps_its_entries_and_their_bytes_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT,
        received_at TEXT NOT NULL, source TEXT NOT NULL, item INTEGER, reason TEXT NOT NULL,
        raw BLOB NOT NULL, replayed_at TEXT, outcome TEXT);
        CREATE INDEX quarantine_open ON quarantine (replayed_at, id);"""
    )
    raw = bad_readings(3)
    rows = [("t0", f"mqtt:{PEAK}", i, f"reading {i}: bad", raw, None, None) for i in range(3)]
    rows.append(("t1", "file:erp:x.csv#2", None, "bad row", b"a,b", "t2", "accepted"))
    db.executemany(
        "INSERT INTO quarantine (received_at, source, item, reason, raw, replayed_at, outcome) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    db.close()
    quarantine = Quarantine(path)
    try:
        entries = quarantine.entries(open_only=False)
        assert [(e.id, e.item, e.raw, e.outcome) for e in entries] == [
            (1, 0, raw, None),
            (2, 1, raw, None),
            (3, 2, raw, None),
            (4, None, b"a,b", "accepted"),
        ]
        assert quarantine.add([NewEntry("mqtt:x", "again", raw)]) == 1
        assert quarantine.get(5).raw == raw
    finally:
        quarantine.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM payloads").fetchone() == (2,)
    db.close()
