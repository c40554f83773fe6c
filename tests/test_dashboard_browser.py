"""The quality dashboard in a real headless Chromium: the board of the latest production
day, the KPI panel, the heat map and the SPC chart, each checked against the analysis
the API runs.

Screenshots are kept under ``test-artifacts/`` (``SQEMS_TEST_ARTIFACTS``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from conftest import ARTIFACTS
from live_server import LiveServer

from sqems.analysis.charts import parameter_chart
from sqems.analysis.kpis import kpis
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.store import TimeWindow
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings


@dataclass
class Site:
    url: str
    token: str
    store: GraphStore


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("dashboard")
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(PlantSpec(units=2_000, seed=4))))
    access = AccessStore(None)
    token = access.create_key("viewer", Role.VIEWER)[1]
    with LiveServer(create_app(Settings(data_dir=data), store=store, access=access)) as server:
        yield Site(server.url, token, store)
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


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_the_dashboard_shows_the_graphs_kpis_heat_map_and_spc_chart(
    viewer: Site, page: Any
) -> None:
    page.goto(f"{viewer.url}/dashboard?parameter=P-REFLOW-PEAK#key={viewer.token}")
    page.wait_for_function(
        "() => ['ready', 'error'].includes(document.body.dataset.state)", timeout=30_000
    )
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    shown = page.evaluate("window.sqemsDashboard")

    everything = kpis(viewer.store, top=3)
    assert shown["panel"]["ppm"] == pytest.approx(everything.total.ppm)
    assert shown["panel"]["firstPassYield"] == pytest.approx(everything.total.first_pass_yield)
    heat = everything.heatmap
    assert shown["heatmap"] == {"lines": len(heat["lines"]), "days": len(heat["days"]),
                                "cells": len(heat["lines"]) * len(heat["days"])}  # fmt: skip

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
    screenshot(page, "dashboard")
