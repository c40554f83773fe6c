"""Root-cause ranking and KPIs on a generated plant with planted causes, on both backends.

The generator plants a bad resin lot (all of whose batches were moulded on one machine,
a decoy), a reflow-oven drift and a night-shift effect; the ranking must find each from
its defect type, tell the lot from the co-exposed machine, and give the same answer on
every backend. The KPIs must match the generator's own counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import BACKENDS

from sqems.analysis.factors import Factor, FactorKind, spec_zone
from sqems.analysis.kpis import CostModel, kpis
from sqems.analysis.rootcause import (
    RootCauseReport,
    from_complaints,
    from_defect_type,
    from_units,
    rank_causes,
    report_dict,
)
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.datasets.plant import Plant
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore, TimeWindow

SPEC = PlantSpec(units=20_000, seed=1)


@pytest.fixture(scope="module")
def plant() -> Plant:
    return generate(SPEC)


@pytest.fixture(scope="module", params=["embedded-memory", "neo4j"])
def store(
    request: pytest.FixtureRequest, plant: Plant, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GraphStore]:
    workdir: Path = tmp_path_factory.mktemp(request.param)
    opened = BACKENDS[request.param].create(workdir, request)
    load_plant(opened, plant_sections(plant))
    try:
        yield opened
    finally:
        opened.close()


def cause(plant: Plant, cause_id: str) -> dict[str, Any]:
    return next(c for c in plant.truth["causes"] if c["id"] == cause_id)


def keys(report: RootCauseReport, n: int = 5) -> list[str]:
    return [c.factor.key for c in report.causes[:n]]


def assert_chain_is_real(store: GraphStore, report: RootCauseReport) -> None:
    """Every link of every 5-Why chain is an edge of the graph, in either direction."""
    for c in report.causes:
        assert c.why, f"{c.factor.key} has no 5-Why chain"
        for prev, step in zip(c.why, c.why[1:], strict=False):
            if step.edge is None:
                continue
            joined = {(e.src, e.dst) for e in store.edges([prev.uid], {step.edge: Direction.BOTH})}
            assert (prev.uid, step.uid) in joined or (step.uid, prev.uid) in joined, (
                f"{prev.uid} -{step.edge}- {step.uid} is not in the graph"
            )


def test_the_bad_lot_ranks_first_and_explains_its_co_exposed_machine(
    store: GraphStore, plant: Plant
) -> None:
    truth = cause(plant, "bad-lot")
    report = rank_causes(store, from_defect_type(store, truth["defect_type"]))
    top = report.causes[0]
    assert top.factor == Factor(FactorKind.MATERIAL_LOT, truth["uid"])
    assert top.category.value == "material"
    assert top.evidence.q_value < 1e-6
    assert top.evidence.risk_ratio_low > 10
    decoy = next(
        (c for c in report.causes if c.factor == Factor(FactorKind.MACHINE, "M-MOULD-1")), None
    )
    # the machine that moulded every bad-lot batch is either not a cause at all, or
    # one whose excess the lot accounts for
    assert decoy is None or decoy.explained_by == top.factor or decoy.rank > 3
    assert [s.label for s in top.why][-2:] == ["Batch", "MaterialLot"]
    assert_chain_is_real(store, report)


def test_exposure_counts_match_the_generated_plant(store: GraphStore, plant: Plant) -> None:
    truth = cause(plant, "bad-lot")
    report = rank_causes(store, from_defect_type(store, truth["defect_type"]))
    lot = report.causes[0].evidence
    units_of = plant.edges["PRODUCED"].columns
    exposed = {u for b, u in zip(units_of["src"], units_of["dst"], strict=True)
               if b in set(truth["batches"])}  # fmt: skip
    assert lot.exposed == len(exposed) == truth["exposed_units"]
    # every defective unit of the lot's batches is either caught in the plant or
    # complained about; at least the ones found in the plant are counted
    found = plant.edges["FOUND_ON"].columns
    typed = dict(
        zip(plant.edges["OF_TYPE"].columns["src"], plant.edges["OF_TYPE"].columns["dst"],
            strict=True)
    )  # fmt: skip
    caught = {u for d, u in zip(found["src"], found["dst"], strict=True)
              if typed[d] == truth["defect_type"] and u in exposed}  # fmt: skip
    assert len(caught) <= lot.defective_exposed <= truth["defective_units"]


def test_the_reflow_drift_is_found_through_the_boards_inside_the_drives(
    store: GraphStore, plant: Plant
) -> None:
    truth = cause(plant, "reflow-drift")
    report = rank_causes(store, from_defect_type(store, truth["defect_type"]))
    top = report.causes[0].factor
    assert (top.kind, top.uid) in {
        (FactorKind.EXCURSION, truth["parameter"]),
        (FactorKind.MACHINE, truth["uid"]),
    }, keys(report)
    assert set(report.products) == {"PRD-BOARD", "PRD-DRIVE"}
    assert_chain_is_real(store, report)


def test_the_night_shift_ranks_first_for_misaligned_shafts(store: GraphStore, plant: Plant) -> None:
    truth = cause(plant, "night-press-fit")
    report = rank_causes(store, from_defect_type(store, truth["defect_type"]))
    top = report.causes[0]
    assert (top.factor.kind, top.factor.uid) == (FactorKind.SHIFT, "night"), keys(report)
    assert top.category.value == "man"
    assert top.why[-1].why.endswith("in the night shift")


def test_complaints_compare_against_the_units_that_shipped(store: GraphStore, plant: Plant) -> None:
    complaints = list(plant.nodes["Complaint"].columns["uid"])
    target = from_complaints(store, complaints)
    assert target.field_returns
    report = rank_causes(store, target)
    shipped = plant.truth["counts"]["drives_shipped"]
    assert report.population == shipped
    assert report.defective_in_population == len(target.units)
    assert report.causes[0].why[0].label == "Complaint"


@pytest.fixture(scope="module")
def reference(plant: Plant) -> dict[str, Any]:
    """The embedded store's reports, to hold every backend to."""
    with EmbeddedGraphStore(None) as embedded:
        load_plant(embedded, plant_sections(plant))
        return {
            c["defect_type"]: report_dict(
                rank_causes(embedded, from_defect_type(embedded, c["defect_type"]))
            )
            for c in plant.truth["causes"]
        }


