"""What-if on the generated plant: the twin's quality models fitted with NUTS (small
draws), scenarios simulated with common random numbers, sessions kept in the graph,
and the setpoint recommendation."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from sqems.datasets import PlantSpec, generate, layout, load_plant
from sqems.datasets.files import plant_sections
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import RunStatus
from sqems.simulation import whatif
from sqems.simulation.runner import Progress, WhatIfRunner
from sqems.simulation.scenarios import NOTHING_CHANGES, ScenarioSpec, line_for
from sqems.twin import quality
from sqems.twin.fitting import Sampler, fit_line
from sqems.twin.line import (
    Breakdowns,
    CycleFit,
    LineTwin,
    ParameterTwin,
    StepHistory,
    StepTwin,
    build_twin,
    machine_series,
)
from sqems.twin.quality import QualityModel, StepData, fit, synthetic_step_data

LINE = "LINE-PCB"
SAMPLER = Sampler(draws=2000, tune=1000, chains=4, seed=1)  # the product's, seeded
SMALL = Sampler(draws=600, tune=600, chains=2, seed=1)
RUN = {"horizon_s": 4 * 3600.0, "replications": 12, "seed": 3}


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphStore]:
    with EmbeddedGraphStore(None) as store:
        load_plant(store, plant_sections(generate(PlantSpec(units=12_000, seed=2))))
        yield store


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("twin")


@pytest.fixture(scope="module")
def fitted(graph: GraphStore, folder: Path) -> tuple[LineTwin, dict[str, QualityModel]]:
    twin = build_twin(graph, LINE)
    return twin, fit_line(twin, folder / LINE, SAMPLER)


def test_each_step_with_parameters_gets_a_sound_model(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    _, models = fitted
    assert set(models) == {"STEP-PCB-10", "STEP-PCB-20"}
    reflow = models["STEP-PCB-20"]
    reflow.require_sound()
    assert reflow.curved == ("P-REFLOW-PEAK", "P-REFLOW-SPEED")
    # the planted physics: voids rise once the peak passes 248 degC
    cool = reflow.expected_probability([242.5, 80.0, 0.0, 0.0], "M-REFLOW-1")
    hot = reflow.expected_probability([252.0, 80.0, 0.0, 0.0], "M-REFLOW-1")
    assert hot > 3 * cool


def test_a_fitted_history_is_loaded_not_fitted_again(
    fitted: tuple[LineTwin, dict[str, QualityModel]], folder: Path
) -> None:
    twin, models = fitted
    began = time.perf_counter()
    again = fit_line(twin, folder / LINE, SAMPLER)
    assert time.perf_counter() - began < 10
    for step, model in models.items():
        assert again[step].parameters == model.parameters
        x = twin.step(step).history.x[:3]
        machines = [model.machines[0]] * 3
        assert np.array_equal(
            again[step].probability(5, x, machines), model.probability(5, x, machines)
        )


def test_the_baseline_runs_at_the_bottleneck_and_a_faster_line_goes_faster(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    twin, models = fitted
    base = whatif.simulate_scenario(twin, models, ScenarioSpec(), **RUN)  # type: ignore[arg-type]
    # one AOI machine at the line's cycle is the bottleneck
    aoi = twin.step("STEP-PCB-30").cycle["M-AOI-1"].mean_s
    rate = base.kpis()["throughput_per_h"].mean
    assert rate == pytest.approx(3600.0 / aoi, rel=0.03)
    faster = whatif.simulate_scenario(
        twin,
        models,
        ScenarioSpec(line_speed=1.2),
        **RUN,  # type: ignore[arg-type]
    )
    gain = faster.difference(base)["throughput_per_h"]
    assert gain.mean == pytest.approx(0.2 * rate, rel=0.05)


def test_a_hotter_oven_costs_yield_and_the_paired_interval_shows_it(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    twin, models = fitted
    base = whatif.simulate_scenario(twin, models, ScenarioSpec(), **RUN)  # type: ignore[arg-type]
    hot = ScenarioSpec.parse({"parameters": [{"parameter": "P-REFLOW-PEAK", "setpoint": 250.0}]})
    worse = whatif.simulate_scenario(twin, models, hot, **RUN)  # type: ignore[arg-type]
    diff = worse.difference(base)["yield"]
    assert diff.high < 0  # the whole interval is a loss
    assert worse.verdicts(base)["yield"] == whatif.CREDIBLE
    # 250 degC is beyond what the oven that did not drift ran at: named, that oven alone
    (warning,) = worse.warnings
    assert "M-REFLOW-1 would run at" in warning and "M-REFLOW-2" not in warning
    # pairing by replication narrows the interval against comparing two independent runs
    b, w = base.per_replication["yield"], worse.per_replication["yield"]
    unpaired = np.quantile((w[:, None] - b[None, :]).ravel(), [0.03, 0.97])
    assert diff.high - diff.low < unpaired[1] - unpaired[0]


def test_a_weaker_inspection_lets_more_defects_escape(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    twin, models = fitted
    base = whatif.simulate_scenario(twin, models, ScenarioSpec(), **RUN)  # type: ignore[arg-type]
    sampled = ScenarioSpec.parse({"inspections": [{"step": "STEP-PCB-30", "detection": 0.3}]})
    weaker = whatif.simulate_scenario(twin, models, sampled, **RUN)  # type: ignore[arg-type]
    more = weaker.difference(base)["ppm"]
    # the same units are defective in both (common random numbers): only the catching
    # differs, so no replication lets fewer escape
    assert more.mean > 0 and more.low >= 0
    assert weaker.difference(base)["scrap_cost"].mean < 0


def test_a_session_keeps_its_scenarios_and_results_in_the_graph(
    graph: GraphStore, fitted: tuple[LineTwin, dict[str, QualityModel]]
) -> None:
    twin, models = fitted
    view = whatif.create_session(graph, LINE, "oven study", **RUN)  # type: ignore[arg-type]
    hot = ScenarioSpec.parse({"parameters": [{"parameter": "P-REFLOW-PEAK", "setpoint": 249.0}]})
    scenario = whatif.add_scenario(graph, view.session.uid, "hot oven", hot)
    seen: list[float] = []
    done = whatif.run_scenario(
        graph, twin, models, view.session.uid, scenario.uid, progress=seen.append
    )
    assert done.status is RunStatus.DONE and seen and seen[-1] == pytest.approx(1.0)
    stored = whatif.get_session(graph, view.session.uid)
    assert [s.name for s in stored.scenarios] == ["baseline", "hot oven"]
    assert all(s.status is RunStatus.DONE for s in stored.scenarios)
    body = json.loads(stored.scenarios[1].results or "{}")
    assert set(body["difference"]) == set(whatif.KPIS) == set(body["verdicts"])
    assert set(body["verdicts"].values()) <= {whatif.CREDIBLE, whatif.NO_CREDIBLE_CHANGE}
    # 249 degC is on record for the oven that drifted, not for the other: its model
    # extrapolates there, and the warning names that oven alone
    (warning,) = body["warnings"]
    assert "M-REFLOW-1 would run at" in warning and "extrapolates" in warning
    assert "M-REFLOW-2" not in warning
    assert body["changes"]["parameters"][0]["setpoint"] == 249.0
    assert json.loads(stored.scenarios[1].changes)["parameters"][0]["setpoint"] == 249.0
    studies = graph.edges([view.session.uid], {"STUDIES": Direction.OUT})
    assert [e.dst for e in studies] == [LINE]


def test_the_recommendation_keeps_the_oven_out_of_the_void_zone(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    twin, models = fitted
    rec = whatif.recommend_setpoints(twin, models, seed=2, grid=7, rounds=1)
    assert rec.setpoints["P-REFLOW-PEAK"] < 247.0
    assert rec.expected_yield.mean >= rec.expected_yield_now.mean
    # only credible changes are recommended, and never beyond the data
    assert rec.credible and rec.gain.low > 0 and rec.p_gain >= 0.95 and not rec.message
    for uid, value in rec.setpoints.items():
        low, high = rec.ranges[uid]
        assert low <= value <= high
        _, spec = twin.parameter(uid)
        for machine in spec.low:
            actual = value + spec.bias[machine]
            assert spec.low[machine] - 1e-9 <= actual <= spec.high[machine] + 1e-9


def test_the_runner_runs_in_the_background_and_reports_progress(
    graph: GraphStore, folder: Path, fitted: tuple[LineTwin, dict[str, QualityModel]]
) -> None:
    runner = WhatIfRunner(graph, folder, SAMPLER)
    heard: list[Progress] = []
    runner.listeners.add(heard.append)
    try:
        view = whatif.create_session(graph, LINE, "background", **RUN)  # type: ignore[arg-type]
        scenario, future = runner.recommend(view.session.uid, throughput_floor=100.0)
        done = future.result(timeout=300)
    finally:
        runner.close()
    body = json.loads(done.results or "{}")
    assert body["feasible"] is True and "P-REFLOW-PEAK" in body["recommendation"]["setpoints"]
    assert heard[0].status is RunStatus.PENDING and heard[-1].status is RunStatus.DONE
    assert {p.scenario for p in heard} == {scenario.uid}


def test_a_lot_switch_gets_lot_effects_only_at_the_steps_that_consumed_the_lot(
    graph: GraphStore, folder: Path, fitted: tuple[LineTwin, dict[str, QualityModel]]
) -> None:
    runner = WhatIfRunner(graph, folder, SAMPLER)
    try:
        twin, plain = runner.twin(LINE)  # loaded: the fixture fitted them in this folder
        step = next(s for s in twin.steps if s.uid in plain and s.history.lots)
        spec = ScenarioSpec.parse({"lots": [{"lot": step.history.lots[0]}]})
        grouped = spec.grouped_steps(twin)
        assert step.uid in grouped
        _, models = runner.twin(LINE, groups=grouped)
    finally:
        runner.close()
    assert set(models) == set(plain)
    for uid, model in models.items():
        if uid in grouped:
            assert model.lots == twin.step(uid).history.lots
            model.require_sound()
            # binomial with its lot effects; the plain models' runs are beta-binomial
            assert not model.overdispersed and plain[uid].overdispersed
        else:  # every other step keeps its plain model, fitted once
            assert model is plain[uid] and not (model.lots or model.operators)


def test_a_lot_switch_fits_no_plain_model_where_it_needs_lot_effects(
    graph: GraphStore, tmp_path: Path, fitted: tuple[LineTwin, dict[str, QualityModel]]
) -> None:
    twin, _ = fitted
    step = next(s for s in twin.steps if s.parameters and s.history.lots)
    grouped = ScenarioSpec.parse({"lots": [{"lot": step.history.lots[0]}]}).grouped_steps(twin)
    runner = WhatIfRunner(graph, tmp_path, SAMPLER)
    try:
        assert not runner.ready(LINE) and runner.fitted(LINE) == []
        _, models = runner.twin(LINE, groups=grouped)
        fitted_now = runner.fitted(LINE)
    finally:
        runner.close()
    assert runner.ready(LINE)
    assert step.uid in models
    for uid in set(grouped) & set(models):
        assert models[uid].lots  # the only model of the step: no plain one was fitted
    assert {m.step for m in fitted_now} == set(models)
    files = sorted(p.name for p in (tmp_path / LINE).glob("*.nc"))
    assert len(files) == len(models), files


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"parameters": [{"parameter": "P-NOPE", "setpoint": 1.0}]}, NotFound, "P-NOPE"),
        (
            {"parameters": [{"parameter": "P-REFLOW-PEAK", "setpoint": 400.0}]},
            ValidationFailed,
            "far outside",
        ),
        ({"inspections": [{"step": "STEP-PCB-20", "detection": 0.9}]}, ValidationFailed, "not an"),
        ({"line_speed": -1}, ValidationFailed, "line_speed"),
        ({"shifts": ["weekend"]}, ValidationFailed, "shifts"),
        ({"colour": "red"}, ValidationFailed, "colour"),
    ],
)
def test_a_scenario_the_line_cannot_have_is_refused(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
    changes: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    twin, _ = fitted
    with pytest.raises(error, match=match):
        ScenarioSpec.parse(changes).check(twin)


def test_scenarios_added_at_once_get_their_own_numbers(graph: GraphStore) -> None:
    view = whatif.create_session(graph, LINE, "busy", **RUN)  # type: ignore[arg-type]
    with ThreadPoolExecutor(4) as pool:
        added = list(
            pool.map(
                lambda k: whatif.add_scenario(
                    graph, view.session.uid, f"s{k}", ScenarioSpec(line_speed=1.0 + k / 10)
                ),
                range(8),
            )
        )
    uids = [s.uid for s in whatif.get_session(graph, view.session.uid).scenarios]
    assert len(set(uids)) == 9 and {s.uid for s in added} <= set(uids)


# --- what a scenario says about itself ------------------------------------------------------


def test_a_scenario_that_changes_nothing_says_so_and_finds_no_credible_change(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    twin, models = fitted
    base = whatif.simulate_scenario(twin, models, ScenarioSpec(), **RUN)  # type: ignore[arg-type]
    assert base.warnings == (NOTHING_CHANGES,)
    reflow = twin.step("STEP-PCB-20")
    same = ScenarioSpec.parse(
        {
            "parameters": [{"parameter": "P-REFLOW-PEAK", "setpoint": 242.5}],
            "routing": [{"step": "STEP-PCB-20", "machines": list(reflow.machines)}],
            "step_shifts": [{"step": "STEP-PCB-20", "shifts": ["early", "late", "night"]}],
        }
    )
    again = whatif.simulate_scenario(twin, models, same, **RUN)  # type: ignore[arg-type]
    assert again.warnings[0] == NOTHING_CHANGES and len(again.warnings) == 4
    assert set(again.verdicts(base).values()) == {whatif.NO_CREDIBLE_CHANGE}
    for kpi, values in again.per_replication.items():
        assert np.array_equal(values, base.per_replication[kpi]), kpi
    body = json.loads(again.to_json(base))
    assert body["warnings"][0] == NOTHING_CHANGES
    assert body["verdicts"]["yield"] == whatif.NO_CREDIBLE_CHANGE


def test_taking_the_drifting_oven_out_of_the_route_gains_yield(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    twin, models = fitted
    route = ScenarioSpec.parse({"routing": [{"step": "STEP-PCB-20", "machines": ["M-REFLOW-1"]}]})
    station = next(s for s in line_for(twin, route).stations if s.name == "STEP-PCB-20")
    assert station.machines == ("M-REFLOW-1",) and set(station.cycle) == {"M-REFLOW-1"}
    # the drift is 15 % of the oven's history: a day per replication lets it show, and
    # 24 of them keep a day or two that the drift spared from deciding the interval
    run = {**RUN, "horizon_s": 24 * 3600.0, "replications": 24}
    base = whatif.simulate_scenario(twin, models, ScenarioSpec(), **run)  # type: ignore[arg-type]
    one = whatif.simulate_scenario(twin, models, route, **run)  # type: ignore[arg-type]
    gain = one.difference(base)["yield"]
    assert gain.low > 0 and one.verdicts(base)["yield"] == whatif.CREDIBLE
    assert not one.warnings


def test_removing_the_planted_drift_gains_yield(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    twin, models = fitted
    causes = layout.Causes()
    span = twin.last_run - twin.first_run
    start, end = (twin.first_run + f * span for f in causes.drift_window)
    iso = [datetime.fromtimestamp(t, UTC).isoformat() for t in (start, end)]
    drift = {"machine": causes.drift_machine, "parameter": causes.drift_parameter}
    spec = ScenarioSpec.parse({"drifts": [{**drift, "start": iso[0], "end": iso[1]}]})
    run = {**RUN, "horizon_s": 24 * 3600.0}  # a day per replication, as for the routing
    base = whatif.simulate_scenario(twin, models, ScenarioSpec(), **run)  # type: ignore[arg-type]
    fixed = whatif.simulate_scenario(twin, models, spec, **run)  # type: ignore[arg-type]
    assert fixed.difference(base)["yield"].low > 0
    assert fixed.verdicts(base)["yield"] == whatif.CREDIBLE and not fixed.warnings
    assert fixed.changes["drifts"][0]["start"].startswith(iso[0][:16])
    # the oven that did not drift: nothing to remove in that window
    times, _ = machine_series(twin.step("STEP-PCB-20"), causes.drift_parameter, "M-REFLOW-1")
    other = {"machine": "M-REFLOW-1", "parameter": causes.drift_parameter}
    empty = [t for t in times if start <= t <= end]
    if not empty:
        idle = ScenarioSpec.parse({"drifts": [{**other, "start": iso[0], "end": iso[1]}]})
        assert whatif.warnings_of(twin, idle.resolved(twin))[0] == NOTHING_CHANGES


def test_a_drift_window_left_to_the_data_is_estimated_and_reported(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    twin, _ = fitted
    causes = layout.Causes()
    spec = ScenarioSpec.parse(
        {"drifts": [{"machine": causes.drift_machine, "parameter": causes.drift_parameter}]}
    )
    resolved = spec.resolved(twin)
    (drift,) = resolved.drifts
    times, values = machine_series(
        twin.step("STEP-PCB-20"), causes.drift_parameter, causes.drift_machine
    )
    found = whatif.warnings_of(twin, resolved)
    if drift.estimated:  # too few runs in the drift to tell it from noise: said, not invented
        assert found[0] == NOTHING_CHANGES and "no drift" in found[1]
    else:
        assert drift.start is not None and drift.end is not None
        inside = (times >= drift.start.timestamp()) & (times <= drift.end.timestamp())
        assert values[inside].mean() > values[~inside].mean()
        assert not found


def test_the_shift_of_one_step_changes_its_units_shifts_and_its_hours(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    twin, models = fitted
    spec = ScenarioSpec.parse({"step_shifts": [{"step": "STEP-PCB-20", "shifts": ["early"]}]})
    line = line_for(twin, spec)
    today = line_for(twin, ScenarioSpec())
    reflow = {s.name: s for s in line.stations}["STEP-PCB-20"]
    before = {s.name: s for s in today.stations}["STEP-PCB-20"]
    for m, cycle in reflow.cycle.items():  # one shift of three: a third of the hours
        assert cycle.median_s == pytest.approx(3 * before.cycle[m].median_s)
    defects = whatif.TwinDefects(twin, models, spec, 0)
    x = defects.actuals(twin.step("STEP-PCB-20"), "M-REFLOW-1", np.random.default_rng(0), 300)
    assert not x[:, 2:].any()  # neither late nor night
    x = defects.actuals(twin.step("STEP-PCB-10"), "M-PRINT-1", np.random.default_rng(0), 300)
    assert x[:, 1:].any()


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"routing": [{"step": "STEP-PCB-20", "machines": ["M-PRINT-1"]}]}, ValidationFailed,
         "cannot perform it"),
        ({"routing": [{"step": "STEP-PCB-20", "machines": []}]}, ValidationFailed, "machines"),
        ({"routing": [{"step": "STEP-NOPE", "machines": ["M-REFLOW-1"]}]}, NotFound, "STEP-NOPE"),
        ({"routing": [{"step": "STEP-PCB-20", "machines": ["M-REFLOW-1", "M-REFLOW-1"]}]},
         ValidationFailed, "twice"),
        ({"drifts": [{"machine": "M-PRINT-1", "parameter": "P-REFLOW-PEAK"}]}, ValidationFailed,
         "does not perform"),
        ({"drifts": [{"machine": "M-NOPE", "parameter": "P-REFLOW-PEAK"}]}, ValidationFailed,
         "M-NOPE"),
        ({"drifts": [{"machine": "M-REFLOW-2", "parameter": "P-REFLOW-PEAK",
                      "start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}]},
         ValidationFailed, "start before it ends"),
        ({"drifts": [{"machine": "M-REFLOW-2", "parameter": "P-REFLOW-PEAK",
                      "start": "2026-02-01T00:00:00"}]}, ValidationFailed, "timezone"),
        ({"shifts": ["early", "late"], "step_shifts": [{"step": "STEP-PCB-20",
                                                        "shifts": ["night"]}]},
         ValidationFailed, "cannot work night"),
        ({"step_shifts": [{"step": "STEP-PCB-20", "shifts": []}]}, ValidationFailed, "shifts"),
    ],
)  # fmt: skip
def test_a_routing_drift_or_step_shift_the_line_cannot_have_is_refused(
    fitted: tuple[LineTwin, dict[str, QualityModel]],
    changes: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    twin, _ = fitted
    with pytest.raises(error, match=match):
        ScenarioSpec.parse(changes).check(twin)


def test_without_a_night_shift_at_press_fit_fewer_shafts_are_misaligned(
    graph: GraphStore, folder: Path
) -> None:
    # the plant's planted shift cause; only the press-fit step's model is fitted
    causes = layout.Causes()
    twin = build_twin(graph, "LINE-ASM")
    models = fit_line(twin, folder / "LINE-ASM", SMALL, steps=[causes.shift_step])
    assert set(models) == {causes.shift_step}
    # two shifts of 8 h: about 1 % more good units against the binomial noise of a
    # few hundred units a replication (over 4 h, one replication in twenty or so
    # comes out even, and the interval reaches zero)
    run = {**RUN, "replications": 20, "horizon_s": 16 * 3600.0}
    base = whatif.simulate_scenario(twin, models, ScenarioSpec(), **run)  # type: ignore[arg-type]
    days = ScenarioSpec.parse(
        {"step_shifts": [{"step": causes.shift_step, "shifts": ["early", "late"]}]}
    )
    better = whatif.simulate_scenario(twin, models, days, **run)  # type: ignore[arg-type]
    assert better.difference(base)["yield"].low > 0
    assert better.verdicts(base)["yield"] == whatif.CREDIBLE


def test_a_first_run_that_falls_short_is_sampled_again_with_the_full_settings(
    graph: GraphStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 30 draws a chain cannot reach the ESS floor of 100 a chain: the first run fails
    # the gate and the step is sampled again with the sampler's own settings
    step = layout.Causes().shift_step
    twin = build_twin(graph, "LINE-ASM")
    short_first = replace(SMALL, first_draws=30, first_tune=30)
    assert short_first.first is not None
    with caplog.at_level(logging.INFO, logger="sqems.twin.fitting"):
        models = fit_line(twin, tmp_path, short_first, steps=[step])
    assert "the first run fell short" in caplog.text
    model = models[step]
    assert model.draws == SMALL.draws * SMALL.chains
    model.require_sound()
    # no first run when it would not be shorter than the full one
    assert replace(SMALL, first_draws=SMALL.draws).first is None
    assert Sampler(draws=2000, tune=1000).first == Sampler(
        draws=1000, tune=300, target_accept=0.95, first_draws=0
    )


# --- the recommendation recommends only what the data support -----------------------------


def _twin_of(data: StepData, supplier: dict[str, str] | None = None) -> LineTwin:
    """A one-step line whose history is ``data`` (machines at the line's takt)."""
    x = np.asarray(data.x)
    history = StepHistory(
        data.parameters,
        x,
        np.asarray(data.machine),
        np.asarray(data.trials),
        np.asarray(data.defects),
        np.arange(float(data.runs)) * 3600.0,
        data.lots,
        np.asarray(data.lot_run),
        np.asarray(data.lot_index),
        supplier or {},
        data.operators,
        np.asarray(data.operator),
    )
    parameters = []
    for j, name in enumerate(data.parameters):
        setpoint = float(x[:, j].mean())
        per = {m: x[data.machine == i, j] for i, m in enumerate(data.machines)}
        parameters.append(
            ParameterTwin(
                name,
                name,
                "",
                None,
                None,
                setpoint,
                {m: float(v.mean()) - setpoint for m, v in per.items()},
                {m: float(v.std(ddof=1)) for m, v in per.items()},
                {m: float(v.min()) for m, v in per.items()},
                {m: float(v.max()) for m, v in per.items()},
            )
        )
    step = StepTwin(
        data.step,
        "synthetic",
        10,
        data.machines,
        {m: CycleFit(m, 30.0, 0.1, 10) for m in data.machines},
        {m: Breakdowns(m, None, None, 0) for m in data.machines},
        tuple(parameters),
        (),
        history,
    )
    units = int(data.trials.sum())
    return LineTwin("LINE-SYN", "synthetic", None, (step,), units, 0.0, 0.0, data.runs * 3600.0)


@pytest.mark.parametrize(
    ("planted", "min_gain", "recommended"),
    [
        (0.0, whatif.MIN_GAIN, set()),
        (0.6, whatif.MIN_GAIN, {"P-A"}),
        # a real effect (a gain of about 4 points, surely above zero) that is not surely
        # worth the 4.5 points asked for
        (0.6, 0.045, set()),
    ],
)
def test_only_a_credibly_better_setpoint_is_recommended(
    planted: float, min_gain: float, recommended: set[str]
) -> None:
    data = synthetic_step_data(
        np.random.default_rng(7),
        300,
        alpha=-3.0,
        beta={"P-A": planted, "P-B": 0.0},
        gamma={"P-A": 0.0, "P-B": 0.0},
        machine_effects={"M-1": -0.1, "M-2": 0.1},
        units=40,
    )
    twin = _twin_of(data)
    models = {data.step: fit(data, draws=300, tune=300, chains=2, seed=7)}
    rec = whatif.recommend_setpoints(twin, models, seed=1, grid=7, rounds=1, min_gain=min_gain)
    assert set(rec.setpoints) == recommended
    if not recommended:  # nothing, and it says so
        assert rec.message.startswith(whatif.NOTHING_CREDIBLY_BETTER)
        assert f"P(gain > {min_gain:.2%})" in rec.message
        assert rec.scenario() == ScenarioSpec() and rec.gain.mean == 0.0
        assert rec.as_dict()["confirm"] == ""
        return
    value = rec.setpoints["P-A"]
    low, high = rec.ranges["P-A"]
    assert value < twin.step(data.step).parameters[0].setpoint  # less of P-A: fewer defects
    assert low <= value <= high and low >= float(np.asarray(data.x)[:, 0].min())
    assert rec.gain.low > 0 and rec.p_gain >= 0.95
    assert rec.p_practical >= whatif.CREDIBILITY and rec.min_gain == min_gain
    assert rec.as_dict()["confirm"] == whatif.CONFIRM  # a hypothesis to confirm by experiment
    with pytest.raises(ValidationFailed, match="practical gain"):
        whatif.recommend_setpoints(twin, models, min_gain=-0.1)


# --- lots and operators -------------------------------------------------------------------------


def _lot_step(rng: np.random.Generator, bad: float) -> StepData:
    """300 runs of a step whose batches each consumed one or two of 10 lots (two
    suppliers) and were run by one of 5 operators; lot L-03 adds ``bad`` to the logit,
    nothing else matters."""
    runs, units = 300, 40
    lots = tuple(f"L-{k:02d}" for k in range(10))
    first = rng.integers(0, 10, runs)
    second = rng.integers(0, 10, runs)
    two = rng.random(runs) < 0.5
    lot_run = np.r_[np.arange(runs), np.flatnonzero(two & (second != first))]
    lot_index = np.r_[first, second[two & (second != first)]]
    operator = rng.integers(0, 5, runs)
    exposed = np.bincount(lot_run[lot_index == 3], minlength=runs) > 0
    p = 1.0 / (1.0 + np.exp(-(-3.0 + bad * exposed)))
    return StepData(
        step="STEP-LOT",
        parameters=("P-A",),
        x=rng.normal(100.0, 5.0, (runs, 1)),
        machine=rng.integers(0, 2, runs),
        machines=("M-1", "M-2"),
        trials=np.full(runs, units),
        defects=rng.binomial(units, p),
        lots=lots,
        lot_run=lot_run,
        lot_index=lot_index,
        operators=tuple(f"OP-{k}" for k in range(5)),
        operator=operator,
    )


@pytest.mark.parametrize(("bad", "expected"), [(1.5, {"L-03"}), (0.0, set())])
def test_only_a_lot_that_stands_out_in_its_data_is_sampled_centred(
    bad: float, expected: set[str]
) -> None:
    data = _lot_step(np.random.default_rng(21), bad=bad)
    centred = quality._centred(data, data.lot_run, data.lot_index, len(data.lots))
    assert {data.lots[k] for k in np.flatnonzero(centred)} == expected


@pytest.fixture(scope="module")
def lot_line() -> tuple[LineTwin, dict[str, QualityModel]]:
    data = _lot_step(np.random.default_rng(21), bad=1.5)
    twin = _twin_of(data, {f"L-{k:02d}": ("SUP-A" if k < 5 else "SUP-B") for k in range(10)})
    return twin, {data.step: fit(data, draws=300, tune=300, chains=2, seed=3)}


def test_switching_the_bad_lot_improves_yield_credibly_and_a_null_lot_does_not(
    lot_line: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    twin, models = lot_line
    model = models["STEP-LOT"]
    assert model.lots == twin.steps[0].history.lots and model.operators
    run = {"horizon_s": 8 * 3600.0, "replications": 24, "seed": 5}
    base = whatif.simulate_scenario(twin, models, ScenarioSpec(), **run)  # type: ignore[arg-type]
    switch = ScenarioSpec.parse({"lots": [{"lot": "L-03"}]})
    better = whatif.simulate_scenario(twin, models, switch, **run)  # type: ignore[arg-type]
    gain = better.difference(base)["yield"]
    assert gain.low > 0 and better.verdicts(base)["yield"] == whatif.CREDIBLE
    assert not better.warnings
    null = ScenarioSpec.parse({"lots": [{"lot": "L-07"}]})
    same = whatif.simulate_scenario(twin, models, null, **run)  # type: ignore[arg-type]
    change = same.difference(base)["yield"]
    assert change.low < 0 < change.high
    assert same.verdicts(base)["yield"] == whatif.NO_CREDIBLE_CHANGE
    # a supplier switch replaces every lot of the supplier: L-03 is SUP-A's
    assert ScenarioSpec.parse({"lots": [{"supplier": "SUP-A"}]}).switched_lots(twin.steps[0]) == {
        f"L-0{k}" for k in range(5)
    }


def test_too_few_replications_for_a_steady_interval_are_named() -> None:
    assert "0.9 of them" in whatif.interval_note(30)
    assert whatif.interval_note(whatif.STEADY_REPLICATIONS) == ""


def test_a_lot_switch_needs_lot_effects_only_where_the_lot_stands_out() -> None:
    # two steps that consumed the same lots; L-03 harms the first only
    bad = _lot_step(np.random.default_rng(21), bad=1.5)
    null = replace(_lot_step(np.random.default_rng(21), bad=0.0), step="STEP-LOT-2")
    twin = replace(_twin_of(bad), steps=(_twin_of(bad).steps[0], _twin_of(null).steps[0]))
    switch = ScenarioSpec.parse({"lots": [{"lot": "L-03"}]})
    assert switch.grouped_steps(twin) == switch.acting_steps(twin) == ("STEP-LOT",)
    # a lot that stands out nowhere gets effects wherever it was consumed
    both = ("STEP-LOT", "STEP-LOT-2")
    assert ScenarioSpec.parse({"lots": [{"lot": "L-07"}]}).grouped_steps(twin) == both
    # what each change acts on; a line-wide change needs every step
    routing = {"routing": [{"step": "STEP-LOT-2", "machines": ["M-1"]}]}
    assert ScenarioSpec.parse(routing).acting_steps(twin) == ("STEP-LOT-2",)
    setpoint = {"parameters": [{"parameter": "P-A", "setpoint": 101.0}]}
    assert ScenarioSpec.parse(setpoint).acting_steps(twin) == ("STEP-LOT",)
    assert ScenarioSpec.parse({"line_speed": 1.2}).acting_steps(twin) is None
    assert ScenarioSpec().acting_steps(twin) == ()


def test_excluding_operators_without_an_effect_changes_no_kpi_credibly(
    lot_line: tuple[LineTwin, dict[str, QualityModel]],
) -> None:
    twin, models = lot_line
    run = {"horizon_s": 8 * 3600.0, "replications": 24, "seed": 5}
    base = whatif.simulate_scenario(twin, models, ScenarioSpec(), **run)  # type: ignore[arg-type]
    spec = ScenarioSpec.parse({"operators": [{"step": "STEP-LOT", "exclude": ["OP-1", "OP-2"]}]})
    other = whatif.simulate_scenario(twin, models, spec, **run)  # type: ignore[arg-type]
    change = other.difference(base)["yield"]
    assert change.low < 0 < change.high


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"lots": [{"lot": "L-99"}]}, "was not consumed"),
        ({"lots": [{"supplier": "SUP-Z"}]}, "no lot of supplier"),
        ({"lots": [{"lot": "L-01", "supplier": "SUP-A"}]}, "exactly one"),
        ({"operators": [{"step": "STEP-LOT", "exclude": ["OP-9"]}]}, "never ran"),
        (
            {"operators": [{"step": "STEP-LOT", "exclude": [f"OP-{k}" for k in range(5)]}]},
            "leaves nobody",
        ),
    ],
)
def test_a_lot_or_operator_change_the_line_cannot_have_is_refused(
    lot_line: tuple[LineTwin, dict[str, QualityModel]], changes: dict[str, object], match: str
) -> None:
    twin, _ = lot_line
    with pytest.raises(ValidationFailed, match=match):
        ScenarioSpec.parse(changes).check(twin)
