"""The synthetic plant: determinism, sizing, file format and ground-truth consistency."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from sqems.datasets import (
    BatteryCauses,
    PlantSpec,
    generate,
    layout,
    load_plant,
    read_plant,
    write_plant,
)
from sqems.datasets.battery import level_sizes
from sqems.datasets.files import plant_sections
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import (
    Direction,
    EmbeddedGraphStore,
    RecallSource,
    SourceKind,
    Traceability,
)
from sqems.graph_model.nodes import Parameter

UNITS = 20_000


@pytest.fixture(scope="module")
def plant():  # type: ignore[no-untyped-def]
    return generate(PlantSpec(units=UNITS, seed=11))


@pytest.fixture(scope="module")
def loaded(plant):  # type: ignore[no-untyped-def]
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    yield store
    store.close()


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    write_plant(generate(PlantSpec(units=3_000, seed=5)), tmp_path / "a")
    write_plant(generate(PlantSpec(units=3_000, seed=5)), tmp_path / "b")
    write_plant(generate(PlantSpec(units=3_000, seed=6)), tmp_path / "c")
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c


@pytest.mark.parametrize("units", [1_000, 12_345])
def test_plant_has_exactly_the_units_asked_for(units: int) -> None:
    plant = generate(PlantSpec(units=units, seed=3))
    assert len(plant.nodes["Unit"]) == units
    assert len(set(plant.nodes["Unit"].columns["uid"])) == units


@pytest.mark.parametrize("units", [999, 1_000_001])
def test_plant_size_outside_the_supported_range_is_refused(units: int) -> None:
    with pytest.raises(ValidationError):
        PlantSpec(units=units)


def test_manifest_counts_match_the_csv_files(tmp_path: Path, plant) -> None:  # type: ignore[no-untyped-def]
    manifest = write_plant(plant, tmp_path)
    for kind in ("nodes", "edges"):
        for entry in manifest[kind].values():
            with (tmp_path / entry["file"]).open() as handle:
                assert sum(1 for _ in csv.reader(handle)) - 1 == entry["rows"]


def test_loading_files_and_loading_the_generator_agree(tmp_path: Path, plant, loaded) -> None:  # type: ignore[no-untyped-def]
    write_plant(plant, tmp_path)
    with EmbeddedGraphStore(tmp_path / "graph.db") as store:
        load_plant(store, read_plant(tmp_path), batch_size=4_000)
        assert store.count() == loaded.count()
        assert store.count_edges() == loaded.count_edges()
        assert store.get("SN-D0000042") == loaded.get("SN-D0000042")


def test_a_bad_row_names_the_file_and_line(tmp_path: Path) -> None:
    write_plant(generate(PlantSpec(units=1_000, seed=1)), tmp_path)
    units = tmp_path / "nodes" / "Unit.csv"
    lines = units.read_text().splitlines()
    uid = lines[3].split(",")[0]
    lines[3] = f"{uid},2026-02-30T00:00:00Z,good"
    units.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValidationFailed, match=r"Unit\.csv line 4: Unit .*produced_at"):
        load_plant(EmbeddedGraphStore(None), read_plant(tmp_path))


def test_a_directory_without_manifest_is_not_a_plant(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"manifest\.json"):
        read_plant(tmp_path)


# --- ground truth -----------------------------------------------------------------------


def _truth_units(plant) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    t = plant.truth_units.columns
    return {u: set(types.split(";")) for u, types in zip(t["uid"], t["defect_types"], strict=True)}


def test_bad_lot_feeds_the_truth_batches_all_moulded_on_the_co_exposed_machine(
    plant, loaded
) -> None:  # type: ignore[no-untyped-def]
    cause = plant.truth["causes"][0]
    noise = plant.truth["noise"][0]
    lot = loaded.get(cause["uid"])
    assert lot.label == "MaterialLot"
    assert [e.dst for e in loaded.edges([lot.uid], {"LOT_OF": Direction.OUT})] == ["MAT-RESIN"]
    fed = [e.dst for e in loaded.edges([lot.uid], {"CONSUMED_IN": Direction.OUT})]
    assert fed == cause["batches"]
    for batch in fed:
        mould_run = f"RUN-{batch}-10"
        assert [e.dst for e in loaded.edges([mould_run], {"ON": Direction.OUT})] == [noise["uid"]]


def test_bad_lot_units_crack_far_more_often_than_the_rest(plant, loaded) -> None:  # type: ignore[no-untyped-def]
    cause = plant.truth["causes"][0]
    scope = Traceability(loaded).downstream([cause["uid"]])
    exposed = {u for u in scope.nodes("Unit") if u.startswith("SN-D")}
    assert len(exposed) == cause["exposed_units"]
    truth = _truth_units(plant)
    drives = [u for u in plant.nodes["Unit"].columns["uid"] if u.startswith("SN-D")]
    cracked = {u for u, types in truth.items() if cause["defect_type"] in types}
    rate_in = len(cracked & exposed) / len(exposed)
    rate_out = len(cracked - exposed) / (len(drives) - len(exposed))
    assert rate_in > 5 * rate_out
    assert rate_in == pytest.approx(cause["added_probability"], abs=0.06)


def test_drift_runs_are_on_the_drifting_oven_inside_the_window(plant, loaded) -> None:  # type: ignore[no-untyped-def]
    cause = plant.truth["causes"][1]
    start = datetime.fromisoformat(cause["window"]["start"])
    end = datetime.fromisoformat(cause["window"]["end"])
    assert cause["runs"], "a 20k plant must have runs in the drift window"
    for run_uid in cause["runs"]:
        run = loaded.get(run_uid)
        assert start <= run.started_at <= end
        assert [e.dst for e in loaded.edges([run_uid], {"ON": Direction.OUT})] == [cause["uid"]]
    parameter = loaded.get(cause["parameter"])
    assert isinstance(parameter, Parameter)
    recorded = {
        e.src: e.props["value"] for e in loaded.edges([parameter.uid], {"RECORDED": Direction.IN})
    }
    assert cause["runs_out_of_spec"]
    for run_uid in cause["runs_out_of_spec"]:
        assert recorded[run_uid] > parameter.usl  # type: ignore[operator]


def test_night_press_fit_misaligns_more_shafts(plant, loaded) -> None:  # type: ignore[no-untyped-def]
    cause = plant.truth["causes"][2]
    runs = plant.nodes["ProcessRun"].columns
    night_batches = {
        uid.removeprefix("RUN-").removesuffix("-20")
        for uid, shift in zip(runs["uid"], runs["shift"], strict=True)
        if uid.endswith("-20") and uid.startswith("RUN-WO-ASM") and shift == cause["uid"]
    }
    produced = plant.edges["PRODUCED"].columns
    night_units = {
        u for b, u in zip(produced["src"], produced["dst"], strict=True) if b in night_batches
    }
    assert len(night_units) == cause["exposed_units"]
    drives = {u for u in produced["dst"] if u.startswith("SN-D")}
    truth = _truth_units(plant)
    hit = {u for u, types in truth.items() if cause["defect_type"] in types}
    rate_night = len(hit & night_units) / len(night_units)
    rate_day = len(hit & (drives - night_units)) / len(drives - night_units)
    assert rate_night > 3 * rate_day


def test_truth_counts_agree_with_the_graph(plant, loaded) -> None:  # type: ignore[no-untyped-def]
    counts = plant.truth["counts"]
    assert counts["boards"] + counts["drives"] == UNITS
    assert loaded.count("Complaint") == counts["complaints"]
    assert loaded.count_edges("SHIPPED_IN") == counts["drives_shipped"]
    statuses = Counter(plant.nodes["Unit"].columns["status"])
    assert (
        statuses["scrapped"] == counts["boards_scrapped_at_aoi"] + counts["drives_scrapped_at_eol"]
    )
    nff = set(plant.truth["noise"][3]["complaints"])
    assert len(nff) == counts["no_fault_found"]


def test_complaints_follow_shipment_and_units_follow_their_parts(plant, loaded) -> None:  # type: ignore[no-untyped-def]
    about = plant.edges["ABOUT"].columns
    for complaint_uid, unit_uid in list(zip(about["src"], about["dst"], strict=True))[:200]:
        complaint = loaded.get(complaint_uid)
        (shipped,) = loaded.edges([unit_uid], {"SHIPPED_IN": Direction.OUT})
        assert complaint.received_at > loaded.get(shipped.dst).shipped_at
    built = plant.edges["ASSEMBLED_INTO"].columns
    for board, drive in list(zip(built["src"], built["dst"], strict=True))[::97]:
        assert loaded.get(board).produced_at < loaded.get(drive).produced_at
        assert loaded.get(board).status.value == "good"


def test_ground_truth_file_is_written_beside_the_plant(tmp_path: Path, plant) -> None:  # type: ignore[no-untyped-def]
    write_plant(plant, tmp_path)
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    assert [c["id"] for c in truth["causes"]] == ["bad-lot", "reflow-drift", "night-press-fit"]
    assert (tmp_path / "truth" / "defective_units.csv").is_file()


def test_an_edge_to_a_missing_node_names_the_file_and_line(tmp_path: Path) -> None:
    manifest = write_plant(generate(PlantSpec(units=1_000, seed=1)), tmp_path)
    units = tmp_path / "nodes" / "Unit.csv"
    lines = units.read_text().splitlines()
    gone = lines.pop(5).split(",")[0]
    units.write_text("\n".join(lines) + "\n")
    manifest["nodes"]["Unit"]["rows"] -= 1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ValidationFailed, match=rf"edges/\w+\.csv line \d+: .*node {gone} is neither"
    ):
        load_plant(EmbeddedGraphStore(None), read_plant(tmp_path), batch_size=300)


# --- the battery plant: a three-level BOM (cell → module → pack) -------------------------


@pytest.fixture(scope="module")
def battery():  # type: ignore[no-untyped-def]
    return generate(PlantSpec(shape="battery", units=UNITS, seed=11))


@pytest.fixture(scope="module")
def battery_loaded(battery):  # type: ignore[no-untyped-def]
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(battery))
    yield store
    store.close()


def _cause(plant, kind: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return next(c for c in plant.truth["causes"] if c["kind"] == kind)


def test_battery_plant_is_deterministic_and_its_seed_matters(tmp_path: Path) -> None:
    spec = PlantSpec(shape="battery", units=3_000, seed=5)
    write_plant(generate(spec), tmp_path / "a")
    write_plant(generate(spec), tmp_path / "b")
    write_plant(generate(spec.model_copy(update={"seed": 6})), tmp_path / "c")
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c


@pytest.mark.parametrize("units", [1_000, 12_345])
def test_battery_units_count_cells_modules_and_packs(units: int) -> None:
    plant = generate(PlantSpec(shape="battery", units=units, seed=3))
    serials = plant.nodes["Unit"].columns["uid"]
    assert len(set(serials)) == units
    by_level = Counter(s[:4] for s in serials)
    counts = plant.truth["counts"]
    assert by_level == {"SN-C": counts["cells"], "SN-M": counts["modules"], "SN-P": counts["packs"]}
    assert (counts["cells"], counts["modules"], counts["packs"]) == level_sizes(units)
    built = Counter(d[:4] for d in plant.edges["ASSEMBLED_INTO"].columns["dst"])
    assert built == {"SN-M": 4 * counts["modules"], "SN-P": 2 * counts["packs"]}


def test_a_pack_holds_cells_through_its_modules(battery_loaded) -> None:  # type: ignore[no-untyped-def]
    genealogy = Traceability(battery_loaded).upstream(["SN-P0000100"])
    units = genealogy.nodes("Unit")
    modules = [u for u in units if u.startswith("SN-M")]
    cells = [u for u in units if u.startswith("SN-C")]
    assert len(modules) == 2
    assert len(cells) == 8
    for cell in cells:
        hops = [(s.edge, s.uid[:4]) for s in genealogy.path(cell)[1:]]
        assert hops == [("ASSEMBLED_INTO", "SN-M"), ("ASSEMBLED_INTO", "SN-C")]
    products = {
        e.dst for e in battery_loaded.edges(["PRD-PACK", "PRD-MODULE"], {"USES": Direction.OUT})
    }
    assert {"PRD-MODULE", "PRD-CELL"} <= products


def test_every_battery_unit_was_produced_by_a_batch_of_its_product(battery) -> None:  # type: ignore[no-untyped-def]
    batches = set(battery.nodes["Batch"].columns["uid"])
    produced = battery.edges["PRODUCED"].columns
    assert sorted(produced["dst"]) == sorted(battery.nodes["Unit"].columns["uid"])
    assert set(produced["src"]) <= batches
    of_product = dict(
        zip(
            battery.edges["OF_PRODUCT"].columns["src"],
            battery.edges["OF_PRODUCT"].columns["dst"],
            strict=True,
        )
    )
    level = {"SN-C": "PRD-CELL", "SN-M": "PRD-MODULE", "SN-P": "PRD-PACK"}
    for batch, unit in zip(produced["src"], produced["dst"], strict=True):
        assert of_product[batch] == level[unit[:4]]


def test_bad_separator_lot_batches_were_all_stacked_on_the_co_exposed_machine(
    battery, battery_loaded
) -> None:  # type: ignore[no-untyped-def]
    cause = _cause(battery, "material_lot")
    noise = next(n for n in battery.truth["noise"] if n["kind"] == "co_exposed_machine")
    lot = cause["uid"]
    assert [e.dst for e in battery_loaded.edges([lot], {"LOT_OF": Direction.OUT})] == [
        "MAT-SEPARATOR"
    ]
    fed = [e.dst for e in battery_loaded.edges([lot], {"CONSUMED_IN": Direction.OUT})]
    assert fed == cause["batches"]
    assert len(fed) >= 3
    for batch in fed:
        (on,) = battery_loaded.edges([f"RUN-{batch}-10"], {"ON": Direction.OUT})
        assert on.dst == noise["uid"]
    # the machine stacked other batches too, and the lot's supplier sent other lots
    runs = battery.edges["ON"].columns
    stacked = {r for r, m in zip(runs["src"], runs["dst"], strict=True) if m == noise["uid"]}
    assert len(stacked) > len(fed)
    supplied = battery.edges["SUPPLIED"].columns
    assert sum(s == cause["supplier"] for s in supplied["src"]) > 1


def test_recall_of_the_bad_cell_lot_reaches_packs_and_their_customers(
    battery, battery_loaded
) -> None:  # type: ignore[no-untyped-def]
    cause = _cause(battery, "material_lot")
    scope = Traceability(battery_loaded).recall_scope(RecallSource(SourceKind.LOT, cause["uid"]))
    units = [u.uid for u in scope.units]
    by_level = Counter(u[:4] for u in units)
    assert by_level["SN-C"] == cause["exposed_units"]
    assert by_level["SN-M"] == cause["exposed_modules"]
    assert by_level["SN-P"] == cause["exposed_packs"]
    assert scope.shipments and scope.customers
    pack = next(u for u in scope.units if u.uid.startswith("SN-P"))
    assert [s.edge for s in pack.path[1:]] == [
        "CONSUMED_IN",
        "PRODUCED",
        "ASSEMBLED_INTO",
        "ASSEMBLED_INTO",
    ]


def _rate(hit: set[str], units: set[str]) -> float:
    return len(hit & units) / len(units)


def test_battery_causes_raise_their_defect_where_planted(battery) -> None:  # type: ignore[no-untyped-def]
    truth = _truth_units(battery)
    produced = battery.edges["PRODUCED"].columns
    units_of: dict[str, set[str]] = {}
    for b, u in zip(produced["src"], produced["dst"], strict=True):
        units_of.setdefault(b, set()).add(u)
    cells = {u for u in produced["dst"] if u.startswith("SN-C")}
    modules = {u for u in produced["dst"] if u.startswith("SN-M")}
    packs = {u for u in produced["dst"] if u.startswith("SN-P")}

    lot = _cause(battery, "material_lot")
    exposed = set().union(*(units_of[b] for b in lot["batches"]))
    shorted = {u for u, types in truth.items() if lot["defect_type"] in types}
    assert _rate(shorted, exposed) > 5 * _rate(shorted, cells - exposed)
    assert _rate(shorted, exposed) == pytest.approx(lot["added_probability"], abs=0.015)

    drift = _cause(battery, "parameter_drift")
    assert drift["runs_out_of_spec"]
    drifted = set().union(*(units_of[b] for b in drift["batches"]))
    weak = {u for u in modules if drift["defect_type"] in truth.get(u, ())}
    assert _rate(weak, drifted) > 5 * _rate(weak, modules - drifted)

    shift = _cause(battery, "shift")
    runs = battery.nodes["ProcessRun"].columns
    night = {
        uid.removeprefix("RUN-").removesuffix("-10")
        for uid, s in zip(runs["uid"], runs["shift"], strict=True)
        if uid.startswith("RUN-WO-PACK") and uid.endswith("-10") and s == shift["uid"]
    }
    night_packs = set().union(*(units_of[b] for b in night))
    assert len(night_packs) == shift["exposed_units"]
    loose = {u for u in packs if shift["defect_type"] in truth.get(u, ())}
    assert _rate(loose, night_packs) > 3 * _rate(loose, packs - night_packs)


def test_cell_shorts_mostly_escape_cell_test_and_reach_pack_complaints(battery) -> None:  # type: ignore[no-untyped-def]
    lot = _cause(battery, "material_lot")
    t = battery.truth_units.columns
    shorted_cells = [
        d == "true"
        for u, types, d in zip(t["uid"], t["defect_types"], t["detected"], strict=True)
        if u.startswith("SN-C") and lot["defect_type"] in types.split(";")
    ]
    assert sum(shorted_cells) < 0.5 * len(shorted_cells)
    complaints = dict(
        zip(
            battery.edges["OF_TYPE"].columns["src"],
            battery.edges["OF_TYPE"].columns["dst"],
            strict=True,
        )
    )
    about = battery.edges["ABOUT"].columns
    assert all(u.startswith("SN-P") for u in about["dst"])
    assert any(complaints[c] == lot["defect_type"] for c in about["src"])


def test_battery_truth_counts_agree_with_the_graph(battery, battery_loaded) -> None:  # type: ignore[no-untyped-def]
    counts = battery.truth["counts"]
    assert counts["cells"] + counts["modules"] + counts["packs"] == UNITS
    assert battery_loaded.count("Unit") == UNITS
    assert battery_loaded.count("Complaint") == counts["complaints"]
    assert battery_loaded.count_edges("SHIPPED_IN") == counts["packs_shipped"]
    scrapped = Counter(battery.nodes["Unit"].columns["status"])["scrapped"]
    assert scrapped == (
        counts["cells_scrapped_at_test"]
        + counts["modules_scrapped_at_eol"]
        + counts["packs_scrapped_at_eol"]
    )
    nff = next(n for n in battery.truth["noise"] if n["kind"] == "no_fault_found")
    assert len(nff["complaints"]) == counts["no_fault_found"]
    assert [c["id"] for c in battery.truth["causes"]] == [
        "bad-lot",
        "weld-drift",
        "night-fastening",
    ]


def test_battery_without_causes_plants_none(battery) -> None:  # type: ignore[no-untyped-def]
    null = generate(PlantSpec(shape="battery", units=UNITS, seed=11), BatteryCauses.none())
    assert null.truth["causes"] == []
    assert all(n["kind"] != "co_exposed_machine" for n in null.truth["noise"])
    # the same seed draws the same lots and batches: the planted plant's bad lot and
    # drift window, left unplanted, show only the baseline
    lot = _cause(battery, "material_lot")
    truth = _truth_units(null)
    produced = null.edges["PRODUCED"].columns
    exposed = {
        u for b, u in zip(produced["src"], produced["dst"], strict=True) if b in lot["batches"]
    }
    shorted = {u for u, types in truth.items() if lot["defect_type"] in types}
    assert len(shorted & exposed) <= 10  # baseline 0.1 % of ~1,500 cells; planted: ~60
    power = [
        float(v)
        for p, v in zip(
            null.edges["RECORDED"].columns["dst"],
            null.edges["RECORDED"].columns["value"],
            strict=True,
        )
        if p == "P-WELD-POWER"
    ]
    assert min(power) > 2800 - 50  # noise only: nothing drifts below the LSL by a sigma


def test_battery_plant_refuses_the_drives_causes() -> None:
    with pytest.raises(ValidationFailed, match="BatteryCauses"):
        generate(PlantSpec(shape="battery", units=1_000), layout.Causes())
