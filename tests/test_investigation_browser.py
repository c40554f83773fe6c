"""The complaint investigation page in a real headless Chromium: the complaint, its
leading cause marked significant, the recall, the what-if of the fix run from the page
with its intervals and verdict, a plant where nothing stands out, and a phone's screen.

Screenshots are kept under ``test-artifacts/`` (``SQEMS_TEST_ARTIFACTS``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ARTIFACTS
from live_server import LiveServer

from sqems.datasets import Plant, PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graphql import AccessStore, Role, create_app
from sqems.investigation import investigate
from sqems.settings import Settings


@dataclass
class Site:
    url: str
    plant: Plant
    store: GraphStore
    tokens: dict[Role, str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    plant = generate(PlantSpec(units=6_000, seed=5))
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    access = AccessStore(None)
    tokens = {role: access.create_key(role.label, role)[1] for role in Role}
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("investigate-page"),
        twin_draws=800,  # the fewest that pass the models' convergence checks here
        twin_tune=800,
    )
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Site(server.url, plant, store, tokens)
    access.close()
    store.close()


def complaints_of(plant: Plant, defect_type: str) -> list[str]:
    edges = plant.edges["OF_TYPE"].columns
    return sorted(
        src
        for src, dst in zip(edges["src"], edges["dst"], strict=True)
        if dst == defect_type and src.startswith("CMP-")
    )


def shift_complaint(plant: Plant) -> str:
    truth = next(c for c in plant.truth["causes"] if c["kind"] == "shift")
    return complaints_of(plant, truth["defect_type"])[-1]


def open_page(browser: Any, site: Site, query: str, role: Role = Role.ENGINEER,
              viewport: tuple[int, int] = (1280, 900)) -> Any:  # fmt: skip
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security" in m.text else None)
    page.errors = errors
    page.goto(f"{site.url}/investigate?{query}#key={site.tokens[role]}")
    page.wait_for_function(
        "() => ['ready', 'error'].includes(document.body.dataset.state)", timeout=60_000
    )
    return page


@pytest.fixture
def pages(browser: Any) -> Iterator[list[Any]]:
    opened: list[Any] = []
    yield opened
    for page in opened:
        errors = page.errors
        page.context.close()
        assert not errors, errors


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_the_page_shows_the_complaint_its_significant_cause_and_the_recall(
    site: Site, browser: Any, pages: list[Any]
) -> None:
    complaint = shift_complaint(site.plant)
    want = investigate(site.store, complaint).as_dict()
    page = open_page(browser, site, f"complaint={complaint}")
    pages.append(page)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    assert page.input_value("#complaint-input") == complaint

    facts = page.inner_text("#complaint-facts")
    assert want["complaint"]["defect_type_name"] in facts
    assert want["complaint"]["unit"] in facts and want["complaint"]["customer"] in facts
    assert want["analysis"]["note"] == page.inner_text("#scope-note")

    rows = page.locator("#causes-table tbody tr")
    assert rows.count() == len(want["causes"])
    leading = page.locator(f"#causes-table tr[data-key='{want['leading_cause']}']")
    assert "significant" in (leading.get_attribute("class") or "")
    assert "significant cause" in leading.inner_text()
    for cause in want["causes"]:
        text = page.locator(f"#causes-table tr[data-key='{cause['factor']}']").inner_text()
        assert ("significant cause" in text) == cause["significant"], text
    assert page.inner_text("#conclusion") == want["conclusion"]
    why = page.locator("#why li")
    assert why.count() == len(want["why"]) > 2
    assert why.first.inner_text() == want["why"][0]["why"]

    counts = want["recall"]["counts"]
    assert page.inner_text("#count-units") == f"{counts['units']:,}"
    assert page.inner_text("#count-batches") == f"{counts['batches']:,}"
    assert page.inner_text("#recall-customers").count("CUST-") == counts["customers"]
    assert page.inner_text("#recall-basis") == want["recall_basis"]["explanation"]
    assert page.locator("#recall-units tbody tr").count() == min(10, counts["units"])
    assert want["fix"]["description"] == page.inner_text("#fix-description")

    # the batches it shows open on the trace page: the unit's, its sub-assemblies', the recall's
    batch = want["complaint"]["batch"]
    assert page.get_attribute("#complaint-facts a", "href") == f"/trace?batch={batch}"
    tree = page.locator("#genealogy-tree a")
    expected = [batch, *(s["batch"] for s in want["complaint"]["subassemblies"])]
    assert [tree.nth(i).get_attribute("href") for i in range(tree.count())] == [
        f"/trace?batch={b}" for b in expected
    ]
    recalled = page.locator("#recall-batches a")
    assert recalled.count() == min(40, len(want["recall"]["batches"])) > 0
    assert recalled.first.get_attribute("href") == f"/trace?batch={want['recall']['batches'][0]}"
    screenshot(page, "investigate")
    recalled.first.click()
    page.wait_for_url(f"**/trace?batch={want['recall']['batches'][0]}")
    page.wait_for_function(
        "() => ['ready', 'error'].includes(document.body.dataset.state)", timeout=60_000
    )
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    assert page.inner_text("#count-batches") != ""


def test_the_fix_runs_as_a_what_if_from_the_page(
    site: Site, browser: Any, pages: list[Any]
) -> None:
    page = open_page(browser, site, f"complaint={shift_complaint(site.plant)}")
    pages.append(page)
    page.fill("#hours-input", "2")
    page.fill("#replications-input", "6")
    page.click("#run-whatif")
    try:
        page.wait_for_function(
            "() => ['done', 'failed'].includes(document.getElementById('fix').dataset.state)",
            timeout=900_000,  # the first run of a line fits its twin
        )
    finally:
        screenshot(page, "investigate-whatif")
    shown = page.evaluate("window.sqemsInvestigation.whatif")
    assert shown["state"] == "done", shown
    assert "yield" in shown["kpis"] and "throughput_per_h" in shown["kpis"]
    rows = page.locator("#whatif-table tbody tr")
    assert rows.count() == len(shown["kpis"])
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td")
        for column in (1, 2, 3):  # baseline, with the fix, difference: a mean and its interval
            assert "[" in cells.nth(column).inner_text() and "]" in cells.nth(column).inner_text()
        assert cells.nth(4).inner_text() in ("credible", "no credible change")
    verdict = page.inner_text("#whatif-verdict")
    assert verdict.startswith("Verdict: ") and verdict[9:] == shown["verdict"]
    # a shift moved to the other shifts changes the line: never "this changes nothing"
    assert not any("changes nothing" in w for w in shown["warnings"])
    assert "6 replications of 2 h" in page.inner_text("#whatif-message")


def test_a_viewer_sees_why_the_what_if_will_not_run(
    site: Site, browser: Any, pages: list[Any]
) -> None:
    page = open_page(browser, site, f"complaint={shift_complaint(site.plant)}", Role.VIEWER)
    pages.append(page)
    page.click("#run-whatif")
    page.wait_for_function("() => document.getElementById('fix').dataset.state === 'failed'")
    assert "(FORBIDDEN)" in page.inner_text("#whatif-message")


def test_where_nothing_stands_out_the_conclusion_is_shown_and_no_cause_named(
    site: Site, browser: Any, pages: list[Any]
) -> None:
    planted_types = {c["defect_type"] for c in site.plant.truth["causes"]}
    other = sorted(
        c
        for t in site.plant.nodes["DefectType"].columns["uid"]
        if t not in planted_types
        for c in complaints_of(site.plant, t)
    )
    page = open_page(browser, site, f"complaint={other[-1]}")
    pages.append(page)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    conclusion = page.locator("#conclusion")
    assert "none" in (conclusion.get_attribute("class") or "")
    assert conclusion.inner_text().startswith("no factor stands out")
    assert page.locator("#causes-table tbody tr").count() > 0
    assert "significant cause" not in page.inner_text("#causes-table")
    assert page.locator("#causes-table tr.significant").count() == 0
    assert page.inner_text("#recall-basis").startswith("No recall is suggested")
    assert not page.is_visible("#run-whatif")


def test_an_unknown_complaint_is_reported_on_the_page(
    site: Site, browser: Any, pages: list[Any]
) -> None:
    page = open_page(browser, site, "complaint=CMP-NOPE")
    pages.append(page)
    assert page.evaluate("document.body.dataset.state") == "error"
    assert "CMP-NOPE" in page.inner_text("#error") and "(NOT_FOUND)" in page.inner_text("#error")


def test_on_a_phone_the_page_fits_the_screen_width(
    site: Site, browser: Any, pages: list[Any]
) -> None:
    page = open_page(browser, site, f"complaint={shift_complaint(site.plant)}",
                     viewport=(390, 844))  # fmt: skip
    pages.append(page)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways: {width}"
    # the factors table is stacked into labelled cards, each inside the screen
    cell = page.locator("#causes-table tbody tr").first.locator("td").nth(4)
    assert (
        page.evaluate("(td) => getComputedStyle(td, '::before').content", cell.element_handle())
        == '"risk ratio"'
    )
    box = page.locator("#causes-table").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    screenshot(page, "investigate-phone")
