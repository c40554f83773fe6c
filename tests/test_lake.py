"""The readings lake: its layout, and the lake jobs on DuckDB and on Spark (local[2],
started for real once for the module), asserted equal on the same files."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sqems.analysis.rules import evaluate
from sqems.graph_model import EmbeddedGraphStore
from sqems.graph_model.nodes import (
    Batch,
    Inspection,
    InspectionMethod,
    Line,
    Machine,
    Parameter,
    ProcessRun,
    ProcessStep,
    Shift,
    Site,
    Verdict,
)
from sqems.graph_model.store import Edge
from sqems.ingestion.readings import ReadingBatch, ReadingsStore
from sqems.lake import (
    VERSION,
    DuckEngine,
    LakeError,
    capability_table,
    compare,
    open_lake,
    spc_scan,
    summaries,
    write_lake,
    write_recorded,
)
from sqems.lake.layout import INSPECTIONS, MANIFEST, PARAMETERS, READINGS, RUNS
from sqems.lake.spark import SparkEngine, session

RTOL = 1e-9
"""Spark and DuckDB sum in different orders: floating results agree to this relative
tolerance (integers, strings and verdicts exactly)."""
START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
SHIFTS = (Shift.EARLY, Shift.LATE, Shift.NIGHT)


@dataclass
class Shape:
    """A small plant: lines x machines, parameters on one step, runs in a shift pattern,
    readings per run, and planted effects (offset of a shift's runs, of a line's runs,
    extra failure rate of a shift's inspections)."""

    lines: tuple[str, ...] = ("LINE-A", "LINE-B")
    machines_per_line: int = 2
    parameters: tuple[tuple[str, float, float], ...] = (("P-TEMP", 240.0, 260.0),
                                                        ("P-PRESS", 4.0, 6.0))  # fmt: skip
    runs_per_machine: int = 24
    readings_per_run: int = 40
    shift_pattern: tuple[Shift, ...] = SHIFTS
    run_hours: float = 2.5
    shift_offset: dict[str, float] = field(default_factory=dict)
    """Shift -> offset of its runs' readings, in tolerances."""
    fail_rate: float = 0.1
    shift_fail: dict[str, float] = field(default_factory=dict)
    seed: int = 1


def build(
    folder: Path, shape: Shape, graph_file: Path | None = None
) -> tuple[EmbeddedGraphStore, ReadingsStore]:
    rng = np.random.default_rng(shape.seed)
    graph = EmbeddedGraphStore(graph_file)
    readings = ReadingsStore(folder / "readings.duckdb")
    nodes: list = [Site(uid="SITE-1", name="Site"), ProcessStep(uid="STEP-1", name="Mould",
                                                                 sequence=1)]  # fmt: skip
    edges: list[Edge] = []
    specs = []
    for uid, lsl, usl in shape.parameters:
        spec = Parameter(uid=uid, name=uid, unit="degC", lsl=lsl, usl=usl)
        specs.append(spec)
        nodes.append(spec)
        edges.append(Edge("PARAMETER_OF", uid, "STEP-1"))
    batch = ReadingBatch()
    for line in shape.lines:
        nodes.append(Line(uid=line, name=line))
        edges.append(Edge("PART_OF", line, "SITE-1"))
        for m in range(shape.machines_per_line):
            machine = f"{line}-M{m}"
            nodes.append(Machine(uid=machine, name=machine))
            edges += [Edge("PART_OF", machine, line), Edge("CAN_PERFORM", machine, "STEP-1")]
            numbers = {s.uid: readings.series_id("SITE-1", line, machine, s.uid, s.unit)
                       for s in specs}  # fmt: skip
            for r in range(shape.runs_per_machine):
                start = START + timedelta(hours=shape.run_hours * r)
                end = start + timedelta(hours=shape.run_hours * 0.8)
                shift = shape.shift_pattern[r % len(shape.shift_pattern)]
                run, lot = f"RUN-{machine}-{r}", f"B-{machine}-{r}"
                nodes += [
                    Batch(uid=lot, started_at=start, ended_at=end, quantity=10),
                    ProcessRun(uid=run, started_at=start, ended_at=end, shift=shift),
                ]
                edges += [Edge("RAN", lot, run), Edge("ON", run, machine),
                          Edge("FOR_STEP", run, "STEP-1")]  # fmt: skip
                for i in range(3):
                    fails = rng.random() < shape.fail_rate + shape.shift_fail.get(shift.value, 0)
                    uid = f"INS-{run}-{i}"
                    nodes.append(Inspection(
                        uid=uid, inspected_at=end + timedelta(minutes=i + 1),
                        method=InspectionMethod.AOI, sample_size=5,
                        defects_found=1 if fails else 0,
                        verdict=Verdict.FAIL if fails else Verdict.PASS))  # fmt: skip
                    edges.append(Edge("INSPECTED", uid, lot))
                seconds = (end - start).total_seconds()
                times = np.sort(rng.uniform(0, seconds, shape.readings_per_run))
                micros = (int(start.timestamp() * 1e6) + times * 1e6).astype(np.int64)
                for spec in specs:
                    assert spec.lsl is not None and spec.usl is not None
                    tol = spec.usl - spec.lsl
                    centre = (spec.lsl + spec.usl) / 2 + tol * (
                        shape.shift_offset.get(shift.value, 0.0) + rng.normal(0, 0.03)
                    )
                    values = np.round(centre + rng.normal(0, tol / 12, micros.size), 4)
                    n = micros.size
                    batch.extend(numbers[spec.uid], [f"{run}-{spec.uid}-{i}" for i in range(n)],
                                 micros, values.tolist(), ["good"] * n, end)  # fmt: skip
    graph.upsert_nodes(nodes)
    graph.upsert_edges(edges)
    readings.write(batch)
    return graph, readings


def lake_of(tmp: Path, shape: Shape) -> Path:
    graph, readings = build(tmp, shape)
    try:
        write_lake(tmp / "lake", readings, graph)
    finally:
        readings.close()
        graph.close()
    return tmp / "lake"


@pytest.fixture(scope="module")
def spark():
    spark = session("local[2]", shuffle_partitions=4)
    yield spark
    spark.stop()


def run_all(engine, folder: Path) -> dict[str, object]:
    engine.attach(open_lake(folder))
    table = summaries(engine)
    return {
        "summaries": table,
        "spc": spc_scan(engine, ["nelson_1", "nelson_2", "nelson_5"]),
        "capability": capability_table(engine, table),
        "compare": compare(engine, table),
    }


def on_both(spark, folder: Path) -> tuple[dict[str, object], dict[str, object]]:
    duck = DuckEngine()
    try:
        a = run_all(duck, folder)
    finally:
        duck.close()
    b = run_all(SparkEngine(spark), folder)
    return a, b


def assert_tables_equal(a: pa.Table, b: pa.Table) -> None:
    assert a.schema == b.schema
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        if pa.types.is_floating(a.schema.field(name).type):
            for u, v in zip(x, y, strict=True):
                assert (u is None) == (v is None), name
                if u is not None and not (math.isnan(u) and math.isnan(v)):
                    assert u == pytest.approx(v, rel=RTOL, abs=1e-12), name
        else:
            assert x == y, name


def assert_same_answers(a, b) -> None:
    assert_tables_equal(a["summaries"], b["summaries"])
    assert_tables_equal(a["spc"], b["spc"])
    assert_tables_equal(a["capability"], b["capability"])
    ta, tb = a["compare"].table(), b["compare"].table()
    assert_tables_equal(ta.drop_columns(["levels", "answer"]),
                        tb.drop_columns(["levels", "answer"]))  # fmt: skip
    assert a["compare"].untested == b["compare"].untested


def test_lake_layout_is_versioned_and_documented_tables_are_written(tmp_path: Path) -> None:
    folder = lake_of(tmp_path, Shape(runs_per_machine=6))
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format"] == "sqems-lake" and manifest["version"] == VERSION
    assert manifest["rows"]["readings"] == 2 * 2 * 6 * 40 * 2
    assert manifest["rows"]["runs"] == 24 and manifest["rows"]["inspections"] == 72
    days = sorted(p.name for p in (folder / "readings").iterdir())
    assert days == ["day=2026-03-02"]
    lines = sorted(p.name for p in (folder / "readings" / days[0]).iterdir())
    assert lines == ["line=LINE-A", "line=LINE-B"]
    lake = open_lake(folder)
    assert lake.version == VERSION


def test_lake_of_newer_or_unknown_version_is_refused(tmp_path: Path) -> None:
    folder = lake_of(tmp_path, Shape(runs_per_machine=3))
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "version": VERSION + 1}))
    with pytest.raises(LakeError, match=f"format version {VERSION + 1}.*upgrade SQEMS"):
        open_lake(folder)
    (folder / MANIFEST).write_text(json.dumps({**manifest, "format": "other"}))
    with pytest.raises(LakeError, match="does not describe"):
        open_lake(folder)
    (folder / MANIFEST).unlink()
    with pytest.raises(LakeError, match="no lake"):
        open_lake(folder)


