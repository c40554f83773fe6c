"""The edge agent offline for real: two Mosquitto brokers (the line's and the central
one), the agent between them and the central ingestion behind the central broker.

The central broker is stopped in the middle of a stream of readings (with an excursion
on a critical parameter) and unit events. Meanwhile the line keeps judging its units and
stopping itself on its own broker, and the agent's queue grows. When the central broker
is back, everything arrives once: every reading in the central readings store, every
alarm in the central graph, and every judgement. A model published while the edge was
cut off is taken on reconnection; a bundle signed with another key is refused.

Judgements are checked twice: by a subscriber on the central broker (distinct ids, each
unit once) and as ``Judgement`` nodes in the central graph, written by the central
ingestion (:mod:`sqems.ingestion.edge_records`), one per id, linked to their units.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import Broker, wait_for
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from sqems.analysis.judgement import train_unit_model
from sqems.cli import app
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.edge import portable
from sqems.edge.agent import EdgeAgent, EdgeConfig
from sqems.edge.line import line_from_graph
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore
from sqems.graph_model.judgements import find_judgements
from sqems.graph_model.neo4j_server import free_port
from sqems.ingestion.broker import BrokerAccess
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.pipeline import Ingestor
from sqems.ingestion.quarantine import Quarantine
from sqems.ingestion.readings import ReadingsStore

SITE, LINE, EDGE = "SITE-1", "LINE-PCB", "EDGE-T"
PREFIX = f"sqems/v1/{SITE}/{LINE}"
SERIES = {  # topic → (unit, centre, noise step)
    f"{PREFIX}/M-PRINT-1/P-PASTE-THICK": ("um", 125.0, 1.0),
    f"{PREFIX}/M-REFLOW-1/P-REFLOW-PEAK": ("degC", 242.5, 0.3),
    f"{PREFIX}/M-REFLOW-1/P-REFLOW-SPEED": ("cm/min", 80.0, 0.5),
}
PEAK = f"{PREFIX}/M-REFLOW-1/P-REFLOW-PEAK"
PER_MESSAGE = 5
BURST = 600
"""Reading messages the line sends during the outage on top of its cycles."""


def broker(home: Path) -> Broker:
    """A Mosquitto broker like the session's ``mosquitto`` fixture, in ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = home / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {home}/\nmax_queued_messages 1000000\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    return Broker("127.0.0.1", port, config)


def elsewhere(at: Broker) -> Broker:
    """``at``'s broker, with its session store, listening on another port (``at`` must be
    stopped): what clients of ``at``'s port cannot reach."""
    port = free_port()
    config = at.config.with_name("elsewhere.conf")
    config.write_text(at.config.read_text().replace(f"listener {at.port} ", f"listener {port} ", 1))
    return Broker(at.host, port, config)


@dataclass
class Listener:
    """A persistent-session subscriber that keeps what it hears by topic."""

    heard: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, _c: mqtt.Client, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.heard.append((m.topic, bytes(m.payload)))

    def bodies(self, suffix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p in self.heard if t.endswith(suffix) and p]


def listen(at: Broker, name: str, topics: list[str]) -> tuple[mqtt.Client, Listener]:
    kept = Listener()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=name, clean_session=False, protocol=mqtt.MQTTv311
    )
    client.reconnect_delay_set(1, 2)
    client.on_message = kept.on_message
    client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
    client.connect(at.host, at.port)
    client.loop_start()
    return client, kept


def publisher(at: Broker, name: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    client.connect(at.host, at.port)
    client.loop_start()
    return client


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphStore]:
    with EmbeddedGraphStore(None) as store:
        load_plant(store, plant_sections(generate(PlantSpec(units=10_000, seed=3))))
        yield store


