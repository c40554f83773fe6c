"""Investigate a customer complaint end to end: cause, recall and fix that agree.

One complaint is one defective unit: compared with its peers it can single out nothing
(every factor it was exposed to is shared by hundreds of good units). So
:func:`investigate`

1. reads the complaint, its unit and everything built into the unit (:mod:`.case`);
2. **widens** the analysis to every unit with the complaint's defect type — found in the
   plant or complained about — reported in a stated window before the complaint, and
   says so, with the similar complaints it took in;
3. ranks the causes with :func:`~sqems.analysis.rootcause.rank_causes` (any BOM depth,
   exact tests with false-discovery control, co-exposure separation); only a
   *significant* cause is ever called a cause, and one that did not reach the
   complained unit does not explain this complaint, so the leading cause is the first
   significant one the unit was exposed to;
4. builds the **recall** that cause calls for (:mod:`.recall`: a lot's recall, a drift's
   change-point window, the batches of a shift or an operator), widened by the recall of
   every other significant cause that reached the unit and has an excess of defective
   units outside that recall (:func:`_excess_outside`): the data rank it lower, but do
   not rule it out (two lots used side by side, say), and a recall must contain every
   unit the true cause reached;
5. runs the **what-if** of the fix that cause calls for on the twin of the line where it
   acts (:mod:`.fix`), with the KPI differences and their credible intervals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

from scipy import stats

from sqems.analysis import rootcause
from sqems.analysis.rootcause import WhyStep
from sqems.errors import ValidationFailed
from sqems.figures import probability
from sqems.graph_model.nodes import Complaint
from sqems.graph_model.store import Direction, GraphStore, TimeWindow
from sqems.graph_model.traceability import Traceability
from sqems.investigation.case import ComplaintCase, case_why, read_case, unit_exposure
from sqems.investigation.fix import Fix, fix_for
from sqems.investigation.recall import SuggestedRecall, suggest_recall

DEFAULT_LOOKBACK_DAYS = 365.0
"""How far before the complaint the analysis looks for the same defect type."""

WhatIf = Callable[[Fix], dict[str, Any]]
"""Simulates a proposed fix; returns its JSON-ready result (see :func:`.fix.run_fix`)."""


@dataclass(slots=True)
class AnalysisScope:
    widened: bool
    defect_type: str | None
    window: TimeWindow | None
    similar_complaints: list[str]
    note: str

    def as_dict(self) -> dict[str, Any]:
        w = self.window
        return {
            "widened": self.widened,
            "defect_type": self.defect_type,
            "start": w.start.isoformat() if w and w.start else None,
            "end": w.end.isoformat() if w and w.end else None,
            "similar_complaints": self.similar_complaints,
            "note": self.note,
        }


@dataclass(slots=True)
class Investigation:
    case: ComplaintCase
    genealogy: dict[str, Any]
    scope: AnalysisScope
    report: rootcause.RootCauseReport
    leading: rootcause.Cause | None
    why: tuple[WhyStep, ...]
    """The 5-Why chain from this complaint to the leading cause."""
    recall: SuggestedRecall | None
    fix: Fix | None
    whatif: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)
    whatif_error: str | None = None
    """Why the fix's what-if was asked for and could not run (an unsound fit, say)."""

    def as_dict(self) -> dict[str, Any]:
        """The whole investigation, JSON-ready (``sqems investigate --json`` and the API)."""
        analysis = rootcause.report_dict(self.report)
        causes = analysis.pop("causes")
        return {
            "complaint": self.case.as_dict(),
            "genealogy": self.genealogy,
            "analysis": {**self.scope.as_dict(), **analysis},
            "causes": causes,
            "conclusion": self.report.conclusion,
            "leading_cause": self.leading.factor.key if self.leading else None,
            "why": [
                {"uid": w.uid, "label": w.label, "edge": w.edge, "why": w.why} for w in self.why
            ],
            "recall": self.recall.as_dict() if self.recall else None,
            "recall_basis": self.recall.basis_dict() if self.recall else None,
            "fix": self.fix.as_dict() if self.fix else None,
            "whatif": self.whatif,
            "whatif_error": self.whatif_error,
            "notes": self.notes,
        }


def investigate(
    store: GraphStore,
    complaint: str,
    *,
    lookback_days: float = DEFAULT_LOOKBACK_DAYS,
    alpha: float = 0.05,
    top: int = 5,
    whatif: WhatIf | None = None,
    batches: bool = True,
) -> Investigation:
    """Investigate ``complaint``; see the module docstring. The fix of the leading cause
    is always proposed; ``whatif`` simulates it (left out: proposed, not simulated).
    ``batches`` is passed to :func:`~sqems.analysis.rootcause.rank_causes` (False: units
    taken as independent trials, the baseline)."""
    if lookback_days <= 0:
        raise ValidationFailed(
            f"the lookback must be a positive number of days, got {lookback_days}"
        )
    case = read_case(store, complaint)
    genealogy = Traceability(store).upstream([complaint], of=frozenset({"Complaint"})).as_dict()
    scope, target = _widen(store, case, lookback_days)
    report = rootcause.rank_causes(store, target, alpha=alpha, top=top, batches=batches)
    notes: list[str] = []
    leading, contenders = _leading(store, case, report, notes)
    recall = fix = result = failed = None
    why: tuple[WhyStep, ...] = ()
    if leading is not None:
        why = next(
            (w for f in (leading.factor, *leading.aliases) if (w := case_why(store, case, f))), ()
        )
        recall = suggest_recall(store, leading.factor, report.window, aliases=leading.aliases)
        try:
            fix = fix_for(store, leading.factor, recall)
        except ValidationFailed as exc:
            notes.append(f"no what-if for this cause: {exc.message}")
        for other in contenders:
            name = other.factor.describe()
            extra = suggest_recall(store, other.factor, report.window, aliases=other.aliases)
            excess = _excess_outside(store, report, recall.units, extra.units, alpha)
            if excess is None:
                continue
            recall = recall.joined(extra, f"until {name} is ruled out")
            notes.append(
                f"{name} is significant too and reached unit {case.unit}; the data rank it "
                f"below {leading.factor.describe()} but do not rule it out: {excess}, so "
                "the suggested recall contains what it reached as well"
            )
        if fix is not None and whatif is not None:
            try:
                result = whatif(fix)
            except ValidationFailed as exc:
                # the cause and the recall stand without it: say why the fix's what-if
                # could not run (an unsound twin fit, say) rather than lose them
                failed = exc.message
                notes.append(f"the what-if of the fix could not run: {failed}")
    return Investigation(
        case, genealogy, scope, report, leading, why, recall, fix, result, notes, failed
    )


