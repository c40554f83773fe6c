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
* **buffers** in front of steps, and **breakdowns** (MTBF/MTTR) of machines.

:func:`line_for` turns the twin and a scenario into the simulation's
:class:`~sqems.simulation.line.LineSpec`; :class:`TwinDefects` is the simulation's
defect model for one posterior draw: at each station it draws the unit's parameter
actuals from the machine's behaviour (setpoint + bias, spread) and its shift from the
pattern, and returns the step model's defect probability for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sqems.analysis.kpis import CostModel
from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import Uid
from sqems.simulation.line import LineSpec, Lognormal, StationSpec
from sqems.twin.line import DEFAULT_BUFFER, SHIFT_ORDER, LineTwin, StepTwin
from sqems.twin.quality import QualityModel

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


class ScenarioSpec(BaseModel):
    """What a scenario changes; everything left out stays as the twin has it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parameters: tuple[ParameterChange, ...] = ()
    line_speed: float = Field(default=1.0, gt=0.1, le=10, allow_inf_nan=False)
    shifts: tuple[Shift, ...] | None = None
    inspections: tuple[InspectionChange, ...] = ()
    buffers: tuple[BufferChange, ...] = ()
    breakdowns: tuple[BreakdownChange, ...] = ()

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

    def shift_pattern(self, twin: LineTwin) -> tuple[str, ...]:
        return tuple(self.shifts) if self.shifts else twin_shifts(twin)

    def hours_per_day(self, twin: LineTwin) -> float:
        return HOURS_PER_SHIFT * len(self.shift_pattern(twin))


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
        cycle = {
            m: Lognormal(fit.median_s / scenario.line_speed, fit.sigma)
            for m, fit in step.cycle.items()
        }
        mtbf = [stops[m].mtbf_s if m in stops else step.breakdowns[m].mtbf_s for m in step.machines]
        mttr = [stops[m].mttr_s if m in stops else step.breakdowns[m].mttr_s for m in step.machines]
        known = [(b, r) for b, r in zip(mtbf, mttr, strict=True) if b is not None and r is not None]
        stations.append(
            StationSpec(
                name=step.uid,
                machines=step.machines,
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
        pattern = scenario.shift_pattern(twin)
        self._shifts = pattern
        self._blocks: dict[tuple[str, str], tuple[npt.NDArray[np.float64], int]] = {}

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
        p: npt.NDArray[np.float64] = model.probability(self._draw, x, [machine] * BLOCK)
        return p

    def actuals(
        self, step: StepTwin, machine: str, rng: np.random.Generator, n: int
    ) -> npt.NDArray[np.float64]:
        """``n`` units' covariates at ``step`` on ``machine`` under the scenario."""
        columns = []
        shift = np.asarray(self._shifts)[rng.integers(0, len(self._shifts), n)]
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
            sd = spec.spread.get(machine, 0.0) * factor
            columns.append(setpoint + spec.bias.get(machine, 0.0) + sd * rng.standard_normal(n))
        return np.column_stack(columns) if columns else np.zeros((n, 0))
