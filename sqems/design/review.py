"""The design review of a planned product: the plant's quality history held against the
plan, its risks ranked by expected cost, the first-pass yield it will make, and what
would make that yield better.

:func:`review` gathers the evidence on every element of the plan - each BOM item's
supplier (:mod:`~sqems.design.suppliers`), each planned parameter's machines
(:mod:`~sqems.design.capability`), each step's defect types on similar products
(:mod:`~sqems.design.precedents`) - and then:

**Risks.** An element is a risk only when its evidence flags it: a supplier whose
material-defect rate is above the plant's with posterior probability 0.95 or more
(``SupplierEvidence.flagged``, which already clears a pair whose excess another
supplier's lots on the same units account for); a planned machine whose Cpk
against the plan's limits lies below :data:`INCAPABLE_BELOW` even at the upper end of
its 90 % interval (its spread is wider than the tolerance, not merely unproven). Every
other element is listed with ``significant=False`` - "no evidence of risk" - and never
ranked; so are the defect types that arise at the plan's steps: they are what the
similar products show at those steps, the plan's baseline, which the FPY holds, not a
finding about this plan. Each element carries the per-unit failure probability it
contributes with its 90 % interval: a supplier its own material-defect rate (never
negative; with ``excess``, its difference from the material's average, when that is
significant - see below - which is what a flagged supplier is costed at); a parameter
the fraction of runs expected outside the plan's limits (a run out of limits fails its
whole batch, so per unit the same fraction; a machine of a planned kind its share); a
defect type its rate. Expected failures and cost are over the plan's ``volume`` at the
plan's ``unit_cost`` (else the cost model's), and the ranked risks are sorted by
expected cost.

**First-pass yield.** A unit passes first time when it has no defect and its batch ran
inside the plan's limits at every planned parameter. The prediction is Monte Carlo over
``draws`` draws of everything the history leaves uncertain, each draw a whole trial:

* per unit, the defect probability is the sum of the plan's steps' defect-type rates
  (beta posteriors on the similar products; they already hold each material's average
  over its suppliers) and, for each BOM item, its supplier's rate less that average -
  but only when the difference is significant: the supplier is flagged worse (and not
  explained by another pair's lots), or credibly better (P(below the material's
  average) >= 0.95) with an advantage of its own. A material defect counts against
  every material of the unit, so a supplier whose lots happened to go with another
  material's good lots looks better without being so; its advantage counts only when
  it holds against the material's other suppliers on units that shared the other
  materials' lots (:func:`_advantage_stands`). Otherwise it adds 0. A swap to an
  alternative supplier follows the same rule. At a step whose
  twin quality model is in the twin cache (:func:`sqems.twin.fitting.cached_model`:
  fitted before, never fitted here) the model's posterior draw at the planned machine
  over its historical parameter actuals replaces that step's empirical rates;
* per batch, each planned parameter's run is out of limits with the machine's drawn
  out-of-spec fraction (the average over its machines for a machine kind);
* the plan's ``volume`` is made in batches of ``batch_size``: the batches that fail
  are drawn as a binomial count, the good units of the others as a binomial of their
  units (exact: within a draw every unit of a batch in limits has the same defect
  probability, and batches are independent).

The 5 % and 95 % quantiles of the draws' yields form the 90 % predictive interval for
the yield the trial will realise - the history's uncertainty and the trial's own luck.

**Suggestions.** For every ranked risk, the change the history best supports: another
supplier of the material with P(better) >= :data:`BETTER_AT`; another machine that is
capable at the plan's limits (or, if none is, the alternative with the fewest runs
expected outside them, said so); the limits the planned machine holds. Each gets the
FPY recomputed with the change on the same random numbers (common random numbers: the
uniforms that decide the batches and the units, and every other element's posterior
draws, are reused), so the difference between the two yields is the change's; its 90 %
interval is the gain's, and a gain whose interval holds 0 is reported as changing
nothing.
"""

from __future__ import annotations

import html
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from sqems.analysis.kpis import CostModel
from sqems.design.capability import (
    MachineCapability,
    StepCapability,
    out_of_spec_draws,
    step_capability,
    step_history,
)
from sqems.design.plan import PlannedProductSpec, RoutingStep, check_plan
from sqems.design.precedents import StepDefects, defect_history, similar_products, step_defects
from sqems.design.rates import CREDIBLE, Rate, rate_draws, worse_than
from sqems.design.suppliers import (
    FLAG_AT,
    History,
    SupplierEvidence,
    history,
    prior,
    supplier_evidence,
)
from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import Machine
from sqems.graph_model.store import Direction, GraphStore
from sqems.twin.fitting import Sampler, cached_model
from sqems.twin.line import LineTwin, StepTwin, build_twin
from sqems.twin.quality import QualityModel

__all__ = [
    "BETTER_AT",
    "INCAPABLE_BELOW",
    "DesignReview",
    "Risk",
    "Suggestion",
    "render_html",
    "review",
]

log = logging.getLogger(__name__)
IN, OUT = Direction.IN, Direction.OUT
FloatArray = npt.NDArray[np.float64]
Triple = tuple[float, float, float]
"""(mean, low, high): an estimate and its 90 % interval."""

DRAWS = 2000
TAIL = (1.0 - CREDIBLE) / 2.0
INCAPABLE_BELOW = 1.0
"""A planned machine is a risk when even the upper end of its Cpk's 90 % interval lies
below this: its runs spread wider than the plan's tolerance (more than 0.27 % of them
outside it when centred). Between this and 1.33 it is unproven, not shown to fail."""
BETTER_AT = 0.9
"""An alternative supplier is suggested when P(its rate < the planned one's) reaches this."""

