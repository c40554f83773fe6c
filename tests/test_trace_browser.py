"""The trace and recall page in a real headless Chromium: a batch's recall scope as the
traceability API computes it, a parameter excursion as an alarm links to it (its runs,
their machines' SPC charts, the ranked causes of the defect types in scope, a cause named
only when significant), the form that chooses the source, an unknown batch, and the page
at a desktop's and a phone's size.

Screenshots are kept under ``test-artifacts/`` (``SQEMS_TEST_ARTIFACTS``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import ARTIFACTS
from live_server import LiveServer

from sqems.analysis import rootcause as rc
from sqems.datasets import Plant, PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import ProcessRun
from sqems.graph_model.store import Direction, TimeWindow
from sqems.graph_model.traceability import RecallScope, RecallSource, SourceKind, Traceability
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings

PARAMETER = "P-REFLOW-PEAK"


@dataclass
class Site:
    url: str
    plant: Plant
    store: GraphStore
    token: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    # 3,000 units of seed 5: the planted reflow drift takes one run above the USL
    plant = generate(PlantSpec(units=3_000, seed=5))
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    access = AccessStore(None)
    token = access.create_key("viewer", Role.VIEWER)[1]
    settings = Settings(data_dir=tmp_path_factory.mktemp("trace-page"))
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Site(server.url, plant, store, token)
    access.close()
    store.close()


@pytest.fixture
def pages(browser: Any) -> Iterator[list[Any]]:
    opened: list[Any] = []
    yield opened
    for page in opened:
        errors = page.errors
        page.context.close()
        assert not errors, errors


def open_page(browser: Any, site: Site, query: str, opened: list[Any],
              viewport: tuple[int, int] = (1440, 900)) -> Any:  # fmt: skip
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security" in m.text else None)
    page.errors = errors
    opened.append(page)
    page.goto(f"{site.url}/trace?{query}#key={site.token}")
    settled(page)
    return page


def settled(page: Any) -> None:
    page.wait_for_function(
        "() => ['ready', 'error'].includes(document.body.dataset.state)", timeout=60_000
    )


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def fits_the_width(page: Any) -> None:
    width = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways: {width}"


def query_of(href: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(href)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


def defect_types_in(store: GraphStore, scope: RecallScope) -> dict[str, int]:
    """Each defect type of the scope's defective units (a defect found on the unit or a
    complaint about it) and how many units carry it."""
    units = [u.uid for u in scope.units]
    reports = store.edges(units, {"FOUND_ON": Direction.IN, "ABOUT": Direction.IN})
    types = store.edges(sorted({e.src for e in reports}), {"OF_TYPE": Direction.OUT})
    type_of: dict[str, set[str]] = {}
    for e in types:
        type_of.setdefault(e.src, set()).add(e.dst)
    carried: dict[str, set[str]] = {}
    for e in reports:
        for t in type_of.get(e.src, ()):
            carried.setdefault(t, set()).add(e.dst)
    return {t: len(u) for t, u in carried.items()}


def the_causes_are_the_analysis(page: Any, store: GraphStore, scope: RecallScope) -> list[str]:
    """Every ranked defect type's table names a significant cause exactly where the
    root-cause analysis of that defect type does; the types ranked are the scope's most
    frequent ones. Returns the types shown."""
    carried = defect_types_in(store, scope)
    shown = page.evaluate("window.sqemsTrace.rootCause")
    assert shown["defective"] > 0
    ranked = [t["defectType"] for t in shown["types"]]
    frequent = sorted(carried, key=lambda t: (-carried[t], t))[:3]
    assert ranked == frequent
    for defect_type in ranked:
        report = rc.rank_causes(store, rc.from_defect_type(store, defect_type), top=6)
        block = page.locator(f".defect-type[data-defect-type='{defect_type}']")
        rows = block.locator("tbody tr")
        assert rows.count() == len(report.causes)
        for cause in report.causes:
            key = page.evaluate(
                "([t, i]) => window.sqemsTrace.rootCause.types.find((x) => x.defectType === t)"
                ".factors[i]",
                [defect_type, cause.rank - 1],
            )
            text = block.locator(f"tr[data-key='{key}']").inner_text()
            assert ("significant cause" in text) == cause.significant, (defect_type, text)
            assert "[" in text and "]" in text  # the risk ratio's interval
        conclusion = block.locator(".conclusion")
        if not any(c.significant for c in report.causes):
            assert "none" in (conclusion.get_attribute("class") or "")
            assert conclusion.inner_text().startswith("No cause can be named")
            assert block.locator("tr.significant").count() == 0
        else:
            assert conclusion.inner_text() == report.conclusion
    return ranked


def test_a_batch_shows_the_recall_the_api_computes_and_links_its_batches(
    site: Site, browser: Any, pages: list[Any]
) -> None:
    bad_lot = next(c for c in site.plant.truth["causes"] if c["kind"] == "material_lot")
    batch = bad_lot["batches"][0]
    want = Traceability(site.store).recall_scope(RecallSource(SourceKind.BATCH, batch))
    page = open_page(browser, site, f"batch={batch}", pages)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    assert page.input_value("#uid-input") == batch
    assert page.input_value("#kind-input") == "batch"

    for tile, n in [("batches", want.counts["batches"]), ("units", want.counts["units"]),
                    ("shipped", want.counts["units_shipped"]),
                    ("shipments", want.counts["shipments"]),
                    ("customers", want.counts["customers"])]:  # fmt: skip
        assert page.inner_text(f"#count-{tile}") == f"{n:,}", tile
    shown = page.evaluate("window.sqemsTrace")
    assert shown["batches"] == want.batches and shown["customers"] == want.customers
    assert page.locator("#customers-list li").count() == len(want.customers)
    assert page.locator("#units-table tbody tr").count() == min(20, len(want.units))

    links = page.locator("#batches-list a")
    assert links.count() == len(want.batches)
    for i in range(links.count()):
        assert query_of(links.nth(i).get_attribute("href")) == (
            "/trace",
            {"batch": want.batches[i]},
        )
    # how the batch was made: each run's machine opens its SPC chart on the dashboard
    machines = page.locator("#runs-table tbody tr td:nth-child(3) a")
    assert machines.count() > 0
    for i in range(machines.count()):
        path, params = query_of(machines.nth(i).get_attribute("href"))
        assert path == "/dashboard" and params["machine"].startswith("M-")

    # the lots it used, each traced in turn; the bad lot, a significant cause, is marked
    lots = page.locator("#lots-list a")
    assert bad_lot["uid"] in page.evaluate("window.sqemsTrace.lots")
    assert lots.count() == len(page.evaluate("window.sqemsTrace.lots"))
    assert page.get_attribute(f"#lots-list a:text-is('{bad_lot['uid']}')", "href") == (
        f"/trace?lot={bad_lot['uid']}"
    )
    the_causes_are_the_analysis(page, site.store, want)
    cause = page.locator(f"tr[data-key='material_lot:{bad_lot['uid']}']")
    assert "significant cause" in cause.inner_text() and "used by this batch" in cause.inner_text()
    screenshot(page, "trace-batch")

    # a batch in the list is traced in turn
    other = want.batches[-1]
    page.locator(f"#batches-list a[href='/trace?batch={other}']").click()
    page.wait_for_url(f"**/trace?batch={other}")
    settled(page)
    assert page.evaluate("window.sqemsTrace.source.uid") == other


def test_an_alarms_excursion_shows_its_runs_and_names_a_cause_only_when_significant(
    site: Site, browser: Any, pages: list[Any]
) -> None:
    drift = next(c for c in site.plant.truth["causes"] if c["kind"] == "parameter_drift")
    run = drift["runs_out_of_spec"][0]
    found = site.store.get(run)
    assert isinstance(found, ProcessRun)
    started = found.started_at.astimezone(UTC)
    # the viewer's alarm link: from the alarm's time - 24 h to + 1 min, with its machine
    start, end = started - timedelta(hours=24), started + timedelta(minutes=1)
    want = Traceability(site.store).recall_scope(
        RecallSource(SourceKind.PARAMETER, PARAMETER, TimeWindow(start, end))
    )
    assert want.triggers == [run]
    query = (f"parameter={PARAMETER}&from={start.isoformat().replace('+00:00', 'Z')}"
             f"&to={end.isoformat().replace('+00:00', 'Z')}&machine={drift['uid']}")  # fmt: skip
    for name, viewport in [("trace-excursion", (1440, 900)), ("trace-excursion-phone", (390, 844))]:
        page = open_page(browser, site, query.replace("+", "%2B"), pages, viewport)
        assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
        assert page.inner_text("#count-runs") == "1"
        assert page.inner_text("#count-units") == f"{want.counts['units']:,}"
        row = page.locator(f"#runs-table tr[data-run='{run}']")
        assert "marked" in (row.get_attribute("class") or "")  # the alarm's machine
        machine = row.locator("td").nth(2).locator("a")
        assert query_of(machine.get_attribute("href")) == (
            "/dashboard",
            {"machine": drift["uid"], "parameter": PARAMETER},
        )
        ranked = the_causes_are_the_analysis(page, site.store, want)
        assert drift["defect_type"] in ranked  # the boards' solder voids
        excursion = page.locator(
            f".defect-type[data-defect-type='{drift['defect_type']}'] tr.significant"
        )
        assert excursion.count() >= 1
        assert "this trace's parameter" in excursion.first.inner_text()
        # nothing was planted for the other defect types: no cause is named for them
        planted = {c["defect_type"] for c in site.plant.truth["causes"]}
        for other in ranked:
            if other not in planted:
                block = page.locator(f".defect-type[data-defect-type='{other}']")
                assert "significant cause" not in block.inner_text()
        fits_the_width(page)
        screenshot(page, name)


def test_the_form_traces_a_machine_window_and_the_url_follows(
    site: Site, browser: Any, pages: list[Any]
) -> None:
    page = open_page(browser, site, "", pages)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    assert not page.is_visible("#report")
    page.select_option("#kind-input", "machine")
    assert page.is_visible("#from-input") and not page.is_visible("#machine-input")
    page.fill("#uid-input", "M-REFLOW-2")
    page.fill("#from-input", "2026-01-05T00:00Z")
    page.fill("#to-input", "2026-01-05T23:59Z")
    page.click("#trace-form button[type=submit]")
    page.wait_for_url("**/trace?machine=*")
    settled(page)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    assert query_of(page.url)[1] == {"machine": "M-REFLOW-2", "from": "2026-01-05T00:00Z",
                                     "to": "2026-01-05T23:59Z"}  # fmt: skip
    window = TimeWindow(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 5, 23, 59, tzinfo=UTC))
    want = Traceability(site.store).recall_scope(
        RecallSource(SourceKind.MACHINE, "M-REFLOW-2", window)
    )
    assert page.evaluate("window.sqemsTrace.triggers") == want.triggers != []
    assert page.inner_text("#count-runs") == str(len(want.triggers))
    assert page.inner_text("#count-units") == f"{want.counts['units']:,}"
    fits_the_width(page)


def test_an_excursion_window_without_one_says_there_is_nothing_to_recall(
    site: Site, browser: Any, pages: list[Any]
) -> None:
    page = open_page(browser, site, f"parameter={PARAMETER}&from=2025-12-01&to=2025-12-02", pages)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    assert page.inner_text("#count-units") == "0"
    assert "nothing to recall" in page.inner_text("#scope-note")
    assert page.inner_text("#defectives").startswith("No unit is in scope")
    assert page.locator(".defect-type").count() == 0


def test_an_unknown_batch_is_reported_on_the_page(
    site: Site, browser: Any, pages: list[Any]
) -> None:
    page = open_page(browser, site, "batch=WO-NOPE", pages, (390, 844))
    assert page.evaluate("document.body.dataset.state") == "error"
    message = page.inner_text("#error")
    assert "WO-NOPE" in message and "(NOT_FOUND)" in message
    assert page.inner_text("#status").startswith("Not found: there is no batch WO-NOPE")
    assert not page.is_visible("#report")
    fits_the_width(page)
    screenshot(page, "trace-unknown-phone")
