"""The viewer over HTTP: IFC uploads (GraphQL multipart) with their size limit and role
check, the glTF and three.js routes, and typed errors for bad requests."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer

from sqems.analysis.rules import RULES
from sqems.datasets.building import write_building_ifc
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import Line, Machine
from sqems.graph_model.store import Edge
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings
from sqems.viewer import gltf
from sqems.viewer.scene import COLOURS

OPERATIONS = Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations"
IMPORT = (OPERATIONS / "import_bim.graphql").read_text()
LIMIT = 64 * 1024
MACHINES = [Machine(uid=f"M-{i}", name=f"Machine {i}", x_m=5.0 * i) for i in range(3)]


@dataclass
class Served:
    url: str
    tokens: dict[Role, str]
    access: AccessStore
    store: GraphStore
    data: Path

    def headers(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def upload(
        self, content: bytes, role: Role = Role.ENGINEER, name: str = "hall.ifc", **variables: Any
    ) -> httpx.Response:
        operations = {"query": IMPORT, "variables": {"file": None, **variables}}
        return httpx.post(
            f"{self.url}/graphql",
            data={
                "operations": json.dumps(operations),
                "map": json.dumps({"0": ["variables.file"]}),
            },
            files={"0": (name, content, "application/octet-stream")},
            headers=self.headers(role),
            timeout=60,
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("viewer-api")
    store = EmbeddedGraphStore(None)
    store.upsert_nodes([Line(uid="LINE-1", name="Line 1"), *MACHINES])
    store.upsert_edges([Edge("PART_OF", m.uid, "LINE-1") for m in MACHINES])
    access = AccessStore(None)
    tokens = {role: access.create_key(role.label, role)[1] for role in Role}
    settings = Settings(data_dir=data, bim_max_bytes=LIMIT, viewer_assets=data / "no-node-modules")
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Served(server.url, tokens, access, store, data)
    access.close()
    store.close()


@pytest.fixture(scope="module")
def hall(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_building_ifc(tmp_path_factory.mktemp("hall") / "hall.ifc", MACHINES)
    content = path.read_bytes()
    assert len(content) < LIMIT
    return content


def test_an_uploaded_ifc_model_is_imported_linked_and_served_as_gltf(
    served: Served, hall: bytes
) -> None:
    response = served.upload(hall, name="Hall A.ifc")
    body = response.json()
    assert "errors" not in body, body
    result = body["data"]["importBim"]
    model = result["model"]
    assert (model["fileName"], model["ifcSchema"], result["linked"]) == ("Hall A.ifc", "IFC4", 3)
    assert {link["machine"] for link in model["links"]} == {m.uid for m in MACHINES}
    assert not list((served.data / "bim" / "incoming").iterdir())  # the copy is gone

    glb = httpx.get(f"{served.url}{model['glbUrl']}", headers=served.headers(Role.VIEWER))
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    kept = served.data / "glb-from-api.glb"
    kept.write_bytes(glb.content)
    assert len(gltf.read_elements(kept)) == model["elementCount"]

    again = served.upload(hall).json()["data"]["importBim"]
    assert again["cached"] and again["model"]["uid"] == model["uid"]

    listed = httpx.post(
        f"{served.url}/graphql",
        json={"query": (OPERATIONS / "bim_model.graphql").read_text(),
              "variables": {"uid": model["uid"], "first": 2}},
        headers=served.headers(Role.VIEWER),
    ).json()["data"]["bimModel"]  # fmt: skip
    assert listed["elements"]["totalCount"] == model["elementCount"]
    assert len(listed["elements"]["edges"]) == 2 and listed["elements"]["pageInfo"]["hasNextPage"]


VIEWER_BIM = """query ($uid: String!) {
  bimModel(uid: $uid) {
    links { machine element }
    machines { uid name bimElement batches overlay { status colour }
               parameters { uid } alarms { rule ruleTitle } }
  }
  spcRules { name title description }
}"""


def test_a_bim_model_gives_its_machines_status_and_the_rules_in_words(
    served: Served, hall: bytes
) -> None:
    uid = served.upload(hall).json()["data"]["importBim"]["model"]["uid"]
    body = httpx.post(
        f"{served.url}/graphql",
        json={"query": VIEWER_BIM, "variables": {"uid": uid}},
        headers=served.headers(Role.VIEWER),
    ).json()
    assert "errors" not in body, body
    model = body["data"]["bimModel"]
    element_of = {link["machine"]: link["element"] for link in model["links"]}
    machines = model["machines"]
    assert [m["uid"] for m in machines] == sorted(element_of)
    for m in machines:
        # nothing ran on these machines: grey, and nothing to chart, trace or recall
        assert m["bimElement"] == element_of[m["uid"]]
        assert m["overlay"] == {"status": "IDLE", "colour": COLOURS["idle"]}
        assert (m["parameters"], m["alarms"], m["batches"]) == ([], [], [])
    rules = {r["name"]: r for r in body["data"]["spcRules"]}
    assert set(rules) == set(RULES)
    assert rules["nelson_1"]["title"] == "One point beyond 3 sigma"
    assert all(r["title"] and r["description"] for r in rules.values())


def test_the_glb_route_needs_a_key_and_a_known_model(served: Served, hall: bytes) -> None:
    uid = served.upload(hall).json()["data"]["importBim"]["model"]["uid"]
    anonymous = httpx.get(f"{served.url}/viewer/bim/{uid}.glb")
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    unknown = httpx.get(f"{served.url}/viewer/bim/BIM-0.glb", headers=served.headers(Role.VIEWER))
    assert unknown.status_code == 404 and "BIM-0 is not in the graph" in unknown.text


def test_an_upload_over_the_limit_is_refused_with_413_and_nothing_is_stored(
    served: Served,
) -> None:
    before = served.store.count("BimModel")
    response = served.upload(b"ISO-10303-21;" + b" " * (LIMIT + 70_000))
    assert response.status_code == 413
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "VALIDATION_FAILED"
    assert "over the limit of 0.1 MiB" in error["message"] and "Traceback" not in response.text
    assert served.store.count("BimModel") == before


def test_a_file_just_over_the_limit_is_refused_by_the_import_itself(served: Served) -> None:
    response = served.upload(b"ISO-10303-21;" + b" " * LIMIT)  # within the form's slack
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "VALIDATION_FAILED"
    assert "upload hall.ifc is over the limit" in error["message"]


def test_a_bad_file_is_refused_with_the_reason_and_the_attempt_is_audited(served: Served) -> None:
    response = served.upload(b"solid cube\nendsolid\n", name="cube.stl")
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "VALIDATION_FAILED"
    assert error["message"].startswith("cube.stl is not an IFC file")
    last = served.access.audit(1)[0]
    assert (last.operation, last.outcome) == ("importBim", "failed: VALIDATION_FAILED")
    assert last.arguments["file"] == "cube.stl"


def test_only_an_engineer_may_import(served: Served, hall: bytes) -> None:
    refused = served.upload(hall, role=Role.INSPECTOR)
    assert refused.status_code == 403  # before the file was read
    assert refused.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    last = served.access.audit(1)[0]
    assert (last.operation, last.outcome) == ("importBim", "denied: FORBIDDEN")
    assert last.role == "inspector"


def test_the_page_is_served_and_a_missing_three_js_is_named(served: Served) -> None:
    page = httpx.get(f"{served.url}/viewer")
    assert page.status_code == 200 and "/viewer/app/viewer.js" in page.text
    assert httpx.get(f"{served.url}/viewer/app/viewer.js").status_code == 200
    assert httpx.get(f"{served.url}/viewer/app/secret.txt").status_code == 404
    missing = httpx.get(f"{served.url}/viewer/vendor/three/build/three.module.js")
    assert missing.status_code == 503 and "npm ci" in missing.json()["errors"][0]["message"]


def test_three_js_is_served_from_node_modules_and_nothing_else_is(
    tmp_path: Path,
) -> None:
    modules = tmp_path / "node_modules"
    (modules / "three" / "build").mkdir(parents=True)
    (modules / "three" / "build" / "three.module.js").write_text("export const REVISION = '1';")
    (modules / "three" / "package.json").write_text("{}")
    (tmp_path / "secret").write_text("no")
    settings = Settings(data_dir=tmp_path / "data", viewer_assets=modules)
    store = EmbeddedGraphStore(None)
    access = AccessStore(None)
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        ok = httpx.get(f"{server.url}/viewer/vendor/three/build/three.module.js")
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/javascript")
        for path in ("package.json", "build/../../../secret", "build/%2e%2e/%2e%2e/secret"):
            assert httpx.get(f"{server.url}/viewer/vendor/three/{path}").status_code == 404
    access.close()
    store.close()


def test_a_json_request_over_a_megabyte_is_refused(served: Served) -> None:
    response = httpx.post(
        f"{served.url}/graphql",
        json={"query": '{ lineScene(line: "LINE-1") { uid } }', "padding": "x" * (1 << 20)},
        headers=served.headers(Role.VIEWER),
    )
    assert response.status_code == 413


def test_line_scene_errors_are_typed(served: Served) -> None:
    body = httpx.post(
        f"{served.url}/graphql",
        json={"query": (OPERATIONS / "line_scene.graphql").read_text(),
              "variables": {"line": "LINE-1", "scenario": "SCN-NONE"}},
        headers=served.headers(Role.VIEWER),
    ).json()  # fmt: skip
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert body["errors"][0]["message"] == "scenario SCN-NONE is not in the graph"


def test_a_file_sent_as_a_plain_value_is_refused_with_how_to_send_it(served: Served) -> None:
    body = httpx.post(
        f"{served.url}/graphql",
        json={"query": IMPORT, "variables": {"file": "hall.ifc"}},
        headers=served.headers(Role.ENGINEER),
    ).json()
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED"
    assert "multipart request" in body["errors"][0]["message"]


# --- the upload limits are an engineer's, for importBim only --------------------------------

SCENE = '{ lineScene(line: "LINE-1") { uid } }'
BOUNDARY = "sqems-test-boundary"


def _form(operations: dict[str, Any], file: bytes) -> bytes:
    """A GraphQL multipart request body: operations, map, then the file."""
    parts = [
        ("operations", json.dumps(operations).encode(), ""),
        ("map", json.dumps({"0": ["variables.file"]}).encode(), ""),
        ("0", file, '; filename="hall.ifc"'),
    ]
    body = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'.encode()
        + content + b"\r\n"
        for name, content, extra in parts
    )  # fmt: skip
    return body + f"--{BOUNDARY}--\r\n".encode()


def _raw_post(url: str, head: dict[str, str], body: bytes, wait_s: float = 5.0) -> bytes:
    """Send the request line, the headers and ``body`` (possibly less than the length
    the headers declare) and read what the server answers within ``wait_s``."""
    host, port = url.removeprefix("http://").split(":")
    lines = ["POST /graphql HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in head.items())]
    with socket.create_connection((host, int(port)), timeout=wait_s) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            return conn.recv(65536)
        except TimeoutError:
            return b""


def test_a_multipart_request_without_an_uploading_key_is_refused_before_its_body(
    served: Served, hall: bytes
) -> None:
    body = _form({"query": IMPORT, "variables": {"file": None}}, hall)
    head = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(len(body))}  # fmt: skip
    # only the first 2 KB are sent (the operation and a little of the file): the answer
    # must not wait for the rest
    anonymous = _raw_post(served.url, head, body[:2048])
    assert anonymous.startswith(b"HTTP/1.1 401"), anonymous[:200]
    assert b'"code": "UNAUTHENTICATED"' in anonymous or b'"code":"UNAUTHENTICATED"' in anonymous
    viewer = _raw_post(served.url, {**head, **served.headers(Role.VIEWER)}, body[:2048])
    assert viewer.startswith(b"HTTP/1.1 403"), viewer[:200]
    last = served.access.audit(2)
    assert [(e.operation, e.outcome, e.role) for e in last] == [
        ("importBim", "denied: FORBIDDEN", "viewer"),
        ("upload", "denied: UNAUTHENTICATED", None),
    ]


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server with a short time limit and the default (256 MiB) upload limit."""
    data = tmp_path_factory.mktemp("viewer-api-strict")
    store = EmbeddedGraphStore(None)
    store.upsert_nodes([Line(uid="LINE-1", name="Line 1"), *MACHINES])
    store.upsert_edges([Edge("PART_OF", m.uid, "LINE-1") for m in MACHINES])
    access = AccessStore(None)
    tokens = {role: access.create_key(role.label, role)[1] for role in Role}
    settings = Settings(data_dir=data, api_request_timeout_s=1.0)
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Served(server.url, tokens, access, store, data)
    access.close()
    store.close()


