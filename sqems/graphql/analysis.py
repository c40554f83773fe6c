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
from sqems.graphql.types import Node, WindowInput, _graphql_annotation, to_graphql
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
        description="Mantel-Haenszel odds ratio within strata of product and exposure to the "
        "significant causes (the other ones, for a significant cause); null when no stratum "
        "holds both exposed and unexposed units."
    )
    adjusted_odds_ratio_low: float | None = strawberry.field(
        description="95 % interval of the adjusted odds ratio (Robins-Breslow-Greenland), lower."
    )
    adjusted_odds_ratio_high: float | None = strawberry.field(
        description="95 % interval of the adjusted odds ratio, upper end."
    )
    adjusted_p_value: float = strawberry.field(
        description="One-sided exact test conditional on the same strata."
    )
    explained_defects: float = strawberry.field(
        description="Defective units the cause accounts for: the defects in excess of what "
        "its exposed units would have had without the causes they were exposed to "
        "(1 - 1/product of adjusted ORs), shared among those causes by their log odds "
        "ratios, so the causes together never account for more defects than there are; "
        "0 for a factor that is not significant."
    )
    explained_defects_low: float = strawberry.field(
        description="95 % interval of the defects explained, lower end (this cause's "
        "adjusted OR at the ends of its interval)."
    )
    explained_defects_high: float = strawberry.field(
        description="95 % interval of the defects explained, upper end."
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
            why=[WhyStep(uid=w.uid, label=w.label, edge=w.edge, why=w.why) for w in c.why],
        )


