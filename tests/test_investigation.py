"""A complaint investigated end to end: cause, recall and fix that agree.

Two plants shaped differently — boards into drives, and cells into modules into packs
(the bad lot two BOM levels below the complained pack) — and the same plants with
nothing planted, on which an investigation must find nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BACKENDS
from typer.testing import CliRunner

from sqems.analysis.factors import Factor, FactorKind
from sqems.cli import app
from sqems.datasets import Plant, PlantSpec, generate, load_plant, write_plant
from sqems.datasets.battery_layout import BatteryCauses
from sqems.datasets.files import plant_sections
from sqems.datasets.layout import Causes
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore, Traceability
from sqems.investigation import Investigation, investigate, read_case, run_fix, suggest_recall
from sqems.simulation import whatif
from sqems.simulation.runner import WhatIfRunner
from sqems.twin.fitting import Sampler

IN = Direction.IN
NULL_DRIVES = Causes(bad_lot_added_p=0.0, drift_amount=0.0, shift_added_p=0.0)


def _load(plant: Plant) -> EmbeddedGraphStore:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    return store


@pytest.fixture(scope="module")
def drives() -> Plant:
    return generate(PlantSpec(units=20_000, seed=3))


@pytest.fixture(scope="module")
def drives_store(drives: Plant) -> Iterator[GraphStore]:
    store = _load(drives)
    yield store
    store.close()


@pytest.fixture(scope="module")
def battery() -> tuple[Plant, GraphStore]:
    plant = generate(PlantSpec(shape="battery", units=12_000, seed=2))
    return plant, _load(plant)


def cause_of(plant: Plant, kind: str) -> dict[str, Any]:
    return next(c for c in plant.truth["causes"] if c["kind"] == kind)


def reached(store: GraphStore, batches: list[str]) -> set[str]:
    return set(Traceability(store).downstream(batches).nodes("Unit"))


def complaint_reached_by(store: GraphStore, cause: dict[str, Any]) -> str:
    """A complaint of the cause's defect type about a unit the cause reached."""
    units = reached(store, cause["batches"])
    for e in sorted(store.edges([cause["defect_type"]], {"OF_TYPE": IN}), key=lambda e: e.src):
        if e.src.startswith("CMP-") and read_case(store, e.src).unit in units:
            return e.src
    raise AssertionError(f"no complaint about a unit reached by {cause['id']}")


def test_one_complaint_is_widened_to_its_defect_type_and_finds_the_bad_lot(
    drives: Plant, drives_store: GraphStore
) -> None:
    lot = cause_of(drives, "material_lot")
    uid = complaint_reached_by(drives_store, lot)
    found = investigate(drives_store, uid)
    assert found.case.defect_type == lot["defect_type"]
    assert found.scope.widened and lot["defect_type"] in found.scope.note
    assert len(found.report.defectives.units) > 1
    assert found.leading is not None and found.leading.significant
    assert found.leading.factor.kind is FactorKind.MATERIAL_LOT
    assert found.leading.factor.uid == lot["uid"]
    # the recall is the lot's own, and the fix replaces the lot on its line
    assert found.recall is not None and found.recall.basis == "lot"
    assert found.recall.units == reached(drives_store, lot["batches"])
    assert found.fix is not None and found.fix.changes == {"lots": [{"lot": lot["uid"]}]}
    # nothing not significant is ranked above a significant factor
    flags = [c.significant for c in found.report.causes]
    assert flags == sorted(flags, reverse=True)


def test_a_drift_is_recalled_over_its_change_point_window_and_fixed_there(
    drives: Plant, drives_store: GraphStore
) -> None:
    drift = cause_of(drives, "parameter_drift")
    uid = complaint_reached_by(drives_store, drift)
    found = investigate(drives_store, uid)
    assert found.leading is not None
    assert found.leading.factor.uid in (drift["uid"], drift["parameter"])
    assert found.recall is not None and found.recall.basis == "drift"
    (d,) = found.recall.drifts
    assert (d.machine, d.parameter) == (drift["uid"], drift["parameter"])
    # every batch the drift touched is in scope, not only the out-of-spec ones
    recall = found.recall.as_dict()
    assert recall is not None and set(drift["batches"]) <= set(recall["batches"])
    assert len(drift["batches"]) > len(drift["runs_out_of_spec"])
    # the fix removes the drift over the same window the recall used
    assert found.fix is not None
    (removed,) = found.fix.changes["drifts"]
    assert (removed["machine"], removed["parameter"]) == (d.machine, d.parameter)
    assert removed["start"] == d.as_dict()["start"] and removed["end"] == d.as_dict()["end"]


