"""Portable models: signed bundles of an ONNX graph and its manifest, for the edge.

The central SQEMS trains a model from the graph, exports it to ONNX
(:func:`export_onnx`, parity with scikit-learn to 1e-6), and signs it with the plant's
Ed25519 key into a **bundle**::

    {"format": "sqems-edge-model", "manifest": {...}, "onnx": "<base64>",
     "signature": "<base64>"}

The signature covers ``b"sqems-edge-model\\n" + canonical_json(manifest)``, and the
manifest holds the graph's SHA-256, so one signature vouches for both. An edge agent
holds only the public key; :func:`verify` gives it a :class:`PortableModel` or refuses
the bundle with :class:`ValidationFailed` naming why: the format, the signature, the
hash, the feature-schema version, the product or kind it does not judge, or a model
older than the one it has. Bundles travel retained on :func:`model_topic`
(:func:`publish`), so an edge that connects later still gets the latest one.

>>> model_topic("SITE-1", "LINE-A", "unit-judgement")
'sqems/v1/SITE-1/LINE-A/model/unit-judgement/bundle'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from onnxruntime.capi.onnxruntime_pybind11_state import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
)
from onnxruntime.capi.onnxruntime_pybind11_state import (
    NotImplemented as OrtNotImplemented,
)

from sqems.analysis import judgement, prediction
from sqems.analysis.exchange import FORMAT, INPUT, KINDS, OUTPUT, export_onnx, manifest
from sqems.errors import BrokerUnavailable, NotFound, ValidationFailed

SCHEMA_VERSIONS: Mapping[str, int] = {
    "unit-judgement": judgement.SCHEMA_VERSION,
    "batch-risk": prediction.SCHEMA_VERSION,
}
"""The feature-schema version this SQEMS reads for each kind of model."""
PUBLISH_TIMEOUT_S = 10.0
PRIVATE_KEY = "edge-signing.pem"
PUBLIC_KEY = "edge-signing.pub.pem"


def canonical_json(value: Any) -> bytes:
    """The one byte string a JSON value signs as: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _signed_bytes(manifest: Mapping[str, Any]) -> bytes:
    return FORMAT.encode() + b"\n" + canonical_json(manifest)


