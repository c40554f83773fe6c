"""GraphQL object types generated from domain dataclasses and named tuples.

A result type that copies a domain record field by field is not written out: the
:func:`adapted` decorator builds it from the record's fields, so the API follows the
domain as the node types follow the graph model (:mod:`sqems.graphql.types`)::

    @adapted(cap.Ppm, description="Nonconforming parts per million, by side.")
    class Ppm(Adapted):
        total: float  # a property of cap.Ppm, read by of() like a field

    Ppm.of(cap.Ppm(below_lsl=12.0, above_usl=None))

Each field keeps the record's name and order and gets its GraphQL type from the
record's annotation: ``X | None`` stays nullable, a tuple or list becomes a list, a
record with a generated type becomes that type (converted by :meth:`Adapted.of`),
an enum becomes a GraphQL enum, a ``Literal`` of strings a ``String``, a ``dict`` or
``Any`` the ``JSON`` scalar. A field's description comes from the decorator's
``descriptions`` mapping, else from ``metadata["description"]`` of the dataclass
field. The class body adds what the record lacks or reshapes: a field it declares
overrides the generated one of that name (in place), a new one is read from the
record (a property, converted by its return annotation) or computed by
:func:`derived`, a :func:`given` one is passed to ``of()``, and resolver methods stay
as they are. New fields follow the record's, unless ``after`` places them. Types that
combine several records or compute more than a field or two stay hand-written.
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Any, Literal, Self, TypeVar, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types.enum import has_enum_definition

from sqems.graphql.types import _graphql_annotation

T = TypeVar("T")
Convert = Callable[[Any], Any]

GENERATED: dict[type, type] = {}
"""The generated GraphQL type of each domain record, for nested records."""

_PLAN = "__adapted_plan__"


@dataclasses.dataclass(frozen=True, slots=True)
class _Derived:
    compute: Convert | None
    """None: the field must be given to of()."""
    name: str | None
    description: str | None


def derived(
    compute: Callable[[Any], Any], *, name: str | None = None, description: str | None = None
) -> Any:
    """A class-body field whose value ``compute(record)`` gives (for a reshaped field)."""
    return _Derived(compute, name, description)


def given(*, name: str | None = None, description: str | None = None) -> Any:
    """A class-body field that :meth:`Adapted.of` must be given (the record cannot
    supply it, e.g. a node loaded beside it)."""
    return _Derived(None, name, description)


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """How :meth:`Adapted.of` fills a type: the fields copied as they are, read at once
    (``operator.attrgetter``), and those converted or computed one by one; ``whole``
    does it all in one call for a record alone."""

    copied: tuple[str, ...]
    read: Callable[[Any], tuple[Any, ...]]
    computed: tuple[tuple[str, Convert], ...]
    whole: Convert


class Adapted:
    """Base of the generated types: :meth:`of` builds one from its domain record."""

    @classmethod
    def of(cls, record: Any, **values: Any) -> Self:
        """The GraphQL object of ``record``; ``values`` give fields outright."""
        plan: _Plan = getattr(cls, _PLAN)
        if not values:
            return cast(Self, plan.whole(record))
        found = dict(zip(plan.copied, plan.read(record), strict=True))
        for name, compute in plan.computed:
            if name not in values:
                found[name] = compute(record)
        found.update(values)
        return cast(Self, cast(Any, cls)(**found))


def _record_fields(record: type) -> dict[str, tuple[Any, Mapping[str, Any]]]:
    """Name -> (annotation, metadata) of a dataclass or a named tuple, in order."""
    hints = typing.get_type_hints(record)
    if dataclasses.is_dataclass(record):
        return {f.name: (hints[f.name], f.metadata) for f in dataclasses.fields(record)}
    names = getattr(record, "_fields", None)
    if isinstance(names, tuple):
        return {name: (hints[name], {}) for name in names}
    raise TypeError(f"{record.__name__} is neither a dataclass nor a named tuple")


def _enum(tp: type[Enum]) -> Any:
    if has_enum_definition(tp):
        return tp  # already a GraphQL enum, with its own name and description
    return _graphql_annotation(tp)


def _identity(value: Any) -> Any:
    return value


def graphql_field(tp: Any) -> tuple[Any, Convert]:
    """The GraphQL annotation of a record's field type and how to convert its value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        if len(present) != 1:
            raise TypeError(f"no GraphQL type for the union {tp!r}")
        inner, convert = graphql_field(present[0])
        if len(present) == len(args):
            return inner, convert
        return inner | None, (
            convert if convert is _identity else lambda v: None if v is None else convert(v)
        )
    if origin in (list, tuple, Sequence, frozenset, set):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"no GraphQL type for the fixed tuple {tp!r}")
        inner, convert = graphql_field(args[0])
        return list[inner], lambda v: [convert(x) for x in v]  # type: ignore[valid-type]
    if origin is Literal:
        if all(isinstance(a, str) for a in args):
            return str, _identity
        raise TypeError(f"no GraphQL type for {tp!r}")
    if origin in (dict, Mapping) or tp is Any:
        return JSON, _identity
    if isinstance(tp, type):
        if tp in GENERATED:
            adapted_type = GENERATED[tp]
            return adapted_type, adapted_type.of  # type: ignore[attr-defined]
        if issubclass(tp, Enum):
            return _enum(tp), _identity  # the GraphQL enum is the domain's class
        if tp in (str, int, float, bool, datetime, date):
            return tp, _identity
    raise TypeError(f"no GraphQL type for {tp!r}: generate the record's type first")


