"""GraphQL field of the complaint investigation: the complaint, the causes its defect
type's cases share, the recall the leading cause calls for and the fix to try.

The types adapt :class:`~sqems.investigation.Investigation` one to one and reuse the
root-cause types (:class:`~sqems.graphql.analysis.Cause`) and the recall scope
(:class:`~sqems.graphql.schema.RecallScope`). The proposed fix is not simulated here:
its ``changes`` are the ``changes`` argument of the ``runScenario`` mutation, so a
client runs it through the what-if session it opens for ``fix.line``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry.utils.str_converters import to_camel_case

from sqems import investigation as inv
from sqems.errors import ValidationFailed
from sqems.graph_model import traceability as tr
from sqems.graph_model.nodes import Node as DomainNode
from sqems.graph_model.nodes import Severity as DomainSeverity
from sqems.graph_model.nodes import UnitStatus as DomainUnitStatus
from sqems.graphql.access import Role
from sqems.graphql.analysis import Cause, WhyStep
from sqems.graphql.context import Context
from sqems.graphql.generate import Adapted, adapted, derived, given
from sqems.graphql.types import NODE_OBJECT_TYPES, _graphql_annotation, to_graphql
from sqems.investigation.case import SubAssembly as DomainSubAssembly
from sqems.investigation.investigate import DEFAULT_LOOKBACK_DAYS

if TYPE_CHECKING:
    from sqems.graphql.schema import Genealogy, RecallScope

# the schema module imports this one: its types are resolved when the schema is built
SCHEMA = "sqems.graphql.schema"
GenealogyType = Annotated["Genealogy", strawberry.lazy(SCHEMA)]
RecallScopeType = Annotated["RecallScope", strawberry.lazy(SCHEMA)]

Severity = _graphql_annotation(DomainSeverity)
UnitStatus = _graphql_annotation(DomainUnitStatus)
DefectType = NODE_OBJECT_TYPES["DefectType"]


@adapted(
    DomainSubAssembly,
    description="A unit built into the complained unit, at any depth.",
    descriptions={
        "batch": "The batch that made it.",
        "parent": "The unit it is built into.",
        "depth": "1 for a part built straight into the complained unit, 2 below that, …",
    },
)
class SubAssembly(Adapted):
    pass


@adapted(
    inv.ComplaintCase,
    description="The complaint under investigation and its unit.",
    exclude=("defect_type_name", "category"),
    descriptions={
        "customer": "The customer who raised it (or the one its unit shipped to).",
        "unit": "The complained unit.",
        "batch": "The batch that made the unit.",
        "origin_steps": "The process steps the defect type originates at (the PFMEA link).",
        "subassemblies": "Every unit built into the complained one, level by level.",
    },
)
class InvestigatedComplaint(Adapted):
    uid: str
    severity: Severity = derived(lambda c: DomainSeverity(c.severity))  # type: ignore[valid-type]
    unit_status: UnitStatus = derived(lambda c: DomainUnitStatus(c.unit_status))  # type: ignore[valid-type]
    defect_type: DefectType | None = given()  # type: ignore[valid-type]

    @strawberry.field(description="Everything upstream of the complaint (a root-cause trace).")
    async def genealogy(self, info: Info[Context, None]) -> GenealogyType:
        from sqems.graphql import schema  # noqa: PLC0415 - the schema imports this module

        ctx = info.context
        of = frozenset({"Complaint"})
        return schema.Genealogy.of(await ctx.call(lambda: ctx.trace.upstream([self.uid], of=of)))


@strawberry.type(
    description="Which defective units the causes were ranked from: one complaint alone "
    "cannot single out a cause, so the analysis is widened to its defect type's cases."
)
class InvestigationAnalysis:
    widened: bool = strawberry.field(
        description="True when the analysis takes in every case of the complaint's defect "
        "type in the window, not the complaint alone."
    )
    defect_type: str | None
    start: datetime | None
    end: datetime | None
    similar_complaints: list[str] = strawberry.field(
        description="Other complaints of the same defect type in the window."
    )
    note: str = strawberry.field(description="The scope in plain words.")
    defectives: str = strawberry.field(description="What was explained.")
    population: int
    defective_in_population: int
    products: list[str]
    factors_tested: int
    alpha: float = strawberry.field(description="The false-discovery rate causes are held to.")
    defectives_needed: int | None = strawberry.field(
        description="When nothing stands out: defective units that would find the leading "
        "factor with 80 % power if its risk ratio is real."
    )


@strawberry.type(description="A machine's parameter that left its usual level, and when.")
class RecallDrift:
    machine: str
    parameter: str
    start: datetime | None = strawberry.field(description="First run off the usual level.")
    end: datetime | None = strawberry.field(description="Last run off the usual level.")
    last_good_before: datetime | None = strawberry.field(
        description="The last run at the usual level before the drift."
    )
    first_good_after: datetime | None = strawberry.field(
        description="The first run back at the usual level after it."
    )
    reference: float = strawberry.field(description="The usual level.")
    peak_shift: float = strawberry.field(description="The largest shift from the usual level.")
    sigma: float
    runs_off: int = strawberry.field(description="Runs off the usual level.")


@strawberry.type(description="How the suggested recall was drawn from the leading cause.")
class RecallBasis:
    basis: str = strawberry.field(
        description="lot, supplier, drift, machine, excursion, shift or operator."
    )
    explanation: str
    sources: list[str]
    drifts: list[RecallDrift] = strawberry.field(
        description="For a drift: the change-point window the recall covers."
    )

    @classmethod
    def of(cls, recall: inv.SuggestedRecall) -> RecallBasis:
        body = recall.basis_dict()
        return cls(
            basis=body["basis"],
            explanation=body["explanation"],
            sources=body["sources"],
            drifts=[
                RecallDrift(
                    machine=d["machine"],
                    parameter=d["parameter"],
                    start=_time(d["start"]),
                    end=_time(d["end"]),
                    last_good_before=_time(d["last_good_before"]),
                    first_good_after=_time(d["first_good_after"]),
                    reference=d["reference"],
                    peak_shift=d["peak_shift"],
                    sigma=d["sigma"],
                    runs_off=d["runs_off"],
                )
                for d in body["drifts"]
            ],
        )


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@strawberry.type(description="The what-if scenario that removes the leading cause.")
class ProposedFix:
    line: str = strawberry.field(description="The line whose twin shows the fix.")
    description: str
    changes: JSON = strawberry.field(
        description="The scenario, as the `changes` argument of `runScenario` takes it: "
        "open a what-if session of `line` and run it there."
    )

    @classmethod
    def of(cls, fix: inv.Fix) -> ProposedFix:
        return cls(line=fix.line, description=fix.description, changes=_camel(fix.changes))


def _camel(value: Any) -> Any:
    """A scenario mapping with the GraphQL input's field names (``step_shifts`` →
    ``stepShifts``)."""
    if isinstance(value, dict):
        return {to_camel_case(k): _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


@strawberry.type(
    description="A complaint investigated end to end: its cause (only a significant one is "
    "ever called a cause), the recall that cause calls for and the fix to try."
)
class Investigation:
    complaint: InvestigatedComplaint
    analysis: InvestigationAnalysis
    causes: list[Cause] = strawberry.field(
        description="Significant causes first, then the other factors by p-value."
    )
    conclusion: str = strawberry.field(
        description="In plain words: what stands out, or that no factor does."
    )
    leading_cause: str | None = strawberry.field(
        description="Key of the first significant cause that reached the complained unit; "
        "null when none did."
    )
    why: list[WhyStep] = strawberry.field(
        description="The 5-Why chain from this complaint, through its unit and any "
        "sub-assembly, to the leading cause; empty without one."
    )
    recall: RecallScopeType | None = strawberry.field(
        description="The recall the leading cause calls for (several sources merged)."
    )
    recall_basis: RecallBasis | None
    fix: ProposedFix | None
    notes: list[str] = strawberry.field(
        description="What to know: a strongest cause that did not reach the unit, no fix."
    )


@dataclass(slots=True)
class _Answer:
    found: inv.Investigation
    defect_type: DomainNode | None
    recall: tr.RecallScope | None
    recall_source: str
    nodes: dict[str, DomainNode]
    """The recall's customers and the defect type, for the node loader."""


