"""What-if scenarios: what a scenario may change, and the line it makes of the twin.

A :class:`ScenarioSpec` changes, relative to the line as it runs today (its twin):

* **parameters**: a setpoint (the mean the process is run at), and/or the process
  spread around it as a factor (0.5 = half the variation: tighter control);
* **line speed**: a factor on every machine's cycle time (1.1 = 10 % faster);
* **shift pattern**: which shifts work (``early``, ``late``, ``night``); it sets the
  share of units made on each shift, which the quality model knows the effect of, and
  the production hours per day;
* **inspection plan**: an inspection step's detection rate and the share of detected
  units reworked successfully (the rest are scrapped);
* **buffers** in front of steps, and **breakdowns** (MTBF/MTTR) of machines;
* **routing**: a step runs on a subset of its machines (take a bad machine out);
* **drifts**: a machine's drift of a parameter is removed - its bias and spread are
  re-estimated from its runs outside the drift window (given, or estimated by
  :func:`~sqems.twin.line.drift_window`);
* **step shifts**: the shifts that work one step (press-fit not at night): that step's
  units are made on those shifts only, and its capacity per day shrinks with its hours.

:meth:`ScenarioSpec.resolved` fills in what the scenario leaves to the data (a drift
window); :func:`warnings_of` says which changes change nothing, and whether the whole
scenario is the baseline again.

:func:`line_for` turns the twin and a scenario into the simulation's
:class:`~sqems.simulation.line.LineSpec`; :class:`TwinDefects` is the simulation's
defect model for one posterior draw: at each station it draws the unit's parameter
actuals from the machine's behaviour (setpoint + bias, spread) and its shift from the
pattern, and returns the step model's defect probability for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Self

import numpy as np
import numpy.typing as npt
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from sqems.analysis.kpis import CostModel
from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import Uid
from sqems.simulation.line import LineSpec, Lognormal, StationSpec
from sqems.twin.fitting import step_data
from sqems.twin.line import (
    DEFAULT_BUFFER,
    SHIFT_ORDER,
    LineTwin,
    ParameterTwin,
    StepTwin,
    behaviour_outside,
    drift_window,
    machine_series,
)
from sqems.twin.quality import QualityModel, standing_out

HOURS_PER_SHIFT = 8.0
BLOCK = 512
"""Units whose actuals and probabilities are drawn at once per station and machine."""


class ParameterChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    parameter: Uid
    setpoint: float | None = Field(default=None, allow_inf_nan=False)
    spread: float | None = Field(default=None, gt=0, le=10, allow_inf_nan=False)
    """A factor on the process's standard deviation around the setpoint."""


class InspectionChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step: Uid
    detection: float | None = Field(default=None, ge=0, le=1)
    rework: float | None = Field(default=None, ge=0, le=1)


class BufferChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step: Uid
    capacity: int = Field(ge=1, le=100_000)


class BreakdownChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    machine: Uid
    mtbf_s: float = Field(gt=0, allow_inf_nan=False)
    mttr_s: float = Field(gt=0, allow_inf_nan=False)


Shift = Annotated[str, Field(pattern="^(early|late|night)$")]
NOTHING_CHANGES = "this scenario changes nothing compared with the baseline"


class RoutingChange(BaseModel):
    """Route ``step`` to ``machines`` only (a subset of the machines that perform it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: Uid
    machines: tuple[Uid, ...] = Field(min_length=1)


class DriftRemoval(BaseModel):
    """Remove ``machine``'s drift of ``parameter`` in [start, end] (both optional: a
    missing bound is open; both missing: the window is estimated from the data)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    machine: Uid
    parameter: Uid
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(
                f"the drift window must start before it ends, got {self.start.isoformat()} "
                f"to {self.end.isoformat()}"
            )
        return self

    @property
    def estimated(self) -> bool:
        return self.start is None and self.end is None

    def bounds(self) -> tuple[float, float]:
        return (
            self.start.timestamp() if self.start is not None else -np.inf,
            self.end.timestamp() if self.end is not None else np.inf,
        )


