"""The plant in 3D: scene, and BIM models (import, list, survey)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sqems.cli.app import bim_app, command, err, out
from sqems.cli.common import graph_store, time_window
from sqems.cli.render import Column, print_table
from sqems.errors import NotFound
from sqems.figures import plain


@command("scene")
def scene_cmd(
    line: Annotated[str, typer.Argument(help="The line's uid, e.g. LINE-PCB.")],
    start: Annotated[
        str | None, typer.Option("--from", metavar="DATE", help="Batches started from.")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", metavar="DATE", help="Batches started until.")
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(metavar="UID", help="A what-if scenario whose utilisation to show."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The whole scene as JSON.")] = False,
) -> None:
    """A line's machines as the 3D viewer places them, with their status overlay.

    Example: sqems scene LINE-PCB
    """
    from sqems.viewer.scene import line_scene

    with graph_store(read_only=True) as (store, _):
        scene = line_scene(store, line, window=time_window(start, end), scenario=scenario)
    if as_json:
        out.print_json(scene.to_json())
        return
    rows = []
    for o in scene.objects:
        v = o.overlay
        rows.append((
            o.uid, o.name, o.step or "-",
            ", ".join(plain(x) for x in o.position[:2]),
            " x ".join(plain(x) for x in o.size),
            f"[{v.colour}]{v.status.value}[/]",
            "-" if v.defect_rate is None else f"{plain(100 * v.defect_rate)} % of {v.produced:,}",
            f"{v.open_alarms:,}",
            "-" if v.utilisation is None else f"{plain(100 * v.utilisation)} %",
            o.bim_element or "-",
        ))  # fmt: skip
    print_table(
        [Column("machine", "id"), "name", Column("step", "id"), Column("at (m)", "number"),
         Column("size (m)", "number"), "status", Column("defect rate", "number"),
         Column("open alarms", "number"), Column("utilisation", "number"),
         Column("BIM element", "id")],
        rows,
    )  # fmt: skip
    out.print(f"{len(scene.objects)} machines; in 3D: sqems serve, then /viewer?line={line}")


@command("import", on=bim_app)
def bim_import(
    path: Annotated[Path, typer.Argument(help="An IFC file (IFC2X3 or IFC4, .ifc).")],
    name: Annotated[
        str | None, typer.Option(help="The model's name (default: the project's).")
    ] = None,
    link_key: Annotated[
        str,
        typer.Option(
            metavar="KEY", help="The element attribute or Pset.Property holding a machine uid."
        ),
    ] = "Tag",
    links: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="A CSV of machine,global_id pairs instead of --link-key."
        ),
    ] = None,
    cores: Annotated[int | None, typer.Option(help="Tessellation threads (default: all).")] = None,
) -> None:
    """Import an IFC model: tessellate it (cached by file hash), store its elements and
    link them to machines.

    Example: sqems bim import hall.ifc --link-key Tag
    """
    from sqems.viewer import bim as bim_models

    rule = (bim_models.LinkRule.from_csv(links.read_text()) if links
            else bim_models.LinkRule(key=link_key))  # fmt: skip
    if not path.is_file():  # before the store is opened for writing
        raise NotFound(f"cannot read IFC file {path}: no such file")
    with graph_store() as (store, settings), err.status(f"tessellating {path.name}…"):
        # a link file naming a machine the graph lacks is a mistake, found before writing
        strangers = sorted(m for m in rule.mapping or {} if store.label_of(m) != "Machine")
        if strangers:
            raise NotFound(
                f"{links} links machine(s) not in the graph: {', '.join(strangers[:5])}"
                + (f" and {len(strangers) - 5} more" if len(strangers) > 5 else "")
            )
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
        left, bodies = len(done.skipped), m.elements + len(done.skipped)
        out.print(f"[yellow]not drawn:[/yellow] {left:,} of {bodies:,} products with a body")
        by_reason: dict[str, list[str]] = {}
        for line in done.skipped:
            global_id, _, why = line.partition(": ")
            by_reason.setdefault(why, []).append(global_id)
        for why, ids in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            more = f" and {len(ids) - 5:,} more" if len(ids) > 5 else ""
            out.print(f"  {escape(why)} ({len(ids):,}): {', '.join(ids[:5])}{more}")
    out.print(f"in 3D: sqems serve, then /viewer?bim={m.uid}")


@command("list", on=bim_app)
def bim_list() -> None:
    """The imported BIM models.

    Example: sqems bim list
    """
    from sqems.graph_model.nodes import BimModel

    with graph_store(read_only=True) as (store, _):
        models = [n for n in store.find("BimModel") if isinstance(n, BimModel)]
    print_table(
        [Column("uid", "id"), "name", "schema", Column("file", "id"),
         Column("elements", "number"), Column("triangles", "number"), Column("imported", "id")],
        [
            (m.uid, m.name, m.ifc_schema.value, m.file_name, f"{m.elements:,}",
             f"{m.triangles:,}", f"{m.imported_at:%Y-%m-%d}")
            for m in sorted(models, key=lambda m: m.imported_at, reverse=True)
        ],
    )  # fmt: skip


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
    design beyond the tolerance (exit 1 when any does).

    Example: sqems bim survey BIM-3f9a0c1d2e4b5a6c survey.csv --tolerance 0.05
    """
    from sqems.viewer import bim as bim_models

    surveyed = path.read_text()  # before the store is opened for writing
    with graph_store() as (store, _):
        report = bim_models.survey(store, model, surveyed, tolerance_m=tolerance)
    if as_json:
        out.print_json(json.dumps(dataclasses.asdict(report)))
    else:
        out.print(
            f"{report.surveyed} surveyed, {report.within} within {tolerance * 1000:g} mm, "
            f"{len(report.deviating)} deviating; {report.not_surveyed} elements not surveyed"
        )
        if report.deviating:
            print_table(
                [Column("element", "id"), "class", "name",
                 Column("position off (mm)", "number"), Column("size off (mm)", "number")],
                [
                    (d.global_id, d.ifc_class, d.name or "-", plain(d.position_m * 1000),
                     "-" if d.size_m is None else plain(d.size_m * 1000))
                    for d in report.deviating
                ],
            )  # fmt: skip
        if report.unknown:
            out.print(f"[yellow]not in the model:[/yellow] {', '.join(report.unknown)}")
        for reason in report.refused:
            out.print(f"[yellow]refused:[/yellow] {reason}")
    if report.deviating:
        raise typer.Exit(1)
