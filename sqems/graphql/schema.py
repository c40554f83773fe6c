"""The GraphQL schema: queries over traceability, containment mutations, access admin.

Resolvers are thin: they check the caller's role, call the domain (on a worker thread)
and adapt its results. Domain errors (:class:`~sqems.errors.SqemsError`) reach the client
as typed errors with ``extensions.code``; anything else is masked.

``sqems graphql-schema`` prints the SDL (checked in as ``schema.graphql``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

import strawberry
from strawberry.extensions import (
    MaskErrors,
    MaxAliasesLimiter,
    QueryDepthLimiter,
)
from strawberry.types import ExecutionResult, Info

from graphql import GraphQLError
from sqems import localtime, ontologies, quality
from sqems.errors import NotFound, SqemsError, Unauthenticated, ValidationFailed
from sqems.graph_model import traceability as tr
from sqems.graph_model.nodes import UnitStatus as DomainUnitStatus
from sqems.graph_model.store import Reached
from sqems.graphql import rdf as rdf_api
from sqems.graphql import twin, viewer
from sqems.graphql.access import ApiKey, AuditEntry, Role
from sqems.graphql.analysis import AnalysisQuery, DefectModelInfo, train_model
from sqems.graphql.board import BoardQuery, BoardSubscription
from sqems.graphql.context import Context
from sqems.graphql.design import DesignMutation, DesignQuery
from sqems.graphql.execution import Executor
from sqems.graphql.generate import Adapted, adapted
from sqems.graphql.ingestion import IngestionQuery, IngestionSubscription, QuarantineEntry, replay
from sqems.graphql.inspection import InspectionMutation, InspectionQuery
from sqems.graphql.investigation import InvestigationQuery
from sqems.graphql.judgements import JudgementQuery
from sqems.graphql.limits import CheckedDocument, DocumentCache
from sqems.graphql.lookback import LookBackMutation
from sqems.graphql.middleware import for_clients
from sqems.graphql.quality import QualityMutation, QualityQuery, recorded
from sqems.graphql.signing import SigningMutation, SigningQuery
from sqems.graphql.types import (
    DATETIME,
    NODE_OBJECT_TYPES,
    Connection,
    ConnectionEdge,
    Node,
    WindowInput,
    _graphql_annotation,
    paginate,
    parse_global_id,
    site_zone,
    to_graphql,
)
from sqems.settings import Settings

log = logging.getLogger(__name__)
R = TypeVar("R")
MAX_TRAVERSAL_DEPTH = 64

RoleEnum = strawberry.enum(Role, name="Role", description="What an API key may do.")
_graphql_annotation(DomainUnitStatus)  # registers the model's enum as a GraphQL enum


@strawberry.enum(description="Upstream is towards suppliers; downstream towards customers.")
class GenealogyDirection(Enum):
    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"


# --- results -------------------------------------------------------------------------------


@adapted(tr.PathStep, description="One node on a traceability path and the edge that led to it.")
class PathStep(Adapted):
    pass


@adapted(
    tr.AffectedUnit,
    description="A unit in a recall scope and why it is there.",
    descriptions={
        "shipment": "The shipment the unit left in.",
        "path": "From the recall's source to the unit.",
    },
    after={"shipment": "uid"},
)
class AffectedUnit(Adapted):
    uid: str

    @strawberry.field(description="The unit itself.")
    async def unit(self, info: Info[Context, None]) -> Node | None:
        found = await info.context.nodes.load(self.uid)
        return to_graphql(found) if found else None


@strawberry.type
class RecallCounts:
    process_runs: int
    batches: int
    units: int
    units_shipped: int
    shipments: int
    customers: int


@strawberry.type(description="What a recall from one source must reach.")
class RecallScope:
    source: str
    counts: RecallCounts
    triggers: list[str] = strawberry.field(
        description="Process runs that put batches in scope (machine or excursion recalls)."
    )
    batches: list[str]
    shipments: list[str]
    scope: strawberry.Private[tr.RecallScope]
    found: strawberry.Private[dict[str, Any]]
    """The customers' nodes, read with the scope."""

    @strawberry.field(description="The customers to notify.")
    def customers(self) -> list[Node]:
        return [to_graphql(self.found[uid]) for uid in self.scope.customers if uid in self.found]

    @strawberry.field(description="Affected units with their paths, a page at a time.")
    def units(
        self, info: Info[Context, None], first: int = 50, after: str | None = None
    ) -> Connection[AffectedUnit]:
        # The domain's records are the page's objects: AffectedUnit and PathStep are
        # generated from them field for field (the `unit` resolver reads the uid), and
        # have no type check, so the executor reads the records as they are rather than
        # copies of them.
        max_page = info.context.settings.api_max_page_size
        return paginate(self.scope.units, first, after, max_page)

    @classmethod
    def of(cls, scope: tr.RecallScope, customers: dict[str, Any]) -> RecallScope:
        return cls(
            source=scope.source.describe(),
            counts=RecallCounts(**scope.counts),
            triggers=scope.triggers,
            batches=scope.batches,
            shipments=scope.shipments,
            scope=scope,
            found=customers,
        )


