"""The readings lake: a directory of Parquet files any engine can read, versioned.

A lake holds every reading of the readings store, partitioned by day and line, and
beside it the few graph facts a job needs, so a job on Spark or DuckDB never asks the
graph anything::

    lake/
      lake.json                       the manifest: format name, version, row counts
      readings/day=2026-03-02/line=LINE-PCB/data_0.parquet
      runs.parquet                    one row per process run
      inspections.parquet             one row per inspection and run of its batch
      parameters.parquet              one row per parameter, with its spec limits

The columns and types of each table are fixed per format version (:data:`READINGS`,
:data:`RUNS`, :data:`INSPECTIONS`, :data:`PARAMETERS`) and documented in docs/lake.md.
The manifest is written last: a directory without it is an unfinished lake. A reader
refuses a lake whose format version it does not know (:func:`open_lake`), and checks
each file's footer and columns before a job starts, so a damaged file is named up
front instead of failing a distributed job half way.

>>> VERSION
1
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sqems.errors import SqemsError
from sqems.graph_model.nodes import Inspection, Parameter, ProcessRun
from sqems.graph_model.store import Edge, GraphStore

log = logging.getLogger(__name__)

FORMAT = "sqems-lake"
"""The manifest's ``format``: what kind of directory this is."""
VERSION = 1
"""The layout version this code writes and the newest it reads."""
MANIFEST = "lake.json"
READINGS_DIR = "readings"
RUNS_FILE = "runs.parquet"
INSPECTIONS_FILE = "inspections.parquet"
PARAMETERS_FILE = "parameters.parquet"

_TS = pa.timestamp("us", tz="UTC")
N = TypeVar("N")

READINGS = pa.schema(
    [
        ("message_id", pa.string()),
        ("site", pa.string()),
        ("machine", pa.string()),
        ("parameter", pa.string()),
        ("ts", _TS),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("quality", pa.string()),
        ("received_at", _TS),
    ]
)
"""The columns of every readings file; ``day`` (``YYYY-MM-DD``, UTC) and ``line`` come
from the partition directories, as strings."""
PARTITIONS = ("day", "line")

RUNS = pa.schema(
    [
        ("run", pa.string()),
        ("batch", pa.string()),
        ("step", pa.string()),
        ("machine", pa.string()),
        ("line", pa.string()),
        ("site", pa.string()),
        ("shift", pa.string()),
        ("started_at", _TS),
        ("ended_at", _TS),
    ]
)
"""Process runs: where (machine, its line and site), which batch and step, which shift,
and when (``ended_at`` null while the run is open)."""

INSPECTIONS = pa.schema(
    [
        ("inspection", pa.string()),
        ("inspected_at", _TS),
        ("method", pa.string()),
        ("sample_size", pa.int64()),
        ("defects_found", pa.int64()),
        ("verdict", pa.string()),
        ("batch", pa.string()),
        ("run", pa.string()),
        ("step", pa.string()),
        ("machine", pa.string()),
        ("line", pa.string()),
        ("shift", pa.string()),
    ]
)
"""Inspections, one row per run of the inspected batch (a unit's inspection counts for
the batch that produced it), so a job groups them by the step's machine, line or shift.
An inspection of a material lot (incoming inspection) has one row with no batch or run."""

PARAMETERS = pa.schema(
    [
        ("parameter", pa.string()),
        ("name", pa.string()),
        ("unit", pa.string()),
        ("lsl", pa.float64()),
        ("usl", pa.float64()),
        ("target", pa.float64()),
        ("critical", pa.bool_()),
        ("step", pa.string()),
    ]
)
"""Parameters with their spec limits (null when the spec has none) and their step."""

TABLES = {RUNS_FILE: RUNS, INSPECTIONS_FILE: INSPECTIONS, PARAMETERS_FILE: PARAMETERS}
_PARTITION = re.compile(r"^day=(\d{4}-\d{2}-\d{2})$")


class ReadingsSource(Protocol):
    """Readings that can export themselves as day/line Parquet partitions: the readings
    store (:class:`~sqems.ingestion.readings.ReadingsStore`), or the union of several
    ingestion workers' stores (:class:`~sqems.ingestion.union.ReadingsUnion`)."""

    def export_parquet(self, folder: Path) -> int: ...


class LakeError(SqemsError):
    """A lake that cannot be read: missing, of an unknown version, or with a bad file."""

    code = "LAKE_ERROR"


