"""The readings store: raw sensor readings in a DuckDB file, exportable as Parquet.

Readings (10 Hz and faster) do not become graph nodes. They are kept here in two
tables: ``series`` names each stream once (site, line, machine, parameter and the unit
its values are stored in, always the parameter's own), and ``samples`` holds one narrow
row per reading (series number, message id, time, value, quality, arrival time). The
view ``readings`` joins them back into one wide row per reading; the Parquet export
and ad-hoc SQL read that.

A reading is identified by its series, the sender's message id and its timestamp. MQTT
QoS 1 delivers at least once, and a redelivery repeats the message byte for byte, so a
reading already stored under that identity is recognised and counted as a duplicate,
never stored twice. The timestamp is part of the identity for two reasons: sensors
that number their messages with a counter start again at 1 after a reboot (a message
id alone would then drop every new reading as a "duplicate"), and it lets the
duplicate check look only at the stored readings of the batch's time range, which
DuckDB finds from its min/max zone maps, so the check costs the same on the first day
and after a year of data.

:meth:`ReadingsStore.export_parquet` writes one Parquet file set per day and line
(``day=2026-03-02/line=LINE-PCB/…``), the layout Spark and DuckDB read as partitions.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

SCHEMA = (
    "CREATE SEQUENCE IF NOT EXISTS series_ids",
    """CREATE TABLE IF NOT EXISTS series (
        id INTEGER PRIMARY KEY DEFAULT nextval('series_ids'),
        site VARCHAR NOT NULL,
        line VARCHAR NOT NULL,
        machine VARCHAR NOT NULL,
        parameter VARCHAR NOT NULL,
        unit VARCHAR NOT NULL,
        UNIQUE (site, line, machine, parameter, unit)
    )""",
    """CREATE TABLE IF NOT EXISTS samples (
        series INTEGER NOT NULL,
        message_id VARCHAR NOT NULL,
        ts TIMESTAMPTZ NOT NULL,
        value DOUBLE NOT NULL,
        quality VARCHAR NOT NULL,
        received_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE OR REPLACE VIEW readings AS
        SELECT r.message_id, s.site, s.line, s.machine, s.parameter, r.ts, r.value,
               s.unit, r.quality, r.received_at
        FROM samples r JOIN series s ON s.id = r.series""",
)

_TS = pa.timestamp("us", tz="UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


Column: TypeAlias = list[str] | list[float] | pa.Array
"""A message's part of a column: Python values, or an Arrow array read straight from
the payloads."""


class ReadingBatch:
    """Readings on their way to the store, appended a message at a time (a message's
    readings share a series and an arrival time) and kept as each message's part of
    each column until :meth:`table` joins them; each reading's time is kept as
    microseconds since the epoch (UTC)."""

    __slots__ = (
        "_ids",
        "_micros",
        "_quality",
        "_received",
        "_rows",
        "_series",
        "_sizes",
        "_table",
        "_values",
    )

    def __init__(self) -> None:
        self._ids: list[Column] = []  # all of these: one entry per message
        self._micros: list[npt.NDArray[np.int64]] = []
        self._values: list[Column] = []
        self._quality: list[Column] = []
        self._series: list[int] = []
        self._received: list[float] = []
        self._sizes: list[int] = []
        self._rows = 0
        self._table: pa.Table | None = None

    def __len__(self) -> int:
        return self._rows

    def extend(
        self,
        series: int,
        message_ids: Column,
        micros: npt.NDArray[np.int64],
        values: Column,
        quality: Column,
        received_at: datetime,
    ) -> None:
        self._ids.append(message_ids)
        self._micros.append(micros)
        self._values.append(values)
        self._quality.append(quality)
        self._series.append(series)
        self._received.append(received_at.timestamp())
        self._sizes.append(len(micros))
        self._rows += len(micros)
        self._table = None

    def table(self) -> pa.Table:
        """The batch as an Arrow table (built once), with each row's position as ``i``."""
        if self._table is None:
            sizes = np.asarray(self._sizes, dtype=np.int64)
            received = np.repeat(np.round(np.asarray(self._received) * 1e6).astype(np.int64), sizes)
            micros = np.concatenate(self._micros) if self._micros else np.zeros(0, np.int64)
            self._table = pa.table(
                {
                    "i": pa.array(np.arange(self._rows, dtype=np.int64)),
                    "series": pa.array(np.repeat(np.asarray(self._series, np.int32), sizes)),
                    "message_id": _joined(self._ids, pa.string()),
                    "ts": pa.array(micros, _TS),
                    "value": _joined(self._values, pa.float64()),
                    "quality": _joined(self._quality, pa.string()),
                    "received_at": pa.array(received, _TS),
                }
            )
        return self._table

    def micros(self) -> npt.NDArray[np.int64]:
        """Each reading's timestamp in microseconds since the epoch."""
        micros: npt.NDArray[np.int64] = self.table().column("ts").cast(pa.int64()).to_numpy()
        return micros

    def seconds(self) -> FloatArray:
        """Each reading's timestamp as POSIX seconds."""
        seconds: FloatArray = self.micros() / 1e6
        return seconds

    def time(self, row: int) -> datetime:
        """The timestamp of reading ``row`` (in UTC)."""
        return EPOCH + timedelta(microseconds=int(self.micros()[row]))

    def values(self) -> FloatArray:
        """Each reading's value."""
        values: FloatArray = self.table().column("value").to_numpy()
        return values

    def good(self) -> BoolArray:
        """Which readings are of good quality."""
        good: BoolArray = pc.equal(self.table().column("quality"), "good").to_numpy()
        return good

    def series(self) -> npt.NDArray[np.int32]:
        """Each reading's series number."""
        series: npt.NDArray[np.int32] = self.table().column("series").to_numpy()
        return series


def _joined(parts: list[Column], kind: pa.DataType) -> pa.Array:
    """The messages' parts of a column as one Arrow array (runs of Python values are
    converted together)."""
    arrays: list[pa.Array] = []
    run: list[object] = []
    for part in parts:
        if isinstance(part, list):
            run += part
            continue
        if run:
            arrays.append(pa.array(run, kind))
            run = []
        arrays.append(part)
    if run or not arrays:
        arrays.append(pa.array(run, kind))
    return arrays[0] if len(arrays) == 1 else pa.concat_arrays(arrays)


def micros_of(times: list[datetime]) -> npt.NDArray[np.int64]:
    """Aware datetimes as microseconds since the epoch, exactly."""
    return np.fromiter(
        ((t - EPOCH) // _MICROSECOND for t in times), dtype=np.int64, count=len(times)
    )


class ReadingsStore:
    """Readings in a DuckDB file (``path`` None: in memory)."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._db = duckdb.connect(":memory:" if path is None else str(path))
        self._db.execute("SET TimeZone = 'UTC'")
        # one thread: the batches are appended one at a time by the ingestion worker,
        # and DuckDB's helper threads cost more CPU than they save there (measured);
        # the Parquet export takes every core for itself
        self._db.execute("SET threads = 1")
        self._series: dict[tuple[str, str, str, str, str], int] = {}
        self._latest: dict[int, int] = {}
        """Series number -> the newest stored timestamp (microseconds), once looked up."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                wide = _wide_table(self._db)
                if wide:
                    self._db.execute("ALTER TABLE readings RENAME TO readings_wide")
                for statement in SCHEMA:
                    self._db.execute(statement)
                if wide:
                    _migrate_wide(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def series_id(self, site: str, line: str, machine: str, parameter: str, unit: str) -> int:
        """The number of a series (registered on first use)."""
        key = (site, line, machine, parameter, unit)
        found = self._series.get(key)
        if found is not None:
            return found
        with self._lock:
            self._db.execute(
                "INSERT INTO series (site, line, machine, parameter, unit) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                list(key),
            )
            row = self._db.execute(
                "SELECT id FROM series WHERE site = ? AND line = ? AND machine = ? "
                "AND parameter = ? AND unit = ?",
                list(key),
            ).fetchall()[0]
        assert row is not None
        self._series[key] = int(row[0])
        return int(row[0])

    def write(self, batch: ReadingBatch) -> BoolArray:
        """Store the batch's new readings in one transaction; returns which rows were
        stored (the others were duplicates: stored already, or repeated in the batch)."""
        n = len(batch)
        fresh: BoolArray = np.ones(n, dtype=np.bool_)
        if not n:
            return fresh
        table = batch.table()
        series, micros = batch.series(), batch.micros()
        ids = table.column("message_id")
        if pc.count_distinct(ids).as_py() != n:  # a message id repeated in the batch
            seen: set[tuple[int, str, int]] = set()
            for i, key in enumerate(
                zip(series.tolist(), ids.to_pylist(), micros.tolist(), strict=True)
            ):
                if key in seen:
                    fresh[i] = False
                seen.add(key)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                # a reading newer than everything stored of its series cannot be stored
                # already; only older ones (a redelivery, a late gateway) are looked up
                stale = self._stale(series, micros)
                if stale.any():
                    self._db.register("batch", table.filter(pa.array(stale)))
                    older = micros[stale]
                    known = self._db.execute(
                        "SELECT b.i FROM batch b JOIN (SELECT series, message_id, ts FROM "
                        "samples WHERE ts BETWEEN make_timestamptz($lo) AND "
                        "make_timestamptz($hi)) r USING (series, message_id, ts)",
                        {"lo": int(older.min()), "hi": int(older.max())},
                    ).fetchall()
                    for (i,) in known:
                        fresh[i] = False
                if fresh.any():
                    self._db.register(
                        "batch", table if fresh.all() else table.filter(pa.array(fresh))
                    )
                    self._db.execute(
                        "INSERT INTO samples SELECT series, message_id, ts, value, quality, "
                        "received_at FROM batch"
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._latest.clear()  # reloaded from what the file holds
                raise
            finally:
                self._db.unregister("batch")
            for number in np.unique(series[fresh]).tolist():
                newest = int(micros[fresh & (series == number)].max())
                self._latest[number] = max(self._latest[number], newest)
        return fresh

    def _stale(self, series: npt.NDArray[np.int32], micros: npt.NDArray[np.int64]) -> BoolArray:
        """Which readings are not newer than the newest stored reading of their series."""
        stale: BoolArray = np.zeros(series.size, dtype=np.bool_)
        for number in np.unique(series).tolist():
            latest = self._latest.get(number)
            if latest is None:
                rows = self._db.execute(
                    "SELECT coalesce(max(epoch_us(ts)), -9223372036854775807) FROM samples "
                    "WHERE series = ?",
                    [number],
                ).fetchall()
                latest = self._latest[number] = int(rows[0][0])
            stale |= (series == number) & (micros <= latest)
        return stale

    def count(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM samples").fetchall()[0]
        return int(row[0]) if row else 0

    def series(
        self,
        machine: str,
        parameter: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[tuple[datetime, float]]:
        """(time, value) of one machine's parameter, oldest first."""
        query = (
            "SELECT ts, value FROM samples WHERE series IN "
            "(SELECT id FROM series WHERE machine = ? AND parameter = ?)"
        )
        params: list[object] = [machine, parameter]
        if start is not None:
            query += " AND ts >= ?"
            params.append(start)
        if end is not None:
            query += " AND ts <= ?"
            params.append(end)
        with self._lock:
            return [
                (ts, float(v))
                for ts, v in self._db.execute(query + " ORDER BY ts", params).fetchall()
            ]

    def mean(self, machine: str, parameter: str, start: float, end: float) -> float | None:
        """The mean of one series' readings between POSIX times ``start`` and ``end``
        (None when there are none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT avg(value) FROM samples WHERE series IN "
                "(SELECT id FROM series WHERE machine = ? AND parameter = ?) "
                "AND ts BETWEEN to_timestamp(?) AND to_timestamp(?)",
                [machine, parameter, start, end],
            ).fetchall()[0]
        return None if row is None or row[0] is None else float(row[0])

    def export_parquet(self, folder: Path) -> int:
        """Write every reading under ``folder`` partitioned by day and line; returns how
        many readings were written."""
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM samples").fetchall()[0]
            self._db.execute("RESET threads")
            try:
                self._db.execute(
                    "COPY (SELECT *, strftime(ts, '%Y-%m-%d') AS day FROM readings) "
                    f"TO '{_quoted(folder)}' (FORMAT PARQUET, PARTITION_BY (day, line), "
                    "OVERWRITE_OR_IGNORE TRUE)"
                )
            finally:
                self._db.execute("SET threads = 1")
        return int(row[0]) if row else 0


def _wide_table(db: duckdb.DuckDBPyConnection) -> bool:
    """Whether the file holds the first layout: one wide ``readings`` table."""
    row = db.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'readings' "
        "AND schema_name = 'main'"
    ).fetchall()[0]
    return bool(row and row[0])


def _migrate_wide(db: duckdb.DuckDBPyConnection) -> None:
    db.execute(
        "INSERT INTO series (site, line, machine, parameter, unit) "
        "SELECT DISTINCT site, line, machine, parameter, unit FROM readings_wide "
        "ON CONFLICT DO NOTHING"
    )
    db.execute(
        "INSERT INTO samples SELECT s.id, w.message_id, w.ts, w.value, w.quality, "
        "w.received_at FROM readings_wide w JOIN series s USING "
        "(site, line, machine, parameter, unit) ORDER BY w.ts"
    )
    db.execute("DROP TABLE readings_wide")


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")
