"""The web viewer in a real headless Chromium: a line scene, a generated hall with its
machines linked, and a real IFC model (the shared SampleHouse4) drawn with three.js,
on a desktop (1440x900) and a phone (390x844); objects clicked and their details read
over GraphQL; an alarm raised on the live readings repainting its machine through the
subscription.

Screenshots are kept under ``test-artifacts/`` (``SQEMS_TEST_ARTIFACTS``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as mqtt
import pytest
from conftest import ARTIFACTS, IFC_SAMPLES, Broker
from live_server import LiveServer
from paho.mqtt.enums import CallbackAPIVersion

from sqems.analysis.rules import RULES
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.building import write_building_ifc
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import Machine
from sqems.graph_model.store import Direction
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings
from sqems.viewer import gltf, import_bim, line_scene, model_elements
from sqems.viewer.bim import glb_path, machines_of
from sqems.viewer.scene import COLOURS

REFLOW = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK"
PASTE = "sqems/v1/SITE-1/LINE-PCB/M-PRINT-1/P-PASTE-THICK"
SAMPLE = "SampleHouse4.ifc"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
HALL_PURLINS = 240
"""Roof beams over the whole hall: from above, some stand between the eye and a machine."""


@dataclass
class Viewer:
    url: str
    token: str
    store: GraphStore
    hall: str
    products: int
    sample: str | None
    cache: Path


@pytest.fixture(scope="module")
def viewer(mosquitto: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    data = tmp_path_factory.mktemp("viewer")
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(PlantSpec(units=2_000, seed=4))))
    machines = [m for m in store.find("Machine") if isinstance(m, Machine)]
    ifc = write_building_ifc(data / "hall.ifc", machines, filler=HALL_PURLINS)
    hall = import_bim(store, ifc, cache_dir=data / "bim")
    sample = next((p for p in IFC_SAMPLES if p.name == SAMPLE), None)
    house = import_bim(store, sample, cache_dir=data / "bim").model.uid if sample else None
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
        yield Viewer(
            server.url, token, store, hall.model.uid, hall.model.elements, house, data / "bim"
        )
    access.close()
    store.close()


def sample_model(viewer: Viewer) -> str:
    if viewer.sample is None:
        pytest.fail(f"{SAMPLE} is not among the shared IFC samples ({IFC_SAMPLES}); set "
                    "SQEMS_SAMPLES_DIR to the folder that holds ifc/")  # fmt: skip
    return viewer.sample


@pytest.fixture
def browse(browser: Any) -> Iterator[Any]:
    """Opens pages at a viewport size; fails the test on a script or CSP error."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_at(size: dict[str, int]) -> Any:
        context = browser.new_context(viewport=size)
        contexts.append(context)
        opened = context.new_page()
        opened.on("pageerror", lambda e: errors.append(str(e)))
        opened.on(
            "console", lambda m: errors.append(m.text) if "Content Security" in m.text else None
        )
        return opened

    yield open_at
    for context in contexts:
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


def links(page: Any, selector: str) -> list[tuple[str, str, dict[str, list[str]]]]:
    """Each link under ``selector``: its text, its path and its query."""
    found = page.eval_on_selector_all(
        f"{selector} a", "(as) => as.map((a) => [a.textContent, a.getAttribute('href')])"
    )
    return [(text, urlsplit(href).path, parse_qs(urlsplit(href).query)) for text, href in found]


def publish(mosquitto: Broker, topic: str, value: float, unit: str, sensor: str) -> str:
    """Three readings of ``value`` now on ``topic``, as a sensor sends them; their time."""
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{sensor}-sensor")
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    now = datetime.now(UTC).isoformat()
    readings = [{"ts": now, "value": value, "unit": unit, "id": f"{sensor}-{i}"} for i in range(3)]
    sender.publish(topic, json.dumps(readings), qos=1).wait_for_publish(5)
    sender.loop_stop()
    return now


def pixel(page: Any, at: dict[str, float]) -> list[int]:
    """The colour drawn at a point of the page (red, green, blue)."""
    return page.evaluate(
        """([x, y]) => { const c = document.querySelector('#stage canvas');
             const r = c.getBoundingClientRect();
             const gl = c.getContext('webgl2') || c.getContext('webgl');
             const px = new Uint8Array(4);
             const sx = Math.round((x - r.left) * c.width / r.width);
             const sy = c.height - 1 - Math.round((y - r.top) * c.height / r.height);
             gl.readPixels(sx, sy, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
             return [px[0], px[1], px[2]]; }""",
        [at["x"], at["y"]],
    )


