"""GraphQL of the design review (:mod:`sqems.design.review`): the ``designReview`` field
of :class:`~sqems.graphql.design.DesignQuery` and its types.

The review is asked of a saved plan (its uid) or of a plan given inline (the JSON of a
plan file); it reads the graph and the twin's model cache under the data directory and
writes nothing. Intervals are 90 %: ``Interval`` holds a mean and its bounds.
"""

from __future__ import annotations

import json
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from sqems.design import capability as cap
from sqems.design import precedents as prec
from sqems.design import rates
from sqems.design import review as rev
from sqems.design import suppliers as sup
from sqems.design.plan import PlannedProductSpec, get_plan, parse_plan
from sqems.errors import ValidationFailed
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.generate import Adapted, adapted, derived
from sqems.graphql.quality import CapaPrecedent
from sqems.simulation.runner import TWIN_DIR
from sqems.twin.fitting import Sampler

__all__ = ["DesignReviewReport", "design_review_field"]


@strawberry.type(description="An estimate with its 90 % interval.")
class Interval:
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, t: tuple[float, float, float]) -> Interval:
        return cls(mean=t[0], low=t[1], high=t[2])


@adapted(
    rates.Rate,
    name="DefectRate",
    description="A defect rate: the counts and its beta posterior (mean, 90 % interval).",
    descriptions={"alpha": "Posterior alpha.", "beta": "Posterior beta."},
)
class DefectRate(Adapted):
    pass


@strawberry.type(description="Another supplier of a planned material.")
class SupplierAlternative:
    supplier: str
    rate: DefectRate
    better: float = strawberry.field(description="P(its rate is below the planned supplier's).")


@strawberry.type(description="A supplier's lots of one material.")
class SupplierPair:
    supplier: str
    material: str

    @classmethod
    def of(cls, pair: tuple[str, str]) -> SupplierPair:
        return cls(supplier=pair[0], material=pair[1])


@adapted(
    sup.SupplierEvidence,
    description="What the plant's history says about a BOM item's material and supplier.",
    exclude=("alternatives", "explained_by", "co_exposed"),
    descriptions={
        "rate": "Units made from its lots with a material defect, per unit.",
        "material_rate": "The same over all the material's suppliers.",
        "plant_rate": "The plant-wide prior's mean.",
        "worse_than_plant": "Posterior P(rate > plant rate).",
        "flagged": "worseThanPlant >= 0.95.",
    },
)
class SupplierEvidence(Adapted):
    alternatives: list[SupplierAlternative] = derived(
        lambda e: [
            SupplierAlternative(supplier=s, rate=DefectRate.of(r), better=b)
            for s, r, b in e.alternatives
        ],
        description="Other suppliers of the material, the likeliest better first.",
    )
    explained_by: SupplierPair | None = derived(
        lambda e: None if e.explained_by is None else SupplierPair.of(e.explained_by),
        description="Another supplier's lots, on the same units, that account for its record "
        "(it is then not flagged).",
    )
    co_exposed: list[SupplierPair] = derived(
        lambda e: [SupplierPair.of(p) for p in e.co_exposed],
        description="Flagged pairs of other materials the history cannot tell it apart from.",
    )


@adapted(
    cap.MachineCapability,
    description="A machine's capability for a planned parameter, against the plan's limits.",
    exclude=("holds",),
    descriptions={
        "out_of_spec": "Expected fraction of runs outside the plan's limits.",
        "capable": "The Cpk's lower bound reaches 1.33 (null: too few runs).",
    },
)
class MachineCapability(Adapted):
    holds_lsl: float | None = derived(
        lambda c: None if c.holds is None else c.holds[0],
        description="Lower limit of the narrowest tolerance it holds (Cpk lower bound 1.33).",
    )
    holds_usl: float | None = derived(
        lambda c: None if c.holds is None else c.holds[1],
        description="Upper limit of the narrowest tolerance it holds.",
    )


