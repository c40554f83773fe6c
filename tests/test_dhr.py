"""The device history record of a batch, checked against the graph on every store, and
printed to PDF by headless Chromium."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.errors import NotFound
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import Calibration, ProcessRun
from sqems.graph_model.store import Direction, Edge
from sqems.quality.dhr import device_history, render_html, render_pdf


def _plant(store: GraphStore) -> str:
    plant = generate(PlantSpec(units=1_000, seed=4))
    load_plant(store, plant_sections(plant))
    return str(plant.truth["causes"][0]["batches"][0])  # a batch of the planted bad lot


def test_the_record_holds_what_the_graph_holds_for_the_batch(store: GraphStore) -> None:
    batch = _plant(store)
    runs = {e.dst for e in store.edges([batch], {"RAN": Direction.OUT})}
    run_nodes = [store.get(r) for r in sorted(runs)]
    first = min(run_nodes, key=lambda r: r.started_at)  # type: ignore[attr-defined]
    assert isinstance(first, ProcessRun)
    (machine,) = [e.dst for e in store.edges([first.uid], {"ON": Direction.OUT})]
    (operator,) = [e.dst for e in store.edges([first.uid], {"OPERATED_BY": Direction.OUT})]
    # the machine's calibration had lapsed when the run started; its operator was not
    # yet qualified
    store.upsert_nodes([
        Calibration(uid="CAL-1", performed_at=first.started_at - timedelta(days=400),
                    due_at=first.started_at - timedelta(days=35)),
        store.get(operator).model_copy(  # type: ignore[attr-defined]
            update={"qualified_from": first.started_at + timedelta(days=1)}),
    ])  # fmt: skip
    store.upsert_edges([Edge("CALIBRATES", "CAL-1", machine)])

    record = device_history(store, batch)
    units = {e.dst for e in store.edges([batch], {"PRODUCED": Direction.OUT})}
    lots = {e.src for e in store.edges([batch], {"CONSUMED_IN": Direction.IN})}
    assert record.units == len(units) == sum(record.statuses.values())
    assert {lot.lot for lot in record.lots} == lots
    assert all(lot.supplier and lot.material for lot in record.lots)
    assert {r.uid for r in record.runs} == runs
    on_run = next(r for r in record.runs if r.uid == first.uid)
    assert (on_run.machine, on_run.calibrated) == (machine, False)
    assert "OVERDUE" in on_run.calibration and on_run.operator_qualified is False
    others = [r for r in record.runs if r.machine != machine]
    assert all(r.calibration == "no calibration on record before the run" for r in others)
    defects = {e.src for e in store.edges(list(units), {"FOUND_ON": Direction.IN})}
    assert {d.uid for d, _, _ in record.defects} == defects and defects
    assert any(kind == "DT-CRACKED-HOUSING" for _, _, kind in record.defects)
    assert any("OVERDUE" in d for d in record.deviations)
    assert any("was not qualified at the time" in d for d in record.deviations)
    recorded = store.edges(list(runs), {"RECORDED": Direction.OUT})
    assert sum(len(r.actuals) for r in record.runs) == len(recorded)

    page = render_html(record)
    for expected in (f"batch {batch}", "ISO 13485:2016 §7.5.1", "21 CFR 820", "§7.5.9",
                     "§7.6", "§6.2", "§8.2.6", "§8.3", "§8.5.2", *lots, *runs):  # fmt: skip
        assert expected in page, expected
    with pytest.raises(NotFound, match="batch WO-NONE is not in the graph"):
        device_history(store, "WO-NONE")


def test_the_record_prints_to_pdf(tmp_path: Path) -> None:
    store = EmbeddedGraphStore(None)  # printing does not depend on the store
    batch = _plant(store)
    pdf = render_pdf(render_html(device_history(store, batch)), tmp_path / "dhr.pdf")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 20_000
    assert data.count(b"/Type /Page") - data.count(b"/Type /Pages") >= 1
    store.close()
