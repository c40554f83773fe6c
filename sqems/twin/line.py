"""The twin of a line, read from the graph: what the simulation needs to know.

:func:`build_twin` turns a line's history into a :class:`LineTwin`:

* **Routing.** The line's machines (``PART_OF``), the steps they can perform
  (``CAN_PERFORM``) in ``sequence`` order; the machines of a step work in parallel.
* **Cycle times.** Each run's duration divided by the units its batch made is one
  observation of a machine's cycle time per unit; a lognormal is fitted per machine
  (median and the standard deviation of the logarithm).
* **Breakdowns.** Critical alarms raised on a machine and cleared again are its stops:
  MTBF is the observed time between them, MTTR their mean length. A machine without
  such a history has no breakdowns in the twin, and the twin says so in its notes
  (absence of evidence is not evidence of a perfect machine; a scenario can set them).
* **Parameters.** For each controlled parameter of a step, its setpoint (the spec's
  target, else the historical mean) and, per machine, the bias of its actuals from the
  setpoint and their spread: the simulation draws actuals from these.
* **Quality history.** For each step, one row per process run: the run's parameter
  actuals and its shift (one indicator per shift but the first of the day, so a model can
  learn what the night shift does and a scenario can change the shift pattern), its
  machine, the units its batch made, and the units with a defect whose type
  ``ORIGINATES_AT`` the step (the PFMEA link), found in-house or later — downstream on
  the assembly, or in a customer complaint. These rows train the step's
  :mod:`sqems.twin.quality` model. Defects of types without an origin step make a
  line-wide base rate.
* **Detection.** A step without controlled parameters is an inspection or test step.
  Its detection rate is the share of the line's defective units caught in-house among
  those found at all (caught in-house, found later on an assembly, or complained about).

Buffers are not in the graph: every station gets ``DEFAULT_BUFFER`` places in front of
it until a scenario says otherwise.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sqems.analysis.changepoint import level_shift_window
from sqems.analysis.factors import BatchFacts, RunFacts, read_batches
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import Alarm, Line, Parameter, ProcessStep, Severity
from sqems.graph_model.store import Direction, GraphStore, TimeWindow

OUT, IN = Direction.OUT, Direction.IN

DEFAULT_BUFFER = 10
"""Places in front of each station when the twin knows nothing better."""


@dataclass(frozen=True, slots=True)
class CycleFit:
    """A machine's cycle time per unit: lognormal with this median and log-sd."""

    machine: str
    median_s: float
    sigma: float
    observations: int

    @property
    def mean_s(self) -> float:
        return self.median_s * math.exp(self.sigma**2 / 2.0)


@dataclass(frozen=True, slots=True)
class Breakdowns:
    machine: str
    mtbf_s: float | None
    mttr_s: float | None
    stops: int


@dataclass(frozen=True, slots=True)
class ParameterTwin:
    """A controlled parameter of a step: its setpoint, and per machine the bias of the
    actuals from it and their standard deviation."""

    uid: str
    name: str
    unit: str
    lsl: float | None
    usl: float | None
    setpoint: float
    bias: dict[str, float]
    spread: dict[str, float]
    low: dict[str, float] = field(default_factory=dict)
    """Per machine, the smallest actual on record (machines without runs are absent)."""
    high: dict[str, float] = field(default_factory=dict)
    """Per machine, the largest actual on record."""


@dataclass(frozen=True, slots=True)
class StepHistory:
    """One row per process run of the step (runs missing an actual are left out)."""

    parameters: tuple[str, ...]
    x: npt.NDArray[np.float64]
    """(runs, parameters) actuals."""
    machine: npt.NDArray[np.int64]
    """Index into the step's machines."""
    trials: npt.NDArray[np.int64]
    defects: npt.NDArray[np.int64]
    started: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    """When each run started (epoch seconds); what a drift window is told in."""
    lots: tuple[str, ...] = ()
    """The material lots the runs' batches consumed."""
    lot_run: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """With :attr:`lot_index`: run ``lot_run[k]`` consumed lot ``lot_index[k]``."""
    lot_index: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    supplier: dict[str, str] = field(default_factory=dict)
    """Lot -> its supplier (lots without a known supplier are absent)."""
    operators: tuple[str, ...] = ()
    operator: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Index into :attr:`operators` of each run's operator; -1 when not recorded."""

    @property
    def runs(self) -> int:
        return int(self.trials.size)


