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
   on Neo4j and on the embedded store holding the same plant, interleaved, with the
   Neo4j store's former way beside them as the baseline: a label lookup per start, one
   query per breadth-first level and, for a recall, one more for the units' shipments
   (today: one query for the whole question);
4. times root-cause ranking (``from_defect_type`` then ``rank_causes``) of every planted
   cause's defect type on both stores, interleaved.

    python benchmarks/neo4j_backend.py                        # 100k and 1M units
    python benchmarks/neo4j_backend.py --sizes 100000 --queries 50
    python benchmarks/neo4j_backend.py --plant-dir /data/plants/units-1000000-seed-3
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from figures import percentile

from sqems.analysis.rootcause import from_defect_type, rank_causes
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import Section, plant_sections, read_manifest, read_plant
from sqems.graph_model import EmbeddedGraphStore, RecallSource, SourceKind, Traceability
from sqems.graph_model.edges import rel_type
from sqems.graph_model.neo4j_server import Neo4jServer, free_port
from sqems.graph_model.neo4j_store import Neo4jGraphStore
from sqems.graph_model.nodes import node_type
from sqems.graph_model.store import Direction, Edge, GraphStore
from sqems.graph_model.traceability import DOWNSTREAM, UPSTREAM, Genealogy, RecallScope

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


def recall_by_level(store: Neo4jGraphStore, lot: str) -> RecallScope:
    """A lot's recall scope as the Neo4j store answered it before (the baseline): the
    start's label, then its label again and one query per level, then the shipments."""
    store.label_of(lot)
    t = store._traverse_by_level([lot], DOWNSTREAM, 32, None, None, None)
    units = [r.uid for r in t.reached.values() if r.label == "Unit"]
    t.edges = store.edges(units, {"SHIPPED_IN": Direction.OUT}) if units else []
    return Traceability(store)._scope(RecallSource(SourceKind.LOT, lot), [], t, {})


def upstream_by_level(store: Neo4jGraphStore, uid: str) -> Genealogy:
    store.label_of(uid)
    return Genealogy((uid,), store._traverse_by_level([uid], UPSTREAM, 32, None, None, None))


def time_queries(
    neo4j: Neo4jGraphStore, embedded: EmbeddedGraphStore, queries: int, seed: int
) -> dict[str, Any]:
    g = embedded.graph
    rng = random.Random(seed)
    lots = sorted(n for n, a in g.nodes(data="label") if a == "MaterialLot")
    defective = sorted({d for _, d, k in g.edges(keys=True) if k in ("FOUND_ON", "ABOUT")})
    defective = [u for u in defective if g.nodes[u]["label"] in ("Unit", "Complaint")]
    out = {}
    a, b = Traceability(neo4j), Traceability(embedded)
    for name, pool, run, before in (
        (
            "recall",
            lots,
            lambda t, uid: t.recall_scope(RecallSource(SourceKind.LOT, uid)).as_dict(),
            lambda uid: recall_by_level(neo4j, uid).as_dict(),
        ),
        (
            "upstream",
            defective,
            lambda t, uid: t.upstream([uid]).as_dict(),
            lambda uid: upstream_by_level(neo4j, uid).as_dict(),
        ),
    ):
        picks = [rng.choice(pool) for _ in range(queries)]
        for uid in picks[:3]:
            run(a, uid)
            before(uid)
        on_neo4j, by_level, on_embedded = [], [], []
        for uid in picks:
            t0 = time.perf_counter()
            answer = run(a, uid)
            on_neo4j.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            baseline = before(uid)
            by_level.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            embedded_answer = run(b, uid)
            on_embedded.append((time.perf_counter() - t0) * 1000)
            assert answer == baseline == embedded_answer, uid
        out[name] = {
            "neo4j_median": statistics.median(on_neo4j),
            "neo4j_p95": percentile(on_neo4j, 0.95),
            "level_median": statistics.median(by_level),
            "level_p95": percentile(by_level, 0.95),
            "embedded_median": statistics.median(on_embedded),
            "embedded_p95": percentile(on_embedded, 0.95),
        }
    return out


