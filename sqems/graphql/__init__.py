"""The GraphQL API (strawberry on FastAPI): the only package that imports them."""

from sqems.graphql.access import AccessStore, ApiKey, Role
from sqems.graphql.app import create_app
from sqems.graphql.schema import build_schema, sdl

__all__ = ["AccessStore", "ApiKey", "Role", "build_schema", "create_app", "sdl"]
