"""The ``GraphStore`` protocol every backend implements, and the records it speaks.

A store holds nodes (validated :class:`~sqems.graph_model.nodes.Node` models keyed by a
graph-wide unique ``uid``) and typed edges (at most one edge of a type between two
nodes). Writes are idempotent upserts applied in atomic batches; reads are point
lookups, property finds and breadth-first traversals.

Traversal is defined once, here, so that every backend returns the same answer:

* it runs level by level from the start uids, following only the ``hops`` given (an
  edge type and the direction to follow it in), never deeper than ``max_depth``;
* a node enters the result at the first level that reaches it (so cycles end);
* when several nodes of one level reach a new node, it is attributed to the smallest
  parent uid, then ``out`` before ``in``, then the smallest edge type;
* with a ``window``, a node that has a place in time (its label's ``time_span``) enters
  only if its interval overlaps the window; nodes without one always pass.

A traversal can also check the labels of its start nodes (``of``) and list the edges of
some types at every node it reached (``edges``), so that a question such as a recall
scope, which needs the units' own shipments beside the tree, is one call to the store
(and one round trip to a server).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, Self, runtime_checkable

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.edges import REL_TYPES, rel_type
from sqems.graph_model.integrity import Record, RecordRefused, Stored
from sqems.graph_model.nodes import NODE_TYPES, Node, node_type

DEFAULT_MAX_DEPTH = 32


class Direction(StrEnum):
    OUT = "out"
    IN = "in"
    BOTH = "both"


Hops = Mapping[str, Direction]
"""Edge types to follow, each with the direction to follow it in."""


class Edge(NamedTuple):
    """A typed relationship ``src -[type]-> dst`` with optional properties."""

    type: str
    src: str
    dst: str
    props: Mapping[str, Any] = MappingProxyType({})

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "src": self.src, "dst": self.dst, "props": dict(self.props)}


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A closed interval of time; either end may be open (None)."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValidationFailed(
                    f"time window {name} {value.isoformat()} has no time zone; "
                    "give an offset such as +00:00"
                )
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValidationFailed(
                f"time window ends ({self.end.isoformat()}) before it starts "
                f"({self.start.isoformat()})"
            )

    def bounds(self) -> tuple[float, float]:
        """POSIX seconds ``(lo, hi)``, infinite where open."""
        lo = self.start.timestamp() if self.start is not None else float("-inf")
        hi = self.end.timestamp() if self.end is not None else float("inf")
        return lo, hi

    def overlaps(self, interval: tuple[float, float] | None) -> bool:
        if interval is None:
            return True
        lo, hi = self.bounds()
        return interval[1] >= lo and interval[0] <= hi


class Reached(NamedTuple):
    """A node a traversal reached, with the edge that first reached it."""

    uid: str
    label: str
    depth: int
    via: str | None = None
    edge: str | None = None
    direction: Direction | None = None


@dataclass(slots=True)
class Traversal:
    """The breadth-first tree a traversal grew, start nodes included at depth 0.

    ``reached`` is in breadth-first order (a node's parent always comes before it);
    ``edges`` holds the edges a caller asked to list at the reached nodes, ordered by
    source, type and target.
    """

    start: tuple[str, ...]
    reached: dict[str, Reached]
    edges: list[Edge] = field(default_factory=list)

    def __contains__(self, uid: object) -> bool:
        return uid in self.reached

    def __len__(self) -> int:
        return len(self.reached)

    def by_label(self, label: str) -> list[Reached]:
        """Reached nodes of one label, ordered by uid."""
        return sorted((r for r in self.reached.values() if r.label == label), key=_uid)

    def path(self, uid: str) -> list[Reached]:
        """The chain of reached nodes from a start node to ``uid`` (inclusive)."""
        if uid not in self.reached:
            raise NotFound(f"{uid} was not reached by this traversal")
        chain = [self.reached[uid]]
        while chain[-1].via is not None:
            chain.append(self.reached[chain[-1].via])
        chain.reverse()
        return chain


def _uid(r: Reached) -> str:
    return r.uid


class Page(NamedTuple):
    """One page of an export: the items and the cursor to resume after them."""

    items: list[Any]
    cursor: str


@dataclass(slots=True)
class Subgraph:
    """Nodes and the edges among them, ready to serialise."""

    nodes: list[Node]
    edges: list[Edge]

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": [{"label": n.label, **n.model_dump(mode="json")} for n in self.nodes],
            "edges": [e.as_dict() for e in self.edges],
        }


class CheckedEdge(NamedTuple):
    """An edge whose type and properties passed the model; ``props`` are JSON-ready."""

    type: str
    src: str
    dst: str
    props: dict[str, Any]


class StoreBase(ABC):
    """What every backend shares, written once.

    ``transaction()``, ``upsert_nodes`` and ``upsert_edges`` all end in one atomic
    ``_commit`` of a checked batch. The checks that need no store run here, once for
    every backend: node models, one label per uid within the batch, relationship types
    and properties. A backend adds what needs its data (:func:`check_against`). ``get``
    and the context manager rest on the backend's ``get_many`` and ``close``.
    """

    @property
    @abstractmethod
    def description(self) -> str: ...

    @abstractmethod
    def get_many(self, uids: Iterable[str]) -> dict[str, Node]: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def edges(self, uids: Iterable[str], hops: Hops) -> list[Edge]: ...

    def edges_along(self, uids: Iterable[str], steps: Sequence[Hops]) -> list[list[Edge]]:
        """See :meth:`GraphStore.edges_along`; a backend that can answer in one round
        trip overrides this."""
        answer: list[list[Edge]] = []
        at = list(dict.fromkeys(uids))
        for hops in steps:
            found = self.edges(at, hops) if at else []
            answer.append(found)
            at = far_ends(at, found, hops)
        return answer

    def get(self, uid: str) -> Node:
        found = self.get_many([uid])
        if uid not in found:
            raise NotFound(f"{uid} is not in the graph (store: {self.description})")
        return found[uid]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[WriteBatch]:
        batch = WriteBatch()
        yield batch
        self._checked_commit(batch.nodes, batch.edges)

    def upsert_nodes(self, nodes: Iterable[Node]) -> int:
        nodes = list(nodes)
        self._checked_commit(nodes, [])
        return len(nodes)

    def upsert_edges(self, edges: Iterable[Edge]) -> int:
        edges = list(edges)
        self._checked_commit([], edges)
        return len(edges)

    def _checked_commit(self, nodes: list[Node], edges: list[Edge]) -> None:
        if nodes or edges:
            self._commit(*check_batch(nodes, edges))

    @abstractmethod
    def _commit(self, nodes: dict[str, Node], edges: list[CheckedEdge]) -> None:
        """Write a checked batch atomically, or nothing."""


def check_batch(
    nodes: Iterable[Node], edges: Iterable[Edge]
) -> tuple[dict[str, Node], list[CheckedEdge]]:
    """Nodes by uid (the last of a repeated uid wins) and edges with validated
    properties; :class:`ValidationFailed` for anything the model refuses."""
    by_uid: dict[str, Node] = {}
    for node in nodes:
        if not isinstance(node, Node):
            raise ValidationFailed(f"expected a graph node model, got {type(node).__name__}")
        earlier = by_uid.get(node.uid)
        if earlier is not None and earlier.label != node.label:
            raise ValidationFailed(
                f"uid {node.uid} appears as both {earlier.label} and {node.label}"
            )
        by_uid[node.uid] = node
    checked = []
    for edge in edges:
        spec = rel_type(edge.type)
        props = spec.check_props(edge.src, edge.dst, dict(edge.props) if edge.props else None)
        checked.append(CheckedEdge(edge.type, edge.src, edge.dst, props))
    return by_uid, checked


def check_starts(
    starts: Iterable[str], labels: Mapping[str, str], of: Collection[str] | None, store: str
) -> None:
    """:class:`NotFound` for the first start that is not in the graph, and
    :class:`ValidationFailed` for the first whose label is not one of ``of``."""
    for uid in starts:
        label = labels.get(uid)
        if label is None:
            raise NotFound(f"{uid} is not in the graph (store: {store})")
        if of is not None and label not in of:
            wanted = " or ".join(sorted(of))
            raise ValidationFailed(f"{uid} is a {label}, not a {wanted}")


def where_model(label: str, where: Mapping[str, Any] | None) -> type[Node]:
    """The model of ``label``, after checking that ``where`` names only its properties."""
    model = node_type(label)
    for key in where or {}:
        if key not in model.model_fields:
            raise ValidationFailed(
                f"{label} has no property {key!r}; it has {', '.join(model.model_fields)}"
            )
    return model


def check_against(
    nodes: Mapping[str, Node],
    edges: Iterable[CheckedEdge],
    stored_label: Callable[[str], str | None],
    store: str,
) -> None:
    """The checks that need the store: a uid keeps its label, and an edge joins two
    nodes that exist (in the store or the batch) with labels its type allows."""
    for uid, node in nodes.items():
        existing = stored_label(uid)
        if existing is not None and existing != node.label:
            raise RecordRefused(
                f"uid {uid} already belongs to a {existing}; it cannot also be a {node.label}",
                [Record("node", uid)],
            )
    for edge in edges:
        ends = []
        for end in (edge.src, edge.dst):
            in_batch = nodes.get(end)
            label = in_batch.label if in_batch is not None else stored_label(end)
            if label is None:
                raise RecordRefused(
                    f"{edge.type} {edge.src}→{edge.dst}: node {end} is not in the graph "
                    f"({store}); write it before its edges",
                    [Record(edge.type, edge.src, edge.dst)],
                )
            ends.append(label)
        try:
            REL_TYPES[edge.type].check(ends[0], ends[1])
        except RecordRefused:
            raise
        except ValidationFailed as exc:
            raise RecordRefused(exc.message, [Record(edge.type, edge.src, edge.dst)]) from None


class WriteBatch:
    """Nodes and edges collected inside :meth:`GraphStore.transaction`, written together."""

    __slots__ = ("edges", "nodes")

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []

    def add_nodes(self, nodes: Iterable[Node]) -> None:
        self.nodes.extend(nodes)

    def add_edges(self, edges: Iterable[Edge]) -> None:
        self.edges.extend(edges)


@runtime_checkable
class GraphStore(Protocol):
    """What every graph backend offers; see the module docstring for the semantics."""

    @property
    def description(self) -> str:
        """Where the store lives, for messages: ``embedded at /srv/sqems/graph.db``."""
        ...

    @property
    def write_concurrency(self) -> int:
        """How many write transactions a bulk loader should run at once."""
        ...

    def transaction(self) -> AbstractContextManager[WriteBatch]:
        """A batch that is written atomically when the block ends without error."""
        ...

    def upsert_nodes(self, nodes: Iterable[Node]) -> int:
        """Create or replace nodes in one transaction; returns how many were written."""
        ...

    def upsert_edges(self, edges: Iterable[Edge]) -> int:
        """Create or update edges in one transaction; both ends must exist."""
        ...

    def get(self, uid: str) -> Node:
        """The node with ``uid``; :class:`NotFound` if there is none."""
        ...

    def get_many(self, uids: Iterable[str]) -> dict[str, Node]:
        """Nodes by uid; uids that do not exist are left out."""
        ...

    def label_of(self, uid: str) -> str | None: ...

    def labels(self, uids: Iterable[str]) -> dict[str, str]:
        """The label of each of ``uids`` in the graph; uids not in it are left out."""
        ...

    def genealogy(self, uids: Iterable[str], statuses: Iterable[str] | None = None) -> Stored:
        """What the graph holds about units ``uids`` that the genealogy rules
        (:mod:`sqems.graph_model.integrity`) judge writes by; other uids are left out.
        Whether a unit is scrapped is read for ``statuses`` only (default: all)."""
        ...

    def metadata(self) -> dict[str, str]:
        """The store's own records (the plant it holds, a load in progress), apart
        from the graph: no label, count or traversal sees them."""
        ...

    def set_metadata(self, key: str, value: str | None) -> None:
        """Set one metadata entry, or delete it with ``None``."""
        ...

    def find(
        self, label: str, where: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[Node]:
        """Nodes of ``label`` whose properties equal ``where``, ordered by uid."""
        ...

    def count(self, label: str | None = None) -> int: ...

    def count_edges(self, type: str | None = None) -> int: ...

    def edges(self, uids: Iterable[str], hops: Hops) -> list[Edge]:
        """Edges at ``uids`` of the given types and directions, with properties."""
        ...

    def edges_along(self, uids: Iterable[str], steps: Sequence[Hops]) -> list[list[Edge]]:
        """Edges along a fixed sequence of steps: those of ``steps[0]`` at ``uids``, then
        those of ``steps[1]`` at the nodes the first step led to (each once), and so
        on; one list per step, each as :meth:`edges` lists it. A node the first step
        starts from must exist (:class:`NotFound`); later steps start from what the
        graph holds. A batch's units, their sub-assemblies and the batches that made
        those are ``edges_along(batches, [{"PRODUCED": "out"}, {"ASSEMBLED_INTO": "in"},
        {"PRODUCED": "in"}])``: one round trip to a server, however many units."""
        ...

    def degrees(self, uids: Iterable[str], hops: Hops) -> dict[str, int]:
        """How many edges of the given types and directions each of ``uids`` has: the
        size of :meth:`edges` per node, without fetching the edges."""
        ...

    def traverse(
        self,
        start: Iterable[str],
        hops: Hops,
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
        window: TimeWindow | None = None,
        of: Collection[str] | None = None,
        edges: Hops | None = None,
    ) -> Traversal:
        """The breadth-first tree from ``start`` along ``hops`` (see the module
        docstring). ``of`` names the labels a start may have (any other is a
        :class:`ValidationFailed`); ``edges`` are listed at every reached node, starts
        included, as :meth:`edges` would list them, in :attr:`Traversal.edges`."""
        ...

    def subgraph(self, uids: Iterable[str]) -> Subgraph:
        """The nodes ``uids`` and every edge between two of them."""
        ...

    def iter_nodes(self, label: str, *, after: str = "", page: int = 10_000) -> Iterator[Page]:
        """Every node of ``label`` in uid order, a page at a time; pass a page's
        ``cursor`` as ``after`` to resume behind it."""
        ...

    def iter_edges(self, type: str, *, after: str = "", page: int = 10_000) -> Iterator[Page]:
        """Every edge of ``type`` in a fixed order, a page at a time, resumable by cursor."""
        ...

    def close(self) -> None: ...


@functools.lru_cache(maxsize=256)
def _plan(
    outs: frozenset[str], ins: frozenset[str]
) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """For each label, the wanted types that can leave it and that can enter it.

    The model says which labels each type joins, so a node whose label cannot carry a
    wanted type is not scanned at all: a machine's thousands of incoming runs are
    skipped by an upstream trace, which only wants ``ON`` outwards from runs.
    """
    plan = {}
    for label in NODE_TYPES:
        leaving = frozenset(t for t in outs if any(a == label for a, _ in REL_TYPES[t].pairs))
        entering = frozenset(t for t in ins if any(b == label for _, b in REL_TYPES[t].pairs))
        plan[label] = (leaving, entering)
    return plan


def split_hops(hops: Hops) -> tuple[frozenset[str], frozenset[str]]:
    """The wanted types to follow outwards and inwards; unknown types or directions are
    a :class:`ValidationFailed`."""
    for typ, direction in hops.items():
        rel_type(typ)
        if direction not in (Direction.OUT, Direction.IN, Direction.BOTH):
            raise ValidationFailed(
                f"hop {typ}: direction must be 'out', 'in' or 'both', got {direction!r}"
            )
    outs = frozenset(t for t, d in hops.items() if d in (Direction.OUT, Direction.BOTH))
    ins = frozenset(t for t, d in hops.items() if d in (Direction.IN, Direction.BOTH))
    return outs, ins


def plan_hops(hops: Hops) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Per label, the hop types a traversal must follow out of and into such a node."""
    return _plan(*split_hops(hops))


def far_ends(at: Iterable[str], edges: Iterable[Edge], hops: Hops) -> list[str]:
    """The nodes ``edges`` lead to from ``at`` along ``hops``, each once, in order of
    first appearance."""
    outs, ins = split_hops(hops)
    here = set(at)
    ends: dict[str, None] = {}
    for e in edges:
        if e.type in outs and e.src in here:
            ends[e.dst] = None
        if e.type in ins and e.dst in here:
            ends[e.src] = None
    return list(ends)


def hops(direction: Direction, *types: str) -> dict[str, Direction]:
    """``hops(Direction.OUT, "PRODUCED", "SHIPPED_IN")`` → ``{type: direction}``."""
    return dict.fromkeys(types, direction)


def iter_chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
