"""Defect probability at one process step: a hierarchical logistic regression fitted with NUTS.

:func:`fit` learns, from the process runs of one step, how the chance that a unit made
in a run is defective depends on the run's parameter actuals and on the machine that
ran it, and returns a :class:`QualityModel` that holds the whole posterior: the
simulation of the digital twin draws from it, so uncertainty in what the plant's
history says flows into what the twin predicts. The API is data only - numpy arrays in
(:class:`StepData`), numpy arrays out; reading the runs from the plant graph is the
caller's job.

**Model.** For run r on machine m(r), with n_r units of which y_r are defective::

    z_rj   = (x_rj - mean_j) / sd_j                          (standardised actuals)
    logit p_r = alpha + sum_j beta_j z_rj + sum_c gamma_c s_c(z_r) + u_m(r)
    y_r    ~ Binomial(n_r, p_r)                            (observed)

The runs are the rows of the likelihood, not the units: a binomial count carries the
same information as its units one by one, so 50 000 runs of any size are cheap.
Each parameter is standardised by the mean and the standard deviation (divisor n) of
its actuals in the training runs, which are stored with the model: priors then read the
same for a temperature and a pressure, and the sampler sees coefficients of similar
size. The effect of a parameter named in :attr:`StepData.curved` is a smooth curve,
not a straight line: the s_c are the centred columns of a restricted cubic spline of
its z (:mod:`sqems.twin.splines`: two columns, knots at the smallest and largest
training actual and at its thirds), which can be monotone, a threshold (flat, then rising
towards a limit) or have an optimum inside the window (too cold and too hot both hurt),
as the data say, and is straight outside the data. A squared term, the model's
curve before, forced every curve to be a symmetric valley or hill that keeps bending
outside the data: a threshold at the reflow peak's USL was read as a valley and
predicted 244,000 ppm at the limit against about 130,000 true.

**Lots and operators** (optional: :attr:`StepData.lots`, :attr:`StepData.operators`)
are partially pooled, each group with its own spread: lot effects v_l ~ N(0, tau_lot)
and operator effects w_o ~ N(0, tau_operator), tau ~ HalfNormal(0.5). A run's batch may
consume several lots, so its logit gets the sum of its lots' effects (multi-membership)
plus its operator's::

    logit p_r = ... + sum_{l in lots(r)} v_l + w_o(r)

Each lot is sampled in the coordinates its data call for (:func:`_centred`): a lot
that stands out - its runs pin its effect more tightly than the prior spread does, and
its defects lie :data:`STANDS_OUT` standard errors or more from what a pilot fit
without lots expects of those runs, as a bad lot seen in many runs does - centred, as
v_l itself; every other lot, and every operator, non-centred, as v_l = tau_lot * e_l
with e_l ~ N(0, 1). With lots or operators in the model the machines are non-centred
too (:data:`CENTRED_SEPARATION`). On a 100,000-unit plant's moulding step (460 runs,
252 lots, 24 operators, one bad lot) everything non-centred but the machines gave 14
divergent transitions at target_accept 0.99 and the fit was refused; these coordinates
gave none, with about half the leapfrog steps a draw (63 against 127).

:meth:`QualityModel.lot_effects` and :meth:`QualityModel.operator_effects` give them
per draw; :meth:`QualityModel.probability` takes their sum as ``offset``.

**Run-to-run variation.** Runs (batches) differ by more than their parameters,
machines, lots and operators explain - material, set-up, luck - so a run's defects are
beta-binomial rather than binomial (whenever runs make more than one unit - for single
units the two are the same - and the model has no lot or operator effects, see
:func:`overdispersed`): the run's own defect probability is drawn from a beta
distribution with mean p_r (the logistic regression above) and intra-run correlation
rho, so that the defects of a run of n units vary by n p (1 - p) (1 + (n - 1) rho)
instead of n p (1 - p) (Williams, "Extra-binomial variation in logistic linear
models", Applied Statistics 31, 1982; Agresti, *Categorical Data Analysis*, 3rd ed.,
2013, sec. 4.7). Without it every unit counts as independent evidence, and defects
that cluster by lot or by time are pinned on whatever run inputs those runs happen to
share: on generated plants with a bad resin lot the moulding step's melt temperature
got beta = -0.69 [-1.13, -0.23] and the late shift +1.39, both without effect
(``benchmarks/twin_null.py`` counts such findings). The beta's concentration is
kappa = 1 / phi**2, phi ~ HalfNormal(0.5) (a half-normal on 1 / sqrt(kappa), as for a
negative binomial's overdispersion; 95 % of the prior below phi = 1, rho = 1/2), and
rho = 1 / (1 + kappa) is what the model reports. The effect per run is integrated out
in the likelihood, so the sampler sees one more parameter, not one per run: a
logit-normal effect per run was tried first and mixed slowly (bulk ESS of its spread
163 of 2,400 draws on the board line). The mean of a run's defect probability is p_r,
so predictions are unchanged: :meth:`QualityModel.probability` is the mean over runs.

**Time** (optional: :attr:`StepData.periods`, periods of the history; the line twin cuts
a step's history into one period per 10 runs, :func:`sqems.twin.fitting.time_periods`).
A plant's defect rate moves with time - wear, seasons, a supplier's drift - and a
parameter that creeps over the same months takes the blame when the model has no time of
its own: on synthetic steps whose logit drifts by 1.6 over 12 periods beside a parameter
that creeps with it and has no effect, the beta-binomial model without time put that
parameter's 94 % interval above zero in 6 of 6 fits, and its posterior predictive check
passed them all (the parameter had absorbed the drift); with the time term its interval
excluded zero in 2 of 26 (a 94 % interval misses 6 % of the time). Each period k has an
effect t_k on the logit, a random walk::

    t_k = tau_time * (sum_{i<k} e_i - mean over periods),   e_i ~ N(0, 1),
    tau_time ~ HalfNormal(0.25)

non-centred (a funnel otherwise as tau_time shrinks), centred on the history's level so
that alpha stays the average logit. A walk rather than a free effect per period:
neighbouring periods are alike, a period with few runs borrows from its neighbours, and
a flat history costs one small spread. Predictions (:meth:`QualityModel.probability`)
are at the history's average level - what a what-if compares scenarios on;
:meth:`QualityModel.time_effects` gives the walk per draw.

**Machine effects** are partially pooled and non-centred: u_m = tau * eps_m with
eps_m ~ N(0, 1). A machine with few runs is pulled towards the step's typical machine;
one with many keeps its own rate. Non-centred because the usual step has 2-4 machines
that are often alike: a centred model (u_m ~ N(0, tau)) then falls into the funnel
where tau and all u_m shrink together, and in trials it diverged in every one of 12
fits of alike machines or of thin data (80 runs of 20 units), where this one did not.

**Priors** (all on the logit scale, weakly informative):

===========  ==================================  ==========================================
parameter    prior                               why
===========  ==================================  ==========================================
alpha        N(logit(rate), 1.5)                 centred on the step's observed defect
                                                 rate (smoothed: (defects + 0.5) /
                                                 (units + 1), so a step without defects
                                                 still has a centre); 1.5 lets the
                                                 baseline move by a factor of ~20 in odds
                                                 either way at two prior sd, which covers
                                                 the gap between the pooled rate and the
                                                 rate at the parameters' means
beta_j       N(0, 1.5 sd_j / h_j), at most N(0, 1)  h_j is half the tolerance: a move
                                                 across half the tolerance moves the logit
                                                 by N(0, 1.5), so a spec limit that lies
                                                 many observed sd away is not reached on
                                                 the prior's say-so (:func:`prior_scales`);
                                                 N(0, 1) per sd without a two-sided spec:
                                                 a one-sd move that multiplies the odds by
                                                 e**2 ~ 7 sits at two prior sd
gamma_c      N(0, 1.5 sd_j / h_j), at most N(0, 1)  the scale of its parameter's beta: the
                                                 spline's columns are in the units of z
tau          HalfNormal(0.5)                     the spread of the machines' log-odds:
                                                 95 % of the prior mass lies below 1, a
                                                 factor of 2.7 in odds per sd; with 2-4
                                                 machines the data say little about tau,
                                                 and a wider prior lets it wander where
                                                 the sampler diverges
eps_m        N(0, 1)                             the non-centred machine offsets
phi          HalfNormal(0.5)                     1 / sqrt(kappa) of the beta-binomial runs
                                                 (see above); phi = 0 is the binomial
===========  ==================================  ==========================================

**Sampling coordinates.** The model above is sampled in rotated coordinates that leave
it unchanged but take away the two ridges NUTS is slow on. (1) The data pin
alpha + u_m for every machine, not alpha: alpha and the common part of the u_m trade
off along a long narrow ridge. eps splits into its mean and its zero-sum deviation,
``eps_mean ~ N(0, 1/M)`` and ``eps_dev ~ ZeroSumNormal(1)`` (independent, and together
exactly M iid N(0, 1)), and the sampler sees the intercept the data pin,
``centre = alpha + tau * eps_mean``. (2) The curve columns are centred on their
training means, so alpha and gamma do not trade off. The prior of alpha is carried
over exactly: centre ~ N(logit(rate) + tau * eps_mean, 1.5). alpha, eps and u are
kept in the posterior as derived values. In 12 fits of data like the tests' (600 runs
of 50 units, 3 machines that differ, 400 draws x 2 chains) the rotation raised the
smallest bulk ESS from ~200 to ~300 and the worst R-hat from up to 1.04 to at most
1.015. ``target_accept`` defaults to 0.95 rather than 0.9: at 0.9, 5 of those 12 fits
still had one to three divergent transitions, at 0.95 none did (and 1 of 6 fits of
alike machines had one).

**Diagnostics.** The sampler's own checks are off (``compute_convergence_checks=False``)
and :func:`fit` computes its own with ArviZ over the model's coefficients (alpha, beta,
gamma, tau, eps, u): the largest rank-normalised split R-hat, the smallest bulk and
tail effective sample sizes (ESS), and the number of divergent transitions. A model is
*sound* when

* R-hat <= :data:`R_HAT_MAX` = 1.03,
* bulk and tail ESS >= :data:`ESS_PER_CHAIN` = 100 per chain, and
* no transition diverged.

The ESS floor and the zero divergences are those of PyMC's own checks and of Vehtari
et al., "Rank-normalization, folding, and localization: an improved R-hat" (Bayesian
Analysis 16, 2021). Their R-hat bound of 1.01 is not used: it presumes ESS of 400 and
more, and R-hat is itself an estimate, about 1 + O(1/ESS) for chains that did converge.
With 2 chains of 400 draws, the largest of a dozen R-hats went above 1.01 by chance
alone in 70 % of simulated converged fits (AR(1) chains of efficiency 0.43, the
efficiency of tau here), above 1.03 in 1 %; chains that explore different places - the
failure R-hat is for - sit well above 1.03, and slow mixing fails the ESS floor. Fits
of 400 draws x 2 chains pass on well-behaved data; 300 draws a chain can fall short of
the ESS floor on tau, whose ESS is the lowest (about 0.3-0.5 per draw).
Convergence is not fit: :func:`fit` then checks that the model describes its runs (the
posterior predictive dispersion and PSIS-LOO, :mod:`sqems.twin.fit_check`), and a model
that fails either is unsound too. The product refuses to serve a model that fails:
:meth:`QualityModel.require_sound`. A model is kept
and saved even when unsound, so that the failure can be looked at.

**Machines the model has not seen.** :meth:`QualityModel.probability` and
:meth:`QualityModel.expected_probability` accept a machine name that is not in
:attr:`QualityModel.machines` (or the index -1): such a machine is a new member of the
step's machine population, u ~ N(0, tau). By default its effect is *integrated out*
(32-point Gauss-Hermite quadrature under the draw's tau): the probability that a unit
from a machine picked at random from the population is defective - not the probability
of the median machine (u = 0), which is lower whenever p is convex in the logit, as it
is for rare defects. When the simulation wants a concrete new machine whose runs share
their luck, it passes ``rng``: each distinct unknown machine of the call then gets one
effect drawn from N(0, tau) of that draw.

**Draws** are numbered chain-major: draw i is draw i % per_chain of chain
i // per_chain, i in [0, :attr:`QualityModel.draws`).

**Persistence.** :meth:`QualityModel.save` writes the InferenceData to netCDF
(``idata.to_netcdf``) with the model's metadata - the step, names, the standardisation,
the machines, the diagnostics and :data:`SCHEMA_VERSION` - as JSON in the file's root
attributes, so one file holds everything; :meth:`QualityModel.load` restores the
metadata and the posterior (what the model serves) and leaves the sample statistics in
the file. A file of another schema version is refused.

**Sampler.** :func:`fit` samples with nutpie (NUTS written in Rust, the model compiled
through PyTensor's numba backend) when it is installed - it is a dependency - else with
PyMC's own NUTS (``sampler="pymc"`` asks for it). Each is reproducible for a seed, but
the two do not give the same draws. The result has the same groups and variables either
way (nutpie's warm-up draws and unconstrained coordinates are dropped) and passes the
same diagnostics. On the 100,000-unit plant's moulding step with lot and operator
effects, nutpie compiled the model in 5-10 s (PyTensor keeps numba's compiled kernels
on disk, so the first fit on a machine takes longer) and drew 4 chains x 1,000 in
18-21 s, where PyMC's sampler took 80-96 s for 2 chains (``benchmarks/twin_lines.py``).

PyMC is imported by :func:`fit` only: serving a saved model needs ArviZ and numpy, not
the sampler and its compiler.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

import arviz as az
import numpy as np
import numpy.typing as npt
import xarray as xr
from scipy import sparse, special

from sqems.errors import NotFound, ValidationFailed
from sqems.twin.fit_check import FitCheck, check_draws, check_fit
from sqems.twin.splines import Curves

__all__ = [
    "ALPHA_SD",
    "BETA_SD",
    "CENTRED_SEPARATION",
    "ESS_PER_CHAIN",
    "FORMAT",
    "GAMMA_SD",
    "HDI_PROB",
    "MIN_DRAWS",
    "NEW_MACHINE",
    "PILOT_SD",
    "R_HAT_MAX",
    "SCHEMA_VERSION",
    "STANDS_OUT",
    "TAU_SD",
    "TIME_SD",
    "TOLERANCE_SD",
    "Coefficient",
    "Diagnostics",
    "Parametrisation",
    "QualityModel",
    "Sampling",
    "Scaling",
    "StepData",
    "diagnose",
    "fit",
    "machine_separation",
    "overdispersed",
    "prior_scales",
    "standing_out",
    "synthetic_step_data",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
MachineSpec = int | str | Sequence[str] | Sequence[int] | npt.NDArray[Any]
"""A machine for every run: one index or name for all of them, or one per run."""

SCHEMA_VERSION: Final = 2
"""Version of the saved model's layout; a file of another version is refused (2: curves
instead of squared terms, and the time term)."""
FORMAT: Final = "sqems-quality-model"

ALPHA_SD: Final = 1.5
BETA_SD: Final = 1.0
GAMMA_SD: Final = 1.0
TAU_SD: Final = 0.5
TOLERANCE_SD: Final = 1.5
"""Prior sd, on the logit, of the effect of moving a parameter across half its
tolerance (:func:`prior_scales`)."""
PHI_SD: Final = 0.5
"""Prior sd of phi = 1 / sqrt(kappa), the beta-binomial's overdispersion."""
TIME_SD: Final = 0.25
"""Prior sd of tau_time, the spread of the logit's change from one period of the
history to the next (the time term's random walk)."""
MIN_PERIODS: Final = 3
"""Fewer periods leave no walk to learn: a time term needs at least this many."""

