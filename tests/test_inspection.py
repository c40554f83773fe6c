"""The inspector's phone: what a scanned code names, and defect reports with photos.

The domain runs on every graph backend (the ``store`` fixture); the API tests run a
real server and send what the phone sends: codes as scanners read them, multipart
reports with camera JPEGs, the same report twice."""

from __future__ import annotations

import io
import json
import struct
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from live_server import LiveServer
from PIL import Image

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import (
    Batch,
    BatchStatus,
    Capa,
    CapaStatus,
    Category6M,
    Complaint,
    Defect,
    DefectType,
    Machine,
    Material,
    MaterialLot,
    Priority,
    Product,
    Severity,
    Unit,
)
from sqems.graph_model.store import Edge
from sqems.graphql import AccessStore, Role, create_app
from sqems.quality.audit import AuditTrail
from sqems.quality.evidence import EVIDENCE_DIR, EvidenceStore
from sqems.quality.inspection import (
    DefectReport,
    Inspector,
    Photo,
    candidates,
    defect_types,
    identify,
    read_gs1,
)
from sqems.settings import Settings

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
GTIN = "09506000134352"


def plant(store: GraphStore) -> None:
    """A product's two batches (one on hold) fed by one resin lot, a unit of the held
    batch with a defect and a complaint, and CAPAs on them (one closed)."""
    with store.transaction() as tx:
        tx.add_nodes([
            Product(uid="PRD-HSG", name="pump housing"),
            Material(uid="MAT-RESIN", name="PA66 resin"),
            MaterialLot(uid="LOT-77", received_at=T0 - timedelta(days=9), quantity=500),
            MaterialLot(uid="LOT-OLD", received_at=T0 - timedelta(days=90), quantity=5,
                        expires_at=T0 - timedelta(days=1)),
            Batch(uid="WO-1", started_at=T0, quantity=10, status=BatchStatus.ON_HOLD),
            Batch(uid="WO-2", started_at=T0, quantity=10),
            Unit(uid="SN-0042", produced_at=T0 + timedelta(hours=1)),
            DefectType(uid="DT-CRACK", name="crack", category=Category6M.MATERIAL),
            DefectType(uid="DT-BURR", name="Burr", category=Category6M.MACHINE),
            Defect(uid="DEF-1", found_at=T0 + timedelta(hours=2), severity=Severity.MINOR),
            Defect(uid="DEF-2", found_at=T0 + timedelta(hours=3),
                   evidence=json.dumps(["sha256:" + "ab" * 32])),
            Defect(uid="DEF-B", found_at=T0 + timedelta(hours=4)),
            Complaint(uid="CMP-1", received_at=T0 + timedelta(days=3)),
            Capa(uid="CAPA-UNIT", title="cracks at the boss", opened_at=T0 + timedelta(days=1),
                 priority=Priority.HIGH, due_at=T0 + timedelta(days=20)),
            Capa(uid="CAPA-CMP", title="customer crack", opened_at=T0 + timedelta(days=3),
                 due_at=T0 + timedelta(days=10)),
            Capa(uid="CAPA-BATCH", title="batch burrs", opened_at=T0 + timedelta(days=1)),
            Capa(uid="CAPA-DONE", title="old", opened_at=T0, status=CapaStatus.CLOSED,
                 closed_at=T0 + timedelta(days=2)),
            Machine(uid="M-PRESS", name="press"),
        ])  # fmt: skip
        tx.add_edges([
            Edge("LOT_OF", "LOT-77", "MAT-RESIN"),
            Edge("CONSUMED_IN", "LOT-77", "WO-1"), Edge("CONSUMED_IN", "LOT-77", "WO-2"),
            Edge("OF_PRODUCT", "WO-1", "PRD-HSG"), Edge("PRODUCED", "WO-1", "SN-0042"),
            Edge("FOUND_ON", "DEF-1", "SN-0042"), Edge("FOUND_ON", "DEF-2", "SN-0042"),
            Edge("OF_TYPE", "DEF-1", "DT-CRACK"), Edge("OF_TYPE", "DEF-2", "DT-BURR"),
            Edge("FOUND_ON", "DEF-B", "WO-1"), Edge("ABOUT", "CMP-1", "SN-0042"),
            Edge("ADDRESSES", "CAPA-UNIT", "DEF-1"), Edge("ADDRESSES", "CAPA-DONE", "DEF-2"),
            Edge("ADDRESSES", "CAPA-CMP", "CMP-1"), Edge("ADDRESSES", "CAPA-BATCH", "DEF-B"),
        ])  # fmt: skip


