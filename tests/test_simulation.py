"""The line simulation against queueing theory and its own books.

Every figure the tests expect is derived independently of the model: M/M/1 formulas
(utilisation rho = lambda/mu, mean time in system 1/(mu - lambda), Little's law), the
bottleneck rate of a serial line, the availability MTBF/(MTBF + MTTR) of a machine with
operation-dependent failures, binomial expectations of scrap, escapes and rework, and
the exact throughput of a two-station exponential line with a finite buffer, from its
Markov chain solved here. Tolerances are a few standard errors of the estimate (or a
stated percentage); every seed is fixed, so a run is repeatable.
"""

from __future__ import annotations

import doctest
import math
from dataclasses import replace

import numpy as np
import pytest

import sqems.simulation.line as line_module
from sqems.errors import ValidationFailed
from sqems.simulation.line import (
    ConstantDefects,
    Exponential,
    Interval,
    LineSpec,
    Lognormal,
    NoDefects,
    Result,
    StationSpec,
    bare_event_loop,
    replicate,
    replication_seed,
    simulate,
    summarise,
)


def station(name: str, mean_s: float, sigma: float = 0.25, **kw: object) -> StationSpec:
    """A one-machine station with lognormal cycle time of mean ``mean_s``."""
    machines = kw.pop("machines", (f"{name}-1",))
    return StationSpec(name, machines, Lognormal.with_mean(mean_s, sigma), **kw)  # type: ignore[arg-type]


def balanced(result: Result) -> bool:
    """Every unit that entered the window is completed, scrapped or still in the line."""
    return result.started + result.wip_start == result.completed + result.scrapped + result.wip_end


def within(value: float, expected: float, rel: float) -> bool:
    return abs(value - expected) <= rel * abs(expected)


# --------------------------------------------------------------------------- M/M/1


def test_mm1_matches_queueing_theory() -> None:
    lam, mu = 0.8, 1.0
    line = LineSpec(
        (StationSpec("server", ("m",), Exponential(1.0 / mu)),), arrival=Exponential(1.0 / lam)
    )
    r = simulate(line, NoDefects(), horizon_s=200_000.0, seed=11, warmup_s=2_000.0)
    assert abs(r.utilisation["server"] - lam / mu) < 0.01
    assert within(r.throughput_per_h / 3600.0, lam, 0.01)
    assert within(r.mean_time_in_system_s, 1.0 / (mu - lam), 0.07)
    assert within(r.wip_mean, lam / (mu - lam), 0.08)  # L = rho / (1 - rho)
    # Little's law holds for the estimates themselves, up to the units at the edges
    assert within(r.wip_mean, r.throughput_per_h / 3600.0 * r.mean_time_in_system_s, 0.01)
    assert r.blocked["server"] == 0.0 and r.down["server"] == 0.0
    assert balanced(r)
    assert r.scrapped == r.escaped == r.reworked == 0 and r.yield_ == r.fpy == 1.0


# --------------------------------------------------------------------------- serial lines

MEANS = {"load": 1.0, "press": 1.2, "weld": 1.5, "pack": 0.9}


def tandem(weld_machines: int = 1, sigma: float = 0.25) -> LineSpec:
    return LineSpec(
        tuple(
            station(
                name,
                mean,
                sigma,
                buffer=20,
                machines=tuple(
                    f"{name}-{k}" for k in range(weld_machines if name == "weld" else 1)
                ),
            )
            for name, mean in MEANS.items()
        )
    )


def test_throughput_of_a_serial_line_is_the_bottleneck_rate() -> None:
    r = simulate(tandem(), NoDefects(), horizon_s=40_000.0, seed=3, warmup_s=500.0)
    assert within(r.throughput_per_h, 3600.0 / MEANS["weld"], 0.02)
    assert r.utilisation["weld"] > 0.98
    assert r.utilisation["pack"] < 0.65  # starved behind the bottleneck
    assert r.blocked["press"] > 0.1  # upstream of the bottleneck, its buffer is full
    assert balanced(r)


def test_deterministic_line_runs_exactly_at_the_bottleneck_rate() -> None:
    r = simulate(tandem(sigma=0.0), NoDefects(), horizon_s=30_000.0, seed=3, warmup_s=500.0)
    assert within(r.throughput_per_h, 3600.0 / MEANS["weld"], 0.001)


def test_a_second_machine_moves_the_bottleneck() -> None:
    r = simulate(tandem(weld_machines=2), NoDefects(), horizon_s=40_000.0, seed=3, warmup_s=500.0)
    # weld now makes 2/1.5 a second; press (1/1.2) limits the line
    assert within(r.throughput_per_h, 3600.0 / MEANS["press"], 0.02)
    assert r.utilisation["press"] > 0.98
    assert within(r.utilisation["weld"], MEANS["weld"] / MEANS["press"] / 2, 0.03)


