"""The floor: what the inspector's phone and the engineers' board cost over a live server.

Generates a plant (``--units`` units) into an embedded store in a temporary data
directory, plants a board on it — ``--capas`` CAPAs spread over the open workflow states
(each third addressing an alarm, a complaint or a defect; half of them due within
seconds, so overdue by the time they are looked at, their actions too) and the first of
``--alarms`` open alarms (as many cleared ones beside them), each ``RAISED_ON`` a machine,
a parameter and a run as the ingestion links them — with the CAPAs moved through the
workflow and written to the data directory's audit trail. Then starts ``sqems serve`` on
it as a separate process on a free loopback port (as ``benchmarks/api.py`` does) and,
one request at a time from a plain keep-alive client, measures:

1. **identify(code)** (the published ``identify.graphql``) for a unit's uid, a raw GS1
   element string of a unit (``01`` GTIN ``21`` serial, GS, ``10`` its batch), a batch and
   a material lot, beside the baseline ``entity(uid) { uid label }`` of the same unit, the
   API's cheapest lookup; each round asks all five for a random unit, median and p95.
2. **reportDefect** (``report_defect.graphql``) of a fresh unit with 0 photos (a JSON
   request), 1 and 3 photos (the phone's multipart request; 1600x1200 JPEGs of a
   gradient with noise, ~190 kB each, new in every report so that each is stored), and
   the same reports sent again with their reportId and photos (the idempotent path:
   nothing stored, no trail entry), beside the baseline ``setUnitStatus`` of another
   unit (another audited single-record mutation, a JSON request).
3. **boardUpdates push.** A WebSocket subscriber (graphql-transport-ws, as
   ``tests/test_board.py`` subscribes) takes the board; then ``--changes`` times a CAPA
   (reported over the API just before) is triaged with ``triageCapa``, at a random moment,
   and the time is taken from the mutation's sending and from its answer to the first
   pushed board showing the CAPA triaged; the baseline is the mutation's own round trip.
   The push includes the hub's trail watch (the audit trail's last sequence number read
   every 0.5 s: 0 to 0.5 s of waiting, 0.25 s on average) and its debounce (0.3 s, fixed);
   what is left is the board computed and sent, shown beside the ``board`` query's own
   round trip over HTTP.

Then the server is stopped and the store opened in this process:

4. **board snapshot** (:func:`sqems.quality.board.snapshot`) with each of ``--alarms``
   open alarms (the store is filled up to each), beside the baseline ``store.find`` of the
   ``Capa`` and ``Alarm`` labels alone, alternating, ``--repeats`` each, median and p95.

Nothing is asserted on time; the load average is printed (the machine may be shared). The
API benchmark serves the embedded store only, and so does this one.

    python benchmarks/floor.py                 # 20k units, 1-3 minutes on 2 cores
    python benchmarks/floor.py --quick         # a small plant and few rounds: a check
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from api import ENTITY, serve, wait_ready
from figures import percentile
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore
from sqems.graph_model.neo4j_server import free_port
from sqems.graph_model.nodes import Alarm, Priority, Severity
from sqems.graph_model.store import Edge
from sqems.graphql import AccessStore, Role
from sqems.graphql.access import ACCESS_FILE
from sqems.graphql.board import DEBOUNCE_S, POLL_S
from sqems.quality.audit import open_trail
from sqems.quality.board import snapshot
from sqems.quality.capa import Actor, Workflow
from sqems.settings import Settings

OPERATIONS = Path(__file__).resolve().parent.parent / "sqems" / "graphql" / "operations"
IDENTIFY = (OPERATIONS / "identify.graphql").read_text()
REPORT = (OPERATIONS / "report_defect.graphql").read_text()
SET_STATUS = (OPERATIONS / "set_unit_status.graphql").read_text()
BOARD = (OPERATIONS / "board.graphql").read_text()
BOARD_UPDATES = (OPERATIONS / "board_updates.graphql").read_text()
REPORT_CAPA = "mutation($t: String!) { reportCapa(title: $t) { uid } }"
TRIAGE = "mutation($u: String!) { triageCapa(uid: $u, priority: HIGH) { uid } }"
GTIN, GS = "09506000134352", "\x1d"
ENGINEER = Actor("bench-engineer", "engineer")
OUT, IN = Direction.OUT, Direction.IN
QUICK = {"units": 3_000, "lookups": 30, "reports": 6, "changes": 6, "repeats": 5,
         "alarms": "200,1000", "capas": 60}  # fmt: skip
"""What ``--quick`` sets: a small plant and few rounds, to see that everything runs."""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def figures(ms: list[float]) -> tuple[float, float]:
    """Median and p95 of samples in milliseconds."""
    return statistics.median(ms), percentile(ms, 0.95)


# --- the planted board -------------------------------------------------------------------


def raise_alarms(store: GraphStore, sites: list[tuple[str, str, str]], first: int, last: int,
                 now: datetime) -> list[str]:  # fmt: skip
    """Open alarms ``first`` .. ``last - 1`` and as many cleared ones, spread over the
    (run, machine, parameter) ``sites``, linked as the ingestion links them; the open
    ones' uids."""
    alarms, edges, opened = [], [], []
    for i in range(first, last):
        for cleared in (False, True):
            uid = f"ALM-F-{'C' if cleared else 'O'}-{i:06}"
            run, machine, parameter = sites[i % len(sites)]
            at = now - timedelta(minutes=i + 1)
            severity = Severity.MAJOR if i % 4 else Severity.CRITICAL
            ended = at + timedelta(seconds=30) if cleared else None
            alarms.append(Alarm(uid=uid, raised_at=at, rule="nelson_1", severity=severity,
                                message=f"{parameter} beyond 3 sigma on {machine}",
                                cleared_at=ended))  # fmt: skip
            edges += [Edge("RAISED_ON", uid, machine), Edge("RAISED_ON", uid, parameter),
                      Edge("RAISED_ON", uid, run)]  # fmt: skip
            if not cleared:
                opened.append(uid)
    with store.transaction() as tx:
        tx.add_nodes(alarms)
        tx.add_edges(edges)
    return opened


