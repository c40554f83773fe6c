"""What-if sessions: a baseline and scenarios of one line, simulated alike, compared.

A session (``WhatIfSession`` in the graph, ``STUDIES`` its line) fixes the simulated
horizon, the number of replications and the seed. Its scenarios (``Scenario``,
``IN_SESSION``) each hold their changes and, once run, their results as JSON.

Every scenario of a session is simulated with the same replications: replication ``r``
uses the same random streams (common random numbers) and the same posterior draw of
each step's quality model in every scenario. A scenario's difference from the baseline
is therefore computed replication by replication, and its interval is the interval of
those paired differences: much narrower than the difference of two independent
intervals, so a real effect is not drowned by simulation noise.

:func:`recommend_setpoints` searches the setpoints of the line's parameters for the
highest expected yield under the posterior (a grid per parameter within its spec,
coordinate-wise, evaluated from the models); the recommendation is then simulated as a
scenario of the session, so it gets its throughput, the paired gain over today and
their intervals like any other, and is marked feasible when its throughput stays
above the floor asked for.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from sqems.analysis.kpis import CostModel
from sqems.errors import NotFound, SqemsError, ValidationFailed
from sqems.graph_model.nodes import RunStatus, Scenario, WhatIfSession
from sqems.graph_model.store import Direction, Edge, GraphStore
from sqems.simulation.line import Result, replicate
from sqems.simulation.scenarios import ParameterChange, ScenarioSpec, TwinDefects, line_for
from sqems.twin.line import LineTwin
from sqems.twin.quality import QualityModel

INTERVAL = (0.03, 0.97)
"""94 % equal-tailed credible intervals, the same width as the models' HDIs."""
KPIS = ("throughput_per_h", "units_per_day", "yield", "fpy", "ppm", "wip", "scrap_cost")
BETTER_HIGH = {"throughput_per_h", "units_per_day", "yield", "fpy"}


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


@dataclass(frozen=True, slots=True)
class Outcome:
    """A scenario's KPIs per replication."""

    per_replication: dict[str, np.ndarray]

    def kpis(self) -> dict[str, Interval]:
        return {k: Interval.of(v) for k, v in self.per_replication.items()}

    def difference(self, baseline: Outcome) -> dict[str, Interval]:
        return {
            k: Interval.of(v - baseline.per_replication[k])
            for k, v in self.per_replication.items()
            if k in baseline.per_replication
        }

    def to_json(self, baseline: Outcome | None = None) -> str:
        body: dict[str, Any] = {
            "kpis": {k: i.as_dict() for k, i in self.kpis().items()},
            "per_replication": {k: v.tolist() for k, v in self.per_replication.items()},
        }
        if baseline is not None:
            body["difference"] = {k: i.as_dict() for k, i in self.difference(baseline).items()}
        return json.dumps(body)

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        body = json.loads(text)
        return cls({k: np.asarray(v, dtype=np.float64) for k, v in body["per_replication"].items()})


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
    return Outcome(_per_replication(results, hours))


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
    and store the results; returns the scenario as stored."""
    view = get_session(store, session)
    wanted = next((s for s in view.scenarios if s.uid == scenario), None)
    if wanted is None:
        raise NotFound(f"scenario {scenario} is not in session {session}")
    if twin.line != view.line:
        raise ValidationFailed(f"session {session} studies {view.line}, not {twin.line}")
    todo = [view.baseline] if view.baseline.results is None and not wanted.baseline else []
    todo.append(wanted)
    baseline: Outcome | None = (
        Outcome.from_json(view.baseline.results) if view.baseline.results else None
    )
    stored = wanted
    for k, item in enumerate(todo):
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
        except Exception as exc:
            # a typed error says what to fix; anything else stays in the server's log
            reason = str(exc)[:2000] if isinstance(exc, SqemsError) else "the simulation failed"
            _save(store, item.model_copy(update={"status": RunStatus.FAILED, "message": reason}))
            raise
        stored = item.model_copy(
            update={
                "status": RunStatus.DONE,
                "progress": 1.0,
                "results": outcome.to_json(None if item.baseline else baseline),
                "message": "",
                "finished_at": datetime.now(UTC),
            }
        )
        _save(store, stored)
        if item.baseline:
            baseline = outcome
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


def _save(store: GraphStore, scenario: Scenario) -> None:
    store.upsert_nodes([Scenario.model_validate(scenario.model_dump())])


# --- optimisation -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recommendation:
    setpoints: dict[str, float]
    """Parameter uid -> recommended setpoint."""
    current: dict[str, float]
    expected_yield: Interval
    """Of the modelled steps at the recommended setpoints, from the posterior."""
    expected_yield_now: Interval
    """The same at the current setpoints."""

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
    actuals drawn under the scenario (the same draws for every scenario)."""
    survive = np.ones(draws)
    for step in twin.steps:
        model = models.get(step.uid)
        if model is None:
            continue
        picks = np.linspace(0, model.draws - 1, draws).round().astype(int)
        per_machine = []
        for m_no, machine in enumerate(step.machines):
            rng = np.random.default_rng([seed, m_no, step.sequence])
            x = TwinDefects(twin, models, scenario, 0).actuals(step, machine, rng, units)
            machines = [machine] * units
            per_machine.append([model.probability(int(d), x, machines).mean() for d in picks])
        survive *= 1.0 - np.mean(per_machine, axis=0)
    return survive


def recommend_setpoints(
    twin: LineTwin,
    models: Mapping[str, QualityModel],
    *,
    seed: int = 0,
    grid: int = 9,
    rounds: int = 2,
) -> Recommendation:
    """The setpoints, within each parameter's spec, with the highest expected yield of
    the modelled steps: coordinate search over a grid per parameter, ``rounds`` passes.
    Setpoints change quality, not cycle times, in this twin; the simulation of the
    recommendation (a scenario like any other) gives its throughput and the paired
    gain over today."""
    params = [p for s in twin.steps if s.uid in models for p in s.parameters]
    if not params:
        raise ValidationFailed(f"line {twin.line} has no modelled parameter to set")
    current = {p.uid: p.setpoint for p in params}

    def spec_of(points: dict[str, float]) -> ScenarioSpec:
        return ScenarioSpec(
            parameters=tuple(ParameterChange(parameter=k, setpoint=v) for k, v in points.items())
        )

    def score(points: dict[str, float]) -> float:
        return float(expected_yield(twin, models, spec_of(points), draws=40, seed=seed).mean())

    best, best_score = dict(current), score(current)
    for _ in range(rounds):
        for p in params:
            lo = p.lsl if p.lsl is not None else p.setpoint * 0.9
            hi = p.usl if p.usl is not None else p.setpoint * 1.1
            for value in np.linspace(lo, hi, grid):
                trial = {**best, p.uid: float(value)}
                s = score(trial)
                if s > best_score + 1e-9:
                    best, best_score = trial, s
    return Recommendation(
        setpoints={k: round(v, 6) for k, v in best.items()},
        current=current,
        expected_yield=Interval.of(expected_yield(twin, models, spec_of(best), seed=seed)),
        expected_yield_now=Interval.of(expected_yield(twin, models, ScenarioSpec(), seed=seed)),
    )
