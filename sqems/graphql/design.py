"""GraphQL fields of planned products (:mod:`sqems.design.plan`).

A plan travels as JSON, the same document as a plan file. ``savePlannedProduct`` checks
it against the graph and stores it as a draft with the check's warnings;
``releasePlannedProduct`` makes it a product of the plant. Both are engineers' changes,
written to the API's audit log and to the audit trail of quality records as the caller.
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from sqems.design import plan as design_plan
from sqems.graph_model.nodes import PlanStatus as DomainPlanStatus
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.design_review import design_review_field
from sqems.graphql.types import NODE_OBJECT_TYPES, _graphql_annotation, to_graphql
from sqems.quality.capa import Actor

PlannedProduct: Any = NODE_OBJECT_TYPES["PlannedProduct"]
PlanStatus: Any = _graphql_annotation(DomainPlanStatus)
"""The enum the generated ``PlannedProduct.status`` has."""


@strawberry.type(description="A plan saved as a draft planned product, with what its check says.")
class SavedPlannedProduct:
    planned_product: PlannedProduct = strawberry.field(description="The stored draft.")
    warnings: list[str] = strawberry.field(
        description="What the plant's history does not back (a supplier that never "
        "delivered the material, a machine that never ran the step, ...)."
    )
    created: bool = strawberry.field(description="Whether the plan is new (else a revision).")
    changed: bool = strawberry.field(
        description="False when the same plan was saved before: nothing was written."
    )


def _spec(plan: Any) -> design_plan.PlannedProductSpec:
    return design_plan.parse_plan(plan, source="plan")


def _actor(ctx: Context) -> Actor:
    key = ctx.require(Role.VIEWER)
    return Actor(key.name, key.role.label)


@strawberry.type
class DesignQuery:
    design_review = design_review_field

    @strawberry.field(description="The planned products, the last saved first.")
    async def planned_products(
        self,
        info: Info[Context, None],
        status: PlanStatus | None = None,
    ) -> list[PlannedProduct]:
        ctx = info.context
        ctx.require(Role.VIEWER)
        wanted = None if status is None else DomainPlanStatus(str(getattr(status, "value", status)))
        found = await ctx.call(lambda: design_plan.planned_products(ctx.store, wanted))
        return [to_graphql(p.node) for p in found]

    @strawberry.field(description="A planned product by its uid.")
    async def planned_product(self, info: Info[Context, None], uid: str) -> PlannedProduct:
        ctx = info.context
        ctx.require(Role.VIEWER)
        return to_graphql((await ctx.call(design_plan.get_plan, ctx.store, uid)).node)

    @strawberry.field(
        description="Check a plan (the JSON of a plan file) against the graph without "
        "saving it: its warnings; unknown uids are errors naming where they stand."
    )
    async def check_planned_product(self, info: Info[Context, None], plan: JSON) -> list[str]:
        ctx = info.context
        ctx.require(Role.VIEWER)
        spec = _spec(plan)
        return await ctx.call(design_plan.check_plan, ctx.store, spec)


@strawberry.type
class DesignMutation:
    @strawberry.mutation(
        description="Save a plan (the JSON of a plan file) as a draft planned product, new "
        "or revising the draft of its uid (engineer)."
    )
    async def save_planned_product(
        self, info: Info[Context, None], plan: JSON
    ) -> SavedPlannedProduct:
        ctx = info.context

        def save() -> design_plan.SavedPlan:
            return design_plan.save_plan(ctx.store, ctx.trail, _actor(ctx), _spec(plan))

        args = {"uid": plan.get("uid") if isinstance(plan, dict) else None}
        saved = await ctx.audited("savePlannedProduct", Role.ENGINEER, args, save)
        return SavedPlannedProduct(
            planned_product=to_graphql(saved.plan.node),
            warnings=saved.warnings,
            created=saved.created,
            changed=saved.changed,
        )

    @strawberry.mutation(
        description="Release a draft planned product as a new product of the plant, with "
        "its bill of materials (engineer)."
    )
    async def release_planned_product(
        self, info: Info[Context, None], uid: str, product: str
    ) -> PlannedProduct:
        ctx = info.context

        def release() -> design_plan.StoredPlan:
            return design_plan.release_plan(ctx.store, ctx.trail, _actor(ctx), uid, product)

        args = {"uid": uid, "product": product}
        done = await ctx.audited("releasePlannedProduct", Role.ENGINEER, args, release)
        return to_graphql(done.node)
