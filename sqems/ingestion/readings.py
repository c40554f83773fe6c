"""The readings store: raw sensor readings in a DuckDB file, exportable as Parquet.

Readings (10 Hz and faster) do not become graph nodes. They are kept here keyed by
machine, parameter and time, in the parameter's own unit, with the sender's message id
as the primary key — a redelivered message (MQTT QoS 1 delivers at least once) is
recognised and counted as a duplicate, never stored twice.

:meth:`ReadingsStore.export_parquet` writes one Parquet file set per day and line
(``day=2026-03-02/line=LINE-PCB/…``), the layout Spark and DuckDB read as partitions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    message_id VARCHAR PRIMARY KEY,
    site VARCHAR NOT NULL,
    line VARCHAR NOT NULL,
    machine VARCHAR NOT NULL,
    parameter VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    value DOUBLE NOT NULL,
    unit VARCHAR NOT NULL,
    quality VARCHAR NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
)
"""


COLUMN_TYPES = (
    "VARCHAR[]", "VARCHAR[]", "VARCHAR[]", "VARCHAR[]", "VARCHAR[]",
    "TIMESTAMPTZ[]", "DOUBLE[]", "VARCHAR[]", "VARCHAR[]", "TIMESTAMPTZ[]",
)  # fmt: skip
"""Of the table's columns, in order (those of :class:`StoredReading`)."""


@dataclass(frozen=True, slots=True)
class StoredReading:
    message_id: str
    site: str
    line: str
    machine: str
    parameter: str
    ts: datetime
    value: float
    unit: str
    quality: str
    received_at: datetime


class ReadingsStore:
    """Readings in a DuckDB file (``path`` None: in memory)."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._db = duckdb.connect(":memory:" if path is None else str(path))
        self._db.execute("SET TimeZone = 'UTC'")
        self._db.execute(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def write(self, readings: Sequence[StoredReading]) -> list[StoredReading]:
        """Store the readings whose message id is new, in one transaction; returns those
        stored (the rest were duplicates: an id already stored, or repeated here)."""
        if not readings:
            return []
        ids = [r.message_id for r in readings]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                known = {
                    row[0]
                    for row in self._db.execute(
                        "SELECT message_id FROM readings WHERE message_id IN "
                        "(SELECT unnest(?::VARCHAR[]))",
                        [ids],
                    ).fetchall()
                }
                fresh: dict[str, StoredReading] = {}
                for r in readings:
                    if r.message_id not in known:
                        fresh.setdefault(r.message_id, r)
                if fresh:
                    # one statement with a list per column: DuckDB's executemany goes
                    # row by row, a hundred times slower than this
                    rows = list(fresh.values())
                    self._db.execute(
                        "INSERT INTO readings SELECT * FROM (SELECT "
                        + ", ".join(f"unnest(?::{t})" for t in COLUMN_TYPES)
                        + ")",
                        [[getattr(r, name) for r in rows] for name in StoredReading.__slots__],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return list(fresh.values())

    def count(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM readings").fetchone()
        return int(row[0]) if row else 0

    def series(
        self,
        machine: str,
        parameter: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[tuple[datetime, float]]:
        """(time, value) of one machine's parameter, oldest first."""
        query = "SELECT ts, value FROM readings WHERE machine = ? AND parameter = ?"
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
                "SELECT avg(value) FROM readings WHERE machine = ? AND parameter = ? "
                "AND ts BETWEEN to_timestamp(?) AND to_timestamp(?)",
                [machine, parameter, start, end],
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def export_parquet(self, folder: Path) -> int:
        """Write every reading under ``folder`` partitioned by day and line; returns how
        many readings were written."""
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM readings").fetchone()
            self._db.execute(
                "COPY (SELECT *, strftime(ts, '%Y-%m-%d') AS day FROM readings) "
                f"TO '{_quoted(folder)}' (FORMAT PARQUET, PARTITION_BY (day, line), "
                "OVERWRITE_OR_IGNORE TRUE)"
            )
        return int(row[0]) if row else 0


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")
