"""Genealogy integrity: the rules no write may break, and an audit of a store against them.

A unit's genealogy must be physically possible. Every write batch is checked against
what the store holds plus what the batch itself writes, in the backend's commit (where
the loader, the file importers, RDF import and the API all meet):

``one-parent``
    a unit is ``ASSEMBLED_INTO`` at most one unit (writing the same edge again is fine);
``no-cycle``
    following ``ASSEMBLED_INTO`` never comes back to where it started (a unit is not
    built into itself, directly or through its sub-assemblies);
``time-order``
    an assembly is not produced before a component it contains
    (``produced_at`` of the assembly >= that of the component);
``shipped-not-scrapped``
    a unit ``SHIPPED_IN`` a shipment is not scrapped, whichever came first. The unit
    statuses have no "returned" state: a shipped unit that comes back and is scrapped
    keeps its status and gets a :class:`~sqems.graph_model.nodes.Defect` with
    disposition ``scrap`` (the record of what happened to it, and where).

A refusal is a :class:`GenealogyViolation` naming the rule and the records (uids and
times); :func:`audit` reports what a store holds that breaks the rules (data written
before they were enforced).

>>> from datetime import UTC, datetime
>>> from sqems.graph_model.embedded import EmbeddedGraphStore
>>> from sqems.graph_model.nodes import Unit
>>> from sqems.graph_model.store import Edge
>>> store = EmbeddedGraphStore(None)
>>> store.upsert_nodes([Unit(uid="U-1", produced_at=datetime(2026, 1, 5, tzinfo=UTC))])
1
>>> store.upsert_edges([Edge("ASSEMBLED_INTO", "U-1", "U-1")])
Traceback (most recent call last):
...
sqems.graph_model.integrity.GenealogyViolation: unit U-1 cannot be assembled into itself
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqems.errors import ValidationFailed

if TYPE_CHECKING:
    from sqems.graph_model.nodes import Node
    from sqems.graph_model.store import GraphStore

ASSEMBLED = "ASSEMBLED_INTO"
SHIPPED = "SHIPPED_IN"
SCRAPPED = "scrapped"
RULES = ("one-parent", "no-cycle", "time-order", "shipped-not-scrapped")
"""The rules, in the order they are checked and reported."""


class Record(NamedTuple):
    """A written record a refusal names: a node (``type`` is ``"node"``) or an edge."""

    type: str
    src: str
    dst: str = ""

    def __str__(self) -> str:
        return self.src if self.type == "node" else f"{self.type} {self.src}→{self.dst}"


class RecordRefused(ValidationFailed):
    """A store refused a write because of ``records`` (a loader maps them back to the
    rows they came from)."""

    def __init__(self, message: str, records: Sequence[Record]) -> None:
        super().__init__(message)
        self.records = tuple(records)


class GenealogyViolation(RecordRefused):
    """A write that would make a genealogy impossible: ``records`` break ``rule``."""

    def __init__(self, rule: str, message: str, records: Sequence[Record]) -> None:
        super().__init__(message, records)
        self.rule = rule


def when(seconds: float) -> str:
    """POSIX seconds as ISO 8601 UTC, for messages."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Writes:
    """The genealogy a batch writes: its units and its assembly and shipping edges."""

    units: dict[str, tuple[float, bool]] = field(default_factory=dict)
    """uid → (``produced_at`` in POSIX seconds, scrapped)."""
    assembled: dict[tuple[str, str], None] = field(default_factory=dict)
    shipped: dict[tuple[str, str], None] = field(default_factory=dict)

    @classmethod
    def of_batch(cls, nodes: Mapping[str, Node], edges: Iterable[Any]) -> Writes:
        writes = cls()
        for uid, node in nodes.items():
            if node.label == "Unit":
                writes.add_unit(uid, node.produced_at.timestamp(), node.status == SCRAPPED)  # type: ignore[attr-defined]
        for edge in edges:
            writes.add_edge(edge.type, edge.src, edge.dst)
        return writes

    def add_unit(self, uid: str, produced_at: float, scrapped: bool) -> None:
        self.units[uid] = (produced_at, scrapped)

    def add_edge(self, type: str, src: str, dst: str) -> None:
        if type == ASSEMBLED:
            self.assembled[(src, dst)] = None
        elif type == SHIPPED:
            self.shipped[(src, dst)] = None

    def __bool__(self) -> bool:
        return bool(self.units or self.assembled or self.shipped)

    def statuses(self) -> list[str]:
        """The units whose stored status the checks need: those shipped by an edge
        without being written, and those written as scrapped."""
        uids = dict.fromkeys(u for u, _ in self.shipped if u not in self.units)
        uids.update(dict.fromkeys(u for u, (_, scrapped) in self.units.items() if scrapped))
        return list(uids)

    def touched(self) -> list[str]:
        """The units whose stored genealogy the checks need."""
        uids = dict.fromkeys(self.units)
        for src, dst in self.assembled:
            uids[src] = uids[dst] = None
        for src, _ in self.shipped:
            uids[src] = None
        return list(uids)


