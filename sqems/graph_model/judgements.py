"""Unit judgements in the graph: which ones a unit, an edge or a verdict has.

A ``Judgement`` node is an edge agent's model judgement of one unit, linked
``JUDGES`` to it (:mod:`sqems.ingestion.edge_records` writes them). A judgement whose
unit the graph did not hold when it arrived has no link yet; it is listed with
``unit=None`` until the unit comes and the link is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqems.errors import NotFound
from sqems.graph_model.nodes import Judgement, JudgementVerdict
from sqems.graph_model.store import Direction, GraphStore


@dataclass(frozen=True, slots=True)
class JudgedUnit:
    """A judgement and the unit it judges (None while its unit is not in the graph)."""

    judgement: Judgement
    unit: str | None

    @property
    def named_unit(self) -> str | None:
        """The unit the judgement's id names (``<edge>/<unit>/<model version>``): the
        one it will be linked to when it comes into the graph."""
        j = self.judgement
        head, tail = f"{j.edge}/", f"/{j.model_version}"
        if j.uid.startswith(head) and j.uid.endswith(tail) and len(j.uid) > len(head + tail):
            return j.uid[len(head) : -len(tail)]
        return None


def find_judgements(
    store: GraphStore,
    *,
    unit: str | None = None,
    edge: str | None = None,
    verdict: JudgementVerdict | None = None,
) -> list[JudgedUnit]:
    """The judgements of ``unit`` and/or made by ``edge`` with ``verdict``, newest first
    (then by uid). :class:`NotFound` when ``unit`` is given and is not a unit of the
    graph."""
    if unit is not None:
        if store.label_of(unit) != "Unit":
            raise NotFound(f"unit {unit} is not in the graph ({store.description})")
        links = store.edges([unit], {"JUDGES": Direction.IN})
        found = store.get_many(e.src for e in links)
        nodes = [n for n in found.values() if isinstance(n, Judgement)]
    else:
        where: dict[str, str] = {}
        if edge is not None:
            where["edge"] = edge
        if verdict is not None:
            where["verdict"] = verdict.value
        nodes = [n for n in store.find("Judgement", where) if isinstance(n, Judgement)]
    nodes = [
        n
        for n in nodes
        if (edge is None or n.edge == edge) and (verdict is None or n.verdict is verdict)
    ]
    units = {e.src: e.dst for e in store.edges([n.uid for n in nodes], {"JUDGES": Direction.OUT})}
    nodes.sort(key=lambda n: n.uid)
    nodes.sort(key=lambda n: n.judged_at, reverse=True)
    return [JudgedUnit(n, units.get(n.uid)) for n in nodes]
