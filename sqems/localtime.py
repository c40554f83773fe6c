"""Dates and times people type, read in the site's time zone: one rule for the CLI and
the API.

A time with an offset (``2026-01-20T06:00+01:00``, ``...Z``) is that instant. A date or
time **without** one is local time at the site (:func:`site_zone`):

1. the setting ``SQEMS_SITE_TIMEZONE`` (an IANA name such as ``America/Chicago``), if set;
2. else the ``timezone`` of the graph's ``Site``, if the graph holds one site or all its
   sites agree;
3. else UTC (no site, or sites in different zones).

A date alone (``2026-01-20``) is a whole day: as a window's start, that day's first
instant (00:00 local); as its end, the day's last (23:59:59.999999 local), so ``--from
2026-01-20 --to 2026-01-25`` covers six whole days. Daylight saving time: a local time
the clocks skip (02:30 on the morning they go forward) does not exist and is refused; a
local time they pass twice (01:30 on the morning they go back) is taken at its first
occurrence, still in daylight time. A day whose midnight is skipped starts when the
clocks jump.

>>> from zoneinfo import ZoneInfo
>>> chicago = SiteZone(ZoneInfo("America/Chicago"), "America/Chicago", "SQEMS_SITE_TIMEZONE")
>>> parse("2026-01-20T06:00", chicago).isoformat()
'2026-01-20T06:00:00-06:00'
>>> parse("2026-01-25", chicago, end=True).isoformat()
'2026-01-25T23:59:59.999999-06:00'
>>> parse("2026-11-01T01:30", chicago).isoformat()  # twice that night: the first
'2026-11-01T01:30:00-05:00'

The zone is looked up once per store and kept for :data:`ZONE_TTL_S` seconds, and only
when a time without an offset needs it.
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqems.errors import ConfigError, ValidationFailed

if TYPE_CHECKING:
    from sqems.graph_model.store import GraphStore, TimeWindow
    from sqems.settings import Settings

ZONE_TTL_S: Final = 60.0
"""How long a store's site zone is kept before the sites are read again."""

EXAMPLES: Final = "e.g. 2026-03-01, 2026-03-01T06:00 (site time) or 2026-03-01T06:00+01:00"

RULE: Final = (
    "ISO 8601; without an offset, in the site's time zone (SQEMS_SITE_TIMEZONE, else the "
    "graph's site's, else UTC)"
)
"""The rule in one line, for help texts and field descriptions."""

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


class DateOnly(datetime):
    """A date given alone, as the naive start of that day: :func:`place` makes it the
    day's first instant, or its last as a window's end."""


@dataclass(frozen=True, slots=True)
class SiteZone:
    """The zone times without an offset are read in, and why it is that one."""

    tz: tzinfo
    name: str
    source: str
    """Where the zone came from: the setting, the graph's sites, or why UTC."""

    def __str__(self) -> str:
        return f"{self.name} ({self.source})"


UTC_ZONE: Final = SiteZone(UTC, "UTC", "the default")


def zone_named(name: str, where: str) -> tzinfo:
    """The IANA zone ``name``; ``where`` says who named it, for the error."""
    try:
        return UTC if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where} names the time zone {name!r}, which is not an IANA zone name "
            "(e.g. Europe/Berlin, America/Chicago, UTC)"
        ) from None


def zone_of(settings: Settings, store: GraphStore | None) -> SiteZone:
    """The site's zone by the rule in the module docstring, read afresh (see
    :func:`site_zone` for the cached one). Without a store, the setting or UTC."""
    if settings.site_timezone:
        name = settings.site_timezone
        return SiteZone(zone_named(name, "SQEMS_SITE_TIMEZONE"), name, "SQEMS_SITE_TIMEZONE")
    if store is None:
        return SiteZone(UTC, "UTC", "no graph to read a site from")
    sites = store.find("Site")
    zones = sorted({str(getattr(s, "timezone", "UTC") or "UTC") for s in sites})
    if not sites:
        return SiteZone(UTC, "UTC", "the graph holds no site")
    if len(zones) > 1:
        return SiteZone(
            UTC, "UTC", f"the graph's sites are in {', '.join(zones)}; set SQEMS_SITE_TIMEZONE"
        )
    (name,) = zones
    source = f"site {sites[0].uid}" if len(sites) == 1 else f"all {len(sites)} sites"
    return SiteZone(zone_named(name, source), name, source)


