"""Load a plant (generated in memory, or read from its files) into a graph store.

A load is all-or-nothing for bad data: a streaming pre-pass reads the whole plant
first — every row parses, every edge's ends are in the plant or the store with labels
its type joins, the genealogy rules (:mod:`sqems.graph_model.integrity`) hold across
the plant and the store — keeping a few values per node, and only then is anything
written. A refusal names the file and line of the row.

Rows are then written in batches, each its own transaction. While they are written
the store records a load in progress (:func:`load_in_progress`); a load that dies
midway (a kill, a crash) leaves that record, and running the same load again finishes
it (writes are idempotent upserts).

A load that names its plant (``plant=``, see :func:`~sqems.datasets.files.plant_identity`)
is refused by a store that holds another plant, unless ``merge`` is given.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqems import localtime
from sqems.datasets.files import Section
from sqems.datasets.record_dates import local_dates, plant_zone
from sqems.errors import ValidationFailed
from sqems.graph_model import integrity
from sqems.graph_model.edges import REL_TYPES, rel_type
from sqems.graph_model.integrity import Record, RecordRefused
from sqems.graph_model.nodes import Node, node_type
from sqems.graph_model.store import Edge, GraphStore, iter_chunks

log = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[str, int], None]
"""Called with (section name, rows just written)."""

PLANT_KEY = "plant"
"""Store metadata: the identity of the plant the store holds."""
MERGED_KEY = "plant.merged"
"""Store metadata: the identities of plants merged into it (a JSON list)."""
LOAD_KEY = "load.in_progress"
"""Store metadata: the load being written (JSON), removed when it completes."""
_LOOKUP = 10_000


@dataclass(slots=True)
class LoadReport:
    nodes: dict[str, int] = field(default_factory=dict)
    edges: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    checked_seconds: float = 0.0
    """Of ``seconds``, the pre-pass that checked the whole plant before writing."""

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
    plant: str | None = None,
    merge: bool = False,
    source: str | None = None,
) -> LoadReport:
    """Check the whole plant, then validate and upsert every section, nodes before edges.

    ``plant`` is the plant's identity: a store holding another plant refuses it unless
    ``merge``. ``source`` (a directory, "generator") is recorded with the load in
    progress. Parsing and writing overlap: while a batch is written on a worker
    thread, the next one is validated. ``concurrency`` batches (default: the store's
    ``write_concurrency``) are written at once; above 1, batches may commit out of
    order, which an idempotent reload repairs after a crash.
    """
    ordered = sorted(sections, key=lambda s: s.kind != "nodes")
    report = LoadReport()
    began = time.perf_counter()
    if plant is not None:
        claim_plant(store, plant, merge=merge)
    zone = plant_zone(store, ordered)
    check_plant(store, ordered, zone=zone)
    report.checked_seconds = time.perf_counter() - began
    if plant is not None:
        record_plant(store, plant)
    store.set_metadata(
        LOAD_KEY,
        json.dumps(
            {
                "plant": plant,
                "source": source or (ordered[0].origin if ordered else None),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        ),
    )
    depth = store.write_concurrency if concurrency is None else max(1, concurrency)
    with _Pipeline(progress, depth) as pipeline:
        kind = None
        for section in ordered:
            if section.kind != kind:
                pipeline.drain()
                kind = section.kind
            if section.kind == "nodes":
                _load_nodes(store, section, batch_size, pipeline, zone)
            else:
                _load_edges(store, section, batch_size, pipeline)
        pipeline.drain()
        report.nodes = {
            s.name: pipeline.written.get(s.name, 0) for s in ordered if s.kind == "nodes"
        }
        report.edges = {
            s.name: pipeline.written.get(s.name, 0) for s in ordered if s.kind == "edges"
        }
    store.set_metadata(LOAD_KEY, None)
    report.seconds = time.perf_counter() - began
    log.info(
        "plant loaded",
        extra={
            "entities": report.total,
            "seconds": report.seconds,
            "checked_seconds": report.checked_seconds,
        },
    )
    return report


# --- which plant a store holds -------------------------------------------------------------


def held_plants(store: GraphStore) -> list[str]:
    """The plant a store holds, then any merged into it (empty for an older store)."""
    meta = store.metadata()
    held = [meta[PLANT_KEY]] if PLANT_KEY in meta else []
    return held + list(json.loads(meta.get(MERGED_KEY, "[]")))


def load_in_progress(store: GraphStore) -> dict[str, Any] | None:
    """The load a store is being written by, or was when it stopped: ``plant``,
    ``source`` and ``started_at``; None when the last load completed."""
    raw = store.metadata().get(LOAD_KEY)
    return None if raw is None else dict(json.loads(raw))


def claim_plant(store: GraphStore, plant: str, *, merge: bool) -> None:
    """Refuse to load ``plant`` into a store that holds another one, unless ``merge``."""
    held = held_plants(store)
    if merge or plant in held:
        return
    if held:
        raise ValidationFailed(
            f"the graph store ({store.description}) holds plant {held[0]}, not {plant}; "
            "load it into another store (SQEMS_DATA_DIR or SQEMS_GRAPH_URI), or add it "
            "to this one with sqems load --merge"
        )
    nodes = store.count()
    if nodes:
        raise ValidationFailed(
            f"the graph store ({store.description}) holds {nodes} nodes of a plant it has "
            f"no name for (loaded before stores recorded their plant), not {plant}; load it "
            "into another store (SQEMS_DATA_DIR or SQEMS_GRAPH_URI), or add it to them with "
            "sqems load --merge"
        )


def record_plant(store: GraphStore, plant: str) -> None:
    """Note ``plant`` in the store's metadata: as the plant it holds, or merged into it."""
    held = held_plants(store)
    if not held:
        store.set_metadata(PLANT_KEY, plant)
    elif plant not in held:
        store.set_metadata(MERGED_KEY, json.dumps([*held[1:], plant]))