@dataclass(frozen=True, slots=True)
class StepTwin:
    uid: str
    name: str
    sequence: int
    machines: tuple[str, ...]
    cycle: dict[str, CycleFit]
    breakdowns: dict[str, Breakdowns]
    parameters: tuple[ParameterTwin, ...]
    defect_types: tuple[str, ...]
    """Defect types that originate here."""
    history: StepHistory
    detection: float | None = None
    """For an inspection or test step: the share of defective units it catches."""

    @property
    def inspection(self) -> bool:
        return not self.parameters

    @property
    def modelled(self) -> bool:
        """Whether the step gets a quality model: it has parameters and runs on record."""
        return bool(self.parameters) and bool(self.history.runs)


@dataclass(frozen=True, slots=True)
class LineTwin:
    line: str
    name: str
    product: str | None
    steps: tuple[StepTwin, ...]
    units: int
    """Units the history covers."""
    base_rate: float
    """Share of units with a defect of a type that has no origin step."""
    first_run: float
    last_run: float
    notes: list[str] = field(default_factory=list)

    def step(self, uid: str) -> StepTwin:
        for s in self.steps:
            if s.uid == uid:
                return s
        raise NotFound(f"step {uid} is not on line {self.line}")

    def parameter(self, uid: str) -> tuple[StepTwin, ParameterTwin]:
        for s in self.steps:
            for p in s.parameters:
                if p.uid == uid:
                    return s, p
        raise NotFound(f"parameter {uid} is not controlled on line {self.line}")


