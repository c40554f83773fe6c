"""The engineers' board (``/board``) in a real headless Chromium, on a desk (1440x900)
and on a phone (390x844), against a real server with the MQTT ingestion running in it
(a real Mosquitto broker).

The graph holds three planted CAPAs: one reported about a complaint, one assigned about
a defect, one in action about another complaint and four days past due. The board shows
them in their columns and the late one in the overdue list; readings that break the
reflow oven's control limits make their alarm cards appear (and the CAPA the critical
alarm opens) without a reload, pushed over the ``boardUpdates`` subscription while the
page sends no HTTP request at all; a CAPA triaged over the API moves its card, the other
cards staying the very same elements; each card's links are the pages the graph leads
to. A dropped socket is reconnected with a delay that grows while the server cannot be
reached, and a refused key brings the key dialog back; a socket silent for a while is
pinged, and one whose server does not answer is replaced.

Screenshots are kept under ``test-artifacts/`` (``SQEMS_TEST_ARTIFACTS``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import paho.mqtt.client as mqtt
import pytest
from conftest import ARTIFACTS, Broker, wait_for
from live_server import LiveServer
from paho.mqtt.enums import CallbackAPIVersion

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import Capa, CapaStatus, Priority
from sqems.graph_model.store import Direction, Edge
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings

OPERATIONS = Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations"
PEAK = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK"
DESK = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
WORKFLOW = ["reported", "triaged", "assigned", "in_action", "verifying", "reopened"]
OUT, IN = Direction.OUT, Direction.IN
BOARD = (OPERATIONS / "board_updates.graphql").read_text()
LINKS = "links { rootCause recall view3d }"
BOARD_NOW = f"""query {{ board {{ alarms {{ uid {LINKS} }}
  columns {{ cards {{ uid {LINKS} }} }} }} }}"""


@dataclass
class Site:
    url: str
    tokens: dict[Role, str]
    store: GraphStore
    mosquitto: Broker
    planted: dict[str, str] = field(default_factory=dict)
    """Each planted CAPA's uid → what it addresses."""

    def gql(self, query: str, role: Role = Role.VIEWER, **variables: Any) -> Any:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


def plant_capas(store: GraphStore) -> dict[str, str]:
    """Three open CAPAs: reported (a complaint), assigned (a defect), in action and four
    days past due (another complaint)."""
    now = datetime.now(UTC)
    complaints = sorted(c.uid for c in store.find("Complaint"))
    defect = sorted(d.uid for d in store.find("Defect"))[0]
    planted = {"CAPA-B-1": complaints[0], "CAPA-B-2": defect, "CAPA-B-3": complaints[1]}
    store.upsert_nodes([
        Capa(uid="CAPA-B-1", title="Cracked housing at the customer", opened_at=now
             - timedelta(days=2)),
        Capa(uid="CAPA-B-2", title="Solder bridges on the board", status=CapaStatus.ASSIGNED,
             opened_at=now - timedelta(days=3), priority=Priority.MEDIUM, owner="olga",
             verifier="vera", due_at=now + timedelta(days=10)),
        Capa(uid="CAPA-B-3", title="Housing cracks again", status=CapaStatus.IN_ACTION,
             opened_at=now - timedelta(days=30), priority=Priority.HIGH, owner="omar",
             verifier="vera", due_at=now - timedelta(days=4, hours=2)),
    ])  # fmt: skip
    store.upsert_edges([Edge("ADDRESSES", capa, target) for capa, target in planted.items()])
    return planted


@pytest.fixture
def site(mosquitto: Broker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    """A fresh server (graph, trail, ingestion) for each test: each publishes its own
    excursion and moves its own CAPA."""
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
    planted = plant_capas(store)
    access = AccessStore(None)
    tokens = {role: access.create_key(role.label, role)[1] for role in Role}
    client = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    settings = Settings(data_dir=tmp_path, ingest=True, mqtt_host=mosquitto.host,
                        mqtt_port=mosquitto.port, mqtt_client_id=f"board-{client}")  # fmt: skip
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        served = Site(server.url, tokens, store, mosquitto, planted)
        status = "query { ingestionStatus { connected } }"
        wait_for(lambda: served.gql(status)["ingestionStatus"]["connected"], "the ingestion")
        yield served
    access.close()
    store.close()


@dataclass
class Watched:
    """A page, every request it sent, and what went wrong on it."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def browse(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []
    watched: list[Watched] = []

    def open_page(viewport: dict[str, int]) -> Watched:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        seen = Watched(context.new_page())
        seen.page.on("request", lambda r: seen.requests.append(f"{r.method} {r.url}"))
        seen.page.on("pageerror", lambda e: seen.errors.append(str(e)))
        seen.page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
        watched.append(seen)
        return seen

    yield open_page
    for context in contexts:
        context.close()
    for seen in watched:
        assert not seen.errors, seen.errors


def open_board(seen: Watched, site: Site, key: str | None = None) -> dict[str, Any]:
    page = seen.page
    page.goto(f"{site.url}/board#key={key or site.tokens[Role.VIEWER]}")
    page.wait_for_function("() => window.sqemsBoard && window.sqemsBoard.boards > 0",
                           timeout=30_000)  # fmt: skip
    return shown(page)


def shown(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate("window.sqemsBoard")
    return state


def columns_in_page(page: Any) -> dict[str, list[str]]:
    found: dict[str, list[str]] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#kanban .column')].map(
             (c) => [c.dataset.status,
                     [...c.querySelectorAll('.card')].map((card) => card.dataset.key)]))"""
    )
    return found


