"""The device history record a regulator accepts, on the infusion-pump plant (site in
America/Chicago across the 2026-03-08 daylight-saving change, a two-level BOM, every kind
of calibration and qualification lapse): site-local times with CST/CDT, due dates at the
end of the local day, every flag's reason and dates, straddling runs, the §7.6 look-back,
sub-assembly deviations rolled up, the release withheld until each deviation has a signed
disposition (library, GraphQL with the credential again, CLI), any uid as a file name,
and the printed PDF."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from live_server import LiveServer

from sqems.datasets import Plant, PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import (
    Batch,
    Calibration,
    CalibrationVerdict,
    DispositionDecision,
    Machine,
    ProcessRun,
    Shift,
)
from sqems.graph_model.open import EMBEDDED_FILE
from sqems.graph_model.store import Direction, Edge
from sqems.graphql import AccessStore, Role, create_app
from sqems.quality import dhr
from sqems.quality.audit import AuditTrail
from sqems.quality.capa import Actor
from sqems.settings import Settings

CHICAGO = ZoneInfo("America/Chicago")
ENGINEER = Actor("qa.lead", "engineer")


def local(at: datetime) -> str:
    """A time as the record must show it, computed here from the zone database."""
    return at.astimezone(CHICAGO).strftime("%Y-%m-%d %H:%M %Z")


@pytest.fixture(scope="module")
def plant() -> Plant:
    return generate(PlantSpec(shape="pump", units=2_000, seed=1))


@pytest.fixture
def store(plant: Plant) -> Iterator[GraphStore]:
    loaded = EmbeddedGraphStore(None)
    load_plant(loaded, plant_sections(plant))
    yield loaded
    loaded.close()


def state(plant: Plant, kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in plant.truth["states"] if s["id"] == kind)
    return found


def run_of(record: dhr.DeviceHistoryRecord, uid: str) -> dhr.Run:
    return next(r for r in record.runs if r.uid == uid)


def batch_of(store: GraphStore, run: str) -> str:
    (edge,) = store.edges([run], {"RAN": Direction.IN})
    return edge.src


def test_times_are_site_local_with_cst_and_cdt_on_either_side_of_the_dst_change(
    store: GraphStore, plant: Plant
) -> None:
    change = datetime.fromisoformat(plant.truth["dst_change"]["at"])
    batches = sorted(b.uid for b in store.find("Batch") if b.uid.startswith("WO/2026/"))
    records = [dhr.device_history(store, b) for b in batches]
    runs = [r for rec in records for r in rec.runs]
    before = [r for r in runs if r.ended_at is not None and r.ended_at < change]
    after = [r for r in runs if r.started_at > change]
    assert before and after
    assert records[0].zone.name == "America/Chicago"
    pages = {rec.batch.uid: dhr.render_html(rec) for rec in records}
    for run in (before[0], after[-1]):
        page = pages[batch_of(store, run.uid)]
        assert local(run.started_at) in page
        assert run.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") not in page
    assert local(before[0].started_at).endswith("CST")
    assert local(after[-1].started_at).endswith("CDT")
    # no time in the record is printed in UTC
    assert not any(re.search(r"\d\d:\d\d UTC", page) for page in pages.values())


def _machine_runs(store: GraphStore, machine: str, spans: list[tuple[str, str]]) -> list[str]:
    """A batch WO-DUE-1 with one run on ``machine`` per (start, end) site time."""
    runs = [
        ProcessRun(uid=f"RUN-DUE-{i}", started_at=datetime.fromisoformat(s),
                   ended_at=datetime.fromisoformat(e), shift=Shift.LATE)
        for i, (s, e) in enumerate(spans, 1)
    ]  # fmt: skip
    store.upsert_nodes([Batch(uid="WO-DUE-1", started_at=runs[0].started_at, quantity=10), *runs])
    store.upsert_edges(
        [Edge("RAN", "WO-DUE-1", r.uid) for r in runs] + [Edge("ON", r.uid, machine) for r in runs]
    )
    return [r.uid for r in runs]


def test_a_calibration_due_at_the_end_of_the_local_day_is_due_that_day(
    store: GraphStore, plant: Plant
) -> None:
    encoder = state(plant, "encoder-calibration-overdue")
    assert encoder["due"] == "2026-03-02T23:59:59-06:00 CST"
    on_time, late, straddling = _machine_runs(store, encoder["machine"], [
        ("2026-03-02T21:00:00-06:00", "2026-03-02T23:30:00-06:00"),
        ("2026-03-03T00:30:00-06:00", "2026-03-03T03:00:00-06:00"),
        ("2026-03-02T22:00:00-06:00", "2026-03-03T02:00:00-06:00"),
    ])  # fmt: skip
    record = dhr.device_history(store, "WO-DUE-1")
    ok = run_of(record, on_time)
    assert ok.calibrated and "OVERDUE" not in ok.calibration
    assert "due 2026-03-02 (end of day, CST)" in ok.calibration
    bad = run_of(record, late)
    assert not bad.calibrated and "calibration OVERDUE" in bad.calibration
    assert "due 2026-03-02 (end of day, CST)" in bad.calibration
    assert [f.state for f in bad.flags] == ["overdue"]
    crossed = run_of(record, straddling)
    assert [f.state for f in crossed.flags] == ["straddles overdue"]
    assert "straddles the due date: it started 2026-03-02 22:00 CST and ended 2026-03-03 " \
        "02:00 CST" in crossed.flags[0].text  # fmt: skip
    page = dhr.render_html(record)
    assert "OVERDUE since 2026-03-02" not in page and "end of day, CST" in page


def test_each_calibration_flag_says_why_and_when(store: GraphStore, plant: Plant) -> None:
    encoder = state(plant, "encoder-calibration-overdue")
    run = encoder["runs"][0]
    flag = next(f for f in run_of(dhr.device_history(store, batch_of(store, run)), run).flags)
    assert (flag.state, flag.records) == ("overdue", tuple(encoder["records"]))
    assert "CAL-ENC-1-01 was due 2026-03-02 (end of day, CST)" in flag.text
    assert f"until CAL-ENC-1-02 was performed {encoder['window']['end_local'][:10]}" in flag.text

    occl = state(plant, "occlusion-out-of-tolerance")
    run = occl["runs"][0]
    flag = run_of(dhr.device_history(store, batch_of(store, run)), run).flags[0]
    assert flag.state == "found out of tolerance"
    bad, good = occl["records"][1], occl["records"][0]
    assert f"found out of tolerance by {bad} 2026-04-01 10:00 CDT" in flag.text
    assert f"(as found {occl['as_found']:g} kPa" in flag.text
    assert f"reference {occl['reference']:g} ± {occl['tolerance']:g} kPa" in flag.text
    assert f"last good calibration {good} of 2026-03-24 10:00 CDT" in flag.text

    limited = state(plant, "run-in-bench-limited")
    run = limited["runs"][0]
    flag = run_of(dhr.device_history(store, batch_of(store, run)), run).flags[0]
    assert flag.state == "limited" and limited["limitation"] in flag.text
    assert limited["records"][0] in flag.text

    # a failed calibration: the machine is out from then until a good one
    store.upsert_nodes([
        Machine(uid="M-TEST-1", name="test gauge"),
        Calibration(uid="CAL-T-1", performed_at=datetime.fromisoformat("2026-03-01T10:00-06:00"),
                    due_at=datetime.fromisoformat("2026-03-31T23:59:59-05:00")),
        Calibration(uid="CAL-T-2", performed_at=datetime.fromisoformat("2026-03-10T10:00-05:00"),
                    verdict=CalibrationVerdict.FAIL, as_found=5.4, reference=5.0, tolerance=0.2,
                    measured_unit="N"),
    ])  # fmt: skip
    store.upsert_edges([Edge("CALIBRATES", c, "M-TEST-1") for c in ("CAL-T-1", "CAL-T-2")])
    looked, after = _machine_runs(store, "M-TEST-1", [
        ("2026-03-05T08:00:00-06:00", "2026-03-05T09:00:00-06:00"),
        ("2026-03-11T08:00:00-05:00", "2026-03-11T09:00:00-05:00"),
    ])  # fmt: skip
    record = dhr.device_history(store, "WO-DUE-1")
    (failed,) = run_of(record, after).flags
    assert failed.state == "failed"
    assert "CAL-T-2 failed 2026-03-10 10:00 CDT (as found 5.4 N, reference 5 ± 0.2 N)" in (
        failed.text
    )
    (doubt,) = run_of(record, looked).flags
    assert doubt.state == "found out of tolerance" and "CAL-T-1 of 2026-03-01 10:00 CST" in (
        doubt.text
    )


def test_each_qualification_flag_says_why_and_when(store: GraphStore, plant: Plant) -> None:
    def flag_of(kind: str) -> tuple[dict[str, Any], dhr.Run]:
        s = state(plant, kind)
        run = s["runs"][0]
        return s, run_of(dhr.device_history(store, batch_of(store, run)), run)

    lapsed, run = flag_of("qualification-lapsed")
    assert run.operator_qualified is False
    (flag,) = [f for f in run.flags if f.subject == "qualification"]
    start, end = lapsed["window"]["start_local"], lapsed["window"]["end_local"]
    assert flag.state == "lapsed" and flag.records == (lapsed["records"][0],)
    assert f"lapsed {start[:10]} {start[11:16]} CST" in flag.text
    assert f"requalified {end[:10]} {end[11:16]} CDT" in flag.text

    revoked, run = flag_of("qualification-revoked")
    (flag,) = [f for f in run.flags if f.subject == "qualification"]
    assert flag.state == "revoked" and flag.records == tuple(revoked["records"])
    assert f"was revoked {revoked['window']['start_local'][:10]} 15:00 CST" in flag.text
    assert "failing the practical re-assessment" in flag.text  # the reason, from the record

    trainee, run = flag_of("trainee-not-yet-qualified")
    (flag,) = [f for f in run.flags if f.subject == "qualification"]
    first = trainee["window"]["end_local"]
    assert flag.state == "not yet qualified"
    assert f"first qualified {first[:10]} {first[11:16]} CDT" in flag.text

    old, run = flag_of("qualified-on-old-revision")
    (flag,) = [f for f in run.flags if f.subject == "qualification"]
    assert flag.state == "other revision" and old["records"][0] in flag.text
    assert run.instruction is not None and run.instruction in flag.text

    record = dhr.device_history(store, batch_of(store, run.uid))
    assert any(d.key == f"{run.uid}:qualification" and "was not qualified at the time" in d.text
               for d in record.found)  # fmt: skip


def test_a_run_that_straddles_the_start_of_a_look_back_window_is_flagged_as_such(
    store: GraphStore, plant: Plant
) -> None:
    occl = state(plant, "occlusion-out-of-tolerance")
    (run,) = occl["straddling_runs"]
    record = dhr.device_history(store, batch_of(store, run))
    (flag,) = run_of(record, run).flags
    assert flag.state == "straddles found out of tolerance"
    started = local(run_of(record, run).started_at)
    assert f"the run straddles the last good calibration {occl['records'][0]}" in flag.text
    assert f"it started {started}" in flag.text
    assert f"{run}:calibration" in {d.key for d in record.found}
    assert "STRADDLING" in dhr.render_html(record)


def test_a_run_that_straddles_a_qualification_expiry_is_flagged_as_such(
    store: GraphStore, plant: Plant
) -> None:
    lapsed = state(plant, "qualification-lapsed")
    expiry = lapsed["window"]["start_local"]  # the end of the site's day, 23:59:59 CST
    (run,) = _machine_runs(store, "M-ENC-1", [
        ("2026-03-06T20:00:00-06:00", "2026-03-07T02:00:00-06:00"),
    ])  # fmt: skip
    store.upsert_edges([Edge("OPERATED_BY", run, lapsed["operator"]),
                        Edge("FOR_STEP", run, lapsed["step"])])  # fmt: skip
    found = run_of(dhr.device_history(store, "WO-DUE-1"), run)
    assert found.operator_qualified is True  # qualified when it started
    (flag,) = [f for f in found.flags if f.subject == "qualification"]
    assert flag.state == "straddles lapsed" and flag.records == (lapsed["records"][0],)
    assert "qualified when the run started 2026-03-06 20:00 CST but not when it ended " \
        "2026-03-07 02:00 CST" in flag.text  # fmt: skip
    assert f"lapsed {expiry[:10]} 23:59 CST" in flag.text


def test_the_look_back_lists_exactly_the_runs_since_the_last_good_calibration(
    store: GraphStore, plant: Plant
) -> None:
    occl = state(plant, "occlusion-out-of-tolerance")
    batch = occl["batches"][0]
    record = dhr.device_history(store, batch)
    (look,) = record.look_back
    assert look.machine == occl["machine"] == "M-OCCL-1"
    assert {x.run for x in look.runs} == set(occl["runs"]) | set(occl["straddling_runs"])
    assert {x.run for x in look.runs if x.this_batch} == {
        r.uid for r in record.runs if r.machine == "M-OCCL-1"
    }
    assert all(x.batch == batch_of(store, x.run) for x in look.runs)
    page = dhr.render_html(record)
    assert "Look-back" in page and "§7.6" in page
    for x in look.runs:
        assert x.run in page and local(x.started_at) in page
    # a batch the machine never ran in that window has no look-back
    assert dhr.device_history(store, "WO/2026/001").look_back == []


def test_a_pump_record_shows_its_motor_batch_on_the_overdue_encoder(
    store: GraphStore, plant: Plant
) -> None:
    encoder = state(plant, "encoder-calibration-overdue")
    motor_run = encoder["runs"][0]
    motor_batch = batch_of(store, motor_run)
    pump = next(b for b in encoder["pump_batches"]
                if motor_batch in dhr.device_history(store, b).subassembly_batches)  # fmt: skip
    record = dhr.device_history(store, pump)
    rolled = {(d.batch, d.key): d for d in record.rolled_up}
    deviation = rolled[(motor_batch, f"{motor_run}:calibration")]
    assert "calibration OVERDUE" in deviation.text and "M-ENC-1" in deviation.text
    page = dhr.render_html(record)
    assert motor_batch in page and f"{motor_run}:calibration" in page
    assert not record.release.approved and motor_batch in record.release.statement


def test_release_is_withheld_until_each_deviation_has_a_signed_disposition(
    store: GraphStore, plant: Plant, tmp_path: Path
) -> None:
    encoder = state(plant, "encoder-calibration-overdue")
    pump = encoder["pump_batches"][1]
    record = dhr.device_history(store, pump)
    waiting = record.release.waiting
    assert waiting and not record.release.approved and record.approved_for_distribution == 0
    assert record.release.statement.startswith("Release withheld")
    assert "approved for distribution:" not in dhr.render_html(record).lower()
    trail = AuditTrail(None, key=b"k" * 32)
    with pytest.raises(NotFound, match="is not in the record of batch"):
        dhr.dispose(store, trail, ENGINEER, pump, "RUN-NONE:calibration", "use as is", "x")
    with pytest.raises(ValidationFailed, match="is not a disposition"):
        dhr.dispose(store, trail, ENGINEER, pump, waiting[0].key, "keep it", "x")
    with pytest.raises(ValidationFailed, match="needs a rationale"):
        dhr.dispose(store, trail, ENGINEER, pump, waiting[0].key, "use as is", "  ")

    for d in waiting:
        dhr.dispose(store, trail, ENGINEER, pump, d.key, "use-as-is",
                    f"assessed {d.key}: results re-verified, within limits")  # fmt: skip
    record = dhr.device_history(store, pump)
    assert record.release.approved and record.approved_for_distribution == record.releasable > 0
    assert record.release.statement.startswith("Approved for distribution")
    page = dhr.render_html(record)
    assert "awaiting disposition" not in page
    for d in record.all_deviations:
        sign = d.disposition
        assert sign is not None and sign.batch == d.batch
        assert (sign.decision, sign.signer) == (DispositionDecision.USE_AS_IS, "qa.lead")
        assert f"qa.lead, {local(sign.signed_at)}" in page
        (entry,) = trail.entries(sign.uid)
        assert (entry.actor, entry.meaning) == ("qa.lead", "disposition approved: use as is")
    assert trail.verify().ok

    # a disposition that rejects the batch ends its release
    dhr.dispose(store, trail, ENGINEER, pump, waiting[0].key, "reject batch", "not trusted")
    rejected = dhr.device_history(store, pump).release
    assert not rejected.approved and "rejected by the disposition" in rejected.statement

    pdf = dhr.render_pdf(page, tmp_path / "dhr.pdf")
    data = pdf.read_bytes()
    assert (
        data.startswith(b"%PDF-") and data.count(b"/Type /Page") - data.count(b"/Type /Pages") >= 2
    )


def test_the_record_is_printable(store: GraphStore, plant: Plant) -> None:
    page = dhr.render_html(dhr.device_history(store, state(plant, "occlusion-out-of-tolerance")
                                              ["batches"][0]))  # fmt: skip
    assert "@page { size: A4" in page and "@media print" in page
    assert "<thead>" in page  # headers repeat on every printed page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_any_uid_makes_a_safe_file_name() -> None:
    assert dhr.file_name("WO/2026/001") == "DHR-WO_2026_001.html"
    assert dhr.file_name("../x:y*z", ".pdf") == "DHR-_x_y_z.pdf"
    assert dhr.file_name("...") == "DHR-batch.html"
    assert "/" not in dhr.file_name("a/" * 200) and len(dhr.file_name("a/" * 200)) < 200


# --- GraphQL and the CLI --------------------------------------------------------------

PASSWORD = "amber lake 19"
DISPOSE = (
    Path(dhr.__file__).parents[1] / "graphql" / "operations" / "dispose_deviation.graphql"
).read_text()
"""The published operation, as a client sends it."""
RECORD = """query($b: String!) { deviceHistoryRecord(batch: $b) {
  released release fileName allDeviations { batch key signer } } }"""


def _post(url: str, token: str, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables},
                          headers={"Authorization": f"Bearer {token}"}, timeout=60)  # fmt: skip
    assert response.status_code == 200 and "Traceback" not in response.text
    body: dict[str, Any] = response.json()
    return body


def _dispose(url: str, token: str, batch: str, key: str, credential: str) -> dict[str, Any]:
    return _post(url, token, DISPOSE, batch=batch, deviation=key, decision="use as is",
                 rationale="re-verified", credential=credential)  # fmt: skip


def test_dispose_deviation_over_graphql_needs_the_credential_again(
    store: GraphStore, plant: Plant, tmp_path: Path
) -> None:
    access = AccessStore(tmp_path / "access.db")
    eng = access.create_key("erik", Role.ENGINEER)[1]
    viewer = access.create_key("val", Role.VIEWER)[1]
    access.reset_signing_password("erik", PASSWORD)
    batch = state(plant, "occlusion-out-of-tolerance")["batches"][0]
    settings = Settings(data_dir=tmp_path, audit_busy_timeout_s=0.3)
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        before = _post(server.url, eng, RECORD, b=batch)["data"]["deviceHistoryRecord"]
        assert before["released"] is False and before["fileName"] == dhr.file_name(batch)
        keys = [d["key"] for d in before["allDeviations"]]
        wrong = _dispose(server.url, eng, batch, keys[0], "not my password")
        assert wrong["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        denied = _dispose(server.url, viewer, batch, keys[0], viewer)
        assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        unsigned = _post(server.url, eng, RECORD, b=batch)["data"]["deviceHistoryRecord"]
        assert all(d["signer"] is None for d in unsigned["allDeviations"])
        for i, key in enumerate(keys):
            signed = _dispose(server.url, eng, batch, key, PASSWORD if i % 2 else eng)[
                "data"]["disposeDeviation"]  # fmt: skip
            assert (signed["signer"], signed["deviation"]) == ("erik", key)
        after = _post(server.url, eng, RECORD, b=batch)["data"]["deviceHistoryRecord"]
        assert after["released"] is True and after["release"].startswith("Approved")
    access.close()


def _sqems(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQEMS_DATA_DIR": str(data), "COLUMNS": "200"}
    env.pop("SQEMS_GRAPH_URI", None)
    env.pop("SQEMS_SITE_TIMEZONE", None)
    return subprocess.run(
        [sys.executable, "-c", "from sqems.cli import main; main()", *args], cwd=data,
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_the_cli_writes_a_slash_uid_to_a_safe_file_and_signs_a_disposition(
    plant: Plant, tmp_path: Path
) -> None:
    with EmbeddedGraphStore(tmp_path / EMBEDDED_FILE) as disk:
        load_plant(disk, plant_sections(plant))
    batch = state(plant, "qualification-revoked")["runs"][0].removeprefix("RUN-").rsplit("-", 1)[0]
    assert "/" in batch
    done = _sqems(tmp_path, "report", "dhr", batch)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Release withheld" in done.stdout
    written = tmp_path / dhr.file_name(batch)
    assert written.is_file() and f"batch {batch}" in written.read_text()

    with EmbeddedGraphStore(tmp_path / EMBEDDED_FILE, read_only=True) as disk:
        keys = [d.key for d in dhr.device_history(disk, batch).all_deviations]
    signed = _sqems(tmp_path, "report", "disposition", batch, keys[0], "--decision", "rework",
                    "--rationale", "operator retrained; units re-inspected")  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert f"signed: {keys[0]}" in signed.stdout and "disposition approved: rework" in (
        signed.stdout
    )
    refused = _sqems(tmp_path, "report", "disposition", batch, "NO-SUCH-KEY", "--decision",
                     "scrap", "--rationale", "x")  # fmt: skip
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "is not in the record" in refused.stderr


def test_a_disposition_is_kept_and_read_back_on_every_store(make_store: Any) -> None:
    with make_store() as backend:
        backend.upsert_nodes([
            Machine(uid="M-ENC-9", name="encoder station"),
            Calibration(uid="CAL-9", performed_at=datetime.fromisoformat("2026-02-02T10:00-06:00"),
                        due_at=datetime.fromisoformat("2026-03-02T23:59:59-06:00")),
        ])  # fmt: skip
        backend.upsert_edges([Edge("CALIBRATES", "CAL-9", "M-ENC-9")])
        late, on_time = _machine_runs(backend, "M-ENC-9", [
            ("2026-03-03T00:30:00-06:00", "2026-03-03T03:00:00-06:00"),
            ("2026-03-02T21:00:00-06:00", "2026-03-02T23:30:00-06:00"),
        ])  # fmt: skip
        trail = AuditTrail(None, key=b"k" * 32)
        record = dhr.device_history(backend, "WO-DUE-1")
        assert [d.key for d in record.release.waiting] == [f"{late}:calibration"]
        assert run_of(record, on_time).calibrated
        dhr.dispose(backend, trail, ENGINEER, "WO-DUE-1", f"{late}:calibration",
                    DispositionDecision.SCRAP, "units quarantined and scrapped")  # fmt: skip
        again = dhr.device_history(backend, "WO-DUE-1")
        assert again.release.approved
        (done,) = again.all_deviations
        assert done.disposition is not None and done.disposition.signer == "qa.lead"
        assert done.disposition.decision is DispositionDecision.SCRAP
