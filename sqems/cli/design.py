"""Planned products: check a plan file against the plant, save it as a draft, list the
plans, release one as a product of the plant."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sqems import localtime
from sqems.cli.app import Group, app, command, out
from sqems.cli.common import audit_trail, cli_user, graph_store
from sqems.cli.render import Column, print_table

if TYPE_CHECKING:
    from datetime import datetime, tzinfo

    from sqems.design.plan import PlannedProductSpec

design_app = typer.Typer(
    cls=Group,
    help="Planned products: a new product's BOM, routing and tolerances, checked against "
    "the plant's history before trial production.\n\n"
    "Example: sqems design check examples/design/drive-mini.json",
    no_args_is_help=True,
)
app.add_typer(design_app, name="design")

CLI_ROLE = "cli"
"""The role the audit trail records for a change made on the command line."""
PlanFile = Annotated[
    Path, typer.Argument(metavar="FILE", help="The plan, a JSON file (see docs/design-review.md).")
]


def _summary(plan: PlannedProductSpec) -> str:
    parameters = sum(len(r.parameters) for r in plan.routing)
    return (
        f"{plan.uid} ({plan.name}): {len(plan.bom)} materials, "
        f"{len(plan.routing)} steps, {parameters} toleranced parameters, "
        f"{plan.volume} units in batches of {plan.batch_size}"
    )


def _say(text: str, first: str = "", rest: str = "") -> None:
    """``text`` wrapped to the terminal between words (a uid is never split), the
    lines after the first indented by ``rest``."""
    lines = textwrap.wrap(text, width=max(out.width, 40), initial_indent=first,
                          subsequent_indent=rest, break_long_words=False,
                          break_on_hyphens=False)  # fmt: skip
    for line in lines:
        out.print(escape(line), highlight=False)


def _print_warnings(warnings: list[str]) -> None:
    if not warnings:
        _say("no warnings: the plant's history backs every element of the plan")
        return
    out.print(f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}:")
    for w in warnings:
        _say(w, "- ", "  ")


@command("check", on=design_app)
def check_cmd(
    file: PlanFile,
    as_json: Annotated[bool, typer.Option("--json", help="The warnings as JSON.")] = False,
) -> None:
    """Check a plan against the graph: every material, supplier, step, machine and
    parameter must be in it (an error names each that is not and where it stands);
    warnings say what the plant's history does not back. Nothing is written.

    Example: sqems design check examples/design/drive-mini.json
    """
    from sqems.design.plan import check_plan, read_plan

    plan = read_plan(file)
    with graph_store(read_only=True) as (store, _):
        warnings = check_plan(store, plan)
    if as_json:
        out.print_json(json.dumps({"plan": plan.uid, "warnings": warnings}))
        return
    _say(f"plan {_summary(plan)}", rest="  ")
    _print_warnings(warnings)


@command("save", on=design_app)
def save_cmd(file: PlanFile) -> None:
    """Check a plan and save it as a draft planned product (a new plan, or a revision
    of the draft with its uid), recorded in the audit trail. A released plan is not
    changed: save its revision under a new uid.

    Example: sqems design save examples/design/drive-mini.json
    """
    from sqems.design.plan import read_plan, save_plan
    from sqems.quality.capa import Actor

    plan = read_plan(file)
    with graph_store() as (store, settings):
        trail = audit_trail(settings)
        try:
            saved = save_plan(store, trail, Actor(cli_user(), CLI_ROLE), plan)
        finally:
            trail.close()
    if not saved.changed:
        _say(f"unchanged: {plan.uid} is stored as {file} has it; nothing was written")
    else:
        what = "saved" if saved.created else "revised"
        _say(f"{what} {plan.uid} as a draft (in the audit trail)")
    _say(f"plan {_summary(plan)}", rest="  ")
    _print_warnings(saved.warnings)


def _when(at: datetime | None, zone: tzinfo) -> str:
    return "" if at is None else at.astimezone(zone).strftime("%Y-%m-%d %H:%M")


@command("list", on=design_app)
def list_cmd(
    status: Annotated[
        str | None,
        typer.Option("--status", metavar="draft|released", help="Only plans in this state."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The plans as JSON.")] = False,
) -> None:
    """The planned products, the last saved first.

    Example: sqems design list --status draft
    """
    from sqems.design.plan import planned_products
    from sqems.errors import ValidationFailed
    from sqems.graph_model.nodes import PlanStatus

    try:
        wanted = None if status is None else PlanStatus(status)
    except ValueError:
        raise ValidationFailed(f"--status takes draft or released, got {status!r}") from None
    with graph_store(read_only=True) as (store, settings):
        plans = planned_products(store, wanted)
        zone = localtime.zone_of(settings, store).tz
    if as_json:
        out.print_json(json.dumps([p.node.model_dump(mode="json") for p in plans]))
        return
    if not plans:
        out.print("no planned products" + (f" in state {status}" if status else "") +
                  ": save one with `sqems design save FILE`")  # fmt: skip
        return
    rows = [
        [
            p.uid,
            escape(p.node.name),
            p.status.value,
            _when(p.node.saved_at, zone),
            p.node.released_as or "",
        ]
        for p in plans
    ]
    cols = [Column("plan", "id"), Column("name"), Column("status", "id"),
            Column("saved", "number"), Column("released as", "id")]  # fmt: skip
    print_table(cols, rows)


@command("release", on=design_app)
def release_cmd(
    plan: Annotated[str, typer.Argument(metavar="PLAN", help="The draft plan's uid.")],
    product: Annotated[
        str,
        typer.Option("--as", metavar="PRODUCT", help="The uid of the product it becomes."),
    ],
) -> None:
    """Release a draft plan as a new product of the plant: the product with its bill of
    materials (USES), the plan marked released; both in the audit trail.

    Example: sqems design release PLAN-DRIVE-MINI --as PRD-DRIVE-MINI
    """
    from sqems.design.plan import release_plan
    from sqems.quality.capa import Actor

    with graph_store() as (store, settings):
        trail = audit_trail(settings)
        try:
            done = release_plan(store, trail, Actor(cli_user(), CLI_ROLE), plan, product)
        finally:
            trail.close()
    materials = ", ".join(f"{i.material} x{i.quantity:g}" for i in done.spec.bom)
    _say(f"released {plan} as product {product} (in the audit trail)")
    _say(f"bill of materials: {materials}", rest="  ")
