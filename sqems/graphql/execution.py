"""The GraphQL executor, with a short way through plain fields.

Most fields of an answer are plain: a scalar or an enum read straight off its object
(``uid``, ``edge``, a count), or an object or a list of objects read the same way
whose own selection is plain (a page's edges, a unit's path): no resolver, no
arguments, no field extension, no type check. graphql-core executes each such field
like any other: a path entry, a resolve-info object, a call through strawberry's
resolver wrapper, then value completion through the non-null, list, object and leaf
checks, each list item on its own. On a recall page of twenty units with their paths
that was most of the server's work beside the traversal itself.

:class:`Executor` answers a plain leaf by reading its attribute and coercing it with
the field's own scalar or enum, and a plain object (or list of them) by doing the same
for its whole selection at once: the answer, its types and its nullability are the
schema's. Anything not ordinary for a plain field — null where the schema says
non-null, a value the scalar refuses, something that is not a list where one is due,
an exception, an awaitable — abandons the short way for that field, which graphql-core
then executes and reports as it always did (reading attributes again is harmless: the
short way never calls a resolver). Fields with resolvers, arguments or extensions,
abstract types, deferred fragments, and every field when an extension hooks
``resolve``, go the usual way.
"""

from __future__ import annotations

import operator
import types
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graphql import (
    GraphQLField,
    GraphQLID,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    Undefined,
    is_leaf_type,
    is_object_type,
)
from graphql.pyutils import Path, gather_with_cancel

_NEVER_AWAITABLE = frozenset({str, int, float, bool})
"""Value types that need no awaitable check."""

_PER_INSTANCE = frozenset({types.GeneratorType})
"""Value types whose instances may or may not be awaitable (a generator-based
coroutine): checked each time. For any other type, being awaitable is the type's."""

_DEFINITION = "strawberry-definition"
"""Where strawberry keeps a GraphQL field's own definition."""


class _Plain(NamedTuple):
    """How to answer a plain field: read it, then coerce it with its leaf type or
    answer its selection on the object(s) read."""

    read: Callable[[Any], Any]
    leaf: GraphQLLeafType | None
    object: GraphQLObjectType | None
    non_null: bool
    listed: bool
    items_non_null: bool
    text: bool
    """A ``String`` or ``ID``, which a ``str`` is already."""


class _NotPlain(Exception):
    """A value the short way does not answer: the usual way does."""


_Selection = tuple[tuple[str, _Plain, Any], ...]
"""A plain selection on an object type: per response name, the field's plan and, for
an object field, its own selection."""

_TYPENAME = _Plain(operator.attrgetter("__class__"), None, None, True, False, False, False)
"""``__typename``, answered with the parent type's name (``read`` is unused)."""

