"""Production schedules: a line's units cut into batches that run back to back, each step
of a batch a fixed offset after the one before, as every plant shape schedules them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sqems.datasets import layout
from sqems.datasets.layout import LineSpec


@dataclass(frozen=True, slots=True)
class Schedule:
    """A line's batches (sizes, starts, durations), each step's run starts (batch,
    step), and per unit its batch and when it was made."""

    sizes: np.ndarray
    starts: np.ndarray
    duration: np.ndarray
    run_starts: np.ndarray
    unit_batch: np.ndarray
    unit_time: np.ndarray


def schedule(
    spec: LineSpec,
    n_units: int,
    begin: int,
    cycle_s: int,
    ready: np.ndarray | None = None,
    wait: int = 0,
) -> Schedule:
    """``n_units`` in batches of the line's size (the last one smaller), one unit every
    ``cycle_s`` seconds, the first batch at ``begin`` and each after the one before and a
    changeover; where ``ready`` (per unit, when its parts are ready) is given, a batch
    also waits until its last unit's parts are ready and ``wait`` seconds more. A unit is
    made when its batch's last step has worked through it."""
    n_batches = math.ceil(n_units / spec.batch_size)
    sizes = np.full(n_batches, spec.batch_size, dtype=np.int64)
    sizes[-1] = n_units - spec.batch_size * (n_batches - 1)
    duration = sizes * cycle_s
    starts = np.empty(n_batches, dtype=np.int64)
    last_needed = np.cumsum(sizes) - 1
    t = begin
    for j in range(n_batches):
        if ready is not None:
            t = max(t, int(ready[last_needed[j]]) + wait)
        starts[j] = t
        t += int(duration[j]) + layout.CHANGEOVER_S
    n_steps = len(spec.steps)
    run_starts = starts[:, None] + layout.STEP_OFFSET_S * np.arange(n_steps)[None, :]
    unit_batch = np.repeat(np.arange(n_batches), sizes)
    within = np.arange(n_units) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    unit_time = run_starts[unit_batch, -1] + (within + 1) * cycle_s
    return Schedule(sizes, starts, duration, run_starts, unit_batch, unit_time)
