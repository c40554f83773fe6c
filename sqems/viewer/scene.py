"""The 3D scene of a line: a neutral description every output draws from.

``line_scene(store, line)`` places each machine of the line where the graph says it
stands (``x_m``, ``y_m`` on the floor, ``rotation_deg`` about the vertical, its
``length_m`` x ``width_m`` x ``height_m`` box) and lays a status overlay on it:

- **defect rate**: defective units over units made in the batches the machine ran
  (the KPI engine's per-machine figure, over an optional time window);
- **alarm state**: the machine's open SPC alarms (``Alarm RAISED_ON Machine``,
  not cleared) and the worst severity among them;
- **utilisation**: from a what-if scenario's results, when one is named: the mean
  utilisation of the station (process step) the machine serves.

Its colour follows the worst of the three: red for an open alarm or a defect rate at
or above ``alarm_rate``, amber from ``watch_rate``, green otherwise, grey when nothing
ran on it. Coordinates are metres with z up, as in the graph and in IFC; the outputs
turn them for their renderers. Every object carries its graph uid.

Each object also carries what a quality engineer goes on to from it: the parameters
its steps control (each has an SPC chart), its open alarms with the rule that fired
said in words and the batch of the run it fired in, and the last batches it ran (each
has a recall scope). ``machine_objects(store, uids)`` gives the same objects for any
machines, e.g. those a BIM model's elements model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqems.analysis.kpis import kpis
from sqems.analysis.rules import RULES
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import (
    Alarm,
    Batch,
    BimElement,
    Line,
    Machine,
    Parameter,
    ProcessRun,
    Scenario,
    Severity,
    Site,
)
from sqems.graph_model.store import Direction, GraphStore, TimeWindow

WATCH_RATE = 0.02
ALARM_RATE = 0.05
RECENT_BATCHES = 5
"""How many of a machine's last batches an object names."""
COLOURS = {
    "alarm": "#d62728",
    "watch": "#ff9f1a",
    "ok": "#2ca02c",
    "idle": "#9aa0a6",
}


class Status(StrEnum):
    OK = "ok"
    WATCH = "watch"
    ALARM = "alarm"
    IDLE = "idle"
    """Nothing ran on it in the window: no rate to judge."""


@dataclass(frozen=True, slots=True)
class Overlay:
    status: Status
    colour: str
    produced: int
    defective: int
    defect_rate: float | None
    open_alarms: int
    alarm_severity: str | None
    utilisation: float | None
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SceneParameter:
    """A parameter a machine's steps control: it has a control chart on the machine."""

    uid: str
    name: str
    unit: str


@dataclass(frozen=True, slots=True)
class SceneAlarm:
    """An open alarm of a machine, its rule said in words."""

    uid: str
    rule: str
    rule_title: str
    """What the rule looks for (``nelson_1``: "One point beyond 3 sigma"); the code
    itself when the rule is not an SPC run rule."""
    severity: str
    raised_at: datetime
    parameter: str | None
    batch: str | None
    """The batch of the process run the alarm fired in, when known."""
    message: str


@dataclass(frozen=True, slots=True)
class SceneObject:
    uid: str
    label: str
    name: str
    kind: str
    step: str | None
    position: tuple[float, float, float]
    """The centre of the object's footprint, on the floor (z = 0), in metres."""
    size: tuple[float, float, float]
    """Length (along x before rotation), width, height."""
    rotation_deg: float
    """About the vertical axis, counter-clockwise seen from above."""
    overlay: Overlay
    bim_element: str | None = None
    """The GlobalId of the BIM element that models it, if linked."""
    parameters: tuple[SceneParameter, ...] = ()
    alarms: tuple[SceneAlarm, ...] = ()
    """Open alarms, newest first."""
    batches: tuple[str, ...] = ()
    """The last batches that ran on it, newest first (at most ``RECENT_BATCHES``)."""


@dataclass(frozen=True, slots=True)
class Scene:
    uid: str
    label: str
    name: str
    site: str | None
    objects: list[SceneObject]
    floor: tuple[float, float, float, float]
    """The floor's extent (x_min, y_min, x_max, y_max), a margin around the objects."""
    scenario: str | None = None
    window: dict[str, str | None] = field(default_factory=dict)
    legend: dict[str, str] = field(default_factory=lambda: dict(COLOURS))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict())


def line_scene(
    store: GraphStore,
    line: str,
    *,
    window: TimeWindow | None = None,
    scenario: str | None = None,
    watch_rate: float = WATCH_RATE,
    alarm_rate: float = ALARM_RATE,
) -> Scene:
    """The scene of ``line`` with its status overlay (see the module docstring)."""
    if not 0.0 < watch_rate <= alarm_rate <= 1.0:
        raise ValidationFailed(
            f"rates must satisfy 0 < watch ({watch_rate}) <= alarm ({alarm_rate}) <= 1"
        )
    found = store.get_many([line]).get(line)
    if not isinstance(found, Line):
        raise NotFound(f"line {line} is not in the graph")
    members = [e.src for e in store.edges([line], {"PART_OF": Direction.IN})]
    above = store.get_many(e.dst for e in store.edges([line], {"PART_OF": Direction.OUT}))
    site = next((u for u, n in sorted(above.items()) if isinstance(n, Site)), None)
    utilisation = _utilisation(store, scenario, line) if scenario else {}
    objects = machine_objects(
        store,
        members,
        window=window,
        utilisation=utilisation,
        watch_rate=watch_rate,
        alarm_rate=alarm_rate,
    )
    return Scene(
        uid=found.uid,
        label=found.label,
        name=found.name,
        site=site,
        objects=objects,
        floor=_floor(objects),
        scenario=scenario,
        window={"from": window.start.isoformat() if window and window.start else None,
                "to": window.end.isoformat() if window and window.end else None},
    )  # fmt: skip


