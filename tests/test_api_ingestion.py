"""The API with the MQTT ingestion running inside it, against a real Mosquitto broker:
ingestion status, the quarantine, replays, and alarms streamed over a WebSocket."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from conftest import Broker, wait_for
from fastapi import FastAPI
from live_server import LiveServer
from paho.mqtt.enums import CallbackAPIVersion
from test_mqtt import FailsOnce
from websockets.sync.client import connect

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.store import Direction
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings

OPERATIONS = Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations"
PEAK = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK"


class Served:
    def __init__(self, url: str, tokens: dict[Role, str], store: GraphStore, app: FastAPI) -> None:
        self.url, self.tokens, self.store, self.app = url, tokens, store, app

    def post(
        self, name: str, variables: dict[str, Any] | None = None, role: Role = Role.VIEWER
    ) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql",
            json={
                "query": (OPERATIONS / f"{name}.graphql").read_text(),
                "variables": variables or {},
            },
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def served(mosquitto: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("api-ingest")
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
    access = AccessStore(None)
    tokens = {role: access.create_key(role.label, role)[1] for role in Role}
    settings = Settings(
        data_dir=data,
        ingest=True,
        mqtt_host=mosquitto.host,
        mqtt_port=mosquitto.port,
        mqtt_client_id="sqems-api-test",
    )
    app = create_app(settings, store=store, access=access)
    with LiveServer(app) as server:
        yield Served(server.url, tokens, store, app)
    access.close()
    store.close()


def status(served: Served) -> dict[str, Any]:
    body = served.post("ingestion_status")
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["ingestionStatus"]
    return result


def test_ingestion_runs_in_the_server_and_streams_alarms(served: Served, mosquitto: Broker) -> None:
    wait_for(lambda: status(served)["connected"], "the server's ingestion to connect")
    alarms: list[dict[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        url = served.url.replace("http://", "ws://") + "/graphql"
        headers = {"Authorization": f"Bearer {served.tokens[Role.VIEWER]}"}
        with connect(
            url,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            additional_headers=headers,
        ) as ws:
            ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(ws.recv(10))["type"] == "connection_ack"
            query = (OPERATIONS / "alarms.graphql").read_text()
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            ready.set()
            while len(alarms) < 2:
                message = json.loads(ws.recv(30))
                assert message["type"] == "next", message
                alarms.append(message["payload"]["data"]["alarms"])

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    time.sleep(0.3)

    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="api-test-sensor")
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    now = datetime.now(UTC).isoformat()
    values = [242.5] * 5 + [251.0] * 5
    batch = [
        {"ts": now, "value": v, "unit": "degC", "id": f"api-{i}"} for i, v in enumerate(values)
    ]
    sender.publish(PEAK, json.dumps(batch), qos=1).wait_for_publish(5)
    sender.publish(PEAK, b"{broken", qos=1).wait_for_publish(5)
    sender.loop_stop()

    wait_for(lambda: status(served)["received"] == 11, "the readings to be ingested")
    s = status(served)
    assert (s["running"], s["accepted"], s["quarantined"], s["alarms"]) == (True, 10, 1, 2)
    listener.join(30)
    assert {a["rule"] for a in alarms} == {"nelson_1", "nelson_5"}
    assert all(a["stopLine"] and a["machine"] == "M-REFLOW-2" for a in alarms)
    # the oven's peak temperature is critical: one CAPA for the excursion, both alarms in it
    capas = [c for c in served.store.find("Capa") if c.source.value == "alarm"]  # type: ignore[attr-defined]
    assert len(capas) == 1
    addressed = served.store.edges([capas[0].uid], {"ADDRESSES": Direction.OUT})
    assert sorted(e.dst for e in addressed) == sorted(a["uid"] for a in alarms)

    page = served.post("quarantine", {"first": 10})["data"]["quarantine"]
    assert page["totalCount"] == 1
    entry = page["edges"][0]["node"]
    assert entry["raw"] == "{broken" and "not JSON" in entry["reason"]
    assert entry["size"] == 7 and not entry["rawTruncated"]

    denied = served.post("replay_quarantined", {"ids": [entry["id"]]}, Role.INSPECTOR)
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    replayed = served.post("replay_quarantined", {"ids": [entry["id"]]}, Role.ENGINEER)
    (done,) = replayed["data"]["replayQuarantined"]
    assert "not JSON" in done["outcome"] and done["replayedAt"]


def test_a_worker_that_dies_makes_ingestion_unready_until_it_is_restarted(
    served: Served, mosquitto: Broker, tmp_path: Path
) -> None:
    wait_for(lambda: status(served)["connected"], "the server's ingestion to connect")
    assert status(served)["health"]["healthy"]
    assert httpx.get(f"{served.url}/readyz").status_code == 200
    ingestor = served.app.state.ingestion.ingestor
    kept, ingestor.readings = ingestor.readings, FailsOnce(tmp_path / "r.duckdb")
    try:
        sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="api-test-watchdog")
        sender.connect(mosquitto.host, mosquitto.port)
        sender.loop_start()
        body = {"ts": datetime.now(UTC).isoformat(), "value": 242.5, "unit": "degC", "id": "wd"}
        sender.publish(PEAK, json.dumps(body), qos=1)

        # unhealthy from the worker's death until the watchdog's restart (1 s later)
        def unready() -> bool:
            return httpx.get(f"{served.url}/readyz").status_code == 503

        wait_for(unready, "/readyz to answer 503", timeout=5)
        reason = httpx.get(f"{served.url}/readyz").json()["reason"]
        assert "ingestion is unhealthy: the ingestion worker died: IOException" in reason
        health = status(served)["health"]
        assert not health["healthy"] and "No space left" in health["reason"]
        wait_for(lambda: status(served)["health"]["healthy"], "the restarted worker", 10)
        health = status(served)["health"]
        assert health["restarts"] == 1 and "IOException" in health["lastError"]
        assert httpx.get(f"{served.url}/readyz").status_code == 200
        assert ingestor.readings.count() == 1
        sender.loop_stop()
    finally:
        ingestor.readings.close()
        ingestor.readings = kept


def test_a_quarantine_page_shows_the_start_of_each_payload_not_the_whole(
    served: Served, mosquitto: Broker
) -> None:
    """A page of 500 entries of one 91 KiB message once returned 46 MB of payloads."""
    wait_for(lambda: status(served)["connected"], "the server's ingestion to connect")
    kept = status(served)["quarantineKept"]
    at = datetime.now(UTC).isoformat()
    raw = json.dumps(
        [{"ts": at, "value": f"hot-{i}", "unit": "degC", "id": f"q-{i}"} for i in range(1_000)]
    ).encode()
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="api-test-big-bad")
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    sender.publish(PEAK, raw, qos=1).wait_for_publish(5)
    wait_for(lambda: status(served)["quarantineKept"] == kept + 1_000, "1,000 refused readings")
    sender.loop_stop()
    after = served.post("quarantine", {"first": 1})["data"]["quarantine"]["pageInfo"]["endCursor"]
    page = served.post("quarantine", {"first": 500, "after": after})
    nodes = [e["node"] for e in page["data"]["quarantine"]["edges"]]
    big = [n for n in nodes if n["size"] == len(raw)]
    assert len(big) >= 499
    assert all(n["rawTruncated"] and len(n["raw"]) == 2_048 for n in big)
    assert big[0]["raw"] == raw[:2_048].decode()
    assert len(json.dumps(page)) < 1_500_000
