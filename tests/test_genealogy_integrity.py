"""A graph that cannot hold impossible genealogy: refused on load (file and line), by the
file importer, by RDF import; a bad plant writes nothing; a store knows its plant; a
killed load is shown and finished by a rerun; an audit finds what older data holds."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sqems.datasets import PlantSpec, generate, load_plant, read_plant, write_plant
from sqems.datasets.files import plant_identity, spec_identity
from sqems.datasets.load import LOAD_KEY, held_plants, load_in_progress
from sqems.errors import ValidationFailed
from sqems.graph_model import GraphStore, integrity
from sqems.graph_model.embedded import EmbeddedGraphStore
from sqems.graph_model.integrity import GenealogyViolation
from sqems.graph_model.nodes import Shipment, Unit, UnitStatus
from sqems.graph_model.store import Edge
from sqems.ingestion.importers import import_file
from sqems.ingestion.quarantine import Quarantine
from sqems.ontologies import Part, RdfFormat, export_text, import_graph, parse, validate

SPEC = PlantSpec(units=1_000, seed=1)


@pytest.fixture(scope="module")
def plant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plant")
    write_plant(generate(SPEC), out)
    return out


@pytest.fixture
def plant(tmp_path: Path, plant_dir: Path) -> Path:
    """A copy of the generated plant this test may spoil."""
    out = tmp_path / "plant"
    for path in plant_dir.rglob("*"):
        if path.is_file():
            target = out / path.relative_to(plant_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return out


def rows(plant: Path, rel: str) -> list[list[str]]:
    return [line.split(",") for line in (plant / rel).read_text().splitlines()]


def put(plant: Path, rel: str, table: list[list[str]]) -> None:
    """Write a table back, keeping the manifest's row count in step."""
    (plant / rel).write_text("".join(",".join(r) + "\n" for r in table))
    manifest = json.loads((plant / "manifest.json").read_text())
    kind, name = rel.removesuffix(".csv").split("/")
    manifest[kind][name]["rows"] = len(table) - 1
    (plant / "manifest.json").write_text(json.dumps(manifest))


def append(plant: Path, rel: str, *new: list[str]) -> int:
    """Append rows; returns the line number of the first."""
    table = rows(plant, rel)
    put(plant, rel, [*table, *new])
    return len(table) + 1


def refused_load(plant: Path, match: str) -> EmbeddedGraphStore:
    store = EmbeddedGraphStore(plant.parent / "graph.db")
    with pytest.raises(ValidationFailed, match=match):
        load_plant(store, read_plant(plant), batch_size=300)
    return store


def units_by_status(plant: Path, status: str) -> list[str]:
    return [r[0] for r in rows(plant, "nodes/Unit.csv")[1:] if r[2] == status]


# --- loading refuses impossible genealogy, naming the file and line, writing nothing --------------


def test_a_unit_in_two_assemblies_is_refused_at_its_line(plant: Path) -> None:
    child = rows(plant, "edges/ASSEMBLED_INTO.csv")[1][0]
    other = rows(plant, "edges/ASSEMBLED_INTO.csv")[2][1]
    line = append(plant, "edges/ASSEMBLED_INTO.csv", [child, other])
    store = refused_load(
        plant,
        rf"edges/ASSEMBLED_INTO\.csv line {line}: unit {child} would be assembled into 2 units",
    )
    assert store.count() == 0
    assert store.metadata().get(LOAD_KEY) is None


def test_an_assembly_cycle_is_refused_at_its_line(plant: Path) -> None:
    # a drive put back into the sub-assembly it contains: pack into cell
    child, parent = rows(plant, "edges/ASSEMBLED_INTO.csv")[1]
    table = rows(plant, "edges/ASSEMBLED_INTO.csv")
    line = append(plant, "edges/ASSEMBLED_INTO.csv", [parent, child])
    assert len(rows(plant, "edges/ASSEMBLED_INTO.csv")) == len(table) + 1
    store = refused_load(
        plant, rf"ASSEMBLED_INTO\.csv line {line}: unit {parent} cannot be assembled into {child}"
    )
    assert store.count() == 0


