"""The series SPC and capability work on, read from the graph.

* :func:`parameter_series` — the actual each process run recorded for a parameter
  (optionally on one machine, in a time window), in run order: one individual value per
  run, the per-run summary the graph keeps (raw readings stay in the readings store).
* :func:`inspection_series` — per inspection of the batches a process step's runs
  made (or of a line's batches): the sample size and the defects found, in time order,
  for p, np, c and u charts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import Inspection, Parameter, ProcessRun
from sqems.graph_model.store import Direction, GraphStore, TimeWindow

OUT, IN = Direction.OUT, Direction.IN


@dataclass(frozen=True, slots=True)
class ParameterSeries:
    parameter: Parameter
    machine: str | None
    runs: list[str]
    times: np.ndarray
    """POSIX seconds each run started."""
    values: np.ndarray
    machines: list[str | None]


@dataclass(frozen=True, slots=True)
class InspectionSeries:
    scope: str
    inspections: list[str]
    times: np.ndarray
    sample_sizes: np.ndarray
    defects: np.ndarray


def _parameter(store: GraphStore, uid: str) -> Parameter:
    found = store.get_many([uid]).get(uid)
    if not isinstance(found, Parameter):
        raise NotFound(f"parameter {uid} is not in the graph ({store.description})")
    return found


def parameter_series(
    store: GraphStore,
    parameter: str,
    *,
    machine: str | None = None,
    window: TimeWindow | None = None,
) -> ParameterSeries:
    """The runs' recorded actuals of ``parameter``, oldest first."""
    spec = _parameter(store, parameter)
    if machine is not None and store.label_of(machine) != "Machine":
        raise NotFound(f"machine {machine} is not in the graph ({store.description})")
    recorded = {e.src: float(e.props["value"]) for e in store.edges([parameter], {"RECORDED": IN})}
    on = {e.src: e.dst for e in store.edges(recorded, {"ON": OUT})} if recorded else {}
    window = window or TimeWindow()
    rows = []
    for uid, run in store.get_many(recorded).items():
        if not isinstance(run, ProcessRun) or not window.overlaps(run.interval()):
            continue
        if machine is not None and on.get(uid) != machine:
            continue
        rows.append((run.started_at.timestamp(), uid))
    rows.sort()
    return ParameterSeries(
        spec,
        machine,
        [uid for _, uid in rows],
        np.array([t for t, _ in rows], dtype=float),
        np.array([recorded[uid] for _, uid in rows], dtype=float),
        [on.get(uid) for _, uid in rows],
    )


def inspection_series(
    store: GraphStore, scope: str, *, window: TimeWindow | None = None
) -> InspectionSeries:
    """Inspections of the batches of ``scope`` — a process step (the batches its runs
    made) or a line (the batches run on its machines) — oldest first."""
    label = store.label_of(scope)
    if label == "ProcessStep":
        runs = [e.src for e in store.edges([scope], {"FOR_STEP": IN})]
    elif label == "Line":
        machines = [e.src for e in store.edges([scope], {"PART_OF": IN})]
        runs = [e.src for e in store.edges(machines, {"ON": IN})] if machines else []
    elif label is None:
        raise NotFound(f"{scope} is not in the graph ({store.description})")
    else:
        raise ValidationFailed(
            f"inspection charts are drawn for a ProcessStep or a Line; {scope} is a {label}"
        )
    batches = {e.src for e in store.edges(runs, {"RAN": IN})} if runs else set()
    found = [e.src for e in store.edges(batches, {"INSPECTED": IN})] if batches else []
    window = window or TimeWindow()
    rows = sorted(
        (node.inspected_at.timestamp(), uid, node.sample_size, node.defects_found)
        for uid, node in store.get_many(found).items()
        if isinstance(node, Inspection) and window.overlaps(node.interval())
    )
    return InspectionSeries(
        scope,
        [r[1] for r in rows],
        np.array([r[0] for r in rows], dtype=float),
        np.array([r[2] for r in rows], dtype=np.int64),
        np.array([r[3] for r in rows], dtype=np.int64),
    )
