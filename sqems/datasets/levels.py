"""Assembly levels: which parts of a lower level go into each unit of the level above,
and which defects each unit carries — its own and those of parts that escaped their own
test — with what its test catches. Shared by the plants built level by level (battery:
cells into modules into packs; pump: boards and motor modules into pumps)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Tested(Protocol):
    """What a lower level hands up: the defects its units carry and which escaped."""

    carried: dict[str, np.ndarray]

    @property
    def escaped(self) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Assessment:
    """Per defect type, the units that carry it and those the level's test caught; per
    unit, caught for any type (scrapped) and carrying any (defective)."""

    carried: dict[str, np.ndarray]
    caught: dict[str, np.ndarray]
    detected: np.ndarray
    defective: np.ndarray


def assess(
    rng: np.random.Generator,
    n: int,
    fired: Mapping[str, np.ndarray],
    below: Sequence[tuple[np.ndarray, Tested]],
    detects: Mapping[str, float],
    hidden: Mapping[str, np.ndarray],
) -> Assessment:
    """The ``n`` units of a level: the defects that ``fired`` at it, those inherited from
    the parts (indices ``(n, per_unit)`` into the lower level, one entry of ``below`` per
    lower level) that escaped their test, what the level's test catches of each type
    (with the type's probability in ``detects``, one draw per unit and type in order),
    and ``hidden`` defects that this test cannot catch."""
    carried = {t: mask.copy() for t, mask in fired.items()}
    for parts, lower in below:
        escaped = lower.escaped
        for t, mask in lower.carried.items():
            inherited = (mask & escaped)[parts].any(axis=1)
            carried[t] = carried.get(t, np.zeros(n, dtype=bool)) | inherited
    caught = {
        t: mask & (rng.random(n) < np.full(n, detects.get(t, 0.0))) for t, mask in carried.items()
    }
    for t, mask in hidden.items():
        carried[t] = carried[t] | mask
    detected = np.zeros(n, dtype=bool)
    for mask in caught.values():
        detected |= mask
    defective = np.zeros(n, dtype=bool)
    for mask in carried.values():
        defective |= mask
    return Assessment(carried, caught, detected, defective)


def pick_parts(
    rng: np.random.Generator,
    detected: np.ndarray,
    buffer: int,
    shape: tuple[int, int],
    what: str,
    spare: float,
) -> np.ndarray:
    """``shape`` (units, per unit) indices of the lower level's parts each unit is built
    from: parts that passed their own test (not ``detected``), taken from a buffer that
    holds about ``buffer`` parts, so parts of one batch spread over several assemblies
    and neighbouring batches mix, as in a plant's rack or tray store. ``what`` and
    ``spare`` (the lower level's overproduction) word the error when too few passed."""
    n, per_unit = shape
    passed = np.flatnonzero(~detected)
    if len(passed) < n * per_unit:
        raise RuntimeError(
            f"{len(passed)} {what} passed test, {n * per_unit} are needed: scrap exceeds "
            f"the spare of {spare:.0%}"
        )
    order = np.argsort(np.arange(len(passed)) + rng.uniform(0, buffer, len(passed)))
    return passed[order[: n * per_unit]].reshape(n, per_unit)
