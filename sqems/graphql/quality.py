"""GraphQL fields of the CAPA workflow and the audit trail of quality records.

The caller's API key names the user and the role of every change: an inspector may
report a CAPA, an engineer moves it on, and only the verifier assigned to it (by the
key's name) may verify it. Each mutation is written to the API's audit log and, through
:mod:`sqems.quality.capa`, to the hash-chained audit trail with the record before and
after.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import strawberry
from strawberry.file_uploads import Upload
from strawberry.scalars import JSON
from strawberry.types import Info

from sqems import localtime
from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import Priority as DomainPriority
from sqems.graphql.access import Role, SignatureRefused
from sqems.graphql.context import Context
from sqems.graphql.generate import Adapted, adapted
from sqems.graphql.types import (
    Node,
    WindowInput,
    _graphql_annotation,
    local_time,
    site_zone,
    to_graphql,
)
from sqems.quality import audit, dhr
from sqems.quality import effectiveness as eff
from sqems.quality import suppliers as sup
from sqems.quality.capa import SUBMISSION_MEANING, Actor, Workflow
from sqems.quality.evidence import EVIDENCE_DIR, Evidence, EvidenceStore
from sqems.quality.knowledge import Precedent, precedents

Priority = _graphql_annotation(DomainPriority)


@adapted(
    audit.Entry,
    description="One entry of the audit trail of quality records.",
    descriptions={
        "meaning": "An electronic signature's meaning.",
        "keyed": "Sealed with the trail's key (HMAC-SHA256).",
    },
)
class TrailEntry(Adapted):
    pass


@adapted(
    audit.Verification,
    description="Whether the audit trail's hash chain holds.",
    descriptions={
        "unsealed": "Entries at the end without a keyed seal after them (could be rewritten)."
    },
)
class TrailCheck(Adapted):
    pass


@adapted(
    Evidence,
    description="A file kept as evidence, by the SHA-256 of its bytes.",
    descriptions={"kind": "photo, video or document."},
)
class EvidenceFile(Adapted):
    pass


@adapted(
    eff.Side,
    description="Units made and those with the defect, over a span.",
)
class RecurrenceSide(Adapted):
    rate: float | None


@adapted(
    eff.Effectiveness,
    description="Recurrence before a CAPA against after its closure.",
    descriptions={"verdict": "effective, not effective or too early."},
)
class CapaEffectiveness(Adapted):
    pass


@adapted(
    Precedent,
    description="An earlier CAPA on the same defect type, with its root cause.",
)
class CapaPrecedent(Adapted):
    pass


@adapted(sup.Period, description="A month of a supplier's lots.")
class SupplierPeriod(Adapted):
    pass


@adapted(
    sup.Scorecard,
    description="A supplier's quality, computed from the graph.",
    descriptions={
        "incoming_ppm": "Defects per million sampled.",
        "units": "Units made in batches that consumed its lots.",
        "complaints": "Traced to its lots, through assemblies.",
    },
)
class SupplierScorecard(Adapted):
    pass


@strawberry.type(description="A deviation in a device history record and its disposition.")
class DhrDeviation:
    batch: str = strawberry.field(description="The batch whose record holds it.")
    key: str = strawberry.field(description="Its key in that record (what a disposition names).")
    text: str
    decision: str | None = strawberry.field(description="The disposition's decision, if any.")
    rationale: str | None
    signer: str | None
    signed_at: datetime | None
    meaning: str | None = strawberry.field(description="The signature's meaning.")

    @classmethod
    def of(cls, d: dhr.Deviation) -> DhrDeviation:
        s = d.disposition
        return cls(
            batch=d.batch, key=d.key, text=d.text,
            decision=s.decision.value if s else None, rationale=s.rationale if s else None,
            signer=s.signer if s else None, signed_at=s.signed_at if s else None,
            meaning=s.meaning if s else None,
        )  # fmt: skip


@strawberry.type(description="A batch's device history record.")
class DeviceHistoryReport:
    batch: str
    units: int
    approved_for_distribution: int = strawberry.field(
        description="Units approved for distribution: 0 while the release is withheld."
    )
    runs: int
    lots: list[str]
    deviations: list[str] = strawberry.field(description="The batch's own deviations.")
    capas: list[str]
    released: bool = strawberry.field(
        description="Approved for distribution: every deviation, its own and its "
        "sub-assemblies', has a signed disposition and none rejects the batch."
    )
    release: str = strawberry.field(description="The release statement, as the record says it.")
    all_deviations: list[DhrDeviation] = strawberry.field(
        description="Its own deviations, then those rolled up from its sub-assembly batches."
    )
    subassembly_batches: list[str]
    look_back_runs: list[str] = strawberry.field(
        description="Runs since the last good calibration of a machine this batch ran on "
        "that was later found out of tolerance (ISO 13485 §7.6), every batch's."
    )
    file_name: str = strawberry.field(description="A safe file name for the record.")
    html: str = strawberry.field(description="The record, printable (print it to PDF).")


def evidence_store(ctx: Context) -> EvidenceStore:
    return EvidenceStore(ctx.settings.data_dir / EVIDENCE_DIR)


def recorded(ctx: Context, action: str, uid: str, change: Callable[[], Any]) -> Any:
    """Run a change to a quality record (a batch held, a unit's disposition) and write
    it to the audit trail with the record before and after, as the caller: in one
    transaction of the trail, so the change lands with its entry or not at all."""
    key = ctx.require(Role.VIEWER)
    with ctx.trail.writing() as w:
        before = ctx.store.get(uid)
        after = change()
        w.append(key.name, key.role.label, after.label, uid, action,
                 before.model_dump(mode="json"), after.model_dump(mode="json"))  # fmt: skip
        w.on_abort(lambda: ctx.store.upsert_nodes([before]))
    return after


def reauthenticated(ctx: Context, credential: str) -> None:
    """A signature needs the signer's credential again (21 CFR 11.200(a)(1)): the
    caller's own live key, or their signing password. A wrong one counts towards the
    lock of the caller's signing (:meth:`AccessStore.check_signature`): five in a row
    lock it for 15 minutes, and every refusal is in the API's audit log."""
    key = ctx.require(Role.VIEWER)
    if not ctx.access.check_signature(key, credential):
        raise SignatureRefused(
            "a signature needs your own API key again or your signing password as its "
            "credential; the one given is neither (nothing was signed)"
        )


def _flow(ctx: Context) -> tuple[Workflow, Actor]:
    key = ctx.require(Role.VIEWER)
    return Workflow(ctx.store, ctx.trail), Actor(key.name, key.role.label)


@strawberry.type
class QualityQuery:
    @strawberry.field(description="A CAPA.")
    async def capa(self, info: Info[Context, None], uid: str) -> Node:
        flow, _ = _flow(info.context)
        return to_graphql(await info.context.call(flow.get, uid))  # type: ignore[no-any-return]

    @strawberry.field(description="Every change to a quality record, oldest first.")
    async def capa_history(self, info: Info[Context, None], uid: str) -> list[TrailEntry]:
        flow, _ = _flow(info.context)
        return [TrailEntry.of(e) for e in await info.context.call(flow.history, uid)]

    @strawberry.field(description="Recurrence of a closed CAPA's defect types since closure.")
    async def capa_effectiveness(
        self, info: Info[Context, None], uid: str, until: datetime | None = None
    ) -> CapaEffectiveness:
        ctx = info.context
        ctx.require(Role.VIEWER)
        if until is not None:
            until = local_time(info, until, "until", end=True)
        found = await ctx.call(lambda: eff.effectiveness(ctx.store, uid, until=until))
        return CapaEffectiveness.of(found)

    @strawberry.field(description="Earlier CAPAs on a defect type and their root causes.")
    async def capa_precedents(
        self, info: Info[Context, None], defect_type: str
    ) -> list[CapaPrecedent]:
        ctx = info.context
        ctx.require(Role.VIEWER)
        return [CapaPrecedent.of(p) for p in await ctx.call(precedents, ctx.store, defect_type)]

    @strawberry.field(description="Every supplier's scorecard, the worst material PPM first.")
    async def supplier_scorecards(
        self, info: Info[Context, None], window: WindowInput | None = None
    ) -> list[SupplierScorecard]:
        ctx = info.context
        ctx.require(Role.VIEWER)
        span = window.window(site_zone(info)) if window else None
        cards = await ctx.call(lambda: sup.scorecards(ctx.store, span))
        return [SupplierScorecard.of(c) for c in cards]

    @strawberry.field(description="One supplier's scorecard with its monthly trend.")
    async def supplier_scorecard(
        self, info: Info[Context, None], uid: str, window: WindowInput | None = None
    ) -> SupplierScorecard:
        ctx = info.context
        ctx.require(Role.VIEWER)
        span = window.window(site_zone(info)) if window else None
        return SupplierScorecard.of(await ctx.call(lambda: sup.scorecard(ctx.store, uid, span)))

    @strawberry.field(
        description="The device history record of a batch (ISO 13485:2016 §7.5.1 under 21 "
        "CFR 820) as printable HTML, with its deviations."
    )
    async def device_history_record(
        self, info: Info[Context, None], batch: str
    ) -> DeviceHistoryReport:
        ctx = info.context
        ctx.require(Role.VIEWER)
        record = await ctx.call(lambda: dhr.device_history(
            ctx.store, batch, localtime.site_zone(ctx.settings, ctx.store)))  # fmt: skip
        release = record.release
        return DeviceHistoryReport(
            batch=batch, units=record.units,
            approved_for_distribution=record.approved_for_distribution,
            runs=len(record.runs), lots=[lot.lot for lot in record.lots],
            deviations=record.deviations, capas=[c.uid for c in record.capas],
            released=release.approved, release=release.statement,
            all_deviations=[DhrDeviation.of(d) for d in record.all_deviations],
            subassembly_batches=record.subassembly_batches,
            look_back_runs=sorted({x.run for lb in record.look_back for x in lb.runs}),
            file_name=dhr.file_name(batch), html=dhr.render_html(record),
        )  # fmt: skip

    @strawberry.field(
        description="Every recorded change to a quality record (a CAPA, a held batch, a "
        "unit's disposition), oldest first."
    )
    async def record_history(self, info: Info[Context, None], uid: str) -> list[TrailEntry]:
        ctx = info.context
        ctx.require(Role.VIEWER)
        return [TrailEntry.of(e) for e in await ctx.call(ctx.trail.entries, uid)]

    @strawberry.field(description="Verify the audit trail's hash chain (admin).")
    async def verify_audit_trail(self, info: Info[Context, None]) -> TrailCheck:
        info.context.require(Role.ADMIN)
        return TrailCheck.of(await info.context.call(info.context.trail.verify))


async def _move(info: Info[Context, None], operation: str, role: Role,
                arguments: dict[str, Any], move: Any) -> Node:  # fmt: skip
    """Run a workflow move as the caller, audited; ``move(flow, actor)``."""
    ctx = info.context

    def run() -> Any:
        flow, actor = _flow(ctx)
        return move(flow, actor)

    return to_graphql(await ctx.audited(operation, role, arguments, run))  # type: ignore[no-any-return]


@strawberry.type
class QualityMutation:
    @strawberry.mutation(description="Report a problem as a CAPA (inspector).")
    async def report_capa(
        self, info: Info[Context, None], title: str, problem: str = "",
        addresses: list[str] | None = None,
    ) -> Node:  # fmt: skip
        targets = addresses or []
        return await _move(info, "reportCapa", Role.INSPECTOR,
                           {"title": title, "addresses": targets},
                           lambda f, a: f.report(a, title, problem, addresses=targets))  # fmt: skip

    @strawberry.mutation(description="Open a CAPA for a customer complaint (inspector).")
    async def capa_from_complaint(self, info: Info[Context, None], complaint: str) -> Node:
        return await _move(info, "capaFromComplaint", Role.INSPECTOR, {"complaint": complaint},
                           lambda f, a: f.from_complaint(a, complaint))  # fmt: skip

    @strawberry.mutation(description="Set a reported CAPA's priority (engineer).")
    async def triage_capa(
        self, info: Info[Context, None], uid: str,
        priority: Priority,  # type: ignore[valid-type]
    ) -> Node:  # fmt: skip
        level = DomainPriority(str(getattr(priority, "value", priority)))
        return await _move(info, "triageCapa", Role.ENGINEER, {"uid": uid, "priority": level},
                           lambda f, a: f.triage(a, uid, level))  # fmt: skip

    @strawberry.mutation(description="Give a CAPA its owner, verifier and due date (engineer).")
    async def assign_capa(
        self, info: Info[Context, None], uid: str, owner: str, verifier: str, due_at: datetime
    ) -> Node:
        due_at = local_time(info, due_at, "dueAt", end=True)
        args = {"uid": uid, "owner": owner, "verifier": verifier, "dueAt": due_at.isoformat()}
        return await _move(info, "assignCapa", Role.ENGINEER, args,
                           lambda f, a: f.assign(a, uid, owner=owner, verifier=verifier,
                                                 due_at=due_at))  # fmt: skip

    @strawberry.mutation(description="Start work on an assigned CAPA (engineer).")
    async def start_capa(self, info: Info[Context, None], uid: str) -> Node:
        return await _move(info, "startCapa", Role.ENGINEER, {"uid": uid},
                           lambda f, a: f.start(a, uid))  # fmt: skip

    @strawberry.mutation(description="Record the root cause: a 5-Why chain, 8D D1-D8 (engineer).")
    async def record_root_cause(
        self, info: Info[Context, None], uid: str, five_why: list[str] | None = None,
        eight_d: JSON | None = None,
    ) -> Node:  # fmt: skip
        disciplines = dict(eight_d) if isinstance(eight_d, dict) else None
        return await _move(info, "recordRootCause", Role.ENGINEER, {"uid": uid},
                           lambda f, a: f.record_root_cause(a, uid, five_why=five_why,
                                                            eight_d=disciplines))  # fmt: skip

    @strawberry.mutation(description="Add a containment or corrective action (engineer).")
    async def add_capa_action(
        self, info: Info[Context, None], uid: str, kind: str, text: str,
        owner: str | None = None, due_at: datetime | None = None,
    ) -> Node:  # fmt: skip
        if due_at is not None:
            due_at = local_time(info, due_at, "dueAt", end=True)
        return await _move(info, "addCapaAction", Role.ENGINEER, {"uid": uid, "kind": kind},
                           lambda f, a: f.add_action(a, uid, kind, text, owner=owner,
                                                     due_at=due_at))  # fmt: skip

    @strawberry.mutation(
        description="Attach a photo, video or PDF (multipart upload) to an action (inspector)."
    )
    async def attach_capa_evidence(
        self, info: Info[Context, None], uid: str, kind: str, action: int, file: Upload
    ) -> EvidenceFile:
        ctx = info.context
        name = Path(getattr(file, "filename", None) or "evidence").name

        def attach() -> Evidence:
            source = getattr(file, "file", None)
            if source is None:
                raise ValidationFailed("send the file as a part of a multipart request")
            flow, actor = _flow(ctx)
            flow.check_evidence(uid, kind, action)
            files = evidence_store(ctx)
            stored, new = files.receive(source, name)
            try:
                flow.attach_evidence(actor, uid, kind, action, stored)
            except BaseException:
                if new:  # the CAPA changed meanwhile: leave no orphan behind
                    files.discard(stored.digest)
                raise
            return stored

        args = {"uid": uid, "kind": kind, "action": action, "file": name}
        done = await ctx.audited("attachCapaEvidence", Role.INSPECTOR, args, attach)
        return EvidenceFile.of(done)

    @strawberry.mutation(
        description="Hand a CAPA whose actions are done to its verifier (engineer). With a "
        "`credential` (the caller's own API key again or signing password) the hand-over is "
        "signed: 'actions completed, submitted for verification'."
    )
    async def submit_capa(
        self, info: Info[Context, None], uid: str, credential: str | None = None
    ) -> Node:
        def submit(f: Workflow, a: Actor) -> Any:
            if credential is None:
                return f.submit(a, uid)
            reauthenticated(info.context, credential)
            return f.submit(a, uid, signature=SUBMISSION_MEANING)

        return await _move(info, "submitCapa", Role.ENGINEER,
                           {"uid": uid, "signed": credential is not None}, submit)  # fmt: skip

    @strawberry.mutation(
        description="Verify a CAPA's actions, signed (its verifier only): effective closes it. "
        "A signature: `credential` is the verifier's own API key entered again, or their "
        "signing password."
    )
    async def verify_capa(
        self, info: Info[Context, None], uid: str, effective: bool, note: str, credential: str
    ) -> Node:
        def verify(f: Workflow, a: Actor) -> Any:
            reauthenticated(info.context, credential)
            return f.verify(a, uid, effective=effective, note=note)

        return await _move(info, "verifyCapa", Role.ENGINEER,
                           {"uid": uid, "effective": effective}, verify)  # fmt: skip

    @strawberry.mutation(
        description="Sign the disposition of a deviation in a batch's device history record "
        "(engineer; ISO 13485 §8.3): `deviation` is its key as the record lists it, "
        "`decision` use as is, rework, scrap or reject batch. A signature (21 CFR Part 11): "
        "`credential` is the caller's own API key entered again, or their signing password. "
        "A deviation rolled up from a sub-assembly batch is signed against that batch."
    )
    async def dispose_deviation(
        self, info: Info[Context, None], batch: str, deviation: str, decision: str,
        rationale: str, credential: str,
    ) -> Node:  # fmt: skip
        ctx = info.context

        def dispose() -> Any:
            reauthenticated(ctx, credential)
            key = ctx.require(Role.ENGINEER)
            zone = localtime.site_zone(ctx.settings, ctx.store)
            return dhr.dispose(ctx.store, ctx.trail, Actor(key.name, key.role.label), batch,
                               deviation, decision, rationale, zone=zone)  # fmt: skip

        args = {"batch": batch, "deviation": deviation, "decision": decision}
        return to_graphql(await ctx.audited("disposeDeviation", Role.ENGINEER, args, dispose))  # type: ignore[no-any-return]

    @strawberry.mutation(description="Reopen a closed CAPA (engineer).")
    async def reopen_capa(self, info: Info[Context, None], uid: str, reason: str) -> Node:
        return await _move(info, "reopenCapa", Role.ENGINEER, {"uid": uid, "reason": reason},
                           lambda f, a: f.reopen(a, uid, reason))  # fmt: skip
