"""The CAPA workflow over the API: roles checked per move, the verifier named by the
caller's key, every change in the audit trail, and the trail verified by an admin."""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer

from sqems.graph_model import EmbeddedGraphStore
from sqems.graph_model.nodes import Batch, Complaint
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings

CAPA = "uid label ... on Capa { status priority owner verifier effective reopened }"


@dataclass
class Served:
    url: str
    tokens: dict[str, str]
    access: AccessStore
    data_dir: Path | None = None

    def post(self, who: str, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=30,
        )
        assert response.status_code == 200 and "Traceback" not in response.text
        body: dict[str, Any] = response.json()
        return body

    def data(self, who: str, query: str, **variables: Any) -> Any:
        body = self.post(who, query, **variables)
        assert "errors" not in body, body["errors"]
        return next(iter(body["data"].values()))

    def error(self, who: str, query: str, **variables: Any) -> tuple[str, str]:
        error = self.post(who, query, **variables)["errors"][0]
        return error["extensions"]["code"], error["message"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data: Path = tmp_path_factory.mktemp("api-capa")
    store = EmbeddedGraphStore(None)
    store.upsert_nodes([Complaint(uid="CMP-1", received_at=datetime(2026, 3, 1, tzinfo=UTC),
                                  description="housing cracked"),
                        Batch(uid="WO-9", started_at=datetime(2026, 3, 1, tzinfo=UTC),
                              quantity=10)])  # fmt: skip
    access = AccessStore(None)
    keys = {"ines": Role.INSPECTOR, "erik": Role.ENGINEER, "vera": Role.ENGINEER,
            "val": Role.VIEWER, "root": Role.ADMIN}  # fmt: skip
    tokens = {name: access.create_key(name, role)[1] for name, role in keys.items()}
    settings = Settings(data_dir=data, audit_busy_timeout_s=0.3)
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Served(server.url, tokens, access, data)
    access.close()
    store.close()


def test_a_complaint_goes_from_report_to_a_signed_closure_over_the_api(served: Served) -> None:
    open_ = f"mutation($c: String!) {{ capaFromComplaint(complaint: $c) {{ {CAPA} }} }}"
    assert served.error("val", open_, c="CMP-1")[0] == "FORBIDDEN"
    capa = served.data("ines", open_, c="CMP-1")
    uid = capa["uid"]
    assert capa["status"] == "REPORTED"

    triage = f"mutation($u: String!) {{ triageCapa(uid: $u, priority: HIGH) {{ {CAPA} }} }}"
    assert served.error("ines", triage, u=uid)[0] == "FORBIDDEN"
    assert served.data("erik", triage, u=uid)["priority"] == "HIGH"
    served.data(
        "erik",
        f"""mutation($u: String!) {{ assignCapa(uid: $u, owner: "olga",
        verifier: "vera", dueAt: "2030-01-31T00:00:00+00:00") {{ {CAPA} }} }}""",
        u=uid,
    )
    served.data("erik", f"mutation($u: String!) {{ startCapa(uid: $u) {{ {CAPA} }} }}", u=uid)
    submit = f"mutation($u: String!) {{ submitCapa(uid: $u) {{ {CAPA} }} }}"
    code, message = served.error("erik", submit, u=uid)
    assert code == "VALIDATION_FAILED" and "has no root cause yet" in message
    served.data("erik", """mutation($u: String!) { recordRootCause(uid: $u,
        fiveWhy: ["cracked", "brittle resin"], eightD: {D4: "wet resin lot"}) { uid } }""",
                u=uid)  # fmt: skip
    served.data(
        "erik",
        f"""mutation($u: String!) {{ addCapaAction(uid: $u, kind: "corrective",
        text: "dry resin 4 h at 80 degC") {{ {CAPA} }} }}""",
        u=uid,
    )
    assert served.data("erik", submit, u=uid)["status"] == "VERIFYING"

    verify = f"""mutation($u: String!, $k: String!) {{ verifyCapa(uid: $u, effective: true,
        note: "no cracks in 3 lots", credential: $k) {{ {CAPA} }} }}"""
    code, message = served.error("erik", verify, u=uid, k=served.tokens["erik"])
    assert code == "VALIDATION_FAILED" and "verifier (vera) may verify it; erik is not" in message
    for wrong in ("", "sqems_nope_nope", served.tokens["erik"]):  # a signature re-authenticates
        code, message = served.error("vera", verify, u=uid, k=wrong)
        assert code == "UNAUTHENTICATED" and "needs your own API key again" in message
    closed = served.data("vera", verify, u=uid, k=served.tokens["vera"])
    assert (closed["status"], closed["effective"]) == ("CLOSED", True)

    history = served.data(
        "val",
        """query($u: String!) { capaHistory(uid: $u) {
        seq actor role action meaning before after hash prev } }""",
        u=uid,
    )
    assert history[0]["action"] == "reported" and history[0]["actor"] == "ines"
    assert (history[-1]["action"], history[-1]["actor"]) == ("signature", "vera")
    assert history[-1]["meaning"] == "verified effective and closed"
    assert history[1]["before"]["priority"] is None and history[1]["after"]["priority"] == "high"
    for before, after in itertools.pairwise(history):
        assert after["prev"] == before["hash"]

    check = "{ verifyAuditTrail { ok entries reason head } }"
    assert served.error("erik", check)[0] == "FORBIDDEN"
    result = served.data("root", check)
    assert (
        result["ok"] and result["entries"] == len(history) and result["head"] == history[-1]["hash"]
    )
    logged = [e.operation for e in served.access.audit(50)]
    assert "verifyCapa" in logged and "capaFromComplaint" in logged


def test_an_unknown_capa_and_a_bad_move_are_typed_errors(served: Served) -> None:
    start = f"mutation($u: String!) {{ startCapa(uid: $u) {{ {CAPA} }} }}"
    missing = ("NOT_FOUND", "CAPA CAPA-404 is not in the graph")
    assert served.error("erik", start, u="CAPA-404") == missing
    report = 'mutation { reportCapa(title: "burr", addresses: ["CMP-1"]) { uid } }'
    uid = served.data("ines", report)["uid"]
    code, message = served.error("erik", start, u=uid)
    assert code == "VALIDATION_FAILED" and "is reported: it cannot start" in message


def test_evidence_is_uploaded_to_an_action_and_a_text_file_is_refused(served: Served) -> None:
    import json  # noqa: PLC0415

    report = 'mutation { reportCapa(title: "burr", addresses: ["CMP-1"]) { uid } }'
    uid = served.data("ines", report)["uid"]
    served.data(
        "erik",
        """mutation($u: String!) { addCapaAction(uid: $u, kind: "containment",
        text: "sort the stock") { uid } }""",
        u=uid,
    )
    attach = """mutation($u: String!, $f: Upload!) { attachCapaEvidence(uid: $u,
        kind: "containment", action: 0, file: $f) { digest kind mediaType size name } }"""

    def upload(content: bytes, name: str) -> dict[str, Any]:
        operations = {"query": attach, "variables": {"u": uid, "f": None}}
        response = httpx.post(
            f"{served.url}/graphql",
            data={"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.f"]})},
            files={"0": (name, content, "application/octet-stream")},
            headers={"Authorization": f"Bearer {served.tokens['ines']}"},
        )
        body: dict[str, Any] = response.json()
        return body

    photo = _png()
    stored = upload(photo, "burr.png")["data"]["attachCapaEvidence"]
    assert (stored["kind"], stored["mediaType"], stored["size"]) == ("photo", "image/png", 67)
    capa = served.data(
        "val",
        """query($u: String!) { capa(uid: $u) {
        ... on Capa { containment } } }""",
        u=uid,
    )
    assert json.loads(capa["containment"])[0]["evidence"] == [stored["digest"]]
    refused = upload(b"plain notes", "notes.txt")["errors"][0]
    assert refused["extensions"]["code"] == "VALIDATION_FAILED"
    assert "notes.txt is not a photo" in refused["message"]


