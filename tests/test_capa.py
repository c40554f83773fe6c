"""The CAPA workflow on every store, and its hash-chained audit trail: moves enforced
with clear errors, every change recorded before and after, signatures, and tampering
found by verification."""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import struct
import threading
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import GraphStore
from sqems.graph_model.nodes import (
    Alarm,
    CapaSource,
    CapaStatus,
    Complaint,
    Customer,
    Priority,
    Severity,
)
from sqems.graph_model.store import Direction
from sqems.quality.audit import GENESIS, AuditTrail, digest, verify_export
from sqems.quality.capa import CLOSURE_MEANING, Actor, Workflow

INSPECTOR = Actor("ines", "inspector")
ENGINEER = Actor("erik", "engineer")
VERIFIER = Actor("vera", "engineer")
DUE = datetime(2030, 1, 31, tzinfo=UTC)


@pytest.fixture
def flow(store: GraphStore) -> Workflow:
    now = datetime(2026, 3, 1, 8, tzinfo=UTC)
    store.upsert_nodes([
        Customer(uid="CUST-1", name="Atlas"),
        Complaint(uid="CMP-1", received_at=now, description="housing cracked on delivery"),
        Alarm(uid="AL-1", raised_at=now, rule="nelson_1", severity=Severity.CRITICAL,
              message="reflow peak beyond 3 sigma"),
    ])  # fmt: skip
    return Workflow(store, AuditTrail(None))


def to_verifying(flow: Workflow, uid: str) -> None:
    flow.triage(ENGINEER, uid, Priority.HIGH)
    flow.assign(ENGINEER, uid, owner="olga", verifier="vera", due_at=DUE)
    flow.start(ENGINEER, uid)
    flow.record_root_cause(ENGINEER, uid, five_why=["housing cracked", "resin brittle",
                                                     "lot LOT-7 out of spec"])  # fmt: skip
    flow.add_action(ENGINEER, uid, "containment", "hold batches of LOT-7")
    flow.add_action(ENGINEER, uid, "corrective", "incoming test of resin moisture",
                    evidence=["sha256:" + "a" * 64])  # fmt: skip
    flow.submit(ENGINEER, uid)


def test_a_capa_from_a_complaint_walks_to_a_signed_closure(flow: Workflow) -> None:
    capa = flow.from_complaint(INSPECTOR, "CMP-1")
    assert (capa.status, capa.source, capa.reported_by) == (
        CapaStatus.REPORTED,
        CapaSource.COMPLAINT,
        "ines",
    )
    assert [e.dst for e in flow.store.edges([capa.uid], {"ADDRESSES": Direction.OUT})] == ["CMP-1"]
    to_verifying(flow, capa.uid)
    closed = flow.verify(VERIFIER, capa.uid, effective=True, note="no cracks in 3 lots since")
    assert closed.status is CapaStatus.CLOSED and closed.effective and closed.closed_at
    assert json.loads(closed.corrective)[0]["evidence"] == ["sha256:" + "a" * 64]

    history = flow.history(capa.uid)
    assert [e.action for e in history] == [
        "reported", "triage: reported -> triaged", "assign: triaged -> assigned",
        "start: assigned -> in_action", "root cause recorded", "containment action added",
        "corrective action added", "submit: in_action -> verifying",
        "verify: verifying -> closed", "signature",
    ]  # fmt: skip
    assign = history[2]
    assert assign.before is not None and assign.after is not None
    assert (assign.before["owner"], assign.after["owner"]) == (None, "olga")
    signature = history[-1]
    assert (signature.actor, signature.meaning) == ("vera", CLOSURE_MEANING)
    assert signature.after is not None and signature.after["status"] == "closed"
    assert flow.trail.verify().ok


def test_moves_out_of_order_are_refused_with_what_is_possible(flow: Workflow) -> None:
    capa = flow.report(INSPECTOR, "burr on flange", addresses=["AL-1"])
    with pytest.raises(ValidationFailed, match=r"is reported: it cannot start \(from here it "
                                               r"can: triage\)"):  # fmt: skip
        flow.start(ENGINEER, capa.uid)
    flow.triage(ENGINEER, capa.uid, Priority.LOW)
    with pytest.raises(ValidationFailed, match="must carry a time zone and come after"):
        flow.assign(ENGINEER, capa.uid, owner="o", verifier="v", due_at=capa.opened_at)
    flow.assign(ENGINEER, capa.uid, owner="olga", verifier="vera", due_at=DUE)
    flow.start(ENGINEER, capa.uid)
    with pytest.raises(ValidationFailed, match="has no root cause yet"):
        flow.submit(ENGINEER, capa.uid)
    flow.record_root_cause(ENGINEER, capa.uid, eight_d={"D4": "worn deburring tool"})
    with pytest.raises(ValidationFailed, match="has no corrective action yet"):
        flow.submit(ENGINEER, capa.uid)
    with pytest.raises(ValidationFailed, match="8D disciplines are D1 to D8, not D9"):
        flow.record_root_cause(ENGINEER, capa.uid, eight_d={"D9": "x"})
    with pytest.raises(ValidationFailed, match="an action is containment or corrective"):
        flow.add_action(ENGINEER, capa.uid, "preventive", "x")


