"""Fit the quality model of every step of a line twin, once, and keep it on disk.

A step with controlled parameters gets a :class:`~sqems.twin.quality.QualityModel`
fitted to its history (:class:`~sqems.twin.line.StepHistory`). Parameters with both
spec limits get a curved effect (a restricted cubic spline): a two-sided spec says the
process may have an optimum in between, and a straight line alone could only ever
recommend running at a limit; the curve may as well be monotone or a threshold. Shift
indicators get none.

Fits are kept as netCDF files under the data directory, named after a hash of what
went into them (the history, the covariates, the sampler settings), so the same
history is fitted once and a changed history is fitted again. A model that failed its
diagnostics is kept (so it can be inspected) but never served: :func:`fit_line`
raises :class:`~sqems.errors.ValidationFailed` naming the step and what failed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sqems.settings import Settings
from sqems.twin.line import LineTwin, ParameterTwin, StepTwin
from sqems.twin.quality import MIN_PERIODS, QualityModel, Sampling, StepData, fit

IntArray = npt.NDArray[np.int64]

log = logging.getLogger(__name__)

RUNS_PER_PERIOD = 10
"""Runs per period of the time term, on average: enough to say where the period's
level lies, few enough that a drift over the history is followed."""
MAX_PERIODS = 26
"""At most this many periods, however long the history."""

MODEL_SCHEMA = 6
"""6: a time term (a random walk over periods of the history); 5: curved effects
(splines) instead of squared terms; 4: priors scaled to the tolerances; 3: the fit
checks (posterior predictive dispersion, PSIS-LOO) in the diagnostics; 2: beta-binomial
runs (rho). Fits saved under an older schema are not reused."""


@dataclass(frozen=True, slots=True)
class Sampler:
    """NUTS settings: small for tests and demos, larger for decisions."""

    draws: int = 2_000
    """Two thousand: the spread of a step's lots (tau_lot) is weakly identified at a
    small plant - about 0.07 effective draws per draw at the demo's 3,000 units - and
    1,000 draws a chain left it short of the ESS floor (100 per chain)."""
    tune: int = 1_000
    chains: int = 4
    """Four chains: R-hat compares chains, and with nutpie four cost less than PyMC's two."""
    seed: int = 0
    cores: int = 1
    sampler: Sampling = "auto"
    """The NUTS implementation (:func:`~sqems.twin.quality.fit`): nutpie when installed."""
    target_accept: float = 0.99
    """High: a step's history is a few dozen to a few thousand runs on two or three
    machines, so the machine spread and a squared term are weakly identified, and at
    0.95 the board line's paste-print model still diverged now and then; smaller steps
    cost about 20 % more time and keep the fits sound."""

    first_draws: int = 1_000
    """Draws per chain of a first, shorter run (0: none). :func:`fit_line` serves the
    first run's model when it passes every diagnostic (the ESS floor, R-hat, no
    divergence, the fit checks) and samples again with the full settings above when it
    does not: the gate is the same, only the cost of meeting it changes. On the
    100,000-unit plant's moulding step with lots and operators (316 parameters) the
    first run's 4 x (300 + 1,000) draws at 0.95 took 181,000 gradients (31 leapfrog
    steps a draw) against 756,000 (63 a draw) for 4 x (1,000 + 2,000) at 0.99, with a
    smallest ESS of 675 bulk and 837 tail (400 needed) and no divergence."""
    first_tune: int = 300
    """Tuning steps of the first run: nutpie's own default, whose mass matrix adapts
    from the gradients and settles in a few hundred steps."""
    first_target_accept: float = 0.95

    @property
    def first(self) -> Sampler | None:
        """The settings of the first, shorter run, or None when there is none (it
        would not be shorter than the full run)."""
        if not 0 < self.first_draws < self.draws:
            return None
        return replace(
            self,
            draws=self.first_draws,
            tune=min(self.first_tune, self.tune),
            target_accept=min(self.first_target_accept, self.target_accept),
            first_draws=0,
        )

    @classmethod
    def of(cls, settings: Settings) -> Sampler:
        return cls(draws=settings.twin_draws, tune=settings.twin_tune, chains=settings.twin_chains)


def step_data(step: StepTwin, *, groups: bool = False) -> StepData:
    """The step's history as the quality model's input; with ``groups``, with the
    lots its runs consumed and their operators, so the model learns a partially pooled
    effect of each (what a lot, supplier or operator scenario needs)."""
    h = step.history
    specs = {p.uid: p for p in step.parameters}
    periods, period = time_periods(h.started)
    curved = tuple(
        name
        for name in h.parameters
        if name in specs and specs[name].lsl is not None and specs[name].usl is not None
    )
    return StepData(
        step=step.uid,
        parameters=h.parameters,
        x=h.x,
        machine=h.machine,
        machines=step.machines,
        trials=h.trials,
        defects=h.defects,
        curved=curved,
        lots=h.lots if groups and h.lot_run.size else (),
        lot_run=h.lot_run if groups and h.lot_run.size else np.zeros(0, dtype=np.int64),
        lot_index=h.lot_index if groups and h.lot_run.size else np.zeros(0, dtype=np.int64),
        operators=h.operators if groups else (),
        operator=h.operator if groups and h.operators else np.zeros(0, dtype=np.int64),
        tolerance=tuple(_half_width(specs.get(name)) for name in h.parameters),
        periods=periods,
        period=period,
    )


