"""`sqems ingest --workers 2` end to end: the real command as a process of its own, two
worker processes started by it, the tests' Neo4j server as the shared graph and their
Mosquitto as the broker.

A small stream of every series of the demo plant (one series drifting) is published in
three parts: the first with both workers up; the second while one worker, killed outright
(SIGKILL), is down and being started again by the launcher; the third once it is back,
with a redelivered reading, a topic the graph does not know and a payload that is not
JSON. The command is stopped with SIGTERM. Every reading is then stored exactly once
across the two workers' stores, in its owner's store; the status
files' totals keep the counted invariant; and the drift's alarms reach the graph (and
the broker) once each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Broker, wait_for
from test_ingest_workers import PEAK, body, client, invariant, run_start, stored

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import Direction
from sqems.graph_model.neo4j_server import Neo4jServer
from sqems.graph_model.neo4j_store import Neo4jGraphStore
from sqems.ingestion.partition import Partition, owner
from sqems.ingestion.sensors import Sensor, sensors_of
from sqems.ingestion.workers import WorkerStatus, read_status, totals, worker_command

ROUNDS = (0, 12, 24, 36)
"""The stream's three parts: rounds 0-11, 12-23 (one worker down), 24-35."""
DRIFT_FROM = 26
"""The peak temperature drifts from this round on (in the third part)."""


@pytest.fixture(scope="module")
def graph(neo4j_server: Neo4jServer) -> Iterator[Neo4jGraphStore]:
    store = Neo4jGraphStore(neo4j_server.uri, password=neo4j_server.password(), batch_size=500)
    store.wipe()
    load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
    try:
        yield store
    finally:
        store.close()


class Command:
    """``sqems ingest --workers 2`` running as a process, its output in files."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.output = home / "ingest.out"
        self.errors = home / "ingest.err"
        with self.output.open("wb") as out, self.errors.open("wb") as err:
            self.process = subprocess.Popen(
                [*worker_command(Partition(0, 2))[:3], "ingest", "--workers", "2"],
                env=env, stdout=out, stderr=err,
            )  # fmt: skip

    def status(self, k: int) -> WorkerStatus | None:
        return read_status(self.home / "data" / "workers" / f"{k}of2" / "ingest-status.json")

    def statuses(self) -> list[WorkerStatus | None]:
        return [self.status(k) for k in (0, 1)]

    def said(self) -> str:
        return self.errors.read_text(errors="replace")[-3000:]

    def received(self) -> int:
        return totals(self.statuses()).received

    def alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"sqems ingest exited with {self.process.returncode}: {self.said()}")

    def stop(self) -> None:
        """SIGTERM, as systemd or a container's stop sends it; then anything left over
        (a failed test) is killed, the workers too (they run in sessions of their own)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for status in self.statuses():
            if status is not None:
                with suppress(ProcessLookupError):
                    os.kill(status.pid, signal.SIGKILL)


def send(sender: Any, sensors: list[Sensor], at: datetime, rounds: range) -> None:
    for i in rounds:
        for s in sensors:
            value = s.spec.target if s.spec.target is not None else 0.0
            if str(s.topic) == PEAK and i >= DRIFT_FROM:
                value = 249.6
            sender.publish(str(s.topic), body(at, i, value, s.spec.unit), qos=1)