def test_only_the_verifier_verifies_and_an_ineffective_action_goes_back(flow: Workflow) -> None:
    capa = flow.from_alarm(ENGINEER, flow.store.get("AL-1"))  # type: ignore[arg-type]
    assert capa.source is CapaSource.ALARM and "3 sigma" in capa.problem
    to_verifying(flow, capa.uid)
    with pytest.raises(ValidationFailed, match=r"only .* verifier \(vera\) may verify it; erik"):
        flow.verify(ENGINEER, capa.uid, effective=True, note="looks fine")
    back = flow.verify(VERIFIER, capa.uid, effective=False, note="defect recurred on lot 9")
    assert back.status is CapaStatus.IN_ACTION and back.effective is False
    assert flow.trail.last(capa.uid).meaning == "verified not effective"
    flow.submit(ENGINEER, capa.uid)
    closed = flow.verify(VERIFIER, capa.uid, effective=True, note="no recurrence in 30 days")
    with pytest.raises(ValidationFailed, match="is closed; reopen it to change it"):
        flow.add_action(ENGINEER, capa.uid, "corrective", "more")
    reopened = flow.reopen(ENGINEER, capa.uid, "the same defect in the field")
    assert (reopened.status, reopened.reopened, reopened.closed_at) == (CapaStatus.REOPENED, 1,
                                                                        None)  # fmt: skip
    assert closed.closed_at is not None
    flow.start(ENGINEER, capa.uid)
    assert flow.get(capa.uid).status is CapaStatus.IN_ACTION


def test_a_capa_addresses_only_defects_complaints_or_alarms(flow: Workflow) -> None:
    with pytest.raises(ValidationFailed, match="CUST-1 is a Customer"):
        flow.report(INSPECTOR, "x", addresses=["CUST-1"])
    with pytest.raises(NotFound, match="CMP-404 is not in the graph"):
        flow.report(INSPECTOR, "x", addresses=["CMP-404"])
    with pytest.raises(ValidationFailed, match="needs the name of the user"):
        Actor(" ", "inspector")


# --- the audit trail ----------------------------------------------------------------------


KEY = b"k3y-kept-apart-from-the-trail-file-0123456789"


def _trail(path: Path, n: int = 5) -> AuditTrail:
    trail = AuditTrail(path, key=KEY)
    for i in range(n):
        trail.append("erik", "engineer", "Capa", f"CAPA-{i % 2}", "changed", {"v": i},
                     {"v": i + 1, "at": datetime(2026, 1, 1, tzinfo=UTC)})  # fmt: skip
    return trail


def test_the_trail_chains_every_entry_to_the_one_before(tmp_path: Path) -> None:
    trail = _trail(tmp_path / "audit.db")
    entries = list(trail)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5] and entries[0].prev == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.prev == before.hash
    assert all(digest(e.body(), KEY) == e.hash and e.keyed for e in entries)
    assert entries[0].after == {"v": 1, "at": "2026-01-01 00:00:00+00:00"}
    check = trail.verify()
    assert (check.ok, check.entries, check.head) == (True, 5, entries[-1].hash)
    assert [e.seq for e in trail.entries("CAPA-1")] == [2, 4]