def assert_laid_out(page: Any, size: dict[str, int]) -> None:
    """The whole model in view from above at an angle, no sideways scrolling, and on a
    phone a 3D view that takes most of the screen."""
    framing = page.evaluate("window.sqemsViewer.framing()")
    assert framing["sphereFits"] and framing["boxInView"], framing
    assert framing["margin"] < 0.5, f"the model is framed far too small: {framing}"
    assert 20 <= framing["elevationDeg"] <= 60, framing
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= size["width"], f"the page is {width} px wide on a {size['width']} px screen"
    stage = page.eval_on_selector("#stage", "(s) => s.getBoundingClientRect().height")
    if size is PHONE:
        assert stage >= 0.45 * size["height"], f"the 3D view is {stage} px high of {size}"


def test_the_line_scene_draws_every_machine_of_the_graph_in_its_status_colour(
    viewer: Viewer, browse: Any
) -> None:
    page = browse(DESKTOP)
    open_viewer(page, viewer, "line=LINE-PCB")
    assert_laid_out(page, DESKTOP)
    screenshot(page, "viewer-line-desktop")
    members = {e.src for e in viewer.store.edges(["LINE-PCB"], {"PART_OF": Direction.IN})}
    drawn = page.evaluate("window.sqemsViewer.objects()")
    assert sorted(o["uid"] for o in drawn) == sorted(members)
    assert page.inner_text("#count") == f"{len(members)} machines"
    scene = line_scene(viewer.store, "LINE-PCB")
    assert {o["uid"]: o["colour"] for o in drawn} == {
        o.uid: o.overlay.colour for o in scene.objects
    }
    assert {o["uid"]: o["label"] for o in drawn} == {o.uid: o.name for o in scene.objects}
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
    assert "position x (m)" in details and "rotation (°)" in details
    assert "xM" not in details and "rotationDeg" not in details
    reflow = next(o for o in scene.objects if o.uid == "M-REFLOW-1")
    charts = links(page, "#details ul.charts")
    assert [(path, q) for _, path, q in charts] == [
        ("/dashboard", {"machine": ["M-REFLOW-1"], "parameter": [p.uid]}) for p in reflow.parameters
    ]
    assert {p.uid for p in reflow.parameters} == {"P-REFLOW-PEAK", "P-REFLOW-SPEED"}
    batches = links(page, "#details ul.batches")
    assert batches and [(path, q) for _, path, q in batches] == [
        ("/trace", {"batch": [b]}) for b in reflow.batches
    ]
    assert screenshot(page, "viewer-line-pcb").stat().st_size > 10_000


def test_an_alarm_on_the_live_readings_turns_its_machine_red_and_says_why(
    viewer: Viewer, browse: Any, mosquitto: Broker
) -> None:
    page = browse(DESKTOP)
    open_viewer(page, viewer, "line=LINE-PCB")
    page.wait_for_function(
        "() => document.querySelector('#live').textContent === 'live alarms: on'"
    )
    assert page.evaluate("window.sqemsViewer.colourOf('M-REFLOW-2')") != COLOURS["alarm"]

    now = publish(mosquitto, REFLOW, 251.5, "degC", "viewer-line")

    page.wait_for_function(
        f"() => window.sqemsViewer.colourOf('M-REFLOW-2') === '{COLOURS['alarm']}'", timeout=20_000
    )
    log = page.inner_text("#alarm-log")
    assert "M-REFLOW-2 P-REFLOW-PEAK" in log and "STOP LINE" in log
    click_object(page, "M-REFLOW-2")
    details = page.inner_text("#details")
    rule = RULES["nelson_1"]
    assert f"live alarm: {rule.title} (Nelson rule 1)" in details
    assert rule.description in details
    (text, path, query), *_ = links(page, "#details ul.alarms")
    assert (text, path) == ("root cause and trace", "/trace")
    assert (query["machine"], query["parameter"]) == (["M-REFLOW-2"], ["P-REFLOW-PEAK"])
    raised = datetime.fromisoformat(now)
    start = datetime.fromisoformat(query["from"][0].replace("Z", "+00:00"))
    end = datetime.fromisoformat(query["to"][0].replace("Z", "+00:00"))
    assert abs(start - (raised - timedelta(hours=24))) < timedelta(seconds=1)
    assert abs(end - (raised + timedelta(minutes=1))) < timedelta(seconds=1)
    logged = links(page, "#alarm-log")
    assert logged and all(p == "/trace" and q["machine"] == ["M-REFLOW-2"] for _, p, q in logged)
    screenshot(page, "viewer-line-pcb-alarm")