@adapted(Reached, description="A node a genealogy reached and the edge that first reached it.")
class ReachedNode(Adapted):
    uid: str

    @strawberry.field(description="The node itself.")
    async def node(self, info: Info[Context, None]) -> Node | None:
        found = await info.context.nodes.load(self.uid)
        return to_graphql(found) if found else None


@strawberry.type
class LabelCount:
    label: str
    count: int


@strawberry.type(description="Everything a traversal reached from its start nodes.")
class Genealogy:
    start: list[str]
    counts: list[LabelCount]
    genealogy: strawberry.Private[tr.Genealogy]

    @strawberry.field(description="Reached nodes by depth, then uid; optionally one label.")
    def nodes(
        self,
        info: Info[Context, None],
        first: int = 50,
        after: str | None = None,
        label: str | None = None,
    ) -> Connection[ReachedNode]:
        reached = sorted(self.genealogy.traversal.reached.values(), key=lambda r: (r.depth, r.uid))
        chosen = [r for r in reached if label is None or r.label == label]
        page = paginate(chosen, first, after, info.context.settings.api_max_page_size)
        return Connection(
            edges=[
                ConnectionEdge(cursor=e.cursor, node=ReachedNode.of(e.node)) for e in page.edges
            ],
            page_info=page.page_info,
            total_count=page.total_count,
        )

    @strawberry.field(description="The path from a start node to one reached node.")
    def path(self, uid: str) -> list[PathStep]:
        return [PathStep.of(s) for s in self.genealogy.path(uid)]

    @classmethod
    def of(cls, genealogy: tr.Genealogy) -> Genealogy:
        counts = [LabelCount(label=k, count=v) for k, v in genealogy.counts().items()]
        return cls(start=list(genealogy.start), counts=counts, genealogy=genealogy)


@adapted(ApiKey, name="ApiKey", description="An API key (never its secret).")
class ApiKeyInfo(Adapted):
    pass


@strawberry.type(description="A new API key; the token is shown this once only.")
class CreatedApiKey:
    key: ApiKeyInfo
    token: str


@adapted(AuditEntry, description="One audited mutation.")
class AuditRecord(Adapted):
    pass


# --- inputs --------------------------------------------------------------------------------


@strawberry.input
class MachineRecallInput:
    uid: str
    window: WindowInput


@strawberry.input
class ExcursionRecallInput:
    parameter: str
    window: WindowInput | None = None


@strawberry.input(one_of=True, description="Exactly one source of a recall.")
class RecallInput:
    lot: str | None = strawberry.UNSET
    batch: str | None = strawberry.UNSET
    machine: MachineRecallInput | None = strawberry.UNSET
    excursion: ExcursionRecallInput | None = strawberry.UNSET

    def source(self, zone: localtime.ZoneSource) -> tr.RecallSource:
        # @oneOf guarantees exactly one field is given (and not null)
        if isinstance(self.lot, str):
            return tr.RecallSource(tr.SourceKind.LOT, self.lot)
        if isinstance(self.batch, str):
            return tr.RecallSource(tr.SourceKind.BATCH, self.batch)
        if isinstance(self.machine, MachineRecallInput):
            return tr.RecallSource(
                tr.SourceKind.MACHINE, self.machine.uid, self.machine.window.window(zone)
            )
        if isinstance(self.excursion, ExcursionRecallInput):
            excursion = self.excursion
            window = excursion.window.window(zone) if excursion.window else None
            return tr.RecallSource(tr.SourceKind.PARAMETER, excursion.parameter, window)
        raise ValidationFailed("a recall input names exactly one of lot, batch, machine, excursion")


