"""The viewer's domain: IFC files read and refused, tessellation serial and parallel,
binary glTF, BIM import and links to machines, as-built surveys, and line scenes with
their status overlay, on every graph backend.

The IFC files are written by ifcopenshell's own API (sqems.datasets.building)."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.building import write_building_ifc
from sqems.datasets.files import plant_sections
from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model import GraphStore
from sqems.graph_model.embedded import EmbeddedGraphStore
from sqems.graph_model.nodes import (
    Alarm,
    BimElement,
    BimModel,
    Line,
    Machine,
    ProcessStep,
    Scenario,
    Severity,
    Site,
    WhatIfSession,
)
from sqems.graph_model.store import Direction, Edge
from sqems.settings import Settings
from sqems.viewer import LinkRule, gltf, import_bim, line_scene, survey
from sqems.viewer.bim import limits_of
from sqems.viewer.ifc import (
    LIBRARIES,
    Colour,
    Limits,
    Mesh,
    expand,
    read_ifc,
    skipped,
    tessellate,
)
from sqems.viewer.scene import COLOURS, Status

MACHINES = [
    Machine(uid="M-PRESS-1", name="Press 1", kind="press", x_m=0.0, y_m=0.0,
            length_m=4.0, width_m=2.0, height_m=2.5),
    Machine(uid="M-PRESS-2", name="Press 2", kind="press", x_m=0.0, y_m=3.0,
            length_m=4.0, width_m=2.0, height_m=2.5),
    Machine(uid="M-WELD-1", name="Welder", kind="welder", x_m=7.0, y_m=1.5, rotation_deg=90.0,
            length_m=3.0, width_m=1.0, height_m=1.8),
]  # fmt: skip


def small_line(store: GraphStore) -> None:
    """A site, a line of three machines at two steps; no production yet."""
    with store.transaction() as batch:
        batch.add_nodes([
            Site(uid="SITE-X", name="Plant X"),
            Line(uid="LINE-X", name="Line X"),
            ProcessStep(uid="STEP-PRESS", name="Press", sequence=1),
            ProcessStep(uid="STEP-WELD", name="Weld", sequence=2),
            *MACHINES,
        ])  # fmt: skip
        batch.add_edges([Edge("PART_OF", "LINE-X", "SITE-X")])
        batch.add_edges(Edge("PART_OF", m.uid, "LINE-X") for m in MACHINES)
        batch.add_edges(
            Edge("CAN_PERFORM", m.uid, "STEP-WELD" if "WELD" in m.uid else "STEP-PRESS")
            for m in MACHINES
        )


@pytest.fixture(scope="module")
def hall(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_building_ifc(tmp_path_factory.mktemp("ifc") / "hall.ifc", MACHINES, filler=7)


# --- reading and tessellating IFC -------------------------------------------------------------


@pytest.mark.parametrize("schema", ["IFC4", "IFC2X3"])
def test_every_product_tessellates_with_its_id_class_storey_and_place(
    schema: str, tmp_path: Path
) -> None:
    model = read_ifc(write_building_ifc(tmp_path / "hall.ifc", MACHINES, schema=schema))
    assert model.schema == schema and model.name == "Main plant hall"
    meshes = tessellate(model, cores=1)
    assert len(meshes) == model.products() and skipped(model, meshes) == {}
    # a slab, four walls and the columns besides the machines
    classes = {m.ifc_class for m in meshes}
    assert {"IfcSlab", "IfcWall", "IfcColumn", "IfcBuildingElementProxy"} <= classes
    tagged = {p.Tag: p.GlobalId for p in model.file.by_type("IfcBuildingElementProxy")}
    by_id = {m.global_id: m for m in meshes}
    for machine in MACHINES:
        mesh = by_id[tagged[machine.uid]]
        assert (mesh.name, mesh.storey) == (machine.name, "Ground floor")
        assert mesh.triangles == 12  # a box
        turned = machine.rotation_deg % 180 == 90
        footprint = (machine.length_m, machine.width_m)[:: -1 if turned else 1]
        np.testing.assert_allclose(mesh.size, [*footprint, machine.height_m], atol=1e-4)
        np.testing.assert_allclose(
            mesh.centre, [machine.x_m, machine.y_m, machine.height_m / 2], atol=1e-4
        )
        assert mesh.colour is not None and mesh.colour[:3] == pytest.approx((0.16, 0.42, 0.75))


def test_the_parallel_iterator_gives_what_the_serial_one_gives(hall: Path) -> None:
    model = read_ifc(hall)
    serial, parallel = tessellate(model, cores=1), tessellate(model, cores=2)
    assert [m.global_id for m in serial] == [m.global_id for m in parallel]
    for a, b in zip(serial, parallel, strict=True):
        assert (a.ifc_class, a.triangles) == (b.ifc_class, b.triangles)
        np.testing.assert_allclose(a.lower, b.lower, atol=1e-6)
        np.testing.assert_allclose(a.upper, b.upper, atol=1e-6)


def test_the_geometry_kernels_agree_and_openings_cut_their_walls(tmp_path: Path) -> None:
    path = write_building_ifc(tmp_path / "offices.ifc", MACHINES[:1], partitions=4)
    model = read_ifc(path)
    assert len(model.file.by_type("IfcOpeningElement")) == 8
    results = {lib: tessellate(model, library=lib) for lib in LIBRARIES}
    reference = results[LIBRARIES[0]]
    assert len(reference) == model.products()  # the openings are voids, not drawn
    partitions = [m for m in reference if (m.name or "").startswith("Partition")]
    assert len(partitions) == 4 and all(m.triangles > 12 for m in partitions)  # not a plain box
    for lib, meshes in results.items():
        assert [(m.global_id, m.triangles) for m in meshes] == [
            (m.global_id, m.triangles) for m in reference
        ], lib
        for a, b in zip(meshes, reference, strict=True):
            np.testing.assert_allclose(a.lower, b.lower, atol=1e-5)
            np.testing.assert_allclose(a.upper, b.upper, atol=1e-5)
    with pytest.raises(ValidationFailed, match="unknown geometry library 'blender'"):
        tessellate(model, library="blender")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "is not an IFC file: it does not start with 'ISO-10303-21;'"),
        (b"PK\x03\x04 zipped", "is not an IFC file"),
        (b"ISO-10303-21;\nHEADER;\nFILE_SCHEMA(('IFC4'));\nENDSEC;\nDATA;\n#1=IFCWALL(",
         "is not a readable IFC model"),
        (b"ISO-10303-21;\nHEADER;\nFILE_DESCRIPTION((''),'2;1');\nFILE_NAME('','',(''),(''),"
         b"'','','');\nFILE_SCHEMA(('CONFIG_CONTROL_DESIGN'));\nENDSEC;\nDATA;\nENDSEC;\n"
         b"END-ISO-10303-21;\n",
         "uses schema CONFIG_CONTROL_DESIGN; SQEMS reads IFC2X3, IFC4, IFC4X3"),
        (b"ISO-10303-21;\nHEADER;\nENDSEC;\nDATA;\nENDSEC;\n",
         "not a readable IFC model: its header names no FILE_SCHEMA"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_an_ifc_model_is_refused_with_the_reason(
    content: bytes, reason: str, tmp_path: Path
) -> None:
    path = tmp_path / "model.ifc"
    path.write_bytes(content)
    with pytest.raises(ValidationFailed, match=reason):
        read_ifc(path)


def test_an_oversized_or_missing_file_is_refused_before_it_is_parsed(
    hall: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValidationFailed, match=r"hall.ifc is 0\.\d MiB, over the limit of 0 MiB"):
        read_ifc(hall, max_bytes=1024)
    with pytest.raises(ValidationFailed, match=r"cannot read IFC file nothing\.ifc"):
        read_ifc(tmp_path / "nothing.ifc")


# --- what a model may cost ---------------------------------------------------------------------


def write_mapped_ifc(path: Path, levels: int, *, copies: int = 4, products: int = 1) -> Path:
    """An IFC4 file of ``products`` proxies, each placing a map that places the one below
    it ``copies`` times, ``levels`` deep, down to a 10 cm box (``copies ** levels`` boxes
    per proxy); and one plain wall. Ten levels of four are 8 KB standing for a million
    boxes, 12.6 million triangles."""
    import ifcopenshell  # noqa: PLC0415
    import ifcopenshell.api.aggregate  # noqa: PLC0415
    import ifcopenshell.api.context  # noqa: PLC0415
    import ifcopenshell.api.root  # noqa: PLC0415
    import ifcopenshell.api.spatial  # noqa: PLC0415
    import ifcopenshell.api.unit  # noqa: PLC0415

    f = ifcopenshell.file(schema="IFC4")
    project = ifcopenshell.api.root.create_entity(f, ifc_class="IfcProject", name="Nested")
    ifcopenshell.api.unit.assign_unit(f)
    model = ifcopenshell.api.context.add_context(f, context_type="Model")
    body = ifcopenshell.api.context.add_context(
        f, context_type="Model", context_identifier="Body", target_view="MODEL_VIEW",
        parent=model,
    )  # fmt: skip
    site = ifcopenshell.api.root.create_entity(f, ifc_class="IfcSite", name="Site")
    ifcopenshell.api.aggregate.assign_object(f, products=[site], relating_object=project)
    origin = f.createIfcAxis2Placement3D(f.createIfcCartesianPoint((0.0, 0.0, 0.0)))

    def moved(x: float, y: float) -> object:
        point = f.createIfcCartesianPoint((x, y, 0.0))
        return f.createIfcCartesianTransformationOperator3D(None, None, point, None, None)

    def shape(kind: str, items: list[object]) -> object:
        return f.createIfcShapeRepresentation(body, "Body", kind, items)

    def proxy(ifc_class: str, name: str, items: list[object], kind: str) -> None:
        element = ifcopenshell.api.root.create_entity(f, ifc_class=ifc_class, name=name)
        element.ObjectPlacement = f.createIfcLocalPlacement(None, origin)
        element.Representation = f.createIfcProductDefinitionShape(None, None, [shape(kind, items)])
        ifcopenshell.api.spatial.assign_container(f, products=[element], relating_structure=site)

    area = f.createIfcRectangleProfileDef(
        "AREA", None, f.createIfcAxis2Placement2D(f.createIfcCartesianPoint((0.0, 0.0))), 0.1, 0.1
    )
    up = f.createIfcDirection((0.0, 0.0, 1.0))
    box = f.createIfcExtrudedAreaSolid(area, origin, up, 0.1)
    source = f.createIfcRepresentationMap(origin, shape("SweptSolid", [box]))
    for level in range(levels):
        placed = [f.createIfcMappedItem(source, moved(0.2 * i * 4**level, level))
                  for i in range(copies)]  # fmt: skip
        source = f.createIfcRepresentationMap(origin, shape("MappedRepresentation", placed))
    for n in range(products):
        placed = [f.createIfcMappedItem(source, moved(0, 0))]
        proxy("IfcBuildingElementProxy", f"Nested {n}", placed, "MappedRepresentation")
    wall = f.createIfcExtrudedAreaSolid(area, origin, up, 3.0)
    proxy("IfcWall", "Plain wall", [wall], "SweptSolid")
    f.write(str(path))
    return path


def test_a_million_nested_instances_are_skipped_before_tessellation_in_bounded_memory(
    tmp_path: Path,
) -> None:
    bomb = write_mapped_ifc(tmp_path / "nested.ifc", levels=10)
    assert bomb.stat().st_size < 10_000
    # in a process of its own, to read its peak memory (and cap it, should the caps fail)
    script = """if True:
        import json, sys
        from pathlib import Path
        from sqems.graph_model.embedded import EmbeddedGraphStore
        from sqems.settings import Settings
        from sqems.viewer.bim import import_bim, limits_of
        done = import_bim(EmbeddedGraphStore(None), Path(sys.argv[1]),
                          cache_dir=Path(sys.argv[2]), limits=limits_of(Settings()), cores=1)
        # VmHWM: this program's peak alone (ru_maxrss would count the forked test run)
        status = Path("/proc/self/status").read_text()
        peak = int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM"))) * 1024
        print(json.dumps({"skipped": done.skipped, "elements": done.model.elements,
                          "peak": peak}))
    """
    gib = 1 << 30

    def capped() -> None:
        import resource  # noqa: PLC0415

        resource.setrlimit(resource.RLIMIT_AS, (6 * gib, 6 * gib))

    env = {**os.environ, "SQEMS_BIM_MAX_MAPPING_DEPTH": "8"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(bomb), str(tmp_path / "bim")],
        capture_output=True, text=True, timeout=120, env=env, preexec_fn=capped, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    [why] = found["skipped"]
    assert why.endswith(": its mapped items nest more than 8 deep (SQEMS_BIM_MAX_MAPPING_DEPTH)")
    assert found["elements"] == 1  # the plain wall
    assert found["peak"] < 1 * gib


def test_the_settings_defaults_are_the_limits_defaults() -> None:
    assert limits_of(Settings()) == Limits()


def test_a_product_placing_too_many_solids_is_skipped_and_the_rest_drawn(tmp_path: Path) -> None:
    model = read_ifc(write_mapped_ifc(tmp_path / "nested.ifc", levels=6))
    limits = Limits(product_instances=1_000)
    plan = expand(model, limits)
    assert (plan.instances, len(plan.draw)) == (1, 1)
    meshes = tessellate(model, cores=1, limits=limits)
    assert [m.ifc_class for m in meshes] == ["IfcWall"]
    [(_, why)] = skipped(model, meshes, limits).items()
    assert why == (
        "its mapped items place 4,096 solids, over the limit of 1,000 "
        "(SQEMS_BIM_MAX_PRODUCT_INSTANCES)"
    )
    # within the default limits the same product draws, every box of it
    [nested, _] = sorted(tessellate(model, cores=1), key=lambda m: m.ifc_class)
    assert nested.triangles == 4**6 * 12


def test_a_model_over_the_instance_or_triangle_limit_is_refused_and_nothing_stored(
    store: GraphStore, tmp_path: Path
) -> None:
    path = write_mapped_ifc(tmp_path / "nested.ifc", levels=5, products=3)
    cache = tmp_path / "bim"
    refusals = [
        (Limits(instances=3_000), "products place 3,073 solids, over the limit of 3,000"),
        (Limits(triangles=2_000), "makes at least 3,073 triangles, over the limit of 2,000"),
        (Limits(triangles=20_000), r"makes at least 24,576 triangles, over the limit of 20,000"),
    ]
    for limits, message in refusals:
        with pytest.raises(ValidationFailed, match=message):
            import_bim(store, path, cache_dir=cache, limits=limits, cores=1)
    assert store.count() == 0 and not cache.exists()


def test_a_map_that_places_itself_is_skipped(tmp_path: Path) -> None:
    import ifcopenshell  # noqa: PLC0415

    path = write_mapped_ifc(tmp_path / "nested.ifc", levels=2)
    f = ifcopenshell.open(str(path))
    top = max(f.by_type("IfcRepresentationMap"), key=lambda m: m.id())
    items = top.MappedRepresentation.Items
    top.MappedRepresentation.Items = [*items, f.createIfcMappedItem(top, items[0].MappingTarget)]
    f.write(str(path))
    model = read_ifc(path)
    meshes = tessellate(model, cores=1)
    assert [m.ifc_class for m in meshes] == ["IfcWall"]
    assert list(skipped(model, meshes).values()) == [
        "its mapped items nest more than 8 deep (SQEMS_BIM_MAX_MAPPING_DEPTH)"
    ]


# --- binary glTF ------------------------------------------------------------------------------


def test_the_glb_holds_one_named_mesh_per_product_with_its_bounding_box(
    hall: Path, tmp_path: Path
) -> None:
    meshes = tessellate(read_ifc(hall))
    path = tmp_path / "hall.glb"
    size = gltf.write_glb(meshes, path, name="hall")
    data = path.read_bytes()
    assert len(data) == size
    magic, version, total = struct.unpack_from("<III", data)
    assert (magic, version, total) == (0x46546C67, 2, size)
    json_length, json_kind = struct.unpack_from("<II", data, 12)
    bin_length, bin_kind = struct.unpack_from("<II", data, 20 + json_length)
    assert (json_kind, bin_kind) == (0x4E4F534A, 0x004E4942)
    assert 20 + json_length + 8 + bin_length == size and json_length % 4 == bin_length % 4 == 0
    document = gltf.read_document(path)
    assert document["buffers"] == [{"byteLength": bin_length}]
    root = document["nodes"][0]
    assert root["rotation"] == pytest.approx([-math.sqrt(0.5), 0, 0, math.sqrt(0.5)])
    assert len(root["children"]) == len(meshes) == len(document["meshes"])
    for view in document["bufferViews"]:
        assert view["byteOffset"] + view["byteLength"] <= bin_length
    read = gltf.read_elements(path)
    assert [e.global_id for e in read] == [m.global_id for m in meshes]
    for element, mesh in zip(read, meshes, strict=True):
        assert (element.ifc_class, element.name, element.storey) == (mesh.ifc_class, mesh.name,
                                                                      mesh.storey)  # fmt: skip
        assert element.triangles == mesh.triangles
        np.testing.assert_allclose(element.lower, mesh.lower, atol=1e-5)
        np.testing.assert_allclose(element.upper, mesh.upper, atol=1e-5)


def test_a_file_that_is_not_glb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.glb"
    path.write_bytes(b"glTF" + b"\0" * 30)
    with pytest.raises(ValidationFailed, match=r"not a glTF 2\.0 binary file"):
        gltf.read_document(path)


def cube(global_id: str, colours: tuple[Colour, ...], face_colours: list[int]) -> Mesh:
    """A unit cube as a kernel may give it: 12 triangles, each with corners of its own."""
    corners = np.array(
        [[x, y, z] for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)], np.float32
    )
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]],
                     np.uint32)  # fmt: skip
    return Mesh(global_id, "IfcWindow", "Window", "Level 1",
                corners[faces.reshape(-1)], np.arange(36, dtype=np.uint32).reshape(12, 3),
                colours, np.array(face_colours, np.int32), {"Tag": "W-1"})  # fmt: skip


def triangles_of(path: Path, mesh_index: int) -> list[list[set[tuple[float, ...]]]]:
    """Each primitive's triangles of a GLB mesh, read back from its binary chunk, as
    sets of corner positions."""
    data = path.read_bytes()
    (json_length,) = struct.unpack_from("<I", data, 12)
    blob = data[28 + json_length :]
    document = gltf.read_document(path)
    views, accessors = document["bufferViews"], document["accessors"]

    def array(index: int) -> np.ndarray:
        a = accessors[index]
        kind = {5126: np.float32, 5123: np.uint16, 5125: np.uint32}[a["componentType"]]
        start = views[a["bufferView"]]["byteOffset"] + a.get("byteOffset", 0)
        width = 3 if a["type"] == "VEC3" else 1
        return np.frombuffer(blob, kind, a["count"] * width, start).reshape(-1, width)

    found = []
    for primitive in document["meshes"][mesh_index]["primitives"]:
        points = array(primitive["attributes"]["POSITION"])
        corners = points[array(primitive["indices"]).reshape(-1)].reshape(-1, 3, 3)
        found.append([{tuple(float(v) for v in c) for c in t} for t in corners])
    return found


def test_a_product_with_several_styles_gets_one_indexed_primitive_per_material(
    tmp_path: Path,
) -> None:
    frame, glass = (0.98, 0.98, 0.98, 1.0), (0.0, 0.5, 0.75, 0.1)
    window = cube("2WindowWithGlass000000", (frame, glass, frame), [0] * 4 + [1] * 2 + [2] * 6)
    wall = cube("1PlainWall000000000000", (), [])
    wall = Mesh(wall.global_id, "IfcWall", "Wall", None, wall.vertices, wall.faces)
    path = tmp_path / "two.glb"
    gltf.write_glb([window, wall], path)
    document = gltf.read_document(path)
    assert document["asset"]["extras"]["format"] == gltf.FORMAT
    by_name = {n["name"]: n for n in document["nodes"][1:]}
    assert by_name[window.global_id]["extras"]["materials"] == 2
    assert by_name[wall.global_id]["extras"]["materials"] == 1
    primitives = document["meshes"][by_name[window.global_id]["mesh"]]["primitives"]
    assert len(primitives) == 2
    for primitive in primitives:
        assert set(primitive["attributes"]) == {"POSITION"}  # flat normals, by the viewer
        position = document["accessors"][primitive["attributes"]["POSITION"]]
        assert position["count"] == 8  # the cube's corners, shared by all its faces
        assert document["accessors"][primitive["indices"]]["componentType"] == 5123  # uint16
    opaque, clear = (document["materials"][p["material"]] for p in primitives)
    assert opaque["pbrMetallicRoughness"]["baseColorFactor"] == pytest.approx(
        list(gltf.linear(frame)), abs=1e-4
    )
    assert "alphaMode" not in opaque and clear["alphaMode"] == "BLEND"
    assert clear["pbrMetallicRoughness"]["baseColorFactor"] == pytest.approx(
        [0.0, 0.2140, 0.5225, 0.1], abs=1e-4
    )
    # the triangles read back are the ones written, each with its own style
    written = [{tuple(float(v) for v in c) for c in window.vertices[f]} for f in window.faces]
    frame_back, glass_back = triangles_of(path, by_name[window.global_id]["mesh"])
    assert sorted(map(sorted, frame_back)) == sorted(map(sorted, written[:4] + written[6:]))
    assert sorted(map(sorted, glass_back)) == sorted(map(sorted, written[4:6]))
    [read_wall, read_window] = sorted(gltf.read_elements(path), key=lambda e: e.ifc_class)
    assert (read_window.materials, dict(read_window.attributes)) == (2, {"Tag": "W-1"})
    assert (read_wall.materials, read_wall.lower, read_wall.upper) == (1, (0, 0, 0), (1, 1, 1))


def write_hall_with(path: Path, change: Callable[[Any], None], **kwargs: Any) -> Path:
    """The hall of :data:`MACHINES`, then ``change`` made to it with ifcopenshell."""
    import ifcopenshell  # noqa: PLC0415

    write_building_ifc(path, MACHINES, **kwargs)
    f = ifcopenshell.open(str(path))
    change(f)
    f.write(str(path))
    return path


def test_an_element_is_on_the_storey_above_its_space_and_one_outside_any_storey_on_none(
    tmp_path: Path,
) -> None:
    import ifcopenshell.api.aggregate  # noqa: PLC0415
    import ifcopenshell.api.root  # noqa: PLC0415
    import ifcopenshell.api.spatial  # noqa: PLC0415

    api = ifcopenshell.api

    def rooms(f: Any) -> None:
        [storey], [building] = f.by_type("IfcBuildingStorey"), f.by_type("IfcBuilding")
        proxies = {p.Tag: p for p in f.by_type("IfcBuildingElementProxy")}
        room = api.root.create_entity(f, ifc_class="IfcSpace", name="B103")
        api.aggregate.assign_object(f, products=[room], relating_object=storey)
        api.spatial.assign_container(f, products=[proxies["M-PRESS-1"]], relating_structure=room)
        # an upper storey with no name, 4.5 m up (the model counts in millimetres), whose
        # unnamed room holds the second press
        upper = api.root.create_entity(f, ifc_class="IfcBuildingStorey", name=None)
        upper.Elevation = 4500.0
        api.aggregate.assign_object(f, products=[upper], relating_object=building)
        office = api.root.create_entity(f, ifc_class="IfcSpace", name=None)
        api.aggregate.assign_object(f, products=[office], relating_object=upper)
        api.spatial.assign_container(f, products=[proxies["M-PRESS-2"]], relating_structure=office)
        api.spatial.assign_container(f, products=[proxies["M-WELD-1"]], relating_structure=building)

    path = write_hall_with(tmp_path / "rooms.ifc", rooms)
    storeys = {m.name: m.storey for m in tessellate(read_ifc(path), cores=1)}
    assert storeys.pop("Press 1") == "Ground floor"  # not "B103"
    assert storeys.pop("Press 2") == "Storey at elevation 4.50 m"  # not a GlobalId
    assert storeys.pop("Welder") is None  # in the building, on no storey
    assert set(storeys.values()) == {"Ground floor"}


def write_swallowed_partition(path: Path) -> tuple[Path, str]:
    """A hall with one partition wall whose two openings are made larger than the wall:
    the wall has no body left. Returns the file and the wall's GlobalId."""
    walls: list[str] = []

    def swallow(f: Any) -> None:
        for opening in f.by_type("IfcOpeningElement"):
            wall = opening.VoidsElements[0].RelatingBuildingElement
            walls.append(str(wall.GlobalId))
            solid = opening.Representation.Representations[0].Items[0]
            centre = f.createIfcAxis2Placement2D(f.createIfcCartesianPoint((0.0, 0.0)))
            solid.SweptArea = f.createIfcRectangleProfileDef("AREA", None, centre, 4e4, 4e4)
            solid.Depth = 2e4
            down = f.createIfcCartesianPoint((0.0, 0.0, -1e4))
            solid.Position = f.createIfcAxis2Placement3D(down)
            opening.ObjectPlacement = wall.ObjectPlacement

    path = write_hall_with(path, swallow, partitions=1)
    assert len(set(walls)) == 1
    return path, walls[0]


