"""The size of a GraphQL document once its fragments are expanded, bounded before the
document is validated.

The depth and alias limits are validation rules, and validating walks every fragment
spread where it appears: a document of a few dozen fragments, each spreading the one
before twice, expands to millions of fields, and validating it held the event loop for
minutes. :func:`expanded_fields` counts the fields a document selects with every
spread expanded, in time linear in the document (each fragment is sized once), and
:class:`BoundedValidation` refuses a document over the bound before any rule runs.
"""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import ValidationCache

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

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


class BoundedValidation(ValidationCache):
    """Validation (cached per document) of documents that select at most ``max_fields``
    fields once expanded; a larger one is refused without being validated."""

    def __init__(self, max_fields: int, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self.max_fields = max_fields

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        try:
            fields = expanded_fields(document) if document is not None else 0
        except RecursionError:  # fragments nested past the interpreter's stack
            fields = self.max_fields + 1
        if fields > self.max_fields:
            context.pre_execution_errors = [
                GraphQLError(
                    f"the document selects {fields:,} fields once its fragments are "
                    f"expanded; at most {self.max_fields:,} are allowed",
                    extensions={"code": TOO_LARGE},
                )
            ]
            yield
            return
        yield from super().on_validate()