R_HAT_MAX: Final = 1.03
"""Largest rank-normalised split R-hat of a sound model (see the module docstring for
why not 1.01)."""
ESS_PER_CHAIN: Final = 100
"""Smallest bulk and tail effective sample size of a sound model, per chain."""
MIN_DRAWS: Final = 10
"""Fewer draws per chain leave nothing to diagnose: :func:`fit` refuses them."""
MIN_RUNS: Final = 2
HDI_PROB: Final = 0.94
"""Mass of the highest-density intervals of :meth:`QualityModel.coefficients`."""
NEW_MACHINE: Final = -1
"""The machine index of a machine the model has not seen."""
QUADRATURE_NODES: Final = 32
CENTRED_SEPARATION: Final = 10.0
"""From this :func:`machine_separation` on, ``fit(parametrisation="auto")`` samples the
machines' deviations centred - unless the model has lot or operator effects: the
separation is measured without them, and machines that differ only because a bad lot
ran on one of them stop differing once the lots are in the model (their spread shrinks
towards 0, where centred deviations form a funnel: 10 divergent transitions in the
100,000-unit assembly step's fit, none non-centred)."""
PILOT_SD: Final = 10.0
STANDS_OUT: Final = 4.0
"""Standard errors between a lot's defects and what the pilot fit without lots expects
of its runs from which the lot stands out and its effect is sampled centred. At 2 from
the step's raw rate, one lot of 19 on a 33-run step of a 12,000-unit plant (5 defects
in 600 units against a rate of 0.3 %) stood out by chance and its fit diverged as
tau_lot shrank (1.6 from the pilot's expectation); a bad lot seen in many runs sits
tens of standard errors away (33 on a 100,000-unit plant)."""
Parametrisation = Literal["auto", "centred", "non-centred"]
Sampling = Literal["auto", "nutpie", "pymc"]

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)
_WEIGHTS = _WEIGHTS / math.sqrt(2.0 * math.pi)  # E[f(Z)], Z ~ N(0, 1) = sum w f(node)

