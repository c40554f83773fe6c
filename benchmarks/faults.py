"""Fault and attack battery: what a hostile client, a careless integrator and a broken
sensor do to a running SQEMS, each tried and counted.

Starts Mosquitto and ``sqems serve --ingest`` (a separate process, embedded store, a
small generated plant, a 5 s request limit) and then tries, in turn:

* **API attacks**: a fragment bomb, alias and depth bombs, bodies that are not a
  GraphQL request (a string, a number, invalid UTF-8, 10,000-deep arrays), an oversized
  body, an unauthenticated multipart upload, a multipart request for a slow query, key
  names with control characters, and 20 concurrent ``addCapaAction`` on one CAPA.
  While each runs, ``/healthz`` is probed; an attack is *survived* when it is refused
  (or answered) with a typed JSON error, ``/healthz`` answered within 2 s throughout,
  and the API answers a reference query as before. For the concurrent writes every
  action must be in the CAPA and in its trail.
* **Ingestion faults**: poison readings (a unit pint chokes on, a value that overflows
  to infinity, a timestamp in year 1, booleans and strings as values, malformed JSON, a
  topic naming a line or machine that is not the graph's, a parameter the machine does
  not have, a message of 1,000 bad readings), each sent between good readings. Survived
  when ingestion stays healthy and goes on: every good reading is stored, every bad
  one is quarantined with its reason (sent = stored + quarantined: nothing lost), the
  quarantine grows by about what was sent, not by its square, and a real excursion on a
  critical parameter still sends ``stop_line`` to the machine's own line.

    python benchmarks/faults.py
    python benchmarks/faults.py --good 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from api import wait_ready
from ingestion import Broker, client

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore
from sqems.graph_model.neo4j_server import free_port
from sqems.graphql import AccessStore, Role
from sqems.graphql.app import ACCESS_FILE
from sqems.ingestion.sensors import Sensor, sensors_of

TIMEOUT_S = 5.0
STATUS = """{ ingestionStatus { running connected received accepted quarantined
  duplicates alarms health { healthy reason restarts } } }"""
REFERENCE = "query($uid: String!) { entity(uid: $uid) { uid label } }"


@dataclass
class Outcome:
    name: str
    tried: int = 0
    survived: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)


class Target:
    """The running server: GraphQL calls, probes and the broker it ingests from."""

    def __init__(self, url: str, tokens: dict[str, str], broker_port: int) -> None:
        self.url = url
        self.tokens = tokens
        self.broker_port = broker_port
        self.http = httpx.Client(timeout=60)

    def gql(self, who: str | None, query: str, **variables: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.http.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, headers=headers
        )

    def data(self, who: str, query: str, **variables: Any) -> Any:
        body = self.gql(who, query, **variables).json()
        if "errors" in body:
            raise RuntimeError(f"{query.split('(', maxsplit=1)[0]}: {body['errors']}")
        return body["data"]

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.data("admin", STATUS)["ingestionStatus"]
        return answer


def probing(target: Target, attack: Callable[[], bool]) -> tuple[bool, float]:
    """Run ``attack`` while probing /healthz every 100 ms: (its verdict, the slowest
    probe in seconds)."""
    slowest = 0.0
    done = threading.Event()

    def probe() -> None:
        nonlocal slowest
        with httpx.Client(timeout=30) as http:
            while not done.is_set():
                began = time.perf_counter()
                try:
                    http.get(f"{target.url}/healthz")
                except httpx.HTTPError:
                    slowest = max(slowest, 30.0)
                slowest = max(slowest, time.perf_counter() - began)
                time.sleep(0.1)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        verdict = attack()
    finally:
        done.set()
        prober.join()
    return verdict, slowest


def typed_error(response: httpx.Response, *statuses: int) -> bool:
    if response.status_code not in statuses or "Traceback" in response.text:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    errors = body.get("errors") or []
    return bool(errors) and all("code" in (e.get("extensions") or {}) for e in errors)


def api_attacks(target: Target, unit: str) -> list[Outcome]:
    reference = target.data("viewer", REFERENCE, uid=unit)
    url = f"{target.url}/graphql"
    raw = {"Content-Type": "application/json"}

    def bomb() -> bool:
        fragments = ["fragment F0 on Query { __typename }"] + [
            f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 25)
        ]
        query = "query { ...F24 }\n" + "\n".join(fragments)
        return typed_error(target.gql(None, query), 200, 400)

    def aliases() -> bool:
        query = "{ " + " ".join(f"a{i}: __typename" for i in range(50_000)) + " }"
        return typed_error(target.gql("viewer", query), 200, 400, 413)

    def depth() -> bool:
        query = "{ " + 'entity(uid: "x") { ... on Unit { ' * 200 + "uid" + " } }" * 200 + " }"
        return typed_error(target.gql("viewer", query), 200, 400, 413)

    def body(content: bytes) -> Callable[[], bool]:
        return lambda: typed_error(target.http.post(url, content=content, headers=raw), 400)

    def oversized() -> bool:
        query = json.dumps({"query": "{ __typename }", "pad": "x" * (3 << 20)}).encode()
        return typed_error(target.http.post(url, content=query, headers=raw), 413)

    def upload_unauthenticated() -> bool:
        operations = {"query": "mutation($f: Upload!) { importBim(file: $f) { model } }",
                      "variables": {"f": None}}  # fmt: skip
        began = time.perf_counter()
        try:
            response = target.http.post(
                url,
                data={"operations": json.dumps(operations), "map": '{"0": ["variables.f"]}'},
                files={"0": ("big.ifc", b"\0" * (64 << 20), "application/octet-stream")},
            )
        except httpx.HTTPError:
            return False  # the connection should be answered, not cut
        return typed_error(response, 401, 403) and time.perf_counter() - began < 10

    def multipart_slow() -> bool:
        operations = {"query": "{ __typename }", "variables": {"f": None}}
        began = time.perf_counter()
        response = target.http.post(
            url,
            data={"operations": json.dumps(operations), "map": '{"0": ["variables.f"]}'},
            files={"0": ("x.bin", b"x", "application/octet-stream")},
            headers={"Authorization": f"Bearer {target.tokens['viewer']}"},
        )
        return response.status_code < 500 and time.perf_counter() - began < TIMEOUT_S + 5

    def key_names() -> bool:
        refused = 0
        names = ["bob\0", "bob\nadmin", "b" * 100_000, '=HYPERLINK("http://x")']
        for name in names:
            response = target.gql(
                "admin",
                "mutation($n: String!) { createApiKey(name: $n, role: VIEWER) { token } }",
                n=name,
            )
            refused += typed_error(response, 200)
        return refused >= 3  # the formula may be a legal name: its CSV export is escaped

    outcomes = []
    for name, attack in (
        ("fragment bomb (unauthenticated)", bomb),
        ("alias bomb", aliases),
        ("depth bomb", depth),
        ('body "hello"', body(b'"hello"')),
        ("body 42", body(b"42")),
        ("body of invalid UTF-8", body(b'{"query": "\xff\xfe"}')),
        ("body of 10,000-deep arrays", body(b"[" * 10_000 + b"]" * 10_000)),
        ("body over the limit", oversized),
        ("64 MiB upload, unauthenticated", upload_unauthenticated),
        ("multipart request for a query", multipart_slow),
        ("hostile key names", key_names),
    ):
        verdict, slowest = probing(target, attack)
        again = target.data("viewer", REFERENCE, uid=unit) == reference
        outcome = Outcome(name, tried=1, survived=int(verdict and slowest < 2.0 and again))
        outcome.notes.append(f"/healthz slowest {slowest * 1000:.0f} ms")
        outcomes.append(outcome)
    outcomes.append(concurrent_actions(target))
    return outcomes


def concurrent_actions(target: Target, n: int = 20) -> Outcome:
    uid = target.data("engineer", 'mutation { reportCapa(title: "race") { uid } }')["reportCapa"][
        "uid"
    ]
    add = """mutation($u: String!, $t: String!) { addCapaAction(uid: $u,
        kind: "containment", text: $t) { uid } }"""
    answers: list[bool] = []

    def one(k: int) -> None:
        response = target.gql("engineer", add, u=uid, t=f"action {k}")
        answers.append(response.status_code == 200 and "errors" not in response.json())

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    containment = "query($u: String!) { capa(uid: $u) { ... on Capa { containment } } }"
    capa = target.data("viewer", containment, u=uid)
    kept = {a["text"] for a in json.loads(capa["capa"]["containment"] or "[]")}
    history = target.data("viewer", "query($u: String!) { capaHistory(uid: $u) { action } }", u=uid)
    trailed = sum(1 for e in history["capaHistory"] if "action" in e["action"].lower())
    ok = sum(answers)
    outcome = Outcome(f"{n} concurrent addCapaAction", tried=n, survived=len(kept))
    outcome.lost = ok - len(kept)
    outcome.notes.append(f"answered OK {ok}, kept {len(kept)}, in the trail {trailed}")
    return outcome


def reading(sensor: Sensor, ts: datetime, k: str, value: float | None = None) -> dict[str, Any]:
    spec = sensor.spec
    assert spec.lsl is not None and spec.usl is not None
    target = spec.target if spec.target is not None else (spec.lsl + spec.usl) / 2
    return {"ts": ts.isoformat(), "value": target if value is None else value,
            "unit": spec.unit, "id": k}  # fmt: skip


def poison_messages(
    sensor: Sensor, other: Sensor, now: datetime
) -> list[tuple[str, str, bytes, int]]:
    """(name, topic, payload, bad readings in it) of each poison message."""
    topic = sensor.topic

    def one(k: str, **changed: Any) -> bytes:
        return json.dumps([{**reading(sensor, now, k), **changed}]).encode()

    elsewhere = other.topic._replace(parameter=topic.parameter)  # a machine of its line
    many = [{**reading(sensor, now, f"many-{i}"), "unit": "parsec"} for i in range(1000)]
    t = str(topic)
    return [
        ("unit kelvin**0", t, one("p1", unit="kelvin**0"), 1),
        ("value 1e308 km", t, one("p2", value=1e308, unit="km"), 1),
        ("out of spec, stamped year 1", t,
         one("p3", value=1e6, ts="0001-01-01T00:00:01+01:00"), 1),
        ("value true", t, one("p4", value=True), 1),
        ('value "243"', t, one("p5", value="243"), 1),
        ("malformed JSON", t, b'{"ts": "2026-', 1),
        ("a line not in the graph", str(topic._replace(line="LINE-NOWHERE")), one("p6"), 1),
        ("a machine not in the graph", str(topic._replace(machine="M-NOWHERE")), one("p7"), 1),
        ("a parameter not of the machine", str(elsewhere), one("p8"), 1),
        ("1,000 bad readings in one message", t, json.dumps(many).encode(), 1000),
    ]  # fmt: skip


def ingestion_faults(target: Target, sensors: list[Sensor], good: int, data: Path) -> list[Outcome]:
    """Poison between good readings; then a critical excursion that must stop its line."""
    sender = client(target.broker_port, f"faults-{time.monotonic_ns()}")
    commands: list[tuple[str, dict[str, Any]]] = []
    listener = client(target.broker_port, f"faults-listen-{time.monotonic_ns()}")
    listener.on_message = lambda _c, _u, m: commands.append((m.topic, json.loads(m.payload)))
    listener.subscribe("sqems/v1/+/+/command", qos=1)
    time.sleep(0.5)
    now = datetime.now(UTC)
    sensor = next(s for s in sensors if not s.spec.critical)
    runs = {(s.topic.machine, s.topic.parameter) for s in sensors}
    line = sensor.topic.line
    other = next(
        s for s in sensors
        if s.topic.line == line and (s.topic.machine, sensor.topic.parameter) not in runs
    )  # fmt: skip
    topic = sensor.topic
    t = str(topic)
    poison = poison_messages(sensor, other, now)

    def quarantine_bytes() -> int:  # the database and its write-ahead log
        files = (data / "quarantine.db", data / "quarantine.db-wal")
        return sum(f.stat().st_size for f in files if f.exists())

    outcomes = []
    per = max(1, good // (2 * len(poison)))
    for k, (name, where, payload, items) in enumerate(poison):
        first = target.status()
        size0 = quarantine_bytes()
        first_ts = now - timedelta(seconds=60) + timedelta(milliseconds=20 * k * per)
        goods = [
            reading(sensor, first_ts + timedelta(milliseconds=10 * i), f"g{k}-{i}")
            for i in range(2 * per)
        ]
        sender.publish(t, json.dumps(goods[:per]), qos=1).wait_for_publish(10)
        sender.publish(where, payload, qos=1).wait_for_publish(10)
        sender.publish(t, json.dumps(goods[per:]), qos=1).wait_for_publish(10)
        expected = first["received"] + 2 * per + items
        deadline = time.monotonic() + 20
        status = target.status()
        while status["received"] < expected and time.monotonic() < deadline:
            time.sleep(0.1)
            status = target.status()
        accepted = status["accepted"] - first["accepted"]
        quarantined = status["quarantined"] - first["quarantined"]
        health = status.get("health") or {"healthy": True}  # (an older server has none)
        healthy = status["running"] and status["connected"] and health["healthy"]
        outcome = Outcome(f"MQTT: {name}", tried=1)
        outcome.lost = max(0, 2 * per - accepted) + max(0, items - quarantined)
        outcome.survived = int(healthy and outcome.lost == 0)
        outcome.notes.append(
            f"good {accepted}/{2 * per} stored, bad {quarantined}/{items} quarantined"
        )
        if name.startswith("1,000"):
            grown = quarantine_bytes() - size0
            sent = len(payload) / 2**10
            outcome.notes.append(f"quarantine +{grown / 2**10:,.0f} KiB for {sent:,.0f} KiB sent")
        outcomes.append(outcome)
    # a critical parameter's excursion: the stop goes to the machine's own line
    critical = next((s for s in sensors if s.spec.critical), None)
    if critical is not None:
        spec = critical.spec
        assert spec.lsl is not None and spec.usl is not None
        began = datetime.now(UTC) - timedelta(seconds=5)
        quiet = [reading(critical, began + timedelta(milliseconds=i), f"q{i}") for i in range(60)]
        sender.publish(str(critical.topic), json.dumps(quiet), qos=1).wait_for_publish(10)
        decoy = str(critical.topic._replace(line="LINE-NOWHERE"))
        sender.publish(decoy, json.dumps([reading(critical, datetime.now(UTC), "decoy")]), qos=1)
        bad = reading(critical, datetime.now(UTC), "x1", value=spec.usl + (spec.usl - spec.lsl))
        sender.publish(str(critical.topic), json.dumps([bad]), qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 10
        while not commands and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = {topic_.split("/")[3] for topic_, _ in commands}
        outcome = Outcome("stop-line after a decoy topic", tried=1)
        outcome.survived = int(lines == {critical.topic.line})
        outcome.notes.append(f"stop_line sent to {sorted(lines) or 'nothing'}")
        outcomes.append(outcome)
    sender.loop_stop()
    listener.loop_stop()
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=int, default=1000, help="good readings around the poison")
    parser.add_argument("--units", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sqems-faults-") as name:
        data = Path(name)
        data.chmod(0o755)
        plant = generate(PlantSpec(units=args.units, seed=5))
        with EmbeddedGraphStore(data / "graph.db") as store:
            load_plant(store, plant_sections(plant))
            sensors = sensors_of(store)
        unit = str(plant.nodes["Unit"].columns["uid"][0])
        access = AccessStore(data / ACCESS_FILE)
        tokens = {
            who: access.create_key(who, role)[1]
            for who, role in (("admin", Role.ADMIN), ("engineer", Role.ENGINEER),
                              ("viewer", Role.VIEWER))
        }  # fmt: skip
        access.close()
        home = data / "broker-home"
        home.mkdir()
        broker = Broker(home)
        broker.start()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "SQEMS_DATA_DIR": str(data), "SQEMS_API_PORT": str(port),
               "SQEMS_GRAPH_URI": "embedded", "SQEMS_INGEST": "true",
               "SQEMS_MQTT_PORT": str(broker.port),
               "SQEMS_API_REQUEST_TIMEOUT_S": str(TIMEOUT_S)}  # fmt: skip
        log = data / "serve.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-c", "from sqems.cli import main; main()", "serve"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_ready(url, server)
            target = Target(url, tokens, broker.port)
            outcomes = api_attacks(target, unit)
            outcomes += ingestion_faults(target, sensors, args.good, data)
            alive = server.poll() is None and httpx.get(f"{url}/healthz").status_code == 200
        finally:
            server.terminate()
            server.wait(timeout=30)
            broker.stop()
        tracebacks = log.read_text(errors="replace").count("Traceback")

    print()
    print(f"{'attack or fault':<40} {'tried':>6} {'survived':>9} {'lost':>5}  notes")
    for o in outcomes:
        print(f"{o.name:<40} {o.tried:>6} {o.survived:>9} {o.lost:>5}  {'; '.join(o.notes)}")
    tried = sum(o.tried for o in outcomes)
    survived = sum(o.survived for o in outcomes)
    lost = sum(o.lost for o in outcomes)
    print()
    print(f"{tried} tried, {survived} survived, {lost} lost; server alive at the end: {alive}; "
          f"tracebacks in the server's log: {tracebacks}")  # fmt: skip


if __name__ == "__main__":
    main()