def test_the_trail_refuses_updates_and_deletes(tmp_path: Path) -> None:
    trail = _trail(tmp_path / "audit.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        trail._db.execute("UPDATE trail SET actor = 'mallory' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        trail._db.execute("DELETE FROM trail WHERE seq = 2")


@pytest.mark.parametrize(
    ("tamper", "found"),
    [
        ("UPDATE trail SET after = '{\"v\": 99}' WHERE seq = 3",
         "entry 3 was changed after it was written"),
        ("DELETE FROM trail WHERE seq = 2", "entry 2 is missing"),
        ("UPDATE trail SET prev = hash WHERE seq = 4", "entry 4 does not follow entry 3"),
    ],
)  # fmt: skip
def test_verification_names_the_first_entry_edited_outside_sqems(
    tmp_path: Path, tamper: str, found: str
) -> None:
    path = tmp_path / "audit.db"
    _trail(path).close()
    raw = sqlite3.connect(path)  # someone with the file: drops the triggers and edits
    raw.executescript("DROP TRIGGER trail_no_update; DROP TRIGGER trail_no_delete;")
    raw.execute(tamper)
    raw.commit()
    raw.close()
    check = AuditTrail(path, key=KEY).verify()
    assert not check.ok and found in check.reason


def test_an_export_verifies_on_its_own_and_an_edit_to_it_is_found(tmp_path: Path) -> None:
    trail = _trail(tmp_path / "audit.db")
    exported = trail.export("jsonl")
    assert verify_export(exported, KEY).ok
    assert verify_export(exported, KEY).head == trail.verify().head
    edited = exported.replace('"actor": "erik"', '"actor": "eve"', 1)
    check = verify_export(edited, KEY)
    assert not check.ok and check.broken_at == 1
    rows = trail.export("csv").splitlines()
    assert rows[0].startswith("seq,at,actor") and len(rows) == 6
    with pytest.raises(ValidationFailed, match="export as jsonl or csv"):
        trail.export("xml")


def test_entries_are_appended_in_order_from_many_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    trail = AuditTrail(tmp_path / "audit.db")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: trail.append("t", "engineer", "Capa", "C", str(i), None, {}),
                      range(200)))  # fmt: skip
    assert trail.verify().ok and trail.verify().entries == 200
    assert datetime.fromisoformat(trail.last("C").at) - datetime.now(UTC) < timedelta(seconds=5)


# --- evidence -------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(extra_chunks: bytes = b"", after: bytes = b"") -> bytes:
    """A well-formed 2 by 2 grey PNG: IHDR, IDAT and IEND with their CRCs."""
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x10\x20\x00\x30\x40")
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra_chunks
            + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"") + after)  # fmt: skip


def _text_chunk(text: bytes) -> bytes:
    return _chunk(b"tEXt", b"Comment\x00" + text)


JPEG = (b"\xff\xd8" + b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + bytes(range(255)) * 4
        + b"\xff\x00\xff\xd0" + b"\xff\xd9")  # fmt: skip
"""SOI, a JFIF APP0 segment, a scan (with a stuffed byte and a restart marker), EOI."""
PDF = b"%PDF-1.7\n" + b"1 0 obj << >> endobj\n" * 50 + b"%%EOF\n"


def test_evidence_is_stored_by_content_typed_by_its_bytes_and_attached(
    flow: Workflow, tmp_path: Path
) -> None:
    import io  # noqa: PLC0415

    from sqems.quality.evidence import EvidenceStore  # noqa: PLC0415

    store = EvidenceStore(tmp_path / "evidence")
    photo = store.put(io.BytesIO(JPEG), "crack.jpg")
    assert (photo.kind, photo.media_type, photo.size) == ("photo", "image/jpeg", len(JPEG))
    assert photo.digest == "sha256:" + hashlib.sha256(JPEG).hexdigest()
    assert store.put(io.BytesIO(JPEG), "again.jpg").digest == photo.digest  # stored once
    assert store.check(photo.digest)
    report = store.put(io.BytesIO(PDF), "8d-report.pdf")
    assert report.kind == "document"
    with pytest.raises(ValidationFailed, match=r"notes\.txt is not a photo"):
        store.put(io.BytesIO(b"just text"), "notes.txt")
    with pytest.raises(ValidationFailed, match="is over the limit for a photo"):
        store.put(io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"\0" * (25 * 2**20)), "huge.png")
    assert not [p for p in (tmp_path / "evidence").iterdir() if p.name.startswith(".incoming")]
    with pytest.raises(NotFound, match="is not in the store"):
        store.get("sha256:" + "0" * 64)

    capa = flow.report(INSPECTOR, "crack", addresses=["CMP-1"])
    to_verifying_actions = flow.triage(ENGINEER, capa.uid, Priority.HIGH)
    assert to_verifying_actions.status is CapaStatus.TRIAGED
    flow.add_action(ENGINEER, capa.uid, "containment", "sort stock")
    done = flow.attach_evidence(ENGINEER, capa.uid, "containment", 0, photo)
    assert json.loads(done.containment)[0]["evidence"] == [photo.digest]
    assert photo.digest in flow.trail.last(capa.uid).action
    with pytest.raises(ValidationFailed, match="has 1 containment action"):
        flow.attach_evidence(ENGINEER, capa.uid, "containment", 3, photo)


# --- effectiveness from data ----------------------------------------------------------------

OPENED = datetime(2026, 3, 1, tzinfo=UTC)
CLOSED = datetime(2026, 3, 11, tzinfo=UTC)
UNTIL = datetime(2026, 4, 10, tzinfo=UTC)  # 30 days after: "before" is Jan 30 to Mar 1


