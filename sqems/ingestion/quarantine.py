"""The quarantine: everything ingestion refused, kept whole, with the reason.

Nothing is dropped. A rejected message (or reading of a message) is kept with its raw
bytes exactly as received, where it came from (an MQTT topic, an import file and row),
when, and a reason a person can act on — ``reading 3: value: Input should be a finite
number (got 'NaN')``, ``unit 'psi' cannot be converted to the parameter's unit 'degC'``.
Once the cause is fixed (the parameter added to the graph, the unit mapping corrected)
an entry can be replayed through the same pipeline; its outcome is recorded and the
raw bytes stay.

The store is a SQLite file in the data directory (``quarantine.db``), WAL, one writer
at a time, safe to read from other processes. A payload is stored once, however many
entries refer to it (each refused reading of a message, a redelivery of it): a
91 KiB message of 1,000 bad readings adds one copy of its bytes and 1,000 short rows,
not 1,000 copies. A file of the first layout (the bytes in every entry) is converted
when it is opened.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqems.errors import NotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS payloads (
    id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    item INTEGER,
    reason TEXT NOT NULL,
    payload INTEGER NOT NULL REFERENCES payloads (id),
    replayed_at TEXT,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS quarantine_open ON quarantine (replayed_at, id);
"""
"""``payloads`` holds each distinct payload once (``digest``: its SHA-256)."""

_COLUMNS = "q.id, q.received_at, q.source, q.item, q.reason, {raw}, q.replayed_at, q.outcome, "
_COLUMNS += "length(p.raw)"
_FROM = " FROM quarantine q JOIN payloads p ON p.id = q.payload"


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
    """The payload as received; only its first bytes when it was listed with a
    ``raw_bytes`` budget (``size`` says how long it is)."""
    replayed_at: str | None = None
    outcome: str | None = None
    size: int = 0
    """The length of the whole payload in bytes."""

    @property
    def truncated(self) -> bool:
        return len(self.raw) < self.size


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
        with self._db:
            first_layout = "raw" in _columns(self._db, "quarantine")
            if first_layout:
                self._db.execute("ALTER TABLE quarantine RENAME TO quarantine_v1")
                self._db.execute("DROP INDEX IF EXISTS quarantine_open")
        self._db.executescript(SCHEMA)
        if first_layout:
            _migrate(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, entries: Iterable[NewEntry]) -> int:
        """Keep ``entries``, each distinct payload once; returns how many."""
        news = list(entries)
        if not news:
            return 0
        now = _now()
        # a message's entries share one bytes object: hash it once, not once per entry
        digests: dict[int, bytes] = {}
        payloads: dict[bytes, bytes] = {}
        for e in news:
            if id(e.raw) not in digests:
                digest = digests[id(e.raw)] = hashlib.sha256(e.raw).digest()
                payloads[digest] = e.raw
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO payloads (digest, raw) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING",
                payloads.items(),
            )
            number = {
                digest: self._db.execute(
                    "SELECT id FROM payloads WHERE digest = ?", (digest,)
                ).fetchone()[0]
                for digest in payloads
            }
            self._db.executemany(
                "INSERT INTO quarantine (received_at, source, item, reason, payload) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    (
                        e.received_at.isoformat() if e.received_at else now,
                        e.source,
                        e.item,
                        e.reason,
                        number[digests[id(e.raw)]],
                    )
                    for e in news
                ),
            )
        return len(news)

    def entries(
        self,
        *,
        after: int = 0,
        limit: int = 50,
        open_only: bool = True,
        raw_bytes: int | None = None,
    ) -> list[Entry]:
        """Entries with an id above ``after``, oldest first; only those not yet replayed
        successfully unless ``open_only`` is false. With ``raw_bytes``, each entry's
        ``raw`` is only the payload's first ``raw_bytes`` bytes (a listing stays small
        when payloads are large)."""
        raw = "p.raw" if raw_bytes is None else "substr(p.raw, 1, ?)"
        query = "SELECT " + _COLUMNS.format(raw=raw) + _FROM + " WHERE q.id > ?"
        if open_only:
            query += " AND (q.outcome IS NULL OR q.outcome != 'accepted')"
        query += " ORDER BY q.id LIMIT ?"
        params = (after, limit) if raw_bytes is None else (max(0, raw_bytes), after, limit)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [Entry(*row) for row in rows]

    def get(self, entry_id: int) -> Entry:
        query = "SELECT " + _COLUMNS.format(raw="p.raw") + _FROM + " WHERE q.id = ?"
        with self._lock:
            row = self._db.execute(query, (entry_id,)).fetchone()
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


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _migrate(db: sqlite3.Connection) -> None:
    """Move the entries of the first layout, their bytes in every row, to payloads
    stored once; ids, times and outcomes stay."""
    db.create_function("sha256", 1, lambda raw: hashlib.sha256(raw).digest(), deterministic=True)
    with db:
        db.execute(
            "INSERT INTO payloads (digest, raw) SELECT sha256(raw), raw FROM quarantine_v1 "
            "WHERE true ON CONFLICT (digest) DO NOTHING"
        )
        db.execute(
            "INSERT INTO quarantine (id, received_at, source, item, reason, payload, "
            "replayed_at, outcome) SELECT o.id, o.received_at, o.source, o.item, o.reason, "
            "p.id, o.replayed_at, o.outcome FROM quarantine_v1 o JOIN payloads p "
            "ON p.digest = sha256(o.raw) ORDER BY o.id"
        )
        db.execute("DROP TABLE quarantine_v1")
    db.execute("VACUUM")  # give the duplicated bytes back to the disk


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
