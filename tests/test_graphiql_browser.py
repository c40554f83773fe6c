"""GraphiQL at ``/graphql`` in a real headless Chromium cut off from every host but the
server (a plant without internet): it renders from the server's own npm packages, runs a
query with the API key in its headers and a subscription over graphql-ws, with no
console error and no Content-Security-Policy violation, on a desktop screen and a phone;
without its packages it says what to run. And the vendor route it loads them from:
scoped packages, and no way out of the parts of a package the pages may load.

Screenshots are kept under ``test-artifacts/`` (``SQEMS_TEST_ARTIFACTS``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ARTIFACTS
from live_server import LiveServer

from sqems.analysis.kpis import kpis
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graphql import AccessStore, Role, create_app
from sqems.graphql.pages import WEB
from sqems.settings import Settings

PAGE_ASSETS = re.findall(
    r'(?:src|href)="(/viewer/vendor/[^"]+)"', (WEB / "graphiql.html").read_text()
)
"""The npm files GraphiQL's page loads."""
QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
RESULT = ".result-window .CodeMirror"


@dataclass
class Site:
    url: str
    token: str
    store: GraphStore


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not (WEB / "node_modules" / "graphiql").is_dir():
        pytest.fail("GraphiQL's npm packages are not installed: run `npm ci` in sqems/viewer/web")
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=4))))
    access = AccessStore(None)
    token = access.create_key("viewer", Role.VIEWER)[1]
    settings = Settings(data_dir=tmp_path_factory.mktemp("graphiql"))
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Site(server.url, token, store)
    access.close()
    store.close()


@dataclass
class Offline:
    """A page that may reach its own server only, and what went wrong on it."""

    page: Any
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)


def offline(browser: Any, origin: str, width: int, height: int) -> tuple[Any, Offline]:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    seen = Offline(page)

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            seen.blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_server)
    # a CSP violation is reported on the console as an error, like any other failure
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.on("websocket", lambda ws: seen.sockets.append(ws.url))
    return context, seen


def editors(page: Any) -> list[str]:
    texts: list[str] = page.evaluate(
        "[...document.querySelectorAll('.CodeMirror')].map(e => e.CodeMirror.getValue())"
    )
    return texts


def run(page: Any, query: str | None = None) -> dict[str, Any]:
    """Run the query editor's query (or ``query``, typed in first) and read the result."""
    if query is not None:
        page.evaluate(
            f"q => document.querySelector({QUERY_EDITOR!r}).CodeMirror.setValue(q)", query
        )
        # GraphiQL parses the edited document before it knows a subscription from a query
        page.wait_for_timeout(600)
    page.click(".graphiql-execute-button")
    page.wait_for_function(
        f"() => document.querySelector({RESULT!r})?.CodeMirror.getValue().trim().startsWith('{{')",
        timeout=30_000,
    )
    result: dict[str, Any] = json.loads(
        page.evaluate(f"document.querySelector({RESULT!r}).CodeMirror.getValue()")
    )
    return result


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_graphiql_runs_a_query_with_the_key_without_the_internet(
    site: Site, browser: Any, width: int, height: int
) -> None:
    context, seen = offline(browser, site.url, width, height)
    page = seen.page
    page.goto(f"{site.url}/graphql#key={site.token}")
    page.wait_for_selector(QUERY_EDITOR, state="visible", timeout=30_000)
    assert site.token not in page.url  # the key left the address for this tab's storage
    assert any(f'"Authorization": "Bearer {site.token}"' in text for text in editors(page))

    result = run(page)  # the page's own example: the plant's KPIs, for a viewer's key
    total = kpis(site.store).total
    assert "errors" not in result, result
    shown = result["data"]["kpis"]["total"]
    assert (shown["produced"], shown["defective"]) == (total.produced, total.defective)
    assert shown["ppm"] == pytest.approx(total.ppm)

    # usable on the screen: nothing beyond it sideways, the run button and result in view
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for part in (".graphiql-execute-button", ".result-window"):
        box = page.locator(part).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, part
        assert box["y"] + min(box["height"], 40) <= height, part
    screenshot(page, f"graphiql-{'desktop' if width > 800 else 'phone'}")
    context.close()
    assert not seen.blocked, seen.blocked
    assert not seen.errors, seen.errors