def _production(store: GraphStore, tag: str, started: datetime, units: int, bad: int,
                defect_type: str = "DT-CRACK") -> list[str]:  # fmt: skip
    from sqems.graph_model.nodes import Batch, Defect, Unit  # noqa: PLC0415
    from sqems.graph_model.store import Edge  # noqa: PLC0415

    uids = [f"SN-{tag}-{i}" for i in range(units)]
    with store.transaction() as tx:
        tx.add_nodes([Batch(uid=f"WO-{tag}", started_at=started, quantity=units)])
        tx.add_nodes(Unit(uid=u, produced_at=started) for u in uids)
        tx.add_nodes(Defect(uid=f"D-{u}", found_at=started) for u in uids[:bad])
        tx.add_edges([Edge("OF_PRODUCT", f"WO-{tag}", "PRD-1")])
        tx.add_edges(Edge("PRODUCED", f"WO-{tag}", u) for u in uids)
        tx.add_edges(Edge("FOUND_ON", f"D-{u}", u) for u in uids[:bad])
        tx.add_edges(Edge("OF_TYPE", f"D-{u}", defect_type) for u in uids[:bad])
    return uids


@pytest.mark.parametrize(
    ("after_units", "after_bad", "verdict", "reason"),
    [
        (400, 0, "effective", "the rate fell from 5.00% to 0.00%"),
        (400, 19, "not effective", "19 recurrence(s) in 450 units"),
        (10, 0, "too early", "no recurrence yet, but 60 units cannot show it"),
    ],
)
def test_effectiveness_compares_recurrence_before_and_after_on_the_scope(
    store: GraphStore, after_units: int, after_bad: int, verdict: str, reason: str
) -> None:
    from sqems.graph_model.nodes import (  # noqa: PLC0415
        Capa,
        Category6M,
        DefectType,
        Product,
    )
    from sqems.graph_model.store import Edge  # noqa: PLC0415
    from sqems.quality.effectiveness import effectiveness  # noqa: PLC0415

    store.upsert_nodes([
        Product(uid="PRD-1", name="Drive"), Product(uid="PRD-2", name="Other"),
        DefectType(uid="DT-CRACK", name="cracked housing", category=Category6M.MATERIAL),
        DefectType(uid="DT-SCRATCH", name="scratch", category=Category6M.METHOD),
    ])  # fmt: skip
    first = _production(store, "B1", datetime(2026, 2, 5, tzinfo=UTC), 200, 10)
    _production(store, "B2", datetime(2026, 2, 20, tzinfo=UTC), 200, 10)
    _production(store, "OLD", datetime(2025, 12, 1, tzinfo=UTC), 100, 50)  # outside "before"
    _production(store, "A1", datetime(2026, 3, 20, tzinfo=UTC), after_units, after_bad)
    _production(store, "A2", datetime(2026, 3, 25, tzinfo=UTC), 50, 20, "DT-SCRATCH")
    store.upsert_nodes([
        Complaint(uid="CMP-9", received_at=OPENED),
        Capa(uid="CAPA-9", title="cracks", status=CapaStatus.CLOSED, opened_at=OPENED,
             closed_at=CLOSED),
    ])  # fmt: skip
    store.upsert_edges([Edge("ABOUT", "CMP-9", first[0]), Edge("OF_TYPE", "CMP-9", "DT-CRACK"),
                        Edge("ADDRESSES", "CAPA-9", "CMP-9")])  # fmt: skip
    found = effectiveness(store, "CAPA-9", until=UNTIL)
    assert (found.defect_types, found.products) == (["DT-CRACK"], ["PRD-1"])
    assert (found.before.units, found.before.defective) == (400, 20)
    # the scratches of A2 are another defect type; its 50 units still count as made
    assert (found.after.units, found.after.defective) == (after_units + 50, after_bad)
    assert found.verdict == verdict and reason in found.reason, found.reason