def test_every_backend_gives_the_same_ranking(store: GraphStore, reference: dict[str, Any]) -> None:
    for defect_type, expected in reference.items():
        assert report_dict(rank_causes(store, from_defect_type(store, defect_type))) == expected


def test_bad_requests_get_clear_errors(store: GraphStore) -> None:
    with pytest.raises(ValidationFailed, match="nothing to explain"):
        rank_causes(store, from_units([]))
    with pytest.raises(NotFound):
        rank_causes(store, from_units(["SN-NOPE"]))
    with pytest.raises(ValidationFailed, match="no batch that produced"):
        rank_causes(store, from_units(["M-REFLOW-1"]))
    with pytest.raises(NotFound, match="DT-NOPE"):
        from_defect_type(store, "DT-NOPE")
    with pytest.raises(ValidationFailed, match="alpha"):
        rank_causes(store, from_units(["SN-D0000001"]), alpha=2)


def test_a_window_with_no_defects_of_the_type_has_nothing_to_explain(store: GraphStore) -> None:
    empty = TimeWindow(datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 2, tzinfo=UTC))
    with pytest.raises(ValidationFailed, match="nothing to explain"):
        rank_causes(store, from_defect_type(store, "DT-SCRATCH", empty))


@pytest.mark.parametrize(
    ("value", "zone"),
    [
        (234.9, "below_lsl"),
        (235.0, "lower_quarter"),
        (238.74, "lower_quarter"),
        (238.75, None),
        (246.25, None),
        (246.26, "upper_quarter"),
        (250.0, "upper_quarter"),
        (250.01, "above_usl"),
    ],
)
def test_spec_zones_split_the_tolerance_into_quarters(value: float, zone: str | None) -> None:
    assert spec_zone(value, lsl=235.0, usl=250.0) == zone


