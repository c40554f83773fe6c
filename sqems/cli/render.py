"""Printing results on the terminal: tables, trees, the what-if view, intervals.
Rendering only; the commands compute."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from sqems.cli.app import out

if TYPE_CHECKING:
    from sqems import investigation
    from sqems import ontologies as rdf
    from sqems.analysis import kpis, rootcause
    from sqems.graph_model import Genealogy, GraphStore, RecallScope
    from sqems.simulation import whatif


def print_whatif(view: whatif.SessionView) -> None:
    from sqems.simulation.whatif import interval_note

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
                interval(b) if b else "",
                interval(value),
                interval(d, signed=True) if d else "",
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
        note = interval_note(view.session.replications)
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


def interval(v: dict[str, float], *, signed: bool = False) -> str:
    fmt = "+.4g" if signed else ".4g"
    return f"{v['mean']:{fmt}} [{v['low']:{fmt}}, {v['high']:{fmt}}]"


def print_shacl(report: rdf.ShaclReport, limit: int) -> None:
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


def print_stats(store: GraphStore) -> None:
    from sqems.graph_model import NODE_TYPES, REL_TYPES

    out.print(f"store: {store.description}")
    table = Table("node label", "count", "relationship", "count", box=None)
    labels = [(k, store.count(k)) for k in sorted(NODE_TYPES)]
    rels = [(k, store.count_edges(k)) for k in sorted(REL_TYPES)]
    labels = [x for x in labels if x[1]]
    rels = [x for x in rels if x[1]]
    for i in range(max(len(labels), len(rels))):
        left = labels[i] if i < len(labels) else ("", None)
        right = rels[i] if i < len(rels) else ("", None)
        table.add_row(left[0], count_text(left[1]), right[0], count_text(right[1]))
    table.add_row(
        "[bold]nodes",
        count_text(store.count()),
        "[bold]relationships",
        count_text(store.count_edges()),
    )
    out.print(table)


def count_text(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def print_recall(store: GraphStore, scope: RecallScope, show: int) -> None:
    from sqems.graph_model import render_path

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


def print_causes(report: rootcause.RootCauseReport, *, why: bool = True) -> None:
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


def print_investigation(store: GraphStore, found: investigation.Investigation) -> None:
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
    print_causes(found.report, why=False)
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
            interval(v["baseline"]) if v["baseline"] else "",
            interval(v["scenario"]),
            interval(v["difference"], signed=True) if v["difference"] else "",
            v["verdict"] or "",
        )
    out.print(table)
    for warning in result["warnings"]:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
    out.print(f"[bold]verdict:[/bold] {result['verdict']}", highlight=False)


def print_kpis(report: kpis.KpiReport) -> None:
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


def print_trace(genealogy: Genealogy) -> None:
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