def machine_objects(
    store: GraphStore,
    uids: Iterable[str],
    *,
    window: TimeWindow | None = None,
    utilisation: Mapping[str, float] | None = None,
    watch_rate: float = WATCH_RATE,
    alarm_rate: float = ALARM_RATE,
) -> list[SceneObject]:
    """The scene objects of the machines among ``uids`` (others are left out), in uid
    order, with their overlay; ``utilisation`` is per step uid (a scenario's)."""
    machines = sorted(
        (n for n in store.get_many(set(uids)).values() if isinstance(n, Machine)),
        key=lambda m: m.uid,
    )
    if not machines:
        return []
    uids = [m.uid for m in machines]
    step_of = {e.src: e.dst for e in store.edges(uids, {"CAN_PERFORM": Direction.OUT})}
    element_of = {e.src: e.dst for e in store.edges(uids, {"MODELLED_BY": Direction.OUT})}
    elements = store.get_many(element_of.values())
    element_of = {m: g for m, g in element_of.items() if isinstance(elements.get(g), BimElement)}
    parameters = _parameters(store, uids)
    made = kpis(store, window).by_machine
    alarms = _open_alarms(store, uids)
    batches = _recent_batches(store, uids)
    utilisation = utilisation or {}

    objects = []
    for m in machines:
        counts = made.get(m.uid)
        produced = counts.produced if counts else 0
        defective = counts.defective if counts else 0
        open_ = alarms.get(m.uid, [])
        overlay = _overlay(
            produced,
            defective,
            [a for a, _, _ in open_],
            utilisation.get(step_of.get(m.uid, "")),
            watch_rate,
            alarm_rate,
        )
        objects.append(
            SceneObject(
                uid=m.uid,
                label=m.label,
                name=m.name,
                kind=m.kind,
                step=step_of.get(m.uid),
                position=(m.x_m, m.y_m, 0.0),
                size=(m.length_m, m.width_m, m.height_m),
                rotation_deg=m.rotation_deg,
                overlay=overlay,
                bim_element=element_of.get(m.uid),
                parameters=parameters.get(m.uid, ()),
                alarms=tuple(
                    SceneAlarm(
                        uid=a.uid,
                        rule=a.rule,
                        rule_title=rule_title(a.rule),
                        severity=a.severity.value,
                        raised_at=a.raised_at,
                        parameter=parameter,
                        batch=batch,
                        message=a.message,
                    )
                    for a, parameter, batch in open_
                ),
                batches=batches.get(m.uid, ()),
            )
        )
    return objects


def rule_title(rule: str) -> str:
    """What an alarm's rule looks for, in words (the code when it is not a run rule)."""
    found = RULES.get(rule)
    return found.title if found else rule.replace("_", " ")


def _overlay(
    produced: int,
    defective: int,
    alarms: list[Alarm],
    utilisation: float | None,
    watch_rate: float,
    alarm_rate: float,
) -> Overlay:
    rate = defective / produced if produced else None
    worst = max((a.severity for a in alarms), key=_SEVERITY_ORDER.index, default=None)
    reasons = []
    if alarms:
        status = Status.ALARM
        reasons.append(
            f"{len(alarms)} open alarm(s): {', '.join(sorted({a.rule for a in alarms}))}"
        )
    elif rate is None:
        status = Status.IDLE
    elif rate >= alarm_rate:
        status = Status.ALARM
    elif rate >= watch_rate:
        status = Status.WATCH
    else:
        status = Status.OK
    if rate is not None and rate >= watch_rate:
        reasons.append(f"defect rate {rate:.1%} ({defective} of {produced} units)")
    return Overlay(
        status=status,
        colour=COLOURS[status.value],
        produced=produced,
        defective=defective,
        defect_rate=rate,
        open_alarms=len(alarms),
        alarm_severity=worst.value if worst else None,
        utilisation=utilisation,
        reasons=tuple(reasons),
    )


_SEVERITY_ORDER = [Severity.MINOR, Severity.MAJOR, Severity.CRITICAL]


