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

from sqems.datasets import PlantSpec, generate, load_plant, read_plant, write_plant
from sqems.datasets.files import plant_sections
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import Direction, EmbeddedGraphStore, Traceability
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


def test_an_edge_to_a_missing_node_names_the_file_and_its_batch(tmp_path: Path) -> None:
    write_plant(generate(PlantSpec(units=1_000, seed=1)), tmp_path)
    units = tmp_path / "nodes" / "Unit.csv"
    lines = units.read_text().splitlines()
    gone = lines.pop(5).split(",")[0]
    units.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValidationFailed, match=rf"edges/\w+\.csv \(rows from line \d+\): .*node {gone} is not"
    ):
        load_plant(EmbeddedGraphStore(None), read_plant(tmp_path), batch_size=300)
