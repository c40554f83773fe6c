"""Run rules: a plain-Python reference written from the definitions, the vectorised
rules checked against it on random series, and each rule on a series that shows it.

The reference is deliberately naive: for every point it looks back over the window
the rule describes, with the numbers of the Western Electric Handbook (1956) and
L. S. Nelson, "The Shewhart Control Chart - Tests for Special Causes", Journal of
Quality Technology 16(4), 1984, written out literally. The benchmark
(benchmarks/analysis_rules.py) times the same reference as its plain-loop baseline.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqems.analysis.rules import (
    ALL_RULES,
    DEFAULT_ARL0,
    DEFAULT_RULES,
    NELSON,
    RULES,
    WESTERN_ELECTRIC,
    evaluate,
    hits_in_order,
    resolve,
    standardise,
)
from sqems.errors import ValidationFailed

# --------------------------------------------------------------------------- reference

Check = Callable[[Sequence[float], int], bool]


def _window(z: Sequence[float], i: int, length: int) -> Sequence[float] | None:
    return z[i - length + 1 : i + 1] if i >= length - 1 else None


def _all_in_window(length: int, test: Callable[[float], bool]) -> Check:
    def check(z: Sequence[float], i: int) -> bool:
        w = _window(z, i, length)
        return w is not None and all(test(v) for v in w)

    return check


def _same_side(length: int) -> Check:
    above, below = _all_in_window(length, lambda v: v > 0), _all_in_window(length, lambda v: v < 0)
    return lambda z, i: above(z, i) or below(z, i)


def _trend(length: int) -> Check:
    def check(z: Sequence[float], i: int) -> bool:
        w = _window(z, i, length)
        if w is None:
            return False
        steps = [b - a for a, b in itertools.pairwise(w)]
        return all(s > 0 for s in steps) or all(s < 0 for s in steps)

    return check


def _alternating(length: int) -> Check:
    def check(z: Sequence[float], i: int) -> bool:
        w = _window(z, i, length)
        if w is None:
            return False
        steps = [b - a for a, b in itertools.pairwise(w)]
        if any(s == 0 for s in steps):
            return False
        return all((a > 0) != (b > 0) for a, b in itertools.pairwise(steps))

    return check


def _m_of_n(m: int, n: int, k: float) -> Check:
    def check(z: Sequence[float], i: int) -> bool:
        recent = z[max(0, i - n + 1) : i + 1]
        if z[i] > k:
            return sum(v > k for v in recent) >= m
        if z[i] < -k:
            return sum(v < -k for v in recent) >= m
        return False

    return check


REFERENCE: dict[str, Check] = {
    "nelson_1": lambda z, i: abs(z[i]) > 3,
    "nelson_2": _same_side(9),
    "nelson_3": _trend(6),
    "nelson_4": _alternating(14),
    "nelson_5": _m_of_n(2, 3, 2.0),
    "nelson_6": _m_of_n(4, 5, 1.0),
    "nelson_7": _all_in_window(15, lambda v: abs(v) < 1),
    "nelson_8": _all_in_window(8, lambda v: abs(v) > 1),
    "we_1": lambda z, i: abs(z[i]) > 3,
    "we_2": _m_of_n(2, 3, 2.0),
    "we_3": _m_of_n(4, 5, 1.0),
    "we_4": _same_side(8),
}


def reference_hits(
    values: Sequence[float], center: float, sigma: float, names: Sequence[str] | None = None
) -> dict[str, list[int]]:
    """Every rule's hits by looking back from every point: O(n x window), no numpy."""
    z = [(x - center) / sigma for x in values]
    picked = names if names is not None else list(REFERENCE)
    return {name: [i for i in range(len(z)) if REFERENCE[name](z, i)] for name in picked}


# --------------------------------------------------------------------------- strategies

BOUNDARIES = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
values = st.one_of(
    st.sampled_from(BOUNDARIES + [-b for b in BOUNDARIES]),
    st.floats(-4.5, 4.5, allow_nan=False, allow_infinity=False),
)


