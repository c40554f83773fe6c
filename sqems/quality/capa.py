"""The CAPA workflow: reported → triaged → assigned → in action → verifying → closed,
and reopened, each move checked and written to the audit trail with the record before
and after.

| move | from | needs |
| --- | --- | --- |
| ``triage`` | reported | a priority |
| ``assign`` | triaged, reopened | an owner, a verifier, a due date after the report |
| ``start`` | assigned, reopened | — |
| ``submit`` | in action | a root cause (5-Why or the 8D's D4), a corrective action; may be signed |
| ``verify`` | verifying | the assigned verifier, a signature; effective → closed, not → in action |
| ``reopen`` | closed | a reason |

Containment and corrective actions can be added while the CAPA is open (not closed).
A CAPA is created by hand, from a complaint, from an SPC alarm or from a calibration
found out of tolerance (:mod:`sqems.quality.lookback`), and is linked to what it
addresses (``Capa ADDRESSES Complaint|Alarm|Defect|Calibration|Batch``). A closure is
signed: the verifier's signature (name, time, meaning) is an entry of the trail.

Who may do what (an inspector reports, an engineer triages, assigns and closes) is the
API's to check; this module checks what the record itself requires, so the same rules
hold for every caller.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqems.errors import NotFound, SqemsError, ValidationFailed
from sqems.graph_model.nodes import (
    Alarm,
    Batch,
    Calibration,
    Capa,
    CapaSource,
    CapaStatus,
    Complaint,
    Defect,
    Priority,
)
from sqems.graph_model.store import Direction, Edge, GraphStore
from sqems.quality.audit import SYSTEM_ACTOR, AuditTrail, Writer
from sqems.quality.evidence import Evidence

log = logging.getLogger(__name__)
S = CapaStatus
OUT = Direction.OUT
SYSTEM = SYSTEM_ACTOR
"""The user an automatic CAPA is reported by."""
MOVES: dict[str, tuple[frozenset[CapaStatus], CapaStatus]] = {
    "triage": (frozenset({S.REPORTED}), S.TRIAGED),
    "assign": (frozenset({S.TRIAGED, S.REOPENED}), S.ASSIGNED),
    "start": (frozenset({S.ASSIGNED, S.REOPENED}), S.IN_ACTION),
    "submit": (frozenset({S.IN_ACTION}), S.VERIFYING),
    "verify": (frozenset({S.VERIFYING}), S.CLOSED),
    "reopen": (frozenset({S.CLOSED}), S.REOPENED),
}
"""Each move: the states it may start from and where it goes (``verify`` goes back to
in action when the actions were not effective)."""
ACTION_KINDS = ("containment", "corrective")
ADDRESSABLE = (Defect, Complaint, Alarm, Calibration, Batch)
"""What a CAPA may address: a defect, complaint or alarm it answers; a calibration found
out of tolerance and the batches whose results that puts in question (a look-back)."""
CLOSURE_MEANING = "verified effective and closed"
SUBMISSION_MEANING = "actions completed, submitted for verification"


class Actor:
    """Who makes a change: a user name and the role they act in."""

    __slots__ = ("name", "role")

    def __init__(self, name: str, role: str) -> None:
        if not name.strip():
            raise ValidationFailed("a CAPA change needs the name of the user making it")
        self.name, self.role = name.strip(), role

    def named(self, name: str | None) -> bool:
        """Whether ``name`` is this user's (names are unique regardless of case)."""
        return name is not None and name.strip().casefold() == self.name.casefold()


Edit = Callable[[Capa], tuple[str, dict[str, Any]]]
"""A change worked out from the CAPA as it is now: the trail's action and the fields."""


