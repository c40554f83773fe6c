"""Load a plant (generated in memory, or read from its files) into a graph store.

Rows are validated by the graph model and written in batches, each its own
transaction. Loading is idempotent: a load stopped halfway (a bad row, a kill) is
finished by running it again.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqems.datasets.files import Section
from sqems.errors import ValidationFailed
from sqems.graph_model.edges import rel_type
from sqems.graph_model.nodes import Node, node_type
from sqems.graph_model.store import Edge, GraphStore

log = logging.getLogger(__name__)

T = TypeVar("T")
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
    concurrency: int | None = None,
) -> LoadReport:
    """Validate and upsert every section, nodes before edges.

    Parsing and writing overlap: while a batch is written on a worker thread, the next
    one is validated. ``concurrency`` batches (default: the store's
    ``write_concurrency``) are written at once; above 1, batches may commit out of
    order, which an idempotent reload repairs after a crash.
    """
    ordered = sorted(sections, key=lambda s: s.kind != "nodes")
    report = LoadReport()
    began = time.perf_counter()
    depth = store.write_concurrency if concurrency is None else max(1, concurrency)
    with _Pipeline(progress, depth) as pipeline:
        kind = None
        for section in ordered:
            if section.kind != kind:
                pipeline.drain()
                kind = section.kind
            load = _load_nodes if section.kind == "nodes" else _load_edges
            load(store, section, batch_size, pipeline)
        pipeline.drain()
        report.nodes = {
            s.name: pipeline.written.get(s.name, 0) for s in ordered if s.kind == "nodes"
        }
        report.edges = {
            s.name: pipeline.written.get(s.name, 0) for s in ordered if s.kind == "edges"
        }
    report.seconds = time.perf_counter() - began
    log.info("plant loaded", extra={"entities": report.total, "seconds": report.seconds})
    return report


class _Pipeline:
    """Writes on worker threads while the caller prepares the next batch.

    ``depth`` batches may be in flight at once (a server such as Neo4j then commits on
    several cores); a new kind of section (edges after nodes) waits for every write
    before it, so an edge is never written before its nodes have committed.
    """

    def __init__(self, progress: Progress | None, depth: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="sqems-load")
        self._pending: deque[tuple[Future[int], str, str]] = deque()
        self._depth = depth
        self._progress = progress
        self.written: dict[str, int] = {}

    def submit(self, name: str, where: str, write: Callable[[], int]) -> None:
        while len(self._pending) >= self._depth:
            self._finish_oldest()
        self._pending.append((self._pool.submit(write), name, where))

    def drain(self) -> None:
        while self._pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        future, name, where = self._pending.popleft()
        try:
            n = future.result()
        except ValidationFailed as exc:
            raise ValidationFailed(f"{where}: {exc.message}") from None
        self.written[name] = self.written.get(name, 0) + n
        if self._progress:
            self._progress(name, n)

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        # on an error, let the writes in flight finish (each is a whole transaction)
        # and drop their outcome; the error being raised is the one to report
        self._pool.shutdown(wait=True)


def _load_nodes(store: GraphStore, section: Section, batch_size: int, pipe: _Pipeline) -> None:
    model = node_type(section.name)

    def parse(line: int, record: dict[str, Any]) -> Node:
        try:
            return model.parse(record)
        except ValidationFailed as exc:
            raise ValidationFailed(f"{section.origin} line {line}: {exc.message}") from None

    _feed(section, batch_size, pipe, parse, store.upsert_nodes)


def _load_edges(store: GraphStore, section: Section, batch_size: int, pipe: _Pipeline) -> None:
    spec = rel_type(section.name)

    def parse(line: int, record: dict[str, Any]) -> Edge:
        src = record.pop("src", None)
        dst = record.pop("dst", None)
        if not src or not dst:
            raise ValidationFailed(f"{section.origin} line {line}: src and dst are required")
        if record and spec.props is None:
            raise ValidationFailed(
                f"{section.origin} line {line}: {spec.name} has no properties, got {sorted(record)}"
            )
        return Edge(spec.name, src, dst, record)

    _feed(section, batch_size, pipe, parse, store.upsert_edges)


def _feed(
    section: Section,
    batch_size: int,
    pipe: _Pipeline,
    parse: Callable[[int, dict[str, Any]], T],
    write: Callable[[list[T]], int],
) -> None:
    """Parse a section's rows into batches and hand each batch to the pipeline."""
    batch: list[T] = []
    first_line = 0
    for line, record in section.records:
        item = parse(line, record)
        if not batch:
            first_line = line
        batch.append(item)
        if len(batch) >= batch_size:
            pipe.submit(section.name, f"{section.origin} (rows from line {first_line})",
                        functools.partial(write, batch))  # fmt: skip
            batch = []
    if batch:
        pipe.submit(section.name, f"{section.origin} (rows from line {first_line})",
                    functools.partial(write, batch))  # fmt: skip
