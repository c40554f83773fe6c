"""Runs what-if scenarios in the background and tells listeners how far they are.

One :class:`WhatIfRunner` per process: it builds each line's twin the first time the
line is asked for, and fits (or loads) each quality model the first time a scenario
needs it, and keeps them. A scenario that switches lots or operators gets, at the steps
where it does so and only there, models with lot and operator effects (fitted once and
kept beside the plain ones, which every other step and scenario uses); the plain model
of such a step is not fitted until a scenario needs it. It runs submitted
scenarios one at a time on a worker thread (simulations are CPU-bound; two at once on
a small server would only make both slower). Listeners receive a :class:`Progress`
for every step: queued, running with the fraction done, done or failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqems.errors import NotFound, SqemsError, ValidationFailed
from sqems.graph_model.nodes import RunStatus, Scenario
from sqems.graph_model.store import GraphStore
from sqems.simulation.scenarios import ScenarioSpec
from sqems.simulation.whatif import (
    add_scenario,
    annotate,
    get_session,
    mark_failed,
    recommend_setpoints,
    run_scenario,
    set_changes,
)
from sqems.twin.fitting import Sampler, fit_line
from sqems.twin.line import LineTwin, build_twin
from sqems.twin.quality import QualityModel

log = logging.getLogger(__name__)

TWIN_DIR = "twin"
"""Under the data directory: the fitted quality models, a folder per line."""


@dataclass(frozen=True, slots=True)
class Progress:
    session: str
    scenario: str
    status: RunStatus
    fraction: float
    message: str = ""


class WhatIfRunner:
    def __init__(
        self,
        store: GraphStore,
        folder: Path,
        sampler: Sampler | None = None,
        *,
        sessions: GraphStore | None = None,
    ) -> None:
        """Twins are built from ``store``; what-if sessions are kept in ``sessions``
        (default: ``store``) - apart when ``store`` is open read-only because another
        process writes it (sessions then live in memory, unsaved). The fitted models
        are cached in ``folder``, outside the store: each file is named by the data and
        sampler it was fitted with and written whole, so readers and the store's writer
        may share the folder."""
        self.store = store
        self.sessions = store if sessions is None else sessions
        self.folder = folder
        self.sampler = sampler or Sampler()
        self.listeners: set[Callable[[Progress], None]] = set()
        self._lines: dict[str, LineTwin] = {}
        self._models: dict[tuple[str, str, bool], QualityModel] = {}
        """By line, step and whether the model has lot and operator effects."""
        self._groups: dict[tuple[str, str], tuple[str, ...]] = {}
        """By line and scenario (its JSON): the steps it needs lot models of."""
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqems-whatif")

    def line(self, line: str) -> LineTwin:
        """The line's twin, built from the graph once (no model fitted); a line built
        before is answered at once, even while a fit holds the runner."""
        twin = self._lines.get(line)
        if twin is not None:
            return twin
        with self._lock:
            return self._line(line)

    def grouped(self, line: str, spec: ScenarioSpec) -> tuple[str, ...]:
        """The steps of ``line`` whose models ``spec`` needs with lot and operator
        effects (:meth:`ScenarioSpec.grouped_steps`; none unless it switches lots or
        operators), worked out once per scenario: it reads every consuming step's data."""
        if not (spec.lots or spec.operators):
            return ()
        key = (line, spec.to_json())
        found = self._groups.get(key)
        if found is None:
            found = self._groups[key] = spec.grouped_steps(self.line(line))
        return found

    def _line(self, line: str) -> LineTwin:
        twin = self._lines.get(line)
        if twin is None:
            twin = self._lines[line] = build_twin(self.store, line)
        return twin

    def twin(
        self, line: str, *, groups: Collection[str] = (), steps: Collection[str] | None = None
    ) -> tuple[LineTwin, dict[str, QualityModel]]:
        """The line's twin and a sound quality model of each step with parameters,
        fitted (or read from disk) the first time it is asked for and kept: the steps
        in ``groups`` get models with lot and operator effects
        (:meth:`ScenarioSpec.grouped_steps`), the others plain ones. With ``steps``,
        only those steps' models. Only the models asked for are fitted: a lot switch
        never waits for plain models it would not use."""
        with self._lock:
            twin = self._line(line)
            modelled = [
                s.uid for s in twin.steps if s.modelled and (steps is None or s.uid in steps)
            ]
            grouped = {s for s in groups if s in modelled}
            for flag in (False, True):
                missing = [
                    s
                    for s in modelled
                    if (s in grouped) == flag and (line, s, flag) not in self._models
                ]
                if missing:
                    fitted = fit_line(
                        twin, self.folder / line, self.sampler, steps=missing, groups=flag
                    )
                    self._models.update({(line, s, flag): m for s, m in fitted.items()})
            return twin, {s: self._models[line, s, s in grouped] for s in modelled}

    def fitted(self, line: str) -> list[QualityModel]:
        """The models of ``line`` fitted in this runner so far (never fits one): each
        step's plain model, or its model with lots and operators if it has only that."""
        with self._lock:
            found: dict[str, QualityModel] = {}
            for (owner, step, grouped), model in sorted(self._models.items()):
                if owner == line and (step not in found or not grouped):
                    found[step] = model
            return list(found.values())

    def ready(self, line: str) -> bool:
        """Whether the line's twin is built and has a fitted model already (never waits
        for a fit in progress: a request asking must not hang for a minute)."""
        return line in self._lines and any(k[0] == line for k in list(self._models))

    def forget(self, line: str) -> None:
        """Build the line's twin again on next use (its history changed)."""
        with self._lock:
            self._lines.pop(line, None)
            for key in [k for k in self._models if k[0] == line]:
                self._models.pop(key)
            for known in [k for k in self._groups if k[0] == line]:
                self._groups.pop(known)

    def submit(
        self, session: str, scenario: str, *, steps: Collection[str] | None = None
    ) -> Future[Scenario]:
        """Queue ``scenario`` of ``session``; the future holds the stored scenario.
        With ``steps``, only those steps' models add defects, to the baseline and the
        scenario alike (:meth:`ScenarioSpec.acting_steps`: what a comparison of a
        scenario acting there needs); the results name them."""
        view = get_session(self.sessions, session)
        if not any(s.uid == scenario for s in view.scenarios):
            raise NotFound(f"scenario {scenario} is not in session {session}")
        self._tell(Progress(session, scenario, RunStatus.PENDING, 0.0))
        return self._pool.submit(self._run, view.line, session, scenario, None, steps)

    def recommend(self, session: str, throughput_floor: float) -> tuple[Scenario, Future[Scenario]]:
        """Add a scenario with the setpoints of highest expected yield to ``session``
        and queue it; its results say whether its throughput met the floor."""
        if not throughput_floor >= 0:
            raise ValidationFailed(f"the throughput floor must be >= 0, got {throughput_floor}")
        view = get_session(self.sessions, session)
        scenario = add_scenario(self.sessions, session, "recommended setpoints", ScenarioSpec())
        self._tell(Progress(session, scenario.uid, RunStatus.PENDING, 0.0))
        future = self._pool.submit(self._run, view.line, session, scenario.uid, throughput_floor)
        return scenario, future

    def _run(
        self,
        line: str,
        session: str,
        scenario: str,
        floor: float | None = None,
        steps: Collection[str] | None = None,
    ) -> Scenario:
        def step(fraction: float) -> None:
            self._tell(Progress(session, scenario, RunStatus.RUNNING, fraction))

        try:
            step(0.0)
            stored = next(
                s for s in get_session(self.sessions, session).scenarios if s.uid == scenario
            )
            spec = ScenarioSpec.parse(stored.changes)
            twin, models = self.twin(line, groups=self.grouped(line, spec), steps=steps)
            if floor is not None:
                recommended = recommend_setpoints(
                    twin, models, seed=get_session(self.sessions, session).session.seed
                )
                set_changes(self.sessions, scenario, recommended.scenario())
            done = run_scenario(self.sessions, twin, models, session, scenario, progress=step)
            if floor is not None:
                done = annotate(
                    self.sessions,
                    done,
                    {"recommendation": recommended.as_dict(), "throughput_floor": floor},
                    feasible_floor=floor,
                )
        except Exception as exc:
            message = str(exc) if isinstance(exc, SqemsError) else "the simulation failed"
            if not isinstance(exc, SqemsError):
                log.exception("what-if scenario failed", extra={"scenario": scenario})
            mark_failed(self.sessions, session, scenario, message[:2000])
            self._tell(Progress(session, scenario, RunStatus.FAILED, 0.0, message))
            raise
        self._tell(Progress(session, scenario, RunStatus.DONE, 1.0))
        return done

    def _tell(self, progress: Progress) -> None:
        for listener in list(self.listeners):
            try:
                listener(progress)
            except Exception:  # a listener failing must not stop the run
                log.exception("what-if progress listener failed")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
