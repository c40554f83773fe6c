"""Plant commands: generate, load, stats, demo, migrate."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from sqems.cli.app import command, err, out
from sqems.cli.common import generate_plant, graph_store, load_sections, progress
from sqems.cli.render import print_investigation, print_recall, print_stats, print_trace
from sqems.errors import ValidationFailed

if TYPE_CHECKING:
    from sqems.graph_model import GraphStore

Shape = Literal["drives", "battery", "pump"]
"""The plant shapes of :data:`sqems.datasets.PlantShape`, spelled out here because typer
reads them at start-up, before numpy is worth importing (a test binds the two)."""


@command("generate")
def generate_cmd(
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Directory to write the plant to.")
    ],
    units: Annotated[int, typer.Option(help="Number of units (1,000 to 1,000,000).")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same plant.")] = 7,
    load: Annotated[bool, typer.Option("--load", help="Also load it into the store.")] = False,
    shape: Annotated[
        Shape,
        typer.Option(
            help="drives: boards into servo drives (two lines); battery: cells into "
            "modules into packs (three lines); pump: boards and motor modules into "
            "infusion pumps (America/Chicago, calibration and qualification records). "
            "--units counts every level."
        ),
    ] = "drives",
) -> None:
    """Generate a synthetic plant with planted causes and write it as CSV files.

    Example: sqems generate --out plant --units 5000 --seed 7
    """
    from sqems.datasets import write_plant
    from sqems.datasets.files import plant_sections

    plant = generate_plant(units, seed, shape)
    with err.status(f"writing {out_dir}…"):
        manifest = write_plant(plant, out_dir)
    rows = sum(e["rows"] for k in ("nodes", "edges") for e in manifest[k].values())
    out.print(f"wrote {rows:,} rows to {out_dir} (ground truth in {out_dir / 'ground_truth.json'})")
    if load:
        with graph_store() as (store, settings):
            from sqems.datasets.files import spec_identity

            n = load_sections(
                store,
                plant_sections(plant),
                settings,
                plant=spec_identity(plant.spec),
                source=str(out_dir),
            )
            out.print(f"loaded {n:,} nodes and edges into {store.description}")


@command("load")
def load_cmd(
    directory: Annotated[
        Path, typer.Argument(help="A plant directory (see docs/data-formats.md).")
    ],
    merge: Annotated[
        bool,
        typer.Option(
            "--merge",
            help="Add this plant to a store that holds another one (by default refused).",
        ),
    ] = False,
) -> None:
    """Load a plant directory into the configured graph store (idempotent).

    The whole plant is checked first: a bad row stops the load, naming its file and
    line, before anything is written. A load that stopped midway is finished by running
    it again. A store that holds another plant refuses this one unless --merge.

    Example: sqems load plant/
    """
    from sqems.datasets import read_plant
    from sqems.datasets.files import plant_identity

    sections = read_plant(directory)
    with graph_store() as (store, settings):
        n = load_sections(
            store,
            sections,
            settings,
            plant=plant_identity(directory),
            merge=merge,
            source=str(directory),
        )
        out.print(f"loaded {n:,} nodes and edges into {store.description}")


@command("stats")
def stats_cmd() -> None:
    """Count the nodes and relationships in the store.

    Example: sqems stats
    """
    from sqems.cli.check import print_store_state

    with graph_store(read_only=True) as (store, _):
        print_stats(store)
        print_store_state(store)


@command("demo")
def demo_cmd(
    units: Annotated[int, typer.Option(help="Size of the demo plant.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Generate a small plant, load it, and answer a recall, a trace and a complaint's
    investigation.

    Example: sqems demo --units 3000
    """
    from sqems import investigation
    from sqems.datasets import read_plant, write_plant
    from sqems.datasets.building import write_building_ifc
    from sqems.graph_model import RecallSource, SourceKind, Traceability
    from sqems.graph_model.nodes import Machine
    from sqems.settings import Settings
    from sqems.viewer import bim as bim_models

    settings = Settings()
    plant = generate_plant(units, seed)
    plant_dir = settings.data_dir / "demo-plant"
    with err.status(f"writing plant files to {plant_dir}…"):
        if plant_dir.exists():
            shutil.rmtree(plant_dir)
        write_plant(plant, plant_dir)
    with graph_store() as (store, settings):
        from sqems.datasets.files import plant_identity

        load_sections(
            store,
            read_plant(plant_dir),
            settings,
            plant=plant_identity(plant_dir),
            source=str(plant_dir),
        )
        out.rule("[bold]The plant's knowledge graph")
        print_stats(store)
        truth = plant.truth
        bad_lot = truth["causes"][0]["uid"]
        out.rule(f"[bold]Recall scope of material lot {bad_lot}")
        out.print(
            "[dim]This lot is the plant's planted bad resin lot: housings moulded from it "
            "crack. Which units, shipments and customers does a recall of it reach?[/dim]"
        )
        trace = Traceability(store)
        print_recall(store, trace.recall_scope(RecallSource(SourceKind.LOT, bad_lot)), 3)
        complaint = _demo_complaint(store, plant)
        if complaint:
            out.rule(f"[bold]Upstream trace of complaint {complaint}")
            out.print(
                "[dim]Everything this complaint's unit came from: its board, batches, "
                "lots, suppliers, machines and operators.[/dim]"
            )
            print_trace(trace.upstream([complaint]))
        if complaint:
            out.rule(f"[bold]Investigation of complaint {complaint}")
            out.print(
                "[dim]What caused it, what else is affected, and what fix would work? One "
                "complaint cannot single out a cause, so the analysis takes in every unit "
                "with its defect type; the lot's batches were all moulded on one machine, "
                "and the ranking must tell the two apart.[/dim]"
            )
            print_investigation(store, investigation.investigate(store, complaint, top=3))
        out.rule("[bold]The plant in 3D")
        machines = [m for m in store.find("Machine") if isinstance(m, Machine)]
        with err.status("writing and tessellating an IFC model of the hall…"):
            hall = write_building_ifc(plant_dir / "hall.ifc", machines, filler=200)
            model = bim_models.import_bim(
                store, hall, cache_dir=bim_models.cache_of(settings.data_dir)
            ).model
        out.print(
            f"BIM model {model.uid}: {model.elements} elements of {hall.name} (IFC4), "
            f"{model.triangles:,} triangles; each machine linked to its element by its Tag"
        )
        out.rule("[bold]Try next")
        out.print(
            f"  sqems recall --batch {truth['causes'][0]['batches'][0]}\n"
            f"  sqems recall --parameter {truth['causes'][1]['parameter']}\n"
            f"  sqems trace --complaint {complaint or 'CMP-000001'} --json\n"
            f"  sqems investigate {complaint or 'CMP-000001'}   (simulates the fix on the twin)\n"
            f"  sqems rootcause --defect-type {truth['causes'][1]['defect_type']}\n"
            f"  sqems kpis\n"
            f"  sqems scene LINE-PCB\n"
            f"  sqems serve        (the GraphQL API and GraphiQL on the same store), then\n"
            f"    sqems apikey create me --role viewer, and open\n"
            f"    http://127.0.0.1:8000/viewer?line=LINE-PCB#key=<the key>   or\n"
            f"    http://127.0.0.1:8000/viewer?bim={model.uid}#key=<the key>   or\n"
            f"    http://127.0.0.1:8000/dashboard?parameter=P-REFLOW-PEAK#key=<the key>   or\n"
            f"    http://127.0.0.1:8000/investigate?complaint={complaint or 'CMP-000001'}"
            "#key=<the key>\n"
            f"  sqems suppliers\n"
            f"  sqems report dhr {truth['causes'][0]['batches'][0]} --pdf dhr.pdf\n"
            f"  plant files and ground truth: {plant_dir}"
        )


