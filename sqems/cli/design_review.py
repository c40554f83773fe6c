"""``sqems design review``: a planned product held against the plant's quality history,
printed for an 80-column terminal - the ranked risks, the predicted first-pass yield,
the suggestions, then the evidence - and, on request, as a printable HTML or PDF report."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sqems.cli.app import command, err, out
from sqems.cli.common import graph_store
from sqems.cli.design import design_app
from sqems.cli.render import Column, print_table

if TYPE_CHECKING:
    from sqems.design.plan import PlannedProductSpec
    from sqems.design.review import DesignReview, Risk
    from sqems.graph_model.store import GraphStore


def _plan(store: GraphStore, given: str) -> PlannedProductSpec:
    """A plan file when ``given`` names one, else the saved plan of that uid."""
    from sqems.design.plan import get_plan, read_plan

    path = Path(given)
    if path.suffix.lower() == ".json" or path.is_file():
        return read_plan(path)
    return get_plan(store, given).spec


def _say(text: str, first: str = "", rest: str = "") -> None:
    """``text`` wrapped between words to the terminal, the lines after the first
    indented by ``rest``."""
    text = text.replace(" %", "\u00a0%").replace(" pts", "\u00a0pts")  # keep units on
    for line in textwrap.wrap(text, width=max(out.width, 40), initial_indent=first,
                              subsequent_indent=rest, break_long_words=False,
                              break_on_hyphens=False):  # fmt: skip
        out.print(escape(line), highlight=False)


def _pct(p: float | None) -> str:
    return "-" if p is None else f"{100 * p:.1f}%"


def _span(mean: float, low: float, high: float) -> str:
    """A rate and its interval: ``1.3% (0.0 to 5.6%)``."""
    return f"{_pct(mean)} ({100 * low:.1f} to {_pct(high)})"


def _pts(t: tuple[float, float, float] | None) -> str:
    """A signed excess in percentage points with its interval, or "—" (not significant)."""
    if t is None:
        return "—"
    return f"{100 * t[0]:+.1f} ({100 * t[1]:+.1f} to {100 * t[2]:+.1f}) pts"


def _cpk(cpk: float | None, low: float | None, high: float | None) -> str:
    if cpk is None:
        return "-"
    if low is None or high is None:
        return f"{cpk:.2f}"
    return f"{cpk:.2f} ({low:.2f} to {high:.2f})"


_MEASURE = {
    "supplier": "material defects",
    "capability": "runs outside",
    "defect_type": "defect rate",
}


def _short(x: Risk) -> str:
    """The element as the table names it: a defect type without its long name."""
    words = x.element.split()
    if x.kind == "defect_type":
        return f"{words[0]} at {words[-1]}"
    if x.kind == "capability":
        return " ".join(words[:3])  # the parameter on the machine; the step is its own
    return x.element


def _print(r: DesignReview) -> None:
    from sqems.design.review import fpy_text, gain_text, money, no_history, planned_of

    p = r.plan
    cur = r.currency
    _say(
        f"plan {p.uid} ({p.name}): {p.volume} units in batches of {p.batch_size}; "
        f"a failed unit costs {money(r.unit_cost, cur)}",
        rest="  ",
    )
    out.print(
        f"predicted first-pass yield: [bold]{fpy_text(r.fpy)}[/bold] (90 % interval)",
        highlight=False,
    )
    out.print()
    ranked = r.ranked
    if ranked:
        print_table(
            [Column("#", "number"), Column("risk"), Column("adds per unit (90 %)", "number"),
             Column("expected cost", "number")],
            [[str(x.rank), escape(x.element),
              _pts(x.excess) if x.excess is not None else _span(x.probability, x.low, x.high),
              money(x.expected_cost, cur)] for x in ranked],
            title="[bold]risks, by expected cost[/bold]",
        )  # fmt: skip
        for x in ranked:
            _say(x.why, f"{x.rank}. ", "   ")
    else:
        _say("no risk: no element of the plan is flagged by the plant's history")
    out.print()
    if r.suggestions:
        out.print("[bold]suggestions[/bold]", highlight=False)
        for k, s in enumerate(r.suggestions, 1):
            _say(f"{s.change}: FPY {fpy_text(s.fpy)}, {gain_text(s.gain)}", f"{k}. ", "   ")
            _say(s.why, "   ", "   ")
        out.print()
    fresh = {f"supplier:{e.material}" for e in r.suppliers if no_history(e)}
    if r.unflagged:
        print_table(
            [Column("element"), Column("measure"), Column("per unit (90 %)", "number")],
            [[escape(_short(x)), _MEASURE[x.kind],
              "no history (plant prior)" if x.key in fresh and x.kind == "supplier"
              else _span(x.probability, x.low, x.high)]
             for x in r.unflagged],
            title="[bold]no evidence of risk[/bold] (per unit: a supplier's material-defect "
            "rate; the share of a machine's runs outside the plan's limits; a defect type's "
            "rate at its step on the similar products - the plan's baseline, all held in the "
            "predicted FPY)",
        )  # fmt: skip
        out.print()
    excess = {x.key: x.excess for x in r.risks if x.kind == "supplier"}
    print_table(
        [Column("material", "id"), Column("supplier", "id"), Column("rate (90 %)", "number"),
         Column("excess", "number"), Column("P(worse)", "number"), Column("lots", "number")],
        [[e.material, e.supplier or "any",
          "no history (plant prior)" if no_history(e)
          else _span(e.rate.mean, e.rate.low, e.rate.high),
          _pts(excess.get(f"supplier:{e.material}")), f"{e.worse_than_plant:.2f}", f"{e.lots}"]
         for e in r.suppliers],
        title="[bold]evidence: materials and suppliers[/bold] (rate: units with a material "
        "defect per unit made from its lots; excess: over the material's average "
        f"{', '.join(sorted({_pct(e.material_rate.mean) for e in r.suppliers})) or '-'}, "
        "only when significant; P(worse) than the plant's "
        f"{_pct(r.suppliers[0].plant_rate) if r.suppliers else '-'})",
    )  # fmt: skip
    for e in r.suppliers:
        if e.alternatives:
            alts = ", ".join(f"{s} {_span(a.mean, a.low, a.high)}, P(better) {b:.2f}"
                             for s, a, b in e.alternatives[:2])  # fmt: skip
            _say(f"{e.material} elsewhere: {alts}", "- ", "  ")
    for e in r.suppliers:
        if e.explained_by is not None:
            who, what = e.explained_by
            _say(f"{e.material} from {e.supplier}: its record is {who}'s {what}'s, whose lots "
                 "went into the same units; not a risk of its own", "- ", "  ")  # fmt: skip
        if e.co_exposed:
            others = ", ".join(f"{who}'s {what}" for who, what in e.co_exposed)
            _say(f"{e.material} from {e.supplier}: cannot be told apart from {others} "
                 "(their lots went into the same units)", "- ", "  ")  # fmt: skip
    out.print()
    rows = []
    for c in r.capability:
        for m, role in [(m, "plan") for m in planned_of(c)] + [(m, "alt") for m in c.alternatives]:
            rows.append([
                c.parameter, m.machine, role, str(m.runs),
                _cpk(m.cpk, m.cpk_low, m.cpk_high),
                _pct(m.out_of_spec),
            ])  # fmt: skip
    print_table(
        [Column("parameter", "id"), Column("machine", "id"), Column("role", "id"),
         Column("runs", "number"), Column("Cpk (90 %)", "number"), Column("outside", "number")],
        rows,
        title="[bold]evidence: capability against the plan's limits[/bold]",
    )  # fmt: skip
    out.print()
    print_table(
        [Column("step", "id"), Column("defect type", "id"), Column("rate (90 %)", "number"),
         Column("CAPAs", "number")],
        [[d.step, d.defect_type, _span(d.rate.mean, d.rate.low, d.rate.high), str(len(d.capas))]
         for d in r.defects],
        title="[bold]evidence: defect types at the plan's steps on "
        f"{escape(', '.join(r.similar) or 'no similar product')}[/bold]",
    )  # fmt: skip
    out.print()
    out.print("[bold]how the FPY is predicted[/bold]", highlight=False)
    _say(r.fpy_method, "  ", "  ")
    if r.warnings:
        out.print()
        out.print(f"{len(r.warnings)} warning{'s' if len(r.warnings) != 1 else ''}:")
        for w in r.warnings:
            _say(w, "- ", "  ")


@command("review", on=design_app)
def review_cmd(
    plan: Annotated[
        str,
        typer.Argument(metavar="FILE|PLAN", help="A plan file (JSON) or the uid of a saved plan."),
    ],
    html_out: Annotated[
        Path | None, typer.Option("--html", metavar="FILE", help="Write the report as HTML.")
    ] = None,
    pdf_out: Annotated[
        Path | None,
        typer.Option("--pdf", metavar="FILE", help="Print the report as a PDF (needs Chromium)."),
    ] = None,
    draws: Annotated[
        int, typer.Option("--draws", min=100, max=100_000, help="Monte Carlo draws.")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the Monte Carlo.")] = 0,
) -> None:
    """Review a planned product against the plant's quality history: the risks its
    suppliers and machines carry, ranked by expected cost; the first-pass yield the trial
    will make, with its 90 % interval (the twin's quality model where one is fitted);
    what to change and what that gains; then the evidence. Nothing is written.

    Example: sqems design review examples/design/drive-mini.json --pdf review.pdf
    """
    from sqems.design.review import render_html, review
    from sqems.quality.dhr import render_pdf
    from sqems.simulation.runner import TWIN_DIR
    from sqems.twin.fitting import Sampler

    with graph_store(read_only=True) as (store, settings):
        spec = _plan(store, plan)
        with err.status("reviewing the plan against the plant's history…"):
            found = review(
                store,
                spec,
                draws=draws,
                seed=seed,
                twin_dir=settings.data_dir / TWIN_DIR,
                sampler=Sampler.of(settings),
            )
    _print(found)
    if html_out is not None or pdf_out is not None:
        page = render_html(found)
        if html_out is not None:
            html_out.write_text(page, encoding="utf-8")
            out.print(f"wrote {html_out}")
        if pdf_out is not None:
            with err.status("printing the PDF with Chromium…"):
                render_pdf(page, pdf_out)
            out.print(f"wrote {pdf_out}")