def test_precedents_and_effectiveness_are_served(served: Served) -> None:
    code, message = served.error("val", '{ capaPrecedents(defectType: "DT-NONE") { capa } }')
    assert code == "NOT_FOUND"
    report = 'mutation { reportCapa(title: "open one", addresses: ["CMP-1"]) { uid } }'
    uid = served.data("ines", report)["uid"]
    code, message = served.error(
        "val",
        '{ capaEffectiveness(uid: "%s") { verdict } }' % uid,  # noqa: UP031
    )
    assert code == "VALIDATION_FAILED" and "is not closed" in message


def test_supplier_scorecards_are_served_and_an_unknown_one_is_not_found(served: Served) -> None:
    cards = served.data(
        "val", "{ supplierScorecards { supplier lots materialPpm trend { month } } }"
    )
    assert cards == []  # this server's graph has no suppliers
    code, message = served.error("val", '{ supplierScorecard(uid: "SUP-X") { supplier } }')
    assert (code, message) == ("NOT_FOUND", "supplier SUP-X is not in the graph")


def test_the_device_history_record_of_an_unknown_batch_is_not_found(served: Served) -> None:
    query = '{ deviceHistoryRecord(batch: "WO-NONE") { html } }'
    assert served.error("val", query) == ("NOT_FOUND", "batch WO-NONE is not in the graph")


