"""Dates alone in a plant's record-keeping columns, read as the site's local days.

Calibration certificates, training records and work instructions carry dates, not
instants: "due 2026-03-02" means the whole of that day at the site. In the columns
below a plant file may give a date alone (``2026-03-02``); it is read in the plant's
site zone, a start as the day's first instant, an end (a due date, an expiry) as its
last second, 23:59:59 local. So a calibration due 2026-03-02 at a Chicago site is due
at 2026-03-03T05:59:59Z (CST), and a run at 22:00 local that day is in time. Every
other time column keeps the rule of the format: ISO 8601 with an offset.

The zone is the ``timezone`` of the plant's ``Site`` rows when they agree, else of the
sites the graph already holds when they agree, else UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from sqems import localtime
from sqems.datasets.files import Section
from sqems.graph_model.store import GraphStore

DATE_COLUMNS: Final[Mapping[str, Mapping[str, bool]]] = {
    "Calibration": {"performed_at": False, "due_at": True},
    "Qualification": {"granted_at": False, "expires_at": True, "revoked_at": False},
    "WorkInstruction": {"effective_at": False},
    "Operator": {"qualified_from": False, "qualified_until": True},
}
"""Per label, the columns that may hold a date alone, each with whether it is an end
(read as the day's last second) or a start (its first instant)."""

_DATE_ALONE = re.compile(r"\d{4}-\d{2}-\d{2}")


def plant_zone(store: GraphStore, sections: Iterable[Section]) -> localtime.SiteZone:
    """The zone dates alone are read in (module rule)."""
    zones = {
        str(record.get("timezone") or "UTC")
        for section in sections
        if section.kind == "nodes" and section.name == "Site"
        for _, record in section.records
    }
    source = "the plant's sites"
    if not zones:
        zones = {str(getattr(s, "timezone", "UTC") or "UTC") for s in store.find("Site")}
        source = "the graph's sites"
    if len(zones) != 1:
        return localtime.UTC_ZONE
    (name,) = zones
    return localtime.SiteZone(localtime.zone_named(name, source), name, source)


def local_dates(label: str, record: dict[str, Any], zone: localtime.SiteZone) -> dict[str, Any]:
    """``record`` with each date alone in a :data:`DATE_COLUMNS` column of ``label``
    placed in ``zone`` (other values unchanged)."""
    columns = DATE_COLUMNS.get(label)
    if not columns:
        return record
    placed = dict(record)
    for column, end in columns.items():
        value = record.get(column)
        if not isinstance(value, str) or not _DATE_ALONE.fullmatch(value.strip()):
            continue
        what = f"{label}.{column}"
        at = localtime.place(localtime.read(value, what), zone, end=end, what=what)
        placed[column] = (at.replace(microsecond=0) if end else at).isoformat()
    return placed
