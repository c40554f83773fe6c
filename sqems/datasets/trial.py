"""Trial production of a planned product, with the generator's own planted truths.

A design review predicts the first-pass yield (FPY) a plan will make. ``produce`` makes
the plan's trial run in the synthetic drives plant, from the same truths the generator
plants, so the prediction can be held against what the plant "then makes"::

    trial = produce(PlantSpec(units=6000, seed=7), causes, plan, units=2000, seed=1)
    trial.fpy, trial.by_cause

What the trial makes, and with which truth:

* **batches** of ``plan.batch_size`` units (the last one short), one after another from
  the plant's start, each run at every routing step in the plan's order; a batch's run
  at a step lasts the batch's units times the slowest cycle of the plan's lines;
* **machines**: the routing step's ``machine``; else the step's machines (of
  ``machine_kind`` when given) in turn, batch by batch;
* **parameter actuals**, one per run, drawn by the generator's own
  :func:`~sqems.datasets.plant.draw_actuals` (around the plant's target, with the planted
  wide machine's wider spread). A run outside the **plan's** limits fails its whole batch
  at that step: the in-process check against the new tolerance rejects it;
* **lots** of each BOM material spanning 3 to 8 batches
  (:func:`~sqems.datasets.plant.draw_lot_spans`), all from the BOM's supplier, or from the
  material's suppliers drawn lot by lot as the generator draws them when the BOM names
  none;
* **defects**: each defect type that originates at one of the plan's steps
  (``layout.ORIGINS``) or with one of its materials (``layout.MATERIAL_DEFECTS``) fires
  with its baseline rate (``Causes.baseline``, varied batch to batch by
  ``Causes.batch_log_sd``), plus the planted effects that reach the trial, through the
  generator's :func:`~sqems.datasets.plant.defect_probability`: the bad supplier's added
  probability on units made from its lots, the planted shift's at its step, and the
  voids a hot reflow peak adds (:func:`~sqems.datasets.plant.hot_reflow_p`).

Left out, as history rather than truth of a new run: the bad lot (a past lot; the trial
draws new ones), the reflow drift (a window of the plant's past), cosmetic scratches
(they arise in handling anywhere, at no step of a routing), and complaints.

A unit passes first time when it has no defect and no run of its batch was outside the
plan's limits. ``passed`` is what the plan's own inspections would report: units that no
inspection step of the routing caught (AOI at STEP-PCB-30, end-of-line test at
STEP-ASM-40, with the generator's detection probabilities) in batches inside the limits.

Trial production exists for the drives plant only: the bad supplier and wide machine are
planted through ``layout.Causes``, which the battery plant does not take, and its steps'
truths (``BatteryCauses``) are drawn by a generator of its own. :func:`produce` refuses
``PlantSpec(shape="battery")`` saying so.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sqems.datasets import layout
from sqems.datasets.plant import (
    PlantSpec,
    _shift_of,
    bad_supplier_units,
    batch_baseline,
    check_causes,
    defect_probability,
    draw_actuals,
    draw_lot_spans,
    hot_reflow_p,
)
from sqems.errors import ValidationFailed

if TYPE_CHECKING:
    from sqems.design.plan import BomItem, PlannedProductSpec, RoutingStep

__all__ = ["Trial", "produce"]

AOI_STEP = "STEP-PCB-30"
EOL_STEP = "STEP-ASM-40"
MAX_TRIAL_UNITS = 1_000_000


@dataclass(frozen=True, slots=True)
class Trial:
    """What a plan's trial run made.

    ``by_cause`` counts, per cause, the units it hit: a defect type's uid, or
    ``"<parameter> out of spec"`` for the units of batches failed at a run outside the
    plan's limits. A unit hit by two causes counts under both, so the counts may add up
    to more than ``units - first_pass``.
    """

    units: int
    first_pass: int
    fpy: float
    by_cause: dict[str, int]
    batches: int
    batches_out_of_spec: int
    passed: int
    """Units the plan's inspections would pass: none of their defects caught, their
    batch inside the limits (``passed >= first_pass``: inspection misses some defects)."""

    @property
    def passed_fpy(self) -> float:
        """The yield the plan's inspections would report (``passed / units``): what a
        prediction from the plant's recorded (caught) defects predicts."""
        return self.passed / self.units


