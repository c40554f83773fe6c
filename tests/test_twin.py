"""The twin of a line read from the graph: routing, cycle times, breakdowns, parameter
behaviour, quality history and detection, checked against the generator's plant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from sqems.datasets import PlantSpec, generate, layout, load_plant
from sqems.datasets.files import plant_sections
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import Alarm, Line, Severity
from sqems.graph_model.store import Edge
from sqems.twin.line import behaviour_outside, build_twin, drift_window, machine_series


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphStore]:
    with EmbeddedGraphStore(None) as store:
        load_plant(store, plant_sections(generate(PlantSpec(units=8_000, seed=2))))
        yield store


def test_the_route_follows_the_steps_with_their_parallel_machines(graph: GraphStore) -> None:
    twin = build_twin(graph, "LINE-ASM")
    spec = layout.ASSEMBLY_LINE
    assert [s.uid for s in twin.steps] == [s.uid for s in spec.steps]
    assert [s.machines for s in twin.steps] == [tuple(sorted(s.machines)) for s in spec.steps]
    assert twin.product == spec.product
    assert [s.inspection for s in twin.steps] == [False, False, False, True]


def test_cycle_times_are_the_runs_durations_per_unit(graph: GraphStore) -> None:
    for spec in layout.LINES:
        twin = build_twin(graph, spec.uid)
        for step in twin.steps:
            for fit in step.cycle.values():
                # the generator runs every unit of a line at the line's takt
                assert fit.median_s == pytest.approx(spec.cycle_s, rel=1e-6)
                assert fit.observations > 0


def test_each_step_learns_from_the_defects_that_originate_there(graph: GraphStore) -> None:
    twin = build_twin(graph, "LINE-PCB")
    reflow = twin.step("STEP-PCB-20")
    assert reflow.defect_types == ("DT-SOLDER-VOID",)
    h = reflow.history
    assert h.parameters == ("P-REFLOW-PEAK", "P-REFLOW-SPEED", "shift:late", "shift:night")
    assert h.x.shape == (h.runs, 4) and h.trials.sum() == twin.units
    # the planted drift: runs hotter than the void threshold make most of the voids
    hot = h.x[:, 0] > layout.Causes().void_threshold
    assert hot.any()
    assert h.defects[hot].sum() / h.trials[hot].sum() > 5 * (
        h.defects[~hot].sum() / h.trials[~hot].sum()
    )
    peak = reflow.parameters[0]
    assert peak.setpoint == 242.5 and peak.bias["M-REFLOW-2"] > peak.bias["M-REFLOW-1"]


def test_an_inspection_step_catches_what_the_plant_was_told_it_catches(graph: GraphStore) -> None:
    causes = layout.Causes()
    aoi = build_twin(graph, "LINE-PCB").step("STEP-PCB-30").detection
    assert aoi is not None
    # escapes that are never found cannot be counted, so the estimate sits at or a
    # little above the planted rate
    assert causes.aoi_detects - 0.05 < aoi < 1.0


def test_stops_on_record_become_mtbf_and_mttr() -> None:
    with EmbeddedGraphStore(None) as store:
        load_plant(store, plant_sections(generate(PlantSpec(units=2_000, seed=4))))
        twin = build_twin(store, "LINE-ASM")
        start = datetime.fromtimestamp(twin.first_run, UTC)
        alarms = [
            Alarm(
                uid=f"ALM-STOP-{i}",
                raised_at=start + timedelta(hours=2 * i + 1),
                cleared_at=start + timedelta(hours=2 * i + 1, minutes=20),
                rule="stop",
                severity=Severity.CRITICAL,
            )
            for i in range(4)
        ]
        with store.transaction() as batch:
            batch.add_nodes(alarms)
            batch.add_edges(Edge("RAISED_ON", a.uid, "M-PRESS-1") for a in alarms)
        press = build_twin(store, "LINE-ASM").step("STEP-ASM-20")
        stops = press.breakdowns["M-PRESS-1"]
        observed = twin.last_run - twin.first_run
        assert stops.stops == 4
        assert stops.mttr_s == pytest.approx(1200.0)
        assert stops.mtbf_s == pytest.approx((observed - 4 * 1200.0) / 4)
        assert press.breakdowns["M-PRESS-2"].mtbf_s is None


def test_a_line_the_twin_cannot_be_built_for_is_refused(graph: GraphStore) -> None:
    with pytest.raises(NotFound, match="LINE-NOPE"):
        build_twin(graph, "LINE-NOPE")
    with EmbeddedGraphStore(None) as store:
        store.upsert_nodes([Line(uid="LINE-EMPTY", name="empty")])
        with pytest.raises(ValidationFailed, match="no machines"):
            build_twin(store, "LINE-EMPTY")
    assert np.isfinite(build_twin(graph, "LINE-ASM").base_rate)


# --- drift windows ------------------------------------------------------------------------------


def test_a_planted_step_drift_is_found_where_it_starts_and_ends() -> None:
    rng = np.random.default_rng(11)
    times = np.sort(rng.uniform(0.0, 1e6, 200))
    values = 240.0 + rng.normal(0.0, 1.5, 200)
    values[80:110] += 6.0  # 30 runs hotter, then back
    shuffled = rng.permutation(200)  # the order of the input does not matter
    window = drift_window(times[shuffled], values[shuffled])
    assert window is not None
    start, end = window
    assert times[78] <= start <= times[82] and times[107] <= end <= times[111]


def test_a_ramp_that_never_comes_back_is_found_to_the_last_run() -> None:
    rng = np.random.default_rng(12)
    times = np.arange(150.0) * 3600.0
    values = 5.0 + rng.normal(0.0, 0.2, 150)
    values[100:] += np.linspace(0.0, 2.0, 50)  # a slow ramp up to the end
    window = drift_window(times, values)
    assert window is not None
    start, end = window
    assert end == times[-1]
    assert times[100] <= start <= times[125]  # where the ramp stands out of the noise


def test_series_without_a_drift_rarely_get_a_window() -> None:
    # the permutation test holds its 1 % false alarms for any length and noise:
    # of 100 series without a drift (normal and heavy-tailed noise, 6 to 300 runs),
    # more than 4 windows would happen with probability 0.003
    found = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(6, 300))
        noise = rng.standard_t(4, n) if seed % 2 else rng.normal(0.0, 1.0, n)
        found += drift_window(np.arange(float(n)), 100.0 + noise) is not None
    assert found <= 4
    assert drift_window([1.0, 2.0, 3.0], [1.0, 5.0, 1.0]) is None  # too short to tell
    assert drift_window(np.arange(50.0), np.full(50, 3.0)) is None  # constant


def test_a_drift_window_needs_one_time_per_value() -> None:
    with pytest.raises(ValidationFailed, match="one time per value"):
        drift_window([1.0, 2.0], [1.0])
    with pytest.raises(ValidationFailed, match="finite"):
        drift_window([1.0, 2.0, 3.0, 4.0], [1.0, np.nan, 1.0, 2.0])


def test_the_twin_keeps_each_machines_runs_and_range(graph: GraphStore) -> None:
    step = build_twin(graph, "LINE-PCB").step("STEP-PCB-20")
    peak = step.parameters[0]
    for machine in step.machines:
        times, values = machine_series(step, peak.uid, machine)
        assert times.size == values.size > 0 and np.all(np.isfinite(times))
        assert (peak.low[machine], peak.high[machine]) == (values.min(), values.max())
        # without a window nothing is removed: the behaviour is the twin's own
        bias, spread = behaviour_outside(step, peak.uid, machine, np.inf, np.inf)
        assert bias == pytest.approx(peak.bias[machine])
        assert spread == pytest.approx(peak.spread[machine])
    with pytest.raises(NotFound, match="does not perform"):
        machine_series(step, peak.uid, "M-PRINT-1")
    with pytest.raises(ValidationFailed, match="outside the drift window"):
        behaviour_outside(step, peak.uid, "M-REFLOW-1", -np.inf, np.inf)
