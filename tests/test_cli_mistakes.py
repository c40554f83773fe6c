"""Every user mistake is one line on stderr and a non-zero exit, and changes nothing:
a missing file, a wrong uid, a busy port, a store another process writes. Commands that
only read work while ``sqems serve`` holds the store.

Each command runs as a real ``sqems`` process on a real (small) plant.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqems.datasets.building import write_building_ifc
from sqems.graph_model import EmbeddedGraphStore
from sqems.graph_model.neo4j_server import free_port
from sqems.graph_model.nodes import Machine

SQEMS = [sys.executable, "-c", "from sqems.cli import main; main()"]


def sqems(
    data_dir: Path, *args: str, timeout: float = 300, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQEMS_DATA_DIR": str(data_dir), "COLUMNS": "200", **extra}
    env.pop("SQEMS_GRAPH_URI", None)
    return subprocess.run(
        [*SQEMS, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
        cwd=data_dir,
    )


def state(data_dir: Path) -> dict[str, str]:
    """What a command could change: every file under the data directory and its
    content (SQLite's shared-memory index and empty write-ahead log, which a reader
    may make, and the lock file, left out)."""
    return {
        str(p.relative_to(data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file()
        and not p.name.endswith(("-shm", ".lock"))
        and not (p.name.endswith("-wal") and p.stat().st_size == 0)
    }


def assert_one_line_refusal(done: subprocess.CompletedProcess[str], *wanted: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, done.stdout
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and '"level"' not in done.stderr
    for text in wanted:
        assert text in lines[0], lines[0]


@pytest.fixture(scope="module")
def plant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding a loaded 1,000-unit plant (and the plant's files)."""
    data = tmp_path_factory.mktemp("plant")
    done = sqems(data, "generate", "--out", str(data / "plant"), "--units", "1000", "--load")
    assert done.returncode == 0, done.stderr
    store = EmbeddedGraphStore(data / "graph.db", read_only=True)
    try:
        machines = [m for m in store.find("Machine") if isinstance(m, Machine)]
    finally:
        store.close()
    write_building_ifc(data / "plant" / "hall.ifc", machines, filler=20)
    return data


MISSING = "/no/such/file"

