"""The ``sqems`` command.

Every command reads :class:`~sqems.settings.Settings` from the environment, opens the
configured graph store and closes it when done. A :class:`~sqems.errors.SqemsError`
becomes one red line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import getpass
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.tree import Tree

from sqems import investigation, logs
from sqems import ontologies as rdf
from sqems.analysis import kpis, rootcause
from sqems.datasets import PlantShape, PlantSpec, generate, load_plant, read_plant, write_plant
from sqems.datasets.building import write_building_ifc
from sqems.datasets.files import Section, plant_sections
from sqems.errors import SqemsError, ValidationFailed
from sqems.graph_model import (
    NODE_TYPES,
    REL_TYPES,
    Genealogy,
    GraphStore,
    RecallScope,
    RecallSource,
    SourceKind,
    TimeWindow,
    Traceability,
    open_store,
    render_path,
)
from sqems.graph_model.migrate import copy_store
from sqems.graph_model.neo4j_server import NEO4J_VERSION
from sqems.graph_model.nodes import BimModel, Machine
from sqems.graph_model.open import local_server
from sqems.graphql import AccessStore, Role, create_app, sdl
from sqems.graphql.app import ACCESS_FILE
from sqems.ingestion import importers, sensors, service
from sqems.ingestion.broker import BrokerAccess, check
from sqems.quality import dhr, suppliers
from sqems.quality.audit import AuditTrail, load_key, open_trail, verify_export
from sqems.quality.capa import Workflow, open_on_critical_alarms
from sqems.settings import Settings
from sqems.simulation import whatif
from sqems.simulation.runner import TWIN_DIR, WhatIfRunner
from sqems.simulation.scenarios import ScenarioSpec
from sqems.twin.fitting import Sampler
from sqems.viewer import bim as bim_models
from sqems.viewer.scene import line_scene

app = typer.Typer(
    name="sqems",
    help="SQEMS: a plant's quality knowledge graph — traceability, recall scope and more.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


# --- plumbing ----------------------------------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")


neo4j_app = typer.Typer(
    help="Run a local Neo4j Community server (jars from Maven Central, Java 17).",
    no_args_is_help=True,
)
app.add_typer(neo4j_app, name="neo4j")
apikey_app = typer.Typer(help="Manage the API's keys and roles.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
quarantine_app = typer.Typer(help="What ingestion refused, and replaying it.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
audit_app = typer.Typer(help="The audit trail of quality records.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
report_app = typer.Typer(help="Compliance reports.", no_args_is_help=True)
app.add_typer(report_app, name="report")
bim_app = typer.Typer(help="BIM models: IFC import, links to machines, as-built surveys.",
                      no_args_is_help=True)  # fmt: skip
app.add_typer(bim_app, name="bim")
rdf_app = typer.Typer(
    help="The graph as RDF: export, import, SHACL validation, SPARQL.", no_args_is_help=True
)
app.add_typer(rdf_app, name="rdf")


def _command(name: str, on: typer.Typer = app) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a command whose :class:`SqemsError` becomes one red line and exit 2."""

    def register(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except SqemsError as exc:
                err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None

        on.command(name)(run)
        return run

    return register


@contextmanager
def _store(
    *, read_only: bool = False, uri: str | None = None
) -> Iterator[tuple[GraphStore, Settings]]:
    settings = Settings()
    store = open_store(settings, uri=uri, read_only=read_only)
    try:
        yield store, settings
    finally:
        store.close()


def _when(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or time from the command line; no offset means UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            f"{option} {text!r} is not a date or time; use ISO 8601, e.g. 2026-03-01 or "
            "2026-03-01T06:00:00+01:00"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def _load(store: GraphStore, sections: list[Section], settings: Settings) -> int:
    total = sum(s.rows for s in sections)
    with _progress() as bar:
        task = bar.add_task("loading", total=total)

        def advance(name: str, rows: int) -> None:
            bar.update(task, advance=rows, description=f"loading {name}")

        report = load_plant(store, sections, batch_size=settings.batch_size, progress=advance)
        bar.update(task, description="loaded")
    return report.total


def _generate(units: int, seed: int, shape: PlantShape = "drives") -> Any:
    with err.status(f"generating a {shape} plant of {units:,} units (seed {seed})…"):
        return generate(PlantSpec(shape=shape, units=units, seed=seed))


# --- commands ----------------------------------------------------------------------------


@_command("generate")
def generate_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the plant to.")],
    units: Annotated[int, typer.Option(help="Number of units (1,000 to 1,000,000).")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same plant.")] = 7,
    load: Annotated[bool, typer.Option("--load", help="Also load it into the store.")] = False,
    shape: Annotated[
        PlantShape,
        typer.Option(
            help="drives: boards into servo drives (two lines); battery: cells into "
            "modules into packs (three lines). --units counts every level."
        ),
    ] = "drives",
) -> None:
    """Generate a synthetic plant with planted causes and write it as CSV files."""
    plant = _generate(units, seed, shape)
    with err.status(f"writing {out_dir}…"):
        manifest = write_plant(plant, out_dir)
    rows = sum(e["rows"] for k in ("nodes", "edges") for e in manifest[k].values())
    out.print(f"wrote {rows:,} rows to {out_dir} (ground truth in {out_dir / 'ground_truth.json'})")
    if load:
        with _store() as (store, settings):
            n = _load(store, plant_sections(plant), settings)
            out.print(f"loaded {n:,} nodes and edges into {store.description}")


@_command("load")
def load_cmd(
    directory: Annotated[
        Path, typer.Argument(help="A plant directory (see docs/data-formats.md).")
    ],
) -> None:
    """Load a plant directory into the configured graph store (idempotent)."""
    sections = read_plant(directory)
    with _store() as (store, settings):
        n = _load(store, sections, settings)
        out.print(f"loaded {n:,} nodes and edges into {store.description}")


@_command("stats")
def stats_cmd() -> None:
    """Count the nodes and relationships in the store."""
    with _store(read_only=True) as (store, _):
        _print_stats(store)


@_command("recall")
def recall_cmd(
    lot: Annotated[str | None, typer.Option(help="Material lot uid.")] = None,
    batch: Annotated[str | None, typer.Option(help="Batch uid.")] = None,
    machine: Annotated[str | None, typer.Option(help="Machine uid (with --from/--to).")] = None,
    parameter: Annotated[
        str | None, typer.Option(help="Parameter uid: runs whose actual left the spec.")
    ] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Window start (ISO 8601).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Window end (ISO 8601).")] = None,
    show: Annotated[int, typer.Option(help="How many unit paths to print.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole scope as JSON.")] = False,
) -> None:
    """Recall scope: the units, shipments and customers downstream of a source."""
    source = _recall_source(lot, batch, machine, parameter, from_, to)
    if source is None:
        raise ValidationFailed("give exactly one of --lot, --batch, --machine, --parameter")
    with _store(read_only=True) as (store, _):
        scope = Traceability(store).recall_scope(source)
        if as_json:
            out.print_json(json.dumps(scope.as_dict()))
        else:
            _print_recall(store, scope, show)


def _recall_source(
    lot: str | None,
    batch: str | None,
    machine: str | None,
    parameter: str | None,
    from_: str | None,
    to: str | None,
) -> RecallSource | None:
    """The recall source the options name; None when they name none."""
    given = {
        k: v
        for k, v in (("lot", lot), ("batch", batch), ("machine", machine), ("parameter", parameter))
        if v
    }
    if not given:
        if from_ or to:
            raise ValidationFailed("--from/--to need --machine or --parameter")
        return None
    if len(given) != 1:
        raise ValidationFailed("give at most one of --lot, --batch, --machine, --parameter")
    ((kind, uid),) = given.items()
    window = None
    if from_ or to:
        if kind in ("lot", "batch"):
            raise ValidationFailed("--from/--to apply to --machine and --parameter only")
        window = TimeWindow(_when(from_, "--from"), _when(to, "--to"))
    return RecallSource(SourceKind(kind), uid, window)


@_command("trace")
def trace_cmd(
    unit: Annotated[str | None, typer.Option(help="Unit serial to trace upstream.")] = None,
    complaint: Annotated[str | None, typer.Option(help="Complaint uid to trace.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the genealogy as JSON.")] = False,
) -> None:
    """Upstream genealogy (root-cause direction) of a unit or a complaint."""
    if bool(unit) == bool(complaint):
        raise ValidationFailed("give exactly one of --unit or --complaint")
    uid = unit or complaint
    assert uid is not None
    with _store(read_only=True) as (store, _):
        of = frozenset({"Unit" if unit else "Complaint"})
        genealogy = Traceability(store).upstream([uid], of=of)
        if as_json:
            out.print_json(json.dumps(genealogy.as_dict()))
        else:
            _print_trace(genealogy)


WindowStart = Annotated[
    str | None, typer.Option(help="Window start (ISO 8601; no offset means UTC).")
]
WindowEnd = Annotated[str | None, typer.Option(help="Window end (ISO 8601; no offset means UTC).")]


@_command("rootcause")
def rootcause_cmd(
    defect_type: Annotated[
        str | None, typer.Option(help="Explain the units with this defect type (or complaints).")
    ] = None,
    complaint: Annotated[
        list[str] | None, typer.Option(help="Explain the units of these complaints.")
    ] = None,
    unit: Annotated[list[str] | None, typer.Option(help="Explain these defective units.")] = None,
    start: WindowStart = None,
    end: WindowEnd = None,
    top: Annotated[int, typer.Option(help="How many factors to list.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Rank the factors behind defective units: exposure against comparable units (with
    every sub-assembly level's factors, within products; field returns also within
    production periods while complaints are still arriving), only factors at or before
    the defect's PFMEA origin, exact tests judged with the batches (defects cluster by
    batch, counted once at the origin) under false-discovery control, and tests
    conditional on the stronger causes; each cause with the defects it explains and a
    5-Why chain."""
    if sum(x is not None and x != [] for x in (defect_type, complaint, unit)) != 1:
        raise ValidationFailed("give exactly one of --defect-type, --complaint, --unit")
    with _store(read_only=True) as (store, _):
        if defect_type is not None:
            target = rootcause.from_defect_type(store, defect_type, _window(start, end))
        elif complaint:
            target = rootcause.from_complaints(store, complaint)
        else:
            target = rootcause.from_units(store, unit or [])
        report = rootcause.rank_causes(store, target, top=top)
        if as_json:
            out.print_json(json.dumps(rootcause.report_dict(report)))
        else:
            _print_causes(report)


@_command("investigate")
def investigate_cmd(
    complaint: Annotated[str, typer.Argument(help="The complaint's uid, e.g. CMP-000005.")],
    lookback: Annotated[
        float, typer.Option(help="Days before the complaint to take same-type cases from.")
    ] = investigation.DEFAULT_LOOKBACK_DAYS,
    top: Annotated[int, typer.Option(help="How many factors to list.")] = 5,
    simulate: Annotated[
        bool, typer.Option(help="Simulate the fix's what-if on the line's twin.")
    ] = True,
    hours: Annotated[float, typer.Option(help="Simulated hours per replication.")] = 8.0,
    replications: Annotated[int, typer.Option(help="Replications (posterior draws).")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Investigate a complaint end to end: its unit's genealogy, the causes its defect
    type's cases share (widened from the one complaint, at any BOM depth), the recall the
    leading cause calls for, and the what-if of its fix with credible intervals."""
    with _store() as (store, settings):
        runner = (
            WhatIfRunner(store, settings.data_dir / TWIN_DIR, Sampler.of(settings))
            if simulate
            else None
        )

        def simulate_fix(fix: investigation.Fix) -> dict[str, Any]:
            assert runner is not None
            with err.status(f"fitting the twin of {fix.line} and simulating the fix…"):
                return investigation.run_fix(
                    runner,
                    fix,
                    name=f"investigation of {complaint}",
                    hours=hours,
                    replications=replications,
                )

        try:
            found = investigation.investigate(
                store,
                complaint,
                lookback_days=lookback,
                top=top,
                whatif=simulate_fix if runner is not None else None,
            )
        finally:
            if runner is not None:
                runner.close()
        if as_json:
            out.print_json(json.dumps(found.as_dict()))
        else:
            _print_investigation(store, found)


@_command("kpis")
def kpis_cmd(
    start: WindowStart = None,
    end: WindowEnd = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Yield, first-pass and rolled throughput yield, PPM, cost of poor quality, top
    defects and the shift comparison of the batches started in a window."""
    with _store(read_only=True) as (store, _):
        report = kpis.kpis(store, _window(start, end))
        if as_json:
            out.print_json(json.dumps(kpis.report_dict(report)))
        else:
            _print_kpis(report)


def _window(start: str | None, end: str | None) -> TimeWindow | None:
    if start is None and end is None:
        return None
    return TimeWindow(_when(start, "--start"), _when(end, "--end"))


@_command("whatif")
def whatif_cmd(
    line: Annotated[str, typer.Argument(help="The line to study, e.g. LINE-PCB.")],
    setpoint: Annotated[
        list[str] | None, typer.Option("--set", help="PARAMETER=VALUE: a new setpoint.")
    ] = None,
    spread: Annotated[
        list[str] | None,
        typer.Option(help="PARAMETER=FACTOR: the process variation times FACTOR."),
    ] = None,
    speed: Annotated[float, typer.Option(help="Line speed factor (1.1: 10 % faster).")] = 1.0,
    shifts: Annotated[
        str | None, typer.Option(help="The shifts that work, e.g. early,late.")
    ] = None,
    detect: Annotated[
        list[str] | None,
        typer.Option(help="STEP=RATE: an inspection step's detection rate."),
    ] = None,
    route: Annotated[
        list[str] | None,
        typer.Option(help="STEP=M1,M2: run a step on these of its machines only."),
    ] = None,
    remove_drift: Annotated[
        list[str] | None,
        typer.Option(
            help="MACHINE:PARAMETER[=START/END]: remove a machine's drift of a parameter "
            "(ISO times; without them the drift window is estimated from the data)."
        ),
    ] = None,
    step_shifts: Annotated[
        list[str] | None,
        typer.Option(help="STEP=early,late: the shifts that work one step."),
    ] = None,
    switch_lot: Annotated[
        list[str] | None,
        typer.Option(
            help="LOT, or supplier:SUPPLIER: replace a lot (or a supplier's lots) by a new "
            "one from the population of lots (fits lot and operator effects)."
        ),
    ] = None,
    exclude_operators: Annotated[
        list[str] | None,
        typer.Option(help="STEP=OP1,OP2: the step's other operators take these runs."),
    ] = None,
    recommend: Annotated[
        float | None,
        typer.Option(help="Also recommend setpoints, with this throughput floor (units/h)."),
    ] = None,
    hours: Annotated[float, typer.Option(help="Simulated hours per replication.")] = 8.0,
    replications: Annotated[int, typer.Option(help="Replications (posterior draws).")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """What if a line ran differently? Simulate a scenario against today's line with
    the twin's quality models, and print each KPI with its interval and the paired
    difference."""
    changes: dict[str, Any] = {"line_speed": speed}
    params: dict[str, dict[str, Any]] = {}
    for option, key, flag in ((setpoint, "setpoint", "--set"), (spread, "spread", "--spread")):
        for uid, value in (_pair(item, flag) for item in option or []):
            params.setdefault(uid, {"parameter": uid})[key] = value
    if params:
        changes["parameters"] = list(params.values())
    if shifts:
        changes["shifts"] = [s.strip() for s in shifts.split(",") if s.strip()]
    if detect:
        changes["inspections"] = [
            {"step": uid, "detection": value}
            for uid, value in (_pair(item, "--detect") for item in detect)
        ]
    for option, key, field, flag in (
        (route, "routing", "machines", "--route"),
        (step_shifts, "step_shifts", "shifts", "--step-shifts"),
        (exclude_operators, "operators", "exclude", "--exclude-operators"),
    ):
        for item in option or []:
            step, sep, names = item.partition("=")
            if not sep or not step.strip():
                raise ValidationFailed(f"{flag} takes STEP=NAME,NAME, got {item!r}")
            changes.setdefault(key, []).append(
                {"step": step.strip(), field: [n.strip() for n in names.split(",") if n.strip()]}
            )
    for item in remove_drift or []:
        target, _, window = item.partition("=")
        machine, sep, parameter = target.partition(":")
        if not sep:
            raise ValidationFailed(
                f"--remove-drift takes MACHINE:PARAMETER[=START/END], got {item!r}"
            )
        drift: dict[str, Any] = {"machine": machine.strip(), "parameter": parameter.strip()}
        if window:
            start, _, end = window.partition("/")
            drift |= {k: v.strip() for k, v in (("start", start), ("end", end)) if v.strip()}
        changes.setdefault("drifts", []).append(drift)
    for item in switch_lot or []:
        kind, sep, name = item.partition(":")
        switch = {"supplier": name.strip()} if sep and kind == "supplier" else {"lot": item}
        changes.setdefault("lots", []).append(switch)
    spec = ScenarioSpec.parse(changes)
    with _store() as (store, settings):
        runner = WhatIfRunner(store, settings.data_dir / TWIN_DIR, Sampler.of(settings))
        try:
            with err.status(f"building the twin of {line} and fitting its quality models…"):
                twin_ = runner.line(line)
                spec.check(twin_)
                twin_, models = runner.twin(line, groups=runner.grouped(line, spec))
            for step, model in models.items():
                d = model.diagnostics
                err.print(
                    f"{step}: {d.chains} chains x {d.draws} draws, max r_hat {d.max_r_hat:.3f}"
                    f" ({d.r_hat_at}), min ESS {d.min_ess_bulk:.0f} bulk / "
                    f"{d.min_ess_tail:.0f} tail, {d.divergences} divergences"
                    + (
                        f"; fit: predictive p {d.check.predictive_p:.2f}, "
                        f"{d.check.pareto_k_high} runs of Pareto k > 0.7"
                        if d.check
                        else ""
                    ),
                    highlight=False,
                )
            for note in twin_.notes:
                err.print(f"note: {note}", highlight=False)
            view = whatif.create_session(
                store, line, "cli", horizon_s=hours * 3600, replications=replications, seed=seed
            )
            scenario = whatif.add_scenario(store, view.session.uid, "scenario", spec)
            futures = [runner.submit(view.session.uid, scenario.uid)]
            if recommend is not None:
                futures.append(runner.recommend(view.session.uid, recommend)[1])
            with _progress() as bar:
                task = bar.add_task("simulating", total=len(futures))
                for future in futures:
                    future.result()
                    bar.advance(task)
        finally:
            runner.close()
        _print_whatif(whatif.get_session(store, view.session.uid))


def _pair(item: str, option: str) -> tuple[str, float]:
    key, sep, value = item.partition("=")
    try:
        if sep:
            return key.strip(), float(value)
    except ValueError:
        pass
    raise ValidationFailed(f"{option} takes NAME=NUMBER, got {item!r}")


def _print_whatif(view: whatif.SessionView) -> None:
    results = {s.uid: json.loads(s.results) if s.results else {} for s in view.scenarios}
    base = results[view.baseline.uid].get("kpis", {})
    for s in view.scenarios:
        if s.baseline:
            continue
        body = results[s.uid]
        table = Table(
            title=f"{s.name} on {view.line}: {s.changes}",
            caption=f"{view.session.replications} replications of "
            f"{view.session.horizon_s / 3600:g} h; 94 % intervals; the difference is paired",
        )
        for column in ("KPI", "baseline", "scenario", "difference", "verdict"):
            table.add_column(column, justify="left" if column in ("KPI", "verdict") else "right")
        verdicts = body.get("verdicts", {})
        for kpi, value in body.get("kpis", {}).items():
            b, d = base.get(kpi), body.get("difference", {}).get(kpi)
            table.add_row(
                kpi,
                _interval(b) if b else "",
                _interval(value),
                _interval(d, signed=True) if d else "",
                verdicts.get(kpi, ""),
            )
        out.print(table)
        simulated = body.get("changes", {})
        for drift in simulated.get("drifts", []):
            if drift.get("start") or drift.get("end"):
                out.print(
                    f"  drift of {drift['parameter']} on {drift['machine']} removed from "
                    f"{drift.get('start') or 'the start'} to {drift.get('end') or 'the end'}",
                    highlight=False,
                )
        note = whatif.interval_note(view.session.replications)
        for warning in [*body.get("warnings", []), *filter(None, [note])]:
            out.print(f"  [yellow]warning:[/] {warning}", highlight=False)
        rec = body.get("recommendation")
        if rec and rec.get("message"):
            out.print(f"  {rec['message']}", highlight=False)
        if rec:
            for uid, v in rec["setpoints"].items():
                out.print(f"  {uid}: {rec['current'][uid]:g} -> [bold]{v:g}[/]")
            if rec.get("confirm"):
                out.print(f"  {rec['confirm']}", highlight=False)
            verdict = "meets" if body.get("feasible") else "[red]misses[/]"
            out.print(f"  throughput {verdict} the floor of {rec and body['throughput_floor']:g}/h")


def _interval(v: dict[str, float], *, signed: bool = False) -> str:
    fmt = "+.4g" if signed else ".4g"
    return f"{v['mean']:{fmt}} [{v['low']:{fmt}}, {v['high']:{fmt}}]"


@_command("demo")
def demo_cmd(
    units: Annotated[int, typer.Option(help="Size of the demo plant.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Generate a small plant, load it, and answer a recall, a trace and a complaint's
    investigation."""
    settings = Settings()
    plant = _generate(units, seed)
    plant_dir = settings.data_dir / "demo-plant"
    with err.status(f"writing plant files to {plant_dir}…"):
        if plant_dir.exists():
            shutil.rmtree(plant_dir)
        write_plant(plant, plant_dir)
    with _store() as (store, settings):
        _load(store, read_plant(plant_dir), settings)
        out.rule("[bold]The plant's knowledge graph")
        _print_stats(store)
        truth = plant.truth
        bad_lot = truth["causes"][0]["uid"]
        out.rule(f"[bold]Recall scope of material lot {bad_lot}")
        out.print(
            "[dim]This lot is the plant's planted bad resin lot: housings moulded from it "
            "crack. Which units, shipments and customers does a recall of it reach?[/dim]"
        )
        trace = Traceability(store)
        _print_recall(store, trace.recall_scope(RecallSource(SourceKind.LOT, bad_lot)), 3)
        complaint = _demo_complaint(store, plant)
        if complaint:
            out.rule(f"[bold]Upstream trace of complaint {complaint}")
            out.print(
                "[dim]Everything this complaint's unit came from: its board, batches, "
                "lots, suppliers, machines and operators.[/dim]"
            )
            _print_trace(trace.upstream([complaint]))
        if complaint:
            out.rule(f"[bold]Investigation of complaint {complaint}")
            out.print(
                "[dim]What caused it, what else is affected, and what fix would work? One "
                "complaint cannot single out a cause, so the analysis takes in every unit "
                "with its defect type; the lot's batches were all moulded on one machine, "
                "and the ranking must tell the two apart.[/dim]"
            )
            _print_investigation(store, investigation.investigate(store, complaint, top=3))
        out.rule("[bold]The plant in 3D")
        machines = [m for m in store.find("Machine") if isinstance(m, Machine)]
        with err.status("writing and tessellating an IFC model of the hall…"):
            hall = write_building_ifc(plant_dir / "hall.ifc", machines, filler=200)
            model = bim_models.import_bim(
                store, hall, cache_dir=bim_models.cache_of(settings.data_dir)
            ).model
        out.print(
            f"BIM model {model.uid}: {model.elements} elements of {hall.name} (IFC4), "
            f"{model.triangles:,} triangles; each machine linked to its element by its Tag"
        )
        out.rule("[bold]Try next")
        out.print(
            f"  sqems recall --batch {truth['causes'][0]['batches'][0]}\n"
            f"  sqems recall --parameter {truth['causes'][1]['parameter']}\n"
            f"  sqems trace --complaint {complaint or 'CMP-000001'} --json\n"
            f"  sqems investigate {complaint or 'CMP-000001'}   (simulates the fix on the twin)\n"
            f"  sqems rootcause --defect-type {truth['causes'][1]['defect_type']}\n"
            f"  sqems kpis\n"
            f"  sqems scene LINE-PCB\n"
            f"  sqems serve        (the GraphQL API and GraphiQL on the same store), then\n"
            f"    sqems apikey create me --role viewer, and open\n"
            f"    http://127.0.0.1:8000/viewer?line=LINE-PCB#key=<the key>   or\n"
            f"    http://127.0.0.1:8000/viewer?bim={model.uid}#key=<the key>   or\n"
            f"    http://127.0.0.1:8000/dashboard?parameter=P-REFLOW-PEAK#key=<the key>   or\n"
            f"    http://127.0.0.1:8000/investigate?complaint={complaint or 'CMP-000001'}"
            "#key=<the key>\n"
            f"  sqems suppliers\n"
            f"  sqems report dhr {truth['causes'][0]['batches'][0]} --pdf dhr.pdf\n"
            f"  plant files and ground truth: {plant_dir}"
        )


def _demo_complaint(store: GraphStore, plant: Any) -> str | None:
    """A complaint about a cracked housing from the bad lot, else the first one."""
    complaints = plant.edges.get("OF_TYPE")
    if complaints is None:
        return None
    for src, dst in complaints.tuples():
        if src.startswith("CMP-") and dst == "DT-CRACKED-HOUSING":
            return str(src)
    first = store.find("Complaint", limit=1)
    return first[0].uid if first else None


@_command("migrate")
def migrate_cmd(
    to: Annotated[str, typer.Option("--to", help="Target store URI, e.g. neo4j://host:7687.")],
    from_: Annotated[
        str | None, typer.Option("--from", help="Source store URI (default: SQEMS_GRAPH_URI).")
    ] = None,
    page: Annotated[int, typer.Option(help="Items per page (one transaction each).")] = 10_000,
) -> None:
    """Copy a whole store into another (embedded ⇄ Neo4j); resumable, counts verified."""
    settings = Settings()
    source_uri = from_ or settings.graph_uri
    if source_uri.strip() == to.strip():
        raise ValidationFailed(f"source and target are the same store ({to})")
    key = hashlib.sha256(f"{source_uri}->{to}".encode()).hexdigest()[:16]
    checkpoint = settings.data_dir / "migrations" / f"{key}.json"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    with _store(read_only=True, uri=source_uri) as (source, _), _store(uri=to) as (target, _):
        total = sum(source.count(k) for k in NODE_TYPES) + sum(
            source.count_edges(k) for k in REL_TYPES
        )
        with _progress() as bar:
            task = bar.add_task("copying", total=total)

            def advance(name: str, n: int) -> None:
                bar.update(task, advance=n, description=f"copying {name}")

            report = copy_store(source, target, checkpoint=checkpoint, page=page, progress=advance)
        if report.resumed_from:
            out.print(f"resumed an interrupted copy at {report.resumed_from}")
        out.print(
            f"copied {report.total:,} nodes and relationships from {source.description} to "
            f"{target.description}; counts match for every label and type"
        )


@_command("install", on=neo4j_app)
def neo4j_install() -> None:
    """Fetch Neo4j Community's jars from Maven Central (needs Maven and Java 17)."""
    server = local_server(Settings())
    with err.status(f"fetching Neo4j {NEO4J_VERSION} with Maven into {server.lib}…"):
        server.install()
    out.print(f"Neo4j {NEO4J_VERSION} installed in {server.lib}")


@_command("start", on=neo4j_app)
def neo4j_start() -> None:
    """Start the local server and wait until Bolt answers."""
    server = local_server(Settings())
    with err.status(f"starting Neo4j {NEO4J_VERSION} on {server.uri}…"):
        server.start()
    out.print(server.status().describe())
    out.print(f"use it: SQEMS_GRAPH_URI={server.uri} (password in {server.password_file})")


@_command("stop", on=neo4j_app)
def neo4j_stop() -> None:
    """Stop the local server cleanly."""
    server = local_server(Settings())
    server.stop()
    out.print(server.status().describe())


@_command("status", on=neo4j_app)
def neo4j_status() -> None:
    """Say whether the local server is installed, running and answering."""
    status = local_server(Settings()).status()
    out.print(status.describe())
    if status.installed and not status.bolt:
        raise typer.Exit(1)


def _access(settings: Settings) -> AccessStore:
    return AccessStore(settings.data_dir / ACCESS_FILE)


@_command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    ingest: Annotated[
        bool | None,
        typer.Option("--ingest/--no-ingest", help="Run the MQTT ingestion in the server too."),
    ] = None,
) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql) on the configured store."""
    settings = Settings()
    updates = {
        k: v
        for k, v in (("api_host", host), ("api_port", port), ("ingest", ingest))
        if v is not None
    }
    settings = settings.model_copy(update=updates)
    access = _access(settings)
    try:
        if not access.has_admin():
            key, token = access.create_key(access.free_name("bootstrap admin"), Role.ADMIN)
            out.print(
                f"[bold]No admin key existed, so one was made (id {key.id}). It is shown "
                f"this once:[/bold]\n  {token}\nSend it as 'Authorization: Bearer <key>'; "
                "make more with `sqems apikey create`."
            )
    finally:
        access.close()
    logs.configure()
    out.print(f"serving on http://{settings.api_host}:{settings.api_port}/graphql")
    base = f"http://{settings.api_host}:{settings.api_port}"
    out.print(f"3D viewer at {base}/viewer?line=<line uid>, dashboard at {base}/dashboard")
    if settings.ingest:
        broker = BrokerAccess.of(settings)
        # a broker that refuses SQEMS is one line here, not a traceback from the start-up
        check(broker, f"{settings.mqtt_client_id}-check")
        out.print(f"ingesting from {broker.url}")
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
    )


@_command("graphql-schema")
def graphql_schema_cmd() -> None:
    """Print the API's GraphQL schema (SDL)."""
    print(sdl(), end="")


@_command("create", on=apikey_app)
def apikey_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    role: Annotated[str, typer.Option(help="viewer, inspector, engineer or admin.")] = "viewer",
) -> None:
    """Create an API key; its token is printed once and never stored."""
    settings = Settings()
    access = _access(settings)
    try:
        key, token = access.create_key(name, Role.parse(role))
    finally:
        access.close()
    out.print(f"key {key.id} ({key.name}, {key.role.label}):\n{token}")


@_command("list", on=apikey_app)
def apikey_list() -> None:
    """List API keys (never their secrets)."""
    access = _access(Settings())
    try:
        keys = access.keys()
    finally:
        access.close()
    table = Table("id", "name", "role", "created", "revoked", box=None)
    for k in keys:
        table.add_row(k.id, k.name, k.role.label, k.created_at, k.revoked_at or "")
    out.print(table)


@_command("reissue", on=apikey_app)
def apikey_reissue(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """A new secret for a key (live or revoked), same person and name; the old one stops
    working. Names are never given to anyone else, so this is how a lost key is replaced."""
    access = _access(Settings())
    try:
        key, token = access.reissue(key_id)
    finally:
        access.close()
    out.print(f"key {key.id} ({key.name}, {key.role.label}):\n{token}")


@_command("revoke", on=apikey_app)
def apikey_revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke an API key at once."""
    access = _access(Settings())
    try:
        key = access.revoke(key_id)
    finally:
        access.close()
    out.print(f"revoked key {key.id} ({key.name})")


# --- ingestion ---------------------------------------------------------------------------


@_command("ingest")
def ingest_cmd(
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default: until Ctrl-C).")
    ] = None,
) -> None:
    """Subscribe to the MQTT broker (SQEMS_MQTT_HOST/PORT) and ingest readings: validate,
    normalise units, dedup, store, quarantine what is refused, raise alarms; a critical
    alarm opens a CAPA."""
    with _store() as (store, settings), service.ingestor(settings, store) as pipeline:
        trail = _trail(settings)
        pipeline.sinks.append(open_on_critical_alarms(Workflow(store, trail)))
        bridge = service.mqtt_ingestion(settings, pipeline)
        err.print(
            f"ingesting from {BrokerAccess.of(settings).url} "
            f"into {store.description}; Ctrl-C to stop"
        )
        began = time.monotonic()
        with bridge:
            try:
                while seconds is None or time.monotonic() - began < seconds:
                    time.sleep(min(5.0, seconds or 5.0))
                    c = bridge.counters
                    err.print(
                        f"received {c.received:,}  accepted {c.accepted:,}  quarantined "
                        f"{c.quarantined:,}  duplicates {c.duplicates:,}  alarms "
                        f"{c.alarms:,}  connected {bridge.connected.is_set()}"
                    )
            except KeyboardInterrupt:
                err.print("stopping…")
        trail.close()
        c = bridge.counters
        out.print(
            f"received {c.received:,}: accepted {c.accepted:,}, quarantined "
            f"{c.quarantined:,}, duplicates {c.duplicates:,}; {c.alarms:,} alarms"
        )


@_command("sensors")
def sensors_cmd(
    rate: Annotated[float, typer.Option(help="Readings per second per sensor.")] = 10.0,
    seconds: Annotated[float, typer.Option(help="How much time the stream covers.")] = 60.0,
    per_message: Annotated[int, typer.Option(help="Readings in one MQTT message.")] = 10,
    drift: Annotated[bool, typer.Option(help="Plant the reflow oven's drift.")] = True,
    fast: Annotated[bool, typer.Option(help="Publish as fast as possible.")] = False,
) -> None:
    """Publish realistic sensor streams for the plant in the graph to the MQTT broker."""
    with _store(read_only=True) as (store, settings):
        found = sensors.sensors_of(store)
    if not found:
        raise ValidationFailed("the graph has no parameters with spec limits: run `sqems demo`")
    client = service.mqtt_publisher(settings, "sqems-sensors")
    began = time.monotonic()
    sent = 0
    session = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    try:
        for topic, body in sensors.stream(
            found,
            rate_hz=rate,
            seconds=seconds,
            per_message=per_message,
            drift=sensors.Drift() if drift else None,
            session=session,
        ):
            client.publish(topic, body, qos=1)
            sent += 1
            if not fast:
                due = began + sent / len(found) * per_message / rate
                time.sleep(max(0.0, due - time.monotonic()))
    finally:
        client.loop_stop()
        client.disconnect()
    out.print(f"published {sent:,} messages from {len(found)} sensors")


@_command("import")
def import_cmd(
    kind: Annotated[str, typer.Argument(help="erp, plm, crm or inspection.")],
    path: Annotated[Path, typer.Argument(help="A CSV file named after its table, or a folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import an ERP, PLM, CRM or inspection extract, cleansed: what cannot be taken goes
    to the quarantine with the reason (see `sqems quarantine list`). A batch's hold or a
    unit's disposition is never changed by an import; a quality record it changes is
    written to the audit trail."""
    with _store() as (store, settings), ExitStack() as opened:
        q = service.open_quarantine(settings)
        opened.callback(q.close)
        report = importers.import_file(
            store, q, kind, path, actor=_cli_user(),
            trail=lambda: opened.enter_context(closing(_trail(settings))),
            max_cell_chars=settings.import_max_cell_chars,
        )  # fmt: skip
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
        return
    table = Table("table", "read", "imported", "duplicates", "quarantined", box=None)
    for name in sorted(report.read):
        table.add_row(
            name,
            f"{report.read[name]:,}",
            f"{report.imported[name]:,}",
            f"{report.duplicates[name]:,}",
            f"{report.quarantined[name]:,}",
        )
    out.print(table)
    if report.reasons:
        out.print("quarantined: " + ", ".join(f"{n} {r}" for r, n in report.reasons.items()))
    if report.units_unified:
        out.print(f"unit spellings unified: {report.units_unified}")
    for k in report.kept:
        out.print(f"[yellow]kept, the quality workflow owns it:[/yellow] {escape(str(k))}")
    for c in report.changed:
        out.print(f"changed {c.after.uid} ({', '.join(c.fields)}) from {c.row}; in the audit trail")


def _cli_user() -> str:
    """Who runs the command, for the audit trail."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        return "cli"


@_command("list", on=quarantine_app)
def quarantine_list(
    every: Annotated[bool, typer.Option("--all", help="Include entries replayed OK.")] = False,
    after: Annotated[int, typer.Option(help="Only entries with a higher id.")] = 0,
    limit: Annotated[int, typer.Option(help="How many.")] = 50,
) -> None:
    """What ingestion refused, oldest first, with the reasons."""
    q = service.open_quarantine(Settings())
    try:
        entries = q.entries(after=after, limit=limit, open_only=not every, raw_bytes=0)
        total = q.count()
    finally:
        q.close()
    table = Table("id", "received", "source", "reason", "outcome", box=None)
    for e in entries:
        table.add_row(str(e.id), e.received_at, e.source, e.reason, e.outcome or "")
    out.print(table)
    out.print(f"{len(entries)} shown of {total} kept")


@_command("show", on=quarantine_app)
def quarantine_show(entry_id: Annotated[int, typer.Argument(help="The entry's id.")]) -> None:
    """One entry with its raw payload exactly as received."""
    q = service.open_quarantine(Settings())
    try:
        e = q.get(entry_id)
    finally:
        q.close()
    out.print(
        f"id {e.id}\nreceived {e.received_at}\nsource {e.source}\nitem {e.item}\n"
        f"reason {e.reason}\noutcome {e.outcome or '-'}"
    )
    out.print("raw:")
    out.print(e.raw.decode("utf-8", errors="backslashreplace"), markup=False, highlight=False)


@_command("replay", on=quarantine_app)
def quarantine_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Entry ids.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every open entry.")] = False,
) -> None:
    """Run entries through the pipeline again, once their cause is fixed."""
    if bool(ids) == every:
        raise ValidationFailed("give entry ids or --all")
    with _store() as (store, settings), service.ingestor(settings, store) as pipeline:
        wanted = ids or [e.id for e in pipeline.quarantine.entries(limit=1_000_000, raw_bytes=0)]
        for entry_id in wanted:
            e = pipeline.replay(entry_id)
            out.print(f"{e.id}: {e.outcome}")


def _trail(settings: Settings) -> AuditTrail:
    return open_trail(settings)


@_command("verify", on=audit_app)
def audit_verify(
    export: Annotated[
        Path | None, typer.Option(help="Verify this JSON-lines export instead of the trail.")
    ] = None,
) -> None:
    """Check the trail's hash chain; exit 1 naming the first entry that does not hold."""
    if export is not None:
        check = verify_export(export.read_text(), load_key(Settings(), create=False))
    else:
        trail = _trail(Settings())
        try:
            check = trail.verify()
        finally:
            trail.close()
    if check.ok:
        out.print(f"[green]ok[/green]: {check.reason}; head {check.head}")
        return
    err.print(f"[red]tampered[/red]: {check.reason} ({check.entries} entries before it hold)")
    raise typer.Exit(1)


@_command("export", on=audit_app)
def audit_export(
    form: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    to: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout).")] = None,
) -> None:
    """The whole trail, each entry with its hashes."""
    trail = _trail(Settings())
    try:
        text = trail.export(form)
    finally:
        trail.close()
    if to is None:
        print(text, end="")
    else:
        to.write_text(text)
        out.print(f"wrote {to}")


@_command("dhr", on=report_app)
def report_dhr(
    batch: Annotated[str, typer.Argument(help="The batch (work order) uid.")],
    html_out: Annotated[Path | None, typer.Option("--html", help="Write the HTML here.")] = None,
    pdf_out: Annotated[
        Path | None, typer.Option("--pdf", help="Print a PDF here (needs Chromium).")
    ] = None,
) -> None:
    """The device history record of a batch (ISO 13485:2016 §7.5.1 under 21 CFR 820)."""
    with _store(read_only=True) as (store, _):
        record = dhr.device_history(store, batch)
    page = dhr.render_html(record)
    if html_out is None and pdf_out is None:
        html_out = Path(f"DHR-{batch}.html")
    if html_out is not None:
        html_out.write_text(page, encoding="utf-8")
        out.print(f"wrote {html_out}")
    if pdf_out is not None:
        with err.status("printing the PDF with Chromium…"):
            dhr.render_pdf(page, pdf_out)
        out.print(f"wrote {pdf_out}")
    out.print(
        f"batch {batch}: {record.units} units, {record.approved_for_distribution} approved for "
        f"distribution, {len(record.runs)} runs, {len(record.lots)} lots, "
        f"{len(record.deviations)} deviation(s), {len(record.capas)} CAPA(s)"
    )


@_command("suppliers")
def suppliers_cmd(
    start: Annotated[str | None, typer.Option("--from", help="Lots received from.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Lots received until.")] = None,
    supplier: Annotated[str | None, typer.Option(help="One supplier, with its trend.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The scorecards as JSON.")] = False,
) -> None:
    """Supplier scorecards: incoming inspection, material PPM, complaints, CAPAs."""
    with _store(read_only=True) as (store, _):
        span = _window(start, end)
        cards = [suppliers.scorecard(store, supplier, span)] if supplier else (
            suppliers.scorecards(store, span))  # fmt: skip
    if as_json:
        out.print_json(json.dumps([dataclasses.asdict(c) for c in cards]))
        return
    table = Table("supplier", "lots", "rejected", "incoming PPM", "units", "material PPM",
                  "complaints", "CAPAs open/all", "days to close", box=None)  # fmt: skip
    for c in cards:
        table.add_row(
            f"{c.supplier} ({c.name})", str(c.lots),
            f"{c.lots_rejected}/{c.lots_inspected}" if c.lots_inspected else "-",
            _n(round(c.incoming_ppm)) if c.incoming_ppm is not None else "-",
            f"{c.units:,}", _n(round(c.material_ppm)) if c.material_ppm is not None else "-",
            f"{c.complaints} ({c.material_complaints} material)", f"{c.capas_open}/{c.capas}",
            f"{c.mean_days_to_close:.1f}" if c.mean_days_to_close is not None else "-",
        )  # fmt: skip
    out.print(table)
    if supplier and cards[0].trend:
        trend = Table("month", "lots", "rejected", "incoming PPM", "material PPM", box=None)
        for p in cards[0].trend:
            trend.add_row(p.month, str(p.lots), str(p.lots_rejected),
                          "-" if p.incoming_ppm is None else f"{p.incoming_ppm:,.0f}",
                          "-" if p.material_ppm is None else f"{p.material_ppm:,.0f}")  # fmt: skip
        out.print(trend)


@_command("scene")
def scene_cmd(
    line: Annotated[str, typer.Argument(help="The line's uid, e.g. LINE-PCB.")],
    start: Annotated[str | None, typer.Option("--from", help="Batches started from.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Batches started until.")] = None,
    scenario: Annotated[
        str | None, typer.Option(help="A what-if scenario whose utilisation to show.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The whole scene as JSON.")] = False,
) -> None:
    """A line's machines as the 3D viewer places them, with their status overlay."""
    with _store(read_only=True) as (store, _):
        scene = line_scene(store, line, window=_window(start, end), scenario=scenario)
    if as_json:
        out.print_json(scene.to_json())
        return
    table = Table("machine", "step", "at (m)", "size (m)", "status", "defect rate", "alarms",
                  "util.", "BIM element", box=None)  # fmt: skip
    for o in scene.objects:
        v = o.overlay
        table.add_row(
            f"{o.uid} ({o.name})",
            o.step or "-",
            f"{o.position[0]:g}, {o.position[1]:g}",
            " x ".join(f"{s:g}" for s in o.size),
            f"[{v.colour}]{v.status.value}[/]",
            "-" if v.defect_rate is None else f"{v.defect_rate:.2%} of {v.produced:,}",
            str(v.open_alarms),
            "-" if v.utilisation is None else f"{v.utilisation:.0%}",
            o.bim_element or "-",
        )
    out.print(table)
    out.print(f"{len(scene.objects)} machines; in 3D: sqems serve, then /viewer?line={line}")


@_command("import", on=bim_app)
def bim_import(
    path: Annotated[Path, typer.Argument(help="An IFC file (IFC2X3 or IFC4, .ifc).")],
    name: Annotated[
        str | None, typer.Option(help="The model's name (default: the project's).")
    ] = None,
    link_key: Annotated[
        str, typer.Option(help="The element attribute or Pset.Property holding a machine uid.")
    ] = "Tag",
    links: Annotated[
        Path | None, typer.Option(help="A CSV of machine,global_id pairs instead of --link-key.")
    ] = None,
    cores: Annotated[int | None, typer.Option(help="Tessellation threads (default: all).")] = None,
) -> None:
    """Import an IFC model: tessellate it (cached by file hash), store its elements and
    link them to machines."""
    rule = (bim_models.LinkRule.from_csv(links.read_text()) if links
            else bim_models.LinkRule(key=link_key))  # fmt: skip
    with _store() as (store, settings), err.status(f"tessellating {path.name}…"):
        done = bim_models.import_bim(
            store,
            path,
            cache_dir=bim_models.cache_of(settings.data_dir),
            name=name,
            link=rule,
            max_bytes=settings.bim_max_bytes,
            cores=cores,
            limits=bim_models.limits_of(settings),
        )
    m = done.model
    out.print(
        f"[bold]{m.uid}[/bold] {m.name} ({m.ifc_schema.value}): {m.elements:,} elements, "
        f"{m.triangles:,} triangles{' (tessellation from the cache)' if done.cached else ''}"
    )
    out.print(f"linked {len(done.links)} machine(s) by {rule.describe()}")
    for machine, element in sorted(done.links.items()):
        out.print(f"  {machine} -> {element}")
    if done.unmatched:
        out.print(f"[yellow]not linked:[/yellow] {', '.join(done.unmatched)}")
    if done.skipped:
        out.print(f"[yellow]left out {len(done.skipped)} product(s):[/yellow]")
        for line in done.skipped[:10]:
            out.print(f"  {escape(line)}")
    out.print(f"in 3D: sqems serve, then /viewer?bim={m.uid}")


@_command("list", on=bim_app)
def bim_list() -> None:
    """The imported BIM models."""
    with _store(read_only=True) as (store, _):
        models = [n for n in store.find("BimModel") if isinstance(n, BimModel)]
    table = Table("uid", "name", "schema", "file", "elements", "triangles", "imported", box=None)
    for m in sorted(models, key=lambda m: m.imported_at, reverse=True):
        table.add_row(m.uid, m.name, m.ifc_schema.value, m.file_name, f"{m.elements:,}",
                      f"{m.triangles:,}", m.imported_at.isoformat(timespec="seconds"))  # fmt: skip
    out.print(table)


@_command("survey", on=bim_app)
def bim_survey(
    model: Annotated[str, typer.Argument(help="The model's uid (BIM-…).")],
    path: Annotated[Path, typer.Argument(help="CSV: " + ",".join(bim_models.SURVEY_COLUMNS))],
    tolerance: Annotated[
        float, typer.Option(help="Metres of position or size difference allowed.")
    ] = bim_models.DEFAULT_TOLERANCE_M,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Record as-built positions and sizes and report the elements that deviate from the
    design beyond the tolerance (exit 1 when any does)."""
    with _store() as (store, _):
        report = bim_models.survey(store, model, path.read_text(), tolerance_m=tolerance)
    if as_json:
        out.print_json(json.dumps(dataclasses.asdict(report)))
    else:
        out.print(
            f"{report.surveyed} surveyed, {report.within} within {tolerance * 1000:g} mm, "
            f"{len(report.deviating)} deviating; {report.not_surveyed} elements not surveyed"
        )
        table = Table("element", "class", "name", "position off (mm)", "size off (mm)", box=None)
        for d in report.deviating:
            table.add_row(d.global_id, d.ifc_class, d.name or "-", f"{d.position_m * 1000:.0f}",
                          "-" if d.size_m is None else f"{d.size_m * 1000:.0f}")  # fmt: skip
        if report.deviating:
            out.print(table)
        if report.unknown:
            out.print(f"[yellow]not in the model:[/yellow] {', '.join(report.unknown)}")
        for reason in report.refused:
            out.print(f"[yellow]refused:[/yellow] {reason}")
    if report.deviating:
        raise typer.Exit(1)


RdfFormatOption = Annotated[
    str | None,
    typer.Option("--format", help="turtle, json-ld or ntriples (default: from the suffix)."),
]


@_command("export", on=rdf_app)
def rdf_export(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: standard output).")
    ] = None,
    fmt: RdfFormatOption = None,
    lot: Annotated[str | None, typer.Option(help="Only the recall scope of this lot.")] = None,
    batch: Annotated[str | None, typer.Option(help="Only the recall scope of a batch.")] = None,
    machine: Annotated[
        str | None, typer.Option(help="Only the recall scope of a machine (with --from/--to).")
    ] = None,
    parameter: Annotated[
        str | None, typer.Option(help="Only the recall scope of a parameter excursion.")
    ] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Window start (ISO 8601).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Window end (ISO 8601).")] = None,
    upstream_of: Annotated[
        list[str] | None,
        typer.Option("--upstream-of", help="Only what a root-cause trace reaches from these."),
    ] = None,
    uid: Annotated[
        list[str] | None, typer.Option("--uid", help="Only these nodes and the links among them.")
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="IRI base of the nodes (default: SQEMS_RDF_BASE).")
    ] = None,
) -> None:
    """Export the graph, or a part of it, as RDF in the SQEMS ontology: Turtle, JSON-LD or
    N-Triples, with stable IRIs."""
    source = _recall_source(lot, batch, machine, parameter, from_, to)
    if sum(x is not None and x != [] for x in (source, upstream_of, uid)) > 1:
        raise ValidationFailed("give one scope: a recall source, --upstream-of or --uid")
    if fmt is not None:
        rdf_format = rdf.RdfFormat.parse(fmt)
    elif out_file is not None:
        rdf_format = rdf.RdfFormat.of_path(out_file.name)
    else:
        rdf_format = rdf.RdfFormat.TURTLE
    with _store(read_only=True) as (store, settings):
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


def _print_shacl(report: rdf.ShaclReport, limit: int) -> None:
    if report.conforms:
        out.print(f"[green]{report.text()}[/green]")
        return
    out.print(f"[red]{report.violations:,} violation(s)[/red] in {report.triples:,} triples")
    table = Table("focus node", "property", "problem", "value", box=None)
    for f in report.findings[:limit]:
        table.add_row(f.focus, f.path or "-", f.message, f.value or "")
    out.print(table)
    if len(report.findings) > limit:
        out.print(f"… and {len(report.findings) - limit:,} more (--limit, --json)")
    out.print("by constraint: " + ", ".join(f"{k} {n}" for k, n in report.by_constraint().items()))


@_command("validate", on=rdf_app)
def rdf_validate(
    path: Annotated[Path, typer.Argument(help="An RDF file (.ttl, .jsonld, .nt).")],
    fmt: RdfFormatOption = None,
    limit: Annotated[int, typer.Option(help="How many findings to list.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Check an RDF file against the SQEMS SHACL shapes; exit 1 when it breaks any."""
    graph = rdf.parse(path, rdf.RdfFormat.parse(fmt) if fmt else None)
    report = rdf.validate(graph)
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        _print_shacl(report, limit)
    if not report.conforms:
        raise typer.Exit(1)


@_command("import", on=rdf_app)
def rdf_import(
    path: Annotated[Path, typer.Argument(help="An RDF file (.ttl, .jsonld, .nt).")],
    fmt: RdfFormatOption = None,
    shapes: Annotated[
        bool, typer.Option("--shapes/--no-shapes", help="Check the SHACL shapes first.")
    ] = True,
) -> None:
    """Import an RDF file in the SQEMS ontology into the store: checked against the
    shapes and the models first, then written whole, or not at all."""
    graph = rdf.parse(path, rdf.RdfFormat.parse(fmt) if fmt else None)
    with _store() as (store, _):
        report = rdf.import_graph(store, graph, check_shapes=shapes)
        out.print(
            f"imported {sum(report.nodes.values()):,} nodes and "
            f"{sum(report.edges.values()):,} relationships into {store.description}"
        )
    table = Table("label / relationship", "count", box=None)
    for name, n in [*report.nodes.items(), *report.edges.items()]:
        table.add_row(name, f"{n:,}")
    out.print(table)
    if report.ignored:
        out.print("ignored (other vocabularies): " + ", ".join(
            f"{p} {n:,}" for p, n in sorted(report.ignored.items())))  # fmt: skip


@_command("query", on=rdf_app)
def rdf_query(
    path: Annotated[Path, typer.Argument(help="An RDF file (.ttl, .jsonld, .nt).")],
    query: Annotated[
        str, typer.Argument(help="A shipped query's name (see --list) or a .rq file.")
    ] = "",
    bind: Annotated[
        list[str] | None, typer.Option(help="NAME=IRI for a variable of the query.")
    ] = None,
    fmt: RdfFormatOption = None,
    listing: Annotated[bool, typer.Option("--list", help="List the shipped queries.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The rows as JSON.")] = False,
) -> None:
    """Run a SPARQL SELECT query over an RDF file."""
    if listing:
        for name, text in sorted(rdf.queries().items()):
            first = next((ln[2:] for ln in text.splitlines() if ln.startswith("# ")), "")
            out.print(f"[bold]{name}[/bold]  {first}")
        return
    if not query:
        raise ValidationFailed("name a query (see --list) or give a .rq file")
    text = Path(query).read_text("utf-8") if query.endswith(".rq") else query
    bindings = dict(_pair_text(b, "--bind") for b in bind or [])
    graph = rdf.parse(path, rdf.RdfFormat.parse(fmt) if fmt else None)
    rows = rdf.run(graph, text, **bindings)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    if rows:
        table = Table(*rows[0], box=None)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        out.print(table)
    out.print(f"{len(rows):,} row(s)")


def _pair_text(item: str, option: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name or not value:
        raise ValidationFailed(f"{option} wants NAME=VALUE, got {item!r}")
    return name, value


# --- rendering ---------------------------------------------------------------------------


def _print_stats(store: GraphStore) -> None:
    out.print(f"store: {store.description}")
    table = Table("node label", "count", "relationship", "count", box=None)
    labels = [(k, store.count(k)) for k in sorted(NODE_TYPES)]
    rels = [(k, store.count_edges(k)) for k in sorted(REL_TYPES)]
    labels = [x for x in labels if x[1]]
    rels = [x for x in rels if x[1]]
    for i in range(max(len(labels), len(rels))):
        left = labels[i] if i < len(labels) else ("", None)
        right = rels[i] if i < len(rels) else ("", None)
        table.add_row(left[0], _n(left[1]), right[0], _n(right[1]))
    table.add_row("[bold]nodes", _n(store.count()), "[bold]relationships", _n(store.count_edges()))
    out.print(table)


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _print_recall(store: GraphStore, scope: RecallScope, show: int) -> None:
    c = scope.counts
    out.print(f"source: {scope.source.describe()}")
    summary = Table("in scope", "count", box=None)
    for key in ("process_runs", "batches", "units", "units_shipped", "shipments", "customers"):
        if key != "process_runs" or c[key]:
            summary.add_row(key.replace("_", " "), f"{c[key]:,}")
    out.print(summary)
    if scope.units and show > 0:
        out.print(f"[bold]why units are in scope[/bold] (first {min(show, len(scope.units))}):")
        for unit in scope.units[:show]:
            out.print(f"  {render_path(unit.path)}")
    if scope.customers:
        names = store.get_many(scope.customers)
        listed = ", ".join(
            f"{uid} ({getattr(names[uid], 'name', '?')})" for uid in scope.customers[:8]
        )
        more = f" and {len(scope.customers) - 8} more" if len(scope.customers) > 8 else ""
        out.print(f"[bold]customers to notify:[/bold] {listed}{more}")


WIDE_TABLE = 120
"""Columns from which ranked causes print as a table; below, a paragraph each."""


def _print_causes(report: rootcause.RootCauseReport, *, why: bool = True) -> None:
    out.print(
        f"{report.defectives.description}: {report.defective_in_population:,} defective "
        f"of {report.population:,} comparable units; {report.factors_tested:,} factors tested"
    )
    table = Table(
        "#", "factor (6M)", "significant", "defective/exposed", "risk ratio", "q",
        "adj. OR", "explains",
    )  # fmt: skip
    narrow = out.width < WIDE_TABLE  # a terminal of 80 columns folds every cell
    for c in report.causes:
        e = c.evidence
        aor = (
            f"{e.adjusted_odds_ratio:.3g} ({e.adjusted_odds_ratio_low:.3g}-"
            f"{e.adjusted_odds_ratio_high:.3g})"
            if e.adjusted_odds_ratio is not None
            and e.adjusted_odds_ratio_low is not None
            and e.adjusted_odds_ratio_high is not None
            else "-"
        )
        note = f"; explained by {c.explained_by.uid}" if c.explained_by else ""
        if c.aliases:
            note += "; inseparable from " + ", ".join(f.key for f in c.aliases)
        if c.suspects:
            note += "; suspect set with " + ", ".join(f.key for f in c.suspects)
        cells = (
            str(c.rank),
            f"{c.factor.describe()} [dim]({c.category.value}{note})[/dim]",
            "yes" if c.significant else "no",
            f"{e.defective_exposed}/{e.exposed}",
            f"{e.risk_ratio:.3g} ({e.risk_ratio_low:.3g}-{e.risk_ratio_high:.3g})",
            f"{e.q_value:.1g}",
            aor,
            f"{e.explained_defects:.0f} ({e.explained_defects_low:.0f}-"
            f"{e.explained_defects_high:.0f})"
            if c.significant
            else "-",
        )
        if narrow:  # one cause a paragraph, every figure labelled
            rank, factor, significant, counts, ratio, q, odds, explains = cells
            out.print(
                f"{rank}. {factor}\n   significant {significant}; defective/exposed {counts}; "
                f"risk ratio {ratio}; q {q}; adj. OR {odds}; explains {explains}",
                highlight=False,
            )
        else:
            table.add_row(*cells)
    if not narrow:
        out.print(table)
    out.print(f"[bold]conclusion:[/bold] {report.conclusion}")
    first = report.causes[0] if report.causes else None
    if why and first is not None and first.significant and first.why:
        out.print("[bold]5-Why[/bold] for the first cause:")
        for i, step in enumerate(first.why, start=1):
            out.print(f"  {i}. {step.why}")


def _print_investigation(store: GraphStore, found: investigation.Investigation) -> None:
    c = found.case
    out.rule(f"Complaint {c.uid}")
    kind = f"{c.defect_type_name} ({c.defect_type}, {c.category})" if c.defect_type else "—"
    who = f"{c.customer_name} ({c.customer})" if c.customer_name else c.customer or "—"
    out.print(f"defect type  {kind}", highlight=False)
    out.print(f"received     {c.received_at:%Y-%m-%d %H:%M %Z} from {who}", highlight=False)
    out.print(
        f"unit         {c.unit} ({c.product_name or c.product}), made "
        f"{c.produced_at:%Y-%m-%d} in batch {c.batch}",
        highlight=False,
    )
    for sub in c.subassemblies:
        out.print(
            f"{'  ' * sub.depth}└ {sub.uid} ({sub.product}) built into {sub.parent}, "
            f"batch {sub.batch}",
            highlight=False,
        )
    if c.description:
        out.print(f"says         {c.description}", highlight=False)
    out.rule("Analysis")
    out.print(found.scope.note, highlight=False)
    _print_causes(found.report, why=False)
    for note in found.notes:
        out.print(f"[yellow]note:[/] {note}", highlight=False)
    if found.leading is None or found.recall is None:
        out.print("no recall and no fix are suggested: no significant cause reached this unit")
        return
    if found.why:
        out.print(f"[bold]5-Why for {c.uid}[/bold]:")
        for i, step in enumerate(found.why, start=1):
            out.print(f"  {i}. {step.why}", highlight=False)
    out.rule(f"Suggested recall: {found.leading.factor.describe()}")
    out.print(found.recall.explanation, highlight=False)
    recall = found.recall.as_dict()
    if recall is not None:
        counts = recall["counts"]
        out.print(
            f"{counts['batches']:,} batches, {counts['units']:,} units "
            f"({counts['units_shipped']:,} shipped), {counts['shipments']:,} shipments, "
            f"{counts['customers']:,} customers: {', '.join(recall['customers'][:8])}"
            + (" …" if len(recall["customers"]) > 8 else ""),
            highlight=False,
        )
    if found.fix is None:
        return
    out.rule(f"What-if of the fix on {found.fix.line}")
    out.print(found.fix.description, highlight=False)
    result = found.whatif
    if found.whatif_error is not None:
        out.print(f"[red]the what-if could not run:[/] {escape(found.whatif_error)}")
        return
    if result is None:
        out.print(
            f"(not simulated here: `sqems investigate {c.uid}` fits the line's twin and "
            f"simulates it; the scenario: {json.dumps(found.fix.changes)})",
            highlight=False,
        )
        return
    table = Table(
        "KPI", "baseline", "with the fix", "difference", "verdict",
        caption=f"{result['replications']} replications of {result['hours']:g} h; 94 % "
        f"credible intervals; the difference is paired; simulated: {result['scope']}",
    )  # fmt: skip
    for kpi, v in result["kpis"].items():
        table.add_row(
            kpi,
            _interval(v["baseline"]) if v["baseline"] else "",
            _interval(v["scenario"]),
            _interval(v["difference"], signed=True) if v["difference"] else "",
            v["verdict"] or "",
        )
    out.print(table)
    for warning in result["warnings"]:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
    out.print(f"[bold]verdict:[/bold] {result['verdict']}", highlight=False)


def _print_kpis(report: kpis.KpiReport) -> None:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f} %"

    def ppm(x: float | None) -> str:
        return "-" if x is None else f"{x:,.0f}"

    table = Table("group", "produced", "yield", "FPY", "PPM", "field PPM")
    for name, c in [("total", report.total), *report.by_line.items(), *report.by_shift.items()]:
        table.add_row(
            name,
            f"{c.produced:,}",
            pct(c.yield_),
            pct(c.first_pass_yield),
            ppm(c.ppm),
            ppm(c.field_ppm),
        )
    out.print(table)
    rty = ", ".join(f"{p} {pct(v)}" for p, v in report.rolled_throughput_yield.items())
    out.print(f"rolled throughput yield: {rty}")
    cost = report.cost
    out.print(
        f"cost of poor quality: {cost['total']:,.0f} {report.currency} (scrap "
        f"{cost['scrap']:,.0f}, rework {cost['rework']:,.0f}, complaints {cost['external']:,.0f})"
    )
    tops = ", ".join(f"{t.name} {t.count} ({100 * t.share:.0f} %)" for t in report.top_defects)
    out.print(f"top defects: {tops}")
    test = report.shift_test
    if test is not None:
        verdict = "differ" if test.significant else "do not differ detectably"
        out.print(f"shifts {verdict}: chi2 {test.chi2:.1f}, dof {test.dof}, p {test.p_value:.2g}")


def _print_trace(genealogy: Genealogy) -> None:
    counts = ", ".join(f"{v} {k}" for k, v in genealogy.counts().items())
    out.print(f"upstream of {', '.join(genealogy.start)}: {counts}")
    reached = genealogy.traversal.reached
    children: dict[str, list[str]] = {}
    for r in reached.values():
        if r.via is not None:
            children.setdefault(r.via, []).append(r.uid)
    for start in genealogy.start:
        tree = Tree(f"[bold]{reached[start].label} {start}")
        _grow(tree, start, reached, children)
        out.print(tree)


def _grow(tree: Tree, uid: str, reached: dict[str, Any], children: dict[str, list[str]]) -> None:
    kids = sorted(children.get(uid, []), key=lambda u: (reached[u].label, u))
    for kid in kids:
        r = reached[kid]
        arrow = "→" if r.direction == "out" else "←"
        branch = tree.add(f"{arrow} {r.edge}  [cyan]{r.label}[/cyan] {kid}")
        _grow(branch, kid, reached, children)


# --- entry point -------------------------------------------------------------------------


def main() -> None:
    """Run the CLI (the ``sqems`` console script)."""
    app()
