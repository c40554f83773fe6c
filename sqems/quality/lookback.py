"""The look-back a calibration found out of tolerance calls for (ISO 13485:2016 §7.6).

When a machine's calibration finds it out of tolerance, the standard asks for "the
validity of the previous measuring results" to be assessed and for action on the
product affected. Which results: every one since the machine was last known good. So a
look-back is a recall scope by machine and window:

* the window runs from the ``performed_at`` of the machine's last good calibration
  before the failing one to the failing one's ``performed_at`` - the "found out of
  tolerance" window of :func:`sqems.graph_model.calibration.calibration_windows`, one rule
  with the device history record's look-back section and root cause's state factor;
* the runs on the machine in that window, their batches, the units made in them and
  everything downstream (the assemblies they went into, the shipments, the customers)
  are :meth:`Traceability.recall_scope` of the machine over the window - the same
  traversal as ``sqems recall --machine``, not a second one;
* :func:`open_capa` opens a CAPA through the workflow that addresses the calibration
  record and the affected batches, its problem statement giving the counts and the
  window in the site's time zone. It is idempotent: while that CAPA is open, a second
  look-back of the same calibration returns it instead of opening another.

A calibration that passed (and whose as-found value lay within its tolerance) calls for
no look-back and is refused, saying so.

>>> from sqems.graph_model.embedded import EmbeddedGraphStore
>>> look_back(EmbeddedGraphStore(None), "CAL-1")
Traceback (most recent call last):
...
sqems.errors.NotFound: calibration CAL-1 is not in the graph
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.calibration import CalWindow, CalWindowKind, calibration_windows
from sqems.graph_model.nodes import Calibration, Capa, Site
from sqems.graph_model.store import Direction, GraphStore, TimeWindow
from sqems.graph_model.traceability import (
    AffectedUnit,
    RecallScope,
    RecallSource,
    SourceKind,
    Traceability,
)
from sqems.localtime import zone_named
from sqems.quality.audit import AuditTrail
from sqems.quality.capa import Actor, Workflow, open_capas_addressing

log = logging.getLogger(__name__)
OUT = Direction.OUT

_TICK = timedelta(microseconds=1)
"""A store's time window is closed; the look-back's ends at the failing calibration."""
TITLE_PREFIX = "Look-back:"
"""How a look-back CAPA's title begins: of the open CAPAs that address a calibration,
it marks the one the calibration's look-back opened."""


@dataclass(frozen=True, slots=True)
class SiteTime:
    """The zone a look-back's times are shown in: the machine's site's."""

    tz: tzinfo
    name: str
    """The IANA name (``America/Chicago``), or ``UTC``."""

    def show(self, at: datetime | None) -> str:
        """``2026-03-09 14:05 CDT``; an open end is ``the machine's first run``."""
        if at is None:
            return "the machine's first run"
        local = at.astimezone(self.tz)
        return f"{local:%Y-%m-%d %H:%M} {local.tzname() or self.name}"


