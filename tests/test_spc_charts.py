"""Charts of the graph's own series: per machine by default, pooled only when asked and
then saying so; attribute charts that name their limits and why."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from sqems.analysis.charts import ChartKind, inspection_chart, parameter_chart
from sqems.analysis.spc import LimitMethod
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.datasets.plant import Plant
from sqems.errors import ValidationFailed
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import Machine, Parameter, ProcessRun, Shift
from sqems.graph_model.store import Edge

OFFSET = 0.5  # N·m on M-SCREW-2's torque: about 8 within-machine sigmas


@pytest.fixture(scope="module")
def plant() -> Plant:
    """A plant whose second screwdriver runs its torque 0.5 N·m high throughout."""
    made = generate(PlantSpec(units=12_000, seed=7))
    on = made.edges["ON"].columns
    second = {run for run, m in zip(on["src"], on["dst"], strict=True) if m == "M-SCREW-2"}
    recorded = made.edges["RECORDED"].columns
    recorded["value"] = [
        float(v) + OFFSET if par == "P-TORQUE" and run in second else v
        for run, par, v in zip(recorded["src"], recorded["dst"], recorded["value"], strict=True)
    ]
    return made


@pytest.fixture(scope="module")
def store(plant: Plant) -> Iterator[GraphStore]:
    with EmbeddedGraphStore(None) as opened:
        load_plant(opened, plant_sections(plant))
        yield opened


def test_a_parameter_on_several_machines_is_charted_per_machine(store: GraphStore) -> None:
    chart = parameter_chart(store, "P-TORQUE")
    assert not chart.pooled and chart.machines == ["M-SCREW-1", "M-SCREW-2"]
    assert [p.index for p in chart.points] == list(range(len(chart.points)))
    assert [p.time for p in chart.points] == sorted(p.time for p in chart.points)
    centers = {m.machine: m.limits["center"] for m in chart.by_machine if m.limits}
    assert centers["M-SCREW-2"] - centers["M-SCREW-1"] == pytest.approx(OFFSET, abs=0.1)
    for point in chart.points:
        assert point.center == pytest.approx(centers[point.machine])
    # each machine's own limits: the offset machine raises no alarm on its own chart
    assert not chart.violations
    assert max(m.sigma for m in chart.by_machine) < OFFSET / 4


def test_a_pooled_chart_says_so_and_its_sigma_holds_the_machine_offset(
    store: GraphStore,
) -> None:
    per = parameter_chart(store, "P-TORQUE")
    pooled = parameter_chart(store, "P-TORQUE", pool=True)
    assert pooled.pooled and pooled.limits is not None and not pooled.by_machine
    # the spec verdict first, then what pooling did
    assert "above the USL of 2.6 N*m" in pooled.notes[0]  # the offset screwdriver
    assert pooled.notes[1].startswith("pooled over 2 machines (M-SCREW-1, M-SCREW-2)")
    assert "includes the offsets between machines" in pooled.notes[1]
    assert pooled.sigma > 2 * per.sigma


def test_one_machine_or_stored_limits_give_a_single_chart(store: GraphStore) -> None:
    one = parameter_chart(store, "P-TORQUE", machine="M-SCREW-2", baseline=10)
    assert not one.pooled and one.limits is not None
    again = parameter_chart(store, "P-TORQUE", machine="M-SCREW-2", limits=one.limits)
    assert [p.ucl for p in again.points] == [p.ucl for p in one.points]
    with pytest.raises(ValidationFailed, match="give the machine they were estimated for"):
        parameter_chart(store, "P-TORQUE", limits=one.limits)


def test_per_machine_subgroup_and_cusum_charts_stay_within_each_machine(
    store: GraphStore,
) -> None:
    xbar = parameter_chart(store, "P-TORQUE", ChartKind.XBAR_S, subgroup_size=4)
    assert {p.machine for p in xbar.points} == {"M-SCREW-1", "M-SCREW-2"}
    assert {p.machine for p in xbar.secondary} == {"M-SCREW-1", "M-SCREW-2"}
    cusum = parameter_chart(store, "P-TORQUE", ChartKind.CUSUM)
    # a target-based CUSUM sees the offset machine drift up, and only that machine
    fired = {cusum.points[i].machine for v in cusum.violations for i in v.indices}
    assert fired == {"M-SCREW-2"}


@pytest.mark.parametrize("kind", [ChartKind.P, ChartKind.U, ChartKind.C])
def test_inspection_charts_name_their_limits_and_the_dispersion_test(
    store: GraphStore, kind: ChartKind
) -> None:
    chart = inspection_chart(store, "LINE-PCB", kind)
    assert chart.limits is not None and chart.limits["method"] in ("exact", "laney")
    assert "dispersion test on the" in chart.notes[0]
    normal = inspection_chart(store, "LINE-PCB", kind, method=LimitMethod.NORMAL)
    assert normal.notes[0].startswith("normal-approximation 3-sigma limits")


def test_g_chart_of_inspections_counts_clean_inspections_between_defects(
    store: GraphStore, plant: Plant
) -> None:
    chart = inspection_chart(store, "LINE-ASM", ChartKind.G)
    assert chart.limits is not None and chart.limits["method"] == "exact"
    every = inspection_chart(store, "LINE-ASM", ChartKind.P, method="normal")
    found = [i for i, p in enumerate(every.points) if p.value > 0]
    gaps = np.diff([-1, *found]) - 1
    assert [p.value for p in chart.points] == gaps.tolist()
    assert [p.key for p in chart.points] == [every.points[i].key for i in found]


def oven(peaks: dict[str, list[float]], lsl: float | None, usl: float | None) -> GraphStore:
    """A reflow peak recorded by hourly runs of the ovens named in ``peaks``."""
    store = EmbeddedGraphStore(None)
    start = datetime(2026, 3, 2, 6, tzinfo=UTC)
    store.upsert_nodes(
        [
            Parameter(uid="P-PEAK", name="reflow peak", unit="degC", lsl=lsl, usl=usl),
            *(Machine(uid=m, name=m) for m in peaks),
            *(
                ProcessRun(
                    uid=f"R-{m}-{i:02d}", started_at=start + timedelta(hours=i), shift=Shift.EARLY
                )
                for m, values in peaks.items()
                for i in range(len(values))
            ),
        ]
    )
    store.upsert_edges(
        edge
        for m, values in peaks.items()
        for i, v in enumerate(values)
        for edge in (
            Edge("RECORDED", f"R-{m}-{i:02d}", "P-PEAK", {"value": v, "unit": "degC"}),
            Edge("ON", f"R-{m}-{i:02d}", m),
        )
    )
    return store


STEADY = [243.0, 242.6, 243.4, 242.9, 243.2, 242.7, 243.1, 242.8, 243.3, 242.9]


def test_runs_above_the_usl_are_reported_even_when_no_run_rule_fires() -> None:
    # the second oven runs steadily 7.25 degC higher: stable on its own chart, off spec
    hot = [v + 7.25 for v in STEADY]
    above = [i for i, v in enumerate(hot) if v > 250]
    assert len(above) == 8
    with oven({"M-OVEN-1": STEADY, "M-OVEN-2": hot}, 235.0, 250.0) as store:
        chart = parameter_chart(store, "P-PEAK", machine="M-OVEN-2")
        assert not chart.violations and chart.spec is not None
        assert chart.spec.above == tuple(f"R-M-OVEN-2-{i:02d}" for i in above)
        assert chart.spec.out_of_spec == 8 and not chart.spec.below
        assert chart.notes[0] == "8 runs above the USL of 250 degC; no run rule fires"
        assert chart.spec.points == tuple(above)

        both = parameter_chart(store, "P-PEAK")  # per machine: points renumbered in time
        assert both.spec is not None and both.spec.runs == 20 and both.spec.out_of_spec == 8
        assert {both.points[i].machine for i in both.spec.points} == {"M-OVEN-2"}
        assert all(both.points[i].value > 250 for i in both.spec.points)

    # means of 5 runs: the points whose subgroups hold a run outside spec
    with oven({"M-OVEN-3": STEADY + STEADY + hot}, 235.0, 250.0) as store:
        means = parameter_chart(store, "P-PEAK", ChartKind.XBAR_R, baseline=4)
        assert means.spec is not None and means.spec.points == (4, 5) and means.violations
        assert means.notes[0].startswith("8 runs above the USL of 250 degC; ")
        assert "run rule" in means.notes[0] and "no run rule" not in means.notes[0]
        assert "(nelson_" in means.notes[0]  # each rule by its title and name


def test_a_parameter_without_spec_limits_says_nothing_of_spec() -> None:
    with oven({"M-OVEN-1": [v + 9.0 for v in STEADY]}, None, None) as store:
        chart = parameter_chart(store, "P-PEAK")
        assert chart.spec is None
        assert not any("spec" in n or "USL" in n or "LSL" in n for n in chart.notes)


def test_runs_in_spec_report_no_out_of_spec_point() -> None:
    noise = np.random.default_rng(3).normal(242.5, 1.0, 40).round(2).tolist()
    with oven({"M-OVEN-1": noise}, 235.0, 250.0) as store:
        chart = parameter_chart(store, "P-PEAK")
        assert chart.spec is not None and chart.spec.out_of_spec == 0 and not chart.spec.points
        assert chart.notes[0].startswith("all 40 runs within spec (LSL 235, USL 250 degC)")