@adapted(
    cap.StepCapability,
    description="A planned parameter of a step: its planned machines and the others.",
    exclude=("planned",),
)
class StepCapability(Adapted):
    planned: list[MachineCapability] = derived(
        lambda c: [MachineCapability.of(m) for m in rev.planned_of(c)],
        description="The planned machine, or every machine of the planned kind.",
    )


@adapted(
    prec.StepDefects,
    description="A defect type arising at a planned step, on the similar products.",
    exclude=("precedents",),
)
class StepDefects(Adapted):
    precedents: list[CapaPrecedent] = derived(
        lambda d: [CapaPrecedent.of(p) for p in d.precedents],
        description="Earlier CAPAs on the type, what fixed it.",
    )


@adapted(
    rev.Risk,
    name="DesignRisk",
    description="An element of the plan and the failures it is expected to cause.",
    exclude=("key", "excess"),
    descriptions={
        "rank": "1, 2, ... by expected cost for risks; 0 for elements without evidence of risk.",
        "kind": "supplier, capability or defect_type.",
        "probability": "Per-unit failure probability it contributes.",
        "significant": "Flagged by the evidence; only these are risks.",
    },
)
class DesignRisk(Adapted):
    pass


@adapted(
    rev.Suggestion,
    name="DesignSuggestion",
    description="A change history supports for a risk, with the FPY it would make.",
    exclude=("fpy", "gain"),
)
class DesignSuggestion(Adapted):
    fpy: Interval = derived(lambda s: Interval.of(s.fpy), description="FPY with the change.")
    gain: Interval = derived(
        lambda s: Interval.of(s.gain), description="FPY with the change less without."
    )
    changes_nothing: bool = derived(
        lambda s: s.changes_nothing, description="The gain's interval holds 0."
    )


@adapted(
    rev.DesignReview,
    name="DesignReviewReport",
    description="A planned product held against the plant's quality history.",
    exclude=("plan", "fpy"),
    descriptions={
        "risks": "The risks by expected cost, then the elements without evidence of risk.",
        "fpy_method": "How the FPY was predicted: which steps used the twin's model.",
        "unit_cost": "What one failed unit costs.",
        "twin_steps": "Steps whose defect probability came from the twin's quality model.",
    },
)
class DesignReviewReport(Adapted):
    plan: JSON = derived(lambda r: json.loads(r.plan.to_json()), description="The plan reviewed.")
    fpy: Interval = derived(
        lambda r: Interval.of(r.fpy),
        description="Predicted first-pass yield with its 90 % predictive interval.",
    )
    html: str = derived(
        rev.render_html, description="The review as a printable page (print it to PDF)."
    )


def _plan_of(ctx: Context, plan: Any, uid: str | None) -> PlannedProductSpec:
    if (plan is None) == (uid is None):
        raise ValidationFailed(
            "give a plan (the JSON of a plan file) or the uid of a saved plan, not both"
        )
    if uid is not None:
        return get_plan(ctx.store, uid).spec
    return parse_plan(plan, source="plan")


async def resolve_design_review(
    info: Info[Context, None],
    plan: JSON | None = None,
    uid: str | None = None,
    draws: int = rev.DRAWS,
    seed: int = 0,
) -> DesignReviewReport:
    ctx = info.context
    ctx.require(Role.VIEWER)
    settings = ctx.settings

    def run() -> rev.DesignReview:
        spec = _plan_of(ctx, plan, uid)
        return rev.review(
            ctx.store,
            spec,
            draws=draws,
            seed=seed,
            twin_dir=settings.data_dir / TWIN_DIR,
            sampler=Sampler.of(settings),
        )

    return DesignReviewReport.of(await ctx.call(run))


design_review_field: Any = strawberry.field(
    resolver=resolve_design_review,
    description="Review a planned product - a saved plan's uid, or a plan given inline "
    "(the JSON of a plan file) - against the plant's quality history: the evidence per "
    "element, the risks by expected cost, the predicted first-pass yield with its 90 % "
    "interval, suggestions with the FPY under each change, and the printable report.",
)
"""``designReview``: :class:`~sqems.graphql.design.DesignQuery` holds it."""
