"""The Neo4j backend against a real Neo4j Community server: connection errors, schema
migrations, Cypher safety, identical traceability answers, and migration both ways.

(The shared conformance suite also runs on Neo4j through ``BACKENDS`` in conftest.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import NEO4J_LIB

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.errors import GraphUnavailable, ValidationFailed
from sqems.graph_model import (
    EmbeddedGraphStore,
    GraphStore,
    RecallSource,
    SourceKind,
    TimeWindow,
    Traceability,
)
from sqems.graph_model.migrate import copy_store
from sqems.graph_model.neo4j_server import Neo4jServer, free_port
from sqems.graph_model.neo4j_store import MIGRATIONS, Neo4jGraphStore
from sqems.graph_model.nodes import Supplier


@pytest.fixture
def neo4j(neo4j_server: Neo4jServer) -> Neo4jGraphStore:
    store = Neo4jGraphStore(neo4j_server.uri, password=neo4j_server.password(), batch_size=2_000)
    store.wipe()
    yield store
    store.close()


def test_an_unreachable_server_is_a_clear_error_not_a_hang() -> None:
    uri = f"bolt://127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(GraphUnavailable, match=f"cannot reach Neo4j at {uri}"):
        Neo4jGraphStore(uri, password="whatever", connect_timeout=2.0)
    assert time.monotonic() - began < 15


def test_wrong_credentials_are_named(neo4j_server: Neo4jServer) -> None:
    with pytest.raises(GraphUnavailable, match="refused the credentials of user 'neo4j'"):
        Neo4jGraphStore(neo4j_server.uri, password="not-the-password")


def test_migrations_are_recorded_and_applied_once(neo4j: Neo4jGraphStore) -> None:
    assert neo4j.migrate() == []
    versions = [
        r["v"] for r in neo4j._read("MATCH (m:SqemsMigration) RETURN m.version AS v ORDER BY v")
    ]
    assert versions == [v for v, _, _ in MIGRATIONS]
    names = {r["name"] for r in neo4j._read("SHOW CONSTRAINTS YIELD name RETURN name")}
    assert "sqems_entity_uid" in names


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.count("Unit) DETACH DELETE n //"),
        lambda s: s.count_edges("ON]->() DETACH DELETE r //"),
        lambda s: s.find("Unit`) DETACH DELETE n //"),
        lambda s: s.find("Unit", {"uid} DETACH DELETE n //": 1}),
    ],
)
def test_labels_types_and_keys_outside_the_model_never_reach_cypher(
    neo4j: Neo4jGraphStore, call
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationFailed):
        call(neo4j)


def test_values_travel_as_parameters(neo4j: Neo4jGraphStore) -> None:
    hostile = "x' }) DETACH DELETE n //"
    neo4j.upsert_nodes([Supplier(uid="SUP-1", name=hostile)])
    assert neo4j.get("SUP-1").name == hostile
    assert [n.uid for n in neo4j.find("Supplier", {"name": hostile})] == ["SUP-1"]


# --- the same plant on both backends ----------------------------------------------------


@pytest.fixture(scope="module")
def plant():  # type: ignore[no-untyped-def]
    return generate(PlantSpec(units=4_000, seed=21))


@pytest.fixture
def both(plant, neo4j: Neo4jGraphStore) -> tuple[GraphStore, GraphStore]:  # type: ignore[no-untyped-def]
    embedded = EmbeddedGraphStore(None)
    load_plant(embedded, plant_sections(plant))
    load_plant(neo4j, plant_sections(plant), batch_size=5_000)
    yield embedded, neo4j
    embedded.close()


def test_traceability_answers_are_identical_on_both_backends(plant, both) -> None:  # type: ignore[no-untyped-def]
    embedded, neo4j = both
    truth = plant.truth
    drift = truth["causes"][1]
    window = TimeWindow(
        datetime.fromisoformat(drift["window"]["start"]),
        datetime.fromisoformat(drift["window"]["end"]),
    )
    lots = plant.nodes["MaterialLot"].columns["uid"][::5]
    batches = plant.nodes["Batch"].columns["uid"][::7]
    sources = [RecallSource(SourceKind.LOT, u) for u in lots]
    sources += [RecallSource(SourceKind.BATCH, u) for u in batches]
    sources += [
        RecallSource(SourceKind.MACHINE, drift["uid"], window),
        RecallSource(SourceKind.MACHINE, "M-MOULD-1", window),
        RecallSource(SourceKind.PARAMETER, drift["parameter"]),
        RecallSource(SourceKind.PARAMETER, drift["parameter"], window),
    ]
    a, b = Traceability(embedded), Traceability(neo4j)
    for source in sources:
        assert a.recall_scope(source).as_dict() == b.recall_scope(source).as_dict(), source
    complaints = plant.nodes["Complaint"].columns["uid"]
    defects = plant.edges["FOUND_ON"].columns["dst"][::5]
    for uid in [*complaints, *defects]:
        assert a.upstream([uid]).as_dict() == b.upstream([uid]).as_dict(), uid
    assert embedded.get(complaints[0]) == neo4j.get(complaints[0])


# --- migration ---------------------------------------------------------------------------


def test_migration_round_trip_keeps_everything(plant, both, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    embedded, neo4j = both
    neo4j.wipe()
    report = copy_store(embedded, neo4j, page=1_500)
    assert report.total == embedded.count() + embedded.count_edges()
    with EmbeddedGraphStore(tmp_path / "back.db") as back:
        copy_store(neo4j, back, page=1_500)
        assert back.count() == embedded.count()
        assert back.count_edges() == embedded.count_edges()
        some = plant.nodes["Unit"].columns["uid"][::400]
        assert back.get_many(some) == embedded.get_many(some)
        recorded = embedded.edges(["P-REFLOW-PEAK"], {"RECORDED": "in"})  # type: ignore[dict-item]
        assert back.edges(["P-REFLOW-PEAK"], {"RECORDED": "in"}) == recorded  # type: ignore[dict-item]


class Interrupt(Exception):
    pass


def test_an_interrupted_migration_resumes_from_its_checkpoint(both, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    embedded, neo4j = both
    neo4j.wipe()
    checkpoint = tmp_path / "copy.json"
    seen = 0

    def stop_midway(_name: str, n: int) -> None:
        nonlocal seen
        seen += n
        if seen > 4_000:
            raise Interrupt

    with pytest.raises(Interrupt):
        copy_store(embedded, neo4j, checkpoint=checkpoint, page=1_000, progress=stop_midway)
    assert checkpoint.is_file()
    copied_after: list[int] = []
    report = copy_store(
        embedded, neo4j, checkpoint=checkpoint, page=1_000,
        progress=lambda _s, n: copied_after.append(n),
    )  # fmt: skip
    assert report.resumed_from is not None
    assert sum(copied_after) < embedded.count() + embedded.count_edges()
    assert not checkpoint.exists()
    assert neo4j.count() == embedded.count()


def test_copying_into_a_store_that_holds_other_data_fails_the_count_check(both) -> None:  # type: ignore[no-untyped-def]
    embedded, neo4j = both
    neo4j.upsert_nodes([Supplier(uid="SUP-EXTRA", name="Not in the source")])
    with pytest.raises(ValidationFailed, match="Supplier: 10 in the source, 11 in the target"):
        copy_store(embedded, neo4j)


# --- the server commands -------------------------------------------------------------------


def test_sqems_neo4j_start_status_stop(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SQEMS_DATA_DIR": str(tmp_path),
        "SQEMS_NEO4J_LIB": str(NEO4J_LIB),
        "SQEMS_NEO4J_PORT": str(free_port()),
        "SQEMS_NEO4J_HEAP": "512m",
        "SQEMS_NEO4J_PAGECACHE": "128m",
    }

    def sqems(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from sqems.cli import main; main()", "neo4j", *args],
            env=env, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip

    try:
        started = sqems("start")
        assert started.returncode == 0, started.stderr
        status = sqems("status")
        assert status.returncode == 0
        assert "answering" in status.stdout
        assert (tmp_path / "neo4j" / "password").stat().st_mode & 0o077 == 0
        conf = (tmp_path / "neo4j" / "conf" / "neo4j.conf").read_text()
        assert "dbms.security.auth_enabled=true" in conf
    finally:
        stopped = sqems("stop")
    assert stopped.returncode == 0
    assert "stopped" in stopped.stdout
    assert sqems("status").returncode == 1


def test_a_generated_password_never_reads_as_an_option(tmp_path: Path) -> None:
    # neo4j-admin takes a password starting with "-" for an option and refuses to start
    for i in range(300):
        server = Neo4jServer(tmp_path / f"home-{i}", lib=tmp_path / "lib", port=free_port())
        assert server.password()[0].isalpha()
