"""When a machine was out of calibration, read from its calibration records.

A machine's ``Calibration`` records (``CALIBRATES`` it), in order of ``performed_at``,
give windows of time in which its results are in doubt:

- **overdue**: from a calibration's ``due_at`` until the next calibration was
  performed (open while none has been). A due date given as a local date is due at
  23:59:59 local that day, so a run at 22:00 that day is not overdue.
- **found out of tolerance**: from the last calibration that left the machine good
  (pass, adjusted or limited) until a later one found it out of tolerance (verdict
  fail, or the as-found value outside reference ± tolerance). Results made in it were
  made on a machine that was out by the time it was checked: ISO 13485 §7.6 asks for
  their validity to be assessed (the look-back).
- **failed**: from a failed calibration until the next that is not failed.
- **limited**: from a limited calibration until the next calibration.

A failed calibration starts no overdue window: the failed window already covers the
machine until it is restored. Windows of different kinds may overlap (a limited
calibration can also go overdue).

Reading is in bulk: :class:`CalibrationRecords` reads the records of many machines in
two store calls, so root cause can ask about every machine of a plant at once.

Times are UTC-aware datetimes; a window's :meth:`CalWindow.sentence` phrases its dates
in the zone it is given (the site's), with the zone's abbreviation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, tzinfo
from enum import StrEnum

from sqems.graph_model.nodes import Calibration, CalibrationVerdict, Machine
from sqems.graph_model.store import Direction, GraphStore


class CalWindowKind(StrEnum):
    """Why a machine's results are in doubt during a window."""

    OVERDUE = "overdue"
    FOUND_OUT_OF_TOLERANCE = "found out of tolerance"
    FAILED = "failed"
    LIMITED = "limited"


@dataclass(frozen=True, slots=True)
class CalWindow:
    """A span of time in which ``machine`` was out of calibration in one way.

    ``start`` is None when the window reaches back before any good calibration on
    record (found out of tolerance with no earlier good one); ``end`` is None while the
    window is still open. ``record`` is the calibration the window is about (the one
    that went overdue, was found out of tolerance, failed or was limited); ``closed_by``
    the calibration that ended it; ``calibrations`` every record uid the window cites,
    in time order."""

    machine: str
    kind: CalWindowKind
    start: datetime | None
    end: datetime | None
    record: str
    closed_by: str | None = None
    calibrations: tuple[str, ...] = ()
    detail: str = ""
    """What the record says beyond its dates: as-found/as-left values, the limitation."""

    def contains(self, at: datetime) -> bool:
        """Whether ``at`` lies in the window. An overdue window starts just after the due
        time (a run at the due time is in time); the others at their start. Every window
        ends when the calibration that closes it is performed."""
        if self.start is not None:
            if self.kind is CalWindowKind.OVERDUE and at <= self.start:
                return False
            if at < self.start:
                return False
        return self.end is None or at < self.end

    def overlaps(self, start: datetime, end: datetime | None) -> bool:
        """Whether any instant of ``start``..``end`` (open when None) lies in the window."""
        if self.end is not None and start >= self.end:
            return False
        if self.start is None:
            return True
        last = end if end is not None else datetime.max.replace(tzinfo=UTC)
        if self.kind is CalWindowKind.OVERDUE:
            return last > self.start
        return last >= self.start

    def sentence(self, tz: tzinfo | None = None) -> str:
        """The window in words, dates in ``tz`` (UTC when None) with its abbreviation."""
        zone = tz or UTC
        until = (
            f"until {self.closed_by} was performed {when(self.end, zone)}"
            if self.end is not None and self.closed_by is not None
            else "and still is"
        )
        extra = f" ({self.detail})" if self.detail else ""
        if self.kind is CalWindowKind.OVERDUE:
            assert self.start is not None
            head = (
                f"machine {self.machine} was overdue for calibration: {self.record} was "
                f"due {due(self.start, zone)}"
            )
            return f"{head}, {until.replace('and still is', 'and no calibration since')}"
        if self.kind is CalWindowKind.FOUND_OUT_OF_TOLERANCE:
            since = (
                f"since the last good calibration {self.calibrations[0]} of "
                f"{when(self.start, zone)}"
                if self.start is not None and len(self.calibrations) > 1
                else "since before any good calibration on record"
            )
            return (
                f"machine {self.machine} was found out of tolerance by {self.record} "
                f"{when(self.end, zone) if self.end else ''}{extra}: results {since} are in "
                "doubt (look-back, ISO 13485 §7.6)"
            ).replace("  ", " ")
        verb = "failed" if self.kind is CalWindowKind.FAILED else "was limited"
        start = when(self.start, zone) if self.start is not None else "?"
        return f"machine {self.machine}'s calibration {self.record} {verb} {start}{extra}, {until}"


def when(at: datetime | None, tz: tzinfo) -> str:
    """``at`` as ``2026-03-02 14:05 CST`` in ``tz``."""
    if at is None:
        return "(open)"
    local = at.astimezone(tz)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def due(at: datetime, tz: tzinfo) -> str:
    """A due time in ``tz``: ``2026-03-02 (end of day, CST)`` when it is the day's last
    second there, as due dates given as dates are; else as :func:`when`."""
    local = at.astimezone(tz)
    if local.time().replace(microsecond=0) == time(23, 59, 59):
        return f"{local:%Y-%m-%d} (end of day, {local.tzname()})"
    return when(at, tz)


def _good(c: Calibration) -> bool:
    return c.verdict is not CalibrationVerdict.FAIL


