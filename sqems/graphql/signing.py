"""GraphQL fields of identity and electronic signatures: who am I, my signing password,
my CAPA tasks.

A phone signs with two components (21 CFR 11.200(a)(1)): the API key kept on the device
identifies the user, and the signing password (or the key pasted again) is typed at each
signature; :func:`sqems.graphql.quality.reauthenticated` checks it. ``me`` tells a page
what to offer; ``myTasks`` is what the user has to do (:mod:`sqems.quality.tasks`).
"""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter

import strawberry
from strawberry.types import Info

from sqems.errors import NotFound
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.generate import Adapted, adapted, derived
from sqems.graphql.types import Node, to_graphql
from sqems.quality.tasks import Task, my_tasks

REDACTED = "[redacted]"
"""What the API's audit log holds in place of a password."""


@strawberry.type(description="The caller, as their API key names them.")
class Me:
    name: str
    role: str = strawberry.field(description="viewer, inspector, engineer or admin.")
    can_report: bool = strawberry.field(description="Report defects and CAPAs (inspector+).")
    can_hold: bool = strawberry.field(description="Hold and release batches (engineer+).")
    can_approve: bool = strawberry.field(description="Submit and verify CAPAs, signed (engineer+).")
    has_signing_password: bool = strawberry.field(
        description="Whether a signing password is set (else sign with the key again)."
    )
    signing_locked_until: datetime | None = strawberry.field(
        description="Until when signing is locked after wrong credentials, or null."
    )


@adapted(Task, name="CapaTask", description="An open CAPA the caller owns or verifies.",
         exclude=["role"], after={"as_": "overdue"})  # fmt: skip
class CapaTask(Adapted):
    as_: str = derived(attrgetter("role"), name="as", description="owner or verifier.")

    @strawberry.field(description="The CAPA itself.")
    async def capa(self, info: Info[Context, None]) -> Node:
        uid: str = self.uid  # type: ignore[attr-defined]
        found = await info.context.nodes.load(uid)
        if found is None:
            raise NotFound(f"CAPA {uid} is not in the graph any more")
        return to_graphql(found)  # type: ignore[no-any-return]


@strawberry.type
class SigningQuery:
    @strawberry.field(description="The caller: name, role and what they may do (any key).")
    async def me(self, info: Info[Context, None]) -> Me:
        ctx = info.context
        key = ctx.require(Role.VIEWER)
        has = await ctx.call(ctx.access.has_signing_password, key.name)
        locked = await ctx.call(ctx.access.signing_locked_until, key.name)
        return Me(
            name=key.name,
            role=key.role.label,
            can_report=key.role >= Role.INSPECTOR,
            can_hold=key.role >= Role.ENGINEER,
            can_approve=key.role >= Role.ENGINEER,
            has_signing_password=has,
            signing_locked_until=locked,
        )

    @strawberry.field(
        description="Open CAPAs where the caller is owner or verifier, overdue first, then "
        "by due date, with what the caller can do now (viewer)."
    )
    async def my_tasks(self, info: Info[Context, None]) -> list[CapaTask]:
        ctx = info.context
        key = ctx.require(Role.VIEWER)
        moves = {"submit", "verify"} if key.role >= Role.ENGINEER else set()
        tasks = await ctx.call(lambda: my_tasks(ctx.store, key.name, moves=moves))
        return [CapaTask.of(t) for t in tasks]


@strawberry.type
class SigningMutation:
    @strawberry.mutation(
        description="Set the caller's own signing password (at least 8 characters); "
        "`current` is required when one is set, and a wrong one counts towards the signing "
        "lock. Audited, never with the passwords."
    )
    async def set_signing_password(
        self, info: Info[Context, None], password: str, current: str | None = None
    ) -> bool:
        ctx = info.context

        def change() -> bool:
            key = ctx.require(Role.VIEWER)
            ctx.access.set_signing_password(key.name, password, current)
            return True

        arguments = {"password": REDACTED, "current": None if current is None else REDACTED}
        return await ctx.audited("setSigningPassword", Role.VIEWER, arguments, change)
