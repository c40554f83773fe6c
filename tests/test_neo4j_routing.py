"""The Neo4j store through a routing URI (``neo4j://``), as it runs against a cluster.

A standalone Neo4j server answers routing requests (it is its own router, reader and
writer), so the session's server exercises the whole routing path: the routing table,
reads sent in read mode, writes in write mode, and the bookmarks that give
read-your-writes when reads go to a secondary. What the driver sends is read off the
wire: the driver logs every Bolt message it sends (``C:``) and receives (``S:``) at
debug level, and these tests parse that log; the server's own answers (a write refused
in read mode, the type it gives each query) confirm what the client claims.

A representative part of the conformance suite (writes and their atomicity, lookups,
every kind of traversal, the genealogy rules, metadata, reopening) also runs over the
routing URI: the tests imported from ``test_store_conformance`` below.
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend, Reopenable
from neo4j import exceptions as neo4j_errors

# A representative part of the conformance suite, run again over neo4j:// (15 of its
# 80 tests on Neo4j, which take about a minute together): writes, their
# atomicity and the store after a failure; lookups; one-query and level-by-level
# traversals, windows, edges along steps, subgraphs; the genealogy rules; metadata;
# and a store opened again over the routing URI.
from test_store_conformance import (  # noqa: F401 - collected by pytest in this module
    catalogue,
    small_line,
    test_a_bad_edge_in_a_transaction_writes_nothing_at_all,
    test_a_failed_transaction_leaves_nothing_after_reopen,
    test_a_shipped_unit_is_not_scrapped,
    test_count_by_label_and_edge_type,
    test_edges_along_mixed_steps_list_each_edge_once,
    test_edges_are_unique_per_type_and_ends_and_reupsert_updates_props,
    test_find_filters_on_enum_values,
    test_genealogy_reports_what_the_rules_need,
    test_get_many_leaves_out_unknown_uids,
    test_metadata_lives_apart_from_the_graph,
    test_store_stays_usable_after_a_failed_transaction,
    test_subgraph_returns_the_nodes_and_their_induced_edges,
    test_traverse_goes_level_by_level_and_records_the_first_edge,
    test_traverse_in_both_directions_by_type_attributes_to_the_smallest_parent,
    test_window_blocks_the_paths_through_a_filtered_node,
    timed_line,
)

from sqems.graph_model import Direction, Edge, GraphStore, hops
from sqems.graph_model.neo4j_server import Neo4jServer
from sqems.graph_model.neo4j_store import Neo4jGraphStore
from sqems.graph_model.nodes import Batch, Unit

T0 = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)


def routing_uri(server: Neo4jServer) -> str:
    return f"neo4j://127.0.0.1:{server.port}"


def _connect(_workdir: Path, request: pytest.FixtureRequest) -> Neo4jGraphStore:
    server: Neo4jServer = request.getfixturevalue("neo4j_server")
    return Neo4jGraphStore(routing_uri(server), password=server.password(), batch_size=500)


def _empty(workdir: Path, request: pytest.FixtureRequest) -> Neo4jGraphStore:
    opened = _connect(workdir, request)
    opened.wipe()
    return opened


ROUTED = Backend(create=_empty, reopen=_connect)


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Neo4jGraphStore]:
    """An empty Neo4j store opened through the routing URI (overrides conftest's)."""
    opened = _empty(tmp_path, request)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def reopenable(request: pytest.FixtureRequest, tmp_path: Path) -> Reopenable:
    return Reopenable(ROUTED, tmp_path, request)


# --- the wire ------------------------------------------------------------------------

_LINE = re.compile(r"\[#(?P<conn>[0-9A-F]+)\]\s+(?P<side>[CS]): (?P<msg>[A-Z<>_]+) ?(?P<rest>.*)")


@dataclass
class Tx:
    """One transaction as the driver sent it and the server answered."""

    connection: str
    mode: str  # "r" or "w" (Bolt's default, sent as no mode at all)
    bookmarks: list[str]  # what the transaction was told to wait for
    query_types: list[str] = field(default_factory=list)  # the server's: r, w, rw, s
    committed: str | None = None  # the bookmark the server returned on commit


class Wire(logging.Handler):
    """The Bolt messages of one stretch of a test, parsed into transactions and
    routing-table answers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = _LINE.search(record.getMessage())
        if found:
            self.lines.append(found.group("conn", "side", "msg", "rest"))

    def transactions(self) -> list[Tx]:
        open_: dict[str, Tx] = {}
        committing: dict[str, Tx] = {}
        done: list[Tx] = []
        for conn, side, msg, rest in self.lines:
            if side == "C" and msg == "BEGIN":
                extra = ast.literal_eval(rest)
                tx = Tx(conn, extra.get("mode", "w"), list(extra.get("bookmarks", [])))
                open_[conn] = tx
                done.append(tx)
            elif side == "C" and msg == "COMMIT" and conn in open_:
                committing[conn] = open_.pop(conn)
            elif side == "S" and msg == "SUCCESS" and rest.startswith("{"):
                answer = ast.literal_eval(rest)
                if conn in committing and "bookmark" in answer:
                    committing.pop(conn).committed = answer["bookmark"]
                elif conn in open_ and "type" in answer:
                    open_[conn].query_types.append(answer["type"])
        return done

    def routing_tables(self) -> list[dict[str, Any]]:
        tables = []
        for _, side, msg, rest in self.lines:
            if side == "S" and msg == "SUCCESS" and rest.startswith("{'rt'"):
                tables.append(ast.literal_eval(rest)["rt"])
        return tables


@contextmanager
def wire() -> Iterator[Wire]:
    """Record the Bolt messages the driver exchanges inside the block."""
    logger = logging.getLogger("neo4j.io")
    handler = Wire()
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # keep pytest's log capture out of the way
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


# --- a small genealogy -----------------------------------------------------------------

UNITS = 600  # more than two chunks' worth at batch size 500: lookups use both readers


def batch_of_units(store: GraphStore, batch: str = "B-1") -> list[str]:
    uids = [f"{batch}-U-{i:04d}" for i in range(UNITS)]
    store.upsert_nodes([Batch(uid=batch, started_at=T0, quantity=UNITS)])
    store.upsert_nodes([Unit(uid=u, produced_at=T0 + timedelta(seconds=i))
                        for i, u in enumerate(uids)])  # fmt: skip
    store.upsert_edges([Edge("PRODUCED", batch, u) for u in uids])
    return uids


# --- tests -----------------------------------------------------------------------------


def test_a_routing_uri_gets_its_servers_from_the_routing_table(
    neo4j_server: Neo4jServer,
) -> None:
    with wire() as seen:
        opened = Neo4jGraphStore(routing_uri(neo4j_server), password=neo4j_server.password())
        try:
            assert opened.description == f"neo4j at {routing_uri(neo4j_server)} (database neo4j)"
            opened.count()
        finally:
            opened.close()
    tables = seen.routing_tables()
    assert tables, "the driver never asked the server for a routing table"
    roles = {entry["role"]: entry["addresses"] for entry in tables[-1]["servers"]}
    address = f"127.0.0.1:{neo4j_server.port}"
    # a standalone server is its own writer, reader and router
    assert roles == {"WRITE": [address], "READ": [address], "ROUTE": [address]}


def test_reads_are_sent_as_reads_and_writes_as_writes(store: Neo4jGraphStore) -> None:
    with wire() as writes:
        uids = batch_of_units(store)
        store.set_metadata("plant", "routing")
    with wire() as reads:
        assert len(store.get_many(uids)) == UNITS
        assert store.count("Unit") == UNITS
        assert store.find("Batch")[0].uid == "B-1"
        assert len(store.traverse(["B-1"], hops(Direction.OUT, "PRODUCED")).reached) == UNITS + 1
        assert len(store.edges(["B-1"], hops(Direction.OUT, "PRODUCED"))) == UNITS
        assert len(store.subgraph(["B-1", *uids[:5]]).edges) == 5
        assert store.metadata()["plant"] == "routing"

    written = writes.transactions()
    assert len(written) >= 4
    assert {tx.mode for tx in written} == {"w"}
    # the server saw writes in them (every query's type, as the server reports it)
    assert all({"w", "rw"} & set(tx.query_types) for tx in written)
    read = reads.transactions()
    assert len(read) >= 8  # at least one per call; the 600-uid lookup in two chunks
    assert {tx.mode for tx in read} == {"r"}
    assert {t for tx in read for t in tx.query_types} == {"r"}


def test_the_server_refuses_a_write_sent_down_the_read_path(store: Neo4jGraphStore) -> None:
    # the read mode the wire shows is the server's to enforce: a write sent the way the
    # store sends reads is refused, so no read can be routed to a secondary and write
    with pytest.raises(neo4j_errors.ClientError) as refused:
        store._read("CREATE (:Batch:Entity {uid: 'B-SNEAK'})")
    assert refused.value.code == "Neo.ClientError.Statement.AccessMode"
    assert store.label_of("B-SNEAK") is None


def test_a_read_right_after_a_write_waits_for_the_write_bookmark(
    store: Neo4jGraphStore,
) -> None:
    uids = batch_of_units(store)
    with wire() as seen:
        store.upsert_nodes([Unit(uid="U-NEW", produced_at=T0)])
        store.upsert_edges([Edge("PRODUCED", "B-1", "U-NEW")])
        # at once, in other sessions and, for the lookup, on two reader threads
        found = store.get_many([*uids, "U-NEW"])
        reached = store.traverse(["B-1"], hops(Direction.OUT, "PRODUCED")).reached
        store.upsert_nodes([Unit(uid="U-NEWER", produced_at=T0)])
    assert "U-NEW" in found
    assert "U-NEW" in reached

    txs = seen.transactions()
    node_write, edge_write, *reads, last_write = txs
    assert node_write.mode == edge_write.mode == last_write.mode == "w"
    assert node_write.committed and edge_write.committed
    # each transaction starts from the bookmark of the one committed before it: the
    # edge write from the node write's, every read from the edge write's (whichever
    # connection and thread it runs on), the next write from the reads'
    assert edge_write.bookmarks == [node_write.committed]
    assert len(reads) >= 3  # the lookup's two chunks (one per reader thread), the walk
    for tx in reads:
        assert tx.mode == "r"
        assert tx.bookmarks == [edge_write.committed]
    assert last_write.bookmarks == [reads[-1].committed]
