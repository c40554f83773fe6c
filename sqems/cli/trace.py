"""Traceability commands: recall (downstream), trace (upstream) and the look-back of a
calibration found out of tolerance (a recall by machine and window, with its CAPA)."""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sqems.cli.app import command, out
from sqems.cli.common import (
    AllHistory,
    RecallBatch,
    RecallLot,
    RecallMachine,
    RecallParameter,
    WindowFrom,
    WindowTo,
    audit_trail,
    cli_user,
    graph_store,
    recall_source,
)
from sqems.cli.render import Column, print_recall, print_table, print_trace
from sqems.errors import ValidationFailed

if TYPE_CHECKING:
    from sqems.graph_model import GraphStore
    from sqems.quality.lookback import LookBack

CLI_ROLE = "cli"
"""The role the audit trail records for a change made on the command line."""


@command("recall")
def recall_cmd(
    lot: RecallLot = None,
    batch: RecallBatch = None,
    machine: RecallMachine = None,
    parameter: RecallParameter = None,
    from_: WindowFrom = None,
    to: WindowTo = None,
    all_history: AllHistory = False,
    show: Annotated[int, typer.Option(help="How many unit paths to print.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole scope as JSON.")] = False,
) -> None:
    """Recall scope: the units, shipments and customers downstream of a source.

    Example: sqems recall --lot LOT-RESIN-00003
    """
    from sqems.graph_model import Traceability

    source = recall_source(lot, batch, machine, parameter, from_, to, all_history=all_history)
    if source is None:
        raise ValidationFailed("give exactly one of --lot, --batch, --machine, --parameter")
    with graph_store(read_only=True) as (store, _):
        scope = Traceability(store).recall_scope(source)
        if as_json:
            out.print_json(json.dumps(scope.as_dict()))
        else:
            print_recall(store, scope, show)


@command("trace")
def trace_cmd(
    unit: Annotated[
        str | None, typer.Option(metavar="UID", help="Unit serial to trace upstream.")
    ] = None,
    complaint: Annotated[
        str | None, typer.Option(metavar="UID", help="Complaint uid to trace.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the genealogy as JSON.")] = False,
) -> None:
    """Upstream genealogy (root-cause direction) of a unit or a complaint.

    Example: sqems trace --unit SN-D0000801
    """
    from sqems.graph_model import Traceability

    if bool(unit) == bool(complaint):
        raise ValidationFailed("give exactly one of --unit or --complaint")
    uid = unit or complaint
    assert uid is not None
    with graph_store(read_only=True) as (store, _):
        of = frozenset({"Unit" if unit else "Complaint"})
        genealogy = Traceability(store).upstream([uid], of=of)
        if as_json:
            out.print_json(json.dumps(genealogy.as_dict()))
        else:
            print_trace(genealogy)


@command("lookback")
def lookback_cmd(
    calibration: Annotated[
        str, typer.Argument(help="The calibration that found its machine out of tolerance.")
    ],
    open_capa: Annotated[
        bool,
        typer.Option(
            "--open-capa",
            help="Open a CAPA addressing the calibration and the batches (once: while it "
            "is open, it is the one shown).",
        ),
    ] = False,
    show: Annotated[int, typer.Option(metavar="N", help="How many batches to list.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print the look-back as JSON.")] = False,
) -> None:
    """Look-back of a calibration found out of tolerance (ISO 13485 §7.6): the runs
    on its machine since the last good calibration, their batches, the units made in
    them, the assemblies, shipments and customers they reached.

    Example: sqems lookback CAL-OCCL-1-07 --open-capa
    """
    from sqems.quality import lookback

    with graph_store(read_only=not open_capa) as (store, settings):
        found = lookback.look_back(store, calibration)
        if open_capa:
            from sqems.quality.capa import Actor

            trail = audit_trail(settings)
            try:
                found = lookback.open_capa(store, trail, Actor(cli_user(), CLI_ROLE), found)
            finally:
                trail.close()
        if as_json:
            out.print_json(json.dumps(found.as_dict()))
        else:
            _print_lookback(store, found, show)


def _say(text: str, first: str = "", rest: str = "  ") -> None:
    """``text`` wrapped between words to the terminal (a uid is never split)."""
    lines = textwrap.wrap(text, width=max(out.width, 40), initial_indent=first,
                          subsequent_indent=rest, break_long_words=False,
                          break_on_hyphens=False)  # fmt: skip
    for line in lines:
        out.print(escape(line), highlight=False)


def _listed(uids: list[str], show: int) -> str:
    more = f" and {len(uids) - show:,} more" if len(uids) > show else ""
    return ", ".join(uids[:show]) + more


def _print_lookback(store: GraphStore, found: LookBack, show: int) -> None:
    cal = found.calibration
    _say(
        f"look-back of {cal.uid}: {found.machine} found out of tolerance on "
        f"{found.zone.show(cal.performed_at)} ({found.reason})"
    )
    since = (
        f"since the last good calibration {found.last_good}"
        if found.last_good
        else "since before any good calibration on record"
    )
    _say(f"window: {found.window_text}, {since}")
    c = found.counts()
    rows = [
        ("process runs", c["runs"]),
        ("batches", c["batches"]),
        ("units made", c["units_made"]),
        ("assemblies they went into", c["assemblies"]),
        ("units shipped", c["units_shipped"]),
        ("shipments", c["shipments"]),
        ("customers", c["customers"]),
    ]
    print_table(["in question", Column("count", "number")], [(k, f"{v:,}") for k, v in rows])
    if found.batches and show > 0:
        _say(f"batches: {_listed(found.batches, show)}")
    if found.customers:
        names = store.get_many(found.customers)
        named = [f"{u} ({getattr(names.get(u), 'name', '?')})" for u in found.customers]
        _say(f"customers to notify: {_listed(named, show)}")
    capa = found.capa
    if capa is None:
        _say("no look-back CAPA is open: run with --open-capa to open one")
    elif found.capa_opened:
        _say(
            f"CAPA {capa.uid} opened ({capa.status.value}), addressing {cal.uid} and "
            f"{len(found.batches):,} batches"
        )
    else:
        _say(
            f"CAPA {capa.uid} is open already for this look-back ({capa.status.value}, "
            f"opened {found.zone.show(capa.opened_at)})"
        )
