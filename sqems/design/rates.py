"""Defect rates with a plant-wide beta prior: the beta-binomial model of the design review.

A rate is ``defective`` units out of ``units``. Rates of many groups (a supplier's lots
of one material; a defect type on one product) scatter around a plant-wide level, and a
group with few units says little about where it lies. The model::

    pᵢ ~ Beta(a, b)              the plant-wide prior
    kᵢ | pᵢ ~ Binomial(nᵢ, pᵢ)

:func:`fit_prior` estimates a and b by maximum marginal likelihood (empirical Bayes):
integrating pᵢ out gives the beta-binomial, whose log likelihood over the groups is ::

    log L(a, b) = Σᵢ [ B(kᵢ + a, nᵢ - kᵢ + b) - B(a, b) ]   (B = log of the beta function,
                                                         the binomial coefficients dropped)

maximised over (log a, log b) within bounds (L-BFGS-B). Each group's posterior is then
``Beta(a + kᵢ, b + nᵢ - kᵢ)`` (:func:`posterior`): a group with 3 units sits near the
plant's mean a/(a + b), one with 3000 near its own kᵢ/nᵢ. When the groups scatter no
more than binomial sampling explains, a + b grows far past any group's units (to its
bound when they scatter less) and every group is pulled to the plant's mean: nothing
stands out, as it should.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

from sqems.errors import ValidationFailed

__all__ = [
    "CREDIBLE",
    "Prior",
    "Rate",
    "fit_prior",
    "posterior",
    "rate_draws",
    "worse_than",
]

CREDIBLE = 0.90
"""Mass of every credible interval this package reports (equal-tailed)."""

LOG_BOUNDS = (math.log(0.05), math.log(1e7))
"""Bounds on log a and log b: a below 0.05 would put the prior's mass on rates of
exactly zero; a + b near 10⁷ already means "every group alike" at any plant's size."""


@dataclass(frozen=True, slots=True)
class Prior:
    """The plant-wide Beta(a, b) prior and the number of groups it was fitted to."""

    alpha: float
    beta: float
    pairs: int

    @property
    def mean(self) -> float:
        """The plant's rate, a/(a + b)."""
        return self.alpha / (self.alpha + self.beta)


@dataclass(frozen=True, slots=True)
class Rate:
    """A group's rate: the counts, the posterior mean and its equal-tailed credible
    interval (:data:`CREDIBLE`), and the posterior's parameters for drawing from it."""

    defective: int
    units: int
    mean: float
    low: float
    high: float
    alpha: float
    """Posterior a = prior a + defective."""
    beta: float
    """Posterior b = prior b + units - defective."""

    @property
    def observed(self) -> float | None:
        """``defective / units``; None without units."""
        return self.defective / self.units if self.units else None


def _check(counts: Sequence[tuple[int, int]]) -> None:
    for k, n in counts:
        if n < 0 or k < 0 or k > n:
            raise ValidationFailed(
                f"counts ({k} defective of {n} units) are impossible: need 0 ≤ defective ≤ units"
            )


def fit_prior(counts: Sequence[tuple[int, int]]) -> Prior:
    """The Beta prior that maximises the beta-binomial likelihood of ``counts``
    (``(defective, units)`` per group; groups without units carry no information and are
    dropped). With no defect anywhere the likelihood keeps rising as a falls: a stops at
    its bound and b is set so that the prior's mean is half a defect over all units — the
    plant's rate is small, not proven zero."""
    _check(counts)
    used = [(k, n) for k, n in counts if n > 0]
    if not used:
        raise ValidationFailed("no group with any units to fit the plant-wide prior to")
    k = np.array([c[0] for c in used], dtype=np.float64)
    n = np.array([c[1] for c in used], dtype=np.float64)
    total_k, total_n = float(k.sum()), float(n.sum())
    if total_k == 0.0:
        alpha = math.exp(LOG_BOUNDS[0])
        return Prior(alpha, alpha * (2.0 * total_n - 1.0), len(used))

    def negative(theta: npt.NDArray[np.float64]) -> float:
        a, b = math.exp(theta[0]), math.exp(theta[1])
        ll = special.betaln(k + a, n - k + b) - special.betaln(a, b)
        return -float(ll.sum())

    # start at the pooled mean with a moderate concentration
    mean = min(max(total_k / total_n, 1e-6), 1 - 1e-6)
    start = np.clip([math.log(max(mean * 10.0, 0.1)), math.log(10.0)], *LOG_BOUNDS)
    found = optimize.minimize(negative, start, method="L-BFGS-B", bounds=[LOG_BOUNDS, LOG_BOUNDS])
    if not np.all(np.isfinite(found.x)):
        raise ValidationFailed(f"the prior's fit did not converge ({found.message})")
    return Prior(math.exp(found.x[0]), math.exp(found.x[1]), len(used))


def posterior(defective: int, units: int, prior: Prior) -> Rate:
    """The group's Beta posterior under ``prior``: mean and equal-tailed credible interval."""
    _check([(defective, units)])
    a = prior.alpha + defective
    b = prior.beta + units - defective
    tail = (1.0 - CREDIBLE) / 2.0
    low, high = stats.beta.ppf([tail, 1.0 - tail], a, b)
    return Rate(defective, units, a / (a + b), float(low), float(high), a, b)


def worse_than(rate: Rate, level: float) -> float:
    """Posterior P(rate > ``level``)."""
    return float(stats.beta.sf(level, rate.alpha, rate.beta))


def rate_draws(rate: Rate, n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """``n`` draws from the rate's posterior, for Monte Carlo over a plan."""
    return rng.beta(rate.alpha, rate.beta, size=n)