class Workflow:
    """CAPAs in ``store``, their changes audited in ``trail``.

    Every change reads the CAPA, checks it and writes it inside one transaction of the
    trail (:meth:`AuditTrail.writing`), which holds the trail's write lock: changes
    never interleave (twenty actions added at once are twenty actions), and the graph
    is written before the trail's entries commit, so neither lands without the other.
    """

    def __init__(self, store: GraphStore, trail: AuditTrail) -> None:
        self.store = store
        self.trail = trail

    # --- creation --------------------------------------------------------------------

    def report(
        self,
        actor: Actor,
        title: str,
        problem: str = "",
        *,
        addresses: Iterable[str] = (),
        source: CapaSource = CapaSource.MANUAL,
        uid: str | None = None,
    ) -> Capa:
        """Open a CAPA (reported), addressing defects, complaints or alarms."""
        with self.trail.writing() as w:
            return self._report(w, actor, title, problem, list(addresses), source, uid)

    def _report(self, w: Writer, actor: Actor, title: str, problem: str, targets: list[str],
                source: CapaSource, uid: str | None) -> Capa:  # fmt: skip
        found = self.store.get_many(targets)
        for t in targets:
            node = found.get(t)
            if node is None:
                raise NotFound(f"{t} is not in the graph")
            if not isinstance(node, ADDRESSABLE):
                raise ValidationFailed("a CAPA addresses defects, complaints, alarms, calibrations"
                                       f" or batches; {t} is a {node.label}")  # fmt: skip
        now = datetime.now(UTC)
        capa = Capa.parse({
            "uid": uid or f"CAPA-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}",
            "title": title, "problem": problem, "opened_at": now, "source": source,
            "reported_by": actor.name,
        })  # fmt: skip
        if self.store.get_many([capa.uid]):
            raise ValidationFailed(f"{capa.uid} exists already")
        w.append(actor.name, actor.role, "Capa", capa.uid, "reported", None,
                 _record(capa) | {"addresses": targets})  # fmt: skip
        with self.store.transaction() as tx:
            tx.add_nodes([capa])
            tx.add_edges(Edge("ADDRESSES", capa.uid, t) for t in targets)
        return capa

    def report_once(
        self,
        actor: Actor,
        title: str,
        problem: str,
        *,
        record: str,
        same: Callable[[Capa], bool],
        addresses: Iterable[str] = (),
        source: CapaSource = CapaSource.MANUAL,
    ) -> tuple[Capa, bool]:
        """The open CAPA that addresses ``record`` and that ``same`` accepts, or else a
        new one reported as :meth:`report` does (addressing ``record`` and
        ``addresses``); with whether it is new. The look-up and the report happen in one
        transaction of the trail, so two callers at once open one CAPA, not two."""
        targets = list(dict.fromkeys([record, *addresses]))
        with self.trail.writing() as w:
            for capa in open_capas_addressing(self.store, record):
                if same(capa):
                    return capa, False
            return self._report(w, actor, title, problem, targets, source, None), True

    def from_complaint(self, actor: Actor, complaint: str) -> Capa:
        found = self.store.get(complaint)
        if not isinstance(found, Complaint):
            raise ValidationFailed(f"{complaint} is a {found.label}, not a Complaint")
        return self.report(actor, f"Complaint {complaint}", found.description or "",
                           addresses=[complaint], source=CapaSource.COMPLAINT)  # fmt: skip

    def from_alarm(self, actor: Actor, alarm: Alarm) -> Capa:
        """The CAPA an SPC alarm opens. While a CAPA opened by an alarm on the same
        machine and parameter is not closed, a new alarm there is added to it instead:
        one excursion, one CAPA."""
        raised_on = {e.dst for e in self.store.edges([alarm.uid], {"RAISED_ON": OUT})}
        with self.trail.writing() as w:
            for capa in self._open_alarm_capas():
                alarms = [e.dst for e in self.store.edges([capa.uid], {"ADDRESSES": OUT})]
                where = {e.dst for e in self.store.edges(alarms, {"RAISED_ON": OUT})}
                if raised_on and raised_on - self._runs(raised_on) <= where:
                    w.append(actor.name, actor.role, "Capa", capa.uid,
                             f"alarm {alarm.uid} added", _record(capa), _record(capa))  # fmt: skip
                    self.store.upsert_edges([Edge("ADDRESSES", capa.uid, alarm.uid)])
                    return capa
            title = f"SPC alarm {alarm.rule}: {alarm.message}"[:300]
            return self._report(w, actor, title, alarm.message, [alarm.uid],
                                CapaSource.ALARM, None)  # fmt: skip

    def _open_alarm_capas(self) -> list[Capa]:
        return [c for c in self.store.find("Capa", {"source": CapaSource.ALARM.value})
                if isinstance(c, Capa) and c.status is not S.CLOSED]  # fmt: skip

    def _runs(self, uids: set[str]) -> set[str]:
        """The process runs among ``uids``: an excursion spans runs, so they do not count."""
        found = self.store.get_many(uids)
        return {u for u, n in found.items() if n.label == "ProcessRun"}

    # --- moves -------------------------------------------------------------------------

    def triage(self, actor: Actor, uid: str, priority: Priority) -> Capa:
        return self._move(actor, uid, "triage", lambda _: {"priority": priority})

    def assign(
        self, actor: Actor, uid: str, *, owner: str, verifier: str, due_at: datetime
    ) -> Capa:
        """Name the owner, who does the actions, and the verifier, who signs them off:
        two people, so no one verifies their own work."""
        owner, verifier = owner.strip(), verifier.strip()
        if not owner or not verifier:
            raise ValidationFailed("a CAPA is assigned to an owner and a verifier by name")
        if owner.casefold() == verifier.casefold():
            raise ValidationFailed(
                f"{owner} cannot be both owner and verifier of {uid}: a CAPA is verified by "
                "someone other than the person who did its actions"
            )

        def change(capa: Capa) -> dict[str, Any]:
            if due_at.tzinfo is None or due_at <= capa.opened_at:
                raise ValidationFailed(
                    f"the due date {due_at.isoformat()} must carry a time zone and come after "
                    f"the report ({capa.opened_at.isoformat()})"
                )
            return {"owner": owner, "verifier": verifier, "due_at": due_at}

        return self._move(actor, uid, "assign", change)

    def start(self, actor: Actor, uid: str) -> Capa:
        return self._move(actor, uid, "start", lambda _: {})

    def record_root_cause(
        self,
        actor: Actor,
        uid: str,
        *,
        five_why: list[str] | None = None,
        eight_d: dict[str, str] | None = None,
    ) -> Capa:
        """The 5-Why chain and/or the 8D disciplines (keys D1 to D8)."""
        change: dict[str, Any] = {}
        if five_why is not None:
            if not all(isinstance(w, str) and w.strip() for w in five_why):
                raise ValidationFailed("each why of a 5-Why chain is a sentence")
            change["five_why"] = json.dumps([w.strip() for w in five_why])
        if eight_d is not None:
            unknown = sorted(set(eight_d) - {f"D{i}" for i in range(1, 9)})
            if unknown:
                raise ValidationFailed(f"8D disciplines are D1 to D8, not {', '.join(unknown)}")
            change["eight_d"] = json.dumps(dict(sorted(eight_d.items())))

        def edit(capa: Capa) -> tuple[str, dict[str, Any]]:
            self._open(capa)
            return "root cause recorded", change

        return self._update(actor, uid, edit)

    def add_action(
        self,
        actor: Actor,
        uid: str,
        kind: str,
        text: str,
        *,
        owner: str | None = None,
        due_at: datetime | None = None,
        evidence: Iterable[str] = (),
    ) -> Capa:
        """A containment or corrective action; evidence as content digests."""
        if kind not in ACTION_KINDS:
            raise ValidationFailed(f"an action is {' or '.join(ACTION_KINDS)}, not {kind!r}")
        if not text.strip():
            raise ValidationFailed("an action says what is done")
        digests = list(evidence)

        def change(capa: Capa) -> tuple[str, dict[str, Any]]:
            actions = json.loads(getattr(self._open(capa), kind))
            actions.append({
                "text": text.strip(), "owner": owner or capa.owner, "added_by": actor.name,
                "added_at": datetime.now(UTC).isoformat(),
                "due_at": due_at.isoformat() if due_at else None, "evidence": digests,
            })  # fmt: skip
            return f"{kind} action added", {kind: json.dumps(actions)}

        return self._update(actor, uid, change)

    def check_evidence(self, uid: str, kind: str, index: int) -> Capa:
        """The CAPA, if evidence may be attached to its ``index``-th ``kind`` action now:
        it exists, is not closed and has that action. Check before storing the file, so
        a refused upload leaves nothing behind."""
        if kind not in ACTION_KINDS:
            raise ValidationFailed(f"an action is {' or '.join(ACTION_KINDS)}, not {kind!r}")
        capa = self._open(self.get(uid))
        actions = json.loads(getattr(capa, kind))
        if not 0 <= index < len(actions):
            raise ValidationFailed(f"{uid} has {len(actions)} {kind} action(s); no action {index}")
        return capa

    def attach_evidence(
        self, actor: Actor, uid: str, kind: str, index: int, evidence: Evidence
    ) -> Capa:
        """Attach a stored file (:class:`~sqems.quality.evidence.EvidenceStore`) to the
        ``index``-th (from 0) containment or corrective action."""

        def change(capa: Capa) -> tuple[str, dict[str, Any]]:
            actions = json.loads(getattr(self.check_evidence(uid, kind, index), kind))
            if evidence.digest not in actions[index]["evidence"]:
                actions[index]["evidence"].append(evidence.digest)
            return (f"evidence attached: {evidence.kind} {evidence.name} ({evidence.digest}) "
                    f"to {kind} action {index}", {kind: json.dumps(actions)})  # fmt: skip

        return self._update(actor, uid, change)

    def submit(self, actor: Actor, uid: str, *, signature: str | None = None) -> Capa:
        """Actions done: hand the CAPA to its verifier. With ``signature`` (its meaning,
        :data:`SUBMISSION_MEANING`) the hand-over is signed, an entry of the trail as a
        verification's is; the caller has checked the signer's credential again."""

        def change(capa: Capa) -> dict[str, Any]:
            d4 = json.loads(capa.eight_d).get("D4", "").strip()
            if not json.loads(capa.five_why) and not d4:
                raise ValidationFailed(
                    f"{uid} has no root cause yet: record a 5-Why chain or the 8D's D4 first"
                )
            if not json.loads(capa.corrective):
                raise ValidationFailed(f"{uid} has no corrective action yet: add one first")
            return {}

        return self._move(actor, uid, "submit", change, signature=signature)

    def verify(self, actor: Actor, uid: str, *, effective: bool, note: str) -> Capa:
        """The verifier's judgement, signed; effective closes the CAPA, not effective sends
        it back to action. The caller has checked the signer's credential again (the API
        asks for the key with the request)."""
        if not note.strip():
            raise ValidationFailed("a verification says what was checked and found")

        def signer(capa: Capa) -> None:
            if not actor.named(capa.verifier):
                raise ValidationFailed(
                    f"only {uid}'s verifier ({capa.verifier or 'none assigned'}) may verify "
                    f"it; {actor.name} is not"
                )
            if actor.named(capa.owner):
                raise ValidationFailed(
                    f"{actor.name} owns {uid}'s actions and cannot also verify them"
                )

        if not effective:

            def back(capa: Capa) -> tuple[str, dict[str, Any]]:
                signer(capa)
                self._check_move(capa, "verify")
                return "verified not effective", {"status": S.IN_ACTION,
                                                  "verification": note.strip(),
                                                  "effective": False}  # fmt: skip

            return self._update(actor, uid, back, signature="verified not effective")

        def close(capa: Capa) -> dict[str, Any]:
            signer(capa)
            return {"verification": note.strip(), "effective": True,
                    "closed_at": datetime.now(UTC)}  # fmt: skip

        return self._move(actor, uid, "verify", close, signature=CLOSURE_MEANING)

    def reopen(self, actor: Actor, uid: str, reason: str) -> Capa:
        if not reason.strip():
            raise ValidationFailed("say why the CAPA is reopened")
        return self._move(actor, uid, "reopen", lambda capa: {
            "closed_at": None, "effective": None, "reopened": capa.reopened + 1,
            "verification": f"reopened: {reason.strip()}",
        })  # fmt: skip

    # --- reading -----------------------------------------------------------------------

    def get(self, uid: str) -> Capa:
        found = self.store.get_many([uid]).get(uid)
        if not isinstance(found, Capa):
            raise NotFound(f"CAPA {uid} is not in the graph")
        return found

    def history(self, uid: str) -> list[Any]:
        self.get(uid)
        return self.trail.entries(uid)

    # --- internals ---------------------------------------------------------------------

    def _open(self, capa: Capa) -> Capa:
        if capa.status is S.CLOSED:
            raise ValidationFailed(f"{capa.uid} is closed; reopen it to change it")
        return capa

    def _check_move(self, capa: Capa, move: str) -> CapaStatus:
        sources, target = MOVES[move]
        if capa.status not in sources:
            allowed = ", ".join(sorted(m for m, (f, _) in MOVES.items() if capa.status in f))
            raise ValidationFailed(
                f"{capa.uid} is {capa.status.value.replace('_', ' ')}: it cannot {move} "
                f"(from here it can: {allowed or 'nothing'})"
            )
        return target

    def _move(self, actor: Actor, uid: str, move: str,
              change: Callable[[Capa], dict[str, Any] | None], *,
              signature: str | None = None) -> Capa:  # fmt: skip
        """A move of the workflow; ``change`` checks the CAPA and gives the other fields."""

        def edit(capa: Capa) -> tuple[str, dict[str, Any]]:
            target = self._check_move(capa, move)
            fields = change(capa) or {}
            return f"{move}: {capa.status.value} -> {target.value}", {"status": target, **fields}

        return self._update(actor, uid, edit, signature=signature)

    def _update(self, actor: Actor, uid: str, edit: Edit, *, signature: str | None = None) -> Capa:
        """Read the CAPA, apply ``edit`` and write it with its trail entry (and a signature
        with its meaning), all in one trail transaction; the graph write is taken back if
        the entries cannot commit."""
        with self.trail.writing() as w:
            capa = self.get(uid)
            action, change = edit(capa)
            changed = Capa.parse({**capa.model_dump(), **change})
            w.append(actor.name, actor.role, "Capa", uid, action, _record(capa), _record(changed))
            if signature is not None:
                w.append(actor.name, actor.role, "Capa", uid, "signature", None,
                         _record(changed), meaning=signature)  # fmt: skip
            self.store.upsert_nodes([changed])
            w.on_abort(lambda: self.store.upsert_nodes([capa]))
        return changed


