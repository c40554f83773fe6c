"""The inspector's phone app (/inspect) in a real headless Chromium at a phone's
viewport (390x844) whose camera is Chromium's fake capture device playing a video of a
printed code (tests/fake_camera.py): scan a unit's QR code, report a defect with a photo
taken with the camera, the Defect and its evidence in the graph, the card refreshed; a
batch's Code 128, a lot's DataMatrix and a GS1 DataMatrix scanned; reports made offline
queued on the phone (the last card back when the app reopens offline) and sent once when
the network returns; a CAPA approved on the phone with an electronic signature, refused
with a wrong credential; a revoked key replaced without losing the queued report; a batch
held by an engineer, with no hold button for an inspector.

The server is a real uvicorn (tests/live_server.py) on a small generated plant; what
reaches it is recorded by :class:`Recorder` (an ASGI layer that keeps each request's
method, path and the report ids in its body, and passes everything on unchanged).

Screenshots are kept under ``test-artifacts/`` (``SQEMS_TEST_ARTIFACTS``)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ARTIFACTS
from fake_camera import FakeCamera, launch_with_camera
from live_server import LiveServer
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import Unit
from sqems.graph_model.store import Direction, Edge
from sqems.graphql import AccessStore, Role, create_app
from sqems.quality.audit import TRAIL_FILE, AuditTrail
from sqems.quality.evidence import EvidenceStore
from sqems.settings import Settings

PHONE = {"width": 390, "height": 844}
SIGNING_PASSWORD = "torque-wrench-42"
REPORT_ID = re.compile(rb'"reportId"\s*:\s*"([0-9a-fA-F-]{36})"')


class Recorder:
    """An ASGI layer in front of the app that notes every HTTP request reaching the
    server (method, path, and the ``reportId`` values in a GraphQL body) and passes the
    request and its answer on unchanged."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str]] = []
        self.reports: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests.append((scope["method"], scope["path"]))
        if scope["path"] != "/graphql" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def reading() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    self.reports.extend(m.decode() for m in REPORT_ID.findall(bytes(body)))
            return message

        await self.app(scope, reading, send)


@dataclass
class Plant:
    url: str
    store: GraphStore
    access: AccessStore
    data: Path
    recorder: Recorder
    tokens: dict[str, str] = field(default_factory=dict)

    def gql(self, who: str, query: str, **variables: Any) -> Any:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=30,
        )
        body = response.json()
        assert "errors" not in body, body["errors"]
        return next(iter(body["data"].values()))

    def trail(self, uid: str) -> list[Any]:
        """The audit trail's entries about ``uid`` (read from the trail's own file)."""
        trail = AuditTrail(self.data / TRAIL_FILE)
        try:
            return trail.entries(uid)
        finally:
            trail.close()

    def reported(self, unit: str) -> list[Any]:
        """The Defects reported from a phone (``DEF-R-…``) found on ``unit``."""
        edges = self.store.edges([unit], {"FOUND_ON": Direction.IN})
        found = self.store.get_many(e.src for e in edges if e.src.startswith("DEF-R-"))
        return [found[uid] for uid in sorted(found)]


UNITS = ["U-INSP-0001", "U-INSP-0002", "U-INSP-0003"]
"""Units added to the plant's first assembly batch for the inspector to scan."""
BATCH = "WO-ASM-00001"


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    data = tmp_path_factory.mktemp("inspect")
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=4))))
    started = store.get(BATCH).started_at  # type: ignore[attr-defined]
    store.upsert_nodes(Unit(uid=u, produced_at=started + timedelta(minutes=5 + i))
                       for i, u in enumerate(UNITS))  # fmt: skip
    store.upsert_edges(Edge("PRODUCED", BATCH, u) for u in UNITS)
    access = AccessStore(None)
    keys = {"ines": Role.INSPECTOR, "ivan": Role.INSPECTOR, "erik": Role.ENGINEER,
            "olga": Role.ENGINEER}  # fmt: skip
    tokens = {name: access.create_key(name, role)[1] for name, role in keys.items()}
    access.set_signing_password("erik", SIGNING_PASSWORD)
    recorder = Recorder(create_app(Settings(data_dir=data), store=store, access=access))
    with LiveServer(recorder) as server:
        yield Plant(server.url, store, access, data, recorder, tokens)
    access.close()
    store.close()


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> FakeCamera:
    return FakeCamera(tmp_path_factory.mktemp("camera") / "camera.y4m", UNITS[0])