# --- the pre-pass --------------------------------------------------------------------------


def check_plant(
    store: GraphStore, sections: Iterable[Section], *, zone: localtime.SiteZone | None = None
) -> None:
    """Read every row of every section and refuse the plant, naming the file and line,
    if any of it would be refused by the store; writes nothing. Dates alone in
    record-keeping columns are read in ``zone`` (default: the plant's, see
    :mod:`sqems.datasets.record_dates`)."""
    sections = sorted(sections, key=lambda s: s.kind != "nodes")
    if zone is None:
        zone = plant_zone(store, sections)
    labels: dict[str, str] = {}
    lines: dict[str, int] = {}
    origin_of: dict[str, str] = {}
    writes = integrity.Writes()
    edge_lines: dict[Record, tuple[str, int]] = {}
    unknown_ends: dict[str, tuple[str, int, Edge]] = {}
    for section in sections:
        origin_of[section.name] = section.origin
        if section.kind == "nodes":
            parse = _node_parser(section, zone)
            for line, record in section.records:
                node = parse(line, record)
                earlier = labels.get(node.uid)
                if earlier is not None and earlier != node.label:
                    raise ValidationFailed(
                        f"{section.origin} line {line}: uid {node.uid} is already a "
                        f"{earlier} in this plant; it cannot also be a {node.label}"
                    )
                labels[node.uid] = node.label
                lines[node.uid] = line
                if node.label == "Unit":
                    writes.add_unit(
                        node.uid,
                        node.produced_at.timestamp(),  # type: ignore[attr-defined]
                        node.status == integrity.SCRAPPED,  # type: ignore[attr-defined]
                    )
            continue
        spec = rel_type(section.name)
        parse_edge = _edge_parser(section)
        for line, record in section.records:
            edge = parse_edge(line, record)
            try:
                spec.check_props(edge.src, edge.dst, dict(edge.props) or None)
            except ValidationFailed as exc:
                raise ValidationFailed(f"{section.origin} line {line}: {exc.message}") from None
            src, dst = labels.get(edge.src), labels.get(edge.dst)
            if src is None or dst is None:
                for end, label in ((edge.src, src), (edge.dst, dst)):
                    if label is None and end not in unknown_ends:
                        unknown_ends[end] = (section.origin, line, edge)
            else:
                _check_ends(spec.name, src, dst, f"{section.origin} line {line}")
            writes.add_edge(edge.type, edge.src, edge.dst)
            if edge.type in (integrity.ASSEMBLED, integrity.SHIPPED):
                edge_lines.setdefault(Record(edge.type, edge.src, edge.dst), (section.origin, line))

    if store.count() == 0:
        stored_labels: dict[str, str] = {}
    else:
        stored_labels = _labels(store, [*labels, *unknown_ends])
        for uid, label in labels.items():
            other = stored_labels.get(uid)
            if other is not None and other != label:
                raise ValidationFailed(
                    f"{origin_of[label]} line {lines[uid]}: uid {uid} already belongs to a "
                    f"{other} in the graph ({store.description}); it cannot also be a {label}"
                )
    for end, (origin, line, edge) in unknown_ends.items():
        if end not in stored_labels:
            raise ValidationFailed(
                f"{origin} line {line}: {edge.type} {edge.src}→{edge.dst}: node {end} is "
                f"neither in this plant nor in the graph ({store.description})"
            )
        ends = [labels.get(u) or stored_labels[u] for u in (edge.src, edge.dst)]
        _check_ends(edge.type, ends[0], ends[1], f"{origin} line {line}")
    # the rest of a plant's edges to stored nodes carry the same labels: checked above
    # for the first edge at each such node; the store checks each edge when written

    stored = integrity.Stored()
    if stored_labels:
        statuses = set(writes.statuses())
        for chunk in iter_chunks(writes.touched(), _LOOKUP):
            stored.update(store.genealogy(chunk, [u for u in chunk if u in statuses]))
    try:
        integrity.check(writes, stored)
    except RecordRefused as exc:
        raise ValidationFailed(_locate(exc, edge_lines, lines, origin_of, labels)) from None