def time_periods(started: npt.NDArray[np.float64]) -> tuple[tuple[str, ...], IntArray]:
    """The periods of a step's history for the model's time term, and each run's
    period: the history from its first run's start to its last cut into equal spans,
    one for every :data:`RUNS_PER_PERIOD` runs, at most :data:`MAX_PERIODS`. A history
    of fewer than :data:`~sqems.twin.quality.MIN_PERIODS` periods' runs, or without
    start times, gets none (no time term). Labels are the periods' starts (UTC)."""
    t = np.asarray(started, dtype=np.float64)
    none = ((), np.zeros(0, dtype=np.int64))
    if t.size == 0 or not np.isfinite(t).all() or not (t > 0).all():
        return none
    count = min(MAX_PERIODS, t.size // RUNS_PER_PERIOD)
    first, span = float(t.min()), float(t.max() - t.min())
    if count < MIN_PERIODS or span <= 0:
        return none
    width = span / count
    index = np.minimum(((t - first) // width).astype(np.int64), count - 1)
    labels = tuple(
        datetime.fromtimestamp(first + k * width, UTC).strftime("%Y-%m-%dT%H:%MZ")
        for k in range(count)
    )
    return labels, index


def _half_width(spec: ParameterTwin | None) -> float | None:
    """Half the tolerance of a parameter with both spec limits (None otherwise)."""
    if spec is None or spec.lsl is None or spec.usl is None or spec.usl <= spec.lsl:
        return None
    return (spec.usl - spec.lsl) / 2.0


def fit_line(
    twin: LineTwin,
    folder: Path,
    sampler: Sampler | None = None,
    *,
    steps: Collection[str] | None = None,
    groups: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, QualityModel]:
    """A sound model per step with parameters (fitted, or loaded when this history was
    fitted before); with ``steps``, only those steps' models (a scenario that acts at
    one step needs only that step's model: the others contribute no defects, and since
    every scenario of a comparison uses the same models, its difference from the
    baseline is that step's). With ``groups``, the models also learn lot and operator
    effects (:func:`step_data`); they take longer to fit."""
    sampler = sampler or Sampler()
    folder.mkdir(parents=True, exist_ok=True)
    if steps is not None:
        for uid in steps:
            twin.step(uid)
    wanted = [s for s in twin.steps if s.modelled and (steps is None or s.uid in steps)]
    models: dict[str, QualityModel] = {}
    for k, step in enumerate(wanted):
        if progress is not None:
            progress(step.uid, k, len(wanted))
        data = step_data(step, groups=groups)
        path = _model_path(folder, data, sampler)
        if path.exists():
            model = QualityModel.load(path)
        else:
            first = sampler.first
            model = _fit(data, first or sampler)
            if first is not None and not model.diagnostics.ok:
                log.info(
                    "%s: the first run fell short (%s); sampling with the full settings",
                    step.uid,
                    "; ".join(model.diagnostics.problems),
                )
                model = _fit(data, sampler)
            model.save(path)
        model.require_sound()
        models[step.uid] = model
    if progress is not None:
        progress("", len(wanted), len(wanted))
    return models


def cached_model(
    step: StepTwin, folder: Path, sampler: Sampler | None = None, *, groups: bool = False
) -> QualityModel | None:
    """The sound model :func:`fit_line` would serve for ``step``'s present history from
    ``folder``, or None when that history has not been fitted there with ``sampler``
    (or its fit failed its diagnostics). Never fits: for readers that must answer at
    once and use the twin only where it is ready."""
    path = _model_path(folder, step_data(step, groups=groups), sampler or Sampler())
    if not path.exists():
        return None
    model = QualityModel.load(path)
    return model if model.diagnostics.ok else None


def _model_path(folder: Path, data: StepData, sampler: Sampler) -> Path:
    """Where a step's model of this history and sampler is kept: one file per fit."""
    return folder / f"{data.step}-{_fingerprint(data, sampler)}.nc"


def _fit(data: StepData, sampler: Sampler) -> QualityModel:
    return fit(
        data,
        draws=sampler.draws,
        tune=sampler.tune,
        chains=sampler.chains,
        seed=sampler.seed,
        cores=sampler.cores,
        target_accept=sampler.target_accept,
        sampler=sampler.sampler,
    )


def _fingerprint(data: StepData, sampler: Sampler) -> str:
    h = hashlib.sha256()
    h.update(repr((MODEL_SCHEMA, data.step, data.parameters, data.machines)).encode())
    h.update(repr((data.curved, sampler)).encode())
    h.update(repr((data.lots, data.operators, data.tolerance, data.periods)).encode())
    for array in (
        data.x,
        data.machine,
        data.trials,
        data.defects,
        data.lot_run,
        data.lot_index,
        data.operator,
        data.period,
    ):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]
