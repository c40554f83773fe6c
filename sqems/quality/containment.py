"""Containment actions on suspect product: hold and release batches, disposition units.

Each action reads the node, changes its status and writes it back through the store,
so it works on any backend. The API runs each inside a transaction of the audit trail
(:meth:`~sqems.quality.audit.AuditTrail.writing`) with its entry, so the read and the
write are not interleaved with another change and the change lands with its entry or
not at all.
"""

from __future__ import annotations

from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import Batch, BatchStatus, Unit, UnitStatus
from sqems.graph_model.store import GraphStore


def _batch(store: GraphStore, uid: str) -> Batch:
    node = store.get(uid)
    if not isinstance(node, Batch):
        raise ValidationFailed(f"{uid} is a {node.label}, not a Batch")
    return node


def hold_batch(store: GraphStore, uid: str) -> Batch:
    """Put a batch on hold: nothing from it may ship until it is released."""
    batch = _batch(store, uid)
    if batch.status is BatchStatus.SCRAPPED:
        raise ValidationFailed(f"batch {uid} is scrapped; there is nothing to hold")
    held = batch.model_copy(update={"status": BatchStatus.ON_HOLD})
    store.upsert_nodes([held])
    return held


def release_batch(store: GraphStore, uid: str) -> Batch:
    """Release a held batch back to completed."""
    batch = _batch(store, uid)
    if batch.status is not BatchStatus.ON_HOLD:
        raise ValidationFailed(f"batch {uid} is {batch.status.value}, not on hold")
    released = batch.model_copy(update={"status": BatchStatus.COMPLETED})
    store.upsert_nodes([released])
    return released


def set_unit_status(store: GraphStore, uid: str, status: UnitStatus) -> Unit:
    """Record an inspector's disposition of one unit."""
    node = store.get(uid)
    if not isinstance(node, Unit):
        raise ValidationFailed(f"{uid} is a {node.label}, not a Unit")
    changed = node.model_copy(update={"status": status})
    store.upsert_nodes([changed])
    return changed
