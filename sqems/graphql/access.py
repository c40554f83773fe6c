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

An electronic signature (a CAPA's verification, its hand-over to the verifier) is made
with two distinct components, 21 CFR 11.200(a)(1): the key identifies the signer and
lives on their device; the credential is typed again at each signature. That credential
is the signer's own key pasted again (as before) or their *signing password*, which a
person can type on a phone. The signing password belongs to a user (a key's name,
regardless of case, so it survives ``reissue``), is at least 8 characters, and is kept
as a scrypt hash (n=2**14, r=8, p=1, 16 MiB of memory per guess) with a salt of its
own: unlike a key's secret it is chosen by a person, so a slow hash is what stands
between a stolen ``access.db`` and the passwords. Five failed signature credentials in
a row lock the user's signing for 15 minutes; the count and the lock are rows of the
file, so a restart does not reset them, and a success resets the count. A user sets
their own (``setSigningPassword``, giving the current one when there is one; that
check counts as a signature credential, or it would be an unthrottled way to guess);
an administrator at the machine sets or resets it (``sqems apikey signing-password``),
which also lifts a lock.

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path
from typing import Any

from sqems.errors import NotFound, SqemsError, Unauthenticated, ValidationFailed
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
CREATE TABLE IF NOT EXISTS signing (
    user TEXT PRIMARY KEY, name TEXT NOT NULL, scheme TEXT, salt BLOB, hash BLOB,
    set_at TEXT, failures INTEGER NOT NULL DEFAULT 0, locked_until TEXT
);
"""
SIGNING_PASSWORD_MIN = 8
SIGNING_PASSWORD_MAX = 1024
"""Longer adds nothing but work for the hash."""
SIGNING_FAILURES = 5
"""Failed signature credentials in a row that lock a user's signing."""
SIGNING_LOCK = timedelta(minutes=15)
_SCRYPT = (2**14, 8, 1)
"""scrypt's n, r, p for new hashes; a hash keeps its own in ``scheme``."""


class SignatureRefused(Unauthenticated):
    """A signature's credential is neither the signer's key nor their signing password.

    Its code stays ``UNAUTHENTICATED`` (the caller is not authenticated as the signer);
    ``extensions.signature`` tells a client that it is the signature that was refused,
    not the key the request was sent with, which still works."""

    @property
    def extensions(self) -> dict[str, str]:
        return {"code": self.code, "signature": "refused"}


class SigningLocked(SqemsError):
    """A user's signing is locked after too many wrong signature credentials."""

    code = "SIGNING_LOCKED"

    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message)
        self.until = until

    @property
    def extensions(self) -> dict[str, str]:
        return {"code": self.code, "lockedUntil": self.until.isoformat()}


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


def _scrypt(password: str, salt: bytes, scheme: str) -> bytes:
    _, n, r, p = scheme.split(":")
    return hashlib.scrypt(password.encode(), salt=salt, n=int(n), r=int(r), p=int(p),
                          maxmem=64 * 1024 * 1024, dklen=32)  # fmt: skip


def check_signing_password_rules(password: str) -> str:
    """``password`` if it may be a signing password."""
    if len(password) < SIGNING_PASSWORD_MIN:
        raise ValidationFailed(
            f"a signing password has at least {SIGNING_PASSWORD_MIN} characters, not "
            f"{len(password)}"
        )
    if len(password) > SIGNING_PASSWORD_MAX:
        raise ValidationFailed(
            f"a signing password has at most {SIGNING_PASSWORD_MAX} characters, not {len(password)}"
        )
    if not password.strip():
        raise ValidationFailed("a signing password is more than spaces")
    return password


