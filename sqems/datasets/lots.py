"""Material lots: the lots of one material a line's batches consume, as every plant shape
writes them (the shape decides how many batches each lot feeds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sqems.datasets.layout import DAY
from sqems.datasets.tables import fmt, iso

if TYPE_CHECKING:
    from sqems.datasets.plant import Plant


@dataclass(frozen=True, slots=True)
class Lots:
    """The lots written for one material: their uids, the lot each batch consumed (index
    into ``uids``), and each lot's supplier (index into the material's suppliers)."""

    uids: list[str]
    lot_of_batch: np.ndarray
    supplier: np.ndarray

    def at(self, position: float) -> int:
        """The lot that fed the batch ``position`` (0 the first, 1 the last) of the way
        along the line's batches: where a plant plants its bad lot."""
        n = len(self.lot_of_batch)
        return int(self.lot_of_batch[min(n - 1, round(position * (n - 1)))])

    def batches_of(self, lot: int) -> list[int]:
        """The batches lot ``lot`` fed, in order."""
        return [int(b) for b in np.flatnonzero(self.lot_of_batch == lot)]


def emit_lots(
    plant: Plant,
    rng: np.random.Generator,
    batches: tuple[list[str], np.ndarray, np.ndarray],
    material: tuple[str, str, float, Sequence[str]],
    spans: list[int],
    digits: tuple[int, int],
) -> Lots:
    """Lots of ``material`` (its uid, unit, use per unit and suppliers), each feeding
    ``spans`` consecutive ``batches`` (their uids, starts and sizes); a lot is received 2
    to 10 days before its first batch starts, holds what its batches need and 5 % more,
    and comes from a supplier drawn at random. ``digits``: of a lot's number, and of the
    quantities' decimals."""
    mat, unit, per_unit, suppliers = material
    batch_uids, starts, sizes = batches
    uid_digits, decimals = digits
    lot_of_batch = np.repeat(np.arange(len(spans)), spans)
    first_batch = np.cumsum(spans) - spans
    received = starts[first_batch] - rng.integers(2 * DAY, 10 * DAY, len(spans))
    short = mat.removeprefix("MAT-")
    uids = [f"LOT-{short}-{k + 1:0{uid_digits}d}" for k in range(len(spans))]
    need = np.bincount(lot_of_batch, weights=sizes * per_unit)
    scale = 10**decimals
    plant.add_nodes(
        "MaterialLot",
        uid=uids,
        received_at=iso(received),
        quantity=fmt(np.ceil(need * 1.05 * scale) / scale, decimals),
        unit=[unit] * len(spans),
    )
    plant.add_edges("LOT_OF", src=uids, dst=[mat] * len(spans))
    supplier = rng.integers(0, len(suppliers), len(spans))
    plant.add_edges("SUPPLIED", src=[suppliers[s] for s in supplier], dst=uids)
    plant.add_edges(
        "CONSUMED_IN",
        src=[uids[k] for k in lot_of_batch],
        dst=batch_uids,
        quantity=fmt(sizes * per_unit, decimals),
    )
    return Lots(uids, lot_of_batch, supplier)
