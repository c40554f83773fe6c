"""A synthetic IFC model of the plant's hall, written with ifcopenshell's own API.

The hall has a floor slab, four walls, a grid of columns and one
``IfcBuildingElementProxy`` per machine, placed and sized as the graph has it, with
the machine's uid as its ``Tag`` and in ``Pset_SQEMS.MachineUid``. ``filler`` adds as
many roof beams as asked, for models of realistic size (the viewer benchmark's 5,000
elements); ``partitions`` adds office partition walls, each with a door and a window
cut out of it (``IfcOpeningElement`` voids, so tessellation runs boolean operations,
as it does on most real building models). Tests, the demo and the benchmark build
their IFC files with it, in IFC4 or IFC2X3.

GlobalIds are stable: they derive from each element's role in the hall (a machine's
from its uid), so a hall written again for the same machines has the same elements and
importing it updates them rather than adding new ones.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sqems.graph_model.nodes import Machine

_IDS = uuid.UUID("6c1a7b1e-5d0f-4e0a-9a55-0e5c2f7d9b31")
HALL_MARGIN_M = 6.0
WALL_HEIGHT_M = 8.0
MACHINE_COLOUR = (0.16, 0.42, 0.75)


def write_building_ifc(
    path: Path,
    machines: Sequence[Machine],
    *,
    schema: str = "IFC4",
    filler: int = 0,
    partitions: int = 0,
    name: str = "Main plant hall",
) -> Path:
    """Write the hall around ``machines`` to ``path``; returns ``path``."""
    import ifcopenshell  # noqa: PLC0415 - a large native module, loaded when used
    import ifcopenshell.api.aggregate  # noqa: PLC0415
    import ifcopenshell.api.context  # noqa: PLC0415
    import ifcopenshell.api.feature  # noqa: PLC0415
    import ifcopenshell.api.geometry  # noqa: PLC0415
    import ifcopenshell.api.pset  # noqa: PLC0415
    import ifcopenshell.api.root  # noqa: PLC0415
    import ifcopenshell.api.spatial  # noqa: PLC0415
    import ifcopenshell.api.style  # noqa: PLC0415
    import ifcopenshell.api.unit  # noqa: PLC0415
    import ifcopenshell.guid  # noqa: PLC0415

    api = ifcopenshell.api
    model = ifcopenshell.file(schema=schema)  # type: ignore[arg-type]  # checked by ifcopenshell

    def stable_id(key: str) -> str:
        return str(ifcopenshell.guid.compress(uuid.uuid5(_IDS, f"{name}|{key}").hex))

    named: set[int] = set()

    def rooted(ifc_class: str, label: str, key: str | None = None) -> Any:
        entity = api.root.create_entity(model, ifc_class=ifc_class, name=label)
        entity.GlobalId = stable_id(f"{ifc_class}|{key or label}")
        named.add(entity.id())
        return entity

    if schema == "IFC2X3":
        _owner_history(model)
    project = rooted("IfcProject", name)
    api.unit.assign_unit(model)
    context = api.context.add_context(model, context_type="Model")
    body = api.context.add_context(model, context_type="Model", context_identifier="Body",
                                   target_view="MODEL_VIEW", parent=context)  # fmt: skip
    site = rooted("IfcSite", "Site")
    building = rooted("IfcBuilding", "Hall A")
    storey = rooted("IfcBuildingStorey", "Ground floor")
    api.aggregate.assign_object(model, relating_object=project, products=[site])
    api.aggregate.assign_object(model, relating_object=site, products=[building])
    api.aggregate.assign_object(model, relating_object=building, products=[storey])
    style = api.style.add_style(model, name="machine")
    api.style.add_surface_style(
        model,
        style=style,
        ifc_class="IfcSurfaceStyleShading",
        attributes={"SurfaceColour": {"Name": None, "Red": MACHINE_COLOUR[0],
                                      "Green": MACHINE_COLOUR[1], "Blue": MACHINE_COLOUR[2]}},
    )  # fmt: skip

    placed: list[Any] = []

    def box(ifc_class: str, label: str, centre: Sequence[float], size: Sequence[float],
            rotation_deg: float = 0.0, z: float = 0.0, key: str | None = None) -> Any:  # fmt: skip
        element = rooted(ifc_class, label, key)
        length, width, height = size
        representation = api.geometry.add_wall_representation(
            model, context=body, length=length, height=height, thickness=width
        )
        api.geometry.assign_representation(model, product=element, representation=representation)
        turn = math.radians(rotation_deg)
        c, s = math.cos(turn), math.sin(turn)
        matrix = np.eye(4)
        matrix[:2, :2] = [[c, -s], [s, c]]
        # the box runs from its placement's origin along +x and +y: put its centre on ``centre``
        matrix[:3, 3] = [centre[0] - (c * length - s * width) / 2.0,
                         centre[1] - (s * length + c * width) / 2.0, z]  # fmt: skip
        api.geometry.edit_object_placement(model, product=element, matrix=matrix)
        placed.append(element)
        return element, representation

    for m in machines:
        size = (m.length_m, m.width_m, m.height_m)
        element, representation = box(
            "IfcBuildingElementProxy", m.name, (m.x_m, m.y_m), size, m.rotation_deg, key=m.uid
        )
        element.Tag = m.uid
        pset = api.pset.add_pset(model, product=element, name="Pset_SQEMS")
        api.pset.edit_pset(model, pset=pset, properties={"MachineUid": m.uid, "Kind": m.kind})
        api.style.assign_representation_styles(
            model, shape_representation=representation, styles=[style]
        )

    xs = [m.x_m for m in machines] or [0.0]
    ys = [m.y_m for m in machines] or [0.0]
    x0, x1 = min(xs) - HALL_MARGIN_M, max(xs) + HALL_MARGIN_M
    y0, y1 = min(ys) - HALL_MARGIN_M, max(ys) + HALL_MARGIN_M
    width, depth = x1 - x0, y1 - y0
    box("IfcSlab", "Floor slab", ((x0 + x1) / 2, (y0 + y1) / 2), (width, depth, 0.3), z=-0.3)
    for label, centre, size in (
        ("South wall", ((x0 + x1) / 2, y0 - 0.15), (width + 0.6, 0.3, WALL_HEIGHT_M)),
        ("North wall", ((x0 + x1) / 2, y1 + 0.15), (width + 0.6, 0.3, WALL_HEIGHT_M)),
        ("West wall", (x0 - 0.15, (y0 + y1) / 2), (0.3, depth, WALL_HEIGHT_M)),
        ("East wall", (x1 + 0.15, (y0 + y1) / 2), (0.3, depth, WALL_HEIGHT_M)),
    ):
        box("IfcWall", label, centre, size)
    column = 0
    for cx in np.arange(x0, x1 + 1e-9, 12.0):
        for cy in (y0, y1):
            column += 1
            box("IfcColumn", f"Column {column}", (float(cx), cy), (0.4, 0.4, WALL_HEIGHT_M))
    for i in range(filler):
        # roof purlins in rows over the hall, 1.5 m apart, each a short beam
        row, seat = divmod(i, max(1, int(width // 2.0)))
        box("IfcBeam", f"Purlin {i + 1}", (x0 + 1.0 + 2.0 * seat, y0 + 0.75 + 1.5 * (row % 40)),
            (1.8, 0.12, 0.2), z=WALL_HEIGHT_M + 0.25 * (row // 40))  # fmt: skip
    for i in range(partitions):
        # a mezzanine of office cells south of the hall: 4 m walls, 3 m apart
        row, seat = divmod(i, 25)
        at = (x0 + 2.0 + 4.2 * seat, y0 - 4.0 - 3.0 * row)
        wall, _ = box("IfcWall", f"Partition {i + 1}", at, (4.0, 0.12, 2.8))
        for k, (offset, sill, opening) in enumerate(((-1.1, 0.0, (0.9, 0.5, 2.1)),
                                                     (0.9, 0.9, (1.2, 0.5, 1.2)))):  # fmt: skip
            cut, _ = box("IfcOpeningElement", f"Partition {i + 1} opening {k + 1}",
                         (at[0] + offset, at[1]), opening, z=sill)  # fmt: skip
            placed.remove(cut)  # an opening is not contained in the storey: its wall is
            api.feature.add_feature(model, feature=cut, element=wall)
    api.spatial.assign_container(model, relating_structure=storey, products=placed)
    # relationships, property sets and owner data get their ids in the order they were made
    for number, entity in enumerate(model.by_type("IfcRoot")):
        if entity.id() not in named:
            entity.GlobalId = stable_id(f"{entity.is_a()}|{number}")  # type: ignore[no-untyped-call]
    path.parent.mkdir(parents=True, exist_ok=True)
    model.write(str(path))
    return path


def _owner_history(model: Any) -> None:
    """IFC2X3 requires an owner history on every rooted entity: who made it, with what."""
    import ifcopenshell.api.owner  # noqa: PLC0415
    import ifcopenshell.api.owner.settings  # noqa: PLC0415

    api = ifcopenshell.api
    person = api.owner.add_person(model, identification="sqems", family_name="SQEMS")
    organisation = api.owner.add_organisation(model, identification="SQEMS", name="SQEMS")
    user = api.owner.add_person_and_organisation(model, person=person, organisation=organisation)
    application = api.owner.add_application(model, application_developer=organisation,
                                            version="1", application_full_name="SQEMS",
                                            application_identifier="sqems")  # fmt: skip
    # ifcopenshell asks these hooks for the current user and application of a file
    hooks: Any = api.owner.settings
    hooks.get_user = lambda file: user if file is model else _first(file, "User")
    hooks.get_application = lambda file: (
        application if file is model else _first(file, "Application")
    )


def _first(file: Any, kind: str) -> Any:
    found = file.by_type("IfcPersonAndOrganization" if kind == "User" else "IfcApplication")
    return found[0] if found else None
