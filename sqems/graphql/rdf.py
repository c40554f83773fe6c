"""GraphQL field ``exportRdf``: the graph or a part of it as RDF text.

The part is chosen by :class:`~sqems.graphql.schema.RdfScopeInput` (the whole graph, a
recall scope, an upstream trace, or named nodes); the answer is capped at
``SQEMS_RDF_API_MAX_NODES`` nodes — a whole plant goes through ``sqems rdf export``.
With ``validate: true`` the SHACL report of the export comes along.
"""

from __future__ import annotations

import io

import strawberry

from sqems import ontologies as rdf
from sqems.errors import ValidationFailed
from sqems.graph_model import GraphStore
from sqems.settings import Settings

RdfFormatEnum = strawberry.enum(rdf.RdfFormat, name="RdfFormat", description="An RDF syntax.")


@strawberry.type(description="One SHACL finding: which node, which property, what is wrong.")
class ShaclFinding:
    focus: str
    path: str
    severity: str
    message: str
    value: str | None
    constraint: str


@strawberry.type(
    name="ShaclReport", description="The SHACL report of an export against the SQEMS shapes."
)
class ShaclReportView:
    conforms: bool
    violations: int
    findings: list[ShaclFinding]

    @classmethod
    def of(cls, report: rdf.ShaclReport) -> ShaclReportView:
        findings = [ShaclFinding(**f.as_dict()) for f in report.findings]
        return cls(conforms=report.conforms, violations=report.violations, findings=findings)


@strawberry.type(description="A part of the graph as RDF in the SQEMS ontology.")
class RdfExport:
    format: RdfFormatEnum  # type: ignore[valid-type]
    media_type: str
    scope: str = strawberry.field(description="What was exported, in words.")
    nodes: int
    relationships: int
    triples: int
    text: str = strawberry.field(description="The RDF document.")
    shacl: ShaclReportView | None = strawberry.field(
        description="The SHACL report, when asked for with validate: true."
    )


def export(
    store: GraphStore, settings: Settings, part: rdf.Part, fmt: rdf.RdfFormat, check: bool
) -> RdfExport:
    size = store.count() if part.uids is None else len(part.uids)
    cap = settings.rdf_api_max_nodes
    if size > cap:
        raise ValidationFailed(
            f"{part.description} has {size:,} nodes; the API exports at most {cap:,} "
            "(SQEMS_RDF_API_MAX_NODES). Narrow the scope, or use `sqems rdf export`."
        )
    buffer = io.StringIO()
    counts = rdf.write(part, buffer, fmt, base=settings.rdf_base)
    text = buffer.getvalue()
    report = rdf.validate(rdf.parse(text, fmt)) if check else None
    return RdfExport(
        format=fmt,
        media_type=fmt.media_type,
        scope=part.description,
        nodes=counts.nodes,
        relationships=counts.edges,
        triples=counts.triples,
        text=text,
        shacl=ShaclReportView.of(report) if report else None,
    )
