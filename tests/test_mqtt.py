"""Ingestion through a real Mosquitto broker: readings in, alarms and commands out, and
nothing lost when the broker restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import paho.mqtt.client as mqtt
import pytest
from conftest import Broker, wait_for
from paho.mqtt.enums import CallbackAPIVersion
from test_ingestion import KeyErrorOnOddUnits

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.pipeline import FAULT_TOPIC, Ingestor
from sqems.ingestion.quarantine import Quarantine
from sqems.ingestion.readings import BoolArray, ReadingBatch, ReadingsStore

PEAK = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK"
PASTE = "sqems/v1/SITE-1/LINE-PCB/M-PRINT-2/P-PASTE-THICK"


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphStore]:
    with EmbeddedGraphStore(None) as store:
        load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
        yield store


def client(broker: Broker, name: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def readings(start: int, n: int, at: datetime, value: Callable[[int], float]) -> list[bytes]:
    return [
        json.dumps(
            {
                "ts": (at + timedelta(seconds=i)).isoformat(),
                "value": value(i),
                "unit": "degC",
                "id": f"peak-{i}",
            }
        ).encode()
        for i in range(start, start + n)
    ]


@pytest.fixture
def ingestion(
    graph: GraphStore, mosquitto: Broker, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[MqttIngestion]:
    ingestor = Ingestor(graph, ReadingsStore(tmp_path / "r.duckdb"), Quarantine(tmp_path / "q.db"))
    bridge = MqttIngestion(ingestor, mosquitto.host, mosquitto.port,
                           client_id=f"sqems-test-{request.node.name}"[:60])  # fmt: skip
    with bridge:
        wait_for(bridge.connected.is_set, "the ingestion to connect")
        yield bridge
    ingestor.readings.close()
    ingestor.quarantine.close()


def run_window(graph: GraphStore) -> datetime:
    run = next(e.src for e in graph.edges(["M-REFLOW-2"], {"ON": Direction.IN}))
    span = graph.get(run).interval()
    assert span is not None
    return datetime.fromtimestamp(span[0] + 1, UTC)


def test_readings_through_the_broker_are_stored_and_a_drift_alarms_the_line(
    ingestion: MqttIngestion, mosquitto: Broker, graph: GraphStore
) -> None:
    heard: list[tuple[str, dict[str, Any]]] = []
    listener = client(mosquitto, "test-listener")
    listener.on_message = lambda _c, _u, m: heard.append((m.topic, json.loads(m.payload)))
    listener.subscribe([(f"{PEAK}/alarm", 1), ("sqems/v1/SITE-1/LINE-PCB/command", 1)])
    time.sleep(0.2)
    sender = client(mosquitto, "test-sensor")
    at = run_window(graph)
    values = readings(0, 300, at, lambda i: 242.5 if i < 250 else 249.6)
    for body in [*values, b"not json"]:
        sender.publish(PEAK, body, qos=1)
    wait_for(lambda: ingestion.counters.received == 301, "301 readings to arrive")
    c = ingestion.counters
    assert (c.accepted, c.quarantined, c.duplicates) == (300, 1, 0)
    # beyond 3 sigma, two of three beyond 2 sigma: each rule alarms once when it starts
    # firing, and the peak temperature is critical: stop the line
    wait_for(lambda: len(heard) >= 4, "two alarms and their stop commands")
    alarms = [body for t, body in heard if t == f"{PEAK}/alarm"]
    assert {a["rule"] for a in alarms} == {"nelson_1", "nelson_5"}
    assert all(a["run"] and a["severity"] == "critical" for a in alarms)
    stops = [body for t, body in heard if t.endswith("/command")]
    assert [s["command"] for s in stops] == ["stop_line"] * 2
    listener.loop_stop()
    sender.loop_stop()


def test_nothing_is_lost_across_a_broker_restart(
    ingestion: MqttIngestion, mosquitto: Broker, graph: GraphStore
) -> None:
    at = run_window(graph)
    sender = client(mosquitto, "test-sensor-restart")
    first = readings(1_000, 200, at, lambda i: 242.5)
    for body in first:
        sender.publish(PEAK, body, qos=1).wait_for_publish(5)
    wait_for(lambda: ingestion.counters.accepted == 200, "the first 200 readings")
    sender.loop_stop()
    sender.disconnect()

    mosquitto.stop()
    wait_for(lambda: not ingestion.connected.is_set(), "the ingestion to notice")
    mosquitto.start()
    wait_for(ingestion.connected.is_set, "the ingestion to reconnect", timeout=60)

    sender = client(mosquitto, "test-sensor-restart")
    second = readings(2_000, 200, at, lambda i: 242.5)
    for body in second:
        sender.publish(PEAK, body, qos=1).wait_for_publish(5)
    wait_for(lambda: ingestion.counters.accepted == 400, "all 400 readings")
    assert ingestion.ingestor.readings.count() == 400
    sender.loop_stop()


def test_what_the_broker_holds_for_the_ingestion_survives_a_restart(
    graph: GraphStore, mosquitto: Broker, tmp_path: Path
) -> None:
    """Readings sent while the ingestion is away wait in its persistent session; the
    broker restarts meanwhile; the ingestion comes back and gets every one."""
    ingestor = Ingestor(graph, ReadingsStore(tmp_path / "r.duckdb"), Quarantine(tmp_path / "q.db"))
    at = run_window(graph)
    with MqttIngestion(ingestor, mosquitto.host, mosquitto.port, client_id="sqems-held") as first:
        wait_for(first.connected.is_set, "the ingestion to connect")
    sender = client(mosquitto, "test-sensor-held")
    for body in readings(5_000, 300, at, lambda i: 242.5):
        sender.publish(PEAK, body, qos=1).wait_for_publish(5)
    sender.loop_stop()
    sender.disconnect()

    mosquitto.stop()  # fails if the broker did not save the sessions
    mosquitto.start()

    with MqttIngestion(ingestor, mosquitto.host, mosquitto.port, client_id="sqems-held") as again:
        wait_for(lambda: again.counters.accepted == 300, "the 300 held readings", timeout=60)
    assert ingestor.readings.count() == 300
    ingestor.readings.close()
    ingestor.quarantine.close()


def listen(broker: Broker, name: str, *topics: str) -> list[tuple[str, dict[str, Any]]]:
    heard: list[tuple[str, dict[str, Any]]] = []
    listener = client(broker, name)
    listener.on_message = lambda _c, _u, m: heard.append((m.topic, json.loads(m.payload)))
    listener.subscribe([(t, 1) for t in topics])
    time.sleep(0.2)
    return heard


def test_poison_messages_are_quarantined_and_an_excursion_still_stops_the_line(
    ingestion: MqttIngestion, mosquitto: Broker, graph: GraphStore
) -> None:
    """Each of these once killed the worker: an odd unit pint choked on, a value that
    converts to inf, an out-of-spec reading stamped in year 1."""
    heard = listen(mosquitto, "test-poison-listener", f"{PEAK}/alarm", "sqems/v1/+/+/command")
    sender = client(mosquitto, "test-poison-sensor")
    at = run_window(graph)
    good = readings(0, 40, at, lambda i: 242.5 if i < 30 else 249.6)
    poison = [
        (PEAK, {**json.loads(good[0]), "id": "odd-unit", "unit": "kelvin**0"}),
        (PASTE, {**json.loads(good[1]), "id": "inf", "value": 1e308, "unit": "km"}),
        (
            PEAK,
            {
                **json.loads(good[2]),
                "id": "year-1",
                "value": 260.0,
                "ts": "0001-01-01T00:00:01+01:00",
            },
        ),
    ]
    for i, body in enumerate(good):
        if i in (5, 15, 25):
            topic, item = poison[i // 10]
            sender.publish(topic, json.dumps(item), qos=1)
        sender.publish(PEAK, body, qos=1)
    wait_for(lambda: ingestion.counters.received == 43, "43 readings to arrive")
    c = ingestion.counters
    assert (c.accepted, c.quarantined, c.duplicates) == (40, 3, 0)
    wait_for(lambda: len(heard) >= 4, "two alarms and their stop commands")
    stops = [t for t, body in heard if body.get("command") == "stop_line"]
    assert stops == ["sqems/v1/SITE-1/LINE-PCB/command"] * 2
    reasons = [e.reason for e in ingestion.ingestor.quarantine.entries()]
    assert len(reasons) == 3 and "KeyError" in reasons[0] and "finite" in reasons[1]
    assert ingestion.ingestor.health.healthy
    sender.loop_stop()


def test_a_message_that_throws_is_quarantined_alone_acked_and_not_delivered_again(
    graph: GraphStore, mosquitto: Broker, tmp_path: Path
) -> None:
    """A message that makes the pipeline throw, whatever the cause, is kept in the
    quarantine with the exception; it and its batch are acknowledged, so the broker
    does not hand it over again after a restart of the ingestion."""
    ingestor = Ingestor(
        graph,
        ReadingsStore(tmp_path / "r.duckdb"),
        Quarantine(tmp_path / "q.db"),
        converter=KeyErrorOnOddUnits(),
    )
    at = run_window(graph)
    sender = client(mosquitto, "test-throw-sensor")
    with MqttIngestion(ingestor, mosquitto.host, mosquitto.port, client_id="sqems-throw") as first:
        wait_for(first.connected.is_set, "the ingestion to connect")
        good = readings(7_000, 30, at, lambda i: 242.5)
        for body in good[:15]:
            sender.publish(PEAK, body, qos=1)
        odd = {**json.loads(good[0]), "id": "odd", "unit": "kelvin**0"}
        sender.publish(PEAK, json.dumps(odd), qos=1)
        for body in good[15:]:
            sender.publish(PEAK, body, qos=1)
        wait_for(lambda: first.counters.received == 31, "31 readings")
        assert (first.counters.accepted, first.counters.quarantined) == (30, 1)
        (entry,) = ingestor.quarantine.entries()
        assert "processing failed (KeyError" in entry.reason
    with MqttIngestion(ingestor, mosquitto.host, mosquitto.port, client_id="sqems-throw") as again:
        wait_for(again.connected.is_set, "the ingestion to reconnect")
        time.sleep(1.0)  # what the broker would hand over again arrives now
    assert ingestor.counters.received == 31
    sender.loop_stop()
    ingestor.readings.close()
    ingestor.quarantine.close()


class FailsOnce(ReadingsStore):
    """The readings store, whose disk fails once (an outage, not the message's fault)."""

    failed = False

    def write(self, batch: ReadingBatch) -> BoolArray:
        if not self.failed:
            self.failed = True
            raise duckdb.IOException("could not write: No space left on device")
        return super().write(batch)


def test_a_worker_that_dies_is_reported_and_restarted_and_its_batch_is_kept(
    graph: GraphStore, mosquitto: Broker, tmp_path: Path
) -> None:
    heard = listen(mosquitto, "test-watchdog-listener", FAULT_TOPIC)
    ingestor = Ingestor(graph, FailsOnce(tmp_path / "r.duckdb"), Quarantine(tmp_path / "q.db"))
    at = run_window(graph)
    sender = client(mosquitto, "test-watchdog-sensor")
    with MqttIngestion(ingestor, mosquitto.host, mosquitto.port, client_id="sqems-dies") as bridge:
        wait_for(bridge.connected.is_set, "the ingestion to connect")
        for body in readings(8_000, 5, at, lambda i: 242.5):
            sender.publish(PEAK, body, qos=1)
        wait_for(lambda: not ingestor.health.healthy, "the worker's death to be reported", 5)
        reason = ingestor.health.reason
        assert reason is not None and "worker died: IOException" in reason
        wait_for(lambda: bool(heard), "an alarm about ingestion")
        assert heard[0][1]["rule"] == "ingestion_down" and "No space" in heard[0][1]["message"]
        wait_for(lambda: ingestor.health.healthy, "the restarted worker to get through", 10)
        assert ingestor.health.restarts == 1
        assert (bridge.counters.received, bridge.counters.accepted) == (5, 5)
    assert ingestor.readings.count() == 5
    sender.loop_stop()
    ingestor.readings.close()
    ingestor.quarantine.close()
