"""Which process run a machine was doing at a given time, from the graph, cached.

Readings carry a machine and a time, not a run; alarms and per-run summaries need the
run. :class:`RunCalendar` loads each machine's runs once (start, end, uid), answers by
binary search, and reloads a machine at most every ``reload_s`` seconds when asked about
a time none of its runs covers (a run the graph did not have yet).
"""

from __future__ import annotations

import bisect
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
        t = when.timestamp()
        found = self._lookup(machine, t)
        if found is not None:
            return found
        loaded = self._runs.get(machine)
        if loaded is None or time.monotonic() - loaded[2] > self.reload_s:
            if not self._load(machine):
                return None
            return self._lookup(machine, t)
        return None

    def _lookup(self, machine: str, t: float) -> RunSpan | None:
        loaded = self._runs.get(machine)
        if loaded is None:
            return None
        starts, spans, _ = loaded
        at = bisect.bisect_right(starts, t) - 1
        if at >= 0 and spans[at].end >= t:
            return spans[at]
        return None

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
