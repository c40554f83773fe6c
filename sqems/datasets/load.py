"""Load a plant (generated in memory, or read from its files) into a graph store.

Rows are validated by the graph model and written in batches, each its own
transaction. Loading is idempotent: a load stopped halfway (a bad row, a kill) is
finished by running it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqems.datasets.files import Section
from sqems.errors import ValidationFailed
from sqems.graph_model.edges import rel_type
from sqems.graph_model.nodes import node_type
from sqems.graph_model.store import Edge, GraphStore

log = logging.getLogger(__name__)

Progress = Callable[[str, int], None]
"""Called with (section name, rows just written)."""


@dataclass(slots=True)
class LoadReport:
    nodes: dict[str, int] = field(default_factory=dict)
    edges: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.nodes.values()) + sum(self.edges.values())


def load_plant(
    store: GraphStore,
    sections: Iterable[Section],
    *,
    batch_size: int = 10_000,
    progress: Progress | None = None,
) -> LoadReport:
    """Validate and upsert every section, nodes before edges."""
    ordered = sorted(sections, key=lambda s: s.kind != "nodes")
    report = LoadReport()
    began = time.perf_counter()
    for section in ordered:
        written = (_load_nodes if section.kind == "nodes" else _load_edges)(
            store, section, batch_size, progress
        )
        (report.nodes if section.kind == "nodes" else report.edges)[section.name] = written
    report.seconds = time.perf_counter() - began
    log.info("plant loaded", extra={"entities": report.total, "seconds": report.seconds})
    return report


def _located(section: Section, line: int, exc: ValidationFailed) -> ValidationFailed:
    return ValidationFailed(f"{section.origin} line {line}: {exc.message}")


def _load_nodes(
    store: GraphStore, section: Section, batch_size: int, progress: Progress | None
) -> int:
    model = node_type(section.name)
    batch = []
    written = 0
    for line, record in section.records:
        try:
            batch.append(model.parse(record))
        except ValidationFailed as exc:
            raise _located(section, line, exc) from None
        if len(batch) >= batch_size:
            written += store.upsert_nodes(batch)
            if progress:
                progress(section.name, len(batch))
            batch = []
    if batch:
        written += store.upsert_nodes(batch)
        if progress:
            progress(section.name, len(batch))
    return written


def _load_edges(
    store: GraphStore, section: Section, batch_size: int, progress: Progress | None
) -> int:
    spec = rel_type(section.name)
    batch: list[Edge] = []
    first_line = 0
    written = 0

    def flush() -> None:
        nonlocal written, batch
        try:
            written += store.upsert_edges(batch)
        except ValidationFailed as exc:
            raise ValidationFailed(
                f"{section.origin} (rows from line {first_line}): {exc.message}"
            ) from None
        if progress:
            progress(section.name, len(batch))
        batch = []

    for line, record in section.records:
        src = record.pop("src", None)
        dst = record.pop("dst", None)
        if not src or not dst:
            raise ValidationFailed(f"{section.origin} line {line}: src and dst are required")
        if record and spec.props is None:
            raise ValidationFailed(
                f"{section.origin} line {line}: {spec.name} has no properties, got {sorted(record)}"
            )
        if not batch:
            first_line = line
        batch.append(Edge(spec.name, src, dst, record))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return written
