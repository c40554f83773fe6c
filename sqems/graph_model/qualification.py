"""Whether an operator was qualified for a step (or a work-instruction revision) at a time,
and why not.

An operator ``HOLDS`` ``Qualification`` records, each ``QUALIFIES_FOR`` a process step
or one revision of a work instruction (a ``WorkInstruction`` node, ``FOR_STEP`` its
step). A record is valid from ``granted_at`` until ``expires_at`` (open when None),
unless revoked at ``revoked_at``; history is several records per operator and scope.

:func:`qualification_at` answers for a run (its step, the revision it followed, its
start) with a :class:`QualState`: qualified or not, the reason (qualified, not yet
qualified, lapsed, revoked, never qualified, other revision), the dates bounding that
state and the record it rests on. The rules:

1. When the run followed a revision and the operator holds records for some revision
   of that instruction, the revision decides: a valid record for it qualifies; else the
   state of its own records (lapsed, revoked, not yet); else, when a record for another
   revision is valid, "other revision".
2. Otherwise the step decides: records for the step, or for any revision of an
   instruction for the step.
3. An operator with no ``Qualification`` records at all keeps the old single window
   (``Operator.qualified``, ``qualified_from``/``qualified_until``), read as a
   qualification for every step.

``since``/``until`` bound the state the operator was in at that time: for qualified, the
grant and its end; lapsed, the expiry and the next grant; revoked, the revocation and
the next grant; not yet qualified, the first grant (``until``).

Reading is in bulk: :class:`QualificationRecords` reads the records of many operators in
three store calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from enum import StrEnum

from sqems.graph_model.calibration import when
from sqems.graph_model.nodes import Operator, Qualification, WorkInstruction
from sqems.graph_model.store import Direction, GraphStore


class QualReason(StrEnum):
    """Why an operator was, or was not, qualified at a time."""

    QUALIFIED = "qualified"
    NOT_YET_QUALIFIED = "not yet qualified"
    LAPSED = "lapsed"
    REVOKED = "revoked"
    NEVER_QUALIFIED = "never qualified"
    OTHER_REVISION = "other revision"


@dataclass(frozen=True, slots=True)
class QualState:
    """An operator's qualification for a step (or revision) at one time.

    ``record`` is the qualification uid the state rests on (the valid one, the one that
    lapsed or was revoked, the first to be granted, the other revision's), or the
    operator's uid for the old single window, or None when there is none. ``revision``
    is the work-instruction revision asked about; ``note`` the record's reason (why it
    was revoked, or what it renewed)."""

    operator: str
    step: str | None
    revision: str | None
    at: datetime
    qualified: bool
    reason: QualReason
    since: datetime | None = None
    until: datetime | None = None
    record: str | None = None
    note: str | None = None

    @property
    def scope(self) -> str:
        """What the state is about: ``step S``, or ``WI-x revision R``."""
        if self.revision is not None:
            return f"work instruction {self.revision}"
        return f"step {self.step}" if self.step is not None else "any step"

    def sentence(self, tz: tzinfo | None = None) -> str:
        """The state in words, dates in ``tz`` (UTC when None) with its abbreviation."""
        zone = tz or UTC
        who = f"operator {self.operator}"
        rec = f" ({self.record})" if self.record else ""
        note = f": {self.note}" if self.note else ""
        match self.reason:
            case QualReason.QUALIFIED:
                end = f" until {when(self.until, zone)}" if self.until else ""
                return (
                    f"{who} was qualified for {self.scope}{rec} since "
                    f"{when(self.since, zone)}{end}{note}"
                )
            case QualReason.NOT_YET_QUALIFIED:
                first = f"; first qualified {when(self.until, zone)}" if self.until else ""
                return f"{who} was not yet qualified for {self.scope}{first}{rec}"
            case QualReason.LAPSED | QualReason.REVOKED:
                verb = "lapsed" if self.reason is QualReason.LAPSED else "was revoked"
                again = (
                    f"; requalified {when(self.until, zone)}"
                    if self.until
                    else "; not requalified since"
                )
                return (
                    f"{who}'s qualification for {self.scope}{rec} {verb} "
                    f"{when(self.since, zone)}{note}{again}"
                )
            case QualReason.OTHER_REVISION:
                return f"{who} was qualified only for another revision{rec}, not for {self.scope}"
            case _:
                return f"{who} was never qualified for {self.scope}"


@dataclass(frozen=True, slots=True)
class Held:
    """A qualification record and what it covers: a step, or a revision (``instruction``
    is then set, and ``step`` is the revision's step where it names one)."""

    record: Qualification
    step: str | None
    revision: str | None
    instruction: str | None

    def valid_at(self, at: datetime) -> bool:
        q = self.record
        if at < q.granted_at:
            return False
        if q.revoked_at is not None and at >= q.revoked_at:
            return False
        return q.expires_at is None or at <= q.expires_at

    @property
    def ends(self) -> tuple[datetime, bool] | None:
        """When the record stopped being valid and whether by revocation."""
        q = self.record
        if q.revoked_at is not None and (q.expires_at is None or q.revoked_at <= q.expires_at):
            return q.revoked_at, True
        return (q.expires_at, False) if q.expires_at is not None else None


@dataclass(frozen=True, slots=True)
class QualificationRecords:
    """The qualification records of many operators, read at once (:meth:`read`), with
    the graph's work-instruction revisions."""

    operators: dict[str, Operator] = field(default_factory=dict)
    held: dict[str, tuple[Held, ...]] = field(default_factory=dict)
    instructions: dict[str, WorkInstruction] = field(default_factory=dict)

    @classmethod
    def read(cls, store: GraphStore, operators: Iterable[str]) -> QualificationRecords:
        """The records of ``operators`` (uids) in three store calls, however many. An
        operator not in the graph is :class:`NotFound`."""
        wanted = sorted(set(operators))
        hops = [
            {"HOLDS": Direction.OUT},
            {"QUALIFIES_FOR": Direction.OUT},
            {"FOR_STEP": Direction.OUT},
        ]
        holds, covers, steps = store.edges_along(wanted, hops) if wanted else ([], [], [])
        nodes = store.get_many([*wanted, *(e.dst for e in holds)])
        instructions = {
            w.uid: w for w in store.find(WorkInstruction.label) if isinstance(w, WorkInstruction)
        }
        step_of = {e.src: e.dst for e in steps if e.src in instructions}
        scopes: dict[str, list[str]] = {}
        for e in covers:
            scopes.setdefault(e.src, []).append(e.dst)
        held: dict[str, list[Held]] = {}
        for e in holds:
            q = nodes.get(e.dst)
            if not isinstance(q, Qualification):
                continue
            for scope in scopes.get(q.uid, []):
                wi = instructions.get(scope)
                held.setdefault(e.src, []).append(
                    Held(q, step_of.get(scope), scope, wi.instruction)
                    if wi is not None
                    else Held(q, scope, None, None)
                )
        return cls(
            {u: n for u in wanted if isinstance(n := nodes.get(u), Operator)},
            {
                op: tuple(sorted(hs, key=lambda h: (h.record.granted_at, h.record.uid)))
                for op, hs in held.items()
            },
            instructions,
        )

    def of(self, operator: str) -> tuple[Held, ...]:
        """The operator's records with their scopes, in order of grant."""
        return self.held.get(operator, ())

    def at(self, operator: str, step: str | None, revision: str | None, at: datetime) -> QualState:
        """The operator's state for ``step`` / ``revision`` at ``at`` (module rules)."""
        records = self.of(operator)
        if not records:
            return _old_window(self.operators.get(operator), operator, step, revision, at)
        wi = self.instructions.get(revision) if revision is not None else None
        if revision is not None:
            family = wi.instruction if wi is not None else None
            same = [h for h in records if h.revision == revision]
            others = [
                h
                for h in records
                if h.revision is not None and h.revision != revision and h.instruction == family
            ]
            if same or (others and family is not None):
                state = _state(same, operator, step, revision, at)
                if state.reason in (QualReason.NEVER_QUALIFIED, QualReason.NOT_YET_QUALIFIED):
                    valid = [h for h in others if h.valid_at(at)]
                    if valid:
                        return QualState(
                            operator,
                            step,
                            revision,
                            at,
                            False,
                            QualReason.OTHER_REVISION,
                            wi.effective_at if wi is not None else None,
                            state.until,
                            valid[-1].record.uid,
                        )
                return state
        if step is None and wi is not None:
            step = next((h.step for h in records if h.revision == revision), None)
        scoped = [h for h in records if step is None or h.step == step]
        return _state(scoped, operator, step, None, at)


def _state(
    held: list[Held], operator: str, step: str | None, revision: str | None, at: datetime
) -> QualState:
    def state(
        ok: bool, reason: QualReason, since: datetime | None, until: datetime | None, h: Held | None
    ) -> QualState:
        # a valid record's revocation reason is not yet news; a renewal's note is
        revoking = ok and h is not None and h.record.revoked_at is not None
        note = h.record.reason if h is not None and not revoking else None
        uid = h.record.uid if h is not None else None
        return QualState(operator, step, revision, at, ok, reason, since, until, uid, note)

    if not held:
        return state(False, QualReason.NEVER_QUALIFIED, None, None, None)
    valid = [h for h in held if h.valid_at(at)]
    if valid:
        h = valid[-1]
        ends = h.ends
        return state(True, QualReason.QUALIFIED, h.record.granted_at, ends[0] if ends else None, h)
    later = [h for h in held if h.record.granted_at > at]
    next_grant = min((h.record.granted_at for h in later), default=None)
    ended = [(h.ends, h) for h in held if h.record.granted_at <= at and h.ends is not None]
    if not ended:
        first = min(later, key=lambda h: h.record.granted_at) if later else None
        return state(False, QualReason.NOT_YET_QUALIFIED, None, next_grant, first)
    (end_at, revoked), h = max(ended, key=lambda x: (x[0][0], x[1].record.uid))
    reason = QualReason.REVOKED if revoked else QualReason.LAPSED
    return state(False, reason, end_at, next_grant, h)


def _old_window(
    op: Operator | None, operator: str, step: str | None, revision: str | None, at: datetime
) -> QualState:
    def state(
        ok: bool, reason: QualReason, since: datetime | None, until: datetime | None
    ) -> QualState:
        return QualState(
            operator, step, revision, at, ok, reason, since, until, op.uid if op else None
        )

    if op is None:
        return QualState(operator, step, revision, at, False, QualReason.NEVER_QUALIFIED)
    if not op.qualified:
        return state(False, QualReason.NEVER_QUALIFIED, None, None)
    if op.qualified_from is not None and at < op.qualified_from:
        return state(False, QualReason.NOT_YET_QUALIFIED, None, op.qualified_from)
    if op.qualified_until is not None and at > op.qualified_until:
        return state(False, QualReason.LAPSED, op.qualified_until, None)
    return state(True, QualReason.QUALIFIED, op.qualified_from, op.qualified_until)


def qualification_at(
    source: GraphStore | QualificationRecords,
    operator: str,
    step: str | None,
    revision: str | None,
    at: datetime,
) -> QualState:
    """Whether ``operator`` was qualified for ``step`` (and the work-instruction
    ``revision`` the run followed, when known) at ``at``, and why (module rules).
    ``source`` is a store (read for this operator alone) or records read in bulk."""
    records = (
        source
        if isinstance(source, QualificationRecords)
        else QualificationRecords.read(source, [operator])
    )
    return records.at(operator, step, revision, at)


def instructions_followed(store: GraphStore, runs: Iterable[str]) -> Mapping[str, str]:
    """The work-instruction revision each of ``runs`` followed (runs that followed none
    are left out), in one store call."""
    wanted = sorted(set(runs))
    if not wanted:
        return {}
    return {e.src: e.dst for e in store.edges(wanted, {"FOLLOWED": Direction.OUT})}