class LotSwitch(BaseModel):
    """Replace a lot - or every lot of a supplier - by a new lot drawn from the
    population of lots (exactly one of ``lot`` and ``supplier``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lot: Uid | None = None
    supplier: Uid | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.lot is None) == (self.supplier is None):
            raise ValueError("a lot switch names exactly one of lot and supplier")
        return self


class OperatorChange(BaseModel):
    """``exclude``'s runs at ``step`` are taken by the step's other operators."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: Uid
    exclude: tuple[Uid, ...] = Field(min_length=1)


class StepShiftChange(BaseModel):
    """The shifts that work ``step`` (a subset of the line's shift pattern)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: Uid
    shifts: tuple[Shift, ...] = Field(min_length=1)


class ScenarioSpec(BaseModel):
    """What a scenario changes; everything left out stays as the twin has it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parameters: tuple[ParameterChange, ...] = ()
    line_speed: float = Field(default=1.0, gt=0.1, le=10, allow_inf_nan=False)
    shifts: tuple[Shift, ...] | None = None
    inspections: tuple[InspectionChange, ...] = ()
    buffers: tuple[BufferChange, ...] = ()
    breakdowns: tuple[BreakdownChange, ...] = ()
    routing: tuple[RoutingChange, ...] = ()
    drifts: tuple[DriftRemoval, ...] = ()
    step_shifts: tuple[StepShiftChange, ...] = ()
    lots: tuple[LotSwitch, ...] = ()
    operators: tuple[OperatorChange, ...] = ()

    @classmethod
    def parse(cls, data: Mapping[str, Any] | str) -> ScenarioSpec:
        """From a mapping or JSON; :class:`ValidationFailed` names each bad field."""
        try:
            if isinstance(data, str):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(scenario)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ValidationFailed(f"scenario: {problems}") from None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_defaults=True), sort_keys=True)

    def check(self, twin: LineTwin) -> None:
        """Refuse changes that name what the line does not have."""
        for p in self.parameters:
            _, spec = twin.parameter(p.parameter)
            if p.setpoint is not None and spec.lsl is not None and spec.usl is not None:
                margin = spec.usl - spec.lsl
                if not spec.lsl - margin <= p.setpoint <= spec.usl + margin:
                    raise ValidationFailed(
                        f"setpoint {p.setpoint:g} {spec.unit} for {p.parameter} is far outside "
                        f"its spec [{spec.lsl:g}, {spec.usl:g}]: the model cannot say what "
                        "happens there"
                    )
        for i in self.inspections:
            if not twin.step(i.step).inspection:
                raise ValidationFailed(f"step {i.step} is not an inspection or test step")
        for b in self.buffers:
            twin.step(b.step)
        machines = {m for s in twin.steps for m in s.machines}
        for d in self.breakdowns:
            if d.machine not in machines:
                raise ValidationFailed(f"machine {d.machine} is not on line {twin.line}")
        if self.shifts is not None and not self.shifts:
            raise ValidationFailed("a shift pattern needs at least one shift")
        _once((r.step for r in self.routing), "routing names step {} twice")
        for r in self.routing:
            step = twin.step(r.step)
            _once(r.machines, f"routing of {r.step} names machine {{}} twice")
            foreign = [m for m in r.machines if m not in step.machines]
            if foreign:
                raise ValidationFailed(
                    f"routing of {r.step}: {', '.join(foreign)} cannot perform it; its "
                    f"machines are {', '.join(step.machines)}"
                )
        _once(
            (f"{d.parameter} on {d.machine}" for d in self.drifts),
            "drifts name {} twice",
        )
        for drift in self.drifts:
            if drift.machine not in machines:
                raise ValidationFailed(f"machine {drift.machine} is not on line {twin.line}")
            at, _ = twin.parameter(drift.parameter)
            if drift.machine not in at.machines:
                raise ValidationFailed(
                    f"drift of {drift.parameter}: machine {drift.machine} does not perform "
                    f"{at.uid}, where {drift.parameter} is set (its machines: "
                    f"{', '.join(at.machines)})"
                )
        pattern = self.shift_pattern(twin)
        _once((c.step for c in self.step_shifts), "step_shifts names step {} twice")
        for c in self.step_shifts:
            twin.step(c.step)
            _once(c.shifts, f"step_shifts of {c.step} names shift {{}} twice")
            idle = [x for x in c.shifts if x not in pattern]
            if idle:
                raise ValidationFailed(
                    f"step {c.step} cannot work {', '.join(idle)}: the line works "
                    f"{', '.join(pattern)} in this scenario"
                )

        known_lots = {lot for s in twin.steps for lot in s.history.lots}
        suppliers = {v for s in twin.steps for v in s.history.supplier.values()}
        for switch in self.lots:
            if switch.lot is not None and switch.lot not in known_lots:
                raise ValidationFailed(f"lot {switch.lot} was not consumed on line {twin.line}")
            if switch.supplier is not None and switch.supplier not in suppliers:
                raise ValidationFailed(
                    f"no lot of supplier {switch.supplier} was consumed on line {twin.line}"
                )
        _once((o.step for o in self.operators), "operators names step {} twice")
        for o in self.operators:
            worked = twin.step(o.step).history.operators
            strangers = [x for x in o.exclude if x not in worked]
            if strangers:
                raise ValidationFailed(
                    f"{', '.join(strangers)} never ran {o.step}; its operators are "
                    f"{', '.join(worked) or 'not recorded'}"
                )
            if set(worked) <= set(o.exclude):
                raise ValidationFailed(
                    f"excluding {', '.join(o.exclude)} leaves nobody to run {o.step}"
                )

    def switched_lots(self, step: StepTwin) -> set[str]:
        """The lots of ``step``'s history this scenario replaces."""
        h = step.history
        out = set()
        for switch in self.lots:
            if switch.lot is not None and switch.lot in h.lots:
                out.add(switch.lot)
            if switch.supplier is not None:
                out |= {lot for lot in h.lots if h.supplier.get(lot) == switch.supplier}
        return out

    def grouped_steps(self, twin: LineTwin) -> tuple[str, ...]:
        """The steps whose model must know lots and operators for this scenario (in
        the line's order): those where it changes the operators, and those where a lot
        it switches stands out in the step's data (:func:`~sqems.twin.quality.standing_out`:
        defects far from what the runs' parameters and machines predict). A lot that
        stands out nowhere is given effects at every step that consumed it.

        At a step that consumed a switched lot which does not stand out there, the
        step's plain model serves: the data show no effect of the lot there for a new
        lot to remove, and a lot model of the step would cost a fit for a difference
        its interval could not tell from zero."""
        switched = {s.uid: self.switched_lots(s) for s in twin.steps}
        consumed = [s for s in twin.steps if switched[s.uid]]
        showing = [
            s
            for s in consumed
            if s.modelled and switched[s.uid] & set(standing_out(step_data(s, groups=True)))
        ]
        lots_at = {s.uid for s in (showing or consumed)}
        return tuple(
            s.uid
            for s in twin.steps
            if s.uid in lots_at or any(o.step == s.uid for o in self.operators)
        )

    def acting_steps(
        self, twin: LineTwin, grouped: tuple[str, ...] | None = None
    ) -> tuple[str, ...] | None:
        """The steps this scenario changes something at (in the line's order), or
        None when it acts on the whole line (line speed, the line's shifts, an
        inspection, which sees every step's defects, buffers and breakdowns, whose
        stops change every step's flow). A comparison of this scenario with the
        baseline needs only these steps' models: the others add the same defects to
        both (:func:`~sqems.twin.fitting.fit_line`). ``grouped`` is
        :meth:`grouped_steps` when it is known already."""
        if (
            not np.isclose(self.line_speed, 1.0)
            or self.shifts is not None
            or self.inspections
            or self.buffers
            or self.breakdowns
        ):
            return None
        acting = {twin.parameter(p.parameter)[0].uid for p in self.parameters}
        acting |= {twin.parameter(d.parameter)[0].uid for d in self.drifts}
        acting |= {r.step for r in self.routing} | {c.step for c in self.step_shifts}
        if self.lots or self.operators:
            acting |= set(self.grouped_steps(twin) if grouped is None else grouped)
        return tuple(s.uid for s in twin.steps if s.uid in acting)

    def resolved(self, twin: LineTwin) -> ScenarioSpec:
        """The scenario with what it leaves to the data filled in: each drift without a
        window gets the one :func:`~sqems.twin.line.drift_window` finds in the
        machine's runs (left open when it finds none: then nothing is removed)."""
        self.check(twin)
        drifts = []
        for d in self.drifts:
            found = None
            if d.estimated:
                step, _ = twin.parameter(d.parameter)
                found = drift_window(*machine_series(step, d.parameter, d.machine))
            if found is None:
                drifts.append(d)
                continue
            start, end = (datetime.fromtimestamp(v, UTC) for v in found)
            drifts.append(d.model_copy(update={"start": start, "end": end}))
        return self.model_copy(update={"drifts": tuple(drifts)})

    def routed(self, step: StepTwin) -> tuple[str, ...]:
        """The machines ``step`` runs on in this scenario."""
        for r in self.routing:
            if r.step == step.uid:
                return tuple(m for m in step.machines if m in r.machines)
        return step.machines

    def step_pattern(self, twin: LineTwin, step: str) -> tuple[str, ...]:
        """The shifts that work ``step`` in this scenario."""
        for c in self.step_shifts:
            if c.step == step:
                return tuple(x for x in SHIFT_ORDER if x in c.shifts)
        return self.shift_pattern(twin)

    def shift_pattern(self, twin: LineTwin) -> tuple[str, ...]:
        return tuple(self.shifts) if self.shifts else twin_shifts(twin)

    def hours_per_day(self, twin: LineTwin) -> float:
        return HOURS_PER_SHIFT * len(self.shift_pattern(twin))


