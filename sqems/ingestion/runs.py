"""Which process run a machine was doing at a given time, from the graph, cached.

Readings carry a machine and a time, not a run; alarms and per-run summaries need the
run. :class:`RunCalendar` loads each machine's runs once (start, end, uid), answers by
binary search, and reloads a machine at most every ``reload_s`` seconds when asked about
a time none of its runs covers (a run the graph did not have yet).
"""

from __future__ import annotations

import bisect
import math
import time
from datetime import datetime
from typing import NamedTuple

from sqems.errors import GraphUnavailable
from sqems.graph_model.nodes import ProcessRun
from sqems.graph_model.store import Direction, GraphStore


class RunSpan(NamedTuple):
    uid: str
    start: float
    end: float


class RunCalendar:
    def __init__(self, graph: GraphStore, *, reload_s: float = 30.0) -> None:
        self.graph = graph
        self.reload_s = reload_s
        self._runs: dict[str, tuple[list[float], list[RunSpan], float]] = {}

    def run_at(self, machine: str, when: datetime) -> RunSpan | None:
        """The run on ``machine`` covering ``when``, or None (also while the graph is
        unreachable: the caller goes on without the run)."""
        return self.span_at(machine, when.timestamp())[0]

    def span_at(self, machine: str, t: float) -> tuple[RunSpan | None, float]:
        """The run on ``machine`` covering POSIX time ``t`` (or None), and the time up
        to which that answer holds: the run's end, or the start of the next known run
        (infinity when there is none) — so a caller walking readings in time order asks
        once per run or gap, not once per reading."""
        found = self._lookup(machine, t)
        if found[0] is not None:
            return found
        loaded = self._runs.get(machine)
        if loaded is None or time.monotonic() - loaded[2] > self.reload_s:
            if not self._load(machine):
                return None, math.inf
            return self._lookup(machine, t)
        return found

    def _lookup(self, machine: str, t: float) -> tuple[RunSpan | None, float]:
        loaded = self._runs.get(machine)
        if loaded is None:
            return None, math.inf
        starts, spans, _ = loaded
        at = bisect.bisect_right(starts, t) - 1
        if at >= 0 and spans[at].end >= t:
            return spans[at], spans[at].end
        following = starts[at + 1] if at + 1 < len(starts) else math.inf
        return None, following

    def _load(self, machine: str) -> bool:
        try:
            runs = [e.src for e in self.graph.edges([machine], {"ON": Direction.IN})]
            nodes = self.graph.get_many(runs)
        except GraphUnavailable:
            return False
        spans = sorted(
            RunSpan(uid, span[0], span[1])
            for uid, node in nodes.items()
            if isinstance(node, ProcessRun) and (span := node.interval()) is not None
        )
        spans.sort(key=lambda s: s.start)
        self._runs[machine] = ([s.start for s in spans], spans, time.monotonic())
        return True
