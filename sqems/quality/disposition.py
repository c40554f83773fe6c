"""Dispositions of the deviations in a batch's device history record (ISO 13485:2016
§8.3), each an electronic signature in the sense of 21 CFR Part 11.

A disposition is a :class:`~sqems.graph_model.nodes.DeviationDisposition` node keyed by
the batch and the deviation's key in its record, so disposing a deviation again
replaces the decision; the audit trail keeps every one, with the record before and
after and the signature's meaning. :func:`sqems.quality.dhr.dispose` checks that the
deviation is in the record and calls :func:`record`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import DeviationDisposition, DispositionDecision
from sqems.graph_model.store import GraphStore
from sqems.quality.audit import AuditTrail
from sqems.quality.capa import Actor

LABEL = DeviationDisposition.label
ACTION = "disposed deviation"
"""The audit trail's action for a disposition."""

_SPELLINGS = {d.value.replace(" ", ""): d for d in DispositionDecision}


def decision_of(text: str) -> DispositionDecision:
    """The decision ``text`` names: ``use as is``, ``use-as-is`` and ``USE_AS_IS`` are
    one decision."""
    found = _SPELLINGS.get("".join(c for c in text.lower() if c.isalpha()))
    if found is None:
        known = ", ".join(repr(d.value) for d in DispositionDecision)
        raise ValidationFailed(f"decision {text!r} is not a disposition; use one of {known}")
    return found


def meaning_of(decision: DispositionDecision) -> str:
    """The signature's meaning, as the trail and the record show it."""
    return f"disposition approved: {decision.value}"


def disposition_uid(batch: str, deviation: str) -> str:
    """A stable uid for the disposition of ``deviation`` in ``batch``'s record (any
    batch uid and key, whatever their length or characters)."""
    digest = hashlib.sha256(f"{batch}\0{deviation}".encode()).hexdigest()[:20]
    return f"DISP-{digest}"


def dispositions(
    store: GraphStore, batches: Iterable[str]
) -> dict[tuple[str, str], DeviationDisposition]:
    """The dispositions recorded for ``batches``, by (batch, deviation key)."""
    found: dict[tuple[str, str], DeviationDisposition] = {}
    for batch in sorted(set(batches)):
        for node in store.find(LABEL, {"batch": batch}):
            if isinstance(node, DeviationDisposition):
                found[(node.batch, node.deviation)] = node
    return found


def record(
    store: GraphStore,
    trail: AuditTrail,
    actor: Actor,
    batch: str,
    deviation: str,
    decision: DispositionDecision,
    rationale: str,
    *,
    at: datetime | None = None,
) -> DeviationDisposition:
    """Write the signed disposition and its trail entry in one trail transaction (the
    graph write is taken back if the entry cannot be committed)."""
    if not rationale.strip():
        raise ValidationFailed(
            f"the disposition of {deviation} in batch {batch} needs a rationale: say why "
            f"{decision.value!r} is the right decision"
        )
    uid = disposition_uid(batch, deviation)
    signed = DeviationDisposition(
        uid=uid, batch=batch, deviation=deviation, decision=decision,
        rationale=rationale.strip(), signer=actor.name, signed_at=at or datetime.now(UTC),
        meaning=meaning_of(decision),
    )  # fmt: skip
    with trail.writing() as w:
        before = store.get_many([uid]).get(uid)
        w.append(actor.name, actor.role, LABEL, uid, ACTION,
                 before.model_dump(mode="json") if before is not None else None,
                 signed.model_dump(mode="json"), meaning=signed.meaning)  # fmt: skip
        store.upsert_nodes([signed])
        if before is not None:
            w.on_abort(lambda: store.upsert_nodes([before]))
    return signed
