"""The readings of several stores read as one: what several ingestion workers wrote.

Each worker of ``sqems ingest --workers N`` writes a DuckDB file of its own (DuckDB takes
one writing process per file), and the workers own disjoint sets of series, so the
readings of the deployment are the plain union of the files, never a reading twice.
:class:`ReadingsUnion` attaches the files read-only to one in-memory DuckDB and answers
what the Parquet export and a count need from all of them at once. DuckDB lets no other
process open a file while a worker writes it: export with the workers stopped (or let
each worker's file be read by the process that holds it).

The export has the single store's layout exactly (one Parquet file set per day and
line, the columns of the ``readings`` view), so whatever reads the lake cannot tell
how many workers wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from sqems.errors import NotFound

COLUMNS = (
    "r.message_id, s.site, s.line, s.machine, s.parameter, r.ts, r.value, s.unit, "
    "r.quality, r.received_at"
)
"""The ``readings`` view's columns, in its order (series numbers are per file, so each
file's samples are joined to its own series)."""


class ReadingsUnion:
    """Readings stores at ``paths``, read-only, as one."""

    def __init__(self, paths: Sequence[Path]) -> None:
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise NotFound(f"readings store {missing[0]} does not exist")
        self.paths = list(paths)
        self._db = duckdb.connect(":memory:")
        self._db.execute("SET TimeZone = 'UTC'")
        for k, path in enumerate(self.paths):
            self._db.execute(f"ATTACH '{_quoted(path)}' AS w{k} (READ_ONLY)")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ReadingsUnion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _readings(self) -> str:
        if not self.paths:
            return (
                "SELECT NULL::VARCHAR AS message_id, NULL::VARCHAR AS site, NULL::VARCHAR "
                "AS line, NULL::VARCHAR AS machine, NULL::VARCHAR AS parameter, "
                "NULL::TIMESTAMPTZ AS ts, NULL::DOUBLE AS value, NULL::VARCHAR AS unit, "
                "NULL::VARCHAR AS quality, NULL::TIMESTAMPTZ AS received_at WHERE false"
            )
        return " UNION ALL ".join(
            f"SELECT {COLUMNS} FROM w{k}.samples r JOIN w{k}.series s ON s.id = r.series"
            for k in range(len(self.paths))
        )

    def count(self) -> int:
        """Readings in all the stores."""
        if not self.paths:
            return 0
        total = " + ".join(f"(SELECT count(*) FROM w{k}.samples)" for k in range(len(self.paths)))
        row = self._db.execute(f"SELECT {total}").fetchall()[0]
        return int(row[0])

    def series(self, machine: str, parameter: str) -> list[tuple[object, float]]:
        """(time, value) of one machine's parameter from whichever store holds it,
        oldest first."""
        rows = self._db.execute(
            f"SELECT ts, value FROM ({self._readings()}) WHERE machine = ? AND parameter = ? "
            "ORDER BY ts",
            [machine, parameter],
        ).fetchall()
        return [(ts, float(v)) for ts, v in rows]

    def export_parquet(self, folder: Path) -> int:
        """Write every reading of every store under ``folder``, partitioned by day and
        line as :meth:`ReadingsStore.export_parquet
        <sqems.ingestion.readings.ReadingsStore.export_parquet>` does; returns how many
        readings were written."""
        folder.mkdir(parents=True, exist_ok=True)
        count = self.count()
        if count:
            self._db.execute(
                f"COPY (SELECT *, strftime(ts, '%Y-%m-%d') AS day FROM ({self._readings()})) "
                f"TO '{_quoted(folder)}' (FORMAT PARQUET, PARTITION_BY (day, line), "
                "OVERWRITE_OR_IGNORE TRUE)"
            )
        return count


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")