_PLANS: weakref.WeakKeyDictionary[GraphQLSchema, dict[GraphQLObjectType, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)
"""Per schema and object type, each field's :class:`_Plain` (None: the usual way)."""


def _reader(field: GraphQLField) -> Callable[[Any], Any]:
    """How strawberry's default resolver reads the field (an attribute, by default)."""
    definition = (field.extensions or {}).get(_DEFINITION)
    resolve = field.resolve
    assert resolve is not None
    if definition is not None and definition.default_resolver is getattr:
        return operator.attrgetter(definition.python_name)
    return lambda source: resolve(source, None)


def _plan(name: str, field: GraphQLField | None) -> _Plain | None:
    """The short way for ``field``, if it is plain: strawberry's attribute reader (a
    field without resolver or extensions, marked ``_is_default``), no arguments, and a
    leaf or an object type without a type check, or a list of either."""
    if name == "__typename":
        return _TYPENAME
    if field is None or field.args or not getattr(field.resolve, "_is_default", False):
        return None
    kind: Any = field.type
    non_null = isinstance(kind, GraphQLNonNull)
    if non_null:
        kind = kind.of_type
    listed = isinstance(kind, GraphQLList)
    items_non_null = False
    if listed:
        kind = kind.of_type
        items_non_null = isinstance(kind, GraphQLNonNull)
        if items_non_null:
            kind = kind.of_type
    read = _reader(field)
    if is_leaf_type(kind):
        text = kind is GraphQLString or kind is GraphQLID
        return _Plain(read, kind, None, non_null, listed, items_non_null, text)
    if is_object_type(kind) and kind.is_type_of is None:
        return _Plain(read, None, kind, non_null, listed, items_non_null, False)
    return None


class Executor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, answering plain fields the short way (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        # an extension that hooks `resolve` must see every field: no short way then
        self._short = manager is None or not manager._middleware_resolvers
        plans = _PLANS.get(self.schema)
        if plans is None:
            plans = _PLANS.setdefault(self.schema, {})
        self._plans = plans
        self._selections: dict[tuple[GraphQLObjectType, int], tuple[Any, Any]] = {}
        self._inert: set[type] = set(_NEVER_AWAITABLE)
        """Value types met in this request that are not awaitable."""

    def _plan_of(self, parent_type: GraphQLObjectType, field_name: str) -> _Plain | None:
        plans = self._plans.get(parent_type)
        if plans is None:
            plans = self._plans[parent_type] = {}
        plan = plans.get(field_name, Undefined)
        if plan is Undefined:
            plan = plans[field_name] = _plan(
                field_name, self.schema.get_field(parent_type, field_name)
            )
        return plan  # type: ignore[no-any-return]

    def _selection(
        self, object_type: GraphQLObjectType, field_details_list: Any
    ) -> _Selection | None:
        """The selection on ``object_type`` of these field nodes, if every field of it
        is plain all the way down (None otherwise); kept per request by the list's
        identity, as graphql-core keeps its collected sub-fields."""
        key = (object_type, id(field_details_list))
        cached = self._selections.get(key)
        if cached is not None:
            return cached[1]  # type: ignore[no-any-return]
        grouped, defers, _ = self.collect_subfields(object_type, field_details_list)
        entries: list[tuple[str, _Plain, Any]] | None = None if defers else []
        for response_name, sub_details in grouped.items():
            if entries is None:
                break
            plan = self._plan_of(object_type, sub_details[0].node.name.value)
            inner = None
            if plan is not None and plan.object is not None:
                inner = self._selection(plan.object, sub_details)
            if plan is None or (plan.object is not None and inner is None):
                entries = None
            else:
                entries.append((response_name, plan, inner))
        selection = None if entries is None else tuple(entries)
        # the list is kept with its answer, so its id is not reused meanwhile
        self._selections[key] = (field_details_list, selection)
        return selection

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        if not self._short:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        results: dict[str, Any] = {}
        awaitable_fields: list[str] = []
        is_awaitable = self.is_awaitable
        try:
            for response_name, field_details_list in grouped_field_set.items():
                plan = self._plan_of(parent_type, field_details_list[0].node.name.value)
                if plan is not None:
                    try:
                        if plan is _TYPENAME:
                            results[response_name] = parent_type.name
                            continue
                        inner = None
                        if plan.object is not None:
                            inner = self._selection(plan.object, field_details_list)
                        if plan.object is None or inner is not None:
                            results[response_name] = self._field(plan, inner, source_value)
                            continue
                    except Exception:  # the usual way reports it
                        pass
                result = self.execute_field(
                    parent_type,
                    source_value,
                    field_details_list,
                    Path(path, response_name, parent_type.name),
                    position_context,
                )
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[f] for f in awaitable_fields])
            raise
        if not awaitable_fields:
            return results
        return self._gathered(results, awaitable_fields)

    async def _gathered(self, results: dict[str, Any], awaitable: list[str]) -> dict[str, Any]:
        """``results`` with its awaitable fields awaited together, as graphql-core."""
        if len(awaitable) == 1:
            results[awaitable[0]] = await results[awaitable[0]]
            return results
        done = await gather_with_cancel(*(results[f] for f in awaitable))
        results.update(zip(awaitable, done, strict=True))
        return results

    def _field(self, plan: _Plain, selection: _Selection | None, source: Any) -> Any:
        """A plain field's answer on ``source``; an exception (:class:`_NotPlain`, or
        the scalar's own) for anything the usual way must handle."""
        value = plan.read(source)
        if value is None:
            if plan.non_null:
                raise _NotPlain
            return None
        if not plan.listed:
            return self._value(plan, selection, value)
        if type(value) is not list and type(value) is not tuple:
            raise _NotPlain
        items: list[Any] = []
        for item in value:
            if item is None:
                if plan.items_non_null:
                    raise _NotPlain
                items.append(None)
            else:
                items.append(self._value(plan, selection, item))
        return items

    def _value(self, plan: _Plain, selection: _Selection | None, value: Any) -> Any:
        """One value of a plain field: a leaf coerced, an object's plain selection."""
        kind = type(value)
        if kind is str and plan.text:
            return value  # what String and ID make of a str
        if kind not in self._inert:
            if self.is_awaitable(value):
                raise _NotPlain
            if kind not in _PER_INSTANCE:
                self._inert.add(kind)
        if plan.leaf is not None:
            coerced = plan.leaf.coerce_output_value(value)
            if coerced is None or coerced is Undefined:
                raise _NotPlain
            return coerced
        assert selection is not None
        answer: dict[str, Any] = {}
        for response_name, sub_plan, inner in selection:
            if sub_plan is _TYPENAME:
                assert plan.object is not None
                answer[response_name] = plan.object.name
            else:
                answer[response_name] = self._field(sub_plan, inner, value)
        return answer