@dataclass(frozen=True, slots=True)
class LookBack:
    """What a calibration found out of tolerance puts in question, and its CAPA."""

    calibration: Calibration
    machine: str
    last_good: str | None
    """The machine's last good calibration before this one; None when it has none, and
    then the window opens at the machine's first run."""
    window: TimeWindow
    reason: str
    """Why the calibration is out of tolerance (its verdict, or its as-found value)."""
    sentence: str
    """The window's sentence from :func:`calibration_windows`."""
    zone: SiteTime
    scope: RecallScope
    capa: Capa | None = None
    """The look-back's CAPA while it is open (or just opened); None when there is none."""
    capa_opened: bool = field(default=False)
    """Whether this call opened :attr:`capa` (False when it was open already)."""

    # --- what is in scope ------------------------------------------------------------

    @property
    def runs(self) -> list[str]:
        """The machine's process runs in the window."""
        return self.scope.triggers

    @property
    def batches(self) -> list[str]:
        """The batches those runs were of."""
        return self.scope.batches

    @property
    def made(self) -> list[AffectedUnit]:
        """The units made in the batches."""
        return [u for u in self.scope.units if u.path[-1].edge == "PRODUCED"]

    @property
    def assemblies(self) -> list[AffectedUnit]:
        """The units those went into, at any depth of the bill of materials."""
        return [u for u in self.scope.units if u.path[-1].edge == "ASSEMBLED_INTO"]

    @property
    def shipped(self) -> list[AffectedUnit]:
        """The units in scope that left in a shipment of their own."""
        return [u for u in self.scope.units if u.shipment is not None]

    @property
    def shipments(self) -> list[str]:
        return self.scope.shipments

    @property
    def customers(self) -> list[str]:
        return self.scope.customers

    def counts(self) -> dict[str, int]:
        return {
            "runs": len(self.runs),
            "batches": len(self.batches),
            "units_made": len(self.made),
            "assemblies": len(self.assemblies),
            "units_shipped": len(self.shipped),
            "shipments": len(self.shipments),
            "customers": len(self.customers),
        }

    # --- in words --------------------------------------------------------------------

    @property
    def window_text(self) -> str:
        """``2026-02-27 09:00 CST to 2026-03-20 14:00 CDT (America/Chicago)``."""
        z = self.zone
        return f"{z.show(self.window.start)} to {z.show(self.window.end)} ({z.name})"

    @property
    def title(self) -> str:
        day = self.calibration.performed_at.astimezone(self.zone.tz)
        return (
            f"{TITLE_PREFIX} {self.machine} found out of tolerance on {day:%Y-%m-%d} "
            f"({self.calibration.uid})"
        )

    @property
    def problem(self) -> str:
        """The CAPA's problem statement: what was found, the window and the counts."""
        c = self.counts()
        since = (
            f"its last good calibration {self.last_good}"
            if self.last_good
            else "its first run (no good calibration before it is on record)"
        )
        downstream = (
            f"; they went into {_n(c['assemblies'], 'assembly')}" if c["assemblies"] else ""
        )
        return (
            f"Calibration {self.calibration.uid} of {self.machine} on "
            f"{self.zone.show(self.calibration.performed_at)} found it out of tolerance "
            f"({self.reason}). ISO 13485:2016 §7.6: the validity of its results since "
            f"{since} must be assessed. From {self.window_text} the machine ran "
            f"{_n(c['runs'], 'process run')} of {_n(c['batches'], 'batch')}, which made "
            f"{_n(c['units_made'], 'unit')}{downstream}; {_n(c['units_shipped'], 'unit')} "
            f"left in {_n(c['shipments'], 'shipment')} to {_n(c['customers'], 'customer')}. "
            "Assess the affected product and decide its disposition."
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.uid,
            "machine": self.machine,
            "last_good": self.last_good,
            "reason": self.reason,
            "window": {
                "start": _iso(self.window.start),
                "end": _iso(self.window.end),
                "zone": self.zone.name,
                "text": self.window_text,
            },
            "counts": self.counts(),
            "runs": self.runs,
            "batches": self.batches,
            "units_made": [u.uid for u in self.made],
            "assemblies": [u.uid for u in self.assemblies],
            "shipped_units": [u.uid for u in self.shipped],
            "shipments": self.shipments,
            "customers": self.customers,
            "capa": self.capa.uid if self.capa else None,
            "capa_opened": self.capa_opened,
        }


def _n(count: int, word: str) -> str:
    """``1 batch``, ``3 batches``, ``0 assemblies``."""
    if count == 1:
        return f"1 {word}"
    plural = (
        word[:-1] + "ies" if word.endswith("y") else word + ("es" if word.endswith("ch") else "s")
    )
    return f"{count:,} {plural}"


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat()


def _as_found(cal: Calibration) -> str:
    """``as found 96.6 kPa against 100 ± 1.5 kPa``; empty without those values."""
    if cal.as_found is None or cal.reference is None or cal.tolerance is None:
        return ""
    unit = f" {cal.measured_unit}" if cal.measured_unit else ""
    return f"as found {cal.as_found:g}{unit} against {cal.reference:g} ± {cal.tolerance:g}{unit}"


def out_of_tolerance_reason(cal: Calibration) -> str:
    """What ``cal`` found, in words: its as-found value against its tolerance (where
    recorded) and its verdict."""
    return "; ".join(x for x in (_as_found(cal), f"verdict {cal.verdict.value}") if x)


