"""Defect prediction: time-split skill on the board line's reflow drift, calibration
against the base rate, honest explanations, persistence and the refusals."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sqems.analysis.prediction import (
    MIN_BATCHES,
    SCHEMA_VERSION,
    TEST_FRACTION,
    DefectModel,
    FeatureKind,
    _history,
    _Outcomes,
    _read_product,
    train,
)
from sqems.datasets import Plant, PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.datasets.layout import BOARD_DEFECTS, Causes
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import Direction, EmbeddedGraphStore, GraphStore

PRODUCT = "PRD-BOARD"
PEAK = "P-REFLOW-PEAK@STEP-PCB-20"
UNITS = 60_000
# The default plant's reflow oven drifts over 40-55 % of the run, wholly inside the
# earliest 70 % that trains: its test part holds no planted cause, and a time-split AUC
# there is ~0.5 whatever the model. Here the drift starts at half time and worsens
# until 80 %: it begins in the training part and goes on into the test part, the case
# a defect model is for. 60 000 units give the board line 163 batches; at 20 000 (54
# batches) only one or two drifting batches fall in training, too few to learn from.
DRIFT_INTO_TEST = Causes(drift_window=(0.5, 0.8))


@dataclass(frozen=True, slots=True)
class Board:
    plant: Plant
    store: GraphStore
    model: DefectModel

    @property
    def batches(self) -> list[str]:
        edges = self.store.edges([PRODUCT], {"OF_PRODUCT": Direction.IN})
        return sorted(e.src for e in edges)

    @property
    def out_of_spec(self) -> set[str]:
        """Batches whose reflow run on the drifting oven went past the USL."""
        drift = next(c for c in self.plant.truth["causes"] if c["id"] == "reflow-drift")
        return {run.removeprefix("RUN-").rsplit("-", 1)[0] for run in drift["runs_out_of_spec"]}

    @property
    def drifting(self) -> set[str]:
        drift = next(c for c in self.plant.truth["causes"] if c["id"] == "reflow-drift")
        return set(drift["batches"])


def _loaded(plant: Plant) -> EmbeddedGraphStore:
    store = EmbeddedGraphStore(None)
    load_plant(store, plant_sections(plant))
    return store


@pytest.fixture(scope="module", params=[1, 2], ids=lambda seed: f"seed{seed}")
def board(request: pytest.FixtureRequest) -> Iterator[Board]:
    plant = generate(PlantSpec(units=UNITS, seed=request.param), DRIFT_INTO_TEST)
    store = _loaded(plant)
    yield Board(plant, store, train(store, PRODUCT, seed=0))
    store.close()


def test_time_split_holds_out_the_latest_batches(board: Board) -> None:
    m = board.model.metrics
    n = len(board.batches)
    assert (m.n_train, m.n_test) == (n - round(TEST_FRACTION * n), round(TEST_FRACTION * n))
    produced = board.plant.edges["PRODUCED"].columns["src"]
    assert m.train_units + m.test_units == sum(1 for b in produced if b.startswith("WO-PCB-"))
    assert 0 < m.base_rate < 0.05


def test_auc_on_the_later_batches_is_well_above_chance(board: Board) -> None:
    # observed 0.85-0.89 over seeds 1-8 of this plant
    assert board.model.metrics.auc is not None
    assert board.model.metrics.auc > 0.75


def test_calibrated_brier_score_beats_the_base_rate(board: Board) -> None:
    m = board.model.metrics
    # observed skill 0.008-0.20 over seeds 1-8: defects are rare, so Brier gains are small
    assert m.brier < m.base_brier
    assert m.brier_skill > 0


def test_batches_run_out_of_spec_on_the_drifting_oven_are_predicted_riskier(
    board: Board,
) -> None:
    risks = {r.batch: r for r in board.model.predict_batches(board.store, board.batches)}
    bad = sorted(board.out_of_spec)
    others = [b for b in board.batches if b not in board.drifting]
    assert bad
    p_bad = [risks[b].probability for b in bad]
    p_others = [risks[b].probability for b in others]
    # observed: batch-level AUC 0.91-1.0 and a mean 2-38 times higher over seeds 1-8
    labels = [1] * len(bad) + [0] * len(others)
    assert roc_auc_score(labels, p_bad + p_others) > 0.85
    assert np.mean(p_bad) > 1.5 * np.mean(p_others)


def test_explanations_name_the_reflow_peak_for_the_drifted_batches(board: Board) -> None:
    for risk in board.model.predict_batches(board.store, sorted(board.out_of_spec)):
        top = [c.feature for c in risk.contributions[:2]]
        assert PEAK in top, (risk.batch, risk.contributions)
        peak = next(c for c in risk.contributions if c.feature == PEAK)
        assert peak.effect > 0
        assert float(peak.value.split()[0]) > 250.0  # past the USL, as the truth says
        assert all(a.effect >= b.effect for a, b in itertools.pairwise(risk.contributions))


def test_expected_defectives_are_probability_times_quantity(board: Board) -> None:
    wanted = board.batches[-3:]
    risks = board.model.predict_batches(board.store, [*wanted, wanted[0]])
    assert [r.batch for r in risks] == wanted
    for r in risks:
        assert 0.0 <= r.probability <= 1.0
        assert r.expected_defective == pytest.approx(r.probability * r.units)
    assert board.model.predict_batches(board.store, []) == []


def test_history_features_use_only_what_was_known_when_the_batch_started(
    board: Board,
) -> None:
    facts, outcomes = _read_product(board.store, PRODUCT)
    schema = board.model.schema
    for uid in board.batches[40::25]:
        start = facts.batches[uid].started_at
        full = _history(
            facts.batches,
            outcomes,
            [uid],
            prior_units=schema.prior_units,
            machine_window=schema.machine_window,
        )
        # forget every batch still running at the start and every later defect
        past = {k: b for k, b in facts.batches.items() if b.ended_at < start or k == uid}
        known = _Outcomes(
            {k: n for k, n in outcomes.units.items() if k in past},
            {k: t[t < start] for k, t in outcomes.found.items() if k in past and k != uid},
        )
        truncated = _history(
            past, known, [uid], prior_units=schema.prior_units, machine_window=schema.machine_window
        )
        assert full == truncated
        assert {kind for kind, _ in full[uid]} == {
            FeatureKind.LOT_HISTORY,
            FeatureKind.MACHINE_HISTORY,
        }


def test_a_saved_model_loads_and_predicts_the_same(board: Board, tmp_path: Path) -> None:
    path = tmp_path / "board.joblib"
    sidecar = board.model.save(path)
    meta = json.loads(sidecar.read_text())
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["schema"]["product"] == PRODUCT
    assert PEAK + ":pos" in [c for g in meta["schema"]["groups"] for c in g["columns"]]
    assert meta["metrics"]["auc"] == board.model.metrics.auc

    loaded = DefectModel.load(path)
    assert loaded.schema == board.model.schema
    assert loaded.metrics == board.model.metrics
    wanted = board.batches[-20:]
    assert loaded.predict_batches(board.store, wanted) == board.model.predict_batches(
        board.store, wanted
    )


def test_loading_a_model_of_another_schema_version_is_refused(board: Board, tmp_path: Path) -> None:
    path = tmp_path / "board.joblib"
    sidecar = board.model.save(path)
    meta = json.loads(sidecar.read_text())
    meta["schema_version"] = SCHEMA_VERSION + 1
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValidationFailed, match="schema version"):
        DefectModel.load(path)
    # a sidecar paired with another model's file is caught by its columns
    meta["schema_version"] = SCHEMA_VERSION
    meta["schema"]["groups"] = meta["schema"]["groups"][1:]
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValidationFailed, match="does not match its sidecar"):
        DefectModel.load(path)
    sidecar.unlink()
    with pytest.raises(NotFound):
        DefectModel.load(path)


def test_prediction_refuses_batches_of_another_product_or_unknown(board: Board) -> None:
    with pytest.raises(ValidationFailed, match="not a batch of PRD-BOARD"):
        board.model.predict_batches(board.store, ["WO-ASM-00001"])
    with pytest.raises(NotFound):
        board.model.predict_batches(board.store, ["WO-NOPE"])


def test_training_an_unknown_product_is_not_found(board: Board) -> None:
    with pytest.raises(NotFound):
        train(board.store, "PRD-NOPE")


def test_training_refuses_a_product_with_too_few_batches() -> None:
    store = _loaded(generate(PlantSpec(units=1_000, seed=3)))  # 3 board batches
    with pytest.raises(ValidationFailed, match=f"at least {MIN_BATCHES}"):
        train(store, PRODUCT)


def test_training_refuses_a_product_without_defects() -> None:
    baseline = tuple((t, 0.0 if t in BOARD_DEFECTS else p) for t, p in Causes().baseline)
    flawless = Causes(void_max_p=0.0, baseline=baseline)
    store = _loaded(generate(PlantSpec(units=8_000, seed=3), flawless))
    with pytest.raises(ValidationFailed, match="in-house defect"):
        train(store, PRODUCT)
