"""The engineers' live board: open alarms, open CAPAs by workflow state, what is overdue.

:func:`snapshot` reads the graph store once per kind of thing, not once per card: the
alarms and CAPAs by label, then each relationship the cards need as one batched
``edges`` call for all of them (alarm → machine, parameter and run; machine → line;
CAPA → what it addresses; defect → unit or batch; complaint → unit; unit → batch;
batch → run → machine → line). The board is recomputed after every change while someone
watches it, so its cost is a handful of store calls whatever its size.

Each card links to the pages that already exist, with the query parameters those pages
read:

- ``rootCause``: ``/investigate?complaint=C`` when a complaint is involved (the CAPA
  addresses it, or a defect it addresses was found on a unit a complaint is about);
  for an alarm without one, the SPC chart of its parameter on its machine
  (``/dashboard?parameter=P&machine=M``), where an excursion's cause is looked at.
- ``recall``: ``/trace?parameter=P&machine=M&from=…`` for an alarm (the excursion
  from the start of the run it was raised on, or 8 hours before it, open-ended), and
  ``/trace?batch=B`` for a defect's or complaint's batch.
- ``view3d``: ``/viewer?line=L``, the line of the alarm's machine or of the machine
  the batch ran on (the viewer opens a line; it takes no machine from its address).

Overdue: a CAPA (not closed) past its ``due_at``; a containment or corrective action
past its own ``due_at`` while its CAPA is still being worked (not yet handed to its
verifier: the workflow has no per-action completion, and submitting a CAPA says its
actions are done).
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from sqems.graph_model.nodes import Alarm, Capa, CapaStatus, ProcessRun
from sqems.graph_model.store import Direction, Edge, GraphStore
from sqems.quality.capa import ACTION_KINDS, MOVES

log = logging.getLogger(__name__)
OUT, IN = Direction.OUT, Direction.IN
MAX_ALARMS = 50
"""The most open alarms a board shows (the newest); ``alarm_count`` says how many are open."""
RECALL_LOOKBACK = timedelta(hours=8)
"""How far before an alarm a recall window starts when the alarm names no run."""


def _workflow_order() -> tuple[CapaStatus, ...]:
    """The open states in workflow order: reported, then each move's target as the
    moves run (closed left out)."""
    order = [CapaStatus.REPORTED]
    for _, target in MOVES.values():
        if target not in order and target is not CapaStatus.CLOSED:
            order.append(target)
    return tuple(order)


OPEN_STATUSES = _workflow_order()
"""reported, triaged, assigned, in_action, verifying, reopened: one board column each."""
WORKED = frozenset(OPEN_STATUSES) - {CapaStatus.VERIFYING}
"""The states in which a CAPA's actions are still being done."""


@dataclass(frozen=True, slots=True)
class CardLinks:
    """Relative URLs of the pages a card opens (None: the card has nothing to show there)."""

    root_cause: str | None = None
    recall: str | None = None
    view3d: str | None = None


@dataclass(frozen=True, slots=True)
class AlarmCard:
    uid: str
    rule: str
    severity: str
    message: str
    raised_at: datetime
    machine: str | None
    line: str | None
    parameter: str | None
    capa: str | None
    """The CAPA addressing the alarm (an open one first), or None."""
    links: CardLinks


@dataclass(frozen=True, slots=True)
class CapaCard:
    uid: str
    title: str
    status: str
    priority: str | None
    owner: str | None
    verifier: str | None
    due_at: datetime | None
    overdue: bool
    addresses: list[str]
    links: CardLinks


@dataclass(frozen=True, slots=True)
class CapaColumn:
    status: str
    cards: list[CapaCard]


@dataclass(frozen=True, slots=True)
class OverdueItem:
    kind: str
    """``capa`` (the CAPA itself) or ``action`` (one of its containment or corrective actions)."""
    capa: str
    title: str
    """The CAPA's title, or the action's text."""
    owner: str | None
    due_at: datetime
    days_overdue: int
    """Whole days past due (0 on the day it fell due)."""