@strawberry.input(one_of=True, description="Which part of the graph to export as RDF.")
class RdfScopeInput:
    whole: bool | None = strawberry.UNSET
    recall: RecallInput | None = strawberry.field(
        default=strawberry.UNSET, description="A recall scope: its source and all it reaches."
    )
    upstream_of: list[str] | None = strawberry.field(
        default=strawberry.UNSET, description="What a root-cause trace reaches from these."
    )
    uids: list[str] | None = strawberry.field(
        default=strawberry.UNSET, description="These nodes and the relationships among them."
    )

    def part(self, store: Any, zone: localtime.ZoneSource) -> ontologies.Part:
        if isinstance(self.recall, RecallInput):
            return ontologies.Part.recall(store, self.recall.source(zone))
        if isinstance(self.upstream_of, list):
            return ontologies.Part.upstream(store, self.upstream_of)
        if isinstance(self.uids, list):
            return ontologies.Part.of_uids(store, self.uids)
        if self.whole is True:
            return ontologies.Part.whole(store)
        raise ValidationFailed("an RDF scope names one of whole: true, recall, upstreamOf, uids")


# --- root types ----------------------------------------------------------------------------


def _depth(depth: int) -> int:
    if not 1 <= depth <= MAX_TRAVERSAL_DEPTH:
        raise ValidationFailed(f"depth must be between 1 and {MAX_TRAVERSAL_DEPTH}, got {depth}")
    return depth


@strawberry.type
class Query(
    AnalysisQuery,
    InvestigationQuery,
    IngestionQuery,
    JudgementQuery,
    twin.WhatIfQuery,
    viewer.ViewerQuery,
    QualityQuery,
    InspectionQuery,
    SigningQuery,
    BoardQuery,
    DesignQuery,
):
    @strawberry.field(description="A node by its global id (Relay).")
    async def node(self, info: Info[Context, None], id: strawberry.ID) -> Node:
        ctx = info.context
        ctx.require(Role.VIEWER)
        label, uid = parse_global_id(id)
        found = await ctx.nodes.load(uid)
        if found is None or found.label != label:
            raise NotFound(f"no {label} {uid} in the graph")
        return to_graphql(found)  # type: ignore[no-any-return]

    @strawberry.field(description="A node by its business key (uid).")
    async def entity(self, info: Info[Context, None], uid: str) -> Node:
        ctx = info.context
        ctx.require(Role.VIEWER)
        found = await ctx.nodes.load(uid)
        if found is None:
            raise NotFound(f"{uid} is not in the graph")
        return to_graphql(found)  # type: ignore[no-any-return]

    @strawberry.field(description="Everything upstream or downstream of a node.")
    async def genealogy(
        self,
        info: Info[Context, None],
        uid: str,
        direction: GenealogyDirection = GenealogyDirection.UPSTREAM,
        depth: int = 32,
    ) -> Genealogy:
        ctx = info.context
        ctx.require(Role.VIEWER)
        walk = (
            ctx.trace.upstream if direction is GenealogyDirection.UPSTREAM else ctx.trace.downstream
        )
        found = await ctx.call(lambda: walk([uid], max_depth=_depth(depth)))
        return Genealogy.of(found)

    @strawberry.field(description="Root-cause trace: upstream of a unit or a complaint.")
    async def trace(
        self, info: Info[Context, None], unit: str | None = None, complaint: str | None = None
    ) -> Genealogy:
        ctx = info.context
        ctx.require(Role.VIEWER)
        if (unit is None) == (complaint is None):
            raise ValidationFailed("give exactly one of unit or complaint")
        uid = unit if unit is not None else complaint
        assert uid is not None
        of = frozenset({"Unit" if unit is not None else "Complaint"})
        return Genealogy.of(await ctx.call(lambda: ctx.trace.upstream([uid], of=of)))

    @strawberry.field(
        description="Recall scope from a lot, a batch, a machine window or an excursion."
    )
    async def recall_scope(self, info: Info[Context, None], input: RecallInput) -> RecallScope:
        ctx = info.context
        ctx.require(Role.VIEWER)
        source = input.source(site_zone(info))

        def answer() -> tuple[tr.RecallScope, dict[str, Any]]:
            scope = ctx.trace.recall_scope(source)
            return scope, ctx.store.get_many(scope.customers)

        # one trip to a worker thread: the customers come with the scope (and go to the
        # request's loader, for any other field that asks for them)
        scope, customers = await ctx.call(answer)
        ctx.nodes.prime_many(customers)
        return RecallScope.of(scope, customers)

    @strawberry.field(
        description="The graph, or a part of it, as RDF in the SQEMS ontology (Turtle, "
        "JSON-LD or N-Triples), with its SHACL report on request."
    )
    async def export_rdf(
        self,
        info: Info[Context, None],
        scope: RdfScopeInput,
        format: rdf_api.RdfFormatEnum = rdf_api.RdfFormatEnum.TURTLE,  # type: ignore[valid-type]
        validate: bool = False,
    ) -> rdf_api.RdfExport:
        ctx = info.context
        ctx.require(Role.VIEWER)
        zone = site_zone(info)
        return await ctx.call(
            lambda: rdf_api.export(
                ctx.store, ctx.settings, scope.part(ctx.store, zone), format, validate
            )
        )

    @strawberry.field(description="API keys (admin).")
    def api_keys(self, info: Info[Context, None]) -> list[ApiKeyInfo]:
        info.context.require(Role.ADMIN)
        access = info.context.access
        return [ApiKeyInfo.of(k) for k in access.keys()]  # noqa: SIM118 - not a dict

    @strawberry.field(description="The newest audited mutations (admin).")
    def audit_log(self, info: Info[Context, None], last: int = 50) -> list[AuditRecord]:
        info.context.require(Role.ADMIN)
        if not 1 <= last <= info.context.settings.api_max_page_size:
            raise ValidationFailed(
                f"last must be between 1 and {info.context.settings.api_max_page_size}"
            )
        return [AuditRecord.of(e) for e in info.context.access.audit(last)]