def _once(names: Any, message: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValidationFailed(message.format(name))
        seen.add(name)


def _beyond_record(uid: str, setpoint: float, spec: ParameterTwin) -> list[str]:
    """A warning when ``setpoint`` puts a machine's actuals (setpoint + the machine's
    bias) outside the range that machine ran at: its model extrapolates there, even if
    another machine has run there."""
    beyond = [
        m
        for m in sorted(spec.low)
        if not spec.low[m] - 1e-9 <= setpoint + spec.bias[m] <= spec.high[m] + 1e-9
    ]
    if not beyond:
        return []
    where = "; ".join(
        f"{m} would run at {setpoint + spec.bias[m]:.4g}, beyond the {spec.low[m]:.4g} to "
        f"{spec.high[m]:.4g} on record"
        for m in beyond
    )
    return [
        f"{uid}: setpoint {setpoint:g} {spec.unit}: {where} - the model extrapolates there "
        "(a prediction, not a finding)"
    ]


def warnings_of(
    twin: LineTwin,
    scenario: ScenarioSpec,
    models: Mapping[str, QualityModel] | None = None,
) -> tuple[str, ...]:
    """What a person should know before trusting the scenario's result: each change
    that changes nothing, :data:`NOTHING_CHANGES` when no change does, and setpoints
    beyond the actuals on record (where the model extrapolates). ``scenario`` should
    be :meth:`ScenarioSpec.resolved` (an unresolved drift counts as changing nothing
    only once no window is found)."""
    out: list[str] = []
    effective = 0
    modelled = {
        uid for uid, m in (models or {}).items() if m.lots or m.operators
    }  # steps whose models know lots and operators
    for p in scenario.parameters:
        step, spec = twin.parameter(p.parameter)
        moved = p.setpoint is not None and not np.isclose(p.setpoint, spec.setpoint)
        spread = p.spread is not None and not np.isclose(p.spread, 1.0)
        if not (moved or spread):
            out.append(f"{p.parameter}: the setpoint and spread are today's")
        effective += moved or spread
        if moved and p.setpoint is not None:
            out.extend(_beyond_record(p.parameter, p.setpoint, spec))
    effective += not np.isclose(scenario.line_speed, 1.0)
    if scenario.shifts is not None:
        same = set(scenario.shift_pattern(twin)) == set(twin_shifts(twin))
        if same:
            out.append(f"shifts {', '.join(scenario.shifts)}: the line works these today")
        effective += not same
    for i in scenario.inspections:
        step = twin.step(i.step)
        now = step.detection if step.detection is not None else 0.0
        moved = (i.detection is not None and not np.isclose(i.detection, now)) or bool(i.rework)
        if not moved:
            out.append(f"inspection at {i.step}: today's detection and no rework")
        effective += moved
    for b in scenario.buffers:
        if b.capacity == DEFAULT_BUFFER:
            out.append(f"buffer at {b.step}: {b.capacity} places, as today")
        effective += b.capacity != DEFAULT_BUFFER
    for k in scenario.breakdowns:
        stops = next(s for s in twin.steps if k.machine in s.machines).breakdowns[k.machine]
        same = bool(
            stops.mtbf_s is not None
            and stops.mttr_s is not None
            and np.isclose(k.mtbf_s, stops.mtbf_s)
            and np.isclose(k.mttr_s, stops.mttr_s)
        )
        effective += not same
    for r in scenario.routing:
        step = twin.step(r.step)
        if set(r.machines) == set(step.machines):
            out.append(f"routing of {r.step}: to all of its machines, as today")
        effective += set(r.machines) != set(step.machines)
    for d in scenario.drifts:
        step, _ = twin.parameter(d.parameter)
        if d.estimated:
            out.append(
                f"no drift of {d.parameter} on {d.machine} is found in its runs: "
                "there is nothing to remove"
            )
            continue
        times, _ = machine_series(step, d.parameter, d.machine)
        lo, hi = d.bounds()
        inside = int(((times >= lo) & (times <= hi)).sum())
        if not inside:
            out.append(f"drift of {d.parameter} on {d.machine}: no run in its window")
        effective += inside > 0
    for c in scenario.step_shifts:
        same = set(scenario.step_pattern(twin, c.step)) == set(scenario.shift_pattern(twin))
        if same:
            out.append(f"shifts of {c.step}: the shifts the line works, as today")
        effective += not same
    for switch in scenario.lots:
        named = switch.lot or switch.supplier
        touched = any(
            scenario.switched_lots(s) and s.uid in modelled
            for s in twin.steps
            if (switch.lot and switch.lot in s.history.lots)
            or (switch.supplier and switch.supplier in s.history.supplier.values())
        )
        if not touched:
            out.append(f"{named}: consumed at no step whose model has lot effects")
        effective += touched
    for o in scenario.operators:
        if o.step not in modelled:
            out.append(f"operators of {o.step}: its model has no operator effects")
        effective += o.step in modelled
    if not effective:
        out.insert(0, NOTHING_CHANGES)
    return tuple(out)


def twin_shifts(twin: LineTwin) -> tuple[str, ...]:
    """The shifts the line works today (from its steps' shift covariates)."""
    levels = {
        name.removeprefix("shift:")
        for s in twin.steps
        for name in s.history.parameters
        if name.startswith("shift:")
    }
    return tuple(s for s in SHIFT_ORDER if s in levels or s == SHIFT_ORDER[0])


def line_for(twin: LineTwin, scenario: ScenarioSpec, costs: CostModel | None = None) -> LineSpec:
    """The simulation's line: the twin's stations with the scenario's changes; a
    scrapped unit costs the product's unit cost, a rework its share of it (the same
    :class:`~sqems.analysis.kpis.CostModel` the KPIs use)."""
    costs = costs or CostModel()
    unit_cost = costs.cost_of(twin.product)
    scenario.check(twin)
    pattern = scenario.shift_pattern(twin)
    buffers = {b.step: b.capacity for b in scenario.buffers}
    inspections = {i.step: i for i in scenario.inspections}
    stops = {d.machine: d for d in scenario.breakdowns}
    stations = []
    for step in twin.steps:
        change = inspections.get(step.uid)
        detection = step.detection if step.inspection else None
        if step.inspection and detection is None:
            detection = 0.0  # an inspection that never caught anything on record
        if change is not None and change.detection is not None:
            detection = change.detection
        machines = scenario.routed(step)
        # a step that works fewer of the line's shifts makes its day's units in fewer
        # hours: over the line's day it is that much slower
        hours = len(pattern) / len(scenario.step_pattern(twin, step.uid))
        cycle = {
            m: Lognormal(fit.median_s * hours / scenario.line_speed, fit.sigma)
            for m, fit in step.cycle.items()
            if m in machines
        }
        mtbf = [stops[m].mtbf_s if m in stops else step.breakdowns[m].mtbf_s for m in machines]
        mttr = [stops[m].mttr_s if m in stops else step.breakdowns[m].mttr_s for m in machines]
        known = [(b, r) for b, r in zip(mtbf, mttr, strict=True) if b is not None and r is not None]
        stations.append(
            StationSpec(
                name=step.uid,
                machines=machines,
                cycle=cycle,
                mtbf_s=float(np.mean([b for b, _ in known])) if known else None,
                mttr_s=float(np.mean([r for _, r in known])) if known else None,
                buffer=buffers.get(step.uid, DEFAULT_BUFFER),
                inspection=detection,
                rework_p=change.rework if change is not None and change.rework is not None else 0.0,
            )
        )
    return LineSpec(
        stations=tuple(stations),
        arrival=None,
        unit_cost=unit_cost,
        scrap_cost=unit_cost,
        rework_cost=unit_cost * costs.rework_share,
    )


class TwinDefects:
    """The simulation's defect model for one posterior draw of each step's model."""

    def __init__(
        self,
        twin: LineTwin,
        models: Mapping[str, QualityModel],
        scenario: ScenarioSpec,
        draw: int,
    ) -> None:
        self._steps = {s.uid: s for s in twin.steps}
        self._models = models
        self._draw = draw
        self._changes = {p.parameter: p for p in scenario.parameters}
        self._shifts = {s.uid: scenario.step_pattern(twin, s.uid) for s in twin.steps}
        # a removed drift: the machine behaves as it did outside the window
        self._behaviour: dict[tuple[str, str], tuple[float, float]] = {}
        for d in scenario.drifts:
            if not d.estimated:
                step, _ = twin.parameter(d.parameter)
                self._behaviour[d.parameter, d.machine] = behaviour_outside(
                    step, d.parameter, d.machine, *d.bounds()
                )
        self._blocks: dict[tuple[str, str], tuple[npt.NDArray[np.float64], int]] = {}
        # lots and operators: each unit takes those of a historical run of its step
        self._offsets: dict[str, npt.NDArray[np.float64]] = {}
        for step in twin.steps:
            model = models.get(step.uid)
            if model is not None and (model.lots or model.operators):
                self._offsets[step.uid] = _run_offsets(step, model, scenario, draw)
            elif model is not None and (
                scenario.switched_lots(step) or any(o.step == step.uid for o in scenario.operators)
            ):
                raise ValidationFailed(
                    f"the quality model of {step.uid} was fitted without lot and operator "
                    "effects: fit it with groups (fit_line(..., groups=True)) to switch "
                    "lots or operators"
                )

    def probability(self, station: str, machine: str, rng: np.random.Generator) -> float:
        key = (station, machine)
        block = self._blocks.get(key)
        if block is None or block[1] >= block[0].size:
            block = (self._draw_block(station, machine, rng), 0)
        values, at = block
        self._blocks[key] = (values, at + 1)
        return float(values[at])

    def _draw_block(
        self, station: str, machine: str, rng: np.random.Generator
    ) -> npt.NDArray[np.float64]:
        step = self._steps[station]
        model = self._models.get(station)
        if model is None:
            return np.zeros(BLOCK)
        x = self.actuals(step, machine, rng, BLOCK)
        offsets = self._offsets.get(station)
        offset = None
        if offsets is not None:
            h = step.history
            mine = h.machine == step.machines.index(machine)
            runs = np.flatnonzero(mine) if mine.any() else np.arange(h.runs)
            weight = h.trials[runs] / h.trials[runs].sum()
            offset = offsets[rng.choice(runs, size=BLOCK, p=weight)]
        p: npt.NDArray[np.float64] = model.probability(
            self._draw, x, [machine] * BLOCK, offset=offset
        )
        return p

    def actuals(
        self, step: StepTwin, machine: str, rng: np.random.Generator, n: int
    ) -> npt.NDArray[np.float64]:
        """``n`` units' covariates at ``step`` on ``machine`` under the scenario."""
        columns = []
        pattern = self._shifts[step.uid]
        shift = np.asarray(pattern)[rng.integers(0, len(pattern), n)]
        for name in step.history.parameters:
            if name.startswith("shift:"):
                columns.append((shift == name.removeprefix("shift:")).astype(np.float64))
                continue
            spec = next(p for p in step.parameters if p.uid == name)
            change = self._changes.get(name)
            setpoint = spec.setpoint
            factor = 1.0
            if change is not None:
                setpoint = change.setpoint if change.setpoint is not None else setpoint
                factor = change.spread if change.spread is not None else 1.0
            bias, spread = self._behaviour.get(
                (name, machine), (spec.bias.get(machine, 0.0), spec.spread.get(machine, 0.0))
            )
            columns.append(setpoint + bias + spread * factor * rng.standard_normal(n))
        return np.column_stack(columns) if columns else np.zeros((n, 0))


def _run_offsets(
    step: StepTwin, model: QualityModel, scenario: ScenarioSpec, draw: int
) -> npt.NDArray[np.float64]:
    """Per historical run of ``step``, the logit its lots and operator add under
    ``draw``, with what the scenario switches replaced: a switched lot by a new lot
    drawn from N(0, tau_lot), an excluded operator's runs by the step's other operators
    (in proportion to the units they made). The replacements are drawn from a stream
    of their own (seeded by the draw), so the simulation's streams stay common."""
    h = step.history
    if model.lots != h.lots or model.operators != h.operators:
        raise ValidationFailed(
            f"the quality model of {step.uid} was fitted on other lots or operators than "
            "the twin's history: fit it again"
        )
    rng = np.random.default_rng([draw, step.sequence, 17])
    offsets = np.zeros(h.runs)
    if model.lots:
        effects, tau = model.lot_effects(draw)
        effects = effects.copy()
        for lot in sorted(scenario.switched_lots(step)):
            effects[h.lots.index(lot)] = rng.normal(0.0, tau)
        offsets += np.bincount(h.lot_run, weights=effects[h.lot_index], minlength=h.runs)
    if model.operators:
        operator = h.operator.copy()
        for change in scenario.operators:
            if change.step != step.uid:
                continue
            out = np.isin(operator, [h.operators.index(o) for o in change.exclude])
            others = np.unique(operator[(operator >= 0) & ~out])
            units = np.array([h.trials[operator == o].sum() for o in others], dtype=float)
            operator[out] = rng.choice(others, size=int(out.sum()), p=units / units.sum())
        known = operator >= 0
        offsets[known] += model.operator_effects(draw)[operator[known]]
    return offsets
