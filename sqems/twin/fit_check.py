"""Does a fitted step model describe its runs? Two checks beside convergence.

A model can converge perfectly and still be wrong: a binomial model of runs whose
defects cluster by lot converges, and its coefficients then carry the clusters as
effects of whatever the clustered runs shared. Convergence (R-hat, ESS, divergences)
says the sampler found the posterior; these checks say whether the posterior's model
fits the data it was fitted to.

**Posterior predictive dispersion** (Gelman, Meng and Stern, "Posterior predictive
assessment of model fitness via realized discrepancies", Statistica Sinica 6, 1996).
The discrepancy is the runs' Pearson chi-square about the model's own variance,
``T(y, theta) = sum_r (y_r - n_r p_r)**2 / (n_r p_r (1 - p_r) (1 + (n_r - 1) rho))``,
computed under each of a set of posterior draws for the observed defects and for
defects replicated from the same draw. The posterior predictive p-value is the share of
draws whose replicate is at least as dispersed as the data; a small one says the runs
vary more than the model lets them - structure it misses (lots, batches, time). The
model is refused below :data:`PREDICTIVE_P_MIN`. ``dispersion`` is the observed
discrepancy per run at the posterior mean, for people (1: as the model expects).

**PSIS-LOO Pareto k** (Vehtari, Gelman and Gabry, "Practical Bayesian model evaluation
using leave-one-out cross-validation and WAIC", Statistics and Computing 27, 2017;
Vehtari et al., "Pareto smoothed importance sampling", JMLR 25, 2024). Each run's
leave-one-out predictive is estimated by importance sampling from the full posterior;
the shape k of the generalised Pareto fitted to the largest weights says how much the
posterior moves when that run is left out. Above :data:`PARETO_K_HIGH` (0.7) the run is
highly influential - an outlier, or a run the model can only explain with a parameter
of its own. High k alone is not a fault of a hierarchical model: a lot seen in one run
has an effect that run alone decides. The effective number of parameters ``p_loo`` (the
in-sample log predictive density less the leave-one-out one) tells the cases apart, as
the authors of PSIS-LOO advise: with runs of high k, ``p_loo`` above the model's number
of parameters means the model is badly misspecified, and the model is refused; below
it, the runs are reported (``pareto_k_high``) and the model kept; a ``p_loo`` far below
the parameters with high k is the misfit the predictive check finds.

Both checks use :data:`CHECK_DRAWS` posterior draws spread evenly over the chains, and
the log-likelihood is computed in blocks of runs, so a step of 50,000 runs costs tens of
megabytes, not gigabytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import arviz as az
import numpy as np
import numpy.typing as npt
from scipy import special

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PREDICTIVE_P_MIN: Final = 0.01
"""Smallest posterior predictive p-value of the dispersion a sound model may have."""
PARETO_K_HIGH: Final = 0.7
"""Pareto k above which a run's leave-one-out estimate is unreliable (Vehtari et al.)."""
CHECK_DRAWS: Final = 1000
BLOCK: Final = 2048
"""Runs per block of the pointwise log-likelihood."""


@dataclass(frozen=True, slots=True)
class FitCheck:
    """What the checks found; see the module docstring."""

    runs: int
    dispersion: float
    predictive_p: float
    pareto_k_max: float
    pareto_k_high: int
    """Runs with Pareto k above :data:`PARETO_K_HIGH`."""
    p_loo: float
    """The effective number of parameters the leave-one-out estimate implies."""
    parameters: int
    """The model's number of parameters (coefficients, spreads, group effects)."""

    @property
    def problems(self) -> tuple[str, ...]:
        out = []
        if not self.predictive_p >= PREDICTIVE_P_MIN:
            out.append(
                f"the runs' defects vary {self.dispersion:.2f} times as much as the model "
                f"expects (posterior predictive p {self.predictive_p:.3g} < "
                f"{PREDICTIVE_P_MIN}): it misses structure in the data - lots, batches or "
                "time - and would read it as effects"
            )
        if self.pareto_k_high and self.p_loo > self.parameters:
            out.append(
                f"{self.pareto_k_high} of {self.runs} runs have a PSIS-LOO Pareto k above "
                f"{PARETO_K_HIGH} (largest {self.pareto_k_max:.2f}) and the effective number "
                f"of parameters, {self.p_loo:.1f}, exceeds the model's {self.parameters}: the "
                "model is badly misspecified for these runs - outliers, or structure it lacks"
            )
        return tuple(out)