RiskKind = Literal["supplier", "capability", "defect_type"]


@dataclass(frozen=True, slots=True)
class Risk:
    rank: int
    """1, 2, ... for the ranked (significant) risks by expected cost; 0 for the rest."""
    kind: RiskKind
    element: str
    probability: float
    """Per-unit failure probability the element contributes (posterior mean)."""
    low: float
    high: float
    expected_failures: float
    expected_cost: float
    low_cost: float
    high_cost: float
    significant: bool
    why: str
    key: str = ""
    """Which Monte Carlo term the element is (for suggestions)."""
    excess: Triple | None = None
    """A supplier's rate less its material's average over all suppliers - what it adds to
    (or, credibly better, takes from) the per-unit failure probability of the FPY
    prediction; None when the difference is not significant (it then adds nothing)."""


@dataclass(frozen=True, slots=True)
class Suggestion:
    risk: str
    """The risk's element."""
    change: str
    fpy: Triple
    gain: Triple
    """FPY with the change less FPY without, on the same random numbers."""
    why: str

    @property
    def changes_nothing(self) -> bool:
        """The gain's interval holds 0: the history cannot tell the change from none."""
        return self.gain[1] <= 0.0 <= self.gain[2]


@dataclass(frozen=True, slots=True)
class DesignReview:
    plan: PlannedProductSpec
    suppliers: list[SupplierEvidence]
    capability: list[StepCapability]
    defects: list[StepDefects]
    risks: list[Risk]
    """The ranked risks first (by expected cost), then every element without evidence
    of risk (``significant`` False, rank 0)."""
    fpy: Triple
    fpy_method: str
    suggestions: list[Suggestion]
    warnings: list[str]
    unit_cost: float
    currency: str
    draws: int
    similar: list[str]
    twin_steps: list[str] = field(default_factory=list)
    """Steps whose defect probability came from the twin's quality model."""
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ranked(self) -> list[Risk]:
        """The risks the evidence flags, by expected cost."""
        return [r for r in self.risks if r.significant]

    @property
    def unflagged(self) -> list[Risk]:
        """The elements without evidence of risk."""
        return [r for r in self.risks if not r.significant]


# --- the Monte Carlo model ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Model:
    """Per draw: each term of the per-unit defect probability, and each planned
    parameter's per-batch probability of a run out of the plan's limits."""

    unit: dict[str, FloatArray]
    runs: dict[str, FloatArray]

    def changed(
        self, unit: dict[str, FloatArray] | None = None, runs: dict[str, FloatArray] | None = None
    ) -> _Model:
        return _Model({**self.unit, **(unit or {})}, {**self.runs, **(runs or {})})


@dataclass(frozen=True, slots=True)
class _Noise:
    """The uniforms that decide one trial per draw, shared by every scenario."""

    batches: FloatArray
    partial: FloatArray
    units: FloatArray


def _noise(draws: int, seed: int) -> _Noise:
    rng = np.random.default_rng([seed, 0])
    u = np.clip(rng.random((3, draws)), 1e-12, 1.0 - 1e-12)
    return _Noise(u[0], u[1], u[2])


def _simulate(model: _Model, plan: PlannedProductSpec, noise: _Noise) -> FloatArray:
    """The first-pass yield of each draw's trial."""
    draws = noise.units.size
    p = np.zeros(draws)
    for term in model.unit.values():
        p = p + term
    p = np.clip(p, 0.0, 1.0)
    passes = np.ones(draws)
    for term in model.runs.values():
        passes = passes * (1.0 - np.clip(term, 0.0, 1.0))
    fail = 1.0 - passes
    full, rest = divmod(plan.volume, plan.batch_size)
    failed = stats.binom.ppf(noise.batches, full, fail) if full else np.zeros(draws)
    made = (full - failed) * plan.batch_size
    if rest:
        made = made + rest * (noise.partial >= fail)
    good = stats.binom.ppf(noise.units, made, 1.0 - p)
    good = np.where(made > 0, good, 0.0)
    return np.asarray(good / plan.volume, dtype=np.float64)


def _triple(values: FloatArray) -> Triple:
    low, high = np.quantile(values, [TAIL, 1.0 - TAIL])
    return (float(values.mean()), float(low), float(high))


