"""GraphQL types: node types generated from the graph model, connections, results.

Every label of :data:`~sqems.graph_model.nodes.NODE_TYPES` becomes an object type with
the same fields as its pydantic model, implementing the Relay ``Node`` interface (a
global ``id`` that ``node(id:)`` resolves). They are generated, not written out, so
the API cannot drift from the model. :data:`RELATED` adds a field listing the nodes
over one relationship where a client asks for them by name (``Unit.judgements``);
``neighbours`` reaches every other.
"""

from __future__ import annotations

import base64
import binascii
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from operator import methodcaller
from typing import Annotated, Any, Generic, TypeVar

import strawberry
from pydantic import AwareDatetime
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.types import Info
from strawberry.types.scalar import ScalarDefinition

from sqems import localtime
from sqems.errors import ValidationFailed
from sqems.graph_model import nodes as model
from sqems.graph_model.store import Direction as StoreDirection
from sqems.graph_model.store import TimeWindow
from sqems.graphql.calibration_windows import (
    CALIBRATION_WINDOWS_FIELD,
    FOUND_OUT_OF_TOLERANCE_FIELD,
)
from sqems.graphql.context import Context

T = TypeVar("T")

Direction = strawberry.enum(
    StoreDirection, name="Direction", description="Which way to follow an edge."
)


# --- global ids --------------------------------------------------------------------------


def global_id(label: str, uid: str) -> str:
    """The Relay global id of a node: base64 of ``Label:uid``."""
    return base64.urlsafe_b64encode(f"{label}:{uid}".encode()).decode()


