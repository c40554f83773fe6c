"""One rule for dates and times without an offset: the site's time zone, in the CLI and
the API alike, with daylight saving time's skipped and doubled hours handled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from live_server import LiveServer

from sqems import localtime
from sqems.errors import ConfigError, ValidationFailed
from sqems.graph_model import EmbeddedGraphStore
from sqems.graph_model.nodes import Machine, ProcessRun, Site
from sqems.graph_model.store import Edge
from sqems.graphql import AccessStore, Role, create_app
from sqems.settings import Settings

CHICAGO = ZoneInfo("America/Chicago")
SQEMS = [sys.executable, "-c", "from sqems.cli import main; main()"]
# 2026: the clocks go forward at 02:00 on 8 March and back at 02:00 on 1 November


def store_with(*zones: str) -> EmbeddedGraphStore:
    store = EmbeddedGraphStore(None)
    store.upsert_nodes(
        Site(uid=f"SITE-{i}", name=f"Plant {i}", timezone=zone) for i, zone in enumerate(zones)
    )
    return store


def zone(*zones: str, setting: str | None = None) -> localtime.SiteZone:
    return localtime.zone_of(Settings(site_timezone=setting), store_with(*zones))


def test_a_utc_site_reads_times_without_offset_as_utc() -> None:
    site = zone("UTC")
    assert site.name == "UTC" and site.source == "site SITE-0"
    assert localtime.parse("2026-01-20T06:00", site) == datetime(2026, 1, 20, 6, tzinfo=UTC)


def test_the_zone_comes_from_the_setting_then_the_sites_then_utc() -> None:
    assert zone("America/Chicago").tz == CHICAGO
    assert zone("America/Chicago", "America/Chicago").source == "all 2 sites"
    assert zone().name == "UTC" and "no site" in zone().source
    mixed = zone("America/Chicago", "Europe/Berlin")
    assert mixed.name == "UTC"
    assert "America/Chicago, Europe/Berlin" in mixed.source
    assert "SQEMS_SITE_TIMEZONE" in mixed.source
    chosen = zone("America/Chicago", "Europe/Berlin", setting="Europe/Berlin")
    assert chosen.name == "Europe/Berlin" and chosen.source == "SQEMS_SITE_TIMEZONE"


def test_a_zone_that_is_not_an_iana_name_is_refused_with_who_named_it() -> None:
    with pytest.raises(ConfigError, match=r"site SITE-0 names the time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")
    with pytest.raises(ConfigError, match="SQEMS_SITE_TIMEZONE"):
        Settings(site_timezone="Chicago")


def test_a_time_with_an_offset_never_looks_the_zone_up() -> None:
    def no_lookup() -> localtime.SiteZone:
        raise AssertionError("the zone was looked up")

    given_time = localtime.parse("2026-01-20T06:00+01:00", no_lookup)
    assert given_time == datetime(2026, 1, 20, 5, tzinfo=UTC)
    assert localtime.parse("2026-01-20T06:00Z", no_lookup).utcoffset() == timedelta(0)


def test_chicago_across_the_spring_change() -> None:
    site = zone("America/Chicago")
    before = localtime.parse("2026-03-07T06:00", site)
    after = localtime.parse("2026-03-09T06:00", site)
    assert before.utcoffset() == timedelta(hours=-6)
    assert after.utcoffset() == timedelta(hours=-5)
    with pytest.raises(ValidationFailed, match=r"2026-03-08T02:30:00 does not exist in "
                       r"America/Chicago \(site SITE-0\)"):  # fmt: skip
        localtime.parse("2026-03-08T02:30", site, what="--from")
    day = localtime.window(localtime.read("2026-03-08"), localtime.read("2026-03-08"), site)
    assert day.start is not None and day.end is not None
    assert day.end.astimezone(UTC) - day.start == timedelta(hours=23, microseconds=-1)


def test_chicago_across_the_autumn_change_takes_the_first_of_a_doubled_time() -> None:
    site = zone("America/Chicago")
    first = localtime.parse("2026-11-01T01:30", site)
    assert first.astimezone(UTC) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # CDT, -05:00
    day = localtime.window(localtime.read("2026-11-01"), localtime.read("2026-11-01"), site)
    assert day.start is not None and day.end is not None
    assert day.end.astimezone(UTC) - day.start == timedelta(hours=25, microseconds=-1)


def test_a_date_alone_as_the_end_includes_that_whole_day() -> None:
    site = zone("America/Chicago")
    span = localtime.window(localtime.read("2026-01-20"), localtime.read("2026-01-25"), site)
    assert span.start == datetime(2026, 1, 20, tzinfo=CHICAGO)
    assert span.end == datetime(2026, 1, 25, 23, 59, 59, 999_999, tzinfo=CHICAGO)
    assert span.end.astimezone(UTC) == datetime(2026, 1, 26, 5, 59, 59, 999_999, tzinfo=UTC)
    # a time of day as the end is that instant, not the end of its day
    assert localtime.parse("2026-01-25T00:00", site, end=True) == datetime(
        2026, 1, 25, tzinfo=CHICAGO
    )


def test_a_day_whose_midnight_is_skipped_starts_when_the_clocks_jump() -> None:
    havana = localtime.SiteZone(ZoneInfo("America/Havana"), "America/Havana", "test")
    start = localtime.parse("2026-03-08", havana)  # Cuba springs forward at 00:00
    assert (start.hour, start.minute) == (1, 0)
    assert start.astimezone(UTC) == datetime(2026, 3, 8, 5, tzinfo=UTC)


@pytest.mark.parametrize("text", ["20/01/2026", "2026-13-01", "yesterday", "", "2026-01-20T25:00"])
def test_what_is_not_iso_8601_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        localtime.parse(text, localtime.UTC_ZONE, what="--to")
    assert refused.value.message.startswith(f"--to {text.strip()!r} is not a date or time")
    assert "\n" not in refused.value.message


@pytest.mark.parametrize(("text", "end"), [("9999-12-31T23:00", False), ("9999-12-31", True)])
def test_a_local_time_past_the_calendar_is_refused_not_an_overflow(text: str, end: bool) -> None:
    with pytest.raises(ValidationFailed, match="is out of range in America/Chicago"):
        localtime.parse(text, zone("America/Chicago"), end=end)


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1)))
def test_a_local_time_that_exists_reads_back_as_itself(naive: datetime) -> None:
    site = localtime.SiteZone(CHICAGO, "America/Chicago", "test")
    try:
        placed = localtime.place(naive, site)
    except ValidationFailed:  # in the skipped hour: it has no reading
        assert naive.month == 3 and naive.hour == 2
        return
    assert placed.astimezone(CHICAGO).replace(tzinfo=None) == naive
    earlier = naive.replace(tzinfo=CHICAGO, fold=0).astimezone(UTC)
    assert placed.astimezone(UTC) == earlier  # of two readings, the first


@given(st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 1, 1)))
def test_a_day_window_is_23_24_or_25_hours(day: date) -> None:
    site = localtime.SiteZone(CHICAGO, "America/Chicago", "test")
    text = day.isoformat()
    span = localtime.window(localtime.read(text), localtime.read(text), site)
    assert span.start is not None and span.end is not None
    # an aware difference in one zone is wall-clock time: count in UTC
    length = span.end.astimezone(UTC) - span.start + timedelta(microseconds=1)
    hours = length / timedelta(hours=1)
    assert hours in (23, 24, 25)
    assert span.start.astimezone(CHICAGO).date() == span.end.astimezone(CHICAGO).date() == day


# --- the same text, the same window, in the CLI and the API --------------------------------

# Runs on a machine of a Chicago plant (CST is UTC-6 in January). "2026-01-20" to
# "2026-01-25" in Chicago holds the second and third; read as UTC, with the end at 00:00
# as the CLI once did, it held the first two.
RUNS = {
    "RUN-1": datetime(2026, 1, 20, 3, tzinfo=UTC),  # 19 Jan 21:00 in Chicago
    "RUN-2": datetime(2026, 1, 21, 12, tzinfo=UTC),
    "RUN-3": datetime(2026, 1, 26, 3, tzinfo=UTC),  # 25 Jan 21:00 in Chicago
    "RUN-4": datetime(2026, 1, 26, 12, tzinfo=UTC),  # 26 Jan 06:00
}
IN_CHICAGO = ["RUN-2", "RUN-3"]


@pytest.fixture(scope="module")
def chicago_plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data = tmp_path_factory.mktemp("chicago")
    store = EmbeddedGraphStore(data / "graph.db")
    store.upsert_nodes([Site(uid="SITE-CHI", name="Chicago", timezone="America/Chicago")])
    store.upsert_nodes([Machine(uid="M-1", name="Press 1")])
    store.upsert_nodes(
        ProcessRun(uid=uid, started_at=at, ended_at=at + timedelta(minutes=30), shift="early")
        for uid, at in RUNS.items()
    )
    store.upsert_edges(Edge("ON", uid, "M-1") for uid in RUNS)
    store.close()
    yield data


def test_the_cli_and_the_api_give_the_same_window_for_the_same_text(chicago_plant: Path) -> None:
    env = {**os.environ, "SQEMS_DATA_DIR": str(chicago_plant), "COLUMNS": "200"}
    env.pop("SQEMS_GRAPH_URI", None)
    env.pop("SQEMS_SITE_TIMEZONE", None)
    done = subprocess.run(
        [*SQEMS, "recall", "--machine", "M-1", "--from", "2026-01-20", "--to", "2026-01-25",
         "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cli_runs = sorted(json.loads(done.stdout)["triggers"])

    store = EmbeddedGraphStore(chicago_plant / "graph.db", read_only=True)
    access = AccessStore(None)
    _, token = access.create_key("test viewer", Role.VIEWER)
    app = create_app(Settings(data_dir=chicago_plant), store=store, access=access)
    query = """query($w: WindowInput!) {
      recallScope(input: {machine: {uid: "M-1", window: $w}}) { triggers }
    }"""

    def ask(window: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = httpx.post(
            f"{server.url}/graphql", json={"query": query, "variables": {"w": window}},
            headers={"Authorization": f"Bearer {token}"}, timeout=60,
        ).json()  # fmt: skip
        return body

    try:
        with LiveServer(app) as server:
            answer = ask({"start": "2026-01-20", "end": "2026-01-25"})
            skipped = ask({"start": "2026-03-08T02:30"})
            garbled = ask({"start": "20/01/2026"})
            offset = ask({"start": "2026-01-20T00:00-06:00", "end": "2026-01-25T23:59:59-06:00"})
            as_utc = ask({"start": "2026-01-20T00:00Z", "end": "2026-01-25T00:00Z"})
    finally:
        access.close()
        store.close()
    assert "errors" not in answer, answer
    assert cli_runs == sorted(answer["data"]["recallScope"]["triggers"]) == IN_CHICAGO
    assert sorted(offset["data"]["recallScope"]["triggers"]) == IN_CHICAGO
    assert sorted(as_utc["data"]["recallScope"]["triggers"]) == ["RUN-1", "RUN-2"]
    (error,) = skipped["errors"]
    assert "does not exist in America/Chicago (site SITE-CHI)" in error["message"]
    assert error["extensions"]["code"] == "VALIDATION_FAILED"
    (error,) = garbled["errors"]
    assert "'20/01/2026' is not a date or time" in error["message"]
    assert error["extensions"]["code"] == "GRAPHQL_INVALID"