def _check_ends(typ: str, src: str, dst: str, where: str) -> None:
    try:
        REL_TYPES[typ].check(src, dst)
    except ValidationFailed as exc:
        raise ValidationFailed(f"{where}: {exc.message}") from None


def _labels(store: GraphStore, uids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in iter_chunks(uids, _LOOKUP * 10):
        found.update(store.labels(chunk))
    return found


def _locate(
    exc: RecordRefused,
    edge_lines: Mapping[Record, tuple[str, int]],
    lines: Mapping[str, int],
    origin_of: Mapping[str, str],
    labels: Mapping[str, str],
) -> str:
    """The refusal's message behind the file and line of the first record it names."""
    for record in exc.records:
        if record.type == "node" and record.src in lines:
            origin = origin_of[labels[record.src]]
            return f"{origin} line {lines[record.src]}: {exc.message}"
        if record in edge_lines:
            origin, line = edge_lines[record]
            return f"{origin} line {line}: {exc.message}"
    return exc.message


# --- writing ------------------------------------------------------------------------------


class _Pipeline:
    """Writes on worker threads while the caller prepares the next batch.

    ``depth`` batches may be in flight at once (a server such as Neo4j then commits on
    several cores); a new kind of section (edges after nodes) waits for every write
    before it, so an edge is never written before its nodes have committed.
    """

    def __init__(self, progress: Progress | None, depth: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="sqems-load")
        self._pending: deque[tuple[Future[int], str, str, Callable[[Record], int | None]]] = deque()
        self._depth = depth
        self._progress = progress
        self.written: dict[str, int] = {}

    def submit(
        self,
        name: str,
        origin: str,
        locate: Callable[[Record], int | None],
        write: Callable[[], int],
    ) -> None:
        while len(self._pending) >= self._depth:
            self._finish_oldest()
        self._pending.append((self._pool.submit(write), name, origin, locate))

    def drain(self) -> None:
        while self._pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        future, name, origin, locate = self._pending.popleft()
        try:
            n = future.result()
        except RecordRefused as exc:
            line = next((n for n in map(locate, exc.records) if n is not None), None)
            where = f"{origin} line {line}" if line is not None else origin
            raise ValidationFailed(f"{where}: {exc.message}") from None
        except ValidationFailed as exc:
            raise ValidationFailed(f"{origin}: {exc.message}") from None
        self.written[name] = self.written.get(name, 0) + n
        if self._progress:
            self._progress(name, n)

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        # on an error, let the writes in flight finish (each is a whole transaction)
        # and drop their outcome; the error being raised is the one to report
        self._pool.shutdown(wait=True)


def _node_parser(
    section: Section, zone: localtime.SiteZone
) -> Callable[[int, dict[str, Any]], Node]:
    model = node_type(section.name)

    def parse(line: int, record: dict[str, Any]) -> Node:
        try:
            return model.parse(local_dates(section.name, record, zone))
        except ValidationFailed as exc:
            raise ValidationFailed(f"{section.origin} line {line}: {exc.message}") from None

    return parse


def _edge_parser(section: Section) -> Callable[[int, dict[str, Any]], Edge]:
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

    return parse


def _load_nodes(
    store: GraphStore,
    section: Section,
    batch_size: int,
    pipe: _Pipeline,
    zone: localtime.SiteZone,
) -> None:
    _feed(section, batch_size, pipe, _node_parser(section, zone), _node_key, store.upsert_nodes)


def _load_edges(store: GraphStore, section: Section, batch_size: int, pipe: _Pipeline) -> None:
    _feed(section, batch_size, pipe, _edge_parser(section), _edge_key, store.upsert_edges)


def _node_key(node: Node) -> Record:
    return Record("node", node.uid)


def _edge_key(edge: Edge) -> Record:
    return Record(edge.type, edge.src, edge.dst)


def _feed(
    section: Section,
    batch_size: int,
    pipe: _Pipeline,
    parse: Callable[[int, dict[str, Any]], T],
    key: Callable[[T], Record],
    write: Callable[[list[T]], int],
) -> None:
    """Parse a section's rows into batches and hand each batch to the pipeline, with
    the way back from a refused record to its line."""
    batch: list[T] = []
    lines: list[int] = []

    def submit() -> None:
        where = _Lines(batch, lines, key)
        pipe.submit(section.name, section.origin, where, functools.partial(write, batch))

    for line, record in section.records:
        batch.append(parse(line, record))
        lines.append(line)
        if len(batch) >= batch_size:
            submit()
            batch, lines = [], []
    if batch:
        submit()


@dataclass(frozen=True, slots=True)
class _Lines:
    """The line of a refused record within one batch (built only when one is refused)."""

    items: list[Any]
    lines: list[int]
    key: Callable[[Any], Record]

    def __call__(self, record: Record) -> int | None:
        for item, line in zip(self.items, self.lines, strict=True):
            if self.key(item) == record:
                return line
        return None