async def _audited(
    info: Info[Context, None],
    operation: str,
    role: Role,
    arguments: dict[str, Any],
    action: Callable[[], R],
) -> R:
    return await info.context.audited(operation, role, arguments, action)


@strawberry.type
class Mutation(
    QualityMutation, SigningMutation, InspectionMutation, DesignMutation, LookBackMutation
):
    @strawberry.mutation(
        description="Run quarantined entries through the ingestion again (engineer); each "
        "entry records its outcome."
    )
    async def replay_quarantined(
        self, info: Info[Context, None], ids: list[int]
    ) -> list[QuarantineEntry]:
        ctx = info.context
        done = await _audited(
            info, "replayQuarantined", Role.ENGINEER, {"ids": ids}, lambda: replay(ctx, ids)
        )
        return [QuarantineEntry.of(e) for e in done]

    @strawberry.mutation(
        description="Train (or retrain) a product's defect model on its history (engineer)."
    )
    async def train_defect_model(self, info: Info[Context, None], product: str) -> DefectModelInfo:
        ctx = info.context
        model = await _audited(info, "trainDefectModel", Role.ENGINEER, {"product": product},
                               lambda: train_model(ctx.store, ctx.settings, product))  # fmt: skip
        return DefectModelInfo.of(model)

    @strawberry.mutation(
        description="Start a what-if session of a line, with its baseline (engineer)."
    )
    async def create_what_if_session(
        self,
        info: Info[Context, None],
        line: str,
        name: str,
        horizon_hours: float = 8.0,
        replications: int = 100,
        seed: int = 0,
    ) -> twin.WhatIfSessionView:
        ctx = info.context
        args = {
            "line": line,
            "name": name,
            "horizonHours": horizon_hours,
            "replications": replications,
            "seed": seed,
        }
        view = await _audited(
            info,
            "createWhatIfSession",
            Role.ENGINEER,
            args,
            lambda: twin.create_session(ctx, line, name, horizon_hours, replications, seed),
        )
        return twin.WhatIfSessionView.of(view)

    @strawberry.mutation(
        description="Add a scenario to a session and simulate it in the background "
        "(engineer); the baseline runs first if it has not. Follow it with whatIfSession "
        "or the whatIfProgress subscription."
    )
    async def run_scenario(
        self,
        info: Info[Context, None],
        session: str,
        name: str,
        changes: twin.ScenarioInput | None = None,
    ) -> twin.WhatIfScenario:
        ctx = info.context
        spec = changes.spec(site_zone(info)).to_json() if changes else "{}"
        args = {"session": session, "name": name, "changes": spec}
        scenario = await _audited(
            info,
            "runScenario",
            Role.ENGINEER,
            args,
            lambda: twin.run_scenario(ctx, session, name, changes),
        )
        return twin.WhatIfScenario.of(scenario)

    @strawberry.mutation(
        description="Add a scenario with the setpoints of highest expected yield to a "
        "session and simulate it in the background (engineer); its results say whether "
        "its throughput met the floor."
    )
    async def recommend_setpoints(
        self, info: Info[Context, None], session: str, throughput_floor: float
    ) -> twin.WhatIfScenario:
        ctx = info.context
        args = {"session": session, "throughputFloor": throughput_floor}
        scenario, _ = await _audited(
            info,
            "recommendSetpoints",
            Role.ENGINEER,
            args,
            lambda: twin.runner(ctx).recommend(session, throughput_floor),
        )
        return twin.WhatIfScenario.of(scenario)

    @strawberry.mutation(
        description="Import an IFC model (IFC2X3 or IFC4, multipart upload; engineer): "
        "tessellate it, store its elements and link them to machines by an attribute or "
        "property (linkKey, default Tag) or by explicit links."
    )
    async def import_bim(
        self,
        info: Info[Context, None],
        file: viewer.Upload,
        name: str | None = None,
        link_key: str = "Tag",
        links: list[viewer.BimLinkInput] | None = None,
    ) -> viewer.BimImportResult:
        ctx = info.context
        args = {"file": viewer.upload_name(file), "name": name, "linkKey": link_key,
                "links": len(links or [])}  # fmt: skip
        return await _audited(
            info,
            "importBim",
            Role.ENGINEER,
            args,
            lambda: viewer.import_upload(ctx, file, name, link_key, links),
        )

    @strawberry.mutation(description="Put a batch on hold (engineer).")
    async def hold_batch(self, info: Info[Context, None], uid: str, reason: str) -> Node:
        store = info.context.store
        held = await _audited(info, "holdBatch", Role.ENGINEER, {"uid": uid, "reason": reason},
                              lambda: recorded(info.context, f"held: {reason}", uid,
                                               lambda: quality.hold_batch(store, uid)))  # fmt: skip
        return to_graphql(held)  # type: ignore[no-any-return]

    @strawberry.mutation(description="Release a held batch (engineer).")
    async def release_batch(self, info: Info[Context, None], uid: str, reason: str) -> Node:
        store = info.context.store
        released = await _audited(
            info, "releaseBatch", Role.ENGINEER, {"uid": uid, "reason": reason},
            lambda: recorded(info.context, f"released: {reason}", uid,
                             lambda: quality.release_batch(store, uid)),
        )  # fmt: skip
        return to_graphql(released)  # type: ignore[no-any-return]

    @strawberry.mutation(description="Record a unit's disposition (inspector).")
    async def set_unit_status(
        self,
        info: Info[Context, None],
        uid: str,
        status: DomainUnitStatus,
    ) -> Node:
        store = info.context.store
        changed = await _audited(
            info, "setUnitStatus", Role.INSPECTOR, {"uid": uid, "status": status.value},
            lambda: recorded(info.context, f"disposition: {status.value}", uid,
                             lambda: quality.set_unit_status(store, uid, status)),
        )  # fmt: skip
        return to_graphql(changed)  # type: ignore[no-any-return]

    @strawberry.mutation(description="Create an API key (admin); its token is shown once.")
    async def create_api_key(
        self,
        info: Info[Context, None],
        name: str,
        role: RoleEnum,  # type: ignore[valid-type]
    ) -> CreatedApiKey:
        access = info.context.access
        key, token = await _audited(info, "createApiKey", Role.ADMIN,
                                    {"name": name, "role": Role(role).label},
                                    lambda: access.create_key(name, Role(role)))  # fmt: skip
        return CreatedApiKey(key=ApiKeyInfo.of(key), token=token)

    @strawberry.mutation(description="Revoke an API key (admin).")
    async def revoke_api_key(self, info: Info[Context, None], id: str) -> ApiKeyInfo:
        access = info.context.access
        key = await _audited(info, "revokeApiKey", Role.ADMIN, {"id": id},
                             lambda: access.revoke(id))  # fmt: skip
        return ApiKeyInfo.of(key)


