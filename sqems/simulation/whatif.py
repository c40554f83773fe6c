"""What-if sessions: a baseline and scenarios of one line, simulated alike, compared.

A session (``WhatIfSession`` in the graph, ``STUDIES`` its line) fixes the simulated
horizon, the number of replications and the seed. Its scenarios (``Scenario``,
``IN_SESSION``) each hold their changes and, once run, their results as JSON.

Every scenario of a session is simulated with the same replications: replication ``r``
uses the same random streams (common random numbers) and the same posterior draw of
each step's quality model in every scenario. A scenario's difference from the baseline
is therefore computed replication by replication, and its interval is the interval of
those paired differences: much narrower than the difference of two independent
intervals, so a real effect is not drowned by simulation noise. Each KPI's difference
gets a verdict: :data:`CREDIBLE` when its interval excludes zero, else
:data:`NO_CREDIBLE_CHANGE`; and a scenario's result carries the warnings of
:func:`~sqems.simulation.scenarios.warnings_of` (a scenario that changes nothing says
so) and the changes as simulated (a drift window estimated from the data).

:func:`recommend_setpoints` searches the setpoints of the line's parameters for the
highest expected yield under the posterior (a grid per parameter within its spec and
within the setpoints the actuals on record imply for every machine, coordinate-wise,
evaluated from the models), then keeps only the changes whose paired gain is credible
(its interval excludes zero); when none is, it says so and recommends nothing. The
recommendation is then simulated as a scenario of the session, so it gets its
throughput, the paired gain over today and their intervals like any other, and is
marked feasible when its throughput stays above the floor asked for.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from sqems.analysis.kpis import CostModel
from sqems.errors import NotFound, SqemsError, ValidationFailed
from sqems.graph_model.nodes import RunStatus, Scenario, WhatIfSession
from sqems.graph_model.store import Direction, Edge, GraphStore
from sqems.simulation.line import Result, replicate
from sqems.simulation.scenarios import (
    ParameterChange,
    ScenarioSpec,
    TwinDefects,
    line_for,
    warnings_of,
)
from sqems.twin.line import LineTwin, ParameterTwin
from sqems.twin.quality import QualityModel

INTERVAL = (0.03, 0.97)
"""94 % equal-tailed credible intervals, the same width as the models' HDIs."""
KPIS = ("throughput_per_h", "units_per_day", "yield", "fpy", "ppm", "wip", "scrap_cost")
BETTER_HIGH = {"throughput_per_h", "units_per_day", "yield", "fpy"}
KPI_LABELS: dict[str, tuple[str, str, float]] = {
    "throughput_per_h": ("throughput", "units/h", 1.0),
    "units_per_day": ("output a day", "units", 1.0),
    "yield": ("yield", "%", 100.0),
    "fpy": ("first-pass yield", "%", 100.0),
    "ppm": ("defectives shipped", "ppm", 1.0),
    "wip": ("work in progress", "units", 1.0),
    "scrap_cost": ("scrap and rework cost", CostModel().currency, 1.0),
}
"""Each KPI key's name for a person, its unit and the factor from the value to the unit
(yields are fractions, printed as %). The keys stay the API's field names. ``fpy``
equals ``yield`` unless a scenario reworks: today's lines scrap what inspection finds
(the twin fits no rework), so a unit that ends good never failed on its way."""
CREDIBLE = "credible"
"""The verdict on a KPI whose paired difference's interval excludes zero."""
NO_CREDIBLE_CHANGE = "no credible change"
NOTHING_CREDIBLY_BETTER = "no setpoint change is credibly better"
STEADY_REPLICATIONS = 100
"""The fewest replications for which each end of a 94 % interval rests on three of them
(3 % of 100): with 30, each end is about the most extreme replication, and the interval
moves with the luck of one."""
MIN_GAIN = 0.001
"""The practical gain in expected yield a recommended change must beat: 0.1 percentage
point (1,000 ppm fewer defective units). A gain that is surely above zero but below it
is not worth a process change and its validation."""
CREDIBILITY = 0.95
"""A recommended change's posterior probability of gaining more than the practical gain."""
CONFIRM = (
    "the recommendation comes from the plant's history, not from an experiment: confirm "
    "it with a designed experiment (runs at today's and the new setpoints, randomised, "
    "the other inputs held) before changing the process"
)


