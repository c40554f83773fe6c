"""Build the configured graph store from settings."""

from __future__ import annotations

from pathlib import Path

from sqems.errors import ConfigError
from sqems.graph_model.embedded import EmbeddedGraphStore
from sqems.graph_model.store import GraphStore
from sqems.settings import Settings

EMBEDDED_FILE = "graph.db"


def embedded_path(settings: Settings) -> Path | None:
    """The file an embedded URI points at (None for ``memory``)."""
    uri = settings.graph_uri.strip()
    if uri == "memory":
        return None
    if uri == "embedded":
        return settings.data_dir / EMBEDDED_FILE
    if uri.startswith("embedded://"):
        path = uri.removeprefix("embedded://")
        if not path.startswith("/"):
            raise ConfigError(
                f"SQEMS_GRAPH_URI {uri!r}: an embedded URI takes an absolute path, "
                "e.g. embedded:///srv/sqems/graph.db"
            )
        return Path(path)
    raise ConfigError(
        f"SQEMS_GRAPH_URI {uri!r} is not a store this build knows; use 'embedded', "
        "'embedded:///path/to/graph.db' or 'memory'"
    )


def open_store(settings: Settings, *, read_only: bool = False) -> GraphStore:
    """Open the store ``settings.graph_uri`` names; the caller closes it."""
    return EmbeddedGraphStore(embedded_path(settings), read_only=read_only)
