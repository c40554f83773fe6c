"""Neo4j benchmark: bulk-load throughput and traceability latency beside the embedded store.

Starts its own Neo4j Community server (jars from ``.neo4j/lib`` or SQEMS_NEO4J_LIB,
fetched by Maven on first use) on a free port with an empty database, then for each
plant size:

0. warms the server up on a small plant, then empties it;
1. writes a 5,000-entity sample the naive way, one entity per transaction, through the
   same store API (the baseline), then wipes the database;
2. bulk-loads the whole plant (``UNWIND`` batches of ``--batch`` rows, one transaction
   each) and reports nodes+relationships per second and the ratio to the baseline;
3. times recall scope from random lots and upstream traces from random defective units
   on Neo4j and on the embedded store holding the same plant, interleaved.

    python benchmarks/neo4j_backend.py                        # 100k and 1M units
    python benchmarks/neo4j_backend.py --sizes 100000 --queries 50
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from figures import percentile

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import Section, plant_sections
from sqems.graph_model import EmbeddedGraphStore, RecallSource, SourceKind, Traceability
from sqems.graph_model.edges import rel_type
from sqems.graph_model.neo4j_server import Neo4jServer, free_port
from sqems.graph_model.neo4j_store import Neo4jGraphStore
from sqems.graph_model.nodes import node_type
from sqems.graph_model.store import Edge, GraphStore

REPO = Path(__file__).resolve().parent.parent
NAIVE_SAMPLE = 5_000


def naive_writes(store: GraphStore, sections: list[Section], n: int) -> float:
    """Write the first ``n`` entities one transaction each; entities per second."""
    nodes = [s for s in sections if s.kind == "nodes"]
    edges = [s for s in sections if s.kind == "edges"]
    written = 0
    began = time.perf_counter()
    for section in nodes:
        model = node_type(section.name)
        for _, record in itertools.islice(section.records, max(0, n // 2 - written)):
            store.upsert_nodes([model.parse(record)])
            written += 1
    present = {n.uid for label in {s.name for s in nodes} for n in store.find(label)}
    for section in edges:
        spec = rel_type(section.name)
        for _, record in section.records:
            if written >= n:
                break
            src, dst = record.pop("src"), record.pop("dst")
            if src in present and dst in present:
                store.upsert_edges([Edge(spec.name, src, dst, record)])
                written += 1
    return written / (time.perf_counter() - began)


def warm_up(server: Neo4jServer) -> None:
    """Load and query a small plant once, so the JVM has compiled its hot paths before
    anything is measured, then empty the database."""
    store = Neo4jGraphStore(server.uri, password=server.password())
    plant = generate(PlantSpec(units=20_000, seed=1))
    load_plant(store, plant_sections(plant))
    trace = Traceability(store)
    for lot in plant.nodes["MaterialLot"].columns["uid"][:20]:
        trace.recall_scope(RecallSource(SourceKind.LOT, lot))
    store.wipe()
    store.close()


def time_queries(
    neo4j: GraphStore, embedded: EmbeddedGraphStore, queries: int, seed: int
) -> dict[str, Any]:
    g = embedded.graph
    rng = random.Random(seed)
    lots = sorted(n for n, a in g.nodes(data="label") if a == "MaterialLot")
    defective = sorted({d for _, d, k in g.edges(keys=True) if k in ("FOUND_ON", "ABOUT")})
    out = {}
    a, b = Traceability(neo4j), Traceability(embedded)
    for name, pool, run in (
        ("recall", lots, lambda t, uid: t.recall_scope(RecallSource(SourceKind.LOT, uid))),
        ("upstream", defective, lambda t, uid: t.upstream([uid])),
    ):
        picks = [rng.choice(pool) for _ in range(queries)]
        for uid in picks[:3]:
            run(a, uid)
        on_neo4j, on_embedded = [], []
        for uid in picks:
            t0 = time.perf_counter()
            run(a, uid)
            on_neo4j.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            run(b, uid)
            on_embedded.append((time.perf_counter() - t0) * 1000)
        out[name] = {
            "neo4j_median": statistics.median(on_neo4j),
            "neo4j_p95": percentile(on_neo4j, 0.95),
            "embedded_median": statistics.median(on_embedded),
            "embedded_p95": percentile(on_embedded, 0.95),
        }
    return out


def run_size(
    server: Neo4jServer, units: int, queries: int, batch: int, seed: int
) -> dict[str, Any]:
    plant = generate(PlantSpec(units=units, seed=seed))
    store = Neo4jGraphStore(server.uri, password=server.password(), batch_size=batch)
    store.wipe()
    naive = naive_writes(store, plant_sections(plant), NAIVE_SAMPLE)
    store.wipe()
    began = time.perf_counter()
    report = load_plant(store, plant_sections(plant), batch_size=batch)
    seconds = time.perf_counter() - began
    embedded = EmbeddedGraphStore(None)
    load_plant(embedded, plant_sections(plant))
    del plant
    latency = time_queries(store, embedded, queries, seed)
    store.close()
    embedded.close()
    return {
        "units": units,
        "entities": report.total,
        "load_s": seconds,
        "bulk_rate": report.total / seconds,
        "naive_rate": naive,
        **latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--heap", default="3g")
    parser.add_argument("--pagecache", default="3g")
    args = parser.parse_args()
    lib = Path(REPO / ".neo4j" / "lib")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sqems-neo4j-bench-") as home:
        server = Neo4jServer(
            Path(home), lib=lib, port=free_port(), heap=args.heap, pagecache=args.pagecache
        )
        print(f"starting Neo4j on {server.uri}…", file=sys.stderr, flush=True)
        server.start()
        try:
            warm_up(server)
            for size in args.sizes:
                print(f"running {size:,} units…", file=sys.stderr, flush=True)
                rows.append(run_size(server, size, args.queries, args.batch, args.seed))
        finally:
            server.stop()
    print()
    print(f"{'units':>9} {'entities':>10} {'load':>8} {'bulk/s':>9} {'naive/s':>8} {'ratio':>7}")
    for r in rows:
        print(
            f"{r['units']:>9,} {r['entities']:>10,} {r['load_s']:>7.1f}s "
            f"{r['bulk_rate']:>9,.0f} {r['naive_rate']:>8,.0f} "
            f"{r['bulk_rate'] / r['naive_rate']:>6.1f}x"
        )
    print()
    print(f"{'units':>9} {'query':>9} {'neo4j median':>13} {'neo4j p95':>10} "
          f"{'embedded median':>16} {'embedded p95':>13}")  # fmt: skip
    for r in rows:
        for q in ("recall", "upstream"):
            s = r[q]
            print(
                f"{r['units']:>9,} {q:>9} {s['neo4j_median']:>11.2f}ms "
                f"{s['neo4j_p95']:>8.2f}ms {s['embedded_median']:>14.2f}ms "
                f"{s['embedded_p95']:>11.2f}ms"
            )
    print()
    print("targets: bulk load >= 20x naive and >= 30,000 entities/s; "
          "Neo4j recall median < 50 ms at 1M units")  # fmt: skip


if __name__ == "__main__":
    main()