def _open_alarms(
    store: GraphStore, machines: list[str]
) -> dict[str, list[tuple[Alarm, str | None, str | None]]]:
    """Each machine's open alarms, newest first, with the parameter each was raised on
    and the batch of its run."""
    raised = store.edges(machines, {"RAISED_ON": Direction.IN})
    nodes = store.get_many(e.src for e in raised)
    open_ = {u: a for u, a in nodes.items() if isinstance(a, Alarm) and a.cleared_at is None}
    parameter: dict[str, str] = {}
    run_of: dict[str, str] = {}
    if open_:
        targets = store.edges(list(open_), {"RAISED_ON": Direction.OUT})
        kinds = store.get_many(e.dst for e in targets)
        for e in targets:
            if isinstance(kinds.get(e.dst), Parameter):
                parameter[e.src] = e.dst
            elif isinstance(kinds.get(e.dst), ProcessRun):
                run_of[e.src] = e.dst
    batch_of = {e.dst: e.src for e in store.edges(set(run_of.values()), {"RAN": Direction.IN})}
    found: dict[str, list[tuple[Alarm, str | None, str | None]]] = defaultdict(list)
    for e in raised:
        alarm = open_.get(e.src)
        if alarm is not None:
            run = run_of.get(alarm.uid)
            found[e.dst].append((alarm, parameter.get(alarm.uid), batch_of.get(run or "")))
    for listed in found.values():
        listed.sort(key=lambda t: (t[0].raised_at, t[0].uid), reverse=True)
    return found


def _parameters(store: GraphStore, machines: list[str]) -> dict[str, tuple[SceneParameter, ...]]:
    """The parameters of the steps each machine can perform, by name."""
    steps = store.edges(machines, {"CAN_PERFORM": Direction.OUT})
    controlled = store.edges({e.dst for e in steps}, {"PARAMETER_OF": Direction.IN})
    nodes = store.get_many(e.src for e in controlled)
    of_step: dict[str, list[SceneParameter]] = defaultdict(list)
    for e in controlled:
        node = nodes.get(e.src)
        if isinstance(node, Parameter):
            of_step[e.dst].append(SceneParameter(uid=node.uid, name=node.name, unit=node.unit))
    found: dict[str, dict[str, SceneParameter]] = defaultdict(dict)
    for e in steps:
        for p in of_step.get(e.dst, []):
            found[e.src][p.uid] = p
    return {m: tuple(sorted(ps.values(), key=lambda p: (p.name, p.uid)))
            for m, ps in found.items()}  # fmt: skip


def _recent_batches(
    store: GraphStore, machines: list[str], keep: int = RECENT_BATCHES
) -> dict[str, tuple[str, ...]]:
    """The last ``keep`` batches each machine ran, newest first (by run start)."""
    on = store.edges(machines, {"ON": Direction.IN})
    runs = store.get_many(e.src for e in on)
    started: dict[str, list[ProcessRun]] = defaultdict(list)
    for e in on:
        run = runs.get(e.src)
        if isinstance(run, ProcessRun):
            started[e.dst].append(run)
    latest = {m: sorted(rs, key=lambda r: (r.started_at, r.uid), reverse=True)[: keep * 2]
              for m, rs in started.items()}  # fmt: skip
    wanted = {r.uid for rs in latest.values() for r in rs}
    ran = store.edges(wanted, {"RAN": Direction.IN})
    kinds = store.get_many({e.src for e in ran})
    batch_of = {e.dst: e.src for e in ran if isinstance(kinds.get(e.src), Batch)}
    found: dict[str, tuple[str, ...]] = {}
    for m, rs in latest.items():
        seen = dict.fromkeys(batch_of[r.uid] for r in rs if r.uid in batch_of)
        found[m] = tuple(list(seen)[:keep])
    return found


def _utilisation(store: GraphStore, scenario: str, line: str) -> dict[str, float]:
    """The mean utilisation per station (step uid) of a simulated scenario of ``line``."""
    found = store.get_many([scenario]).get(scenario)
    if not isinstance(found, Scenario):
        raise NotFound(f"scenario {scenario} is not in the graph")
    sessions = [e.dst for e in store.edges([scenario], {"IN_SESSION": Direction.OUT})]
    studied = {e.dst for e in store.edges(sessions, {"STUDIES": Direction.OUT})}
    if line not in studied:
        raise ValidationFailed(f"scenario {scenario} does not simulate line {line}")
    if not found.results:
        raise ValidationFailed(f"scenario {scenario} has no results yet (it is {found.status})")
    results = json.loads(found.results).get("kpis", {})
    prefix = "utilisation."
    return {k[len(prefix) :]: float(v["mean"]) for k, v in results.items() if k.startswith(prefix)}


def _floor(objects: list[SceneObject], margin: float = 2.0) -> tuple[float, float, float, float]:
    if not objects:
        return (-5.0, -5.0, 5.0, 5.0)
    reach = [max(o.size[0], o.size[1]) / 2.0 for o in objects]
    xs = [o.position[0] for o in objects]
    ys = [o.position[1] for o in objects]
    return (
        min(x - r for x, r in zip(xs, reach, strict=True)) - margin,
        min(y - r for y, r in zip(ys, reach, strict=True)) - margin,
        max(x + r for x, r in zip(xs, reach, strict=True)) + margin,
        max(y + r for y, r in zip(ys, reach, strict=True)) + margin,
    )
