"""A user's CAPA tasks: the open CAPAs they own or verify, and what they can do now.

The phone's "my tasks" list reads this: for each open CAPA where the user (by name,
regardless of case, as names are) is the owner or the verifier, the move that is theirs
to make at this moment — ``submit`` for the owner of a CAPA in action whose root cause
and corrective action are recorded (what :meth:`Workflow.submit` requires), ``verify``
for the verifier of a CAPA waiting for verification — with what a signer needs to read
before signing: the problem, the root cause and the corrective actions. Overdue CAPAs
come first, then by due date.

>>> from sqems.graph_model import EmbeddedGraphStore
>>> from sqems.graph_model.nodes import Capa
>>> store = EmbeddedGraphStore(None)
>>> store.upsert_nodes([Capa.parse({"uid": "CAPA-1", "title": "cracked housing",
...     "opened_at": "2026-03-01T00:00:00+00:00", "status": "verifying",
...     "owner": "olga", "verifier": "Vera"})])
1
>>> [(t.uid, t.role, t.action) for t in my_tasks(store, "vera")]
[('CAPA-1', 'verifier', 'verify')]
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from sqems.graph_model.nodes import Capa, CapaStatus, Priority
from sqems.graph_model.store import GraphStore

TaskRole = Literal["owner", "verifier"]
MOVES = frozenset({"submit", "verify"})
"""The moves a task can offer."""


@dataclass(frozen=True, slots=True)
class Task:
    """One open CAPA of a user's, and what they can do with it now."""

    uid: str
    title: str
    status: CapaStatus
    priority: Priority | None
    due_at: datetime | None
    overdue: bool = field(metadata={"description": "Open past its due date."})
    role: TaskRole = field(metadata={"description": "owner or verifier."})
    action: str | None = field(
        metadata={"description": "What the user can do now: submit, verify, or nothing."}
    )
    problem: str
    root_cause: str | None = field(
        metadata={"description": "The 5-Why chain's last why, else the 8D's D4."}
    )
    corrective: list[str] = field(metadata={"description": "The corrective actions' texts."})


def root_cause(capa: Capa) -> str | None:
    """The 5-Why chain's last why, else the 8D's D4, else None."""
    whys = json.loads(capa.five_why)
    if whys:
        return str(whys[-1])
    d4 = str(json.loads(capa.eight_d).get("D4", "")).strip()
    return d4 or None


def _action(capa: Capa, role: TaskRole, moves: Collection[str]) -> str | None:
    ready = root_cause(capa) is not None and bool(json.loads(capa.corrective))
    if role == "owner" and capa.status is CapaStatus.IN_ACTION and "submit" in moves and ready:
        return "submit"
    if role == "verifier" and capa.status is CapaStatus.VERIFYING and "verify" in moves:
        return "verify"
    return None


def my_tasks(
    store: GraphStore,
    name: str,
    *,
    moves: Collection[str] = MOVES,
    now: datetime | None = None,
) -> list[Task]:
    """The open CAPAs ``name`` owns or verifies, overdue first, then by due date (none
    last), then uid. ``moves`` are those the user's role allows (an action they may not
    make is not offered)."""
    now = now or datetime.now(UTC)
    who = name.strip().casefold()
    tasks: list[Task] = []
    for capa in store.find("Capa"):
        if not isinstance(capa, Capa) or capa.status is CapaStatus.CLOSED:
            continue
        role: TaskRole
        if (capa.owner or "").strip().casefold() == who:
            role = "owner"
        elif (capa.verifier or "").strip().casefold() == who:
            role = "verifier"
        else:
            continue
        corrective = [str(a.get("text", "")) for a in json.loads(capa.corrective)]
        tasks.append(
            Task(
                uid=capa.uid,
                title=capa.title,
                status=capa.status,
                priority=capa.priority,
                due_at=capa.due_at,
                overdue=capa.due_at is not None and capa.due_at < now,
                role=role,
                action=_action(capa, role, moves),
                problem=capa.problem,
                root_cause=root_cause(capa),
                corrective=corrective,
            )
        )
    far = datetime.max.replace(tzinfo=UTC)
    tasks.sort(key=lambda t: (not t.overdue, t.due_at or far, t.uid))
    return tasks
