"""The engines a lake job runs on: DuckDB in this process, or Spark.

A job is written once against :class:`Engine`: it registers the lake's tables as views,
runs SQL both engines understand alike, and hands per-group numpy work to
:meth:`Engine.per_group`, which DuckDB runs here over one ordered scan and Spark runs on
its executors with ``groupBy().applyInArrow``. Results come back as Arrow tables.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from typing import Protocol

import duckdb
import numpy as np
import pyarrow as pa

from sqems.errors import ValidationFailed
from sqems.lake.layout import READINGS, Lake, LakeError, run_hours

GroupFunction = Callable[[pa.Table], pa.Table]
"""Numpy work on one group's rows (an Arrow table), returning rows of the output."""

ENGINES = ("duckdb", "spark")


class Engine(Protocol):
    name: str

    def register(self, name: str, table: pa.Table) -> None:
        """Make a (small) Arrow table a view called ``name``."""
        ...

    def attach(self, lake: Lake) -> None:
        """The lake's tables as views: readings, runs, inspections, parameters, and
        run_hours (see :func:`~sqems.lake.layout.run_hours`)."""
        ...

    def query(self, sql: str) -> pa.Table: ...

    def per_group(self, sql: str, fn: GroupFunction, schema: pa.Schema) -> pa.Table:
        """Run ``fn`` over the rows of ``sql`` group by group: the query's ``g`` column
        (an integer) names the group; the results are concatenated."""
        ...

    def close(self) -> None: ...


def open_engine(name: str | None, *, master: str | None = None) -> Engine:
    """The engine called ``name``: ``duckdb``, ``spark``, or None for Spark when pyspark
    is installed and DuckDB when it is not."""
    if name is None:
        name = "spark" if importlib.util.find_spec("pyspark") is not None else "duckdb"
    if name == "duckdb":
        if master is not None:
            raise ValidationFailed("--master names a Spark master: use it with --engine spark")
        return DuckEngine()
    if name == "spark":
        from sqems.lake.spark import SparkEngine, session  # noqa: PLC0415 - optional extra

        return SparkEngine(session(master or "local[*]"), owned=True)
    raise ValidationFailed(f"engine {name!r} is not one of {', '.join(ENGINES)}")


class DuckEngine:
    """Jobs on DuckDB, in this process, over the lake's Parquet files."""

    name = "duckdb"

    def __init__(self, *, threads: int | None = None) -> None:
        self._db = duckdb.connect(":memory:")
        self._db.execute("SET TimeZone = 'UTC'")
        if threads is not None:
            self._db.execute(f"SET threads = {int(threads)}")
        self._held: list[pa.Table] = []

    def register(self, name: str, table: pa.Table) -> None:
        self._held.append(table)
        self._db.register(name, table)

    def attach(self, lake: Lake) -> None:
        files = [str(f) for f in lake.reading_files()]
        try:
            if files:
                listed = ", ".join(f"'{_quoted(f)}'" for f in files)
                self._db.execute(
                    f"CREATE OR REPLACE VIEW readings AS SELECT * FROM read_parquet([{listed}], "
                    "hive_partitioning = true, hive_types_autocast = false)"
                )
            else:
                empty = _empty_readings()
                self.register("readings", empty)
            for table in ("runs", "inspections", "parameters"):
                self._db.execute(
                    f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM "
                    f"read_parquet('{_quoted(str(lake.table(table)))}')"
                )
            runs = self._db.sql("SELECT * FROM runs").to_arrow_table()
        except duckdb.Error as exc:
            raise LakeError(f"the lake at {lake.root} cannot be read: {exc}") from exc
        self.register("run_hours", run_hours(runs))

    def query(self, sql: str) -> pa.Table:
        try:
            return self._db.sql(sql).to_arrow_table()
        except duckdb.IOException as exc:
            raise LakeError(f"a lake file cannot be read: {exc}") from exc
        except duckdb.InvalidInputException as exc:
            raise LakeError(f"a lake file cannot be read: {exc}") from exc

    def per_group(self, sql: str, fn: GroupFunction, schema: pa.Schema) -> pa.Table:
        out = [fn(group) for group in self._groups(f"SELECT * FROM ({sql}) ORDER BY g")]
        return pa.concat_tables([t.cast(schema) for t in out]) if out else schema.empty_table()

    def _groups(self, sql: str) -> Iterator[pa.Table]:
        """The ordered result of ``sql`` a group at a time, streamed in batches."""
        try:
            reader = self._db.sql(sql).to_arrow_reader(1 << 17)
            pending: list[pa.RecordBatch] = []
            for batch in reader:
                g = batch.column("g").to_numpy()
                if pending and batch.num_rows and g[0] != pending[-1].column("g")[-1].as_py():
                    yield pa.Table.from_batches(pending)
                    pending = []
                cuts = np.flatnonzero(np.diff(g)) + 1
                start = 0
                for cut in cuts.tolist():
                    pending.append(batch.slice(start, cut - start))
                    yield pa.Table.from_batches(pending)
                    pending, start = [], cut
                if start < batch.num_rows:
                    pending.append(batch.slice(start))
            if pending and sum(b.num_rows for b in pending):
                yield pa.Table.from_batches(pending)
        except (duckdb.IOException, duckdb.InvalidInputException) as exc:
            raise LakeError(f"a lake file cannot be read: {exc}") from exc

    def close(self) -> None:
        self._db.close()


def _empty_readings() -> pa.Table:
    schema = READINGS.append(pa.field("day", pa.string())).append(pa.field("line", pa.string()))
    return schema.empty_table()


def _quoted(text: str) -> str:
    return text.replace("'", "''")
