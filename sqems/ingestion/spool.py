"""The spool: what ingestion could not finish while the graph store was away.

Readings of a series the pipeline has not met yet need the graph (is the machine
known, what unit is the parameter in?), and alarms are written to it. When the store
does not answer, those messages and alarms are appended here — a JSON-lines file in
the data directory, flushed and fsynced, so a crash loses nothing either — and taken
out again once the store answers.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqems.graph_model.nodes import Alarm
from sqems.graph_model.store import Edge


class Spool:
    """Pending messages and alarms; in a file when ``path`` is given, else in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []
        if path is not None and path.exists():
            with path.open() as f:
                self._items = [json.loads(line) for line in f if line.strip()]

    def __len__(self) -> int:
        return len(self._items)

    def add_message(self, topic: str, payload: bytes, received_at: datetime) -> None:
        self._append(
            [
                {
                    "kind": "message",
                    "topic": topic,
                    "received_at": received_at.isoformat(),
                    "payload": base64.b64encode(payload).decode(),
                }
            ]
        )

    def add_alarms(self, alarms: Iterable[tuple[Alarm, list[Edge]]]) -> None:
        self._append(
            [
                {
                    "kind": "alarm",
                    "alarm": a.model_dump(mode="json"),
                    "edges": [[e.type, e.src, e.dst] for e in edges],
                }
                for a, edges in alarms
            ]
        )

    def add_edges(self, edges: Iterable[Edge]) -> None:
        self._append(
            [{"kind": "edges", "edges": [[e.type, e.src, e.dst, dict(e.props)] for e in edges]}]
        )

    def take(self) -> list[dict[str, Any]]:
        """Everything pending, leaving the spool empty (put back what fails again)."""
        with self._lock:
            items, self._items = self._items, []
            self._save()
            return items

    def put_back(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._items = items + self._items
            self._save()

    def _append(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._items.extend(items)
            if self.path is not None:
                with self.path.open("a") as f:
                    f.writelines(json.dumps(item) + "\n" for item in items)
                    f.flush()
                    os.fsync(f.fileno())

    def _save(self) -> None:
        if self.path is None:
            return
        part = self.path.with_suffix(".tmp")
        with part.open("w") as f:
            f.writelines(json.dumps(item) + "\n" for item in self._items)
            f.flush()
            os.fsync(f.fileno())
        part.replace(self.path)


def decode_message(item: dict[str, Any]) -> tuple[str, bytes, datetime]:
    return (
        item["topic"],
        base64.b64decode(item["payload"]),
        datetime.fromisoformat(item["received_at"]),
    )


def decode_alarm(item: dict[str, Any]) -> tuple[Alarm, list[Edge]]:
    return Alarm.model_validate(item["alarm"]), [Edge(t, s, d) for t, s, d in item["edges"]]


def decode_edges(item: dict[str, Any]) -> list[Edge]:
    return [Edge(t, s, d, props) for t, s, d, props in item["edges"]]
