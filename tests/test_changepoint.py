"""Change points in a machine's series of run actuals: the window of a drift."""

from __future__ import annotations

import numpy as np
import pytest

from sqems.analysis.changepoint import level_shift_window, noise_sigma, scan_p_value, segments


def test_segments_split_a_step_where_it_is() -> None:
    x = np.r_[np.zeros(30), np.full(20, 4.0), np.zeros(30)]
    assert segments(x, penalty=1.0) == [(0, 30), (30, 50), (50, 80)]


def test_noise_sigma_ignores_a_step() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 2.0, 400)
    x[200:] += 25.0
    assert noise_sigma(x) == pytest.approx(2.0, rel=0.15)


@pytest.mark.parametrize("n", [20, 135, 500])
def test_white_noise_rarely_shows_a_window(n: int) -> None:
    false = sum(
        level_shift_window(np.arange(n), np.random.default_rng(seed).normal(0, 1, n)) is not None
        for seed in range(60)
    )
    assert false <= 3


def test_short_series_show_nothing() -> None:
    assert level_shift_window(np.arange(5.0), np.r_[0, 0, 9, 9, 9.0]) is None


def test_a_ramp_and_return_is_bracketed_by_the_last_and_first_good_runs() -> None:
    # a drift like the reflow oven's: up by 12 over 45 runs, then back to target
    rng = np.random.default_rng(3)
    t = np.arange(300.0) * 3600
    x = 242.5 + rng.normal(0, 1.875, 300)
    ramp = (t >= 120 * 3600) & (t < 165 * 3600)
    x[ramp] += 12 * (t[ramp] / 3600 - 120) / 45
    w = level_shift_window(t, x)
    assert w is not None
    # the runs well into the ramp (where the level is ≥ 3 sigma up) are all inside
    assert w.start <= 135 * 3600 and w.end is not None and w.end >= 164 * 3600
    assert w.end <= 170 * 3600 and w.start >= 100 * 3600
    assert w.peak_shift > 5


def test_a_series_still_off_at_its_end_has_an_open_window() -> None:
    rng = np.random.default_rng(4)
    x = np.r_[rng.normal(0, 1, 100), rng.normal(6, 1, 20)]
    w = level_shift_window(np.arange(120.0), x)
    assert w is not None and w.end is None and w.first_off == 100.0
    assert w.last_good_before == 99.0


def test_unsorted_times_are_ordered_first() -> None:
    rng = np.random.default_rng(5)
    t = np.arange(100.0)
    x = np.where((t >= 50) & (t < 70), 8.0, 0.0) + rng.normal(0, 1, 100)
    order = rng.permutation(100)
    w = level_shift_window(t[order], x[order])
    assert w is not None and (w.first_off, w.last_off) == (50.0, 69.0)


def test_heavy_tailed_noise_rarely_shows_a_window() -> None:
    # the permutation gate holds its level whatever the noise's distribution
    false = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(20, 300))
        false += level_shift_window(np.arange(float(n)), 100.0 + rng.standard_t(3, n)) is not None
    assert false <= 3
    assert scan_p_value(np.r_[np.zeros(40), np.full(10, 8.0), np.zeros(40)]) < 0.01