@strawberry.type
class Subscription(IngestionSubscription, twin.WhatIfSubscription, BoardSubscription):
    pass


# --- the schema ----------------------------------------------------------------------------


class _MaskUnexpected(MaskErrors):
    """Hide every error that is not a typed SQEMS error, keeping a code for clients."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        log.error("unexpected error in a resolver", exc_info=error.original_error)
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL_ERROR"}
        return masked


class _Schema(strawberry.Schema):
    recheck_s: float = 5.0
    """How often a subscription checks that its caller's key still works."""

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        results = await super().stream(*args, **kwargs)
        context = kwargs.get("context_value")
        if isinstance(context, Context) and isinstance(results, AsyncGenerator):
            return _while_key_lives(results, context, self.recheck_s)
        return results

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        # Client errors (bad input, unknown uid, no key) are the client's to read; the
        # log gets one line each. Unexpected ones were logged with their traceback
        # when they were masked.
        for error in errors:
            extensions = error.extensions or {}
            if not extensions.get("code"):
                # graphql-core's own errors: a document or variables the schema refuses
                extensions = error.extensions = {**extensions, "code": "GRAPHQL_INVALID"}
            code = extensions["code"]
            log.info("graphql error", extra={"code": code, "error": error.message})
            error.message = for_clients(error.message)  # the log keeps the paths


