"""Is quality different between shifts, lines, machines? The tests, from group counts.

The engines reduce the lake to small per-group numbers (runs and their mean readings;
inspections passed and failed); everything here runs once, in this process, on those
numbers, so Spark and DuckDB give the same answer.

* **Parameters**: the unit of analysis is the *run*, not the reading. Readings within a
  run are seconds apart on the same part and strongly correlated; counting them as
  independent would make any difference "significant" at 10 Hz. Each run contributes
  its mean reading (the ``RECORDED`` actual); the groups' run means are compared with
  Welch's one-way ANOVA (no equal-variance assumption; Welch, *Biometrika* 38 (1951)).
* **Inspections**: passed and failed inspections per group, a k-by-2 table, compared with
  Pearson's chi-square test; when an expected count is below 5, Fisher's exact test for
  two groups, a permutation test (fixed seed: the same answer every time) for more.

Every answer carries each group's estimate with its 95 % interval and the largest
difference between two groups with a simultaneous interval (Bonferroni over all
k(k-1)/2 pairs, since the pair is picked after looking). The p-values of one question
are adjusted together with Holm's step-down method, which keeps the chance of any
false "different" at ``alpha``; an answer without a significant difference says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

from sqems.figures import probability

ALPHA = 0.05
CONFIDENCE = 0.95
PERMUTATIONS = 9_999
SEED = 20_260_302
"""The permutation test's seed: a fixed one, so both engines (and every run) agree."""


@dataclass(frozen=True, slots=True)
class Level:
    """One group: its name, its size (runs or inspections) and its estimate (mean of
    the run means, or failure rate) with the 95 % interval."""

    name: str
    n: int
    estimate: float
    lower: float
    upper: float


@dataclass(frozen=True, slots=True)
class Gap:
    """The largest difference between two groups, ``high`` minus ``low``, with its
    simultaneous interval."""

    high: str
    low: str
    difference: float
    lower: float
    upper: float
    confidence: float


@dataclass(frozen=True, slots=True)
class Finding:
    """The answer for one subject (a parameter, or the inspections of a step) and one
    factor (``shift``, ``line`` or ``machine``)."""

    subject: str
    kind: str
    """``parameter`` or ``inspections``."""
    factor: str
    test: str
    statistic: float
    df: tuple[float, ...]
    p_value: float
    levels: tuple[Level, ...]
    gap: Gap
    unit: str
    p_adjusted: float = math.nan
    significant: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def answer(self) -> str:
        """The answer in a sentence, for a quality engineer."""
        gap = self.gap
        what = "failure rate" if self.kind == "inspections" else "mean"
        scale = 100.0 if self.kind == "inspections" else 1.0
        unit = " points" if self.kind == "inspections" else f" {self.unit}".rstrip()
        if self.kind == "inspections":
            unit = " percentage points"
        interval = (
            f"{gap.difference * scale:.3g}{unit} ({gap.confidence:.1%} interval "
            f"{gap.lower * scale:.3g} to {gap.upper * scale:.3g})"
        )
        p = f"p = {probability(self.p_value)}, adjusted {probability(self.p_adjusted)}"
        if self.significant:
            return (
                f"{self.subject}: the {what} differs between {self.factor}s ({p}); "
                f"{gap.high} is above {gap.low} by {interval}"
            )
        return (
            f"{self.subject}: no significant difference between {self.factor}s ({p}); "
            f"the largest gap, {gap.high} over {gap.low}, is {interval}"
        )


