"""Neo4j through a routing URI: a recall over ``neo4j://`` beside the same over ``bolt://``.

Starts its own Neo4j Community server (jars from ``.neo4j/lib`` or SQEMS_NEO4J_LIB) on a
free port, loads a generated plant (or ``--plant-dir``) once, and opens two stores on
it: one through ``bolt://`` (one server, no routing) and one through ``neo4j://`` (the
routing table, reads sent as reads, the store's bookmark manager). Then:

1. every pick of ``--queries`` random lots is recalled once through each store,
   alternating which goes first; the figure is the median of the per-lot ratios
   (routing / bolt) with a 95 % bootstrap interval, beside both medians and p95s;
2. the server's CPU per recall (from /proc) and the client's (``process_time``) for
   each side: capacity per read server and per API process;
3. recalls per second through the routing store with 1, 2 and 4 client threads.

    python benchmarks/neo4j_routing.py                          # 100k units, 300 lots
    python benchmarks/neo4j_routing.py --plant-dir /data/plants/units-1000000-seed-3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from figures import percentile

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections, read_plant
from sqems.graph_model import RecallSource, SourceKind, Traceability
from sqems.graph_model.neo4j_server import Neo4jServer, free_port
from sqems.graph_model.neo4j_store import Neo4jGraphStore

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def bootstrap_median(values: list[float], resamples: int, seed: int) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the median of ``values``."""
    rng = random.Random(seed)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples)
    )
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--plant-dir", type=Path)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--heap", default="1g")
    parser.add_argument("--pagecache", default="512m")
    args = parser.parse_args()

    lib = Path(os.environ.get("SQEMS_NEO4J_LIB", REPO / ".neo4j" / "lib"))
    with tempfile.TemporaryDirectory(prefix="sqems-neo4j-routing-") as tmp:
        server = Neo4jServer(
            Path(tmp), lib=lib, port=free_port(), heap=args.heap, pagecache=args.pagecache
        )
        server.start()
        try:
            out = run(server, args)
        finally:
            server.stop()
    print(json.dumps(out, indent=1))


def run(server: Neo4jServer, args: argparse.Namespace) -> dict[str, Any]:
    pid = int(server.pid_file.read_text().strip())
    sections = (
        read_plant(args.plant_dir)
        if args.plant_dir
        else plant_sections(generate(PlantSpec(units=args.units, seed=args.seed)))
    )
    bolt = Neo4jGraphStore(server.uri, password=server.password())
    routed = Neo4jGraphStore(f"neo4j://127.0.0.1:{server.port}", password=server.password())
    out: dict[str, Any] = {"load_average_before": os.getloadavg()}
    try:
        began = time.perf_counter()
        report = load_plant(bolt, sections)
        out["entities"], out["load_s"] = report.total, time.perf_counter() - began
        lots = sorted(n.uid for n in bolt.find("MaterialLot"))
        rng = random.Random(args.seed)
        picks = [rng.choice(lots) for _ in range(args.queries)]
        sides = {"bolt": Traceability(bolt), "neo4j": Traceability(routed)}
        for lot in picks[:30]:  # warm both paths up
            for trace in sides.values():
                trace.recall_scope(RecallSource(SourceKind.LOT, lot))
        wall: dict[str, list[float]] = {name: [] for name in sides}
        server_cpu = dict.fromkeys(sides, 0.0)
        client_cpu = dict.fromkeys(sides, 0.0)
        for i, lot in enumerate(picks):
            order = list(sides.items()) if i % 2 == 0 else list(sides.items())[::-1]
            for name, trace in order:
                s0, c0, t0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
                trace.recall_scope(RecallSource(SourceKind.LOT, lot))
                wall[name].append(1e3 * (time.perf_counter() - t0))
                client_cpu[name] += time.process_time() - c0
                server_cpu[name] += cpu_seconds(pid) - s0
        for name in sides:
            out[name] = {
                "median_ms": statistics.median(wall[name]),
                "p95_ms": percentile(wall[name], 0.95),
                "server_cpu_ms": 1e3 * server_cpu[name] / len(picks),
                "client_cpu_ms": 1e3 * client_cpu[name] / len(picks),
            }
        ratios = [r / b for r, b in zip(wall["neo4j"], wall["bolt"], strict=True)]
        out["neo4j/bolt, median of per-lot ratios"] = statistics.median(ratios)
        out["95% bootstrap interval"] = bootstrap_median(ratios, 2_000, args.seed)
        out["lots slower through neo4j://"] = f"{sum(r > 1 for r in ratios)} of {len(ratios)}"
        trace = sides["neo4j"]
        for threads in (1, 2, 4):
            s0, t0 = cpu_seconds(pid), time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda lot: trace.recall_scope(RecallSource(SourceKind.LOT, lot)),
                              picks))  # fmt: skip
            seconds = time.perf_counter() - t0
            out[f"{threads} client thread(s)"] = {
                "recalls_per_s": len(picks) / seconds,
                "server_cpu_ms": 1e3 * (cpu_seconds(pid) - s0) / len(picks),
            }
        out["load_average_after"] = os.getloadavg()
    finally:
        bolt.close()
        routed.close()
    return out


if __name__ == "__main__":
    main()
