"""The audit trail of quality records: append-only, keyed hash chain, verifiable, exportable.

Every change to a quality record (a CAPA, its actions, its evidence) is one entry: who
(user and role), when (UTC), what (the record's label and uid, the action) and the
record before and after, as JSON. An electronic signature is an entry too, with its
meaning ("approved closure", "verified effective") — in the spirit of 21 CFR Part 11:
the signed record carries the signer's name, the time and the meaning, and the
signature cannot be separated from it.

**Tamper evidence.** Each entry stores a seal of its own canonical JSON together with
the previous entry's seal; the first entry chains to 64 zeros. The seal is an
HMAC-SHA256 under the trail's key, which is kept apart from the trail (a file of its
own, mode 0600, or ``SQEMS_AUDIT_KEY``): whoever can write the trail's file but not
read the key cannot rewrite an entry and recompute the chain. Editing, deleting or
reordering an entry breaks the chain at that entry, and :meth:`AuditTrail.verify`
names the first one that does not hold. SQLite triggers refuse UPDATE and DELETE, so
the trail is append-only through SQLite; the chain catches what is done to the file
by other means.

Trails written before the key existed hold entries sealed with a plain SHA-256
(``keyed`` false). They still verify; the first keyed entry after them chains to
their last seal, so from then on they cannot be rewritten without the key either.
Unkeyed entries after a keyed one are a rewrite and break the chain.

**Atomic with the record.** :meth:`AuditTrail.writing` holds the trail's write lock
(SQLite's, so across processes) for one transaction: a change reads its record, writes
its entries, writes the record to the graph, and only then commits the entries. If the
graph write fails the entries are rolled back; if the commit fails the change's undo
runs. So a record never changes without its entry, nor an entry names a change that
did not happen, and two changes to one record never interleave.

>>> trail = AuditTrail(None, key=b"k" * 32)
>>> _ = trail.append("ana", "engineer", "Capa", "CAPA-1", "created", None, {"title": "x"})
>>> trail.verify().ok
True
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqems.errors import AuditUnavailable, ConfigError, NotFound, ValidationFailed

if TYPE_CHECKING:
    from sqems.settings import Settings

log = logging.getLogger(__name__)
GENESIS = "0" * 64
TRAIL_FILE = "audit-trail.db"
"""The trail's file under the data directory."""
KEY_FILE = "audit-trail.key"
"""The trail's HMAC key under the data directory, unless ``SQEMS_AUDIT_KEY_FILE`` or
``SQEMS_AUDIT_KEY`` puts it elsewhere."""
MIN_KEY_CHARS = 32
SYSTEM_ACTOR = "sqems-ingestion"
"""The user the product's own changes (a CAPA an alarm opens) are recorded under."""
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
            "meaning", "prev", "hash", "keyed")  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


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
    keyed: bool = False
    """Sealed with the trail's key (HMAC-SHA256); False: a plain SHA-256 from before."""

    def body(self) -> dict[str, Any]:
        """What the seal covers: everything but the seal and how it was made."""
        found = asdict(self)
        del found["hash"], found["keyed"]
        return found

    @property
    def is_signature(self) -> bool:
        return self.meaning is not None