async def _while_key_lives(
    results: AsyncGenerator[Any, None], context: Context, every_s: float
) -> AsyncGenerator[Any, None]:
    """``results`` (a subscription's) while the caller's key is not revoked: checked
    before each result goes out and every ``every_s`` between results. A revoked key
    gets a last result with an ``UNAUTHENTICATED`` error, and the stream ends."""
    pending = asyncio.ensure_future(anext(results))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if context.key_revoked():
                error = Unauthenticated(
                    f"key {context.principal.id if context.principal else ''!r} was revoked; "
                    "the subscription is closed"
                )
                log.info("subscription closed", extra={"code": error.code})
                yield ExecutionResult(
                    data=None, errors=[GraphQLError(error.message, extensions=error.extensions)]
                )
                return
            if done:
                try:
                    result = pending.result()
                except StopAsyncIteration:
                    return
                yield result
                pending = asyncio.ensure_future(anext(results))
    finally:
        pending.cancel()
        await asyncio.wait({pending})
        await results.aclose()


def _should_mask(error: GraphQLError) -> bool:
    """Mask all but SQEMS's typed errors and graphql-core's errors about the request."""
    original = error.original_error
    return original is not None and not isinstance(original, SqemsError | GraphQLError)


def build_schema(
    settings: Settings | None = None, *, execution_class: type[Any] | None = Executor
) -> strawberry.Schema:
    """The schema with the limits of ``settings`` (defaults when None), executed by
    ``execution_class`` (None: strawberry's own executor, to compare answers with)."""
    settings = settings or Settings()
    # The limits are validation rules; built once, so validation results can be cached
    # by document (a fresh rule class per request would miss the cache every time). The
    # expanded size is bounded before they run: they expand fragments; parsing and
    # validation run off the event loop, with a time limit (limits.py).
    limits = [
        *QueryDepthLimiter(max_depth=settings.api_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.api_max_aliases).validation_rules,
    ]
    documents = DocumentCache()
    schema = _Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=list(NODE_OBJECT_TYPES.values()),
        scalar_overrides={datetime: DATETIME},  # inputs in the site's zone (localtime)
        execution_context_class=execution_class,
        extensions=[
            # clients send the same few documents over and over: parse and validate each
            # once per distinct text
            lambda: CheckedDocument(
                documents,
                max_tokens=settings.api_max_tokens,
                max_fields=settings.api_max_fields,
                timeout_s=settings.api_validation_timeout_s,
                rules=limits,
            ),
            lambda: _MaskUnexpected(
                should_mask_error=_should_mask,
                error_message="internal error; the server log has the details",
            ),
        ],
    )
    schema.recheck_s = settings.api_subscription_recheck_s
    return schema


def sdl() -> str:
    """The schema's SDL, as checked in at ``sqems/graphql/schema.graphql``."""
    return build_schema().as_str() + "\n"


if __name__ == "__main__":
    print(sdl(), end="")
