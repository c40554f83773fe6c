"""The edge: per-unit judgement latency, scoring throughput and the queue's drain after an outage.

Generates a plant (``--units`` units, the reflow drift running into the test part, as
the edge's model tests have it), loads it into an embedded graph and trains both models
of ``--product`` from it: the per-unit judgement model
(:func:`sqems.analysis.judgement.train_unit_model`) and the per-batch defect-risk model
(:func:`sqems.analysis.prediction.train`), each exported to ONNX as the edge gets it.
Then:

1. **Latency per unit, one core.** This thread is pinned to one core
   (``os.sched_setaffinity``) and every engine held to one thread (ONNX Runtime's
   session has one intra-op thread; scikit-learn runs under ``threadpoolctl`` limits of
   one). For the unit model one call is the edge's whole path: the unit's feature row
   from its parameters' mean readings (``features_from_means``, the means of the
   held-out batches' recorded actuals, jittered per unit) and its score, by ONNX
   Runtime (:meth:`PortableModel.score`) or by the estimator's ``predict_proba``. The
   batch-risk model scores a held-out batch's row (history features included) the same
   two ways. The engines alternate call by call, ``--latency-repeats`` calls each after
   a warm-up; p50 and p99 per call, and the largest difference between the two scores.
2. **Throughput.** Still on one core: rows scored per second in calls of 1, 64 and 1024
   rows (``--batch-sizes``), ONNX Runtime beside scikit-learn, alternating. Then, on all
   cores again, the **agent end to end**: two Mosquitto brokers (the line's and the
   central one), :class:`~sqems.edge.agent.EdgeAgent` between them with the signed unit
   model. A publisher process sends each unit's cycle on the line's broker (one message
   of ``--per-message`` readings per parameter series of the line, then the unit event)
   as fast as QoS 1 allows, for ``--agent-units`` units: units/s judged and unit event
   published → judgement received on the line's broker, p50/p99 (flooded). Then
   ``--paced-units`` units one at a time, each waiting for its judgement: the latency of
   a line that is not flooding its edge, split at the agent's ``judged_at``: first with
   Nagle's algorithm put back on the agent's socket to the line's broker (paho's
   default, the baseline), then as many as the agent runs, with it off (``TCP_NODELAY``,
   :func:`~sqems.ingestion.broker.send_promptly`). The line's broker runs with Mosquitto's
   ``set_tcp_nodelay true`` unless ``--no-line-nodelay``: with both left at their
   defaults a small packet waits for the peer's delayed ACK, about 40 ms on Linux, at
   each hop where another packet is still unacknowledged.
3. **Queue drain after an outage.** ``--drain-items`` reading messages (``--per-message``
   readings each, the forwarded bytes of a line's sensors) are appended to the edge's
   store-and-forward queue one durable transaction each (as the agent appends), while
   the central broker is down; the forwarder is started, the broker started, and the
   time until the queue is empty is taken (from the broker's start, and from the
   forwarder's connection). The baseline, measured in the same round against the same
   broker: a bare paho client publishing the same payloads at QoS 1 with the same
   in-flight window. A persistent-session subscriber on the central broker counts
   distinct messages received in both. ``--drain-repeats`` rounds, medians and the
   median of the rounds' ratios.

Nothing is asserted on time; the load average is printed (the machine may be shared).

    python benchmarks/edge.py
    python benchmarks/edge.py --units 10000 --agent-units 500 --drain-items 10000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from figures import percentile
from ingestion import Broker, client
from paho.mqtt.enums import CallbackAPIVersion
from threadpoolctl import threadpool_limits

from sqems.analysis.judgement import KIND, UnitModel, features_from_means, train_unit_model
from sqems.analysis.prediction import DefectModel, _history, train, training_split
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.datasets.layout import Causes
from sqems.edge import portable
from sqems.edge.agent import MODELS_DIR, EdgeAgent, EdgeConfig
from sqems.edge.forwarder import WINDOW, Forwarder
from sqems.edge.line import LineSpec, line_from_graph
from sqems.edge.queue import Item, StoreQueue
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore
from sqems.ingestion.broker import BrokerAccess

SITE, LINE, EDGE = "SITE-1", "LINE-PCB", "EDGE-BENCH"
PREFIX = f"sqems/v1/{SITE}/{LINE}"
DRIFT_INTO_TEST = Causes(drift_window=(0.5, 0.8))
"""The reflow drift begins in the training part and runs on into the test part."""


def broker(home: Path, *, nodelay: bool = False) -> Broker:
    """A Mosquitto broker (persistence on) with its files in ``home``, not yet started.
    The broker, dropping to its own user when started as root, must be able to pass
    through ``home``'s parent to save its store."""
    home.mkdir(parents=True)
    home.parent.chmod(home.parent.stat().st_mode | 0o111)
    made = Broker(home)
    if nodelay:
        with made.config.open("a") as config:
            config.write("set_tcp_nodelay true\n")
    return made


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def micros(ns: list[int]) -> tuple[float, float]:
    """p50 and p99 of nanosecond samples, in microseconds."""
    us = [n / 1000 for n in ns]
    return statistics.median(us), percentile(us, 0.99)