def digest(body: Mapping[str, Any], key: bytes | None = None) -> str:
    """The seal of an entry's body: HMAC-SHA256 under ``key`` of its canonical JSON
    (sorted keys, no spaces), or its plain SHA-256 without a key."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if key is None:
        return hashlib.sha256(text.encode()).hexdigest()
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    broken_at: int | None
    """The first entry whose seal or link does not hold."""
    reason: str
    head: str
    """The seal of the last entry: keep it elsewhere to detect a truncated trail."""
    unsealed: int = 0
    """Entries at the end of the trail without a keyed seal after them: their chain
    shows they agree with each other, not that they were not rewritten."""


class Writer:
    """One open transaction of the trail (see :meth:`AuditTrail.writing`)."""

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail
        self._undo: list[Callable[[], object]] = []

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
        """An entry, chained to the last one; visible to others once the transaction
        commits."""
        return self._trail._insert(actor, role, label, uid, action, before, after, meaning)

    def on_abort(self, undo: Callable[[], object]) -> None:
        """Run ``undo`` if the entries cannot be committed (the change they record was
        made, so it is taken back)."""
        self._undo.append(undo)


class AuditTrail:
    """The trail in a SQLite file (None: in memory, for tests and one-off tools).

    ``key`` seals new entries (HMAC-SHA256); without one they get a plain SHA-256,
    which proves order, not authenticity. ``busy_timeout_s``: how long a change waits
    for another writer of the trail before it is refused."""

    def __init__(
        self, path: Path | None, *, key: bytes | None = None, busy_timeout_s: float = 5.0
    ) -> None:
        self.path = path
        self.key = key
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path) if path else ":memory:",
                                       check_same_thread=False, isolation_level=None,
                                       timeout=busy_timeout_s)  # fmt: skip
            self._db.execute("PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY")
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(trail)")}
            if "keyed" not in have:
                self._db.execute("ALTER TABLE trail ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0")
        except sqlite3.DatabaseError as exc:
            raise AuditUnavailable(f"the audit trail {path} cannot be opened: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def writing(self) -> Iterator[Writer]:
        """A transaction holding the trail's write lock; its entries commit when the
        block ends without error, else none do. Changes to records run inside it, so
        they are serialised and each lands with its entries or not at all."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise AuditUnavailable(
                    f"the audit trail ({self.path or 'in memory'}) is busy or cannot be "
                    f"written ({exc}); nothing was changed, try again"
                ) from exc
            writer = Writer(self)
            try:
                yield writer
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                for undo in reversed(writer._undo):
                    undo()
                outcome = "was taken back" if writer._undo else "stays without its entry"
                log.error("audit trail commit failed; the change %s", outcome)
                raise AuditUnavailable(
                    f"the audit trail could not commit ({exc}); the change {outcome}"
                ) from exc

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
        """Add an entry, chained to the last one, in a transaction of its own."""
        with self.writing() as w:
            return w.append(actor, role, label, uid, action, before, after, meaning=meaning)

    def _insert(
        self,
        actor: str,
        role: str,
        label: str,
        uid: str,
        action: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        meaning: str | None,
    ) -> Entry:
        if not actor.strip():
            raise ValidationFailed("an audit entry needs the user who made the change")
        last = self._db.execute("SELECT seq, hash FROM trail ORDER BY seq DESC LIMIT 1").fetchone()
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
        entry = Entry(**{**draft.body(), "hash": digest(draft.body(), self.key),
                         "keyed": self.key is not None})  # fmt: skip
        self._db.execute(
            f"INSERT INTO trail ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            _row(entry),
        )
        return entry

    def entries(self, uid: str | None = None, *, after: int = 0, limit: int = 1000) -> list[Entry]:
        """Entries in order, all or one record's."""
        return [_entry(r) for r in self._rows(uid, after=after, limit=limit)]

    def _rows(self, uid: str | None = None, *, after: int = 0, limit: int = 1000) -> list[Any]:
        where, args = ("WHERE seq > ?", [after]) if uid is None else (
            "WHERE uid = ? AND seq > ?", [uid, after])  # fmt: skip
        with self._lock:
            rows: list[Any] = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM trail {where} ORDER BY seq LIMIT ?",
                [*args, limit],
            ).fetchall()
        return rows

    def __iter__(self) -> Iterator[Entry]:
        for row in self._all_rows():
            yield _entry(row)

    def _all_rows(self) -> Iterator[Any]:
        after = 0
        while page := self._rows(after=after, limit=5000):
            yield from page
            after = page[-1][0]

    def last(self, uid: str) -> Entry:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM trail WHERE uid = ? ORDER BY seq DESC LIMIT 1",
                [uid],
            ).fetchone()
        if row is None:
            raise NotFound(f"the audit trail has nothing on {uid}")
        return _entry(row)

    def has_keyed(self) -> bool:
        """Whether any entry is sealed with a key (so the trail needs its key)."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM trail WHERE keyed != 0 LIMIT 1").fetchone()
        return row is not None

    def verify(self) -> Verification:
        """Walk the chain from the first entry; stop at the first that does not hold
        (a malformed row included, named by its seq)."""
        chain = _Chain(self.key)
        for row in self._all_rows():
            try:
                entry = _entry(row)
            except ValidationFailed as exc:
                return chain.broken(row[0], f"entry {row[0]} is malformed: {exc.message}")
            if (broken := chain.add(entry)) is not None:
                return broken
        return chain.result()

    def export(self, form: str = "jsonl") -> str:
        """The whole trail as JSON lines (each entry with its seals) or CSV (cells that
        a spreadsheet would run as a formula are neutralised, see :func:`csv_cell`)."""
        if form == "jsonl":
            return "".join(json.dumps(asdict(e), sort_keys=True) + "\n" for e in self)
        if form == "csv":
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(_COLUMNS)
            for e in self:
                writer.writerow([csv_cell(v) for v in _row(e)])
            return out.getvalue()
        raise ValidationFailed(f"export as jsonl or csv, not {form!r}")


class _Chain:
    """The verification of a chain, one entry at a time."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.prev, self.count, self.expected = GENESIS, 0, 1
        self.keyed_at: int | None = None
        self.unsealed = 0

    def add(self, entry: Entry, where: str = "") -> Verification | None:
        seq = entry.seq
        if seq != self.expected:
            return self.broken(seq, f"entry {self.expected} is missing (the next is {seq})")
        if entry.prev != self.prev:
            return self.broken(seq, f"entry {seq}{where} does not follow entry {seq - 1}: its "
                                    "link to the previous seal is wrong")  # fmt: skip
        if entry.keyed and self.key is None:
            return self.broken(seq, f"entry {seq}{where} is sealed with the audit key, and no "
                                    "key was given to check it (set SQEMS_AUDIT_KEY or "
                                    "SQEMS_AUDIT_KEY_FILE)")  # fmt: skip
        if not entry.keyed and self.keyed_at is not None:
            return self.broken(seq, f"entry {seq}{where} has no keyed seal though entry "
                                    f"{self.keyed_at} before it has: it was rewritten without "
                                    "the key")  # fmt: skip
        if digest(entry.body(), self.key if entry.keyed else None) != entry.hash:
            return self.broken(seq, f"entry {seq}{where} was changed after it was written: its "
                                    "content does not match its seal"
                                    + (" (or the audit key is not the one it was sealed "
                                       "with)" if entry.keyed else ""))  # fmt: skip
        if entry.keyed and self.keyed_at is None:
            self.keyed_at = seq
        self.unsealed = 0 if entry.keyed else self.unsealed + 1
        self.prev, self.expected, self.count = entry.hash, self.expected + 1, self.count + 1
        return None

    def broken(self, seq: int, reason: str) -> Verification:
        return Verification(False, self.count, seq, reason, self.prev, self.unsealed)

    def result(self) -> Verification:
        n, first = self.count, self.keyed_at or 1
        if self.unsealed == 0:
            legacy = "" if first == 1 else (
                f"; entries 1-{first - 1} predate the key and are sealed by the keyed "
                "entries after them")  # fmt: skip
            reason = f"{n} entries, chain intact" + (
                f", sealed with the audit key{legacy}" if n else "")  # fmt: skip
        else:
            reason = (f"{n} entries, chain intact; the last {self.unsealed} have no keyed "
                      "seal: they agree with each other but could have been rewritten by "
                      "anyone with the file (the next entry written with the key seals "
                      "them)")  # fmt: skip
        return Verification(True, n, None, reason, self.prev, self.unsealed)


