"""The edge's store-and-forward queue: every record bound for the central broker, kept
on disk in the order it was made until the central broker has acknowledged it.

A SQLite file in the edge's data directory (``queue.db``), WAL mode with
``synchronous=FULL``: :meth:`StoreQueue.append` returns only once the items are on disk,
so the agent acts on a message (acknowledges it to the line's broker, publishes an
alarm) only after what it must send on is safe from a power cut. Items are numbered by
an ``AUTOINCREMENT`` key, which SQLite never reuses, so their order is the order they
were appended, across restarts too; :meth:`peek` reads the oldest, and :meth:`ack`
removes one only when the forwarder has the broker's PUBACK for it. Nothing is removed
any other way: the queue never loses or reorders an item.

>>> q = StoreQueue(None)
>>> first, second = q.append([Item("a/b", b"1"), Item("a/b", b"2")])
>>> [i.payload for i in q.peek(10)]
[b'1', b'2']
>>> q.ack(first)
True
>>> q.depth
1
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqems.errors import ValidationFailed

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    enqueued_at TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Item:
    """A message to deliver to the central broker, as it will be published."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Queued:
    """An item in the queue, with its place (``seq``) and when it was appended."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    enqueued_at: str


class StoreQueue:
    """The queue in ``path`` (None: in memory, for tests and examples); safe to use from
    several threads of one process."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path),
            check_same_thread=False,
            timeout=30,
            isolation_level=None,
        )
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL's default (NORMAL) may lose the last commits on a power cut: an item
            # the agent has acted on must survive one
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._depth, self._bytes = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM items"
        ).fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StoreQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, items: Iterable[Item]) -> list[int]:
        """Add ``items`` at the end, in one transaction, durable when this returns; their
        sequence numbers, in order."""
        rows = list(items)
        for item in rows:
            if item.qos not in (0, 1, 2):
                raise ValidationFailed(f"QoS {item.qos} of {item.topic} is not 0, 1 or 2")
        if not rows:
            return []
        now = datetime.now(UTC).isoformat()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seqs = [
                    self._db.execute(
                        "INSERT INTO items (topic, payload, qos, retain, enqueued_at)"
                        " VALUES (?, ?, ?, ?, ?) RETURNING seq",
                        (i.topic, i.payload, i.qos, int(i.retain), now),
                    ).fetchone()[0]
                    for i in rows
                ]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._depth += len(rows)
            self._bytes += sum(len(i.payload) for i in rows)
        return seqs

    def peek(self, n: int, after: int = 0) -> list[Queued]:
        """The oldest ``n`` items whose sequence number is above ``after``, oldest first;
        they stay in the queue until acknowledged."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain, enqueued_at FROM items"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, n),
            ).fetchall()
        return [Queued(s, t, bytes(p), q, bool(r), e) for s, t, p, q, r, e in rows]

    def ack(self, seq: int) -> bool:
        """Remove item ``seq`` (the central broker has it); False if it was not there."""
        with self._lock:
            row = self._db.execute(
                "DELETE FROM items WHERE seq = ? RETURNING length(payload)", (seq,)
            ).fetchone()
            if row is None:
                return False
            self._depth -= 1
            self._bytes -= row[0]
        return True

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Remove the items ``seqs`` in one transaction; how many were there."""
        wanted = list(seqs)
        if not wanted:
            return 0
        removed = freed = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for seq in wanted:
                    row = self._db.execute(
                        "DELETE FROM items WHERE seq = ? RETURNING length(payload)", (seq,)
                    ).fetchone()
                    if row is not None:
                        removed += 1
                        freed += row[0]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._depth -= removed
            self._bytes -= freed
        return removed

    @property
    def depth(self) -> int:
        """Items waiting."""
        return int(self._depth)

    @property
    def bytes(self) -> int:
        """Payload bytes waiting."""
        return int(self._bytes)

    def oldest(self) -> str | None:
        """When the oldest waiting item was appended (ISO 8601), None when empty."""
        with self._lock:
            row = self._db.execute("SELECT enqueued_at FROM items ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else str(row[0])