@dataclass
class Line:
    """The line's sensors and its unit events, numbered so nothing repeats."""

    sender: mqtt.Client
    start: datetime
    readings: int = 0
    units: list[str] = field(default_factory=list)
    messages: int = 0

    def cycle(self, unit: str, batch: str, peak: float | None = None) -> None:
        """Each series sends one message of readings, then ``unit`` leaves the line."""
        for topic, (unit_symbol, centre, step) in SERIES.items():
            body = []
            for k in range(PER_MESSAGE):
                i = self.readings + k
                value = centre + step * ((i * 7) % 5 - 2) / 2
                if topic == PEAK and peak is not None:
                    value = peak
                ts = self.start + timedelta(milliseconds=100 * (self.readings + k))
                body.append(
                    {"ts": ts.isoformat(), "value": value, "unit": unit_symbol, "id": f"r-{i}"}
                )
            self.readings += PER_MESSAGE
            self.messages += 1
            self.sender.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)
        event = {
            "id": f"u-{unit}",
            "unit": unit,
            "batch": batch,
            "ts": datetime.now(UTC).isoformat(),
        }
        self.sender.publish(f"{PREFIX}/unit", json.dumps(event), qos=1).wait_for_publish(5)
        self.units.append(unit)

    def burst(self, messages: int) -> None:
        """``messages`` messages of the speed series at once, as a line does after a
        stop (for the drain rate)."""
        topic = f"{PREFIX}/M-REFLOW-1/P-REFLOW-SPEED"
        last = None
        for _ in range(messages):
            body = [
                {
                    "ts": (
                        self.start + timedelta(milliseconds=100 * (self.readings + k))
                    ).isoformat(),
                    "value": 80.0 + ((self.readings + k) % 3 - 1) * 0.2,
                    "unit": "cm/min",
                    "id": f"r-{self.readings + k}",
                }
                for k in range(PER_MESSAGE)
            ]
            self.readings += PER_MESSAGE
            self.messages += 1
            last = self.sender.publish(topic, json.dumps(body), qos=1)
        assert last is not None
        last.wait_for_publish(10)


