"""Qualifications and calibrations as states in time: the model, the two domain modules
(:mod:`sqems.graph_model.qualification`, :mod:`sqems.graph_model.calibration`), the plant files
that carry them, and their RDF on every backend."""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from live_server import LiveServer

from sqems.datasets.files import read_plant
from sqems.datasets.load import load_plant
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import Edge, EmbeddedGraphStore, GraphStore
from sqems.graph_model.calibration import (
    CalibrationRecords,
    CalWindowKind,
    calibration_state_at,
    calibration_windows,
    straddles,
)
from sqems.graph_model.nodes import (
    Calibration,
    CalibrationVerdict,
    Machine,
    Operator,
    ProcessStep,
    Qualification,
    WorkInstruction,
)
from sqems.graph_model.qualification import (
    QualificationRecords,
    QualReason,
    instructions_followed,
    qualification_at,
)
from sqems.graphql import AccessStore, Role, create_app
from sqems.graphql.types import global_id
from sqems.ontologies.export import Part, to_graph
from sqems.ontologies.shacl import validate
from sqems.settings import Settings

CHI = ZoneInfo("America/Chicago")


def local(text: str) -> datetime:
    """A Chicago wall-clock time as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=CHI)


def day_end(text: str) -> datetime:
    """23:59:59 local on that Chicago day: how a due date given as a date is read."""
    return local(f"{text}T23:59:59")


# --- qualifications -----------------------------------------------------------------------


def _people() -> EmbeddedGraphStore:
    """Operators with every kind of qualification history at step S-30 (instruction
    WI-30, revision B until 2026-03-15, then C)."""
    s = EmbeddedGraphStore(None)
    nodes: list[Any] = [
        ProcessStep(uid="S-30", name="occlusion test", sequence=3),
        ProcessStep(uid="S-40", name="pack", sequence=4),
        WorkInstruction(uid="WI-30/B", instruction="WI-30", revision="B", title="t",
                        effective_at=local("2026-01-01T00:00")),
        WorkInstruction(uid="WI-30/C", instruction="WI-30", revision="C", title="t",
                        effective_at=local("2026-03-15T00:00")),
        # lapsed and requalified
        Operator(uid="OP-LAPSE", name="Lee"),
        Qualification(uid="Q-L1", granted_at=local("2026-01-05T08:00"),
                      expires_at=day_end("2026-02-28")),
        Qualification(uid="Q-L2", granted_at=local("2026-03-12T08:00"),
                      reason="requalified after the lapse of Q-L1"),
        # revoked
        Operator(uid="OP-REVOKED", name="Ray"),
        Qualification(uid="Q-R1", granted_at=local("2026-01-05T08:00"),
                      revoked_at=local("2026-03-20T14:00"), reason="failed the witnessed audit"),
        # trainee, granted later
        Operator(uid="OP-TRAINEE", name="Tia"),
        Qualification(uid="Q-T1", granted_at=local("2026-04-01T08:00")),
        # qualified on revision B only
        Operator(uid="OP-REVB", name="Bo"),
        Qualification(uid="Q-B1", granted_at=local("2026-01-05T08:00")),
        # old single window, no Qualification records
        Operator(uid="OP-OLD", name="Olga", qualified_from=local("2026-01-10T00:00"),
                 qualified_until=local("2026-03-01T00:00")),
        Operator(uid="OP-NEVER", name="Nia", qualified=False),
    ]  # fmt: skip
    s.upsert_nodes(nodes)
    s.upsert_edges(
        [
            Edge("FOR_STEP", "WI-30/B", "S-30"),
            Edge("FOR_STEP", "WI-30/C", "S-30"),
            Edge("HOLDS", "OP-LAPSE", "Q-L1"),
            Edge("HOLDS", "OP-LAPSE", "Q-L2"),
            Edge("QUALIFIES_FOR", "Q-L1", "S-30"),
            Edge("QUALIFIES_FOR", "Q-L2", "S-30"),
            Edge("HOLDS", "OP-REVOKED", "Q-R1"),
            Edge("QUALIFIES_FOR", "Q-R1", "S-30"),
            Edge("HOLDS", "OP-TRAINEE", "Q-T1"),
            Edge("QUALIFIES_FOR", "Q-T1", "S-30"),
            Edge("HOLDS", "OP-REVB", "Q-B1"),
            Edge("QUALIFIES_FOR", "Q-B1", "WI-30/B"),
        ]
    )
    return s


PEOPLE = _people()


def test_qualified_with_the_grant_that_holds_and_its_dates() -> None:
    q = qualification_at(PEOPLE, "OP-LAPSE", "S-30", None, local("2026-02-10T09:00"))
    assert (q.qualified, q.reason, q.record) == (True, QualReason.QUALIFIED, "Q-L1")
    assert (q.since, q.until) == (local("2026-01-05T08:00"), day_end("2026-02-28"))
    assert "since 2026-01-05 08:00 CST until 2026-02-28 23:59 CST" in q.sentence(CHI)


def test_a_lapse_says_since_when_and_when_requalified() -> None:
    q = qualification_at(PEOPLE, "OP-LAPSE", "S-30", None, local("2026-03-05T09:00"))
    assert (q.qualified, q.reason, q.record) == (False, QualReason.LAPSED, "Q-L1")
    assert (q.since, q.until) == (day_end("2026-02-28"), local("2026-03-12T08:00"))
    text = q.sentence(CHI)
    assert "lapsed 2026-02-28 23:59 CST" in text and "requalified 2026-03-12 08:00 CDT" in text


def test_a_requalification_is_a_new_grant_with_its_note() -> None:
    q = qualification_at(PEOPLE, "OP-LAPSE", "S-30", None, local("2026-03-12T09:00"))
    assert (q.qualified, q.record, q.since) == (True, "Q-L2", local("2026-03-12T08:00"))
    assert q.note == "requalified after the lapse of Q-L1" and q.until is None


def test_a_revocation_gives_its_reason_and_date() -> None:
    before = qualification_at(PEOPLE, "OP-REVOKED", "S-30", None, local("2026-03-20T13:59"))
    assert before.qualified and before.until == local("2026-03-20T14:00")
    assert before.note is None  # the reason is not news before the revocation
    q = qualification_at(PEOPLE, "OP-REVOKED", "S-30", None, local("2026-03-20T14:00"))
    assert (q.qualified, q.reason, q.record) == (False, QualReason.REVOKED, "Q-R1")
    assert (q.since, q.until, q.note) == (
        local("2026-03-20T14:00"),
        None,
        "failed the witnessed audit",
    )
    assert "was revoked 2026-03-20 14:00 CDT: failed the witnessed audit" in q.sentence(CHI)


def test_a_trainee_is_not_yet_qualified_until_the_grant() -> None:
    q = qualification_at(PEOPLE, "OP-TRAINEE", "S-30", None, local("2026-03-10T09:00"))
    assert (q.qualified, q.reason, q.record) == (False, QualReason.NOT_YET_QUALIFIED, "Q-T1")
    assert (q.since, q.until) == (None, local("2026-04-01T08:00"))
    assert "first qualified 2026-04-01 08:00 CDT" in q.sentence(CHI)


def test_a_step_without_a_grant_was_never_qualified() -> None:
    q = qualification_at(PEOPLE, "OP-LAPSE", "S-40", None, local("2026-02-10T09:00"))
    assert (q.qualified, q.reason, q.record) == (False, QualReason.NEVER_QUALIFIED, None)


def test_a_run_to_another_revision_than_the_one_held() -> None:
    on_b = qualification_at(PEOPLE, "OP-REVB", "S-30", "WI-30/B", local("2026-03-10T09:00"))
    assert on_b.qualified and on_b.record == "Q-B1"
    on_c = qualification_at(PEOPLE, "OP-REVB", "S-30", "WI-30/C", local("2026-03-16T09:00"))
    assert (on_c.qualified, on_c.reason, on_c.record) == (False, QualReason.OTHER_REVISION, "Q-B1")
    assert on_c.since == local("2026-03-15T00:00")  # the revision's effective date
    assert "another revision" in on_c.sentence(CHI)
    # a revision grant also qualifies for its step when the run's revision is not known
    assert qualification_at(PEOPLE, "OP-REVB", "S-30", None, local("2026-03-16T09:00")).qualified


def test_step_grants_decide_when_the_operator_holds_none_for_the_instruction() -> None:
    q = qualification_at(PEOPLE, "OP-LAPSE", "S-30", "WI-30/C", local("2026-03-16T09:00"))
    assert (q.qualified, q.record) == (True, "Q-L2")


def test_old_single_window_operators_read_as_before() -> None:
    at = qualification_at
    early = at(PEOPLE, "OP-OLD", "S-30", None, local("2026-01-09T09:00"))
    assert (early.reason, early.until, early.record) == (
        QualReason.NOT_YET_QUALIFIED, local("2026-01-10T00:00"), "OP-OLD")  # fmt: skip
    assert at(PEOPLE, "OP-OLD", "S-40", None, local("2026-02-01T09:00")).qualified
    late = at(PEOPLE, "OP-OLD", "S-30", None, local("2026-03-02T09:00"))
    assert (late.reason, late.since) == (QualReason.LAPSED, local("2026-03-01T00:00"))
    never = at(PEOPLE, "OP-NEVER", "S-30", None, local("2026-02-01T09:00"))
    assert (never.qualified, never.reason) == (False, QualReason.NEVER_QUALIFIED)


# --- calibrations --------------------------------------------------------------------------


def _cal(uid: str, performed: str, due: str | None, verdict: str, **more: Any) -> Calibration:
    return Calibration(
        uid=uid,
        performed_at=local(performed),
        due_at=day_end(due) if due else None,
        verdict=CalibrationVerdict(verdict),
        **more,
    )


def _windows(*cals: Calibration) -> list[Any]:
    s = EmbeddedGraphStore(None)
    s.upsert_nodes([Machine(uid="M-1", name="tester"), *cals])
    s.upsert_edges([Edge("CALIBRATES", c.uid, "M-1") for c in cals])
    return calibration_windows(s, "M-1")


def test_a_gap_between_passing_calibrations_is_an_overdue_window() -> None:
    (w,) = _windows(
        _cal("CAL-1", "2026-01-05T10:00", "2026-03-02", "pass"),
        _cal("CAL-2", "2026-03-10T10:00", None, "pass"),
    )
    assert (w.kind, w.start, w.end) == (
        CalWindowKind.OVERDUE,
        day_end("2026-03-02"),
        local("2026-03-10T10:00"),
    )
    assert (w.record, w.closed_by, w.calibrations) == ("CAL-1", "CAL-2", ("CAL-1", "CAL-2"))
    assert (
        "due 2026-03-02 (end of day, CST), until CAL-2 was performed 2026-03-10 10:00 CDT"
        in w.sentence(CHI)
    )
    with pytest.raises(NotFound, match="M-NONE"):
        calibration_windows(EmbeddedGraphStore(None), "M-NONE")


def test_a_failed_calibration_opens_the_look_back_and_a_failed_window() -> None:
    windows = _windows(
        _cal("CAL-1", "2026-01-05T10:00", "2026-04-05", "pass"),
        _cal("CAL-2", "2026-02-20T10:00", "2026-04-05", "fail", as_found=5.6, reference=5.0,
             tolerance=0.2, measured_unit="psi"),
        _cal("CAL-3", "2026-02-23T10:00", None, "adjusted", as_found=5.1, as_left=5.0,
             reference=5.0, tolerance=0.2),
    )  # fmt: skip
    kinds = {w.kind: w for w in windows}
    assert set(kinds) == {CalWindowKind.FOUND_OUT_OF_TOLERANCE, CalWindowKind.FAILED}
    back = kinds[CalWindowKind.FOUND_OUT_OF_TOLERANCE]
    assert (back.start, back.end) == (local("2026-01-05T10:00"), local("2026-02-20T10:00"))
    assert back.calibrations == ("CAL-1", "CAL-2") and "as found 5.6 psi" in back.detail
    assert "look-back" in back.sentence(CHI) and "CAL-1 of 2026-01-05 10:00 CST" in back.sentence(
        CHI
    )
    failed = kinds[CalWindowKind.FAILED]
    assert (failed.start, failed.end, failed.closed_by) == (
        local("2026-02-20T10:00"), local("2026-02-23T10:00"), "CAL-3")  # fmt: skip
    # the failed calibration's due date opens no overdue window: the failed one covers it
    assert not any(w.kind is CalWindowKind.OVERDUE for w in windows)


def test_an_adjustment_found_out_of_tolerance_looks_back_and_one_found_in_does_not() -> None:
    out = _cal("CAL-2", "2026-02-20T10:00", None, "adjusted", as_found=5.3, as_left=5.0,
               reference=5.0, tolerance=0.2)  # fmt: skip
    inside = _cal("CAL-2", "2026-02-20T10:00", None, "adjusted", as_found=5.15,
                  as_left=5.0, reference=5.0, tolerance=0.2)  # fmt: skip
    first = _cal("CAL-1", "2026-01-05T10:00", "2026-03-01", "pass")
    assert out.found_out_of_tolerance and not inside.found_out_of_tolerance
    (w,) = _windows(first, out)
    assert (w.kind, w.start, w.end) == (
        CalWindowKind.FOUND_OUT_OF_TOLERANCE, first.performed_at, out.performed_at)  # fmt: skip
    assert _windows(first, inside) == []


def test_a_limited_calibration_is_a_window_until_the_next() -> None:
    windows = _windows(
        _cal("CAL-1", "2026-01-05T10:00", "2026-04-01", "limited", limitation="below 10 psi only"),
        _cal("CAL-2", "2026-02-01T10:00", None, "pass"),
    )
    (w,) = windows
    assert (w.kind, w.closed_by) == (CalWindowKind.LIMITED, "CAL-2")
    assert (w.start, w.end) == (local("2026-01-05T10:00"), local("2026-02-01T10:00"))
    assert "below 10 psi only" in w.sentence(CHI)


def test_due_at_the_end_of_the_local_day_across_the_dst_change(tmp_path: Path) -> None:
    """Due dates given as dates in a Chicago plant's files: 2026-03-02 (CST) and
    2026-03-08, the day the clocks go forward (CDT from 02:00)."""
    plant = _plant_files(tmp_path, due=("2026-03-02", "2026-03-08"))
    s = EmbeddedGraphStore(None)
    load_plant(s, read_plant(plant))
    cals = {c.uid: c for c in s.find("Calibration") if isinstance(c, Calibration)}
    assert cals["CAL-1"].due_at == datetime(2026, 3, 3, 5, 59, 59, tzinfo=UTC)  # -6 h
    assert cals["CAL-2"].due_at == datetime(2026, 3, 9, 4, 59, 59, tzinfo=UTC)  # -5 h
    windows = [w for w in calibration_windows(s, "M-OCCL-1") if w.kind is CalWindowKind.OVERDUE]
    assert calibration_state_at(windows, local("2026-03-02T22:00")) == []
    assert [w.record for w in calibration_state_at(windows, local("2026-03-03T00:01"))] == ["CAL-1"]
    assert calibration_state_at(windows, local("2026-03-08T23:30")) == []
    assert [w.record for w in calibration_state_at(windows, local("2026-03-09T00:00:30"))] == [
        "CAL-2"
    ]
    assert "due 2026-03-08 (end of day, CDT)" in windows[-1].sentence(CHI)


def test_runs_that_straddle_a_window_boundary() -> None:
    windows = _windows(
        _cal("CAL-1", "2026-01-05T10:00", "2026-03-02", "pass"),
        _cal("CAL-2", "2026-03-10T10:00", None, "pass"),
    )
    across_due = straddles(windows, local("2026-03-02T22:00"), local("2026-03-03T02:00"))
    assert [w.kind for w in across_due] == [CalWindowKind.OVERDUE]
    across_fix = straddles(windows, local("2026-03-10T08:00"), local("2026-03-10T12:00"))
    assert [w.record for w in across_fix] == ["CAL-1"]
    assert straddles(windows, local("2026-03-04T08:00"), local("2026-03-04T12:00")) == []
    assert straddles(windows, local("2026-02-04T08:00"), local("2026-02-04T12:00")) == []
    assert [w.kind for w in straddles(windows, local("2026-03-02T22:00"), None)] == [
        CalWindowKind.OVERDUE
    ]


# --- reading in bulk ----------------------------------------------------------------------


class CountingStore:
    """A real store that counts the calls made to it."""

    def __init__(self, inner: GraphStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def _population(n: int) -> EmbeddedGraphStore:
    s = EmbeddedGraphStore(None)
    t0 = local("2026-01-05T08:00")
    nodes: list[Any] = [ProcessStep(uid="S-1", name="s", sequence=1)]
    edges = []
    for i in range(n):
        nodes += [
            Operator(uid=f"OP-{i}", name=f"o{i}"),
            Qualification(uid=f"Q-{i}", granted_at=t0, expires_at=t0 + timedelta(days=30 + i)),
            Machine(uid=f"M-{i}", name=f"m{i}"),
            Calibration(uid=f"CAL-{i}-1", performed_at=t0, due_at=t0 + timedelta(days=20)),
            Calibration(uid=f"CAL-{i}-2", performed_at=t0 + timedelta(days=25), verdict="fail"),
        ]
        edges += [
            Edge("HOLDS", f"OP-{i}", f"Q-{i}"),
            Edge("QUALIFIES_FOR", f"Q-{i}", "S-1"),
            Edge("CALIBRATES", f"CAL-{i}-1", f"M-{i}"),
            Edge("CALIBRATES", f"CAL-{i}-2", f"M-{i}"),
        ]
    s.upsert_nodes(nodes)
    s.upsert_edges(edges)
    return s


@pytest.mark.parametrize("n", [3, 60])
def test_bulk_reading_takes_the_same_few_store_calls_for_any_population(n: int) -> None:
    store = CountingStore(_population(n))
    quals = QualificationRecords.read(store, (f"OP-{i}" for i in range(n)))  # type: ignore[arg-type]
    cals = CalibrationRecords.read(store, (f"M-{i}" for i in range(n)))  # type: ignore[arg-type]
    assert sum(store.calls.values()) == 5, store.calls
    at = local("2026-02-20T08:00")
    states = [quals.at(f"OP-{i}", "S-1", None, at) for i in range(n)]
    assert sum(not s.qualified for s in states) == min(n, 16)  # expired before day 46
    windows = cals.all_windows()
    assert len(windows) == n
    kinds = {w.kind for w in windows["M-0"]}
    assert kinds == {
        CalWindowKind.OVERDUE,
        CalWindowKind.FOUND_OUT_OF_TOLERANCE,
        CalWindowKind.FAILED,
    }
    assert sum(store.calls.values()) == 5  # answering reads nothing more


# --- plant files, both backends, RDF ------------------------------------------------------


def _write(path: Path, header: list[str], rows: list[list[str]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return len(rows)


def _plant_files(root: Path, due: tuple[str, str] = ("2026-03-02", "2026-03-08")) -> Path:
    """A small Chicago plant directory with the new files: calibration columns given as
    local dates, work-instruction revisions, qualification history and a followed run."""
    tables: dict[tuple[str, str], tuple[list[str], list[list[str]]]] = {
        ("nodes", "Site"): (["uid", "name", "timezone"],
                            [["SITE-CHI", "Chicago", "America/Chicago"]]),
        ("nodes", "Machine"): (["uid", "name"], [["M-OCCL-1", "occlusion tester"]]),
        ("nodes", "ProcessStep"): (["uid", "name", "sequence"], [["S-30", "occlusion", "3"]]),
        ("nodes", "Operator"): (["uid", "name"], [["OP-1", "Lee"]]),
        ("nodes", "ProcessRun"): (["uid", "started_at", "ended_at", "shift"],
                                  [["R-1", "2026-03-16T14:00Z", "2026-03-16T15:00Z", "early"]]),
        ("nodes", "Calibration"): (
            ["uid", "performed_at", "due_at", "verdict", "as_found", "as_left", "reference",
             "tolerance", "measured_unit", "limitation", "performed_by"],
            [["CAL-1", "2026-01-05", due[0], "pass", "5.01", "5.01", "5", "0.2", "psi", "", "lab"],
             ["CAL-2", "2026-03-04T16:00:00Z", due[1], "limited", "5.1", "5.05", "5", "0.2",
              "psi", "below 10 psi only", "lab"]]),
        ("nodes", "WorkInstruction"): (
            ["uid", "instruction", "revision", "title", "effective_at"],
            [["WI-30/B", "WI-30", "B", "Occlusion test", "2026-01-01"],
             ["WI-30/C", "WI-30", "C", "Occlusion test", "2026-03-15"]]),
        ("nodes", "Qualification"): (
            ["uid", "granted_at", "expires_at", "revoked_at", "reason"],
            [["Q-1", "2026-01-05", "2026-02-28", "", ""],
             ["Q-2", "2026-03-12", "", "", "requalified after the lapse of Q-1"]]),
        ("edges", "CALIBRATES"): (["src", "dst"], [["CAL-1", "M-OCCL-1"], ["CAL-2", "M-OCCL-1"]]),
        ("edges", "FOR_STEP"): (["src", "dst"], [["WI-30/B", "S-30"], ["WI-30/C", "S-30"],
                                                  ["R-1", "S-30"]]),
        ("edges", "FOLLOWED"): (["src", "dst"], [["R-1", "WI-30/C"]]),
        ("edges", "OPERATED_BY"): (["src", "dst"], [["R-1", "OP-1"]]),
        ("edges", "ON"): (["src", "dst"], [["R-1", "M-OCCL-1"]]),
        ("edges", "HOLDS"): (["src", "dst"], [["OP-1", "Q-1"], ["OP-1", "Q-2"]]),
        ("edges", "QUALIFIES_FOR"): (["src", "dst"], [["Q-1", "WI-30/B"], ["Q-2", "WI-30/C"]]),
    }  # fmt: skip
    manifest: dict[str, Any] = {"format": "sqems-plant", "version": 1, "plant": "chi-test",
                                "nodes": {}, "edges": {}}  # fmt: skip
    for (kind, name), (header, rows) in tables.items():
        rel = f"{kind}/{name}.csv"
        manifest[kind][name] = {"file": rel, "rows": _write(root / rel, header, rows)}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_the_new_files_load_and_read_back_on_every_backend(
    store: GraphStore, tmp_path: Path
) -> None:
    report = load_plant(store, read_plant(_plant_files(tmp_path)))
    assert report.nodes["Qualification"] == 2 and report.edges["QUALIFIES_FOR"] == 2
    cal = store.get("CAL-2")
    assert isinstance(cal, Calibration)
    assert (cal.verdict, cal.as_found, cal.limitation) == (
        CalibrationVerdict.LIMITED, 5.1, "below 10 psi only")  # fmt: skip
    q1 = store.get("Q-1")
    assert isinstance(q1, Qualification)
    assert q1.granted_at == local("2026-01-05T00:00") and q1.expires_at == day_end("2026-02-28")
    wi = store.get("WI-30/C")
    assert isinstance(wi, WorkInstruction) and wi.effective_at == local("2026-03-15T00:00")

    followed = instructions_followed(store, ["R-1"])
    assert followed == {"R-1": "WI-30/C"}
    run_at = datetime(2026, 3, 16, 14, tzinfo=UTC)
    state = qualification_at(store, "OP-1", "S-30", followed["R-1"], run_at)
    assert (state.qualified, state.record) == (True, "Q-2")
    kinds = [w.kind for w in calibration_windows(store, "M-OCCL-1")]
    assert kinds == [CalWindowKind.OVERDUE, CalWindowKind.LIMITED, CalWindowKind.OVERDUE]

    # the same records as RDF conform to the shapes
    findings = validate(to_graph(Part.whole(store))).findings
    assert findings == [], findings[:3]


def test_a_bad_date_in_the_new_files_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    plant = _plant_files(tmp_path, due=("2026-02-30", "2026-03-08"))
    s = EmbeddedGraphStore(None)
    with pytest.raises(ValidationFailed, match=r"Calibration\.csv line 2: .*due_at.*2026-02-30"):
        load_plant(s, read_plant(plant))
    assert s.count() == 0


# --- GraphQL ------------------------------------------------------------------------------


def test_the_api_gives_calibration_windows_and_qualifications(tmp_path: Path) -> None:
    store = EmbeddedGraphStore(None)
    load_plant(store, read_plant(_plant_files(tmp_path / "plant")))
    access = AccessStore(None)
    app = create_app(Settings(data_dir=tmp_path / "data"), store=store, access=access)
    _, token = access.create_key("test viewer", Role.VIEWER)
    query = """
      query ($m: ID!, $o: ID!, $c: ID!) {
        machine: node(id: $m) { ... on Machine {
          calibrationWindows { kind start end record closedBy calibrations sentence } } }
        operator: node(id: $o) { ... on Operator {
          qualifications { uid grantedAt expiresAt reason workInstructions { uid revision } } } }
        cal: node(id: $c) { ... on Calibration {
          verdict asFound limitation foundOutOfTolerance } }
      }"""
    variables = {
        "m": global_id("Machine", "M-OCCL-1"),
        "o": global_id("Operator", "OP-1"),
        "c": global_id("Calibration", "CAL-2"),
    }
    with LiveServer(app) as server:
        response = httpx.post(
            f"{server.url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
    access.close()
    body = response.json()
    assert "errors" not in body, body
    windows = body["data"]["machine"]["calibrationWindows"]
    assert [w["kind"] for w in windows] == ["OVERDUE", "LIMITED", "OVERDUE"]
    assert windows[0]["record"] == "CAL-1" and windows[0]["closedBy"] == "CAL-2"
    assert "due 2026-03-02 (end of day, CST)" in windows[0]["sentence"]  # the site's zone
    quals = body["data"]["operator"]["qualifications"]
    assert [q["uid"] for q in quals] == ["Q-2", "Q-1"]  # newest grant first
    assert quals[0]["workInstructions"] == [{"uid": "WI-30/C", "revision": "C"}]
    assert body["data"]["cal"] == {
        "verdict": "LIMITED",
        "asFound": 5.1,
        "limitation": "below 10 psi only",
        "foundOutOfTolerance": False,
    }
