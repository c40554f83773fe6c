"""Printing results on the terminal: tables, trees, the what-if view, intervals.
Rendering only; the commands compute."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from sqems.cli.app import out
from sqems.figures import plain, probability, ranged

if TYPE_CHECKING:
    from sqems import investigation
    from sqems import ontologies as rdf
    from sqems.analysis import kpis, rootcause
    from sqems.graph_model import Genealogy, GraphStore, RecallScope
    from sqems.simulation import whatif


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: an ``id`` (a uid or key) is never wrapped or cut, a ``number`` is
    right-aligned and kept on one line, ``text`` wraps."""

    name: str
    kind: Literal["id", "number", "text"] = "text"


TEXT_MIN = 12
"""The narrowest a wrapping column is squeezed to before a table turns stacked."""


def _width(cell: str) -> int:
    return Text.from_markup(cell).cell_len


def _longest_word(cell: str) -> int:
    return max((len(w) for w in Text.from_markup(cell).plain.split()), default=0)


def print_table(
    columns: Sequence[Column | str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    caption: str | None = None,
) -> None:
    """Print ``rows`` (cells as rich markup) as a table that fits the terminal: uid
    columns at the width of their longest uid, numbers on one line, other columns
    wrapped; when even that does not fit, one record a block of ``field: value`` lines.
    A plain string column is ``text``."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    widths = _widths(cols, rows, out.width)
    if title:
        out.print(title, highlight=False)
    if widths is None:
        _print_stacked(cols, rows)
        if caption:
            out.print(caption, highlight=False)
        return
    table = Table(box=None, pad_edge=False, caption=caption, caption_justify="left")
    for c, w in zip(cols, widths, strict=True):
        table.add_column(
            c.name,
            justify="right" if c.kind == "number" else "left",
            width=w,
            overflow="fold",
        )
    for r in rows:
        table.add_row(*r)
    out.print(table, highlight=False)


def _widths(cols: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[int] | None:
    """Each column's width, or None when the table cannot fit ``width`` without cutting
    an id or a number or squeezing text below :data:`TEXT_MIN` (shorter words allowed)."""
    natural, least = [], []
    for i, c in enumerate(cols):
        cells = [r[i] for r in rows]
        header = _longest_word(c.name)
        widest = max([_width(x) for x in cells] + [header])
        natural.append(max(widest, _width(c.name)))
        if c.kind == "text":
            words = max([_longest_word(x) for x in cells] + [0])
            least.append(max(min(words, TEXT_MIN), header, 1))
        else:
            least.append(widest)
    room = width - 2 * (len(cols) - 1)
    if sum(least) > room:
        return None if rows else natural
    widths = list(least)
    spare = room - sum(least)
    wants = [n - m for n, m in zip(natural, least, strict=True)]
    for kinds in (("text",), ("id", "number")):  # text unwraps first, then headers
        while spare > 0 and any(w for w, c in zip(wants, cols, strict=True) if c.kind in kinds):
            wanting = [i for i, c in enumerate(cols) if wants[i] and c.kind in kinds]
            share = max(1, spare // len(wanting))
            for i in wanting:
                give = min(wants[i], share, spare)
                widths[i] += give
                wants[i] -= give
                spare -= give
    return widths


def _print_stacked(cols: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    label = max(_width(escape(c.name)) for c in cols) + 1
    room = out.width - label - 1
    for n, r in enumerate(rows):
        if n:
            out.print()
        if any(c.kind != "text" and _width(x) > room for c, x in zip(cols, r, strict=True)):
            for c, cell in zip(cols, r, strict=True):  # an id wider than a hanging indent
                out.print(Text.from_markup(f"{c.name}: {cell}"), highlight=False)
            continue
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, min_width=label)
        grid.add_column(overflow="fold")
        for c, cell in zip(cols, r, strict=True):
            grid.add_row(f"{c.name}:", cell)
        out.print(grid, highlight=False)


def print_whatif(view: whatif.SessionView) -> None:
    from sqems.simulation.whatif import interval_note

    results = {s.uid: json.loads(s.results) if s.results else {} for s in view.scenarios}
    base = results[view.baseline.uid].get("kpis", {})
    for s in view.scenarios:
        if s.baseline:
            continue
        body = results[s.uid]
        out.print(f"[bold]{escape(s.name)}[/bold] on {view.line}:", highlight=False)
        for line in scenario_lines(json.loads(s.changes) if s.changes else {}):
            out.print(f"  {line}", highlight=False)
        print_kpi_changes(
            {
                kpi: (base.get(kpi), value, body.get("difference", {}).get(kpi),
                      body.get("verdicts", {}).get(kpi, ""))
                for kpi, value in body.get("kpis", {}).items()
            },
            scenario="scenario",
            caption=f"{view.session.replications} replications of "
            f"{plain(view.session.horizon_s / 3600)} h; in brackets the 94 % interval; the "
            "change is paired (the same random draws in both)",
        )  # fmt: skip
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
            out.print(f"  [yellow]warning:[/] {escape(warning)}", highlight=False)
        rec = body.get("recommendation")
        if rec and rec.get("message"):
            out.print(f"  {rec['message']}", highlight=False)
        if rec:
            for uid, v in rec["setpoints"].items():
                out.print(f"  {uid}: {plain(rec['current'][uid])} -> [bold]{plain(v)}[/]")
            if rec.get("confirm"):
                out.print(f"  {rec['confirm']}", highlight=False)
            verdict = "meets" if body.get("feasible") else "[red]misses[/]"
            out.print(
                f"  throughput {verdict} the floor of {plain(body['throughput_floor'])} units/h"
            )


Figure = dict[str, float]


def print_kpi_changes(
    kpis: dict[str, tuple[Figure | None, Figure, Figure | None, str]],
    *,
    scenario: str,
    caption: str,
) -> None:
    """KPI -> (baseline, scenario, paired change, verdict) as a table of named KPIs with
    units; first-pass yield only where it differs from yield (it equals yield unless a
    scenario reworks, see :data:`~sqems.simulation.whatif.KPI_LABELS`)."""
    from sqems.simulation.whatif import KPI_LABELS

    rows = []
    same = _same(kpis.get("yield"), kpis.get("fpy"))
    for kpi, (b, value, d, verdict) in kpis.items():
        if kpi == "fpy" and same:
            continue
        name, unit, scale = KPI_LABELS.get(kpi, (kpi.replace("_", " "), "", 1.0))
        unchanged = d is not None and all(d[k] == 0 for k in ("mean", "low", "high"))
        rows.append((
            f"{name} ({unit})" if unit else name,
            interval(b, scale=scale) if b else "-",
            interval(value, scale=scale),
            "no change" if unchanged else interval(d, scale=scale, signed=True) if d else "-",
            "" if unchanged else verdict,
        ))  # fmt: skip
    print_table(
        ["KPI", Column("baseline", "number"), Column(scenario, "number"),
         Column("change", "number"), "verdict"],
        rows,
        caption=caption + (
            "; first-pass yield equals yield: no station reworks, what inspection finds "
            "is scrapped" if same else ""
        ),
    )  # fmt: skip


def _same(
    a: tuple[Figure | None, Figure, Figure | None, str] | None,
    b: tuple[Figure | None, Figure, Figure | None, str] | None,
) -> bool:
    return a is not None and b is not None and a[:3] == b[:3]


def scenario_lines(changes: dict[str, Any]) -> list[str]:
    """A scenario's changes (its JSON form) as one plain line each."""
    lines = []
    speed = changes.get("line_speed")
    if speed is not None and speed != 1:
        lines.append(f"line speed x {plain(speed)}")
    for p in changes.get("parameters", []):
        if p.get("setpoint") is not None:
            lines.append(f"{p['parameter']} set to {plain(p['setpoint'])}")
        if p.get("spread") is not None:
            lines.append(f"{p['parameter']} varies {plain(p['spread'])} times as much")
    if changes.get("shifts"):
        lines.append(f"shifts working: {', '.join(changes['shifts'])}")
    for i in changes.get("inspections", []):
        if i.get("detection") is not None:
            lines.append(f"inspection at {i['step']} detects {plain(100 * i['detection'])} %")
        if i.get("rework") is not None:
            lines.append(f"inspection at {i['step']} reworks {plain(100 * i['rework'])} %")
    for b in changes.get("buffers", []):
        lines.append(f"buffer before {b['step']}: {b['capacity']:,} places")
    for k in changes.get("breakdowns", []):
        lines.append(
            f"{k['machine']} fails every {plain(k['mtbf_s'] / 3600)} h on average, "
            f"repaired in {plain(k['mttr_s'] / 60)} min"
        )
    for r in changes.get("routing", []):
        lines.append(f"{r['step']} runs on {', '.join(r['machines'])} only")
    for r in changes.get("step_shifts", []):
        lines.append(f"{r['step']} works shifts {', '.join(r['shifts'])}")
    for r in changes.get("operators", []):
        lines.append(f"{r['step']} without operators {', '.join(r['exclude'])}")
    for d in changes.get("drifts", []):
        window = (
            f" from {d.get('start') or 'the start'} to {d.get('end') or 'the end'}"
            if d.get("start") or d.get("end")
            else ""
        )
        lines.append(f"drift of {d['parameter']} on {d['machine']} removed{window}")
    for lot in changes.get("lots", []):
        if lot.get("lot"):
            lines.append(f"lot {lot['lot']} replaced by a new lot of the same material")
        if lot.get("supplier"):
            lines.append(f"lots of supplier {lot['supplier']} replaced by new lots")
    known = {"line_speed", "parameters", "shifts", "inspections", "buffers", "breakdowns",
             "routing", "step_shifts", "operators", "drifts", "lots"}  # fmt: skip
    lines.extend(f"{k.replace('_', ' ')}: {json.dumps(v)}" for k, v in changes.items()
                 if k not in known)  # fmt: skip
    return lines or ["nothing changed (today's line)"]


def interval(v: Figure, *, signed: bool = False, scale: float = 1.0) -> str:
    return ranged(v["mean"] * scale, v["low"] * scale, v["high"] * scale, level=None,
                  signed=signed)  # fmt: skip


def print_shacl(report: rdf.ShaclReport, limit: int) -> None:
    if report.conforms:
        out.print(f"[green]{report.text()}[/green]")
        return
    out.print(f"[red]{report.violations:,} violation(s)[/red] in {report.triples:,} triples")
    print_table(
        [Column("focus node", "id"), Column("property", "id"), "problem", "value"],
        [(escape(f.focus), escape(f.path or "-"), escape(f.message), escape(f.value or ""))
         for f in report.findings[:limit]],
    )  # fmt: skip
    if len(report.findings) > limit:
        out.print(f"… and {len(report.findings) - limit:,} more (--limit, --json)")
    out.print("by constraint: " + ", ".join(f"{k} {n}" for k, n in report.by_constraint().items()))


def print_stats(store: GraphStore) -> None:
    from sqems.graph_model import NODE_TYPES, REL_TYPES

    out.print(f"store: {store.description}")
    labels = [(k, store.count(k)) for k in sorted(NODE_TYPES)]
    rels = [(k, store.count_edges(k)) for k in sorted(REL_TYPES)]
    labels = [x for x in labels if x[1]]
    rels = [x for x in rels if x[1]]
    rows = []
    for i in range(max(len(labels), len(rels))):
        left = labels[i] if i < len(labels) else ("", None)
        right = rels[i] if i < len(rels) else ("", None)
        rows.append((left[0], count_text(left[1]), right[0], count_text(right[1])))
    rows.append(
        ("[bold]nodes", count_text(store.count()), "[bold]relationships",
         count_text(store.count_edges()))
    )  # fmt: skip
    print_table(
        [Column("node label", "id"), Column("count", "number"), Column("relationship", "id"),
         Column("count", "number")],
        rows,
    )  # fmt: skip


def count_text(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def print_recall(store: GraphStore, scope: RecallScope, show: int) -> None:
    from sqems.graph_model import render_path

    c = scope.counts
    out.print(f"source: {scope.source.describe()}")
    print_table(
        ["in scope", Column("count", "number")],
        [
            (key.replace("_", " "), f"{c[key]:,}")
            for key in ("process_runs", "batches", "units", "units_shipped", "shipments",
                        "customers")
            if key != "process_runs" or c[key]
        ],
    )  # fmt: skip
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


def print_causes(report: rootcause.RootCauseReport, *, why: bool = True) -> None:
    out.print(
        f"{report.defectives.description}: {report.defective_in_population:,} defective "
        f"of {report.population:,} comparable units; {report.factors_tested:,} factors tested"
    )
    rows = []
    for c in report.causes:
        e = c.evidence
        aor = (
            ranged(
                e.adjusted_odds_ratio,
                e.adjusted_odds_ratio_low,
                e.adjusted_odds_ratio_high,
                level=None,
            )
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
        rows.append((
            str(c.rank),
            f"{escape(c.factor.describe())} [dim]({c.category.value}{escape(note)})[/dim]",
            "yes" if c.significant else "no",
            f"{e.defective_exposed:,} of {e.exposed:,}",
            ranged(e.risk_ratio, e.risk_ratio_low, e.risk_ratio_high, level=None),
            probability(e.q_value),
            aor,
            ranged(e.explained_defects, e.explained_defects_low, e.explained_defects_high,
                   level=None)
            if c.significant
            else "-",
        ))  # fmt: skip
    print_table(
        [Column("#", "number"), "factor (6M)", "significant", Column("defective units", "number"),
         Column("risk ratio (95 % interval)", "number"), Column("q-value", "number"),
         Column("adjusted odds ratio (95 % interval)", "number"),
         Column("defects it explains (95 % interval)", "number")],
        rows,
    )  # fmt: skip
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
            "simulates it)",
            highlight=False,
        )
        return
    print_kpi_changes(
        {
            kpi: (v["baseline"], v["scenario"], v["difference"], v["verdict"] or "")
            for kpi, v in result["kpis"].items()
        },
        scenario="with the fix",
        caption=f"{result['replications']} replications of {plain(result['hours'])} h; in "
        "brackets the 94 % credible interval; the change is paired; simulated: "
        f"{result['scope']}",
    )
    for warning in result["warnings"]:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
    out.print(f"[bold]verdict:[/bold] {result['verdict']}", highlight=False)


def print_kpis(report: kpis.KpiReport) -> None:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{plain(100 * x)} %"

    def ppm(x: float | None) -> str:
        return "-" if x is None else plain(x)

    groups = [("total", report.total), *report.by_line.items(), *report.by_shift.items()]
    same = all(c.yield_ == c.first_pass_yield for _, c in groups)
    columns = [Column("group", "id"), Column("units produced", "number"),
               Column("yield", "number"), Column("first-pass yield", "number"),
               Column("defective (ppm)", "number"),
               Column("complaints (ppm shipped)", "number")]  # fmt: skip
    rows: list[tuple[str, ...]] = [
        (name, f"{c.produced:,}", pct(c.yield_), pct(c.first_pass_yield), ppm(c.ppm),
         ppm(c.field_ppm))
        for name, c in groups
    ]  # fmt: skip
    if same:  # every defective unit scrapped, none reworked: one figure, not two
        del columns[3]
        rows = [(*r[:3], *r[4:]) for r in rows]
    print_table(
        columns,
        rows,
        caption="first-pass yield equals yield: no unit was reworked, every defective "
        "unit was scrapped"
        if same
        else None,
    )
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
        out.print(
            f"shifts {verdict}: chi-squared {plain(test.chi2)}, {test.dof} degrees of "
            f"freedom, p-value {probability(test.p_value)}"
        )


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
