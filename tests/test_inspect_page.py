"""The inspector's phone app (``/inspect``) in a real headless Chromium at a phone's size
(390x844) and on a desk (1440x900): it opens with the device's key, its service worker
takes control of ``/inspect`` and its manifest makes it installable, and a typed uid
shows the unit — product, batch, status, the batch's hold, the open CAPA — as the API
answers it; the worker keeps the app shell, and the code reader (zxing-wasm) comes from
this server, compiles under the page's policy and reads a printed QR code. What the server
sends with the page (its policy, the worker's scope header, the manifest's media type) is
checked over plain HTTP.

The fake camera and the offline queue have their own tests. Screenshots are kept under
``test-artifacts/`` (``SQEMS_TEST_ARTIFACTS``)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import segno
from conftest import ARTIFACTS
from live_server import LiveServer

from sqems.graph_model import EmbeddedGraphStore
from sqems.graph_model.nodes import (
    Batch,
    BatchStatus,
    Capa,
    Category6M,
    Defect,
    DefectType,
    Product,
    Severity,
    Unit,
)
from sqems.graph_model.store import Edge
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings

PHONE = {"width": 390, "height": 844}
DESK = {"width": 1440, "height": 900}
MADE = datetime(2026, 11, 2, 6, tzinfo=UTC)


@dataclass
class Site:
    url: str
    token: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A line's small slice: a board product, its batch on hold with one unit whose solder
    bridge a CAPA addresses, and the defect types an inspector picks from."""
    store = EmbeddedGraphStore(None)
    store.upsert_nodes([
        Product(uid="PRD-BOARD", name="Controller board"),
        Batch(uid="WO-PCB-00007", started_at=MADE, quantity=2, status=BatchStatus.ON_HOLD),
        Unit(uid="SN-B0000042", produced_at=MADE),
        Unit(uid="SN-B0000043", produced_at=MADE),
        DefectType(uid="DT-BRIDGE", name="Solder bridge", category=Category6M.MACHINE),
        DefectType(uid="DT-SCRATCH", name="Cosmetic scratch", category=Category6M.METHOD),
        Defect(uid="DEF-0001", found_at=MADE, severity=Severity.MAJOR),
        Capa(uid="CAPA-0001", title="Solder bridges on the reflow line", opened_at=MADE),
    ])  # fmt: skip
    store.upsert_edges([
        Edge("OF_PRODUCT", "WO-PCB-00007", "PRD-BOARD"),
        Edge("PRODUCED", "WO-PCB-00007", "SN-B0000042"),
        Edge("PRODUCED", "WO-PCB-00007", "SN-B0000043"),
        Edge("FOUND_ON", "DEF-0001", "SN-B0000042"),
        Edge("OF_TYPE", "DEF-0001", "DT-BRIDGE"),
        Edge("ADDRESSES", "CAPA-0001", "DEF-0001"),
    ])  # fmt: skip
    access = AccessStore(None)
    token = access.create_key("ines", Role.INSPECTOR)[1]
    data = tmp_path_factory.mktemp("inspect")
    with LiveServer(create_app(Settings(data_dir=data), store=store, access=access)) as server:
        yield Site(server.url, token)
    access.close()
    store.close()


@pytest.fixture(params=[PHONE, DESK], ids=["phone", "desk"])
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport=request.param)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda e: errors.append(str(e)))
    opened.on("console", lambda m: errors.append(m.text) if "Content Security" in m.text else None)
    yield opened
    context.close()
    assert not errors, errors


