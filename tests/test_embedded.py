"""What only the embedded backend promises: one writer per file, read-only openers, and
no memory held once a store is closed."""

from __future__ import annotations

import gc
import weakref
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sqems.errors import ConfigError, GraphUnavailable, NotFound
from sqems.graph_model import Edge, EmbeddedGraphStore
from sqems.graph_model.nodes import Unit

MADE = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)


def write_two_units(path: Path) -> None:
    with EmbeddedGraphStore(path) as store:
        store.upsert_nodes([Unit(uid="U-1", produced_at=MADE), Unit(uid="U-2", produced_at=MADE)])
        store.upsert_edges([Edge("ASSEMBLED_INTO", "U-1", "U-2")])


def test_a_second_writer_is_refused_while_the_first_is_open(tmp_path: Path) -> None:
    path = tmp_path / "graph.db"
    first = EmbeddedGraphStore(path)
    try:
        with pytest.raises(GraphUnavailable, match=r"open for writing by pid \d+"):
            EmbeddedGraphStore(path)
    finally:
        first.close()
    EmbeddedGraphStore(path).close()  # the lock went with close()


def test_a_read_only_store_sees_the_data_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "graph.db"
    write_two_units(path)
    writer = EmbeddedGraphStore(path)
    try:
        with EmbeddedGraphStore(path, read_only=True) as reader:
            assert reader.count() == 2
            assert reader.count_edges("ASSEMBLED_INTO") == 1
            with pytest.raises(ConfigError, match="read-only"):
                reader.upsert_nodes([Unit(uid="U-3", produced_at=MADE)])
    finally:
        writer.close()


def test_read_only_open_of_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no graph store"):
        EmbeddedGraphStore(tmp_path / "nothing.db", read_only=True)


def test_a_closed_store_releases_its_graph(tmp_path: Path) -> None:
    # servers and test runs open and close stores many times; the topology a closed
    # store loaded must not stay in memory for the life of the process
    path = tmp_path / "graph.db"
    write_two_units(path)
    store = EmbeddedGraphStore(path)
    graph = weakref.ref(store.graph)
    store.close()
    del store
    gc.collect()
    assert graph() is None