def test_a_recurring_defect_type_offers_the_earlier_capas_and_their_root_causes(
    flow: Workflow,
) -> None:
    from sqems.graph_model.nodes import Category6M, DefectType  # noqa: PLC0415
    from sqems.graph_model.store import Edge  # noqa: PLC0415
    from sqems.quality.knowledge import precedents  # noqa: PLC0415

    flow.store.upsert_nodes(
        [DefectType(uid="DT-CRACK", name="cracked housing", category=Category6M.MATERIAL)]
    )
    flow.store.upsert_edges([Edge("OF_TYPE", "CMP-1", "DT-CRACK")])
    assert precedents(flow.store, "DT-CRACK") == []
    done = flow.from_complaint(INSPECTOR, "CMP-1")
    to_verifying(flow, done.uid)
    flow.verify(VERIFIER, done.uid, effective=True, note="no cracks since")
    still_open = flow.report(INSPECTOR, "cracks again", addresses=["CMP-1"])
    offered = precedents(flow.store, "DT-CRACK")
    assert [p.capa for p in offered] == [done.uid, still_open.uid]  # the effective one first
    first = offered[0]
    assert (first.status, first.effective) == ("closed", True)
    assert first.root_cause == "lot LOT-7 out of spec"
    assert first.corrective == ["incoming test of resin moisture"]
    with pytest.raises(NotFound, match="defect type DT-NONE is not in the graph"):
        precedents(flow.store, "DT-NONE")


def test_a_critical_alarm_opens_one_capa_per_excursion(flow: Workflow) -> None:
    from dataclasses import dataclass  # noqa: PLC0415

    from sqems.graph_model.nodes import Machine, Parameter  # noqa: PLC0415
    from sqems.graph_model.store import Edge  # noqa: PLC0415
    from sqems.quality.capa import SYSTEM, open_on_critical_alarms  # noqa: PLC0415

    @dataclass
    class Event:
        alarm: Alarm
        critical: bool

    at = datetime(2026, 3, 2, tzinfo=UTC)
    flow.store.upsert_nodes([
        Machine(uid="M-OVEN", name="Oven"), Machine(uid="M-PRESS", name="Press"),
        Parameter(uid="P-PEAK", name="peak", unit="degC"),
        *(Alarm(uid=f"AL-{i}", raised_at=at, rule=f"nelson_{i}", message="peak high")
          for i in (2, 3, 4, 5)),
    ])  # fmt: skip
    flow.store.upsert_edges([
        *(Edge("RAISED_ON", f"AL-{i}", m) for i, m in ((2, "M-OVEN"), (3, "M-OVEN"),
                                                       (4, "M-PRESS"), (5, "M-OVEN"))),
        *(Edge("RAISED_ON", f"AL-{i}", "P-PEAK") for i in (2, 3, 4, 5)),
    ])  # fmt: skip
    sink = open_on_critical_alarms(flow)
    alarm = flow.store.get_many([f"AL-{i}" for i in (2, 3, 4, 5)])
    sink(Event(alarm["AL-2"], critical=True))  # type: ignore[arg-type]
    sink(Event(alarm["AL-3"], critical=True))  # type: ignore[arg-type]  # same machine: joins
    sink(Event(alarm["AL-4"], critical=True))  # type: ignore[arg-type]  # another machine
    sink(Event(alarm["AL-5"], critical=False))  # type: ignore[arg-type]  # not critical
    capas = sorted(flow.store.find("Capa"), key=lambda c: c.uid)
    assert len(capas) == 2
    out = {"ADDRESSES": Direction.OUT}
    addressed = {c.uid: sorted(e.dst for e in flow.store.edges([c.uid], out)) for c in capas}
    assert sorted(addressed.values()) == [["AL-2", "AL-3"], ["AL-4"]]
    assert all(c.source is CapaSource.ALARM and c.reported_by == SYSTEM for c in capas)  # type: ignore[attr-defined]


# --- supplier scorecards --------------------------------------------------------------------


def test_the_supplier_of_the_bad_resin_lot_scores_worst(store: GraphStore) -> None:
    from sqems.datasets import PlantSpec, generate, load_plant  # noqa: PLC0415
    from sqems.datasets.files import plant_sections  # noqa: PLC0415
    from sqems.graph_model.nodes import Inspection, InspectionMethod, Verdict  # noqa: PLC0415
    from sqems.graph_model.store import Edge  # noqa: PLC0415
    from sqems.quality.suppliers import scorecard, scorecards  # noqa: PLC0415

    plant = generate(PlantSpec(units=5_000, seed=3))  # enough lots that exposures separate
    load_plant(store, plant_sections(plant))
    bad_lot = plant.truth["causes"][0]["uid"]
    (supplier,) = [e.src for e in store.edges([bad_lot], {"SUPPLIED": Direction.IN})]
    lots = sorted(e.dst for e in store.edges([supplier], {"SUPPLIED": Direction.OUT}))
    at = datetime(2026, 1, 6, tzinfo=UTC)
    store.upsert_nodes([
        Inspection(uid="INC-1", inspected_at=at, method=InspectionMethod.MANUAL,
                   sample_size=500, defects_found=4, verdict=Verdict.FAIL),
        Inspection(uid="INC-2", inspected_at=at, method=InspectionMethod.MANUAL,
                   sample_size=500, defects_found=0),
    ])  # fmt: skip
    good_lot = next(lot for lot in lots if lot != bad_lot)
    store.upsert_edges([Edge("INSPECTED", "INC-1", bad_lot), Edge("INSPECTED", "INC-2", good_lot)])
    ranked = scorecards(store)
    assert ranked[0].supplier == supplier and len(ranked) == store.count("Supplier")
    card = scorecard(store, supplier)
    assert (card.lots, card.lots_inspected, card.lots_rejected) == (len(lots), 2, 1)
    assert card.lot_rejection_rate == 0.5 and card.incoming_ppm == pytest.approx(4_000.0)
    assert card.material_defective > 0 and card.units > card.material_defective
    assert card.material_ppm == pytest.approx(card.material_defective / card.units * 1e6)
    others = [c for c in ranked[1:] if c.units]
    assert all((c.material_ppm or 0) < (card.material_ppm or 0) for c in others)
    assert sum(p.lots for p in card.trend) == card.lots
    assert [p.month for p in card.trend] == sorted(p.month for p in card.trend)
    with pytest.raises(NotFound, match="supplier SUP-NONE is not in the graph"):
        scorecard(store, "SUP-NONE")