@dataclass(frozen=True, slots=True)
class Lake:
    """An opened lake: where its tables are, and what its manifest says."""

    root: Path
    version: int
    manifest: dict[str, Any]

    @property
    def readings(self) -> Path:
        return self.root / READINGS_DIR

    def table(self, name: str) -> Path:
        """The file of a graph table (``runs``, ``inspections``, ``parameters``)."""
        return self.root / f"{name}.parquet"

    def reading_files(self) -> list[Path]:
        """Every readings file, in partition order."""
        return sorted(self.readings.glob("day=*/line=*/*.parquet"))


def write_lake(folder: Path, readings: ReadingsSource, graph: GraphStore) -> Lake:
    """Write the lake of ``readings`` and ``graph`` at ``folder``.

    The lake is built in a directory beside ``folder`` and moved into place when
    complete, so a reader never sees half a lake; an older lake at ``folder`` is
    replaced. A ``folder`` that holds anything but a lake is refused.
    """
    folder = folder.resolve()
    if folder.exists() and any(folder.iterdir()) and not (folder / MANIFEST).is_file():
        raise LakeError(
            f"{folder} is not empty and holds no {MANIFEST}: refusing to replace it with "
            "a lake; give an empty or new directory"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        count = readings.export_parquet(building / READINGS_DIR)
        (building / READINGS_DIR).mkdir(exist_ok=True)  # an empty store writes nothing
        tables = graph_tables(graph)
        for name, table in tables.items():
            pq.write_table(table, building / name)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "written_at": datetime.now(UTC).isoformat(),
            "rows": {
                "readings": count,
                **{name.removesuffix(".parquet"): t.num_rows for name, t in tables.items()},
            },
        }
        (building / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if folder.exists():
            retired = folder.with_name(f".{folder.name}-retired-{os.getpid()}")
            folder.rename(retired)
            building.rename(folder)
            shutil.rmtree(retired)
        else:
            building.rename(folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    log.info("lake written", extra={"lake": str(folder), "readings": count})
    return Lake(folder, VERSION, manifest)


def open_lake(folder: Path, *, verify: bool = True) -> Lake:
    """The lake at ``folder``; :class:`LakeError` when it is missing, unfinished, of
    another format or of a version this code does not read. With ``verify``, every
    file's footer and columns are checked too (cheap: footers only)."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise LakeError(
            f"{folder} is no lake: it has no {MANIFEST} (write one with `sqems lake export`, "
            "or the export was interrupted)"
        ) from None
    except (OSError, ValueError) as exc:
        raise LakeError(f"cannot read the lake manifest {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LakeError(f"{path} does not describe a {FORMAT} (format: {manifest!r:.80})")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise LakeError(f"{path} names no valid format version ({version!r})")
    if version > VERSION:
        raise LakeError(
            f"the lake at {folder} is format version {version}; this SQEMS reads versions up "
            f"to {VERSION}: upgrade SQEMS to read it"
        )
    lake = Lake(folder.resolve(), version, manifest)
    if verify:
        check_files(lake)
    return lake


def check_files(lake: Lake) -> None:
    """Every file of ``lake`` readable, with the columns and types its table fixes."""
    if not lake.readings.is_dir():
        raise LakeError(f"the lake at {lake.root} has no {READINGS_DIR}/ directory")
    for file in lake.reading_files():
        day = file.parent.parent.name
        if not _PARTITION.match(day):
            raise LakeError(f"{file}: partition {day!r} is not day=YYYY-MM-DD")
        _check_schema(file, READINGS)
    for name, schema in TABLES.items():
        _check_schema(lake.root / name, schema)


def _check_schema(file: Path, schema: pa.Schema) -> None:
    try:
        found = pq.read_schema(file)
    except FileNotFoundError:
        raise LakeError(f"the lake is missing {file}") from None
    except (OSError, pa.ArrowException) as exc:
        raise LakeError(
            f"{file} is not a readable Parquet file ({exc}): export the lake again, or remove "
            "the damaged partition"
        ) from exc
    for field in schema:
        if field.name not in found.names:
            raise LakeError(f"{file} has no column {field.name!r}")
        kind = found.field(field.name).type
        if not _same_type(kind, field.type):
            raise LakeError(
                f"{file}: column {field.name!r} is {kind}, the layout says {field.type}"
            )


def _same_type(found: pa.DataType, wanted: pa.DataType) -> bool:
    if pa.types.is_timestamp(wanted):
        return bool(pa.types.is_timestamp(found)) and found.tz is not None
    if pa.types.is_string(wanted):
        return bool(pa.types.is_string(found) or pa.types.is_large_string(found))
    same: bool = found == wanted
    return same


# --- the graph's tables ----------------------------------------------------------------------


def graph_tables(graph: GraphStore) -> dict[str, pa.Table]:
    """The runs, inspections and parameters tables, read from ``graph`` page by page."""
    machine_of = _edge_map(graph, "ON")
    step_of = _edge_map(graph, "FOR_STEP")
    batch_of = {e.dst: e.src for e in _edges(graph, "RAN")}
    line_of = _edge_map(graph, "PART_OF")  # machine -> line and line -> site alike
    runs: list[ProcessRun] = list(_nodes(graph, "ProcessRun", ProcessRun))
    run_rows: dict[str, list[Any]] = {f.name: [] for f in RUNS}
    runs_of_batch: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        machine = machine_of.get(run.uid)
        line = line_of.get(machine or "")
        batch = batch_of.get(run.uid)
        row = (
            run.uid,
            batch,
            step_of.get(run.uid),
            machine,
            line,
            line_of.get(line or ""),
            run.shift.value,
            run.started_at,
            run.ended_at,
        )
        for name, value in zip(run_rows, row, strict=True):
            run_rows[name].append(value)
        if batch is not None:
            runs_of_batch.setdefault(batch, []).append(i)
    run_table = pa.table(run_rows, schema=RUNS)

    batch_of_unit = {e.dst: e.src for e in _edges(graph, "PRODUCED")}
    inspected: dict[str, list[str]] = {}
    for e in _edges(graph, "INSPECTED"):
        inspected.setdefault(e.src, []).append(e.dst)
    rows: dict[str, list[Any]] = {f.name: [] for f in INSPECTIONS}
    for inspection in _nodes(graph, "Inspection", Inspection):
        batches = sorted(
            {batch_of_unit.get(t, t) for t in inspected.get(inspection.uid, [])}
            & (runs_of_batch.keys() | batch_of_unit.values())
        )
        at: list[tuple[str | None, int | None]] = [
            (b, i) for b in batches for i in runs_of_batch.get(b, [])
        ] or [(None, None)]
        for batch, where in at:
            done: ProcessRun | None = runs[where] if where is not None else None
            cells: tuple[Any, ...] = (
                inspection.uid,
                inspection.inspected_at,
                inspection.method.value,
                inspection.sample_size,
                inspection.defects_found,
                inspection.verdict.value,
                batch,
                None if done is None else done.uid,
                None if where is None else run_rows["step"][where],
                None if where is None else run_rows["machine"][where],
                None if where is None else run_rows["line"][where],
                None if done is None else done.shift.value,
            )
            for column, cell in zip(rows, cells, strict=True):
                rows[column].append(cell)

    step_of_parameter = _edge_map(graph, "PARAMETER_OF")
    params: dict[str, list[Any]] = {f.name: [] for f in PARAMETERS}
    for p in _nodes(graph, "Parameter", Parameter):
        spec = (p.uid, p.name, p.unit, p.lsl, p.usl, p.target, p.critical)
        for column, cell in zip(params, (*spec, step_of_parameter.get(p.uid)), strict=True):
            params[column].append(cell)
    return {
        RUNS_FILE: run_table,
        INSPECTIONS_FILE: pa.table(rows, schema=INSPECTIONS),
        PARAMETERS_FILE: pa.table(params, schema=PARAMETERS),
    }


def _nodes(graph: GraphStore, label: str, kind: type[N]) -> Iterator[N]:
    for page in graph.iter_nodes(label):
        yield from (n for n in page.items if isinstance(n, kind))


def _edges(graph: GraphStore, type_: str) -> Iterable[Edge]:
    for page in graph.iter_edges(type_):
        yield from page.items


def _edge_map(graph: GraphStore, type_: str) -> dict[str, str]:
    """Source -> target of every ``type_`` edge (each source has one)."""
    return {e.src: e.dst for e in _edges(graph, type_)}


def run_hours(runs: pa.Table) -> pa.Table:
    """Each finished run once per UTC hour it overlaps (machine, hour, run, start, end).

    Readings are matched to runs by machine and time; joining on the reading's hour as
    well turns the range join into an equi-join every engine distributes, and each
    reading still meets exactly the runs that cover it.
    """
    done = runs.filter(pc.is_valid(runs.column("ended_at")))
    start = done.column("started_at").cast(pa.int64()).to_numpy()
    end = done.column("ended_at").cast(pa.int64()).to_numpy()
    hour = 3_600_000_000
    first, last = start // hour, end // hour
    count = (last - first + 1).astype(np.int64)
    index = np.repeat(np.arange(done.num_rows), count)
    offsets = np.arange(index.size) - np.repeat(np.cumsum(count) - count, count)
    hours = (first[index] + offsets) * hour
    return pa.table(
        {
            "machine": done.column("machine").take(index),
            "hour": pa.array(hours, _TS),
            "run": done.column("run").take(index),
            "started_at": done.column("started_at").take(index),
            "ended_at": done.column("ended_at").take(index),
        }
    )
