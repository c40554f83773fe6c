"""Run rules for control charts: Western Electric 1-4 and Nelson 1-8, vectorised.

A run rule looks for a pattern in the plotted points that a stable process rarely
makes: one point far out, a long run on one side, a steady climb. Every rule here is
judged on the *standardised* values ``z = (x - centre) / sigma``, where ``sigma`` is
the standard error of the plotted statistic at that point; a chart with per-point
limits (a p chart with varying sample sizes) is therefore handled like any other.

A rule *fires* at the index of the point that completes its pattern. A run longer
than the pattern fires again at every further point, so nine in a row on one side
is reported at the ninth point, and at the tenth if the run goes on. Near the start
of a series a "two of three" or "four of five" window is whatever part of it exists.

Boundaries are strict: "beyond k sigma" means ``|z| > k``, "within 1 sigma" means ``|z| < 1``
and a point exactly on the centre line is on neither side, so it breaks a one-side
run; a zero difference between neighbours breaks a trend or an alternation.

Each rule is data (:class:`Rule`: a pattern family and its numbers). The vectorised
detectors here and the one-point-at-a-time trackers in
:mod:`sqems.analysis.streaming` both read that description, and a conformance test
holds them to the same hits.

>>> hits = evaluate([0.5, 3.4, 0.1, -0.2], center=0.0, sigma=1.0, rules=["nelson_1"])
>>> hits["nelson_1"].tolist()
[1]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from sqems.errors import ValidationFailed

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class Pattern(StrEnum):
    """The shapes a rule can look for; each rule is one shape with its numbers."""

    BEYOND = "beyond"
    """One point with ``|z| > threshold``."""
    SAME_SIDE = "same_side"
    """``length`` points in a row strictly on one side of the centre line."""
    TREND = "trend"
    """``length`` points in a row each strictly above (or each below) the one before."""
    ALTERNATING = "alternating"
    """``length`` points in a row whose successive differences alternate in sign."""
    M_OF_N = "m_of_n"
    """``count`` of the last ``length`` points beyond ``threshold`` on the same side,
    the completing point among them."""
    WITHIN = "within"
    """``length`` points in a row with ``|z| < threshold``."""
    OUTSIDE = "outside"
    """``length`` points in a row with ``|z| > threshold``, on either side."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One run rule: its registry name, what it says, and the pattern it looks for."""

    name: str
    title: str
    description: str
    pattern: Pattern
    length: int = 1
    count: int = 1
    threshold: float = 0.0


class RuleHit(NamedTuple):
    """A rule that fired, and the index of the point that completed its pattern."""

    point: int
    rule: str


def _rule(name: str, title: str, description: str, pattern: Pattern, **numbers: float) -> Rule:
    length = int(numbers.get("length", 1))
    count = int(numbers.get("count", length))
    return Rule(name, title, description, pattern, length, count, numbers.get("threshold", 0.0))


_NELSON = (
    _rule(
        "nelson_1",
        "One point beyond 3 sigma",
        "A single point more than 3 sigma from the centre line, either side.",
        Pattern.BEYOND,
        threshold=3.0,
    ),
    _rule(
        "nelson_2",
        "Nine in a row on one side",
        "Nine points in a row strictly on the same side of the centre line.",
        Pattern.SAME_SIDE,
        length=9,
    ),
    _rule(
        "nelson_3",
        "Six in a row trending",
        "Six points in a row, each strictly higher than the one before (or each strictly lower).",
        Pattern.TREND,
        length=6,
    ),
    _rule(
        "nelson_4",
        "Fourteen in a row alternating",
        "Fourteen points in a row alternating up and down: the thirteen differences "
        "between neighbours change sign every time, none zero.",
        Pattern.ALTERNATING,
        length=14,
    ),
    _rule(
        "nelson_5",
        "Two of three beyond 2 sigma",
        "Two out of three points in a row more than 2 sigma from the centre line on "
        "the same side; fires at the second of those two points.",
        Pattern.M_OF_N,
        length=3,
        count=2,
        threshold=2.0,
    ),
    _rule(
        "nelson_6",
        "Four of five beyond 1 sigma",
        "Four out of five points in a row more than 1 sigma from the centre line on "
        "the same side; fires at the fourth of those points.",
        Pattern.M_OF_N,
        length=5,
        count=4,
        threshold=1.0,
    ),
    _rule(
        "nelson_7",
        "Fifteen in a row within 1 sigma",
        "Fifteen points in a row within 1 sigma of the centre line, either side "
        "(too little variation: stratified subgroups or wrong limits).",
        Pattern.WITHIN,
        length=15,
        threshold=1.0,
    ),
    _rule(
        "nelson_8",
        "Eight in a row beyond 1 sigma",
        "Eight points in a row more than 1 sigma from the centre line, on either "
        "side and in any mix of sides (a mixture of two processes).",
        Pattern.OUTSIDE,
        length=8,
        threshold=1.0,
    ),
)