def _rng(seed: int, key: str) -> np.random.Generator:
    """A stream of its own for each term, so that replacing one term leaves the others'
    draws as they were."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


# --- evidence -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Evidence:
    suppliers: list[SupplierEvidence]
    capability: list[StepCapability]
    defects: list[StepDefects]
    similar: list[str]
    machines: dict[str, list[str]]
    """Step -> the machines the plan runs it on."""
    warnings: list[str]
    known: History


def _gather(store: GraphStore, plan: PlannedProductSpec, seed: int) -> _Evidence:
    warnings = check_plan(store, plan)
    known = history(store)
    plant = prior(store, known)
    suppliers = [supplier_evidence(store, item, plant, seed=seed, known=known) for item in plan.bom]
    capability: list[StepCapability] = []
    machines: dict[str, list[str]] = {}
    for step in plan.routing:
        runs = step_history(store, step.step)
        capability += step_capability(store, step, history=runs, seed=seed)
        machines[step.step] = _planned_machines(store, step, {m for m, _ in runs})
        if not machines[step.step]:
            warnings.append(f"no machine runs {step.step} as planned: its defects are the step's")
    similar = list(plan.similar_to) or similar_products(store, [s.step for s in plan.routing])
    if not similar:
        warnings.append(
            "no product of the plant ran the plan's steps: there is no similar product to "
            "learn defect rates from (name one in similar_to)"
        )
    types = defect_history(store)
    defects = [
        d for step in plan.routing for d in step_defects(store, step.step, similar, known=types)
    ]
    return _Evidence(suppliers, capability, defects, similar, machines, warnings, known)


def _planned_machines(store: GraphStore, step: RoutingStep, ran: set[str]) -> list[str]:
    """The machines the plan runs ``step`` on: the named one, those of the named kind,
    or every machine that ran or may run the step."""
    if step.machine is not None:
        return [step.machine]
    able = {e.src for e in store.edges([step.step], {"CAN_PERFORM": IN})}
    candidates = sorted(ran | able)
    if step.machine_kind is None:
        return candidates
    nodes = store.get_many(candidates)
    return [
        m
        for m in candidates
        if isinstance(n := nodes.get(m), Machine) and n.kind == step.machine_kind
    ]


# --- the twin ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Twin:
    """The cached quality models of the plan's steps and the history they apply to."""

    folder: Path
    sampler: Sampler
    store: GraphStore
    lines: dict[str, LineTwin | None] = field(default_factory=dict)
    models: dict[str, tuple[StepTwin, QualityModel] | None] = field(default_factory=dict)

    def model(self, step: str, machines: Sequence[str]) -> tuple[StepTwin, QualityModel] | None:
        if step in self.models:
            return self.models[step]
        found = None
        for line in self._lines_of(machines):
            if not (self.folder / line).is_dir():
                continue  # nothing fitted for the line: no need to read its history
            twin = self._twin(line)
            if twin is None:
                continue
            mine = next((s for s in twin.steps if s.uid == step), None)
            if mine is None or not mine.modelled:
                continue
            model = cached_model(mine, self.folder / line, self.sampler)
            if model is not None:
                found = (mine, model)
                break
        self.models[step] = found
        return found

    def _lines_of(self, machines: Sequence[str]) -> list[str]:
        return sorted({e.dst for e in self.store.edges(list(machines), {"PART_OF": OUT})})

    def _twin(self, line: str) -> LineTwin | None:
        if line not in self.lines:
            try:
                self.lines[line] = build_twin(self.store, line)
            except ValidationFailed as err:  # a line without history has no twin to use
                log.info("no twin of %s for the design review: %s", line, err)
                self.lines[line] = None
        return self.lines[line]