_ATTR_FORMAT = "sqems_format"
_ATTR_VERSION = "sqems_schema_version"
_ATTR_META = "sqems_metadata"
_COEFFICIENTS = (
    "alpha",
    "beta",
    "gamma",
    "tau",
    "eps",
    "u",
    "rho",
    "tau_lot",
    "lot_effect",
    "tau_operator",
    "operator_effect",
    "tau_time",
    "time_effect",
)
"""The model's coefficients, the ones diagnosed; the sampling coordinates (centre,
eps_mean, eps_dev) are functions of them."""


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class StepData:
    """The training runs of one step, validated on construction.

    The arrays are copied into read-only arrays of fixed dtype: ``x`` float64 of shape
    (runs, parameters), ``machine``, ``trials`` and ``defects`` int64 of shape (runs,).
    Counts may come as integral floats (a data frame column with gaps filled); anything
    else that is not a whole, non-negative number is refused.
    """

    step: str
    parameters: tuple[str, ...]
    """Names of the columns of ``x``; may be empty (a step with machine effects only)."""
    x: FloatArray
    """Raw parameter actuals, one row per process run."""
    machine: IntArray
    """Index into :attr:`machines` of the machine of each run."""
    machines: tuple[str, ...]
    trials: IntArray
    """Units made in each run."""
    defects: IntArray
    """Defective units of each run."""
    curved: tuple[str, ...] = ()
    """Parameters whose effect is a smooth curve (a restricted cubic spline,
    :mod:`sqems.twin.splines`) rather than a straight line."""
    lots: tuple[str, ...] = ()
    """Material lots the runs consumed (empty: no lot effects in the model)."""
    lot_run: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """With :attr:`lot_index`, the run-lot memberships: run ``lot_run[k]`` consumed lot
    ``lot_index[k]`` (a run's batch may consume several lots)."""
    lot_index: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    operators: tuple[str, ...] = ()
    """Operators of the runs (empty: no operator effects in the model)."""
    operator: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Index into :attr:`operators` of each run's operator, -1 when not recorded."""
    tolerance: tuple[float | None, ...] = ()
    """Half the width of each parameter's tolerance (USL - LSL) / 2, None where the
    spec is one-sided or absent; empty: none known. It scales the priors of the
    parameter's effects (:func:`prior_scales`)."""
    periods: tuple[str, ...] = ()
    """Periods of the history in time order (empty: no time term in the model)."""
    period: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Index into :attr:`periods` of each run's period."""

    def __post_init__(self) -> None:
        step = self.step
        if not isinstance(step, str) or not step.strip():
            raise ValidationFailed(f"step data needs the name of its step, got {step!r}")
        parameters = _names(self.parameters, "parameter", step)
        machines = _names(self.machines, "machine", step)
        if not machines:
            raise ValidationFailed(f"{step}: step data needs at least one machine")
        curved = _names(self.curved, "curved parameter", step)
        unknown = [q for q in curved if q not in parameters]
        if unknown:
            raise ValidationFailed(
                f"{step}: curved names {', '.join(unknown)}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not among the parameters "
                f"({', '.join(parameters) or 'none'})"
            )

        x = np.asarray(self.x)
        if x.dtype.kind not in "iuf":
            raise ValidationFailed(f"{step}: x must hold numbers, got dtype {x.dtype}")
        if x.ndim != 2 or x.shape[1] != len(parameters):
            raise ValidationFailed(
                f"{step}: x must have shape (runs, {len(parameters)}) - one column per "
                f"parameter - got shape {x.shape}"
            )
        runs = x.shape[0]
        if runs < MIN_RUNS:
            raise ValidationFailed(f"{step}: at least {MIN_RUNS} runs are needed, got {runs}")
        x = x.astype(np.float64)
        bad = np.argwhere(~np.isfinite(x))
        if bad.size:
            r, c = (int(i) for i in bad[0])
            raise ValidationFailed(
                f"{step}: parameter {parameters[c]} of run {r} is {x[r, c]}; every actual "
                f"must be a finite number ({len(bad)} are not) - drop or impute those runs"
            )
        for j, name in enumerate(parameters):
            distinct = np.unique(x[:, j]).size
            if distinct < 2:
                raise ValidationFailed(
                    f"{step}: parameter {name} is {x[0, j]:g} in every run; a parameter "
                    "needs at least 2 distinct values for its effect to be learnt - leave "
                    "it out"
                )
            if distinct < 3 and name in curved:
                raise ValidationFailed(
                    f"{step}: parameter {name} takes only 2 distinct values, so any curve "
                    "through them is a straight line - leave it out of curved"
                )

        machine = _whole(self.machine, "machine", step, runs)
        outside = np.flatnonzero((machine < 0) | (machine >= len(machines)))
        if outside.size:
            r = int(outside[0])
            raise ValidationFailed(
                f"{step}: machine index {machine[r]} of run {r} is not an index into the "
                f"{len(machines)} machines (0 to {len(machines) - 1})"
            )
        trials = _whole(self.trials, "trials", step, runs)
        defects = _whole(self.defects, "defects", step, runs)
        for what, counts in (("trials", trials), ("defects", defects)):
            negative = np.flatnonzero(counts < 0)
            if negative.size:
                r = int(negative[0])
                raise ValidationFailed(f"{step}: {what} of run {r} is {counts[r]} (negative)")
        over = np.flatnonzero(defects > trials)
        if over.size:
            r = int(over[0])
            raise ValidationFailed(
                f"{step}: run {r} has {defects[r]} defective units of {trials[r]} made; "
                f"defects cannot exceed trials ({over.size} runs do)"
            )
        if int(trials.sum()) == 0:
            raise ValidationFailed(f"{step}: no run made any unit (trials are all 0)")
        lots = _names(self.lots, "lot", step)
        members = len(np.asarray(self.lot_run))
        lot_run = _whole(self.lot_run, "lot_run", step, members)
        lot_index = _whole(self.lot_index, "lot_index", step, members)
        if lot_run.size and (lot_run.min() < 0 or lot_run.max() >= runs):
            raise ValidationFailed(f"{step}: lot_run must index the {runs} runs")
        if lot_index.size and (lot_index.min() < 0 or lot_index.max() >= len(lots)):
            raise ValidationFailed(f"{step}: lot_index must index the {len(lots)} lots")
        if lots and not lot_run.size:
            raise ValidationFailed(f"{step}: lots are named but no run consumed any")
        operators = _names(self.operators, "operator", step)
        operator = (
            _whole(self.operator, "operator", step, runs)
            if operators
            else np.zeros(0, dtype=np.int64)
        )
        if operator.size and (operator.min() < -1 or operator.max() >= len(operators)):
            raise ValidationFailed(
                f"{step}: operator must index the {len(operators)} operators, or be -1"
            )

        tolerance = tuple(self.tolerance)
        if tolerance and len(tolerance) != len(parameters):
            raise ValidationFailed(
                f"{step}: tolerance must give one half-width per parameter "
                f"({len(parameters)}), got {len(tolerance)}"
            )
        for name, half in zip(parameters, tolerance, strict=False):
            if half is not None and not (math.isfinite(half) and half > 0):
                raise ValidationFailed(
                    f"{step}: the tolerance half-width of {name} must be a positive number, "
                    f"got {half}"
                )

        periods = _names(self.periods, "period", step)
        period = (
            _whole(self.period, "period", step, runs) if periods else np.zeros(0, dtype=np.int64)
        )
        if periods and len(periods) < MIN_PERIODS:
            raise ValidationFailed(
                f"{step}: a time term needs at least {MIN_PERIODS} periods, got {len(periods)}"
            )
        if period.size and (period.min() < 0 or period.max() >= len(periods)):
            raise ValidationFailed(f"{step}: period must index the {len(periods)} periods")

        for name, value in (
            ("periods", periods),
            ("period", _frozen(period)),
            ("tolerance", tolerance),
            ("lots", lots),
            ("lot_run", _frozen(lot_run)),
            ("lot_index", _frozen(lot_index)),
            ("operators", operators),
            ("operator", _frozen(operator)),
            ("parameters", parameters),
            ("machines", machines),
            ("curved", curved),
            ("x", _frozen(x)),
            ("machine", _frozen(machine)),
            ("trials", _frozen(trials)),
            ("defects", _frozen(defects)),
        ):
            object.__setattr__(self, name, value)

    @property
    def runs(self) -> int:
        return int(self.x.shape[0])

    @property
    def rate(self) -> float:
        """The pooled defect rate, smoothed so that it is never 0 or 1."""
        return (float(self.defects.sum()) + 0.5) / (float(self.trials.sum()) + 1.0)