def build_twin(store: GraphStore, line: str, window: TimeWindow | None = None) -> LineTwin:
    """The twin of ``line`` from the batches that started in ``window`` (all)."""
    node = store.get_many([line]).get(line)
    if not isinstance(node, Line):
        raise NotFound(f"line {line} is not in the graph ({store.description})")
    machines = sorted(e.src for e in store.edges([line], {"PART_OF": IN}))
    if not machines:
        raise ValidationFailed(f"line {line} has no machines (PART_OF) to build a twin of")
    step_machines: dict[str, list[str]] = defaultdict(list)
    for e in store.edges(machines, {"CAN_PERFORM": OUT}):
        step_machines[e.dst].append(e.src)
    steps = {
        uid: n for uid, n in store.get_many(step_machines).items() if isinstance(n, ProcessStep)
    }
    if not steps:
        raise ValidationFailed(f"no machine of line {line} can perform a step (CAN_PERFORM)")
    products = {e.dst for e in store.edges(steps, {"STEP_OF": OUT})}
    product = min(products) if products else None
    params_of: dict[str, list[str]] = defaultdict(list)
    for e in store.edges(steps, {"PARAMETER_OF": IN}):
        params_of[e.dst].append(e.src)
    specs = {
        uid: n
        for uid, n in store.get_many(p for ps in params_of.values() for p in ps).items()
        if isinstance(n, Parameter)
    }
    origin: dict[str, str] = {e.src: e.dst for e in store.edges(steps, {"ORIGINATES_AT": IN})}

    lo, hi = (window or TimeWindow()).bounds()
    batch_uids = [e.src for e in store.edges(products, {"OF_PRODUCT": IN})]
    facts = read_batches(store, batch_uids)
    batches = {u: b for u, b in facts.batches.items() if lo <= b.started_at <= hi}
    if not batches:
        raise ValidationFailed(f"line {line} has no batches in the window to learn from")

    units_of: dict[str, list[str]] = defaultdict(list)
    for e in store.edges(batches, {"PRODUCED": OUT}):
        units_of[e.src].append(e.dst)
    defective = _defective_units(store, units_of, origin, set(steps))

    notes: list[str] = []
    step_twins = []
    for uid in sorted(steps, key=lambda u: (steps[u].sequence, u)):
        step = steps[uid]
        ms = tuple(sorted(step_machines[uid]))
        runs = [
            (b, r) for b in batches.values() for r in b.runs if r.step == uid and r.machine in ms
        ]
        cycle = _cycle_fits(runs, units_of, ms, notes, uid)
        names = tuple(sorted(p for p in params_of.get(uid, []) if p in specs))
        shifts = _shift_levels(r.shift for _, r in runs) if names else ()
        kept = [(b, r) for b, r in runs if all(p in r.params for p in names) and units_of[b.uid]]
        rows = [
            (
                {**r.params, **{f"shift:{s}": float(r.shift == s) for s in shifts}},
                ms.index(r.machine or ""),
                len(units_of[b.uid]),
                b.uid,
                r.started_at,
            )
            for b, r in kept
        ]
        covariates = names + tuple(f"shift:{s}" for s in shifts)
        caught = defective.by_step.get(uid, {})
        lots = tuple(sorted({lot.uid for b, _ in kept for lot in b.lots}))
        lot_no = {lot: k for k, lot in enumerate(lots)}
        members = [(i, lot_no[lot.uid]) for i, (b, _) in enumerate(kept) for lot in b.lots]
        operators = tuple(sorted({r.operator for _, r in kept if r.operator}))
        operator_no = {o: k for k, o in enumerate(operators)}
        history = StepHistory(
            covariates,
            np.array([[p[n] for n in covariates] for p, *_ in rows], dtype=np.float64).reshape(
                len(rows), len(covariates)
            ),
            np.array([m for _, m, *_ in rows], dtype=np.int64),
            np.array([n for _, _, n, _, _ in rows], dtype=np.int64),
            np.array([caught.get(b, 0) for *_, b, _ in rows], dtype=np.int64),
            np.array([t for *_, t in rows], dtype=np.float64),
            lots,
            np.array([i for i, _ in members], dtype=np.int64),
            np.array([k for _, k in members], dtype=np.int64),
            {lot.uid: lot.supplier for b, _ in kept for lot in b.lots if lot.supplier},
            operators,
            np.array([operator_no.get(r.operator or "", -1) for _, r in kept], dtype=np.int64),
        )
        parameters = tuple(_parameter_twin(specs[p], history, ms, k) for k, p in enumerate(names))
        step_twins.append(
            StepTwin(
                uid,
                step.name,
                step.sequence,
                ms,
                cycle,
                _breakdowns(store, ms, lo, hi, batches.values(), notes),
                parameters,
                tuple(sorted(t for t, s in origin.items() if s == uid)),
                history,
                defective.detection if not parameters else None,
            )
        )
    if not any(s.inspection for s in step_twins):
        notes.append(f"line {line} has no inspection step: defects leave the line unseen")
    units = sum(len(v) for v in units_of.values())
    starts = [b.started_at for b in batches.values()]
    return LineTwin(
        line,
        node.name,
        product,
        tuple(step_twins),
        units,
        defective.unattributed / units if units else 0.0,
        min(starts),
        max(b.ended_at for b in batches.values() if math.isfinite(b.ended_at)),
        notes,
    )


@dataclass(slots=True)
class _Defective:
    by_step: dict[str, dict[str, int]]
    """Step -> batch -> units with a defect that originates at the step."""
    unattributed: int
    detection: float | None


