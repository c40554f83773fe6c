"""The quality dashboard in a real headless Chromium, on a desk (1440x900) and on a
phone (390x844): the board of the latest production day, the KPI panel, the heat map
and the control chart, each checked against the analysis the API runs; the chart's
spec limits and the runs outside them; the picker and the URL; the layout (nothing
wider than the screen, nothing outside its panel).

The plant's second reflow oven runs every reflow above the USL of 250 degC, steadily
(its own chart fires no run rule), and has two open alarms.

Screenshots are kept under ``test-artifacts/`` (``SQEMS_TEST_ARTIFACTS``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from datetime import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from conftest import ARTIFACTS
from live_server import LiveServer

from sqems.analysis.charts import parameter_chart
from sqems.analysis.kpis import kpis
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import Alarm, Batch, Severity
from sqems.graph_model.store import Edge, TimeWindow
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings

HOT = [251.8, 252.3, 251.2]
"""The second oven's reflow peaks: all above the USL of 250 degC, close together."""
DESK = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


@dataclass
class Site:
    url: str
    token: str
    store: GraphStore


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("dashboard")
    store = EmbeddedGraphStore(None)
    plant = generate(PlantSpec(units=2_000, seed=4))
    on = plant.edges["ON"].columns
    hot = {run for run, m in zip(on["src"], on["dst"], strict=True) if m == "M-REFLOW-2"}
    recorded = plant.edges["RECORDED"].columns
    peaks = iter(HOT)
    recorded["value"] = [
        next(peaks) if par == "P-REFLOW-PEAK" and run in hot else v
        for run, par, v in zip(recorded["src"], recorded["dst"], recorded["value"], strict=True)
    ]
    load_plant(store, plant_sections(plant))
    at = dt(2026, 3, 1, 6, tzinfo=UTC)
    store.upsert_nodes([
        Alarm(uid="AL-OVEN-1", raised_at=at, rule="spec_usl", severity=Severity.MAJOR),
        Alarm(uid="AL-OVEN-2", raised_at=at, rule="spec_usl", severity=Severity.MAJOR),
        Alarm(uid="AL-OVEN-OLD", raised_at=at, cleared_at=at + timedelta(hours=1), rule="nelson_1"),
    ])  # fmt: skip
    store.upsert_edges(
        [Edge("RAISED_ON", a, "M-REFLOW-2") for a in ("AL-OVEN-1", "AL-OVEN-2", "AL-OVEN-OLD")]
    )
    access = AccessStore(None)
    token = access.create_key("viewer", Role.VIEWER)[1]
    with LiveServer(create_app(Settings(data_dir=data), store=store, access=access)) as server:
        yield Site(server.url, token, store)
    access.close()
    store.close()


@pytest.fixture(params=[DESK, PHONE], ids=["desk", "phone"])
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport=request.param)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda e: errors.append(str(e)))
    opened.on("console", lambda m: errors.append(m.text) if "Content Security" in m.text else None)
    yield opened
    context.close()
    assert not errors, errors


def open_dashboard(page: Any, site: Site, query: str) -> dict[str, Any]:
    page.goto(f"{site.url}/dashboard{query}#key={site.token}")
    page.wait_for_function(
        "() => ['ready', 'error'].includes(document.body.dataset.state)", timeout=30_000
    )
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    shown: dict[str, Any] = page.evaluate("window.sqemsDashboard")
    return shown


def name(page: Any, what: str) -> str:
    return f"{what}-{page.viewport_size['width']}x{page.viewport_size['height']}"


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_the_dashboard_shows_the_graphs_kpis_heat_map_and_spc_chart(
    viewer: Site, page: Any
) -> None:
    shown = open_dashboard(page, viewer, "?parameter=P-REFLOW-PEAK")

    everything = kpis(viewer.store, top=3)
    assert shown["panel"]["ppm"] == pytest.approx(everything.total.ppm)
    assert shown["panel"]["firstPassYield"] == pytest.approx(everything.total.first_pass_yield)
    heat = everything.heatmap
    assert {k: shown["heatmap"][k] for k in ("lines", "days", "cells")} == {
        "lines": len(heat["lines"]), "days": len(heat["days"]),
        "cells": len(heat["lines"]) * len(heat["days"])}  # fmt: skip
    assert shown["heatmap"]["labelled"] >= 1

    day = heat["days"][-1]
    start = dt.fromisoformat(f"{day}T00:00:00+00:00")
    today = kpis(viewer.store, TimeWindow(start, dt.fromisoformat(f"{day}T23:59:59.999999+00:00")),
                 top=3)  # fmt: skip
    board = shown["board"]
    assert board["day"] == day and board["produced"] == today.total.produced > 0
    assert board["ppm"] == pytest.approx(today.total.ppm)
    assert board["topDefects"] == [t.uid for t in today.top_defects]
    assert board["shifts"] == {k: c.defective for k, c in today.by_shift.items()}
    assert page.inner_text("#t-produced") == f"{today.total.produced:,}"

    chart = parameter_chart(viewer.store, "P-REFLOW-PEAK")
    assert shown["spc"]["points"] == len(chart.points) > 5
    assert shown["spc"]["signals"] == len({i for v in chart.violations for i in v.indices})
    colours = page.evaluate(
        """() => [...document.querySelectorAll('canvas')].map((c) => {
                 const ctx = c.getContext('2d');
                 const px = ctx.getImageData(0, 0, c.width, c.height).data;
                 const seen = new Set();
                 for (let i = 0; i < px.length; i += 4 * 53) {
                   seen.add(px[i] << 16 | px[i + 1] << 8 | px[i + 2]);
                 }
                 return seen.size; })"""
    )
    assert len(colours) == 3 and all(n > 3 for n in colours), colours  # every chart drawn
    screenshot(page, name(page, "dashboard"))