def _slowly(body: bytes, seconds: float) -> Iterator[bytes]:
    pieces = 10
    size = -(-len(body) // pieces)
    for i in range(0, len(body), size):
        yield body[i : i + size]
        time.sleep(seconds / pieces)


def test_another_operation_sent_as_multipart_keeps_the_ordinary_limits(
    strict: Served, hall: bytes
) -> None:
    head = {**strict.headers(Role.ENGINEER),
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}  # fmt: skip
    # size: 2 MiB beside a query is over the 1 MiB of an ordinary request
    big = _form({"query": SCENE, "variables": {"file": None}}, b" " * (2 << 20))
    refused = httpx.post(f"{strict.url}/graphql", content=big, headers=head, timeout=30)
    assert refused.status_code == 413
    assert "over the limit of 1.0 MiB" in refused.json()["errors"][0]["message"]
    # time: a query whose body takes 2 s is stopped at the 1 s limit
    slow = _form({"query": SCENE, "variables": {"file": None}}, hall)
    stopped = httpx.post(f"{strict.url}/graphql", content=_slowly(slow, 2.0), headers=head,
                         timeout=30)  # fmt: skip
    assert stopped.status_code == 504
    assert stopped.json()["errors"][0]["extensions"]["code"] == "TIMEOUT"
    # while the upload itself may take its time
    upload = _form({"query": IMPORT, "variables": {"file": None}}, hall)
    imported = httpx.post(f"{strict.url}/graphql", content=_slowly(upload, 2.0), headers=head,
                          timeout=30)  # fmt: skip
    assert imported.status_code == 200, imported.text
    assert imported.json()["data"]["importBim"]["linked"] == 3