@dataclass(frozen=True, slots=True)
class _Step:
    """A routing step resolved against the layout: its line, its spec, its machines."""

    line: layout.LineSpec
    spec: layout.StepSpec
    machines: tuple[str, ...]
    limits: dict[str, tuple[float | None, float | None]]


def produce(
    spec: PlantSpec,
    causes: layout.Causes | None,
    plan: PlannedProductSpec,
    *,
    units: int | None = None,
    seed: int = 0,
) -> Trial:
    """Make ``units`` (default ``plan.volume``) units of ``plan`` in the drives plant
    ``spec`` with ``causes`` planted (default ``layout.Causes()``). The same arguments
    give the same trial; nothing is written to a graph."""
    if spec.shape != "drives":
        raise ValidationFailed(
            f"trial production needs the drives plant, got shape {spec.shape!r}: the bad "
            "supplier and wide machine are planted through layout.Causes, which the "
            "battery plant does not take; use PlantSpec(shape='drives')"
        )
    if causes is not None and not isinstance(causes, layout.Causes):
        raise ValidationFailed(
            f"trial production takes layout.Causes, got {type(causes).__name__}: pass "
            "layout.Causes() or None"
        )
    c = causes or layout.Causes()
    check_causes(c)
    n = plan.volume if units is None else units
    if not 1 <= n <= MAX_TRIAL_UNITS:
        raise ValidationFailed(
            f"a trial makes 1 to {MAX_TRIAL_UNITS} units, asked for {n}: give units in range"
        )
    steps = [_resolve(r) for r in plan.routing]
    rng = np.random.default_rng([spec.seed, seed, zlib.crc32(plan.uid.encode())])

    size = plan.batch_size
    n_batches = math.ceil(n / size)
    sizes = np.full(n_batches, size, dtype=np.int64)
    sizes[-1] = n - size * (n_batches - 1)
    unit_batch = np.repeat(np.arange(n_batches), sizes)
    shifts = _shifts(spec, steps, sizes)

    suppliers = {
        item.material: _lot_suppliers(rng, item, n_batches)[unit_batch] for item in plan.bom
    }

    failed = np.zeros(n_batches, dtype=bool)
    by_cause: dict[str, int] = {}
    peak: np.ndarray | None = None
    for s in steps:
        machines = np.asarray(s.machines, dtype=object)[np.arange(n_batches) % len(s.machines)]
        for par in s.spec.params:
            actuals = draw_actuals(rng, par, machines, c)
            if par.uid == c.drift_parameter:
                peak = actuals[unit_batch]
            if par.uid not in s.limits:
                continue
            lsl, usl = s.limits[par.uid]
            out = np.zeros(n_batches, dtype=bool)
            if lsl is not None:
                out |= actuals < lsl
            if usl is not None:
                out |= actuals > usl
            failed |= out
            by_cause[f"{par.uid} out of spec"] = int(sizes[out].sum())

    step_uids = [s.spec.uid for s in steps]
    types = [
        t
        for t in layout.DEFECT_TYPES
        if layout.ORIGINS.get(t) in step_uids
        or any(layout.MATERIAL_DEFECTS.get(item.material) == t for item in plan.bom)
    ]
    night = (
        shifts[unit_batch, step_uids.index(c.shift_step)] == layout.SHIFTS.index(c.shift)
        if c.shift_step in step_uids
        else None
    )
    baseline = dict(c.baseline)
    fired: dict[str, np.ndarray] = {}
    for t in types:
        base = batch_baseline(
            baseline.get(t, 0.0),
            unit_batch,
            c.batch_log_sd,
            spec.seed,
            f"trial/{plan.uid}/{seed}/{t}",
        )
        if t == c.drift_defect and peak is not None:
            base = base + hot_reflow_p(c, peak)
        p = defect_probability(
            c, t, base, n, night=night, bad_supplier=bad_supplier_units(c, t, suppliers)
        )
        fired[t] = rng.random(n) < p
        by_cause[t] = int(fired[t].sum())

    defective = np.zeros(n, dtype=bool)
    for mask in fired.values():
        defective |= mask
    in_spec = ~failed[unit_batch]
    first_pass = int((~defective & in_spec).sum())
    caught = _caught(rng, c, fired, step_uids, n)
    return Trial(
        units=n,
        first_pass=first_pass,
        fpy=first_pass / n,
        by_cause=dict(sorted(by_cause.items())),
        batches=n_batches,
        batches_out_of_spec=int(failed.sum()),
        passed=int((~caught & in_spec).sum()),
    )


