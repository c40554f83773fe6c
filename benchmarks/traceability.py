"""Traceability benchmark: load time, peak memory and query latency of the embedded store.

For each plant size it runs one child process (so peak memory is that size's alone):
generate the plant, write its files, load them into a file-backed embedded store,
reopen the store cold, then time recall scope from random material lots and upstream
traces from random defective units. Each query is also answered by a bare networkx
traversal of the same in-memory graph (the floor: no store, no result objects, no
deterministic ordering), interleaved with ours so both see the same machine noise.

    python benchmarks/traceability.py                      # 10k, 100k and 1M units
    python benchmarks/traceability.py --sizes 10000 --queries 50
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import networkx as nx
from figures import percentile

from sqems.datasets import PlantSpec, generate, load_plant, read_plant, write_plant
from sqems.graph_model import (
    DOWNSTREAM,
    UPSTREAM,
    Direction,
    EmbeddedGraphStore,
    RecallSource,
    SourceKind,
    Traceability,
)

TARGETS = {
    "load_1m_s": 300.0,
    "peak_1m_gib": 10.0,
    "recall_median_ms": 50.0,
    "overhead_ratio": 1.5,
}


# --- the floor: the same traversals in bare networkx -------------------------------------


def bare_traverse(
    g: nx.MultiDiGraph, start: str, hops: dict[str, Direction]
) -> dict[str, tuple[str, str] | None]:
    outs = {t for t, d in hops.items() if d is Direction.OUT}
    ins = {t for t, d in hops.items() if d is Direction.IN}
    parent: dict[str, tuple[str, str] | None] = {start: None}
    succ, pred = g._succ, g._pred  # the raw adjacency, as networkx's own algorithms use it
    frontier = [start]
    while frontier:
        level = []
        for u in frontier:
            for v, keys in succ[u].items():
                if v not in parent:
                    for k in keys:
                        if k in outs:
                            parent[v] = (u, k)
                            level.append(v)
                            break
            for v, keys in pred[u].items():
                if v not in parent:
                    for k in keys:
                        if k in ins:
                            parent[v] = (u, k)
                            level.append(v)
                            break
        frontier = level
    return parent


def bare_path(parent: dict[str, tuple[str, str] | None], uid: str) -> list[tuple[str, str]]:
    path = []
    step = parent[uid]
    while step is not None:
        path.append((uid, step[1]))
        uid = step[0]
        step = parent[uid]
    path.append((uid, ""))
    path.reverse()
    return path


def bare_recall(g: nx.MultiDiGraph, lot: str) -> dict[str, Any]:
    parent = bare_traverse(g, lot, dict(DOWNSTREAM))
    nodes = g._node
    units = sorted(n for n in parent if nodes[n]["label"] == "Unit")
    shipped = {u for u in units if any("SHIPPED_IN" in k for k in g._succ[u].values())}
    return {
        "units": {u: bare_path(parent, u) for u in units},
        "shipped": len(shipped),
        "batches": sorted(n for n in parent if nodes[n]["label"] == "Batch"),
        "shipments": sorted(n for n in parent if nodes[n]["label"] == "Shipment"),
        "customers": sorted(n for n in parent if nodes[n]["label"] == "Customer"),
    }


def bare_upstream(g: nx.MultiDiGraph, unit: str) -> dict[str, list[str]]:
    parent = bare_traverse(g, unit, dict(UPSTREAM))
    nodes = g._node
    grouped: dict[str, list[str]] = {}
    for n in parent:
        grouped.setdefault(nodes[n]["label"], []).append(n)
    return grouped


# --- one size, in a child process ---------------------------------------------------------


def run_one(units: int, queries: int, seed: int) -> dict[str, Any]:
    result: dict[str, Any] = {"units": units}
    with tempfile.TemporaryDirectory(prefix="sqems-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        plant = generate(PlantSpec(units=units, seed=seed))
        result["generate_s"] = time.perf_counter() - t
        t = time.perf_counter()
        write_plant(plant, root / "plant")
        result["write_s"] = time.perf_counter() - t
        del plant
        t = time.perf_counter()
        with EmbeddedGraphStore(root / "graph.db") as store:
            report = load_plant(store, read_plant(root / "plant"))
        result["load_s"] = time.perf_counter() - t
        # of which the pre-pass that checks the whole plant (rows, edge ends, genealogy
        # rules) before anything is written
        result["check_s"] = report.checked_seconds
        result["entities"] = report.total
        t = time.perf_counter()
        store = EmbeddedGraphStore(root / "graph.db", read_only=True)
        result["reopen_s"] = time.perf_counter() - t
        result["nodes"] = store.count()
        result["edges"] = store.count_edges()
        result.update(time_queries(store, queries, seed))
        store.close()
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def time_queries(store: EmbeddedGraphStore, queries: int, seed: int) -> dict[str, Any]:
    g = store.graph
    trace = Traceability(store)
    rng = random.Random(seed)
    lots = sorted(n for n, a in g.nodes(data="label") if a == "MaterialLot")
    defect_units = sorted(
        {dst for _, dst, k in g.edges(keys=True) if k == "FOUND_ON"}
        | {dst for _, dst, k in g.edges(keys=True) if k == "ABOUT"}
    )
    out: dict[str, Any] = {}
    for name, pool, ours, floor in (
        (
            "recall",
            lots,
            lambda uid: trace.recall_scope(RecallSource(SourceKind.LOT, uid)),
            lambda uid: bare_recall(g, uid),
        ),
        (
            "upstream",
            defect_units,
            lambda uid: trace.upstream([uid]),
            lambda uid: bare_upstream(g, uid),
        ),
    ):
        picks = [rng.choice(pool) for _ in range(queries)]
        mine, bare, sizes = [], [], []
        for uid in picks[:3]:  # warm caches
            ours(uid)
            floor(uid)
        for uid in picks:
            t = time.perf_counter()
            answer = ours(uid)
            mine.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            floor(uid)
            bare.append((time.perf_counter() - t) * 1000)
            sizes.append(
                answer.counts["units"] if name == "recall" else len(answer.traversal.reached)
            )
        out[name] = {
            "median_ms": statistics.median(mine),
            "p95_ms": percentile(mine, 0.95),
            "bare_median_ms": statistics.median(bare),
            "bare_p95_ms": percentile(bare, 0.95),
            "ratio": statistics.median(mine) / statistics.median(bare),
            "median_result_size": statistics.median(sizes),
        }
    return out


# --- report -------------------------------------------------------------------------------


def report(rows: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'units':>9} {'entities':>10} {'generate':>9} {'write':>7} {'load':>8} "
        f"{'(check)':>8} {'reopen':>7} {'peak':>8}"
    )
    for r in rows:
        print(
            f"{r['units']:>9,} {r['entities']:>10,} {r['generate_s']:>8.1f}s "
            f"{r['write_s']:>6.1f}s {r['load_s']:>7.1f}s {r['check_s']:>7.1f}s "
            f"{r['reopen_s']:>6.1f}s "
            f"{r['peak_rss_gib']:>6.2f}GiB"
        )
    print()
    print(
        f"{'units':>9} {'query':>9} {'size':>6} {'median':>9} {'p95':>9} "
        f"{'bare nx median':>15} {'bare p95':>9} {'ratio':>6}"
    )
    for r in rows:
        for q in ("recall", "upstream"):
            s = r[q]
            print(
                f"{r['units']:>9,} {q:>9} {s['median_result_size']:>6.0f} "
                f"{s['median_ms']:>7.2f}ms {s['p95_ms']:>7.2f}ms "
                f"{s['bare_median_ms']:>13.2f}ms {s['bare_p95_ms']:>7.2f}ms "
                f"{s['ratio']:>5.2f}x"
            )
    print()
    for r in rows:
        if r["units"] == 1_000_000:
            total = r["generate_s"] + r["write_s"] + r["load_s"]
            verdict = "meets" if total < TARGETS["load_1m_s"] else "MISSES"
            print(
                f"1M units generated, written and loaded in {total:.0f}s "
                f"({verdict} the {TARGETS['load_1m_s']:.0f}s target), peak "
                f"{r['peak_rss_gib']:.2f} GiB (target {TARGETS['peak_1m_gib']:.0f} GiB)"
            )
    worst = max(r["recall"]["median_ms"] for r in rows)
    print(f"worst recall-scope median {worst:.2f} ms (target {TARGETS['recall_median_ms']:.0f} ms)")
    ratios = [r[q]["ratio"] for r in rows for q in ("recall", "upstream")]
    print(
        f"overhead over bare networkx: {min(ratios):.2f}x to {max(ratios):.2f}x "
        f"(target at most {TARGETS['overhead_ratio']}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.queries, args.seed)))
        return
    rows = []
    for size in args.sizes:
        print(f"running {size:,} units…", file=sys.stderr, flush=True)
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(size),
                "--queries",
                str(args.queries),
                "--seed",
                str(args.seed),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    report(rows)


if __name__ == "__main__":
    main()