def welch_anova(
    subject: str, factor: str, names: list[str], n: np.ndarray, mean: np.ndarray, var: np.ndarray,
    unit: str,
) -> Finding | None:  # fmt: skip
    """Welch's test that the groups' means are equal, from their sizes, means and
    sample variances; None when fewer than two groups have two values and spread."""
    keep = (n >= 2) & (var > 0)
    notes = []
    if not keep.all():
        dropped = [names[i] for i in np.flatnonzero(~keep)]
        notes.append(f"left out (fewer than 2 runs, or no spread): {', '.join(dropped)}")
    names = [names[i] for i in np.flatnonzero(keep)]
    n, mean, var = n[keep].astype(np.float64), mean[keep], var[keep]
    k = len(names)
    if k < 2:
        return None
    w = n / var
    total = w.sum()
    centre = float((w * mean).sum() / total)
    a = float((w * (mean - centre) ** 2).sum()) / (k - 1)
    tmp = float(((1.0 - w / total) ** 2 / (n - 1.0)).sum())
    b = 1.0 + 2.0 * (k - 2) / (k * k - 1.0) * tmp
    f = a / b
    df2 = (k * k - 1.0) / (3.0 * tmp)
    p = float(stats.f.sf(f, k - 1, df2))
    t = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1.0)
    half = t * np.sqrt(var / n)
    levels = tuple(
        Level(names[i], int(n[i]), float(mean[i]), float(mean[i] - half[i]),
              float(mean[i] + half[i]))
        for i in range(k)
    )  # fmt: skip
    hi, lo = int(np.argmax(mean)), int(np.argmin(mean))
    se2 = var[hi] / n[hi] + var[lo] / n[lo]
    dof = se2**2 / ((var[hi] / n[hi]) ** 2 / (n[hi] - 1) + (var[lo] / n[lo]) ** 2 / (n[lo] - 1))
    confidence = _simultaneous(k)
    d = float(mean[hi] - mean[lo])
    h = float(stats.t.ppf(0.5 + confidence / 2, dof) * math.sqrt(se2))
    gap = Gap(names[hi], names[lo], d, d - h, d + h, confidence)
    return Finding(subject, "parameter", factor, "Welch ANOVA", f, (k - 1.0, df2), p, levels,
                   gap, unit, notes=tuple(notes))  # fmt: skip


def failure_rates(subject: str, factor: str, names: list[str], failed: np.ndarray,
                  inspected: np.ndarray) -> Finding | None:  # fmt: skip
    """Whether the share of failed inspections differs between groups; None when fewer
    than two groups, or no inspection failed or all did (nothing to compare)."""
    keep = inspected > 0
    names = [names[i] for i in np.flatnonzero(keep)]
    failed, inspected = failed[keep].astype(np.int64), inspected[keep].astype(np.int64)
    k = len(names)
    if k < 2 or failed.sum() == 0 or failed.sum() == inspected.sum():
        return None
    table = np.column_stack([failed, inspected - failed])
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    if (expected >= 5).all():
        chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
        df: tuple[float, ...] = (float(dof),)
        test, statistic = "chi-square", float(chi2)
    elif k == 2:
        _, p = stats.fisher_exact(table)
        test, statistic, df = "Fisher exact", float("nan"), ()
    else:
        method = stats.PermutationMethod(n_resamples=PERMUTATIONS, rng=np.random.default_rng(SEED))
        result = stats.chi2_contingency(table, correction=False, method=method)
        test, statistic, df = "chi-square (permutation)", float(result.statistic), ()
        p = result.pvalue
    rate = failed / inspected
    bounds = [_wilson(int(f), int(m), CONFIDENCE) for f, m in zip(failed, inspected, strict=True)]
    levels = tuple(Level(names[i], int(inspected[i]), float(rate[i]), *bounds[i]) for i in range(k))
    hi, lo = int(np.argmax(rate)), int(np.argmin(rate))
    confidence = _simultaneous(k)
    l1, u1 = _wilson(int(failed[hi]), int(inspected[hi]), confidence)
    l2, u2 = _wilson(int(failed[lo]), int(inspected[lo]), confidence)
    d = float(rate[hi] - rate[lo])
    # Newcombe's hybrid score interval for a difference of proportions (Statistics in
    # Medicine 17 (1998) 873-890, method 10)
    lower = d - math.sqrt((rate[hi] - l1) ** 2 + (u2 - rate[lo]) ** 2)
    upper = d + math.sqrt((u1 - rate[hi]) ** 2 + (rate[lo] - l2) ** 2)
    gap = Gap(names[hi], names[lo], d, lower, upper, confidence)
    return Finding(subject, "inspections", factor, test, statistic, df, float(p), levels, gap,
                   "")  # fmt: skip


def holm(findings: list[Finding], alpha: float = ALPHA) -> list[Finding]:
    """The findings with Holm-adjusted p-values and whether each is significant."""
    if not findings:
        return []
    p = np.array([f.p_value for f in findings])
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return [
        replace(f, p_adjusted=float(adjusted[i]), significant=bool(adjusted[i] < alpha))
        for i, f in enumerate(findings)
    ]


def _simultaneous(k: int) -> float:
    """The confidence of each of the k(k-1)/2 pairwise intervals that makes them hold
    together at :data:`CONFIDENCE` (Bonferroni)."""
    pairs = k * (k - 1) // 2
    return 1.0 - (1.0 - CONFIDENCE) / pairs


def _wilson(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion."""
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