def _defective_units(
    store: GraphStore,
    units_of: dict[str, list[str]],
    origin: dict[str, str],
    steps: set[str],
) -> _Defective:
    """Which units of the line had a defect, where it originated and whether the line
    caught it: defects found on the unit itself (in-house), on the assembly it went
    into (downstream), or complained about (the field)."""
    batch_of = {u: b for b, us in units_of.items() for u in us}
    parent = {e.src: e.dst for e in store.edges(batch_of, {"ASSEMBLED_INTO": OUT})}
    # unit -> (defect types, caught in-house?)
    seen: dict[str, tuple[set[str], bool]] = {}

    def note(unit: str, types: Iterable[str], in_house: bool) -> None:
        kinds, caught = seen.get(unit, (set(), False))
        seen[unit] = (kinds | set(types), caught or in_house)

    type_of: dict[str, str] = {}
    own = store.edges(batch_of, {"FOUND_ON": IN})
    later = store.edges(set(parent.values()), {"FOUND_ON": IN})
    complaints = store.edges(set(batch_of) | set(parent.values()), {"ABOUT": IN})
    sources = {e.src for e in own} | {e.src for e in later} | {e.src for e in complaints}
    for e in store.edges(sources, {"OF_TYPE": OUT}):
        type_of[e.src] = e.dst
    for e in own:
        if e.src in type_of:
            note(e.dst, [type_of[e.src]], True)
    child: dict[str, list[str]] = defaultdict(list)
    for unit, assembly in parent.items():
        child[assembly].append(unit)
    for e in (*later, *complaints):
        kind = type_of.get(e.src)
        if kind is None or origin.get(kind) not in steps:
            continue  # not a failure mode of this line
        for unit in child.get(e.dst, [e.dst] if e.dst in batch_of else []):
            note(unit, [kind], False)

    by_step: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    unattributed = caught = found = 0
    for unit, (kinds, in_house) in seen.items():
        mine = {origin[k] for k in kinds if origin.get(k) in steps}
        for step in mine:
            by_step[step][batch_of[unit]] += 1
        if not mine:
            unattributed += 1
            continue
        found += 1
        caught += in_house
    return _Defective(
        {s: dict(b) for s, b in by_step.items()}, unattributed, caught / found if found else None
    )


SHIFT_ORDER = ("early", "late", "night")


def _shift_levels(shifts: Iterable[str]) -> tuple[str, ...]:
    """The shifts that become covariates: each one seen except the first of the day
    (the baseline), so a model can learn what working late or at night does."""
    seen = set(shifts)
    if len(seen) < 2:
        return ()
    ordered = sorted(seen, key=lambda s: (SHIFT_ORDER.index(s) if s in SHIFT_ORDER else 9, s))
    return tuple(ordered[1:])


def _cycle_fits(
    runs: list[tuple[BatchFacts, RunFacts]],
    units_of: dict[str, list[str]],
    machines: tuple[str, ...],
    notes: list[str],
    step: str,
) -> dict[str, CycleFit]:
    per_unit: dict[str, list[float]] = defaultdict(list)
    for batch, run in runs:
        units = len(units_of[batch.uid])
        if units and run.machine and run.ended_at is not None and run.ended_at > run.started_at:
            per_unit[run.machine].append((run.ended_at - run.started_at) / units)
    fits = {}
    pooled = [c for cs in per_unit.values() for c in cs]
    for m in machines:
        values = per_unit.get(m) or pooled
        if not values:
            raise ValidationFailed(f"step {step}: no run with a duration to fit cycle times from")
        if m not in per_unit:
            notes.append(f"machine {m} has no runs: its cycle time is the step's pooled one")
        logs = np.log(np.asarray(values))
        sigma = float(logs.std(ddof=1)) if logs.size > 1 else 0.0
        fits[m] = CycleFit(m, float(np.exp(logs.mean())), sigma, len(values))
    return fits


def _parameter_twin(
    spec: Parameter, history: StepHistory, machines: tuple[str, ...], k: int
) -> ParameterTwin:
    values = history.x[:, k]
    setpoint = (
        spec.target
        if spec.target is not None
        else float(values.mean())
        if values.size
        else ((spec.lsl or 0.0) + (spec.usl or 0.0)) / 2.0
    )
    bias: dict[str, float] = {}
    spread: dict[str, float] = {}
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    overall = float(values.std(ddof=1)) if values.size > 1 else 0.0
    for i, m in enumerate(machines):
        mine = values[history.machine == i]
        bias[m] = float(mine.mean()) - setpoint if mine.size else 0.0
        spread[m] = float(mine.std(ddof=1)) if mine.size > 1 else overall
        if mine.size:
            low[m], high[m] = float(mine.min()), float(mine.max())
    return ParameterTwin(
        spec.uid, spec.name, spec.unit, spec.lsl, spec.usl, setpoint, bias, spread, low, high
    )


