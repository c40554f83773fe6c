"""The ``sqems`` command starts at once: what it imports, not how long it takes.

Timing belongs to ``benchmarks/cli.py``; these tests hold the cause of a slow start — a
heavy stack imported where nothing needs it — so they pass or fail the same on any
machine. Each runs the CLI in a fresh interpreter and reads its ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest

# Stacks no command needs to describe itself. Help is typer (which coerces option values
# with pydantic, so pydantic is allowed), click and rich; the sampler (pymc, pytensor,
# arviz), statistics (scipy, sklearn, numpy, pandas), the API (strawberry, fastapi,
# starlette, uvicorn), RDF (rdflib, pyshacl), BIM (ifcopenshell), the simulation (simpy),
# the stores (duckdb, neo4j, networkx, pydantic-settings), MQTT (paho) and plotting
# (matplotlib) are imported by the commands that use them.
NOT_FOR_HELP = frozenset({
    "arviz", "duckdb", "fastapi", "ifcopenshell", "matplotlib", "neo4j", "networkx",
    "numpy", "paho", "pandas", "pydantic_settings", "pymc", "pyshacl", "pytensor",
    "rdflib", "scipy", "simpy", "sklearn", "starlette", "strawberry", "uvicorn",
})  # fmt: skip

# A recall or a trace on the embedded store needs the settings (pydantic-settings) and the
# in-memory graph (networkx), and nothing numeric: no sampler, no statistics, no API, no
# RDF, no BIM, no Neo4j driver.
NOT_FOR_QUERIES = NOT_FOR_HELP - {"networkx", "pydantic_settings"}

HELP_OF_EVERY_COMMAND = """
import json, sys
import typer
from typer.testing import CliRunner
from sqems.cli import app

def paths(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from paths(sub, [*path, name])

runner = CliRunner()
helps = {}
for path in paths(typer.main.get_command(app), []):
    done = runner.invoke(app, [*path, "--help"], terminal_width=100)
    assert done.exit_code == 0, (path, done.output)
    assert "Usage: sqems" in done.output, (path, done.output)
    helps[" ".join(path)] = done.output
print(json.dumps({"helps": helps, "modules": sorted(sys.modules)}))
"""

RUN_COMMAND = """
import json, sys
from sqems.cli import main
sys.argv = ["sqems", *json.loads(sys.argv[1])]
code = None
try:
    main()
except SystemExit as done:
    code = done.code
with open({report!r}, "w") as fh:
    json.dump({{"code": code, "modules": sorted(sys.modules)}}, fh)
"""


def top_level(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def run_python(code: str, *args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQEMS_DATA_DIR": str(data_dir), "COLUMNS": "120"}
    env.pop("SQEMS_GRAPH_URI", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


def run_sqems(data_dir: Path, *args: str) -> tuple[int, set[str], str]:
    """Run ``sqems ARGS`` in a fresh interpreter: exit code, imported packages, stdout."""
    report = data_dir / "modules.json"
    done = run_python(
        RUN_COMMAND.format(report=str(report)), json.dumps(list(args)), data_dir=data_dir
    )
    assert report.is_file(), done.stderr
    found = json.loads(report.read_text())
    return found["code"], top_level(found["modules"]), done.stdout


@pytest.fixture(scope="module")
def plant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose embedded store holds a small generated plant."""
    from sqems.datasets import PlantSpec, generate, load_plant  # noqa: PLC0415
    from sqems.datasets.files import plant_sections  # noqa: PLC0415
    from sqems.graph_model import EmbeddedGraphStore  # noqa: PLC0415

    data = tmp_path_factory.mktemp("startup")
    plant = generate(PlantSpec(units=1_000, seed=3))
    store = EmbeddedGraphStore(data / "graph.db")
    try:
        load_plant(store, plant_sections(plant))
    finally:
        store.close()
    (data / "truth.json").write_text(json.dumps(plant.truth))
    return data


@pytest.fixture(scope="module")
def helps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The help of every command and group, built in one fresh interpreter, and what
    that interpreter imported."""
    done = run_python(HELP_OF_EVERY_COMMAND, data_dir=tmp_path_factory.mktemp("help"))
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def test_the_help_of_every_command_imports_no_heavy_stack(helps: dict[str, Any]) -> None:
    assert {"", "recall", "whatif", "rdf export", "bim survey", "neo4j start"} <= set(
        helps["helps"]
    )
    assert top_level(helps["modules"]) & NOT_FOR_HELP == set()


def test_help_names_values_as_people_read_them_with_an_example_each(
    helps: dict[str, Any],
) -> None:
    groups = {"", "neo4j", "apikey", "quarantine", "audit", "report", "bim", "rdf"}
    for path, text in helps["helps"].items():
        assert not re.search(r"<(str|int|float|bool|path|list\[\w+\])>", text), (path, text)
        if path not in groups:
            assert "Example: sqems " in text, (path, text)
    recall = helps["helps"]["recall"]
    assert re.search(r"--lot +UID", recall)
    assert re.search(r"--from +DATE", recall)
    assert re.search(r"--json +Print", recall)  # a flag takes no value


def test_recall_and_trace_import_the_store_and_nothing_numeric(plant_dir: Path) -> None:
    lot = json.loads((plant_dir / "truth.json").read_text())["causes"][0]["uid"]
    code, modules, out = run_sqems(plant_dir, "recall", "--lot", lot, "--json")
    assert code in (0, None), out
    assert json.loads(out)["counts"]["units"] > 0
    assert modules & NOT_FOR_QUERIES == set()
    unit = json.loads(out)["units"][0]["uid"]
    code, modules, out = run_sqems(plant_dir, "trace", "--unit", unit)
    assert code in (0, None), out
    assert f"upstream of {unit}" in out
    assert modules & NOT_FOR_QUERIES == set()


def test_api_keys_are_managed_without_the_api_stack(tmp_path: Path) -> None:
    code, modules, out = run_sqems(tmp_path, "apikey", "create", "--name", "ci")
    assert code in (0, None), out
    assert "key " in out
    assert modules & {"strawberry", "fastapi", "starlette", "uvicorn", "scipy", "numpy"} == set()


def test_the_defaults_typer_reads_at_start_up_are_the_domains_own() -> None:
    """The CLI spells out a few defaults so that its help needs no heavy import; these
    must stay what the domain modules define."""
    from sqems.cli import analysis, bim, plant  # noqa: PLC0415
    from sqems.datasets import PlantShape  # noqa: PLC0415
    from sqems.investigation import DEFAULT_LOOKBACK_DAYS  # noqa: PLC0415
    from sqems.viewer import bim as bim_models  # noqa: PLC0415

    assert get_args(plant.Shape) == get_args(PlantShape)
    assert analysis.LOOKBACK_DAYS == DEFAULT_LOOKBACK_DAYS
    assert bim.SURVEY_COLUMNS == bim_models.SURVEY_COLUMNS
    assert bim.TOLERANCE_M == bim_models.DEFAULT_TOLERANCE_M
