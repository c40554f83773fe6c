"""GraphQL fields of the analysis engine: root causes, KPIs, SPC, capability, batch risk.

The types adapt :mod:`sqems.analysis` results one to one; the resolvers check the
role, run the analysis on a worker thread and wrap what it returns.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, TypeVar

import strawberry
from pydantic import BaseModel, ValidationError
from strawberry.scalars import JSON
from strawberry.types import Info

from sqems.analysis import capability as cap
from sqems.analysis import charts as ch
from sqems.analysis import kpis as kp
from sqems.analysis import prediction as pr
from sqems.analysis import rootcause as rc
from sqems.analysis import spc
from sqems.analysis.factors import FactorKind as DomainFactorKind
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import Category6M as DomainCategory
from sqems.graph_model.store import GraphStore
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.generate import Adapted, adapted, derived, given
from sqems.graphql.types import Node, WindowInput, _graphql_annotation, site_zone, to_graphql
from sqems.settings import Settings

M = TypeVar("M", bound=BaseModel)
Category6M = _graphql_annotation(DomainCategory)
MODELS_DIR = "models"
"""Where defect models are kept, under the data directory."""
ChartKind = strawberry.enum(ch.ChartKind, name="ChartKind", description="Which control chart.")
LimitMethod = strawberry.enum(
    spc.LimitMethod,
    name="LimitMethod",
    description="How attribute chart limits are set: exact (binomial, Poisson, geometric "
    "probability limits), laney (p'/u' for overdispersed data), normal (3-sigma "
    "approximation), auto (laney when the dispersion test rejects, else exact).",
)
FactorKind = strawberry.enum(
    DomainFactorKind, name="FactorKind", description="What a candidate cause is."
)

# --- root cause ----------------------------------------------------------------------------


@adapted(
    rc.Evidence,
    description="The statistics behind a candidate cause.",
    descriptions={
        "defective_exposed": "Defective units exposed to it.",
        "exposed": "Units exposed to it.",
        "population": "Units in the comparable population.",
        "risk_ratio_low": "95 % interval, lower end.",
        "risk_ratio_high": "95 % interval, upper end.",
        "p_value": "One-sided exact (hypergeometric) test.",
        "q_value": "Benjamini-Hochberg adjusted p-value.",
        "adjusted_odds_ratio": "Mantel-Haenszel odds ratio within strata of product and "
        "exposure to the significant causes (the other ones, for a significant cause); null "
        "when no stratum holds both exposed and unexposed units.",
        "adjusted_odds_ratio_low": "95 % interval of the adjusted odds ratio "
        "(Robins-Breslow-Greenland), lower.",
        "adjusted_odds_ratio_high": "95 % interval of the adjusted odds ratio, upper end.",
        "adjusted_p_value": "One-sided exact test conditional on the same strata.",
        "explained_defects": "Defective units the cause accounts for: the defects in excess "
        "of what its exposed units would have had without the causes they were exposed to "
        "(1 - 1/product of adjusted ORs), shared among those causes by their log odds "
        "ratios, so the causes together never account for more defects than there are; "
        "0 for a factor that is not significant.",
        "explained_defects_low": "95 % interval of the defects explained, lower end (this "
        "cause's adjusted OR at the ends of its interval).",
        "explained_defects_high": "95 % interval of the defects explained, upper end.",
    },
    after={"rate_exposed": "population", "rate_unexposed": "rate_exposed"},
)
class CauseEvidence(Adapted):
    rate_exposed: float
    rate_unexposed: float


@adapted(
    rc.WhyStep,
    description="One link of a 5-Why chain.",
    descriptions={"edge": "The relationship that led here."},
)
class WhyStep(Adapted):
    uid: str

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
    significant: bool = strawberry.field(
        description="Passes the false-discovery control with enough exposed defective units "
        "and keeps an effect conditional on the stronger causes: only then a cause."
    )
    explained_by: str | None = strawberry.field(
        description="A co-exposed cause that accounts for this one's excess."
    )
    aliases: list[str] = strawberry.field(
        description="Keys of factors with exactly the same exposure: no data can tell them "
        "from this one."
    )
    suspects: list[str] = strawberry.field(
        description="Keys of co-exposed factors of this cause's suspect set: discovered on "
        "their own, sharing at least 80 % of their defective units with it each way, and "
        "without an excess once it is accounted for; the most plausible first."
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
            significant=c.significant,
            explained_by=c.explained_by.key if c.explained_by else None,
            aliases=[a.key for a in c.aliases],
            suspects=[f.key for f in c.suspects],
            evidence=CauseEvidence.of(c.evidence),
            why=[WhyStep.of(w) for w in c.why],
        )


@adapted(
    rc.RootCauseReport,
    description="Ranked candidate causes of a set of defective units.",
    exclude=("window", "alpha"),
    descriptions={
        "conclusion": "In plain words: what stands out, or that no factor does and what "
        "more data would settle it.",
        "defectives_needed": "When nothing stands out: defective units that would find the "
        "leading factor with 80 % power if its risk ratio is real.",
        "dispersion": "How much more the batches' defect rates vary than chance would make "
        "them (1: binomial); every test and interval carries it.",
        "origin_steps": "The PFMEA origin steps of the defect types explained: only factors "
        "at or before them were candidates (empty: no origin recorded, every factor was one).",
    },
    after={"conclusion": "causes"},
)
class RootCauseReport(Adapted):
    defectives: str = derived(lambda r: r.defectives.description, description="What was explained.")
    causes: list[Cause] = derived(
        lambda r: [Cause.of(c, r.alpha) for c in r.causes],
        description="Significant causes first, then the other factors by p-value.",
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


@adapted(
    kp.Counts,
    description="Unit counts of one group and the rates derived from them.",
    descriptions={"defective": "Units with at least one defect."},
    after={"key": None},
)
class KpiGroup(Adapted):
    key: str = given()
    yield_: float | None = strawberry.field(name="yield")
    first_pass_yield: float | None
    ppm: float | None = strawberry.field(description="Defective units per million produced.")
    field_ppm: float | None = strawberry.field(description="Complaints per million shipped.")

    @classmethod
    def all(cls, groups: dict[str, kp.Counts]) -> list[KpiGroup]:
        return [cls.of(c, key=k) for k, c in groups.items()]


@strawberry.type
class ProductYield:
    product: str
    rolled_throughput_yield: float | None


@strawberry.type(description="Defect rate per line and day, ready for a heat map.")
class Heatmap:
    lines: list[str]
    days: list[str]
    rate: list[list[float | None]] = strawberry.field(description="rate[line][day]")


@adapted(kp.DefectTypeCount)
class DefectTypeShare(Adapted):
    pass


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


@adapted(kp.ShiftTest, description="Chi-square test that every shift has the same defect rate.")
class ShiftTest(Adapted):
    rates: list[ShiftRate] = derived(
        lambda t: [ShiftRate(shift=s, rate=v) for s, v in t.rates.items()]
    )


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
    site_zone: str = strawberry.field(
        description="The site's time zone (IANA name) that dates and times without an offset "
        "are read in, e.g. a window of one date is that local day; byDay and the heat map's "
        "days are UTC dates."
    )

    @classmethod
    def of(cls, r: kp.KpiReport, site_zone: str) -> KpiReport:
        return cls(
            total=KpiGroup.of(r.total, key="total"),
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
            top_defects=[DefectTypeShare.of(t) for t in r.top_defects],
            cost_of_poor_quality=CostOfPoorQuality(**r.cost, currency=r.currency),
            shift_test=None if r.shift_test is None else ShiftTest.of(r.shift_test),
            notes=r.notes,
            site_zone=site_zone,
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


# --- SPC and capability ---------------------------------------------------------------------


@strawberry.type(description="One plotted point and the lines it is judged by.")
class ChartPoint:
    index: int
    key: str = strawberry.field(description="The run (first run of a subgroup) or inspection.")
    time: datetime
    value: float | None = strawberry.field(
        description="Null where the statistic has no value (a moving range's first point)."
    )
    center: float | None
    lcl: float | None
    ucl: float | None
    phase: int = strawberry.field(
        description="1: in the baseline the limits came from; 2: monitored."
    )
    machine: str | None = strawberry.field(
        default=None, description="The point's machine on a per-machine chart."
    )

    @classmethod
    def all(cls, points: list[ch.ChartPoint]) -> list[ChartPoint]:
        return [
            cls(
                index=p.index,
                key=p.key,
                time=datetime.fromtimestamp(p.time, UTC),
                value=_finite(p.value),
                center=_finite(p.center),
                lcl=_finite(p.lcl),
                ucl=_finite(p.ucl),
                phase=p.phase,
                machine=p.machine,
            )
            for p in points
        ]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@adapted(ch.Violation, description="A run rule that fired, at the points that completed it.")
class Violation(Adapted):
    pass


@adapted(
    ch.MachineChart,
    description="One machine's part of a per-machine chart.",
    descriptions={"limits": "This machine's frozen limits; pass them back with its machine."},
)
class MachineChart(Adapted):
    pass


@adapted(
    ch.SpecCheck,
    description="A parameter's spec limits and the charted runs outside them. Spec limits "
    "judge single runs: draw them on an individuals chart, not beside the limits of means, "
    "ranges or sums.",
    descriptions={
        "runs": "Runs judged (the charted ones).",
        "below": "Runs whose actual is below the LSL, in chart order.",
        "above": "Runs whose actual is above the USL, in chart order.",
        "points": "Indices of the chart's points that hold a run outside spec.",
        "out_of_spec": "Runs outside spec (below plus above).",
    },
)
class SpecCheck(Adapted):
    out_of_spec: int


@adapted(
    ch.ChartResult,
    description="A control chart of a parameter's actuals or of inspections.",
    descriptions={
        "sigma": "The process sigma the limits are built from.",
        "limits": "The frozen limits; pass them back as `limits` to monitor new data.",
        "dropped": "Baseline points phase I excluded.",
        "machines": "The machines the points come from.",
        "pooled": "One set of limits over several machines (asked for with pool).",
        "by_machine": "Per-machine charts: each machine's sigma and limits.",
        "spec": "A parameter chart's spec limits and the runs outside them; null for an "
        "inspection chart or a parameter without spec limits. The notes say how many runs "
        "are outside spec even when no run rule fires.",
    },
    after={"points": "stable", "secondary": "points"},
)
class SpcChart(Adapted):
    points: list[ChartPoint] = derived(lambda r: ChartPoint.all(r.points))
    secondary: list[ChartPoint] = derived(
        lambda r: ChartPoint.all(r.secondary),
        description="Moving range, R or S beside an I or X-bar chart; C- beside a CUSUM's C+.",
    )


@strawberry.input
class ParameterChartInput:
    uid: str
    machine: str | None = None
    pool: bool = strawberry.field(
        default=False,
        description="One chart over all machines; by default each machine gets its own.",
    )
    window: WindowInput | None = None
    kind: ChartKind = ch.ChartKind.INDIVIDUALS  # type: ignore[valid-type]
    subgroup_size: int = strawberry.field(
        default=5, description="Consecutive runs per subgroup (X-bar charts)."
    )
    ewma_lambda: float = 0.2
    cusum_k: float = 0.5
    cusum_h: float = 5.0


@strawberry.input
class InspectionChartInput:
    scope: str = strawberry.field(description="A process step or a line.")
    window: WindowInput | None = None
    kind: ChartKind = ch.ChartKind.P  # type: ignore[valid-type]
    limit_method: LimitMethod = spc.LimitMethod.AUTO  # type: ignore[valid-type]


@strawberry.input(one_of=True, description="What to chart: exactly one of.")
class SpcChartInput:
    parameter: ParameterChartInput | None = strawberry.UNSET
    inspections: InspectionChartInput | None = strawberry.UNSET


@adapted(
    cap.Estimate,
    description="A point estimate with its confidence interval.",
    descriptions={
        "lower_bound": "One-sided lower confidence bound at the same level: what acceptance "
        "(is the index at least a minimum?) is judged by."
    },
)
class Estimate(Adapted):
    pass


@adapted(cap.Ppm, description="Nonconforming parts per million, by side.")
class Ppm(Adapted):
    total: float


@adapted(cap.Normality, exclude=("alpha",))
class NormalityCheck(Adapted):
    normal: bool


@adapted(
    cap.Percentile,
    description="ISO 22514-2 percentile indices of non-normal values.",
    exclude=("ppu", "ppl", "resamples"),
    rename={"normality": "normal_after"},
    descriptions={
        "transform": "box-cox or yeo-johnson.",
        "x_low": "The 0.135 % point of the fitted law.",
        "x_high": "The 99.865 % point.",
    },
)
class PercentileIndices(Adapted):
    normal_after: bool = derived(
        lambda p: p.normality.normal, description="The transformed values pass normality."
    )


@adapted(
    cap.Capability,
    description="Capability of a parameter's actuals against its spec.",
    exclude=("subgroups", "dof_within", "ppu", "ppl", "control_source"),
    descriptions={
        "warnings": "Why the indices may mislead.",
        "method": "normal, or percentile when normality was rejected (ISO 22514-2).",
    },
)
class CapabilityReport(Adapted):
    judged: Estimate | None = strawberry.field(
        description="The index acceptance uses (Cpk, or the percentile Ppk); compare its "
        "lowerBound with the minimum."
    )


# --- defect prediction ------------------------------------------------------------------------


@adapted(
    pr.ModelMetrics,
    description="How a defect model did on the later part of a time split.",
    exclude=("train_units", "test_units"),
    descriptions={"base_brier": "Brier score of the base rate alone."},
)
class DefectModelMetrics(Adapted):
    pass


@strawberry.type(description="A product's trained defect model.")
class DefectModelInfo:
    product: str
    metrics: DefectModelMetrics
    features: list[str]

    @classmethod
    def of(cls, model: pr.DefectModel) -> DefectModelInfo:
        return cls(
            product=model.product,
            metrics=DefectModelMetrics.of(model.metrics),
            features=list(model.schema.columns),
        )


@adapted(
    pr.Contribution,
    descriptions={
        "effect": "How much the probability falls with this feature at its typical value."
    },
)
class RiskContribution(Adapted):
    pass


@adapted(
    pr.BatchRisk,
    description="A batch's predicted defect risk and what drives it.",
    descriptions={"probability": "That a unit is found defective."},
)
class BatchRisk(Adapted):
    pass


@strawberry.type
class BatchRiskReport:
    model: DefectModelInfo
    batches: list[BatchRisk]


def load_model(settings: Settings, product: str) -> pr.DefectModel:
    path = pr.model_path(settings.data_dir / MODELS_DIR, product)
    if not path.exists():
        raise NotFound(
            f"no defect model for product {product}: train one with the trainDefectModel mutation"
        )
    return pr.DefectModel.load(path)


def train_model(store: GraphStore, settings: Settings, product: str) -> pr.DefectModel:
    model = pr.train(store, product)
    folder = settings.data_dir / MODELS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    model.save(pr.model_path(folder, product))
    return model


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
                target = rc.from_units(store, input.units)
            elif isinstance(input.complaints, list):
                target = rc.from_complaints(store, input.complaints)
            else:
                assert isinstance(input.defect_type, DefectTypeInput)
                window = input.defect_type.window
                span = window.window(site_zone(info)) if window else None
                target = rc.from_defect_type(store, input.defect_type.uid, span)
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
        span = window.window(site_zone(info)) if window else None
        report = await ctx.call(lambda: kp.kpis(ctx.store, span, costs=cost_model, top=top))
        zone = await ctx.call(site_zone(info))
        return KpiReport.of(report, zone.name)

    @strawberry.field(description="A control chart with its limits and the rules that fire.")
    async def spc_chart(
        self,
        info: Info[Context, None],
        input: SpcChartInput,
        baseline: int | None = None,
        rules: list[str] | None = None,
        limits: JSON | None = None,
    ) -> SpcChart:
        ctx = info.context
        ctx.require(Role.VIEWER)
        frozen = _limits(limits)

        def answer() -> ch.ChartResult:
            if isinstance(input.parameter, ParameterChartInput):
                p = input.parameter
                return ch.parameter_chart(
                    ctx.store,
                    p.uid,
                    ch.ChartKind(p.kind),
                    machine=p.machine,
                    pool=p.pool,
                    window=p.window.window(site_zone(info)) if p.window else None,
                    baseline=baseline,
                    limits=frozen,
                    subgroup_size=p.subgroup_size,
                    rules=rules,
                    ewma_lambda=p.ewma_lambda,
                    cusum_k=p.cusum_k,
                    cusum_h=p.cusum_h,
                )
            assert isinstance(input.inspections, InspectionChartInput)
            q = input.inspections
            return ch.inspection_chart(
                ctx.store,
                q.scope,
                ch.ChartKind(q.kind),
                window=q.window.window(site_zone(info)) if q.window else None,
                baseline=baseline,
                limits=frozen,
                rules=rules,
                method=spc.LimitMethod(q.limit_method),
            )

        return SpcChart.of(await ctx.call(answer))

    @strawberry.field(description="Capability of a parameter's actuals against its spec.")
    async def capability(
        self,
        info: Info[Context, None],
        parameter: str,
        machine: str | None = None,
        window: WindowInput | None = None,
        confidence: float = 0.95,
    ) -> CapabilityReport:
        ctx = info.context
        ctx.require(Role.VIEWER)
        span = window.window(site_zone(info)) if window else None
        found = await ctx.call(
            lambda: ch.parameter_capability(
                ctx.store, parameter, machine=machine, window=span, confidence=confidence
            )
        )
        return CapabilityReport.of(found)

    @strawberry.field(description="A product's trained defect model and how it scored.")
    async def defect_model(self, info: Info[Context, None], product: str) -> DefectModelInfo:
        ctx = info.context
        ctx.require(Role.VIEWER)
        return DefectModelInfo.of(await ctx.call(load_model, ctx.settings, product))

    @strawberry.field(description="Predicted defect risk of batches, from the product's model.")
    async def batch_risk(
        self, info: Info[Context, None], product: str, batches: list[str]
    ) -> BatchRiskReport:
        ctx = info.context
        ctx.require(Role.VIEWER)
        if not 1 <= len(batches) <= ctx.settings.api_max_page_size:
            raise ValidationFailed(
                f"ask for 1 to {ctx.settings.api_max_page_size} batches, got {len(batches)}"
            )

        def answer() -> tuple[pr.DefectModel, list[pr.BatchRisk]]:
            model = load_model(ctx.settings, product)
            return model, model.predict_batches(ctx.store, batches)

        model, risks = await ctx.call(answer)
        return BatchRiskReport(
            model=DefectModelInfo.of(model), batches=[BatchRisk.of(r) for r in risks]
        )


def _limits(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationFailed("limits must be the object an earlier spcChart returned")
    return value