@dataclass(frozen=True, slots=True)
class Interval:
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray) -> Interval:
        lo, hi = np.quantile(values, INTERVAL)
        return cls(float(values.mean()), float(lo), float(hi))

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    @property
    def verdict(self) -> str:
        """:data:`CREDIBLE` when the interval excludes zero, else
        :data:`NO_CREDIBLE_CHANGE`."""
        return CREDIBLE if self.excludes_zero else NO_CREDIBLE_CHANGE


@dataclass(frozen=True, slots=True)
class Outcome:
    """A scenario's KPIs per replication, what to know before trusting them, and the
    changes as simulated."""

    per_replication: dict[str, np.ndarray]
    warnings: tuple[str, ...] = ()
    changes: dict[str, Any] = field(default_factory=dict)
    """The scenario as simulated (:meth:`ScenarioSpec.resolved`), as JSON data."""

    def kpis(self) -> dict[str, Interval]:
        return {k: Interval.of(v) for k, v in self.per_replication.items()}

    def difference(self, baseline: Outcome) -> dict[str, Interval]:
        return {
            k: Interval.of(v - baseline.per_replication[k])
            for k, v in self.per_replication.items()
            if k in baseline.per_replication
        }

    def verdicts(self, baseline: Outcome) -> dict[str, str]:
        """Per KPI, whether the paired difference from ``baseline`` is credible."""
        return {k: i.verdict for k, i in self.difference(baseline).items()}

    def to_json(self, baseline: Outcome | None = None) -> str:
        """``kpis``, ``per_replication``, ``warnings`` and ``changes``; with a baseline
        also ``difference`` and ``verdicts`` (KPI -> "credible" | "no credible change")."""
        body: dict[str, Any] = {
            "kpis": {k: i.as_dict() for k, i in self.kpis().items()},
            "per_replication": {k: v.tolist() for k, v in self.per_replication.items()},
            "warnings": list(self.warnings),
            "changes": self.changes,
        }
        if baseline is not None:
            difference = self.difference(baseline)
            body["difference"] = {k: i.as_dict() for k, i in difference.items()}
            body["verdicts"] = {k: i.verdict for k, i in difference.items()}
        return json.dumps(body)

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        body = json.loads(text)
        return cls(
            {k: np.asarray(v, dtype=np.float64) for k, v in body["per_replication"].items()},
            tuple(body.get("warnings", ())),
            dict(body.get("changes", {})),
        )


