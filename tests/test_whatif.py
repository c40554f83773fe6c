"""What-if on the generated plant: the twin's quality models fitted with NUTS (small
draws), scenarios simulated with common random numbers, sessions kept in the graph,
and the setpoint recommendation."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import RunStatus
from sqems.simulation import whatif
from sqems.simulation.runner import Progress, WhatIfRunner
from sqems.simulation.scenarios import ScenarioSpec
from sqems.twin.fitting import Sampler, fit_line
from sqems.twin.line import LineTwin, build_twin
from sqems.twin.quality import QualityModel

LINE = "LINE-PCB"
SAMPLER = Sampler(draws=600, tune=600, chains=2, seed=1)
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
    assert reflow.quadratic == ("P-REFLOW-PEAK", "P-REFLOW-SPEED")
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
    assert set(body["difference"]) == set(whatif.KPIS)
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
