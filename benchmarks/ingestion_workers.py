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

On a machine with fewer free cores than workers the wall-clock ratio says little, so
each worker of N is also run alone on the whole stream (ingesting its share, passing
the rest on to its owner): the CPU the busiest one needs is what N workers would take
on N free cores. Fitting that CPU as "receiving the whole stream" + "ingesting a share"
gives the estimate for 8, 16 and 32 workers and the bound as workers grow: every worker
receives every message, so the receiving part does not shrink with more workers.

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
from sqems.ingestion.mqtt import SUBSCRIPTION, MqttIngestion
from sqems.ingestion.partition import WHOLE, Partition, owner
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
    part: Partition,
    subscription: str,
    port: int,
    home: Path,
    tag: str,
    expected: int,
    go: Any,
    out: Any,
) -> None:
    ingestor = CountingIngestor(
        PLANT["graph"], ReadingsStore(home / f"{tag}.duckdb"), Quarantine(home / "q.db")
    )
    bridge = MqttIngestion(
        ingestor, "127.0.0.1", port, client_id=tag, partition=part, subscription=subscription
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
    lines: list[str] | None = None,
) -> dict[str, float]:
    """The stream through ``n`` workers (or only worker ``only`` of them); with
    ``lines``, worker k listens to line k's part of the tree alone, and owns all of it."""
    parts = [Partition(k, n) for k in (range(n) if only is None else [only])]
    share = Counter()
    for topic, items in stream:
        share[lines.index(topic.split("/")[3]) if lines else owner(topic, n)] += len(items)

    def listens(p: Partition) -> tuple[Partition, str]:
        if lines is None:
            return p, SUBSCRIPTION
        return WHOLE, f"sqems/v1/+/{lines[p.index]}/+/+"

    ctx = mp.get_context("fork")
    # the sessions first, so the broker keeps the whole stream for each worker
    for p in parts:
        session = client(port, f"{tag}-{p.name}", clean=False)
        session.subscribe(listens(p)[1], qos=1)
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
        ctx.Process(
            target=worker,
            args=(*listens(p), port, home, f"{tag}-{p.name}", share[p.index], go, out),
        )
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
            # each worker of N alone on the whole stream (its share ingested, the rest
            # passed on), so no other worker competes for the cores: the CPU the busiest
            # of them needs is what N workers on N free cores would take
            busiest: dict[int, list[float]] = {n: [] for n in counts}
            lines = sorted({s.topic.line for s in sensors})
            by_line: dict[str, list[float]] = {"rps": [], "busiest": []}
            for r in range(args.repeats):
                for n in counts:
                    cpu = [
                        run(n, broker.port, broker.process.pid, home, stream, args.readings,
                            f"alone-{r}-{n}-{k}", only=k)["cpu_s"]
                        for k in range(n)
                    ]  # fmt: skip
                    busiest[n].append(max(cpu) / args.readings * 1e6)
                # the tree split by line instead: no message goes to two workers
                n = len(lines)
                both = run(n, broker.port, broker.process.pid, home, stream, args.readings,
                           f"lines-{r}", lines=lines)  # fmt: skip
                by_line["rps"].append(both["rps"])
                cpu = [
                    run(n, broker.port, broker.process.pid, home, stream, args.readings,
                        f"lines-alone-{r}-{k}", only=k, lines=lines)["cpu_s"]
                    for k in range(n)
                ]  # fmt: skip
                by_line["busiest"].append(max(cpu) / args.readings * 1e6)
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
    print("each worker alone on the stream, CPU of the busiest (µs per reading of the stream):")
    cpu = {n: statistics.median(busiest[n]) for n in counts}
    for n in counts:
        share = statistics.median(x["largest_share"] for x in results[n])
        print(
            f"  {n} workers: {cpu[n]:.1f} µs (largest share {share:.0%}); on {n} free cores "
            f"{cpu[counts[0]] / cpu[n]:.2f}x one worker"
        )
    # busiest CPU = what every worker pays for receiving the whole stream (a) + what
    # ingesting its share costs (b x share): fitted over the counts measured
    xs = [statistics.median(x["largest_share"] for x in results[n]) for n in counts]
    ys = [cpu[n] for n in counts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    a = my - b * mx
    print(f"  fit: {a:.1f} µs receiving the stream + {b:.1f} µs x share ingesting it")
    for n in (8, 16, 32):
        print(f"  {n} workers, even shares, {n} free cores: {cpu[counts[0]] / (a + b / n):.2f}x")
    print(f"  bound as workers grow: {cpu[counts[0]] / a:.1f}x one worker")
    line_rps, line_cpu = (statistics.median(by_line[k]) for k in ("rps", "busiest"))
    print(
        f"split by line instead ({len(lines)} workers, SQEMS_MQTT_SUBSCRIPTION per line): "
        f"{line_rps:,.0f} readings/s together ({line_rps / base:.2f}x one worker); busiest "
        f"alone {line_cpu:.1f} µs per reading of the stream, on {len(lines)} free cores "
        f"{cpu[counts[0]] / line_cpu:.2f}x one worker"
    )


if __name__ == "__main__":
    main()
