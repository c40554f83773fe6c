"""Store integrity: ``sqems check`` audits the genealogy a store holds, and the lines
``stats`` and ``check`` print about the store itself (its plant, an unfinished load)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sqems.cli.app import command, out
from sqems.cli.common import graph_store

if TYPE_CHECKING:
    from sqems.graph_model import GraphStore
    from sqems.graph_model.integrity import Audit

RULE_TITLES = {
    "one-parent": "a unit is in at most one assembly",
    "no-cycle": "no unit is built into itself (no assembly cycles)",
    "time-order": "no assembly is produced before its components",
    "shipped-not-scrapped": "no scrapped unit is in a shipment",
}


@command("check")
def check_cmd(
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Offending records shown per rule.")
    ] = 10,
) -> None:
    """Check the store's genealogy; exit 1 when a rule is broken.

    The rules every write obeys (data loaded by older versions may break them): a unit
    is in at most one assembly, no assembly cycles, no assembly produced before its
    components, no scrapped unit shipped.

    Example: sqems check --limit 20
    """
    from sqems.graph_model import integrity

    with graph_store(read_only=True) as (store, _):
        print_store_state(store)
        report = integrity.audit(store)
    print_audit(report, limit)
    if not report.clean:
        raise typer.Exit(1)


def print_store_state(store: GraphStore) -> None:
    """The plant a store holds and any load that did not finish."""
    from sqems.datasets.load import held_plants, load_in_progress

    plants = held_plants(store)
    if not plants:
        out.print("plant: not recorded (loaded before stores recorded their plant, or empty)")
    else:
        merged = f" (merged into it: {', '.join(plants[1:])})" if plants[1:] else ""
        out.print(f"plant: {plants[0]}{merged}", highlight=False)
    state = load_in_progress(store)
    if state is not None:
        out.print(
            f"[yellow]load in progress: plant {state.get('plant') or '(unnamed)'} from "
            f"{state.get('source')}, started {state.get('started_at')}, did not finish; "
            "run the same sqems load again to finish it[/yellow]",
            highlight=False,
        )


def print_audit(report: Audit, limit: int) -> None:
    out.print(f"genealogy of {report.units:,} units in {report.store}:", highlight=False)
    for rule, findings in report.findings.items():
        title = RULE_TITLES.get(rule, rule)
        if not findings:
            out.print(f"  [green]ok[/green]      {title}")
            continue
        out.print(f"  [red]broken[/red]  {title}: {len(findings):,} record(s)")
        for finding in findings[:limit]:
            out.print(f"            {finding.message}", highlight=False, soft_wrap=True)
        if len(findings) > limit:
            out.print(f"            … and {len(findings) - limit:,} more (--limit)")
    if report.clean:
        out.print("every genealogy rule holds")
    else:
        out.print(
            f"[red]{report.total:,} breach(es)[/red]: correct the records at their source and "
            "load the corrected plant into a new data directory (a store never deletes)"
        )
