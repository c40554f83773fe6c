"""GraphQL fields of the inspector's phone: what a scanned code names, the defect
types to pick from, and a defect report with photos.

``identify`` and ``defectTypes`` are for any key (viewer); ``reportDefect`` needs the
inspector role and is a multipart request when photos are sent (the GraphQL multipart
request spec, as ``attachCapaEvidence``). A report is idempotent by its ``reportId``,
so a phone that replays its offline queue, or lost an answer, cannot record a defect
twice. The domain lives in :mod:`sqems.quality.inspection`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import strawberry
from strawberry.file_uploads import Upload
from strawberry.types import Info

from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import Severity as DomainSeverity
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.generate import Adapted, adapted
from sqems.graphql.quality import EvidenceFile, evidence_store
from sqems.graphql.types import Node, _graphql_annotation, local_time, to_graphql
from sqems.quality import inspection as insp

Severity = _graphql_annotation(DomainSeverity)


@adapted(insp.CapaBrief, description="An open CAPA, in brief.")
class CapaBrief(Adapted):
    pass


@adapted(insp.DefectBrief, description="A recorded defect, in brief.")
class DefectBrief(Adapted):
    pass


@adapted(
    insp.Identified,
    description="What a scanned or typed code names: a unit, a batch or a material lot, "
    "with its product, batch, status, holds, open CAPAs and defects.",
    descriptions={"code": "The code as it was given."},
)
class Identified(Adapted):
    pass


@adapted(insp.DefectTypeChoice, description="A defect type an inspector may pick.")
class DefectTypeChoice(Adapted):
    pass


@strawberry.input(description="A defect as the inspector wrote it on the phone.")
class DefectReportInput:
    report_id: str = strawberry.field(
        description="A UUID the phone made when the report was written: a report sent "
        "again with it records nothing new."
    )
    target: str = strawberry.field(description="The uid of the unit or batch.")
    defect_type: str = strawberry.field(description="The uid of the defect type.")
    severity: Severity  # type: ignore[valid-type]
    note: str = ""
    found_at: datetime | None = strawberry.field(
        default=None,
        description="When the inspector wrote the report (default: now); at most 5 "
        "minutes ahead of the server's clock, not before the target was produced.",
    )


@strawberry.type(name="DefectReport", description="The defect a report made.")
class DefectReportResult:
    defect: Node = strawberry.field(description="The Defect.")
    created: bool = strawberry.field(
        description="False: the report had been recorded before; nothing was changed."
    )
    evidence: list[EvidenceFile] = strawberry.field(description="Its photos in the store.")


@strawberry.type
class InspectionQuery:
    @strawberry.field(
        description="What a code names: a uid, a GS1 element string (AI 21 serial → unit, "
        "AI 10 lot → batch or material lot; with or without parentheses, FNC1 as GS) or a "
        "URL (its uid= parameter or last path segment). NOT_FOUND for anything else."
    )
    async def identify(self, info: Info[Context, None], code: str) -> Identified:
        ctx = info.context
        ctx.require(Role.VIEWER)
        return Identified.of(await ctx.call(insp.identify, ctx.store, code))

    @strawberry.field(description="The defect types an inspector may pick, by name.")
    async def defect_types(self, info: Info[Context, None]) -> list[DefectTypeChoice]:
        ctx = info.context
        ctx.require(Role.VIEWER)
        return [DefectTypeChoice.of(t) for t in await ctx.call(insp.defect_types, ctx.store)]


@strawberry.type
class InspectionMutation:
    @strawberry.mutation(
        description="Report a defect on a unit or batch, with photos (inspector; a "
        "multipart request when photos are sent). The same reportId again returns the "
        "same defect with created: false."
    )
    async def report_defect(
        self,
        info: Info[Context, None],
        report: DefectReportInput,
        photos: list[Upload] = [],  # noqa: B006  (read, never changed; the API's default)
    ) -> DefectReportResult:
        ctx = info.context
        severity = DomainSeverity(str(getattr(report.severity, "value", report.severity)))

        def run() -> insp.Reported:
            key = ctx.require(Role.INSPECTOR)
            found_at = report.found_at
            if found_at is not None:
                found_at = local_time(info, found_at, "foundAt")
            domain = insp.DefectReport(
                report_id=report.report_id, target=report.target,
                defect_type=report.defect_type, severity=severity, note=report.note,
                found_at=found_at,
            )  # fmt: skip
            files = [_photo(upload, i) for i, upload in enumerate(photos)]
            inspector = insp.Inspector(ctx.store, ctx.trail, evidence_store(ctx))
            return inspector.report(key.name, key.role.label, domain, files)

        names = [Path(getattr(p, "filename", None) or "?").name for p in photos]
        args: dict[str, Any] = {"reportId": report.report_id, "target": report.target,
                                "defectType": report.defect_type, "severity": severity.value,
                                "photos": names}  # fmt: skip
        done = await ctx.audited("reportDefect", Role.INSPECTOR, args, run)
        return DefectReportResult(
            defect=to_graphql(done.defect), created=done.created,
            evidence=[EvidenceFile.of(e) for e in done.evidence],
        )  # fmt: skip


def _photo(upload: Any, index: int) -> insp.Photo:
    """A photo part of the request; a value that is not a file part is refused."""
    source = getattr(upload, "file", None)
    if source is None:
        raise ValidationFailed(
            f"photos[{index}] is not a file: send photos as parts of a multipart request"
        )
    name = Path(getattr(upload, "filename", None) or f"photo-{index + 1}").name
    return insp.Photo(name, source)