def alarm_sites(store: GraphStore) -> list[tuple[str, str, str]]:
    """(run, machine, parameter) for every parameter a run recorded."""
    runs = sorted(n.uid for n in store.find("ProcessRun"))
    machine = {e.src: e.dst for e in store.edges(runs, {"ON": OUT})}
    return [(e.src, machine[e.src], e.dst)
            for e in store.edges(runs, {"RECORDED": OUT}) if e.src in machine]  # fmt: skip


def plant_capas(flow: Workflow, count: int, alarms: list[str], complaints: list[str],
                defects: list[str]) -> None:  # fmt: skip
    """``count`` CAPAs, one in each open state in turn (reported, triaged, assigned,
    in_action, verifying), every one addressing an alarm, a complaint or a defect; every
    other one due in a few seconds (overdue when looked at), with its actions."""
    kinds = (alarms, complaints, defects)
    for i in range(count):
        among = kinds[i % 3]
        target = among[(i // 3) % len(among)]
        uid = flow.report(ENGINEER, f"planted {i}", "seen on the line", addresses=[target]).uid
        state = i % 5
        if state < 1:
            continue
        flow.triage(ENGINEER, uid, (Priority.LOW, Priority.MEDIUM, Priority.HIGH)[i % 3])
        if state < 2:
            continue
        soon = datetime.now(UTC) + (timedelta(seconds=3) if i % 2 else timedelta(days=7))
        flow.assign(ENGINEER, uid, owner=f"owner-{i % 7}", verifier=f"verifier-{i % 5}",
                    due_at=soon)  # fmt: skip
        if state < 3:
            continue
        flow.start(ENGINEER, uid)
        flow.add_action(ENGINEER, uid, "containment", "sort the stock", owner="otto", due_at=soon)
        flow.record_root_cause(ENGINEER, uid, five_why=["the oven drifted", "a worn sensor"])
        flow.add_action(ENGINEER, uid, "corrective", "replace the sensor", due_at=soon)
        if state < 4:
            continue
        flow.submit(ENGINEER, uid)


@dataclass
class Plant:
    units: list[str]
    batch_of: dict[str, str]
    batches: list[str]
    lots: list[str]
    defect_type: str
    open_alarms: int
    capas: int


def build(data: Path, args: argparse.Namespace, first_alarms: int) -> Plant:
    """The plant in ``data``'s embedded store, its board planted, the CAPAs in the trail."""
    with EmbeddedGraphStore(data / "graph.db") as store:
        load_plant(store, plant_sections(generate(PlantSpec(units=args.units, seed=args.seed))))
        now = datetime.now(UTC)
        opened = raise_alarms(store, alarm_sites(store), 0, first_alarms, now)
        trail = open_trail(Settings(data_dir=data))
        try:
            plant_capas(Workflow(store, trail), args.capas, opened,
                        sorted(n.uid for n in store.find("Complaint")),
                        sorted(n.uid for n in store.find("Defect")))  # fmt: skip
        finally:
            trail.close()
        units = sorted(n.uid for n in store.find("Unit"))
        batch_of = {e.dst: e.src for e in store.edges(units, {"PRODUCED": IN})}
        return Plant(
            units=[u for u in units if u in batch_of],
            batch_of=batch_of,
            batches=sorted(n.uid for n in store.find("Batch")),
            lots=sorted(n.uid for n in store.find("MaterialLot")),
            defect_type=sorted(n.uid for n in store.find("DefectType"))[0],
            open_alarms=first_alarms,
            capas=args.capas,
        )


# --- the client ----------------------------------------------------------------------------


@dataclass
class Client:
    """One keep-alive HTTP client per role, one request at a time; a GraphQL error is a
    failure of the benchmark, not a sample."""

    url: str
    tokens: dict[Role, str]
    clients: dict[Role, httpx.Client] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for role, token in self.tokens.items():
            self.clients[role] = httpx.Client(
                base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            )

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def timed(
        self, role: Role, send: Callable[[httpx.Client], httpx.Response]
    ) -> tuple[float, dict[str, Any]]:
        """Milliseconds of one request and its answer's data."""
        began = time.perf_counter()
        response = send(self.clients[role])
        ms = (time.perf_counter() - began) * 1000
        body: dict[str, Any] = response.json() if response.status_code == 200 else {}
        if response.status_code != 200 or "errors" in body:
            raise RuntimeError(f"the server answered {response.status_code}: {response.text[:500]}")
        return ms, body["data"]

    def post(self, role: Role, query: str, **variables: Any) -> tuple[float, dict[str, Any]]:
        body = {"query": query, "variables": variables}
        return self.timed(role, lambda c: c.post("/graphql", json=body))

    def report(self, report: dict[str, Any], photos: list[bytes]) -> tuple[float, dict[str, Any]]:
        """A defect report as the phone sends it: JSON without photos, multipart with."""
        if not photos:
            return self.post(Role.INSPECTOR, REPORT, report=report)
        operations = {"query": REPORT, "operationName": "ReportDefect",
                      "variables": {"report": report, "photos": [None] * len(photos)}}  # fmt: skip
        mapping = {str(i): [f"variables.photos.{i}"] for i in range(len(photos))}
        files = {str(i): (f"photo-{i}.jpg", body, "image/jpeg") for i, body in enumerate(photos)}
        form = {"operations": json.dumps(operations), "map": json.dumps(mapping)}
        return self.timed(Role.INSPECTOR, lambda c: c.post("/graphql", data=form, files=files))


# --- 1. identify ---------------------------------------------------------------------------


def identify_rounds(client: Client, plant: Plant, rounds: int) -> dict[str, list[float]]:
    """Each round: the baseline entity lookup of a random unit, then identify of that
    unit, of its raw GS1 string, of a batch and of a lot."""
    rng = random.Random(1)
    samples: dict[str, list[float]] = {}
    for k in range(rounds + 5):  # the first five warm up
        unit = rng.choice(plant.units)
        calls = {
            "entity(uid) of the unit (baseline)": (ENTITY, {"uid": unit}),
            "identify: unit uid": (IDENTIFY, {"code": unit}),
            "identify: raw GS1 (01, 21, GS, 10)": (
                IDENTIFY, {"code": f"01{GTIN}21{unit}{GS}10{plant.batch_of[unit]}"}),
            "identify: batch uid": (IDENTIFY, {"code": rng.choice(plant.batches)}),
            "identify: material lot uid": (IDENTIFY, {"code": rng.choice(plant.lots)}),
        }  # fmt: skip
        for name, (query, variables) in calls.items():
            ms, data = client.post(Role.VIEWER, query, **variables)
            if query is IDENTIFY and data["identify"]["uid"] not in (unit, variables["code"]):
                raise RuntimeError(f"identify({variables['code']!r}) named {data['identify']}")
            if k >= 5:
                samples.setdefault(name, []).append(ms)
    return samples


# --- 2. reportDefect -----------------------------------------------------------------------


class Photos:
    """Phone-sized JPEGs (1600x1200, quality 80, ~190 kB), each different: a gradient
    with sensor-like noise, the noise cut from a larger field at a random place."""

    W, H, SIGMA = 1600, 1200, 6.0

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        y, x = np.mgrid[0 : self.H, 0 : self.W]
        self.base = np.stack(
            [x * 255 / self.W, y * 255 / self.H, (x + y) * 255 / (self.W + self.H)], axis=-1
        ).astype(np.float32)
        self.noise = self.rng.normal(0, self.SIGMA, (self.H + 256, self.W + 256, 3)).astype(
            np.float32
        )

    def make(self) -> bytes:
        dy, dx = self.rng.integers(0, 256, 2)
        pixels = np.clip(self.base + self.noise[dy : dy + self.H, dx : dx + self.W], 0, 255)
        out = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(out, "JPEG", quality=80)
        return out.getvalue()


def report_rounds(
    client: Client, plant: Plant, rounds: int, seed: int
) -> tuple[dict[str, list[float]], float]:
    """Each round: setUnitStatus of one fresh unit (baseline), reports of 0, 1 and 3
    fresh photos on three others, then the 0- and 3-photo reports sent again. The
    photos' mean size in bytes too."""
    print("making photos…", file=sys.stderr, flush=True)
    total = rounds + 2
    maker = Photos(seed)
    sets = [([maker.make()], [maker.make() for _ in range(3)]) for _ in range(total)]
    sizes = [len(p) for one, three in sets for p in one + three]
    rng = random.Random(2)
    fresh = iter(rng.sample(plant.units, 4 * total))
    samples: dict[str, list[float]] = {}

    def new_report(target: str) -> dict[str, Any]:
        return {"reportId": str(uuid.uuid4()), "target": target, "defectType": plant.defect_type,
                "severity": "MAJOR", "note": "scratch on the housing, left side"}  # fmt: skip

    for k, (one, three) in enumerate(sets):
        reports = {0: (new_report(next(fresh)), []), 1: (new_report(next(fresh)), one),
                   3: (new_report(next(fresh)), three)}  # fmt: skip
        took = {"setUnitStatus of one unit (baseline)": client.post(
            Role.INSPECTOR, SET_STATUS, uid=next(fresh), status="REWORKED")[0]}  # fmt: skip
        for n, (report, photos) in reports.items():
            ms, data = client.report(report, photos)
            got = data["reportDefect"]
            if not got["created"] or len(got["evidence"]) != n:
                raise RuntimeError(f"a new report with {n} photos answered {got}")
            took[f"reportDefect, {n} photo{'s' if n != 1 else ''}"] = ms
        for n in (0, 3):
            report, photos = reports[n]
            ms, data = client.report(report, photos)
            if data["reportDefect"]["created"]:
                raise RuntimeError(f"report {report['reportId']} sent again made a new defect")
            took[f"the same reportId again, {n} photos"] = ms
        if k >= 2:  # two rounds warm up
            for name, ms in took.items():
                samples.setdefault(name, []).append(ms)
    return samples, statistics.mean(sizes)


# --- 3. the push -----------------------------------------------------------------------------


def subscribe(url: str, token: str) -> Iterator[ClientConnection]:
    """A boardUpdates subscription over graphql-transport-ws, as the /board page opens it."""
    with connect(url.replace("http://", "ws://") + "/graphql",
                 subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                 additional_headers={"Authorization": f"Bearer {token}"},
                 max_size=None) as ws:  # fmt: skip
        ws.send(json.dumps({"type": "connection_init"}))
        ack = json.loads(ws.recv(30))
        if ack["type"] != "connection_ack":
            raise RuntimeError(f"the WebSocket answered {ack}")
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": BOARD_UPDATES}}))
        yield ws


def next_board(ws: ClientConnection, timeout: float) -> dict[str, Any]:
    message = json.loads(ws.recv(timeout))
    if message.get("type") != "next" or "errors" in message["payload"]:
        raise RuntimeError(f"the subscription sent {str(message)[:500]}")
    board: dict[str, Any] = message["payload"]["data"]["boardUpdates"]
    return board


def triaged(board: dict[str, Any], uid: str) -> bool:
    column = next(c for c in board["columns"] if c["status"] == "triaged")
    return any(card["uid"] == uid for card in column["cards"])


def push_rounds(client: Client, changes: int) -> dict[str, list[float]]:
    """``changes`` CAPAs reported, then triaged one at a time while a subscriber listens;
    the times from each triage's sending and its answer to the board showing it."""
    capas = [client.post(Role.INSPECTOR, REPORT_CAPA, t=f"pushed {i}")[1]["reportCapa"]["uid"]
             for i in range(changes)]  # fmt: skip
    samples: dict[str, list[float]] = {"sent": [], "answered": [], "rtt": [], "board": []}
    rng = random.Random(3)
    for ws in subscribe(client.url, client.tokens[Role.VIEWER]):
        next_board(ws, 60)
        time.sleep(POLL_S + DEBOUNCE_S + 1)  # the reports above arrive as one board
        while True:
            try:
                next_board(ws, 0)
            except TimeoutError:
                break
        for uid in capas:
            time.sleep(rng.uniform(0.1, 0.1 + POLL_S))  # any moment of the watch's cycle
            sent = time.perf_counter()
            rtt, _ = client.post(Role.ENGINEER, TRIAGE, u=uid)
            answered = time.perf_counter()
            while not triaged(next_board(ws, 30), uid):
                pass
            pushed = time.perf_counter()
            samples["sent"].append((pushed - sent) * 1000)
            samples["answered"].append((pushed - answered) * 1000)
            samples["rtt"].append(rtt)
    for _ in range(max(5, changes // 3)):
        samples["board"].append(client.post(Role.VIEWER, BOARD)[0])
    return samples


# --- 4. the snapshot -------------------------------------------------------------------------


def snapshot_rounds(store: GraphStore, repeats: int) -> tuple[list[float], list[float], int, int]:
    """The snapshot and the baseline label scans, alternating (one unmeasured call of
    each first); ms each, and the board's open alarms and CAPA cards."""
    board = snapshot(store)
    store.find("Capa"), store.find("Alarm")
    took: list[float] = []
    floor: list[float] = []
    for _ in range(repeats):
        began = time.perf_counter()
        snapshot(store)
        took.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        store.find("Capa")
        store.find("Alarm")
        floor.append((time.perf_counter() - began) * 1000)
    cards = sum(len(c.cards) for c in board.columns)
    return took, floor, board.alarm_count, cards


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20_000, help="units in the plant")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lookups", type=int, default=150, help="rounds of lookups")
    parser.add_argument("--reports", type=int, default=30, help="rounds of defect reports")
    parser.add_argument("--changes", type=int, default=30, help="CAPAs triaged while watched")
    parser.add_argument("--repeats", type=int, default=15, help="snapshots per board size")
    parser.add_argument("--alarms", default="1000,10000", help="open alarms of each board")
    parser.add_argument("--capas", type=int, default=300, help="CAPAs planted on the board")
    parser.add_argument("--quick", action="store_true", help=f"a fast check: {QUICK}")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    sizes = sorted(int(a) for a in args.alarms.split(","))
    loads = {"start": load()}

    with tempfile.TemporaryDirectory(prefix="sqems-floor-bench-") as tmp:
        data = Path(tmp)
        print(f"building a {args.units:,}-unit plant with {sizes[0]:,} open alarms and "
              f"{args.capas} CAPAs…", file=sys.stderr, flush=True)  # fmt: skip
        began = time.perf_counter()
        plant = build(data, args, sizes[0])
        build_s = time.perf_counter() - began
        access = AccessStore(data / ACCESS_FILE)
        tokens = {role: access.create_key(f"bench {role.name.lower()}", role)[1]
                  for role in (Role.VIEWER, Role.INSPECTOR, Role.ENGINEER)}  # fmt: skip
        access.close()

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = serve(data, port, None)
        client = Client(url, tokens)
        try:
            print("starting the server…", file=sys.stderr, flush=True)
            wait_ready(url, server)
            print("1. identify…", file=sys.stderr, flush=True)
            lookups = identify_rounds(client, plant, args.lookups)
            print("2. reportDefect…", file=sys.stderr, flush=True)
            reports, photo_bytes = report_rounds(client, plant, args.reports, args.seed)
            loads["after the reports"] = load()
            print("3. boardUpdates…", file=sys.stderr, flush=True)
            push = push_rounds(client, args.changes)
            loads["after the push"] = load()
        finally:
            client.close()
            server.terminate()
            server.wait(timeout=60)

        print("4. board snapshots…", file=sys.stderr, flush=True)
        boards = []
        with EmbeddedGraphStore(data / "graph.db") as store:
            sites = alarm_sites(store)
            have = sizes[0]
            for size in sizes:
                if size > have:
                    raise_alarms(store, sites, have, size, datetime.now(UTC))
                    have = size
                boards.append(snapshot_rounds(store, args.repeats))
        loads["end"] = load()

    report(args, plant, build_s, lookups, reports, photo_bytes, push, boards, loads)


def row(name: str, ms: list[float], floor: list[float] | None, width: int = 40) -> str:
    p50, p95 = figures(ms)
    ratio = f"{p50 / statistics.median(floor):>7.2f}x" if floor else f"{'':>8}"
    return f"   {name:<{width}} {len(ms):>5} {p50:>9.2f} {p95:>9.2f} {ratio}"


def report(
    args: argparse.Namespace,
    plant: Plant,
    build_s: float,
    lookups: dict[str, list[float]],
    reports: dict[str, list[float]],
    photo_bytes: float,
    push: dict[str, list[float]],
    boards: list[tuple[list[float], list[float], int, int]],
    loads: dict[str, str],
) -> None:
    print()
    print(f"plant: {args.units:,} units (seed {args.seed}), embedded store, served by "
          f"`sqems serve` in its own process; {plant.open_alarms:,} open alarms (and as many "
          f"cleared) and {plant.capas} CAPAs planted; built in {build_s:.1f} s")  # fmt: skip
    print(f"{os.cpu_count()} cores; load average (1, 5, 15 min): "
          + "; ".join(f"{k} {v}" for k, v in loads.items()))  # fmt: skip
    head = f"   {'':<40} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'p50/base':>8}"

    print()
    print("1. identify(code) over HTTP, one request at a time, beside entity(uid) of the same unit")
    print(head)
    floor = lookups["entity(uid) of the unit (baseline)"]
    for name, ms in lookups.items():
        print(row(name, ms, None if ms is floor else floor))

    print()
    print(f"2. reportDefect over HTTP (photos: 1600x1200 JPEG, {photo_bytes / 1000:.0f} kB on "
          f"average, new in each report), beside setUnitStatus")  # fmt: skip
    print(head)
    floor = reports["setUnitStatus of one unit (baseline)"]
    for name, ms in reports.items():
        print(row(name, ms, None if ms is floor else floor))

    print()
    n = len(push["sent"])
    print(f"3. boardUpdates: a CAPA triaged over HTTP -> the pushed board showing it, over "
          f"graphql-transport-ws ({n} changes)")  # fmt: skip
    print(head)
    print(row("triageCapa round trip (baseline)", push["rtt"], None))
    print(row("push, from the mutation's sending", push["sent"], push["rtt"]))
    print(row("push, from the mutation's answer", push["answered"], push["rtt"]))
    print(row("board query over HTTP (compute + send)", push["board"], None))
    after = statistics.median(push["answered"])
    built = statistics.median(push["board"])
    watch = after - DEBOUNCE_S * 1000 - built
    print(
        f"   the push includes the hub's trail watch (the trail's last seq read every "
        f"{POLL_S:.1f} s: 0-{POLL_S * 1000:.0f} ms of waiting, {POLL_S * 500:.0f} ms on average)"
    )
    debounce = DEBOUNCE_S * 1000
    print(f"   and its debounce ({debounce:.0f} ms, fixed). Of the median {after:.0f} ms "
          f"after the answer: debounce {debounce:.0f} ms, the board")  # fmt: skip
    print(f"   computed and sent ~{built:.0f} ms (the board query's median), the watch's "
          f"wait ~{watch:.0f} ms (the rest).")  # fmt: skip

    print()
    print(f"4. board snapshot in process (sqems.quality.board.snapshot), {args.repeats} each, "
          f"beside store.find('Capa') + store.find('Alarm')")  # fmt: skip
    print(f"   {'open alarms':>11} {'alarms':>7} {'CAPA cards':>10} {'snapshot p50':>13} "
          f"{'p95':>8} {'find p50':>9} {'p95':>8} {'ratio':>7}")  # fmt: skip
    for took, floor, open_alarms, cards in boards:
        s50, s95 = figures(took)
        f50, f95 = figures(floor)
        print(f"   {open_alarms:>11,} {2 * open_alarms:>7,} {cards:>10,} {s50:>10.1f} ms "
              f"{s95:>5.1f} ms {f50:>6.1f} ms {f95:>5.1f} ms {s50 / f50:>6.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