def test_breakdowns_scale_throughput_by_availability() -> None:
    mtbf, mttr, cycle = 600.0, 60.0, 10.0
    line = LineSpec((station("mill", cycle, 0.2, mtbf_s=mtbf, mttr_s=mttr),))
    r = simulate(line, NoDefects(), horizon_s=2_000_000.0, seed=5)
    availability = mtbf / (mtbf + mttr)
    assert line.stations[0].availability == availability
    assert within(r.throughput_per_h, 3600.0 * availability / cycle, 0.02)
    assert within(r.utilisation["mill"], availability, 0.01)
    assert within(r.down["mill"], 1.0 - availability, 0.05)
    assert abs(r.utilisation["mill"] + r.down["mill"] - 1.0) < 1e-9  # never starved
    without = simulate(replace(line, stations=(station("mill", cycle, 0.2),)), NoDefects(), 2e5, 5)
    assert within(without.throughput_per_h, 3600.0 / cycle, 0.01)


def two_station_throughput(buffer: int, mu1: float = 1.0, mu2: float = 1.0) -> float:
    """Exact throughput of exponential station 1 (never starved) feeding exponential
    station 2 through ``buffer`` places, blocking after service: the stationary law of
    the chain on n = units at station 2 (0 .. buffer + 1), plus the state where station
    1 holds a finished unit because station 2 is full."""
    full = buffer + 1
    states = full + 2  # n = 0 .. full, then "full and station 1 blocked"
    blocked = full + 1
    q = np.zeros((states, states))
    for n in range(full + 1):
        q[n, n + 1 if n < full else blocked] += mu1
        if n > 0:
            q[n, n - 1] += mu2
    q[blocked, full] += mu2  # station 2 finishes, the held unit moves in
    np.fill_diagonal(q, -q.sum(axis=1))
    a = np.vstack([q.T, np.ones(states)])
    b = np.zeros(states + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    return float(mu2 * (1.0 - pi[0]))


def test_markov_chain_reference_is_right() -> None:
    # equal rates: the known closed form (b + 2) / (b + 3)
    for b in (0, 1, 5):
        assert math.isclose(two_station_throughput(b), (b + 2) / (b + 3), rel_tol=1e-9)


@pytest.mark.parametrize("buffer", [0, 1, 4])
def test_finite_buffers_with_blocking_match_the_markov_chain(buffer: int) -> None:
    def line(places: int | None) -> LineSpec:
        return LineSpec(
            (
                StationSpec("a", ("a1",), Exponential(1.0)),
                StationSpec("b", ("b1",), Exponential(1.0), buffer=places),
            )
        )

    small = simulate(line(buffer), NoDefects(), horizon_s=60_000.0, seed=8, warmup_s=200.0)
    large = simulate(line(None), NoDefects(), horizon_s=60_000.0, seed=8, warmup_s=200.0)
    assert within(small.throughput_per_h / 3600.0, two_station_throughput(buffer), 0.02)
    assert small.throughput_per_h < 0.95 * large.throughput_per_h
    assert small.blocked["a"] > 0.05 and large.blocked["a"] == 0.0
    assert small.wip_end <= buffer + 2 and balanced(small) and balanced(large)


def test_time_integrals_are_cut_exactly_at_the_window() -> None:
    # a (1 s) feeds b (3 s) with no buffer between: from t = 1 on, a works [3k+1, 3k+2]
    # and is blocked [3k+2, 3k+4] holding a unit, b works all the time
    line = LineSpec(
        (station("a", 1.0, sigma=0.0), station("b", 3.0, sigma=0.0, buffer=0)),
    )
    r = simulate(line, NoDefects(), horizon_s=31.25, seed=1, warmup_s=4.5)
    span = 31.25 - 4.5
    assert r.utilisation["a"] == pytest.approx((0.5 + 8 + 0.25) / span, abs=1e-12)
    assert r.blocked["a"] == pytest.approx(9 * 2 / span, abs=1e-12)
    assert r.utilisation["b"] == pytest.approx(1.0, abs=1e-12)
    assert r.wip_mean == pytest.approx(2.0, abs=1e-12)  # one unit on each machine
    assert (r.started, r.completed, r.wip_start, r.wip_end) == (9, 9, 2, 2)
    assert r.mean_time_in_system_s == pytest.approx(6.0, abs=1e-12)  # 1 + 2 blocked + 3


def test_blocked_arrivals_wait_at_the_entrance() -> None:
    line = LineSpec(
        (station("a", 1.0, buffer=2), station("b", 1.0, buffer=2)), arrival=Exponential(0.9)
    )
    r = simulate(line, NoDefects(), horizon_s=20_000.0, seed=2, warmup_s=100.0)
    assert r.throughput_per_h < 3600.0 / 1.0 and r.utilisation["a"] > 0.85
    assert balanced(r) and r.wip_end <= 2 + 1 + 2 + 1 + 1


# --------------------------------------------------------------------------- quality


def quality_line(detect: float, rework: float, buffer: int | None = 10) -> LineSpec:
    return LineSpec(
        (
            station("make", 1.0, 0.1, buffer=buffer),
            station("finish", 0.9, 0.1, buffer=buffer),
            station("check", 0.8, 0.1, buffer=buffer, inspection=detect, rework_p=rework),
        ),
        scrap_cost=40.0,
        rework_cost=5.0,
        unit_cost=10.0,
    )


def close_to(observed: float, expected: float, n: float, sds: float = 4.0) -> bool:
    """``observed`` fraction within ``sds`` binomial standard errors of ``expected``."""
    return abs(observed - expected) <= sds * math.sqrt(expected * (1 - expected) / n)


def test_scrap_and_escapes_follow_defect_and_detection_rates() -> None:
    p, d = 0.05, 0.9
    r = simulate(
        quality_line(d, 0.0), ConstantDefects({"make": p}), 60_000.0, seed=4, warmup_s=300.0
    )
    ended = r.completed + r.scrapped
    assert close_to(r.scrapped / ended, p * d, ended)
    assert close_to(r.escaped / r.completed, p * (1 - d) / (1 - p * d), r.completed)
    assert r.ppm == pytest.approx(r.escaped / r.completed * 1e6)
    # escapes are not good: yield counts only good units, so it is 1 - p
    assert close_to(r.yield_, 1 - p, ended)
    assert r.fpy == r.yield_ and r.good_out == r.first_pass == r.completed - r.escaped
    assert close_to((r.completed / ended), 1 - p * d, ended)  # what the line reports
    assert r.reworked == 0 and r.defects == {"make": r.defects["make"], "finish": 0, "check": 0}
    assert r.scrap_cost == r.scrapped * 40.0
    assert r.cost_per_good == pytest.approx((r.started * 10.0 + r.scrap_cost) / r.good_out)
    assert balanced(r) and r.wip_start > 0


def test_reworked_units_go_round_again_and_the_books_balance() -> None:
    p, d, w = 0.05, 0.9, 0.6
    r = simulate(quality_line(d, w), ConstantDefects({"make": p}), 60_000.0, seed=4, warmup_s=300.0)
    ended = r.completed + r.scrapped
    again = p * d * w  # chance a pass ends in rework
    assert close_to(r.scrapped / ended, p * d * (1 - w) / (1 - again), ended)
    assert within(r.reworked / ended, again / (1 - again), 0.08)
    assert close_to(r.yield_, (1 - p) / (1 - again), ended)
    assert close_to(r.fpy, 1 - p, ended)
    assert r.first_pass < r.good_out
    # every defect made is scrapped, reworked, escaped or still in the line
    in_line = r.defects["make"] - r.scrapped - r.reworked - r.escaped
    assert -r.wip_start <= in_line <= r.wip_end
    assert r.scrap_cost == r.scrapped * 40.0 + r.reworked * 5.0
    assert balanced(r)


def test_rework_cannot_deadlock_a_line_of_tiny_buffers() -> None:
    defects = ConstantDefects({"make": 0.3, "finish": 0.3, "check": 0.2})
    r = simulate(quality_line(1.0, 0.9, buffer=0), defects, 20_000.0, seed=9)
    assert r.completed > 5_000 and r.reworked > 2_000
    assert r.escaped == 0  # detection is certain
    assert balanced(r)


def test_rework_to_its_own_station_and_parallel_machines() -> None:
    line = LineSpec(
        (
            station("a", 1.0, buffer=3),
            StationSpec(
                "b",
                ("b1", "b2"),
                {"b1": Lognormal(1.6, 0.2), "b2": Lognormal(2.4, 0.2)},
                buffer=3,
                inspection=0.8,
                rework_p=0.5,
            ),
        )
    )
    model = Recording({"b": 0.2})
    r = simulate(line, model, 20_000.0, seed=1)
    assert r.reworked > 500 and r.scrapped > 500 and balanced(r)
    # a reworked unit goes back to b, where its defect arose, not to the start
    assert 0 <= r.started - len(model.seen["a"]) <= 1  # one unit may be on a's machine
    assert len(model.seen["b"]) == r.completed + r.scrapped + r.reworked
    assert set(model.machines["b"]) == {"b1", "b2"}
    assert line.stations[1].rate_per_s == pytest.approx(math.exp(-0.02) * (1 / 1.6 + 1 / 2.4))


# --------------------------------------------------------------------------- common random numbers


class Recording:
    """A constant defect rate that records the first draw of every call's generator."""

    def __init__(self, rates: dict[str, float]) -> None:
        self.rates = rates
        self.seen: dict[str, list[float]] = {}
        self.machines: dict[str, set[str]] = {}

    def probability(self, station: str, machine: str, rng: np.random.Generator) -> float:
        self.seen.setdefault(station, []).append(float(rng.random()))
        self.machines.setdefault(station, set()).add(machine)
        return self.rates.get(station, 0.0)


def test_same_seed_same_result() -> None:
    line = quality_line(0.9, 0.5)
    a = simulate(line, ConstantDefects({"make": 0.05}), 5_000.0, seed=21, warmup_s=50.0)
    b = simulate(line, ConstantDefects({"make": 0.05}), 5_000.0, seed=21, warmup_s=50.0)
    c = simulate(line, ConstantDefects({"make": 0.05}), 5_000.0, seed=22, warmup_s=50.0)
    assert a == b
    assert a != c


def test_changing_one_defect_rate_leaves_the_flow_alone() -> None:
    line = LineSpec(tuple(station(n, m, buffer=4) for n, m in MEANS.items()))
    low = simulate(line, ConstantDefects({"press": 0.10, "pack": 0.2}), 10_000.0, seed=6)
    high = simulate(line, ConstantDefects({"press": 0.11, "pack": 0.2}), 10_000.0, seed=6)
    assert low.throughput_per_h == high.throughput_per_h
    assert low.utilisation == high.utilisation and low.wip_mean == high.wip_mean
    # Unit by unit: press's draws are the same, so the units press spoils in the low run
    # it spoils in the high run too, plus `more`; pack's draws are the same, so it
    # spoils the same units, less those press already spoiled. So both differences lie
    # in [0, more] (two runs with independent draws break these bounds 8 times in 10).
    more = high.defects["press"] - low.defects["press"]
    assert 0 < more < 120
    assert 0 <= low.defects["pack"] - high.defects["pack"] <= more
    assert 0 <= high.escaped - low.escaped <= more


def test_other_stations_keep_their_random_numbers() -> None:
    base = LineSpec(tuple(station(n, m, buffer=4) for n, m in MEANS.items()))
    slower = base.with_station(station("pack", 2.0, buffer=4))
    seen = []
    for line in (base, slower):
        model = Recording({})
        simulate(line, model, 4_000.0, seed=13)
        seen.append(model.seen)
    # a slower pack (now the bottleneck) changes how many units each station makes,
    # not the order of the draws any station (pack included) gets
    for name in MEANS:
        n = min(len(seen[0][name]), len(seen[1][name]))
        assert n > 1_500 and seen[0][name][:n] == seen[1][name][:n]
    assert len(seen[1]["pack"]) < len(seen[0]["pack"])
    assert seen[0]["pack"][:50] != seen[0]["press"][:50]


def test_replications_are_paired_by_seed_and_summarised() -> None:
    line = quality_line(0.9, 0.0)
    calls: list[tuple[int, int]] = []
    picked: list[int] = []

    def defects_for(r: int) -> ConstantDefects:
        picked.append(r)
        return ConstantDefects({"make": 0.02 + 0.01 * r})

    results = replicate(
        line,
        defects_for,
        3_000.0,
        4,
        seed=7,
        warmup_s=100.0,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert picked == [0, 1, 2, 3] and calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [r.seed for r in results] == [replication_seed(7, r) for r in range(4)]
    assert len({r.seed for r in results}) == 4
    again = replicate(line, defects_for, 3_000.0, 4, seed=7, warmup_s=100.0)
    assert again == results
    summary = summarise(results)
    tp = summary["throughput_per_h"]
    values = [r.throughput_per_h for r in results]
    assert tp.mean == pytest.approx(np.mean(values))
    assert min(values) <= tp.low <= tp.mean <= tp.high <= max(values)
    assert set(summary) >= {"yield_", "fpy", "ppm", "wip_mean", "scrap_cost", "utilisation.make"}
    assert summarise([results[0]])["scrapped"] == Interval(*(float(results[0].scrapped),) * 3)


def test_summarise_leaves_out_undefined_ratios() -> None:
    line = LineSpec((station("slow", 1_000.0, sigma=0.0),))
    # nothing completes in the first 500 s: ppm and yield are undefined (NaN)
    r = simulate(line, NoDefects(), 500.0, seed=1)
    assert r.completed == 0 and math.isnan(r.ppm) and math.isnan(r.yield_)
    assert math.isnan(summarise([r])["ppm"].mean)
    ok = simulate(line, NoDefects(), 5_000.0, seed=1)
    assert summarise([r, ok])["ppm"] == Interval(0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- input checks


def one(**kw: object) -> StationSpec:
    fields: dict[str, object] = {"name": "s", "machines": ("m",), "cycle": Lognormal(1.0)}
    fields.update(kw)
    return StationSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Lognormal(-1.0, 0.1), "median_s must be a positive"),
        (lambda: Lognormal(1.0, -0.1), "sigma cannot be negative"),
        (lambda: Exponential(0.0), "mean_s must be a positive"),
        (lambda: one(inspection=1.5), "inspection (detection chance) must be a probability"),
        (lambda: one(inspection=0.9, rework_p=-0.1), "rework_p must be a probability"),
        (lambda: one(machines=()), "has no machines"),
        (lambda: one(machines="m1"), "machines must be a tuple"),
        (lambda: one(machines=("m", "m")), "names a machine twice"),
        (lambda: one(cycle={"x": Lognormal(1.0)}), "missing ['m']"),
        (lambda: one(cycle=3.0), "must be a distribution"),
        (lambda: one(mtbf_s=100.0), "give both mtbf_s and mttr_s"),
        (lambda: one(mtbf_s=100.0, mttr_s=-1.0), "mttr_s must be a positive"),
        (lambda: one(buffer=-1), "buffer must be a whole number"),
        (lambda: one(buffer=2.5), "buffer must be a whole number"),
        (lambda: LineSpec(()), "the line is empty"),
        (lambda: LineSpec((one(), one())), "repeated: ['s']"),
        (lambda: LineSpec((one(),), scrap_cost=-1.0), "scrap_cost must be"),
        (lambda: ConstantDefects({"s": -0.2}), "defect rate of station 's' must be a probability"),
        (lambda: LineSpec((one(),)).station("t"), "no station 't'"),
    ],
)
def test_bad_specs_are_refused(build: object, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        build()  # type: ignore[operator]
    assert message in caught.value.message


LINE = LineSpec((one(),))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon_s": 0.0}, "horizon_s must be a positive"),
        ({"horizon_s": -10.0}, "horizon_s must be a positive"),
        ({"horizon_s": math.inf}, "horizon_s must be a positive"),
        ({"warmup_s": -1.0}, "warmup_s must be a finite number >= 0"),
        ({"warmup_s": 100.0}, "must be shorter than horizon_s"),
        ({"seed": -1}, "seed must be a whole number"),
    ],
)
def test_bad_runs_are_refused(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float] = {"horizon_s": 100.0, "seed": 1, "warmup_s": 0.0} | kwargs
    with pytest.raises(ValidationFailed) as caught:
        simulate(LINE, NoDefects(), **args)  # type: ignore[arg-type]
    assert message in caught.value.message