def parse_global_id(value: str) -> tuple[str, str]:
    try:
        label, sep, uid = base64.urlsafe_b64decode(value.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailed(f"{value!r} is not a node id") from None
    if not sep or label not in model.NODE_TYPES:
        raise ValidationFailed(f"{value!r} is not a node id")
    return label, uid


# --- the Node interface and generated node types ------------------------------------------


@strawberry.interface(description="An object in the quality graph, with a global id.")
class Node:
    id: strawberry.ID = strawberry.field(description="Global id (Relay).")
    uid: str = strawberry.field(description="The business key, unique in the whole graph.")
    label: str = strawberry.field(description="The node's label in the graph model.")

    @strawberry.field(description="Neighbours over one relationship type, a page at a time.")
    async def neighbours(
        self,
        info: Info[Context, None],
        type: str,
        direction: Direction = StoreDirection.OUT,  # type: ignore[valid-type]
        first: int = 50,
        after: str | None = None,
    ) -> Connection[Node]:
        ctx = info.context
        edges = await ctx.call(ctx.store.edges, [self.uid], {type: direction})
        other = [e.dst if e.src == self.uid else e.src for e in edges]
        page = paginate(other, first, after, ctx.settings.api_max_page_size)
        loaded = await ctx.nodes.load_many([edge.node for edge in page.edges])
        return Connection(
            edges=[
                ConnectionEdge(cursor=e.cursor, node=to_graphql(n))
                for e, n in zip(page.edges, loaded, strict=True)
                if n
            ],
            page_info=page.page_info,
            total_count=page.total_count,
        )


_ENUMS: dict[type[Enum], Any] = {}


def _graphql_annotation(tp: Any) -> Any:
    """The GraphQL-side annotation of a pydantic field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _graphql_annotation(args[0])
        return inner | None if len(args) < len(typing.get_args(tp)) else inner
    if origin is Annotated:
        return _graphql_annotation(typing.get_args(tp)[0])
    if tp is AwareDatetime or tp is datetime:
        return datetime
    if isinstance(tp, type) and issubclass(tp, Enum):
        if tp not in _ENUMS:
            _ENUMS[tp] = strawberry.enum(tp)
        return _ENUMS[tp]
    if tp in (str, int, float, bool):
        return tp
    raise TypeError(f"no GraphQL type for {tp!r}")


@dataclass(frozen=True, slots=True)
class Related:
    """A field of a generated node type listing the nodes over one relationship."""

    field: str
    type: str
    direction: StoreDirection
    label: str
    description: str


RELATED: dict[str, list[Related]] = {
    "Unit": [
        Related(
            "judgements",
            "JUDGES",
            StoreDirection.IN,
            "Judgement",
            "The edge agents' model judgements of this unit, newest first.",
        )
    ],
    "Operator": [
        Related(
            "qualifications",
            "HOLDS",
            StoreDirection.OUT,
            "Qualification",
            "The qualifications this operator holds and held, newest grant first.",
        )
    ],
    "Qualification": [
        Related(
            "steps",
            "QUALIFIES_FOR",
            StoreDirection.OUT,
            "ProcessStep",
            "The process steps this qualification covers.",
        ),
        Related(
            "work_instructions",
            "QUALIFIES_FOR",
            StoreDirection.OUT,
            "WorkInstruction",
            "The work-instruction revisions this qualification covers.",
        ),
    ],
}
"""Per label, the fields of :class:`Related` nodes its GraphQL type adds."""

COMPUTED: dict[str, list[tuple[str, Callable[..., Any], str]]] = {
    "Machine": [CALIBRATION_WINDOWS_FIELD],
    "Calibration": [FOUND_OUT_OF_TOLERANCE_FIELD],
}
"""Per label, fields its GraphQL type adds that a domain function computes: (name,
resolver, description)."""


def _related_resolver(spec: Related, target: type) -> Callable[..., Any]:
    async def resolve(self: Any, info: Info[Context, None]) -> list[Any]:
        ctx = info.context
        links = await ctx.call(ctx.store.edges, [self.uid], {spec.type: spec.direction})
        other = [e.dst if e.src == self.uid else e.src for e in links]
        loaded = [n for n in await ctx.nodes.load_many(other) if n and n.label == spec.label]
        loaded.sort(key=lambda n: n.uid)
        if loaded and loaded[0].time_span is not None:
            loaded.sort(key=lambda n: n.interval() or (0.0, 0.0), reverse=True)
        return [to_graphql(n) for n in loaded]

    resolve.__annotations__ = {"info": Info[Context, None], "return": list[target]}  # type: ignore[valid-type]
    return resolve


def _node_type(node_model: type[model.Node], made: dict[str, type]) -> type:
    annotations: dict[str, Any] = {}
    for name, info in node_model.model_fields.items():
        if name != "uid":
            annotations[name] = _graphql_annotation(info.annotation)
    namespace: dict[str, Any] = {"__annotations__": annotations, "__module__": __name__}
    for name in annotations:
        namespace[name] = strawberry.field(description=node_model.model_fields[name].description)
    for spec in RELATED.get(node_model.label, []):
        resolver = _related_resolver(spec, made[spec.label])
        namespace[spec.field] = strawberry.field(resolver=resolver, description=spec.description)
    for name, resolve, description in COMPUTED.get(node_model.label, []):
        namespace[name] = strawberry.field(resolver=resolve, description=description)
    cls = type(node_model.label, (Node,), namespace)
    doc = (node_model.__doc__ or "").strip().split("\n")[0] or f"A {node_model.label} node."
    return strawberry.type(cls, name=node_model.label, description=doc)


def _node_types() -> dict[str, type]:
    """Every label's type, those a :data:`RELATED` field lists made first."""
    made: dict[str, type] = {}
    targets = {r.label for specs in RELATED.values() for r in specs}
    for label in sorted(model.NODE_TYPES, key=lambda label: label not in targets):
        made[label] = _node_type(model.NODE_TYPES[label], made)
    return {label: made[label] for label in model.NODE_TYPES}


NODE_OBJECT_TYPES: dict[str, type] = _node_types()
"""The generated GraphQL object type of every label."""


def to_graphql(node: model.Node) -> Any:
    """The GraphQL object of a domain node."""
    cls = NODE_OBJECT_TYPES[node.label]
    fields = {name: getattr(node, name) for name in type(node).model_fields}
    return cls(id=global_id(node.label, node.uid), label=node.label, **fields)


# --- connections -----------------------------------------------------------------------


@strawberry.type(description="Where a page ends and whether another follows.")
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(name="Edge", description="An item of a connection and its cursor.")
class ConnectionEdge(Generic[T]):
    cursor: str
    node: T


@strawberry.type(description="A page of items (Relay cursor connection).")
class Connection(Generic[T]):
    edges: list[ConnectionEdge[T]]
    page_info: PageInfo
    total_count: int


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _offset(cursor: str) -> int:
    try:
        kind, _, number = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind == "offset" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValidationFailed(f"{cursor!r} is not a cursor of this connection")


def paginate(
    items: list[Any],
    first: int,
    after: str | None,
    max_page: int,
    node: Callable[[Any], Any] | None = None,
) -> Connection[Any]:
    """One page of ``items`` after cursor ``after``; ``first`` is capped by the server.
    ``node`` makes the GraphQL object of an item (only the page's items are made)."""
    if first < 0 or first > max_page:
        raise ValidationFailed(f"first must be between 0 and {max_page}, got {first}")
    start = _offset(after) + 1 if after else 0
    chunk = items[start : start + first]
    if node is not None:
        chunk = [node(item) for item in chunk]
    edges = [ConnectionEdge(cursor=_cursor(start + i), node=item) for i, item in enumerate(chunk)]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=start + len(chunk) < len(items),
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=len(items),
    )


