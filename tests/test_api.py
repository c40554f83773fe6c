"""The GraphQL API through a real HTTP client against a live server, on both backends."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Broker
from graphql import parse
from live_server import LiveServer
from rdflib.compare import isomorphic
from websockets.sync.client import connect

from sqems import ontologies
from sqems.analysis.rootcause import from_defect_type, rank_causes
from sqems.datasets import Plant, PlantSpec, generate, load_plant
from sqems.datasets.building import write_building_ifc
from sqems.datasets.files import plant_sections
from sqems.graph_model import (
    EmbeddedGraphStore,
    GraphStore,
    RecallSource,
    SourceKind,
    Traceability,
)
from sqems.graph_model.neo4j_server import Neo4jServer
from sqems.graph_model.neo4j_store import Neo4jGraphStore
from sqems.graph_model.nodes import Machine
from sqems.graphql import AccessStore, Role, create_app, sdl
from sqems.graphql.limits import expanded_fields
from sqems.graphql.types import global_id
from sqems.ingestion.quarantine import NewEntry, Quarantine
from sqems.ingestion.service import QUARANTINE_FILE
from sqems.settings import Settings
from sqems.simulation import whatif
from sqems.viewer import import_bim

GRAPHQL_DIR = Path(__file__).resolve().parent.parent / "sqems" / "graphql"
PLAN_FILE = Path(__file__).resolve().parent.parent / "examples" / "design" / "drive-mini.json"
NEEDS_INGESTION = {"replay_quarantined", "alarms"}
"""Operations that need the MQTT ingestion in the server: test_api_ingestion.py runs them."""
NEEDS_TWIN = {"run_scenario", "recommend_setpoints", "what_if_progress", "twin_models"}
"""Operations that fit and simulate the twin in the background: test_api_whatif.py runs
them, with small NUTS settings."""
NEEDS_UPLOAD = {"import_bim"}
"""Multipart requests: test_viewer_api.py sends them."""
NEEDS_WEBSOCKET = {"board_updates"}
"""Subscriptions run over a WebSocket: test_board.py runs them."""
NEEDS_SIGNER = {"set_signing_password", "submit_capa", "verify_capa", "dispose_deviation"}
"""Signatures and signing passwords, which need CAPAs or deviations in their states:
test_signing.py and test_dhr_records.py run them."""
NEEDS_CALIBRATIONS = {"look_back"}
"""A calibration found out of tolerance, which the drives plant has none of: test_lookback.py
runs it on the pump plant."""
RUN_ELSEWHERE = (
    NEEDS_INGESTION
    | NEEDS_TWIN
    | NEEDS_UPLOAD
    | NEEDS_WEBSOCKET
    | NEEDS_SIGNER
    | NEEDS_CALIBRATIONS
)
OPERATIONS = sorted(
    p for p in (GRAPHQL_DIR / "operations").glob("*.graphql") if p.stem not in RUN_ELSEWHERE
)


class CountingStore:
    """The real store, counting the calls that fetch node properties."""

    def __init__(self, store: GraphStore) -> None:
        self._store = store
        self.get_many_calls = 0

    def get_many(self, uids: Any) -> Any:
        self.get_many_calls += 1
        return self._store.get_many(uids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@dataclass
class Api:
    url: str
    plant: Plant
    store: CountingStore
    access: AccessStore
    tokens: dict[Role, str] = field(default_factory=dict)

    def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        role: Role | None = Role.VIEWER,
        token: str | None = None,
    ) -> dict[str, Any]:
        headers = {}
        if token or role:
            headers["Authorization"] = f"Bearer {token or self.tokens[role]}"  # type: ignore[index]
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
            headers=headers, timeout=60,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert "Traceback" not in response.text
        body: dict[str, Any] = response.json()
        return body

    def data(self, query: str, variables: dict[str, Any] | None = None,
             role: Role = Role.VIEWER) -> dict[str, Any]:  # fmt: skip
        body = self.post(query, variables, role)
        assert "errors" not in body, body["errors"]
        result: dict[str, Any] = body["data"]
        return result


def _start(store: GraphStore, plant: Plant, data_dir: Path, **settings: Any) -> Iterator[Api]:
    access = AccessStore(None)
    counting = CountingStore(store)
    app = create_app(Settings(data_dir=data_dir, **settings), store=counting, access=access)  # type: ignore[arg-type]
    api = Api("", plant, counting, access)
    for role in Role:
        _, api.tokens[role] = access.create_key(f"test {role.label}", role)
    with LiveServer(app) as server:
        api.url = server.url
        yield api
    access.close()


@pytest.fixture(scope="module")
def plant() -> Plant:
    return generate(PlantSpec(units=6_000, seed=5))


@pytest.fixture(scope="module", params=["embedded", "neo4j"])
def api(
    request: pytest.FixtureRequest, plant: Plant, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    store: GraphStore
    if request.param == "embedded":
        store = EmbeddedGraphStore(tmp / "graph.db")
    else:
        server: Neo4jServer = request.getfixturevalue("neo4j_server")
        store = Neo4jGraphStore(server.uri, password=server.password())
        store.wipe()
    load_plant(store, plant_sections(plant))
    yield from _start(store, plant, tmp)
    store.close()


@pytest.fixture(scope="module")
def embedded_api(plant: Plant, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("api-embedded-only")
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    yield from _start(store, plant, tmp)
    store.close()


# --- published schema and operations -------------------------------------------------------


def test_checked_in_schema_matches_the_code() -> None:
    assert (GRAPHQL_DIR / "schema.graphql").read_text() == sdl(), (
        "the schema changed: regenerate it with `sqems graphql-schema > "
        "sqems/graphql/schema.graphql` and review the diff"
    )


def _variables(api: Api, name: str) -> dict[str, Any]:
    truth = api.plant.truth
    drift = truth["causes"][1]
    lot = truth["causes"][0]["uid"]
    batch = truth["causes"][0]["batches"][0]
    unit = api.plant.edges["PRODUCED"].columns["dst"][10]
    complaint = api.plant.nodes["Complaint"].columns["uid"][0]
    drive_batches = [b for b in api.plant.nodes["Batch"].columns["uid"] if "ASM" in b]
    return {
        "recall_scope": {"input": {"lot": lot}, "first": 20},
        "trace": {"complaint": complaint},
        "investigation": {"complaint": complaint},
        "genealogy": {"uid": lot, "direction": "DOWNSTREAM", "label": "Unit", "first": 10},
        "node": {"id": global_id("Unit", unit)},
        "entity": {"uid": batch, "type": "PRODUCED", "first": 5},
        "hold_batch": {"uid": batch, "reason": "suspect resin lot"},
        "release_batch": {"uid": batch, "reason": "lot cleared by incoming inspection"},
        "set_unit_status": {"uid": unit, "status": "REWORKED"},
        "create_api_key": {"name": "line 2 tablet", "role": "INSPECTOR"},
        "revoke_api_key": {  # key names are never reused: one per call
            "id": api.access.create_key(f"to revoke {len(api.access.keys())}", Role.VIEWER)[0].id
        },
        "api_keys": {},
        "audit_log": {"last": 5},
        "root_cause": {"input": {"defectType": {"uid": truth["causes"][0]["defect_type"]}}},
        "ingestion_status": {},
        "judgements": {"unit": unit},
        "quarantine": {"first": 10},
        "kpis": {"costs": {"unitCost": [{"product": "PRD-DRIVE", "unitCost": 180.0}]}},
        "spc_chart": {"input": {"parameter": {"uid": drift["parameter"], "machine": drift["uid"]}},
                      "baseline": 5},
        "capability": {"parameter": "P-TORQUE"},
        "train_defect_model": {"product": "PRD-DRIVE"},
        "batch_risk": {"product": "PRD-DRIVE", "batches": drive_batches[-3:]},
        "create_what_if_session": {"line": "LINE-PCB", "name": "oven study",
                                   "horizonHours": 4, "replications": 10},
        "what_if_session": {"uid": whatif.create_session(
            api.store, "LINE-ASM", "press study", horizon_s=3600, replications=5).session.uid},
        "line_scene": {"line": "LINE-PCB"},
        "bim_model": {"uid": _bim_model(api)},
        "bim_models": {},
        "spc_rules": {},
        "device_history_record": {"batch": batch},
        "supplier_scorecards": {},
        "identify": {"code": f"(01)09506000134352(21){unit}"},
        "defect_types": {},
        "report_defect": {"report": {"reportId": "0b9e3c52-8f0e-4d5a-9a57-4c1f0d6b7e21",
                                     "target": unit, "severity": "MINOR",
                                     "defectType": truth["causes"][0]["defect_type"]}},
        "me": {},
        "my_tasks": {},
        "board": {},
        "save_planned_product": {"plan": json.loads(PLAN_FILE.read_text())},
        "planned_products": {},
        "design_review": {"plan": json.loads(PLAN_FILE.read_text()), "draws": 500},
        "export_rdf": {"scope": {"recall": {"lot": lot}}, "format": "TURTLE", "validate": True},
        "_machine": {"input": {"machine": {"uid": drift["uid"], "window": {
            "start": drift["window"]["start"], "end": drift["window"]["end"]}}}},
    }[name]  # fmt: skip


def _bim_model(api: Api) -> str:
    """A model of the plant's hall, imported into the API's store."""
    machines = [m for m in api.store.find("Machine") if isinstance(m, Machine)]
    with tempfile.TemporaryDirectory() as tmp:
        ifc = write_building_ifc(Path(tmp) / "hall.ifc", machines)
        return import_bim(api.store, ifc, cache_dir=Path(tmp) / "bim").model.uid  # type: ignore[arg-type]


ROLE_OF = {
    "train_defect_model": Role.ENGINEER,
    "create_what_if_session": Role.ENGINEER,
    "hold_batch": Role.ENGINEER,
    "release_batch": Role.ENGINEER,
    "set_unit_status": Role.INSPECTOR,
    "report_defect": Role.INSPECTOR,
    "save_planned_product": Role.ENGINEER,
    "create_api_key": Role.ADMIN,
    "revoke_api_key": Role.ADMIN,
    "api_keys": Role.ADMIN,
    "audit_log": Role.ADMIN,
}


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda p: p.stem)
def test_published_operation_runs_against_the_live_server(api: Api, operation: Path) -> None:
    if operation.stem == "batch_risk":  # risk needs a trained model
        train = (operation.parent / "train_defect_model.graphql").read_text()
        api.data(train, _variables(api, "train_defect_model"), Role.ENGINEER)
    data = api.data(operation.read_text(), _variables(api, operation.stem),
                    ROLE_OF.get(operation.stem, Role.VIEWER))  # fmt: skip
    assert data and all(v is not None for v in data.values())


def test_recall_scope_over_http_equals_the_domain_answer(api: Api) -> None:
    lot = api.plant.truth["causes"][0]["uid"]
    query = (GRAPHQL_DIR / "operations" / "recall_scope.graphql").read_text()
    got = api.data(query, {"input": {"lot": lot}, "first": 500})["recallScope"]
    want = Traceability(api.store._store).recall_scope(RecallSource(SourceKind.LOT, lot))
    assert got["counts"]["units"] == want.counts["units"] == got["units"]["totalCount"]
    assert got["batches"] == want.batches
    assert [c["uid"] for c in got["customers"]] == want.customers
    first = got["units"]["edges"][0]["node"]
    assert [s["uid"] for s in first["path"]] == [s.uid for s in want.units[0].path]


def test_export_rdf_of_a_recall_scope_is_the_domain_export_and_conforms(api: Api) -> None:
    lot = api.plant.truth["causes"][0]["uid"]
    query = (GRAPHQL_DIR / "operations" / "export_rdf.graphql").read_text()
    for fmt in ontologies.RdfFormat:
        got = api.data(query, {"scope": {"recall": {"lot": lot}}, "format": fmt.name,
                               "validate": True})["exportRdf"]  # fmt: skip
        assert got["mediaType"] == fmt.media_type
        assert got["shacl"] == {"conforms": True, "violations": 0, "findings": []}
        source = RecallSource(SourceKind.LOT, lot)
        want = ontologies.to_graph(ontologies.Part.recall(api.store._store, source))
        assert isomorphic(ontologies.parse(got["text"], fmt), want)
        assert got["triples"] == len(want)


def test_export_rdf_refuses_a_part_larger_than_the_cap_and_unknown_uids(
    embedded_api: Api,
) -> None:
    query = (GRAPHQL_DIR / "operations" / "export_rdf.graphql").read_text()
    whole = embedded_api.post(query, {"scope": {"whole": True}})
    assert whole["data"]["exportRdf"]["nodes"] == embedded_api.store.count()
    unknown = embedded_api.post(query, {"scope": {"uids": ["NOPE-1"]}})
    assert _code(unknown) == "VALIDATION_FAILED"
    assert "NOPE-1" in unknown["errors"][0]["message"]
    neither = embedded_api.post(query, {"scope": {"whole": False}})
    assert _code(neither) == "VALIDATION_FAILED"


def test_root_cause_over_http_equals_the_domain_answer(api: Api) -> None:
    defect_type = api.plant.truth["causes"][0]["defect_type"]
    query = (GRAPHQL_DIR / "operations" / "root_cause.graphql").read_text()
    got = api.data(query, {"input": {"defectType": {"uid": defect_type}}, "top": 5})["rootCause"]
    store = api.store._store
    want = rank_causes(store, from_defect_type(store, defect_type), top=5)
    assert got["population"] == want.population
    assert [c["key"] for c in got["causes"]] == [c.factor.key for c in want.causes]
    assert got["causes"][0]["why"][-1]["uid"] == want.causes[0].why[-1].uid


def test_spc_chart_limits_can_be_frozen_and_passed_back(api: Api) -> None:
    query = (GRAPHQL_DIR / "operations" / "spc_chart.graphql").read_text()
    chart = {"parameter": {"uid": "P-TORQUE", "machine": "M-SCREW-1"}}
    study = api.data(query, {"input": chart, "baseline": 10})["spcChart"]
    assert [p["phase"] for p in study["points"][:11]] == [1] * 10 + [2]
    again = api.data(query, {"input": chart, "limits": study["limits"]})["spcChart"]
    assert [p["ucl"] for p in again["points"]] == [p["ucl"] for p in study["points"]]
    wrong = api.post(query, {"input": {"inspections": {"scope": "LINE-ASM"}},
                             "limits": study["limits"]})  # fmt: skip
    assert _code(wrong) == "VALIDATION_FAILED"


def test_batch_risk_needs_a_trained_model_and_training_needs_an_engineer(
    embedded_api: Api,
) -> None:
    risk = (GRAPHQL_DIR / "operations" / "batch_risk.graphql").read_text()
    train = (GRAPHQL_DIR / "operations" / "train_defect_model.graphql").read_text()
    batches = [b for b in embedded_api.plant.nodes["Batch"].columns["uid"] if "ASM" in b]
    ask = {"product": "PRD-DRIVE", "batches": batches[-2:]}
    assert _code(embedded_api.post(risk, ask)) == "NOT_FOUND"
    denied = embedded_api.post(train, {"product": "PRD-DRIVE"}, role=Role.INSPECTOR)
    assert _code(denied) == "FORBIDDEN"
    trained = embedded_api.data(train, {"product": "PRD-DRIVE"}, role=Role.ENGINEER)
    assert trained["trainDefectModel"]["metrics"]["nTrain"] > 0
    assert embedded_api.access.audit(1)[0].operation == "trainDefectModel"
    got = embedded_api.data(risk, ask)["batchRisk"]["batches"]
    assert [b["batch"] for b in got] == batches[-2:]
    assert all(0.0 <= b["probability"] <= 1.0 for b in got)


def test_machine_window_recall_over_http(api: Api) -> None:
    query = (GRAPHQL_DIR / "operations" / "recall_scope.graphql").read_text()
    got = api.data(query, _variables(api, "_machine"))["recallScope"]
    assert set(api.plant.truth["causes"][1]["runs"]) <= set(got["triggers"])


def test_pages_follow_their_cursors_without_gaps(api: Api) -> None:
    lot = api.plant.truth["causes"][0]["uid"]
    query = (GRAPHQL_DIR / "operations" / "recall_scope.graphql").read_text()
    seen, after = [], None
    while True:
        page = api.data(query, {"input": {"lot": lot}, "first": 150, "after": after})
        units = page["recallScope"]["units"]
        seen += [e["node"]["uid"] for e in units["edges"]]
        if not units["pageInfo"]["hasNextPage"]:
            break
        after = units["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == units["totalCount"]


def test_a_page_of_units_costs_one_node_lookup_not_one_per_unit(api: Api) -> None:
    lot = api.plant.truth["causes"][0]["uid"]
    query = (GRAPHQL_DIR / "operations" / "recall_scope.graphql").read_text()
    before = api.store.get_many_calls
    data = api.data(query, {"input": {"lot": lot}, "first": 200})
    assert len(data["recallScope"]["units"]["edges"]) == 200
    # one batch for the 200 units, one for the customers (they resolve in separate ticks)
    assert api.store.get_many_calls - before <= 2


# --- auth and audit --------------------------------------------------------------------------


ENTITY = "query($uid: String!) { entity(uid: $uid) { uid } }"
HOLD = (GRAPHQL_DIR / "operations" / "hold_batch.graphql").read_text()


def _code(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])


def test_no_key_or_a_wrong_key_is_unauthenticated(embedded_api: Api) -> None:
    uid = embedded_api.plant.nodes["Unit"].columns["uid"][0]
    assert _code(embedded_api.post(ENTITY, {"uid": uid}, role=None)) == "UNAUTHENTICATED"
    wrong = embedded_api.post(ENTITY, {"uid": uid}, token="sqems_0000_nope")
    assert _code(wrong) == "UNAUTHENTICATED"


def test_a_revoked_key_stops_working(embedded_api: Api) -> None:
    key, token = embedded_api.access.create_key("temporary", Role.VIEWER)
    uid = embedded_api.plant.nodes["Unit"].columns["uid"][0]
    assert "errors" not in embedded_api.post(ENTITY, {"uid": uid}, token=token)
    embedded_api.access.revoke(key.id)
    assert _code(embedded_api.post(ENTITY, {"uid": uid}, token=token)) == "UNAUTHENTICATED"


def test_a_mutation_needs_its_role_and_every_attempt_is_audited(embedded_api: Api) -> None:
    batch = embedded_api.plant.nodes["Batch"].columns["uid"][3]
    denied = embedded_api.post(HOLD, {"uid": batch, "reason": "check"}, role=Role.INSPECTOR)
    assert _code(denied) == "FORBIDDEN"
    done = embedded_api.data(HOLD, {"uid": batch, "reason": "suspect lot"}, role=Role.ENGINEER)
    assert done["holdBatch"]["status"] == "ON_HOLD"
    log = embedded_api.access.audit(2)
    assert [(e.operation, e.outcome, e.role) for e in log] == [
        ("holdBatch", "ok", "engineer"),
        ("holdBatch", "denied: FORBIDDEN", "inspector"),
    ]
    assert log[0].arguments == {"uid": batch, "reason": "suspect lot"}
    assert log[0].key_name == "test engineer"


def test_admin_can_mint_a_key_that_then_works(embedded_api: Api) -> None:
    minted = embedded_api.data(
        (GRAPHQL_DIR / "operations" / "create_api_key.graphql").read_text(),
        {"name": "dashboard", "role": "VIEWER"}, role=Role.ADMIN,
    )["createApiKey"]  # fmt: skip
    uid = embedded_api.plant.nodes["Unit"].columns["uid"][0]
    body = embedded_api.post(ENTITY, {"uid": uid}, token=minted["token"])
    assert body["data"]["entity"]["uid"] == uid
    assert "token" not in json.dumps([e.arguments for e in embedded_api.access.audit(5)])


# --- errors and limits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        (ENTITY, {"uid": "SN-NOPE"}, "NOT_FOUND"),
        ("query($id: ID!) { node(id: $id) { uid } }", {"id": "not-an-id"}, "VALIDATION_FAILED"),
        ("{ genealogy(uid: \"SN-B0000001\", depth: 1000) { start } }", {}, "VALIDATION_FAILED"),
        ("{ trace(unit: \"WO-PCB-00001\") { start } }", {}, "VALIDATION_FAILED"),
        ("{ recallScope(input: {lot: \"WO-PCB-00001\"}) { source } }", {}, "VALIDATION_FAILED"),
        ("{ recallScope(input: {machine: {uid: \"M-REFLOW-2\", window: "
         "{start: \"2026-03-02T00:00:00Z\", end: \"2026-03-01T00:00:00Z\"}}}) { source } }", {},
         "VALIDATION_FAILED"),
        ("{ recallScope(input: {batch: \"WO-PCB-00001\"}) "
         "{ units(first: 100000) { totalCount } } }", {}, "VALIDATION_FAILED"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_typed_error(
    embedded_api: Api, query: str, variables: dict[str, Any], code: str
) -> None:
    body = embedded_api.post(query, variables)
    assert _code(body) == code
    assert body["errors"][0]["message"]


def test_a_recall_input_must_name_exactly_one_source(embedded_api: Api) -> None:
    body = embedded_api.post('{ recallScope(input: {lot: "A", batch: "B"}) { source } }')
    assert "exactly one" in body["errors"][0]["message"].lower()


@pytest.mark.parametrize(
    "query",
    [
        "{ entity(uid: \"X\") { neighbours(type: \"PRODUCED\") { edges { node {"
        + " neighbours(type: \"PRODUCED\") { edges { node {" * 5 + " uid " + "} } }" * 5
        + " } } } } }",
        "{ " + " ".join(f"a{i}: entity(uid: \"X\") {{ uid }}" for i in range(40)) + " }",
        "{ entity(uid: \"X\") { " + " ".join(["uid"] * 2_500) + " } }",
    ],
    ids=["depth", "aliases", "tokens"],
)  # fmt: skip
def test_abusive_queries_are_refused_before_they_run(embedded_api: Api, query: str) -> None:
    body = embedded_api.post(query)
    assert body.get("data") is None
    assert body["errors"]


def _fragment_bomb(levels: int) -> str:
    """1 KB that validation used to expand into 2**levels fields, for minutes."""
    chain = "\n".join(
        f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)
    )
    return f"query {{ ...F{levels} }}\nfragment F0 on Query {{ __typename }}\n{chain}"


def test_a_fragment_bomb_is_refused_before_validation_and_the_api_stays_up(
    embedded_api: Api,
) -> None:
    bomb = _fragment_bomb(24)
    assert len(bomb) < 1_100
    body = embedded_api.post(bomb)
    assert body.get("data") is None and _code(body) == "GRAPHQL_INVALID"
    assert "16,777,216 fields once its fragments are expanded" in body["errors"][0]["message"]
    assert httpx.get(f"{embedded_api.url}/healthz").json() == {"status": "ok"}
    # fragments a real client shares are fine
    shared = (
        'query { a: entity(uid: "SN-B0000001") { ...U } b: entity(uid: "SN-B0000001") {'
        " ...U } } fragment U on Node { uid label }"
    )
    assert "errors" not in embedded_api.post(shared)


def test_the_expanded_size_counts_each_fragment_once_and_ignores_cycles() -> None:
    assert expanded_fields(parse(_fragment_bomb(3))) == 8
    assert expanded_fields(parse(_fragment_bomb(200))) == 2**200  # sized in linear time
    inline = '{ entity(uid: "X") { uid ... on Node { label } } }'
    assert expanded_fields(parse(inline)) == 3
    cycle = "{ ...A } fragment A on Query { ...B __typename } fragment B on Query { ...A }"
    assert expanded_fields(parse(cycle)) == 1  # validation refuses the cycle itself
    assert expanded_fields(parse("{ ...Nowhere }")) == 0


def test_an_unexpected_failure_is_masked(plant: Plant, tmp_path: Path) -> None:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    for api in _start(store, plant, tmp_path):
        store._db.close()  # the store breaks under the running server
        body = api.post(ENTITY, {"uid": "SN-B0000001"})
        assert body["errors"][0]["extensions"]["code"] == "INTERNAL_ERROR"
        assert "closed" not in json.dumps(body).lower()
        ready = httpx.get(f"{api.url}/readyz")
        assert ready.status_code in (200, 503)


def test_health_readiness_and_request_ids(embedded_api: Api) -> None:
    assert httpx.get(f"{embedded_api.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{embedded_api.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    echoed = httpx.get(f"{embedded_api.url}/healthz", headers={"x-request-id": "abc123"})
    assert echoed.headers["x-request-id"] == "abc123"
    assert (
        httpx.get(f"{embedded_api.url}/graphql", headers={"accept": "text/html"}).status_code == 200
    )


def test_a_request_over_the_time_limit_is_stopped(plant: Plant, tmp_path: Path) -> None:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    lot = plant.truth["causes"][0]["uid"]
    query = (GRAPHQL_DIR / "operations" / "recall_scope.graphql").read_text()
    for api in _start(store, plant, tmp_path, api_request_timeout_s=0.000_5):
        response = httpx.post(f"{api.url}/graphql", json={"query": query, "variables": {
            "input": {"lot": lot}, "first": 500}},
            headers={"Authorization": f"Bearer {api.tokens[Role.VIEWER]}"})  # fmt: skip
        assert response.status_code == 504
        assert response.json()["errors"][0]["extensions"]["code"] == "TIMEOUT"
    store.close()


def test_a_timed_out_request_stops_its_worker_thread(plant: Plant, tmp_path: Path) -> None:
    """The 504 comes at the time limit, and the export behind it stops at its next
    deadline check instead of burning a core for the seconds it would have taken."""
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    query = (GRAPHQL_DIR / "operations" / "export_rdf.graphql").read_text()
    for api in _start(store, plant, tmp_path, api_request_timeout_s=0.5):
        began = time.monotonic()
        response = httpx.post(f"{api.url}/graphql", json={"query": query, "variables": {
            "scope": {"whole": True}, "format": "TURTLE"}},
            headers={"Authorization": f"Bearer {api.tokens[Role.VIEWER]}"}, timeout=60)  # fmt: skip
        answered = time.monotonic() - began
        assert response.status_code == 504, response.text
        assert answered < 2.0  # the whole export takes about 5 s
        time.sleep(0.3)
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(1.0)
        burnt = (time.process_time() - cpu) / (time.monotonic() - wall)
        assert burnt < 0.3, f"the process still used {burnt:.0%} of a core after the 504"
    store.close()


def test_validation_has_its_own_time_limit(plant: Plant, tmp_path: Path) -> None:
    store = EmbeddedGraphStore(None)
    for api in _start(store, plant, tmp_path, api_validation_timeout_s=1e-6):
        body = api.post('{ entity(uid: "X") { uid label } }')
        assert body.get("data") is None and _code(body) == "GRAPHQL_INVALID"
        assert "validating the document took longer than 1e-06 s" in body["errors"][0]["message"]
    store.close()


def test_concurrent_reads_and_writes_stay_consistent(embedded_api: Api) -> None:
    lot = embedded_api.plant.truth["causes"][0]["uid"]
    batches = embedded_api.plant.nodes["Batch"].columns["uid"][:6]
    recall = (GRAPHQL_DIR / "operations" / "recall_scope.graphql").read_text()
    release = (GRAPHQL_DIR / "operations" / "release_batch.graphql").read_text()

    def work(i: int) -> dict[str, Any]:
        if i % 3 == 0:
            return embedded_api.post(HOLD, {"uid": batches[i % 6], "reason": "r"}, Role.ENGINEER)
        if i % 3 == 1:
            return embedded_api.post(release, {"uid": batches[i % 6], "reason": "r"},
                                     Role.ENGINEER)  # fmt: skip
        return embedded_api.post(recall, {"input": {"lot": lot}, "first": 100})

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(work, range(120)))
    for body in answers:
        for error in body.get("errors", []):
            assert error["extensions"]["code"] == "VALIDATION_FAILED", error  # release of a
            # batch that is not on hold at that moment
    counts = {a["data"]["recallScope"]["counts"]["units"] for a in answers
              if a.get("data") and a["data"].get("recallScope")}  # fmt: skip
    assert len(counts) == 1


def test_the_quarantine_is_paged_from_its_store(plant: Plant, tmp_path: Path) -> None:
    """Pages follow the entries' ids, so the server reads one page, not the whole
    quarantine; an entry replayed with success leaves the open view."""
    kept = Quarantine(tmp_path / QUARANTINE_FILE)
    kept.add(NewEntry(f"mqtt:sqems/v1/S/L/M/P{i}", f"reason {i}", b"{") for i in range(7))
    ids = [e.id for e in kept.entries(limit=10)]
    kept.mark_replayed(ids[2], "accepted")
    kept.close()
    store = EmbeddedGraphStore(None)
    query = (GRAPHQL_DIR / "operations" / "quarantine.graphql").read_text()
    for api in _start(store, plant, tmp_path):
        seen: list[int] = []
        after, pages = None, 0
        while True:
            page = api.data(query, {"first": 3, "after": after})["quarantine"]
            assert page["totalCount"] == 6
            seen += [int(e["node"]["id"]) for e in page["edges"]]
            pages += 1
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert (seen, pages) == ([i for i in ids if i != ids[2]], 2)
        everything = api.data(query, {"first": 50, "includeReplayed": True})["quarantine"]
        assert everything["totalCount"] == 7
        bad = api.post(query, {"first": 3, "after": "bm90LWEta2V5"})
        assert bad["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED"
    store.close()


def test_a_revoked_key_loses_its_open_subscription(
    plant: Plant, tmp_path: Path, mosquitto: Broker
) -> None:
    store = EmbeddedGraphStore(None)
    for api in _start(store, plant, tmp_path, ingest=True, mqtt_host=mosquitto.host,
                      mqtt_port=mosquitto.port, mqtt_client_id="sqems-api-revoke",
                      api_subscription_recheck_s=0.2):  # fmt: skip
        key, token = api.access.create_key("wall screen", Role.VIEWER)
        url = api.url.replace("http://", "ws://") + "/graphql"
        with connect(url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                     additional_headers={"Authorization": f"Bearer {token}"}) as ws:  # fmt: skip
            ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(ws.recv(10))["type"] == "connection_ack"
            query = (GRAPHQL_DIR / "operations" / "alarms.graphql").read_text()
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            with pytest.raises(TimeoutError):
                ws.recv(0.6)  # open, waiting for alarms
            api.access.revoke(key.id)
            closing = json.loads(ws.recv(5))
            assert closing["type"] == "next" and closing["id"] == "1"
            error = closing["payload"]["errors"][0]
            assert error["extensions"]["code"] == "UNAUTHENTICATED"
            assert "revoked" in error["message"]
            assert json.loads(ws.recv(5)) == {"id": "1", "type": "complete"}
    store.close()


# --- requests the API cannot read, paths, pages' headers ------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'"hello"', b"42", b"null", b"\xff\xfe{", b"[" * 10_000 + b"]" * 10_000, b"{"],
    ids=["string", "number", "null", "not-utf8", "deep-arrays", "truncated"],
)
def test_a_body_that_is_not_a_graphql_request_gets_a_typed_400(
    embedded_api: Api, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = httpx.post(f"{embedded_api.url}/graphql", content=body,
                              headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_REQUEST" and "JSON" in error["message"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("query", "operation"),
    [
        ("subscription { alarms { uid } }", None),
        ("query A { __typename } subscription B { alarms { uid } }", "B"),
    ],
    ids=["anonymous", "named"],
)
def test_a_subscription_over_http_gets_a_typed_400_naming_the_websocket(
    embedded_api: Api, query: str, operation: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = httpx.post(
            f"{embedded_api.url}/graphql",
            json={"query": query, "operationName": operation},
            headers={"authorization": f"Bearer {embedded_api.tokens[Role.VIEWER]}"},
        )
    assert response.status_code == 400, response.text
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_REQUEST" and "WebSocket" in error["message"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    # the query beside it in the same document still runs
    answered = httpx.post(
        f"{embedded_api.url}/graphql",
        json={"query": query, "operationName": "A"} if operation else {"query": "{ __typename }"},
        headers={"authorization": f"Bearer {embedded_api.tokens[Role.VIEWER]}"},
    )
    assert answered.json() == {"data": {"__typename": "Query"}}


def test_no_filesystem_path_reaches_a_client(plant: Plant, tmp_path: Path) -> None:
    store = EmbeddedGraphStore(tmp_path / "graph.db")
    for api in _start(store, plant, tmp_path):
        ready = httpx.get(f"{api.url}/readyz").json()
        assert ready["store"] == "embedded at graph.db"
        body = api.post('{ genealogy(uid: "SN-NOPE") { start } }')
        assert _code(body) == "NOT_FOUND"
        assert body["errors"][0]["message"] == (
            "SN-NOPE is not in the graph (store: embedded at graph.db)"
        )
        assert str(tmp_path) not in json.dumps(body) + json.dumps(ready)
    store.close()


def test_pages_carry_a_content_security_policy_and_refuse_framing(embedded_api: Api) -> None:
    for path in ("/viewer", "/dashboard", "/investigate", "/graphql"):
        page = httpx.get(f"{embedded_api.url}{path}", headers={"accept": "text/html"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
    viewer = httpx.get(f"{embedded_api.url}/viewer")
    inline = viewer.text.split('<script type="importmap">')[1].split("</script>")[0]
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in viewer.headers["content-security-policy"]
    api_answer = httpx.get(f"{embedded_api.url}/healthz")
    assert api_answer.headers["x-content-type-options"] == "nosniff"


def test_a_change_that_outlives_its_request_is_audited_as_it_ended(
    plant: Plant, tmp_path: Path
) -> None:
    """A request that times out while its change runs gets its 504 once the change is
    done, and the audit log says the change was made (it said INTERNAL_ERROR while the
    abandoned thread went on to make it)."""
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    train = (GRAPHQL_DIR / "operations" / "train_defect_model.graphql").read_text()
    for api in _start(store, plant, tmp_path, api_request_timeout_s=0.2):
        # the document parsed and validated, so the time runs out during the training
        assert _code(api.post(train, {"product": "PRD-DRIVE"}, Role.INSPECTOR)) == "FORBIDDEN"
        engineer = {"Authorization": f"Bearer {api.tokens[Role.ENGINEER]}"}
        body = {"query": train, "variables": {"product": "PRD-DRIVE"}}
        response = httpx.post(f"{api.url}/graphql", json=body, headers=engineer, timeout=60)
        assert response.status_code == 504
        last = api.access.audit(1)[0]
        assert (last.operation, last.outcome) == ("trainDefectModel", "ok")
        model = api.post('{ defectModel(product: "PRD-DRIVE") { product } }')
        assert model["data"]["defectModel"]["product"] == "PRD-DRIVE"
    store.close()
