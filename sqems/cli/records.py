"""Quality records: the audit trail, compliance reports and unit judgements."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sqems.cli.app import audit_app, command, err, out, report_app
from sqems.cli.common import audit_trail, cli_user, graph_store


@command("verify", on=audit_app)
def audit_verify(
    export: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Verify this JSON-lines export instead of the trail."),
    ] = None,
) -> None:
    """Check the trail's hash chain; exit 1 naming the first entry that does not hold.

    Example: sqems audit verify
    """
    from sqems.quality.audit import TRAIL_FILE, load_key, verify_export
    from sqems.settings import Settings

    settings = Settings()
    if export is not None:
        check = verify_export(export.read_text(), load_key(settings, create=False))
    elif not (settings.data_dir / TRAIL_FILE).exists():
        # verifying reads: no trail means nothing to verify, not a trail (and key) to make
        out.print(f"ok: no entries yet (no audit trail in {settings.data_dir})")
        return
    else:
        trail = audit_trail(settings)
        try:
            check = trail.verify()
        finally:
            trail.close()
    if check.ok:
        out.print(f"[green]ok[/green]: {check.reason}; head {check.head}")
        return
    err.print(f"[red]tampered[/red]: {check.reason} ({check.entries} entries before it hold)")
    raise typer.Exit(1)


@command("export", on=audit_app)
def audit_export(
    form: Annotated[
        str, typer.Option("--format", metavar="FORMAT", help="jsonl or csv.")
    ] = "jsonl",
    to: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Write to this file (default: stdout).")
    ] = None,
) -> None:
    """The whole trail, each entry with its hashes.

    Example: sqems audit export --format csv --to trail.csv
    """
    from sqems.settings import Settings

    trail = audit_trail(Settings())
    try:
        text = trail.export(form)
    finally:
        trail.close()
    if to is None:
        print(text, end="")
    else:
        to.write_text(text)
        out.print(f"wrote {to}")


@command("dhr", on=report_app)
def report_dhr(
    batch: Annotated[str, typer.Argument(help="The batch (work order) uid.")],
    html_out: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="FILE",
            help="Write the HTML here (default: DHR-<batch>.html, the uid made a safe file "
            "name: WO/2026/001 gives DHR-WO_2026_001.html).",
        ),
    ] = None,
    pdf_out: Annotated[
        Path | None,
        typer.Option("--pdf", metavar="FILE", help="Print a PDF here (needs Chromium)."),
    ] = None,
) -> None:
    """The device history record of a batch (ISO 13485:2016 §7.5.1 under 21 CFR 820),
    times in the site's zone, with every flag's reason, the §7.6 look-back, the
    sub-assemblies' deviations and the release statement.

    Example: sqems report dhr WO-ASM-00009 --pdf dhr.pdf
    """
    from sqems import localtime
    from sqems.quality import dhr

    with graph_store(read_only=True) as (store, settings):
        record = dhr.device_history(store, batch, localtime.zone_of(settings, store))
    page = dhr.render_html(record)
    if html_out is None and pdf_out is None:
        html_out = Path(dhr.file_name(batch))
    if html_out is not None:
        _write(html_out, page)
        out.print(f"wrote {html_out}", highlight=False)
    if pdf_out is not None:
        with err.status("printing the PDF with Chromium…"):
            dhr.render_pdf(page, pdf_out)
        out.print(f"wrote {pdf_out}", highlight=False)
    release = record.release
    out.print(
        escape(
            f"batch {batch}: {record.units} units, {record.approved_for_distribution} approved "
            f"for distribution, {len(record.runs)} runs, {len(record.lots)} lots, "
            f"{len(record.found)} deviation(s) and {len(record.rolled_up)} from sub-assemblies "
            f"({len(release.waiting)} awaiting disposition), {len(record.capas)} CAPA(s)"
        ),
        highlight=False,
    )
    out.print(escape(release.statement), highlight=False, style=None if release.approved else "red")


def _write(target: Path, text: str) -> None:
    """Write ``text`` to ``target``; a folder that is not there or cannot be written is a
    one-line error naming it, not a traceback."""
    from sqems.errors import ValidationFailed

    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ValidationFailed(
            f"cannot write {target}: {exc.strerror or exc}; give --html a writable path"
        ) from None


@command("disposition", on=report_app)
def report_disposition(
    batch: Annotated[str, typer.Argument(help="The batch whose record holds the deviation.")],
    deviation: Annotated[
        str,
        typer.Argument(
            help="The deviation's key, as the record lists it (e.g. RUN-7:calibration)."
        ),
    ],
    decision: Annotated[
        str,
        typer.Option(metavar="DECISION", help="use as is, rework, scrap or reject batch."),
    ],
    rationale: Annotated[str, typer.Option(metavar="TEXT", help="Why this decision is right.")],
) -> None:
    """Sign the disposition of a deviation in a batch's device history record (ISO
    13485:2016 §8.3), as the user running the command, recorded in the audit trail with
    its meaning. A deviation rolled up from a sub-assembly batch is signed against that
    batch. The record is approved for distribution once every deviation has one.

    Example: sqems report disposition WO-ASM-00009 RUN-WO-ASM-00009-10:calibration
    --decision "use as is" --rationale "re-verified the 40 units: torque within limits"
    """
    from sqems import localtime
    from sqems.cli.design import CLI_ROLE
    from sqems.graph_model.calibration import when
    from sqems.quality import dhr
    from sqems.quality.capa import Actor

    with graph_store() as (store, settings):
        zone = localtime.zone_of(settings, store)
        trail = audit_trail(settings)
        try:
            signed = dhr.dispose(store, trail, Actor(cli_user(), CLI_ROLE), batch, deviation,
                                 decision, rationale, zone=zone)  # fmt: skip
        finally:
            trail.close()
    out.print(
        escape(
            f"signed: {signed.deviation} in batch {signed.batch}: {signed.decision.value} "
            f"by {signed.signer} {when(signed.signed_at, zone.tz)} ({signed.meaning}); in the "
            "audit trail"
        ),
        highlight=False,
    )


@command("judgements")
def judgements_cmd(
    unit: Annotated[str | None, typer.Option(metavar="UID", help="One unit's judgements.")] = None,
    edge: Annotated[
        str | None, typer.Option(metavar="EDGE", help="The judgements one edge agent made.")
    ] = None,
    verdict: Annotated[
        str | None, typer.Option(metavar="VERDICT", help="Only pass or only suspect.")
    ] = None,
    last: Annotated[int, typer.Option(metavar="N", help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """Unit judgements made by the edge agents beside the lines, newest first: the
    probability of a defect, the verdict, and the model and edge that judged.

    Example: sqems judgements --unit U-000042
    """
    import json
    from datetime import UTC

    from sqems.cli.render import Column, print_table
    from sqems.errors import ValidationFailed
    from sqems.graph_model.judgements import find_judgements
    from sqems.graph_model.nodes import JudgementVerdict

    if unit is None and edge is None:
        raise ValidationFailed("give --unit UID or --edge EDGE (or both)")
    try:
        wanted = None if verdict is None else JudgementVerdict(verdict)
    except ValueError:
        raise ValidationFailed(f"--verdict is pass or suspect, got {verdict!r}") from None
    if last < 1:
        raise ValidationFailed(f"--last must be at least 1, got {last}")
    with graph_store(read_only=True) as (store, _):
        found = find_judgements(store, unit=unit, edge=edge, verdict=wanted)
    shown = found[:last]
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        **f.judgement.model_dump(mode="json"),
                        "unit": f.unit or f.named_unit,
                        "linked": f.unit is not None,
                    }
                    for f in shown
                ]
            )
        )
        return
    if not found:
        out.print("no judgements" + (f" of {unit}" if unit else f" by {edge}"))
        return
    rows = [
        (
            f.unit or f"{f.named_unit or '?'}*",
            f"{f.judgement.probability:.3f}",
            "[red]suspect[/red]" if f.judgement.verdict.value == "suspect" else "pass",
            f"{f.judgement.model_version}",
            f.judgement.edge,
            f.judgement.judged_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        )
        for f in shown
    ]
    more = f"; the {last} newest of {len(found)} (--last N)" if len(found) > last else ""
    if any(f.unit is None for f in shown):
        more += "; * not in the graph yet: linked when it arrives"
    print_table(
        [Column("unit", "id"), Column("P(defect)", "number"), "verdict",
         Column("model", "id"), Column("edge", "id"), Column("judged at", "id")],
        rows,
        caption=f"threshold {shown[0].judgement.threshold:g} ({shown[0].judgement.model_kind} "
        f"model for {shown[0].judgement.model_product}){more}",
    )  # fmt: skip
