"""The infusion-pump plant: a two-level BOM at a site in America/Chicago across a
daylight-saving change, with calibration and qualification records and planted states."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from sqems.datasets import PlantSpec, generate, load_plant, read_plant, write_plant
from sqems.datasets import pump_layout as pl
from sqems.datasets.files import plant_sections
from sqems.datasets.plant import Plant
from sqems.datasets.pump import level_sizes
from sqems.errors import ValidationFailed
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore
from sqems.graph_model.calibration import calibration_windows
from sqems.graph_model.nodes import Batch, Calibration, Site
from sqems.graph_model.qualification import QualificationRecords, QualReason

SMALL = 3_000


@pytest.fixture(scope="module")
def pump() -> Plant:
    return generate(PlantSpec(shape="pump"))


@pytest.fixture(scope="module")
def loaded(pump: Plant):  # type: ignore[no-untyped-def]
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(pump))
    yield store
    store.close()


def _state(plant: Plant, state_id: str) -> dict:  # type: ignore[type-arg]
    return next(s for s in plant.truth["states"] if s["id"] == state_id)


def _column(plant: Plant, kind: str, name: str, column: str) -> list[str]:
    tables = plant.nodes if kind == "nodes" else plant.edges
    return list(tables[name].columns[column])


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(directory).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_the_default_size_is_quick_and_has_the_issues_figures() -> None:
    began = time.perf_counter()
    plant = generate(PlantSpec(shape="pump"))
    assert time.perf_counter() - began < 5
    counts = plant.truth["counts"]
    assert 2_000 <= counts["pumps"] <= 2_300
    assert 280 <= counts["pumps_in_look_back"] <= 420
    assert level_sizes(10_000) == (counts["boards"], counts["motor_modules"], counts["pumps"])


def test_same_seed_same_plant_and_the_seed_matters(tmp_path: Path) -> None:
    spec = PlantSpec(shape="pump", units=SMALL, seed=5)
    write_plant(generate(spec), tmp_path / "a")
    write_plant(generate(spec), tmp_path / "b")
    write_plant(generate(PlantSpec(shape="pump", units=SMALL, seed=6)), tmp_path / "c")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_a_start_other_than_the_calendars_is_refused() -> None:
    spec = PlantSpec(shape="pump", start=datetime.fromisoformat("2026-06-01T00:00:00+00:00"))
    with pytest.raises(ValidationFailed, match="own calendar"):
        generate(spec)


def test_each_pump_holds_one_board_and_two_motor_modules(pump: Plant) -> None:
    src = _column(pump, "edges", "ASSEMBLED_INTO", "src")
    dst = _column(pump, "edges", "ASSEMBLED_INTO", "dst")
    pumps = [u for u in _column(pump, "nodes", "Unit", "uid") if u.startswith("SN-IP")]
    parts: dict[str, list[str]] = {}
    for child, parent in zip(src, dst, strict=True):
        parts.setdefault(parent, []).append(child)
    assert sorted(parts) == sorted(pumps)
    for children in parts.values():
        assert sorted(c[:5] for c in children) == ["SN-CB", "SN-MM", "SN-MM"]
    assert len(set(src)) == len(src)  # a part goes into one pump
    uses = set(
        zip(
            _column(pump, "edges", "USES", "src"),
            _column(pump, "edges", "USES", "dst"),
            strict=True,
        )
    )
    assert ("PRD-INFUSION-PUMP", "PRD-PUMP-BOARD") in uses
    assert ("PRD-INFUSION-PUMP", "PRD-MOTOR-MODULE") in uses


def test_production_spans_the_dst_change_with_shifts_on_the_sites_clock(pump: Plant) -> None:
    (site,) = pump.nodes["Site"].records()
    assert Site.model_validate(site).timezone == "America/Chicago"
    starts = _column(pump, "nodes", "ProcessRun", "started_at")
    shifts = _column(pump, "nodes", "ProcessRun", "shift")
    offsets = set()
    for text, shift in zip(starts, shifts, strict=True):
        local = datetime.fromisoformat(text).astimezone(pl.ZONE)
        offsets.add(local.utcoffset().total_seconds() / 3600)  # type: ignore[union-attr]
        expected = "early" if 6 <= local.hour < 14 else "late" if 14 <= local.hour < 22 else "night"
        assert shift == expected, (text, local)
    assert offsets == {-6.0, -5.0}
    runs = [datetime.fromisoformat(t).timestamp() for t in starts]
    assert min(runs) < pl.DST_CHANGE < max(runs)
    assert datetime.fromtimestamp(min(runs), pl.ZONE).month == 2
    assert datetime.fromtimestamp(max(runs), pl.ZONE).month == 4


def test_calibrations_fall_due_at_the_end_of_a_local_day(pump: Plant) -> None:
    cals = [Calibration.model_validate(r) for r in pump.nodes["Calibration"].records()]
    verdicts = {c.verdict.value for c in cals}
    assert verdicts == {"pass", "adjusted", "limited", "fail"}
    for cal in cals:
        assert cal.due_at is not None
        assert cal.due_at.astimezone(pl.ZONE).time().isoformat() == "23:59:59"
        assert cal.as_found is not None and cal.as_left is not None
    (failed,) = [c for c in cals if c.verdict.value == "fail"]
    assert failed.found_out_of_tolerance
    machines = set(_column(pump, "edges", "CALIBRATES", "dst"))
    assert machines == set(_column(pump, "nodes", "Machine", "uid"))


def test_every_planted_state_is_named_with_its_window(pump: Plant) -> None:
    states = {s["id"]: s for s in pump.truth["states"]}
    assert set(states) == {
        "encoder-calibration-overdue",
        "occlusion-out-of-tolerance",
        "run-in-bench-limited",
        "adjusted-calibrations",
        *(s.id for s in pl.OPERATOR_STATES),
    }
    cal_uids = set(_column(pump, "nodes", "Calibration", "uid"))
    qual_uids = set(_column(pump, "nodes", "Qualification", "uid"))
    run_uids = set(_column(pump, "nodes", "ProcessRun", "uid"))
    for state in states.values():
        assert state["records"], state["id"]
        assert set(state["records"]) <= (cal_uids | qual_uids)
        assert state["expected_effect"]
        if state["window"] is None:
            continue
        window = state["window"]
        assert window["start"] < window["end"]
        assert window["start_local"].endswith((" CST", " CDT"))
        assert state["runs"], state["id"]
        assert set(state["runs"]) <= run_uids
    overdue = states["encoder-calibration-overdue"]
    assert overdue["window"]["start_local"] == "2026-03-02T23:59:59-06:00 CST"
    assert overdue["batches"] and overdue["pump_batches"]
    occlusion = states["occlusion-out-of-tolerance"]
    assert occlusion["repaired"]["runs_while_failed"] == []
    assert not occlusion["as_found"] >= occlusion["reference"] - occlusion["tolerance"]
    assert overdue["straddling_runs"]  # a run started before the due time, ended after it
    lots = pump.truth["noise"][0]["lots"]
    assert {lot["line"] for lot in lots} == {"LINE-BRD", "LINE-MOT", "LINE-PUMP"}
    assert all(lot["pumps_outside"] > lot["pumps_in_window"] for lot in lots)


def test_the_states_read_back_through_the_calibration_and_qualification_model(
    pump: Plant, loaded: GraphStore
) -> None:
    kinds = {w.kind.value: w for w in calibration_windows(loaded, pl.OCCLUSION_TESTER)}
    look_back = kinds["found out of tolerance"]
    occlusion = _state(pump, "occlusion-out-of-tolerance")
    assert look_back.start.isoformat().replace("+00:00", "Z") == occlusion["window"]["start"]
    overdue = calibration_windows(loaded, pl.ENCODER_STATION)[0]
    assert overdue.kind.value == "overdue"
    reasons = {
        pl.LAPSED.id: QualReason.LAPSED,
        pl.REVOKED.id: QualReason.REVOKED,
        pl.TRAINEE.id: QualReason.NOT_YET_QUALIFIED,
        pl.OLD_REVISION.id: QualReason.OTHER_REVISION,
    }
    records = QualificationRecords.read(loaded, [s.operator for s in pl.OPERATOR_STATES])
    for state in pl.OPERATOR_STATES:
        truth = _state(pump, state.id)
        for run_uid in truth["runs"]:
            run = loaded.get(run_uid)
            followed = [e.dst for e in loaded.edges([run_uid], {"FOLLOWED": Direction.OUT})]
            got = records.at(state.operator, state.step, followed[0], run.started_at)  # type: ignore[union-attr]
            assert not got.qualified and got.reason is reasons[state.id], (run_uid, got)


def test_occlusion_escapes_concentrate_in_the_look_back_window(pump: Plant) -> None:
    counts = pump.truth["counts"]
    inside, outside = counts["occlusion_rate_in_look_back"], counts["occlusion_rate_outside"]
    assert inside > 0.08 and outside < 0.02 and inside > 8 * outside
    complaints_in = counts["occlusion_complaint_rate_in_look_back"]
    assert complaints_in > 5 * max(counts["occlusion_complaint_rate_outside"], 0.002)
    nothing = generate(PlantSpec(shape="pump"), pl.PumpCauses.none()).truth["counts"]
    assert nothing["occlusion_rate_in_look_back"] < 0.03


def test_the_trainees_runs_carry_no_extra_defects(pump: Plant) -> None:
    """With nothing planted the plant draws the same numbers: the trainee's motor modules
    carry exactly the same defects, and no more than the line's others."""
    nothing = generate(PlantSpec(shape="pump"), pl.PumpCauses.none())
    trainee = _state(pump, pl.TRAINEE.id)
    runs = set(trainee["runs"])
    batches = {r.removeprefix("RUN-").rsplit("-", 1)[0] for r in runs}
    produced = zip(
        _column(pump, "edges", "PRODUCED", "src"),
        _column(pump, "edges", "PRODUCED", "dst"),
        strict=True,
    )
    theirs = {u for b, u in produced if b in batches}
    assert len(theirs) == trainee["units"] > 200

    def defective(plant: Plant) -> set[str]:
        return set(plant.truth_units.columns["uid"])

    assert defective(pump) & theirs == defective(nothing) & theirs
    motors = [u for u in _column(pump, "nodes", "Unit", "uid") if u.startswith("SN-MM")]
    rate_all = len(defective(pump) & set(motors)) / len(motors)
    rate_trainee = len(defective(pump) & theirs) / len(theirs)
    assert rate_trainee <= rate_all + 3 * np.sqrt(rate_all / len(theirs))