# --- reading codes ---------------------------------------------------------------------

CODES = {
    "SN-0042": ("Unit", "SN-0042"),
    " SN-0042\n": ("Unit", "SN-0042"),
    f"(01){GTIN}(21)SN-0042": ("Unit", "SN-0042"),
    f"01{GTIN}21SN-0042\x1d10WO-1": ("Unit", "SN-0042"),
    f"]d201{GTIN}10WO-1\x1d21SN-0042": ("Unit", "SN-0042"),
    f"\x1d01{GTIN}10WO-1": ("Batch", "WO-1"),
    f"(01){GTIN}(10)WO-1(17)270101": ("Batch", "WO-1"),
    f"(01){GTIN}(10)LOT-77": ("MaterialLot", "LOT-77"),
    f"(01){GTIN}(21)SN-9999(10)WO-1": ("Batch", "WO-1"),  # an unknown serial: the lot
    "https://plant.example/units/SN-0042": ("Unit", "SN-0042"),
    "https://plant.example/inspect?uid=WO-1&from=label": ("Batch", "WO-1"),
    f"https://id.gs1.org/01/{GTIN}/10/LOT-77": ("MaterialLot", "LOT-77"),
    "LOT-77": ("MaterialLot", "LOT-77"),
}


@pytest.mark.parametrize("code", list(CODES))
def test_every_code_form_names_its_unit_batch_or_lot(code: str) -> None:
    store = EmbeddedGraphStore(None)
    plant(store)
    found = identify(store, code)
    assert (found.kind, found.uid) == CODES[code]
    assert found.code == code


@given(
    serial=st.text("ABCXYZ0123456789-./", min_size=1, max_size=20),
    lot=st.text("ABCXYZ0123456789-", min_size=1, max_size=20),
)
def test_raw_and_parenthesised_gs1_strings_read_alike(serial: str, lot: str) -> None:
    want = {"01": GTIN, "21": serial, "10": lot}
    assert read_gs1(f"(01){GTIN}(21){serial}(10){lot}") == want
    assert read_gs1(f"01{GTIN}21{serial}\x1d10{lot}") == want
    assert read_gs1(f"]Q301{GTIN}10{lot}\x1d21{serial}\x1d") == want


def test_a_plain_uid_that_reads_as_gs1_is_tried_as_a_uid_first() -> None:
    tried = [c.uid for c in candidates("1012")]
    assert tried == ["1012", "12"]
    assert read_gs1("hello") is None and read_gs1("(01)123") == {"01": "123"}


# --- identify ----------------------------------------------------------------------------


def test_a_unit_shows_its_product_batch_hold_capas_and_latest_defects(store: GraphStore) -> None:
    plant(store)
    found = identify(store, "SN-0042")
    assert (found.product, found.product_name, found.batch) == ("PRD-HSG", "pump housing", "WO-1")
    assert (found.status, found.held_batches, found.defects) == ("good", ["WO-1"], 2)
    # the unit's defect, its complaint and its batch's defect; never a closed CAPA
    assert [c.uid for c in found.open_capas] == ["CAPA-CMP", "CAPA-UNIT", "CAPA-BATCH"]
    assert found.open_capas[1].priority == "high"
    assert [(d.uid, d.type, d.type_name, d.evidence) for d in found.recent_defects] == [
        ("DEF-2", "DT-BURR", "Burr", 1), ("DEF-1", "DT-CRACK", "crack", 0)]  # fmt: skip


def test_a_batch_and_a_lot_show_what_is_held(store: GraphStore) -> None:
    plant(store)
    batch = identify(store, "WO-1")
    assert (batch.kind, batch.batch, batch.status, batch.held_batches) == (
        "Batch", "WO-1", "on_hold", ["WO-1"])  # fmt: skip
    assert ([c.uid for c in batch.open_capas], batch.defects) == (["CAPA-BATCH"], 1)
    lot = identify(store, "LOT-77")
    assert (lot.product, lot.batch, lot.status, lot.held_batches) == (None, None, "received",
                                                                      ["WO-1"])  # fmt: skip
    assert (lot.material, lot.material_name) == ("MAT-RESIN", "PA66 resin")
    assert identify(store, "LOT-OLD").status == "expired"
    assert identify(store, "WO-2").held_batches == []


