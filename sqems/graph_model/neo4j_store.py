"""The Neo4j graph store: the official driver, parameterised Cypher, ``UNWIND`` batches.

Every node carries its model label and the label ``Entity``, on which a uniqueness
constraint makes ``uid`` the graph-wide key. Values always travel as query
parameters; labels and relationship types cannot be parameters in Cypher, so they are
written into the query text only after being checked against the model
(:data:`~sqems.graph_model.nodes.NODE_TYPES`, :data:`~sqems.graph_model.edges.REL_TYPES`).

Writes run in managed transactions (retried by the driver on transient errors); one
:meth:`transaction` is one Neo4j transaction, however many ``UNWIND`` batches it takes.
A traversal is one query: a quantified path pattern walks the trails from the starts
and the server keeps, per node reached, the shortest trail's length and the parent the
shared attribution rule picks (see :mod:`sqems.graph_model.store` and
:meth:`Neo4jGraphStore.traverse`); where the model cannot bound the trails, it runs level
by level instead, one single-hop query per level.

The store works the same through a single server (``bolt://``) and through a routing
URI (``neo4j://``, a cluster or a standalone server): every read is sent as a read (the
driver routes it to a reader: a secondary or a follower in a cluster), every write and
schema change as a write (to the database's primary). One bookmark manager per store
links them: each transaction starts from the bookmarks of the last one the store
committed, so a read sent to a secondary waits until that server has applied the
store's own writes (read-your-writes across sessions and reader threads).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from operator import itemgetter
from types import MappingProxyType
from typing import Any, LiteralString, get_args

import neo4j
from neo4j import GraphDatabase, ManagedTransaction
from neo4j import exceptions as neo4j_errors
from pydantic import AwareDatetime

from sqems import deadline
from sqems.errors import GraphUnavailable, NotFound, ValidationFailed
from sqems.graph_model import integrity
from sqems.graph_model.edges import REL_TYPES, rel_type
from sqems.graph_model.nodes import NODE_TYPES, Node, node_type
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
NO_PROPS: Mapping[str, Any] = MappingProxyType({})
MIN_SPLIT = 128
"""Lookups of at least twice this many uids are split over both readers."""
_edge_key = itemgetter(0, 1, 2)
_LOST = (neo4j_errors.ServiceUnavailable, neo4j_errors.SessionExpired)
"""The server (or, through a routing URI, every server able to answer) is gone."""

_DIR_ORDER = {"out": 0, "in": 1}

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "uid is the graph-wide key",
        ["CREATE CONSTRAINT sqems_entity_uid IF NOT EXISTS FOR (n:Entity) REQUIRE n.uid IS UNIQUE"],
    ),
    (
        2,
        "per-label uid indexes for ordered paging (export, migration)",
        [
            f"CREATE INDEX sqems_{label.lower()}_uid IF NOT EXISTS FOR (n:{label}) ON (n.uid)"
            for label in NODE_TYPES
        ],
    ),
]
"""Versioned schema migrations; each statement is idempotent."""


def _q(text: str) -> LiteralString:
    """Mark Cypher built from checked labels and types (never from values) as a query."""
    return text


def _label(label: str) -> str:
    node_type(label)  # raises for anything that is not a model label
    return f"`{label}`"


def _type(name: str) -> str:
    rel_type(name)
    return f"`{name}`"


# A node's properties with temporal values rendered as ISO 8601 text by the server:
# the driver's pure-Python temporal types cost tens of microseconds per value.
_PROPS = (
    "[k IN keys(n) WHERE NOT k STARTS WITH '_' | "
    "[k, CASE WHEN n[k] IS :: ZONED DATETIME THEN toString(n[k]) ELSE n[k] END]]"
)


_LABEL = "[l IN labels({n}) WHERE l <> 'Entity'][0]"
"""A node's model label (every node also carries ``Entity``)."""

_GENEALOGY: LiteralString = (
    "UNWIND $uids AS uid MATCH (u:Unit {uid: uid}) "
    "RETURN collect([uid, u._t0, u.status = 'scrapped', "
    "COLLECT { MATCH (u)-[:ASSEMBLED_INTO]->(p:Unit) RETURN [p.uid, p._t0] }, "
    "COLLECT { MATCH (c:Unit)-[:ASSEMBLED_INTO]->(u) RETURN [c.uid, c._t0] }, "
    "COLLECT { MATCH (u)-[:ASSEMBLED_INTO*1..]->(a:Unit) RETURN DISTINCT a.uid }, "
    "COLLECT { MATCH (u)-[:SHIPPED_IN]->(s:Shipment) RETURN s.uid LIMIT 1 }]) AS rows"
)
"""What the genealogy rules need to know of some units, in one round trip."""