def test_an_assembly_built_before_its_component_is_refused_at_the_units_line(
    plant: Path,
) -> None:
    child, parent = rows(plant, "edges/ASSEMBLED_INTO.csv")[1]
    units = rows(plant, "nodes/Unit.csv")
    at = next(i for i, r in enumerate(units) if r[0] == parent)
    units[at][1] = "2025-01-01T00:00:00Z"
    put(plant, "nodes/Unit.csv", units)
    store = refused_load(
        plant,
        rf"ASSEMBLED_INTO\.csv line 2: unit {child} \(produced .*\) cannot be assembled into "
        rf"{parent} \(produced 2025-01-01T00:00:00Z\)",
    )
    assert store.count() == 0


def test_a_scrapped_unit_in_a_shipment_is_refused_at_its_line(plant: Path) -> None:
    scrapped = units_by_status(plant, "scrapped")[0]
    shipment = rows(plant, "nodes/Shipment.csv")[1][0]
    line = append(plant, "edges/SHIPPED_IN.csv", [scrapped, shipment])
    store = refused_load(
        plant, rf"SHIPPED_IN\.csv line {line}: unit {scrapped} is scrapped; a scrapped unit"
    )
    assert store.count() == 0


def test_a_manifest_count_that_disagrees_with_its_file_is_refused(plant: Path) -> None:
    manifest = json.loads((plant / "manifest.json").read_text())
    manifest["edges"]["SHIPPED_IN"]["rows"] += 3
    (plant / "manifest.json").write_text(json.dumps(manifest))
    have = manifest["edges"]["SHIPPED_IN"]["rows"] - 3
    store = refused_load(
        plant,
        rf"SHIPPED_IN\.csv: the file has {have} rows but manifest\.json says {have + 3}",
    )
    assert store.count() == 0


def test_a_bad_row_late_in_a_large_edge_file_names_its_own_line(plant: Path) -> None:
    table = rows(plant, "edges/PRODUCED.csv")
    table[700][1] = "SN-NOWHERE"
    put(plant, "edges/PRODUCED.csv", table)
    store = refused_load(
        plant, r"PRODUCED\.csv line 701: PRODUCED .*→SN-NOWHERE: node SN-NOWHERE is neither"
    )
    assert store.count() == 0


def test_a_store_refusal_while_writing_is_mapped_back_to_its_row(plant: Path) -> None:
    # the pre-pass cannot see a write another client makes after it: here one puts the
    # first sub-assembly into a unit of its own while the plant's units are written
    child, parent = rows(plant, "edges/ASSEMBLED_INTO.csv")[1]
    store = EmbeddedGraphStore(plant.parent / "graph.db")

    def meanwhile(name: str, _n: int) -> None:
        if name == "Unit" and store.label_of("SN-ELSEWHERE") is None:
            store.upsert_nodes([Unit(uid="SN-ELSEWHERE", produced_at="2027-01-01T00:00:00Z")])
            store.upsert_edges([Edge("ASSEMBLED_INTO", child, "SN-ELSEWHERE")])

    with pytest.raises(
        ValidationFailed,
        match=rf"edges/ASSEMBLED_INTO\.csv line 2: unit {child} would be assembled into 2 "
        rf"units, {parent}, SN-ELSEWHERE",
    ):
        load_plant(store, read_plant(plant), batch_size=300, progress=meanwhile)
    assert load_in_progress(store) is not None


# --- the same rules on the other write paths ------------------------------------------------------


def test_the_erp_importer_quarantines_a_shipped_scrapped_unit(tmp_path: Path) -> None:
    store = EmbeddedGraphStore(None)
    store.upsert_nodes(
        [
            Unit(uid="U-1", produced_at="2026-01-05T06:00:00Z"),
            Unit(uid="U-2", produced_at="2026-01-05T06:00:00Z", status=UnitStatus.SCRAPPED),
            Shipment(uid="SHP-1", shipped_at="2026-01-06T06:00:00Z"),
        ]
    )
    folder = tmp_path / "erp"
    folder.mkdir()
    (folder / "SHIPPED_IN.csv").write_text("src,dst\nU-1,SHP-1\nU-2,SHP-1\n")
    quarantine = Quarantine(None)
    report = import_file(store, quarantine, "erp", folder)
    assert report.imported["SHIPPED_IN"] == 1
    assert report.reasons["genealogy"] == 1
    [entry] = quarantine.entries()
    assert entry.source.endswith("SHIPPED_IN.csv#3")
    assert "U-2 is scrapped" in entry.reason
    assert store.edges(["U-2"], {"SHIPPED_IN": "out"}) == []