def test_graphiql_without_a_key_shows_where_it_goes_and_subscribes_once_given_one(
    site: Site, browser: Any
) -> None:
    """Opened without a key, the headers editor holds an empty Bearer header and a query
    is refused naming it; the key typed there is used (for a subscription too, over
    graphql-ws at the same address) and kept in this tab across a reload, the query in
    the address."""
    context, seen = offline(browser, site.url, 1280, 800)
    page = seen.page
    page.goto(f"{site.url}/graphql")
    page.wait_for_selector(QUERY_EDITOR, state="visible", timeout=30_000)
    headers = '[...document.querySelectorAll(".graphiql-editor-tool .CodeMirror")]' + (
        '.map(e => e.CodeMirror).find(c => c.getValue().includes("Authorization"))'
    )
    assert json.loads(page.evaluate(f"{headers}.getValue()")) == {"Authorization": "Bearer "}
    refused = run(page)
    assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "Authorization: Bearer <key>" in refused["errors"][0]["message"]

    page.evaluate(f"k => {headers}.setValue(JSON.stringify({{Authorization: 'Bearer ' + k}}))",
                  site.token)  # fmt: skip
    assert "errors" not in run(page)
    # the alarm feed needs a viewer's key and the ingestion running: the answer that
    # the ingestion does not run here means the key reached the server in the socket's
    # connection_init (a browser cannot send headers with a WebSocket)
    result = run(page, "subscription { alarms { uid rule severity } }")
    assert seen.sockets == [site.url.replace("http://", "ws://") + "/graphql"]
    assert result["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED", result
    assert "ingestion does not run in this server" in result["errors"][0]["message"]

    # the documentation and the query builder open without breaking the page's policy
    for panel in ("Show Documentation Explorer", "Show GraphiQL Explorer"):
        page.click(f"button[aria-label='{panel}']")
        page.wait_for_selector(".graphiql-plugin", state="visible")
    page.click("button[aria-label='Open settings dialog']")  # a dialog adds its own style
    page.wait_for_selector("[role=dialog]", state="visible")
    screenshot(page, "graphiql-panels")

    # the address carries the query (?q=, as a link to share), the tab the key
    page.reload()
    page.wait_for_selector(QUERY_EDITOR, state="visible", timeout=30_000)
    assert "?q=subscription" in page.url and site.token not in page.url
    texts = editors(page)
    assert texts[0].startswith("subscription { alarms")
    assert any(f'"Authorization": "Bearer {site.token}"' in text for text in texts), texts
    context.close()
    assert not seen.blocked, seen.blocked
    assert not seen.errors, seen.errors


def test_graphiql_without_its_npm_packages_says_what_to_run(browser: Any, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", viewer_assets=tmp_path / "node_modules")
    store = EmbeddedGraphStore(None)
    access = AccessStore(None)
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        context, seen = offline(browser, server.url, 1280, 800)
        seen.page.goto(f"{server.url}/graphql")
        message = seen.page.wait_for_selector(".status.failed", timeout=30_000).inner_text()
        screenshot(seen.page, "graphiql-not-installed")
        context.close()
    access.close()
    store.close()
    assert message.startswith("GraphiQL cannot start: graphiql is not installed on the server")
    assert "npm ci" in message and not seen.blocked


def test_graphiqls_page_has_a_policy_of_its_own_origin_and_a_fresh_style_nonce(
    site: Site,
) -> None:
    pages = [httpx.get(f"{site.url}/graphql", headers={"accept": "text/html"}) for _ in "ab"]
    nonces = []
    for page in pages:
        policy = dict(d.split(" ", 1) for d in page.headers["content-security-policy"].split("; "))
        assert "http" not in page.headers["content-security-policy"]  # no CDN, no other host
        assert policy["script-src"] == "'self'" and policy["connect-src"] == "'self'"
        nonce = re.search(r'<style nonce="([^"]+)">', page.text)
        assert nonce and policy["style-src"] == f"'self' 'nonce-{nonce[1]}'"
        assert policy["font-src"] == "'self' data:"  # GraphiQL's stylesheet carries its fonts
        nonces.append(nonce[1])
    assert nonces[0] != nonces[1]


def test_the_vendor_route_serves_graphiqls_files_from_node_modules(site: Site) -> None:
    assert len(PAGE_ASSETS) == 6
    for url in PAGE_ASSETS:
        answer = httpx.get(site.url + url)
        assert answer.status_code == 200, url
        kind = "text/css" if url.endswith(".css") else "text/javascript"
        assert answer.headers["content-type"].startswith(kind), url


def test_the_vendor_route_keeps_scoped_packages_to_their_allowed_parts(tmp_path: Path) -> None:
    modules = tmp_path / "node_modules"
    explorer = modules / "@graphiql" / "plugin-explorer"
    (explorer / "dist").mkdir(parents=True)
    (explorer / "dist" / "index.umd.js").write_text("window.GraphiQLPluginExplorer = {};")
    (explorer / "package.json").write_text("{}")
    (modules / "@graphiql" / "toolkit" / "dist").mkdir(parents=True)
    (modules / "@graphiql" / "toolkit" / "dist" / "index.js").write_text("")
    (modules / "@graphiql" / "secret").write_text("no")
    (modules / "react" / "umd").mkdir(parents=True)
    (modules / "react" / "umd" / "react.development.js").write_text("")
    (tmp_path / "secret").write_text("no")
    settings = Settings(data_dir=tmp_path / "data", viewer_assets=modules)
    store = EmbeddedGraphStore(None)
    access = AccessStore(None)
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        vendor = f"{server.url}/viewer/vendor"
        ok = httpx.get(f"{vendor}/@graphiql/plugin-explorer/dist/index.umd.js")
        assert ok.status_code == 200 and ok.text == "window.GraphiQLPluginExplorer = {};"
        refused = [
            "@graphiql/plugin-explorer/package.json",  # not a part the pages load
            "@graphiql/plugin-explorer/dist/%2e%2e/package.json",  # begins like one
            "@graphiql/plugin-explorer/dist/%2e%2e/%2e%2e/secret",
            "@graphiql/plugin-explorer/dist/%2e%2e/%2e%2e/%2e%2e/secret",
            "@graphiql/%2e%2e/secret",
            "@graphiql/%2e%2e/react/umd/react.development.js",
            "@graphiql/toolkit/dist/index.js",  # installed, but no page loads it
            "@graphiql/secret",
            "@graphiql/",
            "react/umd/react.development.js",
            "react/umd/react.production.min.js",  # allowed, but not there
        ]
        answers = {path: httpx.get(f"{vendor}/{path}") for path in refused}
    access.close()
    store.close()
    assert {path: a.status_code for path, a in answers.items()} == dict.fromkeys(refused, 404)
    assert all(a.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND" for a in answers.values())
