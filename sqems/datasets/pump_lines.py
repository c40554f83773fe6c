"""What the pump plant's generator hands its ground truth: lines, their quality, the
calibration records, and times written in UTC and in site time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from sqems.datasets import pump_layout as pl
from sqems.datasets.layout import LineSpec
from sqems.datasets.tables import iso


def site_time(seconds: int) -> str:
    """POSIX seconds as site time with offset and zone abbreviation
    (``2026-03-02T23:59:59-06:00 CST``)."""
    moment = datetime.fromtimestamp(int(seconds), tz=pl.ZONE)
    return f"{moment.isoformat()} {moment.tzname()}"


def window(start: int, end: int) -> dict[str, str]:
    """A window as the truth writes it: both ends in UTC and in site time."""
    return {
        "start": iso(start)[0],
        "end": iso(end)[0],
        "start_local": site_time(start),
        "end_local": site_time(end),
    }


@dataclass(slots=True)
class PumpLine:
    """One line's production, as arrays indexed by batch or by unit."""

    spec: LineSpec
    prefix: str
    batch_uids: list[str]
    sizes: np.ndarray
    starts: np.ndarray
    duration: np.ndarray
    run_starts: np.ndarray  # (batch, step)
    machines: np.ndarray  # (batch, step) index into step.machines
    shifts: np.ndarray  # (batch, step) index into SHIFTS, by site time
    unit_batch: np.ndarray
    unit_time: np.ndarray
    operators: list[list[str]] = field(default_factory=list)  # step → per batch
    instructions: list[list[str]] = field(default_factory=list)  # step → per batch
    actuals: dict[str, np.ndarray] = field(default_factory=dict)
    serials: list[str] = field(default_factory=list)
    lots: dict[str, list[str]] = field(default_factory=dict)  # material → lot per batch

    def runs(self, step: int) -> list[str]:
        seq = self.spec.steps[step].sequence * 10
        return [f"RUN-{b}-{seq}" for b in self.batch_uids]


@dataclass(slots=True)
class LineQuality:
    """What each unit of a line carries, what its test caught and what escaped."""

    carried: dict[str, np.ndarray]
    caught: dict[str, np.ndarray]
    detected: np.ndarray
    defective: np.ndarray

    @property
    def escaped(self) -> np.ndarray:
        escaped: np.ndarray = self.defective & ~self.detected
        return escaped


@dataclass(frozen=True, slots=True)
class CalRecord:
    """One calibration the generator wrote, times as POSIX seconds."""

    uid: str
    machine: str
    performed_at: int
    due_at: int
    verdict: str
    as_found: float
    as_left: float
    limitation: str = ""


def step_index(line: PumpLine, step_uid: str) -> int:
    """The index of step ``step_uid`` in ``line``'s routing."""
    return next(i for i, st in enumerate(line.spec.steps) if st.uid == step_uid)
