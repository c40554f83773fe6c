"""Ingestion benchmark: readings through a real Mosquitto broker on loopback.

Starts Mosquitto on a free port (persistence on) and a small plant in an embedded
graph, then:

1. **Ceiling**: a bare paho subscriber that only counts, while a publisher process
   sends ``--readings`` readings (``--per-message`` to a message) as fast as QoS 1
   allows: readings/s received.
2. **Pipeline**: the same stream into ``MqttIngestion`` (validation, unit conversion,
   dedup, DuckDB, streaming rules): readings/s stored, and publish→stored latency
   p50/p99 (each reading carries its publish time as ``ts``).

   Both report this process's CPU time per reading (all its threads): what the
   subscriber itself costs, which stays put when the machine is busy with other work
   and the readings/s do not.
3. **Alarms**: violating readings sent one at a time to every sensor in turn (with
   quiet readings between so each alarm closes): publish→alarm-received p50/p99.
4. **Broker restart**: the stream again with the broker stopped and started halfway;
   every reading must be stored once.

    python benchmarks/ingestion.py
    python benchmarks/ingestion.py --readings 50000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from figures import percentile
from paho.mqtt.enums import CallbackAPIVersion

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore
from sqems.graph_model.neo4j_server import free_port
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.pipeline import Ingestor, Message
from sqems.ingestion.quarantine import Quarantine
from sqems.ingestion.readings import ReadingsStore
from sqems.ingestion.sensors import Sensor, sensors_of


class Broker:
    """Mosquitto with its session store on disk, so a restart keeps every session.

    Started as root, Mosquitto drops to its own user: the store's directory must be
    reachable and writable by it, or it cannot save on shutdown and comes back with no
    sessions, no subscriptions and nothing that was queued (which the restart phase then
    waits for in vain). ``stop`` checks that the store was saved."""

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        home.chmod(home.stat().st_mode | 0o111)  # others may pass through, not list
        self.store = home / "broker"
        self.store.mkdir()
        self.store.chmod(0o777)
        self.config = home / "mosquitto.conf"
        self.log = home / "mosquitto.log"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.store}/\nmax_queued_messages 10000000\n"
            "max_inflight_messages 1000\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([binary, "-c", str(self.config)], stderr=log)
        deadline = time.monotonic() + 30  # a large store takes a while to load
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within 30 s")

    def stop(self) -> None:
        if self.process is not None:
            saved = self.store / "mosquitto.db"
            before = saved.stat().st_mtime_ns if saved.exists() else None
            self.process.terminate()
            self.process.wait(30)
            self.process = None
            if not saved.exists() or saved.stat().st_mtime_ns == before:
                raise RuntimeError(
                    f"mosquitto did not save its session store: {self.log.read_text()[-2000:]}"
                )


def client(port: int, name: str, clean: bool = True) -> mqtt.Client:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=name, clean_session=clean, protocol=mqtt.MQTTv311
    )
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(0.2, 2)
    c.connect(port=port, host="127.0.0.1")
    c.loop_start()
    return c


def messages(
    sensors: list[Sensor], total: int, per_message: int, tag: str
) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    n = 0
    while n < total:
        for s in sensors:
            target = s.spec.target if s.spec.target is not None else 0.0
            items = [
                {"value": target, "unit": s.spec.unit, "id": f"{tag}-{n + i}"}
                for i in range(per_message)
            ]
            out.append((str(s.topic), items))
            n += per_message
            if n >= total:
                break
    return out


def publish(
    port: int, batch: list[tuple[str, list[dict[str, Any]]]], restart_at: int | None, ready: Any
) -> None:
    """Publisher process: stamp each reading with the publish time and send at QoS 1.

    Like a real gateway it keeps a persistent session, so what was in flight when the
    broker went away is sent again, and it waits until every message is acknowledged.
    A message published while the connection is down comes back with
    ``MQTT_ERR_NO_CONN``, yet paho keeps it and sends it after the reconnect; its
    ``wait_for_publish`` raises on that code all the same, so the acknowledgements are
    counted in ``on_publish`` (called once a message) instead."""
    c = client(port, f"bench-pub-{time.monotonic_ns()}", clean=False)
    acked = 0
    change = threading.Condition()

    def on_publish(_c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        nonlocal acked
        with change:
            acked += 1
            change.notify_all()

    c.on_publish = on_publish
    ready.wait()
    for k, (topic, items) in enumerate(batch):
        if restart_at is not None and k == restart_at:
            time.sleep(3.0)  # the broker is restarted meanwhile; paho reconnects
        now = datetime.now(UTC).isoformat()
        for item in items:
            item["ts"] = now
        c.publish(topic, json.dumps(items), qos=1)
    with change:
        change.wait_for(lambda: acked >= len(batch), timeout=300)
    if acked < len(batch):
        missing = len(batch) - acked
        print(f"publisher: {missing} of {len(batch)} messages never acknowledged", file=sys.stderr)
    c.loop_stop()


def run_publisher(port: int, batch: list[Any], restart_at: int | None = None) -> mp.Process:
    ready = mp.Event()
    proc = mp.Process(target=publish, args=(port, batch, restart_at, ready))
    proc.start()
    time.sleep(0.3)
    ready.set()
    return proc


def ceiling(port: int, batch: list[Any], readings: int) -> float:
    got = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        nonlocal got, first, last
        if not got:
            first = time.perf_counter()
        got += len(json.loads(m.payload))
        last = time.perf_counter()
        if got >= readings:
            done.set()

    sub = client(port, "bench-bare")
    sub.on_message = on_message
    sub.subscribe("sqems/v1/+/+/+/+", qos=1)
    time.sleep(0.3)
    cpu = time.process_time()
    proc = run_publisher(port, batch)
    done.wait(600)
    cpu = time.process_time() - cpu
    proc.join()
    sub.loop_stop()
    sub.disconnect()
    return {"rps": got / (last - first), "cpu_us": cpu / got * 1e6}


class TimedIngestor(Ingestor):
    """The pipeline, noting for each batch when its readings were stored."""

    latencies: list[float]
    sizes: list[int]

    def handle_many(self, messages: Any) -> Any:
        batch: list[Message] = list(messages)
        counts = super().handle_many(batch)
        self.sizes.append(counts.received)
        stored = datetime.now(UTC)
        for m in batch[:: max(1, len(batch) // 20)]:  # a sample of each batch
            items = json.loads(m.payload)
            self.latencies.append((stored - datetime.fromisoformat(items[0]["ts"])).total_seconds())
        return counts


def pipeline_run(
    port: int,
    graph: Any,
    tmp: Path,
    batch: list[Any],
    readings: int,
    name: str,
    broker: Broker | None = None,
) -> dict[str, Any]:
    ingestor = TimedIngestor(
        graph, ReadingsStore(tmp / f"{name}.duckdb"), Quarantine(tmp / f"{name}.db")
    )
    ingestor.latencies = []
    ingestor.sizes = []
    bridge = MqttIngestion(ingestor, "127.0.0.1", port, client_id=f"bench-{name}")
    bridge.start()
    while not bridge.connected.is_set():
        time.sleep(0.05)
    restart_at = len(batch) // 2 if broker else None
    began = time.perf_counter()
    cpu = time.process_time()
    proc = run_publisher(port, batch, restart_at)
    if broker is not None:
        while ingestor.counters.received < readings // 3:
            time.sleep(0.01)
        broker.stop()
        broker.start()
    deadline = time.monotonic() + 600
    while ingestor.counters.received < readings and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu
    proc.join()
    bridge.stop()
    c = ingestor.counters
    stored = ingestor.readings.count()
    ingestor.readings.close()
    ingestor.quarantine.close()
    lat = sorted(ingestor.latencies)
    return {
        "rps": c.received / elapsed,
        "cpu_us": cpu / max(1, c.received) * 1e6,
        "received": c.received,
        "accepted": c.accepted,
        "duplicates": c.duplicates,
        "quarantined": c.quarantined,
        "stored": stored,
        "p50": statistics.median(lat) * 1000 if lat else 0.0,
        "p99": percentile(lat, 0.99) * 1000 if lat else 0.0,
        "batches": len(ingestor.sizes),
        "batch_p50": statistics.median(ingestor.sizes) if ingestor.sizes else 0,
    }


def alarm_latency(
    port: int, graph: Any, tmp: Path, sensors: list[Sensor], cycles: int
) -> list[float]:
    ingestor = Ingestor(graph, ReadingsStore(tmp / "alarms.duckdb"), Quarantine(tmp / "alarms.db"))
    bridge = MqttIngestion(ingestor, "127.0.0.1", port, client_id="bench-alarms")
    bridge.start()
    heard: dict[str, float] = {}
    listener = client(port, "bench-alarm-listener")
    listener.on_message = lambda _c, _u, m: heard.setdefault(
        json.loads(m.payload)["uid"], time.perf_counter()
    )
    listener.subscribe("sqems/v1/+/+/+/+/alarm", qos=1)
    sender = client(port, "bench-alarm-sender")
    time.sleep(0.5)
    samples: list[float] = []
    n = 0
    for _ in range(cycles):
        for s in sensors:
            spec = s.spec
            assert spec.lsl is not None and spec.usl is not None
            target = spec.target if spec.target is not None else (spec.lsl + spec.usl) / 2
            quiet = [
                {
                    "ts": datetime.now(UTC).isoformat(),
                    "value": target,
                    "unit": spec.unit,
                    "id": f"q-{n}-{i}",
                }
                for i in range(60)
            ]
            sender.publish(str(s.topic), json.dumps(quiet), qos=1).wait_for_publish(5)
            before = set(heard)
            bad = {
                "ts": datetime.now(UTC).isoformat(),
                "value": spec.usl + (spec.usl - spec.lsl),
                "unit": spec.unit,
                "id": f"bad-{n}",
            }
            sent = time.perf_counter()
            sender.publish(str(s.topic), json.dumps(bad), qos=1)
            deadline = time.monotonic() + 5
            while set(heard) == before and time.monotonic() < deadline:
                time.sleep(0.0005)
            new = set(heard) - before
            if new:
                samples.append((min(heard[u] for u in new) - sent) * 1000)
            n += 1
    bridge.stop()
    listener.loop_stop()
    sender.loop_stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=50)
    parser.add_argument("--alarm-cycles", type=int, default=10)
    parser.add_argument(
        "--repeat", type=int, default=3, help="ceiling and pipeline runs, taken in turn"
    )
    parser.add_argument(
        "--restart-readings",
        type=int,
        default=200_000,
        help="readings in the broker-restart phase",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sqems-ingest-bench-") as name:
        tmp = Path(name)
        broker = Broker(tmp)
        broker.start()
        try:
            graph = EmbeddedGraphStore(None)
            load_plant(graph, plant_sections(generate(PlantSpec(units=1_000, seed=1))))
            sensors = sensors_of(graph)
            total = args.readings
            # the machine is noisy: the ceiling and the pipeline run in turn, and the
            # medians (and the median of each pair's ratio) are reported
            bares, pipes = [], []
            for k in range(args.repeat):
                print(f"ceiling (bare subscriber) {k + 1}…", file=sys.stderr, flush=True)
                batch = messages(sensors, total, args.per_message, f"bare{k}")
                bares.append(ceiling(broker.port, batch, total))
                print(f"pipeline {k + 1}…", file=sys.stderr, flush=True)
                batch = messages(sensors, total, args.per_message, f"pipe{k}")
                pipes.append(pipeline_run(broker.port, graph, tmp, batch, total, f"pipe{k}"))
            bare = statistics.median(b["rps"] for b in bares)
            ratio = statistics.median(
                p["rps"] / b["rps"] for p, b in zip(pipes, bares, strict=True)
            )
            piped = sorted(pipes, key=lambda p: p["rps"])[len(pipes) // 2]
            print("alarms…", file=sys.stderr, flush=True)
            alarms = alarm_latency(broker.port, graph, tmp, sensors, args.alarm_cycles)
            print("broker restart…", file=sys.stderr, flush=True)
            restart_total = args.restart_readings
            restart = pipeline_run(
                broker.port,
                graph,
                tmp,
                messages(sensors, restart_total, args.per_message, "restart"),
                restart_total,
                "restart",
                broker,
            )
        finally:
            broker.stop()

    print()
    print(
        f"{total:,} readings, {args.per_message} to a message, {len(sensors)} sensors, "
        "QoS 1, Mosquitto on loopback, 2 cores"
    )
    print(
        f"{'bare subscriber (counts only)':<34} {bare:>10,.0f} readings/s  (median of "
        f"{args.repeat}: {', '.join(format(b['rps'], ',.0f') for b in bares)})"
    )
    print(
        f"{'pipeline (validate..store..SPC)':<34} {piped['rps']:>10,.0f} readings/s  (median "
        f"of {args.repeat}: {', '.join(format(p['rps'], ',.0f') for p in pipes)})"
    )
    pairs = zip(pipes, bares, strict=True)
    print(
        f"{'pipeline / ceiling':<34} {ratio:>10.0%}  (median of the pairs' ratios: "
        f"{', '.join(format(p['rps'] / b['rps'], '.0%') for p, b in pairs)})"
    )
    # the subscriber's own CPU time (every thread of this process) per reading: what the
    # pipeline adds, whatever else the machine is running
    bare_cpu = statistics.median(b["cpu_us"] for b in bares)
    pipe_cpu = statistics.median(p["cpu_us"] for p in pipes)
    print(
        f"{'subscriber CPU per reading':<34} bare {bare_cpu:.2f} µs, pipeline {pipe_cpu:.2f} µs "
        f"(rounds: {', '.join(format(b['cpu_us'], '.2f') for b in bares)} / "
        f"{', '.join(format(p['cpu_us'], '.2f') for p in pipes)})"
    )
    print(f"{'publish->stored (flooded)':<34} p50 {piped['p50']:.0f} ms  p99 {piped['p99']:.0f} ms")
    print(
        f"{'batches written':<34} {piped['batches']:>10,}  (median {piped['batch_p50']:,.0f} "
        "readings each)"
    )
    print(
        f"  received {piped['received']:,}, accepted {piped['accepted']:,}, stored "
        f"{piped['stored']:,}, duplicates {piped['duplicates']:,}, quarantined "
        f"{piped['quarantined']:,}"
    )
    if alarms:
        print(
            f"{'alarm publish->received':<34} {len(alarms):>10} alarms  p50 "
            f"{statistics.median(alarms):.1f} ms  p99 {percentile(alarms, 0.99):.1f} ms"
        )
    lost = restart_total - restart["stored"]
    print(
        f"{'across a broker restart':<34} stored {restart['stored']:,} of {restart_total:,} "
        f"(lost {lost}), duplicates {restart['duplicates']:,}"
    )
    print("targets: >= 20,000 readings/s, >= 50 % of the ceiling, alarm p99 < 100 ms, no loss")


if __name__ == "__main__":
    main()
