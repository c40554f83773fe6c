"""Portable models for the edge: ONNX scores equal scikit-learn's, signed bundles that
verify or are refused with their reason, the per-unit judgement model's honesty on null,
planted and differently shaped plants, delivery over MQTT, and the ``sqems edge``
commands."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from conftest import Broker, wait_for
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from sqems.analysis.judgement import (
    NO_SKILL_THRESHOLD,
    RISK_RATIO,
    SCHEMA_VERSION,
    UnitModel,
    train_unit_model,
)
from sqems.analysis.prediction import DefectModel, _history, train, training_split
from sqems.cli import app
from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.battery import generate_battery
from sqems.datasets.battery_layout import BatteryCauses
from sqems.datasets.files import plant_sections
from sqems.datasets.layout import REFLOW_PEAK, Causes
from sqems.edge.portable import (
    PortableModel,
    batch_risk_portable,
    generate_keys,
    load_private_key,
    load_public_key,
    model_topic,
    publish,
    sign,
    verify,
)
from sqems.errors import BrokerUnavailable, ValidationFailed
from sqems.graph_model import EmbeddedGraphStore, GraphStore
from sqems.graph_model.neo4j_server import free_port
from sqems.ingestion import edge_records
from sqems.ingestion.broker import BrokerAccess, connect
from sqems.settings import Settings

BOARD = "PRD-BOARD"
UNITS = 20_000
# the reflow drift starts in the training part and goes on into the test part (see
# tests/test_prediction.py): the case a model that judges new units is for
DRIFT_INTO_TEST = Causes(drift_window=(0.5, 0.8))
NULL = Causes(bad_lot_added_p=0.0, shift_added_p=0.0, drift_amount=0.0)
PARITY = 1e-6


def _loaded(plant: Any, path: Path | None = None) -> EmbeddedGraphStore:
    store = EmbeddedGraphStore(path)
    load_plant(store, plant_sections(plant))
    return store


@dataclass(frozen=True, slots=True)
class Trained:
    store: GraphStore
    unit: UnitModel
    batch: DefectModel


@pytest.fixture(scope="module")
def board() -> Iterator[Trained]:
    store = _loaded(generate(PlantSpec(units=UNITS, seed=1), DRIFT_INTO_TEST))
    yield Trained(store, train_unit_model(store, BOARD), train(store, BOARD))
    store.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keys(tmp_path_factory.mktemp("keys"))


def _held_out(store: GraphStore, model: UnitModel | DefectModel) -> np.ndarray:
    """The test batches' feature rows, then the same rows with a third of the values
    missing, then rows scattered across and beyond the tolerances."""
    split = training_split(store, model.product)
    later = split.batches[split.n_train :]
    if isinstance(model, DefectModel):
        history = _history(
            split.facts.batches,
            split.outcomes,
            [b.uid for b in later],
            prior_units=model.schema.prior_units,
            machine_window=model.schema.machine_window,
        )
    else:
        history = {}
    x = model.schema.encode(later, history)
    rng = np.random.default_rng(7)
    holed = x.copy()
    holed[rng.random(x.shape) < 0.33] = np.nan
    scattered = rng.normal(0.0, 1.5, size=(400, x.shape[1]))
    scattered[rng.random(scattered.shape) < 0.2] = np.nan
    return np.vstack([x, holed, scattered])


# --- parity -------------------------------------------------------------------------------


def test_batch_risk_onnx_scores_match_scikit_learn_on_held_out_rows(board: Trained) -> None:
    manifest, graph = batch_risk_portable(board.batch, version="1")
    x = _held_out(board.store, board.batch)
    assert np.isnan(x).any()
    onnx_p = PortableModel(manifest, graph).score(x)
    sklearn_p = board.batch.probabilities(x)
    assert np.max(np.abs(onnx_p - sklearn_p)) < PARITY
    assert len(np.unique(np.round(sklearn_p, 6))) > 3  # the calibration map is not flat here
    assert manifest["inputs"] == board.batch.schema.columns
    assert manifest["schema"]["schema_version"] == board.batch.schema.version
    assert manifest["threshold"] is None
    assert manifest["metrics"]["auc"] == board.batch.metrics.auc


def test_unit_judgement_onnx_scores_match_scikit_learn_on_held_out_rows(board: Trained) -> None:
    manifest, graph = board.unit.portable(version="1")
    x = _held_out(board.store, board.unit)
    onnx_p = PortableModel(manifest, graph).score(x)
    assert np.max(np.abs(onnx_p - board.unit.probabilities(x))) < PARITY
    assert manifest["kind"] == "unit-judgement"
    assert manifest["threshold"] == board.unit.threshold
    assert manifest["inputs"] == board.unit.schema.columns


def test_unit_features_from_means_are_the_training_encoding(board: Trained) -> None:
    """At the edge a parameter's mean while the unit was made takes the place of the
    run's recorded actual: the same value gives the same row."""
    split = training_split(board.store, BOARD)
    batch = split.batches[-1]
    means = {p: v for run in batch.runs for p, v in run.params.items()}
    row = board.unit.features_from_means(means)
    assert np.allclose(row, board.unit.schema.encode([batch], {})[0], equal_nan=True)
    partial = board.unit.features_from_means({REFLOW_PEAK.uid: 250.0})
    at = board.unit.schema.columns.index(f"{REFLOW_PEAK.uid}@STEP-PCB-20:pos")
    assert partial[at] == pytest.approx(1.0)  # 250 degC is the USL
    assert np.isnan(np.delete(partial, [at, at + 1])).all()


