"""Analysis benchmark: SPC rules over a million points, root-cause ranking on both backends.

1. **Rules**: every Nelson and Western Electric rule over ``--points`` readings,
   vectorised, beside a plain-Python loop applying the same rules (see
   ``analysis_rules.py``), in the same run.
2. **Root-cause ranking** on a ``--units`` plant (100k by default) loaded into the
   embedded store and into a real Neo4j Community server started here (jars from
   ``.neo4j/lib`` or SQEMS_NEO4J_LIB): for each planted cause, ranking from its defect
   type, beside the baseline of merely walking the same defective units' genealogy
   upstream (``Traceability.upstream``) on the same store. Medians of ``--repeats``.

    python benchmarks/analysis.py
    python benchmarks/analysis.py --units 20000 --points 100000 --repeats 3
    python benchmarks/analysis.py --skip-neo4j
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from analysis_rules import print_rules, rules_benchmark
from figures import median_seconds

from sqems.analysis.rootcause import from_defect_type, rank_causes
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore, Traceability
from sqems.graph_model.neo4j_server import Neo4jServer, free_port
from sqems.graph_model.neo4j_store import Neo4jGraphStore

REPO = Path(__file__).resolve().parent.parent


def rca_figures(store: GraphStore, truth: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    rows = []
    trace = Traceability(store)
    for cause in truth["causes"]:
        target = from_defect_type(store, cause["defect_type"])
        ranked = median_seconds(lambda t=target: rank_causes(store, t), repeats, warm=True)
        walked = median_seconds(lambda t=target: trace.upstream(list(t.units)), repeats, warm=True)
        top = rank_causes(store, target).causes[0].factor.key
        rows.append({"cause": cause["id"], "units": len(target.units), "rank_s": ranked,
                     "upstream_s": walked, "top": top})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-neo4j", action="store_true")
    parser.add_argument("--heap", default="2g")
    parser.add_argument("--pagecache", default="1g")
    args = parser.parse_args()

    print(f"SPC rules over {args.points:,} points…", file=sys.stderr, flush=True)
    rules = rules_benchmark(args.points, args.seed)

    print(f"building a {args.units:,}-unit plant…", file=sys.stderr, flush=True)
    plant = generate(PlantSpec(units=args.units, seed=args.seed))
    sections = plant_sections(plant)
    results: dict[str, list[dict[str, Any]]] = {}
    with EmbeddedGraphStore(None) as store:
        load_plant(store, sections)
        results["embedded"] = rca_figures(store, plant.truth, args.repeats)

    if not args.skip_neo4j:
        lib = Path(os.environ.get("SQEMS_NEO4J_LIB", REPO / ".neo4j" / "lib"))
        with tempfile.TemporaryDirectory(prefix="sqems-analysis-neo4j-") as home:
            server = Neo4jServer(
                Path(home), lib=lib, port=free_port(), heap=args.heap, pagecache=args.pagecache
            )
            print(f"starting Neo4j on {server.uri}…", file=sys.stderr, flush=True)
            server.start()
            try:
                store = Neo4jGraphStore(server.uri, password=server.password())
                load_plant(store, plant_sections(plant))
                results["neo4j"] = rca_figures(store, plant.truth, args.repeats)
                store.close()
            finally:
                server.stop()

    print()
    print_rules(rules)
    print()
    print(f"root-cause ranking on {args.units:,} units, median of {args.repeats} "
          "(baseline: walking the same units upstream)")  # fmt: skip
    print(f"{'backend':<9} {'cause':<16} {'units':>6} {'ranking':>9} {'upstream':>9} "
          f"{'ratio':>6}  top cause")  # fmt: skip
    for backend, rows in results.items():
        for r in rows:
            print(f"{backend:<9} {r['cause']:<16} {r['units']:>6} {r['rank_s']:>8.3f}s "
                  f"{r['upstream_s']:>8.3f}s {r['rank_s'] / r['upstream_s']:>5.1f}x  "
                  f"{r['top']}")  # fmt: skip
    worst = max(r["rank_s"] for rows in results.values() for r in rows)
    print(f"\nslowest ranking {worst:.3f} s (target < 2 s on both backends)")


if __name__ == "__main__":
    main()