def screenshot(page: Any, what: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    path = ARTIFACTS / f"inspect-{what}-{size['width']}x{size['height']}.png"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top of the picture
    page.screenshot(path=str(path), full_page=True)
    return path


def test_the_server_sends_the_app_with_its_policy_worker_scope_and_manifest(site: Site) -> None:
    page = httpx.get(f"{site.url}/inspect")
    policy = page.headers["content-security-policy"]
    assert "'wasm-unsafe-eval'" in policy and "worker-src 'self'" in policy
    assert "connect-src 'self'" in policy and "unsafe-inline" not in policy
    worker = httpx.get(f"{site.url}/inspect/sw.js")
    assert worker.headers["service-worker-allowed"] == "/inspect"
    assert worker.headers["content-type"].startswith("text/javascript")
    manifest = httpx.get(f"{site.url}/inspect/manifest.webmanifest")
    assert manifest.headers["content-type"].startswith("application/manifest+json")
    assert {k: manifest.json()[k] for k in ("start_url", "scope", "display")} == {
        "start_url": "/inspect", "scope": "/inspect", "display": "standalone"}  # fmt: skip
    assert httpx.get(f"{site.url}/inspect/icon.svg").headers["content-type"] == "image/svg+xml"
    wasm = httpx.get(f"{site.url}/viewer/vendor/zxing-wasm/dist/reader/zxing_reader.wasm")
    assert wasm.headers["content-type"] == "application/wasm"
    assert wasm.content[:4] == b"\0asm"
    assert httpx.get(f"{site.url}/inspect/other.js").status_code == 404


def test_the_phone_app_installs_and_shows_a_typed_unit(site: Site, page: Any) -> None:
    page.goto(f"{site.url}/inspect#key={site.token}")
    page.wait_for_function(
        "() => ['ready', 'error'].includes(document.body.dataset.state)", timeout=30_000
    )
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    assert page.evaluate("location.hash") == ""  # the key left the address for the storage
    assert page.evaluate("localStorage.getItem('sqems.inspect.apiKey')") == site.token

    page.wait_for_function("() => window.sqemsInspect.serviceWorker === 'active'", timeout=30_000)
    scope = page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
    assert scope == f"{site.url}/inspect"
    cdp = page.context.new_cdp_session(page)
    manifest = cdp.send("Page.getAppManifest")
    assert manifest["url"] == f"{site.url}/inspect/manifest.webmanifest"
    assert manifest["errors"] == []
    # a test browser is an incognito profile, which never installs; anything else is a defect
    refusals = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    assert [r["errorId"] for r in refusals if r["errorId"] != "in-incognito"] == []

    page.fill("#code-input", " SN-B0000042 ")  # typed on a phone, with stray spaces
    page.click("#code-submit")
    page.wait_for_function("() => window.sqemsInspect.lookup !== 'loading'", timeout=30_000)
    assert page.get_attribute("#unit-card", "data-uid") == "SN-B0000042", page.inner_text(
        "#lookup-message"
    )
    assert page.get_attribute("#unit-card", "data-kind") == "Unit"
    assert page.inner_text("#unit-product").split("\n") == ["Controller board", "PRD-BOARD"]
    assert page.inner_text("#unit-batch") == "WO-PCB-00007"
    assert page.inner_text("#unit-status") == "good"
    assert page.inner_text("#unit-defects") == "1"
    assert "WO-PCB-00007" in page.inner_text("#unit-held")
    assert page.eval_on_selector_all("#unit-capas li", "ls => ls.map(l => l.dataset.capa)") == [
        "CAPA-0001"
    ]
    assert page.eval_on_selector_all("#unit-recent li", "ls => ls.map(l => l.dataset.defect)") == [
        "DEF-0001"
    ]
    assert page.is_visible("#report-open") and not page.is_visible("#hold-open")  # inspector

    page.click("#report-open")
    types = page.eval_on_selector_all("#report-type option", "os => os.map(o => o.value)")
    assert types == ["", "DT-SCRATCH", "DT-BRIDGE"]  # by name
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    for selector in ("#unit-card", "#report-form", "#tabs"):
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"]
    screenshot(page, "unit")
    shown = page.evaluate("window.sqemsInspect")
    assert json.dumps(shown["me"]["role"]) == '"inspector"'


SHELL = """async () => {
    const cache = await caches.open("inspect-v1");
    return (await cache.keys()).map((r) => new URL(r.url).pathname).sort();
}"""

READ = """async (png) => {
    const camera = await import("/viewer/app/inspect-camera.js");
    const reader = await camera.decoder();
    const image = new Image();
    image.src = png;
    await image.decode();
    return [reader.name, await reader.read(image)];
}"""


def test_the_worker_keeps_the_shell_and_the_code_reader_comes_from_this_server(
    site: Site, browser: Any
) -> None:
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith((site.url, "data:")) else elsewhere.append(r.url),
    )
    try:
        page.goto(f"{site.url}/inspect#key={site.token}")
        page.wait_for_function(
            "() => window.sqemsInspect.serviceWorker === 'active'", timeout=30_000
        )
        cached = page.evaluate(SHELL)
        shell = {"/inspect", "/inspect/manifest.webmanifest", "/viewer/app/outbox.js",
                 "/viewer/vendor/zxing-wasm/dist/reader/zxing_reader.wasm"}  # fmt: skip
        assert shell <= set(cached)
        label = io.BytesIO()
        segno.make_qr("SN-B0000042", error="m").save(label, kind="png", scale=6, border=4)
        png = "data:image/png;base64," + base64.b64encode(label.getvalue()).decode()
        # Debian's Chromium has no BarcodeDetector: the WebAssembly reader, under the
        # page's policy, fetched from this server
        assert page.evaluate(READ, png) == ["zxing-wasm", "SN-B0000042"]
        assert elsewhere == []
    finally:
        context.close()