# --- the unit model's honesty -------------------------------------------------------------


def _unit_auc(store: GraphStore, model: UnitModel) -> float:
    """ROC AUC of the model's scores over the test part's units, one weighted row per
    outcome and batch."""
    split = training_split(store, model.product)
    later = split.batches[split.n_train :]
    p = model.probabilities(model.schema.encode(later, {}))
    d, u = split.defective[split.n_train :], split.units[split.n_train :]
    scores = np.concatenate([p, p])
    y = np.concatenate([np.ones(len(p)), np.zeros(len(p))])
    w = np.concatenate([d, u - d])
    return float(roc_auc_score(y, scores, sample_weight=w))


def test_unit_model_ranks_defective_units_higher_where_a_cause_is_planted(board: Trained) -> None:
    metrics = board.unit.metrics
    assert metrics.skill, metrics.verdict
    assert metrics.auc is not None and metrics.auc > 0.8
    assert metrics.auc == pytest.approx(_unit_auc(board.store, board.unit))
    assert metrics.auc_low is not None and metrics.auc_low > 0.5
    assert metrics.brier < metrics.base_brier
    assert board.unit.threshold == pytest.approx(RISK_RATIO * metrics.base_rate)
    assert 0 < metrics.flagged_train < metrics.caught_train  # flags defects, not units
    assert "skill:" in metrics.verdict


def test_unit_model_claims_no_skill_on_a_plant_without_a_planted_cause() -> None:
    store = _loaded(generate(PlantSpec(units=UNITS, seed=2), NULL))
    try:
        model = train_unit_model(store, BOARD)
    finally:
        store.close()
    metrics = model.metrics
    assert not metrics.skill
    assert metrics.auc_low is None or metrics.auc_low <= 0.5 or metrics.brier >= metrics.base_brier
    assert model.threshold == NO_SKILL_THRESHOLD  # it flags no unit
    assert metrics.verdict.startswith("no skill over the base rate within noise")
    assert model.portable()[0]["metrics"]["skill"] is False


def test_unit_model_on_a_battery_plant_finds_the_weak_welds() -> None:
    """Another plant shape: the battery line's laser welder sags below its LSL."""
    plant = generate_battery(PlantSpec(units=UNITS, seed=2), BatteryCauses(drift_window=(0.5, 0.8)))
    store = _loaded(plant)
    try:
        started = time.perf_counter()
        model = train_unit_model(store, "PRD-MODULE")
        seconds = time.perf_counter() - started
        manifest, graph = model.portable()
        x = _held_out(store, model)
    finally:
        store.close()
    assert "P-WELD-POWER@STEP-MOD-20:pos" in model.schema.columns
    assert model.metrics.skill, model.metrics.verdict
    assert model.metrics.auc is not None and model.metrics.auc > 0.8
    assert np.max(np.abs(PortableModel(manifest, graph).score(x) - model.probabilities(x))) < PARITY
    print(f"battery module unit model: trained in {seconds:.2f} s, {model.metrics.verdict}")


# --- bundles ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(board: Trained, keys: tuple[Path, Path]) -> bytes:
    manifest, graph = board.unit.portable(version="7")
    return sign(manifest, graph, load_private_key(keys[0]))


