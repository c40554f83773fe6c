"""Build the configured graph store (and the local Neo4j server) from settings."""

from __future__ import annotations

from pathlib import Path

from sqems.errors import ConfigError
from sqems.graph_model.embedded import EmbeddedGraphStore
from sqems.graph_model.neo4j_server import Neo4jServer
from sqems.graph_model.store import GraphStore
from sqems.settings import Settings

EMBEDDED_FILE = "graph.db"
NEO4J_SCHEMES = ("neo4j://", "neo4j+s://", "neo4j+ssc://", "bolt://", "bolt+s://", "bolt+ssc://")


def embedded_path(uri: str, settings: Settings) -> Path | None:
    """The file an embedded URI points at (None for ``memory``)."""
    if uri == "memory":
        return None
    if uri == "embedded":
        return settings.data_dir / EMBEDDED_FILE
    if uri.startswith("embedded://"):
        path = uri.removeprefix("embedded://")
        if not path.startswith("/"):
            raise ConfigError(
                f"graph URI {uri!r}: an embedded URI takes an absolute path, "
                "e.g. embedded:///srv/sqems/graph.db"
            )
        return Path(path)
    raise ConfigError(
        f"graph URI {uri!r} is not a store SQEMS knows; use 'embedded', "
        "'embedded:///path/to/graph.db', 'memory' or a Neo4j URI such as "
        "neo4j://host:7687"
    )


def local_server(settings: Settings) -> Neo4jServer:
    """The local development server these settings describe."""
    home = settings.neo4j_home or settings.data_dir / "neo4j"
    return Neo4jServer(
        home,
        lib=settings.neo4j_lib,
        port=settings.neo4j_port,
        heap=settings.neo4j_heap,
        pagecache=settings.neo4j_pagecache,
    )


def open_store(
    settings: Settings, *, uri: str | None = None, read_only: bool = False
) -> GraphStore:
    """Open the store ``uri`` (default ``settings.graph_uri``) names; the caller closes it.

    A Neo4j URI without a configured password uses the local server's generated one.
    ``read_only`` applies to the embedded store (Neo4j enforces its own roles).
    """
    uri = (uri or settings.graph_uri).strip()
    if uri.startswith(NEO4J_SCHEMES):
        password = settings.neo4j_password
        if password is None:
            server = local_server(settings)
            if not server.password_file.is_file():
                raise ConfigError(
                    f"no password for {uri}: set SQEMS_NEO4J_PASSWORD, or start the local "
                    "server with `sqems neo4j start` (it generates one)"
                )
            password = server.password()
        # the driver (and the numpy and pandas it loads) only for a Neo4j store: a query on
        # the embedded store starts without them
        from sqems.graph_model.neo4j_store import Neo4jGraphStore  # noqa: PLC0415

        return Neo4jGraphStore(
            uri,
            user=settings.neo4j_user,
            password=password,
            database=settings.neo4j_database,
            batch_size=settings.batch_size,
        )
    return EmbeddedGraphStore(embedded_path(uri, settings), read_only=read_only)