def _detail(c: Calibration) -> str:
    parts = []
    unit = f" {c.measured_unit}" if c.measured_unit else ""
    if c.as_found is not None:
        parts.append(f"as found {c.as_found:g}{unit}")
    if c.as_left is not None:
        parts.append(f"as left {c.as_left:g}{unit}")
    if c.reference is not None and c.tolerance is not None:
        parts.append(f"reference {c.reference:g} ± {c.tolerance:g}{unit}")
    if c.verdict is CalibrationVerdict.LIMITED and c.limitation:
        parts.append(f"limited: {c.limitation}")
    return ", ".join(parts)


def windows_of(machine: str, calibrations: Iterable[Calibration]) -> list[CalWindow]:
    """The windows of ``machine`` from its calibration records, ordered by start (an
    open start first), then kind."""
    cals = sorted(calibrations, key=lambda c: (c.performed_at, c.uid))
    found: list[CalWindow] = []
    for i, c in enumerate(cals):
        following = cals[i + 1] if i + 1 < len(cals) else None
        if c.found_out_of_tolerance:
            good = next((p for p in reversed(cals[:i]) if _good(p)), None)
            found.append(
                CalWindow(
                    machine,
                    CalWindowKind.FOUND_OUT_OF_TOLERANCE,
                    good.performed_at if good is not None else None,
                    c.performed_at,
                    c.uid,
                    c.uid,
                    (good.uid, c.uid) if good is not None else (c.uid,),
                    _detail(c),
                )
            )
        if c.verdict is CalibrationVerdict.FAIL:
            if i > 0 and cals[i - 1].verdict is CalibrationVerdict.FAIL:
                continue  # a run of failures is one failed window, opened by the first
            closer = next((n for n in cals[i + 1 :] if _good(n)), None)
            cited = [n.uid for n in cals[i : cals.index(closer) if closer else None]]
            found.append(
                CalWindow(
                    machine,
                    CalWindowKind.FAILED,
                    c.performed_at,
                    closer.performed_at if closer is not None else None,
                    c.uid,
                    closer.uid if closer is not None else None,
                    tuple(cited + ([closer.uid] if closer is not None else [])),
                    _detail(c),
                )
            )
            continue
        if c.verdict is CalibrationVerdict.LIMITED:
            found.append(
                CalWindow(
                    machine,
                    CalWindowKind.LIMITED,
                    c.performed_at,
                    following.performed_at if following is not None else None,
                    c.uid,
                    following.uid if following is not None else None,
                    (c.uid, following.uid) if following is not None else (c.uid,),
                    _detail(c),
                )
            )
        if c.due_at is not None and (following is None or following.performed_at > c.due_at):
            found.append(
                CalWindow(
                    machine,
                    CalWindowKind.OVERDUE,
                    c.due_at,
                    following.performed_at if following is not None else None,
                    c.uid,
                    following.uid if following is not None else None,
                    (c.uid, following.uid) if following is not None else (c.uid,),
                )
            )
    order = list(CalWindowKind)
    floor = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda w: (w.start or floor, order.index(w.kind), w.record))


@dataclass(frozen=True, slots=True)
class CalibrationRecords:
    """The calibration records of many machines, read at once (:meth:`read`)."""

    by_machine: dict[str, tuple[Calibration, ...]] = field(default_factory=dict)

    @classmethod
    def read(cls, store: GraphStore, machines: Iterable[str]) -> CalibrationRecords:
        """The records of ``machines`` (uids) in two store calls, however many machines.
        A machine without records has none; one not in the graph is :class:`NotFound`."""
        wanted = sorted(set(machines))
        links = store.edges(wanted, {"CALIBRATES": Direction.IN}) if wanted else []
        nodes = store.get_many({e.src for e in links})
        held: dict[str, list[Calibration]] = {m: [] for m in wanted}
        for e in links:
            cal = nodes.get(e.src)
            if isinstance(cal, Calibration) and e.dst in held:
                held[e.dst].append(cal)
        return cls(
            {m: tuple(sorted(cs, key=lambda c: (c.performed_at, c.uid))) for m, cs in held.items()}
        )

    @classmethod
    def read_all(cls, store: GraphStore) -> CalibrationRecords:
        """The records of every machine of the graph (one more call, for the machines)."""
        return cls.read(store, (m.uid for m in store.find(Machine.label)))

    def of(self, machine: str) -> tuple[Calibration, ...]:
        """The records of ``machine`` in time order (empty when it has none or was not read)."""
        return self.by_machine.get(machine, ())

    def windows(self, machine: str) -> list[CalWindow]:
        """:func:`windows_of` the machine's records."""
        return windows_of(machine, self.of(machine))

    def all_windows(self) -> dict[str, list[CalWindow]]:
        """Every read machine's windows, by machine uid."""
        return {m: self.windows(m) for m in self.by_machine}


def calibration_windows(source: GraphStore | CalibrationRecords, machine: str) -> list[CalWindow]:
    """The windows in which ``machine`` was out of calibration (see the module doc).
    ``source`` is a store (read for this machine alone) or records read in bulk."""
    records = (
        source
        if isinstance(source, CalibrationRecords)
        else CalibrationRecords.read(source, [machine])
    )
    return records.windows(machine)


def calibration_state_at(windows: Sequence[CalWindow], at: datetime) -> list[CalWindow]:
    """The windows ``at`` lies in: empty when the machine was in calibration then."""
    return [w for w in windows if w.contains(at)]


def straddles(
    windows: Sequence[CalWindow], start: datetime, end: datetime | None
) -> list[CalWindow]:
    """The windows a run from ``start`` to ``end`` (still going when None) crosses a
    boundary of: it was partly inside and partly outside (began in calibration and went
    overdue, or went on after the closing calibration)."""
    crossed = []
    for w in windows:
        if not w.overlaps(start, end):
            continue
        began_inside = w.contains(start)
        ends_inside = w.contains(end) if end is not None else w.end is None
        if not (began_inside and ends_inside):
            crossed.append(w)
    return crossed