def simulate_scenario(
    twin: LineTwin,
    models: Mapping[str, QualityModel],
    scenario: ScenarioSpec,
    *,
    horizon_s: float,
    replications: int,
    seed: int,
    costs: CostModel | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Outcome:
    """Simulate ``scenario`` ``replications`` times, replication ``r`` with posterior
    draw number ``r`` of each step's model spread evenly over the posterior."""
    if replications < 2:
        raise ValidationFailed(f"a scenario needs at least 2 replications, got {replications}")
    scenario = scenario.resolved(twin)
    line = line_for(twin, scenario, costs)
    available = min((m.draws for m in models.values()), default=replications)
    picks = np.linspace(0, available - 1, replications).round().astype(int)

    def defects_for(r: int) -> TwinDefects:
        return TwinDefects(twin, models, scenario, int(picks[r]))

    results = replicate(
        line,
        defects_for,
        horizon_s,
        replications=replications,
        seed=seed,
        warmup_s=min(horizon_s * 0.1, 3600.0),
        progress=progress,
    )
    hours = scenario.hours_per_day(twin)
    return Outcome(
        _per_replication(results, hours),
        warnings_of(twin, scenario, models),
        scenario.model_dump(mode="json", exclude_defaults=True),
    )


def _per_replication(results: list[Result], hours_per_day: float) -> dict[str, np.ndarray]:
    def col(f: Callable[[Result], float]) -> np.ndarray:
        return np.array([f(r) for r in results], dtype=np.float64)

    return {
        "throughput_per_h": col(lambda r: r.throughput_per_h),
        "units_per_day": col(lambda r: r.throughput_per_h * hours_per_day),
        "yield": col(lambda r: r.yield_),
        "fpy": col(lambda r: r.fpy),
        "ppm": col(lambda r: r.ppm),
        "wip": col(lambda r: r.wip_mean),
        "scrap_cost": col(lambda r: r.scrap_cost),
    }


# --- sessions in the graph --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionView:
    session: WhatIfSession
    line: str
    scenarios: list[Scenario]

    @property
    def baseline(self) -> Scenario:
        return next(s for s in self.scenarios if s.baseline)


def create_session(
    store: GraphStore,
    line: str,
    name: str,
    *,
    horizon_s: float,
    replications: int,
    seed: int = 0,
) -> SessionView:
    """A new session of ``line`` with its baseline scenario (not yet run)."""
    if store.label_of(line) != "Line":
        raise NotFound(f"line {line} is not in the graph ({store.description})")
    uid = f"WIS-{uuid.uuid4().hex[:12]}"
    session = WhatIfSession(
        uid=uid,
        name=name,
        created_at=datetime.now(UTC),
        horizon_s=horizon_s,
        replications=replications,
        seed=seed,
    )
    baseline = Scenario(uid=f"{uid}-S0", name="baseline", baseline=True)
    with store.transaction() as batch:
        batch.add_nodes([session, baseline])
        batch.add_edges([Edge("STUDIES", uid, line), Edge("IN_SESSION", baseline.uid, uid)])
    return SessionView(session, line, [baseline])


_NUMBERING = threading.Lock()
"""Scenarios are numbered in their session; two added at once must not get one number
(one process writes sessions: the server, or the command line)."""


def add_scenario(store: GraphStore, session: str, name: str, spec: ScenarioSpec) -> Scenario:
    with _NUMBERING:
        view = get_session(store, session)
        number = len(view.scenarios)
        scenario = Scenario(uid=f"{session}-S{number}", name=name, changes=spec.to_json())
        with store.transaction() as batch:
            batch.add_nodes([scenario])
            batch.add_edges([Edge("IN_SESSION", scenario.uid, session)])
    return scenario


def get_session(store: GraphStore, uid: str) -> SessionView:
    node = store.get_many([uid]).get(uid)
    if not isinstance(node, WhatIfSession):
        raise NotFound(f"what-if session {uid} does not exist")
    hops = {"STUDIES": Direction.OUT, "IN_SESSION": Direction.IN}
    edges = store.edges([uid], hops)
    line = next(e.dst for e in edges if e.type == "STUDIES")
    scenarios = [
        s
        for s in store.get_many(e.src for e in edges if e.type == "IN_SESSION").values()
        if isinstance(s, Scenario)
    ]
    scenarios.sort(key=lambda s: (not s.baseline, int(s.uid.rsplit("-S", 1)[1])))
    return SessionView(node, line, scenarios)


def run_scenario(
    store: GraphStore,
    twin: LineTwin,
    models: Mapping[str, QualityModel],
    session: str,
    scenario: str,
    *,
    progress: Callable[[float], None] | None = None,
) -> Scenario:
    """Simulate a scenario of ``session`` (and the baseline first, if it has not run)
    and store the results; returns the scenario as stored.

    A difference pairs replications of the same models: when the stored baseline was
    simulated with models of another kind (with or without lot and operator effects)
    or of other steps, the baseline is simulated again with these, for the comparison
    only. The results name the steps whose models added defects (``steps``): the
    yields are those steps' defects' when it is not all of them."""
    view = get_session(store, session)
    wanted = next((s for s in view.scenarios if s.uid == scenario), None)
    if wanted is None:
        raise NotFound(f"scenario {scenario} is not in session {session}")
    if twin.line != view.line:
        raise ValidationFailed(f"session {session} studies {view.line}, not {twin.line}")
    kind = "groups" if any(m.lots or m.operators for m in models.values()) else "plain"
    steps = [s.uid for s in twin.steps if s.uid in models]
    baseline: Outcome | None = None
    if view.baseline.results:
        body = json.loads(view.baseline.results)
        if body.get("models", "plain") == kind and body.get("steps", steps) == steps:
            baseline = Outcome.from_json(view.baseline.results)
    todo = [view.baseline] if baseline is None and not wanted.baseline else []
    todo.append(wanted)
    stored = wanted
    for k, item in enumerate(todo):
        # a baseline run again for other models is kept for the comparison, not stored
        keep = not (item.baseline and item is not wanted and view.baseline.results)
        if keep:
            _save(store, item.model_copy(update={"status": RunStatus.RUNNING, "progress": 0.0}))

        def step(done: int, total: int, k: int = k) -> None:
            if progress is not None:
                progress((k + done / total) / len(todo))

        try:
            outcome = simulate_scenario(
                twin,
                models,
                ScenarioSpec.parse(item.changes),
                horizon_s=view.session.horizon_s,
                replications=view.session.replications,
                seed=view.session.seed,
                progress=step,
            )
            if item.baseline:
                outcome = replace(outcome, warnings=())
        except Exception as exc:
            # a typed error says what to fix; anything else stays in the server's log
            reason = str(exc)[:2000] if isinstance(exc, SqemsError) else "the simulation failed"
            failed = item if keep else wanted
            _save(store, failed.model_copy(update={"status": RunStatus.FAILED, "message": reason}))
            raise
        if item.baseline:
            baseline = outcome
        if not keep:
            continue
        body = json.loads(outcome.to_json(None if item.baseline else baseline))
        body["models"] = kind
        body["steps"] = steps
        stored = item.model_copy(
            update={
                "status": RunStatus.DONE,
                "progress": 1.0,
                "results": json.dumps(body),
                "message": "",
                "finished_at": datetime.now(UTC),
            }
        )
        _save(store, stored)
    return stored


def set_changes(store: GraphStore, scenario: str, spec: ScenarioSpec) -> Scenario:
    """Replace a scenario's changes (before it runs)."""
    node = store.get_many([scenario]).get(scenario)
    if not isinstance(node, Scenario):
        raise NotFound(f"scenario {scenario} does not exist")
    changed = node.model_copy(update={"changes": spec.to_json()})
    _save(store, changed)
    return changed


def annotate(
    store: GraphStore,
    scenario: Scenario,
    extra: Mapping[str, Any],
    *,
    feasible_floor: float | None = None,
) -> Scenario:
    """Add ``extra`` to a run scenario's results (and, given a throughput floor,
    whether its mean throughput met it)."""
    body = json.loads(scenario.results or "{}")
    body.update(extra)
    if feasible_floor is not None:
        body["feasible"] = body["kpis"]["throughput_per_h"]["mean"] >= feasible_floor
    changed = scenario.model_copy(update={"results": json.dumps(body)})
    _save(store, changed)
    return changed


def mark_failed(store: GraphStore, session: str, scenario: str, reason: str) -> None:
    """Record that ``scenario`` failed before or while it ran (a twin that could not be
    fitted, say), so that whoever polls the session sees why instead of waiting on a
    scenario that stays pending; one already marked failed keeps its own reason."""
    found = next((s for s in get_session(store, session).scenarios if s.uid == scenario), None)
    if found is not None and found.status is not RunStatus.FAILED:
        _save(store, found.model_copy(update={"status": RunStatus.FAILED, "message": reason}))


def _save(store: GraphStore, scenario: Scenario) -> None:
    store.upsert_nodes([Scenario.model_validate(scenario.model_dump())])


# --- optimisation -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recommendation:
    setpoints: dict[str, float]
    """Parameter uid -> recommended setpoint: only the changes whose gain is credible
    (empty when none is; then :attr:`message` says so)."""
    current: dict[str, float]
    """Every modelled parameter's setpoint today."""
    expected_yield: Interval
    """Of the modelled steps at the recommended setpoints, from the posterior."""
    expected_yield_now: Interval
    """The same at the current setpoints."""
    gain: Interval
    """The paired gain in expected yield of the recommended setpoints over today's."""
    p_gain: float
    """Posterior probability that the recommended setpoints yield more than today's."""
    ranges: dict[str, tuple[float, float]]
    """Per parameter, the setpoints searched: within its spec and within the setpoints
    the actuals on record imply for every machine (never beyond the data)."""
    message: str = ""
    min_gain: float = MIN_GAIN
    """The practical gain the recommendation had to beat."""
    p_practical: float = 0.0
    """Posterior probability that the recommended setpoints gain more than ``min_gain``."""

    @property
    def credible(self) -> bool:
        return bool(self.setpoints)

    def scenario(self) -> ScenarioSpec:
        return ScenarioSpec(
            parameters=tuple(
                ParameterChange(parameter=k, setpoint=v) for k, v in self.setpoints.items()
            )
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "setpoints": self.setpoints,
            "current": self.current,
            "expected_yield": self.expected_yield.as_dict(),
            "expected_yield_now": self.expected_yield_now.as_dict(),
            "gain": self.gain.as_dict(),
            "p_gain": self.p_gain,
            "credible": self.credible,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "message": self.message,
            "min_gain": self.min_gain,
            "p_practical": self.p_practical,
            "confirm": CONFIRM if self.setpoints else "",
        }


def expected_yield(
    twin: LineTwin,
    models: Mapping[str, QualityModel],
    scenario: ScenarioSpec,
    *,
    units: int = 400,
    draws: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """For ``draws`` posterior draws spread over the posterior, the probability that a
    unit passes every modelled step without a defect, averaged over ``units`` units'
    actuals drawn under the scenario on each machine the step is routed to (the same
    draws for every scenario, so two scenarios' values pair draw by draw)."""
    survive = np.ones(draws)
    defects = TwinDefects(twin, models, scenario, 0)
    for step in twin.steps:
        model = models.get(step.uid)
        if model is None:
            continue
        picks = np.linspace(0, model.draws - 1, draws).round().astype(int)
        per_machine = []
        for machine in scenario.routed(step):
            m_no = step.machines.index(machine)
            rng = np.random.default_rng([seed, m_no, step.sequence])
            x = defects.actuals(step, machine, rng, units)
            machines = [machine] * units
            per_machine.append([model.probability(int(d), x, machines).mean() for d in picks])
        survive *= 1.0 - np.mean(per_machine, axis=0)
    return survive


def interval_note(replications: int) -> str:
    """What a reader of intervals over ``replications`` should know ("" when they are
    :data:`STEADY_REPLICATIONS` or more)."""
    if replications >= STEADY_REPLICATIONS:
        return ""
    tail = replications * INTERVAL[0]
    return (
        f"{replications} replications: each end of a 94 % interval rests on {tail:.1f} of "
        f"them, so it moves with the luck of a few; {STEADY_REPLICATIONS} or more give "
        "steadier ends"
    )


def setpoint_range(parameter: ParameterTwin) -> tuple[float, float]:
    """The setpoints a recommendation may choose for ``parameter``: within its spec and,
    for every machine with runs, such that the machine's actuals (setpoint + its bias)
    stay within the range it ran at. Beyond the data the model only extrapolates."""
    lo = max((parameter.low[m] - parameter.bias[m] for m in parameter.low), default=-np.inf)
    hi = min((parameter.high[m] - parameter.bias[m] for m in parameter.high), default=np.inf)
    if parameter.lsl is not None:
        lo = max(lo, parameter.lsl)
    if parameter.usl is not None:
        hi = min(hi, parameter.usl)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        return parameter.setpoint, parameter.setpoint
    return float(min(lo, parameter.setpoint)), float(max(hi, parameter.setpoint))


def recommend_setpoints(
    twin: LineTwin,
    models: Mapping[str, QualityModel],
    *,
    seed: int = 0,
    grid: int = 9,
    rounds: int = 2,
    draws: int = 200,
    credibility: float = CREDIBILITY,
    min_gain: float = MIN_GAIN,
) -> Recommendation:
    """The setpoints with the highest expected yield of the modelled steps, among those
    whose gain the posterior makes credible and worth having.

    Coordinate search over a grid per parameter within :func:`setpoint_range` (inside
    the spec and the data's support on every machine), ``rounds`` passes, by posterior
    mean; then each changed parameter is kept only when reverting it would lose more
    than ``min_gain`` of yield with posterior probability >= ``credibility`` (the paired
    loss over ``draws`` posterior draws, whose :data:`INTERVAL` must also lie above
    zero), and the whole change only when its gain over today passes the same test. When
    nothing qualifies, no setpoint is recommended and :attr:`Recommendation.message`
    says :data:`NOTHING_CREDIBLY_BETTER`. A recommendation says it is to be confirmed by
    a designed experiment (:data:`CONFIRM`). Setpoints change quality, not cycle times,
    in this twin; the simulation of the recommendation (a scenario like any other)
    gives its throughput and the paired gain over today.
    """
    if draws < 20:
        raise ValidationFailed(f"a credible gain needs at least 20 posterior draws, got {draws}")
    if not 0.0 <= min_gain < 1.0:
        raise ValidationFailed(f"the practical gain must be in [0, 1), got {min_gain}")
    if not 0.5 <= credibility < 1.0:
        raise ValidationFailed(f"the credibility must be in [0.5, 1), got {credibility}")
    params = [p for s in twin.steps if s.uid in models for p in s.parameters]
    if not params:
        raise ValidationFailed(f"line {twin.line} has no modelled parameter to set")
    current = {p.uid: p.setpoint for p in params}
    ranges = {p.uid: setpoint_range(p) for p in params}

    def spec_of(points: dict[str, float]) -> ScenarioSpec:
        return ScenarioSpec(
            parameters=tuple(
                ParameterChange(parameter=k, setpoint=v)
                for k, v in points.items()
                if v != current[k]
            )
        )

    def score(points: dict[str, float]) -> float:
        return float(expected_yield(twin, models, spec_of(points), draws=40, seed=seed).mean())

    best, best_score = dict(current), score(current)
    for _ in range(rounds):
        for p in params:
            lo, hi = ranges[p.uid]
            for value in np.linspace(lo, hi, grid):
                trial = {**best, p.uid: float(value)}
                s = score(trial)
                if s > best_score + 1e-9:
                    best, best_score = trial, s

    def yields(points: dict[str, float]) -> np.ndarray:
        return expected_yield(twin, models, spec_of(points), draws=draws, seed=seed)

    def credible(gain: np.ndarray) -> bool:
        return bool(np.mean(gain > min_gain) >= credibility and Interval.of(gain).low > 0.0)

    # drop each change that is not credibly worth keeping, weakest first
    kept = dict(best)
    while True:
        ours = yields(kept)
        changed = [k for k in kept if kept[k] != current[k]]
        losses = {k: ours - yields({**kept, k: current[k]}) for k in changed}
        weak = [k for k in changed if not credible(losses[k])]
        if not weak:
            break
        drop = min(weak, key=lambda k: float(losses[k].mean()))
        kept[drop] = current[drop]
    now = yields(current)
    chosen = yields(kept)
    gain = chosen - now
    setpoints = {
        k: float(np.clip(round(v, 6), *ranges[k])) for k, v in kept.items() if v != current[k]
    }
    message = ""
    if not setpoints or not credible(gain):
        candidate = yields(best) - now
        setpoints, chosen, gain = {}, now, np.zeros_like(now)
        together = (
            ", but none of their changes is credibly worth keeping by itself (the model "
            "cannot tell which of them the gain comes from)"
            if credible(candidate)
            else ""
        )
        message = (
            f"{NOTHING_CREDIBLY_BETTER}: the best setpoints found would change the expected "
            f"yield by {candidate.mean():+.3%} (94 % interval {Interval.of(candidate).low:+.3%}"
            f" to {Interval.of(candidate).high:+.3%}, P(gain > 0) = "
            f"{np.mean(candidate > 0):.2f}, P(gain > {min_gain:.2%}) = "
            f"{np.mean(candidate > min_gain):.2f}){together}; a change must gain more than "
            f"{min_gain:.2%} with probability {credibility:.2f}"
        )
    return Recommendation(
        setpoints=setpoints,
        current=current,
        expected_yield=Interval.of(chosen),
        expected_yield_now=Interval.of(now),
        gain=Interval.of(gain),
        p_gain=float(np.mean(gain > 0.0)),
        ranges=ranges,
        message=message,
        min_gain=min_gain,
        p_practical=float(np.mean(gain > min_gain)) if setpoints else 0.0,
    )