def test_a_one_sided_spec_has_only_its_outside_zone() -> None:
    assert spec_zone(9.0, lsl=None, usl=10.0) is None
    assert spec_zone(11.0, lsl=None, usl=10.0) == "above_usl"
    assert spec_zone(-1.0, lsl=0.0, usl=None) == "below_lsl"


# --- KPIs ------------------------------------------------------------------------------------


def test_kpis_match_the_generators_counts(store: GraphStore, plant: Plant) -> None:
    counts = plant.truth["counts"]
    report = kpis(store)
    assert report.total.produced == SPEC.units
    assert report.by_line["LINE-PCB"].scrapped == counts["boards_scrapped_at_aoi"]
    assert report.by_line["LINE-ASM"].scrapped == counts["drives_scrapped_at_eol"]
    assert report.by_line["LINE-ASM"].shipped == counts["drives_shipped"]
    assert report.total.complaints == counts["complaints"]
    board = report.by_product["PRD-BOARD"].first_pass_yield
    drive = report.by_product["PRD-DRIVE"].first_pass_yield
    assert board is not None and drive is not None
    assert report.rolled_throughput_yield["PRD-DRIVE"] == pytest.approx(board * drive)
    assert sum(c.produced for c in report.by_shift.values()) == SPEC.units
    assert sum(c.produced for c in report.by_day.values()) == SPEC.units


def test_kpis_find_the_night_shift_different(store: GraphStore) -> None:
    report = kpis(store)
    test = report.shift_test
    assert test is not None and test.significant and test.p_value < 1e-6
    assert max(test.rates, key=test.rates.__getitem__) == "night"


def test_kpi_cost_of_poor_quality_follows_the_cost_model(store: GraphStore) -> None:
    costs = CostModel(unit_cost={"PRD-BOARD": 40.0, "PRD-DRIVE": 200.0}, complaint_cost=300.0)
    report = kpis(store, costs=costs)
    expected = (
        report.by_product["PRD-BOARD"].scrapped * 40.0
        + report.by_product["PRD-DRIVE"].scrapped * 200.0
    )
    assert report.cost["scrap"] == pytest.approx(expected)
    assert report.cost["external"] == pytest.approx(report.total.complaints * 300.0)
    assert report.cost["total"] == pytest.approx(sum(report.cost[k] for k in
                                                     ("scrap", "rework", "external")))  # fmt: skip


def test_kpi_heatmap_and_top_defects_are_ready_to_draw(store: GraphStore) -> None:
    report = kpis(store, top=3)
    heat = report.heatmap
    assert heat["lines"] == ["LINE-ASM", "LINE-PCB"]
    assert all(len(row) == len(heat["days"]) for row in heat["rate"])
    counts = [t.count for t in report.top_defects]
    assert len(counts) == 3 and counts == sorted(counts, reverse=True)


def test_kpis_of_a_window_count_only_its_batches(store: GraphStore) -> None:
    whole = kpis(store)
    first_day = whole.heatmap["days"][0]
    day = datetime.fromisoformat(first_day).replace(tzinfo=UTC)
    window = TimeWindow(day, day.replace(hour=23, minute=59, second=59))
    report = kpis(store, window)
    assert report.total.produced == whole.by_day[first_day].produced
    assert list(report.by_day) == [first_day]


def test_factors_with_identical_exposure_are_reported_as_inseparable_aliases() -> None:
    # in this small plant the bad resin lot and one fastener lot fed exactly the same
    # batches: no data can tell them apart, so they are one cause with an alias
    small = generate(PlantSpec(units=3_000, seed=7))
    truth = cause(small, "bad-lot")
    with EmbeddedGraphStore(None) as embedded:
        load_plant(embedded, plant_sections(small))
        report = rank_causes(embedded, from_defect_type(embedded, truth["defect_type"]))
    top = report.causes[0]
    named = {top.factor, *top.aliases}
    assert Factor(FactorKind.MATERIAL_LOT, truth["uid"]) in named
    assert len(top.aliases) == 1 and top.aliases[0].kind is FactorKind.MATERIAL_LOT
    assert all(top.aliases[0] != c.factor for c in report.causes)