def test_the_line_keeps_judging_and_stopping_offline_and_central_gets_everything_once(
    graph: GraphStore, tmp_path: Path
) -> None:
    line_broker, central = broker(tmp_path / "line"), broker(tmp_path / "central")
    line_broker.start()
    central.start()
    keys, other_keys = tmp_path / "keys", tmp_path / "other-keys"
    private, public = portable.generate_keys(keys)
    other_private, _ = portable.generate_keys(other_keys)

    model = train_unit_model(graph, "PRD-BOARD")
    manifest1, onnx1 = model.portable(version="1")
    bundle1 = portable.sign(manifest1, onnx1, portable.load_private_key(private))
    batch = next(e.src for e in graph.edges(["PRD-BOARD"], {"OF_PRODUCT": Direction.IN}))
    units = sorted(e.dst for e in graph.edges([batch], {"PRODUCED": Direction.OUT}))

    ingestor = Ingestor(graph, ReadingsStore(tmp_path / "r.duckdb"), Quarantine(tmp_path / "q.db"))
    ingestion = MqttIngestion(ingestor, central.host, central.port, client_id="sqems-edge-central")
    ingestion.start()
    judged_c, judged = listen(central, "judgements", [f"{PREFIX}/edge/{EDGE}/+"])
    heard_c, heard = listen(
        line_broker, "line-listener",
        [f"{PREFIX}/command", f"{PREFIX}/+/+/alarm", f"{PREFIX}/edge/{EDGE}/judgement"],
    )  # fmt: skip
    admin = publisher(central, "admin")
    portable.publish(admin, SITE, LINE, bundle1)

    config = EdgeConfig(
        edge_id=EDGE,
        line=line_from_graph(graph, SITE, LINE),
        data_dir=tmp_path / "edge",
        local=BrokerAccess(line_broker.host, line_broker.port),
        central=BrokerAccess(central.host, central.port),
        public_key=portable.load_public_key(public),
        status_s=0.5,
        reconnect=(1, 2),
    )
    agent = EdgeAgent(config)
    sensors = Line(publisher(line_broker, "sensors"), datetime.now(UTC) - timedelta(minutes=4))
    try:
        agent.start()
        wait_for(lambda: agent.model is not None, "the edge to take model 1")
        wait_for(agent.local_connected.is_set, "the edge to reach the line's broker")
        # a bundle signed with another key is refused; the edge keeps model 1
        manifest9, onnx9 = model.portable(version="9")
        forged = portable.sign(manifest9, onnx9, portable.load_private_key(other_private))
        portable.publish(admin, SITE, LINE, forged)
        wait_for(lambda: agent.model_refused is not None, "the forged bundle's refusal")
        assert "does not verify" in (agent.model_refused or "")
        assert agent.model is not None and agent.model.version == "1"

        for n in range(8):  # central up
            sensors.cycle(units[n], batch)
        wait_for(lambda: agent.counters.judged == 8, "8 judgements online")
        # refused at the edge with the reason, forwarded all the same (the reading)
        sensors.sender.publish(PEAK, b"not json", qos=1)
        sensors.sender.publish(f"{PREFIX}/unit", b'{"unit": 1}', qos=1)
        sensors.messages += 2
        wait_for(lambda: agent.counters.quarantined == 2, "the edge's quarantine")
        reasons = [e.reason for e in agent.quarantine.entries()]
        assert any("not JSON" in r for r in reasons) and any("unit event" in r for r in reasons)

        central.stop()  # the network is gone
        wait_for(lambda: not agent.forwarder.connected.is_set(), "the edge to notice")
        offline_start = len(sensors.units)
        for n in range(8, 24):
            sensors.cycle(units[n], batch, peak=249.6 if 12 <= n < 15 else None)
        wait_for(lambda: agent.counters.judged == 24, "the line to judge 16 units offline")
        sensors.burst(BURST)
        wait_for(lambda: agent.counters.received == sensors.messages + 24, "the burst", 60)
        # the line stopped itself on its own broker, with no central system
        wait_for(lambda: heard.bodies("/command"), "a stop-line command on the line's broker")
        stops = heard.bodies("/command")
        assert {s["command"] for s in stops} == {"stop_line"}
        local_alarms = {a["uid"] for a in heard.bodies("/alarm")}
        assert local_alarms and all("P-REFLOW-PEAK" in uid for uid in local_alarms)
        offline = set(sensors.units[offline_start:])
        wait_for(
            lambda: {j["unit"] for j in heard.bodies("/judgement")} >= offline,
            "the offline judgements on the line's broker",
        )
        depth = agent.queue.depth
        assert depth >= 16 * (len(SERIES) + 1) + BURST, "readings and judgements wait"
        assert not agent.forwarder.connected.is_set()

        # model 2 is published while the edge cannot reach the central broker: the same
        # broker, from the same store, runs for a moment on a port the edge does not know,
        # takes the retained bundle and saves it; then it comes back where the edge looks
        manifest2, onnx2 = model.portable(version="2")
        bundle2 = portable.sign(manifest2, onnx2, portable.load_private_key(private))
        backstage = elsewhere(central)
        backstage.start()
        admin_again = publisher(backstage, "admin-2")
        portable.publish(admin_again, SITE, LINE, bundle2)
        admin_again.disconnect()
        backstage.stop()
        assert not agent.forwarder.connected.is_set()
        assert agent.model is not None and agent.model.version == "1"
        central.start()  # back, with its sessions and the retained model 2
        wait_for(agent.forwarder.connected.is_set, "the edge to reconnect", 30)
        started, before = time.monotonic(), agent.forwarder.forwarded
        wait_for(lambda: agent.queue.depth == 0, "the queue to drain", timeout=60)
        drained_s = time.monotonic() - started
        rate = (agent.forwarder.forwarded - before) / drained_s
        wait_for(lambda: agent.model is not None and agent.model.version == "2", "model 2")
        for n in range(24, 30):
            sensors.cycle(units[n], batch)
        wait_for(lambda: agent.counters.judged == 30 and agent.queue.depth == 0, "the last units")

        # every reading once in the central store
        # (the store holds a batch a moment before the ingestion has counted it)
        wait_for(
            lambda: ingestor.readings.count() == ingestor.counters.accepted == sensors.readings,
            "every reading centrally, stored and counted once",
            60,
        )
        assert any(e.raw == b"not json" for e in ingestor.quarantine.entries(limit=100))
        # every alarm of the edge once in the central graph (same uids: same rules, same readings)
        central_alarms = {a.uid for a in graph.find("Alarm") if "P-REFLOW-PEAK" in a.uid}
        assert local_alarms == central_alarms
        # every judgement once, by id; those after the reconnection carry model 2
        wait_for(lambda: len({j["id"] for j in judged.bodies("/judgement")}) == 30, "30 judgements")
        by_unit: dict[str, list[dict[str, Any]]] = {}
        for j in judged.bodies("/judgement"):
            by_unit.setdefault(j["unit"], []).append(j)
        assert set(by_unit) == set(sensors.units)
        assert all(len({j["id"] for j in js}) == 1 for js in by_unit.values())
        assert {by_unit[u][0]["model"]["version"] for u in sensors.units[24:]} == {"2"}
        assert {by_unit[u][0]["model"]["version"] for u in sensors.units[:24]} == {"1"}
        # in the central graph: one Judgement node per unit, linked to it, with its model
        expected = {f"{EDGE}/{u}/{'2' if n >= 24 else '1'}": u for n, u in enumerate(sensors.units)}
        wait_for(lambda: len(find_judgements(graph, edge=EDGE)) == 30, "30 judgement nodes")
        stored = find_judgements(graph, edge=EDGE)
        assert {j.judgement.uid: j.unit for j in stored} == expected
        assert ingestion.edge_records.counters.judgements >= 30
        status = judged.bodies("/status")[-1]
        assert status["online"] and status["models"] == {"unit-judgement": "2"}
        print(f"\nqueue drain after the outage: {depth} items, {rate:,.0f} items/s")
        admin_again.loop_stop()

        # started again with no central broker, the edge judges with the model it stored
        agent.stop()
        central.stop()
        agent = EdgeAgent(config)
        assert agent.model is not None and agent.model.version == "2"
        agent.start()
        wait_for(agent.local_connected.is_set, "the restarted edge to reach the line")
        sensors.cycle(units[30], batch)
        wait_for(lambda: agent.counters.judged == 1, "a judgement after the restart")
        assert agent.queue.depth >= len(SERIES) + 1
    finally:
        agent.stop()
        ingestion.stop()
        for c in (judged_c, heard_c, admin, sensors.sender):
            c.loop_stop()
        ingestor.readings.close()
        ingestor.quarantine.close()
        central.stop()
        line_broker.stop()