def test_a_code_that_names_nothing_is_not_found(store: GraphStore) -> None:
    plant(store)
    for code in ("SN-404", "M-PRESS", f"(01){GTIN}(21)SN-404", "https://x.example/", "  "):
        with pytest.raises(NotFound):
            identify(store, code)


def test_defect_types_come_sorted_by_name(store: GraphStore) -> None:
    plant(store)
    assert [(t.uid, t.category) for t in defect_types(store)] == [
        ("DT-BURR", "machine"), ("DT-CRACK", "material")]  # fmt: skip


# --- reporting (domain) ------------------------------------------------------------------


def jpeg(colour: tuple[int, int, int]) -> bytes:
    """A small JPEG as a camera makes one (the phone compresses it before sending)."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, "JPEG", quality=80)
    return out.getvalue()


def png_with_html() -> bytes:
    """A well-formed PNG whose text chunk holds a page a browser could run."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"tEXt", b"c\x00<html><script>alert(1)</script>")
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))  # fmt: skip


def report(target: str = "SN-0042", **changes: Any) -> DefectReport:
    fields: dict[str, Any] = {
        "report_id": str(uuid.uuid4()), "target": target, "defect_type": "DT-CRACK",
        "severity": Severity.CRITICAL, "note": "crack at the boss",
        "found_at": T0 + timedelta(hours=5),
    }  # fmt: skip
    return DefectReport(**(fields | changes))


def test_a_report_makes_a_defect_with_its_photos_once(store: GraphStore, tmp_path: Path) -> None:
    plant(store)
    trail, files = AuditTrail(None), EvidenceStore(tmp_path / "evidence")
    inspector = Inspector(store, trail, files)
    sent = report()
    photos = [Photo("a.jpg", io.BytesIO(jpeg((200, 10, 10)))),
              Photo("b.jpg", io.BytesIO(jpeg((10, 10, 200))))]  # fmt: skip
    made = inspector.report("ines", "inspector", sent, photos)
    uid = f"DEF-R-{sent.report_id}"
    assert (made.created, made.defect.uid, made.defect.reported_by) == (True, uid, "ines")
    digests = [e.digest for e in made.evidence]
    assert json.loads(made.defect.evidence) == digests and len(set(digests)) == 2
    assert all(files.check(d) for d in digests)
    edges = {(e.type, e.dst) for e in store.edges([uid], {"FOUND_ON": "out", "OF_TYPE": "out"})}
    assert edges == {("FOUND_ON", "SN-0042"), ("OF_TYPE", "DT-CRACK")}
    again = inspector.report("ines", "inspector", sent, photos)
    assert (again.created, again.defect, [e.digest for e in again.evidence]) == (
        False, made.defect, digests)  # fmt: skip
    entries = trail.entries(uid)
    assert [(e.actor, e.action, e.after and e.after["found_on"]) for e in entries] == [
        ("ines", "reported", "SN-0042")]  # fmt: skip
    assert identify(store, "SN-0042").recent_defects[0].uid == uid
    with pytest.raises(ValidationFailed, match="recorded on SN-0042, not on WO-1"):
        inspector.report("ines", "inspector", report("WO-1", report_id=sent.report_id))


def test_a_refused_report_leaves_nothing_behind(store: GraphStore, tmp_path: Path) -> None:
    plant(store)
    trail, files = AuditTrail(None), EvidenceStore(tmp_path / "evidence")
    inspector = Inspector(store, trail, files)
    now = datetime.now(UTC)
    refusals = {
        "not a UUID": report(report_id="42"),
        "in the future": report(found_at=now + timedelta(minutes=6)),
        "before SN-0042 was produced": report(found_at=T0),
        "is a Machine": report("M-PRESS"),
        "defect type 'DT-NONE' is not in the graph": report(defect_type="DT-NONE"),
        "holds HTML markup": report(),
    }
    for reason, sent in refusals.items():
        photos = [Photo("ok.jpg", io.BytesIO(jpeg((1, 2, 3)))),
                  Photo("evil.png", io.BytesIO(png_with_html()))]  # fmt: skip
        with pytest.raises(ValidationFailed, match=reason):
            inspector.report("ines", "inspector", sent, photos)
    with pytest.raises(ValidationFailed, match=r"notes\.txt is not a photo"):
        inspector.report("ines", "inspector", report(), [Photo("notes.txt", io.BytesIO(b"hi"))])
    assert trail.entries() == [] and store.count("Defect") == 3
    assert not [p for p in (tmp_path / "evidence").rglob("*") if p.is_file()]
    # a batch takes reports too, and a report without photos or time is found now
    made = inspector.report("ines", "inspector", report("WO-2", found_at=None, note=""))
    assert (made.defect.evidence, made.defect.description) == ("[]", None)
    assert abs(made.defect.found_at - datetime.now(UTC)) < timedelta(minutes=1)