def _reader(attribute: str, convert: Convert) -> Convert | str:
    """A field's value: the record's attribute as it is (its name), or converted."""
    if convert is _identity:
        return attribute
    return lambda record: convert(getattr(record, attribute))


def _plan(cls: type, readers: Mapping[str, Convert | str]) -> _Plan:
    copied = {name: attr for name, attr in readers.items() if isinstance(attr, str)}
    get = operator.attrgetter(*copied.values()) if copied else None
    if get is None:
        read: Callable[[Any], tuple[Any, ...]] = lambda record: ()  # noqa: E731
    elif len(copied) == 1:
        read = lambda record: (get(record),)  # noqa: E731
    else:
        read = get
    computed = tuple((n, r) for n, r in readers.items() if not isinstance(r, str))
    return _Plan(tuple(copied), read, computed, _whole(cls, readers))


def _whole(cls: type, readers: Mapping[str, Convert | str]) -> Convert:
    """``lambda record: cls(a=record.a, b=convert_b(record), ...)``, compiled (as
    dataclasses compile ``__init__``): a genealogy of a hundred thousand nodes is built
    nearly as fast as by a hand-written constructor call, where a loop over the fields
    took three times as long. The names are the record's fields, so identifiers."""
    env: dict[str, Any] = {"cls": cls}
    arguments = []
    for i, (name, reader) in enumerate(readers.items()):
        if not (name.isidentifier() and (callable(reader) or reader.isidentifier())):
            raise TypeError(f"{name} is not a field name")
        if isinstance(reader, str):
            arguments.append(f"{name}=record.{reader}")
        else:
            env[f"convert_{i}"] = reader
            arguments.append(f"{name}=convert_{i}(record)")
    exec(f"def whole(record):\n    return cls({', '.join(arguments)})\n", env)
    return cast(Convert, env["whole"])


