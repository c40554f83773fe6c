"""Several ingestion workers sharing one stream through a real Mosquitto broker.

Two workers (partitions 0/2 and 1/2), each with its own persistent session, readings
store and status file, sharing the quarantine and the graph: every series is ingested,
in order, by exactly one of them; the counted invariant holds over both together; an
alarm is raised once; and a worker that goes away loses nothing of its partition while
the other carries on. The launcher (``sqems ingest --workers N``) is tested with real
processes, one killed outright.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import paho.mqtt.client as mqtt
import pytest
from conftest import Broker, wait_for
from live_server import LiveServer
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from sqems.cli import app
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore
from sqems.graphql import AccessStore, Role, create_app
from sqems.ingestion import service
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.partition import Partition, owner
from sqems.ingestion.pipeline import Counters, Ingestor
from sqems.ingestion.quarantine import NewEntry, Quarantine
from sqems.ingestion.readings import ReadingsStore
from sqems.ingestion.sensors import sensors_of
from sqems.ingestion.union import ReadingsUnion
from sqems.ingestion.workers import (
    Launcher,
    StatusFile,
    WorkerStatus,
    read_status,
    totals,
    worker_command,
)
from sqems.settings import Settings

PEAK = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK"


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphStore]:
    with EmbeddedGraphStore(None) as store:
        load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
        yield store


def client(broker: Broker, name: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(1_000)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def run_start(graph: GraphStore) -> datetime:
    run = next(e.src for e in graph.edges(["M-REFLOW-2"], {"ON": Direction.IN}))
    span = graph.get(run).interval()
    assert span is not None
    return datetime.fromtimestamp(span[0] + 1, UTC)


class Worker:
    """One worker as a process would hold it: its store, the shared quarantine file,
    its session and its status file."""

    def __init__(self, graph: GraphStore, broker: Broker, home: Path, part: Partition, tag: str):
        self.home = home / part.name
        self.home.mkdir(parents=True, exist_ok=True)
        self.ingestor = Ingestor(
            graph, ReadingsStore(self.home / "r.duckdb"), Quarantine(home / "q.db")
        )
        self.status = StatusFile(self.home / "status.json", part)
        self.bridge = MqttIngestion(
            self.ingestor, broker.host, broker.port, client_id=f"{tag}-{part.name}",
            partition=part, on_progress=self.status,
        )  # fmt: skip
        self.bridge.start()
        wait_for(self.bridge.connected.is_set, f"worker {part} to connect")

    def stop(self) -> None:
        self.bridge.stop()
        self.ingestor.readings.close()
        self.ingestor.quarantine.close()


def body(at: datetime, i: int, value: float, unit: str) -> bytes:
    ts = (at + timedelta(seconds=i)).isoformat()
    return json.dumps({"ts": ts, "value": value, "unit": unit, "id": f"r-{i}"}).encode()


def stored(path: Path) -> dict[str, list[str]]:
    """Each series' message ids in the order they arrived."""
    with duckdb.connect(str(path), read_only=True) as db:
        rows = db.execute(
            "SELECT machine || '/' || parameter, message_id FROM readings ORDER BY received_at, ts"
        ).fetchall()
    out: dict[str, list[str]] = {}
    for series, mid in rows:
        out.setdefault(series, []).append(mid)
    return out


def invariant(c: Counters) -> None:
    assert c.received == c.accepted + c.quarantined + c.duplicates + c.spooled