# --- the models ---------------------------------------------------------------------------


@dataclass
class Models:
    graph: GraphStore
    unit: UnitModel
    unit_onnx: portable.PortableModel
    unit_manifest: dict[str, Any]
    unit_graph: bytes
    batch: DefectModel
    batch_onnx: portable.PortableModel
    unit_means: list[dict[str, float]]
    """Per unit to judge: parameter uid → mean reading."""
    batch_rows: np.ndarray
    """Held-out batches' feature rows of the batch-risk model."""


def build(units: int, product: str, seed: int) -> Models:
    graph = EmbeddedGraphStore(None)
    load_plant(graph, plant_sections(generate(PlantSpec(units=units, seed=seed), DRIFT_INTO_TEST)))
    unit = train_unit_model(graph, product)
    batch = train(graph, product)
    unit_manifest, unit_graph = unit.portable(version="1")
    batch_manifest, batch_graph = portable.batch_risk_portable(batch, version="1")

    split = training_split(graph, product)
    later = split.batches[split.n_train :]
    rng = np.random.default_rng(seed)
    means: list[dict[str, float]] = []
    for b in later:
        recorded = {p: v for run in b.runs for p, v in run.params.items()}
        for _ in range(8):  # a unit's means wander a little around its run's actual
            means.append({p: v * (1 + rng.normal(0, 0.002)) for p, v in recorded.items()})
    # the leak-free history rates DefectModel.predict_batches builds for a batch
    history = _history(
        split.facts.batches,
        split.outcomes,
        [b.uid for b in later],
        prior_units=batch.schema.prior_units,
        machine_window=batch.schema.machine_window,
    )
    return Models(
        graph=graph,
        unit=unit,
        unit_onnx=portable.PortableModel(unit_manifest, unit_graph),
        unit_manifest=unit_manifest,
        unit_graph=unit_graph,
        batch=batch,
        batch_onnx=portable.PortableModel(batch_manifest, batch_graph),
        unit_means=means,
        batch_rows=batch.schema.encode(later, history),
    )


# --- 1. latency per unit ------------------------------------------------------------------


def alternate(
    calls: tuple[Callable[[int], float], Callable[[int], float]], repeats: int
) -> tuple[list[int], list[int], float]:
    """Call the two in turn (which goes first alternates), ``repeats`` times each after
    a warm-up; each one's durations (ns) and the largest difference of their results."""
    for k in range(min(500, repeats)):
        calls[0](k)
        calls[1](k)
    times: tuple[list[int], list[int]] = ([], [])
    worst = 0.0
    clock = time.perf_counter_ns
    for k in range(repeats):
        got = [0.0, 0.0]
        for which in (0, 1) if k % 2 == 0 else (1, 0):
            start = clock()
            got[which] = calls[which](k)
            times[which].append(clock() - start)
        worst = max(worst, abs(got[0] - got[1]))
    return times[0], times[1], worst