def _excess_outside(
    store: GraphStore,
    report: rootcause.RootCauseReport,
    recall: set[str],
    other: set[str],
    alpha: float,
) -> str | None:
    """Whether the units ``other`` (another cause's recall) reached outside ``recall``
    are defective more often than the rest of the analysed population, in words (None
    when not: at the ``alpha`` level, one-sided Fisher exact test). Only units of the
    analysed products count, as in the population."""
    counted = recall | other
    products = set(report.products)
    made = {e.dst: e.src for e in store.edges(counted, {"PRODUCED": Direction.IN})}
    product = {e.src: e.dst for e in store.edges(set(made.values()), {"OF_PRODUCT": Direction.OUT})}
    ours = {u for u in counted if product.get(made.get(u, "")) in products}
    defective = set(report.defectives.units)
    outside = (other - recall) & ours
    n_out, k_out = len(outside), len(outside & defective)
    n_rest = report.population - len(ours)
    k_rest = report.defective_in_population - len(ours & defective)
    if k_out == 0 or n_rest <= 0 or k_rest < 0:
        return None
    table = [[k_out, n_out - k_out], [k_rest, max(n_rest - k_rest, 0)]]
    p = float(stats.fisher_exact(table, alternative="greater").pvalue)
    if p >= alpha:
        return None
    return (
        f"{k_out} of the {n_out} units it reached outside the leading cause's recall are "
        f"defective, against {k_rest} of the other {n_rest} (one-sided Fisher exact test: "
        f"p = {probability(p)} < {alpha:g})"
    )


def _widen(
    store: GraphStore, case: ComplaintCase, lookback_days: float
) -> tuple[AnalysisScope, rootcause.Defectives]:
    if case.defect_type is None:
        target = rootcause.from_complaints(store, [case.uid])
        note = (
            f"complaint {case.uid} has no defect type, so it cannot be compared with others "
            "of its kind: its unit alone is analysed, which can rarely single out a cause; "
            "classify the complaint (a defect type) to widen the analysis"
        )
        return AnalysisScope(False, None, None, [], note), target
    end = case.received_at
    start = end - timedelta(days=lookback_days)
    window = TimeWindow(start.astimezone(UTC), end.astimezone(UTC))
    target = rootcause.from_defect_type(store, case.defect_type, window)
    similar = _similar_complaints(store, case, window)
    what = case.defect_type_name or case.defect_type
    note = (
        f"one complaint alone cannot single out a cause, so the analysis takes in every unit "
        f"with {what} ({case.defect_type}) found in the plant or complained about from "
        f"{start:%Y-%m-%d} to {end:%Y-%m-%d} ({lookback_days:g} days up to the complaint): "
        f"{len(target.units)} units, {len(similar)} other complaints among them"
    )
    if case.unit not in target.units:
        raise ValidationFailed(
            f"the unit of complaint {case.uid} ({case.unit}) is not among the units with "
            f"{case.defect_type} in the window: does it have a producing batch?"
        )
    return AnalysisScope(True, case.defect_type, window, similar, note), target


def _similar_complaints(store: GraphStore, case: ComplaintCase, window: TimeWindow) -> list[str]:
    reports = [e.src for e in store.edges([str(case.defect_type)], {"OF_TYPE": Direction.IN})]
    return sorted(
        uid
        for uid, node in store.get_many(reports).items()
        if isinstance(node, Complaint) and uid != case.uid and window.overlaps(node.interval())
    )


def _leading(
    store: GraphStore,
    case: ComplaintCase,
    report: rootcause.RootCauseReport,
    notes: list[str],
) -> tuple[rootcause.Cause | None, list[rootcause.Cause]]:
    """The leading cause (the first significant one that reached the unit) and the
    other significant causes that reached it."""
    significant = [c for c in report.causes if c.significant]
    if not significant:
        return None, []
    exposure = unit_exposure(store, case)

    def reached(c: rootcause.Cause) -> bool:
        return any(f in exposure for f in (c.factor, *c.aliases))

    for c in significant:
        if reached(c):
            if c is not significant[0]:
                first = significant[0].factor
                notes.append(
                    f"the strongest cause of {case.defect_type}, {first.describe()}, did not "
                    f"reach unit {case.unit}: this complaint is put down to the first "
                    f"significant cause that did, {c.factor.describe()}"
                )
            return c, [o for o in significant if o is not c and reached(o)]
    names = ", ".join(c.factor.describe() for c in significant[:3])
    notes.append(
        f"none of the significant causes of {case.defect_type} ({names}) reached unit "
        f"{case.unit}: this complaint looks like the defect type's background rate (or a "
        "no-fault-found return); no recall or fix is suggested for it"
    )
    return None, []