def test_bad_defect_probabilities_and_counts_are_refused() -> None:
    class Broken:
        def probability(self, station: str, machine: str, rng: np.random.Generator) -> float:
            return 1.2

    with pytest.raises(ValidationFailed, match=r"probability 1\.2; it must be between 0 and 1"):
        simulate(LINE, Broken(), 100.0, seed=1)
    with pytest.raises(ValidationFailed, match="replications must be"):
        replicate(LINE, lambda r: NoDefects(), 100.0, 0, seed=1)
    with pytest.raises(ValidationFailed, match="at least one result"):
        summarise([])
    with pytest.raises(ValidationFailed, match="entities must be"):
        bare_event_loop(0, 10, 1)


def test_a_distribution_that_draws_negative_times_is_refused() -> None:
    class Negative:
        mean = 1.0

        def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
            return np.full(size, -1.0)

    line = LineSpec((StationSpec("s", ("m",), Negative()),))
    with pytest.raises(ValidationFailed, match="negative or non-finite duration"):
        simulate(line, NoDefects(), 100.0, seed=1)


# --------------------------------------------------------------------------- the rest


def test_bare_event_loop_reports_wall_seconds() -> None:
    seconds = bare_event_loop(2_000, 5, seed=1)
    assert 0.0 < seconds < 10.0


def test_module_examples() -> None:
    failures, tried = doctest.testmod(line_module, raise_on_error=False)
    assert tried > 0 and failures == 0
