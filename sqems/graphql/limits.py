"""Parsing and validating a GraphQL document: bounded in size, off the event loop, and
within a time limit.

The depth and alias limits are validation rules, and validating walks every fragment
spread where it appears: a document of a few dozen fragments, each spreading the one
before twice, expands to millions of fields, and validating it held the event loop for
minutes. :func:`expanded_fields` counts the fields a document selects with every
spread expanded, in time linear in the document (each fragment is sized once), and
:class:`CheckedDocument` refuses a document over the bound before any rule runs.

Parsing and validation are CPU work on a document the client chose, so
:class:`CheckedDocument` runs them on a worker thread (the event loop goes on serving
other requests, ``/healthz`` among them) under a deadline of their own that the
validation checks at every node it visits; both results are cached by the document's
text, so a client's usual documents cost a dictionary lookup.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from typing import Any, TypeVar, cast

import anyio.to_thread
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)
from sqems import deadline
from sqems.errors import TimedOut

R = TypeVar("R")

TOO_LARGE = "GRAPHQL_INVALID"
"""The code of a refused document: one over the limits is an invalid request."""


def expanded_fields(document: DocumentNode) -> int:
    """The fields the document's operations select with every fragment spread expanded.
    A spread of an unknown fragment, or one that closes a cycle, counts nothing:
    validation refuses those documents with its own message."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    sized: dict[str, int] = {}
    open_: set[str] = set()

    def fragment(name: str) -> int:
        if name in sized:
            return sized[name]
        if name in open_ or name not in fragments:
            return 0
        open_.add(name)
        sized[name] = selected(fragments[name].selection_set)
        open_.discard(name)
        return sized[name]

    def selected(root: SelectionSetNode | None) -> int:
        total, todo = 0, [root]
        while todo:  # nesting by a stack, not recursion: a deep document is no risk
            selections = todo.pop()
            for node in selections.selections if selections else ():
                if isinstance(node, FieldNode):
                    total += 1
                    todo.append(node.selection_set)
                elif isinstance(node, InlineFragmentNode):
                    todo.append(node.selection_set)
                elif isinstance(node, FragmentSpreadNode):
                    total += fragment(node.name.value)
        return total

    return sum(
        selected(d.selection_set)
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
    )


class _Deadline(ASTValidationRule):
    """Stop validating once the deadline has passed: checked at every node visited."""

    def enter(self, *_args: Any) -> None:
        deadline.check()


def _validated(
    schema: Any, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...],
    max_fields: int,
) -> list[GraphQLError]:  # fmt: skip
    try:
        fields = expanded_fields(document)
    except RecursionError:  # fragments nested past the interpreter's stack
        fields = max_fields + 1
    if fields > max_fields:
        return [
            GraphQLError(
                f"the document selects {fields:,} fields once its fragments are "
                f"expanded; at most {max_fields:,} are allowed",
                extensions={"code": TOO_LARGE},
            )
        ]
    return validate_document(schema, document, (*rules, _Deadline))


class CheckedDocument(SchemaExtension):
    """Parse (at most ``max_tokens`` tokens) and validate (at most ``max_fields``
    fields once expanded, within ``timeout_s``, by the standard rules and ``rules``) on
    a worker thread; both results cached by the document's text in ``cache`` (shared
    by the requests of one schema)."""

    def __init__(
        self,
        cache: DocumentCache,
        *,
        max_tokens: int,
        max_fields: int,
        timeout_s: float,
        rules: Sequence[type[ASTValidationRule]] = (),
    ) -> None:
        super().__init__()
        self.cache = cache
        self.max_tokens = max_tokens
        self.max_fields = max_fields
        self.timeout_s = timeout_s
        self.rules = tuple(rules)

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context
        query = context.query
        if context.graphql_document is None and query:
            # a syntax error is a GraphQLError, which the schema answers as one
            context.graphql_document = await self._off_loop(
                ("parse", query), lambda: parse(query, max_tokens=self.max_tokens)
            )
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.pre_execution_errors is None:
            schema = context.schema._schema
            rules = (*context.validation_rules, *self.rules)
            try:
                context.pre_execution_errors = await self._off_loop(
                    ("validate", context.query, rules),
                    lambda: _validated(schema, document, rules, self.max_fields),
                )
            except TimedOut:
                context.pre_execution_errors = [
                    GraphQLError(
                        f"validating the document took longer than {self.timeout_s:g} s; "
                        "send a smaller document",
                        extensions={"code": TOO_LARGE},
                    )
                ]
        yield

    async def _off_loop(self, key: Hashable, work: Callable[[], R]) -> R:
        found = self.cache.get(key)
        if found is not None:
            return cast(R, found)

        def run() -> R:
            with deadline.within(self.timeout_s):
                return work()

        # abandoned on cancel: a timed-out request answers at once, and the thread stops
        # at its next deadline check
        result = await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        self.cache.put(key, result)
        return result


class DocumentCache:
    """The newest ``size`` parsed and validated documents (thread-safe)."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> object | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Hashable, value: object) -> None:
        with self._lock:
            self._items[key] = value
            if len(self._items) > self.size:
                self._items.popitem(last=False)