class AccessStore:
    """API keys and the audit log, in one SQLite file (None: in memory)."""

    def __init__(
        self, path: Path | None, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.clock = clock
        """The time signing locks are set and checked by (tests move it)."""
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

    # --- signing passwords -------------------------------------------------------------

    def user(self, name: str) -> str:
        """The name of the key(s) ``name`` names, as they spell it (live or revoked)."""
        wanted = name.strip().casefold()
        for key in self.keys():
            if key.name.casefold() == wanted:
                return key.name
        raise NotFound(f"no API key is named {name.strip()!r}; `sqems apikey list` shows the names")

    def has_signing_password(self, name: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT hash FROM signing WHERE user = ?", (name.strip().casefold(),)
            ).fetchone()
        return row is not None and row[0] is not None

    def signing_locked_until(self, name: str) -> datetime | None:
        """Until when ``name``'s signing is locked, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT locked_until FROM signing WHERE user = ?", (name.strip().casefold(),)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        until = datetime.fromisoformat(row[0])
        return until if until > self.clock() else None

    def set_signing_password(self, name: str, password: str, current: str | None = None) -> None:
        """A user's own signing password; ``current`` is needed when one is set, and a
        wrong one counts as a failed signature credential."""
        user = self.user(name)
        check_signing_password_rules(password)
        self._not_the_key(user, password)
        if self.has_signing_password(user):
            if current is None:
                raise ValidationFailed(
                    f"{user} has a signing password: give the current one to change it (an "
                    "administrator can reset it with `sqems apikey signing-password`)"
                )
            if not self.check_signing_password(user, current):
                raise SignatureRefused(
                    f"the current signing password given for {user} is wrong; nothing changed"
                )
        self._store_password(user, password)

    def reset_signing_password(self, name: str, password: str) -> str:
        """Set or reset ``name``'s signing password without the current one, and lift a
        lock (the administrator, at the machine); the user's name as the keys spell it."""
        user = self.user(name)
        check_signing_password_rules(password)
        self._not_the_key(user, password)
        self._store_password(user, password)
        return user

    def check_signing_password(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s signing password, counted as a signature
        credential: :class:`SigningLocked` while locked, a failure counted (the fifth in
        a row locks), a success resets the count."""
        return self._attempt(name, lambda: self._password_matches(name, password))

    def check_signature(self, key: ApiKey, credential: str) -> bool:
        """Whether ``credential`` signs for ``key``'s user: their own key (the one given,
        live) or their signing password; counted as :meth:`check_signing_password` is."""

        def matches() -> bool:
            again = self.verify(credential.strip() or None)
            if again is not None:
                return again.id == key.id
            return self._password_matches(key.name, credential)

        return self._attempt(key.name, matches)

    def _attempt(self, name: str, matches: Callable[[], bool]) -> bool:
        user = name.strip().casefold()
        self._refuse_locked(name)
        ok = matches()  # slow (scrypt): outside the lock
        now = self.clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT failures, locked_until FROM signing WHERE user = ?", (user,)
                ).fetchone()
                failures, locked = row if row else (0, None)
                if locked is not None and datetime.fromisoformat(locked) > now:
                    ok = False  # locked meanwhile by concurrent failures: at most five count
                elif ok:
                    self._db.execute(
                        "UPDATE signing SET failures = 0, locked_until = NULL WHERE user = ?",
                        (user,),
                    )
                else:
                    failures += 1
                    until = None
                    if failures >= SIGNING_FAILURES:
                        failures, until = 0, (now + SIGNING_LOCK).isoformat()
                    self._db.execute(
                        "INSERT INTO signing (user, name, failures, locked_until) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (user) DO UPDATE SET "
                        "failures = excluded.failures, locked_until = excluded.locked_until",
                        (user, name.strip(), failures, until),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        if not ok:
            self._refuse_locked(name)  # this failure was the fifth
        return ok

    def _refuse_locked(self, name: str) -> None:
        until = self.signing_locked_until(name)
        if until is not None:
            raise SigningLocked(
                f"signing is locked for {name.strip()} until {until.isoformat()} after "
                f"{SIGNING_FAILURES} wrong credentials in a row; wait, or ask an administrator "
                "to reset the signing password",
                until,
            )

    def _password_matches(self, name: str, password: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT scheme, salt, hash FROM signing WHERE user = ?",
                (name.strip().casefold(),),
            ).fetchone()
        if row is None or row[2] is None:
            return False
        return hmac.compare_digest(row[2], _scrypt(password, row[1], row[0]))

    def _not_the_key(self, user: str, password: str) -> None:
        key = self.verify(password.strip())
        if key is not None and key.name.casefold() == user.casefold():
            raise ValidationFailed(
                "the signing password must not be your API key: a signature takes two "
                "distinct components, the key on the device and a password you type"
            )

    def _store_password(self, user: str, password: str) -> None:
        scheme = "scrypt:{}:{}:{}".format(*_SCRYPT)
        salt = secrets.token_bytes(16)
        digest = _scrypt(password, salt, scheme)
        with self._lock:
            self._db.execute(
                "INSERT INTO signing (user, name, scheme, salt, hash, set_at, failures, "
                "locked_until) VALUES (?, ?, ?, ?, ?, ?, 0, NULL) ON CONFLICT (user) DO UPDATE "
                "SET name = excluded.name, scheme = excluded.scheme, salt = excluded.salt, "
                "hash = excluded.hash, set_at = excluded.set_at, failures = 0, "
                "locked_until = NULL",
                (user.casefold(), user, scheme, salt, digest, self.clock().isoformat()),
            )

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