LAYOUT = """() => {
  const inside = (box, r) => r.left >= box.left - 1 && r.right <= box.right + 1;
  const out = [];
  for (const section of document.querySelectorAll('main > section')) {
    const box = section.getBoundingClientRect();
    for (const el of section.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width && !inside(box, r)) {
        out.push(`${section.id}: ${el.tagName}#${el.id} ${r.left}-${r.right}`);
      }
    }
  }
  return { scroll: document.scrollingElement.scrollWidth, width: innerWidth, out,
           labels: [...document.querySelectorAll('#heatmap .days th span')].length,
           lefts: [...document.querySelectorAll('main > section')].map(
             (s) => s.getBoundingClientRect().left) };
}"""


def fits(page: Any) -> None:
    """Nothing wider than the screen, nothing outside its panel, one column on a phone."""
    layout = page.evaluate(LAYOUT)
    assert layout["scroll"] <= layout["width"], layout
    assert layout["labels"] >= 1 and not layout["out"], layout["out"]
    if page.viewport_size["width"] < 600:
        assert len(set(layout["lefts"])) == 1, layout["lefts"]


def test_the_oven_off_spec_is_drawn_and_said_and_the_page_fits_the_screen(
    viewer: Site, page: Any
) -> None:
    shown = open_dashboard(page, viewer, "?parameter=P-REFLOW-PEAK&machine=M-REFLOW-2")["spc"]
    fits(page)
    screenshot(page, name(page, "dashboard-oven"))
    chart = parameter_chart(viewer.store, "P-REFLOW-PEAK", machine="M-REFLOW-2")
    assert chart.spec is not None and not chart.violations  # steady, and off spec
    assert shown["spec"] == {"lsl": 235, "usl": 250, "outOfSpec": len(HOT), "marked": len(HOT)}
    drawn = {line["label"]: line for line in shown["specLines"]}
    assert set(drawn) == {"USL 250 °C", "LSL 235 °C"}
    assert all(line["inside"] for line in drawn.values())
    assert drawn["USL 250 °C"]["y"] < drawn["LSL 235 °C"]["y"]  # the USL above the LSL
    assert shown["verdict"] == "3 runs above the USL of 250 °C; no run rule fires."
    assert page.inner_text("#spc-verdict") == shown["verdict"]
    assert shown["openAlarms"] == 2  # the cleared alarm is not counted
    assert "2 open alarms on M-REFLOW-2" in page.inner_text("#spc-links")
    assert shown["viewerLink"] == "/viewer?line=LINE-PCB"
    assert page.get_attribute("#spc-viewer", "href") == "/viewer?line=LINE-PCB"


def test_the_picker_changes_the_chart_and_the_url(viewer: Site, page: Any) -> None:
    open_dashboard(page, viewer, "")
    picked = page.evaluate("window.sqemsDashboard.picker")
    assert picked["parameters"] == 7  # every parameter of the plant's steps
    query = parse_qs(urlsplit(page.url).query)
    assert query["parameter"] == [picked["parameter"]]  # the default is in the URL

    def chosen(select: str, value: str) -> dict[str, Any]:
        page.select_option(select, value)
        page.wait_for_function(
            "(value) => document.body.dataset.chart === 'ready' && window.sqemsDashboard.spc"
            " && JSON.stringify(window.sqemsDashboard.spc).includes(value)",
            arg=value,
        )
        return dict(page.evaluate("window.sqemsDashboard.spc"))

    shown = chosen("#pick-parameter", "P-REFLOW-PEAK")
    assert parse_qs(urlsplit(page.url).query) == {"parameter": ["P-REFLOW-PEAK"]}
    assert shown["machine"] is None and shown["spec"]["outOfSpec"] == len(HOT)
    options = page.evaluate(
        "[...document.querySelectorAll('#pick-machine option')].map((o) => o.value)"
    )
    assert options == ["", "M-REFLOW-1", "M-REFLOW-2"]

    shown = chosen("#pick-machine", "M-REFLOW-1")
    assert parse_qs(urlsplit(page.url).query) == {
        "parameter": ["P-REFLOW-PEAK"], "machine": ["M-REFLOW-1"]}  # fmt: skip
    one = parameter_chart(viewer.store, "P-REFLOW-PEAK", machine="M-REFLOW-1")
    assert shown["points"] == len(one.points) and shown["spec"]["outOfSpec"] == 0
    assert shown["verdict"].startswith("All 3 runs within spec")

    shown = chosen("#pick-parameter", "P-TORQUE")  # the oven is not a screwdriver
    assert parse_qs(urlsplit(page.url).query) == {"parameter": ["P-TORQUE"]}
    assert shown["points"] == len(parameter_chart(viewer.store, "P-TORQUE").points)

    shown = chosen("#pick-kind", "EWMA")
    assert parse_qs(urlsplit(page.url).query) == {"parameter": ["P-TORQUE"], "kind": ["EWMA"]}
    assert shown["kind"] == "EWMA" and shown["specLines"] == []  # spec judges single runs
    page.go_back()
    page.wait_for_function("() => window.sqemsDashboard.spc.kind === 'INDIVIDUALS'")