@dataclass(frozen=True, slots=True)
class Board:
    generated_at: datetime
    alarms: list[AlarmCard]
    alarm_count: int
    columns: list[CapaColumn]
    overdue: list[OverdueItem]


def link(path: str, **params: str | None) -> str:
    """``path`` with ``params`` as its query (those given), as the pages read it.

    >>> link("/trace", parameter="P-1", machine=None)
    '/trace?parameter=P-1'
    """
    given = {k: v for k, v in params.items() if v}
    return f"{path}?{urlencode(given)}" if given else path


@dataclass(slots=True)
class _Where:
    """Where an alarm was raised, read from its ``RAISED_ON`` edges."""

    machine: str | None = None
    parameter: str | None = None
    run: str | None = None
    line: str | None = None
    run_start: datetime | None = None


class _Reader:
    """The store calls of one snapshot, each batched over all cards."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store

    def edges(self, uids: Iterable[str], type_: str, direction: Direction) -> list[Edge]:
        wanted = sorted(set(uids))
        return self.store.edges(wanted, {type_: direction}) if wanted else []

    def where(self, alarms: Iterable[str]) -> dict[str, _Where]:
        """Machine, parameter, run (and its start) and line of each alarm."""
        found: dict[str, _Where] = defaultdict(_Where)
        raised = self.edges(alarms, "RAISED_ON", OUT)
        labels = self.store.labels({e.dst for e in raised}) if raised else {}
        for e in sorted(raised, key=lambda e: e.dst):
            at = found[e.src]
            label = labels.get(e.dst)
            if label == "Machine" and at.machine is None:
                at.machine = e.dst
            elif label == "Parameter" and at.parameter is None:
                at.parameter = e.dst
            elif label == "ProcessRun" and at.run is None:
                at.run = e.dst
        lines = self.lines({w.machine for w in found.values() if w.machine})
        runs = self.store.get_many({w.run for w in found.values() if w.run})
        for at in found.values():
            at.line = lines.get(at.machine) if at.machine else None
            run = runs.get(at.run) if at.run else None
            at.run_start = run.started_at if isinstance(run, ProcessRun) else None
        return found

    def lines(self, machines: Iterable[str]) -> dict[str, str]:
        """The line each machine is part of."""
        part_of = self.edges(machines, "PART_OF", OUT)
        labels = self.store.labels({e.dst for e in part_of}) if part_of else {}
        found: dict[str, str] = {}
        for e in sorted(part_of, key=lambda e: e.dst):
            if labels.get(e.dst) == "Line":
                found.setdefault(e.src, e.dst)
        return found

    def batch_lines(self, batches: Iterable[str]) -> dict[str, str]:
        """A line each batch ran on (the first by uid when it ran on several)."""
        wanted = sorted(set(batches))
        if not wanted:
            return {}
        ran, on, part_of = self.store.edges_along(
            wanted, [{"RAN": OUT}, {"ON": OUT}, {"PART_OF": OUT}]
        )
        machine_of = {e.src: e.dst for e in sorted(on, key=lambda e: e.dst, reverse=True)}
        line_of = {e.src: e.dst for e in sorted(part_of, key=lambda e: e.dst, reverse=True)}
        found: dict[str, str] = {}
        for e in sorted(ran, key=lambda e: e.dst):
            line = line_of.get(machine_of.get(e.dst, ""))
            if line is not None:
                found.setdefault(e.src, line)
        return found


def snapshot(store: GraphStore, now: datetime | None = None) -> Board:
    """The board as the graph holds it ``now`` (default: the current time).

    >>> from sqems.graph_model import EmbeddedGraphStore
    >>> board = snapshot(EmbeddedGraphStore(None))
    >>> [c.status for c in board.columns][:3], board.alarm_count
    (['reported', 'triaged', 'assigned'], 0)
    """
    now = now or datetime.now(UTC)
    read = _Reader(store)
    capas = [c for c in store.find("Capa") if isinstance(c, Capa)]
    open_capas = sorted(
        (c for c in capas if c.status is not CapaStatus.CLOSED),
        key=lambda c: (c.due_at is None, c.due_at or c.opened_at, c.uid),
    )
    status_of = {c.uid: c.status for c in capas}
    alarms = {a.uid: a for a in store.find("Alarm") if isinstance(a, Alarm)}
    open_alarms = [a for a in alarms.values() if a.cleared_at is None]
    open_alarms.sort(key=lambda a: (a.raised_at, a.uid), reverse=True)
    shown = open_alarms[:MAX_ALARMS]

    # what the open CAPAs address, and the CAPAs addressing the shown alarms
    addressed = read.edges([c.uid for c in open_capas], "ADDRESSES", OUT)
    targets: dict[str, list[str]] = defaultdict(list)
    for e in addressed:
        targets[e.src].append(e.dst)
    capa_of = _capa_per_alarm(read.edges([a.uid for a in shown], "ADDRESSES", IN), status_of)
    labels = store.labels({e.dst for e in addressed}) if addressed else {}
    by_label: dict[str, set[str]] = defaultdict(set)
    for uid, label in labels.items():
        by_label[label].add(uid)

    where = read.where([a.uid for a in shown] + sorted(by_label["Alarm"]))
    context = _Context.read(read, by_label["Defect"], by_label["Complaint"])

    alarm_cards = []
    for a in shown:
        at = where.get(a.uid, _Where())
        capa = capa_of.get(a.uid)
        complaint = min(context.complaints_of(targets[capa] if capa else []), default=None)
        alarm_cards.append(AlarmCard(
            uid=a.uid, rule=a.rule, severity=a.severity.value, message=a.message,
            raised_at=a.raised_at, machine=at.machine, line=at.line, parameter=at.parameter,
            capa=capa, links=_alarm_links(a, at, complaint),
        ))  # fmt: skip

    columns = {s: CapaColumn(s.value, []) for s in OPEN_STATUSES}
    for c in open_capas:
        aims = sorted(targets.get(c.uid, []))
        columns[c.status].cards.append(CapaCard(
            uid=c.uid, title=c.title, status=c.status.value,
            priority=c.priority.value if c.priority else None, owner=c.owner,
            verifier=c.verifier, due_at=c.due_at,
            overdue=c.due_at is not None and c.due_at < now, addresses=aims,
            links=_capa_links(aims, alarms, where, context),
        ))  # fmt: skip
    return Board(
        generated_at=now,
        alarms=alarm_cards,
        alarm_count=len(open_alarms),
        columns=list(columns.values()),
        overdue=overdue(open_capas, now),
    )


def _capa_per_alarm(addressing: list[Edge], status_of: Mapping[str, CapaStatus]) -> dict[str, str]:
    """The CAPA shown on each alarm's card: an open one before a closed one, then the
    newest uid."""
    found: dict[str, str] = {}
    for e in sorted(
        addressing, key=lambda e: (status_of.get(e.src) is not CapaStatus.CLOSED, e.src)
    ):
        found[e.dst] = e.src  # the last, best one wins
    return found


@dataclass(slots=True)
class _Context:
    """What the defects and complaints CAPAs address lead to: the batch to recall, the
    complaint to investigate, the line to look at."""

    batch: dict[str, str]
    """Defect or complaint → the batch it concerns."""
    complaint: dict[str, str]
    """Defect or complaint → the complaint to investigate (a complaint is its own)."""
    line: dict[str, str]
    """Batch → a line it ran on."""

    @classmethod
    def read(cls, read: _Reader, defects: set[str], complaints: set[str]) -> _Context:
        found_on = read.edges(defects, "FOUND_ON", OUT)
        about = read.edges(complaints, "ABOUT", OUT)
        labels = read.store.labels({e.dst for e in found_on}) if found_on else {}
        unit_of: dict[str, str] = {}
        batch: dict[str, str] = {}
        for e in sorted(found_on, key=lambda e: e.dst, reverse=True):
            if labels.get(e.dst) == "Batch":
                batch[e.src] = e.dst
            elif labels.get(e.dst) == "Unit":
                unit_of[e.src] = e.dst
        for e in sorted(about, key=lambda e: e.dst, reverse=True):
            unit_of[e.src] = e.dst
        units = set(unit_of.values())
        made = {e.dst: e.src for e in read.edges(units, "PRODUCED", IN)}
        complained = {}
        for e in sorted(read.edges(units, "ABOUT", IN), key=lambda e: e.src, reverse=True):
            complained[e.dst] = e.src
        complaint = {c: c for c in complaints}
        for thing, unit in unit_of.items():
            if thing not in batch and unit in made:
                batch[thing] = made[unit]
            if thing not in complaint and unit in complained:
                complaint[thing] = complained[unit]
        return cls(batch, complaint, read.batch_lines(batch.values()))

    def complaints_of(self, targets: Iterable[str]) -> list[str]:
        return [self.complaint[t] for t in targets if t in self.complaint]


def _alarm_links(alarm: Alarm, at: _Where, complaint: str | None) -> CardLinks:
    if complaint is not None:
        root = link("/investigate", complaint=complaint)
    elif at.parameter:
        root = link("/dashboard", parameter=at.parameter, machine=at.machine)
    else:
        root = None
    recall = None
    if at.parameter:
        start = at.run_start or alarm.raised_at - RECALL_LOOKBACK
        recall = link("/trace", parameter=at.parameter, machine=at.machine,
                      **{"from": start.astimezone(UTC).isoformat()})  # fmt: skip
    elif at.machine:
        start = at.run_start or alarm.raised_at - RECALL_LOOKBACK
        recall = link("/trace", machine=at.machine, **{"from": start.astimezone(UTC).isoformat()})
    view = link("/viewer", line=at.line) if at.line else None
    return CardLinks(root_cause=root, recall=recall, view3d=view)


def _capa_links(
    targets: list[str],
    alarms: Mapping[str, Alarm],
    where: Mapping[str, _Where],
    context: _Context,
) -> CardLinks:
    """A CAPA's links: from the complaints and defects it addresses first (a recall of
    their batch), then from its alarms."""
    complaint = min(context.complaints_of(targets), default=None)
    batches = sorted({context.batch[t] for t in targets if t in context.batch})
    lines = sorted({context.line[b] for b in batches if b in context.line})
    mine = [alarms[t] for t in targets if t in alarms]
    from_alarm = CardLinks()
    if mine and not (complaint and batches and lines):
        newest = max(mine, key=lambda a: (a.raised_at, a.uid))
        from_alarm = _alarm_links(newest, where.get(newest.uid, _Where()), complaint)
    return CardLinks(
        root_cause=link("/investigate", complaint=complaint) if complaint
        else from_alarm.root_cause,
        recall=link("/trace", batch=batches[0]) if batches else from_alarm.recall,
        view3d=link("/viewer", line=lines[0]) if lines else from_alarm.view3d,
    )  # fmt: skip


def overdue(capas: Iterable[Capa], now: datetime) -> list[OverdueItem]:
    """Open CAPAs past due, and the actions of those still being worked past their own
    due dates, oldest first."""
    items = []
    for c in capas:
        if c.status is CapaStatus.CLOSED:
            continue
        if c.due_at is not None and c.due_at < now:
            items.append(OverdueItem("capa", c.uid, c.title, c.owner, c.due_at,
                                     _days(now - c.due_at)))  # fmt: skip
        if c.status not in WORKED:
            continue
        for kind in ACTION_KINDS:
            for action in json.loads(getattr(c, kind)):
                due = _due(action.get("due_at"))
                if due is not None and due < now:
                    items.append(OverdueItem("action", c.uid, str(action.get("text", "")),
                                             action.get("owner") or c.owner, due,
                                             _days(now - due)))  # fmt: skip
    items.sort(key=lambda i: (i.due_at, i.capa, i.kind, i.title))
    return items


def _due(text: object) -> datetime | None:
    """An action's due date as stored (ISO 8601 with its offset), or None."""
    if not isinstance(text, str) or not text:
        return None
    due = datetime.fromisoformat(text)
    return due if due.tzinfo is not None else due.replace(tzinfo=UTC)


def _days(late: timedelta) -> int:
    return math.floor(late.total_seconds() / 86_400)