def test_holding_a_batch_is_recorded_in_the_trail_with_before_and_after(
    tmp_path: Path,
) -> None:
    from sqems.graph_model.nodes import Batch  # noqa: PLC0415

    store = EmbeddedGraphStore(None)
    store.upsert_nodes([Batch(uid="WO-1", started_at=datetime(2026, 3, 1, tzinfo=UTC),
                              quantity=10)])  # fmt: skip
    access = AccessStore(None)
    tokens = {"erik": access.create_key("erik", Role.ENGINEER)[1]}
    with LiveServer(create_app(Settings(data_dir=tmp_path), store=store, access=access)) as s:
        served = Served(s.url, tokens, access)
        served.data("erik", 'mutation { holdBatch(uid: "WO-1", reason: "suspect lot") { uid } }')
        served.data("erik", 'mutation { releaseBatch(uid: "WO-1", reason: "lot cleared") { uid } }')
        history = served.data(
            "erik",
            """{ recordHistory(uid: "WO-1") {
            actor action before after } }""",
        )
    assert [h["action"] for h in history] == ["held: suspect lot", "released: lot cleared"]
    assert (history[0]["before"]["status"], history[0]["after"]["status"]) == ("completed",
                                                                             "on_hold")  # fmt: skip
    assert history[1]["after"]["status"] == "completed" and history[0]["actor"] == "erik"
    access.close()
    store.close()


