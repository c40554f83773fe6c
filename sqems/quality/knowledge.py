"""The quality knowledge base: when a defect type recurs, what was done about it before.

``precedents(store, defect_type)`` finds the CAPAs that addressed defects or complaints
of the type (``Capa ADDRESSES Defect|Complaint``, ``OF_TYPE``) and offers each with its
root cause (the 5-Why chain and the 8D's D4), its corrective actions, whether its
verification found it effective and how often it was reopened — closed and effective
ones first, then the newest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqems.errors import NotFound
from sqems.graph_model.nodes import Capa, DefectType
from sqems.graph_model.store import Direction, GraphStore


@dataclass(frozen=True, slots=True)
class Precedent:
    capa: str
    title: str
    status: str
    opened_at: datetime
    closed_at: datetime | None
    effective: bool | None
    reopened: int
    five_why: list[str]
    root_cause: str
    """The last why of the chain, else the 8D's D4."""
    corrective: list[str]
    addressed: int
    """How many defects and complaints of the type it addressed."""


def precedents(store: GraphStore, defect_type: str) -> list[Precedent]:
    found = store.get_many([defect_type]).get(defect_type)
    if not isinstance(found, DefectType):
        raise NotFound(f"defect type {defect_type} is not in the graph")
    issues = [e.src for e in store.edges([defect_type], {"OF_TYPE": Direction.IN})]
    links = store.edges(issues, {"ADDRESSES": Direction.IN})
    counts: dict[str, int] = {}
    for e in links:
        counts[e.src] = counts.get(e.src, 0) + 1
    capas = [c for c in store.get_many(counts).values() if isinstance(c, Capa)]
    offered = []
    for c in capas:
        whys = json.loads(c.five_why)
        d4 = str(json.loads(c.eight_d).get("D4", "")).strip()
        offered.append(
            Precedent(
                capa=c.uid,
                title=c.title,
                status=c.status.value,
                opened_at=c.opened_at,
                closed_at=c.closed_at,
                effective=c.effective,
                reopened=c.reopened,
                five_why=whys,
                root_cause=whys[-1] if whys else d4,
                corrective=[a["text"] for a in json.loads(c.corrective)],
                addressed=counts[c.uid],
            )
        )
    offered.sort(key=lambda p: (not (p.effective and p.status == "closed"),
                                -p.opened_at.timestamp()))  # fmt: skip
    return offered
