"""The edge tier: signing keys, portable models and their delivery to a line's edge."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sqems.cli.app import Group, app, command, err, out
from sqems.cli.common import graph_store
from sqems.errors import ValidationFailed

edge_app = typer.Typer(
    cls=Group,
    help="The edge tier: signed, portable models, and the agent that judges beside a "
    "line's broker and forwards to the central one.\n\n"
    "Example: sqems edge run",
    no_args_is_help=True,
)
app.add_typer(edge_app, name="edge")

KINDS = ("unit-judgement", "batch-risk")


@command("keygen", on=edge_app)
def keygen_cmd(
    directory: Annotated[Path, typer.Argument(help="Where the key pair is written.")],
) -> None:
    """Make an Ed25519 key pair for signing models: the private key (mode 0600) stays with
    whoever exports models; every edge is configured with the public key.

    Example: sqems edge keygen keys
    """
    from sqems.edge import portable

    private, public = portable.generate_keys(directory)
    key = portable.load_public_key(public)
    out.print(f"private key: {escape(str(private))} (keep it secret)", highlight=False)
    out.print(
        f"public key:  {escape(str(public))} (key id {portable.key_id(key)})", highlight=False
    )


@command("export", on=edge_app)
def export_cmd(
    product: Annotated[str, typer.Argument(help="The product whose model is trained.")],
    key: Annotated[
        Path, typer.Option("--key", metavar="PRIVATE.pem", help="The private signing key.")
    ],
    out_file: Annotated[
        Path, typer.Option("--out", metavar="FILE", help="The signed bundle to write.")
    ],
    kind: Annotated[
        str,
        typer.Option("--kind", metavar="|".join(KINDS), help="Which model to train and export."),
    ] = "unit-judgement",
    version: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="The model's version (default: time and hash)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the training.")] = 0,
) -> None:
    """Train a model of PRODUCT from the configured graph, export it to ONNX and write it
    signed as a bundle; prints its metrics, threshold and version.

    Example: sqems edge export PRD-BOARD --key edge-signing.pem --out pcb.json
    """
    from sqems.analysis import judgement, prediction
    from sqems.edge import portable

    if kind not in KINDS:
        raise ValidationFailed(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    private = portable.load_private_key(key)
    with graph_store(read_only=True) as (store, _):
        if kind == "unit-judgement":
            manifest, graph = judgement.train_unit_model(store, product, seed=seed).portable(
                version
            )
        else:
            model = prediction.train(store, product, seed=seed)
            manifest, graph = portable.batch_risk_portable(model, version=version)
    bundle = portable.sign(manifest, graph, private)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(bundle)
    metrics = manifest["metrics"]
    out.print(
        f"{escape(kind)} model of {escape(product)}, version {escape(manifest['version'])}: "
        f"{len(manifest['inputs'])} features, {len(graph):,} bytes of ONNX",
        highlight=False,
    )
    if "verdict" in metrics:
        out.print(escape(metrics["verdict"]), highlight=False)
    else:
        auc = "n/a" if metrics["auc"] is None else f"{metrics['auc']:.3f}"
        out.print(
            f"test AUC {auc}, Brier {metrics['brier']:.5f} vs base rate "
            f"{metrics['base_brier']:.5f}",
            highlight=False,
        )
    threshold = manifest["threshold"]
    out.print(
        "threshold: none (a batch-risk model gives a probability, no verdict)"
        if threshold is None
        else f"threshold: suspect when P(defect) >= {threshold:.6g}",
        highlight=False,
    )
    out.print(f"signed bundle: {escape(str(out_file))}", highlight=False)


@command("publish", on=edge_app)
def publish_cmd(
    bundle_file: Annotated[Path, typer.Argument(metavar="FILE", help="A signed bundle.")],
    site: Annotated[str, typer.Option("--site", metavar="UID", help="The line's site.")],
    line: Annotated[str, typer.Option("--line", metavar="UID", help="The line.")],
) -> None:
    """Publish a signed model bundle, retained, to the central broker of the settings,
    where the line's edge takes it from.

    Example: sqems edge publish board.sqems-model.json --site SITE-1 --line LINE-PCB
    """
    from sqems.edge import portable
    from sqems.ingestion import service
    from sqems.settings import Settings

    bundle = bundle_file.read_bytes()
    try:
        meta = json.loads(bundle)["manifest"]
    except (ValueError, KeyError, TypeError):
        raise ValidationFailed(f"{bundle_file} is not a signed model bundle") from None
    topic = portable.model_topic(site, line, str(meta.get("kind")))
    client = service.mqtt_publisher(Settings(), "sqems-edge-publish")
    try:
        portable.publish(client, site, line, bundle)
    finally:
        client.disconnect()
        client.loop_stop()
    out.print(
        f"published {escape(str(meta.get('kind')))} model {escape(str(meta.get('version')))} "
        f"of {escape(str(meta.get('product')))} on {escape(topic)} (retained)",
        highlight=False,
    )


@command("line", on=edge_app)
def line_cmd(
    site: Annotated[
        str | None,
        typer.Option("--site", metavar="UID", help="The line's site (default: SQEMS_EDGE_SITE)."),
    ] = None,
    line: Annotated[
        str | None,
        typer.Option("--line", metavar="UID", help="The line (default: SQEMS_EDGE_LINE)."),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="FILE", help="Where to write it (default: the edge's data directory)."
        ),
    ] = None,
) -> None:
    """Export a line's machines and parameters (units, spec limits, critical) from the
    configured graph into the line file an edge agent runs its SPC rules with.

    Example: sqems edge line --site SITE-1 --line LINE-PCB --out edge/line.json
    """
    from sqems.edge.agent import edge_dir
    from sqems.edge.line import LINE_FILE, line_from_graph

    with graph_store(read_only=True) as (store, settings):
        site = site or settings.edge_site
        line = line or settings.edge_line
        if site is None or line is None:
            raise ValidationFailed("name the line: --site and --line (or SQEMS_EDGE_SITE/LINE)")
        spec = line_from_graph(store, site, line)
        target = out_file or edge_dir(settings) / LINE_FILE
    spec.save(target)
    watched = sum(1 for p in spec.parameters if p.lsl is not None and p.usl is not None)
    out.print(
        f"line {escape(site)}/{escape(line)}: {len(spec.machines)} machines, "
        f"{len(spec.parameters)} parameters ({watched} with both limits, watched by SPC) "
        f"-> {escape(str(target))}",
        highlight=False,
    )


@command("run", on=edge_app)
def run_cmd(
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default: until Ctrl-C).")
    ] = None,
) -> None:
    """Run the edge agent of the settings beside the line's broker: SPC rules and local
    alarms and stop-line commands on the line's readings, a judgement of every unit with
    the signed model, and everything forwarded to the central broker once it is
    reachable. Prints a status line every 5 seconds.

    Example: sqems edge run (with SQEMS_EDGE_SITE, SQEMS_EDGE_LINE, SQEMS_EDGE_MODEL_KEY)
    """
    from sqems.edge.agent import EdgeAgent, config_of
    from sqems.settings import Settings

    config = config_of(Settings())
    agent = EdgeAgent(config)
    err.print(
        f"edge {escape(config.edge_id)} on line {escape(config.line.site)}/"
        f"{escape(config.line.line)}: line broker {config.local.url}, central broker "
        f"{config.central.url}; data in {escape(str(config.data_dir))}; Ctrl-C to stop",
        highlight=False,
    )
    began = shown = time.monotonic()
    agent.start()
    try:
        while seconds is None or time.monotonic() - began < seconds:
            time.sleep(0.2)
            if time.monotonic() - shown >= 5.0:
                shown = time.monotonic()
                err.print(_status_line(agent.status()), highlight=False)
    except KeyboardInterrupt:
        err.print("stopping the edge agent…")
    finally:
        agent.stop()
    out.print(_status_line(agent.status()), highlight=False)


def _status_line(status: dict[str, object]) -> str:
    models = status["models"]
    model = ", ".join(f"{k} {v}" for k, v in models.items()) if isinstance(models, dict) else ""
    refused = f"; last bundle refused: {status['model_refused']}" if status["model_refused"] else ""
    central = "connected" if status["central_connected"] else "unreachable"
    return escape(
        f"judged {status['judged']} ({status['suspects']} suspect, {status['unjudged']} "
        f"without a model), alarms {status['alarms']}, stop-line {status['stop_commands']}; "
        f"queue {status['queue_depth']} ({status['queue_bytes']} bytes), forwarded "
        f"{status['forwarded']}, central {central}; model {model or 'none'}{refused}; "
        f"quarantined {status['quarantined']}, failures {status['failures']}, "
        f"restarts {status['restarts']}"
    )
