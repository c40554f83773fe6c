"""The web viewer in a real headless Chromium: a line scene and a BIM model drawn with
three.js, an object clicked and its details read over GraphQL, and an alarm raised on
the live readings repainting its machine through the subscription.

Screenshots are kept under ``test-artifacts/`` (``SQEMS_TEST_ARTIFACTS``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import ARTIFACTS, Broker
from live_server import LiveServer
from paho.mqtt.enums import CallbackAPIVersion

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.building import write_building_ifc
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import Machine
from sqems.graph_model.store import Direction
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings
from sqems.viewer import import_bim, line_scene
from sqems.viewer.scene import COLOURS

REFLOW = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK"


@dataclass
class Viewer:
    url: str
    token: str
    store: GraphStore
    bim: str
    products: int


@pytest.fixture(scope="module")
def viewer(mosquitto: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    data = tmp_path_factory.mktemp("viewer")
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(PlantSpec(units=2_000, seed=4))))
    machines = [m for m in store.find("Machine") if isinstance(m, Machine)]
    ifc = write_building_ifc(data / "hall.ifc", machines, filler=30)
    imported = import_bim(store, ifc, cache_dir=data / "bim")
    access = AccessStore(None)
    token = access.create_key("viewer", Role.VIEWER)[1]
    settings = Settings(
        data_dir=data,
        ingest=True,
        mqtt_host=mosquitto.host,
        mqtt_port=mosquitto.port,
        mqtt_client_id="sqems-viewer-test",
    )
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Viewer(server.url, token, store, imported.model.uid, imported.model.elements)
    access.close()
    store.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 760})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda e: errors.append(str(e)))
    opened.on("console", lambda m: errors.append(m.text) if "Content Security" in m.text else None)
    yield opened
    context.close()
    assert not errors, errors


def open_viewer(page: Any, viewer: Viewer, query: str) -> None:
    page.goto(f"{viewer.url}/viewer?{query}#key={viewer.token}")
    page.wait_for_function(
        "() => ['ready', 'error'].includes(document.body.dataset.state)", timeout=30_000
    )
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")


def click_object(page: Any, uid: str) -> None:
    """Click where the object is drawn: the page picks it by ray casting."""
    at = page.evaluate("(uid) => window.sqemsViewer.screenPosition(uid)", uid)
    page.mouse.click(at["x"], at["y"])
    page.wait_for_selector(f"#details[data-uid='{uid}']", timeout=10_000)


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_the_line_scene_draws_every_machine_of_the_graph_in_its_status_colour(
    viewer: Viewer, page: Any
) -> None:
    open_viewer(page, viewer, "line=LINE-PCB")
    members = {e.src for e in viewer.store.edges(["LINE-PCB"], {"PART_OF": Direction.IN})}
    drawn = page.evaluate("window.sqemsViewer.objects()")
    assert sorted(o["uid"] for o in drawn) == sorted(members)
    assert page.inner_text("#count") == f"{len(members)} objects"
    expected = {o.uid: o.overlay.colour for o in line_scene(viewer.store, "LINE-PCB").objects}
    assert {o["uid"]: o["colour"] for o in drawn} == expected
    colours = page.evaluate(
        """() => { const c = document.querySelector('#stage canvas');
                   const gl = c.getContext('webgl2') || c.getContext('webgl');
                   const px = new Uint8Array(4 * c.width * c.height);
                   gl.readPixels(0, 0, c.width, c.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
                   const seen = new Set();
                   for (let i = 0; i < px.length; i += 4 * 97) {
                     seen.add((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
                   }
                   return seen.size; }"""
    )
    # background, floor and three shaded faces of green boxes at the least
    assert colours > 5, f"the canvas shows {colours} colours: the scene was not drawn"

    click_object(page, "M-REFLOW-1")
    details = page.inner_text("#details")
    assert "Machine M-REFLOW-1" in details and viewer.store.get("M-REFLOW-1").name in details
    assert "STEP-PCB-20" in details and "units made" in details
    assert screenshot(page, "viewer-line-pcb").stat().st_size > 10_000


def test_an_alarm_on_the_live_readings_turns_its_machine_red(
    viewer: Viewer, page: Any, mosquitto: Broker
) -> None:
    open_viewer(page, viewer, "line=LINE-PCB")
    page.wait_for_function(
        "() => document.querySelector('#live').textContent === 'live alarms: on'"
    )
    assert page.evaluate("window.sqemsViewer.colourOf('M-REFLOW-2')") != COLOURS["alarm"]

    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="viewer-test-sensor")
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    now = datetime.now(UTC).isoformat()
    readings = [{"ts": now, "value": 251.5, "unit": "degC", "id": f"viewer-{i}"} for i in range(3)]
    sender.publish(REFLOW, json.dumps(readings), qos=1).wait_for_publish(5)
    sender.loop_stop()

    page.wait_for_function(
        f"() => window.sqemsViewer.colourOf('M-REFLOW-2') === '{COLOURS['alarm']}'", timeout=20_000
    )
    log = page.inner_text("#alarm-log")
    assert "M-REFLOW-2 P-REFLOW-PEAK" in log and "STOP LINE" in log
    click_object(page, "M-REFLOW-2")
    assert "live alarm: nelson_1" in page.inner_text("#details")
    screenshot(page, "viewer-line-pcb-alarm")


def test_the_bim_model_draws_every_ifc_product_and_names_the_clicked_element(
    viewer: Viewer, page: Any
) -> None:
    open_viewer(page, viewer, f"bim={viewer.bim}")
    drawn = page.evaluate("window.sqemsViewer.objects()")
    assert len(drawn) == viewer.products
    assert page.inner_text("#count") == f"{viewer.products} objects"
    linked = {e.src: e.dst for e in viewer.store.edges(["M-EOL-1"], {"MODELLED_BY": Direction.OUT})}
    element = linked["M-EOL-1"]
    click_object(page, element)
    details = page.inner_text("#details")
    assert f"BimElement {element}" in details
    assert "IfcBuildingElementProxy" in details and "M-EOL-1" in details
    screenshot(page, "viewer-bim")


def test_an_unknown_line_is_reported_on_the_page(viewer: Viewer, page: Any) -> None:
    page.goto(f"{viewer.url}/viewer?line=LINE-NOPE#key={viewer.token}")
    page.wait_for_function("() => document.body.dataset.state === 'error'", timeout=30_000)
    assert "line LINE-NOPE is not in the graph (NOT_FOUND)" in page.inner_text("#error")
