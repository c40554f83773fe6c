"""Investigate a complaint end to end: its unit's genealogy, the causes its defect type's
cases share, the recall the leading cause calls for and the what-if of its fix."""

from sqems.investigation.case import ComplaintCase, read_case, unit_exposure
from sqems.investigation.fix import Fix, fix_for, run_fix
from sqems.investigation.investigate import DEFAULT_LOOKBACK_DAYS, Investigation, investigate
from sqems.investigation.recall import SuggestedRecall, suggest_recall

__all__ = [
    "DEFAULT_LOOKBACK_DAYS",
    "ComplaintCase",
    "Fix",
    "Investigation",
    "SuggestedRecall",
    "fix_for",
    "investigate",
    "read_case",
    "run_fix",
    "suggest_recall",
    "unit_exposure",
]