def test_a_bim_view_shows_linked_machines_in_their_status_colours_and_picks_them_first(
    viewer: Viewer, browse: Any, mosquitto: Broker
) -> None:
    page = browse(DESKTOP)
    open_viewer(page, viewer, f"bim={viewer.hall}")
    assert_laid_out(page, DESKTOP)
    screenshot(page, "viewer-hall-desktop")
    drawn = {o["uid"]: o for o in page.evaluate("window.sqemsViewer.objects()")}
    assert len(drawn) == viewer.products
    linked = machines_of(viewer.store, list(drawn))
    scene = {o.uid: o for o in line_scene(viewer.store, "LINE-PCB").objects}
    assert page.inner_text("#count") == f"{viewer.products} elements · {len(linked)} machines"
    for element, machine in linked.items():
        if machine in scene:
            assert drawn[element]["colour"] == scene[machine].overlay.colour
        assert drawn[element]["label"] == viewer.store.get(machine).name
        assert drawn[element]["machine"] == machine
    assert page.evaluate("window.sqemsViewer.xray")  # machines are seen through the roof

    # a point of a machine where a plain ray would take a roof beam or a wall first
    page.evaluate("window.sqemsViewer.setXray(false)")
    covered = page.evaluate(
        """(elements) => {
          const v = window.sqemsViewer;
          for (const uid of elements) {
            const b = v.screenBox(uid);
            for (let i = 1; i < 12; i++) for (let j = 1; j < 12; j++) {
              const x = b.left + (b.right - b.left) * i / 12;
              const y = b.top + (b.bottom - b.top) * j / 12;
              const hit = v.pickAt(x, y);
              if (hit.machine === uid && hit.nearest !== uid) return { uid, x, y, hit };
            }
          }
          return null; }""",
        sorted(linked),
    )
    assert covered, "no machine stands under a roof beam or behind a wall in this view"
    page.mouse.click(covered["x"], covered["y"])
    page.wait_for_selector(f"#details[data-uid='{covered['uid']}']", timeout=10_000)
    details = page.inner_text("#details")
    machine = linked[covered["uid"]]
    assert f"Machine {machine}" in details and f"BIM element {covered['uid']}" in details
    assert "IfcBuildingElementProxy" in details and "centre x (m)" in details
    assert "xM" not in details and "ifcClass" not in details
    charts = links(page, "#details ul.charts")
    assert charts and all(p == "/dashboard" and q["machine"] == [machine] for _, p, q in charts)
    screenshot(page, "viewer-bim-hall-selected")

    # a live alarm repaints the machine's element in the building too
    printer = next(e for e, m in linked.items() if m == "M-PRINT-1")
    assert drawn[printer]["colour"] != COLOURS["alarm"]
    page.wait_for_function("() => document.querySelector('#live').textContent.endsWith(': on')")
    publish(mosquitto, PASTE, 400.0, "um", "viewer-bim")
    page.wait_for_function(
        f"() => window.sqemsViewer.colourOf('{printer}') === '{COLOURS['alarm']}'", timeout=20_000
    )


@pytest.mark.parametrize("view", ["line", "hall", "sample"])
def test_on_a_phone_the_3d_view_fills_most_of_the_screen_and_the_whole_model_is_in_it(
    viewer: Viewer, browse: Any, view: str
) -> None:
    if view == "line":
        query = "line=LINE-PCB"
    else:
        query = f"bim={viewer.hall if view == 'hall' else sample_model(viewer)}"
    page = browse(PHONE)
    open_viewer(page, viewer, query)
    assert_laid_out(page, PHONE)
    screenshot(page, f"viewer-{view}-phone")
    if view == "line":
        # a tap on a machine names it over the 3D view and leads to its details below
        click_object(page, "M-REFLOW-1")
        assert page.inner_text("#picked").startswith("Reflow 1 · ")
        assert page.is_visible("#picked")
        page.click("#picked")
        page.wait_for_function(
            "() => document.querySelector('#details').getBoundingClientRect().top < innerHeight"
        )
        assert_laid_out(page, PHONE)
        screenshot(page, "viewer-line-phone-details")