class PortableModel:
    """A verified model as the edge runs it: the manifest, the ONNX graph, and one
    ONNX Runtime session (built once, one intra-op thread: an edge box judges a unit
    at a time, and a thread pool would only compete with the agent)."""

    def __init__(self, manifest: Mapping[str, Any], onnx: bytes) -> None:
        self.manifest = dict(manifest)
        self.onnx = onnx
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])

    @property
    def inputs(self) -> list[str]:
        """The feature columns, in the order a row must hold them."""
        return list(self.manifest["inputs"])

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def product(self) -> str:
        return str(self.manifest["product"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def threshold(self) -> float | None:
        value = self.manifest.get("threshold")
        return None if value is None else float(value)

    def score(self, x: np.ndarray) -> np.ndarray:
        """P(defect) per row of ``x`` (one row, or rows of :attr:`inputs`; NaN = missing)."""
        rows = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if rows.shape[1] != len(self.inputs):
            raise ValidationFailed(
                f"a row for model {self.kind} {self.version} needs {len(self.inputs)} "
                f"features, not {rows.shape[1]}"
            )
        (p,) = self._session.run([OUTPUT], {INPUT: rows})
        return np.asarray(p, dtype=np.float64)

    def __repr__(self) -> str:
        return f"PortableModel({self.kind}, {self.product}, version {self.version})"


def batch_risk_portable(
    model: prediction.DefectModel, *, version: str | None = None
) -> tuple[dict[str, Any], bytes]:
    """The portable form of a per-batch defect-risk model: its manifest (unsigned) and
    ONNX graph, whose scores are :meth:`~prediction.DefectModel.probabilities`."""
    schema = model.schema
    graph = export_onnx(model.estimator, len(schema.columns))
    described = {**schema.as_dict(), "schema_version": schema.version, "columns": schema.columns}
    return manifest(
        kind="batch-risk",
        product=model.product,
        schema=described,
        inputs=schema.columns,
        onnx_bytes=graph,
        metrics=model.metrics.as_dict(),
        version=version,
    ), graph


# --- keys -------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of its raw bytes' SHA-256."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keys(directory: str | Path) -> tuple[Path, Path]:
    """A new Ed25519 key pair in ``directory``: the private key (PEM, PKCS#8, readable by
    its owner only) that signs bundles centrally, and the public key (PEM) every edge
    is configured with. An existing key is never overwritten."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_KEY, directory / PUBLIC_KEY
    for path in (private_path, public_path):
        if path.exists():
            raise ValidationFailed(
                f"{path} already exists; keys are never overwritten (move it away to make "
                "a new pair, and give the edges the new public key)"
            )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def _read_pem(path: str | Path, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{what} {path} does not exist (sqems edge keygen DIR makes a pair)")
    return path.read_bytes()


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path``."""
    try:
        key = serialization.load_pem_private_key(_read_pem(path, "private key"), password=None)
    except (ValueError, TypeError) as err:
        raise ValidationFailed(f"{path} is not an unencrypted PEM private key: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValidationFailed(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file ``path``."""
    try:
        key = serialization.load_pem_public_key(_read_pem(path, "public key"))
    except ValueError as err:
        raise ValidationFailed(f"{path} is not a PEM public key: {err}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValidationFailed(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


# --- bundles ----------------------------------------------------------------------------


def sign(manifest: Mapping[str, Any], onnx: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The signed bundle (JSON bytes) of ``manifest`` and ``onnx``. The manifest's
    ``sha256`` and ``key_id`` are set here, from the graph and the key."""
    signed = {
        **manifest,
        "sha256": hashlib.sha256(onnx).hexdigest(),
        "key_id": key_id(private_key.public_key()),
    }
    signature = private_key.sign(_signed_bytes(signed))
    bundle = {
        "format": FORMAT,
        "manifest": signed,
        "onnx": base64.b64encode(onnx).decode("ascii"),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return json.dumps(bundle, ensure_ascii=False).encode()


def newer(manifest: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    """Whether ``manifest`` is a later model than ``than``: by ``created_at``, then by
    ``version``."""

    def order(m: Mapping[str, Any]) -> tuple[datetime, str]:
        return datetime.fromisoformat(str(m["created_at"])), str(m["version"])

    return order(manifest) > order(than)


def verify(
    bundle: bytes,
    public_key: Ed25519PublicKey,
    *,
    kind: str | None = None,
    product: str | None = None,
    current: Mapping[str, Any] | None = None,
) -> PortableModel:
    """The model in ``bundle``, if it is one this edge may run; otherwise
    :class:`ValidationFailed` with the reason.

    Checked in this order: the bundle's format, the signature (with ``public_key``),
    the graph's SHA-256 against the signed manifest, the model kind and its
    feature-schema version, the ``kind`` and ``product`` this edge judges (when given),
    and that it is not older than ``current``, the manifest of the model the edge runs
    (the same model again passes: a retained bundle arrives on every reconnect).
    """
    try:
        data = json.loads(bundle)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValidationFailed(f"the model bundle is not JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValidationFailed(
            f"the model bundle's format is {found!r}, not {FORMAT!r}; this SQEMS reads "
            f"{FORMAT} bundles only"
        )
    meta = data.get("manifest")
    if not isinstance(meta, dict):
        raise ValidationFailed("the model bundle has no manifest object")
    try:
        graph = base64.b64decode(str(data.get("onnx", "")), validate=True)
        signature = base64.b64decode(str(data.get("signature", "")), validate=True)
    except binascii.Error as err:
        raise ValidationFailed(
            f"the model bundle's onnx or signature is not base64: {err}"
        ) from None
    try:
        public_key.verify(signature, _signed_bytes(meta))
    except InvalidSignature:
        raise ValidationFailed(
            f"the signature of model {meta.get('kind')} {meta.get('version')} does not verify "
            f"with the configured public key {key_id(public_key)} (bundle signed by key "
            f"{meta.get('key_id')}); the bundle was altered or signed with another key"
        ) from None
    digest = hashlib.sha256(graph).hexdigest()
    if digest != meta.get("sha256"):
        raise ValidationFailed(
            f"the ONNX graph of model {meta.get('kind')} {meta.get('version')} has SHA-256 "
            f"{digest}, not the signed {meta.get('sha256')}: the graph was altered"
        )
    return _accept(meta, graph, kind=kind, product=product, current=current)


def _accept(
    meta: Mapping[str, Any],
    graph: bytes,
    *,
    kind: str | None,
    product: str | None,
    current: Mapping[str, Any] | None,
) -> PortableModel:
    """The checks of a signed manifest's content (see :func:`verify`)."""
    found_kind = str(meta.get("kind"))
    if found_kind not in SCHEMA_VERSIONS:
        raise ValidationFailed(
            f"model kind {found_kind!r} is not one this SQEMS runs ({', '.join(KINDS)})"
        )
    schema = meta.get("schema")
    schema_version = schema.get("schema_version") if isinstance(schema, dict) else None
    if schema_version != SCHEMA_VERSIONS[found_kind]:
        raise ValidationFailed(
            f"model {found_kind} {meta.get('version')} has feature schema version "
            f"{schema_version}; this SQEMS reads version {SCHEMA_VERSIONS[found_kind]} "
            "(export the model again with this SQEMS, or upgrade the edge)"
        )
    if kind is not None and found_kind != kind:
        raise ValidationFailed(f"the bundle holds a {found_kind} model; this edge runs {kind}")
    if product is not None and meta.get("product") != product:
        raise ValidationFailed(
            f"the bundle's model is for product {meta.get('product')}; this edge judges {product}"
        )
    if current is not None and newer(current, meta):
        raise ValidationFailed(
            f"model {found_kind} {meta.get('version')} (created {meta.get('created_at')}) is "
            f"older than the one this edge runs, {current.get('version')} (created "
            f"{current.get('created_at')})"
        )
    try:
        return PortableModel(meta, graph)
    except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, OrtNotImplemented) as err:
        raise ValidationFailed(f"ONNX Runtime cannot load the model's graph: {err}") from None


# --- transport --------------------------------------------------------------------------


def _manifest_of(bundle: bytes) -> dict[str, Any]:
    """The manifest of a bundle, unverified (to address it; the edge verifies)."""
    try:
        data = json.loads(bundle)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValidationFailed(f"the model bundle is not JSON: {err}") from None
    meta = data.get("manifest") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        raise ValidationFailed("the model bundle has no manifest object")
    return meta


def model_topic(site: str, line: str, kind: str) -> str:
    """The retained topic a line's edge takes its ``kind`` model from.

    Seven levels, like an alarm's: a reading subscription (``sqems/v1/+/+/+/+``) never
    receives a model, and the edge records' (``sqems/v1/+/+/edge/+/+``) neither."""
    if kind not in KINDS:
        raise ValidationFailed(f"model kind {kind!r} is not one of {', '.join(KINDS)}")
    for name, part in (("site", site), ("line", line)):
        if not part or any(c in part for c in "/+#"):
            raise ValidationFailed(f"{name} {part!r} cannot be an MQTT topic level")
    return f"sqems/v1/{site}/{line}/model/{kind}/bundle"


def publish(
    client: mqtt.Client,
    site: str,
    line: str,
    bundle: bytes,
    *,
    timeout: float = PUBLISH_TIMEOUT_S,
) -> str:
    """Publish ``bundle`` retained at QoS 1 on its model topic and wait until the broker
    acknowledged it; returns the topic. ``client`` is connected with its loop running
    (:func:`sqems.ingestion.service.mqtt_publisher`). :class:`BrokerUnavailable` if the
    broker did not take it within ``timeout`` seconds."""
    meta = _manifest_of(bundle)
    topic = model_topic(site, line, str(meta.get("kind")))
    info = client.publish(topic, bundle, qos=1, retain=True)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise BrokerUnavailable(
            f"the broker did not take model {meta.get('version')} on {topic}: "
            f"{mqtt.error_string(info.rc)}"
        )
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError) as err:
        raise BrokerUnavailable(
            f"publishing model {meta.get('version')} on {topic}: {err}"
        ) from None
    if not info.is_published():
        raise BrokerUnavailable(
            f"the broker did not acknowledge model {meta.get('version')} on {topic} within "
            f"{timeout:g} s"
        )
    return topic