def _twin_draws(
    step: StepTwin, model: QualityModel, machines: Sequence[str], draws: int
) -> FloatArray:
    """Per draw, the model's defect probability of a unit at ``step`` on the planned
    machines, averaged over their historical runs' actuals (a machine without runs
    there: over all the step's runs, as a new member of its machine population)."""
    h = step.history
    on = [step.machines.index(m) for m in machines if m in step.machines]
    mask = np.isin(h.machine, on) if on else np.ones(h.runs, dtype=bool)
    if not mask.any():
        mask = np.ones(h.runs, dtype=bool)
    x = h.x[mask]
    known = [m for m in machines if m in step.machines]
    names: npt.NDArray[np.str_] | str
    if known:
        names = np.array([step.machines[i] for i in h.machine[mask]])
    else:
        names = machines[0] if machines else "(new machine)"
    if list(model.parameters) != list(h.parameters):
        raise ValidationFailed(
            f"{step.uid}: the cached quality model's parameters ({', '.join(model.parameters)}) "
            f"are not the step's ({', '.join(h.parameters)})"
        )
    out = np.empty(draws)
    for d in range(draws):
        out[d] = float(model.probability(d * model.draws // draws, x, names).mean())
    return out


# --- terms ---------------------------------------------------------------------------------


def _supplier_key(e: SupplierEvidence) -> str:
    return f"supplier:{e.material}"


def _supplier_term(
    rate: Rate, material: Rate, adjusts: bool, draws: int, rng: np.random.Generator
) -> FloatArray:
    """Per draw, what the supplier adds to the per-unit failure probability: its rate less
    its material's average when the difference is significant (``adjusts``), else 0 -
    the steps' defect-type rates already carry the material's average."""
    own = rate_draws(rate, draws, rng)
    return own - material.mean if adjusts else np.zeros(draws)


def _credibly_better(rate: Rate, material: Rate) -> bool:
    """P(the rate is below the material's average) reaches :data:`FLAG_AT`."""
    return 1.0 - worse_than(rate, material.mean) >= FLAG_AT


def _adjusts(e: SupplierEvidence, known: History) -> bool:
    """Whether the planned supplier's difference from its material's average enters the
    FPY: flagged worse (and not explained by another pair's lots), or credibly better and
    not co-exposed - its advantage holds against the material's other suppliers on units
    that shared the other materials' lots (:func:`_advantage_stands`)."""
    if e.supplier is None:
        return False
    if e.flagged:
        return True
    return (
        _credibly_better(e.rate, e.material_rate)
        and not e.co_exposed
        and _advantage_stands(known, e.supplier, e.material)
    )


def _alternative_adjusts(
    known: History, supplier: str, material: str, rate: Rate, average: Rate, plant: float
) -> bool:
    """The same rule for an alternative supplier of a swap: credibly worse than the plant,
    or credibly better than the material's average on units it shared with the others."""
    if worse_than(rate, plant) >= FLAG_AT:
        return True
    return _credibly_better(rate, average) and _advantage_stands(known, supplier, material)


def _advantage_stands(known: History, supplier: str, material: str) -> bool:
    """Whether ``supplier``'s lower material-defect rate is its own. A material defect
    counts against every material of the unit, so a supplier whose lots happened to go
    into units with another material's good lots looks better than its peers without
    being so. The units are grouped by the lots of the other materials they hold; only
    groups holding both this supplier's and another supplier's lots of ``material``
    compare like with like. Its advantage stands when, over those groups, it has fewer
    defective units than its share of each group's would give, by 1.645 standard
    deviations (one-sided 95 %, hypergeometric within each group); without such groups
    the history cannot separate it from the lots it went with."""
    own = known.pairs.get((supplier, material))
    if own is None:
        return False
    others: set[str] = set()
    for p in known.of_material(material):
        if p.supplier != supplier:
            others |= p.units
    context: dict[str, set[str]] = {u: set() for u in own.units | others}
    for (_, m), p in known.pairs.items():
        if m == material:
            continue
        for lot in p.lots:
            for u in known.units_of_lot.get(lot, set()) & context.keys():
                context[u].add(lot)
    groups: dict[frozenset[str], list[int]] = {}
    for u, lots in context.items():
        g = groups.setdefault(frozenset(lots), [0, 0, 0, 0])  # own, own bad, other, other bad
        bad = int(u in known.defective)
        if u in own.units:
            g[0] += 1
            g[1] += bad
        else:
            g[2] += 1
            g[3] += bad
    observed = expected = variance = 0.0
    for a, a_bad, b, b_bad in groups.values():
        n, k = a + b, a_bad + b_bad
        if not a or not b or n < 2:
            continue
        observed += a_bad
        expected += k * a / n
        variance += k * (a / n) * (b / n) * (n - k) / (n - 1)
    if variance <= 0.0:
        return False
    return bool((observed - expected) / variance**0.5 <= -1.645)


def _run_key(step: str, parameter: str) -> str:
    return f"run:{step}:{parameter}"


def planned_of(c: StepCapability) -> list[MachineCapability]:
    """The planned machine of a step's parameter, or every machine of its planned kind."""
    return c.planned if isinstance(c.planned, list) else [c.planned]


def _oos_term(
    caps: Sequence[MachineCapability], draws: int, rng: np.random.Generator
) -> FloatArray | None:
    """Per draw, the probability that a batch's run of this parameter is out of limits:
    the average over the machines (a batch runs on one of them); None when no machine
    has the runs to say."""
    usable = [c for c in caps if c.mean is not None and c.sigma is not None and c.runs >= 2]
    if not usable:
        return None
    stacked = np.stack([out_of_spec_draws(c, draws, rng) for c in usable])
    return np.asarray(stacked.mean(axis=0), dtype=np.float64)


def _build(
    plan: PlannedProductSpec,
    ev: _Evidence,
    draws: int,
    seed: int,
    twin: _Twin | None,
    notes: list[str],
) -> tuple[_Model, list[str]]:
    unit: dict[str, FloatArray] = {}
    runs: dict[str, FloatArray] = {}
    used: list[str] = []
    for e in ev.suppliers:
        if e.supplier is not None:
            key = _supplier_key(e)
            unit[key] = _supplier_term(
                e.rate, e.material_rate, _adjusts(e, ev.known), draws, _rng(seed, key)
            )
    for step in plan.routing:
        key = f"step:{step.step}"
        found = twin.model(step.step, ev.machines[step.step]) if twin is not None else None
        if found is not None:
            unit[key] = _twin_draws(found[0], found[1], ev.machines[step.step], draws)
            used.append(step.step)
            continue
        rates = np.zeros(draws)
        for d in ev.defects:
            if d.step == step.step:
                rates = rates + rate_draws(d.rate, draws, _rng(seed, f"{key}:{d.defect_type}"))
        unit[key] = rates
    for c in ev.capability:
        key = _run_key(c.step, c.parameter)
        term = _oos_term(planned_of(c), draws, _rng(seed, key))
        if term is None:
            notes.append(
                f"{c.parameter} at {c.step}: no planned machine has runs of it, so runs out "
                "of its limits are not in the prediction"
            )
            continue
        runs[key] = term
    return _Model(unit, runs), used


# --- risks ---------------------------------------------------------------------------------


def _risk(
    kind: RiskKind,
    element: str,
    values: FloatArray,
    significant: bool,
    why: str,
    key: str,
    plan: PlannedProductSpec,
    cost: float,
) -> Risk:
    mean, low, high = _triple(values)
    n = plan.volume
    return Risk(
        rank=0,
        kind=kind,
        element=element,
        probability=mean,
        low=low,
        high=high,
        expected_failures=mean * n,
        expected_cost=mean * n * cost,
        low_cost=low * n * cost,
        high_cost=high * n * cost,
        significant=significant,
        why=why,
        key=key,
    )


def _pct(p: float | None) -> str:
    return "-" if p is None else f"{100.0 * p:.2f} %"


def _pts(p: float) -> str:
    """A signed difference of rates in percentage points (the unit said by the caller)."""
    return f"{100.0 * p:+.2f}"


def _num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _limits(lo: float | None, hi: float | None) -> str:
    return f"[{_num(lo, 3).rstrip('0').rstrip('.') if lo is not None else '-'}, " + (
        f"{_num(hi, 3).rstrip('0').rstrip('.') if hi is not None else '-'}]"
    )


def _supplier_element(e: SupplierEvidence) -> str:
    return f"{e.material} from {e.supplier}" if e.supplier else f"{e.material} (any supplier)"


def no_history(e: SupplierEvidence) -> bool:
    """The planned supplier never supplied the material: its rate is the plant prior."""
    return e.supplier is not None and e.rate.units == 0


def _supplier_why(e: SupplierEvidence, excess: Triple | None = None) -> str:
    r = e.rate
    if no_history(e):
        return (
            f"{e.supplier} never supplied {e.material}: no history (plant prior, "
            f"{_pct(r.mean)} ({_pct(r.low)} to {_pct(r.high)})); it adds nothing to the "
            "prediction"
        )
    text = (
        f"{r.defective} of {r.units} units made from {e.supplier or 'its'} lots of {e.material} "
        f"had a material defect: {_pct(r.mean)} ({_pct(r.low)} to {_pct(r.high)}) against the "
        f"plant's {_pct(e.plant_rate)} and the material's {_pct(e.material_rate.mean)}; "
        f"P(worse than the plant) = {e.worse_than_plant:.2f}"
    )
    if excess is not None:
        text += (
            f"; it adds {_pts(excess[0])} ({_pts(excess[1])} to {_pts(excess[2])}) "
            "percentage points per unit over the material's average"
        )
    if e.explained_by is not None:
        supplier, material = e.explained_by
        text += (
            f"; not a risk of its own: {supplier}'s {material}, whose lots went into the "
            "same units, accounts for it"
        )
    if e.co_exposed:
        pairs = ", ".join(f"{s}'s {m}" for s, m in e.co_exposed)
        text += f"; the history cannot tell it apart from {pairs} (their lots went together)"
    return text


def _cap_element(c: MachineCapability) -> str:
    return f"{c.parameter} on {c.machine} at {c.step}"


def _cap_why(c: MachineCapability) -> str:
    return (
        f"Cpk {_num(c.cpk)} ({_num(c.cpk_low)} to {_num(c.cpk_high)}) over {c.runs} runs "
        f"against the plan's {_limits(c.lsl, c.usl)}; {_pct(c.out_of_spec)} of runs expected "
        f"outside ({_pct(c.out_of_spec_low)} to {_pct(c.out_of_spec_high)})"
    )


def _incapable(c: MachineCapability) -> bool:
    return c.cpk_high is not None and c.cpk_high < INCAPABLE_BELOW


def _risks(
    plan: PlannedProductSpec, ev: _Evidence, model: _Model, draws: int, seed: int, cost: float
) -> list[Risk]:
    found: list[Risk] = []
    n = plan.volume
    for e in ev.suppliers:
        if e.supplier is None:
            continue
        key = _supplier_key(e)
        own = _triple(rate_draws(e.rate, draws, _rng(seed, f"{key}:own")))
        term = model.unit[key]
        excess = _triple(term) if term.any() else None
        # a flagged supplier costs what it adds over its material's average; a credibly
        # better one is no risk, and one without significant evidence adds nothing
        add = excess if e.flagged and excess is not None else (0.0, 0.0, 0.0)
        found.append(
            Risk(
                rank=0,
                kind="supplier",
                element=_supplier_element(e),
                probability=own[0],
                low=own[1],
                high=own[2],
                expected_failures=max(add[0], 0.0) * n,
                expected_cost=max(add[0], 0.0) * n * cost,
                low_cost=max(add[1], 0.0) * n * cost,
                high_cost=max(add[2], 0.0) * n * cost,
                significant=e.flagged,
                why=_supplier_why(e, excess),
                key=key,
                excess=excess,
            )
        )
    for c in ev.capability:
        key = _run_key(c.step, c.parameter)
        usable = [m for m in planned_of(c) if m.runs >= 2 and m.mean is not None]
        for m in usable:
            # a machine of a planned kind runs its share of the batches
            share = 1.0 / len(usable)
            values = share * out_of_spec_draws(m, draws, _rng(seed, f"{key}:{m.machine}"))
            why = _cap_why(m) + (f"; it runs 1 in {len(usable)} batches" if share < 1 else "")
            found.append(
                _risk(
                    "capability",
                    _cap_element(m),
                    values,
                    _incapable(m),
                    why,
                    key,
                    plan,
                    cost,
                )
            )
    for d in ev.defects:
        values = rate_draws(d.rate, draws, _rng(seed, f"step:{d.step}:{d.defect_type}"))
        found.append(
            _risk(
                "defect_type",
                f"{d.defect_type} {d.name} at {d.step}",
                values,
                False,
                f"{d.rate.defective} of {d.rate.units} units of the similar products: "
                f"{_pct(d.rate.mean)} ({_pct(d.rate.low)} to {_pct(d.rate.high)})",
                f"step:{d.step}",
                plan,
                cost,
            )
        )
    ranked = sorted(
        (r for r in found if r.significant), key=lambda r: (-r.expected_cost, r.element)
    )
    rest = sorted(
        (r for r in found if not r.significant), key=lambda r: (-r.expected_cost, r.element)
    )
    return [replace(r, rank=i + 1) for i, r in enumerate(ranked)] + rest


# --- suggestions ---------------------------------------------------------------------------


def _suggestions(
    plan: PlannedProductSpec,
    ev: _Evidence,
    risks: Sequence[Risk],
    model: _Model,
    noise: _Noise,
    base: FloatArray,
    draws: int,
    seed: int,
    twin: _Twin | None,
    twin_steps: Sequence[str],
) -> list[Suggestion]:
    out: list[Suggestion] = []

    def add(risk: Risk, change: str, changed: _Model, why: str) -> None:
        if any(s.change == change for s in out):
            return  # one change for two risks (two parameters on one machine) is one change
        fpy = _simulate(changed, plan, noise)
        out.append(Suggestion(risk.element, change, _triple(fpy), _triple(fpy - base), why))

    by_key = {_supplier_key(e): e for e in ev.suppliers}
    caps = {(c.step, c.parameter): c for c in ev.capability}
    for risk in (r for r in risks if r.significant):
        if risk.kind == "supplier":
            e = by_key[risk.key]
            better = [a for a in e.alternatives if a[2] >= BETTER_AT]
            if not better:
                out.append(
                    Suggestion(
                        risk.element,
                        f"no other supplier of {e.material} with a better record",
                        _triple(base),
                        (0.0, 0.0, 0.0),
                        f"no other supplier is better than {e.supplier} with probability "
                        f">= {BETTER_AT}",
                    )
                )
                continue
            alt, rate, p = min(better, key=lambda a: (-a[2], a[1].mean, a[0]))
            adjusts = _alternative_adjusts(
                ev.known, alt, e.material, rate, e.material_rate, e.plant_rate
            )
            term = _supplier_term(
                rate, e.material_rate, adjusts, draws, _rng(seed, f"{risk.key}:{alt}")
            )
            add(
                risk,
                f"buy {e.material} from {alt}",
                model.changed(unit={risk.key: term}),
                f"{alt}: {_pct(rate.mean)} ({_pct(rate.low)} to {_pct(rate.high)}) over "
                f"{rate.units} units; P(better than {e.supplier}) = {p:.2f}",
            )
        elif risk.kind == "capability":
            _, step, parameter = risk.key.split(":", 2)
            c = caps[(step, parameter)]
            planned = next(m for m in planned_of(c) if _cap_element(m) == risk.element)
            _machine_change(add, risk, plan, ev, c, planned, model, draws, seed, twin, twin_steps)
            _tolerance_change(add, risk, c, planned, model, draws, seed)
    return out


def _machine_change(
    add: Callable[[Risk, str, _Model, str], None],
    risk: Risk,
    plan: PlannedProductSpec,
    ev: _Evidence,
    c: StepCapability,
    planned: MachineCapability,
    model: _Model,
    draws: int,
    seed: int,
    twin: _Twin | None,
    twin_steps: Sequence[str],
) -> None:
    """Run the step on the most capable other machine: every planned parameter of the
    step then takes that machine's out-of-spec draws (and, where the twin serves the
    step, its defect probability)."""
    usable = [a for a in c.alternatives if a.mean is not None and a.runs >= 2]
    if not usable:
        return
    capable = [a for a in usable if a.capable]
    pool = capable or usable
    best = min(pool, key=lambda a: (a.out_of_spec if a.out_of_spec is not None else 1.0, a.machine))
    if not capable and not (
        best.out_of_spec_high is not None
        and planned.out_of_spec_low is not None
        and best.out_of_spec_high < planned.out_of_spec_low
    ):
        return
    runs: dict[str, FloatArray] = {}
    for other in ev.capability:
        if other.step != c.step:
            continue
        same = next((a for a in other.alternatives if a.machine == best.machine), None)
        if same is None or same.mean is None or same.runs < 2:
            continue
        key = _run_key(other.step, other.parameter)
        runs[key] = out_of_spec_draws(same, draws, _rng(seed, f"{key}:{best.machine}"))
    unit: dict[str, FloatArray] = {}
    if twin is not None and c.step in twin_steps:
        found = twin.model(c.step, [best.machine])
        if found is not None:
            unit[f"step:{c.step}"] = _twin_draws(found[0], found[1], [best.machine], draws)
    what = "capable" if best.capable else "not capable either, but fewer runs outside"
    add(
        risk,
        f"run {c.step} on {best.machine}",
        model.changed(unit=unit, runs=runs),
        f"{best.machine} ({what}): {_cap_why(best)}",
    )


def _tolerance_change(
    add: Callable[[Risk, str, _Model, str], None],
    risk: Risk,
    c: StepCapability,
    planned: MachineCapability,
    model: _Model,
    draws: int,
    seed: int,
) -> None:
    """Widen the parameter's limits to those the planned machine holds."""
    if planned.holds is None:
        return
    lo, hi = planned.holds
    widened = replace(
        planned,
        lsl=None if planned.lsl is None else lo,
        usl=None if planned.usl is None else hi,
    )
    key = _run_key(c.step, c.parameter)
    term = out_of_spec_draws(widened, draws, _rng(seed, f"{key}:holds"))
    add(
        risk,
        f"widen {c.parameter} to {_limits(widened.lsl, widened.usl)} "
        f"(what {planned.machine} holds)",
        model.changed(runs={key: term}),
        f"{planned.machine} holds {_limits(widened.lsl, widened.usl)} with its Cpk's lower "
        f"bound at 1.33; the plan asks for {_limits(planned.lsl, planned.usl)}",
    )


# --- the review ---------------------------------------------------------------------------


def review(
    store: GraphStore,
    plan: PlannedProductSpec,
    *,
    draws: int = DRAWS,
    seed: int = 0,
    costs: CostModel | None = None,
    twin_dir: Path | None = None,
    sampler: Sampler | None = None,
) -> DesignReview:
    """The design review of ``plan`` against the plant's history in ``store``.

    ``twin_dir`` is the twin's model cache (the data directory's ``twin`` folder, a
    folder per line): a step whose model for the present history was fitted there with
    ``sampler`` (default: :class:`~sqems.twin.fitting.Sampler`'s defaults, the server's
    unless configured otherwise) gets its defect probability from the model; the review
    never fits one. Without it every step uses its empirical rates."""
    if not 100 <= draws <= 100_000:
        raise ValidationFailed(f"draws must be between 100 and 100000, got {draws}")
    costs = costs or CostModel()
    cost = plan.unit_cost if plan.unit_cost is not None else costs.cost_of(plan.uid)
    ev = _gather(store, plan, seed)
    twin = (
        _Twin(twin_dir, sampler or Sampler(), store)
        if twin_dir is not None and twin_dir.is_dir()
        else None
    )
    notes: list[str] = []
    model, used = _build(plan, ev, draws, seed, twin, notes)
    noise = _noise(draws, seed)
    base = _simulate(model, plan, noise)
    risks = _risks(plan, ev, model, draws, seed, cost)
    suggestions = _suggestions(plan, ev, risks, model, noise, base, draws, seed, twin, used)
    return DesignReview(
        plan=plan,
        suppliers=ev.suppliers,
        capability=ev.capability,
        defects=ev.defects,
        risks=risks,
        fpy=_triple(base),
        fpy_method=_method(plan, draws, used, ev, twin_dir),
        suggestions=suggestions,
        warnings=ev.warnings + notes,
        unit_cost=cost,
        currency=costs.currency,
        draws=draws,
        similar=ev.similar,
        twin_steps=used,
    )


def _method(
    plan: PlannedProductSpec,
    draws: int,
    used: Sequence[str],
    ev: _Evidence,
    twin_dir: Path | None,
) -> str:
    empirical = [s.step for s in plan.routing if s.step not in used]
    full, rest = divmod(plan.volume, plan.batch_size)
    batches = f"{full} batch(es) of {plan.batch_size}" + (f" and one of {rest}" if rest else "")
    parts = [
        f"Monte Carlo over {draws} draws, each a trial of {plan.volume} units in {batches}; "
        "a batch whose run leaves a planned parameter's limits fails whole"
    ]
    if used:
        parts.append(f"twin quality model at {', '.join(used)}")
    if empirical:
        why = (
            " (no twin cache given)"
            if twin_dir is None
            else " (no fitted twin model for them in the cache)"
        )
        parts.append(f"empirical defect-type rates at {', '.join(empirical)}{why}")
    parts.append(
        "the steps' rates carry each material's average over its suppliers; a planned "
        "supplier adds its difference from that average only when it is significant "
        "(flagged worse, or credibly better on its own); rates from "
        + (", ".join(ev.similar) or "no similar product")
    )
    return "; ".join(parts)


# --- the report ----------------------------------------------------------------------------

_CSS = """
body { font: 10.5pt/1.35 'DejaVu Sans', Arial, sans-serif; color: #111; margin: 1.5cm; }
h1 { font-size: 16pt; margin: 0 0 .2em; } h2 { font-size: 12pt; margin: 1.2em 0 .4em;
  border-bottom: 1px solid #999; page-break-after: avoid; }
table { border-collapse: collapse; width: 100%; margin: .3em 0; page-break-inside: auto; }
th, td { border: 1px solid #bbb; padding: 2px 5px; text-align: left; vertical-align: top; }
th { background: #eef1f4; } tr { page-break-inside: avoid; } td.n { text-align: right; }
.bad { color: #a40000; font-weight: bold; } .meta { color: #444; } .none { color: #555; }
.fpy { font-size: 13pt; } .iv { white-space: nowrap; }
@media print { body { margin: 0; } table { font-size: 8pt; } .iv { white-space: normal; } }
@page { size: A4; margin: 1.2cm; }
"""


def _e(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return html.escape(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    return html.escape(str(value))


def _iv(text: str) -> str:
    """An estimate and its interval, kept on one line."""
    return f"<span class='iv'>{_e(text)}</span>"


def _table(head: list[str], rows: list[list[str]], empty: str = "None.") -> str:
    if not rows:
        return f"<p class='meta'>{_e(empty)}</p>"
    cells = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{cells}</table>"


def fpy_text(t: Triple) -> str:
    """A yield and its interval as a reader reads it: ``91.2 % (86.0 to 95.1 %)``."""
    return f"{100 * t[0]:.1f} % ({100 * t[1]:.1f} to {100 * t[2]:.1f} %)"


def gain_text(t: Triple) -> str:
    """A change of yield in points with its interval, or that it changes nothing."""
    text = f"{100 * t[0]:+.1f} pts ({100 * t[1]:+.1f} to {100 * t[2]:+.1f})"
    return f"changes nothing: {text}" if t[1] <= 0.0 <= t[2] else text


def money(v: float, currency: str) -> str:
    return f"{v:,.0f} {currency}"


def render_html(r: DesignReview) -> str:
    """The review as a printable HTML page (print it to PDF with
    :func:`sqems.quality.dhr.render_pdf`)."""
    p = r.plan
    cur = r.currency
    ranked = r.ranked
    fresh = {_supplier_key(e) for e in r.suppliers if no_history(e)}
    excess = {x.key: x.excess for x in r.risks if x.kind == "supplier"}
    parts = [
        f"<h1>Design review — {_e(p.uid)} {_e(p.name)}</h1>",
        f"<p class='meta'>Planned: {p.volume} units in batches of {p.batch_size}; a failed "
        f"unit costs {money(r.unit_cost, cur)}. Similar products: "
        f"{_e(', '.join(r.similar) or None)}. Generated by SQEMS from the quality graph on "
        f"{_e(r.generated_at)}.</p>",
        "<h2>Predicted first-pass yield</h2>",
        f"<p class='fpy'><b>{_e(fpy_text(r.fpy))}</b> — 90 % predictive interval for the "
        "trial's yield.</p>",
        "<h2>Risks, by expected cost</h2>",
        _table(
            ["#", "risk", "adds per unit (90 %)", "expected failures", "expected cost (90 %)",
             "evidence"],
            [[str(x.rank), f"<span class='bad'>{_e(x.element)}</span>",
              _iv(f"{_pts(x.excess[0])} ({_pts(x.excess[1])} to {_pts(x.excess[2])}) pts")
              if x.excess is not None else
              _iv(f"{_pct(x.probability)} ({_pct(x.low)} to {_pct(x.high)})"),
              f"{x.expected_failures:.1f}",
              _iv(f"{money(x.expected_cost, cur)} ({money(x.low_cost, cur)} to "
              f"{money(x.high_cost, cur)})"), _e(x.why)] for x in ranked],
            "No element of the plan is a risk on the evidence of the plant's history.",
        ),
        "<h2>Suggestions</h2>",
        _table(
            ["risk", "change", "FPY with the change (90 %)", "gain", "evidence"],
            [[_e(s.risk), _e(s.change), _iv(fpy_text(s.fpy)),
              _iv(gain_text(s.gain)) if not s.changes_nothing
              else f"<span class='none'>{_e(gain_text(s.gain))}</span>", _e(s.why)]
             for s in r.suggestions],
            "None: there is no risk to act on.",
        ),
        "<h2>No evidence of risk</h2>",
        _table(
            ["element", "measure", "per unit (90 %)", "evidence"],
            [[_e(x.element), _MEASURE[x.kind],
              _iv(f"{_pct(x.probability)} ({_pct(x.low)} to {_pct(x.high)})")
              if x.key not in fresh else "no history (plant prior)", _e(x.why)]
             for x in r.unflagged],
        ),
        "<h2>Evidence: materials and suppliers</h2>",
        _table(
            ["material", "supplier", "material-defect rate (90 %)", "material, all suppliers",
             "excess over the material (significant only)",
             "P(worse than plant)", "lots (inspected, rejected)", "incoming ppm", "complaints",
             "alternatives (P better)"],
            [[_e(e.material), _e(e.supplier),
              "no history (plant prior)" if no_history(e) else
              f"{_e(_pct(e.rate.mean))} ({_e(_pct(e.rate.low))} to {_e(_pct(e.rate.high))}), "
              f"{e.rate.defective}/{e.rate.units}",
              _e(_pct(e.material_rate.mean)),
              _e(None if (x := excess.get(_supplier_key(e))) is None
                 else f"{_pts(x[0])} ({_pts(x[1])} to {_pts(x[2])}) pts"),
              f"{e.worse_than_plant:.2f}",
              f"{e.lots} ({e.lots_inspected}, {e.lots_rejected})",
              _e(None if e.incoming_ppm is None else f"{e.incoming_ppm:.0f}"),
              f"{e.complaints} ({e.material_complaints} material)",
              _e("; ".join(f"{s} {_pct(rt.mean)} ({b:.2f})" for s, rt, b in e.alternatives))]
             for e in r.suppliers],
        ),
        "<h2>Evidence: capability against the plan's limits</h2>",
        _table(
            ["step", "parameter", "machine", "planned", "runs", "Cpk (90 %)", "runs outside (90 %)",
             "capable", "holds"],
            [[_e(m.step), _e(m.parameter), _e(m.machine), "yes" if planned else "alternative",
              str(m.runs), f"{_num(m.cpk)} ({_num(m.cpk_low)} to {_num(m.cpk_high)})",
              f"{_e(_pct(m.out_of_spec))} ({_e(_pct(m.out_of_spec_low))} to "
              f"{_e(_pct(m.out_of_spec_high))})",
              {True: "yes", False: "<span class='bad'>no</span>", None: "—"}[m.capable],
              _e(None if m.holds is None else _limits(*m.holds))]
             for c in r.capability
             for planned, ms in ((True, planned_of(c)), (False, c.alternatives)) for m in ms],
        ),
        "<h2>Evidence: defect types at the plan's steps on similar products</h2>",
        _table(
            ["step", "defect type", "category", "rate (90 %)", "precedents", "CAPAs"],
            [[_e(d.step), f"{_e(d.defect_type)} {_e(d.name)}", _e(d.category),
              f"{_e(_pct(d.rate.mean))} ({_e(_pct(d.rate.low))} to {_e(_pct(d.rate.high))}), "
              f"{d.rate.defective}/{d.rate.units}",
              _e(_precedents(d)), _e(", ".join(d.capas) or None)] for d in r.defects],
        ),
        "<h2>How the first-pass yield is predicted</h2>",
        f"<p class='meta'>{_e(r.fpy_method)}.</p>",
        "<h2>Warnings</h2>",
        _table(["warning"], [[_e(w)] for w in r.warnings]),
    ]  # fmt: skip
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Design review {_e(p.uid)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )


_MEASURE = {
    "supplier": "material-defect rate",
    "capability": "runs outside the limits",
    "defect_type": "defect rate on similar products",
}


def _precedents(d: StepDefects) -> str | None:
    return "; ".join(str(x) for x in d.precedents) or None