def test_a_wall_its_openings_cut_away_is_reported_not_dropped_silently(tmp_path: Path) -> None:
    path, wall = write_swallowed_partition(tmp_path / "swallowed.ifc")
    model = read_ifc(path)
    meshes = tessellate(model, cores=1)
    assert {m.global_id: m.triangles for m in meshes}[wall] == 0
    assert skipped(model, meshes) == {wall: "its openings leave no geometry"}
    store, cache = EmbeddedGraphStore(None), tmp_path / "bim"
    first = import_bim(store, path, cache_dir=cache, cores=1)
    again = import_bim(store, path, cache_dir=cache, cores=1)
    for done in (first, again):
        assert done.skipped == [f"{wall}: its openings leave no geometry"]
        assert done.model.elements == model.products() - 1
    assert again.cached
    env = {**os.environ, "SQEMS_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    env.pop("SQEMS_GRAPH_URI", None)
    cli = subprocess.run(
        [sys.executable, "-c", "from sqems.cli import main; main()", "bim", "import", str(path)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert f"not drawn: 1 of {model.products()} products with a body" in cli.stdout
    assert f"its openings leave no geometry (1): {wall}" in cli.stdout


@pytest.mark.parametrize(
    ("project", "long_name", "building", "expected"),
    [
        ("Main plant hall", None, "Hall A", "Main plant hall"),
        ("0001", "Duplex Apartment", "Hall A", "Duplex Apartment"),
        ("0001", None, "Hall A", "Hall A"),
        ("Project Number", "Project Name", "Default", "named-by-its-file"),
        ("  ", "Unnamed", "", "named-by-its-file"),
    ],
)
def test_the_model_is_named_by_its_first_real_name_not_an_exporters_placeholder(
    project: str, long_name: str | None, building: str, expected: str, tmp_path: Path
) -> None:
    def rename(f: Any) -> None:
        [p], [b] = f.by_type("IfcProject"), f.by_type("IfcBuilding")
        p.Name, p.LongName, b.Name = project, long_name, building

    path = write_hall_with(tmp_path / "named-by-its-file.ifc", rename)
    assert read_ifc(path).name == expected
    done = import_bim(EmbeddedGraphStore(None), path, cache_dir=tmp_path / "bim", cores=1)
    assert done.model.name == expected


def test_a_cached_import_does_not_parse_the_file_and_an_older_format_is_tessellated_again(
    hall: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ifcopenshell  # noqa: PLC0415

    store, cache = EmbeddedGraphStore(None), tmp_path / "bim"
    small_line(store)
    first = import_bim(store, hall, cache_dir=cache, cores=1)
    opened: list[str] = []
    real_open = ifcopenshell.open

    def counted(path: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(ifcopenshell, "open", counted)
    again = import_bim(store, hall, cache_dir=cache, cores=1)
    assert again.cached and opened == []
    assert [e.model_dump() for e in again.elements] == [e.model_dump() for e in first.elements]
    assert again.links == first.links and len(again.links) == len(MACHINES)
    assert (again.model.name, again.model.ifc_schema) == ("Main plant hall", "IFC4")
    by_name = import_bim(store, hall, cache_dir=cache, link=LinkRule("Name"), cores=1)
    assert by_name.cached and by_name.links == {} and opened == []
    # a property is only in the file: that link rule parses it, and says so in its docs
    by_pset = import_bim(store, hall, cache_dir=cache, link=LinkRule("Pset_SQEMS.MachineUid"))
    assert by_pset.cached and by_pset.links == first.links and opened == [str(hall)]
    # an entry written before the format was versioned is tessellated again, not misread
    document = gltf.read_document(first.glb)
    del document["asset"]["extras"]["format"]
    data = first.glb.read_bytes()
    (length,) = struct.unpack_from("<I", data, 12)
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    rest = data[20 + length :]
    first.glb.write_bytes(
        struct.pack("<III", 0x46546C67, 2, 20 + len(text) + len(rest))
        + struct.pack("<II", len(text), 0x4E4F534A) + text + rest
    )  # fmt: skip
    assert "format" not in gltf.read_extras(first.glb)
    rewritten = import_bim(store, hall, cache_dir=cache, cores=1)
    assert not rewritten.cached and gltf.read_extras(first.glb)["format"] == gltf.FORMAT


# --- importing into the graph (every backend) -------------------------------------------------


def test_an_import_stores_the_model_and_its_elements_and_links_machines_by_tag(
    store: GraphStore, hall: Path, tmp_path: Path
) -> None:
    small_line(store)
    done = import_bim(store, hall, cache_dir=tmp_path / "bim")
    model = store.get(done.model.uid)
    assert isinstance(model, BimModel) and model.uid == f"BIM-{model.sha256[:16]}"
    assert (model.ifc_schema, model.file_name, model.elements) == ("IFC4", "hall.ifc",
                                                                   len(done.elements))  # fmt: skip
    assert model.triangles == sum(e.triangles or 0 for e in done.elements)
    members = {e.src for e in store.edges([model.uid], {"IN_MODEL": Direction.IN})}
    assert members == {e.uid for e in done.elements} and len(members) == read_ifc(hall).products()
    links = {e.src: e.dst for e in store.edges([m.uid for m in MACHINES],
                                               {"MODELLED_BY": Direction.OUT})}  # fmt: skip
    assert links == done.links and set(links) == {m.uid for m in MACHINES}
    weld = store.get(links["M-WELD-1"])
    assert isinstance(weld, BimElement) and weld.ifc_class == "IfcBuildingElementProxy"
    assert (weld.x_m, weld.y_m, weld.z_m) == pytest.approx((7.0, 1.5, 0.9), abs=1e-4)
    assert (weld.length_m, weld.width_m, weld.height_m) == pytest.approx((1.0, 3.0, 1.8), abs=1e-4)
    assert done.glb.is_file() and not done.cached

    again = import_bim(store, hall, cache_dir=tmp_path / "bim")
    assert again.cached and again.links == done.links
    assert store.count("BimElement") == len(done.elements) and store.count("BimModel") == 1


def test_elements_link_by_a_property_or_by_an_explicit_map(
    store: GraphStore, hall: Path, tmp_path: Path
) -> None:
    small_line(store)
    by_pset = import_bim(store, hall, cache_dir=tmp_path, link=LinkRule("Pset_SQEMS.MachineUid"))
    assert set(by_pset.links) == {m.uid for m in MACHINES}
    wall = next(e.uid for e in by_pset.elements if e.ifc_class == "IfcWall")
    rule = LinkRule.from_csv(f"machine,global_id\nM-PRESS-1,{wall}\nM-NOPE,{wall}\n"
                             "M-PRESS-2,0000000000000000000000\n")  # fmt: skip
    mapped = import_bim(store, hall, cache_dir=tmp_path, link=rule)
    assert mapped.links == {"M-PRESS-1": wall}
    assert mapped.unmatched == ["M-NOPE", "M-PRESS-2"]
    with pytest.raises(ValidationFailed, match="link file line 2: expected machine,global_id"):
        LinkRule.from_csv("machine,global_id\nM-1,A,B\n")


def test_a_damaged_cache_entry_is_tessellated_again(
    store: GraphStore, hall: Path, tmp_path: Path
) -> None:
    first = import_bim(store, hall, cache_dir=tmp_path)
    first.glb.write_bytes(b"not a glb")
    second = import_bim(store, hall, cache_dir=tmp_path)
    assert not second.cached and gltf.read_elements(second.glb)


def test_the_cache_keeps_what_was_left_out_and_answers_only_for_its_limits(
    store: GraphStore, tmp_path: Path
) -> None:
    path = write_mapped_ifc(tmp_path / "nested.ifc", levels=6)
    cache, tight = tmp_path / "bim", Limits(product_instances=1_000)
    first = import_bim(store, path, cache_dir=cache, limits=tight, cores=1)
    again = import_bim(store, path, cache_dir=cache, limits=tight, cores=1)
    assert (first.cached, again.cached) == (False, True)
    assert len(again.skipped) == 1 and again.skipped == first.skipped
    assert "4,096 solids" in again.skipped[0] and again.model.elements == 1
    wider = import_bim(store, path, cache_dir=cache, cores=1)  # the default limits
    assert (wider.cached, wider.skipped, wider.model.elements) == (False, [], 2)


def test_a_survey_stores_as_built_values_and_reports_deviations_beyond_tolerance(
    store: GraphStore, hall: Path, tmp_path: Path
) -> None:
    small_line(store)
    done = import_bim(store, hall, cache_dir=tmp_path)
    press, weld = done.links["M-PRESS-1"], done.links["M-WELD-1"]
    slab = next(e for e in done.elements if e.ifc_class == "IfcSlab")
    text = (
        "global_id,x_m,y_m,z_m,length_m,width_m,height_m\n"
        f"{press},0.004,0.0,1.25,4.0,2.0,2.5\n"  # 4 mm off: within 20 mm
        f"{weld},7.0,1.56,0.9,1.0,3.0,1.8\n"  # 60 mm off in y
        f"{slab.uid},{slab.x_m},{slab.y_m},{slab.z_m},{(slab.length_m or 0) + 0.1},,\n"
        "NOT-IN-MODEL,1,2,3,,,\n"
        f"{done.links['M-PRESS-2']},a lot,0,0,,,\n"
    )
    report = survey(store, done.model.uid, text, tolerance_m=0.02)
    assert (report.surveyed, report.within) == (3, 1)
    assert [d.global_id for d in report.deviating] == [slab.uid, weld]
    assert report.deviating[0].size_m == pytest.approx(0.1, abs=1e-6)
    assert report.deviating[1].position_m == pytest.approx(0.06, abs=1e-6)
    assert report.unknown == ["NOT-IN-MODEL"]
    assert len(report.refused) == 1 and "x_m 'a lot' is not a number" in report.refused[0]
    assert report.not_surveyed == len(done.elements) - 3
    stored = store.get(weld)
    assert isinstance(stored, BimElement)
    assert stored.as_built_y_m == pytest.approx(1.56) and stored.deviation_m == pytest.approx(0.06)
    # importing the model again keeps the survey
    import_bim(store, hall, cache_dir=tmp_path)
    kept = store.get(weld)
    assert isinstance(kept, BimElement) and kept.deviation_m == pytest.approx(0.06)

    with pytest.raises(ValidationFailed, match="a survey starts with the columns global_id"):
        survey(store, done.model.uid, "id,x,y,z\n")
    with pytest.raises(ValidationFailed, match="tolerance must be a positive length"):
        survey(store, done.model.uid, text, tolerance_m=0.0)
    with pytest.raises(NotFound, match="BIM model BIM-0 is not in the graph"):
        survey(store, "BIM-0", text)


# --- line scenes (every backend) --------------------------------------------------------------


def test_a_line_scene_places_every_machine_of_the_line(store: GraphStore) -> None:
    small_line(store)
    scene = line_scene(store, "LINE-X")
    assert (scene.uid, scene.name, scene.site) == ("LINE-X", "Line X", "SITE-X")
    assert [o.uid for o in scene.objects] == sorted(m.uid for m in MACHINES)
    weld = next(o for o in scene.objects if o.uid == "M-WELD-1")
    assert (weld.position, weld.size, weld.rotation_deg) == ((7.0, 1.5, 0.0), (3.0, 1.0, 1.8),
                                                             90.0)  # fmt: skip
    assert weld.step == "STEP-WELD" and weld.label == "Machine"
    assert all(o.overlay.status is Status.IDLE and o.overlay.colour == COLOURS["idle"]
               for o in scene.objects)  # fmt: skip
    x0, y0, x1, y1 = scene.floor
    assert x0 < -2.0 and y0 < -1.0 and x1 > 8.5 and y1 > 4.0
    json.loads(scene.to_json())
    with pytest.raises(NotFound, match="line LINE-NOPE is not in the graph"):
        line_scene(store, "LINE-NOPE")
    with pytest.raises(ValidationFailed, match="rates must satisfy"):
        line_scene(store, "LINE-X", watch_rate=0.2, alarm_rate=0.1)


def test_an_open_alarm_turns_its_machine_red_and_a_cleared_one_does_not(
    store: GraphStore,
) -> None:
    small_line(store)
    raised = datetime(2026, 3, 1, 8, tzinfo=UTC)
    store.upsert_nodes([
        Alarm(uid="AL-1", raised_at=raised, rule="nelson_1", severity=Severity.CRITICAL),
        Alarm(uid="AL-2", raised_at=raised, cleared_at=raised, rule="nelson_5"),
    ])  # fmt: skip
    store.upsert_edges([Edge("RAISED_ON", "AL-1", "M-PRESS-2"),
                        Edge("RAISED_ON", "AL-2", "M-PRESS-1")])  # fmt: skip
    overlays = {o.uid: o.overlay for o in line_scene(store, "LINE-X").objects}
    assert overlays["M-PRESS-2"].status is Status.ALARM
    press = overlays["M-PRESS-2"]
    assert (press.open_alarms, press.alarm_severity) == (1, "critical")
    assert "1 open alarm(s): nelson_1" in overlays["M-PRESS-2"].reasons
    assert overlays["M-PRESS-1"].status is Status.IDLE and overlays["M-PRESS-1"].open_alarms == 0


def test_a_scenario_lays_its_station_utilisation_on_the_machines(store: GraphStore) -> None:
    small_line(store)
    results = {"kpis": {"utilisation.STEP-PRESS": {"mean": 0.81, "low": 0.7, "high": 0.9},
                        "utilisation.STEP-WELD": {"mean": 0.42, "low": 0.3, "high": 0.5},
                        "yield_": {"mean": 0.97, "low": 0.96, "high": 0.98}}}  # fmt: skip
    created = datetime(2026, 3, 1, tzinfo=UTC)
    store.upsert_nodes([
        WhatIfSession(uid="WIS-1", name="study", created_at=created, horizon_s=3600,
                      replications=5),
        Scenario(uid="SCN-1", name="faster", results=json.dumps(results)),
        Scenario(uid="SCN-2", name="pending"),
    ])  # fmt: skip
    store.upsert_edges([Edge("STUDIES", "WIS-1", "LINE-X"), Edge("IN_SESSION", "SCN-1", "WIS-1"),
                        Edge("IN_SESSION", "SCN-2", "WIS-1")])  # fmt: skip
    scene = line_scene(store, "LINE-X", scenario="SCN-1")
    assert {o.uid: o.overlay.utilisation for o in scene.objects} == {
        "M-PRESS-1": 0.81, "M-PRESS-2": 0.81, "M-WELD-1": 0.42,
    }  # fmt: skip
    with pytest.raises(ValidationFailed, match="scenario SCN-2 has no results yet"):
        line_scene(store, "LINE-X", scenario="SCN-2")
    store.upsert_nodes([Line(uid="LINE-Y", name="Line Y")])
    with pytest.raises(ValidationFailed, match="scenario SCN-1 does not simulate line LINE-Y"):
        line_scene(store, "LINE-Y", scenario="SCN-1")
    with pytest.raises(NotFound, match="scenario SCN-9 is not in the graph"):
        line_scene(store, "LINE-X", scenario="SCN-9")


def test_a_machines_defect_rate_counts_the_units_of_the_batches_it_ran(store: GraphStore) -> None:
    load_plant(store, plant_sections(generate(PlantSpec(units=1_000, seed=11))))
    scene = line_scene(store, "LINE-PCB", watch_rate=0.004, alarm_rate=0.03)
    machines = [o.uid for o in scene.objects]
    # walk the graph by hand: machine <- ON - run <- RAN - batch - PRODUCED -> unit
    runs = store.edges(machines, {"ON": Direction.IN})
    batches = store.edges([e.src for e in runs], {"RAN": Direction.IN})
    batch_of_run = {e.dst: e.src for e in batches}
    units = store.edges(list(batch_of_run.values()), {"PRODUCED": Direction.OUT})
    defective = {e.dst for e in store.edges([e.dst for e in units], {"FOUND_ON": Direction.IN})}
    for o in scene.objects:
        ran = {batch_of_run[e.src] for e in runs if e.dst == o.uid}
        made = [e.dst for e in units if e.src in ran]
        assert o.overlay.produced == len(made) > 0
        assert o.overlay.defective == sum(u in defective for u in made)
        rate = o.overlay.defective / o.overlay.produced
        expected = Status.ALARM if rate >= 0.03 else Status.WATCH if rate >= 0.004 else Status.OK
        assert o.overlay.status is expected and o.overlay.colour == COLOURS[expected.value]
