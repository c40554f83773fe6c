"""The device history record of a batch, from the graph, as HTML and PDF.

Since 2 February 2026 the US FDA's Quality Management System Regulation (21 CFR 820,
"QMSR") incorporates ISO 13485:2016 by reference (§820.7, §820.10), and the record of
each batch that §820.184 used to define is the record ISO 13485:2016 **§7.5.1**
requires "for each medical device or batch of medical devices", which "provides
traceability to the extent specified in 7.5.9 and identifies the amount manufactured
and amount approved for distribution". The sections below gather from the graph what
that record and the clauses it relies on ask for:

| section | what | ISO 13485:2016 |
| --- | --- | --- |
| identification | batch, product, amounts made and approved, unit states, dates | 7.5.1, 7.5.8 |
| genealogy | material lots and their suppliers, sub-assembly batches, shipments | 7.5.9 |
| production | each run: step, machine, operator, shift, times, actuals and limits | 7.5.1, 7.5.6 |
| equipment | the calibration in force on each machine when it ran the batch | 7.6 |
| personnel | each operator's qualification when they ran the batch | 6.2 |
| inspection | of the batch and its units: method, sample, findings, verdict, images | 8.2.6 |
| deviations | parameter actuals outside their limits, defects found, SPC alarms on its runs | 8.3 |
| CAPA | the CAPAs addressing those defects and alarms | 8.5.2 |

``device_history(store, batch)`` builds it; ``render_html`` lays it out for the screen
and for print; ``render_pdf`` prints that HTML with headless Chromium (the Debian
``chromium`` package), so the PDF is the same document as the page.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import (
    Alarm,
    Batch,
    Calibration,
    CalibrationVerdict,
    Capa,
    Defect,
    Inspection,
    Machine,
    Material,
    MaterialLot,
    Operator,
    Parameter,
    ProcessRun,
    ProcessStep,
    Product,
    Supplier,
    Unit,
    UnitStatus,
    Verdict,
)
from sqems.graph_model.store import Direction, GraphStore

IN, OUT = Direction.IN, Direction.OUT
CHROMIUM = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")


@dataclass(frozen=True, slots=True)
class Actual:
    parameter: str
    name: str
    value: float
    unit: str
    lsl: float | None
    usl: float | None

    @property
    def in_spec(self) -> bool:
        return (self.lsl is None or self.value >= self.lsl) and (
            self.usl is None or self.value <= self.usl
        )


@dataclass(frozen=True, slots=True)
class Run:
    uid: str
    step: str | None
    step_name: str | None
    machine: str | None
    operator: str | None
    operator_name: str | None
    operator_qualified: bool | None
    shift: str
    started_at: datetime
    ended_at: datetime | None
    calibration: str
    """The calibration in force on the machine when the run started, or why none is."""
    calibrated: bool
    actuals: list[Actual]


@dataclass(frozen=True, slots=True)
class LotUsed:
    lot: str
    material: str | None
    material_name: str | None
    supplier: str | None
    supplier_name: str | None
    received_at: datetime
    quantity: float | None


@dataclass
class DeviceHistoryRecord:
    batch: Batch
    product: Product | None
    generated_at: datetime
    units: int
    statuses: dict[str, int]
    shipped: int
    shipments: list[str]
    lots: list[LotUsed]
    subassembly_batches: list[str]
    runs: list[Run]
    inspections: list[Inspection]
    defects: list[tuple[Defect, str, str | None]]
    """Each defect with the unit it was found on and its type."""
    alarms: list[Alarm]
    capas: list[Capa]
    deviations: list[str] = field(default_factory=list)

    @property
    def approved_for_distribution(self) -> int:
        return self.statuses.get(UnitStatus.GOOD.value, 0) + self.statuses.get(
            UnitStatus.REWORKED.value, 0
        )


def device_history(store: GraphStore, batch_uid: str) -> DeviceHistoryRecord:
    batch = store.get_many([batch_uid]).get(batch_uid)
    if not isinstance(batch, Batch):
        raise NotFound(f"batch {batch_uid} is not in the graph")
    product = _first(store, batch_uid, "OF_PRODUCT", OUT)
    units = [e.dst for e in store.edges([batch_uid], {"PRODUCED": OUT})]
    unit_nodes = store.get_many(units)
    statuses = Counter(n.status.value for n in unit_nodes.values() if isinstance(n, Unit))
    shipped_edges = store.edges(units, {"SHIPPED_IN": OUT})

    lots = []
    for e in store.edges([batch_uid], {"CONSUMED_IN": IN}):
        lot = store.get(e.src)
        if not isinstance(lot, MaterialLot):
            continue
        material = _first(store, lot.uid, "LOT_OF", OUT)
        supplier = _first(store, lot.uid, "SUPPLIED", IN)
        lots.append(LotUsed(
            lot.uid, material.uid if material else None,
            material.name if isinstance(material, Material) else None,
            supplier.uid if supplier else None,
            supplier.name if isinstance(supplier, Supplier) else None,
            lot.received_at, e.props.get("quantity"),
        ))  # fmt: skip
    components = {e.src for e in store.edges(units, {"ASSEMBLED_INTO": IN})}
    sub_batches = sorted({e.src for e in store.edges(list(components), {"PRODUCED": IN})})

    runs = [_run(store, r) for r in _runs(store, batch_uid)]
    inspected = store.edges([batch_uid, *units], {"INSPECTED": IN})
    inspections = sorted(
        (n for n in store.get_many(e.src for e in inspected).values()
         if isinstance(n, Inspection)), key=lambda i: (i.inspected_at, i.uid))  # fmt: skip
    found_on = store.edges([batch_uid, *units], {"FOUND_ON": IN})
    defect_nodes = store.get_many(e.src for e in found_on)
    types = {e.src: e.dst for e in store.edges(list(defect_nodes), {"OF_TYPE": OUT})}
    defects = sorted(
        ((d, e.dst, types.get(e.src)) for e in found_on
         if isinstance(d := defect_nodes.get(e.src), Defect)),
        key=lambda t: (t[0].found_at, t[0].uid),
    )  # fmt: skip
    alarm_edges = store.edges([r.uid for r in runs], {"RAISED_ON": IN})
    alarms = sorted((a for a in store.get_many(e.src for e in alarm_edges).values()
                     if isinstance(a, Alarm)), key=lambda a: (a.raised_at, a.uid))  # fmt: skip
    addressed = [d.uid for d, _, _ in defects] + [a.uid for a in alarms]
    capa_edges = store.edges(addressed, {"ADDRESSES": IN})
    capas = sorted((c for c in store.get_many(e.src for e in capa_edges).values()
                    if isinstance(c, Capa)), key=lambda c: c.uid)  # fmt: skip

    record = DeviceHistoryRecord(
        batch=batch,
        product=product if isinstance(product, Product) else None,
        generated_at=datetime.now(UTC),
        units=len(units),
        statuses=dict(sorted(statuses.items())),
        shipped=len({e.src for e in shipped_edges}),
        shipments=sorted({e.dst for e in shipped_edges}),
        lots=sorted(lots, key=lambda lot: lot.lot),
        subassembly_batches=sub_batches,
        runs=runs,
        inspections=inspections,
        defects=defects,
        alarms=alarms,
        capas=capas,
    )
    record.deviations = _deviations(record)
    return record


def _first(store: GraphStore, uid: str, edge: str, direction: Direction) -> Any:
    found = store.edges([uid], {edge: direction})
    if not found:
        return None
    other = found[0].dst if direction is OUT else found[0].src
    return store.get_many([other]).get(other)


def _runs(store: GraphStore, batch: str) -> list[ProcessRun]:
    found = store.get_many(e.dst for e in store.edges([batch], {"RAN": OUT}))
    return sorted((r for r in found.values() if isinstance(r, ProcessRun)),
                  key=lambda r: (r.started_at, r.uid))  # fmt: skip


def _run(store: GraphStore, run: ProcessRun) -> Run:
    step = _first(store, run.uid, "FOR_STEP", OUT)
    machine = _first(store, run.uid, "ON", OUT)
    operator = _first(store, run.uid, "OPERATED_BY", OUT)
    recorded = store.edges([run.uid], {"RECORDED": OUT})
    parameters = store.get_many(e.dst for e in recorded)
    actuals = []
    for e in recorded:
        p = parameters.get(e.dst)
        if isinstance(p, Parameter):
            actuals.append(Actual(p.uid, p.name, float(e.props["value"]), str(e.props["unit"]),
                                  p.lsl, p.usl))  # fmt: skip
    calibration, calibrated = _calibration(store, machine, run.started_at)
    return Run(
        uid=run.uid,
        step=step.uid if isinstance(step, ProcessStep) else None,
        step_name=step.name if isinstance(step, ProcessStep) else None,
        machine=machine.uid if isinstance(machine, Machine) else None,
        operator=operator.uid if isinstance(operator, Operator) else None,
        operator_name=operator.name if isinstance(operator, Operator) else None,
        operator_qualified=(
            operator.qualified_at(run.started_at) if isinstance(operator, Operator) else None
        ),
        shift=run.shift.value,
        started_at=run.started_at,
        ended_at=run.ended_at,
        calibration=calibration,
        calibrated=calibrated,
        actuals=sorted(actuals, key=lambda a: a.parameter),
    )


def _calibration(store: GraphStore, machine: Any, at: datetime) -> tuple[str, bool]:
    if not isinstance(machine, Machine):
        return "no machine recorded", False
    found = store.get_many(e.src for e in store.edges([machine.uid], {"CALIBRATES": IN}))
    before = sorted((c for c in found.values()
                     if isinstance(c, Calibration) and c.performed_at <= at),
                    key=lambda c: c.performed_at)  # fmt: skip
    if not before:
        return "no calibration on record before the run", False
    last = before[-1]
    if last.verdict is CalibrationVerdict.FAIL:
        return f"{last.uid} of {last.performed_at:%Y-%m-%d} FAILED", False
    if last.due_at is not None and last.due_at < at:
        return f"{last.uid} OVERDUE since {last.due_at:%Y-%m-%d}", False
    due = f", due {last.due_at:%Y-%m-%d}" if last.due_at else ""
    return f"{last.uid} of {last.performed_at:%Y-%m-%d}{due}", True


def _deviations(r: DeviceHistoryRecord) -> list[str]:
    found = []
    for run in r.runs:
        for a in run.actuals:
            if not a.in_spec:
                limits = f"[{_e(a.lsl)}, {_e(a.usl)}]"
                found.append(f"{run.uid}: {a.name} {a.value:g} {a.unit} outside {limits}")
        if not run.calibrated:
            found.append(f"{run.uid}: machine {run.machine}: {run.calibration}")
        if run.operator_qualified is False:
            found.append(f"{run.uid}: operator {run.operator} was not qualified at the time")
    found += [f"{d.uid} on {unit}: {kind or 'untyped defect'}" for d, unit, kind in r.defects]
    found += [f"{a.uid}: {a.message or a.rule}" for a in r.alarms]
    found += [f"{i.uid}: {i.method.value} inspection failed" for i in r.inspections
              if i.verdict is Verdict.FAIL]  # fmt: skip
    return found


# --- output -------------------------------------------------------------------------------

_CSS = """
body { font: 10.5pt/1.35 'DejaVu Sans', Arial, sans-serif; color: #111; margin: 1.5cm; }
h1 { font-size: 16pt; margin: 0 0 .2em; } h2 { font-size: 12pt; margin: 1.2em 0 .4em;
  border-bottom: 1px solid #999; page-break-after: avoid; }
table { border-collapse: collapse; width: 100%; margin: .3em 0; page-break-inside: auto; }
th, td { border: 1px solid #bbb; padding: 2px 5px; text-align: left; vertical-align: top; }
th { background: #eef1f4; } tr { page-break-inside: avoid; }
.bad { color: #a40000; font-weight: bold; } .meta { color: #444; }
.sign td { height: 2.2em; } @page { size: A4; margin: 1.2cm; }
"""


def _e(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return html.escape(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    if isinstance(value, float):
        return f"{value:g}"
    return html.escape(str(value))


_QUALIFIED = {True: "yes", False: "<span class='bad'>NO</span>", None: "—"}


def _flag(text: str, good: bool) -> str:
    return _e(text) if good else f"<span class='bad'>{_e(text)}</span>"


def _table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p class='meta'>None recorded.</p>"
    cells = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{cells}</table>"


def render_html(r: DeviceHistoryRecord) -> str:
    b = r.batch
    product = f"{_e(r.product.uid)} {_e(r.product.name)} rev. {_e(r.product.revision)}" if (
        r.product) else "—"  # fmt: skip
    status = ", ".join(f"{_e(k)} {v}" for k, v in r.statuses.items()) or "—"
    parts = [
        f"<h1>Device history record — batch {_e(b.uid)}</h1>",
        "<p class='meta'>ISO 13485:2016 §7.5.1 record of a batch, as incorporated into "
        "21 CFR 820 (QMSR, §820.10). Generated by SQEMS from the quality graph on "
        f"{_e(r.generated_at)}.</p>",
        "<h2>Identification (§7.5.1, §7.5.8)</h2>",
        _table(["product", "batch", "started", "ended", "planned quantity", "units made",
                "approved for distribution", "units by status", "shipped"],
               [[product, _e(b.uid), _e(b.started_at), _e(b.ended_at), _e(b.quantity),
                 _e(r.units), _e(r.approved_for_distribution), status,
                 f"{r.shipped} in {len(r.shipments)} shipment(s)"]]),
        "<h2>Genealogy (§7.5.9)</h2>",
        _table(["material lot", "material", "supplier", "received", "quantity"],
               [[_e(lot.lot), f"{_e(lot.material)} {_e(lot.material_name)}",
                 f"{_e(lot.supplier)} {_e(lot.supplier_name)}", _e(lot.received_at),
                 _e(lot.quantity)] for lot in r.lots]),
        f"<p>Sub-assemblies from batches: {_e(', '.join(r.subassembly_batches) or None)}. "
        f"Shipments: {_e(', '.join(r.shipments) or None)}.</p>",
        "<h2>Production, equipment and personnel (§7.5.1, §7.5.6, §7.6, §6.2)</h2>",
        _table(["run", "step", "machine", "calibration in force (§7.6)", "operator",
                "qualified then (§6.2)", "shift", "start", "end", "parameter actuals"],
               [[_e(x.uid), f"{_e(x.step)} {_e(x.step_name)}", _e(x.machine),
                 _flag(x.calibration, x.calibrated), f"{_e(x.operator)} {_e(x.operator_name)}",
                 _QUALIFIED[x.operator_qualified],
                 _e(x.shift), _e(x.started_at), _e(x.ended_at),
                 "<br>".join(
                     (f"{_e(a.name)}: {a.value:g} {_e(a.unit)}" if a.in_spec else
                      f"<span class='bad'>{_e(a.name)}: {a.value:g} {_e(a.unit)} out of "
                      f"spec</span>") + f" [{_e(a.lsl)}, {_e(a.usl)}]" for a in x.actuals)]
                for x in r.runs]),
        "<h2>Inspection and test (§8.2.6)</h2>",
        _table(["inspection", "when", "method", "sample", "defects found", "verdict", "image"],
               [[_e(i.uid), _e(i.inspected_at), _e(i.method.value), _e(i.sample_size),
                 _e(i.defects_found),
                 _e(i.verdict.value) if i.verdict is Verdict.PASS else
                 f"<span class='bad'>{_e(i.verdict.value)}</span>", _e(i.image_ref)]
                for i in r.inspections]),
        "<h2>Deviations and nonconformities (§8.3)</h2>",
        _table(["deviation"], [[_e(d)] for d in r.deviations]),
        "<h2>Corrective and preventive actions (§8.5.2)</h2>",
        _table(["CAPA", "title", "status", "opened", "closed", "verified effective"],
               [[_e(c.uid), _e(c.title), _e(c.status.value), _e(c.opened_at), _e(c.closed_at),
                 _e(c.effective)] for c in r.capas]),
        "<h2>Review and approval (§7.5.1: verified and approved)</h2>",
        "<table class='sign'><tr><th>role</th><th>name</th><th>signature</th><th>date</th>"
        "</tr><tr><td>production</td><td></td><td></td><td></td></tr>"
        "<tr><td>quality</td><td></td><td></td><td></td></tr></table>",
    ]  # fmt: skip
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>DHR {_e(b.uid)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")  # fmt: skip


def chromium() -> str:
    for name in CHROMIUM:
        found = name if Path(name).is_absolute() and Path(name).exists() else shutil.which(name)
        if found:
            return found
    raise ValidationFailed(
        "a PDF is printed with Chromium, which is not installed (Debian: apt-get install "
        "chromium); the HTML report needs nothing"
    )


def render_pdf(page: str, target: Path, *, timeout_s: float = 120.0) -> Path:
    """Print ``page`` (HTML) to ``target`` with headless Chromium."""
    binary = chromium()
    with tempfile.TemporaryDirectory(prefix="sqems-dhr-") as tmp:
        source = Path(tmp) / "dhr.html"
        source.write_text(page, encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
             f"--user-data-dir={tmp}/profile", f"--print-to-pdf={target}", source.as_uri()],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            raise ValidationFailed(
                f"Chromium could not print the report: {(done.stderr or done.stdout)[-500:]}"
            )
    return target