def check_draws(total: int) -> IntArray:
    """The posterior draws the checks use: :data:`CHECK_DRAWS` of ``total``, evenly
    spread over the (chain-major) draws, so every chain contributes."""
    count = min(CHECK_DRAWS, total)
    return np.unique(np.linspace(0, total - 1, count).round().astype(np.int64))


def check_fit(
    defects: IntArray,
    trials: IntArray,
    probabilities: Callable[[slice], FloatArray],
    rho: FloatArray,
    parameters: int,
    *,
    seed: int = 0,
) -> FitCheck:
    """Run both checks for runs with ``defects`` of ``trials`` units.
    ``probabilities(block)`` gives each checked draw's defect probability for the runs
    of ``block`` (draws x runs; the draws of :func:`check_draws`), ``rho`` each checked
    draw's intra-run correlation (0 for a binomial model), ``parameters`` the model's
    number of parameters."""
    y_all = np.asarray(defects, dtype=np.float64)
    n_all = np.asarray(trials, dtype=np.float64)
    rho = np.clip(np.asarray(rho, dtype=np.float64), 0.0, 1 - 1e-9)
    rng = np.random.default_rng(seed)
    observed = replicated = np.zeros(len(rho))
    at_mean = in_sample = left_out = 0.0
    khat = np.zeros(len(y_all))
    for start in range(0, len(y_all), BLOCK):
        block = slice(start, start + BLOCK)
        made = n_all[block] > 0  # a run that made nothing says nothing
        if not made.any():
            continue
        y, n = y_all[block][made], n_all[block][made]
        p = np.clip(probabilities(block)[:, made], 1e-12, 1 - 1e-12)
        seen, again = _discrepancies(y, n, p, rho, rng)
        observed, replicated = observed + seen, replicated + again
        mean_p = p.mean(axis=0)
        variance = n * mean_p * (1 - mean_p) * (1 + (n - 1) * float(rho.mean()))
        at_mean += float(np.sum((y - n * mean_p) ** 2 / variance))
        # leaving a run out weighs each draw by 1 / its likelihood; psislw wants the
        # draws last
        log_lik = _log_likelihood(y, n, p, rho).T
        weights, k = az.psislw(-log_lik)  # type: ignore[no-untyped-call]
        khat[start + np.flatnonzero(made)] = np.asarray(k, dtype=np.float64)
        in_sample += float(np.sum(special.logsumexp(log_lik, axis=1) - math.log(len(rho))))
        left_out += float(np.sum(special.logsumexp(np.asarray(weights) + log_lik, axis=1)))
    runs = int((n_all > 0).sum())
    return FitCheck(
        runs=runs,
        dispersion=at_mean / max(runs, 1),
        predictive_p=float(np.mean(replicated >= observed)),
        pareto_k_max=float(khat.max(initial=0.0)),
        pareto_k_high=int((khat > PARETO_K_HIGH).sum()),
        p_loo=in_sample - left_out,
        parameters=parameters,
    )


def _discrepancies(
    y: FloatArray, n: FloatArray, p: FloatArray, rho: FloatArray, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Per draw: the Pearson discrepancy of the observed runs and of runs replicated
    from the draw (beta-binomial when rho > 0: each run's probability drawn from its
    beta first)."""
    variance = n * p * (1 - p) * (1 + (n - 1) * rho[:, None])
    observed = np.sum((y - n * p) ** 2 / variance, axis=1)
    q = p
    spread = rho > 0
    if spread.any():
        kappa = (1 - rho[spread]) / rho[spread]
        a, b = p[spread] * kappa[:, None], (1 - p[spread]) * kappa[:, None]
        q = p.copy()
        q[spread] = np.clip(rng.beta(a, b), 0.0, 1.0)
    y_rep = rng.binomial(n.astype(np.int64), q)
    replicated = np.sum((y_rep - n * p) ** 2 / variance, axis=1)
    return observed, replicated


def _log_likelihood(y: FloatArray, n: FloatArray, p: FloatArray, rho: FloatArray) -> FloatArray:
    """log P(y | draw) per draw and run: beta-binomial where rho > 0, else binomial."""
    log_choose = special.gammaln(n + 1) - special.gammaln(y + 1) - special.gammaln(n - y + 1)
    binomial = log_choose + y * np.log(p) + (n - y) * np.log1p(-p)
    spread = rho > 0
    if not spread.any():
        return np.asarray(binomial)
    kappa = ((1 - rho[spread]) / rho[spread])[:, None]
    a, b = p[spread] * kappa, (1 - p[spread]) * kappa
    beta_binomial = log_choose + special.betaln(y + a, n - y + b) - special.betaln(a, b)
    out = np.array(binomial)
    out[spread] = beta_binomial
    return out
