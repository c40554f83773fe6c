"""Ingestion when the graph store goes away: what needs the graph waits in the spool
(on disk) and is finished when the real Neo4j server comes back; nothing is lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model.neo4j_server import Neo4jServer
from sqems.graph_model.neo4j_store import Neo4jGraphStore
from sqems.ingestion.pipeline import Ingestor
from sqems.ingestion.quarantine import Quarantine
from sqems.ingestion.readings import ReadingsStore
from sqems.ingestion.spool import Spool

PEAK = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK"
TORQUE = "sqems/v1/SITE-1/LINE-ASM/M-SCREW-1/P-TORQUE"


def readings(tag: str, values: list[float], unit: str, at: datetime) -> bytes:
    return json.dumps(
        [
            {
                "ts": (at + timedelta(seconds=i)).isoformat(),
                "value": v,
                "unit": unit,
                "id": f"{tag}-{i}",
            }
            for i, v in enumerate(values)
        ]
    ).encode()


def test_a_neo4j_outage_spools_to_disk_and_drains_when_it_returns(
    neo4j_server: Neo4jServer, tmp_path: Path
) -> None:
    graph = Neo4jGraphStore(neo4j_server.uri, password=neo4j_server.password(), connect_timeout=2.0)
    graph.wipe()
    load_plant(graph, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
    spool_file = tmp_path / "spool.jsonl"
    ingestor = Ingestor(
        graph,
        ReadingsStore(tmp_path / "r.duckdb"),
        Quarantine(tmp_path / "q.db"),
        spool=Spool(spool_file),
    )
    now = datetime.now(UTC)
    # a series the pipeline already knows keeps flowing; its alarm needs the graph
    ingestor.handle(PEAK, readings("warm", [242.5] * 3, "degC", now), now)
    nope = "sqems/v1/SITE-1/LINE-ASM/M-SCREW-1/P-NOPE"
    assert ingestor.handle(nope, readings("nope", [1.0], "N*m", now), now).quarantined == 1
    neo4j_server.stop()
    try:
        known = ingestor.handle(PEAK, readings("hot", [242.5] * 5 + [252.0] * 3, "degC", now), now)
        # a bad reading beside them is refused at once, and only once: not again when
        # the rest of its message comes back from the spool
        torque = [*json.loads(readings("torque", [2.3] * 4, "N*m", now)), {"value": "bad"}]
        unknown = ingestor.handle(TORQUE, json.dumps(torque).encode(), now)
        assert (known.accepted, known.alarms, unknown.spooled, unknown.quarantined) == (8, 2, 4, 1)
        # a replay during the outage says so and leaves the spool and the counters alone
        entry, _ = ingestor.quarantine.entries()
        replayed = ingestor.replay(entry.id)
        assert replayed.outcome is not None and "Neo4j" in replayed.outcome
        # both wait on disk: a restart of the ingestion would find them
        assert len(Spool(spool_file)) == 3  # two alarms and one message
    finally:
        neo4j_server.start()
    ingestor.drain()
    c = ingestor.counters
    assert len(ingestor.spool) == 0
    assert c.received == 17 == c.accepted + c.quarantined + c.duplicates + c.spooled
    assert (c.accepted, c.spooled, c.quarantined) == (15, 0, 2)
    assert ingestor.quarantine.count() == 2
    alarms = graph.find("Alarm")
    assert {a.rule for a in alarms} == {"nelson_1", "nelson_5"}
    graph.close()
    ingestor.readings.close()
    ingestor.quarantine.close()