def test_the_night_shift_is_recalled_by_its_batches_and_fixed_by_its_shift_pattern(
    drives: Plant, drives_store: GraphStore
) -> None:
    shift = cause_of(drives, "shift")
    for e in sorted(drives_store.edges([shift["defect_type"]], {"OF_TYPE": IN}), key=str):
        if not e.src.startswith("CMP-"):
            continue
        found = investigate(drives_store, e.src)
        if found.leading is not None:
            break
    assert found.leading is not None
    assert (found.leading.factor.uid, found.leading.factor.step) == ("night", shift["step"])
    assert found.recall is not None and found.recall.basis == "shift"
    assert found.fix is not None
    (change,) = found.fix.changes["step_shifts"]
    assert change["step"] == shift["step"] and "night" not in change["shifts"]


def test_a_bad_cell_lot_is_found_from_one_pack_complaint_two_levels_up(
    battery: tuple[Plant, GraphStore],
) -> None:
    plant, store = battery
    lot = cause_of(plant, "material_lot")
    uid = complaint_reached_by(store, lot)
    found = investigate(store, uid)
    assert {s.depth for s in found.case.subassemblies} == {1, 2}
    assert found.leading is not None and found.leading.factor.uid == lot["uid"]
    # the 5-Why walks down through a module and a cell to the lot
    edges = [w.edge for w in found.why]
    assert edges.count("ASSEMBLED_INTO") == 2 and edges[-1] == "CONSUMED_IN"
    assert found.why[0].uid == uid and found.why[-1].uid == lot["uid"]
    assert found.recall is not None and found.recall.units >= {found.case.unit}


def test_the_bad_lot_leads_where_a_lot_used_beside_it_once_did() -> None:
    # a battery plant where the bad separator lot went into the same cells as a cathode
    # lot: tested against pooled products, the cathode lot ranked first for this pack;
    # within products and judged with their batches, the separator lot leads
    plant = generate(PlantSpec(shape="battery", units=20_000, seed=9))
    store = _load(plant)
    cause = cause_of(plant, "material_lot")
    found = investigate(store, "CMP-000017")
    assert found.leading is not None and found.recall is not None
    assert found.leading.factor.uid == cause["uid"]
    # every defective unit of its type the bad lot reached is in the recall
    rows = plant.truth_units.columns
    hit = reached(store, cause["batches"])
    affected = {
        u
        for u, types in zip(rows["uid"], rows["defect_types"], strict=True)
        if cause["defect_type"] in types.split(";") and u in hit
    }
    assert affected and affected <= found.recall.units
    assert found.fix is not None and found.fix.changes == {"lots": [{"lot": cause["uid"]}]}
    store.close()


def test_an_operator_on_the_night_shift_no_longer_stands_beside_it_nor_widens_the_recall() -> None:
    # an operator who works mostly the night shift at press-fit used to be significant
    # beside it; judged within its step scope and with its batches it is not, and the
    # recall is the night shift's own
    plant = generate(PlantSpec(units=20_000, seed=1))
    store = _load(plant)
    for batches in (True, False):
        found = investigate(store, "CMP-000015", batches=batches)
        assert found.leading is not None and found.leading.factor.kind is FactorKind.SHIFT
        assert "OP-024" not in {c.factor.uid for c in found.report.causes if c.significant}
        assert not any("OP-024" in n for n in found.notes)
        own = suggest_recall(
            store, found.leading.factor, found.report.window, aliases=found.leading.aliases
        )
        assert found.recall is not None and found.recall.units == own.units
    store.close()


@pytest.mark.parametrize("shape", ["drives", "battery"])
def test_nothing_planted_nothing_found(shape: str) -> None:
    null = BatteryCauses.none() if shape == "battery" else NULL_DRIVES
    plant = generate(PlantSpec(shape=shape, units=6_000, seed=5), null)
    store = _load(plant)
    complaints = sorted(n.uid for page in store.iter_nodes("Complaint") for n in page.items)
    assert complaints
    for uid in complaints[::5][:8]:
        found = investigate(store, uid)
        assert found.leading is None, f"{uid}: {found.report.conclusion}"
        assert found.recall is None and found.fix is None
        assert not any(c.significant for c in found.report.causes)
        assert found.report.conclusion.startswith("no factor stands out")


def test_what_is_not_a_complaint_is_refused(drives_store: GraphStore) -> None:
    with pytest.raises(NotFound, match="CMP-NOPE"):
        investigate(drives_store, "CMP-NOPE")
    with pytest.raises(ValidationFailed, match="not a Complaint"):
        investigate(drives_store, "M-REFLOW-2")
    with pytest.raises(ValidationFailed, match="lookback"):
        investigate(drives_store, "CMP-000001", lookback_days=0)


@pytest.fixture(scope="module")
def small() -> Plant:
    return generate(PlantSpec(units=2_000, seed=7))


