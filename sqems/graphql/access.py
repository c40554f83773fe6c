"""API keys, roles and the audit log of the API.

Keys look like ``sqems_<id>_<secret>``. Only a SHA-256 digest of the secret is stored
(the secret is 256 random bits, so a slow password hash adds nothing); the id finds
the row and the digest is compared in constant time. Every mutation is recorded in the
audit log with who made it, when, what it asked and how it ended.

A key's name is the user the audit trail names for every change made with it, so
names are unique regardless of case (revoked keys keep theirs: a name is never handed
to someone else, 21 CFR 11.100(b); ``reissue`` gives the same person a new secret),
are 1 to 64 printable characters (letters,
digits, space and ``. _ - @ '``), and the names the product records its own changes
under (``sqems…``, ``system``) are reserved.

Both live in one SQLite file (``$SQEMS_DATA_DIR/access.db``) whatever graph store is in
use, so access survives a migration between stores.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

from sqems.errors import NotFound, ValidationFailed
from sqems.quality.audit import reserved

ACCESS_FILE = "access.db"
"""The access store's file under the data directory."""
NAME_MAX = 64
_NAME = re.compile(r"[^\W_](?:[\w .@'-]*[^\W_])?")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, digest TEXT NOT NULL,
    created_at TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, key_id TEXT, key_name TEXT,
    role TEXT, operation TEXT NOT NULL, arguments TEXT NOT NULL, outcome TEXT NOT NULL,
    request_id TEXT
);
"""


class Role(IntEnum):
    """Roles in increasing power; a role may do everything the ones below it may."""

    VIEWER = 1
    INSPECTOR = 2
    ENGINEER = 3
    ADMIN = 4

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            known = ", ".join(r.name.lower() for r in cls)
            raise ValidationFailed(f"unknown role {name!r}; roles are {known}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    role: Role
    created_at: str
    revoked_at: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: str
    key_id: str | None
    key_name: str | None
    role: str | None
    operation: str
    arguments: dict[str, Any]
    outcome: str
    request_id: str | None


def check_name(name: str) -> str:
    """A key's name, stripped, if it may name a user in the audit trail."""
    name = name.strip()
    if not name:
        raise ValidationFailed("an API key needs a name (who or what uses it)")
    if len(name) > NAME_MAX:
        raise ValidationFailed(f"a key's name has at most {NAME_MAX} characters, not {len(name)}")
    if not _NAME.fullmatch(name):
        raise ValidationFailed(
            f"the key name {name[:NAME_MAX]!r} may hold letters, digits, spaces and . _ - @ ' "
            "only, and starts and ends with a letter or digit"
        )
    if reserved(name):
        raise ValidationFailed(
            f"{name!r} is reserved: the product records its own changes under it"
        )
    return name


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class AccessStore:
    """API keys and the audit log, in one SQLite file (None: in memory)."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- keys ------------------------------------------------------------------------

    def create_key(self, name: str, role: Role) -> tuple[ApiKey, str]:
        """A new key; the returned token is the only time the secret is seen."""
        name = check_name(name)
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(key_id, name, role, _now())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # the name check holds across processes
            try:
                taken = [row[0] for row in self._db.execute("SELECT name FROM api_keys")
                         if row[0].casefold() == name.casefold()]  # fmt: skip
                if taken:
                    raise ValidationFailed(
                        f"the name {name!r} is taken (by a key named {taken[0]!r}, live or "
                        "revoked): each person has a name of their own in the audit trail"
                    )
                self._db.execute(
                    "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL)",
                    (key.id, key.name, role.label, _digest(secret), key.created_at),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return key, f"sqems_{key_id}_{secret}"

    def verify(self, token: str | None) -> ApiKey | None:
        """The live key a token belongs to, or None."""
        if not token or not token.startswith("sqems_"):
            return None
        key_id, sep, secret = token.removeprefix("sqems_").partition("_")
        if not sep:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, role, digest, created_at, revoked_at FROM api_keys WHERE id = ?",
                (key_id,),
            ).fetchone()
        if row is None or row[5] is not None:
            return None
        if not hmac.compare_digest(row[3], _digest(secret)):
            return None
        return ApiKey(row[0], row[1], Role.parse(row[2]), row[4])

    def keys(self) -> list[ApiKey]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY created_at"
            ).fetchall()
        return [ApiKey(r[0], r[1], Role.parse(r[2]), r[3], r[4]) for r in rows]

    def revoke(self, key_id: str) -> ApiKey:
        with self._lock:
            done = self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (_now(), key_id),
            )
        if done.rowcount == 0:
            raise NotFound(f"no live API key with id {key_id}")
        return next(k for k in self.keys() if k.id == key_id)

    def free_name(self, base: str) -> str:
        """``base``, or ``base 2``, ``base 3``… if it is taken (for names the product
        gives keys it makes, such as the bootstrap admin's)."""
        taken = {k.name.casefold() for k in self.keys()}
        names = itertools.chain([base], (f"{base} {i}" for i in itertools.count(2)))
        return next(n for n in names if n.casefold() not in taken)

    def reissue(self, key_id: str) -> tuple[ApiKey, str]:
        """A new secret for a key (live or revoked), for the same person under the same
        name; the old secret stops working at once. This is how someone whose key was
        lost or revoked gets access again, since their name is never given out anew."""
        secret = secrets.token_urlsafe(32)
        with self._lock:
            done = self._db.execute(
                "UPDATE api_keys SET digest = ?, revoked_at = NULL WHERE id = ?",
                (_digest(secret), key_id),
            )
        if done.rowcount == 0:
            raise NotFound(f"no API key with id {key_id}")
        return next(k for k in self.keys() if k.id == key_id), f"sqems_{key_id}_{secret}"

    def has_admin(self) -> bool:
        return any(k.role is Role.ADMIN and k.revoked_at is None for k in self.keys())

    # --- audit -----------------------------------------------------------------------

    def record(
        self,
        key: ApiKey | None,
        operation: str,
        arguments: dict[str, Any],
        outcome: str,
        request_id: str | None = None,
    ) -> None:
        """Append one mutation to the audit log."""
        with self._lock:
            self._db.execute(
                "INSERT INTO audit (at, key_id, key_name, role, operation, arguments, outcome, "
                "request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _now(),
                    key.id if key else None,
                    key.name if key else None,
                    key.role.label if key else None,
                    operation,
                    json.dumps(arguments, default=str, sort_keys=True),
                    outcome,
                    request_id,
                ),
            )

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        """The newest entries first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, at, key_id, key_name, role, operation, arguments, outcome, "
                "request_id FROM audit ORDER BY seq DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
            for r in rows
        ]
