"""The graph as RDF: export, validate, import, query."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sqems.cli.app import command, err, out, rdf_app
from sqems.cli.common import (
    AllHistory,
    RecallBatch,
    RecallLot,
    RecallMachine,
    RecallParameter,
    WindowFrom,
    WindowTo,
    graph_store,
    recall_source,
    text_pair,
)
from sqems.cli.render import Column, print_shacl, print_table
from sqems.errors import ValidationFailed

RdfFormatOption = Annotated[
    str | None,
    typer.Option(
        "--format", metavar="FORMAT", help="turtle, json-ld or ntriples (default: from the suffix)."
    ),
]


@command("export", on=rdf_app)
def rdf_export(
    out_file: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="File to write (default: standard output)."),
    ] = None,
    fmt: RdfFormatOption = None,
    lot: RecallLot = None,
    batch: RecallBatch = None,
    machine: RecallMachine = None,
    parameter: RecallParameter = None,
    from_: WindowFrom = None,
    to: WindowTo = None,
    all_history: AllHistory = False,
    upstream_of: Annotated[
        list[str] | None,
        typer.Option(
            "--upstream-of", metavar="UID", help="Only what a root-cause trace reaches from these."
        ),
    ] = None,
    uid: Annotated[
        list[str] | None,
        typer.Option("--uid", metavar="UID", help="Only these nodes and the links among them."),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(metavar="IRI", help="IRI base of the nodes (default: SQEMS_RDF_BASE)."),
    ] = None,
) -> None:
    """Export the graph, or a part of it, as RDF in the SQEMS ontology: Turtle, JSON-LD or
    N-Triples, with stable IRIs.

    Example: sqems rdf export --lot LOT-RESIN-00003 --out recall.ttl
    """
    from sqems import ontologies as rdf

    source = recall_source(lot, batch, machine, parameter, from_, to, all_history=all_history)
    if sum(x is not None and x != [] for x in (source, upstream_of, uid)) > 1:
        raise ValidationFailed("give one scope: a recall source, --upstream-of or --uid")
    if fmt is not None:
        rdf_format = rdf.RdfFormat.parse(fmt)
    elif out_file is not None:
        rdf_format = rdf.RdfFormat.of_path(out_file.name)
    else:
        rdf_format = rdf.RdfFormat.TURTLE
    with graph_store(read_only=True) as (store, settings):
        if source is not None:
            part = rdf.Part.recall(store, source)
        elif upstream_of:
            part = rdf.Part.upstream(store, upstream_of)
        elif uid:
            part = rdf.Part.of_uids(store, uid)
        else:
            part = rdf.Part.whole(store)
        iri_base = base or settings.rdf_base
        if out_file is None:
            counts = rdf.write(part, sys.stdout, rdf_format, base=iri_base)
        else:
            with out_file.open("w", encoding="utf-8") as fh:
                counts = rdf.write(part, fh, rdf_format, base=iri_base)
    err.print(
        f"exported {part.description}: {counts.nodes:,} nodes, {counts.edges:,} relationships, "
        f"{counts.triples:,} triples ({rdf_format.value})"
        + (f" to {out_file}" if out_file else ""),
        highlight=False,
    )


@command("validate", on=rdf_app)
def rdf_validate(
    path: Annotated[Path, typer.Argument(help="An RDF file (.ttl, .jsonld, .nt).")],
    fmt: RdfFormatOption = None,
    limit: Annotated[int, typer.Option(help="How many findings to list.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Check an RDF file against the SQEMS SHACL shapes; exit 1 when it breaks any.

    Example: sqems rdf validate recall.ttl
    """
    from sqems import ontologies as rdf

    graph = rdf.parse(path, rdf.RdfFormat.parse(fmt) if fmt else None)
    report = rdf.validate(graph)
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        print_shacl(report, limit)
    if not report.conforms:
        raise typer.Exit(1)


@command("import", on=rdf_app)
def rdf_import(
    path: Annotated[Path, typer.Argument(help="An RDF file (.ttl, .jsonld, .nt).")],
    fmt: RdfFormatOption = None,
    shapes: Annotated[
        bool, typer.Option("--shapes/--no-shapes", help="Check the SHACL shapes first.")
    ] = True,
) -> None:
    """Import an RDF file in the SQEMS ontology into the store: checked against the
    shapes and the models first, then written whole, or not at all.

    Example: sqems rdf import recall.ttl
    """
    from sqems import ontologies as rdf

    graph = rdf.parse(path, rdf.RdfFormat.parse(fmt) if fmt else None)
    with graph_store() as (store, _):
        report = rdf.import_graph(store, graph, check_shapes=shapes)
        out.print(
            f"imported {sum(report.nodes.values()):,} nodes and "
            f"{sum(report.edges.values()):,} relationships into {store.description}"
        )
    print_table(
        [Column("label / relationship", "id"), Column("count", "number")],
        [(name, f"{n:,}") for name, n in [*report.nodes.items(), *report.edges.items()]],
    )
    if report.ignored:
        out.print("ignored (other vocabularies): " + ", ".join(
            f"{p} {n:,}" for p, n in sorted(report.ignored.items())))  # fmt: skip


@command("query", on=rdf_app)
def rdf_query(
    path: Annotated[Path, typer.Argument(help="An RDF file (.ttl, .jsonld, .nt).")],
    query: Annotated[
        str, typer.Argument(help="A shipped query's name (see --list) or a .rq file.")
    ] = "",
    bind: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME=IRI", help="NAME=IRI for a variable of the query."),
    ] = None,
    fmt: RdfFormatOption = None,
    listing: Annotated[bool, typer.Option("--list", help="List the shipped queries.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The rows as JSON.")] = False,
) -> None:
    """Run a SPARQL SELECT query over an RDF file.

    Example: sqems rdf query recall.ttl recall-customers
    """
    from sqems import ontologies as rdf

    if listing:
        for name, text in sorted(rdf.queries().items()):
            first = next((ln[2:] for ln in text.splitlines() if ln.startswith("# ")), "")
            out.print(f"[bold]{name}[/bold]  {first}")
        return
    if not query:
        raise ValidationFailed("name a query (see --list) or give a .rq file")
    text = Path(query).read_text("utf-8") if query.endswith(".rq") else query
    bindings = dict(text_pair(b, "--bind") for b in bind or [])
    graph = rdf.parse(path, rdf.RdfFormat.parse(fmt) if fmt else None)
    rows = rdf.run(graph, text, **bindings)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    if rows:
        print_table(  # IRIs and literals alike are kept whole
            [Column(escape(str(name)), "id") for name in rows[0]],
            [tuple("" if v is None else escape(str(v)) for v in row.values()) for row in rows],
        )
    out.print(f"{len(rows):,} row(s)")
