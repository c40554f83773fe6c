"""The central side of the edge tier: what the central system makes of what edge agents
send, through a real Mosquitto broker and the ingestion running in a real API server.

Judgements become ``Judgement`` nodes linked ``JUDGES`` to their units (one node per
judgement id however often it comes); a malformed one is quarantined with the reason;
one whose unit the graph does not hold yet is kept and linked when the unit arrives;
the edges' retained status reaches ``ingestionStatus.edges``, the CLI and the
dashboard's Edges panel (headless Chromium). The records themselves on every graph
backend (embedded in memory and in a file, Neo4j).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from conftest import ARTIFACTS, Broker, wait_for
from live_server import LiveServer
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from sqems.cli import app as cli_app
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.judgements import find_judgements
from sqems.graph_model.nodes import Batch, Judgement, JudgementVerdict, Unit
from sqems.graph_model.store import Direction, Edge
from sqems.graphql import AccessStore, Role, create_app
from sqems.ingestion.edge_records import (
    EdgeRecords,
    EdgeState,
    EdgeTopic,
    merge_states,
    subscription_for,
)
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.partition import Partition
from sqems.ingestion.pipeline import Ingestor
from sqems.ingestion.quarantine import Quarantine
from sqems.ingestion.readings import ReadingsStore
from sqems.ingestion.workers import StatusFile, read_status
from sqems.settings import Settings

OPERATIONS = Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations"
SITE, LINE, EDGE = "SITE-1", "LINE-A", "EDGE-A1"
JUDGED = f"sqems/v1/{SITE}/{LINE}/edge/{EDGE}/judgement"
STATUS = f"sqems/v1/{SITE}/{LINE}/edge/{EDGE}/status"
T0 = datetime(2026, 12, 4, 8, tzinfo=UTC)


def judgement(unit: str, version: str = "3", probability: Any = 0.2, **extra: Any) -> bytes:
    """A judgement as an edge agent sends it (the shared contract of the edge tier)."""
    body = {
        "id": f"{EDGE}/{unit}/{version}",
        "edge": EDGE,
        "unit": unit,
        "batch": "B-1",
        "judged_at": (T0 + timedelta(seconds=len(unit))).isoformat(),
        "probability": probability,
        "verdict": "suspect" if float(probability) >= 0.5 else "pass",
        "threshold": 0.5,
        "model": {"kind": "unit-judgement", "product": "PRD-1", "version": version},
    }
    return json.dumps({**body, **extra}).encode()


def status(online: bool = True, queue: int = 7, at: datetime | None = None) -> bytes:
    return json.dumps({
        "edge": EDGE, "site": SITE, "line": LINE, "online": online,
        "at": (at or datetime.now(UTC)).isoformat(), "models": {"unit-judgement": "3"},
        "queue_depth": queue, "forwarded": 120, "judged": 3, "alarms": 1, "stop_commands": 1,
    }).encode()  # fmt: skip


def plant(store: GraphStore, units: list[str]) -> None:
    store.upsert_nodes([Batch(uid="B-1", started_at=T0, quantity=len(units))])
    store.upsert_nodes([Unit(uid=u, produced_at=T0) for u in units])
    store.upsert_edges([Edge("PRODUCED", "B-1", u) for u in units])


# --- the records on every backend ------------------------------------------------------------


def test_judgements_are_one_node_per_id_linked_to_their_unit_on_every_backend(
    store: GraphStore, tmp_path: Path
) -> None:
    plant(store, ["U-1", "U-2"])
    records = EdgeRecords(store, Quarantine(None), tmp_path / "pending.db")
    now = datetime.now(UTC)
    first = [(JUDGED, judgement("U-1"), now), (JUDGED, judgement("U-2", probability=0.9), now)]
    records.handle_many(first)
    records.handle_many([(JUDGED, judgement("U-1"), now)])  # delivered again

    assert store.count("Judgement") == 2
    assert (records.counters.stored, records.counters.duplicates) == (2, 1)
    node = store.get(f"{EDGE}/U-2/3")
    assert isinstance(node, Judgement)
    assert (node.verdict, node.probability, node.model_version) == (
        JudgementVerdict.SUSPECT,
        0.9,
        "3",
    )
    links = store.edges(["U-1", "U-2"], {"JUDGES": Direction.IN})
    assert sorted((e.src, e.dst) for e in links) == [
        (f"{EDGE}/U-1/3", "U-1"),
        (f"{EDGE}/U-2/3", "U-2"),
    ]
    found = find_judgements(store, edge=EDGE, verdict=JudgementVerdict.SUSPECT)
    assert [(f.judgement.uid, f.unit) for f in found] == [(f"{EDGE}/U-2/3", "U-2")]


def test_a_judgement_of_a_unit_not_yet_in_the_graph_is_kept_and_linked_when_it_comes(
    tmp_path: Path,
) -> None:
    store = EmbeddedGraphStore(tmp_path / "graph.db")
    plant(store, ["U-1"])
    pending = tmp_path / "pending.db"
    records = EdgeRecords(store, Quarantine(None), pending)
    records.handle_many([(JUDGED, judgement("U-LATE"), datetime.now(UTC))])
    assert store.count("Judgement") == 1 and records.counters.pending == 1
    assert [f.unit for f in find_judgements(store, edge=EDGE)] == [None]
    records.close()

    # across a restart: the waiting link is on disk
    again = EdgeRecords(store, Quarantine(None), pending)
    assert again.counters.pending == 1 and again.retry(now=True) == 0
    store.upsert_nodes([Unit(uid="U-LATE", produced_at=T0)])
    assert again.retry(now=True) == 1
    assert (again.counters.pending, again.counters.linked_late) == (0, 1)
    assert [(e.src, e.dst) for e in store.edges(["U-LATE"], {"JUDGES": Direction.IN})] == [
        (f"{EDGE}/U-LATE/3", "U-LATE")
    ]
    store.close()


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (JUDGED, b"{broken", "not JSON"),
        (JUDGED, judgement("U-1", verdict="fail"), "verdict"),
        (JUDGED, judgement("U-1", probability="0.4"), "probability"),
        (JUDGED, judgement("U-1", probability=1.5), "probability"),
        (JUDGED, judgement("U-1", colour="red"), "colour"),
        (JUDGED.replace(EDGE, "EDGE-B9"), judgement("U-1"), "is not the topic's"),
        (JUDGED, judgement("B-1"), "B-1 is a Batch, not a unit"),
        (STATUS, b'{"edge": "EDGE-A1", "online": "yes"}', "online"),
        (f"sqems/v1/{SITE}/{LINE}/edge/{EDGE}/mood", b"{}", "is not an edge record"),
    ],
    ids=["json", "verdict", "string", "range", "extra", "other-edge", "not-a-unit", "status",
         "topic"],
)  # fmt: skip
def test_a_malformed_edge_record_is_quarantined_with_the_reason(
    topic: str, payload: bytes, reason: str
) -> None:
    store = EmbeddedGraphStore(None)
    plant(store, ["U-1"])
    quarantine = Quarantine(None)
    records = EdgeRecords(store, quarantine, None)
    records.handle_many([(topic, payload, datetime.now(UTC))])
    (entry,) = quarantine.entries()
    assert reason in entry.reason, entry.reason
    assert entry.raw == payload and entry.source == f"mqtt:{topic}"
    assert store.count("Judgement") == 0 and records.counters.quarantined == 1


def test_an_edge_topic_names_its_parts() -> None:
    assert EdgeTopic.parse(STATUS) == EdgeTopic(SITE, LINE, EDGE, "status")


def test_a_deployment_narrowed_to_a_site_takes_that_sites_edges_only() -> None:
    whole = subscription_for(Settings.model_fields["mqtt_subscription"].default)
    site_b = subscription_for("sqems/v1/SITE-B/+/+/+")
    line = subscription_for("sqems/v1/SITE-B/LINE-2/+/+")
    for kind in ("judgement", "status"):
        here, there = f"sqems/v1/SITE-B/LINE-2/edge/E1/{kind}", f"sqems/v1/SITE-A/L/edge/E9/{kind}"
        assert mqtt.topic_matches_sub(whole, here) and mqtt.topic_matches_sub(whole, there)
        assert mqtt.topic_matches_sub(site_b, here) and not mqtt.topic_matches_sub(site_b, there)
        assert mqtt.topic_matches_sub(line, here) and not mqtt.topic_matches_sub(line, there)
        # and never a reading's
        assert not mqtt.topic_matches_sub(whole, "sqems/v1/SITE-B/LINE-2/M-1/P-1")


# --- through the broker, the API server, the CLI and the dashboard ---------------------------


@dataclass
class Served:
    url: str
    token: str
    store: GraphStore
    data: Path

    def post(self, name: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": (OPERATIONS / f"{name}.graphql").read_text(),
                  "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def served(mosquitto: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("edge-central")
    store = EmbeddedGraphStore(data / "graph.db")
    plant(store, ["U-1", "U-2", "U-3"])
    access = AccessStore(None)
    token = access.create_key("viewer", Role.VIEWER)[1]
    settings = Settings(
        data_dir=data,
        ingest=True,
        mqtt_host=mosquitto.host,
        mqtt_port=mosquitto.port,
        mqtt_client_id="sqems-edge-central",
    )
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Served(server.url, token, store, data)
    access.close()
    store.close()


def ingestion(served: Served) -> dict[str, Any]:
    body = served.post("ingestion_status")
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["ingestionStatus"]
    return result


def publish(broker: Broker, messages: list[tuple[str, bytes, bool]]) -> None:
    edge = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-central-test")
    edge.connect(broker.host, broker.port)
    edge.loop_start()
    for topic, payload, retain in messages:
        edge.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    edge.disconnect()
    edge.loop_stop()


def test_the_central_ingestion_stores_judgements_and_shows_the_edges_status(
    served: Served, mosquitto: Broker
) -> None:
    wait_for(lambda: ingestion(served)["connected"], "the server's ingestion to connect")
    publish(mosquitto, [
        (JUDGED, judgement("U-1"), False),
        (JUDGED, judgement("U-2", probability=0.8), False),
        (JUDGED, judgement("U-1"), False),  # the queue delivered it twice
        (JUDGED, judgement("U-9"), False),  # a unit the ERP export has not brought yet
        (JUDGED, b'{"id": "x"}', False),
        (STATUS, status(queue=7), True),
    ])  # fmt: skip
    wait_for(lambda: ingestion(served)["edges"], "the edge's status")
    wait_for(lambda: served.store.count("Judgement") == 3, "the judgements")
    wait_for(lambda: ingestion(served)["quarantineOpen"] == 1, "the malformed one")

    (edge,) = ingestion(served)["edges"]
    assert (edge["edge"], edge["site"], edge["line"], edge["online"]) == (EDGE, SITE, LINE, True)
    assert edge["models"] == [{"kind": "unit-judgement", "version": "3"}]
    assert edge["queueDepth"] == 7 and edge["counters"]["stopCommands"] == 1
    assert edge["judgementsReceived"] == 4
    seen = datetime.fromisoformat(edge["lastSeen"])
    assert abs((datetime.now(UTC) - seen).total_seconds()) < 60

    page = served.post("judgements", {"unit": "U-2"})["data"]["judgements"]
    assert page["totalCount"] == 1
    node = page["edges"][0]["node"]
    assert (node["uid"], node["verdict"], node["probability"]) == (f"{EDGE}/U-2/3", "SUSPECT", 0.8)
    assert node["unit"]["edges"][0]["node"]["uid"] == "U-2"
    by_edge = served.post("judgements", {"edge": EDGE, "verdict": "PASS"})["data"]["judgements"]
    assert sorted(e["node"]["uid"] for e in by_edge["edges"]) == [f"{EDGE}/U-1/3", f"{EDGE}/U-9/3"]
    unit = httpx.post(
        f"{served.url}/graphql",
        json={
            "query": '{ entity(uid: "U-1") { ... on Unit { judgements { uid modelVersion } } } }'
        },
        headers={"Authorization": f"Bearer {served.token}"},
        timeout=30,
    ).json()
    assert unit["data"]["entity"]["judgements"] == [{"uid": f"{EDGE}/U-1/3", "modelVersion": "3"}]
    missing = served.post("judgements", {"unit": "U-NOPE"})
    assert missing["data"] is None
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert "U-NOPE" in missing["errors"][0]["message"]

    # the will message: offline, the counters kept
    publish(mosquitto, [(STATUS, json.dumps({"edge": EDGE, "online": False}).encode(), True)])
    wait_for(lambda: not ingestion(served)["edges"][0]["online"], "the edge to go offline")
    assert ingestion(served)["edges"][0]["counters"]["forwarded"] == 120


def test_judgements_are_listed_by_the_cli_at_80_columns(served: Served, mosquitto: Broker) -> None:
    publish(mosquitto, [(JUDGED, judgement("U-3", probability=0.7), False)])
    wait_for(lambda: served.store.get_many([f"{EDGE}/U-3/3"]) != {}, "the judgement")
    env = {
        "SQEMS_DATA_DIR": str(served.data),
        "SQEMS_GRAPH_URI": f"embedded://{served.data / 'graph.db'}",
        "COLUMNS": "80",
    }
    shown = CliRunner().invoke(cli_app, ["judgements", "--unit", "U-3"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "U-3" in shown.output and "0.700" in shown.output and "suspect" in shown.output
    assert max(len(line) for line in shown.output.splitlines()) <= 80
    as_json = CliRunner().invoke(cli_app, ["judgements", "--edge", EDGE, "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert {r["unit"] for r in rows} >= {"U-1", "U-2", "U-3"}
    assert all(r["edge"] == EDGE for r in rows)
    wrong = CliRunner().invoke(
        cli_app, ["judgements", "--unit", "U-3", "--verdict", "maybe"], env=env
    )
    assert wrong.exit_code == 2 and "pass or suspect" in wrong.output


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1440, 900)])
def test_the_dashboard_shows_each_edge_with_its_model_and_queue(
    served: Served, mosquitto: Broker, browser: Any, width: int, height: int
) -> None:
    publish(mosquitto, [(STATUS, status(queue=12), True)])
    wait_for(lambda: ingestion(served)["edges"][0]["queueDepth"] == 12, "the new status")
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{served.url}/dashboard#key={served.token}")
    page.wait_for_function(
        "() => ['ready', 'error'].includes(document.body.dataset.state)", timeout=30_000
    )
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    shown = page.evaluate("window.sqemsDashboard")
    assert shown["edges"] == [{
        "edge": EDGE, "line": LINE, "online": True, "lastSeen": shown["edges"][0]["lastSeen"],
        "models": {"unit-judgement": "3"}, "queueDepth": 12,
    }]  # fmt: skip
    row = page.inner_text(f"#edge-rows tr[data-edge='{EDGE}']")
    assert "online" in row and "unit-judgement 3" in row and "12" in row and "ago" in row
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#edges").screenshot(path=str(ARTIFACTS / f"dashboard-edges-{width}x{height}.png"))
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{width}x{height}.png"), full_page=True)
    box = page.locator("#edges").bounding_box()
    assert box is not None and box["x"] + box["width"] <= width
    context.close()
    assert not errors, errors


def test_a_workers_status_file_carries_the_edges_it_heard(tmp_path: Path) -> None:
    store = EmbeddedGraphStore(None)
    plant(store, ["U-1"])
    readings = ReadingsStore(tmp_path / "readings.duckdb")
    ingestor = Ingestor(store, readings, Quarantine(None))
    bridge = MqttIngestion(ingestor, "127.0.0.1", 1, client_id="status-file")  # not started
    now = datetime.now(UTC)
    bridge.edge_records.handle_many(
        [(STATUS, status(queue=3), now), (JUDGED, judgement("U-1"), now)]
    )
    path = tmp_path / "workers" / "1of2" / "ingest-status.json"
    StatusFile(path, Partition(1, 2))(bridge)

    found = read_status(path)
    assert found is not None
    (edge,) = found.edges
    assert (edge.edge, edge.queue_depth, edge.models) == (EDGE, 3, {"unit-judgement": "3"})
    assert edge.counters.stop_commands == 1 and edge.judgements_received == 1
    assert found.edge_counters.stored == 1
    # another worker's older report of the same edge gives way to the latest status;
    # the judgements each worker received add up
    older = EdgeState.of({**edge.as_dict(), "at": "2026-01-01T00:00:00+00:00", "queue_depth": 99})
    (merged,) = merge_states([[older], found.edges])
    assert (merged.queue_depth, merged.judgements_received) == (3, 2)
    readings.close()