@strawberry.type(description="Ranked candidate causes of a set of defective units.")
class RootCauseReport:
    defectives: str = strawberry.field(description="What was explained.")
    population: int
    defective_in_population: int
    products: list[str]
    factors_tested: int
    causes: list[Cause] = strawberry.field(
        description="Significant causes first, then the other factors by p-value."
    )
    conclusion: str = strawberry.field(
        description="In plain words: what stands out, or that no factor does and what more "
        "data would settle it."
    )
    defectives_needed: int | None = strawberry.field(
        description="When nothing stands out: defective units that would find the leading "
        "factor with 80 % power if its risk ratio is real."
    )
    dispersion: float = strawberry.field(
        description="How much more the batches' defect rates vary than chance would make "
        "them (1: binomial); every test and interval carries it."
    )
    origin_steps: list[str] = strawberry.field(
        description="The PFMEA origin steps of the defect types explained: only factors at "
        "or before them were candidates (empty: no origin recorded, every factor was one)."
    )

    @classmethod
    def of(cls, r: rc.RootCauseReport) -> RootCauseReport:
        return cls(
            defectives=r.defectives.description,
            population=r.population,
            defective_in_population=r.defective_in_population,
            products=r.products,
            factors_tested=r.factors_tested,
            causes=[Cause.of(c, r.alpha) for c in r.causes],
            conclusion=r.conclusion,
            defectives_needed=r.defectives_needed,
            dispersion=r.dispersion,
            origin_steps=list(r.origin_steps),
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


@strawberry.type(description="A run rule that fired, at the points that completed it.")
class Violation:
    rule: str
    title: str
    indices: list[int]


@strawberry.type(description="One machine's part of a per-machine chart.")
class MachineChart:
    machine: str
    points: int
    sigma: float
    limits: JSON | None = strawberry.field(
        description="This machine's frozen limits; pass them back with its machine."
    )
    dropped: list[int]
    stable: bool

    @classmethod
    def of(cls, m: ch.MachineChart) -> MachineChart:
        return cls(
            machine=m.machine,
            points=m.points,
            sigma=m.sigma,
            limits=m.limits,  # type: ignore[arg-type]  # a JSON object
            dropped=list(m.dropped),
            stable=m.stable,
        )


@strawberry.type(description="A control chart of a parameter's actuals or of inspections.")
class SpcChart:
    kind: ChartKind  # type: ignore[valid-type]
    subject: str
    unit: str | None
    sigma: float = strawberry.field(description="The process sigma the limits are built from.")
    limits: JSON | None = strawberry.field(
        description="The frozen limits; pass them back as `limits` to monitor new data."
    )
    dropped: list[int] = strawberry.field(description="Baseline points phase I excluded.")
    stable: bool
    points: list[ChartPoint]
    secondary: list[ChartPoint] = strawberry.field(
        description="Moving range, R or S beside an I or X-bar chart; C- beside a CUSUM's C+."
    )
    violations: list[Violation]
    notes: list[str]
    machines: list[str] = strawberry.field(description="The machines the points come from.")
    pooled: bool = strawberry.field(
        description="One set of limits over several machines (asked for with pool)."
    )
    by_machine: list[MachineChart] = strawberry.field(
        description="Per-machine charts: each machine's sigma and limits."
    )

    @classmethod
    def of(cls, r: ch.ChartResult) -> SpcChart:
        return cls(
            kind=r.kind,
            subject=r.subject,
            unit=r.unit,
            sigma=r.sigma,
            limits=r.limits,  # type: ignore[arg-type]  # a JSON object
            dropped=list(r.dropped),
            stable=r.stable,
            points=ChartPoint.all(r.points),
            secondary=ChartPoint.all(r.secondary),
            violations=[
                Violation(rule=v.rule, title=v.title, indices=list(v.indices)) for v in r.violations
            ],
            notes=r.notes,
            machines=r.machines,
            pooled=r.pooled,
            by_machine=[MachineChart.of(m) for m in r.by_machine],
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


@strawberry.type(description="A point estimate with its confidence interval.")
class Estimate:
    value: float
    lower: float
    upper: float
    lower_bound: float = strawberry.field(
        description="One-sided lower confidence bound at the same level: what acceptance "
        "(is the index at least a minimum?) is judged by."
    )

    @classmethod
    def of(cls, e: cap.Estimate | None) -> Estimate | None:
        if e is None:
            return None
        return cls(value=e.value, lower=e.lower, upper=e.upper, lower_bound=e.lower_bound)


@strawberry.type(description="Nonconforming parts per million, by side.")
class Ppm:
    below_lsl: float | None
    above_usl: float | None
    total: float

    @classmethod
    def of(cls, p: cap.Ppm | None) -> Ppm | None:
        if p is None:
            return None
        return cls(below_lsl=p.below_lsl, above_usl=p.above_usl, total=p.total)


@strawberry.type
class NormalityCheck:
    test: str
    statistic: float
    p_value: float
    normal: bool


@strawberry.type(description="ISO 22514-2 percentile indices of non-normal values.")
class PercentileIndices:
    transform: str = strawberry.field(description="box-cox or yeo-johnson.")
    lam: float
    normal_after: bool = strawberry.field(description="The transformed values pass normality.")
    x_low: float = strawberry.field(description="The 0.135 % point of the fitted law.")
    x_median: float
    x_high: float = strawberry.field(description="The 99.865 % point.")
    pp: Estimate | None
    ppk: Estimate
    ppm: Ppm

    @classmethod
    def of(cls, p: cap.Percentile | None) -> PercentileIndices | None:
        if p is None:
            return None
        ppk = Estimate.of(p.ppk)
        ppm = Ppm.of(p.ppm)
        assert ppk is not None and ppm is not None
        return cls(
            transform=p.transform,
            lam=p.lam,
            normal_after=p.normality.normal,
            x_low=p.x_low,
            x_median=p.x_median,
            x_high=p.x_high,
            pp=Estimate.of(p.pp),
            ppk=ppk,
            ppm=ppm,
        )


@strawberry.type(description="Capability of a parameter's actuals against its spec.")
class CapabilityReport:
    n: int
    mean: float
    sigma_within: float
    within_method: str
    sigma_overall: float
    lsl: float | None
    usl: float | None
    target: float | None
    confidence: float
    cp: Estimate | None
    cpk: Estimate | None
    cpu: Estimate | None
    cpl: Estimate | None
    pp: Estimate | None
    ppk: Estimate | None
    cpm: Estimate | None
    ppm_observed: Ppm
    ppm_within: Ppm | None
    ppm_overall: Ppm | None
    normality: NormalityCheck | None
    in_control: bool | None
    beyond_limits: list[int]
    warnings: list[str] = strawberry.field(description="Why the indices may mislead.")
    method: str = strawberry.field(
        description="normal, or percentile when normality was rejected (ISO 22514-2)."
    )
    percentile: PercentileIndices | None
    judged: Estimate | None = strawberry.field(
        description="The index acceptance uses (Cpk, or the percentile Ppk); compare its "
        "lowerBound with the minimum."
    )

    @classmethod
    def of(cls, c: cap.Capability) -> CapabilityReport:
        normality = c.normality
        return cls(
            n=c.n,
            mean=c.mean,
            sigma_within=c.sigma_within,
            within_method=c.within_method,
            sigma_overall=c.sigma_overall,
            lsl=c.lsl,
            usl=c.usl,
            target=c.target,
            confidence=c.confidence,
            cp=Estimate.of(c.cp),
            cpk=Estimate.of(c.cpk),
            cpu=Estimate.of(c.cpu),
            cpl=Estimate.of(c.cpl),
            pp=Estimate.of(c.pp),
            ppk=Estimate.of(c.ppk),
            cpm=Estimate.of(c.cpm),
            ppm_observed=Ppm(
                below_lsl=c.ppm_observed.below_lsl,
                above_usl=c.ppm_observed.above_usl,
                total=c.ppm_observed.total,
            ),
            ppm_within=Ppm.of(c.ppm_within),
            ppm_overall=Ppm.of(c.ppm_overall),
            normality=None
            if normality is None
            else NormalityCheck(
                test=normality.test,
                statistic=normality.statistic,
                p_value=normality.p_value,
                normal=normality.normal,
            ),
            in_control=c.in_control,
            beyond_limits=list(c.beyond_limits),
            warnings=list(c.warnings),
            method=c.method,
            percentile=PercentileIndices.of(c.percentile),
            judged=Estimate.of(c.judged),
        )


# --- defect prediction ------------------------------------------------------------------------


@strawberry.type(description="How a defect model did on the later part of a time split.")
class DefectModelMetrics:
    auc: float | None
    brier: float
    base_brier: float = strawberry.field(description="Brier score of the base rate alone.")
    base_rate: float
    n_train: int
    n_test: int
    trained_at: datetime

    @classmethod
    def of(cls, m: pr.ModelMetrics) -> DefectModelMetrics:
        return cls(
            auc=m.auc,
            brier=m.brier,
            base_brier=m.base_brier,
            base_rate=m.base_rate,
            n_train=m.n_train,
            n_test=m.n_test,
            trained_at=m.trained_at,
        )


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


@strawberry.type
class RiskContribution:
    feature: str
    value: str
    typical: str
    effect: float = strawberry.field(
        description="How much the probability falls with this feature at its typical value."
    )


@strawberry.type(description="A batch's predicted defect risk and what drives it.")
class BatchRisk:
    batch: str
    probability: float = strawberry.field(description="That a unit is found defective.")
    units: int
    expected_defective: float
    contributions: list[RiskContribution]

    @classmethod
    def of(cls, r: pr.BatchRisk) -> BatchRisk:
        return cls(
            batch=r.batch,
            probability=r.probability,
            units=r.units,
            expected_defective=r.expected_defective,
            contributions=[
                RiskContribution(
                    feature=c.feature, value=c.value, typical=c.typical, effect=c.effect
                )
                for c in r.contributions
            ],
        )


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
                    window=p.window.window() if p.window else None,
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
                window=q.window.window() if q.window else None,
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
        span = window.window() if window else None
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
