"""Scenes in Jupyter, drawn with pythreejs.

``line_widget(scene)`` turns a :class:`~sqems.viewer.scene.Scene` into a pythreejs
renderer with orbit controls: one box per machine in its status colour, named by its
uid, on the floor. ``bim_widget(meshes)`` draws tessellated IFC products
(:func:`sqems.viewer.ifc.tessellate`) the same way. Graph and IFC coordinates have z
up; three.js has y up, so points go (x, y, z) -> (x, z, -y).

pythreejs is imported when a widget is made: the rest of SQEMS does not need Jupyter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sqems.viewer.gltf import DEFAULT_COLOUR
from sqems.viewer.ifc import Mesh
from sqems.viewer.scene import Scene


def _three() -> Any:
    import pythreejs  # noqa: PLC0415 - for notebooks only

    return pythreejs


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(min(max(c, 0.0), 1.0) * 255):02x}" for c in rgb[:3])


def _stage(three: Any, children: list[Any], centre: np.ndarray, reach: float,
           width: int, height: int) -> Any:  # fmt: skip
    camera = three.PerspectiveCamera(
        position=[float(centre[0] + reach), float(centre[1] + reach * 0.9),
                  float(centre[2] + reach * 1.2)],
        up=[0, 1, 0], aspect=width / height, near=reach / 1000, far=reach * 20,
    )  # fmt: skip
    lights = [
        three.HemisphereLight(skyColor="#ffffff", groundColor="#8d939b", intensity=1.0),
        three.DirectionalLight(color="#ffffff", position=[30, 60, 20], intensity=0.8),
    ]
    world = three.Scene(children=[*children, *lights, camera], background="#e9edf2")
    controls = three.OrbitControls(controlling=camera, target=[float(v) for v in centre])
    return three.Renderer(camera=camera, scene=world, controls=[controls],
                          width=width, height=height, antialias=True)  # fmt: skip


def line_widget(scene: Scene, *, width: int = 900, height: int = 500) -> Any:
    """A pythreejs renderer of ``scene``; its boxes are named by machine uid."""
    three = _three()
    boxes = []
    for o in scene.objects:
        length, depth, tall = o.size
        box = three.Mesh(
            three.BoxGeometry(width=length, height=tall, depth=depth),
            three.MeshStandardMaterial(color=o.overlay.colour, roughness=0.7),
            position=[o.position[0], o.position[2] + tall / 2.0, -o.position[1]],
            rotation=[0.0, math.radians(o.rotation_deg), 0.0, "XYZ"],
            name=o.uid,
        )
        boxes.append(box)
    x0, y0, x1, y1 = scene.floor
    floor = three.Mesh(
        three.PlaneGeometry(width=x1 - x0, height=y1 - y0),
        three.MeshStandardMaterial(color="#cfd6df"),
        position=[(x0 + x1) / 2.0, 0.0, -(y0 + y1) / 2.0],
        rotation=[-math.pi / 2.0, 0.0, 0.0, "XYZ"],
        name="floor",
    )
    centre = np.array([(x0 + x1) / 2.0, 0.0, -(y0 + y1) / 2.0])
    reach = max(x1 - x0, y1 - y0) * 0.8
    return _stage(three, [floor, *boxes], centre, reach, width, height)


def bim_widget(meshes: Sequence[Mesh], *, width: int = 900, height: int = 500) -> Any:
    """A pythreejs renderer of tessellated IFC products, named by GlobalId."""
    three = _three()
    children = []
    lower = np.full(3, np.inf)
    upper = np.full(3, -np.inf)
    for mesh in meshes:
        if mesh.triangles == 0:
            continue
        v = mesh.vertices.astype(np.float32)
        turned = np.column_stack([v[:, 0], v[:, 2], -v[:, 1]]).astype(np.float32)
        lower, upper = np.minimum(lower, turned.min(axis=0)), np.maximum(upper, turned.max(axis=0))
        geometry = three.BufferGeometry(attributes={
            "position": three.BufferAttribute(turned, normalized=False),
            "index": three.BufferAttribute(mesh.faces.reshape(-1).astype(np.uint32),
                                           normalized=False),
        })  # fmt: skip
        geometry.exec_three_obj_method("computeVertexNormals")
        colour = mesh.colour or DEFAULT_COLOUR
        material = three.MeshStandardMaterial(
            color=_hex(colour), opacity=colour[3], transparent=colour[3] < 1.0, side="DoubleSide"
        )
        children.append(three.Mesh(geometry, material, name=mesh.global_id))
    if not children:
        lower = upper = np.zeros(3)
    centre = (lower + upper) / 2.0
    reach = float(np.max(upper - lower)) * 0.8 or 10.0
    return _stage(three, children, centre, reach, width, height)