def open_capas_addressing(store: GraphStore, record: str) -> list[Capa]:
    """The CAPAs not closed that address ``record``, the oldest first."""
    links = store.edges([record], {"ADDRESSES": Direction.IN})
    found = store.get_many(e.src for e in links).values()
    open_ = [c for c in found if isinstance(c, Capa) and c.status is not S.CLOSED]
    return sorted(open_, key=lambda c: (c.opened_at, c.uid))


def _record(capa: Capa) -> dict[str, Any]:
    return capa.model_dump(mode="json")


class _AlarmEvent(Protocol):
    """What the ingestion hands its alarm sinks (``sqems.ingestion.pipeline.AlarmEvent``)."""

    @property
    def alarm(self) -> Alarm: ...

    @property
    def critical(self) -> bool: ...


def open_on_critical_alarms(flow: Workflow) -> Callable[[_AlarmEvent], None]:
    """An alarm sink for the ingestion: a critical alarm (its parameter is marked
    critical) opens a CAPA, or joins the open one of its machine and parameter."""
    actor = Actor(SYSTEM, "system")

    def sink(event: _AlarmEvent) -> None:
        if not event.critical:
            return
        try:
            flow.from_alarm(actor, event.alarm)
        except SqemsError as exc:  # e.g. the alarm is spooled while the graph is away
            log.warning("no CAPA for alarm %s: %s", event.alarm.uid, exc.message)

    return sink