@st.composite
def pattern_series(draw: st.DrawFn) -> list[float]:
    """Standardised series stitched from segments that tend to make the patterns the
    rules look for (long runs, ramps, zigzags, quiet and wild stretches), with
    values on the zone boundaries and exact ties mixed in."""
    out: list[float] = []
    for _ in range(draw(st.integers(1, 6))):
        size = draw(st.integers(1, 22))
        kind = draw(st.sampled_from(["free", "quiet", "wild", "side", "ramp", "zigzag"]))
        if kind == "free":
            out += draw(st.lists(values, min_size=size, max_size=size))
        elif kind == "quiet":
            out += draw(st.lists(st.floats(-1.0, 1.0), min_size=size, max_size=size))
        elif kind == "wild":
            mags = draw(st.lists(st.floats(0.9, 3.6), min_size=size, max_size=size))
            signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=size, max_size=size))
            out += [m * s for m, s in zip(mags, signs, strict=True)]
        elif kind == "side":
            sign = draw(st.sampled_from([-1.0, 1.0]))
            out += [
                sign * v for v in draw(st.lists(st.floats(0.0, 3.2), min_size=size, max_size=size))
            ]
        elif kind == "ramp":
            start, step = (
                draw(st.floats(-3.0, 3.0)),
                draw(st.sampled_from([-0.4, -0.1, 0.0, 0.1, 0.3])),
            )
            out += [start + step * j for j in range(size)]
        else:
            centre, amp = draw(st.floats(-2.0, 2.0)), draw(st.sampled_from([0.0, 0.2, 0.6, 1.5]))
            out += [centre + (amp if j % 2 else -amp) for j in range(size)]
    return out


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(
    z=pattern_series(),
    center=st.sampled_from([0.0, 10.0, -3.25]),
    sigma=st.sampled_from([1.0, 0.37, 4.0]),
)
def test_vectorised_rules_equal_the_reference(z: list[float], center: float, sigma: float) -> None:
    x = [center + sigma * v for v in z]
    found = evaluate(x, center, sigma, ALL_RULES)
    expected = reference_hits(x, center, sigma)
    assert {name: idx.tolist() for name, idx in found.items()} == expected


@settings(max_examples=150, deadline=None)
@given(z=pattern_series())
def test_western_electric_rules_are_nelson_rules_with_shorter_runs(z: list[float]) -> None:
    found = evaluate(z, 0.0, 1.0, ALL_RULES)
    assert np.array_equal(found["we_1"], found["nelson_1"])
    assert np.array_equal(found["we_2"], found["nelson_5"])
    assert np.array_equal(found["we_3"], found["nelson_6"])
    # nine in a row on one side contains eight in a row
    assert set(found["nelson_2"].tolist()) <= set(found["we_4"].tolist())


@settings(max_examples=100, deadline=None)
@given(z=pattern_series())
def test_rules_fire_at_the_same_points_under_sign_flip(z: list[float]) -> None:
    # every rule is symmetric about the centre line
    up = evaluate(z, 0.0, 1.0, ALL_RULES)
    down = evaluate([-v for v in z], 0.0, 1.0, ALL_RULES)
    for name in RULES:
        assert np.array_equal(up[name], down[name]), name


def test_per_point_centre_and_sigma_are_used_point_by_point() -> None:
    center = np.array([0.0, 10.0, 20.0, 30.0])
    sigma = np.array([1.0, 2.0, 0.5, 4.0])
    x = center + sigma * np.array([0.5, 3.5, -3.5, 2.9])
    assert evaluate(x, center, sigma, ["nelson_1"])["nelson_1"].tolist() == [1, 2]


# --------------------------------------------------------------------------- each rule

ON = 1.5  # inside 2 sigma, beyond 1 sigma


@pytest.mark.parametrize(
    ("rule", "z", "expected"),
    [
        ("nelson_1", [0.0, 3.0, 3.01, -3.2], [2, 3]),  # exactly 3 sigma is not beyond
        ("nelson_2", [0.1] * 9, [8]),
        ("nelson_2", [0.1] * 10, [8, 9]),  # a longer run fires at every further point
        ("nelson_2", [0.1] * 4 + [0.0] + [0.1] * 8, []),  # on the centre line breaks it
        ("nelson_3", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [5]),
        ("nelson_3", [0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1], [5, 6]),
        ("nelson_3", [0.0, 0.1, 0.1, 0.2, 0.3, 0.4, 0.5], []),  # a tie breaks the trend
        ("nelson_4", [0.5, -0.5] * 7, [13]),
        ("nelson_4", [0.5, -0.5] * 6 + [0.5], []),  # thirteen is not enough
        ("nelson_5", [2.1, 0.0, 2.2], [2]),
        ("nelson_5", [2.1, 2.2, 0.0], [1]),  # completed at the second point, not after
        ("nelson_5", [2.1, -2.2, 0.0, -2.3], [3]),  # counted per side
        ("nelson_5", [2.5, 0.0, 0.0, 2.5], []),  # four apart is not two of three
        ("nelson_6", [1.1, 1.2, 0.0, 1.3, 1.4], [4]),
        ("nelson_6", [1.1, 1.2, 1.3, 1.4], [3]),  # the start of a series counts
        ("nelson_6", [1.1, -1.2, 1.3, 0.5, 1.2], []),  # three of five
        ("nelson_7", [0.5, -0.5, 0.0] * 5, [14]),
        ("nelson_7", [0.5, -0.5, 0.0] * 4 + [0.5, 1.0, 0.5], []),  # exactly 1 sigma is not within
        ("nelson_8", [ON, -ON] * 4, [7]),  # either side, any mix
        ("nelson_8", [ON, -ON, ON, 1.0, ON, -ON, ON, -ON], []),
        ("we_4", [0.1] * 8, [7]),
        ("we_4", [-0.1] * 7 + [0.1], []),
    ],
)
def test_each_rule_fires_where_its_definition_says(
    rule: str, z: list[float], expected: list[int]
) -> None:
    assert evaluate(z, 0.0, 1.0, [rule])[rule].tolist() == expected
    assert reference_hits(z, 0.0, 1.0, [rule])[rule] == expected


