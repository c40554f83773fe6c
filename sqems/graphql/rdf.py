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
from sqems.graphql.generate import Adapted, adapted
from sqems.settings import Settings

RdfFormatEnum = strawberry.enum(rdf.RdfFormat, name="RdfFormat", description="An RDF syntax.")


@adapted(
    rdf.Finding,
    description="One SHACL finding: which node, which property, what is wrong.",
)
class ShaclFinding(Adapted):
    pass


@adapted(
    rdf.ShaclReport,
    name="ShaclReport",
    description="The SHACL report of an export against the SQEMS shapes.",
    exclude=("triples",),
    after={"violations": "conforms"},
)
class ShaclReportView(Adapted):
    violations: int


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