def latency(m: Models, repeats: int) -> dict[str, Any]:
    schema, estimator = m.unit.schema, m.unit.estimator
    means, rows = m.unit_means, m.batch_rows
    batch_estimator = m.batch.estimator

    def unit_onnx(k: int) -> float:
        return float(m.unit_onnx.score(features_from_means(schema, means[k % len(means)]))[0])

    def unit_sklearn(k: int) -> float:
        row = features_from_means(schema, means[k % len(means)])
        return float(estimator.predict_proba(row[None, :])[0, 1])

    def batch_onnx(k: int) -> float:
        return float(m.batch_onnx.score(rows[k % len(rows)])[0])

    def batch_sklearn(k: int) -> float:
        return float(batch_estimator.predict_proba(rows[k % len(rows) : k % len(rows) + 1])[0, 1])

    # held for the whole measurement: entering threadpoolctl's context on every call
    # would cost more than the prediction
    with threadpool_limits(limits=1):
        u_onnx, u_sk, u_diff = alternate((unit_onnx, unit_sklearn), repeats)
        b_onnx, b_sk, b_diff = alternate((batch_onnx, batch_sklearn), repeats)
    return {
        "unit": (micros(u_onnx), micros(u_sk), u_diff),
        "batch": (micros(b_onnx), micros(b_sk), b_diff),
    }


# --- 2. throughput ------------------------------------------------------------------------


def scored_rows(
    onnx_model: portable.PortableModel, estimator: Any, rows: np.ndarray, size: int, calls: int
) -> tuple[float, float]:
    """Rows/s of ONNX Runtime and of scikit-learn (median call) in calls of ``size``
    consecutive rows of ``rows``, alternating."""
    starts = [(k * size) % (len(rows) - size + 1) for k in range(calls)]

    def by_onnx(k: int) -> float:
        return float(onnx_model.score(rows[starts[k] : starts[k] + size])[0])

    def by_sklearn(k: int) -> float:
        return float(estimator.predict_proba(rows[starts[k] : starts[k] + size])[0, 1])

    t_onnx, t_sk, _ = alternate((by_onnx, by_sklearn), calls)
    return size / (statistics.median(t_onnx) / 1e9), size / (statistics.median(t_sk) / 1e9)


