"""What-if over the API: a session created, scenarios run in the background with their
progress streamed over a WebSocket, the comparison read back, a recommendation, and
bad requests refused with typed errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import wait_for
from live_server import LiveServer
from websockets.sync.client import connect

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings

OPERATIONS = Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations"


class Served:
    def __init__(self, url: str, tokens: dict[Role, str]) -> None:
        self.url, self.tokens = url, tokens

    def post(
        self, name: str, variables: dict[str, Any] | None = None, role: Role = Role.ENGINEER
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
        assert "Traceback" not in response.text
        body: dict[str, Any] = response.json()
        return body

    def data(self, name: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = self.post(name, variables)
        assert "errors" not in body, body["errors"]
        result: dict[str, Any] = body["data"]
        return result


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(generate(PlantSpec(units=12_000, seed=2))))
    access = AccessStore(None)
    tokens = {role: access.create_key(role.label, role)[1] for role in Role}
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("api-whatif"), twin_draws=800, twin_tune=600
    )
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Served(server.url, tokens)
    access.close()
    store.close()


def session_of(served: Served, uid: str) -> dict[str, Any]:
    result: dict[str, Any] = served.data("what_if_session", {"uid": uid})["whatIfSession"]
    return result


def test_a_scenario_runs_in_the_background_and_is_compared_with_the_baseline(
    served: Served,
) -> None:
    created = served.data(
        "create_what_if_session",
        {"line": "LINE-PCB", "name": "oven study", "horizonHours": 4, "replications": 12},
    )["createWhatIfSession"]
    uid = created["uid"]
    assert [s["name"] for s in created["scenarios"]] == ["baseline"]

    heard: list[dict[str, Any]] = []
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
            query = (OPERATIONS / "what_if_progress.graphql").read_text()
            payload = {"query": query, "variables": {"session": uid}}
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            ready.set()
            while not heard or heard[-1]["status"] not in ("DONE", "FAILED"):
                message = json.loads(ws.recv(300))
                assert message["type"] == "next", message
                heard.append(message["payload"]["data"]["whatIfProgress"])

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    time.sleep(0.3)

    changes = {"parameters": [{"parameter": "P-REFLOW-PEAK", "setpoint": 250.0}]}
    started = served.data("run_scenario", {"session": uid, "name": "hot oven", "changes": changes})
    assert started["runScenario"]["status"] in ("PENDING", "RUNNING")
    listener.join(300)
    assert heard[-1]["status"] == "DONE", heard[-1]
    fractions = [p["fraction"] for p in heard if p["status"] == "RUNNING"]
    assert fractions == sorted(fractions) and fractions[-1] > 0.9

    view = session_of(served, uid)
    baseline, hot = view["scenarios"]
    assert baseline["status"] == hot["status"] == "DONE"
    kpis = {k["kpi"]: k for k in baseline["kpis"]}
    assert kpis["yield"]["low"] <= kpis["yield"]["mean"] <= kpis["yield"]["high"]
    loss = {d["kpi"]: d for d in hot["difference"]}["yield"]
    assert loss["high"] < 0
    verdicts = {v["kpi"]: v["verdict"] for v in hot["verdicts"]}
    assert verdicts["yield"] == "credible" and set(verdicts) == set(kpis)
    # 250 degC is beyond what the oven that did not drift ran at: said, per machine
    assert baseline["warnings"] == [] and len(hot["warnings"]) == 1
    assert "M-REFLOW-1 would run at" in hot["warnings"][0]
    assert json.loads(hot["simulatedChanges"])["parameters"][0]["setpoint"] == 250.0

    models = served.data("twin_models", {"line": "LINE-PCB"})["twinModels"]
    assert [m["step"] for m in models] == ["STEP-PCB-10", "STEP-PCB-20"]
    assert all(m["sound"] and m["divergences"] == 0 and m["maxRHat"] <= 1.01 for m in models)
    names = {c["name"] for c in models[1]["coefficients"]}
    assert {"alpha", "beta[P-REFLOW-PEAK]", "gamma[P-REFLOW-PEAK:1]", "tau"} <= names

    recommended = served.data("recommend_setpoints", {"session": uid, "throughputFloor": 100.0})
    rec_uid = recommended["recommendSetpoints"]["uid"]
    wait_for(
        lambda: (
            next(s for s in session_of(served, uid)["scenarios"] if s["uid"] == rec_uid)["status"]
            == "DONE"
        ),
        "the recommendation to be simulated",
        timeout=300,
    )
    rec = next(s for s in session_of(served, uid)["scenarios"] if s["uid"] == rec_uid)
    assert rec["feasible"] is True
    peak = next(r for r in rec["recommended"] if r["parameter"] == "P-REFLOW-PEAK")
    assert peak["recommended"] < 247.0


def test_what_the_line_cannot_do_is_refused_with_a_typed_error(served: Served) -> None:
    created = served.data(
        "create_what_if_session", {"line": "LINE-PCB", "name": "bad", "replications": 4}
    )["createWhatIfSession"]
    session = created["uid"]
    cases = [
        ("create_what_if_session", {"line": "LINE-NOPE", "name": "x"}, "NOT_FOUND"),
        ("create_what_if_session", {"line": "LINE-PCB", "name": "x", "replications": 1},
         "VALIDATION_FAILED"),
        ("run_scenario", {"session": "WIS-nope", "name": "x"}, "NOT_FOUND"),
        ("run_scenario", {"session": session, "name": "x", "changes": {"lineSpeed": -2.0}},
         "VALIDATION_FAILED"),
        ("run_scenario", {"session": session, "name": "x", "changes": {"shifts": ["weekend"]}},
         "VALIDATION_FAILED"),
        ("run_scenario", {"session": session, "name": "x",
                          "changes": {"routing": [{"step": "STEP-PCB-20", "machines": []}]}},
         "VALIDATION_FAILED"),
        ("run_scenario", {"session": session, "name": "x", "changes": {"drifts": [
            {"machine": "M-REFLOW-2", "parameter": "P-REFLOW-PEAK",
             "start": "2026-02-01T00:00:00+00:00", "end": "2026-01-01T00:00:00+00:00"}]}},
         "VALIDATION_FAILED"),
        ("recommend_setpoints", {"session": session, "throughputFloor": -1.0},
         "VALIDATION_FAILED"),
        ("what_if_session", {"uid": "WIS-nope"}, "NOT_FOUND"),
        ("twin_models", {"line": "LINE-ASM"}, "VALIDATION_FAILED"),
    ]  # fmt: skip
    for name, variables, code in cases:
        body = served.post(name, variables)
        assert body["errors"][0]["extensions"]["code"] == code, (name, body)
    denied = served.post("run_scenario", {"session": session, "name": "x"}, Role.INSPECTOR)
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
