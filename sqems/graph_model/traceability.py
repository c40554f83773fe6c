"""Traceability: genealogy upstream towards suppliers, recall scope downstream to customers.

Written once against the :class:`~sqems.graph_model.store.GraphStore` protocol, so every
backend gives the same answer.

*Upstream* from a unit (or a complaint about one) collects what could have caused a
defect: its sub-assemblies, the batches that made them, the lots those consumed and the
suppliers of the lots, the process runs with their machines, operators and parameters.

*Downstream* from a material lot, a batch, a machine in a time window or a parameter
excursion collects what a recall must reach: the batches and units made from it, the
assemblies those units were built into, the shipments they left in and the customers
who received them, each unit with the path that put it in scope.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import Parameter
from sqems.graph_model.store import (
    DEFAULT_MAX_DEPTH,
    Direction,
    GraphStore,
    Hops,
    Reached,
    TimeWindow,
    Traversal,
)

OUT, IN = Direction.OUT, Direction.IN

UPSTREAM: Hops = {
    "ABOUT": OUT,  # complaint → the unit it concerns
    "ASSEMBLED_INTO": IN,  # unit → its sub-assemblies
    "PRODUCED": IN,  # unit → its batch
    "CONSUMED_IN": IN,  # batch → material lots
    "SUPPLIED": IN,  # lot → supplier
    "LOT_OF": OUT,  # lot → part number
    "RAN": OUT,  # batch → process runs
    "ON": OUT,  # run → machine
    "OPERATED_BY": OUT,  # run → operator
    "RECORDED": OUT,  # run → parameters it recorded
}
"""Hops of a root-cause trace."""

DOWNSTREAM: Hops = {
    "CONSUMED_IN": OUT,  # lot → batches
    "PRODUCED": OUT,  # batch → units
    "ASSEMBLED_INTO": OUT,  # unit → the assembly it went into
    "SHIPPED_IN": OUT,  # unit → shipment
    "DELIVERED_TO": OUT,  # shipment → customer
}
"""Hops of a recall scope."""

_RUN_TO_BATCH: Hops = {"RAN": IN}
_SHIPPED: Hops = {"SHIPPED_IN": OUT}
"""Listed at the nodes a recall reaches: the shipment each unit itself left in."""
_DOWNSTREAM_FROM = frozenset({"MaterialLot", "Batch", "Unit"})


class SourceKind(StrEnum):
    LOT = "lot"
    BATCH = "batch"
    MACHINE = "machine"
    PARAMETER = "parameter"


_SOURCE_LABEL = {
    SourceKind.LOT: "MaterialLot",
    SourceKind.BATCH: "Batch",
    SourceKind.MACHINE: "Machine",
    SourceKind.PARAMETER: "Parameter",
}


@dataclass(frozen=True, slots=True)
class RecallSource:
    """Where a recall starts: a lot, a batch, a machine (in a window) or a parameter
    excursion (runs whose actual left the spec, in a window)."""

    kind: SourceKind
    uid: str
    window: TimeWindow | None = None
    also: tuple[str, ...] = ()
    """More lots or batches recalled together with ``uid`` (a supplier's lots, the
    batches a shift made): one scope, one traversal."""

    def describe(self) -> str:
        text = f"{self.kind.value} {self.uid}"
        if self.also:
            more = len(self.also)
            text = f"{self.kind.value}es" if self.kind is SourceKind.BATCH else f"{self.kind}s"
            shown = [self.uid, *self.also[:2]]
            text += " " + ", ".join(shown)
            if more > 2:
                text += f" and {more - 2} more"
        if self.window is not None:
            start = self.window.start.isoformat() if self.window.start else "…"
            end = self.window.end.isoformat() if self.window.end else "…"
            text += f" from {start} to {end}"
        return text


class PathStep(NamedTuple):
    """One node on a traceability path and the edge that led to it."""

    uid: str
    label: str
    edge: str | None = None
    direction: Direction | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "label": self.label,
            "edge": self.edge,
            "direction": self.direction.value if self.direction else None,
        }


def render_path(path: Sequence[PathStep]) -> str:
    """``LOT-7 -CONSUMED_IN-> B-12 -PRODUCED-> U-3`` (``<-T-`` where walked backwards)."""
    parts = [path[0].uid] if path else []
    for step in path[1:]:
        arrow = f"-{step.edge}->" if step.direction is OUT else f"<-{step.edge}-"
        parts += [arrow, step.uid]
    return " ".join(parts)


class AffectedUnit(NamedTuple):
    uid: str
    path: tuple[PathStep, ...]
    shipment: str | None = None
    """The shipment the unit itself left in (components travel inside their assembly)."""


@dataclass(slots=True)
class RecallScope:
    source: RecallSource
    triggers: list[str]
    """For a machine or an excursion, the process runs that put the batches in scope."""
    batches: list[str]
    units: list[AffectedUnit]
    shipments: list[str]
    customers: list[str]
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.describe(),
            "counts": self.counts,
            "triggers": self.triggers,
            "batches": self.batches,
            "shipments": self.shipments,
            "customers": self.customers,
            "units": [
                {"uid": u.uid, "shipment": u.shipment, "path": [s.as_dict() for s in u.path]}
                for u in self.units
            ],
        }


@dataclass(slots=True)
class Genealogy:
    """What a traversal reached, grouped by label, with the path to each node."""

    start: tuple[str, ...]
    traversal: Traversal

    def nodes(self, label: str) -> list[str]:
        return [r.uid for r in self.traversal.by_label(label)]

    def counts(self) -> dict[str, int]:
        tally = Counter(r.label for r in self.traversal.reached.values() if r.depth > 0)
        return dict(sorted(tally.items()))

    def path(self, uid: str) -> tuple[PathStep, ...]:
        return _steps(self.traversal.path(uid))

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": list(self.start),
            "counts": self.counts(),
            "nodes": [
                {
                    "uid": r.uid,
                    "label": r.label,
                    "depth": r.depth,
                    "via": r.via,
                    "edge": r.edge,
                    "direction": r.direction.value if r.direction else None,
                }
                for r in sorted(self.traversal.reached.values(), key=lambda r: (r.depth, r.uid))
            ],
        }


def _steps(chain: Iterable[Reached]) -> tuple[PathStep, ...]:
    return tuple(PathStep(r.uid, r.label, r.edge, r.direction) for r in chain)


def _paths(
    t: Traversal, prefix: dict[str, tuple[PathStep, ...]]
) -> dict[str, tuple[PathStep, ...]]:
    """The path to every reached node, each built once from its parent's (the reached
    dict is in breadth-first order, so a parent always comes first). ``prefix`` gives
    the path that leads to a start node, if any."""
    paths: dict[str, tuple[PathStep, ...]] = {}
    new = tuple.__new__  # skips the named tuple's Python-level constructor
    for uid, label, _, via, edge, direction in t.reached.values():
        if via is None:
            paths[uid] = prefix.get(uid) or (PathStep(uid, label),)
        else:
            paths[uid] = (*paths[via], new(PathStep, (uid, label, edge, direction)))
    return paths


class Traceability:
    """Genealogy and recall questions over any :class:`GraphStore`.

    >>> from sqems.graph_model.embedded import EmbeddedGraphStore
    >>> trace = Traceability(EmbeddedGraphStore(None))
    """

    def __init__(self, store: GraphStore, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.store = store
        self.max_depth = max_depth

    # --- upstream ----------------------------------------------------------------------

    def upstream(
        self,
        uids: Iterable[str],
        *,
        max_depth: int | None = None,
        of: frozenset[str] = frozenset({"Unit", "Complaint"}),
    ) -> Genealogy:
        """Everything upstream of units or complaints: the root-cause direction.

        ``of`` narrows the labels the start may have (``{"Unit"}`` when a caller asked
        for a unit), checked with the same lookup that finds the start.
        """
        start = tuple(sorted(set(uids)))
        depth = self.max_depth if max_depth is None else max_depth
        t = self.store.traverse(start, UPSTREAM, max_depth=depth, of=of)
        return Genealogy(start, t)

    def downstream(self, uids: Iterable[str], *, max_depth: int | None = None) -> Genealogy:
        """Everything downstream of lots, batches or units: the recall direction."""
        start = tuple(sorted(set(uids)))
        depth = self.max_depth if max_depth is None else max_depth
        t = self.store.traverse(start, DOWNSTREAM, max_depth=depth, of=_DOWNSTREAM_FROM)
        return Genealogy(start, t)

    # --- recall ------------------------------------------------------------------------

    def recall_scope(self, source: RecallSource) -> RecallScope:
        """Affected units, shipments and customers of a recall from ``source``."""
        if source.also and source.kind not in (SourceKind.LOT, SourceKind.BATCH):
            raise ValidationFailed("only lots and batches can be recalled several at once")
        starts = list(dict.fromkeys([source.uid, *source.also]))
        depth = self.max_depth
        if source.kind in (SourceKind.LOT, SourceKind.BATCH):
            # one call: the start's label checked, the tree, and the units' own shipments
            t = self.store.traverse(
                starts, DOWNSTREAM, max_depth=depth, of={_SOURCE_LABEL[source.kind]},
                edges=_SHIPPED,
            )  # fmt: skip
            return self._scope(source, [], t, {})

        runs, prefix = self._trigger_runs(source)
        t = self.store.traverse(
            runs, {**_RUN_TO_BATCH, **DOWNSTREAM}, max_depth=depth, edges=_SHIPPED
        )
        return self._scope(source, runs, t, prefix)

    def _trigger_runs(
        self, source: RecallSource
    ) -> tuple[list[str], dict[str, tuple[PathStep, ...]]]:
        """Process runs that start a machine or excursion recall, each with the path
        from the source to it."""
        store = self.store
        if source.kind is SourceKind.MACHINE:
            first = store.traverse(
                [source.uid], {"ON": IN}, max_depth=1, window=source.window, of={"Machine"}
            )
            runs = [r.uid for r in first.by_label("ProcessRun")]
            return runs, {run: _steps(first.path(run)) for run in runs}

        parameter = store.get(source.uid)
        if not isinstance(parameter, Parameter):
            raise ValidationFailed(f"{source.uid} is a {parameter.label}, not a Parameter")
        if parameter.lsl is None and parameter.usl is None:
            raise ValidationFailed(
                f"parameter {source.uid} has no spec limits, so it cannot have an excursion"
            )
        recorded = store.edges([source.uid], {"RECORDED": IN})
        for e in recorded:
            if e.props["unit"] != parameter.unit:
                raise ValidationFailed(
                    f"run {e.src} recorded {source.uid} in {e.props['unit']!r} but its spec "
                    f"limits are in {parameter.unit!r}; actuals must be stored in the "
                    "parameter's unit"
                )
        out_of_spec = [e.src for e in recorded if not parameter.in_spec(float(e.props["value"]))]
        if source.window is not None and out_of_spec:
            # the window applies to the runs' own time, as in a machine recall
            window = source.window
            out_of_spec = [
                uid
                for uid, run in store.get_many(out_of_spec).items()
                if window.overlaps(run.interval())
            ]
        runs = sorted(out_of_spec)
        head = PathStep(source.uid, "Parameter")
        return runs, {run: (head, PathStep(run, "ProcessRun", "RECORDED", IN)) for run in runs}

    def _scope(
        self,
        source: RecallSource,
        triggers: list[str],
        t: Traversal,
        prefix: dict[str, tuple[PathStep, ...]],
    ) -> RecallScope:
        paths = _paths(t, prefix)
        grouped: dict[str, list[str]] = {}
        for r in t.reached.values():
            grouped.setdefault(r.label, []).append(r.uid)
        unit_uids, batches, shipments, customers = (
            sorted(grouped.get(label, ())) for label in ("Unit", "Batch", "Shipment", "Customer")
        )
        in_scope = set(unit_uids)
        shipped = {e.src: e.dst for e in t.edges if e.type == "SHIPPED_IN" and e.src in in_scope}
        affected = [AffectedUnit(uid, paths[uid], shipped.get(uid)) for uid in unit_uids]
        counts = {
            "process_runs": len(triggers),
            "batches": len(batches),
            "units": len(affected),
            "units_shipped": len(shipped),
            "shipments": len(shipments),
            "customers": len(customers),
        }
        return RecallScope(source, triggers, batches, affected, shipments, customers, counts)
