"""Binary glTF 2.0 (GLB) of tessellated IFC products, and reading back what it holds.

One glTF node and mesh per product, named by its GlobalId, with
``extras = {globalId, ifcClass, name, storey}`` so a viewer can tell what was clicked;
the asset's ``extras`` hold what the writer was told to keep with the file (the BIM
import keeps the limits it tessellated under and the products it left out).
Vertices stay in IFC's world coordinates (metres, z up) and a root node turns them to
glTF's y up, so every position accessor's ``min``/``max`` is the product's bounding box
as the model states it. Triangles are written unshared, each corner with its face's
normal: building elements are mostly flat faces with sharp edges, which shared
vertices would shade round.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sqems.errors import ValidationFailed
from sqems.viewer.ifc import Mesh

_GLB_MAGIC = 0x46546C67  # "glTF"
_JSON = 0x4E4F534A
_BIN = 0x004E4942
_FLOAT = 5126
_ARRAY_BUFFER = 34962
_Z_UP_TO_Y_UP = [-math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)]  # -90 degrees about x
DEFAULT_COLOUR = (0.72, 0.74, 0.78, 1.0)


@dataclass(frozen=True, slots=True)
class GlbElement:
    """What a GLB says of one product (read back without its triangles)."""

    global_id: str
    ifc_class: str
    name: str | None
    storey: str | None
    lower: tuple[float, float, float]
    upper: tuple[float, float, float]
    triangles: int


def write_glb(
    meshes: Sequence[Mesh],
    path: Path,
    *,
    name: str = "model",
    extras: Mapping[str, Any] | None = None,
) -> int:
    """Write ``meshes`` to ``path`` as one GLB file, with ``extras`` (JSON) on its
    asset; returns its size in bytes."""
    blob = bytearray()
    views: list[dict[str, Any]] = []
    accessors: list[dict[str, Any]] = []
    materials: list[dict[str, Any]] = []
    material_of: dict[tuple[float, ...], int] = {}
    gltf_meshes: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = [{"name": name, "rotation": _Z_UP_TO_Y_UP, "children": []}]

    def add_view(data: bytes) -> int:
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data),
                      "target": _ARRAY_BUFFER})  # fmt: skip
        blob.extend(data)
        blob.extend(b"\0" * (-len(blob) % 4))
        return len(views) - 1

    for mesh in meshes:
        if mesh.triangles == 0:
            continue
        corners = mesh.vertices[mesh.faces.reshape(-1)].astype(np.float32)
        a, b, c = (corners[i::3].astype(np.float64) for i in range(3))
        normal = np.cross(b - a, c - a)
        length = np.linalg.norm(normal, axis=1, keepdims=True)
        normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
        normals = np.repeat(normal, 3, axis=0).astype(np.float32)
        position = len(accessors)
        accessors.append({
            "bufferView": add_view(corners.tobytes()),
            "componentType": _FLOAT,
            "count": len(corners),
            "type": "VEC3",
            "min": [float(v) for v in corners.min(axis=0)],
            "max": [float(v) for v in corners.max(axis=0)],
        })  # fmt: skip
        accessors.append({"bufferView": add_view(normals.tobytes()), "componentType": _FLOAT,
                          "count": len(normals), "type": "VEC3"})  # fmt: skip
        colour = tuple(round(float(v), 4) for v in (mesh.colour or DEFAULT_COLOUR))
        if colour not in material_of:
            material_of[colour] = len(materials)
            material: dict[str, Any] = {
                "pbrMetallicRoughness": {"baseColorFactor": list(colour), "metallicFactor": 0.0,
                                         "roughnessFactor": 0.85},
                "doubleSided": True,
            }  # fmt: skip
            if colour[3] < 1.0:
                material["alphaMode"] = "BLEND"
            materials.append(material)
        gltf_meshes.append({
            "name": mesh.global_id,
            "primitives": [{"attributes": {"POSITION": position, "NORMAL": position + 1},
                            "material": material_of[colour]}],
        })  # fmt: skip
        nodes[0]["children"].append(len(nodes))
        nodes.append({
            "name": mesh.global_id,
            "mesh": len(gltf_meshes) - 1,
            "extras": {"globalId": mesh.global_id, "ifcClass": mesh.ifc_class,
                       "name": mesh.name, "storey": mesh.storey,
                       "triangles": mesh.triangles},
        })  # fmt: skip

    asset: dict[str, Any] = {"version": "2.0", "generator": "SQEMS"}
    if extras:
        asset["extras"] = dict(extras)
    document: dict[str, Any] = {
        "asset": asset,
        "scene": 0,
        "scenes": [{"name": name, "nodes": [0]}],
        "nodes": nodes,
    }
    if gltf_meshes:
        document |= {"meshes": gltf_meshes, "materials": materials, "accessors": accessors,
                     "bufferViews": views, "buffers": [{"byteLength": len(blob)}]}  # fmt: skip
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), _JSON) + text
    if blob:
        chunks += struct.pack("<II", len(blob), _BIN) + bytes(blob)
    total = 12 + len(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_bytes(struct.pack("<III", _GLB_MAGIC, 2, total) + chunks)
    partial.replace(path)  # a reader never sees half a file
    return total


def read_document(path: Path) -> dict[str, Any]:
    """The JSON document of a GLB file (its binary chunk is not read)."""
    with path.open("rb") as f:
        head = f.read(20)
        if len(head) < 20:
            raise ValidationFailed(f"{path.name} is too short to be a GLB file")
        magic, version, total = struct.unpack_from("<III", head)
        if magic != _GLB_MAGIC or version != 2 or total != path.stat().st_size:
            raise ValidationFailed(f"{path.name} is not a glTF 2.0 binary file")
        length, kind = struct.unpack_from("<II", head, 12)
        if kind != _JSON or length > total - 20:
            raise ValidationFailed(f"{path.name}: the first GLB chunk is not JSON")
        text = f.read(length)
    try:
        document: dict[str, Any] = json.loads(text)
    except ValueError as exc:
        raise ValidationFailed(f"{path.name}: its JSON chunk does not parse ({exc})") from None
    return document


def read_extras(path: Path) -> dict[str, Any]:
    """What :func:`write_glb` was told to keep with the file (empty if nothing)."""
    extras: dict[str, Any] = read_document(path)["asset"].get("extras", {})
    return extras


def read_elements(path: Path) -> list[GlbElement]:
    """The products of a GLB written by :func:`write_glb`, in its order."""
    document = read_document(path)
    accessors = document.get("accessors", [])
    meshes = document.get("meshes", [])
    found = []
    for node in document["nodes"]:
        extras = node.get("extras")
        if not extras or "mesh" not in node:
            continue
        position = accessors[meshes[node["mesh"]]["primitives"][0]["attributes"]["POSITION"]]
        found.append(
            GlbElement(
                global_id=extras["globalId"],
                ifc_class=extras["ifcClass"],
                name=extras.get("name"),
                storey=extras.get("storey"),
                lower=tuple(position["min"]),
                upper=tuple(position["max"]),
                triangles=int(extras["triangles"]),
            )
        )
    return found
