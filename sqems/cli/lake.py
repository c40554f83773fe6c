"""The readings lake: export it, and run its jobs on DuckDB or Spark."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sqems.cli.app import Group, app, command, out
from sqems.cli.common import graph_store
from sqems.cli.render import Column, print_table

if TYPE_CHECKING:
    import pyarrow as pa

    from sqems.lake import Engine

lake_app = typer.Typer(
    cls=Group,
    help="The readings lake (Parquet by day and line) and its jobs on DuckDB or Spark.\n\n"
    "Example: sqems lake export && sqems lake compare --engine spark",
    no_args_is_help=True,
)
app.add_typer(lake_app, name="lake")

LakeOption = Annotated[
    Path | None,
    typer.Option("--lake", metavar="DIR", help="The lake directory (default: DATA_DIR/lake)."),
]
EngineOption = Annotated[
    str | None,
    typer.Option(
        "--engine",
        metavar="duckdb|spark",
        help="Where the job runs (default: spark when pyspark is installed, else duckdb).",
    ),
]
MasterOption = Annotated[
    str | None,
    typer.Option(
        "--master",
        metavar="MASTER",
        help="Spark master: local[*] (the default) or spark://host:port for a cluster.",
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", metavar="FILE", help="Also write the result as a Parquet file."),
]


def _lake_dir(lake: Path | None) -> Path:
    if lake is not None:
        return lake
    from sqems.settings import Settings

    return Settings().data_dir / "lake"


@contextmanager
def _engine(lake: Path | None, engine: str | None, master: str | None) -> Iterator[Engine]:
    from sqems.lake import open_engine, open_lake

    opened = open_lake(_lake_dir(lake))
    running = open_engine(engine, master=master)
    try:
        running.attach(opened)
        yield running
    finally:
        running.close()


def _write(table: pa.Table, path: Path | None) -> None:
    if path is None:
        return
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    out.print(f"wrote {table.num_rows:,} rows to {escape(str(path))}", highlight=False)


def _num(value: object, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


@command("export", on=lake_app)
def lake_export(lake: LakeOption = None) -> None:
    """Write the lake from the readings stores (every ingestion worker's) and the graph:
    readings by day and line, and the runs, inspections and parameters the jobs need
    (see docs/lake.md). Stop ingestion first: DuckDB lets no one read a file being written.

    Example: sqems lake export --lake /data/lake
    """
    from sqems.errors import NotFound
    from sqems.ingestion.service import readings_files
    from sqems.ingestion.union import ReadingsUnion
    from sqems.lake import write_lake

    with graph_store(read_only=True) as (store, settings):
        files = readings_files(settings)
        if not files:
            raise NotFound(
                f"no readings store under {settings.data_dir}: ingest readings first (sqems ingest)"
            )
        # every worker's store, read-only: the lake holds the deployment's readings
        with ReadingsUnion(files) as readings:
            written = write_lake(_lake_dir(lake), readings, store)
    rows = written.manifest["rows"]
    out.print(
        f"lake version {written.version} at {escape(str(written.root))}: "
        f"{rows['readings']:,} readings, {rows['runs']:,} runs, "
        f"{rows['inspections']:,} inspection rows, {rows['parameters']:,} parameters",
        highlight=False,
    )


@command("summaries", on=lake_app)
def lake_summaries(
    lake: LakeOption = None,
    engine: EngineOption = None,
    master: MasterOption = None,
    out_file: OutOption = None,
    write_graph: Annotated[
        bool,
        typer.Option("--write-graph", help="Write each run's mean as its RECORDED actual."),
    ] = False,
    show: Annotated[int, typer.Option(metavar="N", help="Rows to print.")] = 20,
) -> None:
    """Per-run summaries of the readings (count, mean, spread, range per parameter): the
    runs' RECORDED actuals.

    Example: sqems lake summaries --engine spark --write-graph
    """
    from sqems.lake import summaries, write_recorded

    with _engine(lake, engine, master) as running:
        table = summaries(running)
    rows = [
        [r["run"], r["parameter"], _num(r["readings"]), _num(r["recorded"], 7), _num(r["sd"])]
        for r in table.slice(0, show).to_pylist()
    ]
    print_table(
        [Column("run", "id"), Column("parameter", "id"), Column("readings", "number"),
         Column("mean", "number"), Column("sd", "number")],
        rows,
        caption=f"{table.num_rows:,} run summaries"
        + (f", first {show}" if table.num_rows > show else ""),
    )  # fmt: skip
    _write(table, out_file)
    if write_graph:
        with graph_store() as (store, _):
            count = write_recorded(store, table)
        out.print(f"wrote {count:,} RECORDED actuals to the graph", highlight=False)


@command("spc", on=lake_app)
def lake_spc(
    lake: LakeOption = None,
    engine: EngineOption = None,
    master: MasterOption = None,
    out_file: OutOption = None,
    rule: Annotated[
        list[str] | None,
        typer.Option("--rule", metavar="RULE", help="A run rule (default: the alarm rules)."),
    ] = None,
) -> None:
    """Scan every series of good readings with the run rules, against the limits the
    live monitor uses; prints the series where a rule fired.

    Example: sqems lake spc --rule nelson_1 --rule nelson_2
    """
    from sqems.lake import spc_scan

    with _engine(lake, engine, master) as running:
        table = spc_scan(running, rule)
    fired = [r for r in table.to_pylist() if r["hits"]]
    series = len({(r["machine"], r["parameter"]) for r in table.to_pylist()})
    print_table(
        [Column("machine", "id"), Column("parameter", "id"), Column("rule", "id"),
         Column("hits", "number"), Column("readings", "number"), "first", "last"],
        [[r["machine"], r["parameter"], r["rule"], _num(r["hits"]), _num(r["readings"]),
          str(r["first_at"]), str(r["last_at"])] for r in fired],
        caption=f"{series} series scanned; {len(fired)} series-rule pairs fired",
    )  # fmt: skip
    _write(table, out_file)


@command("capability", on=lake_app)
def lake_capability(
    lake: LakeOption = None,
    engine: EngineOption = None,
    master: MasterOption = None,
    out_file: OutOption = None,
) -> None:
    """Capability of each parameter on each machine from its runs' recorded actuals:
    Cpk and Ppk with their 95 % intervals.

    Example: sqems lake capability --out capability.parquet
    """
    from sqems.lake import capability_table

    with _engine(lake, engine, master) as running:
        table = capability_table(running)

    def ranged(r: dict[str, object], name: str) -> str:
        if r.get(name) is None:
            return "-"
        return f"{_num(r[name], 3)} [{_num(r[name + '_lower'], 3)}, {_num(r[name + '_upper'], 3)}]"

    print_table(
        [Column("parameter", "id"), Column("machine", "id"), Column("runs", "number"),
         "Cpk [95% CI]", "Ppk [95% CI]", "meets 1.33", "warnings"],
        [[r["parameter"], r["machine"], _num(r["runs"]), ranged(r, "cpk"), ranged(r, "ppk"),
          {True: "yes", False: "no", None: "-"}[r["meets_1_33"]], escape(r["warnings"] or "")]
         for r in table.to_pylist()],
    )  # fmt: skip
    _write(table, out_file)


@command("compare", on=lake_app)
def lake_compare(
    lake: LakeOption = None,
    engine: EngineOption = None,
    master: MasterOption = None,
    out_file: OutOption = None,
) -> None:
    """Is quality different between shifts, lines, machines? Each parameter's run means
    and each step's inspection failures, tested by group, Holm-adjusted together.

    Example: sqems lake compare --engine spark --master spark://10.0.0.5:7077
    """
    from sqems.lake import compare

    with _engine(lake, engine, master) as running:
        result = compare(running)
    significant = [f for f in result.findings if f.significant]
    for finding in significant:
        out.print(f"[bold]different[/bold]  {escape(finding.answer)}", highlight=False)
    for finding in result.findings:
        if not finding.significant:
            out.print(f"same       {escape(finding.answer)}", highlight=False)
    for note in result.untested:
        out.print(f"untested   {escape(note)}", highlight=False)
    out.print(
        f"{len(result.findings)} tests, {len(significant)} significant at 5 % after Holm's "
        "adjustment" + ("" if significant else ": no significant difference anywhere"),
        highlight=False,
    )
    _write(result.table(), out_file)