def _assembly_store() -> EmbeddedGraphStore:
    store = EmbeddedGraphStore(None)
    store.upsert_nodes(
        [
            Unit(uid="C-1", produced_at="2026-01-05T06:00:00Z"),
            Unit(uid="M-1", produced_at="2026-01-05T07:00:00Z"),
            Unit(uid="M-2", produced_at="2026-01-05T07:00:00Z"),
        ]
    )
    store.upsert_edges([Edge("ASSEMBLED_INTO", "C-1", "M-1")])
    return store


@pytest.mark.parametrize("check_shapes", [True, False])
def test_rdf_import_refuses_a_unit_in_two_assemblies(check_shapes: bool) -> None:
    source = _assembly_store()
    g = parse(export_text(Part.whole(source), "turtle"), RdfFormat.TURTLE)
    [(s, p, o)] = [t for t in g if str(t[0]).endswith("C-1") and str(t[2]).endswith("M-1")]
    g.add((s, p, type(o)(str(o).replace("M-1", "M-2"))))
    target = EmbeddedGraphStore(None)
    with pytest.raises(ValidationFailed, match="C-1"):
        import_graph(target, g, check_shapes=check_shapes)
    assert target.count() == 0


def _graph_of(store: EmbeddedGraphStore) -> Any:
    return parse(export_text(Part.whole(store), "turtle"), RdfFormat.TURTLE)


def _with(g: Any, src: str, pred_of: tuple[str, str], dst: str) -> Any:
    """``g`` plus ``src pred dst``, the predicate taken from the triple ``pred_of``."""
    [(_, p, o)] = [
        t for t in g if str(t[0]).endswith(pred_of[0]) and str(t[2]).endswith(pred_of[1])
    ]
    s = next(t[0] for t in g if str(t[0]).endswith("/" + src))
    g.add((s, p, type(o)(str(o).rsplit("/", 1)[0] + "/" + dst)))
    return g


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("M-1", ("C-1", "M-1"), "C-1"), "a unit cannot be built into itself (an assembly cycle)"),
        (("M-1", ("C-1", "M-1"), "M-1"), "a unit cannot be built into itself (an assembly cycle)"),
        (("M-2", ("C-1", "M-1"), "C-1"), "an assembly cannot be produced before its component"),
    ],
)
def test_the_shapes_state_the_genealogy_rules(extra: Any, message: str) -> None:
    g = _with(_graph_of(_assembly_store()), *extra)
    report = validate(g)
    assert message in [f.message for f in report.findings]
    with pytest.raises(ValidationFailed, match=re.escape(message)):
        import_graph(EmbeddedGraphStore(None), g)


def test_the_shapes_refuse_a_shipped_scrapped_unit() -> None:
    store = _assembly_store()
    store.upsert_nodes(
        [
            Unit(uid="S-1", produced_at="2026-01-05T06:00:00Z", status=UnitStatus.SCRAPPED),
            Shipment(uid="SHP-1", shipped_at="2026-01-06T06:00:00Z"),
        ]
    )
    store.upsert_edges([Edge("SHIPPED_IN", "C-1", "SHP-1")])
    g = _with(_graph_of(store), "S-1", ("C-1", "SHP-1"), "SHP-1")
    assert "a scrapped unit cannot be in a shipment" in [f.message for f in validate(g).findings]
    target = EmbeddedGraphStore(None)
    with pytest.raises(ValidationFailed, match="S-1 is scrapped"):
        import_graph(target, g, check_shapes=False)
    assert target.count() == 0


# --- which plant a store holds -------------------------------------------------------------------


def test_a_generated_plant_names_itself_in_its_manifest(plant_dir: Path) -> None:
    manifest = json.loads((plant_dir / "manifest.json").read_text())
    assert manifest["plant"] == spec_identity(SPEC) == plant_identity(plant_dir)
    assert manifest["plant"].startswith("drives-1000u-seed1-")


