"""The README's tour, run as written: every example returns data on the demo plant.

The commands are read from the README's ``bash`` blocks (lines that run ``./dev sqems``),
so an example that is edited there is the example tested here. They run in order, in
one working directory, against the data folder ``./dev demo`` fills: files one example
writes (``scope.ttl``, ``plant/``) are there for the next. An example that needs
something the tour does not start (a broker, a Neo4j server, a running API) is listed
in ``ELSEWHERE`` with the tests that cover it; nothing else is left out.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SQEMS = [sys.executable, "-c", "from sqems.cli import main; main()"]

ELSEWHERE = {
    "serve": "a long-running server: tests/test_cli.py and tests/test_api*.py start it",
    "sensors": "needs a running broker and `serve --ingest`: tests/test_mqtt.py",
    "neo4j": "starts a Neo4j server: tests/test_neo4j.py",
    "migrate": "needs the Neo4j server above: tests/test_neo4j.py",
    "apikey": "writes the API's key store: tests/test_cli.py",
    "quarantine": "lists what the ingestion above refused: tests/test_ingestion.py",
    "bim survey": "needs a site survey of the model: tests/test_viewer.py",
    "SQEMS_GRAPH_URI": "runs on the Neo4j server above: tests/test_neo4j.py",
    "lake": "needs readings the ingestion above stored (and a Spark cluster): "
    "tests/test_lake_cli.py, tests/test_lake_cluster.py",
    "edge export": "needs 20 finished batches of the product (the demo's board line has "
    "14): tests/test_edge_models.py",
    "edge publish": "needs the central broker: tests/test_edge_models.py",
    "edge run": "needs the line's and the central broker: tests/test_edge_offline.py",
    "judgements": "lists what an edge agent judged: tests/test_edge_central.py",
}
"""Command (first word, or first two) or a setting it is run with -> why and where it is
tested instead."""

SMALL_TWIN = {"SQEMS_TWIN_DRAWS": "800", "SQEMS_TWIN_TUNE": "600"}
"""The twin's sampler sized for a test (the examples run as written otherwise)."""

USER_FILES = {
    "hall.ifc": "the demo's own hall model, as a user's IFC file",
    "partner.jsonld": "a recall scope exported as JSON-LD, as a partner's file",
}
"""Files an example takes from the user, and what the tour gives it instead."""

SCALED = {"--units": "2000"}
"""Options whose README value is sized for a person's machine, scaled down here."""

EMPTY = re.compile(
    r"^\s*(units|batches|process runs|shipments|customers)\s+0\s*$|^\s*0 entries", re.M
)


def tour() -> list[tuple[dict[str, str], list[str]]]:
    """(environment, argv) of every ``./dev sqems`` line in the README's bash blocks."""
    out: list[tuple[dict[str, str], list[str]]] = []
    in_bash = False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        if not in_bash or "./dev sqems" not in line:
            continue
        words = shlex.split(line, comments=True)
        at = words.index("./dev")
        env = dict(w.split("=", 1) for w in words[:at])
        args = words[at + 2 :]
        scaled = [SCALED.get(prev, w) for prev, w in zip(["", *args[:-1]], args, strict=True)]
        out.append((env, scaled))
    return out


EXAMPLES = tour()
RUN = [
    (env, args)
    for env, args in EXAMPLES
    if args[0] not in ELSEWHERE
    and " ".join(args[:2]) not in ELSEWHERE
    and not set(env) & set(ELSEWHERE)
]


def test_the_readme_has_a_tour_and_what_it_leaves_out_is_tested_elsewhere() -> None:
    firsts = {args[0] for _, args in RUN}
    assert {"recall", "trace", "investigate", "rootcause", "whatif", "rdf", "load"} <= firsts
    root = README.parent
    for why in ELSEWHERE.values():
        for name in re.findall(r"tests/[\w*]+\.py", why):
            assert list(root.glob(name)), f"{name} named in ELSEWHERE does not exist"


def run(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SQEMS, *args], cwd=work, env=env, capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tour_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A working directory and the environment of a user who has run ``./dev demo``."""
    work = tmp_path_factory.mktemp("tour")
    data = work / "sqems-data"
    env = {**os.environ, "SQEMS_DATA_DIR": str(data), "COLUMNS": "100", **SMALL_TWIN}
    env.pop("SQEMS_GRAPH_URI", None)
    done = run(work, env, "demo")
    assert done.returncode == 0, done.stderr
    shutil.copy(data / "demo-plant" / "hall.ifc", work / "hall.ifc")
    # the examples the README names by their path in the repository
    shutil.copytree(README.parent / "examples" / "design", work / "examples" / "design")
    export = run(work, env, "rdf", "export", "--lot", "LOT-SCREW-00003", "--out",
                 str(work / "partner.jsonld"))  # fmt: skip
    assert export.returncode == 0, export.stderr
    assert set(USER_FILES) <= {p.name for p in work.iterdir()}
    return work, env


@pytest.mark.parametrize(("extra", "args"), RUN, ids=[" ".join(a)[:60] for _, a in RUN])
def test_readme_example_returns_data(
    tour_dir: tuple[Path, dict[str, str]], extra: dict[str, str], args: list[str]
) -> None:
    work, env = tour_dir
    env = {**env, **{k: v.replace("$PWD", str(work)) for k, v in extra.items()}}
    done = run(work, env, *args)
    assert done.returncode == 0, f"{' '.join(args)}: exit {done.returncode}\n{done.stderr}"
    assert done.stdout.strip() or any(work.iterdir()), f"{' '.join(args)} printed nothing"
    assert not EMPTY.search(done.stdout), f"{' '.join(args)} found nothing:\n{done.stdout}"
    assert "Traceback" not in done.stderr
