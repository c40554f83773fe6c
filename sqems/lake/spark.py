"""Lake jobs on Apache Spark: the session, and the engine the jobs run on.

:func:`session` starts (or joins) a Spark session for ``local[*]`` or a standalone
cluster (``spark://host:port``) with small JVMs, UTC time, partition columns read as
strings and the Python workers on this interpreter (so they import SQEMS). The jobs'
per-group numpy work runs on the executors through ``groupBy().applyInArrow``, the
same function DuckDB calls in this process.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sqems.errors import ValidationFailed
from sqems.lake.engine import GroupFunction, _empty_readings
from sqems.lake.layout import Lake, LakeError, run_hours

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

MEMORY = "1g"
"""Driver and executor memory: the jobs stream Parquet and ship small groups."""


def session(
    master: str = "local[*]",
    *,
    app_name: str = "sqems-lake",
    shuffle_partitions: int = 8,
    memory: str = MEMORY,
    conf: dict[str, str] | None = None,
) -> SparkSession:
    """A Spark session on ``master`` for lake jobs (the caller stops it).

    ``master`` is ``local[N]``/``local[*]`` or ``spark://host:port``; driver and
    executors get ``memory`` each, the web UI is off, times are UTC."""
    if not (master.startswith("local") or master.startswith("spark://")):
        raise ValidationFailed(f"Spark master {master!r} is neither local[N] nor spark://host:port")
    try:
        from pyspark.sql import SparkSession  # noqa: PLC0415 - pyspark is the lake extra
    except ImportError as exc:
        raise ValidationFailed(
            "Spark is not installed: install SQEMS with the lake extra "
            "(pip install 'sqems[lake]'), or run with --engine duckdb"
        ) from exc
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.memory", memory)
        .config("spark.executor.memory", memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class SparkEngine:
    """Jobs on a Spark session (``owned``: stopped by :meth:`close`)."""

    name = "spark"

    def __init__(self, spark: SparkSession, *, owned: bool = False) -> None:
        self.spark = spark
        self.owned = owned

    def register(self, name: str, table: pa.Table) -> None:
        self.spark.createDataFrame(table).createOrReplaceTempView(name)

    def attach(self, lake: Lake) -> None:
        from pyspark.errors import PySparkException  # noqa: PLC0415

        try:
            files = lake.reading_files()
            if files:
                frame = self.spark.read.option("basePath", str(lake.readings)).parquet(
                    *(str(f) for f in files)
                )
                frame.createOrReplaceTempView("readings")
            else:
                self.register("readings", _empty_readings())
            for table in ("runs", "inspections", "parameters"):
                self.spark.read.parquet(str(lake.table(table))).createOrReplaceTempView(table)
            runs = self.spark.table("runs").toArrow()
        except PySparkException as exc:
            raise LakeError(f"the lake at {lake.root} cannot be read: {_first_line(exc)}") from exc
        self.register("run_hours", run_hours(_utc(runs)))

    def query(self, sql: str) -> pa.Table:
        return self._collect(self.spark.sql(sql))

    def per_group(self, sql: str, fn: GroupFunction, schema: pa.Schema) -> pa.Table:
        def each(table: pa.Table) -> pa.Table:  # typed: Spark picks the Arrow form by hints
            return fn(table)

        frame = self.spark.sql(sql)
        return self._collect(frame.groupBy("g").applyInArrow(each, _ddl(schema))).cast(schema)

    def _collect(self, frame: DataFrame) -> pa.Table:
        from py4j.protocol import Py4JJavaError  # type: ignore[import-untyped]  # noqa: PLC0415
        from pyspark.errors import PySparkException  # noqa: PLC0415

        try:
            return _utc(frame.toArrow())
        except (PySparkException, Py4JJavaError) as exc:
            raise LakeError(f"the Spark job failed: {_first_line(exc)}") from exc

    def close(self) -> None:
        if self.owned:
            self.spark.stop()


def _utc(table: pa.Table) -> pa.Table:
    """Spark hands timestamps back in its session zone; the lake's are UTC."""
    columns = []
    for field in table.schema:
        column = table.column(field.name)
        if pa.types.is_timestamp(field.type):
            column = column.cast(pa.timestamp("us", tz="UTC"))
        columns.append(column)
    return pa.table(columns, names=table.column_names)


_DDL = {
    pa.string(): "string",
    pa.float64(): "double",
    pa.int64(): "bigint",
    pa.bool_(): "boolean",
    pa.timestamp("us", tz="UTC"): "timestamp",
}


def _ddl(schema: pa.Schema) -> str:
    return ", ".join(f"`{f.name}` {_DDL[f.type]}" for f in schema)


def _first_line(exc: Any) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:500]
    return type(exc).__name__