MISTAKES: list[tuple[str, list[str], list[str]]] = [
    # a file that is not there
    ("load", ["load", MISSING], [MISSING]),
    ("import", ["import", "erp", f"{MISSING}.csv"], [MISSING]),
    ("bim import", ["bim", "import", f"{MISSING}.ifc"], [MISSING]),
    ("bim import --links", ["bim", "import", "plant/hall.ifc", "--links", MISSING], [MISSING]),
    ("bim survey", ["bim", "survey", "BIM-0", MISSING], [MISSING]),
    ("rdf import", ["rdf", "import", f"{MISSING}.ttl"], [MISSING]),
    ("rdf validate", ["rdf", "validate", f"{MISSING}.ttl"], [MISSING]),
    ("rdf query", ["rdf", "query", f"{MISSING}.ttl", "recall-customers"], [MISSING]),
    ("audit verify --export", ["audit", "verify", "--export", MISSING], [MISSING]),
    (
        "report dhr --html",
        ["report", "dhr", "WO-PCB-00001", "--html", f"{MISSING}.html"],
        [MISSING],
    ),
    ("rdf export --out", ["rdf", "export", "--out", f"{MISSING}.ttl"], [MISSING]),
    # a uid that is not in the graph
    ("recall --lot", ["recall", "--lot", "LOT-NONE"], ["LOT-NONE"]),
    ("recall --batch", ["recall", "--batch", "WO-NONE"], ["WO-NONE"]),
    (
        "recall --machine",
        ["recall", "--machine", "M-NONE", "--from", "2026-01-01", "--to", "2026-01-02"],
        ["M-NONE"],
    ),
    ("recall --parameter", ["recall", "--parameter", "P-NONE"], ["P-NONE"]),
    ("trace --unit", ["trace", "--unit", "SN-NONE"], ["SN-NONE"]),
    ("trace --complaint", ["trace", "--complaint", "CMP-NONE"], ["CMP-NONE"]),
    ("investigate", ["investigate", "CMP-NONE", "--no-simulate"], ["CMP-NONE"]),
    ("rootcause --defect-type", ["rootcause", "--defect-type", "DT-NONE"], ["DT-NONE"]),
    ("rootcause --unit", ["rootcause", "--unit", "SN-NONE"], ["SN-NONE"]),
    ("report dhr", ["report", "dhr", "WO-NONE"], ["WO-NONE"]),
    ("scene", ["scene", "LINE-NONE"], ["LINE-NONE"]),
    ("scene --scenario", ["scene", "LINE-PCB", "--scenario", "WIS-NONE"], ["WIS-NONE"]),
    ("whatif", ["whatif", "LINE-NONE"], ["LINE-NONE"]),
    ("whatif --set", ["whatif", "LINE-PCB", "--set", "P-NONE=1"], ["P-NONE"]),
    ("bim survey model", ["bim", "survey", "BIM-NONE", "plant/manifest.json"], ["BIM-NONE"]),
    (
        "bim import link target",
        ["bim", "import", "plant/hall.ifc", "--links", "links.csv"],
        ["M-NONE"],
    ),
    # options that do not fit together
    (
        "recall --machine without a window",
        ["recall", "--machine", "M-PRINT-1"],
        ["--from", "--all-history"],
    ),
    (
        "rdf export --machine without a window",
        ["rdf", "export", "--machine", "M-PRINT-1"],
        ["--from", "--all-history"],
    ),
    ("apikey create without a name", ["apikey", "create"], ["sqems apikey create NAME"]),
    # the command line itself
    ("an unknown option", ["recall", "--bogus"], ["--bogus", "sqems recall --help"]),
    ("an option without its value", ["trace", "--unit"], ["--unit"]),
    ("a value of the wrong kind", ["rootcause", "--top", "many"], ["--top"]),
    ("an unknown command", ["recal"], ["recal", "sqems --help"]),
    ("a missing argument", ["investigate"], ["COMPLAINT"]),
]


