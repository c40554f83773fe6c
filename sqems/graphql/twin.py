"""GraphQL fields of the digital twin: what-if sessions, their scenarios and progress.

Scenarios run in the background on the server's :class:`WhatIfRunner` (the first run
of a line also fits its quality models, which takes a while); ``runScenario`` answers
at once with the scenario pending, ``whatIfSession`` shows where each one is, and the
``whatIfProgress`` subscription streams the progress of a session's runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from sqems import localtime
from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import RunStatus as DomainRunStatus
from sqems.graph_model.nodes import Scenario
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.generate import Adapted, adapted
from sqems.simulation import scenarios as sc
from sqems.simulation import whatif as wi
from sqems.simulation.runner import Progress, WhatIfRunner
from sqems.twin.quality import Coefficient, QualityModel

RunStatus = strawberry.enum(DomainRunStatus, name="RunStatus")


class ProgressHub:
    """Fans the runner's progress out from its worker thread to subscribers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queues: set[asyncio.Queue[Progress]] = set()

    def publish(self, progress: Progress) -> None:
        for queue in list(self.queues):
            self.loop.call_soon_threadsafe(queue.put_nowait, progress)


@strawberry.type(description="A KPI's mean and 94 % credible interval over the replications.")
class KpiInterval:
    kpi: str
    mean: float
    low: float
    high: float


def _intervals(body: dict[str, Any], key: str) -> list[KpiInterval]:
    return [
        KpiInterval(kpi=k, mean=v["mean"], low=v["low"], high=v["high"])
        for k, v in body.get(key, {}).items()
    ]


@strawberry.type(
    description="Whether a KPI's paired difference from the baseline is credible: "
    "'credible' when its 94 % interval excludes zero, else 'no credible change'."
)
class KpiVerdict:
    kpi: str
    verdict: str


@strawberry.type(description="A setpoint the optimisation recommends.")
class RecommendedSetpoint:
    parameter: str
    current: float
    recommended: float


@strawberry.type(description="One scenario of a what-if session.")
class WhatIfScenario:
    uid: str
    name: str
    baseline: bool
    changes: str = strawberry.field(description="The scenario's changes, as JSON.")
    status: RunStatus  # type: ignore[valid-type]
    progress: float
    message: str
    finished_at: datetime | None
    kpis: list[KpiInterval]
    difference: list[KpiInterval] = strawberry.field(
        description="Paired difference from the baseline (same random numbers and "
        "posterior draws in every replication)."
    )
    recommended: list[RecommendedSetpoint] = strawberry.field(
        description="For a recommendation: the setpoints it chose."
    )
    feasible: bool | None = strawberry.field(
        description="For a recommendation: its mean throughput met the floor asked for."
    )
    verdicts: list[KpiVerdict] = strawberry.field(
        description="Per KPI, whether the paired difference from the baseline is credible."
    )
    warnings: list[str] = strawberry.field(
        description="What to know before trusting the result, e.g. 'this scenario changes "
        "nothing compared with the baseline'."
    )
    simulated_changes: str = strawberry.field(
        description="The changes as simulated, as JSON (a drift window estimated from the "
        "data filled in)."
    )
    recommendation_message: str | None = strawberry.field(
        description="For a recommendation: why nothing is recommended, when nothing is "
        "credibly better."
    )

    @classmethod
    def of(cls, s: Scenario) -> WhatIfScenario:
        body = json.loads(s.results) if s.results else {}
        rec = body.get("recommendation", {})
        return cls(
            uid=s.uid,
            name=s.name,
            baseline=s.baseline,
            changes=s.changes,
            status=s.status,
            progress=s.progress,
            message=s.message,
            finished_at=s.finished_at,
            kpis=_intervals(body, "kpis"),
            difference=_intervals(body, "difference"),
            recommended=[
                RecommendedSetpoint(parameter=k, current=rec["current"][k], recommended=v)
                for k, v in rec.get("setpoints", {}).items()
            ],
            feasible=body.get("feasible"),
            verdicts=[KpiVerdict(kpi=k, verdict=v) for k, v in body.get("verdicts", {}).items()],
            warnings=list(body.get("warnings", [])),
            simulated_changes=json.dumps(body.get("changes", {}), sort_keys=True),
            recommendation_message=rec.get("message") or None,
        )


@strawberry.type(description="A what-if study of one line.")
class WhatIfSessionView:
    uid: str
    name: str
    line: str
    created_at: datetime
    horizon_hours: float
    replications: int
    seed: int
    scenarios: list[WhatIfScenario]

    @classmethod
    def of(cls, view: wi.SessionView) -> WhatIfSessionView:
        s = view.session
        return cls(
            uid=s.uid,
            name=s.name,
            line=view.line,
            created_at=s.created_at,
            horizon_hours=s.horizon_s / 3600.0,
            replications=s.replications,
            seed=s.seed,
            scenarios=[WhatIfScenario.of(x) for x in view.scenarios],
        )