# --- records that cannot be lost or forged ----------------------------------------------------


def test_twenty_actions_added_at_once_to_one_capa_all_survive_with_their_entries(
    flow: Workflow,
) -> None:
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    uid = flow.report(INSPECTOR, "burr", addresses=["CMP-1"]).uid
    start = threading.Barrier(20)

    def add(i: int) -> None:
        start.wait()
        flow.add_action(ENGINEER, uid, "containment", f"sort stock of line {i}")

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(add, range(20)))
    texts = sorted(a["text"] for a in json.loads(flow.get(uid).containment))
    assert texts == sorted(f"sort stock of line {i}" for i in range(20))
    added = [e for e in flow.history(uid) if e.action == "containment action added"]
    assert len(added) == 20 and flow.trail.verify().ok
    assert sorted(len(json.loads(e.after["containment"])) for e in added if e.after) == list(
        range(1, 21)
    )


def test_a_busy_trail_refuses_the_change_and_the_capa_stays_as_it_was(
    store: GraphStore, tmp_path: Path
) -> None:
    from sqems.errors import AuditUnavailable  # noqa: PLC0415

    path = tmp_path / "audit.db"
    flow = Workflow(store, AuditTrail(path, key=KEY, busy_timeout_s=0.2))
    store.upsert_nodes([Complaint(uid="CMP-9", received_at=datetime(2026, 3, 1, tzinfo=UTC))])
    uid = flow.report(INSPECTOR, "burr", addresses=["CMP-9"]).uid
    other = sqlite3.connect(path, isolation_level=None)  # another process writing the trail
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(
            AuditUnavailable,
            match=r"is busy or cannot be written \(database is locked\); nothing was",
        ):
            flow.triage(ENGINEER, uid, Priority.HIGH)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert flow.get(uid).status is CapaStatus.REPORTED and flow.get(uid).priority is None
    assert [e.action for e in flow.history(uid)] == ["reported"]
    assert flow.triage(ENGINEER, uid, Priority.HIGH).status is CapaStatus.TRIAGED