@pytest.mark.parametrize(
    ("args", "wanted"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_a_mistake_is_one_line_a_non_zero_exit_and_changes_nothing(
    plant_dir: Path, args: list[str], wanted: list[str]
) -> None:
    (plant_dir / "links.csv").write_text("machine,global_id\nM-NONE,0abcdefghijklmnopqrstu\n")
    before = state(plant_dir)
    done = sqems(plant_dir, *args)
    assert_one_line_refusal(done, *wanted)
    assert state(plant_dir) == before


def test_audit_verify_on_a_new_data_dir_makes_no_key(tmp_path: Path) -> None:
    done = sqems(tmp_path, "audit", "verify")
    assert done.returncode == 0, done.stderr
    assert "no entries yet" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_apikey_create_takes_the_name_as_an_argument_or_an_option(tmp_path: Path) -> None:
    by_argument = sqems(tmp_path, "apikey", "create", "line 1 tablet")
    by_option = sqems(tmp_path, "apikey", "create", "--name", "line 2 tablet")
    assert by_argument.returncode == 0 and by_option.returncode == 0, by_argument.stderr
    assert "(line 1 tablet, viewer)" in by_argument.stdout
    assert "(line 2 tablet, viewer)" in by_option.stdout


def test_recall_of_a_machine_s_whole_history_is_asked_for(plant_dir: Path) -> None:
    done = sqems(plant_dir, "recall", "--machine", "M-PRINT-1", "--all-history", "--json")
    assert done.returncode == 0, done.stderr
    assert '"units"' in done.stdout


# --- while `sqems serve` holds the store -------------------------------------------------


def _wait_for_port(port: int, server: subprocess.Popen[str], timeout: float = 120) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if server.poll() is not None:
            raise AssertionError(
                f"sqems serve stopped: {server.stderr.read() if server.stderr else ''}"
            )
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"sqems serve did not listen on {port} in {timeout:.0f} s")


@pytest.fixture(scope="module")
def served(plant_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A copy of the plant's data directory, held by a running ``sqems serve``."""
    data = tmp_path_factory.mktemp("served")
    shutil.copytree(plant_dir, data, dirs_exist_ok=True)
    port = free_port()
    env = {**os.environ, "SQEMS_DATA_DIR": str(data)}
    env.pop("SQEMS_GRAPH_URI", None)
    server = subprocess.Popen(
        [*SQEMS, "serve", "--port", str(port), "--no-ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port, server)
        yield data, port
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_on_a_busy_port_says_so_before_announcing_anything(
    served: tuple[Path, int], tmp_path: Path
) -> None:
    _, port = served
    done = sqems(tmp_path, "serve", "--port", str(port), "--no-ingest", timeout=120)
    assert_one_line_refusal(done, f"port {port}", "--port")
    assert "serving on" not in done.stdout
    assert list(tmp_path.iterdir()) == []  # no admin key made, no store opened


def test_serve_on_a_store_another_server_holds_is_refused(served: tuple[Path, int]) -> None:
    data, _ = served
    before = state(data)
    done = sqems(data, "serve", "--port", str(free_port()), "--no-ingest", timeout=120)
    assert_one_line_refusal(done, "open for writing by pid", "serve")
    assert "serving on" not in done.stdout
    assert state(data) == before


@pytest.mark.parametrize(
    "args",
    [
        ["load", "plant"],
        ["rdf", "import", "plant.ttl"],
        ["bim", "import", "plant/hall.ifc"],
    ],
    ids=["load", "rdf import", "bim import"],
)
def test_a_writer_says_who_holds_the_store_and_what_to_do(
    served: tuple[Path, int], args: list[str]
) -> None:
    data, _ = served
    exported = sqems(data, "rdf", "export", "--lot", "LOT-PCB-00001", "--out", "plant.ttl")
    assert exported.returncode == 0, exported.stderr
    before = state(data)
    done = sqems(data, *args)
    assert_one_line_refusal(done, "open for writing by pid", "serve --port", "stop it or wait")
    assert state(data) == before


READERS = [
    ["recall", "--lot", "LOT-PCB-00001"],
    ["trace", "--complaint", "CMP-000001"],
    ["rootcause", "--defect-type", "DT-CRACKED-HOUSING"],
    ["investigate", "CMP-000001", "--no-simulate"],
    ["kpis"],
    ["suppliers"],
    ["stats"],
    ["report", "dhr", "WO-PCB-00001", "--html", "dhr.html"],
    ["audit", "verify"],
    ["rdf", "export", "--out", "all.ttl"],
    ["rdf", "query", "all.ttl", "out-of-spec-actuals"],
]


@pytest.mark.parametrize("args", READERS, ids=[" ".join(a[:2]) for a in READERS])
def test_a_command_that_reads_works_while_serve_holds_the_store(
    served: tuple[Path, int], args: list[str]
) -> None:
    data, _ = served
    if args[:2] == ["rdf", "query"]:
        assert sqems(data, "rdf", "export", "--out", "all.ttl").returncode == 0
    done = sqems(data, *args)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_whatif_runs_while_serve_holds_the_store_and_says_it_is_not_saved(
    served: tuple[Path, int],
) -> None:
    data, _ = served
    store_files = {k: v for k, v in state(data).items() if k.startswith("graph.db")}
    done = sqems(
        data,
        "whatif",
        "LINE-PCB",
        "--hours",
        "1",
        "--replications",
        "4",
        timeout=1200,
        SQEMS_TWIN_DRAWS="800",  # the least the twin's diagnostics accept (test_cli.py)
        SQEMS_TWIN_TUNE="600",
    )
    assert done.returncode == 0, done.stderr
    assert "is not saved" in done.stderr
    assert "open for writing by pid" in done.stderr
    assert "throughput" in done.stdout
    assert {k: v for k, v in state(data).items() if k.startswith("graph.db")} == store_files