@adapted(Progress, description="How far a scenario's run is.")
class WhatIfProgress(Adapted):
    pass


@strawberry.input(description="A parameter's new setpoint and/or spread factor.")
class ParameterChangeInput:
    parameter: str
    setpoint: float | None = None
    spread: float | None = strawberry.field(
        default=None, description="Factor on the process variation (0.5: half)."
    )


@strawberry.input(description="An inspection step's detection rate and rework share.")
class InspectionChangeInput:
    step: str
    detection: float | None = None
    rework: float | None = None


@strawberry.input
class BufferChangeInput:
    step: str
    capacity: int


@strawberry.input
class BreakdownChangeInput:
    machine: str
    mtbf_s: float
    mttr_s: float


@strawberry.input(description="Route a step to a subset of its machines.")
class RoutingChangeInput:
    step: str
    machines: list[str]


@strawberry.input(
    description="Remove a machine's drift of a parameter: its behaviour is re-estimated "
    "from its runs outside the window; without start and end the window is estimated "
    "from its runs' actuals."
)
class DriftRemovalInput:
    machine: str
    parameter: str
    start: datetime | None = None
    end: datetime | None = None


@strawberry.input(description="The shifts that work one step.")
class StepShiftChangeInput:
    step: str
    shifts: list[str]


@strawberry.input(
    description="Replace a lot, or every lot of a supplier (exactly one), by a new lot "
    "drawn from the population of lots."
)
class LotSwitchInput:
    lot: str | None = None
    supplier: str | None = None


@strawberry.input(description="Operators whose runs of a step the step's other operators take.")
class OperatorChangeInput:
    step: str
    exclude: list[str]


@strawberry.input(description="What a scenario changes; what is left out stays as today.")
class ScenarioInput:
    parameters: list[ParameterChangeInput] | None = None
    line_speed: float | None = strawberry.field(
        default=None, description="Factor on every cycle time's speed (1.1: 10 % faster)."
    )
    shifts: list[str] | None = strawberry.field(
        default=None, description="The shifts that work: early, late, night."
    )
    inspections: list[InspectionChangeInput] | None = None
    buffers: list[BufferChangeInput] | None = None
    breakdowns: list[BreakdownChangeInput] | None = None
    routing: list[RoutingChangeInput] | None = None
    drifts: list[DriftRemovalInput] | None = None
    step_shifts: list[StepShiftChangeInput] | None = None
    lots: list[LotSwitchInput] | None = None
    operators: list[OperatorChangeInput] | None = None

    def spec(self, zone: localtime.ZoneSource) -> sc.ScenarioSpec:
        """The scenario; drift windows' times without an offset placed in ``zone``."""
        data: dict[str, Any] = {}
        if self.parameters:
            data["parameters"] = [vars(p) for p in self.parameters]
        if self.line_speed is not None:
            data["line_speed"] = self.line_speed
        if self.shifts is not None:
            data["shifts"] = self.shifts
        for key in ("inspections", "buffers", "breakdowns", "routing", "step_shifts", "operators"):
            items = getattr(self, key)
            if items:
                data[key] = [vars(i) for i in items]
        if self.lots:
            data["lots"] = [{k: v for k, v in vars(x).items() if v is not None} for x in self.lots]
        if self.drifts:
            data["drifts"] = [
                {k: v for k, v in vars(d).items() if v is not None} for d in self.drifts
            ]
            for drift in data["drifts"]:
                for k in ("start", "end"):
                    if k in drift:
                        drift[k] = localtime.place(drift[k], zone, end=k == "end", what=k)
        return sc.ScenarioSpec.parse(data)


def runner(ctx: Context) -> WhatIfRunner:
    found = ctx.whatif
    if found is None:
        raise ValidationFailed("what-if sessions do not run in this server")
    assert isinstance(found, WhatIfRunner)
    return found


def create_session(
    ctx: Context, line: str, name: str, horizon_hours: float, replications: int, seed: int
) -> wi.SessionView:
    if not 0 < horizon_hours <= 24 * 7:
        raise ValidationFailed(f"horizonHours must be in (0, 168], got {horizon_hours}")
    if not 2 <= replications <= 1_000:
        raise ValidationFailed(f"replications must be between 2 and 1000, got {replications}")
    if seed < 0:
        raise ValidationFailed(f"seed must be >= 0, got {seed}")
    return wi.create_session(
        ctx.store,
        line,
        name,
        horizon_s=horizon_hours * 3600.0,
        replications=replications,
        seed=seed,
    )