def page_size(first: int, max_page: int) -> int:
    """``first``, checked against the server's page limit."""
    if first < 0 or first > max_page:
        raise ValidationFailed(f"first must be between 0 and {max_page}, got {first}")
    return first


def after_key(cursor: str | None) -> int:
    """The key a keyset cursor points after (0 for the first page)."""
    if cursor is None:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind == "key" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValidationFailed(f"{cursor!r} is not a cursor of this connection")


def keyset_page(rows: list[T], first: int, key: Callable[[T], int], total: int) -> Connection[T]:
    """A page of a connection read straight from its store by key: ``rows`` are the
    (up to) ``first + 1`` rows after the cursor's key, so the store never reads more
    than a page, whatever its size."""
    chunk = rows[:first]
    edges = [
        ConnectionEdge(cursor=base64.urlsafe_b64encode(f"key:{key(r)}".encode()).decode(), node=r)
        for r in chunk
    ]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > first,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=total,
    )


def _read_datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise StrawberryInputCoercionError(f"DateTime takes a string, got {value!r}")
    try:
        return localtime.read(value, "DateTime")
    except ValidationFailed as exc:
        raise StrawberryInputCoercionError(exc.message) from None


DATETIME = ScalarDefinition(
    name="DateTime",
    description=(
        "A date and time in ISO 8601. As input, without an offset it is local time at the "
        "site (SQEMS_SITE_TIMEZONE, else the graph's site's zone, else UTC); a time the "
        "clocks skip is refused, one they pass twice is its first occurrence; a date alone "
        "is that day's 00:00 there (as a window's end, the day's end). Output carries its "
        "offset."
    ),
    specified_by_url=None,
    serialize=methodcaller("isoformat"),
    parse_value=_read_datetime,
    parse_literal=None,
    origin=datetime,
)
"""The schema's ``DateTime`` (it overrides strawberry's): keeps whether an input had an
offset or was a date alone, for :mod:`sqems.localtime` to place in the site's zone."""


def site_zone(info: Info[Context, None]) -> Callable[[], localtime.SiteZone]:
    """The request's site zone, looked up only when a time without an offset needs it."""
    ctx = info.context
    return lambda: localtime.site_zone(ctx.settings, ctx.store)


def local_time(
    info: Info[Context, None], value: datetime, what: str, *, end: bool = False
) -> datetime:
    """A datetime input, placed in the site's zone when it came without an offset
    (``end``: a date alone is the end of that day, as for a due date)."""
    return localtime.place(value, site_zone(info), end=end, what=what)


@strawberry.input(
    description="A closed time interval; either end may be left open. Times without an "
    "offset are the site's local time (see DateTime)."
)
class WindowInput:
    start: datetime | None = strawberry.field(
        default=None, description="From this instant; a date alone: from that day's 00:00."
    )
    end: datetime | None = strawberry.field(
        default=None,
        description="Until this instant, inclusive; a date alone: to the end of that day.",
    )

    def window(self, zone: localtime.ZoneSource) -> TimeWindow:
        """The window, times without an offset placed in ``zone`` (:func:`site_zone`)."""
        return localtime.window(self.start, self.end, zone)