def test_each_series_goes_to_one_worker_in_order_counted_once_and_alarms_once(
    graph: GraphStore, mosquitto: Broker, tmp_path: Path
) -> None:
    sensors = sensors_of(graph)
    at = run_start(graph)
    heard: list[dict[str, Any]] = []
    listener = client(mosquitto, "workers-listener")
    listener.on_message = lambda _c, _u, m: heard.append(json.loads(m.payload))
    listener.subscribe(f"{PEAK}/alarm", qos=1)
    workers = [Worker(graph, mosquitto, tmp_path, Partition(k, 2), "w-order") for k in (0, 1)]
    sender = client(mosquitto, "workers-sender")
    per_series = 40
    # a round at a time: each series has one message in flight, so what reaches its
    # worker in another order could only come from the partitioning (Mosquitto itself
    # sends queued messages out of order once a client's in-flight window is full)
    for i in range(per_series):
        for s in sensors:
            target = s.spec.target if s.spec.target is not None else 0.0
            value = 249.6 if str(s.topic) == PEAK and i >= 30 else target
            sender.publish(str(s.topic), body(at, i, value, s.spec.unit), qos=1)
        wait_for(lambda i=i: sum(w.ingestor.counters.received for w in workers)
                 == (i + 1) * len(sensors), f"round {i}")  # fmt: skip
    sender.publish(str(sensors[0].topic), body(at, 0, 1.0, sensors[0].spec.unit), qos=1)  # again
    sender.publish("sqems/v1/SITE-1/LINE-X/M-NONE/P-NONE", body(at, 0, 1.0, "mm"), qos=1)
    sender.publish(str(sensors[1].topic), b"not json", qos=1)
    sent = per_series * len(sensors) + 3
    wait_for(
        lambda: sum(w.ingestor.counters.received for w in workers) == sent, "every reading", 30
    )
    for w in workers:
        w.stop()
    sender.loop_stop()

    # each series in exactly one store, its owner's, in the order it was sent
    found = [stored(w.home / "r.duckdb") for w in workers]
    for s in sensors:
        key = f"{s.topic.machine}/{s.topic.parameter}"
        mine = owner(str(s.topic), 2)
        assert key in found[mine] and key not in found[1 - mine]
        assert found[mine][key] == [f"r-{i}" for i in range(per_series)]
    assert {k for k, _ in enumerate(workers) if found[k]} == {0, 1}  # both had work

    # the invariant over both, from their status files; each refusal kept once
    reports = [read_status(w.home / "status.json") for w in workers]
    total = totals(reports)
    invariant(total)
    assert all(r is not None and r.passed > 0 for r in reports)
    assert (total.accepted, total.duplicates, total.quarantined) == (sent - 3, 1, 2)
    q = Quarantine(tmp_path / "q.db")
    assert q.count() == 2
    q.close()
    with ReadingsUnion([w.home / "r.duckdb" for w in workers]) as union:
        assert union.count() == total.accepted
        assert union.export_parquet(tmp_path / "lake") == total.accepted

    # the drift raised each rule's alarm once, from the worker that owns the series
    wait_for(lambda: len(heard) >= 2, "the alarms")
    time.sleep(0.3)
    assert sorted(a["rule"] for a in heard) == ["nelson_1", "nelson_5"]
    alarms = [w.ingestor.counters.alarms for w in workers]
    assert alarms[owner(PEAK, 2)] == 2 and sum(alarms) == 2
    listener.loop_stop()


def test_a_worker_away_stops_nothing_else_and_gets_its_share_when_back(
    graph: GraphStore, mosquitto: Broker, tmp_path: Path
) -> None:
    sensors = sensors_of(graph)
    at = run_start(graph)
    parts = [Partition(0, 2), Partition(1, 2)]
    workers = [Worker(graph, mosquitto, tmp_path, p, "w-away") for p in parts]
    sender = client(mosquitto, "workers-away-sender")

    def send(first: int, n: int) -> None:
        for i in range(first, first + n):
            for s in sensors:
                value = s.spec.target if s.spec.target is not None else 0.0
                sender.publish(str(s.topic), body(at, i, value, s.spec.unit), qos=1)

    share = [sum(1 for s in sensors if owner(str(s.topic), 2) == k) for k in (0, 1)]
    send(0, 10)
    wait_for(lambda: sum(w.ingestor.counters.accepted for w in workers) == 10 * len(sensors),
             "the first readings")  # fmt: skip
    workers[0].stop()  # its session keeps its partition while it is away
    send(10, 10)
    wait_for(lambda: workers[1].ingestor.counters.accepted == 20 * share[1],
             "the other worker to carry on")  # fmt: skip
    assert read_status(workers[0].home / "status.json").total.accepted == 10 * share[0]  # type: ignore[union-attr]

    workers[0] = Worker(graph, mosquitto, tmp_path, parts[0], "w-away")  # back, as a new process
    wait_for(lambda: workers[0].ingestor.counters.accepted == 10 * share[0], "what was held")
    for w in workers:
        w.stop()
    sender.loop_stop()
    reports = [read_status(w.home / "status.json") for w in workers]
    total = totals(reports)
    invariant(total)
    assert total.accepted == 20 * len(sensors) and total.duplicates == 0
    assert reports[0] is not None and reports[0].before.accepted == 10 * share[0]
    with ReadingsUnion([w.home / "r.duckdb" for w in workers]) as union:
        assert union.count() == 20 * len(sensors)


