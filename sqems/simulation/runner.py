"""Runs what-if scenarios in the background and tells listeners how far they are.

One :class:`WhatIfRunner` per process: it builds each line's twin and fits (or loads)
its quality models the first time a line is asked for and keeps them. A scenario that
switches lots or operators gets, at the steps where it does so and only there, models
with lot and operator effects (slower to fit; fitted once and kept beside the plain
ones, which every other step goes on using). It runs submitted
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
    def __init__(self, store: GraphStore, folder: Path, sampler: Sampler | None = None) -> None:
        self.store = store
        self.folder = folder
        self.sampler = sampler or Sampler()
        self.listeners: set[Callable[[Progress], None]] = set()
        self._twins: dict[str, tuple[LineTwin, dict[str, QualityModel]]] = {}
        self._grouped: dict[tuple[str, str], QualityModel] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqems-whatif")

    def twin(
        self, line: str, *, groups: Collection[str] = ()
    ) -> tuple[LineTwin, dict[str, QualityModel]]:
        """The line's twin and its sound quality models (built and fitted once); the
        steps in ``groups`` get models with lot and operator effects
        (:meth:`ScenarioSpec.grouped_steps`)."""
        with self._lock:
            found = self._twins.get(line)
            if found is None:
                twin = build_twin(self.store, line)
                models = fit_line(twin, self.folder / line, self.sampler)
                found = self._twins[line] = (twin, models)
            twin, models = found
            wanted = [s for s in groups if s in models]
            missing = [s for s in wanted if (line, s) not in self._grouped]
            if missing:
                fitted = fit_line(
                    twin, self.folder / line, self.sampler, steps=missing, groups=True
                )
                self._grouped.update({(line, s): m for s, m in fitted.items()})
            if not wanted:
                return found
            return twin, {**models, **{s: self._grouped[line, s] for s in wanted}}

    def ready(self, line: str) -> bool:
        """Whether the line's twin is built and fitted already (never waits for a fit
        in progress: a request asking must not hang for a minute)."""
        return line in self._twins

    def forget(self, line: str) -> None:
        """Build the line's twin again on next use (its history changed)."""
        with self._lock:
            self._twins.pop(line, None)
            for key in [k for k in self._grouped if k[0] == line]:
                self._grouped.pop(key)

    def submit(self, session: str, scenario: str) -> Future[Scenario]:
        """Queue ``scenario`` of ``session``; the future holds the stored scenario."""
        view = get_session(self.store, session)
        if not any(s.uid == scenario for s in view.scenarios):
            raise NotFound(f"scenario {scenario} is not in session {session}")
        self._tell(Progress(session, scenario, RunStatus.PENDING, 0.0))
        return self._pool.submit(self._run, view.line, session, scenario)

    def recommend(self, session: str, throughput_floor: float) -> tuple[Scenario, Future[Scenario]]:
        """Add a scenario with the setpoints of highest expected yield to ``session``
        and queue it; its results say whether its throughput met the floor."""
        if not throughput_floor >= 0:
            raise ValidationFailed(f"the throughput floor must be >= 0, got {throughput_floor}")
        view = get_session(self.store, session)
        scenario = add_scenario(self.store, session, "recommended setpoints", ScenarioSpec())
        self._tell(Progress(session, scenario.uid, RunStatus.PENDING, 0.0))
        future = self._pool.submit(self._run, view.line, session, scenario.uid, throughput_floor)
        return scenario, future

    def _run(self, line: str, session: str, scenario: str, floor: float | None = None) -> Scenario:
        def step(fraction: float) -> None:
            self._tell(Progress(session, scenario, RunStatus.RUNNING, fraction))

        try:
            step(0.0)
            stored = next(
                s for s in get_session(self.store, session).scenarios if s.uid == scenario
            )
            spec = ScenarioSpec.parse(stored.changes)
            twin, models = self.twin(line)
            if spec.lots or spec.operators:
                twin, models = self.twin(line, groups=spec.grouped_steps(twin))
            if floor is not None:
                recommended = recommend_setpoints(
                    twin, models, seed=get_session(self.store, session).session.seed
                )
                set_changes(self.store, scenario, recommended.scenario())
            done = run_scenario(self.store, twin, models, session, scenario, progress=step)
            if floor is not None:
                done = annotate(
                    self.store,
                    done,
                    {"recommendation": recommended.as_dict(), "throughput_floor": floor},
                    feasible_floor=floor,
                )
        except Exception as exc:
            message = str(exc) if isinstance(exc, SqemsError) else "the simulation failed"
            if not isinstance(exc, SqemsError):
                log.exception("what-if scenario failed", extra={"scenario": scenario})
            mark_failed(self.store, session, scenario, message[:2000])
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
