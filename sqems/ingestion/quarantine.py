"""The quarantine: everything ingestion refused, kept whole, with the reason.

Nothing is dropped. A rejected message (or reading of a message) is kept with its raw
bytes exactly as received, where it came from (an MQTT topic, an import file and row),
when, and a reason a person can act on — ``reading 3: value: Input should be a finite
number (got 'NaN')``, ``unit 'psi' cannot be converted to the parameter's unit 'degC'``.
Once the cause is fixed (the parameter added to the graph, the unit mapping corrected)
an entry can be replayed through the same pipeline; its outcome is recorded and the
raw bytes stay.

The store is a SQLite file in the data directory (``quarantine.db``), WAL, one writer
at a time, safe to read from other processes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqems.errors import NotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    item INTEGER,
    reason TEXT NOT NULL,
    raw BLOB NOT NULL,
    replayed_at TEXT,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS quarantine_open ON quarantine (replayed_at, id);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    received_at: str
    source: str
    """``mqtt:<topic>`` or ``file:<kind>:<path>#<row>``."""
    item: int | None
    """The reading's position in the payload, when only it was refused."""
    reason: str
    raw: bytes
    replayed_at: str | None = None
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class NewEntry:
    source: str
    reason: str
    raw: bytes
    item: int | None = None
    received_at: datetime | None = None


class Quarantine:
    """The quarantine of one data directory (``path`` None: in memory, for tests)."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path), check_same_thread=False, timeout=30
        )
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, entries: Iterable[NewEntry]) -> int:
        """Keep ``entries``; returns how many."""
        now = _now()
        rows = [
            (e.received_at.isoformat() if e.received_at else now, e.source, e.item, e.reason, e.raw)
            for e in entries
        ]
        if not rows:
            return 0
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO quarantine (received_at, source, item, reason, raw) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def entries(self, *, after: int = 0, limit: int = 50, open_only: bool = True) -> list[Entry]:
        """Entries with an id above ``after``, oldest first; only those not yet replayed
        successfully unless ``open_only`` is false."""
        query = "SELECT * FROM quarantine WHERE id > ?"
        if open_only:
            query += " AND (outcome IS NULL OR outcome != 'accepted')"
        query += " ORDER BY id LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (after, limit)).fetchall()
        return [Entry(*row) for row in rows]

    def get(self, entry_id: int) -> Entry:
        with self._lock:
            row = self._db.execute("SELECT * FROM quarantine WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise NotFound(f"quarantine entry {entry_id} does not exist")
        return Entry(*row)

    def count(self, *, open_only: bool = False) -> int:
        query = "SELECT count(*) FROM quarantine"
        if open_only:
            query += " WHERE outcome IS NULL OR outcome != 'accepted'"
        with self._lock:
            return int(self._db.execute(query).fetchone()[0])

    def mark_replayed(self, entry_id: int, outcome: str) -> Entry:
        """Record a replay's outcome (``accepted``, ``duplicate`` or the new reason)."""
        with self._lock, self._db:
            changed = self._db.execute(
                "UPDATE quarantine SET replayed_at = ?, outcome = ? WHERE id = ?",
                (_now(), outcome, entry_id),
            ).rowcount
        if not changed:
            raise NotFound(f"quarantine entry {entry_id} does not exist")
        return self.get(entry_id)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
