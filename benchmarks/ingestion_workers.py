"""Ingestion workers in parallel: throughput with 1, 2 and 4 workers on the same stream.

Starts Mosquitto on a free port and, for each worker count N, N worker processes (forked
from this one, each with the small plant in an in-memory embedded graph, a DuckDB
readings store of its own and the shared quarantine file) that own a partition each, as
``sqems ingest --workers N`` runs them. The same stream (``--readings`` readings of the
plant's sensors, ``--per-message`` to a message) is first queued in the workers'
persistent sessions while they are away, then all N start at once and drain it: the
time until the last one has its share is the run's time. Every count is run
``--repeats`` times, interleaved (1, 2, 4, 1, 2, 4, …), and the medians are printed with
the ratio to one worker in the same run, the CPU time of the workers and of the broker
per reading, and how evenly the series split (a worker owns whole series).

    python benchmarks/ingestion_workers.py
    python benchmarks/ingestion_workers.py --readings 400000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ingestion import Broker, client, messages

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.partition import Partition, owner
from sqems.ingestion.pipeline import Ingestor
from sqems.ingestion.quarantine import Quarantine
from sqems.ingestion.readings import ReadingsStore
from sqems.ingestion.sensors import sensors_of

PLANT: dict[str, EmbeddedGraphStore] = {}
"""The plant's graph, built once before the workers are forked."""


def _cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CountingIngestor(Ingestor):
    """The pipeline, counting the batches it is handed."""

    batches = 0

    def handle_many(self, messages: Any) -> Any:
        self.batches += 1
        return super().handle_many(messages)


def worker(
    part: Partition, port: int, home: Path, tag: str, expected: int, go: Any, out: Any
) -> None:
    ingestor = CountingIngestor(
        PLANT["graph"], ReadingsStore(home / f"{tag}-{part.name}.duckdb"), Quarantine(home / "q.db")
    )
    bridge = MqttIngestion(
        ingestor, "127.0.0.1", port, client_id=f"{tag}-{part.name}", partition=part
    )
    out.put(("ready", part.index))
    go.wait()
    began, cpu = time.perf_counter(), time.process_time()
    bridge.start()
    while ingestor.counters.received < expected:
        time.sleep(0.002)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    bridge.stop()
    c = ingestor.counters
    out.put(
        ("done", part.index, elapsed, cpu, c.received, c.accepted, bridge.passed, ingestor.batches)
    )
    ingestor.readings.close()
    ingestor.quarantine.close()


