"""The shared statistics of ``sqems lake compare``, from group counts, against
independent computations on the raw values."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from sqems.lake.stats import failure_rates, holm, welch_anova


def _from_values(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.array([g.size for g in groups])
    return n, np.array([g.mean() for g in groups]), np.array([g.var(ddof=1) for g in groups])


def test_welch_anova_from_group_statistics_matches_scipy_on_the_values() -> None:
    rng = np.random.default_rng(3)
    groups = [rng.normal(10.0, 1.0, 12), rng.normal(10.6, 2.0, 30), rng.normal(9.8, 0.5, 8)]
    found = welch_anova("P", "shift", ["a", "b", "c"], *_from_values(groups), "mm")
    assert found is not None
    expected = stats.f_oneway(*groups, equal_var=False)
    assert found.statistic == pytest.approx(expected.statistic, rel=1e-10)
    assert found.p_value == pytest.approx(expected.pvalue, rel=1e-8)
    # the largest gap: highest over lowest mean, with a Welch interval at the
    # Bonferroni level of 3 pairs
    means = [g.mean() for g in groups]
    hi, lo = int(np.argmax(means)), int(np.argmin(means))
    assert (found.gap.high, found.gap.low) == ("abc"[hi], "abc"[lo])
    assert found.gap.confidence == pytest.approx(1 - 0.05 / 3)
    welch = stats.ttest_ind(groups[hi], groups[lo], equal_var=False)
    low, high = welch.confidence_interval(found.gap.confidence)
    assert (found.gap.lower, found.gap.upper) == pytest.approx((low, high), rel=1e-9)


def test_welch_anova_leaves_out_groups_without_spread_and_says_so() -> None:
    found = welch_anova("P", "line", ["a", "b", "c"], np.array([5, 1, 6]),
                        np.array([1.0, 2.0, 1.2]), np.array([0.1, 0.0, 0.2]), "mm")  # fmt: skip
    assert found is not None and [lv.name for lv in found.levels] == ["a", "c"]
    assert "left out" in found.notes[0] and "b" in found.notes[0]
    only_one = welch_anova("P", "line", ["a", "b"], np.array([5, 1]), np.array([1.0, 2.0]),
                           np.array([0.1, 0.0]), "mm")  # fmt: skip
    assert only_one is None


def test_failure_rates_use_chi_square_fisher_or_a_permutation_by_expected_counts() -> None:
    big = failure_rates("S", "shift", ["early", "late", "night"], np.array([20, 22, 45]),
                        np.array([300, 310, 305]))  # fmt: skip
    assert big is not None and big.test == "chi-square"
    chi2 = stats.chi2_contingency(np.array([[20, 280], [22, 288], [45, 260]]), correction=False)
    assert big.p_value == pytest.approx(chi2.pvalue, rel=1e-12)
    assert big.gap.high == "night" and big.gap.lower > 0
    two = failure_rates("S", "line", ["a", "b"], np.array([1, 6]), np.array([20, 20]))
    assert two is not None and two.test == "Fisher exact"
    assert two.p_value == pytest.approx(stats.fisher_exact([[1, 19], [6, 14]]).pvalue)
    three = failure_rates("S", "machine", ["m1", "m2", "m3"], np.array([1, 2, 6]),
                          np.array([15, 15, 15]))  # fmt: skip
    again = failure_rates("S", "machine", ["m1", "m2", "m3"], np.array([1, 2, 6]),
                          np.array([15, 15, 15]))  # fmt: skip
    assert three is not None and three.test == "chi-square (permutation)"
    assert again is not None and three.p_value == again.p_value  # fixed seed
    for level in three.levels:
        assert level.lower <= level.estimate <= level.upper
    assert failure_rates("S", "line", ["a", "b"], np.array([0, 0]), np.array([9, 9])) is None


def test_holm_adjusts_in_step_down_order_and_says_no_difference_plainly() -> None:
    rng = np.random.default_rng(5)
    groups = [rng.normal(0, 1, 10) for _ in range(3)]
    base = welch_anova("P", "shift", ["a", "b", "c"], *_from_values(groups), "mm")
    assert base is not None
    findings = [replace(base, p_value=p) for p in (0.01, 0.04, 0.03, 0.2)]
    adjusted = holm(findings)
    # Holm: sorted 0.01, 0.03, 0.04, 0.2 -> 0.04, 0.09, 0.09 (monotone), 0.2
    assert [f.p_adjusted for f in adjusted] == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert [f.significant for f in adjusted] == [True, False, False, False]
    assert "no significant difference between shifts" in adjusted[3].answer
    assert "differs between shifts" in adjusted[0].answer
