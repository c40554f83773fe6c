"""The complaint investigation over the API, against a live server: the answer is the
domain's (complaint, causes with the significant ones first, recall, fix), a plant
where nothing stands out names no cause, and bad requests get typed errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer

from sqems.datasets import Plant, PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.neo4j_server import Neo4jServer
from sqems.graph_model.neo4j_store import Neo4jGraphStore
from sqems.graphql import AccessStore, Role, create_app
from sqems.investigation import investigate
from sqems.settings import Settings

QUERY = (
    Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations"
    / "investigation.graphql"
).read_text()  # fmt: skip


@dataclass
class Served:
    url: str
    plant: Plant
    store: GraphStore
    tokens: dict[Role, str]

    def post(self, variables: dict[str, Any], role: Role | None = Role.VIEWER) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        response = httpx.post(f"{self.url}/graphql", json={"query": QUERY, "variables": variables},
                              headers=headers, timeout=120)  # fmt: skip
        assert response.status_code == 200, response.text
        assert "Traceback" not in response.text
        body: dict[str, Any] = response.json()
        return body

    def investigation(self, complaint: str, **variables: Any) -> dict[str, Any]:
        body = self.post({"complaint": complaint, **variables})
        assert "errors" not in body, body["errors"]
        found: dict[str, Any] = body["data"]["investigation"]
        return found


@pytest.fixture(scope="module")
def plant() -> Plant:
    return generate(PlantSpec(units=6_000, seed=5))


@pytest.fixture(scope="module", params=["embedded", "neo4j"])
def served(
    request: pytest.FixtureRequest, plant: Plant, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(f"investigation-{request.param}")
    store: GraphStore
    if request.param == "embedded":
        store = EmbeddedGraphStore(None)
    else:
        server: Neo4jServer = request.getfixturevalue("neo4j_server")
        store = Neo4jGraphStore(server.uri, password=server.password())
        store.wipe()
    load_plant(store, plant_sections(plant))
    access = AccessStore(None)
    tokens = {role: access.create_key(role.label, role)[1] for role in Role}
    settings = Settings(data_dir=tmp, api_request_timeout_s=600)  # slow on Neo4j: see the report
    with LiveServer(create_app(settings, store=store, access=access)) as live:
        yield Served(live.url, plant, store, tokens)
    access.close()
    store.close()


def complaints_of(plant: Plant, defect_type: str) -> list[str]:
    edges = plant.edges["OF_TYPE"].columns
    return sorted(
        src
        for src, dst in zip(edges["src"], edges["dst"], strict=True)
        if dst == defect_type and src.startswith("CMP-")
    )


def planted(plant: Plant, kind: str) -> dict[str, Any]:
    return next(c for c in plant.truth["causes"] if c["kind"] == kind)


def camel(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k.split("_")[0] + "".join(w.title() for w in k.split("_")[1:]): camel(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value


def assert_same_as_the_domain(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["complaint"]["uid"] == want["complaint"]["uid"]
    assert got["complaint"]["unit"] == want["complaint"]["unit"]
    assert got["complaint"]["subassemblies"] == want["complaint"]["subassemblies"]
    counts = {c["label"]: c["count"] for c in got["complaint"]["genealogy"]["counts"]}
    assert counts == want["genealogy"]["counts"]
    assert got["analysis"]["note"] == want["analysis"]["note"]
    assert got["analysis"]["similarComplaints"] == want["analysis"]["similar_complaints"]
    assert [c["key"] for c in got["causes"]] == [c["factor"] for c in want["causes"]]
    assert [c["significant"] for c in got["causes"]] == [c["significant"] for c in want["causes"]]
    assert got["conclusion"] == want["conclusion"]
    assert got["leadingCause"] == want["leading_cause"]
    assert got["why"] == want["why"]
    assert got["notes"] == want["notes"]
    if want["recall"] is None:
        assert got["recall"] is None
    else:
        assert got["recall"]["counts"] == camel(want["recall"]["counts"])
        assert got["recall"]["batches"] == want["recall"]["batches"]
        assert [c["uid"] for c in got["recall"]["customers"]] == want["recall"]["customers"]
        units = got["recall"]["units"]
        assert units["totalCount"] == len(want["recall"]["units"])
        first = units["edges"][0]["node"]
        assert first["uid"] == want["recall"]["units"][0]["uid"]
        assert [s["uid"] for s in first["path"]] == [
            s["uid"] for s in want["recall"]["units"][0]["path"]
        ]
    basis = want["recall_basis"]
    assert (got["recallBasis"] or {}).get("explanation") == (basis or {}).get("explanation")
    if want["fix"] is None:
        assert got["fix"] is None
    else:
        assert got["fix"]["line"] == want["fix"]["line"]
        assert got["fix"]["changes"] == camel(want["fix"]["changes"])


def test_a_shift_complaint_is_put_down_to_the_planted_shift_with_its_recall_and_fix(
    served: Served,
) -> None:
    truth = planted(served.plant, "shift")
    step, shift = truth["step"], truth["uid"]
    # the latest complaint of the defect type: the most cases in its lookback window
    complaint = complaints_of(served.plant, truth["defect_type"])[-1]
    got = served.investigation(complaint)
    assert_same_as_the_domain(got, investigate(served.store, complaint).as_dict())

    assert got["complaint"]["defectType"]["uid"] == truth["defect_type"]
    assert got["complaint"]["defectType"]["category"] == "MAN"
    assert got["analysis"]["widened"] is True
    significant = [c["significant"] for c in got["causes"]]
    assert significant[0] and significant == sorted(significant, reverse=True)
    assert got["leadingCause"] == f"shift:{shift}@{step}" == got["causes"][0]["key"]
    assert [w["label"] for w in got["why"]][:2] == ["Complaint", "Unit"]
    assert got["why"][0]["uid"] == complaint and got["why"][-1]["label"] == "ProcessRun"
    leading = got["causes"][0]["evidence"]
    assert leading["riskRatioLow"] > 1.0 and leading["qValue"] < got["analysis"]["alpha"]
    assert got["recallBasis"]["basis"] == "shift"
    assert got["recall"]["counts"]["batches"] > 0 and got["recall"]["counts"]["customers"] > 0
    assert got["fix"]["line"] == "LINE-ASM"
    changes = got["fix"]["changes"]["stepShifts"]
    assert [c["step"] for c in changes] == [step] and shift not in changes[0]["shifts"]


def test_a_lot_complaint_recalls_every_unit_of_the_planted_lot(served: Served) -> None:
    truth = planted(served.plant, "material_lot")
    complaint = complaints_of(served.plant, truth["defect_type"])[-1]
    got = served.investigation(complaint, units=5)
    assert_same_as_the_domain(got, investigate(served.store, complaint).as_dict())
    assert got["leadingCause"] == f"material_lot:{truth['uid']}"
    assert got["recallBasis"]["basis"] == "lot"
    assert got["recall"]["counts"]["units"] == truth["exposed_units"]
    assert len(got["recall"]["units"]["edges"]) == 5
    assert got["fix"]["changes"] == {"lots": [{"lot": truth["uid"]}]}


def test_where_nothing_stands_out_no_factor_is_called_a_cause(served: Served) -> None:
    planted_types = {c["defect_type"] for c in served.plant.truth["causes"]}
    other = sorted(
        c
        for t in served.plant.nodes["DefectType"].columns["uid"]
        if t not in planted_types
        for c in complaints_of(served.plant, t)
    )
    assert other, "the plant has complaints of an unplanted defect type"
    got = served.investigation(other[-1])
    assert_same_as_the_domain(got, investigate(served.store, other[-1]).as_dict())
    assert got["causes"] and not any(c["significant"] for c in got["causes"])
    assert got["leadingCause"] is None and got["recall"] is None and got["fix"] is None
    assert got["conclusion"].startswith("no factor stands out")


# --- errors and roles ------------------------------------------------------------------------


def _error(body: dict[str, Any]) -> tuple[str, str]:
    assert body.get("data") is None
    error = body["errors"][0]
    return error["extensions"]["code"], error["message"]


def test_an_unknown_complaint_is_not_found(served: Served) -> None:
    code, message = _error(served.post({"complaint": "CMP-NOPE"}))
    assert code == "NOT_FOUND" and "CMP-NOPE" in message


def test_a_uid_that_is_not_a_complaint_is_refused(served: Served) -> None:
    unit = served.plant.nodes["Unit"].columns["uid"][0]
    code, message = _error(served.post({"complaint": unit}))
    assert code == "VALIDATION_FAILED" and f"{unit} is a Unit, not a Complaint" in message


@pytest.mark.parametrize(("variables", "words"), [
    ({"lookbackDays": 0}, "lookback must be a positive number of days"),
    ({"top": 0}, "top must be between 1"),
])  # fmt: skip
def test_bad_arguments_get_a_typed_error(
    served: Served, variables: dict[str, Any], words: str
) -> None:
    complaint = served.plant.nodes["Complaint"].columns["uid"][0]
    code, message = _error(served.post({"complaint": complaint, **variables}))
    assert code == "VALIDATION_FAILED" and words in message


def test_a_viewer_may_investigate_and_no_key_may_not(served: Served) -> None:
    complaint = served.plant.nodes["Complaint"].columns["uid"][0]
    assert served.investigation(complaint)["complaint"]["uid"] == complaint
    code, _ = _error(served.post({"complaint": complaint}, role=None))
    assert code == "UNAUTHENTICATED"
