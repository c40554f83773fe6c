"""The GraphQL API (strawberry on FastAPI): the only package that imports them.

The API keys (:mod:`sqems.graphql.access`) are plain sqlite; the app and the schema load
strawberry, FastAPI and every resolver's domain stack, so they are imported on first use:
``sqems apikey list`` need not pay for them.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sqems.graphql.access import AccessStore, ApiKey, Role

if TYPE_CHECKING:
    from sqems.graphql.app import create_app
    from sqems.graphql.schema import build_schema, sdl

__all__ = ["AccessStore", "ApiKey", "Role", "build_schema", "create_app", "sdl"]

_LAZY = {"create_app": "sqems.graphql.app", "build_schema": "sqems.graphql.schema",
         "sdl": "sqems.graphql.schema"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