_cache: weakref.WeakKeyDictionary[GraphStore, tuple[float, str | None, SiteZone]] = (
    weakref.WeakKeyDictionary()
)
_cache_lock = threading.Lock()


def site_zone(settings: Settings, store: GraphStore | None) -> SiteZone:
    """:func:`zone_of`, kept per store for :data:`ZONE_TTL_S` seconds."""
    if settings.site_timezone or store is None:
        return zone_of(settings, store)
    now = time.monotonic()
    with _cache_lock:
        kept = _cache.get(store)
    if kept is not None and now - kept[0] < ZONE_TTL_S and kept[1] == settings.site_timezone:
        return kept[2]
    zone = zone_of(settings, store)
    with _cache_lock:
        _cache[store] = (now, settings.site_timezone, zone)
    return zone


def read(text: str, what: str = "time") -> datetime:
    """``text`` as ISO 8601, not yet placed in a zone: aware when it has an offset,
    naive when not, a :class:`DateOnly` when it is a date alone. ``what`` names the
    value in the error (an option or a field)."""
    text = text.strip()
    try:
        if _DATE_ONLY.fullmatch(text):
            day = date.fromisoformat(text)
            return DateOnly(day.year, day.month, day.day)
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            f"{what} {text!r} is not a date or time; use ISO 8601, {EXAMPLES}"
        ) from None


ZoneSource = SiteZone | Callable[[], SiteZone]
"""A zone, or how to find it (called only when a value has no offset)."""


def place(value: datetime, zone: ZoneSource, *, end: bool = False, what: str = "time") -> datetime:
    """``value`` (from :func:`read`, or a datetime an API took) as an aware datetime:
    unchanged with an offset; otherwise local time in ``zone`` by the module's rules
    (``end``: a date alone is the day's last instant)."""
    if value.tzinfo is not None and value.utcoffset() is not None:
        return value
    site = zone() if callable(zone) else zone
    try:
        return _placed(value, site, end=end, what=what)
    except OverflowError:  # the first or last days of year 1 or 9999
        raise ValidationFailed(
            f"{what} {value.isoformat()} is out of range in {site}; give a year from 2 to 9998"
        ) from None


def _placed(value: datetime, site: SiteZone, *, end: bool, what: str) -> datetime:
    if isinstance(value, DateOnly):
        day = value.date()
        if end:
            return _day_start(day + timedelta(days=1), site.tz) - timedelta(microseconds=1)
        return _day_start(day, site.tz)
    naive = value.replace(tzinfo=None)
    first = naive.replace(tzinfo=site.tz, fold=0)
    if first.astimezone(UTC).astimezone(site.tz).replace(tzinfo=None) != naive:
        raise ValidationFailed(
            f"{what} {naive.isoformat()} does not exist in {site}: the clocks skip it "
            "(daylight saving time begins); give a time outside the skipped hour or an offset"
        )
    return first  # of a time the clocks pass twice, the first (fold 0)


def _day_start(day: date, tz: tzinfo) -> datetime:
    """The first instant of ``day`` in ``tz``: its midnight, or when the clocks jump
    if they skip midnight (then fold 0 lands on the jump)."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
    if midnight.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != midnight.replace(
        tzinfo=None
    ):
        return midnight.astimezone(UTC).astimezone(tz)
    return midnight


def parse(text: str, zone: ZoneSource, *, end: bool = False, what: str = "time") -> datetime:
    """``text`` (ISO 8601) as an aware datetime: :func:`read`, then :func:`place`."""
    return place(read(text, what), zone, end=end, what=what)


def window(
    start: datetime | None,
    end: datetime | None,
    zone: ZoneSource,
    names: tuple[str, str] = ("start", "end"),
) -> TimeWindow:
    """The window from ``start`` to ``end`` (values from :func:`read` or an API), both
    placed in ``zone``; a date alone as the end runs to the end of that day."""
    from sqems.graph_model.store import TimeWindow  # noqa: PLC0415 - CLI start-up

    return TimeWindow(
        None if start is None else place(start, zone, what=names[0]),
        None if end is None else place(end, zone, end=True, what=names[1]),
    )
