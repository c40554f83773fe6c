"""The streaming evaluators give the same answers as the vectorised charts and rules,
one reading at a time, in constant memory."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_spc_rules import pattern_series

from sqems.analysis.rules import ALL_RULES, RULES, RuleHit, evaluate, hits_in_order
from sqems.analysis.spc import ChartType, c_chart, cusum, ewma, individuals, phase_one
from sqems.analysis.streaming import (
    CUSUM_LOWER,
    CUSUM_UPPER,
    EWMA_RULE,
    CusumMonitor,
    EwmaMonitor,
    Monitor,
    RuleMonitor,
    tracker,
)
from sqems.errors import ValidationFailed


def stream(monitor: Monitor, values: np.ndarray | list[float]) -> list[RuleHit]:
    hits: list[RuleHit] = []
    for x in values:
        hits += monitor.push(float(x))
    return sorted(hits)


def drifting_series(seed: int, size: int) -> np.ndarray:
    """In-control noise with a few shifts, drifts and oscillations, so every rule has
    something to find."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size)
    starts = rng.integers(0, size - 40, size // 200)
    for s in starts:
        kind = rng.integers(4)
        if kind == 0:
            x[s : s + 30] += 1.3
        elif kind == 1:
            x[s : s + 20] = np.linspace(-2, 2, 20) + rng.normal(0, 0.05, 20)
        elif kind == 2:
            x[s : s + 20] = np.tile([0.8, -0.8], 10) + rng.normal(0, 0.1, 20)
        else:
            x[s : s + 20] *= 0.2
    return x


@settings(max_examples=200, deadline=None)
@given(
    z=pattern_series(),
    center=st.sampled_from([0.0, 74.001, -12.5]),
    sigma=st.sampled_from([1.0, 0.0098, 3.3]),
)
def test_streaming_rules_equal_the_vectorised_rules(
    z: list[float], center: float, sigma: float
) -> None:
    x = [center + sigma * v for v in z]
    monitor = RuleMonitor(center, sigma, ALL_RULES)
    assert stream(monitor, x) == hits_in_order(evaluate(x, center, sigma, ALL_RULES))


def test_streaming_rules_equal_the_vectorised_rules_on_a_long_series() -> None:
    x = drifting_series(seed=11, size=20_000)
    found = evaluate(x, 0.1, 1.05, ALL_RULES)
    assert all(found[name].size for name in RULES)  # every rule has hits to agree on
    assert stream(RuleMonitor(0.1, 1.05, ALL_RULES), x) == hits_in_order(found)


@settings(max_examples=100, deadline=None)
@given(
    z=pattern_series(),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    singles=st.lists(st.booleans(), min_size=1, max_size=8),
    rules=st.sampled_from(
        [None, list(ALL_RULES), ["nelson_1", "nelson_5"], ["nelson_7", "we_4"], ["we_1"]]
    ),
)
def test_batches_give_the_hits_of_one_reading_at_a_time(
    z: list[float], cuts: list[int], singles: list[bool], rules: list[str] | None
) -> None:
    """push_many over any split of the stream, mixed with single pushes, reports what
    push reports reading by reading."""
    bounds = sorted({0, len(z), *(c for c in cuts if c < len(z))})
    monitor = RuleMonitor(0.0, 1.0, rules)
    hits: list[RuleHit] = []
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        if singles[k % len(singles)]:
            for x in z[a:b]:
                hits += monitor.push(x)
        else:
            hits += monitor.push_many(z[a:b])
    assert hits == stream(RuleMonitor(0.0, 1.0, rules), z)
    assert monitor.points == len(z)


def test_a_batch_with_a_non_finite_reading_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="non-finite"):
        RuleMonitor(0.0, 1.0).push_many([0.1, float("nan")])


