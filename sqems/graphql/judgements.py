"""GraphQL fields of unit judgements made by edge agents beside the lines.

``judgements(unit:, edge:, verdict:)`` lists ``Judgement`` nodes newest first, a page
at a time, from :func:`sqems.graph_model.judgements.find_judgements`; ``Unit.judgements``
(:data:`sqems.graphql.types.RELATED`) lists one unit's.
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types import Info

from sqems.errors import ValidationFailed
from sqems.graph_model.judgements import find_judgements
from sqems.graph_model.nodes import JudgementVerdict
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.types import (
    NODE_OBJECT_TYPES,
    Connection,
    _graphql_annotation,
    paginate,
    to_graphql,
)

Judgement: Any = NODE_OBJECT_TYPES["Judgement"]
Verdict: Any = _graphql_annotation(JudgementVerdict)
"""The enum the generated ``Judgement.verdict`` has (one GraphQL enum per Python one)."""


@strawberry.type
class JudgementQuery:
    @strawberry.field(
        description="Unit judgements made by edge agents, newest first, a page at a time: "
        "of one unit, by one edge, with one verdict (any combination; none: all)."
    )
    async def judgements(
        self,
        info: Info[Context, None],
        unit: str | None = None,
        edge: str | None = None,
        verdict: Verdict | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> Connection[Judgement]:
        ctx = info.context
        ctx.require(Role.VIEWER)
        if unit is not None and not unit.strip():
            raise ValidationFailed("unit must be a unit's uid, got an empty string")
        found = await ctx.call(
            lambda: find_judgements(ctx.store, unit=unit, edge=edge, verdict=verdict)
        )
        ctx.nodes.prime_many({f.judgement.uid: f.judgement for f in found})
        return paginate(
            [f.judgement for f in found],
            first,
            after,
            ctx.settings.api_max_page_size,
            node=to_graphql,
        )
