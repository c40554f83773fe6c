"""The engineers' live board: the snapshot from the graph (open alarms with where they
were raised and their CAPA, open CAPAs by workflow state, overdue CAPAs and actions, links
the existing pages understand), and its push over a WebSocket on every change: an audited
CAPA change, an alarm of the ingestion running in the server; never without one."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import paho.mqtt.client as mqtt
import pytest
from conftest import Broker, wait_for
from fastapi import FastAPI
from live_server import LiveServer
from paho.mqtt.enums import CallbackAPIVersion
from websockets.sync.client import ClientConnection, connect

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.neo4j_server import Neo4jServer
from sqems.graph_model.neo4j_store import Neo4jGraphStore
from sqems.graph_model.nodes import Alarm, Priority, Severity
from sqems.graph_model.store import Direction, Edge
from sqems.graphql import AccessStore, Role, create_app
from sqems.graphql.pages import PAGES
from sqems.quality.audit import AuditTrail
from sqems.quality.board import MAX_ALARMS, Board, CardLinks, snapshot
from sqems.quality.capa import Actor, Workflow
from sqems.settings import Settings

OPERATIONS = Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations"
MACHINE, PARAMETER, LINE = "M-REFLOW-2", "P-REFLOW-PEAK", "LINE-PCB"
PEAK = f"sqems/v1/SITE-1/{LINE}/{MACHINE}/{PARAMETER}"
ENGINEER = Actor("erik", "engineer")
NOW = datetime.now(UTC)


@pytest.fixture(scope="module", params=["embedded", "neo4j"])
def plant_store(request: pytest.FixtureRequest) -> Iterator[GraphStore]:
    """A small generated plant in each backend: the board reads both the same way."""
    store: GraphStore
    if request.param == "embedded":
        store = EmbeddedGraphStore(None)
    else:
        server: Neo4jServer = request.getfixturevalue("neo4j_server")
        store = Neo4jGraphStore(server.uri, password=server.password())
        store.wipe()
    load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
    yield store
    store.close()


def raise_alarm(store: GraphStore, uid: str, at: datetime, *, cleared: bool = False,
                run: str | None = None) -> Alarm:  # fmt: skip
    """An alarm on the oven's peak temperature, linked as the ingestion links it."""
    alarm = Alarm(uid=uid, raised_at=at, rule="nelson_1", severity=Severity.CRITICAL,
                  message=f"peak beyond 3 sigma ({uid})",
                  cleared_at=at + timedelta(minutes=5) if cleared else None)  # fmt: skip
    edges = [Edge("RAISED_ON", uid, MACHINE), Edge("RAISED_ON", uid, PARAMETER)]
    if run is not None:
        edges.append(Edge("RAISED_ON", uid, run))
    with store.transaction() as tx:
        tx.add_nodes([alarm])
        tx.add_edges(edges)
    return alarm


def to_verifying(flow: Workflow, uid: str, due: datetime) -> None:
    flow.triage(ENGINEER, uid, Priority.HIGH)
    flow.assign(ENGINEER, uid, owner="olga", verifier="vera", due_at=due)
    flow.start(ENGINEER, uid)
    flow.record_root_cause(ENGINEER, uid, five_why=["oven drifted", "thermocouple aged"])
    flow.add_action(ENGINEER, uid, "corrective", "replace thermocouple",
                    due_at=NOW + timedelta(minutes=90))  # fmt: skip
    flow.submit(ENGINEER, uid)