def adapted(
    record: type,
    *,
    name: str | None = None,
    description: str | None = None,
    descriptions: Mapping[str, str] | None = None,
    exclude: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
    after: Mapping[str, str | None] | None = None,
) -> Callable[[type[T]], type[T]]:
    """Make the decorated class (a subclass of :class:`Adapted`) the GraphQL type of
    ``record``.

    ``exclude`` leaves record fields out; ``rename`` maps a record field to another
    field name; ``descriptions`` describes fields by their (new) name; ``after``
    places a field after another one (``None``: first) where the API's order is not
    the record's.
    """
    described = dict(descriptions or {})
    renamed = dict(rename or {})
    placed = dict(after or {})

    def build(cls: type[T]) -> type[T]:
        if not issubclass(cls, Adapted):
            raise TypeError(f"{cls.__name__} must subclass Adapted to be generated")
        if record in GENERATED:
            raise TypeError(f"{record.__name__} already has a GraphQL type")
        body: dict[str, Any] = dict(inspect.get_annotations(cls))
        source = _record_fields(record)
        unknown = [f for f in [*exclude, *renamed] if f not in source]
        if unknown:
            raise TypeError(f"{record.__name__} has no field {', '.join(unknown)}")
        annotations: dict[str, Any] = {}
        readers: dict[str, Convert | str] = {}
        for field_name, (tp, metadata) in source.items():
            if field_name in exclude:
                continue
            target = renamed.get(field_name, field_name)
            if target in body:
                # the body's type wins; the value still comes from the record's field
                # unless the body computes it
                if target not in cls.__dict__ or not isinstance(cls.__dict__[target], _Derived):
                    readers[target] = _reader(field_name, _body_convert(tp))
                annotations[target] = body[target]
                text = described.get(target, metadata.get("description"))
                if target not in cls.__dict__ and text:
                    setattr(cls, target, strawberry.field(description=text))
                continue
            annotation, convert = graphql_field(tp)
            annotations[target] = annotation
            readers[target] = _reader(field_name, convert)
            text = described.get(target, metadata.get("description"))
            setattr(cls, target, strawberry.field(description=text))
        for field_name, annotation in body.items():
            if field_name not in annotations:
                annotations[field_name] = annotation
                readers[field_name] = _reader(field_name, _property_convert(record, field_name))
        for field_name, value in list(cls.__dict__.items()):
            if isinstance(value, _Derived):
                readers[field_name] = value.compute or _missing(cls.__name__, field_name)
                text = value.description or described.get(field_name)
                made_field = strawberry.field(name=value.name, description=text)
                setattr(cls, field_name, made_field)
        cls.__annotations__ = _placed(annotations, placed)
        setattr(cls, _PLAN, _plan(cls, readers))
        undescribed = set(described) - set(annotations)
        if undescribed:
            raise TypeError(f"descriptions of no field: {', '.join(sorted(undescribed))}")
        made = strawberry.type(cls, name=name, description=description)
        GENERATED[record] = made
        return cast(type[T], made)

    return build


def _missing(type_name: str, field_name: str) -> Convert:
    def refuse(record: Any) -> Any:
        raise TypeError(f"{type_name}.of() needs {field_name}: its record does not hold it")

    return refuse


def _body_convert(tp: Any) -> Convert:
    """How a record's value reaches a field whose type the class body gives: through
    the generated type where the record's type has one, as it is otherwise."""
    try:
        return graphql_field(tp)[1]
    except TypeError:
        return _identity


def _property_convert(record: type, attribute: str) -> Convert:
    """How a property's value reaches the field of its name (a nested record through
    its generated type)."""
    prop = getattr(record, attribute, None)
    if isinstance(prop, property) and prop.fget is not None:
        returns = typing.get_type_hints(prop.fget).get("return")
        if returns is not None:
            return _body_convert(returns)
    return _identity


def _placed(annotations: dict[str, Any], after: Mapping[str, str | None]) -> dict[str, Any]:
    order = list(annotations)
    for field_name, anchor in after.items():
        if field_name not in annotations or (anchor is not None and anchor not in annotations):
            raise TypeError(f"cannot place {field_name} after {anchor}: no such field")
        order.remove(field_name)
        order.insert(0 if anchor is None else order.index(anchor) + 1, field_name)
    return {f: annotations[f] for f in order}