def test_a_hand_made_plant_is_known_by_its_sites(plant: Path) -> None:
    manifest = json.loads((plant / "manifest.json").read_text())
    del manifest["plant"]
    (plant / "manifest.json").write_text(json.dumps(manifest))
    sites = sorted(r[0] for r in rows(plant, "nodes/Site.csv")[1:])
    assert plant_identity(plant) == "sites:" + "+".join(sites)


def test_a_different_plant_is_refused_unless_merged(tmp_path: Path, plant_dir: Path) -> None:
    other = tmp_path / "other"
    write_plant(generate(PlantSpec(units=1_000, seed=2)), other)
    with EmbeddedGraphStore(tmp_path / "graph.db") as store:
        mine = plant_identity(plant_dir)
        load_plant(store, read_plant(plant_dir), plant=mine)
        count = store.count()
        load_plant(store, read_plant(plant_dir), plant=mine)  # the same plant again
        assert store.count() == count
        theirs = plant_identity(other)
        with pytest.raises(ValidationFailed, match=rf"holds plant {mine}, not {theirs}.*--merge"):
            load_plant(store, read_plant(other), plant=theirs)
        assert store.count() == count
        assert held_plants(store) == [mine]


def test_a_merge_records_both_plants(tmp_path: Path, plant_dir: Path) -> None:
    other = renamed(plant_dir, tmp_path / "other", "second plant")
    with EmbeddedGraphStore(tmp_path / "graph.db") as store:
        load_plant(store, read_plant(plant_dir), plant=plant_identity(plant_dir))
        before = store.count("Unit")
        load_plant(store, read_plant(other), plant="second plant", merge=True)
        assert store.count("Unit") == 2 * before
        assert held_plants(store) == [plant_identity(plant_dir), "second plant"]
        # now held, the second plant reloads without --merge
        load_plant(store, read_plant(other), plant="second plant")


def test_a_store_from_before_plants_were_recorded_asks_for_merge(
    tmp_path: Path, plant_dir: Path
) -> None:
    with EmbeddedGraphStore(tmp_path / "graph.db") as store:
        load_plant(store, read_plant(plant_dir))
        with pytest.raises(ValidationFailed, match=r"no name for .*--merge"):
            load_plant(store, read_plant(plant_dir), plant=plant_identity(plant_dir))


# --- a killed load ---------------------------------------------------------------------------

KILLER = """
import os, sys
from pathlib import Path
from sqems.datasets import load_plant, read_plant
from sqems.datasets.files import plant_identity
from sqems.graph_model.embedded import EmbeddedGraphStore

plant = Path(sys.argv[1])
store = EmbeddedGraphStore(Path(sys.argv[2]))
written = 0

def progress(name, n):
    global written
    written += n
    if written >= 2_000:
        os._exit(9)  # as a kill would: no cleanup, no close

load_plant(store, read_plant(plant), batch_size=500, progress=progress,
           plant=plant_identity(plant), source=str(plant))
"""


