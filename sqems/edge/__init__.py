"""The edge tier: models that travel to a line and judge there, network or not.

:mod:`sqems.edge.portable` holds the signed, portable model bundles (ONNX graphs with
an Ed25519-signed manifest), their keys and the topic they travel on.
"""

from sqems.analysis.exchange import FORMAT, KINDS, export_onnx, manifest
from sqems.edge.portable import (
    PortableModel,
    batch_risk_portable,
    canonical_json,
    generate_keys,
    key_id,
    load_private_key,
    load_public_key,
    model_topic,
    newer,
    publish,
    sign,
    verify,
)

__all__ = [
    "FORMAT",
    "KINDS",
    "PortableModel",
    "batch_risk_portable",
    "canonical_json",
    "export_onnx",
    "generate_keys",
    "key_id",
    "load_private_key",
    "load_public_key",
    "manifest",
    "model_topic",
    "newer",
    "publish",
    "sign",
    "verify",
]