def test_a_shared_subscription_splits_one_series_between_its_members(mosquitto: Broker) -> None:
    """Why the workers do not share a subscription: the broker deals one series'
    messages out round-robin, so no member sees the series whole."""
    got: dict[str, list[int]] = {"a": [], "b": []}
    members = []
    for name, seen in got.items():
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"share-{name}",
                        protocol=mqtt.MQTTv5)  # fmt: skip
        c.on_message = lambda _c, _u, m, seen=seen: seen.append(int(m.payload))
        c.connect(mosquitto.host, mosquitto.port)
        c.loop_start()
        c.subscribe("$share/sqems/sqems/v1/+/+/+/+", qos=1)
        members.append(c)
    time.sleep(0.3)
    sender = client(mosquitto, "share-sender")
    for i in range(20):
        sender.publish(PEAK, str(i), qos=1)
    wait_for(lambda: len(got["a"]) + len(got["b"]) == 20, "the 20 messages")
    assert got["a"] and got["b"]  # each member saw part of the one series
    for c in [*members, sender]:
        c.loop_stop()
        c.disconnect()


def test_the_launcher_restarts_a_killed_worker_and_the_other_keeps_going(tmp_path: Path) -> None:
    """Real processes: one killed outright (SIGKILL) is started again; the other runs
    on untouched; a stop asks each to finish its batch."""
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
        f"open(r'{tmp_path}/' + sys.argv[1] + '.' + str(__import__('os').getpid()), 'w')\n"
        "time.sleep(600)\n"
    )
    launcher = Launcher(2, lambda p: [sys.executable, "-c", script, p.name])
    with ExitStack() as stack:
        launcher.start()
        stack.callback(launcher.stop)
        first = launcher.pids()
        wait_for(lambda: len(list(tmp_path.glob("*of2.*"))) == 2, "both workers to start")
        assert first[0] is not None
        os.kill(first[0], signal.SIGKILL)

        def restarted() -> bool:
            launcher.watch()
            now = launcher.pids()
            return now[0] is not None and now[0] != first[0]

        wait_for(restarted, "the killed worker to be started again", timeout=10)
        assert launcher.pids()[1] == first[1]  # the other was never touched
        wait_for(lambda: len(list(tmp_path.glob("0of2.*"))) == 2, "the new worker to run")
    assert all(p.poll() == 0 for c in launcher.children if (p := c.process) is not None)