def links_in_page(page: Any) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('.card')].map((card) => [
             card.dataset.key, Object.fromEntries([...card.querySelectorAll('a[data-link]')]
               .map((a) => [a.dataset.link, a.getAttribute('href')]))]))"""
    )
    return found


def lines_of_batch(store: GraphStore, batch: str) -> set[str]:
    runs = [e.dst for e in store.edges([batch], {"RAN": OUT})]
    machines = [e.dst for e in store.edges(runs, {"ON": OUT})]
    return {e.dst for e in store.edges(machines, {"PART_OF": OUT})}


def expected_links(store: GraphStore, target: str) -> tuple[str, str, set[str]]:
    """The root cause, recall and possible 3D links of a CAPA about a complaint or a
    defect, read from the graph: the complaint investigated, its unit's batch recalled,
    a line that batch ran on viewed."""
    node = store.get(target)
    if node.label == "Complaint":
        unit = store.edges([target], {"ABOUT": OUT})[0].dst
        complaint = target
    else:
        unit = store.edges([target], {"FOUND_ON": OUT})[0].dst
        about = store.edges([unit], {"ABOUT": IN})
        complaint = about[0].src if about else ""
    batch = store.edges([unit], {"PRODUCED": IN})[0].src
    root = f"/investigate?complaint={complaint}" if complaint else ""
    views = {f"/viewer?line={line}" for line in lines_of_batch(store, batch)}
    return root, f"/trace?batch={batch}", views


def publish_excursion(site: Site, name: str) -> None:
    """Five readings at the oven's mean, five far above: a run above the limit (Nelson 1)
    and a shift (Nelson 5) on a critical parameter."""
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"board-sensor-{name}")
    sender.connect(site.mosquitto.host, site.mosquitto.port)
    sender.loop_start()
    now = datetime.now(UTC).isoformat()
    batch = [{"ts": now, "value": v, "unit": "degC", "id": f"{name}-{i}"}
             for i, v in enumerate([242.5] * 5 + [251.0] * 5)]  # fmt: skip
    sender.publish(PEAK, json.dumps(batch), qos=1).wait_for_publish(5)
    sender.loop_stop()
    sender.disconnect()


LAYOUT = """() => {
  const out = [];
  for (const section of document.querySelectorAll('main > section')) {
    const box = section.getBoundingClientRect();
    for (const el of section.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width && (r.left < box.left - 1 || r.right > box.right + 1)) {
        out.push(`${section.id}: ${el.tagName}.${el.className} ${r.left}-${r.right}`);
      }
    }
  }
  const lefts = [...document.querySelectorAll('#kanban .column')].map(
    (c) => Math.round(c.getBoundingClientRect().left));
  return { scroll: document.scrollingElement.scrollWidth, width: innerWidth, out, lefts };
}"""


def fits(page: Any) -> None:
    """Nothing wider than the screen, nothing outside its panel; on a phone the kanban's
    columns one under the other, on a desk side by side."""
    layout = page.evaluate(LAYOUT)
    assert layout["scroll"] <= layout["width"], layout
    assert not layout["out"], layout["out"]
    if page.viewport_size["width"] < 600:
        assert len(set(layout["lefts"])) == 1, layout["lefts"]
    else:
        assert len(set(layout["lefts"])) == len(WORKFLOW), layout["lefts"]


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    path = ARTIFACTS / f"{name}-{size['width']}x{size['height']}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.mark.parametrize("viewport", [DESK, PHONE], ids=["desk", "phone"])
def test_the_board_is_pushed_an_alarm_and_a_moved_capa_without_a_request(
    site: Site, browse: Any, viewport: dict[str, int]
) -> None:
    seen = browse(viewport)
    page = seen.page
    state = open_board(seen, site)
    assert state["query"].strip() == BOARD.split("\n", 2)[2].strip()  # the published text
    assert (state["live"], state["connections"]) == ("live", 1)
    assert page.inner_text("#live") == "live"

    # the planted CAPAs in their columns, in workflow order; the late one overdue
    expected: dict[str, list[str]] = {s: [] for s in WORKFLOW} | {
        "reported": ["CAPA-B-1"], "assigned": ["CAPA-B-2"], "in_action": ["CAPA-B-3"]}  # fmt: skip
    assert state["columns"] == expected
    assert list(columns_in_page(page).items()) == list(expected.items())
    assert state["overdue"] == ["capa:CAPA-B-3"]
    assert re.fullmatch(r"4 d\s+CAPA CAPA-B-3 Housing cracks again\s+omar · due .+",
                        page.inner_text("#overdue-list li"))  # fmt: skip
    late = page.locator("#capa-CAPA-B-3")
    assert "overdue" in late.get_attribute("class").split()
    assert "OVERDUE" in late.inner_text().upper() and "omar" in late.inner_text()
    assert "overdue" not in page.get_attribute("#capa-CAPA-B-2", "class").split()
    assert state["alarmCount"] == 0 and page.is_visible("#alarms-none")

    # each card's links: the complaint investigated, the batch recalled, its line in 3D
    links = links_in_page(page)
    for capa, target in site.planted.items():
        root, recall, views = expected_links(site.store, target)
        assert links[capa]["recall"] == recall, (capa, links[capa])
        assert links[capa]["view3d"] in views, (capa, links[capa], views)
        assert links[capa].get("rootCause", "") == root, (capa, links[capa])
    screenshot(page, "board")
    loaded = len(seen.requests)

    # an excursion on the oven: its alarms and the CAPA they open appear, pushed
    page.evaluate("document.querySelectorAll('.card').forEach((c) => { c.sqemsKept = true; })")
    publish_excursion(site, page.viewport_size["width"])
    page.wait_for_function(
        "() => sqemsBoard.alarms.length === 2 && sqemsBoard.columns.reported.length === 2",
        timeout=30_000,
    )
    state = shown(page)
    alarms = state["alarms"]
    assert state["alarmCount"] == 2 and page.inner_text("#alarm-count") == "2"
    assert set(alarms) <= set(state["highlighted"])  # new cards are highlighted
    opened = next(c for c in state["columns"]["reported"] if c != "CAPA-B-1")
    assert opened in state["highlighted"] and opened.startswith("CAPA-")
    in_page = page.eval_on_selector_all("#alarm-list .card", "cs => cs.map(c => c.dataset.key)")
    assert in_page == alarms
    rules = page.eval_on_selector_all(
        "#alarm-list .card .head b", "bs => bs.map(b => b.textContent)"
    )
    assert sorted(rules) == ["nelson_1", "nelson_5"]
    text = page.inner_text("#alarm-list")
    assert "M-REFLOW-2 · LINE-PCB · P-REFLOW-PEAK" in text and f"CAPA {opened}" in text
    screenshot(page, "board-alarm")
    # the cards already there are the very same elements, where they were
    kept = page.evaluate(
        "() => [...document.querySelectorAll('#kanban .card')].filter((c) => c.sqemsKept)"
        ".map((c) => c.dataset.key)"
    )
    assert kept == ["CAPA-B-1", "CAPA-B-2", "CAPA-B-3"]

    links = links_in_page(page)
    trace = urlencode({"parameter": "P-REFLOW-PEAK", "machine": "M-REFLOW-2"})
    for alarm in alarms:
        assert links[alarm]["rootCause"] == f"/dashboard?{trace}"
        assert links[alarm]["recall"].startswith(f"/trace?{trace}&from=")
        assert links[alarm]["view3d"] == "/viewer?line=LINE-PCB"
    assert links[opened] == links[alarms[0]]  # the CAPA leads where its newest alarm does

    # a CAPA triaged over the API moves to its column, highlighted, the others stay put
    triage = 'mutation { triageCapa(uid: "CAPA-B-1", priority: HIGH) { uid } }'
    site.gql(triage, Role.ENGINEER)
    page.wait_for_function("() => sqemsBoard.columns.triaged.includes('CAPA-B-1')",
                           timeout=30_000)  # fmt: skip
    state = shown(page)
    assert state["columns"]["reported"] == [opened] and "CAPA-B-1" in state["moved"]
    assert columns_in_page(page)["triaged"] == ["CAPA-B-1"]
    assert page.text_content("#capa-CAPA-B-1 .badge") == "high"
    kept = page.evaluate(
        "() => [...document.querySelectorAll('.card')].filter((c) => c.sqemsKept)"
        ".map((c) => c.dataset.key)"
    )
    assert kept == ["CAPA-B-2", "CAPA-B-3"]

    # every link on the page is the one the API gives
    board = site.gql(BOARD_NOW)["board"]
    given = {a["uid"]: a["links"] for a in board["alarms"]} | {
        c["uid"]: c["links"] for col in board["columns"] for c in col["cards"]}  # fmt: skip
    assert links_in_page(page) == {
        uid: {k: v for k, v in shown_links.items() if v} for uid, shown_links in given.items()
    }

    # pushed, never polled: not one request since the board was loaded, one socket
    assert seen.requests[loaded:] == []
    assert not any("/graphql" in r for r in seen.requests), seen.requests
    state = shown(page)
    assert (state["connections"], state["drops"], state["live"]) == (1, 0, "live")
    assert state["boards"] >= 3
    fits(page)
    page.wait_for_timeout(3_200)  # the highlights fade
    screenshot(page, "board-live")


def test_a_dropped_socket_reconnects_and_a_refused_key_asks_again(site: Site, browse: Any) -> None:
    seen = browse(DESK)
    page = seen.page
    sockets: list[Any] = []
    pongs: list[str] = []
    refuse = {"on": False}

    def through(ws: Any) -> None:
        if refuse["on"]:  # the server cannot be reached
            ws.close(code=1011, reason="unreachable")
            return
        server = ws.connect_to_server()

        def upstream(message: str | bytes) -> None:
            if isinstance(message, str) and json.loads(message)["type"] == "pong":
                pongs.append(message)  # the answer to the ping sent below
            else:
                server.send(message)

        ws.on_message(upstream)
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/graphql$"), through)

    # a key the server does not know: the error, the key dialog, then the board
    page.goto(f"{site.url}/board#key=sqems_not_a_key")
    page.wait_for_selector("#key-dialog[open]", timeout=30_000)
    assert "UNAUTHENTICATED" in page.inner_text("#error")
    assert page.evaluate("sqemsBoard.live") == "refused"
    page.fill("#key-input", site.tokens[Role.VIEWER])
    page.click("#key-form button")
    page.wait_for_function("() => sqemsBoard.boards > 0 && sqemsBoard.live === 'live'",
                           timeout=30_000)  # fmt: skip
    assert page.is_hidden("#error") and len(sockets) == 2
    loaded = len(seen.requests)
    sockets[-1].send(json.dumps({"type": "ping"}))  # as the server may: answered with a pong
    for _ in range(200):  # Playwright delivers the page's messages while it waits
        if pongs:
            break
        page.wait_for_timeout(50)
    assert len(pongs) == 1

    # the socket drops while the server cannot be reached: reconnecting, with a delay
    # that grows, until it can again; a change made meanwhile is on the board after
    refuse["on"] = True
    sockets[-1].close(code=1001, reason="going away")
    page.wait_for_function("() => sqemsBoard.live === 'reconnecting'", timeout=10_000)
    assert page.inner_text("#live") == "reconnecting…"
    page.wait_for_function("() => sqemsBoard.drops >= 3", timeout=15_000)
    site.gql('mutation { triageCapa(uid: "CAPA-B-1", priority: LOW) { uid } }', Role.ENGINEER)
    screenshot(page, "board-reconnecting")
    refuse["on"] = False
    page.wait_for_function(
        "() => sqemsBoard.live === 'live' && sqemsBoard.columns.triaged.includes('CAPA-B-1')",
        timeout=30_000,
    )
    state = shown(page)
    assert state["connections"] == state["drops"] + 2 and len(sockets) == 3
    assert page.inner_text("#live") == "live"
    assert seen.requests[loaded:] == []  # no request while it was away either


def test_a_silent_socket_is_pinged_and_one_that_stays_silent_is_replaced(
    site: Site, browse: Any
) -> None:
    seen = browse(DESK)
    page = seen.page
    page.clock.install()  # the page's clock, moved on below instead of waiting
    pings: list[str] = []
    answer = {"on": True}

    def through(ws: Any) -> None:
        server = ws.connect_to_server()

        def upstream(message: str | bytes) -> None:
            if isinstance(message, str) and json.loads(message)["type"] == "ping":
                pings.append(message)
                if not answer["on"]:  # the server is gone without closing the socket
                    return
            server.send(message)

        ws.on_message(upstream)

    page.route_web_socket(re.compile(r"/graphql$"), through)
    open_board(seen, site)
    assert pings == []
    page.clock.fast_forward(26_000)  # 26 s without a message: pinged, and the server answers
    page.wait_for_function("() => sqemsBoard.pinged === 1 && sqemsBoard.ponged === 1")
    assert len(pings) == 1 and shown(page)["live"] == "live"

    answer["on"] = False
    page.clock.fast_forward(26_000)
    page.wait_for_function("() => sqemsBoard.pinged === 2")
    page.clock.fast_forward(11_000)  # no pong within 10 s: given up, another socket opened
    page.wait_for_function(
        "() => sqemsBoard.connections === 2 && sqemsBoard.live === 'live'", timeout=30_000
    )
    state = shown(page)
    assert state["drops"] == 1 and state["lastDrop"] == "the server stopped answering"
