"""Binary glTF 2.0 (GLB) of tessellated IFC products, and reading back what it holds.

One glTF node and mesh per product, named by its GlobalId, with
``extras = {globalId, ifcClass, name, storey, triangles, materials, attributes}`` so a
viewer can tell what was clicked (``materials``: how many distinct materials the
product uses; ``attributes``: its Tag, Description and ObjectType where set, what the
machine link rule reads). A product's mesh has one primitive per material: a window's
opaque frame and its transparent glass are two primitives of one mesh (three.js loads
them as a group of meshes under the product's node). The asset's ``extras`` hold the
layout's ``format`` (:data:`FORMAT`) and what the writer was told to keep with the file
(the BIM import keeps the model's name and schema, the limits it tessellated under and
the products it left out).

Vertices stay in IFC's world coordinates (metres, z up) and a root node turns them to
glTF's y up, so every position accessor's ``min``/``max`` is the product's bounding box
as the model states it. Geometry is indexed: a product's vertices are shared by
position across its faces and materials (one POSITION accessor per product, one index
accessor per primitive, unsigned 16-bit indices where they fit) and no normals are
written. glTF 2.0 says a client computes flat normals for a primitive without NORMAL
(three.js's GLTFLoader turns on flat shading), which is how building elements should
look: flat faces and sharp edges, not the rounded shading that normals averaged over
shared vertices would give. This keeps a GLB at a fraction of its IFC's size, where
unshared corners with a normal each made it several times larger.

Colours are the IFC styles' (display values, sRGB); glTF's ``baseColorFactor`` is
linear, so they are converted and a viewer shows the style's colour itself. A colour
with opacity under 1 is drawn blended (``alphaMode`` BLEND).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sqems.errors import ValidationFailed
from sqems.viewer.ifc import Colour, Mesh

FORMAT = 2
"""The layout version in the asset's extras: 2 is indexed, per-material primitives and
element attributes; a file without it (format 1, unshared corners with normals, one
material per product) is an older cache entry to write again."""
_GLB_MAGIC = 0x46546C67  # "glTF"
_JSON = 0x4E4F534A
_BIN = 0x004E4942
_FLOAT = 5126
_UNSIGNED_SHORT = 5123
_UNSIGNED_INT = 5125
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_Z_UP_TO_Y_UP = [-math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)]  # -90 degrees about x
DEFAULT_COLOUR = (0.72, 0.74, 0.78, 1.0)
"""The colour of a face the model gives no style."""


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
    materials: int = 1
    attributes: Mapping[str, str] = field(default_factory=dict)


def linear(colour: Colour) -> Colour:
    """An sRGB display colour as glTF's linear ``baseColorFactor`` (opacity unchanged).

    >>> [round(c, 4) for c in linear((1.0, 0.5, 0.0, 0.1))]
    [1.0, 0.214, 0.0, 0.1]
    """
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in colour[:3])
    return (r, g, b, colour[3])


def indexed(
    vertices: npt.NDArray[np.float32], faces: npt.NDArray[np.uint32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint32]]:
    """The vertices the faces use, each position once, and the faces renumbered."""
    points = np.ascontiguousarray(vertices, dtype=np.float32)
    unique, inverse = np.unique(points, axis=0, return_inverse=True)
    renumbered = inverse.reshape(-1)[faces.astype(np.intp)]
    used = np.zeros(len(unique), bool)
    used[renumbered] = True
    if not used.all():  # a vertex no face uses would widen the bounding box
        keep = np.cumsum(used) - 1
        unique, renumbered = unique[used], keep[renumbered]
    return unique.astype(np.float32), renumbered.astype(np.uint32)


def write_glb(
    meshes: Sequence[Mesh],
    path: Path,
    *,
    name: str = "model",
    extras: Mapping[str, Any] | None = None,
) -> int:
    """Write the products of ``meshes`` that have triangles to ``path`` as one GLB
    file, with ``extras`` (JSON) and the layout's :data:`FORMAT` on its asset; returns
    its size in bytes."""
    vertex_data = bytearray()
    index_data = bytearray()
    accessors: list[dict[str, Any]] = []
    materials: list[dict[str, Any]] = []
    material_of: dict[tuple[float, ...], int] = {}
    gltf_meshes: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = [{"name": name, "rotation": _Z_UP_TO_Y_UP, "children": []}]

    def material(colour: Colour | None) -> int:
        factor = tuple(round(float(v), 4) for v in linear(colour or DEFAULT_COLOUR))
        if factor not in material_of:
            material_of[factor] = len(materials)
            entry: dict[str, Any] = {
                "pbrMetallicRoughness": {"baseColorFactor": list(factor), "metallicFactor": 0.0,
                                         "roughnessFactor": 0.85},
                "doubleSided": True,
            }  # fmt: skip
            if factor[3] < 1.0:
                entry["alphaMode"] = "BLEND"
            materials.append(entry)
        return material_of[factor]

    for mesh in meshes:
        if mesh.triangles == 0:
            continue
        points, faces = indexed(mesh.vertices, mesh.faces)
        position = len(accessors)
        accessors.append({
            "bufferView": 0,
            "byteOffset": len(vertex_data),
            "componentType": _FLOAT,
            "count": len(points),
            "type": "VEC3",
            "min": [float(v) for v in points.min(axis=0)],
            "max": [float(v) for v in points.max(axis=0)],
        })  # fmt: skip
        vertex_data.extend(points.tobytes())
        small = len(points) < 0xFFFF  # 65535 itself is reserved (primitive restart)
        primitives: dict[int, list[npt.NDArray[np.uint32]]] = {}
        for colour, chosen in mesh.parts():
            primitives.setdefault(material(colour), []).append(faces[chosen])
        gltf_primitives = []
        for used, groups in primitives.items():
            corners = np.concatenate(groups).reshape(-1).astype(np.uint16 if small else np.uint32)
            gltf_primitives.append({"attributes": {"POSITION": position},
                                    "indices": len(accessors), "material": used})  # fmt: skip
            accessors.append({"bufferView": 1, "byteOffset": len(index_data),
                              "componentType": _UNSIGNED_SHORT if small else _UNSIGNED_INT,
                              "count": len(corners), "type": "SCALAR"})  # fmt: skip
            index_data.extend(corners.tobytes())
            index_data.extend(b"\0" * (-len(index_data) % 4))  # the next accessor's alignment
        gltf_meshes.append({"name": mesh.global_id, "primitives": gltf_primitives})
        nodes[0]["children"].append(len(nodes))
        node_extras: dict[str, Any] = {
            "globalId": mesh.global_id, "ifcClass": mesh.ifc_class, "name": mesh.name,
            "storey": mesh.storey, "triangles": mesh.triangles,
            "materials": len(gltf_primitives),
        }  # fmt: skip
        if mesh.attributes:
            node_extras["attributes"] = dict(mesh.attributes)
        nodes.append({"name": mesh.global_id, "mesh": len(gltf_meshes) - 1, "extras": node_extras})

    asset: dict[str, Any] = {"version": "2.0", "generator": "SQEMS",
                             "extras": {**(extras or {}), "format": FORMAT}}  # fmt: skip
    document: dict[str, Any] = {
        "asset": asset,
        "scene": 0,
        "scenes": [{"name": name, "nodes": [0]}],
        "nodes": nodes,
    }
    blob = bytes(vertex_data) + bytes(index_data)
    if gltf_meshes:
        views = [{"buffer": 0, "byteOffset": 0, "byteLength": len(vertex_data),
                  "target": _ARRAY_BUFFER},
                 {"buffer": 0, "byteOffset": len(vertex_data), "byteLength": len(index_data),
                  "target": _ELEMENT_ARRAY_BUFFER}]  # fmt: skip
        document |= {"meshes": gltf_meshes, "materials": materials, "accessors": accessors,
                     "bufferViews": views, "buffers": [{"byteLength": len(blob)}]}  # fmt: skip
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), _JSON) + text
    if blob:
        chunks += struct.pack("<II", len(blob), _BIN) + blob
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
    """The products of a GLB written by :func:`write_glb`, in its order (only its JSON
    chunk is read)."""
    return elements_of(read_document(path), path.name)


def elements_of(document: Mapping[str, Any], name: str) -> list[GlbElement]:
    """The products a GLB's JSON ``document`` describes (the file called ``name``)."""
    accessors = document.get("accessors", [])
    meshes = document.get("meshes", [])
    found = []
    try:
        for node in document["nodes"]:
            extras = node.get("extras")
            if not extras or "mesh" not in node:
                continue
            primitives = meshes[node["mesh"]]["primitives"]
            position = accessors[primitives[0]["attributes"]["POSITION"]]
            found.append(
                GlbElement(
                    global_id=str(extras["globalId"]),
                    ifc_class=str(extras["ifcClass"]),
                    name=extras.get("name"),
                    storey=extras.get("storey"),
                    lower=tuple(position["min"]),
                    upper=tuple(position["max"]),
                    triangles=int(extras["triangles"]),
                    materials=int(extras.get("materials", len(primitives))),
                    attributes=dict(extras.get("attributes") or {}),
                )
            )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValidationFailed(f"{name} does not describe its products ({exc!r})") from None
    return found
