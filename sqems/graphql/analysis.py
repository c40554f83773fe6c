"""GraphQL fields of the analysis engine: root causes, KPIs, SPC, capability, batch risk.

The types adapt :mod:`sqems.analysis` results one to one; the resolvers check the
role, run the analysis on a worker thread and wrap what it returns.
"""

from __future__ import annotations

from typing import Any, TypeVar

import strawberry
from pydantic import BaseModel, ValidationError
from strawberry.types import Info

from sqems.analysis import kpis as kp
from sqems.analysis import rootcause as rc
from sqems.analysis.factors import FactorKind as DomainFactorKind
from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import Category6M as DomainCategory
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.types import Node, WindowInput, _graphql_annotation, to_graphql

M = TypeVar("M", bound=BaseModel)
Category6M = _graphql_annotation(DomainCategory)
FactorKind = strawberry.enum(
    DomainFactorKind, name="FactorKind", description="What a candidate cause is."
)

# --- root cause ----------------------------------------------------------------------------


@strawberry.type(description="The statistics behind a candidate cause.")
class CauseEvidence:
    defective_exposed: int = strawberry.field(description="Defective units exposed to it.")
    exposed: int = strawberry.field(description="Units exposed to it.")
    defective_total: int
    population: int = strawberry.field(description="Units in the comparable population.")
    rate_exposed: float
    rate_unexposed: float
    risk_ratio: float
    risk_ratio_low: float = strawberry.field(description="95 % interval, lower end.")
    risk_ratio_high: float = strawberry.field(description="95 % interval, upper end.")
    p_value: float = strawberry.field(description="One-sided exact (hypergeometric) test.")
    q_value: float = strawberry.field(description="Benjamini-Hochberg adjusted p-value.")
    adjusted_odds_ratio: float | None = strawberry.field(
        description="From the multivariable model, adjusted for the other causes."
    )
    explained_defects: float = strawberry.field(
        description="Defective units the cause accounts for: exposed defects times (1 - 1/OR)."
    )

    @classmethod
    def of(cls, e: rc.Evidence) -> CauseEvidence:
        return cls(
            **{f: getattr(e, f) for f in rc.Evidence.__slots__},
            rate_exposed=e.rate_exposed,
            rate_unexposed=e.rate_unexposed,
        )


@strawberry.type(description="One link of a 5-Why chain.")
class WhyStep:
    uid: str
    label: str
    edge: str | None = strawberry.field(description="The relationship that led here.")
    why: str

    @strawberry.field(description="The node itself.")
    async def node(self, info: Info[Context, None]) -> Node | None:
        found = await info.context.nodes.load(self.uid)
        return to_graphql(found) if found else None


@strawberry.type(description="A candidate cause, ranked by the defects it explains.")
class Cause:
    rank: int
    key: str = strawberry.field(description="Stable key: kind:uid[zone]@step.")
    kind: FactorKind  # type: ignore[valid-type]
    uid: str = strawberry.field(description="The lot, supplier, machine, operator or parameter.")
    step: str | None
    zone: str | None = strawberry.field(description="For an excursion: its spec zone.")
    description: str
    category: Category6M  # type: ignore[valid-type]
    significant: bool = strawberry.field(description="Passes the false-discovery control.")
    explained_by: str | None = strawberry.field(
        description="A co-exposed cause that accounts for this one's excess."
    )
    evidence: CauseEvidence
    why: list[WhyStep] = strawberry.field(description="From a defective unit to the cause.")

    @classmethod
    def of(cls, c: rc.Cause, alpha: float) -> Cause:
        f = c.factor
        return cls(
            rank=c.rank,
            key=f.key,
            kind=f.kind,
            uid=f.uid,
            step=f.step,
            zone=f.zone,
            description=f.describe(),
            category=c.category,
            significant=c.evidence.q_value < alpha,
            explained_by=c.explained_by.key if c.explained_by else None,
            evidence=CauseEvidence.of(c.evidence),
            why=[WhyStep(uid=w.uid, label=w.label, edge=w.edge, why=w.why) for w in c.why],
        )