def _names(values: Sequence[str], what: str, step: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValidationFailed(f"{step}: {what} names must be a sequence of names, not a str")
    names = tuple(values)
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValidationFailed(f"{step}: {what} names must be non-empty text, got {name!r}")
    twice = sorted(n for n, count in Counter(names).items() if count > 1)
    if twice:
        raise ValidationFailed(f"{step}: {what} names must be unique; repeated: {', '.join(twice)}")
    return names


def _whole(values: Any, what: str, step: str, runs: int) -> IntArray:
    """``values`` as one whole number per run."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != runs:
        raise ValidationFailed(
            f"{step}: {what} must have one entry per run ({runs}), got shape {arr.shape}"
        )
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        whole = np.isfinite(arr) & (arr == np.round(arr))
        if not whole.all():
            r = int(np.flatnonzero(~whole)[0])
            raise ValidationFailed(f"{step}: {what} of run {r} is {arr[r]}, not a whole number")
        return arr.astype(np.int64)
    raise ValidationFailed(f"{step}: {what} must hold whole numbers, got dtype {arr.dtype}")


def _frozen(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    out = np.array(arr, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, slots=True)
class Scaling:
    """How raw parameter actuals become the standardised z the model sees."""

    mean: tuple[float, ...]
    sd: tuple[float, ...]
    """Standard deviation with divisor n (the population formula, as scikit-learn's
    StandardScaler)."""

    @classmethod
    def of(cls, x: FloatArray) -> Scaling:
        return cls(tuple(float(v) for v in x.mean(axis=0)), tuple(float(v) for v in x.std(axis=0)))

    def apply(self, x: FloatArray) -> FloatArray:
        return np.asarray((x - np.asarray(self.mean)) / np.asarray(self.sd), dtype=np.float64)

    def raw(self, z: FloatArray) -> FloatArray:
        """The inverse of :meth:`apply`: raw actuals of standardised values."""
        return np.asarray(np.asarray(self.mean) + z * np.asarray(self.sd), dtype=np.float64)


# --- diagnostics ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Diagnostics:
    """Convergence of a fit, and whether it is good enough to serve.

    The worst value of each statistic is reported with the coefficient it belongs to
    (``"tau"``, ``"u[M-2]"``), which is where to look when it fails.
    """

    chains: int
    draws: int
    """Draws per chain."""
    max_r_hat: float
    r_hat_at: str
    min_ess_bulk: float
    ess_bulk_at: str
    min_ess_tail: float
    ess_tail_at: str
    divergences: int
    check: FitCheck | None = None
    """Whether the model fits its runs (:mod:`sqems.twin.fit_check`); None for a model
    saved before the check existed, which is judged on convergence alone."""

    @property
    def ess_required(self) -> float:
        return float(ESS_PER_CHAIN * self.chains)

    @property
    def problems(self) -> tuple[str, ...]:
        """Why the model is not sound, one reason a person can act on per failed check."""
        out = []
        if not self.max_r_hat <= R_HAT_MAX:
            out.append(
                f"r_hat {self.max_r_hat:.3f} at {self.r_hat_at} is above {R_HAT_MAX}: the "
                "chains disagree - sample longer (more tune and draws)"
            )
        required = self.ess_required
        for kind, value, at in (
            ("bulk", self.min_ess_bulk, self.ess_bulk_at),
            ("tail", self.min_ess_tail, self.ess_tail_at),
        ):
            if not value >= required:
                out.append(
                    f"ESS {kind} {value:.0f} at {at} is below {required:.0f} "
                    f"({ESS_PER_CHAIN} per chain): too few effective draws - draw more"
                )
        if self.divergences:
            out.append(
                f"{self.divergences} divergent transition"
                f"{'s' if self.divergences != 1 else ''}: the sampler could not follow the "
                "posterior - raise target_accept or look for runs the model cannot explain"
            )
        if self.check is not None:
            out.extend(self.check.problems)
        return tuple(out)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The numbers, with ``ok`` and ``problems`` for people (ignored by
        :meth:`from_dict`, which judges the numbers afresh)."""
        return {**asdict(self), "ok": self.ok, "problems": list(self.problems)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnostics:
        return cls(
            chains=int(data["chains"]),
            draws=int(data["draws"]),
            max_r_hat=float(data["max_r_hat"]),
            r_hat_at=str(data["r_hat_at"]),
            min_ess_bulk=float(data["min_ess_bulk"]),
            ess_bulk_at=str(data["ess_bulk_at"]),
            min_ess_tail=float(data["min_ess_tail"]),
            ess_tail_at=str(data["ess_tail_at"]),
            divergences=int(data["divergences"]),
            check=FitCheck(**data["check"]) if data.get("check") else None,
        )


def diagnose(idata: az.InferenceData) -> Diagnostics:
    """The convergence :class:`Diagnostics` of a posterior sampled by :func:`fit`.

    A statistic ArviZ cannot compute (NaN, e.g. a chain that never moved) counts as the
    worst possible value.
    """
    posterior = idata["posterior"]
    names = [v for v in _COEFFICIENTS if v in posterior]
    r_hat = _labelled(az.rhat(idata, var_names=names), names)  # type: ignore[no-untyped-call]
    bulk = _labelled(az.ess(idata, var_names=names, method="bulk"), names)  # type: ignore[no-untyped-call]
    tail = _labelled(az.ess(idata, var_names=names, method="tail"), names)  # type: ignore[no-untyped-call]
    r_at = max(r_hat, key=lambda k: math.inf if math.isnan(r_hat[k]) else r_hat[k])
    bulk_at = min(bulk, key=lambda k: -math.inf if math.isnan(bulk[k]) else bulk[k])
    tail_at = min(tail, key=lambda k: -math.inf if math.isnan(tail[k]) else tail[k])
    return Diagnostics(
        chains=int(posterior.sizes["chain"]),
        draws=int(posterior.sizes["draw"]),
        max_r_hat=math.inf if math.isnan(r_hat[r_at]) else r_hat[r_at],
        r_hat_at=r_at,
        min_ess_bulk=0.0 if math.isnan(bulk[bulk_at]) else bulk[bulk_at],
        ess_bulk_at=bulk_at,
        min_ess_tail=0.0 if math.isnan(tail[tail_at]) else tail[tail_at],
        ess_tail_at=tail_at,
        divergences=int(idata["sample_stats"]["diverging"].values.sum()),
    )


def _labelled(stats: Any, names: Sequence[str]) -> dict[str, float]:
    """A per-coefficient statistic as ``{"beta[P-TEMP]": value}``."""
    out = {}
    for name in names:
        values = stats[name]
        if values.ndim == 0:
            out[name] = float(values)
            continue
        (dim,) = values.dims
        for label, value in zip(values[dim].values, values.values, strict=True):
            out[f"{name}[{label}]"] = float(value)
    return out


# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coefficient:
    """One coefficient's posterior mean and :data:`HDI_PROB` highest-density interval."""

    name: str
    mean: float
    hdi_low: float
    hdi_high: float

    def covers(self, value: float) -> bool:
        return self.hdi_low <= value <= self.hdi_high


@dataclass(frozen=True, slots=True, eq=False)
class QualityModel:
    """A fitted defect model of one step: the posterior and what it needs to be applied.

    Build it with :func:`fit` or :meth:`load`. The posterior is flattened into numpy
    arrays once, on construction, so :meth:`probability` costs one small matrix product.
    """

    step: str
    parameters: tuple[str, ...]
    curves: Curves
    machines: tuple[str, ...]
    scaling: Scaling
    diagnostics: Diagnostics
    parametrisation: str
    """The coordinates the machines' deviations were sampled in: centred or non-centred."""
    idata: az.InferenceData = field(repr=False)
    lots: tuple[str, ...] = ()
    """Lots with an effect in the model (empty: fitted without lot effects)."""
    operators: tuple[str, ...] = ()
    """Operators with an effect in the model (empty: fitted without them)."""
    periods: tuple[str, ...] = ()
    """Periods of the history with a time effect (empty: fitted without a time term)."""
    _alpha: FloatArray = field(init=False, repr=False)
    _beta: FloatArray = field(init=False, repr=False)
    _gamma: FloatArray = field(init=False, repr=False)
    _tau: FloatArray = field(init=False, repr=False)
    _rho: FloatArray = field(init=False, repr=False)
    _u: FloatArray = field(init=False, repr=False)
    _groups: dict[str, FloatArray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if "posterior" not in self.idata.groups():
            raise ValidationFailed(f"{self.step}: the quality model has no posterior")
        post = self.idata["posterior"]
        expected = {"alpha": (), "tau": (), "u": ("machine", self.machines)}
        if self.parameters:
            expected["beta"] = ("parameter", self.parameters)
        if self.curves.parameters != self.parameters:
            raise ValidationFailed(f"{self.step}: the curves are not over the model's parameters")
        if self.curves.columns:
            expected["gamma"] = ("curve", self.curves.labels)
        if self.lots:
            expected["lot_effect"] = ("lot", self.lots)
            expected["tau_lot"] = ()
        if self.operators:
            expected["operator_effect"] = ("operator", self.operators)
            expected["tau_operator"] = ()
        if self.periods:
            expected["time_effect"] = ("period", self.periods)
            expected["tau_time"] = ()
        if "rho" in post:  # absent from models of single units
            expected["rho"] = ()
        flat = {}
        for name, dims in expected.items():
            if name not in post:
                raise ValidationFailed(f"{self.step}: the posterior has no {name}")
            var = post[name]
            if dims:
                dim, labels = dims
                if var.dims != ("chain", "draw", dim) or tuple(var[dim].values) != labels:
                    raise ValidationFailed(
                        f"{self.step}: the posterior's {name} is not over the model's "
                        f"{dim}s ({', '.join(labels)})"
                    )
            elif var.dims != ("chain", "draw"):
                raise ValidationFailed(f"{self.step}: the posterior's {name} is not a scalar")
            values = np.asarray(var.values, dtype=np.float64)
            flat[name] = values.reshape(values.shape[0] * values.shape[1], *values.shape[2:])
        n = flat["alpha"].shape[0]
        empty = np.zeros((n, 0))
        object.__setattr__(self, "_alpha", flat["alpha"])
        object.__setattr__(self, "_beta", flat.get("beta", empty))
        object.__setattr__(self, "_gamma", flat.get("gamma", empty))
        object.__setattr__(self, "_tau", flat["tau"])
        object.__setattr__(self, "_rho", flat.get("rho", np.zeros(n)))
        object.__setattr__(self, "_u", flat["u"])
        object.__setattr__(self, "_groups", flat)

    @property
    def draws(self) -> int:
        """Number of posterior draws, over all chains."""
        return int(self._alpha.shape[0])

    @property
    def overdispersed(self) -> bool:
        """Whether the model lets runs vary beyond the binomial (rho; not for single units)."""
        return bool(self._rho.any())

    def lot_effects(self, draw: int) -> tuple[FloatArray, float]:
        """Each lot's effect on the logit under ``draw`` (in the order of :attr:`lots`)
        and the spread tau_lot of the lot population; a model without lots has none."""
        d = self._draw(draw)
        if not self.lots:
            return np.zeros(0), 0.0
        return self._groups["lot_effect"][d], float(self._groups["tau_lot"][d])

    def time_effects(self, draw: int) -> FloatArray:
        """Each period's effect on the logit under ``draw`` (order of :attr:`periods`;
        they sum to zero: the history's average level is in alpha)."""
        d = self._draw(draw)
        if not self.periods:
            return np.zeros(0)
        return np.asarray(self._groups["time_effect"][d], dtype=np.float64)

    def operator_effects(self, draw: int) -> FloatArray:
        """Each operator's effect on the logit under ``draw`` (order of
        :attr:`operators`)."""
        d = self._draw(draw)
        if not self.operators:
            return np.zeros(0)
        return np.asarray(self._groups["operator_effect"][d], dtype=np.float64)

    # --- prediction --------------------------------------------------------------------------

    def probability(
        self,
        draw: int,
        x: npt.ArrayLike,
        machine: MachineSpec,
        *,
        rng: np.random.Generator | None = None,
        offset: FloatArray | None = None,
    ) -> FloatArray:
        """Defect probability of a unit of each run, under posterior draw ``draw``.

        ``offset`` adds to each run's logit: the effects of its lots and operator
        (:meth:`lot_effects`, :meth:`operator_effects`), which the caller sums.

        ``x`` holds raw actuals, shape (runs, parameters) in the order of
        :attr:`parameters`; ``machine`` one index or name for every run, or one per run.
        A machine the model has not seen (a name not in :attr:`machines`, or
        :data:`NEW_MACHINE`) is averaged over the machine population, or, with ``rng``,
        gets one effect drawn from N(0, tau) shared by its runs in this call.
        """
        d = self._draw(draw)
        z = self._standardised(x)
        codes = self._machine_codes(machine, z.shape[0])
        eta = self._fixed(z, np.array([d]))[0]
        if offset is not None:
            eta = eta + np.asarray(offset, dtype=np.float64)
        known = codes >= 0
        eta[known] += self._u[d, codes[known]]
        p = _sigmoid(eta)
        new = ~known
        if new.any():
            tau = float(self._tau[d])
            if rng is None:
                p[new] = _population(eta[new], np.full(int(new.sum()), tau))
            else:
                group = -1 - codes[new]
                effect = rng.normal(0.0, tau, size=int(group.max()) + 1)
                p[new] = _sigmoid(eta[new] + effect[group])
        return p

    def expected_probability(self, x_row: npt.ArrayLike, machine: int | str) -> float:
        """Posterior mean defect probability of a unit of one run, averaged over draws.

        An unseen machine is averaged over the machine population under each draw.
        """
        row = np.asarray(x_row, dtype=np.float64)
        if row.shape != (len(self.parameters),):
            raise ValidationFailed(
                f"{self.step}: x_row must hold one actual per parameter "
                f"({len(self.parameters)}), got shape {row.shape}"
            )
        if not isinstance(machine, int | str | np.integer):
            raise ValidationFailed(f"{self.step}: machine must be one index or name")
        z = self._standardised(row[None, :])
        code = int(self._machine_codes(machine, 1)[0])
        eta = self._fixed(z, np.arange(self.draws))[:, 0]
        p = _sigmoid(eta + self._u[:, code]) if code >= 0 else _population(eta, self._tau)
        return float(p.mean())

    def yield_change(self, parameter: str, start: float, end: float) -> FloatArray:
        """Per posterior draw, how much the share of good units changes when
        ``parameter`` moves from ``start`` to ``end`` (raw units), the other parameters
        at their training means and the machine drawn from the step's population.

        This is what a setpoint change is worth according to the model; its interval is
        the honest answer to "does this parameter matter": a parameter without an
        effect in the data gets an interval around zero.
        """
        if parameter not in self.parameters:
            raise NotFound(
                f"{self.step}: parameter {parameter} is not in the model "
                f"({', '.join(self.parameters) or 'none'})"
            )
        j = self.parameters.index(parameter)
        rows = np.tile(np.asarray(self.scaling.mean, dtype=np.float64), (2, 1))
        rows[:, j] = (start, end)
        eta = self._fixed(self._standardised(rows), np.arange(self.draws))
        before = _population(eta[:, 0], self._tau)
        after = _population(eta[:, 1], self._tau)
        return np.asarray(before - after, dtype=np.float64)

    def _draw(self, draw: int) -> int:
        if isinstance(draw, bool) or not isinstance(draw, int | np.integer):
            raise ValidationFailed(f"{self.step}: draw must be an int, got {draw!r}")
        if not 0 <= draw < self.draws:
            raise ValidationFailed(
                f"{self.step}: draw {draw} is outside the posterior's {self.draws} draws "
                f"(0 to {self.draws - 1})"
            )
        return int(draw)

    def _standardised(self, x: npt.ArrayLike) -> FloatArray:
        arr = np.asarray(x)
        if arr.dtype.kind not in "iuf":
            raise ValidationFailed(f"{self.step}: x must hold numbers, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] != len(self.parameters):
            raise ValidationFailed(
                f"{self.step}: x must have shape (runs, {len(self.parameters)}) - one column "
                f"per parameter ({', '.join(self.parameters) or 'none'}) - got {arr.shape}"
            )
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValidationFailed(f"{self.step}: x holds values that are not finite numbers")
        return self.scaling.apply(arr)

    def _machine_codes(self, machine: MachineSpec, runs: int) -> IntArray:
        """The machine of each run as an index into :attr:`machines`; an unseen machine
        is a negative code, -1 - k for the k-th distinct one."""
        arr = np.asarray(machine)
        if arr.ndim == 0:
            arr = np.full(runs, arr.item(), dtype=arr.dtype)
        if arr.ndim != 1 or arr.shape[0] != runs:
            raise ValidationFailed(
                f"{self.step}: machine must be one index or name, or one per run ({runs}), "
                f"got shape {arr.shape}"
            )
        if arr.dtype.kind in "iu":
            codes = arr.astype(np.int64)
            bad = np.flatnonzero((codes < NEW_MACHINE) | (codes >= len(self.machines)))
            if bad.size:
                raise ValidationFailed(
                    f"{self.step}: machine index {codes[bad[0]]} is not an index into the "
                    f"{len(self.machines)} machines (0 to {len(self.machines) - 1}) nor "
                    f"{NEW_MACHINE} (a new machine)"
                )
            return codes
        if arr.dtype.kind in "UO" and all(isinstance(m, str) for m in arr.tolist()):
            index = {m: i for i, m in enumerate(self.machines)}
            unseen: dict[str, int] = {}
            return np.array(
                [
                    index[m] if m in index else -1 - unseen.setdefault(m, len(unseen))
                    for m in arr.tolist()
                ],
                dtype=np.int64,
            )
        raise ValidationFailed(
            f"{self.step}: machine must be given by index or by name, got dtype {arr.dtype}"
        )

    @property
    def curved(self) -> tuple[str, ...]:
        """The parameters whose effect is a curve (:mod:`sqems.twin.splines`)."""
        return self.curves.curved

    def _fixed(self, z: FloatArray, draws: IntArray) -> FloatArray:
        """alpha + z beta + s(z) gamma, shape (draws, runs), without the machine."""
        curve = self.curves.basis(z)
        return self._alpha[draws, None] + self._beta[draws] @ z.T + self._gamma[draws] @ curve.T

    def run_probabilities(self, data: StepData, draws: IntArray, block: slice) -> FloatArray:
        """Each of ``draws``' defect probability for the runs of ``data`` in ``block``,
        with their machines, lots and operators: the mean of each run's probability, as
        fitted (draws x runs)."""
        start, stop, _ = block.indices(data.runs)
        z = self.scaling.apply(np.asarray(data.x[start:stop], dtype=np.float64))
        eta = self._fixed(z, draws) + self._u[draws][:, data.machine[start:stop]]
        if self.lots and data.lot_run.size:
            inside = (data.lot_run >= start) & (data.lot_run < stop)
            member = sparse.csr_matrix(
                (
                    np.ones(int(inside.sum())),
                    (data.lot_run[inside] - start, data.lot_index[inside]),
                ),
                shape=(stop - start, len(self.lots)),
            )
            eta = eta + np.asarray(member @ self._groups["lot_effect"][draws].T).T
        if self.operators and data.operator.size:
            own = data.operator[start:stop]
            known = np.flatnonzero(own >= 0)
            effects = self._groups["operator_effect"][draws]
            eta[:, known] += effects[:, own[known]]
        if self.periods and data.period.size:
            eta += self._groups["time_effect"][draws][:, data.period[start:stop]]
        return _sigmoid(eta)

    def check(self, data: StepData, seed: int = 0) -> FitCheck:
        """Whether the model fits ``data``, the runs it was fitted to
        (:mod:`sqems.twin.fit_check`)."""
        draws = check_draws(self.draws)
        return check_fit(
            data.defects,
            data.trials,
            lambda block: self.run_probabilities(data, draws, block),
            self._rho[draws],
            self.parameter_count,
            seed=seed,
        )

    @property
    def parameter_count(self) -> int:
        """The model's parameters: intercept, coefficients, machine spread and effects,
        rho, each group's spread and effects, and the time walk's spread and steps."""
        groups = sum(len(g) + 1 for g in (self.lots, self.operators, self.periods) if g)
        groups -= int(bool(self.periods))  # the walk has one step fewer than periods
        fixed = 1 + len(self.parameters) + self.curves.columns
        return fixed + 1 + len(self.machines) + int(self.overdispersed) + groups

    # --- summary ---------------------------------------------------------------------------

    def coefficients(self) -> tuple[Coefficient, ...]:
        """Posterior mean and :data:`HDI_PROB` HDI of alpha, beta[p], gamma[p:k] (the
        curve columns), tau and u[machine], in that order; beta and gamma are per sd of
        the parameter. A curved parameter's beta and gamma describe its curve together:
        read its effect from :meth:`yield_change`, not from one coefficient."""
        columns: list[tuple[str, FloatArray]] = [("alpha", self._alpha)]
        columns += [(f"beta[{p}]", self._beta[:, j]) for j, p in enumerate(self.parameters)]
        columns += [(f"gamma[{c}]", self._gamma[:, k]) for k, c in enumerate(self.curves.labels)]
        columns.append(("tau", self._tau))
        if self.overdispersed:
            columns.append(("rho", self._rho))
        if self.periods:
            columns.append(("tau_time", self._groups["tau_time"]))
        columns += [(f"u[{m}]", self._u[:, i]) for i, m in enumerate(self.machines)]
        out = []
        for name, values in columns:
            low, high = az.hdi(values, hdi_prob=HDI_PROB)  # type: ignore[no-untyped-call]
            out.append(Coefficient(name, float(values.mean()), float(low), float(high)))
        return tuple(out)

    def parameter_of(self, coefficient: str) -> str | None:
        """The parameter a coefficient of :meth:`coefficients` belongs to: ``beta[p]``
        and each ``gamma[p:k]`` of its curve to p; None for the others."""
        if coefficient.startswith("beta[") and coefficient.endswith("]"):
            name = coefficient[len("beta[") : -1]
            return name if name in self.parameters else None
        if coefficient.startswith("gamma[") and coefficient.endswith("]"):
            labels = self.curves.labels
            label = coefficient[len("gamma[") : -1]
            if label in labels:
                return self.parameters[self.curves.owner[labels.index(label)]]
        return None

    def require_sound(self) -> None:
        """Refuse (:class:`ValidationFailed`) a model whose fit failed its diagnostics."""
        problems = self.diagnostics.problems
        if problems:
            raise ValidationFailed(
                f"the quality model of {self.step} failed its diagnostics (convergence "
                f"and fit) and cannot be used: {'; '.join(problems)}"
            )

    # --- persistence -----------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "parameters": list(self.parameters),
            "curves": self.curves.to_dict(),
            "machines": list(self.machines),
            "mean": list(self.scaling.mean),
            "sd": list(self.scaling.sd),
            "diagnostics": self.diagnostics.to_dict(),
            "parametrisation": self.parametrisation,
            "lots": list(self.lots),
            "operators": list(self.operators),
            "periods": list(self.periods),
        }

    def save(self, path: str | Path) -> Path:
        """Write the posterior and the metadata to one netCDF file at ``path``.

        The file is written beside ``path`` and moved over it, so a reader never sees
        half a model.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        attrs = {
            _ATTR_FORMAT: FORMAT,
            _ATTR_VERSION: SCHEMA_VERSION,
            _ATTR_META: json.dumps(self.metadata()),
        }
        groups = _groups(self.idata)
        partial = path.with_name(f".{path.name}.partial")
        try:
            az.InferenceData(attrs=attrs, **groups).to_netcdf(str(partial))
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> QualityModel:
        """Read a model written by :meth:`save`: its metadata and posterior (the sample
        statistics and observed data stay in the file; the diagnostics drawn from them
        are in the metadata). It is returned even when unsound, so callers that serve
        it call :meth:`require_sound`."""
        path = Path(path)
        if not path.is_file():
            raise NotFound(f"quality model file {path} does not exist")
        try:  # the posterior alone, into memory (a quarter of the time of every group)
            with xr.open_dataset(path) as root:
                attrs = dict(root.attrs)
            if attrs.get(_ATTR_FORMAT) == FORMAT:
                with xr.open_dataset(path, group="posterior") as stored:
                    posterior = stored.load()
        except (OSError, ValueError) as err:
            raise ValidationFailed(f"{path} is not a netCDF file: {err}") from err
        if attrs.get(_ATTR_FORMAT) != FORMAT:
            raise ValidationFailed(f"{path} is not a {FORMAT} file")
        version = attrs.get(_ATTR_VERSION)
        if version != SCHEMA_VERSION:
            raise ValidationFailed(
                f"{path} was saved with quality model schema version {version}; this SQEMS "
                f"reads version {SCHEMA_VERSION}. Fit the model again and save it"
            )
        try:
            meta = json.loads(str(attrs[_ATTR_META]))
            parameters = tuple(str(p) for p in meta["parameters"])
            model = cls(
                step=str(meta["step"]),
                parameters=parameters,
                curves=Curves.from_dict(parameters, meta["curves"]),
                machines=tuple(str(m) for m in meta["machines"]),
                scaling=Scaling(
                    tuple(float(v) for v in meta["mean"]), tuple(float(v) for v in meta["sd"])
                ),
                diagnostics=Diagnostics.from_dict(meta["diagnostics"]),
                parametrisation=str(meta["parametrisation"]),
                idata=az.InferenceData(posterior=posterior),
                lots=tuple(str(v) for v in meta.get("lots", [])),
                operators=tuple(str(v) for v in meta.get("operators", [])),
                periods=tuple(str(v) for v in meta.get("periods", [])),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValidationFailed(f"{path}: the model's metadata is damaged ({err!r})") from err
        return model


def _groups(idata: az.InferenceData) -> dict[str, Any]:
    """The groups of ``idata`` without its attributes."""
    return {g: idata[g] for g in idata.groups()}


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _sigmoid(eta: FloatArray) -> FloatArray:
    return np.asarray(special.expit(eta), dtype=np.float64)


def _population(eta: FloatArray, tau: FloatArray) -> FloatArray:
    """E[sigmoid(eta + u)] over u ~ N(0, tau), elementwise, by Gauss-Hermite quadrature."""
    return _sigmoid(eta[:, None] + tau[:, None] * _NODES[None, :]) @ _WEIGHTS


# --- fitting ----------------------------------------------------------------------------------


def fit(
    data: StepData,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 2,
    seed: int = 0,
    target_accept: float = 0.95,
    cores: int = 1,
    parametrisation: Parametrisation = "auto",
    sampler: Sampling = "auto",
    run_effects: bool = True,
) -> QualityModel:
    """Sample the posterior of the defect model of ``data`` with NUTS and diagnose it.

    ``parametrisation`` chooses the coordinates in which the machines' deviations are
    sampled (the model is the same either way, see the module docstring); ``"auto"``
    lets the data decide. The result is returned whether or not it passed its
    diagnostics (a warning is logged when it did not); serve it only after
    :meth:`QualityModel.require_sound`. ``sampler`` picks the NUTS implementation
    (see the module docstring): ``"auto"`` is nutpie when installed, else PyMC's.
    ``run_effects=False`` fits the binomial model: every unit independent, as the model
    was before runs could vary (for comparison; see ``benchmarks/twin_null.py``).
    """
    for name, value, least in (
        ("draws", draws, MIN_DRAWS),
        ("tune", tune, 0),
        ("chains", chains, 1),
        ("cores", cores, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValidationFailed(f"{name} must be a whole number of at least {least}")
    if not 0.0 < target_accept < 1.0:
        raise ValidationFailed(f"target_accept must be between 0 and 1, got {target_accept}")
    if sampler not in ("auto", "nutpie", "pymc"):
        raise ValidationFailed(f"sampler must be auto, nutpie or pymc, got {sampler!r}")
    if parametrisation not in ("auto", "centred", "non-centred"):
        raise ValidationFailed(
            f"parametrisation must be auto, centred or non-centred, got {parametrisation!r}"
        )

    pm = _pymc()
    scaling = Scaling.of(data.x)
    z = scaling.apply(data.x)
    separation = machine_separation(data)
    if parametrisation == "auto":
        grouped = bool(data.lots or data.operators)
        centred = len(data.machines) > 1 and separation >= CENTRED_SEPARATION and not grouped
    else:
        centred = parametrisation == "centred" and len(data.machines) > 1
    curves = Curves.of(z, data.parameters, data.curved)
    runs = run_effects and overdispersed(data)
    model = _model(data, z, curves, scaling, centred=centred, runs=runs)

    started = time.perf_counter()
    use = _sampler(sampler)
    idata = pm.sample(
        draws=draws,
        tune=tune,
        chains=chains,
        cores=cores,
        random_seed=seed,
        target_accept=target_accept,
        progressbar=False,
        compute_convergence_checks=False,
        model=model,
        nuts_sampler=use,
        # nutpie: a mass matrix that learns the posterior's strongest correlations too
        # (a parameter's linear and curve terms move together; with a diagonal one a
        # squared term was left at 7 % effective draws, refused at 1,000 x 4)
        nuts_sampler_kwargs={"low_rank_modified_mass_matrix": True} if use == "nutpie" else {},
    )
    if use == "nutpie":  # the groups PyMC's sampler returns: no warm-up draws
        kept = ("posterior", "sample_stats", "observed_data", "constant_data")
        groups = {g: idata[g] for g in kept if g in idata.groups()}
        unconstrained = [v for v in groups["posterior"].data_vars if str(v).endswith("__")]
        groups["posterior"] = groups["posterior"].drop_vars(unconstrained)
        idata = az.InferenceData(**groups)
    seconds = time.perf_counter() - started
    diagnostics = diagnose(idata)
    chosen = "centred" if centred else "non-centred"
    log.info(
        "%s: %s sampled %d runs, %d x %d draws in %.1f s (machine separation %.1f: %s)",
        data.step,
        use,
        data.runs,
        chains,
        draws,
        seconds,
        separation,
        chosen,
    )
    model = QualityModel(
        step=data.step,
        parameters=data.parameters,
        curves=curves,
        machines=data.machines,
        scaling=scaling,
        diagnostics=diagnostics,
        parametrisation=chosen,
        idata=idata,
        lots=data.lots,
        operators=data.operators,
        periods=data.periods,
    )
    # convergence says the sampler found the posterior; the check says whether the
    # model describes the runs at all
    checked = replace(diagnostics, check=model.check(data, seed=seed))
    object.__setattr__(model, "diagnostics", checked)
    if not checked.ok:
        log.warning("%s: unsound fit: %s", data.step, "; ".join(checked.problems))
    return model


def _sampler(wanted: Sampling) -> Literal["nutpie", "pymc"]:
    """The NUTS implementation :func:`fit` uses: nutpie when asked for or, with
    ``"auto"``, when it is installed; PyMC's own otherwise."""
    if wanted == "pymc":
        return "pymc"
    if importlib.util.find_spec("nutpie") is None:
        if wanted == "nutpie":
            raise ValidationFailed(
                "the nutpie sampler is not installed: pip install nutpie, or fit with "
                "sampler='pymc'"
            )
        return "pymc"
    return "nutpie"


def _pymc() -> Any:
    """PyMC, imported when a model is fitted: serving one needs neither it nor its
    compiler (importing it takes seconds). PyTensor is given its BLAS first
    (:mod:`sqems.twin.blas`)."""
    from sqems.twin.blas import configure  # noqa: PLC0415 - imports PyTensor

    configure()
    import pymc  # type: ignore[import-untyped]  # noqa: PLC0415 - see the docstring

    return pymc


def prior_scales(
    data: StepData, scaling: Scaling, curves: Curves | None = None
) -> tuple[FloatArray, FloatArray]:
    """The prior sd of each beta (per parameter) and each gamma (per curve column,
    :meth:`Curves.owner` says whose), on the standardised scale the model uses.

    A coefficient per observed sd says nothing about the tolerance: a process that
    holds a parameter tightly (sd a quarter of the half-tolerance) reaches its spec
    limit at z = 4, where N(0, 1) per sd lets the prior alone move the logit by 4 -
    and a what-if at the limit then shows the prior, not the data. With a tolerance
    known, the prior is set on the effect of a move across half the tolerance,
    N(0, :data:`TOLERANCE_SD`) on the logit (two prior sd: odds times 20 at a spec
    limit), which per observed sd is TOLERANCE_SD * sd / half-width - never wider than
    the per-sd prior :data:`BETA_SD`, which stays for parameters without a two-sided
    spec. A curve column is in the units of z and straight beyond the data
    (:mod:`sqems.twin.splines`), so its gamma takes its parameter's scale."""
    beta = np.full(len(data.parameters), BETA_SD)
    for j, half in enumerate(data.tolerance):
        if half is not None:
            beta[j] = min(BETA_SD, TOLERANCE_SD * float(scaling.sd[j]) / half)
    if curves is None:  # the curves the model of ``data`` gets
        curves = Curves.of(scaling.apply(data.x), data.parameters, data.curved)
    gamma = np.array([min(GAMMA_SD, beta[j]) for j in curves.owner], dtype=np.float64)
    return beta, gamma


def _model(
    data: StepData, z: FloatArray, curves: Curves, scaling: Scaling, *, centred: bool, runs: bool
) -> Any:
    """The PyMC model of ``data`` (standardised actuals ``z``, by ``scaling``; the
    ``curves`` the fitted model keeps), in the coordinates NUTS samples best; alpha, eps
    and u are derived from them (see the module docstring)."""
    import pytensor.tensor as pt  # noqa: PLC0415 - with PyMC, for fitting only

    pm = _pymc()
    machines = len(data.machines)
    beta_sd, gamma_sd = prior_scales(data, scaling, curves)
    coords: dict[str, list[str]] = {"machine": list(data.machines)}
    if data.lots:
        coords["lot"] = list(data.lots)
    if data.operators:
        coords["operator"] = list(data.operators)
    if data.periods:
        coords["period"] = list(data.periods)
    if data.parameters:
        coords["parameter"] = list(data.parameters)
    if curves.columns:
        coords["curve"] = list(curves.labels)
    with pm.Model(coords=coords) as model:
        tau = pm.HalfNormal("tau", sigma=TAU_SD)
        eps_mean = pm.Normal("eps_mean", mu=0.0, sigma=1.0 / math.sqrt(machines))
        if machines == 1:  # its offset is the mean offset; there is no deviation
            deviation = None
            eps = pm.Deterministic("eps", pt.stack([eps_mean]), dims="machine")
        elif centred:  # tau * eps_dev, sampled as itself
            deviation = pm.ZeroSumNormal("u_dev", sigma=tau, dims="machine")
            eps = pm.Deterministic("eps", eps_mean + deviation / tau, dims="machine")
        else:
            eps_dev = pm.ZeroSumNormal("eps_dev", sigma=1.0, dims="machine")
            deviation = tau * eps_dev
            eps = pm.Deterministic("eps", eps_mean + eps_dev, dims="machine")
        pm.Deterministic("u", tau * eps, dims="machine")
        # alpha ~ N(logit(rate), ALPHA_SD), written for the centre it implies
        shift = tau * eps_mean
        centre = pm.Normal("centre", mu=_logit(data.rate) + shift, sigma=ALPHA_SD)
        pm.Deterministic("alpha", centre - shift)
        eta = centre if deviation is None else centre + deviation[data.machine]
        if data.parameters:
            beta = pm.Normal("beta", mu=0.0, sigma=beta_sd, dims="parameter")
            eta = eta + pm.math.dot(z, beta)
        if curves.columns:  # centred columns: they do not trade off with the centre
            gamma = pm.Normal("gamma", mu=0.0, sigma=gamma_sd, dims="curve")
            eta = eta + pm.math.dot(curves.basis(z), gamma)
        if data.lots:  # partially pooled; a run's effect sums its lots'
            tau_lot = pm.HalfNormal("tau_lot", sigma=TAU_SD)
            centred_lots = _centred(data, data.lot_run, data.lot_index, len(data.lots))
            lot = _pooled("lot", tau_lot, centred_lots)
            summed = pt.zeros(data.runs)
            eta = eta + pt.inc_subtensor(summed[data.lot_run], lot[data.lot_index])  # type: ignore[no-untyped-call]
        if data.operators:
            tau_operator = pm.HalfNormal("tau_operator", sigma=TAU_SD)
            known = np.flatnonzero(data.operator >= 0)
            # non-centred throughout: an operator who happened to run a bad lot's
            # batches stands out as much as the lot, and centring such operators made
            # the fit diverge hundreds of times as tau_operator shrank towards 0
            operator = _pooled("operator", tau_operator, np.zeros(len(data.operators), bool))
            summed = pt.zeros(data.runs)
            eta = eta + pt.set_subtensor(summed[known], operator[data.operator[known]])  # type: ignore[no-untyped-call]
        if data.periods:  # a random walk over the periods, centred on the history's level
            tau_time = pm.HalfNormal("tau_time", sigma=TIME_SD)
            steps = pm.Normal("time_eps", mu=0.0, sigma=1.0, shape=len(data.periods) - 1)
            # period k's level is the sum of the first k steps, less the mean level
            walk = np.tril(np.ones((len(data.periods), len(data.periods) - 1)), -1)
            walk -= walk.mean(axis=0)
            time = pm.Deterministic(
                "time_effect", tau_time * pm.math.dot(walk, steps), dims="period"
            )
            eta = eta + time[data.period]
        # an observed likelihood, not a Potential: the model then knows its data, and
        # pointwise log-likelihood (LOO, WAIC) and posterior predictive checks exist
        if runs:  # beta-binomial: runs vary beyond the binomial (the module docstring)
            phi = pm.HalfNormal("phi", sigma=PHI_SD)
            kappa = 1.0 / (phi**2 + 1e-12)
            pm.Deterministic("rho", 1.0 / (1.0 + kappa))
            p = pm.math.sigmoid(eta)
            pm.BetaBinomial(
                "defects", alpha=p * kappa, beta=(1.0 - p) * kappa, n=data.trials,
                observed=data.defects,
            )  # fmt: skip
        else:
            pm.Binomial("defects", n=data.trials, logit_p=eta, observed=data.defects)
    return model


def overdispersed(data: StepData) -> bool:
    """Whether the model of ``data`` is beta-binomial: when runs make more than one
    unit (the variation between runs is then told apart from the binomial) and the
    model has no lot or operator effects.

    A model with lots and operators stays binomial: its lot effects take in the
    clustering a bad lot causes, and the beta-binomial's likelihood costs about three
    times the binomial's per gradient (its log-gamma terms per run; 18.1 s against 5.8 s
    of sampling for 460 runs at 4 x 2,000 draws, the same number of leapfrog steps), which
    took the 100,000-unit plant's lot-switch what-if from 43 s to 75 s. The runs'
    variation beyond their lots is then not modelled there (a known gap)."""
    grouped = bool(data.lots or data.operators)
    return data.runs >= MIN_RUNS and bool((data.trials > 1).any()) and not grouped


def _centred(data: StepData, run: IntArray, member: IntArray, size: int) -> npt.NDArray[np.bool_]:
    """Which members of a group to sample centred (``run[k]`` belongs to ``member[k]``):
    those whose data pin an effect that stands out - Fisher information n p (1 - p) at
    the member's own smoothed defect rate of at least 1 / TAU_SD**2 (the data say more
    than the prior does), and defects at least :data:`STANDS_OUT` standard errors from
    what the model without lots and operators expects of its runs (:func:`_pilot`: so
    lots that merely ran in a bad shift do not stand out) - such as a bad lot seen in
    many runs. A member that does not stand out is sampled non-centred: its effect may
    shrink to 0 with the group's spread, and centred coordinates form a funnel there."""
    _, fitted, _ = _pilot(data)
    n = np.bincount(member, weights=data.trials[run], minlength=size)
    y = np.bincount(member, weights=data.defects[run], minlength=size)
    expected = np.bincount(member, weights=(data.trials * fitted)[run], minlength=size)
    variance = np.bincount(
        member, weights=(data.trials * fitted * (1.0 - fitted))[run], minlength=size
    )
    p = (y + 0.5) / (n + 1.0)
    information = n * p * (1.0 - p)
    distance = np.abs(y - expected) / np.sqrt(np.maximum(variance, 1e-12))
    return np.asarray((information * TAU_SD**2 >= 1.0) & (distance >= STANDS_OUT))


def standing_out(data: StepData) -> tuple[str, ...]:
    """The lots of ``data`` whose runs' defects stand out from what the step's
    parameters and machines predict of them (the test :func:`_centred` applies: at
    least :data:`STANDS_OUT` standard errors away, with data that say more than the
    prior); none when ``data`` has no lots."""
    if not data.lots:
        return ()
    mask = _centred(data, data.lot_run, data.lot_index, len(data.lots))
    return tuple(lot for lot, out in zip(data.lots, mask, strict=True) if out)


def _pooled(name: str, tau: Any, centred: npt.NDArray[np.bool_]) -> Any:
    """A partially pooled effect per member of the group ``name`` with spread ``tau``,
    stored as ``{name}_effect``; members marked ``centred`` are sampled as themselves,
    the others as ``tau * e`` with e ~ N(0, 1). The model is the same either way; the
    coordinates differ (:func:`_centred` chooses): non-centred, a member whose data
    pin its effect would have to move its e with tau along a narrow ridge, which is
    where a bad lot seen in many runs made NUTS diverge; thin members stay
    non-centred, away from the funnel where tau and their effects shrink together."""
    import pytensor.tensor as pt  # noqa: PLC0415 - with PyMC, for fitting only

    pm = _pymc()
    rich = np.flatnonzero(centred)
    thin = np.flatnonzero(~centred)
    effect = pt.zeros(centred.size)
    if rich.size:
        own = pm.Normal(f"{name}_centred", mu=0.0, sigma=tau, shape=rich.size)
        effect = pt.set_subtensor(effect[rich], own)  # type: ignore[no-untyped-call]
    if thin.size:
        eps = pm.Normal(f"{name}_eps", mu=0.0, sigma=1.0, shape=thin.size)
        effect = pt.set_subtensor(effect[thin], tau * eps)  # type: ignore[no-untyped-call]
    return pm.Deterministic(f"{name}_effect", effect, dims=name)


def machine_separation(data: StepData) -> float:
    """How clearly the data tell the machines apart: the machine-to-machine variance of
    their intercepts, less what their estimation error alone would produce, over the
    mean squared standard error (0 for one machine or machines that look alike).

    The intercepts are those of :func:`_pilot`, their standard errors come from its
    Hessian, scaled by the runs' Pearson dispersion when it exceeds 1 (quasi-binomial:
    runs that differ by more than the binomial pin the machines less than their unit
    counts suggest, and a centred fit of machines that only look apart diverges).
    """
    machines = len(data.machines)
    if machines < 2:
        return 0.0
    theta, fitted, hessian = _pilot(data)
    error = float(np.mean(np.diag(np.linalg.inv(hessian))[:machines]))
    error *= _dispersion(data, fitted, theta.size)
    spread = float(np.var(theta[:machines], ddof=1))
    return max(spread - error, 0.0) / error


def _dispersion(data: StepData, fitted: FloatArray, coefficients: int) -> float:
    """The runs' Pearson chi-square per degree of freedom under ``fitted``, at least 1."""
    expected = data.trials * fitted
    variance = np.maximum(expected * (1.0 - fitted), 1e-12)
    chi2 = float(np.sum((data.defects - expected) ** 2 / variance))
    return max(chi2 / max(data.runs - coefficients, 1), 1.0)


def _pilot(data: StepData) -> tuple[FloatArray, FloatArray, FloatArray]:
    """A quick penalised maximum-likelihood fit of the model without lots and operators,
    with one free intercept per machine (a N(0, 10) penalty keeps a machine without
    defects finite): its coefficients, each run's fitted defect probability and the
    Hessian of the penalised log-likelihood."""
    machines = len(data.machines)
    z = Scaling.of(data.x).apply(data.x)
    curve = Curves.of(z, data.parameters, data.curved).basis(z)
    design = np.hstack([np.eye(machines)[data.machine], z, curve])
    prior = np.zeros(design.shape[1])
    prior[:machines] = _logit(data.rate)
    precision = np.full(design.shape[1], 1.0 / PILOT_SD**2)
    n, y = data.trials.astype(np.float64), data.defects.astype(np.float64)

    def objective(theta: FloatArray) -> float:
        eta = design @ theta
        penalty = 0.5 * float(precision @ (theta - prior) ** 2)
        return float(y @ eta - n @ np.logaddexp(0.0, eta)) - penalty

    theta = prior.copy()
    value = objective(theta)
    for _ in range(100):
        p = _sigmoid(design @ theta)
        gradient = design.T @ (y - n * p) - precision * (theta - prior)
        hessian = design.T @ (design * (n * p * (1.0 - p))[:, None]) + np.diag(precision)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while objective(theta + size * step) < value and size > 1e-6:
            size /= 2.0  # the penalised likelihood is concave: halving finds an ascent
        theta = theta + size * step
        value = objective(theta)
        if float(np.max(np.abs(size * step))) < 1e-8:
            break
    p = _sigmoid(design @ theta)
    hessian = design.T @ (design * (n * p * (1.0 - p))[:, None]) + np.diag(precision)
    return theta, p, hessian


# --- synthetic data ---------------------------------------------------------------------------


def synthetic_step_data(
    rng: np.random.Generator,
    runs: int,
    *,
    alpha: float,
    beta: Mapping[str, float],
    gamma: Mapping[str, float],
    machine_effects: Mapping[str, float],
    units: int = 50,
    step: str = "STEP-SYNTHETIC",
    run_sd: float = 0.0,
    curved: Sequence[str] = (),
) -> StepData:
    """Runs of a step whose defects follow the model with *planted* coefficients.

    Parameter j (in the order of ``beta``) is drawn from N(100 (j + 1), (5 (j + 1))**2),
    so the parameters live on different raw scales. The truth is planted on the
    **standardised** scale of the model - the actuals are standardised with
    :meth:`Scaling.of` over the generated runs, exactly as :func:`fit` will - so
    ``alpha``, ``beta``, ``gamma`` (keyed by parameters whose planted effect has a
    squared term, gamma z**2) and ``machine_effects`` (the u_m, keyed by machine name)
    are the truth a fit should recover; the parameters in ``gamma`` and those in
    ``curved`` are fitted with a curve.
    Machines are assigned to runs uniformly at random; every run makes ``units`` units.
    ``run_sd`` plants run-to-run variation: each run's logit moves by N(0, run_sd).
    """
    parameters = tuple(beta)
    machines = tuple(machine_effects)
    j = np.arange(1, len(parameters) + 1)
    x = 100.0 * j + 5.0 * j * rng.standard_normal((runs, len(parameters)))
    z = Scaling.of(x).apply(x)
    square = [parameters.index(q) for q in gamma]
    eta = (
        alpha
        + z @ np.array([beta[p] for p in parameters])
        + z[:, square] ** 2 @ np.array([gamma[q] for q in gamma])
    )
    machine = rng.integers(0, len(machines), size=runs)
    eta = eta + np.array([machine_effects[m] for m in machines])[machine]
    if run_sd > 0.0:
        eta = eta + rng.normal(0.0, run_sd, size=runs)
    trials = np.full(runs, units)
    defects = rng.binomial(trials, _sigmoid(eta))
    return StepData(
        step=step,
        parameters=parameters,
        x=x,
        machine=machine,
        machines=machines,
        trials=trials,
        defects=defects,
        curved=tuple(dict.fromkeys([*gamma, *curved])),
    )
