"""Process capability: how well a stable process fits its specification.

:func:`capability` turns a run of measurements and the specification limits into the
indices a quality engineer quotes — Cp, Cpk, Cpu, Cpl from the *within-subgroup* spread
(what the process could do if only common causes acted), Pp, Ppk, Ppu, Ppl from the
*overall* spread (what it did), and Cpm when a target is given — each with a two-sided
confidence interval, because an index from 30 parts is a guess with a wide error bar.
It adds the nonconforming parts per million (counted, and expected from the normal
model) and says, in :attr:`Capability.warnings`, when the indices should not be trusted:
too few values, values that are not normal, a process that is not in statistical
control, swapped limits, zero spread.

The formulas and where they come from, with p = (1 - confidence)/2, χ²ₚ(nu) the
p-quantile of chi-square with nu degrees of freedom and zₚ that of the standard normal:

==============  ===========================================================================
index           estimate and interval
==============  ===========================================================================
Cp, Pp          (USL - LSL) / (6·sigma); chi-square interval
                Ĉp·√(χ²ₚ(nu)/nu) ≤ Cp ≤ Ĉp·√(χ²₁₋ₚ(nu)/nu)
                (NIST/SEMATECH e-Handbook §6.1.6; Montgomery, *Introduction to Statistical
                Quality Control*, §8.3.5)
Cpu, Cpl        (USL - x̄) / (3·sigma), (x̄ - LSL) / (3·sigma); normal approximation
                Ĉ ± z₁₋ₚ·√(1/(9n) + Ĉ²/(2·nu)) (NIST §6.1.6)
Cpk, Ppk        min(Cpu, Cpl); Bissell's normal approximation, the same form as Cpu
                (Bissell, "How reliable is your capability index?", *Applied Statistics*
                39 (1990) 331-340; Montgomery §8.3.5)
Cpm             (USL - LSL) / (6·√(s² + (x̄ - T)²)) (Chan, Cheng & Spiring, *JQT* 20
                (1988)); Boyles' chi-square interval (Boyles, "The Taguchi capability
                index", *JQT* 23 (1991) 17-26): with τ̃² = Σ(x - T)²/n,
                C̃pm = (USL - LSL)/(6·τ̃), b = (x̄ - T)/s and nu = n(1 + b²)²/(1 + 2b²),
                C̃pm·√(χ²ₚ(nu)/nu) ≤ Cpm ≤ C̃pm·√(χ²₁₋ₚ(nu)/nu)
==============  ===========================================================================

For the overall indices sigma is the sample standard deviation s (divisor n - 1) and
nu = n - 1, which is the textbook case the sources above treat. For the within indices sigma
and its degrees of freedom nu depend on how the data were collected:

* **individuals** (``subgroup_size=1``): sigma = MR̄/d₂ with d₂ = 2/√π ≈ 1.128, the
  moving-range estimate of an individuals chart. Adjacent moving ranges share a value, so
  MR̄ carries fewer degrees of freedom than n - 1; nu is the *effective* number matched to
  the exact variance of MR̄ for normal data (about 0.6·(n - 1)), so that the intervals are
  not too narrow.
* **subgroups, pooled** (the default): sigma = √(Σᵢ Σⱼ (xᵢⱼ - x̄ᵢ)² / Σᵢ(nᵢ - 1)), the pooled
  standard deviation, with nu = Σᵢ(nᵢ - 1). It handles unequal subgroups and is the most
  efficient estimate; no c₄ correction is applied, so the chi-square interval is exact.
* **subgroups, range** (``within="range"``): sigma = mean of Rᵢ/d₂(nᵢ), which is R̄/d₂ for
  equal subgroups — the estimate of an X̄-R chart. d₂ and d₃ are computed by quadrature
  from the distribution of the normal range; nu = k²/(2 Σᵢ (d₃/d₂)²ᵢ) matches the variance
  of the estimate (≈ 0.9·k(n - 1), the usual rule).

Bissell's interval uses the same n (all values) with the nu of the sigma in question, which
reduces to his formula for the overall indices. Cpm is an overall index: it uses s.

>>> cap = capability([10.1, 9.9, 10.0, 10.2, 9.8, 10.0, 10.1, 9.9, 10.0, 10.0],
...                  lsl=9.4, usl=10.6)
>>> round(cap.cp.value, 3), round(cap.pp.value, 3)
(1.354, 1.732)
>>> [round(v, 2) for v in (cap.cp.lower, cap.cp.upper)]
[0.59, 2.12]
>>> cap.warnings[0].split(":")[0]
'only 10 values'
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import integrate, special, stats

from sqems.errors import ValidationFailed
from sqems.figures import probability

__all__ = [
    "FEW_VALUES",
    "MIN_VALUES",
    "NORMALITY_ALPHA",
    "PERCENTILE_MIN_VALUES",
    "PERCENTILE_RESAMPLES",
    "Capability",
    "Estimate",
    "Normality",
    "Percentile",
    "Ppm",
    "capability",
    "cp_interval",
    "cpk_interval",
    "range_constants",
]

MIN_VALUES = 2
"""Fewer values than this leave no spread to estimate: :func:`capability` refuses them."""

FEW_VALUES = 30
"""Below this many values the indices are computed but flagged as rough."""

NORMALITY_ALPHA = 0.05
"""Significance level of the normality check."""

SHAPIRO_MAX_N = 5000
"""Above this, scipy's Shapiro-Wilk p-value is no longer accurate; D'Agostino-Pearson
takes over."""

D2_MOVING_RANGE = 2.0 / math.sqrt(math.pi)
"""d₂ for a range of two values: E|X₁ - X₂| = 2·sigma/√π."""

WithinMethod = Literal["pooled", "range"]
SubgroupSpec = int | Sequence[Hashable] | npt.NDArray[Any]


# --- result types -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with its two-sided confidence interval (``lower ≤ upper``) and
    its one-sided lower confidence bound at the same level (``lower ≤ lower_bound``).

    Acceptance ("is Cpk at least 1.33?") is a one-sided question: it is answered by
    ``lower_bound``, the value the index exceeds with the stated confidence, not by
    the lower end of the two-sided interval (which is a more cautious bound at
    confidence 1 - (1 - c)/2)."""

    value: float
    lower: float
    upper: float
    lower_bound: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Ppm:
    """Nonconforming parts per million, by side. A side without a limit is None."""

    below_lsl: float | None
    above_usl: float | None

    @property
    def total(self) -> float:
        return (self.below_lsl or 0.0) + (self.above_usl or 0.0)

    def to_dict(self) -> dict[str, float | None]:
        return {"below_lsl": self.below_lsl, "above_usl": self.above_usl, "total": self.total}


