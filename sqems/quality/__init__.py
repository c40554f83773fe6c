"""Quality actions on the graph: containment of suspect product."""

from sqems.quality.containment import hold_batch, release_batch, set_unit_status

__all__ = ["hold_batch", "release_batch", "set_unit_status"]