def test_signed_bundle_verifies_and_scores_like_the_model(
    board: Trained, bundle: bytes, keys: tuple[Path, Path]
) -> None:
    model = verify(bundle, load_public_key(keys[1]), kind="unit-judgement", product=BOARD)
    assert model.version == "7" and model.kind == "unit-judgement" and model.product == BOARD
    assert model.inputs == board.unit.schema.columns
    assert model.threshold == board.unit.threshold
    data = json.loads(bundle)
    assert data["format"] == "sqems-edge-model"
    assert set(data) == {"format", "manifest", "onnx", "signature"}
    assert data["manifest"]["schema"]["schema_version"] == SCHEMA_VERSION
    assert len(data["manifest"]["key_id"]) == 16
    row = board.unit.features_from_means({REFLOW_PEAK.uid: 252.0})
    assert model.score(row)[0] == pytest.approx(board.unit.probabilities(row)[0], abs=PARITY)


def _resigned(bundle: bytes, keys: tuple[Path, Path], **changes: Any) -> bytes:
    """The bundle's model with manifest ``changes``, signed again with the right key."""
    data = json.loads(bundle)
    manifest = {**data["manifest"], **changes}
    return sign(manifest, base64.b64decode(data["onnx"]), load_private_key(keys[0]))


def _edited(bundle: bytes, edit: Any) -> bytes:
    data = json.loads(bundle)
    edit(data)
    return json.dumps(data).encode()


