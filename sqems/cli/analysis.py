"""Analysis commands: rootcause, investigate, kpis, suppliers."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer

from sqems.cli.app import command, err, out
from sqems.cli.common import (
    OldEnd,
    OldStart,
    WindowFrom,
    WindowTo,
    graph_store,
    time_window,
    whatif_stores,
)
from sqems.cli.render import (
    Column,
    print_causes,
    print_investigation,
    print_kpis,
    print_table,
)
from sqems.errors import ValidationFailed
from sqems.figures import plain


@command("rootcause")
def rootcause_cmd(
    defect_type: Annotated[
        str | None,
        typer.Option(
            metavar="UID", help="Explain the units with this defect type (or complaints)."
        ),
    ] = None,
    complaint: Annotated[
        list[str] | None, typer.Option(metavar="UID", help="Explain the units of these complaints.")
    ] = None,
    unit: Annotated[
        list[str] | None, typer.Option(metavar="UID", help="Explain these defective units.")
    ] = None,
    from_: WindowFrom = None,
    to: WindowTo = None,
    start: OldStart = None,
    end: OldEnd = None,
    top: Annotated[int, typer.Option(help="How many factors to list.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Rank the factors behind defective units: exposure against comparable units (with
    every sub-assembly level's factors, within products; field returns also within
    production periods while complaints are still arriving), only factors at or before
    the defect's PFMEA origin, exact tests judged with the batches (defects cluster by
    batch, counted once at the origin) under false-discovery control, and tests
    conditional on the stronger causes; each cause with the defects it explains and a
    5-Why chain.

    Example: sqems rootcause --defect-type DT-CRACKED-HOUSING
    """
    from sqems.analysis import rootcause

    if sum(x is not None and x != [] for x in (defect_type, complaint, unit)) != 1:
        raise ValidationFailed("give exactly one of --defect-type, --complaint, --unit")
    with graph_store(read_only=True) as (store, _):
        if defect_type is not None:
            target = rootcause.from_defect_type(
                store,
                defect_type,
                time_window(from_, to, old_start=start, old_end=end),
            )
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
        float,
        typer.Option(
            metavar="DAYS", help="Days before the complaint to take same-type cases from."
        ),
    ] = LOOKBACK_DAYS,
    top: Annotated[int, typer.Option(help="How many factors to list.")] = 5,
    simulate: Annotated[
        bool, typer.Option(help="Simulate the fix's what-if on the line's twin.")
    ] = True,
    hours: Annotated[
        float, typer.Option(metavar="HOURS", help="Simulated hours per replication.")
    ] = 8.0,
    replications: Annotated[int, typer.Option(help="Replications (posterior draws).")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Investigate a complaint end to end: its unit's genealogy, the causes its defect
    type's cases share (widened from the one complaint, at any BOM depth), the recall the
    leading cause calls for, and the what-if of its fix with credible intervals.

    Example: sqems investigate CMP-000005 --no-simulate
    """
    from sqems import investigation
    from sqems.simulation.runner import TWIN_DIR, WhatIfRunner
    from sqems.twin.fitting import Sampler

    with whatif_stores(simulate=simulate) as (store, sessions, settings):
        runner = (
            WhatIfRunner(
                store, settings.data_dir / TWIN_DIR, Sampler.of(settings), sessions=sessions
            )
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
    from_: WindowFrom = None,
    to: WindowTo = None,
    start: OldStart = None,
    end: OldEnd = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Yield, first-pass and rolled throughput yield, PPM, cost of poor quality, top
    defects and the shift comparison of the batches started in a window.

    Example: sqems kpis --from 2026-01-05 --to 2026-01-12
    """
    from sqems.analysis import kpis

    with graph_store(read_only=True) as (store, _):
        report = kpis.kpis(
            store,
            time_window(from_, to, old_start=start, old_end=end),
        )
        if as_json:
            out.print_json(json.dumps(kpis.report_dict(report)))
        else:
            print_kpis(report)


@command("suppliers")
def suppliers_cmd(
    start: Annotated[
        str | None, typer.Option("--from", metavar="DATE", help="Lots received from.")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", metavar="DATE", help="Lots received until.")
    ] = None,
    supplier: Annotated[
        str | None, typer.Option(metavar="UID", help="One supplier, with its trend.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The scorecards as JSON.")] = False,
) -> None:
    """Supplier scorecards: incoming inspection, material PPM, complaints, CAPAs.

    Example: sqems suppliers --supplier SUP-01
    """
    from sqems.quality import suppliers

    with graph_store(read_only=True) as (store, _):
        span = time_window(start, end)
        cards = [suppliers.scorecard(store, supplier, span)] if supplier else (
            suppliers.scorecards(store, span))  # fmt: skip
    if as_json:
        out.print_json(json.dumps([dataclasses.asdict(c) for c in cards]))
        return
    rows = [
        (
            c.supplier, c.name, f"{c.lots:,}",
            f"{c.lots_rejected}/{c.lots_inspected}" if c.lots_inspected else "-",
            "-" if c.incoming_ppm is None else plain(c.incoming_ppm),
            f"{c.units:,}",
            "-" if c.material_ppm is None else plain(c.material_ppm),
            f"{c.complaints:,} ({c.material_complaints:,} material)",
            f"{c.capas_open}/{c.capas}",
            "-" if c.mean_days_to_close is None else plain(c.mean_days_to_close),
        )
        for c in cards
    ]  # fmt: skip
    print_table(
        [Column("supplier", "id"), "name", Column("lots", "number"),
         Column("rejected/inspected lots", "number"), Column("incoming ppm", "number"),
         Column("units", "number"), Column("material ppm", "number"), "complaints",
         Column("CAPAs open/all", "number"), Column("days to close a CAPA", "number")],
        rows,
    )  # fmt: skip
    if supplier and cards[0].trend:
        print_table(
            [Column("month", "id"), Column("lots", "number"), Column("rejected lots", "number"),
             Column("incoming ppm", "number"), Column("material ppm", "number")],
            [
                (p.month, f"{p.lots:,}", f"{p.lots_rejected:,}",
                 "-" if p.incoming_ppm is None else plain(p.incoming_ppm),
                 "-" if p.material_ppm is None else plain(p.material_ppm))
                for p in cards[0].trend
            ],
        )  # fmt: skip