@strawberry.type
class InvestigationQuery:
    @strawberry.field(
        description="Investigate a complaint end to end: the analysis widened to its defect "
        "type's cases in the lookback window, the ranked causes, the leading cause that "
        "reached its unit, the recall it calls for and the what-if fix to try."
    )
    async def investigation(
        self,
        info: Info[Context, None],
        complaint: strawberry.ID,
        lookback_days: float = DEFAULT_LOOKBACK_DAYS,
        top: int = 5,
    ) -> Investigation:
        from sqems.graphql import schema  # noqa: PLC0415 - the schema imports this module

        ctx = info.context
        ctx.require(Role.VIEWER)
        if not 1 <= top <= ctx.settings.api_max_page_size:
            raise ValidationFailed(f"top must be between 1 and {ctx.settings.api_max_page_size}")
        store = ctx.store

        def answer() -> _Answer:
            found = inv.investigate(store, str(complaint), lookback_days=lookback_days, top=top)
            kind = found.case.defect_type
            merged = found.recall.merged() if found.recall else None
            recall, source = merged if merged else (None, "")
            nodes = store.get_many(
                [*(recall.customers if recall else []), *([kind] if kind else [])]
            )
            return _Answer(found, nodes.get(kind or ""), recall, source, nodes)

        got = await ctx.call(answer)
        ctx.nodes.prime_many(got.nodes)
        found, report = got.found, got.found.report
        scope = found.scope.as_dict()
        return Investigation(
            complaint=InvestigatedComplaint.of(
                found.case,
                defect_type=None if got.defect_type is None else to_graphql(got.defect_type),
            ),
            analysis=InvestigationAnalysis(
                widened=scope["widened"],
                defect_type=scope["defect_type"],
                start=_time(scope["start"]),
                end=_time(scope["end"]),
                similar_complaints=scope["similar_complaints"],
                note=scope["note"],
                defectives=report.defectives.description,
                population=report.population,
                defective_in_population=report.defective_in_population,
                products=report.products,
                factors_tested=report.factors_tested,
                alpha=report.alpha,
                defectives_needed=report.defectives_needed,
            ),
            causes=[Cause.of(c, report.alpha) for c in report.causes],
            conclusion=report.conclusion,
            leading_cause=found.leading.factor.key if found.leading else None,
            why=[WhyStep.of(w) for w in found.why],
            recall=None
            if got.recall is None
            else schema.RecallScope(
                source=got.recall_source,
                counts=schema.RecallCounts(**got.recall.counts),
                triggers=got.recall.triggers,
                batches=got.recall.batches,
                shipments=got.recall.shipments,
                scope=got.recall,
                found=got.nodes,
            ),
            recall_basis=RecallBasis.of(found.recall) if found.recall else None,
            fix=ProposedFix.of(found.fix) if found.fix else None,
            notes=found.notes,
        )