@dataclass(frozen=True, slots=True)
class Normality:
    """The result of the normality check.

    Shapiro-Wilk (``scipy.stats.shapiro``) for 3 ≤ n ≤ 5000: it is the most powerful of
    the common tests at the sample sizes of a capability study. Above 5000 scipy's
    Shapiro-Wilk p-value is unreliable, so D'Agostino-Pearson's K² (``normaltest``) is
    used instead.
    """

    test: Literal["shapiro-wilk", "dagostino-pearson"]
    statistic: float
    p_value: float
    alpha: float = NORMALITY_ALPHA

    @property
    def normal(self) -> bool:
        """False when normality is rejected at :attr:`alpha`."""
        return self.p_value >= self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "normal": self.normal,
        }


@dataclass(frozen=True, slots=True)
class Percentile:
    """ISO 22514-2 percentile indices, for values a normal distribution does not fit.

    The values are transformed to a normal distribution — Box-Cox when all are positive
    (Box & Cox, *JRSS B* 26 (1964) 211-252), Yeo-Johnson otherwise (Yeo & Johnson,
    *Biometrika* 87 (2000) 954-959), λ by maximum likelihood in [-5, 5] — and the
    0.135 %, 50 % and 99.865 % points of that normal are transformed back to give
    X₀.₁₃₅, X₅₀ and X₉₉.₈₆₅ of the values. Then (ISO 22514-2, the percentile method;
    Clements, *Quality Progress* 22(9), 1989, 95-100)::

        Pp  = (USL - LSL) / (X₉₉.₈₆₅ - X₀.₁₃₅)
        Ppu = (USL - X₅₀) / (X₉₉.₈₆₅ - X₅₀)     Ppl = (X₅₀ - LSL) / (X₅₀ - X₀.₁₃₅)
        Ppk = min(Ppu, Ppl)

    They describe all the values (overall spread). Intervals and one-sided lower bounds
    are bootstrap percentiles of the whole procedure (``resamples`` resamples of the
    values, λ refitted on each up to :data:`REFIT_MAX_VALUES` values; fixed seed, so
    the answer is reproducible).
    """

    transform: Literal["box-cox", "yeo-johnson"]
    lam: float
    """The transform's λ (maximum likelihood)."""
    normality: Normality
    """The normality test on the transformed values: if it rejects too, no fitted
    distribution here describes the values and the indices are rough."""
    x_low: float
    """X₀.₁₃₅, the 0.135 % point of the fitted distribution."""
    x_median: float
    x_high: float
    """X₉₉.₈₆₅."""
    pp: Estimate | None
    ppk: Estimate
    ppu: Estimate | None
    ppl: Estimate | None
    ppm: Ppm
    """Nonconforming parts per million expected from the fitted distribution."""
    resamples: int

    def to_dict(self) -> dict[str, Any]:
        def est(e: Estimate | None) -> dict[str, float] | None:
            return None if e is None else e.to_dict()

        return {
            "transform": self.transform,
            "lam": self.lam,
            "normality": self.normality.to_dict(),
            "x_low": self.x_low,
            "x_median": self.x_median,
            "x_high": self.x_high,
            "pp": est(self.pp),
            "ppk": est(self.ppk),
            "ppu": est(self.ppu),
            "ppl": est(self.ppl),
            "ppm": self.ppm.to_dict(),
            "resamples": self.resamples,
        }