def run(
    n: int,
    port: int,
    broker_pid: int,
    home: Path,
    stream: list[Any],
    readings: int,
    tag: str,
    only: int | None = None,
) -> dict[str, float]:
    """The stream through ``n`` workers (or only worker ``only`` of them)."""
    parts = [Partition(k, n) for k in (range(n) if only is None else [only])]
    share = Counter()
    for topic, items in stream:
        share[owner(topic, n)] += len(items)
    ctx = mp.get_context("fork")
    # the sessions first, so the broker keeps the whole stream for each worker
    for p in parts:
        session = client(port, f"{tag}-{p.name}", clean=False)
        session.subscribe("sqems/v1/+/+/+/+", qos=1)
        time.sleep(0.3)  # subscribed before the stream is published
        session.loop_stop()
        session.disconnect()
    pub = client(port, f"{tag}-pub")
    for topic, items in stream:
        pub.publish(topic, json.dumps(items), qos=1)
    pub.publish("bench/flush", b"", qos=1).wait_for_publish(60)
    pub.loop_stop()
    pub.disconnect()
    go, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(p, port, home, tag, share[p.index], go, out))
        for p in parts
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        assert out.get(timeout=120)[0] == "ready"
    broker_cpu = _cpu(broker_pid)
    go.set()
    done = [out.get(timeout=900) for _ in procs]
    broker_cpu = _cpu(broker_pid) - broker_cpu
    for proc in procs:
        proc.join()
    elapsed = max(d[2] for d in done)
    received = sum(d[4] for d in done)
    mine = sum(share[p.index] for p in parts)
    assert received == mine and sum(d[5] for d in done) == mine, done
    return {
        "rps": readings / elapsed,
        "seconds": elapsed,
        "worker_cpu_us": sum(d[3] for d in done) / readings * 1e6,
        "broker_cpu_us": broker_cpu / readings * 1e6,
        "passed": sum(d[6] for d in done),
        "cpu_s": sum(d[3] for d in done),
        "batch": sum(d[4] for d in done) / max(1, sum(d[7] for d in done)),
        "largest_share": max(share.values()) / readings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    graph = PLANT["graph"] = EmbeddedGraphStore(None)
    load_plant(graph, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
    sensors = sensors_of(graph)
    stream = messages(sensors, args.readings, args.per_message, "w")
    # each reading newer than the one before, as a live stream is (an older one would
    # be looked up as a possible redelivery); an hour ago, so none is in the future
    start = datetime.now(UTC) - timedelta(hours=1)
    n = 0
    for _, items in stream:
        for item in items:
            item["ts"] = (start + timedelta(milliseconds=n)).isoformat()
            n += 1
    print(f"load before: {os.getloadavg()}, cores: {os.cpu_count()}")
    print(f"{args.readings:,} readings in {len(stream):,} messages from {len(sensors)} series")
    with tempfile.TemporaryDirectory(prefix="sqems-bench-workers-") as tmp:
        home = Path(tmp)
        broker = Broker(home)
        broker.start()
        assert broker.process is not None
        try:
            results: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
            # what one message costs a worker that owns it, and one that only passes it on:
            # the stream on the topics partition 1 of 2 owns, to worker 1 and to worker 0
            theirs = [m for m in stream if owner(m[0], 2) == 1]
            count = sum(len(items) for _, items in theirs)
            alone: dict[str, list[float]] = {"ingest": [], "pass": []}
            for r in range(args.repeats):
                for what, k in (("ingest", 1), ("pass", 0)):
                    got = run(2, broker.port, broker.process.pid, home, theirs, count,
                              f"alone-{r}-{what}", only=k)  # fmt: skip
                    alone[what].append(got["cpu_s"] / len(theirs) * 1e6)
            for r in range(args.repeats):
                for n in counts:
                    results[n].append(
                        run(n, broker.port, broker.process.pid, home, stream, args.readings,
                            f"bench-{r}-{n}")
                    )  # fmt: skip
                    print(f"  round {r + 1}, {n} workers: {results[n][-1]['rps']:,.0f} readings/s")
        finally:
            broker.stop()
    base = statistics.median(x["rps"] for x in results[counts[0]])
    print(f"load after: {os.getloadavg()}")
    print(
        f"{'workers':>7} {'readings/s':>11} {'ratio':>6} {'worker CPU µs/reading':>22} "
        f"{'broker CPU µs/reading':>22} {'largest share':>14} {'readings/batch':>15}"
    )
    for n in counts:
        med = {k: statistics.median(x[k] for x in results[n]) for k in results[n][0]}
        print(
            f"{n:>7} {med['rps']:>11,.0f} {med['rps'] / base:>6.2f} "
            f"{med['worker_cpu_us']:>22.1f} {med['broker_cpu_us']:>22.1f} "
            f"{med['largest_share']:>14.0%} {med['batch']:>15,.0f}"
        )
    print(f"(medians of {args.repeats} interleaved runs; ratio to {counts[0]} worker(s))")
    ingest, passing = (statistics.median(alone[k]) for k in ("ingest", "pass"))
    print(
        f"CPU per message of {args.per_message} readings, each alone (medians): ingested "
        f"{ingest:.0f} µs, passed on to its owner {passing:.0f} µs"
    )
    # N workers on N free cores: each ingests 1/N of the messages and passes the rest on
    for n in (1, 2, 4, 8, 16, 32):
        speedup = ingest / (ingest / n + passing * (n - 1) / n)
        print(f"  model, {n:>2} workers on {n:>2} free cores: {speedup:.2f}x one worker")
    print(f"  bound as workers grow: {ingest / passing:.1f}x one worker")


if __name__ == "__main__":
    main()
