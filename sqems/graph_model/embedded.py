"""The embedded graph store: a networkx ``MultiDiGraph`` in memory, durable in SQLite.

SQLite (WAL journal, ``synchronous=FULL``) is the record: every write batch is one
SQLite transaction, so a process killed mid-batch leaves each committed batch whole
and no trace of the batch it was writing. The in-memory graph holds the topology
(labels, edge types, edge properties and node time intervals) for fast traversals;
node properties stay in SQLite and are read by uid when asked for.

One process writes a store file at a time (an advisory lock guards it); any number
may open it read-only and see it as it was when they opened it.
"""

from __future__ import annotations

import fcntl
import functools
import gc
import json
import logging
import os
import sqlite3
import sys
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from operator import itemgetter
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO, TypeVar, cast

import networkx as nx

from sqems import deadline
from sqems.errors import ConfigError, GraphUnavailable, NotFound, ValidationFailed
from sqems.graph_model import integrity
from sqems.graph_model.edges import rel_type
from sqems.graph_model.nodes import Node, node_type
from sqems.graph_model.store import (
    DEFAULT_MAX_DEPTH,
    CheckedEdge,
    Direction,
    Edge,
    Hops,
    Page,
    Reached,
    StoreBase,
    Subgraph,
    TimeWindow,
    Traversal,
    check_against,
    check_starts,
    iter_chunks,
    plan_hops,
    split_hops,
    where_model,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    uid TEXT PRIMARY KEY, label TEXT NOT NULL, t0 REAL, t1 REAL, props TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nodes_by_label ON nodes (label);
CREATE TABLE IF NOT EXISTS edges (
    src TEXT NOT NULL, type TEXT NOT NULL, dst TEXT NOT NULL, props TEXT,
    PRIMARY KEY (src, type, dst)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_by_dst ON edges (dst, type);
"""
_SCHEMA_VERSION = "1"
_NO_PROPS: Mapping[str, Any] = MappingProxyType({})
_first = itemgetter(0)
"""Sort key of ((src, type, dst), props) items: the key alone (props never compare)."""
_SQL_CHUNK = 900


F = TypeVar("F", bound=Callable[..., Any])


def _locked(method: F) -> F:
    """Run a read under the store's lock: a write in another thread (the API's
    mutations) must not change a dict a traversal is iterating."""

    @functools.wraps(method)
    def run(self: EmbeddedGraphStore, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(F, run)


class StoreLocked(GraphUnavailable):
    """Another process writes the store file: a second writer would lose its writes or
    theirs. Reading works meanwhile (a read-only open takes no lock)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(
            f"graph store {path} is open for writing by {holder}; stop it or wait for it to "
            "finish "
            "(commands that only read work meanwhile)"
        )
        self.path = path
        self.holder = holder


def _holder_text() -> str:
    """Who holds the lock, as the lock file says it: ``pid 4242 (sqems serve --port 8000)``."""
    # ``python -c ...`` shows as its arguments alone (the -c code says nothing useful)
    first = [] if not sys.argv or sys.argv[0] in ("", "-c") else [Path(sys.argv[0]).name]
    argv = [*first, *sys.argv[1:]]
    command = " ".join(argv)[:200]
    return f"pid {os.getpid()}" + (f" ({command})" if command else "")


def lock_holder(path: Path) -> str | None:
    """Who holds the write lock of the store file ``path`` now, or None when nobody does
    (a look, not a claim: the answer may change at once)."""
    if not Path(f"{path}.lock").is_file():
        return None
    try:
        handle = open(f"{path}.lock", "a+")  # noqa: SIM115 - closed below
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            return handle.read().strip() or "another process"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return None


class EmbeddedGraphStore(StoreBase):
    """A :class:`~sqems.graph_model.store.GraphStore` in one SQLite file.

    >>> from sqems.graph_model.nodes import Supplier
    >>> store = EmbeddedGraphStore(None)          # in memory only
    >>> store.upsert_nodes([Supplier(uid="SUP-1", name="Acme Metals")])
    1
    >>> store.get("SUP-1").name
    'Acme Metals'
    """

    def __init__(self, path: Path | str | None, *, read_only: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.read_only = read_only
        self._lock = threading.RLock()
        self._lockfile: TextIO | None = None
        self._g = nx.MultiDiGraph()
        self._times: dict[str, tuple[float, float]] = {}
        self._label_counts: Counter[str] = Counter()
        self._edge_counts: Counter[str] = Counter()
        self._db = self._connect()
        self._load()

    # --- opening ---------------------------------------------------------------------

    @property
    def description(self) -> str:
        return f"embedded at {self.path}" if self.path else "embedded in memory"

    @property
    def write_concurrency(self) -> int:
        # one SQLite writer; a second loader thread only contends for the GIL
        return 1

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            if self.read_only:
                raise ConfigError("an in-memory store cannot be opened read-only")
            db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            db.executescript(_SCHEMA)
            return db
        if self.path.exists() and self.path.is_dir():
            raise ConfigError(f"graph store path {self.path} is a directory; give a file path")
        if self.read_only:
            if not self.path.exists():
                raise NotFound(
                    f"no graph store at {self.path}; load a plant first (sqems demo or sqems load)"
                )
            uri = f"file:{self.path}?mode=ro"
            try:
                return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise GraphUnavailable(f"cannot open graph store {self.path}: {exc}") from None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create data directory {self.path.parent}: {exc}") from None
        self._take_lock()
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (_SCHEMA_VERSION,)
            )
        except sqlite3.DatabaseError as exc:
            self._release_lock()
            raise GraphUnavailable(
                f"{self.path} is not a usable SQEMS graph store: {exc}"
            ) from None
        return db

    def _take_lock(self) -> None:
        assert self.path is not None
        handle = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StoreLocked(self.path, holder) from None
        handle.truncate(0)
        handle.write(_holder_text())
        handle.flush()
        self._lockfile = handle

    def _release_lock(self) -> None:
        if self._lockfile is not None:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_UN)
            self._lockfile.close()
            self._lockfile = None

    def _load(self) -> None:
        g = self._g
        rows = self._db.execute("SELECT uid, label, t0, t1 FROM nodes")
        labels = self._label_counts
        times = self._times
        for uid, label, t0, t1 in rows:
            g.add_node(uid, label=label)
            labels[label] += 1
            if t0 is not None:
                times[uid] = (t0, t1)
        edge_counts = self._edge_counts
        rows = self._db.execute("SELECT src, type, dst, props FROM edges")

        def edges() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
            for src, typ, dst, props in rows:
                edge_counts[typ] += 1
                yield src, dst, typ, (json.loads(props) if props else {})

        g.add_edges_from(edges())
        # The graph lives as long as the store: keep the cyclic collector from scanning
        # its millions of dicts on every full collection (seconds each at 1M units).
        # close() unfreezes, so a closed store's graph is collected.
        gc.freeze()
        log.info(
            "opened graph store",
            extra={
                "store": self.description,
                "nodes": g.number_of_nodes(),
                "edges": g.number_of_edges(),
            },
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._release_lock()
            self._g = nx.MultiDiGraph()
            self._times = {}
            gc.unfreeze()

    # --- writing ---------------------------------------------------------------------

    def _commit(self, nodes: dict[str, Node], edges: list[CheckedEdge]) -> None:
        if self.read_only:
            raise ConfigError(f"graph store {self.description} was opened read-only")
        with self._lock:
            check_against(nodes, edges, self.label_of, self.description)
            integrity.check_batch(nodes, edges, self._genealogy)
            node_rows = []
            for uid, node in nodes.items():
                span = node.interval()
                t0, t1 = span if span is not None else (None, None)
                node_rows.append((uid, node.label, t0, t1, node.model_dump_json()))
            edge_rows = [(e.src, e.type, e.dst, json.dumps(e.props) if e.props else None)
                         for e in edges]  # fmt: skip
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT INTO nodes (uid, label, t0, t1, props) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (uid) DO UPDATE SET t0 = excluded.t0, t1 = excluded.t1, "
                    "props = excluded.props",
                    node_rows,
                )
                db.executemany(
                    "INSERT INTO edges (src, type, dst, props) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (src, type, dst) DO UPDATE SET props = excluded.props",
                    edge_rows,
                )
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise GraphUnavailable(
                    f"write to graph store {self.description} failed: {exc}"
                ) from None
            self._apply(node_rows, edges)

    def _apply(
        self,
        node_rows: list[tuple[str, str, float | None, float | None, str]],
        edges: list[CheckedEdge],
    ) -> None:
        g = self._g
        for uid, label, t0, t1, _ in node_rows:
            if uid not in g:
                g.add_node(uid, label=label)
                self._label_counts[label] += 1
            if t0 is None or t1 is None:
                self._times.pop(uid, None)
            else:
                self._times[uid] = (t0, t1)
        for typ, src, dst, props in edges:
            keys = g.succ[src].get(dst)
            if keys is not None and typ in keys:
                keys[typ].clear()
                keys[typ].update(props)
            else:
                g.add_edge(src, dst, key=typ, **props)
                self._edge_counts[typ] += 1

    # --- reading ---------------------------------------------------------------------

    def label_of(self, uid: str) -> str | None:
        attrs = self._g.nodes.get(uid)
        return None if attrs is None else str(attrs["label"])

    @_locked
    def labels(self, uids: Iterable[str]) -> dict[str, str]:
        node = self._g._node
        return {uid: node[uid]["label"] for uid in uids if uid in node}

    @_locked
    def genealogy(
        self, uids: Iterable[str], statuses: Iterable[str] | None = None
    ) -> integrity.Stored:
        uids = list(uids)
        return self._genealogy(uids, uids if statuses is None else list(statuses))

    def _genealogy(self, uids: list[str], statuses: list[str]) -> integrity.Stored:
        node, succ, pred, times = self._g._node, self._g._succ, self._g._pred, self._times
        assembled = integrity.ASSEMBLED
        stored = integrity.Stored()
        units = [u for u in uids if u in node and node[u]["label"] == "Unit"]
        for uid in units:
            stored.produced[uid] = times[uid][0]
            parents = {p for p, keys in succ[uid].items() if assembled in keys}
            children = {c for c, keys in pred[uid].items() if assembled in keys}
            for other in parents | children:
                stored.produced[other] = times[other][0]
            if parents:
                stored.parents[uid] = parents
                # every ancestor: the parent chain (a store with older data may branch)
                seen: set[str] = set()
                todo = list(parents)
                while todo:
                    up = todo.pop()
                    if up not in seen:
                        seen.add(up)
                        todo.extend(p for p, keys in succ[up].items() if assembled in keys)
                stored.ancestors[uid] = seen
            if children:
                stored.children[uid] = children
            shipment = next((s for s, keys in succ[uid].items() if integrity.SHIPPED in keys), None)
            if shipment is not None:
                stored.shipments[uid] = shipment
        # a status is in SQLite only: read it by primary key, for the units that need it
        wanted = [u for u in statuses if u in node and node[u]["label"] == "Unit"]
        for chunk in iter_chunks(wanted, _SQL_CHUNK):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT uid FROM nodes WHERE uid IN ({marks}) "
                "AND json_extract(props, '$.status') = ?",
                [*chunk, integrity.SCRAPPED],
            )
            stored.scrapped.update(uid for (uid,) in rows)
        return stored

    # --- metadata ----------------------------------------------------------------------

    @_locked
    def metadata(self) -> dict[str, str]:
        rows = self._db.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
        return {key: value for key, value in rows}

    def set_metadata(self, key: str, value: str | None) -> None:
        if self.read_only:
            raise ConfigError(f"graph store {self.description} was opened read-only")
        with self._lock:
            try:
                if value is None:
                    self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    self._db.execute(
                        "INSERT INTO meta VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (key, value),
                    )
            except sqlite3.Error as exc:
                raise GraphUnavailable(
                    f"write to graph store {self.description} failed: {exc}"
                ) from None

    def get_many(self, uids: Iterable[str]) -> dict[str, Node]:
        out: dict[str, Node] = {}
        with self._lock:
            for chunk in iter_chunks(dict.fromkeys(uids), _SQL_CHUNK):
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT uid, label, props FROM nodes WHERE uid IN ({marks})",
                    chunk,
                ).fetchall()
                for uid, label, props in rows:
                    out[uid] = node_type(label).model_validate_json(props)
        return out

    def find(
        self, label: str, where: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[Node]:
        model = where_model(label, where)
        sql = ["SELECT props FROM nodes WHERE label = ?"]
        args: list[Any] = [label]
        for key, value in (where or {}).items():
            sql.append("AND json_extract(props, ?) IS ?")
            args += [f"$.{key}", _json_scalar(value)]
        sql.append("ORDER BY uid")
        if limit is not None:
            sql.append("LIMIT ?")
            args.append(int(limit))
        with self._lock:
            rows = self._db.execute(" ".join(sql), args).fetchall()
        return [model.model_validate_json(props) for (props,) in rows]

    def count(self, label: str | None = None) -> int:
        if label is None:
            return int(self._g.number_of_nodes())
        node_type(label)
        return self._label_counts[label]

    def count_edges(self, type: str | None = None) -> int:
        if type is None:
            return int(self._g.number_of_edges())
        rel_type(type)
        return self._edge_counts[type]

    @_locked
    def degrees(self, uids: Iterable[str], hops: Hops) -> dict[str, int]:
        outs, ins = split_hops(hops)
        succ, pred = self._g._succ, self._g._pred
        counts: dict[str, int] = {}
        for uid in uids:
            if uid not in succ:
                raise NotFound(f"{uid} is not in the graph (store: {self.description})")
            n = 0
            if outs:
                n += sum(typ in outs for keys in succ[uid].values() for typ in keys)
            if ins:
                n += sum(typ in ins for keys in pred[uid].values() for typ in keys)
            counts[uid] = n
        return counts

    @_locked
    def edges(self, uids: Iterable[str], hops: Hops) -> list[Edge]:
        outs, ins = split_hops(hops)
        g = self._g
        succ, pred = g._succ, g._pred
        found: dict[tuple[str, str, str], dict[str, Any]] = {}
        for uid in uids:
            if uid not in succ:
                raise NotFound(f"{uid} is not in the graph (store: {self.description})")
            if outs:
                for dst, keys in succ[uid].items():
                    for typ, props in keys.items():
                        if typ in outs:
                            found[(uid, typ, dst)] = props
            if ins:
                for src, keys in pred[uid].items():
                    for typ, props in keys.items():
                        if typ in ins:
                            found[(src, typ, uid)] = props
        return [
            Edge(typ, src, dst, dict(props) if props else _NO_PROPS)
            for (src, typ, dst), props in sorted(found.items(), key=_first)
        ]

    @_locked
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
        if max_depth < 0:
            raise ValidationFailed(f"max_depth must be 0 or more, got {max_depth}")
        plan = plan_hops(hops)
        # networkx's own algorithms read these dicts directly; the public views cost a
        # Python call per access, which dominates a traversal
        g = self._g
        node, succ, pred = g._node, g._succ, g._pred
        times = self._times
        lo, hi = window.bounds() if window is not None else (0.0, 0.0)
        reached: dict[str, Reached] = {}
        outside: set[str] = set()
        given = list(dict.fromkeys(start))
        check_starts(given, {u: node[u]["label"] for u in given if u in node}, of, self.description)
        starts = tuple(sorted(given))
        frontier = list(starts)
        for uid in frontier:
            reached[uid] = Reached(uid, node[uid]["label"], 0)

        out, in_ = Direction.OUT, Direction.IN
        # tuple.__new__ builds the named tuple without its Python-level constructor,
        # which is a third of the cost of a large traversal
        new = tuple.__new__
        depth = 0
        while frontier and depth < max_depth:
            deadline.check()  # a request that timed out stops here
            depth += 1
            level: list[str] = []
            for u in frontier:
                outs, ins = plan[node[u]["label"]]
                for adjacency, wanted, direction in ((succ, outs, out), (pred, ins, in_)):
                    if not wanted:
                        continue
                    for v, keys in adjacency[u].items():
                        if v in reached or v in outside:
                            continue
                        if len(keys) == 1:
                            typ = next(iter(keys))
                            if typ not in wanted:
                                continue
                        else:
                            found = [t for t in keys if t in wanted]
                            if not found:
                                continue
                            typ = min(found)
                        if window is not None:
                            span = times.get(v)
                            if span is not None and (span[1] < lo or span[0] > hi):
                                outside.add(v)
                                continue
                        reached[v] = new(Reached, (v, node[v]["label"], depth, u, typ, direction))
                        level.append(v)
            level.sort()
            frontier = level
        listed = self.edges(reached, edges) if edges else []
        return Traversal(starts, reached, listed)

    @_locked
    def subgraph(self, uids: Iterable[str]) -> Subgraph:
        wanted = dict.fromkeys(uids)
        nodes = self.get_many(wanted)
        missing = [u for u in wanted if u not in nodes]
        if missing:
            raise NotFound(
                f"{len(missing)} uid(s) are not in the graph, e.g. {missing[0]} "
                f"(store: {self.description})"
            )
        edges: list[Edge] = []
        succ = self._g.succ
        for src in sorted(wanted):
            for dst, keys in succ[src].items():
                if dst in wanted:
                    edges.extend(Edge(t, src, dst, dict(p)) for t, p in keys.items())
        edges.sort(key=lambda e: (e.src, e.type, e.dst))
        return Subgraph([nodes[u] for u in sorted(wanted)], edges)

    # --- export (migration) ----------------------------------------------------------

    def iter_nodes(self, label: str, *, after: str = "", page: int = 10_000) -> Iterator[Page]:
        model = node_type(label)
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT uid, props FROM nodes WHERE label = ? AND uid > ? ORDER BY uid LIMIT ?",
                    (label, after, page),
                ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield Page([model.model_validate_json(props) for _, props in rows], after)

    def iter_edges(self, type: str, *, after: str = "", page: int = 10_000) -> Iterator[Page]:
        spec = rel_type(type)
        sources = {a for a, _ in spec.pairs}
        node, succ = self._g._node, self._g._succ
        # edges are ordered by source uid, then target uid; a page ends at a source
        with self._lock:
            ordered = sorted(
                u for u, attrs in node.items() if attrs["label"] in sources and u > after
            )
        items: list[Edge] = []
        for src in ordered:
            with self._lock:
                for dst in sorted(succ[src]):
                    props = succ[src][dst].get(type)
                    if props is not None:
                        items.append(Edge(type, src, dst, dict(props) if props else _NO_PROPS))
            if len(items) >= page:
                yield Page(items, src)
                items = []
        if items:
            yield Page(items, ordered[-1])

    # --- introspection for benchmarks and tools ----------------------------------------

    @property
    def graph(self) -> nx.MultiDiGraph:
        """The in-memory topology (read it, never write it: SQLite is the record)."""
        return self._g


def _json_scalar(value: Any) -> Any:
    """The value json_extract returns for a property that equals ``value``."""
    if isinstance(value, bool):
        return int(value)
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    if hasattr(value, "value"):
        return value.value
    return value