def test_it_loads_from_its_files_and_a_batch_uid_with_slashes_works(
    pump: Plant, tmp_path: Path
) -> None:
    write_plant(pump, tmp_path / "pump")
    store = EmbeddedGraphStore(None)
    try:
        report = load_plant(store, read_plant(tmp_path / "pump"))
        assert report.nodes["Batch"] == len(pump.nodes["Batch"])
        batch = store.get("WO/2026/001")
        assert isinstance(batch, Batch)
        runs = [e.dst for e in store.edges(["WO/2026/001"], {"RAN": Direction.OUT})]
        assert sorted(runs) == ["RUN-WO/2026/001-10", "RUN-WO/2026/001-20", "RUN-WO/2026/001-30"]
    finally:
        store.close()


def test_it_loads_into_every_store(store: GraphStore) -> None:
    plant = generate(PlantSpec(shape="pump", units=1_000, seed=3))
    report = load_plant(store, plant_sections(plant))
    assert report.nodes["Qualification"] == len(plant.nodes["Qualification"])
    assert report.edges["FOLLOWED"] == len(plant.edges["FOLLOWED"])
    assert isinstance(store.get("WO/2026/002"), Batch)
    assert store.get("WI-PUMP-20/D") is not None


def test_the_old_revision_effect_stays_inside_its_window(pump: Plant) -> None:
    """Door misfits are added only to the runs of revision D the operator made before
    being trained on it: their other runs carry what they carry with nothing planted."""
    nothing = generate(PlantSpec(shape="pump"), pl.PumpCauses.none())
    state = _state(pump, pl.OLD_REVISION.id)
    inside = {r.removeprefix("RUN-").rsplit("-", 1)[0] for r in state["runs"]}
    runs = zip(
        _column(pump, "edges", "OPERATED_BY", "src"),
        _column(pump, "edges", "OPERATED_BY", "dst"),
        strict=True,
    )
    theirs = {
        r.removeprefix("RUN-").rsplit("-", 1)[0]
        for r, op in runs
        if op == pl.OLD_REVISION.operator and r.endswith("-20")
    }
    assert inside < theirs
    produced = list(
        zip(
            _column(pump, "edges", "PRODUCED", "src"),
            _column(pump, "edges", "PRODUCED", "dst"),
            strict=True,
        )
    )
    outside_units = {u for b, u in produced if b in theirs - inside}
    inside_units = {u for b, u in produced if b in inside}

    def misfits(plant: Plant) -> set[str]:
        rows = plant.truth_units.columns
        return {
            u
            for u, types in zip(rows["uid"], rows["defect_types"], strict=True)
            if "DT-DOOR-MISFIT" in types.split(";")
        }

    assert misfits(pump) & outside_units == misfits(nothing) & outside_units
    assert len(misfits(pump) & inside_units) > 3 * max(1, len(misfits(nothing) & inside_units))


def test_the_command_line_generates_and_loads_it(tmp_path: Path) -> None:
    env = {**os.environ, "SQEMS_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    env.pop("SQEMS_GRAPH_URI", None)
    plant = tmp_path / "pump"
    args = ["generate", "--shape", "pump", "--units", "1000", "--out", str(plant), "--load"]
    done = subprocess.run(
        [sys.executable, "-c", "from sqems.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "loaded" in done.stdout
    assert (plant / "nodes" / "Qualification.csv").is_file()