@strawberry.type(description="Ranked candidate causes of a set of defective units.")
class RootCauseReport:
    defectives: str = strawberry.field(description="What was explained.")
    population: int
    defective_in_population: int
    products: list[str]
    factors_tested: int
    causes: list[Cause]

    @classmethod
    def of(cls, r: rc.RootCauseReport) -> RootCauseReport:
        return cls(
            defectives=r.defectives.description,
            population=r.population,
            defective_in_population=r.defective_in_population,
            products=r.products,
            factors_tested=r.factors_tested,
            causes=[Cause.of(c, r.alpha) for c in r.causes],
        )


@strawberry.input
class DefectTypeInput:
    uid: str
    window: WindowInput | None = None


@strawberry.input(one_of=True, description="The defective units to explain: exactly one of.")
class RootCauseInput:
    units: list[str] | None = strawberry.UNSET
    complaints: list[str] | None = strawberry.UNSET
    defect_type: DefectTypeInput | None = strawberry.UNSET


# --- KPIs ------------------------------------------------------------------------------------


@strawberry.type(description="Unit counts of one group and the rates derived from them.")
class KpiGroup:
    key: str
    produced: int
    defective: int = strawberry.field(description="Units with at least one defect.")
    scrapped: int
    reworked: int
    shipped: int
    complaints: int
    yield_: float | None = strawberry.field(name="yield")
    first_pass_yield: float | None
    ppm: float | None = strawberry.field(description="Defective units per million produced.")
    field_ppm: float | None = strawberry.field(description="Complaints per million shipped.")

    @classmethod
    def of(cls, key: str, c: kp.Counts) -> KpiGroup:
        return cls(
            key=key,
            produced=c.produced,
            defective=c.defective,
            scrapped=c.scrapped,
            reworked=c.reworked,
            shipped=c.shipped,
            complaints=c.complaints,
            yield_=c.yield_,
            first_pass_yield=c.first_pass_yield,
            ppm=c.ppm,
            field_ppm=c.field_ppm,
        )

    @classmethod
    def all(cls, groups: dict[str, kp.Counts]) -> list[KpiGroup]:
        return [cls.of(k, c) for k, c in groups.items()]


@strawberry.type
class ProductYield:
    product: str
    rolled_throughput_yield: float | None


@strawberry.type(description="Defect rate per line and day, ready for a heat map.")
class Heatmap:
    lines: list[str]
    days: list[str]
    rate: list[list[float | None]] = strawberry.field(description="rate[line][day]")


@strawberry.type
class DefectTypeShare:
    uid: str
    name: str
    category: str
    count: int
    share: float


@strawberry.type(description="Cost of poor quality in the report's currency.")
class CostOfPoorQuality:
    scrap: float
    rework: float
    external: float = strawberry.field(description="Complaints handled.")
    total: float
    currency: str


@strawberry.type
class ShiftRate:
    shift: str
    rate: float


@strawberry.type(description="Chi-square test that every shift has the same defect rate.")
class ShiftTest:
    rates: list[ShiftRate]
    chi2: float
    dof: int
    p_value: float
    significant: bool
    warning: str | None