def throughput(m: Models, sizes: list[int], rows_per_size: int) -> list[dict[str, Any]]:
    """Rows/s of each model and engine in calls of each size."""
    rng = np.random.default_rng(3)
    unit_rows = np.vstack([features_from_means(m.unit.schema, x) for x in m.unit_means])
    pools = {
        "unit": (m.unit_onnx, m.unit.estimator, unit_rows),
        "batch-risk": (m.batch_onnx, m.batch.estimator, m.batch_rows),
    }
    out = []
    with threadpool_limits(limits=1):
        for name, (onnx_model, estimator, pool) in pools.items():
            rows = pool[rng.integers(0, len(pool), size=max(sizes) * 4)]
            for size in sizes:
                calls = max(20, rows_per_size // size)
                onnx_rate, sk_rate = scored_rows(onnx_model, estimator, rows, size, calls)
                out.append({"model": name, "size": size, "onnx": onnx_rate, "sklearn": sk_rate})
    return out


# --- 2b. the agent end to end -------------------------------------------------------------


def cycle_messages(
    line: LineSpec, unit: str, batch: str, n: int, per_message: int
) -> list[tuple[str, bytes]]:
    """The unit ``n``'s cycle: one message of readings per series of the line, then its
    unit event."""
    specs = {p.uid: p for p in line.parameters}
    out = []
    start = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(seconds=n)
    for machine, parameters in sorted(line.machines.items()):
        for uid in parameters:
            spec = specs[uid]
            centre = spec.target if spec.target is not None else 0.0
            half = 1.0
            if spec.usl is not None and spec.lsl is not None:
                half = (spec.usl - spec.lsl) / 2
            body = [
                {
                    "ts": (start + timedelta(milliseconds=100 * i)).isoformat(),
                    "value": round(centre + half * 0.05 * (((n + i) * 7) % 5 - 2), 4),
                    "unit": spec.unit,
                    "id": f"{machine}-{uid}-{n}-{i}",
                }
                for i in range(per_message)
            ]
            out.append((f"{PREFIX}/{machine}/{uid}", json.dumps(body).encode()))
    event = {"id": f"u-{unit}", "unit": unit, "batch": batch, "ts": (start).isoformat()}
    out.append((f"{PREFIX}/unit", json.dumps(event).encode()))
    return out


def flood(port: int, cycles: list[list[tuple[str, bytes]]], ready: Any, sent: Any) -> None:
    """Publisher process: every cycle at QoS 1 as fast as it goes; hands back when each
    unit event was published (wall clock)."""
    c = client(port, f"bench-line-{time.monotonic_ns()}")
    ready.wait()
    last = None
    when: dict[str, float] = {}
    for messages in cycles:
        for topic, payload in messages[:-1]:
            c.publish(topic, payload, qos=1)
        topic, event = messages[-1]
        when[json.loads(event)["unit"]] = time.time()
        last = c.publish(topic, event, qos=1)
    if last is not None:
        last.wait_for_publish(300)
    c.loop_stop()
    sent.put(when)


class Judgements:
    """A subscriber on the line's broker noting when each unit's judgement arrived."""

    def __init__(self, port: int) -> None:
        self.arrived: dict[str, float] = {}
        self.judged_at: dict[str, float] = {}
        """Unit → the agent's ``judged_at`` (wall clock, seconds)."""
        self.change = threading.Condition()
        self.client = client(port, "bench-judgements")
        self.client.on_message = self.on_message
        self.client.subscribe(f"{PREFIX}/edge/{EDGE}/judgement", qos=1)

    def on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        now = time.time()
        body = json.loads(m.payload)
        unit = body["unit"]
        with self.change:
            self.arrived.setdefault(unit, now)
            self.judged_at.setdefault(unit, datetime.fromisoformat(body["judged_at"]).timestamp())
            self.change.notify_all()

    def wait(self, units: int, timeout: float) -> bool:
        with self.change:
            return self.change.wait_for(lambda: len(self.arrived) >= units, timeout)

    def wait_unit(self, unit: str, timeout: float) -> bool:
        with self.change:
            return self.change.wait_for(lambda: unit in self.arrived, timeout)


def paced_units(
    sender: mqtt.Client, heard: Judgements, cycles: list[list[tuple[str, bytes]]]
) -> tuple[list[float], list[float]]:
    """Each cycle sent and acknowledged by the broker, then its unit event; waits for
    the judgement. Milliseconds from the event's publish to the judgement's arrival, and
    to the agent's ``judged_at``."""
    received: list[float] = []
    judged: list[float] = []
    for messages in cycles:
        for topic, payload in messages[:-1]:
            sender.publish(topic, payload, qos=1).wait_for_publish(10)
        topic, event = messages[-1]
        unit = json.loads(event)["unit"]
        at = time.time()
        sender.publish(topic, event, qos=1)
        if not heard.wait_unit(unit, 10):
            break
        received.append((heard.arrived[unit] - at) * 1000)
        judged.append((heard.judged_at[unit] - at) * 1000)
    return received, judged


def agent_run(
    m: Models,
    tmp: Path,
    product: str,
    units: int,
    paced: int,
    per_message: int,
    line_nodelay: bool,
) -> dict[str, Any]:
    line_broker, central = broker(tmp / "line", nodelay=line_nodelay), broker(tmp / "central")
    line_broker.start()
    central.start()
    private, public = portable.generate_keys(tmp / "keys")
    bundle = portable.sign(m.unit_manifest, m.unit_graph, portable.load_private_key(private))
    data = tmp / "edge"
    (data / MODELS_DIR).mkdir(parents=True)
    (data / MODELS_DIR / f"{KIND}.sqems-model.json").write_bytes(bundle)
    line = line_from_graph(m.graph, SITE, LINE)
    batches = sorted(e.src for e in m.graph.edges([product], {"OF_PRODUCT": Direction.IN}))
    made = [
        (u.dst, b)
        for b in batches
        for u in sorted(m.graph.edges([b], {"PRODUCED": Direction.OUT}), key=lambda e: e.dst)
    ]
    need = units + 2 * paced
    if len(made) < need:
        raise SystemExit(f"the plant has {len(made)} units of {product}; {need} are needed")
    cycles = [
        cycle_messages(line, unit, batch, n, per_message)
        for n, (unit, batch) in enumerate(made[:need])
    ]
    config = EdgeConfig(
        edge_id=EDGE,
        line=line,
        data_dir=data,
        local=BrokerAccess("127.0.0.1", line_broker.port),
        central=BrokerAccess("127.0.0.1", central.port),
        public_key=portable.load_public_key(public),
        reconnect=(1, 2),
    )
    agent = EdgeAgent(config)
    if agent.model is None:
        raise SystemExit(f"the edge refused the benchmark's model: {agent.model_refused}")
    heard = Judgements(line_broker.port)
    out: dict[str, Any] = {"series": len(cycles[0]) - 1}
    try:
        agent.start()
        deadline = time.monotonic() + 30
        while not (agent.local_connected.is_set() and agent.forwarder.connected.is_set()):
            if time.monotonic() > deadline:
                raise SystemExit("the edge agent did not reach both brokers within 30 s")
            time.sleep(0.05)
        ready = mp.Event()
        sent: mp.Queue[dict[str, float]] = mp.Queue()
        proc = mp.Process(target=flood, args=(line_broker.port, cycles[:units], ready, sent))
        proc.start()
        time.sleep(0.3)
        began = time.perf_counter()
        ready.set()
        heard.wait(units, 900)
        elapsed = time.perf_counter() - began
        published: dict[str, float] = sent.get(timeout=60)
        proc.join()
        judged = len(heard.arrived)
        out["units"] = judged
        out["units_s"] = judged / elapsed
        out["messages_s"] = judged * len(cycles[0]) / elapsed
        out["alarms"] = agent.counters.alarms
        out["flood_latency"] = [
            heard.arrived[u] - t for u, t in published.items() if u in heard.arrived
        ]
        # paced: one unit at a time, each waiting for its judgement; first with Nagle's
        # algorithm put back on the agent's socket to the line's broker (the baseline:
        # paho's default), then as the agent runs it (send_promptly: TCP_NODELAY)
        line_socket = agent.local.socket()
        if not isinstance(line_socket, socket.socket):
            raise SystemExit(f"the agent's line connection is not a TCP socket: {line_socket}")
        sender = client(line_broker.port, "bench-paced")
        line_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        out["paced"] = paced_units(sender, heard, cycles[units : units + paced])
        line_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out["paced_nodelay"] = paced_units(sender, heard, cycles[units + paced : need])
        sender.loop_stop()
        deadline = time.monotonic() + 120
        while agent.queue.depth and time.monotonic() < deadline:
            time.sleep(0.05)
        out["forwarded"] = agent.forwarder.forwarded
        out["queue_left"] = agent.queue.depth
    finally:
        agent.stop()
        heard.client.loop_stop()
        line_broker.stop()
        central.stop()
    return out


# --- 3. queue drain -----------------------------------------------------------------------


def readings_payloads(n: int, per_message: int, tag: str) -> list[bytes]:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    return [
        json.dumps(
            [
                {
                    "ts": (start + timedelta(milliseconds=100 * (k * per_message + i))).isoformat(),
                    "value": round(242.5 + 0.3 * ((k + i) % 5 - 2), 4),
                    "unit": "degC",
                    "id": f"{tag}-{k}-{i}",
                }
                for i in range(per_message)
            ]
        ).encode()
        for k in range(n)
    ]


class Counter:
    """A persistent-session subscriber on the central broker counting the distinct
    messages of one round it received (a broker restart may redeliver earlier ones)."""

    def __init__(self, port: int) -> None:
        self.expected: set[int] = set()
        self.seen: set[int] = set()
        self.change = threading.Condition()
        self.client = client(port, "bench-central-counter", clean=False)
        self.client.on_message = self.on_message
        self.client.subscribe(f"{PREFIX}/+/+", qos=1)
        time.sleep(0.3)

    def on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        key = hash(bytes(m.payload))
        with self.change:
            if key in self.expected:
                self.seen.add(key)
                self.change.notify_all()

    def expect(self, payloads: list[bytes]) -> None:
        with self.change:
            self.expected = {hash(p) for p in payloads}
            self.seen = set()

    def wait(self, n: int, timeout: float) -> int:
        with self.change:
            self.change.wait_for(lambda: len(self.seen) >= n, timeout)
            return len(self.seen)


TOPIC = f"{PREFIX}/M-REFLOW-1/P-REFLOW-PEAK"


def bare_publish(port: int, payloads: list[bytes], window: int) -> float:
    """Seconds a bare paho client takes to have every payload acknowledged at QoS 1
    with ``window`` in flight."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-bare-{time.monotonic_ns()}",
        protocol=mqtt.MQTTv311,
    )
    c.max_inflight_messages_set(window)
    c.max_queued_messages_set(0)
    acked = 0
    change = threading.Condition()

    def on_publish(_c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        nonlocal acked
        with change:
            acked += 1
            if acked >= len(payloads):
                change.notify_all()

    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    began = time.perf_counter()
    for p in payloads:
        c.publish(TOPIC, p, qos=1)
    with change:
        change.wait_for(lambda: acked >= len(payloads), 600)
    elapsed = time.perf_counter() - began
    c.disconnect()
    c.loop_stop()
    return elapsed


def drain_round(
    tmp: Path, k: int, central: Broker, counter: Counter, n: int, per_message: int, window: int
) -> dict[str, Any]:
    # baseline, the broker up
    payloads = readings_payloads(n, per_message, f"bare{k}")
    counter.expect(payloads)
    bare_s = bare_publish(central.port, payloads, window)
    bare_got = counter.wait(n, 120)
    # the outage: the broker down while the queue fills
    central.stop()
    payloads = readings_payloads(n, per_message, f"edge{k}")
    counter.expect(payloads)
    queue = StoreQueue(tmp / f"drain-{k}.db")
    began = time.perf_counter()
    for p in payloads:
        queue.append([Item(TOPIC, p)])
    enqueue_s = time.perf_counter() - began
    forwarder = Forwarder(
        queue,
        BrokerAccess("127.0.0.1", central.port),
        f"bench-edge-{k}",
        window=window,
        reconnect=(1, 2),
    )
    forwarder.start()
    time.sleep(1.0)  # it tries, and fails, to reach the broker
    up = time.perf_counter()
    central.start()
    if not forwarder.connected.wait(60):
        raise SystemExit("the forwarder did not reach the central broker within 60 s")
    connected = time.perf_counter()
    deadline = time.monotonic() + 900
    while queue.depth and time.monotonic() < deadline:
        time.sleep(0.002)
    empty = time.perf_counter()
    forwarder.stop()
    left = queue.depth
    queue.close()
    edge_got = counter.wait(n, 120)
    return {
        "bare_rate": n / bare_s,
        "bare_got": bare_got,
        "enqueue_rate": n / enqueue_s,
        "drain_rate": n / (empty - connected),
        "from_start_s": empty - up,
        "reconnect_s": connected - up,
        "edge_got": edge_got,
        "left": left,
        "bytes": sum(len(p) for p in payloads) / n,
    }


def drain(tmp: Path, n: int, per_message: int, repeats: int, window: int) -> list[dict[str, Any]]:
    central = broker(tmp / "drain-central")
    central.start()
    counter = Counter(central.port)
    rounds = []
    try:
        for k in range(repeats):
            print(f"queue drain round {k + 1}…", file=sys.stderr, flush=True)
            rounds.append(drain_round(tmp, k, central, counter, n, per_message, window))
    finally:
        counter.client.loop_stop()
        central.stop()
    return rounds


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20_000, help="units in the plant")
    parser.add_argument("--product", default="PRD-BOARD")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--core", type=int, default=None, help="core to pin to (default: last)")
    parser.add_argument("--latency-repeats", type=int, default=20_000)
    parser.add_argument("--batch-sizes", default="1,64,1024")
    parser.add_argument("--rows", type=int, default=20_000, help="rows scored per batch size")
    parser.add_argument("--agent-units", type=int, default=2_000, help="flooded units (0: skip)")
    parser.add_argument("--paced-units", type=int, default=200, help="units of each paced run")
    parser.add_argument(
        "--line-nodelay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="set_tcp_nodelay on the line's broker (Mosquitto's default is off)",
    )
    parser.add_argument("--per-message", type=int, default=10, help="readings per message")
    parser.add_argument("--drain-items", type=int, default=50_000)
    parser.add_argument("--drain-repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=WINDOW, help="QoS 1 messages in flight")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    loads = {"start": load()}

    print(f"plant of {args.units:,} units and both models of {args.product}…", file=sys.stderr)
    began = time.perf_counter()
    m = build(args.units, args.product, args.seed)
    build_s = time.perf_counter() - began

    cores = os.sched_getaffinity(0)
    core = args.core if args.core is not None else max(cores)
    os.sched_setaffinity(0, {core})
    print("latency…", file=sys.stderr, flush=True)
    lat = latency(m, args.latency_repeats)
    print("throughput…", file=sys.stderr, flush=True)
    thr = throughput(m, sizes, args.rows)
    os.sched_setaffinity(0, cores)
    loads["after scoring"] = load()

    with tempfile.TemporaryDirectory(prefix="sqems-edge-bench-") as name:
        tmp = Path(name)
        agent = None
        if args.agent_units:
            print("the agent end to end…", file=sys.stderr, flush=True)
            agent = agent_run(
                m,
                tmp,
                args.product,
                args.agent_units,
                args.paced_units,
                args.per_message,
                args.line_nodelay,
            )
            loads["after the agent"] = load()
        rounds = drain(tmp, args.drain_items, args.per_message, args.drain_repeats, args.window)
        loads["end"] = load()

    report(args, m, build_s, core, lat, thr, agent, rounds, loads)


def report(
    args: argparse.Namespace,
    m: Models,
    build_s: float,
    core: int,
    lat: dict[str, Any],
    thr: list[dict[str, Any]],
    agent: dict[str, Any] | None,
    rounds: list[dict[str, Any]],
    loads: dict[str, str],
) -> None:
    print()
    print(
        f"plant: {args.units:,} units, product {args.product}; unit model "
        f"{len(m.unit.schema.columns)} features ({m.unit.metrics.verdict}); batch-risk model "
        f"{len(m.batch.schema.columns)} features; built and trained in {build_s:.1f} s"
    )
    print(
        f"{os.cpu_count()} cores; load average (1, 5, 15 min): "
        + "; ".join(f"{k} {v}" for k, v in loads.items())
    )
    print()
    print(
        f"1. latency per call, this thread pinned to core {core}, one thread per engine, "
        f"{args.latency_repeats:,} calls each, alternating (µs)"
    )
    print(f"   {'':<44} {'p50':>8} {'p99':>8}   max |ONNX - sklearn|")
    names = {
        "unit": ("unit: features_from_means + ONNX Runtime", "unit: features_from_means + sklearn"),
        "batch": ("batch-risk: one row, ONNX Runtime", "batch-risk: one row, sklearn"),
    }
    for key, (onnx_name, sk_name) in names.items():
        onnx_t, sk_t, diff = lat[key]
        print(f"   {onnx_name:<44} {onnx_t[0]:>8.1f} {onnx_t[1]:>8.1f}   {diff:.1e}")
        print(f"   {sk_name:<44} {sk_t[0]:>8.1f} {sk_t[1]:>8.1f}")
        print(f"   {'  sklearn / ONNX (p50)':<44} {sk_t[0] / onnx_t[0]:>8.1f}x")
    print()
    print(f"2. throughput on core {core}, rows/s (median call), ONNX Runtime beside scikit-learn")
    print(
        f"   {'model':<12} {'rows/call':>9} {'ONNX Runtime':>14} {'scikit-learn':>14} {'ratio':>7}"
    )
    for t in thr:
        print(
            f"   {t['model']:<12} {t['size']:>9,} {t['onnx']:>14,.0f} {t['sklearn']:>14,.0f} "
            f"{t['onnx'] / t['sklearn']:>6.1f}x"
        )
    if agent is not None:
        print()
        series = agent["series"]
        flooded = [x * 1000 for x in agent["flood_latency"]]
        print(
            f"   the agent end to end (all cores; line and central Mosquitto on loopback, "
            f"line broker set_tcp_nodelay {'true' if args.line_nodelay else 'false'}; "
            f"a unit = {series} reading messages of {args.per_message} + its unit event)"
        )
        print(
            f"   flooded: {agent['units']:,} of {args.agent_units:,} units judged, "
            f"{agent['units_s']:,.0f} units/s ({agent['messages_s']:,.0f} messages/s); "
            f"event published -> judgement received p50 {statistics.median(flooded):,.0f} ms, "
            f"p99 {percentile(flooded, 0.99):,.0f} ms (queueing behind the flood)"
        )
        variants = (
            ("paced, Nagle's algorithm on (paho's default)", agent["paced"]),
            ("paced, the agent as it runs (TCP_NODELAY)", agent["paced_nodelay"]),
        )
        for label, (received, judged) in variants:
            if received:
                print(
                    f"   {label} ({len(received)} units): event published -> judgement received "
                    f"p50 {statistics.median(received):.1f} ms, p99 "
                    f"{percentile(received, 0.99):.1f} ms; -> judged_at in the agent p50 "
                    f"{statistics.median(judged):.1f} ms, p99 {percentile(judged, 0.99):.1f} ms"
                )
        print(
            f"   alarms raised {agent['alarms']}; forwarded to the central broker "
            f"{agent['forwarded']:,}, left in the queue {agent['queue_left']}"
        )
    print()
    n = args.drain_items
    size = rounds[0]["bytes"]
    print(
        f"3. queue drain after an outage: {n:,} reading messages ({args.per_message} readings, "
        f"{size:,.0f} bytes each), QoS 1, window {args.window}, {len(rounds)} rounds"
    )

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in rounds))

    def each(key: str, fmt: str) -> str:
        return ", ".join(format(r[key], fmt) for r in rounds)

    ratio = statistics.median(r["drain_rate"] / r["bare_rate"] for r in rounds)
    print(
        f"   {'enqueue (one durable transaction each)':<42} {med('enqueue_rate'):>10,.0f} "
        f"items/s  ({each('enqueue_rate', ',.0f')})"
    )
    print(
        f"   {'forwarder drain, from its connection':<42} {med('drain_rate'):>10,.0f} items/s  "
        f"({each('drain_rate', ',.0f')})"
    )
    print(
        f"   {'bare paho QoS 1 publisher (baseline)':<42} {med('bare_rate'):>10,.0f} items/s  "
        f"({each('bare_rate', ',.0f')})"
    )
    ratios = ", ".join(format(r["drain_rate"] / r["bare_rate"], ".0%") for r in rounds)
    print(f"   {'forwarder / baseline':<42} {ratio:>10.0%}  ({ratios})")
    print(
        f"   {'seconds to empty from the broker start':<42} {med('from_start_s'):>10.1f} s  "
        f"({each('from_start_s', '.1f')}; reconnection {each('reconnect_s', '.1f')} s)"
    )
    print(
        f"   received centrally (distinct): forwarder {each('edge_got', ',')}, baseline "
        f"{each('bare_got', ',')} of {n:,}; left in the queue {each('left', ',')}"
    )


if __name__ == "__main__":
    main()