def _flip_onnx_byte(data: dict[str, Any]) -> None:
    graph = bytearray(base64.b64decode(data["onnx"]))
    graph[len(graph) // 2] ^= 0x01
    data["onnx"] = base64.b64encode(bytes(graph)).decode()


def _raise_threshold(data: dict[str, Any]) -> None:
    data["manifest"]["threshold"] = 0.99


def _other_format(data: dict[str, Any]) -> None:
    data["format"] = "sqems-edge-model-v9"


REFUSALS = {
    "tampered onnx": (lambda b, k: _edited(b, _flip_onnx_byte), {}, "the graph was altered"),
    "tampered manifest": (lambda b, k: _edited(b, _raise_threshold), {}, "does not verify"),
    "wrong key": (
        lambda b, k: sign(
            json.loads(b)["manifest"],
            base64.b64decode(json.loads(b)["onnx"]),
            Ed25519PrivateKey.generate(),
        ),
        {},
        "does not verify with the configured public key",
    ),
    "wrong product": (lambda b, k: b, {"product": "PRD-DRIVE"}, "this edge judges PRD-DRIVE"),
    "wrong kind": (lambda b, k: b, {"kind": "batch-risk"}, "this edge runs batch-risk"),
    "unknown format": (lambda b, k: _edited(b, _other_format), {}, "format is"),
    "unknown schema version": (
        lambda b, k: _resigned(
            b, k, schema={**json.loads(b)["manifest"]["schema"], "schema_version": 99}
        ),
        {},
        "feature schema version 99",
    ),
    "graph that is not ONNX": (
        lambda b, k: sign(json.loads(b)["manifest"], b"not onnx", load_private_key(k[0])),
        {},
        "ONNX Runtime cannot load",
    ),
    "older version": (
        lambda b, k: b,
        {"current": {"version": "8", "created_at": "2099-01-01T00:00:00+00:00"}},
        "older than the one this edge runs",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_edge_refuses_a_bundle_with_the_reason(
    case: str, bundle: bytes, keys: tuple[Path, Path]
) -> None:
    make, expect, reason = REFUSALS[case]
    kind = expect.get("kind", "unit-judgement")
    product = expect.get("product", BOARD)
    with pytest.raises(ValidationFailed, match=reason):
        verify(
            make(bundle, keys),
            load_public_key(keys[1]),
            kind=kind,
            product=product,
            current=expect.get("current"),
        )


def test_the_same_or_a_newer_model_is_accepted(bundle: bytes, keys: tuple[Path, Path]) -> None:
    public = load_public_key(keys[1])
    current = verify(bundle, public).manifest
    assert verify(bundle, public, current=current).version == "7"  # a retained repeat
    newer = _resigned(bundle, keys, version="8", created_at="2099-01-01T00:00:00+00:00")
    assert verify(newer, public, current=current).version == "8"


def test_keys_are_pem_and_the_private_key_is_its_owners_only(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    with pytest.raises(ValidationFailed, match="never overwritten"):
        generate_keys(tmp_path)
    with pytest.raises(ValidationFailed, match="not an unencrypted PEM private key"):
        load_private_key(public)


# --- delivery -----------------------------------------------------------------------------


def test_model_topic_names_the_line_and_kind() -> None:
    assert model_topic("S1", "L2", "batch-risk") == "sqems/v1/S1/L2/model/batch-risk/bundle"
    with pytest.raises(ValidationFailed, match="topic level"):
        model_topic("S1", "L/2", "unit-judgement")
    with pytest.raises(ValidationFailed, match="model kind"):
        model_topic("S1", "L2", "weather")


def test_no_central_subscription_receives_a_model() -> None:
    """A retained bundle on a topic the central ingestion listens to would be refused as
    a bad reading on every publish and every reconnect."""
    readings = Settings.model_fields["mqtt_subscription"].default
    for kind in ("unit-judgement", "batch-risk"):
        topic = model_topic("SITE-1", "LINE-PCB", kind)
        assert not mqtt.topic_matches_sub(readings, topic)
        assert not mqtt.topic_matches_sub(edge_records.SUBSCRIPTION, topic)


def _retained(broker: Broker, topic: str) -> bytes:
    """The message retained on ``topic``, as a client that connects afterwards gets it."""
    got: list[bytes] = []
    access = BrokerAccess(broker.host, broker.port)
    client = access.client(f"edge-test-{time.monotonic_ns()}")
    client.on_message = lambda _c, _u, msg: got.append(msg.payload)
    connect(client, access)
    try:
        client.subscribe(topic, qos=1)
        wait_for(lambda: bool(got), f"the retained message on {topic}")
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def test_publish_retains_the_bundle_for_an_edge_that_connects_later(
    mosquitto: Broker, bundle: bytes, keys: tuple[Path, Path]
) -> None:
    access = BrokerAccess(mosquitto.host, mosquitto.port)
    client = access.client("edge-test-publisher")
    connect(client, access)
    try:
        topic = publish(client, "SITE-T", "LINE-PUB", bundle)
    finally:
        client.disconnect()
        client.loop_stop()
    assert topic == "sqems/v1/SITE-T/LINE-PUB/model/unit-judgement/bundle"
    received = _retained(mosquitto, topic)
    assert verify(received, load_public_key(keys[1])).version == "7"


def test_publish_without_a_connection_is_a_clear_error(bundle: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-test-offline")
    with pytest.raises(BrokerUnavailable, match="did not take model 7"):
        publish(client, "SITE-T", "LINE-OFF", bundle, timeout=1.0)


# --- the commands -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edge-graph") / "graph.db"
    _loaded(generate(PlantSpec(units=UNITS, seed=1), DRIFT_INTO_TEST), path).close()
    return path


def _invoke(env: dict[str, str], *args: str) -> Any:
    done = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **env})
    return done


def test_cli_keygen_export_and_publish(graph_file: Path, mosquitto: Broker, tmp_path: Path) -> None:
    env = {
        "SQEMS_DATA_DIR": str(tmp_path / "data"),
        "SQEMS_GRAPH_URI": f"embedded://{graph_file}",
        "SQEMS_MQTT_HOST": mosquitto.host,
        "SQEMS_MQTT_PORT": str(mosquitto.port),
    }
    made = _invoke(env, "edge", "keygen", str(tmp_path / "keys"))
    assert made.exit_code == 0, made.output
    private, public = (
        tmp_path / "keys" / "edge-signing.pem",
        tmp_path / "keys" / "edge-signing.pub.pem",
    )
    assert "key id" in made.output

    out = tmp_path / "board.sqems-model.json"
    for kind in ("unit-judgement", "batch-risk"):
        done = _invoke(
            env, "edge", "export", BOARD, "--kind", kind, "--key", str(private), "--out", str(out),
            "--version", f"{kind}-1",
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        assert f"version {kind}-1" in done.output
        assert "threshold:" in done.output
        model = verify(out.read_bytes(), load_public_key(public), kind=kind, product=BOARD)
        assert model.version == f"{kind}-1"
    assert "AUC" in done.output

    sent = _invoke(env, "edge", "publish", str(out), "--site", "SITE-T", "--line", "LINE-CLI")
    assert sent.exit_code == 0, sent.output
    topic = "sqems/v1/SITE-T/LINE-CLI/model/batch-risk/bundle"
    assert topic in sent.output
    assert verify(_retained(mosquitto, topic), load_public_key(public)).version == "batch-risk-1"

    offline = {**env, "SQEMS_MQTT_PORT": str(free_port())}
    refused = _invoke(offline, "edge", "publish", str(out), "--site", "S", "--line", "L")
    assert refused.exit_code == 2
    assert "cannot reach the MQTT broker" in refused.output
