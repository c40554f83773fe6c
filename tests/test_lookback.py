"""The §7.6 look-back as one action, on the infusion-pump plant: the occlusion tester's
calibration found out of tolerance gives exactly the runs since its last good calibration
(the plant's truth), their batches, the pumps made in them, where those went; a failed
encoder calibration reaches the pumps its motor modules were built into; a passing
calibration is refused; the CAPA opens once, with its trail entry - in Python, over the
API and on the command line at 80 columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets import pump_layout as pl
from sqems.datasets.files import plant_sections
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import EmbeddedGraphStore, GraphStore, open_store
from sqems.graph_model.calibration import CalWindowKind, calibration_windows
from sqems.graph_model.nodes import Calibration, CalibrationVerdict, Priority
from sqems.graph_model.store import Direction, Edge
from sqems.graphql import AccessStore, Role, create_app
from sqems.quality.audit import AuditTrail
from sqems.quality.capa import Actor, Workflow
from sqems.quality.lookback import look_back, open_capa
from sqems.settings import Settings

ANA = Actor("ana", "engineer")
SQEMS = [sys.executable, "-c", "from sqems.cli import main; main()"]
OPERATIONS = Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations"


@cache
def _plant() -> Any:
    return generate(PlantSpec(shape="pump", units=3_000, seed=3))


def _state() -> dict[str, Any]:
    return next(s for s in _plant().truth["states"] if s["id"] == "occlusion-out-of-tolerance")


def _loaded() -> GraphStore:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(_plant()))
    return store


@pytest.fixture(scope="module")
def plant() -> Iterator[GraphStore]:
    store = _loaded()
    yield store
    store.close()


class Genealogy:
    """The plant's genealogy read from the generator's own tables, not the graph."""

    def __init__(self) -> None:
        self.out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for kind, table in _plant().edges.items():
            for src, dst in zip(table.columns["src"], table.columns["dst"], strict=True):
                self.out[kind][src].append(dst)
        self.ran_by = {r: b for b, runs in self.out["RAN"].items() for r in runs}

    def follow(self, kind: str, uids: Iterable[str]) -> set[str]:
        return {d for u in uids for d in self.out[kind].get(u, [])}

    def assemblies(self, units: Iterable[str]) -> set[str]:
        found, level = set(), set(units)
        while level := self.follow("ASSEMBLED_INTO", level):
            found |= level
        return found


def _uids(units: Iterable[Any]) -> set[str]:
    return {u.uid for u in units}


# --- the look-back --------------------------------------------------------------------------


def test_the_occlusion_testers_look_back_is_every_run_since_its_last_good_calibration(
    plant: GraphStore,
) -> None:
    truth = _state()
    good, bad = truth["records"]
    found = look_back(plant, bad)

    assert found.machine == pl.OCCLUSION_TESTER and found.last_good == good
    assert found.window.start == datetime.fromisoformat(truth["window"]["start"])
    assert found.window.end == datetime.fromisoformat(truth["window"]["end"])
    # the runs that started in the window, and the one that was still running when the
    # last good calibration was performed: any part of a run in the window is in question
    assert truth["runs"] and truth["straddling_runs"]
    assert set(found.runs) == set(truth["runs"]) | set(truth["straddling_runs"])

    g = Genealogy()
    batches = {g.ran_by[r] for r in found.runs}
    assert set(found.batches) == batches and set(truth["batches"]) <= batches
    pumps = g.follow("PRODUCED", batches)
    assert _uids(found.made) == pumps and len(pumps) >= truth["units"]
    assert found.assemblies == []  # a pump is the finished device
    shipped = {u for u in pumps if g.out["SHIPPED_IN"].get(u)}
    assert shipped and _uids(found.shipped) == shipped
    shipments = g.follow("SHIPPED_IN", pumps)
    assert set(found.shipments) == shipments
    assert set(found.customers) == g.follow("DELIVERED_TO", shipments)
    assert found.counts() == {
        "runs": len(found.runs), "batches": len(batches), "units_made": len(pumps),
        "assemblies": 0, "units_shipped": len(shipped), "shipments": len(shipments),
        "customers": len(found.customers),
    }  # fmt: skip
    # in site time across the DST change: both ends are daylight time in Chicago
    assert found.window_text == "2026-03-24 10:00 CDT to 2026-04-01 10:00 CDT (America/Chicago)"
    assert found.capa is None


def test_a_failed_encoder_calibration_reaches_the_pumps_its_motor_modules_went_into() -> None:
    store = _loaded()
    machine = "M-ENC-2"
    failing = Calibration(
        uid="CAL-ENC-2-FAIL",
        performed_at=datetime(2026, 3, 20, 15, tzinfo=UTC),
        verdict=CalibrationVerdict.FAIL,
        as_found=0.09, reference=0.0, tolerance=0.05, measured_unit="deg",
    )  # fmt: skip
    store.upsert_nodes([failing])
    store.upsert_edges([Edge("CALIBRATES", failing.uid, machine)])
    (window,) = [
        w
        for w in calibration_windows(store, machine)
        if w.record == failing.uid and w.kind is CalWindowKind.FOUND_OUT_OF_TOLERANCE
    ]
    assert window.start is not None and window.end == failing.performed_at

    found = look_back(store, failing.uid)
    runs = store.get_many(e.src for e in store.edges([machine], {"ON": Direction.IN}))
    expected = {
        u for u, r in runs.items()
        if r.started_at < failing.performed_at and r.ended_at >= window.start
    }  # fmt: skip
    assert expected and set(found.runs) == expected
    g = Genealogy()
    modules = g.follow("PRODUCED", {g.ran_by[r] for r in expected})
    assert _uids(found.made) == modules
    pumps = g.assemblies(modules)
    assert pumps and _uids(found.assemblies) == pumps
    # motor modules travel inside their pumps: the pumps are what was shipped
    assert _uids(found.shipped) == {p for p in pumps if g.out["SHIPPED_IN"].get(p)}
    assert f"they went into {len(pumps):,} assemblies" in found.problem
    store.close()


def test_a_passing_calibration_is_refused_saying_no_look_back_is_due(plant: GraphStore) -> None:
    good = _state()["records"][0]
    with pytest.raises(ValidationFailed) as refused:
        look_back(plant, good)
    assert refused.value.message.startswith(f"calibration {good} passed (as found ")
    assert "no look-back is due" in refused.value.message
    with pytest.raises(NotFound, match="calibration CAL-NONE is not in the graph"):
        look_back(plant, "CAL-NONE")
    batch = _state()["batches"][0]
    with pytest.raises(NotFound, match=f"{batch} is a Batch, not a Calibration"):
        look_back(plant, batch)


def _close(flow: Workflow, uid: str) -> None:
    due = datetime.now(UTC) + timedelta(days=30)
    flow.triage(ANA, uid, Priority.HIGH)
    flow.assign(ANA, uid, owner="olga", verifier="vera", due_at=due)
    flow.start(ANA, uid)
    flow.record_root_cause(ANA, uid, five_why=["tester read low", "pressure sensor drifted"])
    flow.add_action(ANA, uid, "corrective", "re-test the pumps of the window")
    flow.submit(ANA, uid)
    flow.verify(Actor("vera", "engineer"), uid, effective=True, note="all pumps re-tested")


def test_the_look_back_capa_is_opened_once_with_its_trail_entry() -> None:
    store, trail = _loaded(), AuditTrail(None)
    bad = _state()["records"][1]
    with ThreadPoolExecutor(4) as pool:  # four look-backs at once open one CAPA
        done = list(pool.map(lambda _: open_capa(store, trail, ANA, bad), range(4)))
    assert len({d.capa.uid for d in done if d.capa}) == 1
    assert sum(d.capa_opened for d in done) == 1
    first = next(d for d in done if d.capa_opened)
    capa = first.capa
    assert capa is not None and capa.status.value == "reported"
    assert capa.title == f"Look-back: M-OCCL-1 found out of tolerance on 2026-04-01 ({bad})"
    c = first.counts()
    assert (
        f"From 2026-03-24 10:00 CDT to 2026-04-01 10:00 CDT (America/Chicago) the machine ran "
        f"{c['runs']} process runs of {c['batches']} batches, which made {c['units_made']} "
        f"units; {c['units_shipped']} units left in {c['shipments']} shipments to "
        f"{c['customers']} customers"
    ) in capa.problem
    addressed = {e.dst for e in store.edges([capa.uid], {"ADDRESSES": Direction.OUT})}
    assert addressed == {bad, *first.batches}

    again = open_capa(store, trail, ANA, bad)
    assert again.capa == capa and not again.capa_opened
    assert look_back(store, bad).capa == capa
    flow = Workflow(store, trail)
    (entry,) = flow.history(capa.uid)
    assert (entry.actor, entry.role, entry.action) == ("ana", "engineer", "reported")
    assert sorted(entry.after["addresses"]) == sorted(addressed)

    _close(flow, capa.uid)  # closed, it is done: the next look-back opens a new one
    assert look_back(store, bad).capa is None
    reopened = open_capa(store, trail, ANA, bad)
    assert reopened.capa_opened and reopened.capa is not None and reopened.capa.uid != capa.uid
    assert trail.verify().ok
    store.close()


# --- over the API ---------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    tokens: dict[str, str]

    def post(self, who: str, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=60,
        )
        assert response.status_code == 200 and "Traceback" not in response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store = _loaded()
    access = AccessStore(None)
    tokens = {name: access.create_key(name, role)[1]
              for name, role in (("erik", Role.ENGINEER), ("val", Role.VIEWER),
                                 ("adam", Role.ADMIN))}  # fmt: skip
    settings = Settings(data_dir=tmp_path_factory.mktemp("api-lookback"))
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Served(server.url, tokens)
    access.close()
    store.close()


def test_the_published_look_back_opens_its_capa_once_over_a_live_server(
    served: Served, plant: GraphStore
) -> None:
    operation = (OPERATIONS / "look_back.graphql").read_text()
    good, bad = _state()["records"]
    expected = look_back(plant, bad)

    read = served.post("val", operation, calibration=bad, first=5)["data"]["lookBack"]
    assert read["calibration"] == {"uid": bad, "performedAt": "2026-04-01T15:00:00+00:00",
                                   "verdict": "FAIL", "asFound": 96.6, "reference": 100.0,
                                   "tolerance": 1.5}  # fmt: skip
    assert read["machine"] == "M-OCCL-1" and read["lastGood"] == good
    assert read["windowText"] == expected.window_text and read["zone"] == "America/Chicago"
    assert read["runs"] == expected.runs and read["batches"] == expected.batches
    c = expected.counts()
    assert read["counts"] == {"runs": c["runs"], "batches": c["batches"],
                              "unitsMade": c["units_made"], "assemblies": 0,
                              "unitsShipped": c["units_shipped"], "shipments": c["shipments"],
                              "customers": c["customers"]}  # fmt: skip
    assert read["units"]["totalCount"] == c["units_made"]
    assert len(read["units"]["edges"]) == 5 and all(
        e["node"]["made"] for e in read["units"]["edges"]
    )
    assert {x["uid"] for x in read["customers"]} == set(expected.customers)
    assert read["capa"] is None and read["capaOpened"] is False

    denied = served.post("val", operation, calibration=bad, openCapa=True)["errors"][0]
    assert denied["extensions"]["code"] == "FORBIDDEN"
    opened = served.post("erik", operation, calibration=bad, openCapa=True)["data"]["lookBack"]
    assert opened["capaOpened"] is True and opened["capa"]["status"] == "REPORTED"
    assert opened["capa"]["title"].startswith("Look-back: M-OCCL-1 found out of tolerance on")
    again = served.post("erik", operation, calibration=bad, openCapa=True)["data"]["lookBack"]
    assert again["capaOpened"] is False and again["capa"]["uid"] == opened["capa"]["uid"]
    seen = served.post("val", operation, calibration=bad)["data"]["lookBack"]
    assert seen["capa"]["uid"] == opened["capa"]["uid"]

    history = served.post(
        "val", "query($u: String!) { capaHistory(uid: $u) { actor action } }",
        u=opened["capa"]["uid"],
    )["data"]["capaHistory"]  # fmt: skip
    assert history == [{"actor": "erik", "action": "reported"}]

    refused = served.post("val", operation, calibration=good)["errors"][0]
    assert refused["extensions"]["code"] == "VALIDATION_FAILED"
    assert "no look-back is due" in refused["message"]
    log = served.post("adam", "query { auditLog(last: 10) { operation outcome } }")
    outcomes = [e["outcome"] for e in log["data"]["auditLog"] if e["operation"] == "lookBack"]
    assert sorted(set(outcomes)) == ["denied: FORBIDDEN", "failed: VALIDATION_FAILED", "ok"]


# --- on the command line --------------------------------------------------------------------


def _sqems(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQEMS_DATA_DIR": str(data_dir), "COLUMNS": "80"}
    env.pop("SQEMS_GRAPH_URI", None)
    env.pop("SQEMS_SITE_TIMEZONE", None)
    return subprocess.run(
        [*SQEMS, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _narrow(text: str) -> str:
    wide = [line for line in text.splitlines() if len(line.rstrip()) > 80]
    assert not wide, "\n".join(wide)
    return " ".join(text.split())


def test_the_lookback_command_at_80_columns(tmp_path: Path, plant: GraphStore) -> None:
    store = open_store(Settings(data_dir=tmp_path))
    load_plant(store, plant_sections(_plant()))
    store.close()
    good, bad = _state()["records"]
    c = look_back(plant, bad).counts()

    shown = _sqems(tmp_path, "lookback", bad)
    assert shown.returncode == 0, shown.stderr
    text = _narrow(shown.stdout)
    assert text.startswith(
        f"look-back of {bad}: M-OCCL-1 found out of tolerance on 2026-04-01 10:00 CDT (as "
        "found 96.6 kPa against 100 ± 1.5 kPa; verdict fail)"
    )
    assert (f"window: 2026-03-24 10:00 CDT to 2026-04-01 10:00 CDT (America/Chicago), since "
            f"the last good calibration {good}") in text  # fmt: skip
    assert f"process runs {c['runs']} batches {c['batches']} units made {c['units_made']}" in text
    assert f"units shipped {c['units_shipped']}" in text and "customers to notify:" in text
    assert "no look-back CAPA is open: run with --open-capa to open one" in text

    opened = _sqems(tmp_path, "lookback", bad, "--open-capa")
    assert opened.returncode == 0, opened.stderr
    text = _narrow(opened.stdout)
    assert f"opened (reported), addressing {bad} and {c['batches']} batches" in text
    capa = text.split("CAPA ")[-1].split()[0]
    again = _narrow(_sqems(tmp_path, "lookback", bad, "--open-capa").stdout)
    assert f"CAPA {capa} is open already for this look-back (reported, opened" in again

    as_json = json.loads(_sqems(tmp_path, "lookback", bad, "--json").stdout)
    assert as_json["counts"] == c and as_json["capa"] == capa and not as_json["capa_opened"]
    assert as_json["window"]["end"] == "2026-04-01T15:00:00+00:00"

    refused = _sqems(tmp_path, "lookback", good)
    assert refused.returncode == 2 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"error: calibration {good} passed (as found")
    assert "no look-back is due" in line