def _breakdowns(
    store: GraphStore,
    machines: tuple[str, ...],
    lo: float,
    hi: float,
    batches: Iterable[BatchFacts],
    notes: list[str],
) -> dict[str, Breakdowns]:
    spans = [(b.started_at, b.ended_at) for b in batches if math.isfinite(b.ended_at)]
    observed = (max(e for _, e in spans) - min(s for s, _ in spans)) if spans else 0.0
    alarms: dict[str, list[float]] = defaultdict(list)
    edges = store.edges(machines, {"RAISED_ON": IN})
    nodes = store.get_many(e.src for e in edges)
    for e in edges:
        a = nodes.get(e.src)
        if (
            isinstance(a, Alarm)
            and a.severity is Severity.CRITICAL
            and a.cleared_at is not None
            and lo <= a.raised_at.timestamp() <= hi
        ):
            alarms[e.dst].append((a.cleared_at - a.raised_at).total_seconds())
    out = {}
    for m in machines:
        stops = alarms.get(m, [])
        if stops and observed > 0:
            down = sum(stops)
            out[m] = Breakdowns(m, (observed - down) / len(stops), down / len(stops), len(stops))
        else:
            out[m] = Breakdowns(m, None, None, 0)
    silent = [m for m in machines if not alarms.get(m)]
    if silent:
        notes.append(
            f"no stop history (critical alarms, cleared) for {', '.join(silent)}: "
            "modelled without breakdowns"
        )
    return out


# --- drifts -----------------------------------------------------------------------------------

DRIFT_ALPHA = 0.01
"""False alarms allowed on a series without a drift."""


def drift_window(
    times: npt.ArrayLike, values: npt.ArrayLike, *, alpha: float = DRIFT_ALPHA
) -> tuple[float, float] | None:
    """When a machine's actuals of a parameter drifted away from their usual level:
    ``(start, end)``, the times of the first and the last run of the drift, or ``None``
    when the series shows none at level ``alpha``.

    The window is :func:`sqems.analysis.changepoint.level_shift_window`'s - the same
    one a recall of the drifting machine uses, so a what-if that removes a drift and the
    recall of its units cover the same runs: a permutation-gated epidemic scan decides
    whether there is a drift, optimal partitioning and a CUSUM say where it began and
    ended.

    >>> import numpy as np
    >>> values = np.r_[np.zeros(60), np.full(20, 5.0), np.zeros(40)]
    >>> values += np.random.default_rng(0).normal(0, 1, values.size)
    >>> drift_window(np.arange(120.0), values)
    (60.0, 79.0)
    """
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 1 or t.shape != v.shape:
        raise ValidationFailed(
            f"a drift window needs one time per value, got shapes {t.shape} and {v.shape}"
        )
    if not (np.isfinite(t).all() and np.isfinite(v).all()):
        raise ValidationFailed("a drift window needs finite times and values")
    if not 0.0 < alpha < 1.0:
        raise ValidationFailed(f"alpha must be between 0 and 1, got {alpha}")
    found = level_shift_window(t, v, alpha=alpha)
    return None if found is None else (found.first_off, found.last_off)


def machine_series(
    step: StepTwin, parameter: str, machine: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The start times and actuals of ``parameter`` in ``machine``'s runs at ``step``."""
    if parameter not in step.history.parameters:
        raise NotFound(f"parameter {parameter} is not controlled at step {step.uid}")
    if machine not in step.machines:
        raise NotFound(
            f"machine {machine} does not perform step {step.uid} "
            f"(its machines: {', '.join(step.machines)})"
        )
    h = step.history
    mine = h.machine == step.machines.index(machine)
    return h.started[mine], h.x[mine, h.parameters.index(parameter)]


def behaviour_outside(
    step: StepTwin, parameter: str, machine: str, start: float, end: float
) -> tuple[float, float]:
    """``(bias, spread)`` of ``machine``'s actuals of ``parameter`` re-estimated from its
    runs that started before ``start`` or after ``end``: its behaviour without a drift
    in that window."""
    times, values = machine_series(step, parameter, machine)
    outside = values[(times < start) | (times > end)]
    if outside.size < 2:
        raise ValidationFailed(
            f"{machine} has {outside.size} run(s) of {step.uid} outside the drift window: "
            f"too few to say how {parameter} behaves without the drift - narrow the window"
        )
    spec = next(p for p in step.parameters if p.uid == parameter)
    return float(outside.mean()) - spec.setpoint, float(outside.std(ddof=1))