def test_a_killed_load_is_shown_in_progress_and_a_rerun_finishes_it(
    tmp_path: Path, plant_dir: Path
) -> None:
    db = tmp_path / "graph.db"
    run = subprocess.run(
        [sys.executable, "-c", KILLER, str(plant_dir), str(db)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert run.returncode == 9, run.stderr
    with EmbeddedGraphStore(db) as store:
        state = load_in_progress(store)
        assert state is not None
        assert state["plant"] == plant_identity(plant_dir)
        assert state["source"] == str(plant_dir)
        partial = store.count_edges()
        assert store.count() > 0
        load_plant(store, read_plant(plant_dir), plant=plant_identity(plant_dir))
        assert load_in_progress(store) is None
        with EmbeddedGraphStore(None) as fresh:
            load_plant(fresh, read_plant(plant_dir))
            assert (store.count(), store.count_edges()) == (fresh.count(), fresh.count_edges())
            assert partial < fresh.count_edges()


# --- the audit of a store -------------------------------------------------------------------


def test_a_generated_plant_is_clean(plant_dir: Path) -> None:
    with EmbeddedGraphStore(None) as store:
        load_plant(store, read_plant(plant_dir))
        found = integrity.audit(store)
    assert found.clean
    assert found.units == len(rows(plant_dir, "nodes/Unit.csv")) - 1


def _older_file(path: Path) -> None:
    """Write what the rules refuse straight into a store file, as an older SQEMS did."""
    with EmbeddedGraphStore(path) as store:
        store.upsert_nodes(
            [
                Unit(uid="C-1", produced_at="2026-01-05T09:00:00Z"),
                Unit(uid="M-1", produced_at="2026-01-05T07:00:00Z"),
                Unit(uid="M-2", produced_at="2026-01-05T10:00:00Z"),
                Unit(uid="P-1", produced_at="2026-01-05T10:00:00Z"),
                Unit(uid="P-2", produced_at="2026-01-05T10:00:00Z"),
                Unit(uid="S-1", produced_at="2026-01-05T10:00:00Z", status=UnitStatus.SCRAPPED),
                Shipment(uid="SHP-1", shipped_at="2026-01-06T06:00:00Z"),
            ]
        )
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO edges (src, type, dst, props) VALUES (?, ?, ?, NULL)",
            [
                ("C-1", "ASSEMBLED_INTO", "M-1"),
                ("C-1", "ASSEMBLED_INTO", "M-2"),
                ("P-1", "ASSEMBLED_INTO", "P-2"),
                ("P-2", "ASSEMBLED_INTO", "P-1"),
                ("S-1", "SHIPPED_IN", "SHP-1"),
            ],
        )
    db.close()


def test_an_audit_reports_each_rule_broken_by_older_data(tmp_path: Path) -> None:
    _older_file(tmp_path / "graph.db")
    with EmbeddedGraphStore(tmp_path / "graph.db", read_only=True) as store:
        found = integrity.audit(store)
    messages = {rule: [f.message for f in fs] for rule, fs in found.findings.items()}
    assert messages == {
        "one-parent": ["unit C-1 is assembled into 2 units: M-1, M-2"],
        "no-cycle": ["assembly cycle P-1 → P-2 → P-1"],
        "time-order": [
            "unit C-1 (produced 2026-01-05T09:00:00Z) is in M-1 (produced "
            "2026-01-05T07:00:00Z), which predates it"
        ],
        "shipped-not-scrapped": ["unit S-1 is scrapped but left in shipment SHP-1"],
    }
    assert found.total == 4
    assert not found.clean


def test_a_store_with_older_breaches_takes_writes_that_do_not_touch_them(tmp_path: Path) -> None:
    _older_file(tmp_path / "graph.db")
    with EmbeddedGraphStore(tmp_path / "graph.db") as store:
        store.upsert_nodes([Unit(uid="C-9", produced_at="2026-01-05T06:00:00Z")])
        store.upsert_edges([Edge("ASSEMBLED_INTO", "C-9", "M-2")])
        with pytest.raises(GenealogyViolation, match="cycle"):
            store.upsert_edges([Edge("ASSEMBLED_INTO", "M-2", "C-9")])


def test_an_audit_runs_on_every_backend(store: GraphStore) -> None:
    store.upsert_nodes(
        [
            Unit(uid="C-1", produced_at="2026-01-05T06:00:00Z"),
            Unit(uid="M-1", produced_at="2026-01-05T07:00:00Z"),
        ]
    )
    store.upsert_edges([Edge("ASSEMBLED_INTO", "C-1", "M-1")])
    found = integrity.audit(store)
    assert found.clean
    assert found.units == 2


# --- the command line ------------------------------------------------------------------------

SQEMS = [sys.executable, "-c", "from sqems.cli import main; main()"]


def sqems(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQEMS_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("SQEMS_GRAPH_URI", None)
    return subprocess.run(
        [*SQEMS, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def renamed(plant_dir: Path, out: Path, name: str) -> Path:
    """The plant with every uid renamed (no record shared), under identity ``name``."""
    for path in plant_dir.rglob("*.csv"):
        target = out / path.relative_to(plant_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text()
        for prefix in ("SN-", "SHP-", "CUST-", "CMP-", "DEF-", "INS-", "B-"):
            text = text.replace(prefix, "X" + prefix)
        target.write_text(text)
    manifest = json.loads((plant_dir / "manifest.json").read_text())
    manifest["plant"] = name
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_cli_load_refuses_another_plant_in_one_line_and_merges_on_request(
    tmp_path: Path, plant_dir: Path
) -> None:
    data = tmp_path / "data"
    other = renamed(plant_dir, tmp_path / "other", "second plant")
    first = sqems(data, "load", str(plant_dir))
    assert first.returncode == 0, first.stderr
    refused = sqems(data, "load", str(other))
    assert refused.returncode == 2
    [line] = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
    assert f"holds plant {plant_identity(plant_dir)}, not second plant" in line
    assert "--merge" in line
    merged = sqems(data, "load", str(other), "--merge")
    assert merged.returncode == 0, merged.stderr
    stats = sqems(data, "stats")
    assert f"plant: {plant_identity(plant_dir)} (merged into it: second plant)" in stats.stdout


def test_cli_load_of_a_bad_plant_names_the_row_and_writes_nothing(
    tmp_path: Path, plant: Path
) -> None:
    scrapped = units_by_status(plant, "scrapped")[0]
    shipment = rows(plant, "nodes/Shipment.csv")[1][0]
    line = append(plant, "edges/SHIPPED_IN.csv", [scrapped, shipment])
    data = tmp_path / "data"
    done = sqems(data, "load", str(plant))
    assert done.returncode == 2
    assert f"SHIPPED_IN.csv line {line}: unit {scrapped} is scrapped" in done.stderr
    assert "Traceback" not in done.stderr
    with EmbeddedGraphStore(data / "graph.db", read_only=True) as store:
        assert store.count() == 0


def test_cli_check_reports_older_breaches_and_exits_1(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _older_file(data / "graph.db")
    done = sqems(data, "check", "--limit", "1")
    assert done.returncode == 1, done.stderr
    assert "plant: not recorded" in done.stdout
    assert "broken  a unit is in at most one assembly: 1 record(s)" in done.stdout
    assert "unit C-1 is assembled into 2 units: M-1, M-2" in done.stdout
    assert "assembly cycle P-1 → P-2 → P-1" in done.stdout
    assert "unit S-1 is scrapped but left in shipment SHP-1" in done.stdout
    assert "4 breach(es)" in done.stdout


def test_cli_check_and_stats_show_an_unfinished_load(tmp_path: Path, plant_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(plant_dir), str(data / "graph.db")],
        check=False,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == 9
    stats = sqems(data, "stats")
    assert stats.returncode == 0, stats.stderr
    assert f"load in progress: plant {plant_identity(plant_dir)} from {plant_dir}" in stats.stdout
    finished = sqems(data, "load", str(plant_dir))
    assert finished.returncode == 0, finished.stderr
    clean = sqems(data, "check")
    assert clean.returncode == 0
    assert "load in progress" not in clean.stdout
    assert "every genealogy rule holds" in clean.stdout


# --- every backend --------------------------------------------------------------------------


def test_a_bad_plant_leaves_every_backend_empty(store: GraphStore, plant: Path) -> None:
    child = rows(plant, "edges/ASSEMBLED_INTO.csv")[1][0]
    other = rows(plant, "edges/ASSEMBLED_INTO.csv")[2][1]
    line = append(plant, "edges/ASSEMBLED_INTO.csv", [child, other])
    with pytest.raises(ValidationFailed, match=rf"ASSEMBLED_INTO\.csv line {line}: unit {child}"):
        load_plant(store, read_plant(plant), plant=plant_identity(plant))
    assert store.count() == 0
    assert store.metadata().get(LOAD_KEY) is None


def test_every_backend_keeps_its_plant(store: GraphStore, plant_dir: Path, tmp_path: Path) -> None:
    mine = plant_identity(plant_dir)
    load_plant(store, read_plant(plant_dir), plant=mine)
    assert held_plants(store) == [mine]
    assert load_in_progress(store) is None
    assert integrity.audit(store).clean
    other = renamed(plant_dir, tmp_path / "other", "second plant")
    with pytest.raises(ValidationFailed, match=f"holds plant {mine}, not second plant"):
        load_plant(store, read_plant(other), plant="second plant")
