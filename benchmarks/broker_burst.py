"""Broker burst benchmark: how much of a burst a Mosquitto queue drops, and whether
``brokerDropped`` accounts for it.

Starts Mosquitto twice on a free loopback port, with its defaults
(``max_queued_messages`` 1000, ``max_inflight_messages`` 20) and with the queue and
in-flight values of the shipped ``deploy/mosquitto/mosquitto.conf``; each time the
ingestion (``MqttIngestion`` into an embedded graph and DuckDB) is connected while one
client publishes ``--messages`` QoS 1 messages of 10 readings as fast as it can. Prints
what the ingestion received, what was lost, and the broker's dropped count as the
ingestion read it from ``$SYS``.

    python benchmarks/broker_burst.py
    python benchmarks/broker_burst.py --messages 20000
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import Direction, EmbeddedGraphStore
from sqems.graph_model.neo4j_server import free_port
from sqems.ingestion.mqtt import MqttIngestion
from sqems.ingestion.pipeline import Ingestor
from sqems.ingestion.quarantine import Quarantine
from sqems.ingestion.readings import ReadingsStore

SHIPPED = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "mosquitto.conf"
PEAK = "sqems/v1/SITE-1/LINE-PCB/M-REFLOW-2/P-REFLOW-PEAK"


def shipped_limits() -> str:
    text = SHIPPED.read_text()
    wanted = ("max_queued_messages", "max_queued_bytes", "max_inflight_messages")
    return "".join(m.group(0) + "\n" for o in wanted for m in re.finditer(rf"^{o} .*$", text, re.M))


def burst(graph: EmbeddedGraphStore, bodies: list[bytes], limits: str) -> tuple[int, int | None]:
    """Messages the ingestion received and the broker's dropped count, for one broker."""
    home = Path(tempfile.mkdtemp(prefix="sqems-burst-"))
    port = free_port()
    (home / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nsys_interval 1\nuser root\n{limits}"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker = subprocess.Popen([binary, "-c", str(home / "mosquitto.conf")],
                              stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    ingestor = Ingestor(graph, ReadingsStore(home / "r.duckdb"), Quarantine(home / "q.db"))
    try:
        with MqttIngestion(ingestor, "127.0.0.1", port, client_id="bench-burst") as bridge:
            sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="burst")
            sender.max_inflight_messages_set(1_000)
            sender.connect("127.0.0.1", port)
            sender.loop_start()
            for info in [sender.publish(PEAK, body, qos=1) for body in bodies]:
                info.wait_for_publish(60)
            sender.disconnect()
            sender.loop_stop()
            last, quiet = -1, 0
            while quiet < 3:  # settled: 3 s without a new message
                time.sleep(1)
                now = bridge.counters.received
                quiet, last = (quiet + 1 if now == last else 0), now
            return last // 10, bridge.broker_dropped
    finally:
        ingestor.readings.close()
        ingestor.quarantine.close()
        broker.terminate()
        broker.wait()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5_000)
    args = parser.parse_args()
    graph = EmbeddedGraphStore(None)
    load_plant(graph, plant_sections(generate(PlantSpec(units=1_000, seed=3))))
    run = next(e.src for e in graph.edges(["M-REFLOW-2"], {"ON": Direction.IN}))
    span = graph.get(run).interval()
    assert span is not None
    at = datetime.fromtimestamp(span[0] + 1, UTC)
    bodies = [
        json.dumps([
            {"ts": (at + timedelta(milliseconds=10 * (i * 10 + k))).isoformat(),
             "value": 242.5, "unit": "degC", "id": f"b-{i}-{k}"}
            for k in range(10)
        ]).encode()
        for i in range(args.messages)
    ]  # fmt: skip
    for label, limits in (("Mosquitto defaults", ""), ("shipped queue", shipped_limits())):
        got, dropped = burst(graph, bodies, limits)
        lost = args.messages - got
        print(
            f"{label:<20} {args.messages:,} sent, {got:,} received, {lost:,} lost "
            f"({100 * lost / args.messages:.0f} %), brokerDropped {dropped}"
        )


if __name__ == "__main__":
    main()