_WESTERN_ELECTRIC = (
    _rule(
        "we_1",
        "One point beyond 3 sigma",
        "Western Electric rule 1: a single point more than 3 sigma from the centre line.",
        Pattern.BEYOND,
        threshold=3.0,
    ),
    _rule(
        "we_2",
        "Two of three beyond 2 sigma",
        "Western Electric rule 2: two out of three points in a row more than 2 sigma "
        "from the centre line on the same side.",
        Pattern.M_OF_N,
        length=3,
        count=2,
        threshold=2.0,
    ),
    _rule(
        "we_3",
        "Four of five beyond 1 sigma",
        "Western Electric rule 3: four out of five points in a row more than 1 sigma "
        "from the centre line on the same side.",
        Pattern.M_OF_N,
        length=5,
        count=4,
        threshold=1.0,
    ),
    _rule(
        "we_4",
        "Eight in a row on one side",
        "Western Electric rule 4: eight points in a row strictly on the same side of "
        "the centre line.",
        Pattern.SAME_SIDE,
        length=8,
    ),
)

RULES: Mapping[str, Rule] = {r.name: r for r in (*_NELSON, *_WESTERN_ELECTRIC)}
"""Every rule by name: ``nelson_1`` … ``nelson_8`` and ``we_1`` … ``we_4``."""

NELSON: tuple[str, ...] = tuple(r.name for r in _NELSON)
WESTERN_ELECTRIC: tuple[str, ...] = tuple(r.name for r in _WESTERN_ELECTRIC)
ALL_RULES: tuple[str, ...] = tuple(RULES)
"""All twelve rules, for a phase I investigation that wants every pattern."""

DEFAULT_RULES: tuple[str, ...] = ("nelson_1",)
"""The rules run when none are named: one point beyond 3 sigma.

Each added rule shortens the in-control average run length (ARL₀, points to the
first false alarm on a stable normal process): rule 1 alone gives ARL₀ = 1/0.0027 =
370.4; rule 1 with any one zone or run rule is already below 250 (with two of three
beyond 2 sigma, 225 (Champ & Woodall, *Technometrics* 29, 1987); with nine in a row,
225 measured); Western Electric 1-4 together 92; all twelve about 66 — a false alarm
every few dozen points. So the default is rule 1, the only set here with ARL₀ ≥ 250;
the others are there to name when investigating (``ALL_RULES``). The tests measure
these figures by simulation with a fixed seed."""

DEFAULT_ARL0 = 1.0 / (2.0 * 0.0013498980316301035)
"""ARL₀ of :data:`DEFAULT_RULES` on a normal process: 1/P(|Z| > 3) = 370.4."""


def resolve(names: Iterable[str] | None) -> tuple[Rule, ...]:
    """The rules named (:data:`DEFAULT_RULES` for ``None``), or a
    :class:`ValidationFailed` naming the unknown one and the names that exist."""
    if names is None:
        return tuple(RULES[name] for name in DEFAULT_RULES)
    picked = []
    for name in names:
        if name not in RULES:
            raise ValidationFailed(f"unknown run rule {name!r}; use one of {', '.join(RULES)}")
        picked.append(RULES[name])
    return tuple(picked)


