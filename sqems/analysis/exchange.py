"""The portable form of a trained model: an ONNX graph and the manifest describing it.

A model leaves the central SQEMS as ONNX so that a line's edge agent can judge with
ONNX Runtime alone, without scikit-learn or the graph. The scores must be the ones
scikit-learn gives, to 1e-6, or the edge and the central system would disagree about
the same unit; so the graph reads double-precision inputs and keeps double-precision
thresholds, leaf values and sums: ``ai.onnx.ml`` opset 5's ``TreeEnsemble``. (Opset 3's
``TreeEnsembleRegressor`` with ``*_as_tensor`` attributes compares in double but returns
float32, about 1e-7 on the log-odds, which the steep segments of an isotonic map can
blow up past 1e-6.)

:func:`export_onnx` builds the graph itself for the models SQEMS trains — a
:class:`~sklearn.ensemble.HistGradientBoostingClassifier`, alone or under an isotonic
``CalibratedClassifierCV(ensemble=False)``. skl2onnx 1.20 cannot: its converter for that
booster fails on the current onnx package (a leaf's ``missing`` flag is a Python
``bool`` where onnx wants an ``int``), writes the classifier's thresholds as float32
(a value between a double threshold and its float32 rounding takes the other branch).
Any other binary
classifier goes through skl2onnx (double inputs, no ZipMap). Every graph has one input
``x`` (rows of features, float64, NaN for a missing value) and one output
``probability``: P(class 1) per row.

The booster's graph: a ``TreeEnsemble`` summing the trees' leaf values, plus the
baseline (the raw log-odds; a node sends NaN where the booster learnt to send it,
``nodes_missing_value_tracks_true``), then either ``Sigmoid`` or the isotonic map.
The isotonic map is piecewise linear through the calibrator's points
``(x_0, y_0) … (x_k, y_k)``, clipped outside them; with ``d_i = clip(s, x_i, x_{i+1})
- x_i`` it is ``y_0 + Σ_i d_i · (y_{i+1} - y_i) / (x_{i+1} - x_i)``, which ONNX computes
with ``Max``, ``Min``, ``Mul`` and ``ReduceSum`` over the segments at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier

from sqems.errors import ValidationFailed

INPUT = "x"
OUTPUT = "probability"
OPSET = 18
"""The default ONNX domain's opset; ONNX Runtime 1.20 and later run it."""
ML_OPSET = 5
"""``ai.onnx.ml`` opset 5: its ``TreeEnsemble`` keeps double thresholds, leaf values and
sums (opset 3's ``TreeEnsembleRegressor`` compares in double but returns float32)."""
SKL2ONNX_ML_OPSET = 3
FORMAT = "sqems-edge-model"
KINDS = ("unit-judgement", "batch-risk")


