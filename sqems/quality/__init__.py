"""Quality actions on the graph: containment of suspect product, the CAPA workflow and
the audit trail of quality records."""

from sqems.quality.audit import AuditTrail, Entry, Verification, verify_export
from sqems.quality.capa import Actor, Workflow
from sqems.quality.containment import hold_batch, release_batch, set_unit_status

__all__ = [
    "Actor",
    "AuditTrail",
    "Entry",
    "Verification",
    "Workflow",
    "hold_batch",
    "release_batch",
    "set_unit_status",
    "verify_export",
]