def run_scenario(ctx: Context, session: str, name: str, changes: ScenarioInput | None) -> Scenario:
    def zone() -> localtime.SiteZone:
        return localtime.site_zone(ctx.settings, ctx.store)

    spec = changes.spec(zone) if changes is not None else sc.ScenarioSpec()
    run = runner(ctx)
    view = wi.get_session(ctx.store, session)
    if run.ready(view.line):
        spec.check(run.line(view.line))  # a bad change is refused now, not in the background
    scenario = wi.add_scenario(ctx.store, session, name, spec)
    run.submit(session, scenario.uid)
    return scenario


@adapted(
    Coefficient,
    description="A coefficient's posterior mean and 94 % HDI (logit scale).",
)
class ModelCoefficient(Adapted):
    pass


@strawberry.type(description="A step's fitted quality model and its convergence diagnostics.")
class StepModelInfo:
    step: str
    parameters: list[str]
    curved: list[str] = strawberry.field(
        description="Parameters whose effect is a smooth curve (a restricted cubic spline) "
        "rather than a straight line."
    )
    machines: list[str]
    periods: list[str] = strawberry.field(
        description="Periods of the history with a time effect (a random walk on the "
        "logit), by their start; empty: no time term."
    )
    chains: int
    draws: int
    max_r_hat: float
    min_ess_bulk: float
    min_ess_tail: float
    divergences: int
    predictive_p: float | None = strawberry.field(
        description="Posterior predictive p-value of the runs' dispersion (small: the runs "
        "vary more than the model allows)."
    )
    runs_high_pareto_k: int | None = strawberry.field(
        description="Runs whose PSIS-LOO Pareto k exceeds 0.7 (highly influential)."
    )
    sound: bool
    problems: list[str] = strawberry.field(description="Why the model is unsound, if it is.")
    coefficients: list[ModelCoefficient]

    @classmethod
    def of(cls, model: QualityModel) -> StepModelInfo:
        d = model.diagnostics
        return cls(
            step=model.step,
            parameters=list(model.parameters),
            curved=list(model.curved),
            machines=list(model.machines),
            periods=list(model.periods),
            chains=d.chains,
            draws=d.draws,
            max_r_hat=d.max_r_hat,
            min_ess_bulk=d.min_ess_bulk,
            min_ess_tail=d.min_ess_tail,
            divergences=d.divergences,
            predictive_p=d.check.predictive_p if d.check else None,
            runs_high_pareto_k=d.check.pareto_k_high if d.check else None,
            sound=not d.problems,
            problems=list(d.problems),
            coefficients=[ModelCoefficient.of(c) for c in model.coefficients()],
        )


def twin_models(ctx: Context, line: str) -> list[QualityModel]:
    run = runner(ctx)
    if not run.ready(line):
        raise ValidationFailed(
            f"the twin of {line} is not fitted in this server yet: run a scenario of it first"
        )
    return run.fitted(line)


@strawberry.type
class WhatIfQuery:
    @strawberry.field(
        description="The quality models of a line's twin: what each step's model learned "
        "and its convergence diagnostics (once a scenario of the line has run)."
    )
    async def twin_models(self, info: Info[Context, None], line: str) -> list[StepModelInfo]:
        ctx = info.context
        ctx.require(Role.VIEWER)
        models = await ctx.call(twin_models, ctx, line)
        return [StepModelInfo.of(m) for m in models]

    @strawberry.field(description="A what-if session with its scenarios and their results.")
    async def what_if_session(self, info: Info[Context, None], uid: str) -> WhatIfSessionView:
        ctx = info.context
        ctx.require(Role.VIEWER)
        view = await ctx.call(wi.get_session, ctx.store, uid)
        return WhatIfSessionView.of(view)


@strawberry.type
class WhatIfSubscription:
    @strawberry.subscription(description="Progress of the runs of one what-if session.")
    async def what_if_progress(
        self, info: Info[Context, None], session: str
    ) -> AsyncGenerator[WhatIfProgress, None]:
        ctx = info.context
        ctx.require(Role.VIEWER)
        await ctx.call(wi.get_session, ctx.store, session)  # NotFound for a wrong uid
        hub = ctx.whatif_hub
        if hub is None:
            raise ValidationFailed("what-if sessions do not run in this server")
        queue: asyncio.Queue[Progress] = asyncio.Queue()
        hub.queues.add(queue)
        try:
            while True:
                p = await queue.get()
                if p.session == session:
                    yield WhatIfProgress.of(p)
        finally:
            hub.queues.discard(queue)