def look_back(store: GraphStore, calibration: str) -> LookBack:
    """The look-back of ``calibration``: its window and everything made in it.

    Raises :class:`ValidationFailed` when the calibration passed (no look-back is due)
    and :class:`NotFound` when it is not in the graph or calibrates no machine.
    """
    cal = store.get_many([calibration]).get(calibration)
    if not isinstance(cal, Calibration):
        what = "is not in the graph" if cal is None else f"is a {cal.label}, not a Calibration"
        raise NotFound(f"calibration {calibration} {what}")
    if not cal.found_out_of_tolerance:
        raise ValidationFailed(
            f"calibration {calibration} passed ({out_of_tolerance_reason(cal)}): no "
            "look-back is due; a look-back starts from a calibration that found its machine "
            "out of tolerance"
        )
    machines = sorted(e.dst for e in store.edges([calibration], {"CALIBRATES": OUT}))
    if len(machines) != 1:
        raise NotFound(
            f"calibration {calibration} calibrates {len(machines)} machines; a look-back "
            "needs the one machine it calibrates (CALIBRATES Calibration→Machine)"
        )
    (machine,) = machines
    window = _window_of(store, machine, calibration)
    zone = machine_zone(store, machine)
    # the window is half-open, as CalWindow.overlaps reads it: a run that starts when
    # the failing calibration is performed is after it, not in question
    span = TimeWindow(window.start, window.end - _TICK if window.end is not None else None)
    scope = Traceability(store).recall_scope(RecallSource(SourceKind.MACHINE, machine, span))
    return LookBack(
        calibration=cal,
        machine=machine,
        last_good=window.calibrations[0] if len(window.calibrations) > 1 else None,
        window=TimeWindow(window.start, window.end),
        reason=out_of_tolerance_reason(cal),
        sentence=window.sentence(zone.tz),
        zone=zone,
        scope=scope,
        capa=_open_look_back(store, calibration),
    )


def _window_of(store: GraphStore, machine: str, calibration: str) -> CalWindow:
    """The "found out of tolerance" window that ``calibration`` closes."""
    for w in calibration_windows(store, machine):
        if w.kind is CalWindowKind.FOUND_OUT_OF_TOLERANCE and w.record == calibration:
            return w
    raise ValidationFailed(
        f"calibration {calibration} of {machine} found it out of tolerance but closes no "
        "look-back window; check the machine's calibration records"
    )


def machine_zone(store: GraphStore, machine: str) -> SiteTime:
    """The time zone of the site ``machine`` stands in (Machine→Line→Site by
    ``PART_OF``); UTC for a machine on no site."""
    lines = [e.dst for e in store.edges([machine], {"PART_OF": OUT})]
    sites = store.get_many(e.dst for e in store.edges(lines, {"PART_OF": OUT}))
    zones = sorted({s.timezone for s in sites.values() if isinstance(s, Site)})
    if len(zones) != 1:
        return SiteTime(UTC, "UTC")
    (name,) = zones
    return SiteTime(zone_named(name, f"the site of {machine}"), name)


def _is_look_back(capa: Capa) -> bool:
    return capa.title.startswith(TITLE_PREFIX)


def _open_look_back(store: GraphStore, calibration: str) -> Capa | None:
    return next((c for c in open_capas_addressing(store, calibration) if _is_look_back(c)), None)


def open_capa(
    store: GraphStore, trail: AuditTrail, actor: Actor, found: LookBack | str
) -> LookBack:
    """The look-back with its CAPA: the open one a look-back of this calibration made
    before, or a new one reported through the CAPA workflow (audited as ``actor``),
    addressing the calibration record and the affected batches."""
    lb = look_back(store, found) if isinstance(found, str) else found
    flow = Workflow(store, trail)
    capa, opened = flow.report_once(
        actor,
        lb.title,
        lb.problem,
        record=lb.calibration.uid,
        same=_is_look_back,
        addresses=lb.batches,
    )
    if opened:
        log.info(
            "look-back CAPA %s opened for %s (%d batches)", capa.uid, lb.calibration.uid,
            len(lb.batches),
        )  # fmt: skip
    return replace(lb, capa=capa, capa_opened=opened)