@pytest.fixture(scope="module")
def phone_browser(browser: Any, camera: FakeCamera) -> Iterator[Any]:
    """A second Chromium, its camera the fake one (the session's has none)."""
    launched = launch_with_camera(browser.browser_type, camera)
    yield launched
    launched.close()


@pytest.fixture
def phone(phone_browser: Any) -> Iterator[Any]:
    """A fresh phone (its own storage), camera allowed; fails on a page error or a
    Content-Security-Policy violation."""
    context = phone_browser.new_context(
        viewport=PHONE, is_mobile=True, has_touch=True, permissions=["camera"]
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security" in m.text else None)
    yield page
    context.close()
    assert not errors, errors


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"inspect-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait(page: Any, condition: str, what: str, arg: Any = None) -> None:
    """Wait for ``condition`` (a JS function of ``arg``) to hold; on a timeout, fail with
    what the app shows, so a slow or stuck step says where it stood."""
    try:
        page.wait_for_function(condition, arg=arg, timeout=30_000)
    except PlaywrightTimeout:
        shown = page.evaluate("JSON.stringify(window.sqemsInspect)")
        pytest.fail(f"timed out waiting for {what}; the app shows {shown}; "
                    f"error: {page.inner_text('#error')!r}")  # fmt: skip


# --- driving the app -------------------------------------------------------------------


def open_app(page: Any, plant: Plant, who: str) -> None:
    """Open /inspect with ``who``'s key (kept in the phone's storage) and wait for the app
    and its service worker."""
    page.goto(f"{plant.url}/inspect#key={plant.tokens[who]}")
    wait(page, "() => ['ready', 'error'].includes(document.body.dataset.state)", "the app")
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    wait(page, "() => window.sqemsInspect.serviceWorker === 'active'", "its service worker")


def look_up(page: Any, code: str) -> None:
    """Type ``code`` and wait for its card."""
    page.fill("#code-input", code)
    page.click("#code-submit")
    wait(page, "(code) => document.getElementById('unit-card').dataset.uid === code",
         f"the card of {code}", code)  # fmt: skip


def take_photo(page: Any) -> dict[str, str]:
    """Open the camera for photos, take one, close it: the thumbnail's data (size, bytes)."""
    count: int = page.evaluate("window.sqemsInspect.photos")
    page.click("#photo-camera")
    wait(page, """() => window.sqemsInspect.camera === 'photo'
                        && document.getElementById('camera-video').readyState >= 2""",
         "the camera's picture")  # fmt: skip
    page.click("#photo-shutter")
    wait(page, "(n) => window.sqemsInspect.photos === n", "the photo", count + 1)
    screenshot(page, "photo", full_page=False)  # the camera covers the screen
    thumb: dict[str, str] = page.eval_on_selector(
        f"#photos li[data-index='{count}']", "li => ({ ...li.dataset })"
    )
    return thumb


def write_report(page: Any, defect_type: str, severity: str, note: str,
                 *, photo: bool = False) -> dict[str, str] | None:  # fmt: skip
    """Fill in and send the report form on the card shown; the photo's thumbnail data."""
    page.click("#report-open")
    page.select_option("#report-type", defect_type)
    page.check(f"input[name=severity][value={severity}]")
    page.fill("#report-note", note)
    thumb = take_photo(page) if photo else None
    if photo:
        page.click("#camera-close")
    page.click("#report-submit")
    page.wait_for_selector("#report-form", state="hidden", timeout=30_000)
    return thumb


def wait_sent(page: Any, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` reports are sent and none waits: what the phone says it sent."""
    wait(page, "(n) => window.sqemsInspect.sent.length >= n && !window.sqemsInspect.queue.length",
         f"{count} report(s) sent", count)  # fmt: skip
    sent: list[dict[str, Any]] = page.evaluate("window.sqemsInspect.sent")
    return sent


# --- the tests -------------------------------------------------------------------------


def test_a_scanned_unit_gets_a_defect_with_a_compressed_photo_from_the_camera(
    plant: Plant, phone: Any, camera: FakeCamera
) -> None:
    camera.show(UNITS[0])
    open_app(phone, plant, "ines")
    phone.click("#scan-start")
    wait(
        phone,
        "(u) => window.sqemsInspect.lookup === 'shown' && window.sqemsInspect.identified.uid === u",
        "the scanned unit",
        UNITS[0],
    )
    shown = phone.evaluate("window.sqemsInspect")
    # Debian's Chromium on Linux has no BarcodeDetector: the code is read by zxing-wasm
    assert not phone.evaluate("'BarcodeDetector' in window"), "this Chromium has BarcodeDetector"
    assert (shown["decoder"], shown["scanned"], shown["camera"]) == ("zxing-wasm", UNITS[0], "off")
    assert phone.get_attribute("#unit-card", "data-kind") == "Unit"
    assert phone.inner_text("#unit-batch") == BATCH
    assert phone.inner_text("#unit-defects") == "0"
    screenshot(phone, "scanned")

    thumb = write_report(phone, "DT-SCRATCH", "MINOR", "scratch across the label", photo=True)
    assert thumb is not None
    (sent,) = wait_sent(phone, 1)
    # the card shown is looked up again: its count and recent defects have the new one
    wait(phone, "() => document.getElementById('unit-defects').textContent === '1'",
         "the card refreshed after the report was sent")  # fmt: skip
    recent = phone.eval_on_selector_all("#unit-recent li", "ls => ls.map(l => l.dataset.defect)")
    assert recent == [sent["defect"]]
    screenshot(phone, "reported")
    assert (sent["target"], sent["created"], sent["photos"]) == (UNITS[0], True, 1)
    assert plant.recorder.reports.count(sent["reportId"]) == 1

    (defect,) = plant.reported(UNITS[0])
    assert defect.uid == sent["defect"] == f"DEF-R-{sent['reportId']}"
    assert (defect.severity.value, defect.description, defect.reported_by) == (
        "minor", "scratch across the label", "ines")  # fmt: skip
    of_type = plant.store.edges([defect.uid], {"OF_TYPE": Direction.OUT})
    assert [e.dst for e in of_type] == ["DT-SCRATCH"]
    (digest,) = json.loads(defect.evidence)
    evidence = EvidenceStore(plant.data / "evidence")
    stored = evidence.get(digest)
    assert (stored.kind, stored.media_type, stored.size) == ("photo", "image/jpeg",
                                                             int(thumb["bytes"]))  # fmt: skip
    with evidence.open(digest) as handle:
        data = handle.read()
    photo = Image.open(io.BytesIO(data))
    assert photo.format == "JPEG"
    assert photo.size == (int(thumb["width"]), int(thumb["height"])) == (640, 480)
    lossless = io.BytesIO()
    photo.save(lossless, format="PNG")
    # compressed on the phone: a fraction of the frame's pixels, and of a lossless copy
    assert stored.size < photo.width * photo.height * 3 / 8, stored.size
    assert stored.size < lossless.tell() / 3, (stored.size, lossless.tell())
    assert len(plant.trail(defect.uid)) == 1


def queued(page: Any) -> int:
    """How many reports the phone says are waiting (its badge), checked against its outbox."""
    badge = page.inner_text("#queue-badge") if page.is_visible("#queue-badge") else "0"
    assert int(badge) == len(page.evaluate("window.sqemsInspect.queue")), badge
    return int(badge)


def test_reports_written_offline_wait_on_the_phone_and_are_sent_once_online(
    plant: Plant, phone: Any, camera: FakeCamera
) -> None:
    camera.show(UNITS[1])
    open_app(phone, plant, "ines")
    look_up(phone, UNITS[1])
    phone.context.set_offline(True)
    phone.wait_for_selector("body[data-online=false]")
    heard = len(plant.recorder.requests)

    write_report(phone, "DT-CRACKED-HOUSING", "MAJOR", "crack at the left boss", photo=True)
    write_report(phone, "DT-TORQUE-LOW", "CRITICAL", "cover screw turns by hand")
    assert queued(phone) == 2
    phone.click("#tabs [data-goto=queue]")
    assert phone.get_attribute("#queue-count", "data-count") == "2"
    states = phone.eval_on_selector_all("#queue-list li", "ls => ls.map(l => l.dataset.state)")
    assert states == ["queued", "queued"]
    screenshot(phone, "offline-queue")
    reports = [r["reportId"] for r in phone.evaluate("window.sqemsInspect.queue")]

    phone.reload()  # the app opens with no network (its worker's cache) and still holds both
    wait(phone, "() => document.body.dataset.state === 'ready'", "the app opened offline")
    assert [r["reportId"] for r in phone.evaluate("window.sqemsInspect.queue")] == reports
    assert queued(phone) == 2
    # the card shown last is back, from the phone's memory, saying when it was seen
    assert phone.evaluate("window.sqemsInspect.restored") == UNITS[1]
    assert phone.get_attribute("#unit-card", "data-uid") == UNITS[1]
    assert phone.inner_text("#unit-batch") == BATCH
    assert phone.inner_text("#unit-stale").startswith("No network: as seen on ")
    screenshot(phone, "offline-reopened")
    assert plant.recorder.requests[heard:] == []  # nothing reached the server
    assert plant.reported(UNITS[1]) == []

    phone.context.set_offline(False)
    sent = wait_sent(phone, 2)
    assert sorted(s["reportId"] for s in sent) == sorted(reports)
    assert all(s["created"] for s in sent)
    wait(phone, """() => document.getElementById('unit-defects').textContent === '2'
                        && document.getElementById('unit-stale').hidden""",
         "the remembered card looked up again online")  # fmt: skip
    phone.click("#tabs [data-goto=queue]")
    listed = phone.eval_on_selector_all(
        "#sent-list li", "ls => ls.map(l => [l.dataset.reportId, l.dataset.created])"
    )
    assert sorted(listed) == sorted([r, "true"] for r in reports)
    screenshot(phone, "online-sent")
    defects = plant.reported(UNITS[1])
    assert [d.uid for d in defects] == sorted(f"DEF-R-{r}" for r in reports)
    photos = {d.uid: (d.severity.value, len(json.loads(d.evidence))) for d in defects}
    assert photos == {f"DEF-R-{reports[0]}": ("major", 1), f"DEF-R-{reports[1]}": ("critical", 0)}
    for defect in defects:
        assert len(plant.trail(defect.uid)) == 1
    assert [plant.recorder.reports.count(r) for r in reports] == [1, 1]  # each sent once

    # the phone loses the server's answer to one report (as when the connection drops
    # after the server committed): the report goes back into the outbox and is sent again
    # when the app opens; the server already has it
    again = reports[1]
    phone.evaluate(
        """async (id) => {
             const outbox = await import('/viewer/app/outbox.js');
             await outbox.addReport({ reportId: id, target: 'U-INSP-0002', code: 'U-INSP-0002',
               kind: 'Unit', defectType: 'DT-TORQUE-LOW', defectTypeName: 'Fastener under-torqued',
               severity: 'CRITICAL', note: 'cover screw turns by hand',
               foundAt: new Date().toISOString(), photos: [] });
           }""",
        again,
    )
    phone.reload()
    wait(phone, "(id) => window.sqemsInspect.sent.some((s) => s.reportId === id)",
         "the report sent again", again)  # fmt: skip
    (resent,) = phone.evaluate("window.sqemsInspect.sent")
    assert (resent["defect"], resent["created"]) == (f"DEF-R-{again}", False)
    assert plant.recorder.reports.count(again) == 2
    assert [d.uid for d in plant.reported(UNITS[1])] == [d.uid for d in defects]
    for defect in defects:
        assert len(plant.trail(defect.uid)) == 1
    assert queued(phone) == 0


def capa_to_verify(plant: Plant) -> str:
    """A CAPA on one of the plant's defects, worked by olga and waiting for erik to verify."""
    uid: str = plant.gql(
        "olga",
        """mutation { reportCapa(title: "Housings scratched",
        problem: "housings scratched at packing", addresses: ["DEF-0000001"]) { uid } }""",
    )["uid"]
    for move in (
        "triageCapa(uid: $u, priority: HIGH) { uid }",
        'assignCapa(uid: $u, owner: "olga", verifier: "erik", '
        'dueAt: "2030-01-31T00:00:00+00:00") { uid }',
        "startCapa(uid: $u) { uid }",
        'recordRootCause(uid: $u, fiveWhy: ["scratched", "tray edge sharp"]) { uid }',
        'addCapaAction(uid: $u, kind: "corrective", text: "deburr the packing trays") { uid }',
        "submitCapa(uid: $u) { uid }",
    ):
        plant.gql("olga", f"mutation($u: String!) {{ {move} }}", u=uid)
    return uid


def test_a_verifier_signs_on_the_phone_and_a_wrong_credential_is_refused(
    plant: Plant, phone: Any
) -> None:
    uid = capa_to_verify(plant)
    entries = len(plant.trail(uid))
    open_app(phone, plant, "erik")
    phone.click("#tabs [data-goto=tasks]")
    task = f"#tasks-list li[data-capa='{uid}']"
    phone.wait_for_selector(f"{task}[data-action=verify][data-as=verifier]", timeout=30_000)
    screenshot(phone, "tasks")

    phone.click(f"{task} button[data-sign=approve]")
    assert phone.get_attribute("#sign-dialog", "data-capa") == uid
    assert "erik" in phone.inner_text("#sign-signer")
    phone.fill("#sign-note", "no scratches on 3 packed lots")
    phone.fill("#sign-credential", "not-my-password")
    phone.click("#sign-submit")
    phone.wait_for_selector("#sign-error:not([hidden])", timeout=30_000)
    assert phone.inner_text("#sign-error").startswith("Refused"), phone.inner_text("#sign-error")
    assert phone.is_visible("#sign-dialog") and phone.input_value("#sign-credential") == ""
    screenshot(phone, "signature-refused", full_page=False)
    assert plant.store.get(uid).status.value == "verifying"  # type: ignore[attr-defined]
    assert len(plant.trail(uid)) == entries
    refused = [a for a in plant.access.audit(20) if a.key_name == "erik"]
    assert (refused[0].operation, refused[0].outcome) == ("verifyCapa", "failed: UNAUTHENTICATED")
    assert "credential" not in refused[0].arguments  # the API log never keeps a credential

    phone.fill("#sign-credential", SIGNING_PASSWORD)
    phone.click("#sign-submit")
    phone.wait_for_selector("#sign-dialog", state="hidden", timeout=30_000)
    wait(phone, "(u) => !window.sqemsInspect.tasks.some((t) => t.uid === u)",
         "the task list without the closed CAPA", uid)  # fmt: skip
    screenshot(phone, "signed")
    capa = plant.store.get(uid)
    assert (capa.status.value, capa.effective) == ("closed", True)  # type: ignore[attr-defined]
    change, signature = plant.trail(uid)[entries:]  # the closure and its signature
    assert (change.actor, change.action) == ("erik", "verify: verifying -> closed")
    assert change.after["verification"] == "no scratches on 3 packed lots"
    assert (signature.actor, signature.action, signature.meaning) == (
        "erik", "signature", "verified effective and closed")  # fmt: skip


def test_a_revoked_key_is_replaced_on_the_phone_and_the_queued_report_survives(
    plant: Plant, phone: Any
) -> None:
    open_app(phone, plant, "ivan")
    look_up(phone, UNITS[2])
    phone.context.set_offline(True)
    phone.wait_for_selector("body[data-online=false]")
    write_report(phone, "DT-SOLDER-BRIDGE", "MAJOR", "bridge on the connector pins")
    assert queued(phone) == 1
    key_id = plant.tokens["ivan"].split("_")[1]
    plant.access.revoke(key_id)  # the phone was lost and found, say

    phone.context.set_offline(False)
    phone.wait_for_selector("#key-dialog[open]", timeout=30_000)
    assert phone.inner_text("#key-reason") == (
        "This device's key was refused (revoked or mistyped). Enter a new key; "
        "1 report stays queued.")  # fmt: skip
    detail = phone.text_content("#key-detail")
    assert (
        phone.is_visible("#key-details")
        and detail
        and detail not in phone.inner_text("#key-reason")
    )
    assert phone.evaluate("localStorage.getItem('sqems.inspect.apiKey')") is None
    assert queued(phone) == 1
    assert phone.evaluate("window.sqemsInspect.queue[0].state") == "queued"
    assert plant.reported(UNITS[2]) == []
    screenshot(phone, "key-refused", full_page=False)

    phone.fill("#key-input", plant.tokens["ivan"])  # the old key again: still refused
    phone.click("#key-submit")
    phone.wait_for_selector("#key-error:not([hidden])", timeout=30_000)
    assert "refused too" in phone.inner_text("#key-error")
    assert phone.is_visible("#key-dialog") and queued(phone) == 1

    token = plant.tokens["ivan"] = plant.access.reissue(key_id)[1]
    phone.fill("#key-input", token)
    phone.click("#key-submit")
    (sent,) = wait_sent(phone, 1)
    assert phone.evaluate("localStorage.getItem('sqems.inspect.apiKey')") == token
    (defect,) = plant.reported(UNITS[2])
    assert (defect.uid, defect.reported_by) == (sent["defect"], "ivan")
    assert sent["created"] and queued(phone) == 0
    screenshot(phone, "key-replaced")


# --- other symbologies, and holding a batch -------------------------------------------

SCANS = [
    pytest.param("code128", "WO-ASM-00002", "WO-ASM-00002", "Batch", "WO-ASM-00002",
                 id="batch-code128"),
    pytest.param("datamatrix", "LOT-MCU-00001", "LOT-MCU-00001", "MaterialLot", "LOT-MCU-00001",
                 id="lot-datamatrix"),
    # GS1: a GTIN (AI 01, fixed length), the batch (AI 10, variable: FNC1 ends it) and an
    # expiry date (AI 17); read as a scanner sends it, its symbology identifier in front
    pytest.param("gs1-datamatrix", "(01)09506000134352(10)WO-ASM-00003(17)301231",
                 "]d20109506000134352" "10WO-ASM-00003\x1d" "17301231", "Batch", "WO-ASM-00003",
                 id="batch-gs1-datamatrix"),
]  # fmt: skip


@pytest.mark.parametrize(("symbology", "printed", "read", "kind", "uid"), SCANS)
def test_a_batch_or_lot_code_is_scanned_in_each_symbology(
    plant: Plant, phone: Any, camera: FakeCamera, symbology: Any, printed: str, read: str,
    kind: str, uid: str,
) -> None:  # fmt: skip
    camera.show(printed, symbology=symbology)
    open_app(phone, plant, "ines")
    phone.click("#scan-start")
    wait(phone, "() => ['shown', 'not-found'].includes(window.sqemsInspect.lookup)",
         f"the scanned {symbology}")  # fmt: skip
    shown = phone.evaluate("window.sqemsInspect")
    assert (shown["decoder"], shown["scanned"]) == ("zxing-wasm", read)
    assert (shown["lookup"], shown["identified"]["uid"]) == ("shown", uid), phone.inner_text(
        "#lookup-message"
    )
    assert shown["identified"]["code"] == read  # the server was handed what was read
    assert phone.input_value("#code-input") == (read if read == printed else uid)
    assert phone.get_attribute("#unit-card", "data-kind") == kind
    if kind == "MaterialLot":
        assert phone.inner_text("#unit-status") == "received"
    else:
        assert phone.inner_text("#unit-batch") == uid
    assert not phone.is_visible("#hold-open")  # an inspector holds nothing
    screenshot(phone, f"scanned-{symbology}")


HELD = "WO-ASM-00004"


def test_an_engineer_holds_a_batch_and_an_inspector_cannot(
    plant: Plant, phone: Any, phone_browser: Any
) -> None:
    inspector = phone_browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = inspector.new_page()
        open_app(page, plant, "ines")
        look_up(page, HELD)
        assert page.is_visible("#report-open") and not page.is_visible("#hold-open")
        screenshot(page, "batch-inspector")
    finally:
        inspector.close()

    open_app(phone, plant, "erik")
    look_up(phone, HELD)
    assert phone.inner_text("#hold-open") == "Hold batch"
    phone.click("#hold-open")
    assert phone.inner_text("#hold-batch") == HELD
    reason = "burrs on the shaft seats, lot LOT-SHAFT-00001 suspected"
    phone.fill("#hold-reason", reason)
    screenshot(phone, "hold-form")
    phone.click("#hold-submit")
    phone.wait_for_selector("#hold-form", state="hidden", timeout=30_000)
    wait(phone, "(b) => window.sqemsInspect.identified.heldBatches.includes(b)",
         "the card showing the hold", HELD)  # fmt: skip
    assert phone.inner_text("#unit-held") == f"On hold: {HELD}"
    assert phone.is_disabled("#hold-open") and phone.inner_text("#hold-open") == "Batch is on hold"
    assert phone.inner_text("#unit-status") == "on hold"
    screenshot(phone, "batch-held")

    assert plant.store.get(HELD).status.value == "on_hold"  # type: ignore[attr-defined]
    (entry,) = plant.trail(HELD)
    assert (entry.actor, entry.action) == ("erik", f"held: {reason}")
    held = [a for a in plant.access.audit(20) if a.operation == "holdBatch"]
    assert (held[0].key_name, held[0].outcome) == ("erik", "ok")