def export_onnx(estimator: Any, n_features: int) -> bytes:
    """The ONNX graph (serialised) of a fitted binary classifier over ``n_features``
    float64 columns; its output ``probability`` is P(class 1) per row.

    :class:`ValidationFailed` for an estimator that is not a binary classifier or was
    fitted on another number of columns.
    """
    classes = getattr(estimator, "classes_", None)
    if classes is None or len(classes) != 2:
        raise ValidationFailed(
            f"{type(estimator).__name__} is not a fitted binary classifier; only a "
            "two-class model can be exported for the edge"
        )
    fitted = getattr(estimator, "n_features_in_", n_features)
    if fitted != n_features:
        raise ValidationFailed(
            f"the {type(estimator).__name__} was fitted on {fitted} columns, not "
            f"{n_features}; export it with the feature count of its schema"
        )
    if isinstance(estimator, HistGradientBoostingClassifier):
        model = _booster_graph(estimator, n_features, calibration=None)
    elif (
        isinstance(estimator, CalibratedClassifierCV)
        and len(estimator.calibrated_classifiers_) == 1
        and estimator.calibrated_classifiers_[0].method == "isotonic"
        and isinstance(
            estimator.calibrated_classifiers_[0].estimator, HistGradientBoostingClassifier
        )
    ):
        calibrated = estimator.calibrated_classifiers_[0]
        iso = calibrated.calibrators[0]
        points = (np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float))
        model = _booster_graph(calibrated.estimator, n_features, calibration=points)
    else:
        model = _skl2onnx_graph(estimator, n_features)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _booster_graph(
    booster: HistGradientBoostingClassifier,
    n_features: int,
    calibration: tuple[np.ndarray, np.ndarray] | None,
) -> onnx.ModelProto:
    """The booster's raw score as a tree ensemble, then the sigmoid or the isotonic map."""
    if booster.n_trees_per_iteration_ != 1:
        raise ValidationFailed("only a two-class booster (one tree per iteration) exports")
    roots: list[int] = []
    split: dict[str, list[Any]] = {
        k: [] for k in ("feature", "value", "true", "true_leaf", "false", "false_leaf", "missing")
    }
    leaves: list[float] = []
    for (predictor,) in booster._predictors:
        nodes = predictor.nodes
        if bool(np.any(nodes["is_categorical"])):
            raise ValidationFailed("a booster with categorical splits cannot be exported")
        # interior nodes and leaves are numbered apart in ONNX: map each booster node
        interior = np.flatnonzero(~nodes["is_leaf"].astype(bool))
        leaf = np.flatnonzero(nodes["is_leaf"].astype(bool))
        node_at = {int(i): len(split["feature"]) + k for k, i in enumerate(interior)}
        leaf_at = {int(i): len(leaves) + k for k, i in enumerate(leaf)}
        leaves.extend(float(v) for v in nodes["value"][leaf])
        roots.append(len(split["feature"]))
        if not len(interior):  # a tree that never split: one branch, both ways to its leaf
            split["feature"].append(0)
            split["value"].append(0.0)
            for side in ("true", "false"):
                split[side].append(leaf_at[0])
                split[f"{side}_leaf"].append(1)
            split["missing"].append(0)
            continue
        for i in interior:
            node = nodes[i]
            split["feature"].append(int(node["feature_idx"]))
            split["value"].append(float(node["num_threshold"]))
            # scikit-learn goes left when value <= threshold: left is ONNX's true branch
            for side, child in (("true", int(node["left"])), ("false", int(node["right"]))):
                is_leaf = child in leaf_at
                split[side].append(leaf_at[child] if is_leaf else node_at[child])
                split[f"{side}_leaf"].append(int(is_leaf))
            split["missing"].append(int(node["missing_go_to_left"]))
    ensemble = helper.make_node(
        "TreeEnsemble",
        [INPUT],
        ["trees"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function=1,  # SUM
        post_transform=0,  # NONE
        tree_roots=roots,
        nodes_featureids=split["feature"],
        nodes_modes=numpy_helper.from_array(
            np.zeros(len(split["feature"]), np.uint8),
            "nodes_modes",  # 0: BRANCH_LEQ
        ),
        nodes_splits=numpy_helper.from_array(np.asarray(split["value"], np.float64), "splits"),
        nodes_truenodeids=split["true"],
        nodes_trueleafs=split["true_leaf"],
        nodes_falsenodeids=split["false"],
        nodes_falseleafs=split["false_leaf"],
        nodes_missing_value_tracks_true=split["missing"],
        leaf_targetids=[0] * len(leaves),
        leaf_weights=numpy_helper.from_array(np.asarray(leaves, np.float64), "leaf_weights"),
    )
    baseline = np.asarray(booster._baseline_prediction, np.float64).reshape(1, 1)
    initializers = [
        numpy_helper.from_array(baseline, "baseline"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes_out = [ensemble, helper.make_node("Add", ["trees", "baseline"], ["raw"])]
    if calibration is None:
        nodes_out.append(helper.make_node("Sigmoid", ["raw"], ["p2d"]))
    else:
        nodes_out += _isotonic_nodes("raw", "p2d", *calibration, initializers)
    nodes_out.append(helper.make_node("Squeeze", ["p2d", "axis1"], [OUTPUT]))
    return _model(nodes_out, initializers, n_features, "sqems booster")


def _isotonic_nodes(
    score: str,
    out: str,
    xs: np.ndarray,
    ys: np.ndarray,
    initializers: list[onnx.TensorProto],
) -> list[onnx.NodeProto]:
    """Nodes mapping the (N, 1) ``score`` through the piecewise-linear isotonic map."""
    if len(xs) == 1:  # a flat calibration: every score maps to the one value
        initializers.append(numpy_helper.from_array(np.zeros((1, 1)), "iso_zero"))
        initializers.append(numpy_helper.from_array(np.array([[ys[0]]]), "iso_y0"))
        return [
            helper.make_node("Mul", [score, "iso_zero"], ["iso_flat"]),
            helper.make_node("Add", ["iso_flat", "iso_y0"], [out]),
        ]
    lows, highs = xs[:-1], xs[1:]
    slopes = np.diff(ys) / np.diff(xs)
    for name, values in (("iso_low", lows), ("iso_high", highs), ("iso_slope", slopes)):
        initializers.append(numpy_helper.from_array(values.reshape(1, -1), name))
    initializers.append(numpy_helper.from_array(np.array([[ys[0]]]), "iso_y0"))
    return [
        helper.make_node("Min", [score, "iso_high"], ["iso_capped"]),
        helper.make_node("Max", ["iso_capped", "iso_low"], ["iso_clipped"]),
        helper.make_node("Sub", ["iso_clipped", "iso_low"], ["iso_run"]),
        helper.make_node("Mul", ["iso_run", "iso_slope"], ["iso_rise"]),
        helper.make_node("ReduceSum", ["iso_rise", "axis1"], ["iso_sum"], keepdims=1),
        helper.make_node("Add", ["iso_sum", "iso_y0"], [out]),
    ]


def _model(
    nodes: Sequence[onnx.NodeProto],
    initializers: Sequence[onnx.TensorProto],
    n_features: int,
    name: str,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        name,
        [helper.make_tensor_value_info(INPUT, TensorProto.DOUBLE, [None, n_features])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None])],
        initializer=list(initializers),
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="sqems",
    )


def _skl2onnx_graph(estimator: Any, n_features: int) -> onnx.ModelProto:
    """Any other classifier through skl2onnx, its (N, 2) probabilities cut to class 1."""
    from skl2onnx import convert_sklearn  # noqa: PLC0415 - a second of imports, rarely needed
    from skl2onnx.common.data_types import DoubleTensorType  # noqa: PLC0415

    converted = convert_sklearn(
        estimator,
        initial_types=[(INPUT, DoubleTensorType([None, n_features]))],
        target_opset={"": OPSET, "ai.onnx.ml": SKL2ONNX_ML_OPSET},
        options={id(estimator): {"zipmap": False}},
    )
    graph = converted.graph
    probabilities = next(o.name for o in graph.output if o.name != "label")
    graph.initializer.append(numpy_helper.from_array(np.array(1, np.int64), "class1"))
    graph.node.append(helper.make_node("Gather", [probabilities, "class1"], [OUTPUT], axis=1))
    while len(graph.output):
        graph.output.pop()
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None]))
    model: onnx.ModelProto = converted
    return model


def manifest(
    *,
    kind: str,
    product: str,
    schema: Mapping[str, Any],
    inputs: Sequence[str],
    onnx_bytes: bytes,
    metrics: Mapping[str, Any],
    threshold: float | None = None,
    version: str | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """The manifest of a portable model (see docs/edge.md, "Portable models"); the
    signer adds ``key_id``. ``version`` defaults to the creation time and the graph's
    hash, ``20261204T140000Z-1a2b3c4d``, which sorts in time order."""
    if kind not in KINDS:
        raise ValidationFailed(f"model kind {kind!r} is not one of {', '.join(KINDS)}")
    created = (created_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    return {
        "kind": kind,
        "product": product,
        "version": version or f"{created:%Y%m%dT%H%M%SZ}-{digest[:8]}",
        "created_at": created.isoformat(),
        "schema": dict(schema),
        "inputs": list(inputs),
        "threshold": threshold,
        "sha256": digest,
        "sqems": _sqems_version(),
        "metrics": dict(metrics),
    }


def _sqems_version() -> str:
    try:
        return package_version("sqems")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+source"