def _resolve(routing: RoutingStep) -> _Step:
    """The layout's step, line and machines of a routing step; ValidationFailed naming
    what the drives plant does not have."""
    found = next(
        ((ln, st) for ln in layout.LINES for st in ln.steps if st.uid == routing.step), None
    )
    if found is None:
        known = [st.uid for ln in layout.LINES for st in ln.steps]
        raise ValidationFailed(
            f"routing step {routing.step} is no step of the drives plant: give one of {known}"
        )
    line, step = found
    if routing.machine is not None:
        if routing.machine not in step.machines:
            raise ValidationFailed(
                f"machine {routing.machine} does not run {step.uid} in the drives plant: "
                f"give one of {list(step.machines)}"
            )
        machines: tuple[str, ...] = (routing.machine,)
    elif routing.machine_kind is not None and routing.machine_kind != step.machine_kind:
        raise ValidationFailed(
            f"no machine of kind {routing.machine_kind!r} runs {step.uid}: its machines "
            f"are of kind {step.machine_kind!r}"
        )
    else:
        machines = step.machines
    params = {p.uid for p in step.params}
    limits: dict[str, tuple[float | None, float | None]] = {}
    for planned in routing.parameters:
        if planned.parameter not in params:
            raise ValidationFailed(
                f"parameter {planned.parameter} is not recorded at {step.uid}: give one of "
                f"{sorted(params) or 'none (the step records no parameter)'}"
            )
        limits[planned.parameter] = (planned.lsl, planned.usl)
    return _Step(line, step, machines, limits)


def _shifts(spec: PlantSpec, steps: Sequence[_Step], sizes: np.ndarray) -> np.ndarray:
    """The shift (index into ``layout.SHIFTS``) of each batch's run at each step: batches
    one after another from the plant's start, with the generator's changeover and step
    offset, a unit taking the slowest cycle of the plan's lines."""
    cycle = max(s.line.cycle_s for s in steps)
    duration = sizes * cycle + layout.CHANGEOVER_S
    starts = int(spec.start.timestamp()) + np.concatenate(([0], np.cumsum(duration)[:-1]))
    run_starts = starts[:, None] + layout.STEP_OFFSET_S * np.arange(len(steps))[None, :]
    return _shift_of(run_starts)


def _lot_suppliers(rng: np.random.Generator, item: BomItem, n_batches: int) -> np.ndarray:
    """The supplier of the lot of ``item``'s material each batch uses: the BOM's supplier,
    else one of the material's suppliers drawn per lot as the generator draws them (None
    for a material the plant has never bought, which no planted fact concerns)."""
    spans = draw_lot_spans(rng, n_batches)
    if item.supplier is not None:
        per_lot = np.full(len(spans), item.supplier, dtype=object)
    elif item.material in layout.MATERIALS:
        known = layout.MATERIALS[item.material][3]
        per_lot = np.array(
            [known[k] for k in rng.integers(0, len(known), len(spans))], dtype=object
        )
    else:
        per_lot = np.full(len(spans), None, dtype=object)
    return np.asarray(np.repeat(per_lot, spans))


def _caught(
    rng: np.random.Generator,
    c: layout.Causes,
    fired: dict[str, np.ndarray],
    steps: list[str],
    n: int,
) -> np.ndarray:
    """Which units the routing's inspection steps catch, with the generator's detection
    probabilities: AOI catches board defects; the end-of-line test catches drive defects,
    and the board defects AOI did not catch (or that no AOI looked for)."""
    caught = np.zeros(n, dtype=bool)
    eol = dict(c.eol_detects)
    for t, mask in fired.items():
        if t in layout.BOARD_DEFECTS:
            seen = np.zeros(n, dtype=bool)
            if AOI_STEP in steps:
                seen |= mask & (rng.random(n) < c.aoi_detects)
            if EOL_STEP in steps:
                seen |= mask & ~seen & (rng.random(n) < c.eol_detects_board_defect)
        elif EOL_STEP in steps:
            seen = mask & (rng.random(n) < eol.get(t, 0.0))
        else:
            continue
        caught |= seen
    return caught