# --- over the API ------------------------------------------------------------------------

IDENTIFY = (Path(__file__).parent.parent / "sqems/graphql/operations/identify.graphql").read_text()
REPORT = (
    Path(__file__).parent.parent / "sqems/graphql/operations/report_defect.graphql"
).read_text()
TYPES = (Path(__file__).parent.parent / "sqems/graphql/operations/defect_types.graphql").read_text()


@dataclass
class Served:
    url: str
    tokens: dict[str, str]
    data_dir: Path

    def post(self, who: str, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables},
                              headers={"Authorization": f"Bearer {self.tokens[who]}"},
                              timeout=30)  # fmt: skip
        assert response.status_code == 200 and "Traceback" not in response.text
        body: dict[str, Any] = response.json()
        return body

    def send(
        self, who: str, report: dict[str, Any], photos: list[tuple[str, bytes]]
    ) -> httpx.Response:
        """A report as the phone sends it: multipart, the photos as files."""
        operations = {"query": REPORT, "operationName": "ReportDefect",
                      "variables": {"report": report, "photos": [None] * len(photos)}}  # fmt: skip
        mapping = {str(i): [f"variables.photos.{i}"] for i in range(len(photos))}
        return httpx.post(
            f"{self.url}/graphql",
            data={"operations": json.dumps(operations), "map": json.dumps(mapping)},
            files={str(i): (name, body, "image/jpeg") for i, (name, body) in enumerate(photos)},
            headers={"Authorization": f"Bearer {self.tokens[who]}"}, timeout=30,
        )  # fmt: skip

    def evidence_files(self) -> list[Path]:
        return sorted(p for p in (self.data_dir / EVIDENCE_DIR).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data: Path = tmp_path_factory.mktemp("api-inspect")
    store = EmbeddedGraphStore(None)
    plant(store)
    access = AccessStore(None)
    keys = {"ines": Role.INSPECTOR, "val": Role.VIEWER}
    tokens = {name: access.create_key(name, role)[1] for name, role in keys.items()}
    with LiveServer(create_app(Settings(data_dir=data), store=store, access=access)) as server:
        yield Served(server.url, tokens, data)
    access.close()
    store.close()


def test_identify_over_the_api_for_each_code_form(served: Served) -> None:
    for code in (f"01{GTIN}21SN-0042\x1d10WO-1", f"(01){GTIN}(10)LOT-77",
                 "https://plant.example/inspect?uid=WO-1"):  # fmt: skip
        found = served.post("val", IDENTIFY, code=code)["data"]["identify"]
        assert found["code"] == code and found["heldBatches"] == ["WO-1"]
    unit = served.post("val", IDENTIFY, code="SN-0042")["data"]["identify"]
    assert (unit["kind"], unit["productName"], unit["defects"]) == ("Unit", "pump housing", 2)
    assert unit["openCapas"][1] == {
        "uid": "CAPA-UNIT", "title": "cracks at the boss", "status": "reported",
        "priority": "high", "dueAt": "2026-03-22T08:00:00+00:00",
    }  # fmt: skip
    error = served.post("val", IDENTIFY, code="(21)SN-404")["errors"][0]
    assert error["extensions"]["code"] == "NOT_FOUND" and "'SN-404'" in error["message"]
    types = served.post("val", TYPES)["data"]["defectTypes"]
    assert [t["name"] for t in types] == ["Burr", "crack"]


def test_a_report_with_two_photos_is_recorded_once(served: Served) -> None:
    sent = {
        "reportId": str(uuid.uuid4()), "target": "SN-0042", "defectType": "DT-CRACK",
        "severity": "MAJOR", "note": "hairline crack", "foundAt": "2026-03-02T09:30:00Z",
    }  # fmt: skip
    photos = [("front.jpg", jpeg((250, 0, 0))), ("side.jpg", jpeg((0, 250, 0)))]
    first = served.send("ines", sent, photos).json()["data"]["reportDefect"]
    defect = first["defect"]
    assert (first["created"], defect["uid"]) == (True, f"DEF-R-{sent['reportId']}")
    assert (defect["severity"], defect["reportedBy"], defect["description"]) == (
        "MAJOR", "ines", "hairline crack")  # fmt: skip
    digests = [e["digest"] for e in first["evidence"]]
    assert json.loads(defect["evidence"]) == digests and len(set(digests)) == 2
    assert [e["mediaType"] for e in first["evidence"]] == ["image/jpeg"] * 2
    for digest in digests:
        key = digest.removeprefix("sha256:")
        assert (served.data_dir / EVIDENCE_DIR / key[:2] / key).is_file()
    files = served.evidence_files()
    second = served.send("ines", sent, photos).json()["data"]["reportDefect"]
    assert (second["created"], second["defect"], second["evidence"]) == (
        False, defect, first["evidence"])  # fmt: skip
    assert served.evidence_files() == files
    history = served.post("val", "query($u: String!) { recordHistory(uid: $u) { actor action } }",
                          u=defect["uid"])["data"]["recordHistory"]  # fmt: skip
    assert history == [{"actor": "ines", "action": "reported"}]


def test_refused_reports_write_nothing(served: Served) -> None:
    before = served.evidence_files()
    defects = served.post("val", IDENTIFY, code="WO-2")["data"]["identify"]["defects"]
    sent = {"reportId": str(uuid.uuid4()), "target": "WO-2", "defectType": "DT-BURR",
            "severity": "MINOR"}  # fmt: skip
    polyglot = served.send("ines", sent, [("ok.jpg", jpeg((9, 9, 9))), ("x.png", png_with_html())])
    error = polyglot.json()["errors"][0]
    assert error["extensions"]["code"] == "VALIDATION_FAILED" and "HTML markup" in error["message"]
    viewer = served.send("val", sent, [("ok.jpg", jpeg((9, 9, 9)))])
    assert viewer.status_code == 403  # before the photo was read
    assert viewer.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    plain = served.post("val", REPORT, report=sent)["errors"][0]
    assert plain["extensions"]["code"] == "FORBIDDEN"
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    future = served.post("ines", REPORT, report=sent | {"foundAt": ahead})["errors"][0]
    assert future["extensions"]["code"] == "VALIDATION_FAILED" and "future" in future["message"]
    not_a_file = served.post("ines", REPORT, report=sent, photos=["data:image/jpeg;base64,"])
    assert not_a_file["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED"
    assert "photos[0] is not a file" in not_a_file["errors"][0]["message"]
    assert served.evidence_files() == before
    assert served.post("val", IDENTIFY, code="WO-2")["data"]["identify"]["defects"] == defects
    made = served.post("ines", REPORT, report=sent)["data"]["reportDefect"]
    assert made["created"] and made["evidence"] == []


def test_a_report_sent_four_times_at_once_is_one_defect(served: Served) -> None:
    sent = {"reportId": str(uuid.uuid4()), "target": "SN-0042", "defectType": "DT-BURR",
            "severity": "CRITICAL", "note": "queued offline"}  # fmt: skip
    photo = [("burr.jpg", jpeg((120, 120, 0)))]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: served.send("ines", sent, photo).json(), range(4)))
    made = [a["data"]["reportDefect"] for a in answers]
    assert sorted(m["created"] for m in made) == [False, False, False, True]
    assert len({json.dumps(m, sort_keys=True) for m in made if not m["created"]}) == 1
    uid = made[0]["defect"]["uid"]
    history = served.post("val", "query($u: String!) { recordHistory(uid: $u) { action } }",
                          u=uid)["data"]["recordHistory"]  # fmt: skip
    assert history == [{"action": "reported"}]
    digest = made[0]["evidence"][0]["digest"].removeprefix("sha256:")
    assert (served.data_dir / EVIDENCE_DIR / digest[:2] / digest).is_file()