@pytest.mark.parametrize("backend", ["embedded-memory", "neo4j"])
def test_the_recall_each_cause_kind_calls_for_is_the_same_on_every_backend(
    backend: str, small: Plant, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    reference = _load(small)
    store = BACKENDS[backend].create(tmp_path, request)
    try:
        load_plant(store, plant_sections(small))
        lot, drift, shift = (
            cause_of(small, k) for k in ("material_lot", "parameter_drift", "shift")
        )
        everything = (float("-inf"), float("inf"))
        for factor in (
            Factor(FactorKind.MATERIAL_LOT, lot["uid"]),
            Factor(FactorKind.MACHINE, drift["uid"]),
            Factor(FactorKind.EXCURSION, drift["parameter"], zone="above_usl"),
            Factor(FactorKind.SHIFT, shift["uid"], step=shift["step"]),
            Factor(FactorKind.SUPPLIER, lot["supplier"]) if "supplier" in lot else None,
        ):
            if factor is None:
                continue
            got = suggest_recall(store, factor, everything)
            want = suggest_recall(reference, factor, everything)
            assert got.basis == want.basis and got.as_dict() == want.as_dict(), factor.key
        assert suggest_recall(
            store, Factor(FactorKind.MATERIAL_LOT, lot["uid"]), everything
        ).units == (reached(store, lot["batches"]))
    finally:
        store.close()
        reference.close()


def _drift_investigated(
    plant: Plant,
    store: GraphStore,
    folder: Path,
    sampler: Sampler,
    hours: float,
    replications: int,
) -> Investigation:
    """A complaint the drift reached, investigated with its fix simulated."""
    uid = complaint_reached_by(store, cause_of(plant, "parameter_drift"))
    runner = WhatIfRunner(store, folder, sampler)
    try:
        return investigate(
            store,
            uid,
            whatif=lambda fix: run_fix(runner, fix, hours=hours, replications=replications),
        )
    finally:
        runner.close()


def test_the_fix_is_simulated_with_intervals_and_verdicts(
    drives: Plant, drives_store: GraphStore, tmp_path: Path
) -> None:
    found = _drift_investigated(
        drives, drives_store, tmp_path, Sampler(draws=800, tune=600, chains=2, seed=1), 4.0, 12
    )
    result = found.whatif
    assert result is not None and found.fix is not None
    assert result["line"] == found.fix.line and "drifts" in result["changes"]
    # only the drift's step is modelled: the other steps add the same defects to both
    drift = result["changes"]["drifts"][0]
    owner = drives_store.edges([drift["parameter"]], {"PARAMETER_OF": Direction.OUT})
    assert result["steps"] == [e.dst for e in owner] and "alone" in result["scope"]
    # 12 replications: the intervals' ends rest on under one of them each, and it says so
    assert any("12 replications" in w and "steadier" in w for w in result["warnings"])
    for kpi, v in result["kpis"].items():
        d = v["difference"]
        assert d["low"] <= d["mean"] <= d["high"], kpi
        assert v["verdict"] in ("credible", "no credible change")
    # the drift's units are scrapped at AOI or fail later: removing it cannot make
    # yield credibly worse, and the verdict names what changed credibly, if anything
    assert "yield" not in result["worse"]
    assert result["verdict"]


def test_a_fix_whose_twin_cannot_be_fitted_soundly_is_marked_failed(
    drives: Plant, drives_store: GraphStore, tmp_path: Path
) -> None:
    # far too few draws: the step models fail their convergence checks
    found = _drift_investigated(
        drives, drives_store, tmp_path, Sampler(draws=20, tune=20, chains=2, seed=1), 1.0, 60
    )
    # the cause and the recall stand; the note says why there is no what-if
    assert found.leading is not None and found.recall is not None and found.whatif is None
    assert any("could not run" in n and "convergence" in n for n in found.notes)
    assert found.whatif_error and "convergence" in found.whatif_error
    assert found.as_dict()["whatif_error"] == found.whatif_error
    sessions = [n.uid for page in drives_store.iter_nodes("WhatIfSession") for n in page.items]
    failed = [
        s
        for uid_ in sessions
        for s in whatif.get_session(drives_store, uid_).scenarios
        if not s.baseline and s.status.value == "failed"
    ]
    assert failed and "convergence" in failed[-1].message


def test_cli_investigate_prints_one_json_object(
    drives: Plant, drives_store: GraphStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_plant(drives, tmp_path / "plant")
    monkeypatch.setenv("SQEMS_DATA_DIR", str(tmp_path / "data"))
    cli = CliRunner()
    assert cli.invoke(app, ["load", str(tmp_path / "plant")]).exit_code == 0
    uid = complaint_reached_by(drives_store, cause_of(drives, "material_lot"))
    result = cli.invoke(app, ["investigate", uid, "--json", "--no-simulate"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert {"complaint", "causes", "recall", "whatif"} <= set(body)
    assert body["complaint"]["defect_type"] == cause_of(drives, "material_lot")["defect_type"]
    first = body["causes"][0]
    assert first["significant"] is True and first["uid"] == cause_of(drives, "material_lot")["uid"]
    assert body["recall"]["counts"]["units"] == len(body["recall"]["units"]) > 0
    assert body["whatif"] is None and body["fix"]["changes"]["lots"]
    text = cli.invoke(app, ["investigate", uid, "--no-simulate"])
    assert text.exit_code == 0 and "Suggested recall" in text.stdout
    missing = cli.invoke(app, ["investigate", "CMP-NOPE", "--no-simulate"])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