def test_a_message_the_agent_fails_on_is_quarantined_alone_and_the_line_goes_on(
    graph: GraphStore, tmp_path: Path
) -> None:
    """A model exported wrong (its schema two features short of its graph's inputs)
    makes judging a unit throw: that unit event goes to the quarantine with the reason,
    and the readings after it are watched and queued as usual. The central broker is
    never reachable here: the agent starts and works without it."""
    line_broker = broker(tmp_path / "line")
    line_broker.start()
    private, public = portable.generate_keys(tmp_path / "keys")
    manifest, onnx = train_unit_model(graph, "PRD-BOARD").portable(version="1")
    manifest["schema"]["groups"] = manifest["schema"]["groups"][1:]
    config = EdgeConfig(
        edge_id=EDGE,
        line=line_from_graph(graph, SITE, LINE),
        data_dir=tmp_path / "edge",
        local=BrokerAccess(line_broker.host, line_broker.port),
        central=BrokerAccess("127.0.0.1", free_port()),  # nobody listens there
        public_key=portable.load_public_key(public),
    )
    stored = config.data_dir / "models" / "unit-judgement.sqems-model.json"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(portable.sign(manifest, onnx, portable.load_private_key(private)))
    agent = EdgeAgent(config)
    sensors = Line(publisher(line_broker, "sensors"), datetime.now(UTC) - timedelta(minutes=4))
    try:
        agent.start()
        wait_for(agent.local_connected.is_set, "the edge to reach the line's broker")
        sensors.cycle("SN-1", "B-1")
        sensors.cycle("SN-2", "B-1")
        wait_for(lambda: agent.counters.received == 8, "two cycles")
        assert agent.counters.failures == 2 and agent.counters.judged == 0
        reasons = [e.reason for e in agent.quarantine.entries()]
        assert len(reasons) == 2 and all("failed on it" in r for r in reasons), reasons
        assert agent.counters.readings == sensors.readings
        assert agent.queue.depth == sensors.messages  # every reading message, for central
        assert not agent.forwarder.connected.is_set()
    finally:
        agent.stop()
        sensors.sender.loop_stop()
        line_broker.stop()


def test_the_commands_export_the_line_file_and_run_the_agent(tmp_path: Path) -> None:
    with EmbeddedGraphStore(tmp_path / "plant.db") as plant:
        load_plant(plant, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
    line_broker = broker(tmp_path / "line")
    line_broker.start()
    _, public = portable.generate_keys(tmp_path / "keys")
    env = {
        "COLUMNS": "200",
        "SQEMS_DATA_DIR": str(tmp_path / "data"),
        "SQEMS_GRAPH_URI": f"embedded://{tmp_path / 'plant.db'}",
        "SQEMS_EDGE_ID": EDGE,
        "SQEMS_EDGE_SITE": SITE,
        "SQEMS_EDGE_LINE": LINE,
        "SQEMS_EDGE_LOCAL_HOST": line_broker.host,
        "SQEMS_EDGE_LOCAL_PORT": str(line_broker.port),
        "SQEMS_EDGE_MODEL_KEY": str(public),
        "SQEMS_MQTT_PORT": str(free_port()),  # the central broker is out of reach
    }
    try:
        missing = CliRunner().invoke(app, ["edge", "run"], env=env)
        assert missing.exit_code == 2 and "sqems edge line" in missing.output
        done = CliRunner().invoke(app, ["edge", "line"], env=env)
        assert done.exit_code == 0, done.output
        assert "5 machines, 3 parameters (3 with both limits" in done.output
        ran = CliRunner().invoke(app, ["edge", "run", "--seconds", "1"], env=env)
        assert ran.exit_code == 0, ran.output
        assert "central unreachable; model none" in ran.output
    finally:
        line_broker.stop()