def test_individuals_monitor_runs_on_phase_one_limits() -> None:
    history, fresh = drifting_series(seed=3, size=300), drifting_series(seed=4, size=2_000)
    limits = phase_one(ChartType.I_MR, history).limits
    monitor = RuleMonitor.for_individuals(limits, ["nelson_1", "nelson_2", "we_2"])
    chart = individuals(fresh, limits=limits)
    expected = hits_in_order(chart.signals(["nelson_1", "nelson_2", "we_2"]))
    assert stream(monitor, fresh) == expected


def test_individuals_monitor_refuses_limits_of_another_chart() -> None:
    limits = c_chart([3, 5, 4, 6]).limits
    assert limits is not None
    with pytest.raises(ValidationFailed, match="need I-MR limits"):
        RuleMonitor.for_individuals(limits)


def test_hits_of_one_reading_come_in_the_order_the_rules_were_given() -> None:
    monitor = RuleMonitor(0.0, 1.0, ["we_2", "nelson_1"])
    monitor.push(2.5)
    assert monitor.push(3.5) == [RuleHit(1, "we_2"), RuleHit(1, "nelson_1")]


def test_rule_trackers_keep_fixed_size_state() -> None:
    m_of_n = tracker(RULES["nelson_6"])
    for x in drifting_series(seed=5, size=5_000):
        m_of_n.push(float(x))
    assert len(m_of_n.window) == 5  # type: ignore[attr-defined]


def test_a_non_finite_reading_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="non-finite reading"):
        RuleMonitor(0.0, 1.0).push(float("nan"))


@pytest.mark.parametrize("exact", [True, False])
def test_streaming_ewma_equals_the_ewma_chart(exact: bool) -> None:
    x = drifting_series(seed=8, size=5_000)
    chart = ewma(x, target=0.0, sigma=1.0, lam=0.2, nsigmas=2.7, exact_limits=exact)
    monitor = EwmaMonitor(target=0.0, sigma=1.0, lam=0.2, nsigmas=2.7, exact_limits=exact)
    values, hits = [], []
    for x_i in x:
        hits += monitor.push(float(x_i))
        values.append(monitor.value)
        lcl, ucl = monitor.limits()
        assert ucl == pytest.approx(chart.ucl[monitor.points - 1], rel=1e-12)
        assert lcl == pytest.approx(chart.lcl[monitor.points - 1], rel=1e-12)
    assert values == pytest.approx(chart.statistic.tolist(), rel=1e-12, abs=1e-12)
    beyond = chart.beyond_limits()
    assert beyond.size > 0
    assert hits == [RuleHit(int(i), EWMA_RULE) for i in beyond]


def test_streaming_cusum_equals_the_cusum_chart() -> None:
    x = drifting_series(seed=9, size=5_000)
    chart = cusum(x, target=0.0, sigma=1.0, k=0.5, h=4.0, head_start=2.0)
    monitor = CusumMonitor(target=0.0, sigma=1.0, k=0.5, h=4.0, head_start=2.0)
    upper, lower, hits = [], [], []
    for x_i in x:
        hits += monitor.push(float(x_i))
        upper.append(monitor.upper)
        lower.append(monitor.lower)
    assert upper == pytest.approx(chart.upper.tolist(), abs=1e-9)
    assert lower == pytest.approx(chart.lower.tolist(), abs=1e-9)
    up, down = chart.signals()
    assert up.size and down.size
    expected = [RuleHit(int(i), CUSUM_UPPER) for i in up]
    expected += [RuleHit(int(i), CUSUM_LOWER) for i in down]
    assert sorted(hits) == sorted(expected)


def test_cusum_reset_restarts_from_the_head_start() -> None:
    monitor = CusumMonitor(target=10.0, sigma=1.0, k=0.5, h=5.0, head_start=1.0)
    for _ in range(6):
        hits = monitor.push(12.0)
    assert hits == [RuleHit(5, CUSUM_UPPER)]
    monitor.reset()
    assert (monitor.upper, monitor.lower) == (1.0, 1.0)
    assert monitor.push(10.0) == []