def standardise(values: npt.ArrayLike, center: npt.ArrayLike, sigma: npt.ArrayLike) -> FloatArray:
    """``(values - center) / sigma`` after checking the inputs: values finite, centre
    and sigma scalars or one per point, sigma finite and positive."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValidationFailed(f"run rules need a 1-D series, got shape {x.shape}")
    _require_finite(x, "value")
    c = _per_point(center, x.size, "centre")
    s = _per_point(sigma, x.size, "sigma")
    if np.any(s <= 0):
        bad = int(np.flatnonzero(s <= 0)[0])
        raise ValidationFailed(
            f"sigma must be positive, got {float(s[bad])} at point {bad}; "
            "estimate it from in-control data first"
        )
    z: FloatArray = (x - c) / s
    return z


def _per_point(value: npt.ArrayLike, size: int, what: str) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(size, float(arr))
    elif arr.shape != (size,):
        raise ValidationFailed(
            f"{what} must be a scalar or one value per point ({size}), got shape {arr.shape}"
        )
    _require_finite(arr, what)
    return arr


def _require_finite(arr: FloatArray, what: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValidationFailed(
            f"{int(bad.sum())} non-finite {what}(s), the first {float(arr[first])} at "
            f"point {first}; drop or impute missing readings before charting"
        )


def window_count(flags: BoolArray, length: int) -> IntArray:
    """How many of the last ``length`` flags (ending at each index) are set; near the
    start, of however many exist. One cumulative sum, so O(n) whatever the length."""
    total = np.cumsum(flags, dtype=np.int64)
    counts = total.copy()
    counts[length:] -= total[:-length]
    return counts


def _runs(flags: BoolArray, length: int) -> BoolArray:
    """Where ``flags`` has been set for ``length`` points in a row."""
    done: BoolArray = window_count(flags, length) >= length
    return done


def _beyond(z: FloatArray, rule: Rule) -> BoolArray:
    fired: BoolArray = np.abs(z) > rule.threshold
    return fired


def _same_side(z: FloatArray, rule: Rule) -> BoolArray:
    return _runs(z > 0, rule.length) | _runs(z < 0, rule.length)


def _on_differences(z: FloatArray, steps: BoolArray, offset: int) -> BoolArray:
    """Map a mask over differences (or pairs of them) back onto the points that
    complete them: difference ``j`` ends at point ``j + offset``."""
    fired = np.zeros(z.size, dtype=np.bool_)
    fired[offset : offset + steps.size] = steps
    return fired


def _trend(z: FloatArray, rule: Rule) -> BoolArray:
    d = np.diff(z)
    steps = rule.length - 1
    return _on_differences(z, _runs(d > 0, steps) | _runs(d < 0, steps), 1)


def _alternating(z: FloatArray, rule: Rule) -> BoolArray:
    d = np.diff(z)
    up, down = d > 0, d < 0
    turns = (up[:-1] & down[1:]) | (down[:-1] & up[1:])
    return _on_differences(z, _runs(turns, rule.length - 2), 2)


def _m_of_n(z: FloatArray, rule: Rule) -> BoolArray:
    high, low = z > rule.threshold, z < -rule.threshold
    return (high & (window_count(high, rule.length) >= rule.count)) | (
        low & (window_count(low, rule.length) >= rule.count)
    )


def _within(z: FloatArray, rule: Rule) -> BoolArray:
    return _runs(np.abs(z) < rule.threshold, rule.length)


def _outside(z: FloatArray, rule: Rule) -> BoolArray:
    return _runs(np.abs(z) > rule.threshold, rule.length)


_DETECTORS: Mapping[Pattern, Callable[[FloatArray, Rule], BoolArray]] = {
    Pattern.BEYOND: _beyond,
    Pattern.SAME_SIDE: _same_side,
    Pattern.TREND: _trend,
    Pattern.ALTERNATING: _alternating,
    Pattern.M_OF_N: _m_of_n,
    Pattern.WITHIN: _within,
    Pattern.OUTSIDE: _outside,
}


def fires(z: FloatArray, rule: Rule) -> BoolArray:
    """For each point of a standardised series, whether ``rule`` fires there."""
    return _DETECTORS[rule.pattern](z, rule)


def evaluate(
    values: npt.ArrayLike,
    center: npt.ArrayLike,
    sigma: npt.ArrayLike,
    rules: Iterable[str] | None = None,
) -> dict[str, IntArray]:
    """The indices at which each rule fires over a whole series.

    ``center`` and ``sigma`` are scalars or one value per point; ``sigma`` is the
    standard error of the plotted statistic (for an individuals chart, the process
    sigma). ``rules`` names rules of :data:`RULES`; ``None`` runs
    :data:`DEFAULT_RULES` (``ALL_RULES`` runs all twelve).

    >>> hits = evaluate([1.5, 1.2, 1.4, 1.1, 0.2], center=0.0, sigma=1.0,
    ...                 rules=["nelson_6", "we_3"])
    >>> hits["nelson_6"].tolist(), hits["we_3"].tolist()
    ([3], [3])
    """
    picked = resolve(rules)
    z = standardise(values, center, sigma)
    return {rule.name: np.flatnonzero(fires(z, rule)).astype(np.int64) for rule in picked}


def hits_in_order(found: Mapping[str, IntArray]) -> list[RuleHit]:
    """Flatten :func:`evaluate`'s answer into hits ordered by index, then rule name:
    the order a streaming evaluator reports them in."""
    hits = [RuleHit(int(i), name) for name, indices in found.items() for i in indices]
    return sorted(hits)