def verify_export(text: str, key: bytes | None = None) -> Verification:
    """Verify a JSON-lines export on its own, away from the database (with the trail's
    key for keyed entries)."""
    chain = _Chain(key)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = _entry_of(json.loads(line))
        except (ValueError, TypeError, ValidationFailed) as exc:
            why = exc.message if isinstance(exc, ValidationFailed) else str(exc)
            return chain.broken(number, f"line {number} is not an audit entry: {why}")
        if (broken := chain.add(entry, f" (line {number})")) is not None:
            return broken
    return chain.result()


def reserved(name: str) -> bool:
    """Whether ``name`` is the product's own in the trail (``sqems…``, ``system``), so
    no user may take it."""
    folded = name.strip().casefold()
    return folded.startswith("sqems") or folded == "system"


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell a spreadsheet shows as text: one starting with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return is prefixed with ``'`` (OWASP's advice
    against CSV injection), unless it is a plain number; dicts become JSON.

    >>> csv_cell('=HYPERLINK("http://x","y")'), csv_cell("-1.5"), csv_cell(3)
    ('\\'=HYPERLINK("http://x","y")', '-1.5', 3)
    """
    if isinstance(value, dict):
        value = json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def _plain(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A JSON-ready copy (datetimes and enums as text), so the seal is stable."""
    if record is None:
        return None
    loaded: dict[str, Any] = json.loads(json.dumps(dict(record), default=str, sort_keys=True))
    return loaded


def _row(e: Entry) -> list[Any]:
    return [e.seq, e.at, e.actor, e.role, e.label, e.uid, e.action,
            None if e.before is None else json.dumps(e.before, sort_keys=True),
            None if e.after is None else json.dumps(e.after, sort_keys=True),
            e.meaning, e.prev, e.hash, int(e.keyed)]  # fmt: skip


def _entry(row: tuple[Any, ...]) -> Entry:
    values = dict(zip(_COLUMNS, row, strict=True))
    for key in ("before", "after"):
        if isinstance(values[key], str):
            try:
                values[key] = json.loads(values[key])
            except ValueError as exc:
                raise ValidationFailed(f"its {key} is not JSON ({exc})") from None
    return _entry_of(values)


_TYPES: dict[str, tuple[type, ...]] = {
    "seq": (int,), "before": (dict, type(None)), "after": (dict, type(None)),
    "meaning": (str, type(None)), "keyed": (bool, int),
}  # fmt: skip


def _entry_of(values: Mapping[str, Any]) -> Entry:
    """An entry from its fields, each of its type; :class:`ValidationFailed` naming the
    first that is not."""
    names = [f.name for f in fields(Entry)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValidationFailed(f"unknown field(s) {', '.join(unknown)}")
    for name in names:
        if name not in values:
            if name == "keyed":
                continue
            raise ValidationFailed(f"its {name} is missing")
        value = values[name]
        wanted = _TYPES.get(name, (str,))
        if not isinstance(value, wanted) or (name == "seq" and isinstance(value, bool)):
            raise ValidationFailed(f"its {name} is {type(value).__name__} {str(value)[:40]!r}")
    return Entry(**{**values, "keyed": bool(values.get("keyed", False))})


def load_key(settings: Settings, *, create: bool = True) -> bytes | None:
    """The trail's key: ``SQEMS_AUDIT_KEY`` (at least 32 characters), else the key file
    (``SQEMS_AUDIT_KEY_FILE``, default ``<data dir>/audit-trail.key``), made with 256
    random bits and mode 0600 when it does not exist yet (None instead, without
    ``create``). A key file others may read is refused."""
    if settings.audit_key is not None:
        secret = settings.audit_key.get_secret_value()
        if len(secret) < MIN_KEY_CHARS:
            raise ConfigError(f"SQEMS_AUDIT_KEY has {len(secret)} characters; the audit key "
                              f"needs at least {MIN_KEY_CHARS} (e.g. 64 hex digits)")  # fmt: skip
        return secret.encode()
    path = settings.audit_key_file or settings.data_dir / KEY_FILE
    if not create and not path.exists():
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"the audit key file {path} may be read by others (mode "
                              f"{mode:o}): chmod 600 it") from None  # fmt: skip
        secret = path.read_text().strip()
        if len(secret) < MIN_KEY_CHARS:
            raise ConfigError(f"the audit key file {path} holds {len(secret)} characters; it "
                              f"needs at least {MIN_KEY_CHARS}") from None  # fmt: skip
        return secret.encode()
    except OSError as exc:
        raise ConfigError(f"the audit key file {path} cannot be made: {exc}") from exc
    secret = secrets.token_hex(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    log.warning("made a new audit key", extra={"path": str(path)})
    return secret.encode()


def open_trail(settings: Settings) -> AuditTrail:
    """The trail of ``settings``' data directory, sealing with its key. A keyed trail
    whose key file is gone is refused rather than given a new key (that would make
    every entry before fail verification)."""
    path = settings.data_dir / TRAIL_FILE
    existing = path.exists()
    keyed_before = False
    if existing and settings.audit_key is None:
        probe = AuditTrail(path, busy_timeout_s=settings.audit_busy_timeout_s)
        try:
            keyed_before = probe.has_keyed()
        finally:
            probe.close()
    key_path = settings.audit_key_file or settings.data_dir / KEY_FILE
    if keyed_before and not key_path.exists():
        raise ConfigError(f"the audit trail {path} is sealed with a key, and the key file "
                          f"{key_path} is missing: restore it (or set SQEMS_AUDIT_KEY) rather "
                          "than start a new key")  # fmt: skip
    key = load_key(settings)
    return AuditTrail(path, key=key, busy_timeout_s=settings.audit_busy_timeout_s)