def test_the_command_with_two_workers_stores_each_reading_once_through_a_killed_worker(
    graph: Neo4jGraphStore, neo4j_server: Neo4jServer, mosquitto: Broker, tmp_path: Path
) -> None:
    sensors = sensors_of(graph)
    at = run_start(graph)
    env = {
        **os.environ,
        "SQEMS_DATA_DIR": str(tmp_path / "data"),
        "SQEMS_GRAPH_URI": neo4j_server.uri,
        "SQEMS_NEO4J_PASSWORD": neo4j_server.password(),
        "SQEMS_MQTT_HOST": mosquitto.host,
        "SQEMS_MQTT_PORT": str(mosquitto.port),
        "SQEMS_MQTT_CLIENT_ID": f"e2e-{os.getpid()}-{time.monotonic_ns()}",
    }
    heard: list[dict[str, Any]] = []
    listener = client(mosquitto, "e2e-alarm-listener")
    listener.on_message = lambda _c, _u, m: heard.append(json.loads(m.payload))
    listener.subscribe(f"{PEAK}/alarm", qos=1)
    sender = client(mosquitto, "e2e-sender")
    command = Command(tmp_path, env)
    try:

        def up() -> bool:
            command.alive()
            return all(s is not None and s.connected for s in command.statuses())

        wait_for(up, "both workers to connect", timeout=60)
        per_round = len(sensors)

        send(sender, sensors, at, range(ROUNDS[0], ROUNDS[1]))
        wait_for(lambda: command.received() == ROUNDS[1] * per_round, "the first part")
        time.sleep(0.6)  # a report after the last batch's acknowledgement
        victim = command.status(0)
        assert victim is not None
        os.kill(victim.pid, signal.SIGKILL)

        # the second part while worker 0/2 is down: its session holds its share
        send(sender, sensors, at, range(ROUNDS[1], ROUNDS[2]))

        def restarted() -> bool:
            command.alive()
            now = command.status(0)
            return now is not None and now.pid != victim.pid and now.connected

        wait_for(restarted, "the launcher to start worker 0/2 again", timeout=60)
        # the drift once every reading before it is in: all its readings alike, so the
        # order they arrive in cannot change which rules fire
        send(sender, sensors, at, range(ROUNDS[2], DRIFT_FROM))
        wait_for(lambda: command.received() == DRIFT_FROM * per_round, "the readings before")
        send(sender, sensors, at, range(DRIFT_FROM, ROUNDS[3]))
        sender.publish(str(sensors[0].topic), body(at, 0, 1.0, sensors[0].spec.unit), qos=1)
        sender.publish("sqems/v1/SITE-1/LINE-X/M-NONE/P-NONE", body(at, 0, 1.0, "mm"), qos=1)
        sender.publish(str(sensors[1].topic), b"not json", qos=1)
        good = ROUNDS[3] * per_round
        wait_for(lambda: command.received() == good + 3, "every message", timeout=60)
        wait_for(lambda: len(heard) >= 2, "the drift's alarms")
        time.sleep(0.6)  # a later alarm, if one were raised twice, would show here
    finally:
        command.stop()
        for c in (sender, listener):
            c.loop_stop()
            c.disconnect()

    assert command.process.returncode == 0, command.said()
    assert "exited with -9" in command.said()  # the launcher said what happened
    output = command.output.read_text()
    assert f"received {good + 3:,}: accepted {good:,}" in output, output

    # every reading stored once, in its owner's store (the order is another test's:
    # Mosquitto hands a subscriber what queued behind its full in-flight window out of
    # order, and this stream is sent at full speed — see docs/ingestion.md)
    found = [stored(tmp_path / "data" / "workers" / f"{k}of2" / "readings.duckdb") for k in (0, 1)]
    assert sum(len(ids) for store in found for ids in store.values()) == good
    sent = [f"r-{i}" for i in range(ROUNDS[3])]
    for s in sensors:
        key = f"{s.topic.machine}/{s.topic.parameter}"
        mine = owner(str(s.topic), 2)
        assert key not in found[1 - mine]
        assert sorted(found[mine][key], key=lambda m: int(m[2:])) == sent, key

    # the counted invariant in each status file and over both; the killed worker's
    # file counts its partition across both of its runs
    reports = command.statuses()
    for report in reports:
        assert report is not None
        invariant(report.total)
    first = reports[0]
    assert first is not None and first.before.received > 0
    total = totals(reports)
    invariant(total)
    assert (total.accepted, total.duplicates, total.quarantined) == (good, 1, 2)

    # the drift's two rules, each raised once: in the graph and on the broker
    raised = [e.src for e in graph.edges(["P-REFLOW-PEAK"], {"RAISED_ON": Direction.IN})]
    rules = sorted(str(graph.get(uid).rule) for uid in raised)  # type: ignore[attr-defined]
    assert rules == ["nelson_1", "nelson_5"]
    assert sorted(a["rule"] for a in heard) == ["nelson_1", "nelson_5"]
    assert total.alarms == 2
