"""RDF benchmark: export, import, SHACL validation and SPARQL on a generated plant, each
beside a baseline measured in the same run.

1. **export**: the streaming writers (a node at a time, no RDF graph in memory) beside
   building an rdflib graph of the same triples and serialising it with rdflib's own
   Turtle and N-Triples serializers;
2. **import**: parsing an N-Triples export with rdflib, turning it into graph-model
   records and writing them into a fresh embedded store, beside loading the same plant
   from its generator tables (the CSV loader's path);
3. **SHACL** (pyshacl) over the whole export and over one recall scope;
4. **SPARQL** ``recall-units`` over the whole export beside the store's own recall
   scope traversal, for the same lots.

Medians of ``--repeats`` rounds; throughput in triples per second.

    python benchmarks/rdf.py
    python benchmarks/rdf.py --units 2000 --repeats 1
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import tracemalloc

from figures import median_seconds

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, RecallSource, SourceKind, Traceability
from sqems.ontologies import (
    Part,
    RdfFormat,
    import_graph,
    parse,
    records,
    run,
    to_graph,
    validate,
    write,
)


def peak_mib(action: object) -> tuple[float, object]:
    tracemalloc.start()
    result = action()  # type: ignore[operator]
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lots", type=int, default=20, help="lots for the SPARQL rounds")
    args = parser.parse_args()

    plant = generate(PlantSpec(units=args.units, seed=args.seed))
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    whole = Part.whole(store)
    nodes, edges = store.count(), store.count_edges()
    print(f"plant: {args.units:,} units, {nodes:,} nodes, {edges:,} relationships")

    def streamed(fmt: RdfFormat) -> str:
        buffer = io.StringIO()
        write(whole, buffer, fmt)
        return buffer.getvalue()

    nt = streamed(RdfFormat.NTRIPLES)
    triples = nt.count("\n")
    print(f"export: {triples:,} triples; N-Triples {len(nt) / 2**20:.1f} MiB")

    print("\nexport (median seconds, triples/s)")
    for fmt, rdflib_name in ((RdfFormat.TURTLE, "turtle"), (RdfFormat.NTRIPLES, "nt")):
        ours = median_seconds(lambda fmt=fmt: streamed(fmt), args.repeats)
        base = median_seconds(
            lambda name=rdflib_name: to_graph(whole).serialize(format=name), args.repeats
        )
        print(f"  {fmt.value:<9} streaming {ours:6.2f} s  {triples / ours:>9,.0f}/s   "
              f"rdflib graph + serializer {base:6.2f} s  {triples / base:>9,.0f}/s   "
              f"ratio {base / ours:.1f}x")  # fmt: skip
    peak_stream, _ = peak_mib(lambda: streamed(RdfFormat.NTRIPLES))
    peak_graph, _ = peak_mib(lambda: to_graph(whole).serialize(format="nt"))
    print(f"  peak Python memory: streaming {peak_stream:.0f} MiB (the text itself "
          f"{len(nt) / 2**20:.0f} MiB), rdflib graph {peak_graph:.0f} MiB")  # fmt: skip

    print("\nimport (median seconds)")
    parse_s = median_seconds(lambda: parse(nt, RdfFormat.NTRIPLES), args.repeats)
    g = parse(nt, RdfFormat.NTRIPLES)
    records_s = median_seconds(lambda: records(g), args.repeats)

    def into_fresh() -> None:
        import_graph(EmbeddedGraphStore(None), g, check_shapes=False)

    def loader() -> None:
        load_plant(EmbeddedGraphStore(None), plant_sections(plant))

    import_s = median_seconds(into_fresh, args.repeats)
    load_s = median_seconds(loader, args.repeats)
    print(f"  parse N-Triples      {parse_s:6.2f} s  {triples / parse_s:>9,.0f} triples/s")
    print(f"  to model records     {records_s:6.2f} s")
    print(f"  records + write      {import_s:6.2f} s  ({(nodes + edges) / import_s:,.0f} "
          "nodes+relationships/s)")  # fmt: skip
    print(f"  baseline: the plant loader from its tables {load_s:6.2f} s "
          f"({(nodes + edges) / load_s:,.0f}/s); RDF import (parse + records + write) "
          f"{(parse_s + import_s) / load_s:.1f}x its time")  # fmt: skip

    print("\nSHACL (pyshacl, one round each)")
    started = time.perf_counter()
    report = validate(g)
    shacl_s = time.perf_counter() - started
    print(f"  whole export: {shacl_s:6.1f} s  {triples / shacl_s:>9,.0f} triples/s  "
          f"conforms={report.conforms}")  # fmt: skip
    lot = store.find("MaterialLot")[0].uid
    scope = to_graph(Part.recall(store, RecallSource(SourceKind.LOT, lot)))
    started = time.perf_counter()
    scoped = validate(scope)
    print(f"  one recall scope ({len(scope):,} triples): {time.perf_counter() - started:.2f} s "
          f"conforms={scoped.conforms}")  # fmt: skip

    print(f"\nSPARQL recall-units beside the store's traversal ({args.lots} lots, medians)")
    trace = Traceability(store)
    lots = [x.uid for x in store.find("MaterialLot")][:: max(1, nodes // 10_000)][: args.lots]
    graph = to_graph(whole)
    sparql_ms, traverse_ms = [], []
    for uid in lots:
        iri = f"https://sqems.dev/id/MaterialLot/{uid}"
        started = time.perf_counter()
        rows = run(graph, "recall-units", lot=iri)
        sparql_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        want = trace.recall_scope(RecallSource(SourceKind.LOT, uid))
        traverse_ms.append((time.perf_counter() - started) * 1000)
        assert [r["uid"] for r in rows] == [u.uid for u in want.units]
    s, t = statistics.median(sparql_ms), statistics.median(traverse_ms)
    print(f"  SPARQL {s:8.1f} ms   store traversal {t:6.1f} ms   ratio {s / t:.0f}x (same answers)")


if __name__ == "__main__":
    main()
