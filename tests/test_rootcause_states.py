"""Root cause names the state that caused it: a machine while out of calibration, an
operator while not qualified.

On the infusion-pump plant the occlusion tester is found out of tolerance, and pumps
tested on it since its last good calibration alarm late in the field. As a plain
factor, the tester is every pump's (nothing to compare) and lots in use at the time
looked as guilty; the state factor holds only the runs in the look-back window and must
lead, with its odds ratio, the record in its evidence and a 5-Why that names the
calibration. The trainee (not yet qualified, no extra defects) is the null: no cause.
Plants without calibration or qualification records (drives, battery) gain no factor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sqems.analysis.factors import Factor, FactorKind, read_batches
from sqems.analysis.rootcause import RootCauseReport, from_defect_type, rank_causes, report_dict
from sqems.analysis.states import read_states
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets import pump_layout as pl
from sqems.datasets.files import plant_sections
from sqems.datasets.plant import Plant
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore
from sqems.graph_model.nodes import Category6M
from sqems.investigation import investigate, read_case

IN = Direction.IN
LOOK_BACK = Factor(FactorKind.CALIBRATION_STATE, pl.OCCLUSION_TESTER, zone="found_out_of_tolerance")


def _load(plant: Plant) -> EmbeddedGraphStore:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    return store


@pytest.fixture(scope="module")
def pump() -> Plant:
    return generate(PlantSpec(shape="pump", units=10_000, seed=7))


@pytest.fixture(scope="module")
def store(pump: Plant) -> Iterator[GraphStore]:
    opened = _load(pump)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def occlusion(store: GraphStore) -> RootCauseReport:
    return rank_causes(store, from_defect_type(store, "DT-OCCLUSION-ALARM"))


def _truth(plant: Plant, cause_id: str) -> dict[str, Any]:
    return next(c for c in plant.truth["causes"] if c["id"] == cause_id)


def test_the_occlusion_testers_look_back_window_ranks_first_above_the_lots_in_use(
    pump: Plant, occlusion: RootCauseReport
) -> None:
    truth = _truth(pump, "occlusion-look-back")
    first = occlusion.causes[0]
    assert first.factor == LOOK_BACK and first.significant
    # a tester out of calibration puts its verdicts in doubt: the measurement bone
    assert first.category is Category6M.MEASUREMENT
    e = first.evidence
    assert e.adjusted_odds_ratio is not None and e.adjusted_odds_ratio_low is not None
    assert e.adjusted_odds_ratio > 5 and e.adjusted_odds_ratio_low > 2
    assert e.q_value < 0.01
    # the lots in use at the time are co-exposed only partly: none stands beside it
    for c in occlusion.causes[1:]:
        assert not c.significant, c.factor.key
        if c.factor.kind is FactorKind.MATERIAL_LOT and c.evidence.p_value < 0.05:
            assert c.explained_by == LOOK_BACK, c.factor.key
    # the tester as a whole tested every pump: nothing to compare, never above its state
    whole = [c for c in occlusion.causes if c.factor == Factor(FactorKind.MACHINE, "M-OCCL-1")]
    assert all(c.rank > first.rank for c in whole)
    # the exposure is the window's (a run straddling its start is in it too), not the
    # tester's whole history
    assert truth["exposed_units"] <= e.exposed <= 1.2 * truth["exposed_units"]
    assert e.exposed < e.population / 4
    assert "look-back window" in first.factor.describe()


def test_the_evidence_and_the_five_why_cite_the_calibration_record(
    pump: Plant, store: GraphStore, occlusion: RootCauseReport
) -> None:
    truth = _truth(pump, "occlusion-look-back")
    first = occlusion.causes[0]
    failing = truth["records"][-1] if truth["records"] else None
    records = " ".join(first.records)
    for uid in truth["records"]:
        assert uid in records
    assert f"as found {pl.OCCLUSION_AS_FOUND:g} kPa against 100 ± 1.5 kPa" in records
    assert "fail" in records and "CDT" in records
    last = first.why[-1]
    assert last.label == "Calibration" and last.edge == "CALIBRATES"
    assert failing is None or last.uid == failing
    assert last.why.startswith(f"because {pl.OCCLUSION_TESTER} ran while out of calibration")
    assert "found out of tolerance" in last.why and "last good calibration" in last.why
    # every link of the chain is an edge of the graph
    for prev, step in zip(first.why, first.why[1:], strict=False):
        if step.edge is None:
            continue
        joined = {(e.src, e.dst) for e in store.edges([prev.uid], {step.edge: Direction.BOTH})}
        assert (prev.uid, step.uid) in joined or (step.uid, prev.uid) in joined
    as_json = report_dict(occlusion)["causes"][0]
    assert as_json["kind"] == "calibration_state" and as_json["records"] == list(first.records)


def test_an_investigated_complaint_ends_its_five_why_at_the_calibration(
    pump: Plant, store: GraphStore
) -> None:
    truth = _truth(pump, "occlusion-look-back")
    reached = set(truth["batches"])
    # the last complaint about a pump tested in the window: by then the others are in
    cases = [
        read_case(store, e.src)
        for e in store.edges(["DT-OCCLUSION-ALARM"], {"OF_TYPE": IN})
        if e.src.startswith("CMP-")
    ]
    complaint = max((c for c in cases if c.batch in reached), key=lambda c: c.received_at).uid
    found = investigate(store, complaint, top=5)
    assert found.leading is not None and found.leading.factor == LOOK_BACK
    assert found.why[-1].label == "Calibration"
    assert "out of calibration" in found.why[-1].why
    # the recall is every batch tested in the window; the fix is the quality system's
    assert found.recall is not None and found.recall.basis == "calibration_state"
    recalled = {b for s in found.recall.scopes for b in s.batches}
    assert reached <= recalled
    assert found.fix is None and any("calibrate" in n for n in found.notes)


def test_the_trainee_not_yet_qualified_is_no_cause(pump: Plant, store: GraphStore) -> None:
    trainee = pl.TRAINEE
    state = Factor(
        FactorKind.QUALIFICATION_STATE, trainee.operator, trainee.step, "not_yet_qualified"
    )
    report = rank_causes(store, from_defect_type(store, "DT-GEAR-NOISE"))
    assert not report.significant_causes, [c.factor.key for c in report.significant_causes]
    tested = [c for c in report.causes if c.factor == state]
    assert all(not c.significant for c in tested)
    # the state is a candidate all the same, with its record's reason and dates
    facts = read_batches(store, [b.uid for b in store.find("Batch")])
    states = read_states(store, facts)
    assert state in states.windows
    (window,) = states.windows[state]
    assert "not yet qualified" in window.cites


def test_the_encoder_stations_overdue_window_is_a_candidate_and_no_cause(
    store: GraphStore,
) -> None:
    # ten days past due, found in tolerance when calibrated late: a deviation on paper,
    # no defects in the data
    overdue = Factor(FactorKind.CALIBRATION_STATE, pl.ENCODER_STATION, zone="overdue")
    report = rank_causes(store, from_defect_type(store, "DT-ENCODER-FAULT"))
    assert not report.significant_causes, [c.factor.key for c in report.significant_causes]
    assert all(not c.significant for c in report.causes if c.factor == overdue)
    facts = read_batches(store, [b.uid for b in store.find("Batch")])
    windows = read_states(store, facts).windows
    assert overdue in windows
    described = next(f for f in windows if f == overdue)
    # an encoder station makes the thing: the machine bone, and the due day in site time
    assert described.category is Category6M.MACHINE
    assert described.describe().startswith(
        f"{pl.ENCODER_STATION} while overdue for calibration (2026-03-02 (end of day, CST) to"
    )
    assert "CST" in described.describe()


def test_plants_without_records_gain_no_state_factor() -> None:
    for spec in (PlantSpec(units=3_000, seed=3), PlantSpec(shape="battery", units=3_000, seed=2)):
        with _load(generate(spec)) as store:
            facts = read_batches(store, [b.uid for b in store.find("Batch")])
            states = read_states(store, facts)
            assert not states.by_run and not states.windows, spec.shape


def test_the_state_read_costs_the_same_few_store_calls_however_many_machines(
    store: GraphStore,
) -> None:
    batches = sorted(b.uid for b in store.find("Batch"))
    calls = []
    for chosen in (batches[:1], batches):
        facts = read_batches(store, chosen)
        counting = CountingStore(store)
        read_states(counting, facts)  # type: ignore[arg-type]
        machines = {r.machine for b in facts.batches.values() for r in b.runs}
        operators = {r.operator for b in facts.batches.values() for r in b.runs}
        calls.append((counting.calls, len(machines), len(operators)))
    (few, m1, o1), (many, m2, o2) = calls
    assert m2 > m1 and o2 > o1
    assert few == many <= 10, calls


class CountingStore:
    """The real store, counting its calls."""

    def __init__(self, store: GraphStore) -> None:
        self._store = store
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if callable(attribute):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return attribute(*args, **kwargs)

            return counted
        return attribute