@dataclass(slots=True)
class Stored:
    """What a store holds about some units (see :meth:`GraphStore.genealogy`): their
    ``produced_at`` (and that of their parents and children), whether they are
    scrapped, their parents, children and every ancestor, and a shipment they are in."""

    produced: dict[str, float] = field(default_factory=dict)
    scrapped: set[str] = field(default_factory=set)
    parents: dict[str, set[str]] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    ancestors: dict[str, set[str]] = field(default_factory=dict)
    shipments: dict[str, str] = field(default_factory=dict)

    def update(self, other: Stored) -> None:
        self.produced.update(other.produced)
        self.scrapped |= other.scrapped
        self.parents.update(other.parents)
        self.children.update(other.children)
        self.ancestors.update(other.ancestors)
        self.shipments.update(other.shipments)


def check(writes: Writes, stored: Stored) -> None:
    """Refuse ``writes`` if, on top of ``stored``, they break a rule of this module.

    Only what the writes add or change is judged: a store that already breaks a rule
    (see :func:`audit`) still takes writes that do not touch the breach.
    """
    units = writes.units

    def produced(uid: str) -> float | None:
        return units[uid][0] if uid in units else stored.produced.get(uid)

    def scrapped(uid: str) -> bool:
        return units[uid][1] if uid in units else uid in stored.scrapped

    new_parents: dict[str, list[str]] = {}
    for src, dst in writes.assembled:
        new_parents.setdefault(src, []).append(dst)

    for src, dst in writes.assembled:
        if src == dst:
            raise GenealogyViolation(
                "no-cycle",
                f"unit {src} cannot be assembled into itself",
                [Record(ASSEMBLED, src, dst)],
            )

    # one parent
    for child, parents in new_parents.items():
        held = stored.parents.get(child, set())
        every = sorted(set(parents) | held)
        if len(every) > 1:
            already = sorted(held - set(parents))
            detail = f" (the graph has it in {', '.join(already)})" if already else ""
            raise GenealogyViolation(
                "one-parent",
                f"unit {child} would be assembled into {len(every)} units, "
                f"{', '.join(every)}{detail}; a unit has at most one parent assembly",
                # the last one written is the one too many
                [Record(ASSEMBLED, child, p) for p in reversed(parents)],
            )

    # no cycle: the new parent must not already contain the child, through what is
    # stored and the edges written before this one (so the edge that closes a cycle is
    # the one named)
    earlier: dict[str, list[str]] = {}
    for src, dst in writes.assembled:
        if _reaches(dst, src, earlier, stored.ancestors):
            raise GenealogyViolation(
                "no-cycle",
                f"unit {src} cannot be assembled into {dst}: {dst} is already built into "
                f"{src} (directly or through sub-assemblies), which would close a cycle",
                [Record(ASSEMBLED, src, dst)],
            )
        earlier.setdefault(src, []).append(dst)

    # time order, for new edges and for units whose produced_at changes
    def early(component: str, assembly: str, record: Record) -> None:
        tc, ta = produced(component), produced(assembly)
        if tc is not None and ta is not None and ta < tc:
            raise GenealogyViolation(
                "time-order",
                f"unit {component} (produced {when(tc)}) cannot be assembled into {assembly} "
                f"(produced {when(ta)}): the assembly would predate its component",
                [record],
            )

    for src, dst in writes.assembled:
        early(src, dst, Record(ASSEMBLED, src, dst))
    for uid, (t, _) in units.items():
        if stored.produced.get(uid, t) == t:
            continue
        for parent in sorted(stored.parents.get(uid, ())):
            early(uid, parent, Record("node", uid))
        for child in sorted(stored.children.get(uid, ())):
            early(child, uid, Record("node", uid))

    # shipped units are not scrapped
    for src, dst in writes.shipped:
        if scrapped(src):
            raise GenealogyViolation(
                "shipped-not-scrapped",
                f"unit {src} is scrapped; a scrapped unit cannot be shipped (shipment {dst})",
                [Record(SHIPPED, src, dst)],
            )
    for uid, (_, scrap) in units.items():
        if scrap and uid not in stored.scrapped and uid in stored.shipments:
            raise GenealogyViolation(
                "shipped-not-scrapped",
                f"unit {uid} left in shipment {stored.shipments[uid]}; a shipped unit cannot "
                "be scrapped (record a returned unit's scrapping as a defect with "
                "disposition scrap)",
                [Record("node", uid)],
            )


