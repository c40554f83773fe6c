"""``sqems lake …`` as a user runs it: a real process over real files, exit codes, and
one red line for every mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_lake import Shape, build

from sqems.graph_model import EmbeddedGraphStore

SQEMS = [sys.executable, "-c", "from sqems.cli import main; main()"]


def sqems(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQEMS_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("SQEMS_GRAPH_URI", None)
    return subprocess.run(
        [*SQEMS, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("lake-cli")
    graph, readings = build(data, Shape(shift_offset={"night": 0.1}), data / "graph.db")
    readings.close()
    graph.close()
    done = sqems(data, "lake", "export")
    assert done.returncode == 0, done.stderr
    assert "lake version 1" in done.stdout and "7,680 readings" in done.stdout
    return data


def test_lake_jobs_run_from_the_command_line(data_dir: Path) -> None:
    done = sqems(data_dir, "lake", "compare", "--engine", "duckdb", "--out",
                 str(data_dir / "compare.parquet"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "different  parameter P-TEMP: the mean differs between shifts" in done.stdout
    assert "same       parameter P-TEMP: no significant difference between lines" in done.stdout
    assert pq.read_table(data_dir / "compare.parquet").num_rows >= 6

    done = sqems(data_dir, "lake", "capability", "--engine", "duckdb")
    assert done.returncode == 0, done.stderr
    assert "Cpk [95% CI]" in done.stdout and "LINE-A-M0" in done.stdout

    done = sqems(data_dir, "lake", "spc", "--engine", "duckdb", "--rule", "nelson_1")
    assert done.returncode == 0, done.stderr
    assert "8 series scanned" in done.stdout


def test_summaries_on_spark_go_back_into_the_graph(data_dir: Path) -> None:
    out = data_dir / "summaries.parquet"
    done = sqems(data_dir, "lake", "summaries", "--engine", "spark", "--master", "local[1]",
                 "--write-graph", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "192 run summaries" in done.stdout
    assert "wrote 192 RECORDED actuals to the graph" in done.stdout
    table = pq.read_table(out)
    store = EmbeddedGraphStore(data_dir / "graph.db", read_only=True)
    try:
        assert store.count_edges("RECORDED") == table.num_rows == 192
    finally:
        store.close()


def test_lake_mistakes_are_one_red_line(data_dir: Path, tmp_path: Path) -> None:
    done = sqems(data_dir, "lake", "compare", "--lake", str(tmp_path / "nowhere"),
                 "--engine", "duckdb")  # fmt: skip
    assert done.returncode == 2
    assert "is no lake" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

    newer = tmp_path / "newer"
    newer.mkdir()
    manifest = json.loads((data_dir / "lake" / "lake.json").read_text())
    (newer / "lake.json").write_text(json.dumps({**manifest, "version": 99}))
    done = sqems(data_dir, "lake", "spc", "--lake", str(newer), "--engine", "duckdb")
    assert done.returncode == 2 and "format version 99" in done.stderr
    assert "Traceback" not in done.stderr

    done = sqems(data_dir, "lake", "compare", "--engine", "duckdb", "--master", "local[2]")
    assert done.returncode == 2 and "--master names a Spark master" in done.stderr

    done = sqems(data_dir, "lake", "compare", "--engine", "flink")
    assert done.returncode == 2 and "not one of duckdb, spark" in done.stderr
