"""Traceability commands: recall (downstream) and trace (upstream)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sqems.cli.app import command, out
from sqems.cli.common import (
    AllHistory,
    RecallBatch,
    RecallLot,
    RecallMachine,
    RecallParameter,
    WindowFrom,
    WindowTo,
    graph_store,
    recall_source,
)
from sqems.cli.render import print_recall, print_trace
from sqems.errors import ValidationFailed


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