@dataclass(frozen=True, slots=True)
class Capability:
    """Capability of one characteristic against its specification.

    An index is None when it does not exist for the specification (Cp and Pp need both
    limits, Cpu/Ppu an upper one, Cpl/Ppl a lower one, Cpm a target and both limits) or
    when the spread it divides by is zero; :attr:`warnings` then says why.
    """

    n: int
    subgroups: int
    """Number of subgroups; equal to ``n`` for individual values."""
    mean: float
    sigma_within: float
    within_method: Literal["moving_range", "pooled", "range"]
    dof_within: float
    """Degrees of freedom (effective, for moving ranges and ranges) of ``sigma_within``."""
    sigma_overall: float
    """Sample standard deviation s (divisor n - 1); its degrees of freedom are n - 1."""
    lsl: float | None
    usl: float | None
    target: float | None
    confidence: float
    cp: Estimate | None
    cpk: Estimate | None
    cpu: Estimate | None
    cpl: Estimate | None
    pp: Estimate | None
    ppk: Estimate | None
    ppu: Estimate | None
    ppl: Estimate | None
    cpm: Estimate | None
    ppm_observed: Ppm
    """Values strictly beyond a limit, per million (a value on a limit conforms)."""
    ppm_within: Ppm | None
    """Expected from a normal distribution with ``mean`` and ``sigma_within``."""
    ppm_overall: Ppm | None
    """Expected from a normal distribution with ``mean`` and ``sigma_overall``."""
    normality: Normality | None
    """None when fewer than 3 values or zero spread leave nothing to test."""
    in_control: bool | None
    """As the caller said, or as the chart check found; None if it could not be checked."""
    control_source: Literal["caller", "individuals_chart", "xbar_chart", "not_checked"]
    beyond_limits: tuple[int, ...]
    """0-based positions of the points beyond the 3-sigma limits of the chart check: values
    for an individuals chart, subgroups (in order of first appearance) for an X̄ chart."""
    warnings: tuple[str, ...]
    """Why the indices may not mean what they seem, each with what to do about it."""
    method: Literal["normal", "percentile"] = "normal"
    """``percentile`` when the normality test rejected and :attr:`percentile` holds the
    ISO 22514-2 indices, which then are the ones to judge by (:attr:`judged`)."""
    percentile: Percentile | None = None

    @property
    def judged(self) -> Estimate | None:
        """The index an accept/reject decision uses: Cpk for normal values (Ppk when
        the within spread is zero), the percentile Ppk for non-normal ones."""
        if self.method == "percentile" and self.percentile is not None:
            return self.percentile.ppk
        return self.cpk if self.cpk is not None else self.ppk

    def meets(self, minimum: float = 1.33) -> bool:
        """Whether the judged index is at least ``minimum`` with the study's confidence:
        its one-sided lower bound, not its point estimate, must reach ``minimum``.

        >>> rng = np.random.default_rng(1)
        >>> cap = capability(rng.normal(10.0, 1.2, 50), lsl=5.0, usl=15.0)
        >>> round(cap.cpk.value, 2), round(cap.cpk.lower_bound, 2), cap.meets(1.33)
        (1.75, 1.37, True)
        >>> cap.meets(1.67)  # the estimate is above 1.67, the evidence is not
        False
        """
        judged = self.judged
        return judged is not None and judged.lower_bound >= minimum

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for the API: estimates as ``{value, lower, upper}``."""

        def est(e: Estimate | None) -> dict[str, float] | None:
            return None if e is None else e.to_dict()

        def ppm(p: Ppm | None) -> dict[str, float | None] | None:
            return None if p is None else p.to_dict()

        return {
            "n": self.n,
            "subgroups": self.subgroups,
            "mean": self.mean,
            "sigma_within": self.sigma_within,
            "within_method": self.within_method,
            "dof_within": self.dof_within,
            "sigma_overall": self.sigma_overall,
            "lsl": self.lsl,
            "usl": self.usl,
            "target": self.target,
            "confidence": self.confidence,
            "cp": est(self.cp),
            "cpk": est(self.cpk),
            "cpu": est(self.cpu),
            "cpl": est(self.cpl),
            "pp": est(self.pp),
            "ppk": est(self.ppk),
            "ppu": est(self.ppu),
            "ppl": est(self.ppl),
            "cpm": est(self.cpm),
            "ppm_observed": ppm(self.ppm_observed),
            "ppm_within": ppm(self.ppm_within),
            "ppm_overall": ppm(self.ppm_overall),
            "normality": None if self.normality is None else self.normality.to_dict(),
            "in_control": self.in_control,
            "control_source": self.control_source,
            "beyond_limits": list(self.beyond_limits),
            "warnings": list(self.warnings),
            "method": self.method,
            "percentile": None if self.percentile is None else self.percentile.to_dict(),
        }


# --- interval formulas ------------------------------------------------------------------------


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValidationFailed(
            f"confidence {confidence!r} is not between 0 and 1: give a level such as 0.95"
        )


def cp_interval(cp: float, dof: float, confidence: float = 0.95) -> Estimate:
    """Cp (or Pp) with its two-sided chi-square confidence interval.

    Since nu·(sigma estimate / sigma)² follows χ²(nu) for a normal process,
    ``Ĉp·√(χ²ₚ(nu)/nu) ≤ Cp ≤ Ĉp·√(χ²₁₋ₚ(nu)/nu)`` with χ²ₚ(nu) the p-quantile and
    p = (1 - confidence)/2 (NIST/SEMATECH e-Handbook §6.1.6; Montgomery, *Introduction
    to Statistical Quality Control*, §8.3.5). ``dof`` may be fractional (an effective nu).

    Montgomery's worked example: USL = 62, LSL = 38, n = 20, s = 1.75 gives Ĉp = 2.29
    and 1.57 ≤ Cp ≤ 3.01.

    >>> e = cp_interval(2.29, dof=19)
    >>> round(e.lower, 2), round(e.upper, 2)
    (1.57, 3.01)
    """
    _check_confidence(confidence)
    if not dof > 0:
        raise ValidationFailed(f"degrees of freedom {dof!r} must be positive")
    alpha = 1.0 - confidence
    lo = cp * math.sqrt(float(stats.chi2.ppf(alpha / 2.0, dof)) / dof)
    hi = cp * math.sqrt(float(stats.chi2.ppf(1.0 - alpha / 2.0, dof)) / dof)
    bound = cp * math.sqrt(float(stats.chi2.ppf(alpha, dof)) / dof)
    return Estimate(cp, min(lo, hi), max(lo, hi), bound)


def cpk_interval(
    cpk: float, n: int, dof: float | None = None, confidence: float = 0.95
) -> Estimate:
    """Cpk (or Ppk, Cpu, Cpl) with Bissell's approximate two-sided interval.

    ``Ĉpk ± z₁₋ₚ·√(1/(9n) + Ĉpk²/(2·nu))`` with zₚ the standard normal p-quantile,
    p = (1 - confidence)/2 and nu = n - 1 unless ``dof`` says otherwise (Bissell 1990;
    NIST/SEMATECH e-Handbook §6.1.6; Montgomery §8.3.5, who writes it as
    Ĉpk·[1 ± z·√(1/(9nĈpk²) + 1/(2(n - 1)))]). The first term is the uncertainty of the
    mean, the second that of the sigma estimate.

    The one-sided lower bound replaces z₁₋ₚ by z at ``confidence`` (Bissell 1990; the
    bound Kotz & Johnson, *Process Capability Indices* (1993) §3.5, and Kushler &
    Hurley, *JQT* 24 (1992) 188-195, recommend for acceptance).

    Montgomery's worked example: n = 20 and Ĉpk = 1.33 give 0.88 ≤ Cpk ≤ 1.78.

    >>> e = cpk_interval(1.33, n=20)
    >>> round(e.lower, 2), round(e.upper, 2)
    (0.88, 1.78)
    """
    _check_confidence(confidence)
    nu = float(n - 1) if dof is None else dof
    if n < 1 or not nu > 0:
        raise ValidationFailed(f"n = {n} with {nu!r} degrees of freedom: need n ≥ 2")
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    spread = math.sqrt(1.0 / (9.0 * n) + cpk * cpk / (2.0 * nu))
    bound = cpk - float(stats.norm.ppf(confidence)) * spread
    return Estimate(cpk, cpk - z * spread, cpk + z * spread, bound)


def _cpm_estimate(
    x: npt.NDArray[np.float64],
    lsl: float,
    usl: float,
    target: float,
    s: float,
    confidence: float,
) -> Estimate:
    """Cpm with Boyles' chi-square interval (see the module docstring).

    Boyles' pivot is built on τ̃² = Σ(x - T)²/n: n·τ̃²/τ² is a scaled noncentral χ²(n),
    which Patnaik's approximation turns into χ²(nu)/nu. The point estimate keeps the usual
    s² + (x̄ - T)², as published tables (and SAS's output) do.
    """
    n = x.size
    mean = float(x.mean())
    tau = math.hypot(s, mean - target)
    a2 = ((mean - target) / s) ** 2
    nu = n * (1.0 + a2) ** 2 / (1.0 + 2.0 * a2)
    tau_boyles = math.sqrt(float(np.mean((x - target) ** 2)))
    around = cp_interval((usl - lsl) / (6.0 * tau_boyles), nu, confidence)
    return Estimate((usl - lsl) / (6.0 * tau), around.lower, around.upper, around.lower_bound)


# --- spread estimates -------------------------------------------------------------------------


@lru_cache(maxsize=64)
def range_constants(size: int) -> tuple[float, float]:
    """d₂ and d₃ — mean and standard deviation of the range of ``size`` standard normal
    values — by quadrature of the range distribution, so any subgroup size works without
    a table.

    ``F_R(r) = n ∫ φ(x)·(Φ(x + r) - Φ(x))ⁿ⁻¹ dx``, then d₂ = ∫ (1 - F_R) dr and
    E[R²] = ∫ 2r(1 - F_R) dr. Accurate to better than 1e-7.

    >>> [round(v, 3) for v in range_constants(5)]
    [2.326, 0.864]
    """
    if size < 2:
        raise ValidationFailed(f"a range needs at least 2 values, not {size}")
    # ±8 sigma holds all the mass that matters; the x-integrand decays like a Gaussian, where
    # the trapezoid rule is already exact to rounding, while the r-integral starts at a
    # boundary and needs Simpson's rule
    x = np.linspace(-8.0, 8.0, 401)
    r = np.linspace(0.0, 16.0, 401)
    spread = special.ndtr(x[None, :] + r[:, None]) - special.ndtr(x)[None, :]
    density = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    survival = 1.0 - size * integrate.trapezoid(spread ** (size - 1) * density, x, axis=1)
    d2 = float(integrate.simpson(survival, x=r))
    d3 = math.sqrt(float(integrate.simpson(2.0 * r * survival, x=r)) - d2 * d2)
    return d2, d3


def _moving_range_dof(n: int) -> float:
    """Effective degrees of freedom of MR̄/d₂ from n individual values.

    Matches 1/(2·nu) to the squared coefficient of variation of MR̄ for normal data. With
    m = n - 1 ranges, Var|Xᵢ - Xᵢ₊₁| = 2·sigma²(1 - 2/π), and two adjacent ranges (correlation
    -½ between the differences) have covariance 2·sigma²·(2/π)(√3/2 + π/12 - 1); ranges
    further apart are independent. Hence
    nu = m² / (m(π - 2) + 4(m - 1)(√3/2 + π/12 - 1)) ≈ 0.605·m.
    """
    m = n - 1
    adjacent = math.sqrt(3.0) / 2.0 + math.pi / 12.0 - 1.0
    return m * m / (m * (math.pi - 2.0) + 4.0 * (m - 1) * adjacent)


@dataclass(frozen=True, slots=True)
class _Groups:
    codes: npt.NDArray[np.intp]
    """Subgroup of each value, numbered in order of first appearance."""
    counts: npt.NDArray[np.intp]


def _groups(n: int, subgroup_size: SubgroupSpec) -> _Groups | None:
    """The subgroups, or None for individual values."""
    if isinstance(subgroup_size, bool):
        raise ValidationFailed(
            f"subgroup_size {subgroup_size!r} is a bool: give a size or subgroup labels"
        )
    if isinstance(subgroup_size, int | np.integer):
        size = int(subgroup_size)
        if size < 1:
            raise ValidationFailed(f"subgroup_size {size} must be at least 1")
        if size == 1:
            return None
        if n % size:
            raise ValidationFailed(
                f"{n} values do not split into subgroups of {size}: pass one subgroup "
                "label per value instead"
            )
        codes = np.repeat(np.arange(n // size, dtype=np.intp), size)
    elif isinstance(subgroup_size, np.ndarray) and subgroup_size.dtype.kind in "biufUSmM":
        if subgroup_size.shape != (n,):
            raise ValidationFailed(
                f"subgroup labels of shape {subgroup_size.shape} for {n} values: give one "
                "label per value"
            )
        # number the labels by first appearance, so subgroups keep production order
        _, first, inverse = np.unique(subgroup_size, return_index=True, return_inverse=True)
        rank = np.empty(first.size, dtype=np.intp)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)
        codes = rank[inverse.reshape(-1)]
    else:
        labels = list(subgroup_size)
        if len(labels) != n:
            raise ValidationFailed(
                f"{len(labels)} subgroup labels for {n} values: give one label per value"
            )
        seen: dict[Hashable, int] = {}
        codes = np.fromiter(
            (seen.setdefault(label, len(seen)) for label in labels), dtype=np.intp, count=n
        )
    counts = np.bincount(codes)
    if counts.max() == 1:
        return None
    return _Groups(codes, counts)


def _within(
    x: npt.NDArray[np.float64], groups: _Groups | None, method: WithinMethod
) -> tuple[float, float, Literal["moving_range", "pooled", "range"]]:
    """sigma within, its (effective) degrees of freedom, and the method used."""
    if groups is None:
        mr_bar = float(np.mean(np.abs(np.diff(x))))
        return mr_bar / D2_MOVING_RANGE, _moving_range_dof(x.size), "moving_range"
    codes, counts = groups.codes, groups.counts
    hi = np.full(counts.size, -np.inf)
    lo = np.full(counts.size, np.inf)
    np.maximum.at(hi, codes, x)
    np.minimum.at(lo, codes, x)
    ranges = hi - lo
    if method == "pooled":
        dof = float((counts - 1).sum())
        if not ranges.any():
            return 0.0, dof, "pooled"
        means = np.bincount(codes, weights=x) / counts
        ss = float(np.bincount(codes, weights=(x - means[codes]) ** 2).sum())
        return math.sqrt(ss / dof), dof, "pooled"
    sized = counts >= 2
    consts = np.array([range_constants(int(c)) for c in counts[sized]])
    d2, d3 = consts[:, 0], consts[:, 1]
    k = int(sized.sum())
    sigma = float(np.mean(ranges[sized] / d2))
    dof = k * k / (2.0 * float(np.sum((d3 / d2) ** 2)))
    return sigma, dof, "range"


# --- checks -----------------------------------------------------------------------------------


def _normality(x: npt.NDArray[np.float64]) -> Normality:
    if x.size <= SHAPIRO_MAX_N:
        sw = stats.shapiro(x)
        return Normality("shapiro-wilk", float(sw.statistic), float(sw.pvalue))
    k2 = stats.normaltest(x)
    return Normality("dagostino-pearson", float(k2.statistic), float(k2.pvalue))


def _beyond_limits(
    x: npt.NDArray[np.float64], groups: _Groups | None, sigma: float
) -> tuple[int, ...]:
    """Western Electric rule 1: points beyond centre ± 3 sigma of the chart for these data."""
    centre = float(x.mean())
    if groups is None:
        return tuple(int(i) for i in np.flatnonzero(np.abs(x - centre) > 3.0 * sigma))
    means = np.bincount(groups.codes, weights=x) / groups.counts
    limit = 3.0 * sigma / np.sqrt(groups.counts)
    return tuple(int(i) for i in np.flatnonzero(np.abs(means - centre) > limit))


def _positions(found: tuple[int, ...], shown: int = 5) -> str:
    text = ", ".join(str(i) for i in found[:shown])
    return text + (", …" if len(found) > shown else "")


def _expected_ppm(mean: float, sigma: float, lsl: float | None, usl: float | None) -> Ppm:
    below = None if lsl is None else 1e6 * float(stats.norm.cdf((lsl - mean) / sigma))
    above = None if usl is None else 1e6 * float(stats.norm.sf((usl - mean) / sigma))
    return Ppm(below, above)


def _indices(
    mean: float,
    sigma: float,
    n: int,
    dof: float,
    lsl: float | None,
    usl: float | None,
    confidence: float,
) -> tuple[Estimate | None, Estimate | None, Estimate | None, Estimate | None]:
    """(Cp, Cpk, Cpu, Cpl) for one sigma, or all None when sigma is zero."""
    if sigma <= 0.0:
        return None, None, None, None
    cp = None if lsl is None or usl is None else (usl - lsl) / (6.0 * sigma)
    cpu = None if usl is None else (usl - mean) / (3.0 * sigma)
    cpl = None if lsl is None else (mean - lsl) / (3.0 * sigma)
    cpk = min(c for c in (cpu, cpl) if c is not None)
    return (
        None if cp is None else cp_interval(cp, dof, confidence),
        cpk_interval(cpk, n, dof, confidence),
        None if cpu is None else cpk_interval(cpu, n, dof, confidence),
        None if cpl is None else cpk_interval(cpl, n, dof, confidence),
    )


def _finite_or_none(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValidationFailed(f"{name} {value!r} is not a finite number")
    return number


# --- percentile method (ISO 22514-2) ---------------------------------------------------------

PERCENTILE_RESAMPLES = 200
"""Bootstrap resamples behind the percentile indices' intervals."""

PERCENTILE_MIN_VALUES = 20
"""Below this many values a transformation cannot be fitted with any confidence."""

_Z_TAIL = float(stats.norm.isf(0.00135))

REFIT_MAX_VALUES = 2000
"""Up to this many values the bootstrap refits λ on every resample; beyond it λ is
held at the full-sample estimate (its uncertainty is then small beside the rest)."""

Family = Literal["box-cox", "yeo-johnson"]


def _transform(
    x: npt.NDArray[np.float64], lam: npt.NDArray[np.float64], family: Family
) -> npt.NDArray[np.float64]:
    """Box-Cox (positive ``x``) or Yeo-Johnson transform of ``x`` (..., n) for each λ
    in ``lam`` (broadcast against ``x``)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if family == "box-cox":
            logs = np.log(x)
            near0 = np.abs(lam) < 1e-9
            out: npt.NDArray[np.float64] = np.where(
                near0, logs, np.expm1(lam * logs) / np.where(near0, 1.0, lam)
            )
            return out
        pos = x >= 0
        log_pos, log_neg = np.log1p(np.where(pos, x, 0.0)), np.log1p(np.where(pos, 0.0, -x))
        near0, near2 = np.abs(lam) < 1e-9, np.abs(lam - 2.0) < 1e-9
        up = np.where(near0, log_pos, np.expm1(lam * log_pos) / np.where(near0, 1.0, lam))
        k = 2.0 - lam
        down = np.where(near2, -log_neg, -np.expm1(k * log_neg) / np.where(near2, 1.0, k))
        out = np.where(pos, up, down)
        return out


def _inverse(y: npt.NDArray[np.float64], lam: float, family: Family) -> npt.NDArray[np.float64]:
    """Undo :func:`_transform`; a normal quantile beyond the transform's range maps to
    ±inf (the fitted distribution puts no mass there)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if family == "box-cox":
            if abs(lam) < 1e-9:
                out: npt.NDArray[np.float64] = np.exp(y)
                return out
            base = lam * y + 1.0
            edge = np.inf if lam < 0 else 0.0
            out = np.where(base > 0, np.power(np.maximum(base, 1e-300), 1.0 / lam), edge)
            return out
        x = np.empty_like(y)
        pos = y >= 0
        if abs(lam) < 1e-9:
            x[pos] = np.expm1(y[pos])
        else:
            base = y[pos] * lam + 1.0
            x[pos] = np.where(base > 0, np.power(np.maximum(base, 0.0), 1.0 / lam) - 1.0, np.inf)
        neg = ~pos
        if abs(lam - 2.0) < 1e-9:
            x[neg] = -np.expm1(-y[neg])
        else:
            base = 1.0 - y[neg] * (2.0 - lam)
            x[neg] = np.where(
                base > 0, 1.0 - np.power(np.maximum(base, 0.0), 1.0 / (2.0 - lam)), -np.inf
            )
        return x


def _profile(
    x: npt.NDArray[np.float64], grid: npt.NDArray[np.float64], family: Family
) -> npt.NDArray[np.float64]:
    """Profile log-likelihood of λ for each row of ``x`` (B, n) at each λ of ``grid``
    (B, G): ``-n/2·log s²(λ) + (λ - 1)·J`` with the log-Jacobian J = Σ log x (Box-Cox)
    or Σ sign(x)·log(1 + |x|) (Yeo-Johnson)."""
    n = x.shape[-1]
    if family == "box-cox":
        jac = np.sum(np.log(x), axis=-1)
    else:
        jac = np.sum(np.sign(x) * np.log1p(np.abs(x)), axis=-1)
    llf = np.empty(grid.shape)
    for start in range(0, x.shape[0], 16):  # bounded memory for long series
        rows, lams = x[start : start + 16, None, :], grid[start : start + 16, :, None]
        var = np.var(_transform(rows, lams, family), axis=-1)
        with np.errstate(divide="ignore"):
            llf[start : start + 16] = (
                -0.5 * n * np.log(var) + (lams[..., 0] - 1.0) * jac[start : start + 16, None]
            )
    return np.nan_to_num(llf, nan=-np.inf)


def _fit_lambda(x: npt.NDArray[np.float64], family: Family) -> npt.NDArray[np.float64]:
    """Maximum-likelihood λ for each row of ``x`` (B, n), in [-5, 5]: a coarse grid, a
    fine one around its best point, and a parabola through the best fine point and its
    neighbours. Vectorised over rows, so a bootstrap fits all its resamples at once."""
    rows = np.arange(x.shape[0])
    coarse = np.broadcast_to(np.linspace(-5.0, 5.0, 41), (x.shape[0], 41))
    best = coarse[rows, np.argmax(_profile(x, coarse, family), axis=1)]
    fine = best[:, None] + np.linspace(-0.25, 0.25, 11)[None, :]
    llf = _profile(x, fine, family)
    at = np.clip(np.argmax(llf, axis=1), 1, 9)
    left, mid, right = llf[rows, at - 1], llf[rows, at], llf[rows, at + 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        curve = left - 2.0 * mid + right
        shift = np.where(curve < 0, 0.5 * (left - right) / curve, 0.0)
    lam: npt.NDArray[np.float64] = fine[rows, at] + 0.05 * np.clip(np.nan_to_num(shift), -0.5, 0.5)
    return lam


def _percentile_points(
    x: npt.NDArray[np.float64], family: Family, lam: npt.NDArray[np.float64] | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """λ, the (mean, sd) of the transformed values and (X₀.₁₃₅, X₅₀, X₉₉.₈₆₅) for each
    row of ``x`` (B, n); λ is fitted per row unless given."""
    lam = _fit_lambda(x, family) if lam is None else lam
    transformed = _transform(x, lam[:, None], family)
    mu, sd = transformed.mean(axis=1), transformed.std(axis=1, ddof=1)
    normal = np.stack([mu - _Z_TAIL * sd, mu, mu + _Z_TAIL * sd], axis=1)
    points = np.stack([_inverse(row, float(k), family) for row, k in zip(normal, lam, strict=True)])
    return lam, np.stack([mu, sd], axis=1), points


def _percentile(
    x: npt.NDArray[np.float64], lsl: float | None, usl: float | None, confidence: float
) -> Percentile:
    family: Family = "box-cox" if float(x.min()) > 0 else "yeo-johnson"
    lam_all, moments, points = _percentile_points(x[None, :], family)
    lam, (mu, sd) = float(lam_all[0]), moments[0].tolist()
    low, mid, high = points[0].tolist()
    rng = np.random.default_rng(0)
    resampled = x[rng.integers(0, x.size, (PERCENTILE_RESAMPLES, x.size))]
    fixed = None if x.size <= REFIT_MAX_VALUES else np.full(PERCENTILE_RESAMPLES, lam)
    boot = _percentile_points(resampled, family, fixed)[2]
    alpha = 1.0 - confidence

    def upper(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        assert usl is not None
        out: npt.NDArray[np.float64] = (usl - p[..., 1]) / (p[..., 2] - p[..., 1])
        return out

    def lower(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        assert lsl is not None
        out: npt.NDArray[np.float64] = (p[..., 1] - lsl) / (p[..., 1] - p[..., 0])
        return out

    def estimate(value: float, sample: npt.NDArray[np.float64]) -> Estimate:
        sample = np.where(np.isfinite(sample), sample, 0.0)
        lo, hi = np.quantile(sample, [alpha / 2.0, 1.0 - alpha / 2.0])
        return Estimate(value, float(lo), float(hi), float(np.quantile(sample, alpha)))

    with np.errstate(divide="ignore", invalid="ignore"):
        sides = []
        ppu = ppl = pp = None
        if usl is not None:
            ppu = estimate(float(upper(points[0])), upper(boot))
            sides.append(upper(boot))
        if lsl is not None:
            ppl = estimate(float(lower(points[0])), lower(boot))
            sides.append(lower(boot))
        if lsl is not None and usl is not None:
            pp = estimate((usl - lsl) / (high - low), (usl - lsl) / (boot[:, 2] - boot[:, 0]))
    ppk = estimate(min(e.value for e in (ppu, ppl) if e is not None), np.min(sides, axis=0))

    def tail(limit: float) -> float:
        # the limit on the normal scale of the transformed values; a Box-Cox limit at
        # or below zero lies below all the mass
        if family == "box-cox" and limit <= 0:
            return -np.inf
        z = _transform(np.array([limit]), np.array([lam]), family)[0]
        return float((z - mu) / sd)

    ppm = Ppm(
        None if lsl is None else 1e6 * float(stats.norm.cdf(tail(lsl))),
        None if usl is None else 1e6 * float(stats.norm.sf(tail(usl))),
    )
    transformed = _transform(x, np.array([lam]), family)
    return Percentile(
        family,
        lam,
        _normality(np.asarray(transformed, dtype=np.float64)),
        low,
        mid,
        high,
        pp,
        ppk,
        ppu,
        ppl,
        ppm,
        PERCENTILE_RESAMPLES,
    )


# --- the analysis -----------------------------------------------------------------------------


def capability(
    values: npt.ArrayLike,
    lsl: float | None = None,
    usl: float | None = None,
    target: float | None = None,
    *,
    subgroup_size: SubgroupSpec = 1,
    within: WithinMethod = "pooled",
    confidence: float = 0.95,
    in_control: bool | None = None,
) -> Capability:
    """Capability indices, PPM and a normality and stability check for ``values``.

    ``values`` are measurements of one characteristic in production order (the moving
    range and the chart check depend on the order). ``subgroup_size`` is 1 for individual
    values, a size k for consecutive subgroups of k, or one label per value (subgroups
    may then differ in size and need not be contiguous; their order is that of first
    appearance). ``within`` chooses the within-subgroup sigma of subgrouped data: the pooled
    standard deviation (default) or R̄/d₂ as on an X̄-R chart.

    ``in_control`` is what the caller knows from its control chart. When None, the
    function applies rule 1 (a point beyond 3 sigma) itself: to an individuals chart
    (centre x̄, limits from MR̄/d₂) for individual values, to an X̄ chart (limits
    x̄ ± 3·sigma/√nᵢ) for subgroups. The other run rules need the chart's history and are the
    SPC module's job.

    Raises :class:`~sqems.errors.ValidationFailed` only when nothing can be computed: no
    specification limit, fewer than 2 values, a value that is not a finite number,
    subgroups that do not fit the values, a confidence outside (0, 1). Everything that
    only makes the indices unreliable — fewer than 30 values, non-normal data, a process
    out of control, LSL ≥ USL, zero spread, a target outside the limits — is computed and
    explained in :attr:`Capability.warnings`.

    >>> cap = capability([4.1, 3.9, 4.0, 4.2, 3.8, 4.0, 4.1, 3.9, 4.0, 4.0], usl=4.6)
    >>> cap.cp is None, round(cap.ppk.value, 3), cap.ppk == cap.ppu
    (True, 1.732, True)
    """
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"values are not numbers ({exc}): pass measurements") from exc
    if x.ndim != 1:
        raise ValidationFailed(
            f"values have shape {x.shape}: pass one flat series and subgroup labels"
        )
    n = int(x.size)
    if n < MIN_VALUES:
        raise ValidationFailed(
            f"{n} value(s): a capability study needs at least {MIN_VALUES} to estimate "
            f"spread (and {FEW_VALUES} or more to mean much)"
        )
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValidationFailed(
            f"values[{int(bad[0])}] is {float(x[bad[0]])} ({bad.size} value(s) not finite): "
            "remove or fix missing readings first"
        )
    lsl = _finite_or_none("lsl", lsl)
    usl = _finite_or_none("usl", usl)
    target = _finite_or_none("target", target)
    if lsl is None and usl is None:
        raise ValidationFailed("no specification limit: give lsl, usl or both")
    _check_confidence(confidence)
    if within not in ("pooled", "range"):
        raise ValidationFailed(f"within {within!r} is not 'pooled' or 'range'")

    groups = _groups(n, subgroup_size)
    mean = float(x.mean())
    # rounding leaves a std of ~1e-17 on equal values; spread is zero exactly when the range is
    s = float(x.std(ddof=1)) if np.ptp(x) > 0.0 else 0.0
    sigma_w, dof_w, method = _within(x, groups, within)

    cp, cpk, cpu, cpl = _indices(mean, sigma_w, n, dof_w, lsl, usl, confidence)
    pp, ppk, ppu, ppl = _indices(mean, s, n, n - 1.0, lsl, usl, confidence)
    two_sided = lsl is not None and usl is not None
    cpm = None
    if target is not None and lsl is not None and usl is not None and s > 0.0:
        cpm = _cpm_estimate(x, lsl, usl, target, s, confidence)

    ppm_observed = Ppm(
        None if lsl is None else 1e6 * float(np.count_nonzero(x < lsl)) / n,
        None if usl is None else 1e6 * float(np.count_nonzero(x > usl)) / n,
    )
    ppm_within = _expected_ppm(mean, sigma_w, lsl, usl) if sigma_w > 0.0 else None
    ppm_overall = _expected_ppm(mean, s, lsl, usl) if s > 0.0 else None
    normality = _normality(x) if n >= 3 and s > 0.0 else None
    percentile = None
    if normality is not None and not normality.normal and n >= PERCENTILE_MIN_VALUES:
        percentile = _percentile(x, lsl, usl, confidence)

    beyond: tuple[int, ...] = ()
    source: Literal["caller", "individuals_chart", "xbar_chart", "not_checked"]
    if in_control is not None:
        source = "caller"
    elif sigma_w > 0.0:
        beyond = _beyond_limits(x, groups, sigma_w)
        in_control = not beyond
        source = "individuals_chart" if groups is None else "xbar_chart"
    else:
        source = "not_checked"

    warnings: list[str] = []
    if n < FEW_VALUES:
        warnings.append(
            f"only {n} values: indices from fewer than {FEW_VALUES} are rough (see how wide "
            "the intervals are); collect at least 30, better 100, before judging the process"
        )
    if lsl is not None and usl is not None and lsl >= usl:
        warnings.append(
            f"LSL {lsl:g} is not below USL {usl:g}: the limits look swapped or equal; "
            "check the specification before reading any index"
        )
    if s == 0.0:
        warnings.append(
            f"all {n} values equal {mean:g}: zero spread leaves every index undefined; check "
            "the gauge resolution and that the readings were not copied"
        )
    elif sigma_w == 0.0:
        warnings.append(
            "zero spread within subgroups: Cp, Cpk, Cpu and Cpl are undefined; check the "
            "gauge resolution, or whether each subgroup repeats one reading"
        )
    if normality is not None and not normality.normal:
        rejected = (
            f"values are not normal ({normality.test} statistic {normality.statistic:.4g}, "
            f"p = {probability(normality.p_value)} < {normality.alpha:g})"
        )
        if percentile is None:
            warnings.append(
                f"{rejected}: the indices and expected PPM assume a normal distribution and "
                "can be badly wrong in the tails, and fewer than "
                f"{PERCENTILE_MIN_VALUES} values are too few to fit another; collect more"
            )
        else:
            warnings.append(
                f"{rejected}: the normal-theory indices are shown for reference only; judge "
                f"by the ISO 22514-2 percentile indices ({percentile.transform} fit, lambda "
                f"{percentile.lam:.3g}): Ppk {percentile.ppk.value:.3g}, lower "
                f"{confidence:.0%} bound {percentile.ppk.lower_bound:.3g}"
            )
            if not percentile.normality.normal:
                warnings.append(
                    "even the transformed values are not normal "
                    f"(p = {probability(percentile.normality.p_value)}): no smooth distribution "
                    "fits; "
                    "look for mixed streams (machines, cavities, lots) and study each alone"
                )
    if n < 3:
        warnings.append("fewer than 3 values: normality could not be tested")
    if source == "caller" and not in_control:
        warnings.append(
            "the process is reported not in statistical control: capability describes no "
            "predictable process; find and remove the special causes, then study again"
        )
    elif beyond:
        chart, what, total = (
            ("individuals", "values", n)
            if groups is None
            else ("X̄", "subgroups", int(groups.counts.size))
        )
        warnings.append(
            f"{len(beyond)} of {total} {what} beyond the 3-sigma limits of the {chart} chart "
            f"(0-based positions {_positions(beyond)}): the process is not in statistical "
            "control; find and remove the special causes before quoting capability"
        )
    if target is not None:
        if not two_sided:
            warnings.append(
                "a target with a one-sided specification: Cpm needs both limits and was not "
                "computed"
            )
        elif lsl is not None and usl is not None and not lsl <= target <= usl:
            warnings.append(
                f"target {target:g} lies outside [{lsl:g}, {usl:g}]: check the specification; "
                "Cpm against it is not meaningful"
            )

    return Capability(
        n=n,
        subgroups=n if groups is None else int(groups.counts.size),
        mean=mean,
        sigma_within=sigma_w,
        within_method=method,
        dof_within=dof_w,
        sigma_overall=s,
        lsl=lsl,
        usl=usl,
        target=target,
        confidence=confidence,
        cp=cp,
        cpk=cpk,
        cpu=cpu,
        cpl=cpl,
        pp=pp,
        ppk=ppk,
        ppu=ppu,
        ppl=ppl,
        cpm=cpm,
        ppm_observed=ppm_observed,
        ppm_within=ppm_within,
        ppm_overall=ppm_overall,
        normality=normality,
        in_control=in_control,
        control_source=source,
        beyond_limits=beyond,
        warnings=tuple(warnings),
        method="normal" if percentile is None else "percentile",
        percentile=percentile,
    )