def _png() -> bytes:
    """A well-formed 1 by 1 grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))  # fmt: skip


def _new_capa(served: Served, *, actions: int = 0) -> str:
    uid: str = served.data("ines", 'mutation { reportCapa(title: "burr", addresses: '
                           '["CMP-1"]) { uid } }')["uid"]  # fmt: skip
    for i in range(actions):
        served.data("erik", """mutation($u: String!, $t: String!) { addCapaAction(uid: $u,
            kind: "containment", text: $t) { uid } }""", u=uid, t=f"action {i}")  # fmt: skip
    return uid


def test_twenty_actions_added_at_once_over_the_api_all_survive_with_their_entries(
    served: Served,
) -> None:
    import json  # noqa: PLC0415
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    uid = _new_capa(served)
    add = """mutation($u: String!, $t: String!) { addCapaAction(uid: $u, kind: "corrective",
        text: $t) { uid } }"""
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda i: served.data("erik", add, u=uid, t=f"fix {i}"), range(20)))
    capa = served.data("val", 'query($u: String!) { capa(uid: $u) { ... on Capa { corrective '
                       "} } }", u=uid)  # fmt: skip
    assert sorted(a["text"] for a in json.loads(capa["corrective"])) == sorted(
        f"fix {i}" for i in range(20)
    )
    history = served.data("val", "query($u: String!) { capaHistory(uid: $u) { action } }", u=uid)
    assert [h["action"] for h in history].count("corrective action added") == 20


def test_a_locked_trail_refuses_a_move_and_the_capa_stays_as_it_was(served: Served) -> None:
    import sqlite3  # noqa: PLC0415

    from sqems.quality.audit import TRAIL_FILE  # noqa: PLC0415

    assert served.data_dir is not None
    uid = _new_capa(served)
    triage = f"mutation($u: String!) {{ triageCapa(uid: $u, priority: HIGH) {{ {CAPA} }} }}"
    other = sqlite3.connect(served.data_dir / TRAIL_FILE, isolation_level=None)
    hold = 'mutation { holdBatch(uid: "WO-9", reason: "suspect lot") { uid } }'
    other.execute("BEGIN EXCLUSIVE")  # a backup or another process holds the trail
    try:
        code, message = served.error("erik", triage, u=uid)
        assert served.error("erik", hold)[0] == "AUDIT_UNAVAILABLE"
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert code == "AUDIT_UNAVAILABLE" and "nothing was changed" in message
    capa = served.data("val", f"query($u: String!) {{ capa(uid: $u) {{ {CAPA} }} }}", u=uid)
    assert (capa["status"], capa["priority"]) == ("REPORTED", None)
    history = served.data("val", "query($u: String!) { capaHistory(uid: $u) { action } }", u=uid)
    assert [h["action"] for h in history] == ["reported"]
    assert served.data("erik", triage, u=uid)["status"] == "TRIAGED"
    batch = served.data("val", '{ entity(uid: "WO-9") { ... on Batch { status } } }')
    assert batch["status"] == "COMPLETED"
    assert served.data("val", '{ recordHistory(uid: "WO-9") { action } }') == []


def test_evidence_for_a_capa_that_cannot_take_it_writes_nothing(served: Served) -> None:
    import json  # noqa: PLC0415

    from sqems.quality.evidence import EVIDENCE_DIR  # noqa: PLC0415

    png = _png()
    attach = """mutation($u: String!, $f: Upload!) { attachCapaEvidence(uid: $u,
        kind: "containment", action: 0, file: $f) { digest } }"""

    def upload(uid: str, content: bytes, who: str = "erik") -> dict[str, Any]:
        operations = {"query": attach, "variables": {"u": uid, "f": None}}
        response = httpx.post(
            f"{served.url}/graphql",
            data={"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.f"]})},
            files={"0": ("photo.png", content, "image/png")},
            headers={"Authorization": f"Bearer {served.tokens[who]}"},
        )
        body: dict[str, Any] = response.json()
        return body

    assert served.data_dir is not None
    files = served.data_dir / EVIDENCE_DIR
    before = sorted(files.rglob("*")) if files.exists() else []
    refusals = [
        (upload("CAPA-404", png), "NOT_FOUND"),
        (upload(_new_capa(served), png), "VALIDATION_FAILED"),  # it has no action 0
        (upload(_new_capa(served, actions=1), png, who="val"), "FORBIDDEN"),
        (upload(_new_capa(served, actions=1), png + b"<html><script>x</script>"),
         "VALIDATION_FAILED"),
    ]  # fmt: skip
    assert [r["errors"][0]["extensions"]["code"] for r, _ in refusals] == [c for _, c in refusals]
    assert (sorted(files.rglob("*")) if files.exists() else []) == before
    assert "digest" in upload(_new_capa(served, actions=1), png)["data"]["attachCapaEvidence"]


def test_key_names_are_unique_printable_and_never_the_products_own() -> None:
    from sqems.errors import ValidationFailed  # noqa: PLC0415

    access = AccessStore(None)
    bob, _ = access.create_key("bob", Role.ENGINEER)
    access.revoke(bob.id)
    for name, why in [
        ("BOB", "is taken"),  # revoked or not, a name is never handed to someone else
        (" Bob ", "is taken"),
        ("sqems-ingestion", "is reserved"),
        ("SYSTEM", "is reserved"),
        ("x\x00y", "letters, digits, spaces"),
        ("line\nbreak", "letters, digits, spaces"),
        ("=HYPERLINK(1)", "letters, digits, spaces"),
        ("a" * 100_000, "at most 64 characters"),
    ]:
        with pytest.raises(ValidationFailed, match=why):
            access.create_key(name, Role.VIEWER)
    assert access.create_key("José O'Neil-Smith", Role.VIEWER)[0].name == "José O'Neil-Smith"
    assert (access.free_name("BOB"), access.free_name("ann")) == ("BOB 2", "ann")
    again, token = access.reissue(bob.id)  # bob's lost key replaced: same name, new secret
    assert (again.name, again.revoked_at) == ("bob", None) and access.verify(token) == again
    assert [k.name for k in access.keys()] == ["bob", "José O'Neil-Smith"]  # noqa: SIM118
    access.close()