def test_the_board_names_its_day_truthfully_and_shows_defective_by_shift(
    viewer: Site, page: Any
) -> None:
    board = open_dashboard(page, viewer, "?parameter=P-TORQUE")["board"]
    day = kpis(viewer.store).heatmap["days"][-1]
    assert board["day"] == day and board["zone"] == "UTC"  # the plant's site is in UTC
    assert board["label"] == "Latest production day" and not board["isToday"]
    assert page.inner_text("#board-label") == "Latest production day"
    assert day in page.inner_text("#board-day")
    start, end = (dt.fromisoformat(f"{day}T{t}+00:00") for t in ("00:00", "23:59:59.999999"))
    made = kpis(viewer.store, TimeWindow(start, end))
    for shift, counts in made.by_shift.items():
        assert board["shiftRates"][shift] == pytest.approx(counts.defective / counts.produced)
    heights = dict(zip(board["shiftRates"], board["shiftBarHeights"], strict=True))
    assert any(made.by_shift[s].defective for s in heights)
    for shift, height in heights.items():  # a defective shift's bar is plain to see
        assert height > 20 or made.by_shift[shift].defective == 0, heights

    # the same day seen on that day: "Today"
    page.clock.set_fixed_time(dt.fromisoformat(f"{day}T15:00:00+00:00"))
    page.reload()  # the key stays in the tab's storage
    page.wait_for_function("() => document.body.dataset.state === 'ready'", timeout=30_000)
    board = page.evaluate("window.sqemsDashboard.board")
    assert board["label"] == "Today" and page.inner_text("#board-label") == "Today"


def test_a_long_history_keeps_its_heat_map_labels_inside_the_panel(viewer: Site, page: Any) -> None:
    """Ninety days of three lines (the heat map as the API would send it for a long
    history): the day labels thin out to fit, rotated, inside the heat map's panel."""
    days = [(dt(2026, 1, 1) + timedelta(days=i)).date().isoformat() for i in range(90)]
    lines = ["LINE-ASM", "LINE-PCB", "LINE-FINAL-ASSEMBLY-NORTH"]

    def longer(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        if "query Kpis" in (route.request.post_data or ""):
            rate = [[(i + j) % 7 / 100 if j % 11 else None for j in range(90)] for i in range(3)]
            body["data"]["kpis"]["heatmap"] = {"lines": lines, "days": days, "rate": rate}
        route.fulfill(response=response, json=body)

    page.route("**/graphql", longer)
    shown = open_dashboard(page, viewer, "?parameter=P-TORQUE")["heatmap"]
    assert shown["days"] == 90 and shown["cells"] == 270
    assert 3 <= shown["labelled"] < 90 and shown["every"] > 1
    fits(page)
    screenshot(page, name(page, "dashboard-long-history"))


def test_the_board_in_a_zone_east_of_utc_shows_the_sites_latest_local_day(
    viewer: Site, browser: Any, tmp_path: Path
) -> None:
    """With the site in Tokyo, a batch started after 15:00 UTC belongs to the next
    local day: the board shows the site's latest local production day, whole."""
    tokyo = ZoneInfo("Asia/Tokyo")
    starts = [b.started_at for b in viewer.store.find("Batch") if isinstance(b, Batch)]
    day = max(starts).astimezone(tokyo).date()
    start = dt.combine(day, dt.min.time(), tokyo)
    made = kpis(viewer.store, TimeWindow(start, start + timedelta(days=1, microseconds=-1)))
    access = AccessStore(None)
    token = access.create_key("viewer", Role.VIEWER)[1]
    app = create_app(Settings(data_dir=tmp_path, site_timezone="Asia/Tokyo"),
                     store=viewer.store, access=access)  # fmt: skip
    context = browser.new_context(viewport=DESK)
    try:
        with LiveServer(app) as server:
            page = context.new_page()
            board = open_dashboard(page, Site(server.url, token, viewer.store), "")["board"]
    finally:
        context.close()
        access.close()
    assert board["zone"] == "Asia/Tokyo" and board["day"] == day.isoformat()
    assert board["produced"] == made.total.produced > 0
    assert board["ppm"] == pytest.approx(made.total.ppm)
    assert board["label"] == "Latest production day"