def time_root_cause(
    neo4j: GraphStore, embedded: GraphStore, defect_types: list[str], repeats: int
) -> dict[str, Any]:
    """Seconds to rank the causes of each defect type, from the defect type (as the
    API and CLI do), on both stores, interleaved; the answers must agree."""
    on_neo4j, on_embedded = [], []
    for _ in range(repeats):
        for defect_type in defect_types:
            t0 = time.perf_counter()
            answer = rank_causes(neo4j, from_defect_type(neo4j, defect_type))
            on_neo4j.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            expected = rank_causes(embedded, from_defect_type(embedded, defect_type))
            on_embedded.append(time.perf_counter() - t0)
            assert [c.factor.key for c in answer.causes] == [
                c.factor.key for c in expected.causes
            ], defect_type
    return {
        "neo4j_median": statistics.median(on_neo4j),
        "embedded_median": statistics.median(on_embedded),
        "analyses": len(on_neo4j),
    }


class PlantSource:
    """A plant to load: generated in memory, or read from a plant directory (reused
    across runs, so a 1M-unit plant is generated once)."""

    def __init__(self, units: int | None = None, seed: int = 7, directory: Path | None = None):
        self.directory = directory
        if directory is not None:
            self.units = int(read_manifest(directory)["spec"]["units"])
            self.truth = json.loads((directory / "ground_truth.json").read_text())
        else:
            assert units is not None
            self.plant = generate(PlantSpec(units=units, seed=seed))
            self.units = units
            self.truth = self.plant.truth

    def sections(self) -> list[Section]:
        if self.directory is not None:
            return read_plant(self.directory)
        return plant_sections(self.plant)


def run_size(
    server: Neo4jServer, source: PlantSource, queries: int, batch: int, seed: int, rca: int
) -> dict[str, Any]:
    store = Neo4jGraphStore(server.uri, password=server.password(), batch_size=batch)
    store.wipe()
    naive = naive_writes(store, source.sections(), NAIVE_SAMPLE)
    store.wipe()
    began = time.perf_counter()
    report = load_plant(store, source.sections(), batch_size=batch)
    seconds = time.perf_counter() - began
    embedded = EmbeddedGraphStore(None)
    load_plant(embedded, source.sections())
    latency = time_queries(store, embedded, queries, seed)
    causes = {}
    if rca:
        types = sorted({c["defect_type"] for c in source.truth["causes"]})
        causes = {"rca": time_root_cause(store, embedded, types, rca)}
    store.close()
    embedded.close()
    return {
        "units": source.units,
        "entities": report.total,
        "load_s": seconds,
        "bulk_rate": report.total / seconds,
        "naive_rate": naive,
        **latency,
        **causes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--plant-dir", type=Path, nargs="+", default=[],
        help="plant directories to load instead of generating --sizes",
    )  # fmt: skip
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--rca", type=int, default=1,
        help="root-cause rounds per planted cause on plants of at most 200k units (0: none)",
    )  # fmt: skip
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
            sources = (
                [PlantSource(directory=d) for d in args.plant_dir]
                if args.plant_dir
                else [PlantSource(size, args.seed) for size in args.sizes]
            )
            for source in sources:
                print(f"running {source.units:,} units…", file=sys.stderr, flush=True)
                rca = args.rca if source.units <= 200_000 else 0
                rows.append(run_size(server, source, args.queries, args.batch, args.seed, rca))
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
          f"{'by level median':>16} {'by level p95':>13} {'gain':>6} "
          f"{'embedded median':>16} {'embedded p95':>13}")  # fmt: skip
    for r in rows:
        for q in ("recall", "upstream"):
            s = r[q]
            print(
                f"{r['units']:>9,} {q:>9} {s['neo4j_median']:>11.2f}ms "
                f"{s['neo4j_p95']:>8.2f}ms {s['level_median']:>14.2f}ms "
                f"{s['level_p95']:>11.2f}ms {s['level_median'] / s['neo4j_median']:>5.1f}x "
                f"{s['embedded_median']:>14.2f}ms {s['embedded_p95']:>11.2f}ms"
            )
    timed = [r for r in rows if "rca" in r]
    if timed:
        print()
        print(f"{'units':>9} {'root cause':>11} {'neo4j median':>13} {'embedded median':>16}")
        for r in timed:
            c = r["rca"]
            print(
                f"{r['units']:>9,} {c['analyses']:>5} runs {c['neo4j_median']:>12.2f}s "
                f"{c['embedded_median']:>15.2f}s"
            )
    print()
    print("targets: bulk load >= 20x naive and >= 30,000 entities/s; Neo4j recall median "
          "<= 10 ms at 1M units; root cause on Neo4j < 1 s at 100k units")  # fmt: skip


if __name__ == "__main__":
    main()
