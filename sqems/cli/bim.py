"""The plant in 3D: scene, and BIM models (import, list, survey)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sqems.cli.app import bim_app, command, err, out
from sqems.cli.common import graph_store, time_window


@command("scene")
def scene_cmd(
    line: Annotated[str, typer.Argument(help="The line's uid, e.g. LINE-PCB.")],
    start: Annotated[str | None, typer.Option("--from", help="Batches started from.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Batches started until.")] = None,
    scenario: Annotated[
        str | None, typer.Option(help="A what-if scenario whose utilisation to show.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The whole scene as JSON.")] = False,
) -> None:
    """A line's machines as the 3D viewer places them, with their status overlay."""
    from sqems.viewer.scene import line_scene

    with graph_store(read_only=True) as (store, _):
        scene = line_scene(store, line, window=time_window(start, end), scenario=scenario)
    if as_json:
        out.print_json(scene.to_json())
        return
    table = Table("machine", "step", "at (m)", "size (m)", "status", "defect rate", "alarms",
                  "util.", "BIM element", box=None)  # fmt: skip
    for o in scene.objects:
        v = o.overlay
        table.add_row(
            f"{o.uid} ({o.name})",
            o.step or "-",
            f"{o.position[0]:g}, {o.position[1]:g}",
            " x ".join(f"{s:g}" for s in o.size),
            f"[{v.colour}]{v.status.value}[/]",
            "-" if v.defect_rate is None else f"{v.defect_rate:.2%} of {v.produced:,}",
            str(v.open_alarms),
            "-" if v.utilisation is None else f"{v.utilisation:.0%}",
            o.bim_element or "-",
        )
    out.print(table)
    out.print(f"{len(scene.objects)} machines; in 3D: sqems serve, then /viewer?line={line}")


@command("import", on=bim_app)
def bim_import(
    path: Annotated[Path, typer.Argument(help="An IFC file (IFC2X3 or IFC4, .ifc).")],
    name: Annotated[
        str | None, typer.Option(help="The model's name (default: the project's).")
    ] = None,
    link_key: Annotated[
        str, typer.Option(help="The element attribute or Pset.Property holding a machine uid.")
    ] = "Tag",
    links: Annotated[
        Path | None, typer.Option(help="A CSV of machine,global_id pairs instead of --link-key.")
    ] = None,
    cores: Annotated[int | None, typer.Option(help="Tessellation threads (default: all).")] = None,
) -> None:
    """Import an IFC model: tessellate it (cached by file hash), store its elements and
    link them to machines."""
    from sqems.viewer import bim as bim_models

    rule = (bim_models.LinkRule.from_csv(links.read_text()) if links
            else bim_models.LinkRule(key=link_key))  # fmt: skip
    with graph_store() as (store, settings), err.status(f"tessellating {path.name}…"):
        done = bim_models.import_bim(
            store,
            path,
            cache_dir=bim_models.cache_of(settings.data_dir),
            name=name,
            link=rule,
            max_bytes=settings.bim_max_bytes,
            cores=cores,
            limits=bim_models.limits_of(settings),
        )
    m = done.model
    out.print(
        f"[bold]{m.uid}[/bold] {m.name} ({m.ifc_schema.value}): {m.elements:,} elements, "
        f"{m.triangles:,} triangles{' (tessellation from the cache)' if done.cached else ''}"
    )
    out.print(f"linked {len(done.links)} machine(s) by {rule.describe()}")
    for machine, element in sorted(done.links.items()):
        out.print(f"  {machine} -> {element}")
    if done.unmatched:
        out.print(f"[yellow]not linked:[/yellow] {', '.join(done.unmatched)}")
    if done.skipped:
        out.print(f"[yellow]left out {len(done.skipped)} product(s):[/yellow]")
        for line in done.skipped[:10]:
            out.print(f"  {escape(line)}")
    out.print(f"in 3D: sqems serve, then /viewer?bim={m.uid}")


@command("list", on=bim_app)
def bim_list() -> None:
    """The imported BIM models."""
    from sqems.graph_model.nodes import BimModel

    with graph_store(read_only=True) as (store, _):
        models = [n for n in store.find("BimModel") if isinstance(n, BimModel)]
    table = Table("uid", "name", "schema", "file", "elements", "triangles", "imported", box=None)
    for m in sorted(models, key=lambda m: m.imported_at, reverse=True):
        table.add_row(m.uid, m.name, m.ifc_schema.value, m.file_name, f"{m.elements:,}",
                      f"{m.triangles:,}", m.imported_at.isoformat(timespec="seconds"))  # fmt: skip
    out.print(table)


SURVEY_COLUMNS = ("global_id", "x_m", "y_m", "z_m", "length_m", "width_m", "height_m")
TOLERANCE_M = 0.02
"""The survey file's columns and the default tolerance of :mod:`sqems.viewer.bim`,
repeated because typer reads them at start-up, before numpy is worth importing (a test
binds them)."""


@command("survey", on=bim_app)
def bim_survey(
    model: Annotated[str, typer.Argument(help="The model's uid (BIM-…).")],
    path: Annotated[Path, typer.Argument(help="CSV: " + ",".join(SURVEY_COLUMNS))],
    tolerance: Annotated[
        float, typer.Option(help="Metres of position or size difference allowed.")
    ] = TOLERANCE_M,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Record as-built positions and sizes and report the elements that deviate from the
    design beyond the tolerance (exit 1 when any does)."""
    from sqems.viewer import bim as bim_models

    with graph_store() as (store, _):
        report = bim_models.survey(store, model, path.read_text(), tolerance_m=tolerance)
    if as_json:
        out.print_json(json.dumps(dataclasses.asdict(report)))
    else:
        out.print(
            f"{report.surveyed} surveyed, {report.within} within {tolerance * 1000:g} mm, "
            f"{len(report.deviating)} deviating; {report.not_surveyed} elements not surveyed"
        )
        table = Table("element", "class", "name", "position off (mm)", "size off (mm)", box=None)
        for d in report.deviating:
            table.add_row(d.global_id, d.ifc_class, d.name or "-", f"{d.position_m * 1000:.0f}",
                          "-" if d.size_m is None else f"{d.size_m * 1000:.0f}")  # fmt: skip
        if report.deviating:
            out.print(table)
        if report.unknown:
            out.print(f"[yellow]not in the model:[/yellow] {', '.join(report.unknown)}")
        for reason in report.refused:
            out.print(f"[yellow]refused:[/yellow] {reason}")
    if report.deviating:
        raise typer.Exit(1)