def test_lake_with_a_damaged_partition_is_named(tmp_path: Path, spark) -> None:
    folder = lake_of(tmp_path, Shape(runs_per_machine=3))
    bad = sorted((folder / "readings").glob("day=*/line=LINE-B/*.parquet"))[0]
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(LakeError, match=r"line=LINE-B.*not a readable Parquet file"):
        open_lake(folder)
    # unverified, each engine still names the failure in one line
    lake = open_lake(folder, verify=False)
    duck = DuckEngine()
    duck.attach(lake)
    with pytest.raises(LakeError, match="cannot be read"):
        summaries(duck)
    duck.close()
    engine = SparkEngine(spark)
    with pytest.raises(LakeError):
        engine.attach(lake)
        summaries(engine)


def test_summaries_are_the_streaming_paths_recorded_actuals(tmp_path: Path) -> None:
    graph, readings = build(tmp_path, Shape(runs_per_machine=4))
    write_lake(tmp_path / "lake", readings, graph)
    engine = DuckEngine()
    engine.attach(open_lake(tmp_path / "lake"))
    table = summaries(engine)
    assert table.num_rows == 2 * 2 * 4 * 2
    runs = {r.uid: r for r in graph.find("ProcessRun")}
    for row in table.to_pylist()[:6]:
        run = runs[row["run"]]
        span = run.interval()
        assert span is not None
        expected = readings.mean(row["machine"], row["parameter"], span[0], span[1])
        assert row["mean"] == pytest.approx(expected, rel=1e-12)
        assert row["readings"] == 40
    assert write_recorded(graph, table) == table.num_rows
    edges = graph.edges(list(runs), {"RECORDED": "out"})
    assert len(edges) == table.num_rows
    first = table.to_pylist()[0]
    found = next(e for e in edges if (e.src, e.dst) == (first["run"], first["parameter"]))
    assert found.props["value"] == round(first["mean"], 6)
    # the SPC scan: each series' hits are the rules' hits over its readings in time
    # order, against the live monitor's limits
    scan = spc_scan(engine, ["nelson_1", "nelson_2", "we_2"]).to_pylist()
    for row in scan[:6]:
        values = [v for _, v in readings.series(row["machine"], row["parameter"])]
        spec = graph.get(row["parameter"])
        assert isinstance(spec, Parameter) and spec.lsl is not None and spec.usl is not None
        sigma = (spec.usl - spec.lsl) / 8
        assert (row["center"], row["sigma"]) == ((spec.lsl + spec.usl) / 2, sigma)
        found = evaluate(values, row["center"], sigma, [row["rule"]])[row["rule"]]
        assert (row["readings"], row["hits"]) == (len(values), found.size)
    assert sum(r["hits"] for r in scan if r["rule"] == "nelson_2") > 0
    engine.close()
    readings.close()
    graph.close()