class Planted:
    """A small generated plant with alarms and a CAPA in every state."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store
        self.flow = flow = Workflow(store, AuditTrail(None))
        run = sorted(e.src for e in store.edges([MACHINE], {"ON": Direction.IN}))[0]
        self.old = raise_alarm(store, "ALM-B-OLD", NOW - timedelta(hours=3), run=run)
        self.cleared = raise_alarm(store, "ALM-B-CLEARED", NOW - timedelta(hours=2), cleared=True)
        self.new = raise_alarm(store, "ALM-B-NEW", NOW - timedelta(hours=1))
        self.run = run
        self.complaint = sorted(c.uid for c in store.find("Complaint"))[0]
        defects = store.find("Defect")
        self.defect = next(d.uid for d in defects if store.edges([d.uid], {"FOUND_ON": "out"}))
        due = NOW + timedelta(days=1)
        self.reported = flow.from_complaint(ENGINEER, self.complaint).uid
        self.triaged = flow.report(ENGINEER, "solder voids", addresses=[self.defect]).uid
        flow.triage(ENGINEER, self.triaged, Priority.MEDIUM)
        self.assigned = flow.report(ENGINEER, "oven peak", addresses=[self.old.uid]).uid
        flow.triage(ENGINEER, self.assigned, Priority.HIGH)
        flow.assign(ENGINEER, self.assigned, owner="olga", verifier="vera",
                    due_at=NOW + timedelta(hours=2))  # fmt: skip
        self.in_action = flow.report(ENGINEER, "torque scatter").uid
        flow.triage(ENGINEER, self.in_action, Priority.LOW)
        flow.assign(ENGINEER, self.in_action, owner="olga", verifier="vera", due_at=due)
        flow.start(ENGINEER, self.in_action)
        flow.add_action(ENGINEER, self.in_action, "containment", "sort stock",
                        owner="otto", due_at=NOW + timedelta(hours=1))  # fmt: skip
        flow.add_action(ENGINEER, self.in_action, "corrective", "new fixture",
                        due_at=NOW + timedelta(days=5))  # fmt: skip
        self.verifying = flow.report(ENGINEER, "label smudge").uid
        to_verifying(flow, self.verifying, due)
        self.closed = flow.report(ENGINEER, "closed one").uid
        to_verifying(flow, self.closed, due)
        flow.verify(Actor("vera", "engineer"), self.closed, effective=True, note="fine")
        self.reopened = flow.report(ENGINEER, "came back").uid
        to_verifying(flow, self.reopened, due)
        flow.verify(Actor("vera", "engineer"), self.reopened, effective=True, note="fine")
        flow.reopen(ENGINEER, self.reopened, "seen again")


@pytest.fixture(scope="module")
def planted(plant_store: GraphStore) -> Planted:
    return Planted(plant_store)


def cards(board: Board) -> dict[str, Any]:
    return {c.uid: c for column in board.columns for c in column.cards}


def test_the_board_shows_open_alarms_newest_first_with_where_and_their_capa(
    planted: Planted,
) -> None:
    board = snapshot(planted.store, NOW)
    assert [a.uid for a in board.alarms] == [planted.new.uid, planted.old.uid]
    assert board.alarm_count == 2  # the cleared one is not open
    old = board.alarms[1]
    assert (old.machine, old.line, old.parameter) == (MACHINE, LINE, PARAMETER)
    assert (old.capa, board.alarms[0].capa) == (planted.assigned, None)
    assert old.severity == "critical" and old.rule == "nelson_1"


def test_the_board_has_a_column_per_open_state_in_workflow_order(planted: Planted) -> None:
    board = snapshot(planted.store, NOW)
    assert [c.status for c in board.columns] == [
        "reported", "triaged", "assigned", "in_action", "verifying", "reopened",
    ]  # fmt: skip
    by_status = {c.status: [card.uid for card in c.cards] for c in board.columns}
    for status, uids in by_status.items():
        assert getattr(planted, status) in uids
    assert planted.closed not in cards(board)
    assigned = cards(board)[planted.assigned]
    assert (assigned.owner, assigned.verifier, assigned.priority) == ("olga", "vera", "high")
    assert assigned.addresses == [planted.old.uid]


def test_overdue_lists_capas_and_actions_of_capas_in_work_past_due_oldest_first(
    planted: Planted,
) -> None:
    later = NOW + timedelta(hours=3)
    board = snapshot(planted.store, later)
    overdue = [(i.kind, i.capa, i.title, i.owner, i.days_overdue) for i in board.overdue]
    assert overdue == [
        ("action", planted.in_action, "sort stock", "otto", 0),
        ("action", planted.reopened, "replace thermocouple", "olga", 0),  # in work again
        ("capa", planted.assigned, "oven peak", "olga", 0),
    ]  # the verifying CAPA's action (due as early) is handed over, so not overdue
    assert cards(board)[planted.assigned].overdue
    assert not cards(board)[planted.in_action].overdue
    week = snapshot(planted.store, NOW + timedelta(days=8))
    days = {(i.kind, i.capa, i.title): i.days_overdue for i in week.overdue}
    assert days[("capa", planted.in_action, "torque scatter")] == 7
    assert days[("action", planted.in_action, "new fixture")] == 3
    assert [i.due_at for i in week.overdue] == sorted(i.due_at for i in week.overdue)
    assert snapshot(planted.store, NOW).overdue == []


def query_of(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


def assert_links_to_what_exists(store: GraphStore, links: CardLinks) -> dict[str, Any]:
    """Each link opens an existing page with uids the graph holds; the links by name."""
    found = {}
    for name in ("root_cause", "recall", "view3d"):
        url = getattr(links, name)
        if url is None:
            continue
        path, params = query_of(url)
        assert path in PAGES, url
        uids = [v for k, v in params.items() if k not in ("from", "to")]
        assert uids and set(store.get_many(uids)) == set(uids), url
        if "from" in params:
            assert datetime.fromisoformat(params["from"]).tzinfo is not None
        found[name] = (path, params)
    return found


def test_every_card_links_to_pages_that_exist_with_uids_that_exist(planted: Planted) -> None:
    store = planted.store
    board = snapshot(store, NOW)
    old = assert_links_to_what_exists(store, board.alarms[0].links)
    old = assert_links_to_what_exists(store, board.alarms[1].links)
    run = store.get(planted.run)
    assert old["recall"] == ("/trace", {"parameter": PARAMETER, "machine": MACHINE,
                                        "from": run.started_at.astimezone(UTC).isoformat()})  # type: ignore[attr-defined]  # fmt: skip
    assert old["view3d"] == ("/viewer", {"line": LINE})
    assert old["root_cause"] == ("/dashboard", {"parameter": PARAMETER, "machine": MACHINE})
    links = {uid: assert_links_to_what_exists(store, c.links) for uid, c in cards(board).items()}
    complaint = links[planted.reported]
    assert complaint["root_cause"] == ("/investigate", {"complaint": planted.complaint})
    assert complaint["recall"][0] == "/trace" and "batch" in complaint["recall"][1]
    assert complaint["view3d"][0] == "/viewer"
    defect = links[planted.triaged]
    assert defect["recall"][0] == "/trace" and "batch" in defect["recall"][1]
    assert links[planted.assigned]["recall"] == old["recall"]
    assert links[planted.in_action] == {}  # it addresses nothing


class CountingStore:
    """The real store, counting its calls."""

    def __init__(self, store: GraphStore) -> None:
        self._store = store
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if callable(attribute):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return attribute(*args, **kwargs)

            return counted
        return attribute


def test_the_snapshot_costs_the_same_few_store_calls_however_many_cards() -> None:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
    flow = Workflow(store, AuditTrail(None))
    complaints = sorted(c.uid for c in store.find("Complaint"))
    defects = sorted(d.uid for d in store.find("Defect"))
    calls = []
    for n in (3, 60):
        for i in range(len(calls) * 3, n):
            alarm = raise_alarm(store, f"ALM-N-{i:03}", NOW - timedelta(minutes=i))
            flow.report(ENGINEER, f"card {i}",
                        addresses=[alarm.uid, complaints[i % len(complaints)],
                                   defects[i % len(defects)]])  # fmt: skip
        counting = CountingStore(store)
        board = snapshot(counting, NOW)  # type: ignore[arg-type]
        assert board.alarm_count == n and len(board.alarms) == min(n, MAX_ALARMS)
        assert sum(len(c.cards) for c in board.columns) == n
        calls.append(counting.calls)
    assert calls[0] == calls[1] and calls[0] <= 20, calls
    store.close()


# --- over a live server --------------------------------------------------------------------


class Served:
    def __init__(self, url: str, tokens: dict[Role, str], store: GraphStore, app: FastAPI,
                 access: AccessStore) -> None:  # fmt: skip
        self.url, self.tokens, self.store, self.app, self.access = url, tokens, store, app, access

    def post(self, query: str, variables: dict[str, Any] | None = None,
             role: Role = Role.VIEWER) -> dict[str, Any]:  # fmt: skip
        response = httpx.post(f"{self.url}/graphql",
                              json={"query": query, "variables": variables or {}},
                              headers={"Authorization": f"Bearer {self.tokens[role]}"},
                              timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        return body["data"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def served(mosquitto: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("api-board")
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
    access = AccessStore(None)
    tokens = {role: access.create_key(role.label, role)[1] for role in Role}
    settings = Settings(data_dir=data, ingest=True, mqtt_host=mosquitto.host,
                        mqtt_port=mosquitto.port, mqtt_client_id="sqems-board-test",
                        api_subscription_recheck_s=0.2)  # fmt: skip
    app = create_app(settings, store=store, access=access)
    with LiveServer(app) as server:
        served = Served(server.url, tokens, store, app, access)
        wait_for(lambda: served.post("query { ingestionStatus { connected } }")
                 ["ingestionStatus"]["connected"], "the server's ingestion to connect")  # fmt: skip
        yield served
    access.close()
    store.close()


def subscribe(served: Served, token: str) -> Iterator[ClientConnection]:
    url = served.url.replace("http://", "ws://") + "/graphql"
    with connect(url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                 additional_headers={"Authorization": f"Bearer {token}"}) as ws:  # fmt: skip
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(10))["type"] == "connection_ack"
        query = (OPERATIONS / "board_updates.graphql").read_text()
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        yield ws


def next_board(ws: ClientConnection, timeout: float = 15) -> dict[str, Any]:
    message = json.loads(ws.recv(timeout))
    assert message["type"] == "next" and "errors" not in message["payload"], message
    board: dict[str, Any] = message["payload"]["data"]["boardUpdates"]
    return board


def column_of(board: dict[str, Any], uid: str) -> str | None:
    for column in board["columns"]:
        if any(c["uid"] == uid for c in column["cards"]):
            return str(column["status"])
    return None


def test_the_board_query_answers_with_the_published_operation(served: Served) -> None:
    board = served.post((OPERATIONS / "board.graphql").read_text())["board"]
    assert board["columns"][0]["status"] == "reported"
    assert board["alarmCount"] == len(board["alarms"]) == 0


def test_the_subscription_pushes_a_board_after_a_capa_change_and_an_alarm_and_not_before(
    served: Served, mosquitto: Broker
) -> None:
    hub = served.app.state.board
    for ws in subscribe(served, served.tokens[Role.VIEWER]):
        first = next_board(ws)
        assert first["generatedAt"] and len(first["columns"]) == 6
        with pytest.raises(TimeoutError):
            ws.recv(2)  # nothing changed: nothing is pushed

        report = "mutation($t: String!) { reportCapa(title: $t) { uid } }"
        uid = served.post(report, {"t": "board push"}, Role.INSPECTOR)["reportCapa"]["uid"]
        triage = "mutation($u: String!) { triageCapa(uid: $u, priority: HIGH) { uid } }"
        served.post(triage, {"u": uid}, Role.ENGINEER)
        board = next_board(ws)
        while column_of(board, uid) != "triaged":  # report and triage may come apart
            assert column_of(board, uid) == "reported"
            board = next_board(ws)

        computed = hub.computed
        sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="board-test-sensor")
        sender.connect(mosquitto.host, mosquitto.port)
        sender.loop_start()
        now = datetime.now(UTC).isoformat()
        values = [242.5] * 5 + [251.0] * 5
        readings = [{"ts": now, "value": v, "unit": "degC", "id": f"board-{i}"}
                    for i, v in enumerate(values)]  # fmt: skip
        sender.publish(PEAK, json.dumps(readings), qos=1).wait_for_publish(5)
        sender.loop_stop()
        board = next_board(ws)
        while not board["alarms"]:
            board = next_board(ws)
        alarm = board["alarms"][0]
        assert (alarm["machine"], alarm["parameter"], alarm["line"]) == (MACHINE, PARAMETER, LINE)
        assert alarm["links"]["view3d"] == f"/viewer?line={LINE}"
        assert hub.computed > computed


def settled(hub: Any) -> int:
    """The boards computed so far, once no earlier change is still being pushed (the
    trail is read every 0.5 s, a change waits 0.3 s)."""
    while True:
        computed = hub.computed
        time.sleep(1.5)
        if hub.computed == computed:
            return computed


def test_one_change_is_computed_once_for_every_subscriber(served: Served) -> None:
    hub = served.app.state.board
    listeners = [subscribe(served, served.tokens[Role.VIEWER]) for _ in range(3)]
    sockets = [next(listener) for listener in listeners]
    for ws in sockets:
        next_board(ws)
    computed = settled(hub)
    report = "mutation($t: String!) { reportCapa(title: $t) { uid } }"
    uid = served.post(report, {"t": "seen by all"}, Role.INSPECTOR)["reportCapa"]["uid"]
    boards = [next_board(ws) for ws in sockets]
    assert all(column_of(b, uid) == "reported" for b in boards)
    assert len({b["generatedAt"] for b in boards}) == 1  # the same board, computed once
    assert hub.computed == computed + 1
    for listener in listeners:
        listener.close()


def test_a_revoked_viewer_key_closes_its_board_subscription(served: Served) -> None:
    key, token = served.access.create_key("wall screen", Role.VIEWER)
    hub = served.app.state.board
    for ws in subscribe(served, token):
        next_board(ws)
        served.access.revoke(key.id)
        closing = json.loads(ws.recv(5))
        assert closing["type"] == "next"
        assert closing["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert json.loads(ws.recv(5)) == {"id": "1", "type": "complete"}
    wait_for(lambda: hub.subscribers == 0, "the closed subscription to detach")


def test_a_subscription_ends_when_its_client_goes(served: Served) -> None:
    hub = served.app.state.board
    for ws in subscribe(served, served.tokens[Role.VIEWER]):
        next_board(ws)
        assert hub.subscribers == 1
    wait_for(lambda: hub.subscribers == 0, "the board to notice the client left")