def test_several_workers_refuse_the_embedded_graph_store(tmp_path: Path) -> None:
    env = {**os.environ, "SQEMS_DATA_DIR": str(tmp_path), "SQEMS_GRAPH_URI": "embedded"}
    done = subprocess.run(
        [*worker_command(Partition(0, 2))[:3], "ingest", "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "embedded store" in done.stderr and "Neo4j" in done.stderr


def test_a_worker_on_part_of_the_tree_hears_only_that_part(
    graph: GraphStore, mosquitto: Broker, tmp_path: Path
) -> None:
    """SQEMS_MQTT_SUBSCRIPTION: a set of workers of its own per line, sharing nothing."""
    at = run_start(graph)
    ingestor = Ingestor(graph, ReadingsStore(tmp_path / "r.duckdb"), Quarantine(tmp_path / "q.db"))
    bridge = MqttIngestion(ingestor, mosquitto.host, mosquitto.port, client_id="w-line",
                           subscription="sqems/v1/+/LINE-PCB/+/+")  # fmt: skip
    with bridge:
        wait_for(bridge.connected.is_set, "the worker to connect")
        sender = client(mosquitto, "w-line-sender")
        for s in sensors_of(graph):
            value = s.spec.target if s.spec.target is not None else 0.0
            sender.publish(str(s.topic), body(at, 0, value, s.spec.unit), qos=1)
        pcb = sum(1 for s in sensors_of(graph) if s.topic.line == "LINE-PCB")
        wait_for(lambda: ingestor.counters.accepted == pcb, "the PCB line's readings")
        time.sleep(0.3)
        sender.loop_stop()
    assert ingestor.counters.received == pcb and 0 < pcb < len(sensors_of(graph))
    ingestor.readings.close()
    ingestor.quarantine.close()


def test_a_replay_goes_to_the_store_of_the_worker_owning_the_series_and_waits_for_it(
    graph: GraphStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sqems quarantine replay` with workers: each entry's reading goes to its series'
    owner's store (never to the single store), in id order; while a worker holds its
    store, the replay is refused with the reason and nothing is marked replayed."""
    with EmbeddedGraphStore(tmp_path / "graph.db") as saved:
        load_plant(saved, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
    monkeypatch.setenv("SQEMS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SQEMS_GRAPH_URI", f"embedded://{tmp_path / 'graph.db'}")
    settings = Settings()
    for k in (0, 1):  # the two workers have run: their stores exist
        home = service.worker_dir(settings, Partition(k, 2))
        home.mkdir(parents=True)
        ReadingsStore(home / service.READINGS_FILE).close()
    at = run_start(graph)
    sensors = sensors_of(graph)
    picked = [
        next(s for s in sensors if owner(str(s.topic), 2) == k and s.spec.target is not None)
        for k in (0, 1)
    ]
    q = service.open_quarantine(settings)
    q.add(
        NewEntry(f"mqtt:{s.topic}", "refused", body(at, i, s.spec.target or 0.0, s.spec.unit))
        for i in range(2)
        for s in picked
    )
    q.close()
    runner = CliRunner()

    # worker 1/2 is running: it holds its store, so nothing is replayed
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; db = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(60)",
         str(service.worker_dir(settings, Partition(1, 2)) / service.READINGS_FILE)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        refused = runner.invoke(app, ["quarantine", "replay", "--all"])
    finally:
        holder.kill()
        holder.wait()
    assert refused.exit_code != 0, refused.output
    assert "worker 1/2 is running" in str(refused.output) + str(refused.exception)

    done = runner.invoke(app, ["quarantine", "replay", "--all"])
    assert done.exit_code == 0, done.output
    assert done.output.count("accepted (worker 0/2)") == 2
    assert done.output.count("accepted (worker 1/2)") == 2
    assert not (settings.data_dir / service.READINGS_FILE).exists()
    for k, s in enumerate(picked):
        home = service.worker_dir(settings, Partition(k, 2))
        series = stored(home / service.READINGS_FILE)
        assert series == {f"{s.topic.machine}/{s.topic.parameter}": ["r-0", "r-1"]}
    q = service.open_quarantine(settings)
    assert q.count(open_only=True) == 0
    q.close()

    # stores of two worker counts: the replay asks which one ingests now
    home = service.worker_dir(settings, Partition(0, 4))
    home.mkdir(parents=True)
    ReadingsStore(home / service.READINGS_FILE).close()
    ambiguous = runner.invoke(app, ["quarantine", "replay", "1"])
    assert ambiguous.exit_code != 0
    assert "--workers N" in str(ambiguous.output) + str(ambiguous.exception)


def test_the_api_status_adds_up_the_workers_status_files(tmp_path: Path) -> None:
    """`ingestionStatus` in a server that runs no ingestion itself: the totals of the
    latest worker count's status files, `workers` saying how many, `connected` only
    while every worker reports fresh connections."""
    settings = Settings(data_dir=tmp_path, ingest=False, mqtt_client_id="w-api")
    now = datetime.now(UTC)
    parts = [
        (Partition(0, 2), Counters(received=10, accepted=7, quarantined=2, duplicates=1)),
        (Partition(1, 2), Counters(received=5, accepted=5, alarms=2)),
    ]

    def report(part: Partition, counters: Counters, age_s: float, before: Counters) -> None:
        home = service.worker_dir(settings, part)
        home.mkdir(parents=True, exist_ok=True)
        ReadingsStore(home / service.READINGS_FILE).close()
        at = (now - timedelta(seconds=age_s)).isoformat()
        status = WorkerStatus(str(part), 1, at, at, True, True, None, 0, 3, 0, counters, before)
        service.status_path(settings, part).write_text(json.dumps(status.as_dict()))

    # an older run with one worker count, then the current one
    report(Partition(0, 1), Counters(received=99, accepted=99), 3600, Counters())
    report(parts[0][0], parts[0][1], 0, Counters(received=4, accepted=4))
    report(parts[1][0], parts[1][1], 0, Counters())
    store = EmbeddedGraphStore(None)
    access = AccessStore(None)
    token = access.create_key("viewer", Role.VIEWER)[1]
    query = "{ ingestionStatus { running connected workers received accepted quarantined "
    query += "duplicates alarms spooled health { healthy } } }"
    with LiveServer(create_app(settings, store=store, access=access)) as server:

        def ask() -> dict[str, Any]:
            answer = httpx.post(
                f"{server.url}/graphql",
                json={"query": query},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            found: dict[str, Any] = answer.json()["data"]["ingestionStatus"]
            return found

        assert ask() == {
            "running": False, "connected": True, "workers": 2, "received": 19,
            "accepted": 16, "quarantined": 2, "duplicates": 1, "alarms": 2, "spooled": 0,
            "health": None,
        }  # fmt: skip
        report(parts[1][0], parts[1][1], 60, Counters())  # worker 1/2 stopped reporting
        stale = ask()
        assert not stale["connected"] and stale["received"] == 19
    access.close()
    store.close()
