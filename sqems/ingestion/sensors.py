"""Synthetic sensor streams for demos and benchmarks: every parameter of every machine
that can perform its step, sampled around its target, with a planted drift.

The sensors come from the graph (``Parameter -PARAMETER_OF-> ProcessStep
<-CAN_PERFORM- Machine -PART_OF-> Line -PART_OF-> Site``), so the topics are the ones
the pipeline accepts. Readings scatter around the target with sigma a twelfth of the
tolerance (a centred process at Cpk 2: quiet against the alarm limits); the drifting
sensor (by default the generator's reflow oven peak temperature) climbs by ``amount``
over the stream, past its upper spec limit — the alarms must catch it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from sqems.datasets import layout
from sqems.graph_model.nodes import Parameter
from sqems.graph_model.store import Direction, GraphStore
from sqems.ingestion.payloads import Topic

OUT, IN = Direction.OUT, Direction.IN


@dataclass(frozen=True, slots=True)
class Sensor:
    topic: Topic
    spec: Parameter


@dataclass(frozen=True, slots=True)
class Drift:
    machine: str = layout.Causes().drift_machine
    parameter: str = layout.Causes().drift_parameter
    amount: float = layout.Causes().drift_amount


def sensors_of(store: GraphStore) -> list[Sensor]:
    """One sensor per parameter with both spec limits and machine that can run its step."""
    params = {p.uid: p for p in store.find("Parameter") if isinstance(p, Parameter)}
    step_of = {e.src: e.dst for e in store.edges(params, {"PARAMETER_OF": OUT})} if params else {}
    steps = set(step_of.values())
    machines: dict[str, list[str]] = {}
    for e in store.edges(steps, {"CAN_PERFORM": IN}) if steps else []:
        machines.setdefault(e.dst, []).append(e.src)
    every = {m for ms in machines.values() for m in ms}
    line_of = {e.src: e.dst for e in store.edges(every, {"PART_OF": OUT})} if every else {}
    lines = set(line_of.values())
    site_of = {e.src: e.dst for e in store.edges(lines, {"PART_OF": OUT})} if lines else {}
    found = []
    for uid, spec in sorted(params.items()):
        if spec.lsl is None or spec.usl is None:
            continue
        for machine in sorted(machines.get(step_of.get(uid, ""), [])):
            line = line_of.get(machine)
            site = site_of.get(line or "")
            if line and site:
                found.append(Sensor(Topic(site, line, machine, uid), spec))
    return found


def stream(
    sensors: list[Sensor],
    *,
    rate_hz: float,
    seconds: float,
    per_message: int = 10,
    start: datetime | None = None,
    drift: Drift | None = None,
    seed: int = 0,
    session: str = "s",
) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) pairs in time order: each sensor's readings at ``rate_hz`` for
    ``seconds``, ``per_message`` readings to a message. Message ids are
    ``{session}-{machine}-{parameter}-{n}``: give each run its own ``session``."""
    rng = np.random.default_rng(seed)
    start = start or datetime.now(UTC)
    n = max(1, round(rate_hz * seconds))
    step = 1.0 / rate_hz
    for first in range(0, n, per_message):
        count = min(per_message, n - first)
        index = np.arange(first, first + count)
        for sensor in sensors:
            spec = sensor.spec
            assert spec.lsl is not None and spec.usl is not None
            target = spec.target if spec.target is not None else (spec.lsl + spec.usl) / 2
            values = target + rng.normal(0.0, (spec.usl - spec.lsl) / 12.0, count)
            if drift and (sensor.topic.machine, spec.uid) == (drift.machine, drift.parameter):
                values = values + drift.amount * index / n
            topic = sensor.topic
            readings = [
                {
                    "ts": (start + timedelta(seconds=float(i) * step)).isoformat(),
                    "value": round(float(v), 4),
                    "unit": spec.unit,
                    "id": f"{session}-{topic.machine}-{topic.parameter}-{i}",
                }
                for i, v in zip(index, values, strict=True)
            ]
            yield str(topic), json.dumps(readings).encode()
