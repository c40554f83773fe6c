"""The fit checks of a step model (posterior predictive dispersion, PSIS-LOO), on runs
drawn from a known truth, so that what the checks must say is known: a model that is
the truth passes, in repeated null samples about as often as its level promises; a
binomial model of runs that vary beyond the binomial is refused; a run the model cannot
explain shows up in Pareto k."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sqems.twin import fit_check
from sqems.twin.fit_check import (
    PARETO_K_HIGH,
    PREDICTIVE_P_MIN,
    FitCheck,
    check_draws,
    check_fit,
)
from sqems.twin.quality import Diagnostics

DRAWS = 400


def _posterior(rng: np.random.Generator, logit: np.ndarray, sd: float = 0.05) -> np.ndarray:
    """Draws x runs of defect probabilities around the truth, as a posterior that has
    learnt it well would give."""
    shift = rng.normal(0.0, sd, size=(DRAWS, 1))
    return 1.0 / (1.0 + np.exp(-(logit[None, :] + shift)))


def _runs(rng: np.random.Generator, runs: int, run_sd: float) -> tuple[np.ndarray, np.ndarray]:
    logit = rng.normal(-3.0, 0.3, size=runs)
    trials = rng.integers(20, 80, size=runs)
    wobble = rng.normal(0.0, run_sd, size=runs) if run_sd else 0.0
    defects = rng.binomial(trials, 1.0 / (1.0 + np.exp(-(logit + wobble))))
    return logit, trials, defects  # type: ignore[return-value]


def _check(p: np.ndarray, trials: np.ndarray, defects: np.ndarray, rho: float) -> FitCheck:
    return check_fit(
        defects, trials, lambda block: p[:, block], np.full(DRAWS, rho), parameters=5, seed=3
    )


def test_the_true_binomial_model_passes_about_as_often_as_its_level_says() -> None:
    rng = np.random.default_rng(11)
    refused = 0
    for _ in range(40):
        logit, trials, defects = _runs(rng, 150, 0.0)
        found = _check(_posterior(rng, logit), trials, defects, 0.0)
        assert 0.5 < found.dispersion < 1.6
        refused += bool(found.problems)
    # a 1 % level over 40 null samples: more than 3 refusals is not chance
    assert refused <= 3, refused


def test_a_binomial_model_of_runs_that_vary_more_is_refused() -> None:
    rng = np.random.default_rng(12)
    logit, trials, defects = _runs(rng, 150, 1.0)
    found = _check(_posterior(rng, logit), trials, defects, 0.0)
    assert found.predictive_p < PREDICTIVE_P_MIN
    assert found.dispersion > 2.0
    assert any("posterior predictive" in p for p in found.problems)


def test_a_beta_binomial_model_with_the_runs_spread_passes() -> None:
    rng = np.random.default_rng(13)
    logit, trials, defects = _runs(rng, 150, 1.0)
    # a logit sd of 1 at ~5 % is an intra-run correlation of about 0.04
    found = _check(_posterior(rng, logit), trials, defects, 0.04)
    assert found.predictive_p >= PREDICTIVE_P_MIN, found
    assert not any("posterior predictive" in p for p in found.problems)


def test_one_run_the_model_cannot_explain_has_a_high_pareto_k() -> None:
    rng = np.random.default_rng(14)
    logit, trials, defects = _runs(rng, 100, 0.0)
    defects = defects.copy()
    defects[7] = trials[7] // 2  # half the run defective where ~5 % is expected
    # the posterior leans towards that run through a parameter only it informs, as a
    # lot seen in one run would
    p = _posterior(rng, logit)
    lean = rng.normal(0.0, 1.5, size=DRAWS)
    p[:, 7] = 1.0 / (1.0 + np.exp(-(logit[7] + 2.0 + lean)))
    found = _check(p, trials, defects, 0.0)
    assert found.pareto_k_max > PARETO_K_HIGH and found.pareto_k_high >= 1
    assert found.p_loo > 0


def test_checked_draws_span_every_chain() -> None:
    picked = check_draws(8000)
    assert len(picked) == 1000 and picked[0] == 0 and picked[-1] == 7999
    assert list(check_draws(40)) == list(range(40))


def test_the_check_is_kept_with_the_diagnostics() -> None:
    check = FitCheck(
        runs=46, dispersion=8.7, predictive_p=0.0, pareto_k_max=1.29, pareto_k_high=6,
        p_loo=32.7, parameters=10,
    )  # fmt: skip
    d = Diagnostics(
        chains=4, draws=1000, max_r_hat=1.002, r_hat_at="alpha", min_ess_bulk=3000.0,
        ess_bulk_at="tau", min_ess_tail=2500.0, ess_tail_at="tau", divergences=0, check=check,
    )  # fmt: skip
    assert not d.ok and len(d.problems) == 2
    assert "8.70 times as much" in d.problems[0]
    assert "32.7, exceeds the model's 10" in d.problems[1]
    assert Diagnostics.from_dict(d.to_dict()) == d
    # high k with fewer effective parameters than the model has: reported, not refused
    flexible = FitCheck(46, 0.2, 0.4, 1.05, 12, 9.7, 60)
    assert flexible.problems == ()
    assert math.isfinite(flexible.p_loo)


def test_blocks_of_runs_give_the_answer_of_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(15)
    logit, trials, defects = _runs(rng, 5000, 0.5)
    p = _posterior(rng, logit)
    blocked = _check(p, trials, defects, 0.0)
    monkeypatch.setattr(fit_check, "BLOCK", 10_000)
    whole = _check(p, trials, defects, 0.0)
    assert blocked.runs == whole.runs == 5000
    assert blocked.dispersion == pytest.approx(whole.dispersion)
    assert blocked.p_loo == pytest.approx(whole.p_loo)
    assert (blocked.pareto_k_max, blocked.pareto_k_high) == pytest.approx(
        (whole.pareto_k_max, whole.pareto_k_high)
    )
    # the replicates are drawn block by block, so only the predictive p-value's
    # Monte Carlo noise differs
    assert blocked.predictive_p == pytest.approx(whole.predictive_p, abs=0.1)


def test_runs_that_made_nothing_are_left_out() -> None:
    rng = np.random.default_rng(16)
    logit, trials, defects = _runs(rng, 100, 0.0)
    trials, defects = trials.copy(), defects.copy()
    trials[[3, 50]] = 0
    defects[[3, 50]] = 0
    found = _check(_posterior(rng, logit), trials, defects, 0.0)
    assert found.runs == 98
    assert math.isfinite(found.dispersion) and math.isfinite(found.p_loo)
    assert found.predictive_p > PREDICTIVE_P_MIN
