"""The edge tier: signing keys, portable models and their delivery to a line's edge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sqems.cli.app import Group, app, command, out
from sqems.cli.common import graph_store
from sqems.errors import ValidationFailed

edge_app = typer.Typer(
    cls=Group,
    help="The edge tier: portable, signed models for a line's edge agent.\n\n"
    "Example: sqems edge export PRD-BOARD --key keys/edge-signing.pem --out board.sqems-model.json",
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

    Example: sqems edge export PRD-BOARD --kind unit-judgement --key keys/edge-signing.pem
    --out board.sqems-model.json
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
