"""Analysis commands: rootcause, investigate, kpis, suppliers."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from sqems.cli.app import command, err, out
from sqems.cli.common import WindowEnd, WindowStart, graph_store, time_window
from sqems.cli.render import count_text, print_causes, print_investigation, print_kpis
from sqems.errors import ValidationFailed


@command("rootcause")
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
    from sqems.analysis import rootcause

    if sum(x is not None and x != [] for x in (defect_type, complaint, unit)) != 1:
        raise ValidationFailed("give exactly one of --defect-type, --complaint, --unit")
    with graph_store(read_only=True) as (store, _):
        if defect_type is not None:
            target = rootcause.from_defect_type(store, defect_type, time_window(start, end))
        elif complaint:
            target = rootcause.from_complaints(store, complaint)
        else:
            target = rootcause.from_units(store, unit or [])
        report = rootcause.rank_causes(store, target, top=top)
        if as_json:
            out.print_json(json.dumps(rootcause.report_dict(report)))
        else:
            print_causes(report)


LOOKBACK_DAYS = 365.0
"""The default of ``investigate --lookback``: the investigation's own default, repeated
because typer reads it at start-up, before the statistics stack is worth importing (a
test binds the two)."""


@command("investigate")
def investigate_cmd(
    complaint: Annotated[str, typer.Argument(help="The complaint's uid, e.g. CMP-000005.")],
    lookback: Annotated[
        float, typer.Option(help="Days before the complaint to take same-type cases from.")
    ] = LOOKBACK_DAYS,
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
    from sqems import investigation
    from sqems.simulation.runner import TWIN_DIR, WhatIfRunner
    from sqems.twin.fitting import Sampler

    with graph_store() as (store, settings):
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
            print_investigation(store, found)


@command("kpis")
def kpis_cmd(
    start: WindowStart = None,
    end: WindowEnd = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Yield, first-pass and rolled throughput yield, PPM, cost of poor quality, top
    defects and the shift comparison of the batches started in a window."""
    from sqems.analysis import kpis

    with graph_store(read_only=True) as (store, _):
        report = kpis.kpis(store, time_window(start, end))
        if as_json:
            out.print_json(json.dumps(kpis.report_dict(report)))
        else:
            print_kpis(report)


@command("suppliers")
def suppliers_cmd(
    start: Annotated[str | None, typer.Option("--from", help="Lots received from.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Lots received until.")] = None,
    supplier: Annotated[str | None, typer.Option(help="One supplier, with its trend.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The scorecards as JSON.")] = False,
) -> None:
    """Supplier scorecards: incoming inspection, material PPM, complaints, CAPAs."""
    from sqems.quality import suppliers

    with graph_store(read_only=True) as (store, _):
        span = time_window(start, end)
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
            count_text(round(c.incoming_ppm)) if c.incoming_ppm is not None else "-",
            f"{c.units:,}",
            count_text(round(c.material_ppm)) if c.material_ppm is not None else "-",
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