def _demo_complaint(store: GraphStore, plant: Any) -> str | None:
    """A complaint about a cracked housing from the bad lot, else the first one."""
    complaints = plant.edges.get("OF_TYPE")
    if complaints is None:
        return None
    for src, dst in complaints.tuples():
        if src.startswith("CMP-") and dst == "DT-CRACKED-HOUSING":
            return str(src)
    first = store.find("Complaint", limit=1)
    return first[0].uid if first else None


@command("migrate")
def migrate_cmd(
    to: Annotated[
        str, typer.Option("--to", metavar="URI", help="Target store URI, e.g. neo4j://host:7687.")
    ],
    from_: Annotated[
        str | None,
        typer.Option("--from", metavar="URI", help="Source store URI (default: SQEMS_GRAPH_URI)."),
    ] = None,
    page: Annotated[int, typer.Option(help="Items per page (one transaction each).")] = 10_000,
) -> None:
    """Copy a whole store into another (embedded ⇄ Neo4j); resumable, counts verified.

    Example: sqems migrate --to neo4j://localhost:7687
    """
    from sqems.graph_model import NODE_TYPES, REL_TYPES
    from sqems.graph_model.migrate import copy_store
    from sqems.settings import Settings

    settings = Settings()
    source_uri = from_ or settings.graph_uri
    if source_uri.strip() == to.strip():
        raise ValidationFailed(f"source and target are the same store ({to})")
    key = hashlib.sha256(f"{source_uri}->{to}".encode()).hexdigest()[:16]
    checkpoint = settings.data_dir / "migrations" / f"{key}.json"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    with (
        graph_store(read_only=True, uri=source_uri) as (source, _),
        graph_store(uri=to) as (target, _),
    ):
        total = sum(source.count(k) for k in NODE_TYPES) + sum(
            source.count_edges(k) for k in REL_TYPES
        )
        with progress() as bar:
            task = bar.add_task("copying", total=total)

            def advance(name: str, n: int) -> None:
                bar.update(task, advance=n, description=f"copying {name}")

            report = copy_store(source, target, checkpoint=checkpoint, page=page, progress=advance)
        if report.resumed_from:
            out.print(f"resumed an interrupted copy at {report.resumed_from}")
        out.print(
            f"copied {report.total:,} nodes and relationships from {source.description} to "
            f"{target.description}; counts match for every label and type"
        )