@strawberry.type(description="Quality KPIs of the batches that started in a window.")
class KpiReport:
    total: KpiGroup
    by_line: list[KpiGroup]
    by_product: list[KpiGroup]
    by_machine: list[KpiGroup]
    by_shift: list[KpiGroup]
    by_day: list[KpiGroup]
    rolled_throughput_yield: list[ProductYield]
    heatmap: Heatmap
    top_defects: list[DefectTypeShare]
    cost_of_poor_quality: CostOfPoorQuality
    shift_test: ShiftTest | None
    notes: list[str]

    @classmethod
    def of(cls, r: kp.KpiReport) -> KpiReport:
        test = r.shift_test
        return cls(
            total=KpiGroup.of("total", r.total),
            by_line=KpiGroup.all(r.by_line),
            by_product=KpiGroup.all(r.by_product),
            by_machine=KpiGroup.all(r.by_machine),
            by_shift=KpiGroup.all(r.by_shift),
            by_day=KpiGroup.all(r.by_day),
            rolled_throughput_yield=[
                ProductYield(product=p, rolled_throughput_yield=v)
                for p, v in r.rolled_throughput_yield.items()
            ],
            heatmap=Heatmap(**r.heatmap),
            top_defects=[DefectTypeShare(**kp.vars_of(t)) for t in r.top_defects],
            cost_of_poor_quality=CostOfPoorQuality(**r.cost, currency=r.currency),
            shift_test=None
            if test is None
            else ShiftTest(
                rates=[ShiftRate(shift=s, rate=v) for s, v in test.rates.items()],
                chi2=test.chi2,
                dof=test.dof,
                p_value=test.p_value,
                significant=test.significant,
                warning=test.warning,
            ),
            notes=r.notes,
        )


@strawberry.input
class ProductCostInput:
    product: str
    unit_cost: float


@strawberry.input(description="What poor quality costs; omitted fields keep their defaults.")
class CostInput:
    unit_cost: list[ProductCostInput] | None = None
    default_unit_cost: float | None = None
    rework_share: float | None = None
    complaint_cost: float | None = None
    currency: str | None = None

    def model(self) -> kp.CostModel:
        given: dict[str, Any] = {
            k: v
            for k, v in (
                ("default_unit_cost", self.default_unit_cost),
                ("rework_share", self.rework_share),
                ("complaint_cost", self.complaint_cost),
                ("currency", self.currency),
            )
            if v is not None
        }
        if self.unit_cost:
            given["unit_cost"] = {c.product: c.unit_cost for c in self.unit_cost}
        return _validated(kp.CostModel, given)


def _validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise ValidationFailed(problems) from None


# --- the fields --------------------------------------------------------------------------------


@strawberry.type
class AnalysisQuery:
    @strawberry.field(
        description="Rank the causes of a set of defective units (from a list, complaints, "
        "or a defect type in a window)."
    )
    async def root_cause(
        self,
        info: Info[Context, None],
        input: RootCauseInput,
        top: int = 10,
        alpha: float = 0.05,
    ) -> RootCauseReport:
        ctx = info.context
        ctx.require(Role.VIEWER)
        if not 1 <= top <= ctx.settings.api_max_page_size:
            raise ValidationFailed(f"top must be between 1 and {ctx.settings.api_max_page_size}")
        store = ctx.store

        def answer() -> rc.RootCauseReport:
            if isinstance(input.units, list):
                target = rc.from_units(input.units)
            elif isinstance(input.complaints, list):
                target = rc.from_complaints(store, input.complaints)
            else:
                assert isinstance(input.defect_type, DefectTypeInput)
                window = input.defect_type.window
                target = rc.from_defect_type(
                    store, input.defect_type.uid, window.window() if window else None
                )
            return rc.rank_causes(store, target, top=top, alpha=alpha)

        return RootCauseReport.of(await ctx.call(answer))

    @strawberry.field(description="Quality KPIs of the batches that started in a window.")
    async def kpis(
        self,
        info: Info[Context, None],
        window: WindowInput | None = None,
        costs: CostInput | None = None,
        top: int = 3,
    ) -> KpiReport:
        ctx = info.context
        ctx.require(Role.VIEWER)
        if not 1 <= top <= 50:
            raise ValidationFailed("top must be between 1 and 50")
        cost_model = costs.model() if costs else None
        span = window.window() if window else None
        report = await ctx.call(lambda: kp.kpis(ctx.store, span, costs=cost_model, top=top))
        return KpiReport.of(report)