def test_a_real_model_counts_every_element_and_filters_by_its_own_storeys(
    viewer: Viewer, browse: Any
) -> None:
    uid = sample_model(viewer)
    _, elements = model_elements(viewer.store, uid)
    page = browse(DESKTOP)
    open_viewer(page, viewer, f"bim={uid}")
    assert_laid_out(page, DESKTOP)
    screenshot(page, "viewer-sample-desktop")
    drawn = {o["uid"]: o for o in page.evaluate("window.sqemsViewer.objects()")}
    assert sorted(drawn) == sorted(e.uid for e in elements)
    assert page.inner_text("#count") == f"{len(elements)} elements"
    assert {u: o["storey"] for u, o in drawn.items()} == {e.uid: e.storey for e in elements}
    # a product's materials: as its node's extras count them, else its primitives' own
    document = gltf.read_document(glb_path(viewer.cache, viewer.store.get(uid).sha256))
    materials = {}
    for node in document["nodes"]:
        if "extras" in node and "mesh" in node:
            primitives = document["meshes"][node["mesh"]]["primitives"]
            own = len({json.dumps(document["materials"][p["material"]]) for p in primitives})
            materials[node["extras"]["globalId"]] = node["extras"].get("materials", own)
    assert {u: o["materials"] for u, o in drawn.items()} == materials
    options = page.eval_on_selector_all("#storey option", "(os) => os.map((o) => o.value)")
    storeys = {e.storey for e in elements if e.storey}
    assert options[0] == "" and sorted(options[1:]) == sorted(storeys)
    assert page.evaluate("window.sqemsViewer.xray") is False  # no machines: the house as it is

    # the largest white element in view, selected: a saturated blue shows where it is drawn
    at = page.evaluate(
        """() => {
          const v = window.sqemsViewer;
          const white = v.objects().filter((o) => {
            const c = parseInt(o.colour.slice(1), 16);
            return Math.min(c >> 16, (c >> 8) & 255, c & 255) >= 0xc8; })
            .map((o) => ({ uid: o.uid, b: v.screenBox(o.uid) }))
            .sort((p, q) => (q.b.right - q.b.left) * (q.b.bottom - q.b.top)
                            - (p.b.right - p.b.left) * (p.b.bottom - p.b.top));
          for (const { uid, b } of white) {
            for (let i = 1; i < 8; i++) for (let j = 1; j < 8; j++) {
              const x = b.left + (b.right - b.left) * i / 8, y = b.top + (b.bottom - b.top) * j / 8;
              if (v.pickAt(x, y).picked === uid) return { uid, x, y };
            }
          }
          return null; }"""
    )
    assert at, "no white element is in view"
    white = at["uid"]
    before = pixel(page, at)
    page.mouse.click(at["x"], at["y"])
    page.wait_for_selector(f"#details[data-uid='{white}']", timeout=10_000)
    for _ in range(20):  # the next frame draws the selection
        after = pixel(page, at)
        if after[2] - max(after[0], after[1]) > 60:
            break
        page.wait_for_timeout(50)
    assert after[2] - max(after[0], after[1]) > 60, (before, after)
    element = next(e for e in elements if e.uid == white)
    details = page.inner_text("#details")
    assert f"Element {white}" in details and f"IFC class\t{element.ifc_class}" in details
    assert f"storey\t{element.storey}" in details and "xM" not in details
    screenshot(page, "viewer-sample-selected")

    floor = options[1]
    page.select_option("#storey", floor)
    shown = {o["uid"] for o in page.evaluate("window.sqemsViewer.objects()") if o["visible"]}
    assert shown == {e.uid for e in elements if e.storey == floor}
    screenshot(page, "viewer-sample-storey")


def test_an_unknown_line_is_reported_on_the_page(viewer: Viewer, browse: Any) -> None:
    page = browse(PHONE)
    page.goto(f"{viewer.url}/viewer?line=LINE-NOPE#key={viewer.token}")
    page.wait_for_function("() => document.body.dataset.state === 'error'", timeout=30_000)
    assert "line LINE-NOPE is not in the graph (NOT_FOUND)" in page.inner_text("#error")