def _reaches(
    start: str, target: str, new_parents: Mapping[str, list[str]], ancestors: Mapping[str, set[str]]
) -> bool:
    """Whether ``target`` is ``start`` or one of its ancestors, over the stored
    ancestors and the new parents together."""
    seen = {start}
    todo = [start]
    while todo:
        uid = todo.pop()
        if uid == target:
            return True
        for up in (*new_parents.get(uid, ()), *ancestors.get(uid, ())):
            if up not in seen:
                seen.add(up)
                todo.append(up)
    return False


def check_batch(
    nodes: Mapping[str, Node],
    edges: Iterable[Any],
    fetch: Callable[[list[str], list[str]], Stored],
) -> None:
    """Check a store batch; ``fetch(uids, statuses)`` reads the stored genealogy of the
    units it touches, with the status of ``statuses`` among them (called only when the
    batch holds units or genealogy edges)."""
    writes = Writes.of_batch(nodes, edges)
    if writes:
        check(writes, fetch(writes.touched(), writes.statuses()))


# --- audit ------------------------------------------------------------------------------


@dataclass(slots=True)
class Finding:
    """One breach of a rule found in a store."""

    rule: str
    message: str
    uids: tuple[str, ...]


@dataclass(slots=True)
class Audit:
    """Every breach of the genealogy rules a store holds, by rule."""

    store: str
    units: int
    findings: dict[str, list[Finding]] = field(default_factory=lambda: {r: [] for r in RULES})

    @property
    def clean(self) -> bool:
        return not any(self.findings.values())

    @property
    def total(self) -> int:
        return sum(len(f) for f in self.findings.values())


def audit(store: GraphStore, *, page: int = 10_000) -> Audit:
    """Read every unit, assembly and shipping edge of ``store`` and report each breach.

    One pass over units and the two edge types, paged; memory is a few values per unit.
    """
    produced: dict[str, float] = {}
    scrapped: set[str] = set()
    for batch in store.iter_nodes("Unit", page=page):
        for node in batch.items:
            produced[node.uid] = node.produced_at.timestamp()
            if node.status == SCRAPPED:
                scrapped.add(node.uid)
    parents: dict[str, list[str]] = {}
    for batch in store.iter_edges(ASSEMBLED, page=page):
        for edge in batch.items:
            parents.setdefault(edge.src, []).append(edge.dst)
    shipments: dict[str, list[str]] = {}
    for batch in store.iter_edges(SHIPPED, page=page):
        for edge in batch.items:
            shipments.setdefault(edge.src, []).append(edge.dst)

    report = Audit(store.description, len(produced))
    found = report.findings
    for child in sorted(parents):
        ups = sorted(parents[child])
        if len(ups) > 1:
            found["one-parent"].append(
                Finding(
                    "one-parent",
                    f"unit {child} is assembled into {len(ups)} units: {', '.join(ups)}",
                    (child, *ups),
                )
            )
    for cycle in _cycles(parents):
        text = " → ".join((*cycle, cycle[0]))
        found["no-cycle"].append(Finding("no-cycle", f"assembly cycle {text}", tuple(cycle)))
    for child in sorted(parents):
        for parent in sorted(parents[child]):
            tc, tp = produced.get(child), produced.get(parent)
            if tc is not None and tp is not None and tp < tc:
                found["time-order"].append(
                    Finding(
                        "time-order",
                        f"unit {child} (produced {when(tc)}) is in {parent} "
                        f"(produced {when(tp)}), which predates it",
                        (child, parent),
                    )
                )
    for uid in sorted(scrapped & shipments.keys()):
        found["shipped-not-scrapped"].append(
            Finding(
                "shipped-not-scrapped",
                f"unit {uid} is scrapped but left in shipment {min(shipments[uid])}",
                (uid, *sorted(shipments[uid])),
            )
        )
    return report


def _cycles(parents: Mapping[str, list[str]]) -> list[list[str]]:
    """The cycles of the assembly graph, one per strongly connected part (and every
    self-loop), each as its uids from the smallest, ordered by that uid."""
    import networkx as nx  # noqa: PLC0415 - only an audit needs the graph algorithms

    g = nx.DiGraph()
    g.add_edges_from((c, p) for c, ps in parents.items() for p in ps)
    cycles = [[u] for u in sorted(nx.nodes_with_selfloops(g))]
    for part in nx.strongly_connected_components(g):
        if len(part) > 1:
            sub = g.subgraph(part)
            cycle = [u for u, _ in nx.find_cycle(sub, source=min(part))]
            i = cycle.index(min(cycle))
            cycles.append(cycle[i:] + cycle[:i])
    cycles.sort(key=lambda c: c[0])
    return cycles