def test_spark_and_duckdb_give_equal_answers_and_find_a_planted_night_shift(
    tmp_path: Path, spark
) -> None:
    shape = Shape(shift_offset={"night": 0.08}, shift_fail={"night": 0.35})
    a, b = on_both(spark, lake_of(tmp_path, shape))
    assert_same_answers(a, b)
    found = {(f.subject, f.factor): f for f in a["compare"].findings}
    temp = found["parameter P-TEMP", "shift"]
    assert temp.significant and temp.gap.high == "night"
    assert temp.gap.lower > 0 and "differs between shifts" in temp.answer
    inspections = found["inspections after step STEP-1", "shift"]
    assert inspections.significant and inspections.gap.high == "night"
    assert not found["parameter P-TEMP", "line"].significant
    caps = a["capability"].to_pylist()
    assert len(caps) == 2 * 4 and all(c["cpk_lower"] < c["cpk"] < c["cpk_upper"] for c in caps)
    spc = a["spc"]
    assert spc.num_rows == 2 * 4 * 3 and set(spc.column("rule").to_pylist()) == {
        "nelson_1", "nelson_2", "nelson_5"}  # fmt: skip


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_null_plant_shows_no_difference(tmp_path: Path, seed: int) -> None:
    """Nothing planted: Holm keeps the family's false-positive rate at 5 %, so three
    seeds find nothing (a false alarm in one of them would have odds near 15 %, and
    these seeds are fixed)."""
    folder = lake_of(tmp_path, Shape(seed=seed, runs_per_machine=18))
    engine = DuckEngine()
    engine.attach(open_lake(folder))
    result = compare(engine)
    engine.close()
    assert result.findings
    assert not [f.answer for f in result.findings if f.significant]
    assert all("no significant difference" in f.answer for f in result.findings)


