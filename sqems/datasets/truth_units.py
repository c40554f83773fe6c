"""The ground truth's table of defective units for a plant built level by level (cells
into modules into packs; boards and motor modules into pumps): one row per unit that
truly carries a defect, whether its own or one in a part it was built from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from sqems.datasets.emit import Production
from sqems.datasets.tables import Table


class Carried(Protocol):
    """What a level's units carry and what its test caught."""

    carried: dict[str, np.ndarray]  # defect type → unit carries it (own or in a part)
    detected: np.ndarray
    defective: np.ndarray


def defective_units(
    lines: Sequence[Production],
    qualities: Sequence[Carried],
    level_defects: Mapping[str, Sequence[str]],
    shipped_units: np.ndarray,
) -> Table:
    """A row per defective unit of every level (``lines`` from the lowest to the finished
    one, with their ``qualities``): its serial, the defect types it carries (its own
    level's first, ``level_defects`` by line uid), whether its test caught it and whether
    it was shipped (only finished units, the last line's, are: ``shipped_units``)."""
    rows: dict[str, list[str]] = {"uid": [], "defect_types": [], "detected": [], "shipped": []}
    finished = lines[-1]
    shipped_mask = np.zeros(len(finished.unit_batch), dtype=bool)
    shipped_mask[shipped_units] = True
    for line, q in zip(lines, qualities, strict=True):
        order = [*level_defects[line.spec.uid]]
        order += [t for t in q.carried if t not in order]
        is_finished = line is finished
        for i in np.flatnonzero(q.defective):
            rows["uid"].append(line.serials[i])
            rows["defect_types"].append(";".join(t for t in order if q.carried[t][i]))
            rows["detected"].append(str(bool(q.detected[i])).lower())
            rows["shipped"].append(str(bool(is_finished and shipped_mask[i])).lower())
    return Table(dict(rows))