def test_registry_names_every_rule_with_a_title_and_description() -> None:
    assert tuple(f"nelson_{i}" for i in range(1, 9)) == NELSON
    assert tuple(f"we_{i}" for i in range(1, 5)) == WESTERN_ELECTRIC
    assert set(RULES) == set(NELSON) | set(WESTERN_ELECTRIC) == set(REFERENCE)
    for name, rule in RULES.items():
        assert rule.name == name and rule.title and len(rule.description) > 20


def test_an_unknown_rule_name_lists_the_known_ones() -> None:
    with pytest.raises(ValidationFailed, match=r"unknown run rule 'nelson_9'.*we_4"):
        resolve(["nelson_1", "nelson_9"])


@pytest.mark.parametrize(
    ("values", "center", "sigma", "message"),
    [
        ([1.0, float("nan")], 0.0, 1.0, "non-finite value"),
        ([1.0, 2.0], 0.0, 0.0, "sigma must be positive"),
        ([1.0, 2.0], [0.0, 1.0, 2.0], 1.0, "one value per point"),
        ([[1.0, 2.0]], 0.0, 1.0, "1-D series"),
    ],
)
def test_bad_input_is_refused_with_the_reason(
    values: object, center: object, sigma: object, message: str
) -> None:
    with pytest.raises(ValidationFailed, match=message):
        standardise(values, center, sigma)  # type: ignore[arg-type]


def test_empty_and_short_series_give_no_hits() -> None:
    assert all(idx.size == 0 for idx in evaluate([], 0.0, 1.0).values())
    assert all(idx.size == 0 for idx in evaluate([0.5, 0.4], 0.0, 1.0).values())


def test_hits_in_order_sorts_by_point_then_rule() -> None:
    found = evaluate([3.5, 2.5, 2.5], 0.0, 1.0, ["we_2", "nelson_1"])
    ordered = hits_in_order(found)
    assert [(h.point, h.rule) for h in ordered] == [(0, "nelson_1"), (1, "we_2"), (2, "we_2")]


# --------------------------------------------------------------------------- ARL


def _run_lengths(rules: Sequence[str], runs: int, seed: int, length: int = 2000) -> np.ndarray:
    """Points to the first alarm of ``rules`` on in-control N(0, 1) series."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(runs):
        z = rng.standard_normal(length)
        first = None
        while first is None:
            hits = evaluate(z, 0.0, 1.0, rules)
            first = min((int(idx[0]) for idx in hits.values() if idx.size), default=None)
            if first is None:
                z = np.concatenate([z, rng.standard_normal(length)])
        found.append(first + 1)
    return np.array(found, dtype=np.float64)


def test_default_rule_set_has_an_in_control_arl_of_370() -> None:
    assert DEFAULT_RULES == ("nelson_1",)
    assert evaluate([0.1, 3.5], 0.0, 1.0).keys() == {"nelson_1"}
    lengths = _run_lengths(DEFAULT_RULES, runs=1500, seed=41)
    se = lengths.std() / math.sqrt(lengths.size)
    # the run length is geometric with p = 0.0027: ARL 370.4, sd 369.9, se ≈ 9.6
    assert abs(lengths.mean() - DEFAULT_ARL0) < 4 * se
    assert lengths.mean() - 4 * se > 250


def test_every_rule_together_false_alarms_every_few_dozen_points() -> None:
    lengths = _run_lengths(ALL_RULES, runs=800, seed=43)
    assert 55 < lengths.mean() < 78  # measured 65.7 ± 1.0 over 4000 runs


def test_western_electric_rules_match_the_published_arl() -> None:
    # Champ & Woodall, "Exact results for Shewhart control charts with supplementary
    # runs rules", Technometrics 29 (1987) 393-399: rules 1-4 together ARL 91.75,
    # rules 1 and 2 ARL 225.44
    lengths = _run_lengths(WESTERN_ELECTRIC, runs=1000, seed=47)
    se = lengths.std() / math.sqrt(lengths.size)
    assert abs(lengths.mean() - 91.75) < 4 * se
    two = _run_lengths(("we_1", "we_2"), runs=1000, seed=53)
    assert abs(two.mean() - 225.44) < 4 * two.std() / math.sqrt(two.size)