def _stored_genealogy(rows: Iterable[list[Any]]) -> integrity.Stored:
    stored = integrity.Stored()
    for uid, t0, scrapped, parents, children, ancestors, shipments in rows:
        stored.produced[uid] = t0
        if scrapped:
            stored.scrapped.add(uid)
        for other, t in (*parents, *children):
            stored.produced[other] = t
        if parents:
            stored.parents[uid] = {p for p, _ in parents}
            stored.ancestors[uid] = set(ancestors)
        if children:
            stored.children[uid] = {c for c, _ in children}
        if shipments:
            stored.shipments[uid] = shipments[0]
    return stored


def _datetime_fields(label: str) -> list[str]:
    """The label's timestamp properties (names from the model, never from input)."""

    def mentions(tp: Any) -> bool:
        return tp in (datetime, AwareDatetime) or any(mentions(a) for a in get_args(tp))

    return [n for n, info in node_type(label).model_fields.items() if mentions(info.annotation)]


class Neo4jGraphStore(StoreBase):
    """A :class:`~sqems.graph_model.store.GraphStore` on a Neo4j 5 server."""

    def __init__(
        self,
        uri: str,
        *,
        user: str = "neo4j",
        password: str = "",
        database: str = "neo4j",
        batch_size: int = 10_000,
        connect_timeout: float = 5.0,
    ) -> None:
        self.uri = uri
        self.database = database
        self.batch_size = batch_size
        driver: neo4j.Driver | None = None
        try:
            driver = GraphDatabase.driver(
                uri,
                auth=(user, password),
                connection_timeout=connect_timeout,
                connection_acquisition_timeout=connect_timeout * 2,
                max_transaction_retry_time=15.0,
                # the model names labels and types a database may not hold yet
                notifications_disabled_categories=[neo4j.NotificationDisabledCategory.UNRECOGNIZED],
            )
            driver.verify_connectivity()
        except neo4j_errors.AuthError as exc:
            if driver is not None:
                driver.close()
            raise GraphUnavailable(
                f"Neo4j at {uri} refused the credentials of user {user!r}: {exc.message}"
            ) from None
        except (neo4j_errors.DriverError, neo4j_errors.Neo4jError, OSError, ValueError) as exc:
            if driver is not None:
                driver.close()
            raise GraphUnavailable(f"cannot reach Neo4j at {uri}: {exc}") from None
        self._driver = driver
        # every session and query of this store shares it: see the module's docstring
        self._bookmarks = GraphDatabase.bookmark_manager()
        # large lookups are split into chunks; two in flight keep the server busy while
        # the client decodes the previous answer
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="neo4j-read")
        self.migrate()

    @property
    def description(self) -> str:
        return f"neo4j at {self.uri} (database {self.database})"

    @property
    def write_concurrency(self) -> int:
        # two transactions in flight keep a small server busy on both cores while the
        # client prepares the next batch
        return 2

    def close(self) -> None:
        self._readers.shutdown(wait=True)
        self._driver.close()

    # --- plumbing --------------------------------------------------------------------

    def _read(self, query: LiteralString, **params: Any) -> list[neo4j.Record]:
        try:
            records, _, _ = self._driver.execute_query(
                query,
                params,
                database_=self.database,
                routing_=neo4j.RoutingControl.READ,
                bookmark_manager_=self._bookmarks,
            )
        except _LOST as exc:
            raise GraphUnavailable(f"lost Neo4j at {self.uri}: {exc}") from None
        return records

    def _read_chunks(
        self, query: LiteralString, uids: list[str], **params: Any
    ) -> Iterator[neo4j.Record]:
        """The single record ``query`` answers for each chunk of ``uids`` (bound as
        ``$uids``), in chunk order, with up to two chunks in flight."""
        # at least two chunks once there are a few hundred uids: a few hundred batches
        # can fan out to a hundred thousand edges, and one query runs on one core
        size = (
            self.batch_size
            if len(uids) < 2 * MIN_SPLIT
            else min(self.batch_size, math.ceil(len(uids) / 2))
        )
        chunks = list(iter_chunks(uids, size))
        if len(chunks) <= 1:
            for chunk in chunks:
                yield self._read(query, uids=chunk, **params)[0]
            return
        for records in self._readers.map(lambda c: self._read(query, uids=c, **params), chunks):
            yield records[0]

    def _rows(self, query: LiteralString, **params: Any) -> list[Any]:
        """Run a query whose single record holds ``rows``, a list of lists.

        Collecting on the server sends one Bolt record instead of one per row, which
        the Python driver unpacks many times faster.
        """
        records = self._read(query, **params)
        return list(records[0]["rows"]) if records else []

    def _session(self) -> neo4j.Session:
        """A session for writes and schema changes, routed to the database's primary."""
        return self._driver.session(
            database=self.database,
            default_access_mode=neo4j.WRITE_ACCESS,
            bookmark_manager=self._bookmarks,
        )

    def _write(self, work: Any) -> Any:
        try:
            with self._session() as session:
                return session.execute_write(work)
        except _LOST as exc:
            raise GraphUnavailable(f"lost Neo4j at {self.uri}: {exc}") from None

    def migrate(self) -> list[int]:
        """Apply the schema migrations this database has not seen; returns their versions."""
        done = {r["v"] for r in self._read("MATCH (m:SqemsMigration) RETURN m.version AS v")}
        applied = []
        for version, name, statements in MIGRATIONS:
            if version in done:
                continue
            with self._session() as session:
                for statement in statements:
                    session.run(_q(statement)).consume()
                session.run(
                    "MERGE (m:SqemsMigration {version: $v}) SET m.name = $name, "
                    "m.applied_at = datetime()",
                    v=version,
                    name=name,
                ).consume()
            log.info("applied migration", extra={"version": version, "migration": name})
            applied.append(version)
        return applied

    def wipe(self) -> None:
        """Delete every SQEMS node and relationship, and the store's metadata (tests,
        ``migrate --replace``)."""
        with self._session() as session:
            session.run(
                "MATCH (n:Entity) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS"
            ).consume()
            session.run("MATCH (m:SqemsMeta) DELETE m").consume()

    # --- metadata ----------------------------------------------------------------------
    # one node per entry, labelled SqemsMeta and never Entity: no count, find or
    # traversal of the graph model sees it

    def metadata(self) -> dict[str, str]:
        rows = self._read("MATCH (m:SqemsMeta) RETURN m.key AS key, m.value AS value")
        return {r["key"]: r["value"] for r in sorted(rows, key=lambda r: r["key"])}

    def set_metadata(self, key: str, value: str | None) -> None:
        def work(tx: ManagedTransaction) -> None:
            if value is None:
                tx.run("MATCH (m:SqemsMeta {key: $key}) DELETE m", key=key).consume()
            else:
                tx.run(
                    "MERGE (m:SqemsMeta {key: $key}) SET m.value = $value", key=key, value=value
                ).consume()

        self._write(work)

    # --- writing ---------------------------------------------------------------------

    def _commit(self, nodes: dict[str, Node], edges: list[CheckedEdge]) -> None:
        node_rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for node in nodes.values():
            node_rows[node.label].append({"uid": node.uid, "props": _to_neo4j(node)})
        edge_rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for edge in edges:
            edge_rows[edge.type].append({"src": edge.src, "dst": edge.dst, "props": edge.props})
        mentioned = list(set(nodes) | {e.src for e in edges} | {e.dst for e in edges})

        def work(tx: ManagedTransaction) -> None:
            existing: dict[str, str] = {}
            for chunk in iter_chunks(mentioned, self.batch_size * 2):
                record = tx.run(
                    "UNWIND $uids AS uid MATCH (n:Entity {uid: uid}) "
                    "RETURN collect([uid, [l IN labels(n) WHERE l <> 'Entity'][0]]) AS rows",
                    uids=chunk,
                ).single(strict=True)
                existing.update((uid, label) for uid, label in record["rows"])
            check_against(nodes, edges, existing.get, self.description)

            def genealogy(uids: list[str], _statuses: list[str]) -> integrity.Stored:
                # one query reads every fact, the status included
                rows: list[list[Any]] = []
                for chunk in iter_chunks(uids, self.batch_size):
                    rows += tx.run(_GENEALOGY, uids=chunk).single(strict=True)["rows"]
                return _stored_genealogy(rows)

            integrity.check_batch(nodes, edges, genealogy)
            for label, rows in node_rows.items():
                stamps = "".join(
                    f", n.`{f}` = datetime(row.props.`{f}`)" for f in _datetime_fields(label)
                )
                create = _q(
                    f"UNWIND $rows AS row CREATE (n:Entity:{_label(label)}) "
                    f"SET n = row.props{stamps}"
                )
                update = _q(
                    "UNWIND $rows AS row MATCH (n:Entity {uid: row.uid}) "
                    f"SET n = row.props{stamps}"
                )
                # the labels read above say which nodes exist: creating the others
                # skips MERGE's lookup and locking (the uid constraint still guards)
                new = [row for row in rows if row["uid"] not in existing]
                old = [row for row in rows if row["uid"] in existing]
                for query, part in ((create, new), (update, old)):
                    for chunk in iter_chunks(part, self.batch_size):
                        tx.run(query, rows=chunk).consume()
            for typ, rows in edge_rows.items():
                query = _q(
                    "UNWIND $rows AS row MATCH (a:Entity {uid: row.src}) "
                    f"MATCH (b:Entity {{uid: row.dst}}) MERGE (a)-[r:{_type(typ)}]->(b) "
                    "SET r = row.props"
                )
                for chunk in iter_chunks(rows, self.batch_size):
                    tx.run(query, rows=chunk).consume()

        try:
            self._write(work)
        except neo4j_errors.ConstraintError:
            # another writer created one of these uids between our read and our CREATE;
            # run again, now seeing it as existing
            self._write(work)

    # --- reading ---------------------------------------------------------------------

    def label_of(self, uid: str) -> str | None:
        rows = self._read(
            "MATCH (n:Entity {uid: $uid}) RETURN [l IN labels(n) WHERE l <> 'Entity'][0] AS l",
            uid=uid,
        )
        return rows[0]["l"] if rows else None

    def get_many(self, uids: Iterable[str]) -> dict[str, Node]:
        out: dict[str, Node] = {}
        query = (
            "UNWIND $uids AS uid MATCH (n:Entity {uid: uid}) "
            "RETURN collect([uid, [l IN labels(n) WHERE l <> 'Entity'][0], "
            f"{_PROPS}]) AS rows"
        )
        for record in self._read_chunks(query, list(dict.fromkeys(uids))):
            for uid, label, props in record["rows"]:
                out[uid] = _node_from(label, props)
        return out

    def find(
        self, label: str, where: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[Node]:
        where_model(label, where)
        conditions = {key: _param(value) for key, value in (where or {}).items()}
        query = _q(
            f"MATCH (n:{_label(label)}) WHERE all(k IN keys($where) "
            "WHERE n[k] = $where[k] OR (n[k] IS NULL AND $where[k] IS NULL)) "
            "WITH n ORDER BY n.uid "
            + ("LIMIT $limit " if limit is not None else "")
            + f"RETURN collect({_PROPS}) AS rows"
        )
        rows = self._rows(query, where=conditions, limit=limit)
        return [_node_from(label, props) for props in rows]

    def count(self, label: str | None = None) -> int:
        if label is None:
            return int(self._read("MATCH (n:Entity) RETURN count(n) AS c")[0]["c"])
        return int(self._read(_q(f"MATCH (n:{_label(label)}) RETURN count(n) AS c"))[0]["c"])

    def count_edges(self, type: str | None = None) -> int:
        if type is None:
            types = "|".join(_type(t) for t in REL_TYPES)
            query = _q(f"MATCH ()-[r:{types}]->() RETURN count(r) AS c")
        else:
            query = _q(f"MATCH ()-[r:{_type(type)}]->() RETURN count(r) AS c")
        return int(self._read(query)[0]["c"])

    def labels(self, uids: Iterable[str]) -> dict[str, str]:
        labels: dict[str, str] = {}
        query = (
            "UNWIND $uids AS uid MATCH (n:Entity {uid: uid}) "
            "RETURN collect([uid, [l IN labels(n) WHERE l <> 'Entity'][0]]) AS rows"
        )
        for record in self._read_chunks(query, list(dict.fromkeys(uids))):
            labels.update((uid, label) for uid, label in record["rows"])
        return labels

    def genealogy(
        self, uids: Iterable[str], statuses: Iterable[str] | None = None
    ) -> integrity.Stored:
        rows: list[list[Any]] = []
        for record in self._read_chunks(_GENEALOGY, list(dict.fromkeys(uids))):
            rows += record["rows"]
        return _stored_genealogy(rows)

    def degrees(self, uids: Iterable[str], hops: Hops) -> dict[str, int]:
        outs, ins = split_hops(hops)
        terms = [
            f"COUNT {{ (n){pattern.format(t='|'.join(_type(t) for t in sorted(types)))} }}"
            for types, pattern in ((outs, "-[:{t}]->()"), (ins, "<-[:{t}]-()"))
            if types
        ]
        query = _q(
            "UNWIND $uids AS uid OPTIONAL MATCH (n:Entity {uid: uid}) "
            "WITH collect(CASE WHEN n IS NULL THEN uid END) AS missing, "
            f"collect([n.uid, {' + '.join(terms) or '0'}]) AS rows RETURN missing, rows"
        )
        counts: dict[str, int] = {}
        for record in self._read_chunks(query, list(dict.fromkeys(uids))):
            if record["missing"]:
                missing = record["missing"][0]
                raise NotFound(f"{missing} is not in the graph (store: {self.description})")
            counts.update((uid, int(n)) for uid, n in record["rows"])
        return counts

    def edges(self, uids: Iterable[str], hops: Hops) -> list[Edge]:
        outs, ins = split_hops(hops)
        wanted = list(dict.fromkeys(uids))
        # One round trip per chunk answers both questions: which uids are not in the
        # graph, and the edges at the others (a separate existence check cost as much
        # as the edges themselves on large lists).
        walks = []
        for name, types, pattern in (
            ("outgoing", outs, "(u)-[r:{t}]->(v)"),
            ("incoming", ins, "(u)<-[r:{t}]-(v)"),
        ):
            if not types:
                walks.append(f"[] AS {name}")
                continue
            rel = "|".join(_type(t) for t in sorted(types))
            # the rows carry only what the types need: no type name when there is one
            # type, no property map for types without properties (at tens of thousands
            # of edges, the narrower rows decode markedly faster)
            typ = "type(r)" if len(types) > 1 else "null"
            props = "properties(r)" if any(rel_type(t).props for t in types) else "null"
            walks.append(
                f"COLLECT {{ UNWIND nodes AS u MATCH {pattern.format(t=rel)} "
                f"RETURN [u.uid, v.uid, {typ}, {props}] }} AS {name}"
            )
        query = _q(
            "UNWIND $uids AS uid OPTIONAL MATCH (n:Entity {uid: uid}) "
            "WITH collect(CASE WHEN n IS NULL THEN uid END) AS missing, collect(n) AS nodes "
            f"RETURN missing, {walks[0]}, {walks[1]}"
        )
        only_out, only_in = min(outs, default=""), min(ins, default="")
        rows: list[tuple[str, str, str, Mapping[str, Any]]] = []
        for record in self._read_chunks(query, wanted):
            if record["missing"]:
                missing = record["missing"][0]
                raise NotFound(f"{missing} is not in the graph (store: {self.description})")
            rows.extend((u, typ or only_out, v, props or NO_PROPS)
                        for u, v, typ, props in record["outgoing"])  # fmt: skip
            rows.extend((v, typ or only_in, u, props or NO_PROPS)
                        for u, v, typ, props in record["incoming"])  # fmt: skip
        rows.sort(key=_edge_key)
        # an edge between two of the uids, followed both ways, came back twice
        return [Edge(t, s, d, p) for i, (s, t, d, p) in enumerate(rows)
                if not i or rows[i - 1][:3] != (s, t, d)]  # fmt: skip

    def edges_along(self, uids: Iterable[str], steps: Sequence[Hops]) -> list[list[Edge]]:
        """One query per chunk of ``uids`` (two in flight for a long list): each step
        expands, on the server, from the nodes the one before reached, so the tens of
        thousands of uids in the middle never travel to the client and back; each
        step's edges come back as columns (one list of sources, one of targets, ...),
        which decode faster than one small list per edge."""
        plan = tuple(split_hops(h) for h in steps)
        if not plan:
            return []
        records = list(self._read_chunks(_along_query(plan), list(dict.fromkeys(uids))))
        for record in records:
            if record["missing"]:
                missing = record["missing"][0]
                raise NotFound(f"{missing} is not in the graph (store: {self.description})")
        answer = []
        # whether an edge can come back twice: from two chunks, or from a node reached
        # both ways by the step before
        twice = len(records) > 1
        for i, (outs, ins) in enumerate(plan):
            if len(outs) + len(ins) == 1 and not rel_type(min(outs | ins)).props:
                # one type without properties: sort plain pairs (the common case, and
                # the big one: a batch's units, their sub-assemblies)
                only = min(outs | ins)
                way = 0 if outs else 1
                ends: list[tuple[str, str]] = []
                for record in records:
                    near, far = record[f"a{i}_{way}"], record[f"b{i}_{way}"]
                    ends += zip(near, far, strict=True) if outs else zip(far, near, strict=True)
                ends.sort()
                new = tuple.__new__  # skips the named tuple's Python-level constructor
                answer.append([new(Edge, (only, src, dst, NO_PROPS))
                               for k, (src, dst) in enumerate(ends)
                               if not (twice and k and ends[k - 1] == (src, dst))])  # fmt: skip
                continue
            rows: list[tuple[str, str, str, Mapping[str, Any]]] = []
            for record in records:
                for way, types in ((0, outs), (1, ins)):
                    if not types:
                        continue
                    near, far = record[f"a{i}_{way}"], record[f"b{i}_{way}"]
                    typ = record.get(f"t{i}_{way}") or itertools.repeat(min(types))
                    props = record.get(f"p{i}_{way}") or itertools.repeat(NO_PROPS)
                    pairs = (zip(near, far, strict=True) if way == 0
                             else zip(far, near, strict=True))  # fmt: skip
                    found = zip(pairs, typ, props, strict=False)
                    rows.extend((src, t, dst, p or NO_PROPS) for (src, dst), t, p in found)
            rows.sort(key=_edge_key)
            answer.append([Edge(t, s, d, p) for k, (s, t, d, p) in enumerate(rows)
                           if not k or rows[k - 1][:3] != (s, t, d)])  # fmt: skip
            twice = twice or bool(outs and ins)
        return answer

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
        outs, ins = split_hops(hops)
        listed = split_hops(edges) if edges else (frozenset(), frozenset())
        given = list(dict.fromkeys(start))
        if not _trails_bounded(outs, ins):
            return self._traverse_by_level(given, hops, max_depth, window, of, edges)
        deadline.check()  # a request that timed out stops here
        query = _walk_query(outs, ins, max_depth, window is not None, *listed, _of(of))
        lo, hi = window.bounds() if window is not None else (-math.inf, math.inf)
        records = self._read(query, uids=given, lo=lo, hi=hi)
        record = records[0]
        labels = dict(record["found"])
        check_starts(given, labels, of, self.description)
        starts = tuple(sorted(given))
        reached = {u: Reached(u, labels[u], 0) for u in starts}
        rows = [row for row in record["reached"] if row[0] not in reached]
        # breadth-first order: by depth, then uid (a parent is one level up, so first)
        rows.sort(key=_depth_uid)
        new = tuple.__new__  # skips the named tuple's Python-level constructor
        out, in_ = Direction.OUT, Direction.IN
        for uid, label, (depth, via, way, typ) in rows:
            reached[uid] = new(Reached, (uid, label, depth, via, typ, in_ if way else out))
        return Traversal(starts, reached, _listed(record, *listed) if edges else [])

    def _traverse_by_level(
        self,
        given: list[str],
        hops: Hops,
        max_depth: int,
        window: TimeWindow | None,
        of: Collection[str] | None,
        edges: Hops | None,
    ) -> Traversal:
        """One round trip per level: for hops whose walks the model cannot bound (a
        type followed both ways, or around a cycle of labels), where enumerating trails
        could grow exponentially with depth."""
        plan = plan_hops(hops)
        labels = self.labels(given)
        check_starts(given, labels, of, self.description)
        starts = tuple(sorted(given))
        reached: dict[str, Reached] = {u: Reached(u, labels[u], 0) for u in starts}
        lo, hi = window.bounds() if window is not None else (-math.inf, math.inf)
        frontier = list(starts)
        depth = 0
        while frontier and depth < max_depth:
            deadline.check()  # a request that timed out stops here
            depth += 1
            groups: dict[tuple[str, frozenset[str]], list[str]] = defaultdict(list)
            for u in frontier:
                outs, ins = plan[reached[u].label]
                if outs:
                    groups[("out", outs)].append(u)
                if ins:
                    groups[("in", ins)].append(u)
            if not groups:
                break
            rows = self._level(groups, lo, hi)
            rows.sort(key=lambda r: (r[0], _DIR_ORDER[r[1]], r[2]))
            level: list[str] = []
            for src, direction, typ, dst, label in rows:
                if dst in reached:
                    continue
                reached[dst] = Reached(dst, label, depth, src, typ, Direction(direction))
                level.append(dst)
            level.sort()
            frontier = level
        listed = self.edges(reached, edges) if edges else []
        return Traversal(starts, reached, listed)

    def _level(
        self, groups: dict[tuple[str, frozenset[str]], list[str]], lo: float, hi: float
    ) -> list[tuple[str, str, str, str, str]]:
        """One round trip: every wanted single-hop neighbour of this level's nodes."""
        parts = []
        params: dict[str, Any] = {"lo": lo, "hi": hi}
        for i, ((direction, types), uids) in enumerate(sorted(groups.items())):
            rel = "|".join(_type(t) for t in sorted(types))
            arrow = f"-[r:{rel}]->" if direction == "out" else f"<-[r:{rel}]-"
            parts.append(
                f"UNWIND $g{i} AS uid MATCH (:Entity {{uid: uid}}){arrow}(v:Entity) "
                "WHERE v._t0 IS NULL OR (v._t1 >= $lo AND v._t0 <= $hi) "
                f"RETURN uid AS src, '{direction}' AS dir, type(r) AS type, v.uid AS dst, "
                "[l IN labels(v) WHERE l <> 'Entity'][0] AS label"
            )
            params[f"g{i}"] = uids
        query = _q(
            "CALL () { "
            + " UNION ALL ".join(parts)
            + " } RETURN collect([src, dir, type, dst, label]) AS rows"
        )
        return [tuple(row) for row in self._rows(query, **params)]

    def subgraph(self, uids: Iterable[str]) -> Subgraph:
        wanted = list(dict.fromkeys(uids))
        nodes = self.get_many(wanted)
        missing = [u for u in wanted if u not in nodes]
        if missing:
            raise NotFound(
                f"{len(missing)} uid(s) are not in the graph, e.g. {missing[0]} "
                f"(store: {self.description})"
            )
        rows = self._rows(
            "UNWIND $uids AS uid MATCH (a:Entity {uid: uid})-[r]->(b:Entity) "
            "WHERE b.uid IN $uids "
            "RETURN collect([a.uid, type(r), b.uid, properties(r)]) AS rows",
            uids=wanted,
        )
        edges = sorted(
            (Edge(t, src, dst, props) for src, t, dst, props in rows if t in REL_TYPES),
            key=lambda e: (e.src, e.type, e.dst),
        )
        return Subgraph([nodes[u] for u in sorted(wanted)], edges)

    # --- export (migration) ----------------------------------------------------------

    def iter_nodes(self, label: str, *, after: str = "", page: int = 10_000) -> Iterator[Page]:
        """Nodes of ``label`` in uid order, a page at a time, resuming after ``after``."""
        query = _q(
            f"MATCH (n:{_label(label)}) WHERE n.uid > $after WITH n ORDER BY n.uid LIMIT $n "
            f"RETURN collect({_PROPS}) AS rows"
        )
        while True:
            rows = self._rows(query, after=after, n=page)
            if not rows:
                return
            nodes = [_node_from(label, props) for props in rows]
            after = nodes[-1].uid
            yield Page(nodes, after)

    def iter_edges(self, type: str, *, after: str = "", page: int = 10_000) -> Iterator[Page]:
        """Edges of ``type`` ordered by (source label, source uid, target uid), a page of
        source nodes at a time; ``after`` is the cursor of the last page taken."""
        spec = rel_type(type)
        done_label, _, done_uid = after.partition("\t")
        for label in sorted({a for a, _ in spec.pairs}):
            if done_label and label < done_label:
                continue
            cursor = done_uid if label == done_label else ""
            sources = _q(
                f"MATCH (a:{_label(label)}) WHERE a.uid > $after "
                "WITH a.uid AS uid ORDER BY uid LIMIT $n RETURN collect(uid) AS rows"
            )
            targets = _q(
                f"UNWIND $uids AS uid MATCH (a:Entity {{uid: uid}})-[r:{_type(type)}]->(b:Entity) "
                "WITH a.uid AS src, b.uid AS dst, properties(r) AS props ORDER BY src, dst "
                "RETURN collect([src, dst, props]) AS rows"
            )
            while True:
                uids = self._rows(sources, after=cursor, n=page)
                if not uids:
                    break
                rows = self._rows(targets, uids=uids)
                cursor = uids[-1]
                yield Page(
                    [Edge(type, src, dst, props) for src, dst, props in rows],
                    f"{label}\t{cursor}",
                )


def _of(of: Collection[str] | None) -> frozenset[str] | None:
    if of is None:
        return None
    for label in of:
        node_type(label)  # a label outside the model never reaches the query text
    return frozenset(of)


def _depth_uid(row: list[Any]) -> tuple[int, str]:
    return row[2][0], row[0]


@functools.lru_cache(maxsize=256)
def _trails_bounded(outs: frozenset[str], ins: frozenset[str]) -> bool:
    """Whether the model bounds every walk along these hops: no type is followed both
    ways and the labels they lead through form no cycle, except assemblies (a unit into
    a unit), which the genealogy rules keep acyclic."""
    arcs: dict[str, set[str]] = defaultdict(set)
    for typ in outs | ins:
        spec = REL_TYPES[typ]
        if typ in outs and typ in ins:
            return False
        for a, b in spec.pairs:
            src, dst = (a, b) if typ in outs else (b, a)
            if src == dst:
                if not spec.genealogy:
                    return False
                continue
            arcs[src].add(dst)
    done: set[str] = set()

    def cyclic(label: str, path: set[str]) -> bool:
        if label in path:
            return True
        if label in done:
            return False
        path.add(label)
        found = any(cyclic(nxt, path) for nxt in arcs[label])
        path.discard(label)
        done.add(label)
        return found

    return not any(cyclic(label, set()) for label in list(arcs))


def _types(types: Iterable[str]) -> str:
    return "|".join(_type(t) for t in sorted(types))


@functools.lru_cache(maxsize=256)
def _walk_query(
    outs: frozenset[str],
    ins: frozenset[str],
    max_depth: int,
    windowed: bool,
    listed_outs: frozenset[str],
    listed_ins: frozenset[str],
    of: frozenset[str] | None,
) -> LiteralString:
    """A whole traversal as one query (see :meth:`Neo4jGraphStore.traverse`).

    One quantified path pattern walks every trail of up to ``max_depth`` hops from the
    starts; each node reached keeps the least ``[hops, parent uid, direction, type]``
    over the trails that end at it. The shortest trails to a node end at its neighbours
    one level up (a shorter trail to a neighbour would make the node shallower), so that
    minimum is the breadth-first depth and the parent the attribution rule picks.
    """
    window = " WHERE b._t0 IS NULL OR (b._t1 >= $lo AND b._t0 <= $hi)" if windowed else ""
    if not ins:
        hop, way = f"(a)-[r:{_types(outs)}]->(b{window})", "0"
    elif not outs:
        hop, way = f"(a)<-[r:{_types(ins)}]-(b{window})", "1"
    else:
        # one undirected hop per step, each type held to its direction
        sides = " OR ".join(
            f"(type(r) IN [{', '.join(repr(t) for t in sorted(types))}] AND {end}(r) = a)"
            for types, end in ((outs, "startNode"), (ins, "endNode"))
        )
        # only nodes that can carry a wanted hop are expanded: a machine's thousands of
        # runs, a parameter's thousands of recordings are never read by an upstream trace
        plan = plan_hops({**dict.fromkeys(outs, Direction.OUT), **dict.fromkeys(ins, Direction.IN)})
        carriers = "|".join(
            _label(x) for x, (leave, enter) in sorted(plan.items()) if leave or enter
        )
        hop = f"(a:{carriers})-[r:{_types(outs | ins)}]-(b{window}) WHERE {sides}"
        way = "CASE WHEN startNode(last(r)) = last(a) THEN 0 ELSE 1 END"
    if max_depth > 0 and (outs or ins):
        walkable = f" WITH s WHERE s:{'|'.join(_label(x) for x in sorted(of))}" if of else ""
        walk = (
            f"WITH found, nodes, COLLECT {{ UNWIND nodes AS s{walkable} "
            f"MATCH (s)({hop}){{1,{int(max_depth)}}}(v) "
            f"WITH v, min([size(r), last(a).uid, {way}, type(last(r))]) AS best "
            f"RETURN [v, [v.uid, {_LABEL.format(n='v')}, best]] }} AS walked "
            "WITH found, nodes, [w IN walked | w[0]] AS vs, [w IN walked | w[1]] AS reached"
        )
    else:
        walk = "WITH found, nodes, [] AS vs, [] AS reached"
    listed = ""
    for name, types, pattern in (
        ("outgoing", listed_outs, "(n)-[x:{t}]->(w)"),
        ("incoming", listed_ins, "(n)<-[x:{t}]-(w)"),
    ):
        if types:
            props = "properties(x)" if any(rel_type(t).props for t in types) else "null"
            listed += (
                f", COLLECT {{ UNWIND nodes + vs AS n MATCH {pattern.format(t=_types(types))} "
                f"RETURN [n.uid, type(x), w.uid, {props}] }} AS {name}"
            )
    return _q(
        "UNWIND $uids AS uid OPTIONAL MATCH (s:Entity {uid: uid}) "
        f"WITH collect([uid, {_LABEL.format(n='s')}]) AS found, collect(s) AS nodes "
        f"{walk} RETURN found, reached{listed}"
    )


@functools.lru_cache(maxsize=64)
def _along_query(plan: tuple[tuple[frozenset[str], frozenset[str]], ...]) -> LiteralString:
    """The query of :meth:`Neo4jGraphStore.edges_along` for its steps' types."""
    carried = ["missing"]
    parts = [
        "UNWIND $uids AS uid OPTIONAL MATCH (n:Entity {uid: uid}) "
        "WITH collect(CASE WHEN n IS NULL THEN uid END) AS missing, collect(n) AS f0"
    ]
    for i, (outs, ins) in enumerate(plan):
        ends = []
        for way, types, arrow in ((0, outs, "-[r:{t}]->"), (1, ins, "<-[r:{t}]-")):
            if not types:
                continue
            # a type column only for several types, a property column only for types
            # with properties (a constant beside the aggregates would group by it, and
            # no edges would then mean no record)
            columns = {f"a{i}_{way}": "collect(u.uid)", f"b{i}_{way}": "collect(v.uid)"}
            if len(types) > 1:
                columns[f"t{i}_{way}"] = "collect(type(r))"
            if any(rel_type(t).props for t in types):
                columns[f"p{i}_{way}"] = "collect(properties(r))"
            parts.append(
                f"CALL (f{i}) {{ UNWIND f{i} AS u MATCH (u){arrow.format(t=_types(types))}(v) "
                f"RETURN {', '.join(f'{e} AS {n}' for n, e in columns.items())}, "
                f"collect(DISTINCT v) AS e{i}_{way} }}"
            )
            carried += columns
            ends.append(f"e{i}_{way}")
        # a node reached both ways is expanded twice by the next step; its edges are
        # merged on the client
        parts.append(f"WITH {', '.join(carried)}, {' + '.join(ends)} AS f{i + 1}")
    return _q(" ".join(parts) + f" RETURN {', '.join(carried)}")


def _listed(record: neo4j.Record, outs: frozenset[str], ins: frozenset[str]) -> list[Edge]:
    """The edges a traversal listed at its nodes, as :meth:`GraphStore.edges` orders them."""
    rows: list[tuple[str, str, str, Mapping[str, Any]]] = []
    if outs:
        rows.extend((u, t, v, p or NO_PROPS) for u, t, v, p in record["outgoing"])
    if ins:
        rows.extend((v, t, u, p or NO_PROPS) for u, t, v, p in record["incoming"])
    rows.sort(key=_edge_key)
    return [Edge(t, s, d, p) for i, (s, t, d, p) in enumerate(rows)
            if not i or rows[i - 1][:3] != (s, t, d)]  # fmt: skip


def _to_neo4j(node: Node) -> dict[str, Any]:
    """Properties to send: JSON-ready (timestamps as ISO text, which the write query turns
    into DateTime values on the server) plus the ``_t0``/``_t1`` interval."""
    props = node.model_dump(mode="json", exclude_none=True)
    span = node.interval()
    if span is not None:
        props["_t0"], props["_t1"] = span
    return props


def _node_from(label: str, props: Mapping[str, Any] | list[list[Any]]) -> Node:
    # reads project properties with `_PROPS`: temporal values as text, no `_` keys
    return node_type(label).model_validate(dict(props))


def _param(value: Any) -> Any:
    if hasattr(value, "value") and not isinstance(value, bool | int | float):
        return value.value
    return value
