"""The audit trail of quality records: append-only, hash-chained, verifiable, exportable.

Every change to a quality record (a CAPA, its actions, its evidence) is one entry: who
(user and role), when (UTC), what (the record's label and uid, the action) and the
record before and after, as JSON. An electronic signature is an entry too, with its
meaning ("approved closure", "verified effective") — in the spirit of 21 CFR Part 11:
the signed record carries the signer's name, the time and the meaning, and the
signature cannot be separated from it.

**Tamper evidence.** Each entry stores the SHA-256 of its own canonical JSON together
with the previous entry's hash; the first entry chains to 64 zeros. Editing, deleting
or reordering an entry breaks the chain at that entry, and :meth:`AuditTrail.verify`
names the first one that does not hold. SQLite triggers refuse UPDATE and DELETE, so
the trail is append-only through SQLite; the chain catches what is done to the file
by other means.

>>> trail = AuditTrail(None)
>>> _ = trail.append("ana", "engineer", "Capa", "CAPA-1", "created", None, {"title": "x"})
>>> trail.verify().ok
True
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqems.errors import NotFound, ValidationFailed

GENESIS = "0" * 64
TRAIL_FILE = "audit-trail.db"
"""The trail's file under the data directory."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS trail (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
    label TEXT NOT NULL, uid TEXT NOT NULL, action TEXT NOT NULL, before TEXT, after TEXT,
    meaning TEXT, prev TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trail_record ON trail (uid, seq);
CREATE TRIGGER IF NOT EXISTS trail_no_update BEFORE UPDATE ON trail
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS trail_no_delete BEFORE DELETE ON trail
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""
_COLUMNS = ("seq", "at", "actor", "role", "label", "uid", "action", "before", "after",
            "meaning", "prev", "hash")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: str
    actor: str
    role: str
    label: str
    uid: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    meaning: str | None
    """An electronic signature's meaning; None for other entries."""
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        """What the hash covers: everything but the hash itself."""
        found = asdict(self)
        del found["hash"]
        return found

    @property
    def is_signature(self) -> bool:
        return self.meaning is not None


def digest(body: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of an entry's body (sorted keys, no spaces)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    broken_at: int | None
    """The first entry whose hash or link does not hold."""
    reason: str
    head: str
    """The hash of the last entry: keep it elsewhere to detect a truncated trail."""


class AuditTrail:
    """The trail in a SQLite file (None: in memory, for tests and one-off tools)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def append(
        self,
        actor: str,
        role: str,
        label: str,
        uid: str,
        action: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        *,
        meaning: str | None = None,
    ) -> Entry:
        """Add an entry, chained to the last one, in one transaction."""
        if not actor.strip():
            raise ValidationFailed("an audit entry needs the user who made the change")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute(
                    "SELECT seq, hash FROM trail ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                draft = Entry(
                    seq=seq,
                    at=datetime.now(UTC).isoformat(timespec="microseconds"),
                    actor=actor,
                    role=role,
                    label=label,
                    uid=uid,
                    action=action,
                    before=_plain(before),
                    after=_plain(after),
                    meaning=meaning,
                    prev=prev,
                    hash="",
                )
                entry = Entry(**{**draft.body(), "hash": digest(draft.body())})
                self._db.execute(
                    f"INSERT INTO trail ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * 12)})",
                    _row(entry),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return entry

    def entries(self, uid: str | None = None, *, after: int = 0, limit: int = 1000) -> list[Entry]:
        """Entries in order, all or one record's."""
        where, args = ("WHERE seq > ?", [after]) if uid is None else (
            "WHERE uid = ? AND seq > ?", [uid, after])  # fmt: skip
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM trail {where} ORDER BY seq LIMIT ?",
                [*args, limit],
            ).fetchall()
        return [_entry(r) for r in rows]

    def __iter__(self) -> Iterator[Entry]:
        after = 0
        while page := self.entries(after=after, limit=5000):
            yield from page
            after = page[-1].seq

    def last(self, uid: str) -> Entry:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM trail WHERE uid = ? ORDER BY seq DESC LIMIT 1",
                [uid],
            ).fetchone()
        if row is None:
            raise NotFound(f"the audit trail has nothing on {uid}")
        return _entry(row)

    def verify(self) -> Verification:
        """Walk the chain from the first entry; stop at the first that does not hold."""
        prev, count, expected = GENESIS, 0, 1
        for entry in self:
            count += 1
            if entry.seq != expected:
                return _broken(
                    entry.seq,
                    count - 1,
                    prev,
                    f"entry {expected} is missing (the next is {entry.seq})",
                )
            if entry.prev != prev:
                return _broken(entry.seq, count - 1, prev,
                               f"entry {entry.seq} does not follow entry {entry.seq - 1}: its "
                               "link to the previous hash is wrong")  # fmt: skip
            if digest(entry.body()) != entry.hash:
                return _broken(entry.seq, count - 1, prev,
                               f"entry {entry.seq} was changed after it was written: its "
                               "content does not match its hash")  # fmt: skip
            prev, expected = entry.hash, expected + 1
        return Verification(True, count, None, f"{count} entries, chain intact", prev)

    def export(self, form: str = "jsonl") -> str:
        """The whole trail as JSON lines (each entry with its hashes) or CSV."""
        if form == "jsonl":
            return "".join(json.dumps(asdict(e), sort_keys=True) + "\n" for e in self)
        if form == "csv":
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(_COLUMNS)
            for e in self:
                writer.writerow(
                    [json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for v in _row(e)]
                )
            return out.getvalue()
        raise ValidationFailed(f"export as jsonl or csv, not {form!r}")


def verify_export(text: str) -> Verification:
    """Verify a JSON-lines export on its own, away from the database."""
    prev, count = GENESIS, 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = Entry(**json.loads(line))
        except (ValueError, TypeError) as exc:
            return _broken(number, count, prev, f"line {number} is not an audit entry: {exc}")
        count += 1
        if entry.prev != prev or digest(entry.body()) != entry.hash:
            return _broken(
                entry.seq,
                count - 1,
                prev,
                f"entry {entry.seq} (line {number}) does not match its hash chain",
            )
        prev = entry.hash
    return Verification(True, count, None, f"{count} entries, chain intact", prev)


def _broken(seq: int, good: int, head: str, reason: str) -> Verification:
    return Verification(False, good, seq, reason, head)


def _plain(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A JSON-ready copy (datetimes and enums as text), so the hash is stable."""
    if record is None:
        return None
    loaded: dict[str, Any] = json.loads(json.dumps(dict(record), default=str, sort_keys=True))
    return loaded


def _row(e: Entry) -> list[Any]:
    return [e.seq, e.at, e.actor, e.role, e.label, e.uid, e.action,
            None if e.before is None else json.dumps(e.before, sort_keys=True),
            None if e.after is None else json.dumps(e.after, sort_keys=True),
            e.meaning, e.prev, e.hash]  # fmt: skip


def _entry(row: tuple[Any, ...]) -> Entry:
    values = dict(zip(_COLUMNS, row, strict=True))
    for key in ("before", "after"):
        values[key] = None if values[key] is None else json.loads(values[key])
    return Entry(**values)
