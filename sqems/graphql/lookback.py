"""GraphQL field of the look-back (:mod:`sqems.quality.lookback`, ISO 13485:2016 §7.6).

``lookBack(calibration, openCapa)`` answers what a calibration found out of tolerance
puts in question: the machine's runs since its last good calibration, their batches,
the units made in them and what those went into, left in and reached. With
``openCapa`` it also opens the look-back's CAPA (once: while it is open, a second call
returns it) and needs the engineer role; without, any reader may ask. It is a mutation
because it may write, and every call is in the API's audit log; the CAPA is in the
audit trail of quality records as the caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from sqems.graph_model.traceability import AffectedUnit
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.types import Connection, Node, paginate, to_graphql
from sqems.quality import lookback as lb
from sqems.quality.capa import Actor


@strawberry.type(description="How much a look-back puts in question.")
class LookBackCounts:
    runs: int
    batches: int
    units_made: int = strawberry.field(description="Units made in the batches.")
    assemblies: int = strawberry.field(description="Assemblies those units went into.")
    units_shipped: int = strawberry.field(description="Units that left in a shipment.")
    shipments: int
    customers: int


@strawberry.type(description="A unit a look-back puts in question.")
class LookBackUnit:
    uid: str
    made: bool = strawberry.field(
        description="Made in an affected batch (false: an assembly one of those went into)."
    )
    shipment: str | None = strawberry.field(description="The shipment the unit left in.")

    @strawberry.field(description="The unit itself.")
    async def unit(self, info: Info[Context, None]) -> Node | None:
        found = await info.context.nodes.load(self.uid)
        return to_graphql(found) if found else None


def _unit(u: AffectedUnit) -> LookBackUnit:
    return LookBackUnit(uid=u.uid, made=u.path[-1].edge == "PRODUCED", shipment=u.shipment)


@strawberry.type(
    description="The look-back of a calibration found out of tolerance (ISO 13485 §7.6)."
)
class LookBack:
    machine: str
    last_good: str | None = strawberry.field(
        description="The machine's last good calibration before (null: none on record)."
    )
    window_start: datetime | None = strawberry.field(
        description="When the machine was last known good (null: from its first run)."
    )
    window_end: datetime = strawberry.field(description="When it was found out of tolerance.")
    window_text: str = strawberry.field(description="The window in the site's local time.")
    zone: str = strawberry.field(description="The site's time zone (IANA name).")
    reason: str = strawberry.field(description="Why the calibration is out of tolerance.")
    sentence: str = strawberry.field(description="The window in words, as the DHR says it.")
    counts: LookBackCounts
    runs: list[str] = strawberry.field(description="The machine's process runs in the window.")
    batches: list[str] = strawberry.field(description="The batches of those runs.")
    shipments: list[str]
    capa_opened: bool = strawberry.field(description="Whether this call opened the CAPA.")
    found: strawberry.Private[lb.LookBack]
    nodes: strawberry.Private[dict[str, Any]]
    """The calibration, the CAPA and the customers, read with the look-back."""

    @strawberry.field(description="The calibration record.")
    def calibration(self) -> Node:
        return to_graphql(self.found.calibration)  # type: ignore[no-any-return]

    @strawberry.field(description="The look-back's open CAPA (null: none is open).")
    def capa(self) -> Node | None:
        capa = self.found.capa
        return to_graphql(capa) if capa is not None else None

    @strawberry.field(description="The customers to notify.")
    def customers(self) -> list[Node]:
        return [to_graphql(self.nodes[u]) for u in self.found.customers if u in self.nodes]

    @strawberry.field(description="The units in question, a page at a time.")
    def units(
        self, info: Info[Context, None], first: int = 50, after: str | None = None
    ) -> Connection[LookBackUnit]:
        max_page = info.context.settings.api_max_page_size
        return paginate(self.found.scope.units, first, after, max_page, _unit)

    @classmethod
    def of(cls, found: lb.LookBack, nodes: dict[str, Any]) -> LookBack:
        c = found.counts()
        return cls(
            machine=found.machine,
            last_good=found.last_good,
            window_start=found.window.start,
            window_end=found.calibration.performed_at,
            window_text=found.window_text,
            zone=found.zone.name,
            reason=found.reason,
            sentence=found.sentence,
            counts=LookBackCounts(**c),
            runs=found.runs,
            batches=found.batches,
            shipments=found.shipments,
            capa_opened=found.capa_opened,
            found=found,
            nodes=nodes,
        )


@strawberry.type
class LookBackMutation:
    @strawberry.mutation(
        description="The look-back of a calibration found out of tolerance: the runs on its "
        "machine since its last good calibration, their batches, the units made in them and "
        "everything downstream. With openCapa, also the CAPA that addresses the calibration "
        "and the batches, opened once (engineer); without, a reader's question (viewer)."
    )
    async def look_back(
        self, info: Info[Context, None], calibration: str, open_capa: bool = False
    ) -> LookBack:
        ctx = info.context

        def run() -> tuple[lb.LookBack, dict[str, Any]]:
            found = lb.look_back(ctx.store, calibration)
            if open_capa:
                key = ctx.require(Role.ENGINEER)
                actor = Actor(key.name, key.role.label)
                found = lb.open_capa(ctx.store, ctx.trail, actor, found)
            return found, ctx.store.get_many(found.customers)

        role = Role.ENGINEER if open_capa else Role.VIEWER
        args = {"calibration": calibration, "openCapa": open_capa}
        found, nodes = await ctx.audited("lookBack", role, args, run)
        ctx.nodes.prime_many(nodes)
        return LookBack.of(found, nodes)
