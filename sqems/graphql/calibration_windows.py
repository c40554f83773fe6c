"""``Machine.calibrationWindows`` (when a machine was out of calibration, and why) and
``Calibration.foundOutOfTolerance``.

The windows come from :func:`sqems.graph_model.calibration.calibration_windows` (overdue,
found out of tolerance, failed, limited), each with its dates (stored UTC), the
calibration records it cites and a sentence with the dates in the site's zone. This
module defines the fields the generated types add (:data:`sqems.graphql.types.COMPUTED`)
and imports nothing of the schema, so the generated types can take them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from sqems import localtime
from sqems.graph_model.calibration import CalWindow, CalWindowKind, calibration_windows
from sqems.graph_model.nodes import Calibration
from sqems.graphql.context import Context

WindowKind = strawberry.enum(
    CalWindowKind,
    name="CalibrationWindowKind",
    description="Why a machine's results are in doubt during a window.",
)


@strawberry.type(description="A span of time in which a machine was out of calibration.")
class CalibrationWindow:
    machine: str = strawberry.field(description="The machine's uid.")
    kind: WindowKind = strawberry.field(  # type: ignore[valid-type]
        description="Overdue, found out of tolerance (the §7.6 look-back), failed or limited."
    )
    start: datetime | None = strawberry.field(
        description="When it began (UTC); null: before any good calibration on record."
    )
    end: datetime | None = strawberry.field(
        description="When it ended (UTC): the next calibration; null while still open."
    )
    record: str = strawberry.field(
        description="The calibration the window is about (went overdue, found out, failed, "
        "limited)."
    )
    closed_by: str | None = strawberry.field(description="The calibration that ended it.")
    calibrations: list[str] = strawberry.field(
        description="Every calibration record the window cites, in time order."
    )
    detail: str = strawberry.field(
        description="As-found/as-left values and the limitation, where recorded."
    )
    sentence: str = strawberry.field(description="The window in words, in the site's time.")

    @classmethod
    def of(cls, w: CalWindow, zone: localtime.SiteZone) -> CalibrationWindow:
        return cls(
            machine=w.machine,
            kind=w.kind,
            start=w.start,
            end=w.end,
            record=w.record,
            closed_by=w.closed_by,
            calibrations=list(w.calibrations),
            detail=w.detail,
            sentence=w.sentence(zone.tz),
        )


async def resolve_calibration_windows(
    self: Any, info: Info[Context, None]
) -> list[CalibrationWindow]:
    ctx = info.context
    windows = await ctx.call(calibration_windows, ctx.store, self.uid)
    zone = await ctx.call(localtime.site_zone, ctx.settings, ctx.store)
    return [CalibrationWindow.of(w, zone) for w in windows]


CALIBRATION_WINDOWS_FIELD = (
    "calibration_windows",
    resolve_calibration_windows,
    "When this machine was out of calibration (overdue, found out of tolerance, failed, "
    "limited), oldest first, with the calibration records each window cites.",
)
"""The field the generated ``Machine`` type adds: (name, resolver, description)."""


def resolve_found_out_of_tolerance(self: Any) -> bool:
    node = Calibration(
        uid=self.uid,
        performed_at=self.performed_at,
        verdict=self.verdict,
        as_found=self.as_found,
        reference=self.reference,
        tolerance=self.tolerance,
    )
    return node.found_out_of_tolerance


FOUND_OUT_OF_TOLERANCE_FIELD = (
    "found_out_of_tolerance",
    resolve_found_out_of_tolerance,
    "Whether the calibration found the machine out of tolerance: it failed, or its "
    "as-found reading lay outside reference ± tolerance (results since the last good "
    "calibration need assessing, ISO 13485 §7.6).",
)
"""The field the generated ``Calibration`` type adds: (name, resolver, description)."""