def test_a_differently_shaped_lake_works_on_both_engines(tmp_path: Path, spark) -> None:
    """Three lines of one machine each, one parameter, two shifts only, a planted line
    offset through a shift pattern that is not the generator's."""
    shape = Shape(lines=("L1", "L2", "L3"), machines_per_line=1,
                  parameters=(("P-GAP", 0.1, 0.3),), runs_per_machine=16, run_hours=7.0,
                  shift_pattern=(Shift.EARLY, Shift.EARLY, Shift.LATE), seed=4)  # fmt: skip
    folder = lake_of(tmp_path, shape)
    assert len(list((folder / "readings").iterdir())) > 1  # several days
    a, b = on_both(spark, folder)
    assert_same_answers(a, b)
    factors = {(f.subject, f.factor) for f in a["compare"].findings}
    assert ("parameter P-GAP", "shift") in factors and ("parameter P-GAP", "line") in factors
    assert a["summaries"].num_rows == 3 * 16


def test_an_export_replaces_an_older_lake_and_refuses_other_directories(tmp_path: Path) -> None:
    folder = lake_of(tmp_path, Shape(runs_per_machine=2))
    (tmp_path / "again").mkdir()
    graph, readings = build(tmp_path / "again", Shape(runs_per_machine=3))
    write_lake(folder, readings, graph)
    assert json.loads((folder / MANIFEST).read_text())["rows"]["runs"] == 12
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(LakeError, match="not empty"):
        write_lake(other, readings, graph)
    readings.close()
    graph.close()
    shutil.rmtree(folder)


def test_docs_name_every_column_of_the_layout() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "lake.md").read_text()
    assert f'"version": {VERSION}' in text and f"format version {VERSION}" in text
    for schema in (READINGS, RUNS, INSPECTIONS, PARAMETERS):
        for name in schema.names:
            assert f"`{name}`" in text, name