def test_entries_that_cannot_commit_take_the_change_back_out_of_the_graph(
    flow: Workflow,
) -> None:
    from sqems.errors import AuditUnavailable  # noqa: PLC0415

    uid = flow.report(INSPECTOR, "burr", addresses=["CMP-1"]).uid
    # a real commit failure: a deferred foreign key that an insert into the trail breaks
    db = flow.trail._db
    db.execute("PRAGMA foreign_keys = ON")
    db.executescript(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE guard (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
        "CREATE TRIGGER guarded AFTER INSERT ON trail BEGIN INSERT INTO guard VALUES (42); END;"
    )
    with pytest.raises(AuditUnavailable, match=r"could not commit .* the change was taken back"):
        flow.triage(ENGINEER, uid, Priority.HIGH)
    assert flow.get(uid).status is CapaStatus.REPORTED and flow.get(uid).priority is None
    assert [e.action for e in flow.history(uid)] == ["reported"]


def test_a_graph_write_that_fails_leaves_no_entry_in_the_trail(tmp_path: Path) -> None:
    from sqems.errors import GraphUnavailable  # noqa: PLC0415
    from sqems.graph_model import EmbeddedGraphStore  # noqa: PLC0415

    with EmbeddedGraphStore(tmp_path / "graph.db") as store:
        store.upsert_nodes([Complaint(uid="CMP-1", received_at=datetime(2026, 3, 1, tzinfo=UTC))])
        flow = Workflow(store, AuditTrail(None, key=KEY))
        uid = flow.report(INSPECTOR, "burr", addresses=["CMP-1"]).uid
        other = sqlite3.connect(tmp_path / "graph.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the graph's file is held: its write fails
        try:
            with pytest.raises(GraphUnavailable, match="write to graph store"):
                flow.triage(ENGINEER, uid, Priority.HIGH)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert [e.action for e in flow.history(uid)] == ["reported"]
        assert flow.get(uid).status is CapaStatus.REPORTED and flow.trail.verify().ok


def test_an_owner_cannot_be_the_verifier_of_their_own_capa(flow: Workflow) -> None:
    uid = flow.report(INSPECTOR, "burr", addresses=["CMP-1"]).uid
    flow.triage(ENGINEER, uid, Priority.LOW)
    with pytest.raises(ValidationFailed, match="cannot be both owner and verifier"):
        flow.assign(ENGINEER, uid, owner="Vera", verifier="vera", due_at=DUE)


def _forge(path: Path, key: bytes | None) -> None:
    """What someone with the trail's file (not its key) does: drop the trigger, put their
    name on the signature and recompute every seal, with ``key`` (a guess) or without."""
    names = ("seq", "at", "actor", "role", "label", "uid", "action", "before", "after",
             "meaning", "prev")  # fmt: skip
    raw = sqlite3.connect(path)
    raw.executescript("DROP TRIGGER IF EXISTS trail_no_update;")
    prev = GENESIS
    for row in raw.execute(f"SELECT {', '.join(names)} FROM trail ORDER BY seq").fetchall():
        body = dict(zip(names, row, strict=True))
        body |= {"actor": "mallory" if body["meaning"] else body["actor"], "prev": prev,
                 "before": body["before"] and json.loads(body["before"]),
                 "after": body["after"] and json.loads(body["after"])}  # fmt: skip
        seal = digest(body, key)
        raw.execute("UPDATE trail SET actor = ?, prev = ?, hash = ?, keyed = ? WHERE seq = ?",
                    (body["actor"], prev, seal, key is not None, body["seq"]))  # fmt: skip
        prev = seal
    raw.commit()
    raw.close()


@pytest.mark.parametrize("guess", [b"guess" * 8, None], ids=["guessed-key", "unkeyed"])
def test_a_rewritten_signature_with_a_recomputed_chain_is_found_without_the_key(
    tmp_path: Path, guess: bytes | None
) -> None:
    path = tmp_path / "audit.db"
    trail = _trail(path, 3)
    trail.append("vera", "engineer", "Capa", "CAPA-1", "signature", None, {"status": "closed"},
                 meaning=CLOSURE_MEANING)  # fmt: skip
    trail.close()
    _forge(path, guess)
    check = AuditTrail(path, key=KEY).verify()
    if guess is not None:
        assert not check.ok and check.broken_at == 1 and "not the one it was sealed" in check.reason
    else:  # passed off as a trail from before the key: it says what it does not prove
        assert check.ok and check.unsealed == 4 and "could have been rewritten" in check.reason


def test_an_unkeyed_trail_from_before_the_key_is_sealed_by_the_first_keyed_entry(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"
    old = sqlite3.connect(path)  # the table as it was, without the keyed column
    old.executescript(
        "CREATE TABLE trail (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, "
        "role TEXT NOT NULL, label TEXT NOT NULL, uid TEXT NOT NULL, action TEXT NOT NULL, "
        "before TEXT, after TEXT, meaning TEXT, prev TEXT NOT NULL, hash TEXT NOT NULL);"
    )
    old.close()
    unkeyed = AuditTrail(path)
    unkeyed.append("erik", "engineer", "Capa", "C-1", "changed", None, {"v": 1})
    unkeyed.append("erik", "engineer", "Capa", "C-1", "changed", None, {"v": 2})
    unkeyed.close()
    trail = AuditTrail(path, key=KEY)
    check = trail.verify()
    assert check.ok and check.unsealed == 2 and "no keyed seal" in check.reason
    trail.append("erik", "engineer", "Capa", "C-1", "changed", None, {"v": 3})
    check = trail.verify()
    assert (check.ok, check.unsealed) == (True, 0)
    assert "entries 1-2 predate the key and are sealed by the keyed entries" in check.reason
    with pytest.raises(sqlite3.IntegrityError):  # still append-only after the migration
        trail._db.execute("UPDATE trail SET actor = 'x' WHERE seq = 1")
    assert not AuditTrail(path, key=b"another key" * 4).verify().ok


def test_a_malformed_row_is_a_broken_entry_named_by_its_seq(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _trail(path, 3).close()
    raw = sqlite3.connect(path)
    raw.executescript("DROP TRIGGER trail_no_update;")
    raw.execute("UPDATE trail SET after = '{not json' WHERE seq = 2")
    raw.commit()
    raw.close()
    check = AuditTrail(path, key=KEY).verify()
    assert (check.ok, check.broken_at, check.entries) == (False, 2, 1)
    assert check.reason.startswith("entry 2 is malformed: its after is not JSON")


def test_audit_verify_reports_a_malformed_row_without_a_traceback(tmp_path: Path) -> None:
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from sqems.quality.audit import TRAIL_FILE  # noqa: PLC0415

    _trail(tmp_path / TRAIL_FILE, 3).close()
    raw = sqlite3.connect(tmp_path / TRAIL_FILE)
    raw.executescript("DROP TRIGGER trail_no_update;")
    raw.execute("UPDATE trail SET seq = 7, before = 12 WHERE seq = 3")
    raw.commit()
    raw.close()
    env = {**os.environ, "SQEMS_DATA_DIR": str(tmp_path), "SQEMS_AUDIT_KEY": KEY.decode()}
    done = subprocess.run([sys.executable, "-c", "from sqems.cli import main; main()", "audit",
                           "verify"], capture_output=True, text=True, env=env, check=False,
                          timeout=120)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    assert "entry 7 is malformed: its before is int '12'" in done.stderr


def test_the_trail_key_file_is_made_private_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    from sqems.errors import ConfigError  # noqa: PLC0415
    from sqems.quality.audit import KEY_FILE, TRAIL_FILE, open_trail  # noqa: PLC0415
    from sqems.settings import Settings  # noqa: PLC0415

    settings = Settings(data_dir=tmp_path)
    trail = open_trail(settings)
    trail.append("erik", "engineer", "Capa", "C-1", "changed", None, {"v": 1})
    trail.close()
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert (
        open_trail(settings).verify().reason == "1 entries, chain intact, sealed with the audit key"
    )
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="may be read by others"):
        open_trail(settings)
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(ConfigError, match="is sealed with a key, and the key file"):
        open_trail(settings)
    assert (tmp_path / TRAIL_FILE).exists() and not (tmp_path / KEY_FILE).exists()


def test_csv_exports_neutralise_cells_a_spreadsheet_would_run(tmp_path: Path) -> None:
    import csv  # noqa: PLC0415
    import io  # noqa: PLC0415

    trail = AuditTrail(None, key=KEY)
    for text in ('=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)",
                 "\tx", "\r=1", "-1.5", "plain"):  # fmt: skip
        trail.append("erik", "engineer", "Capa", "C-1", text, None, {"f": "=1+1"})
    rows = list(csv.DictReader(io.StringIO(trail.export("csv"))))
    assert [r["action"] for r in rows] == [
        '\'=HYPERLINK("http://evil.example","x")', "'+1+1", "'-2+3", "'@SUM(A1)", "'\tx",
        "'\r=1", "-1.5", "plain",
    ]  # fmt: skip
    assert json.loads(rows[0]["after"]) == {"f": "=1+1"}  # JSON cells start with {


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (_png(after=b"<html><script>alert(1)</script></html>"), "bytes follow its IEND"),
        (_png(_text_chunk(b"<html><script>alert(1)</script>")), "it holds HTML markup"),
        (_png()[:-5], "no IEND chunk"),
        (_png().replace(b"IDAT", b"IDAX", 1), "fails its CRC"),
        (JPEG + b"<html>", "bytes follow its end"),
        (JPEG[:-2], "no end-of-image marker"),
        (PDF + b"<html><body>", "does not end with %%EOF"),
        (b"RIFF\xff\x00\x00\x00WEBPVP8 " + bytes(20), "its RIFF size says"),
        (b"\x00\x00\x00\x14ftypisom" + bytes(8) + b"\x00\x00\x01\x00mdat", "does not fit"),
    ],
)
def test_evidence_must_be_what_its_first_bytes_claim_from_start_to_end(
    tmp_path: Path, content: bytes, found: str
) -> None:
    import io  # noqa: PLC0415

    from sqems.quality.evidence import EvidenceStore  # noqa: PLC0415

    store = EvidenceStore(tmp_path / "evidence")
    with pytest.raises(ValidationFailed, match="is not a well-formed") as refused:
        store.put(io.BytesIO(content), "photo.png")
    assert found in refused.value.message
    assert [p.name for p in (tmp_path / "evidence").rglob("*")] == []
    assert store.put(io.BytesIO(_png()), "ok.png").media_type == "image/png"
