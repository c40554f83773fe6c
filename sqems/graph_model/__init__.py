"""The quality knowledge graph: node and relationship models, the ``GraphStore``
protocol with its backends, and traceability over any of them."""

from sqems.graph_model.edges import REL_TYPES, RelType, rel_type
from sqems.graph_model.embedded import EmbeddedGraphStore, StoreLocked, lock_holder
from sqems.graph_model.nodes import NODE_TYPES, Node, node_type
from sqems.graph_model.open import open_store
from sqems.graph_model.store import (
    Direction,
    Edge,
    GraphStore,
    Reached,
    Subgraph,
    TimeWindow,
    Traversal,
    WriteBatch,
    hops,
)
from sqems.graph_model.traceability import (
    DOWNSTREAM,
    UPSTREAM,
    AffectedUnit,
    Genealogy,
    PathStep,
    RecallScope,
    RecallSource,
    SourceKind,
    Traceability,
    render_path,
)

__all__ = [
    "DOWNSTREAM",
    "NODE_TYPES",
    "REL_TYPES",
    "UPSTREAM",
    "AffectedUnit",
    "Direction",
    "Edge",
    "EmbeddedGraphStore",
    "Genealogy",
    "GraphStore",
    "Node",
    "PathStep",
    "Reached",
    "RecallScope",
    "RecallSource",
    "RelType",
    "SourceKind",
    "StoreLocked",
    "Subgraph",
    "TimeWindow",
    "Traceability",
    "Traversal",
    "WriteBatch",
    "hops",
    "lock_holder",
    "node_type",
    "open_store",
    "rel_type",
    "render_path",
]
