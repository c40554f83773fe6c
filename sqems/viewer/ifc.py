"""Reading IFC models: open a file safely, tessellate its products into meshes.

``read_ifc(path)`` refuses what is not an IFC model before ifcopenshell parses it (too
big, not ISO 10303-21, a schema SQEMS does not read) and what it cannot parse, each
with a clear :class:`~sqems.errors.ValidationFailed`. ``tessellate(model)`` runs
``ifcopenshell.geom``'s iterator (on every core unless told otherwise) and keeps, per
product, its GlobalId, class, name, storey, the attributes a machine link reads, and
its triangles in world coordinates (metres, z up, as IFC has it), each triangle with
the colour of the surface style it carries (a window's frame and its glass differ).
:func:`check_ifc` makes the same checks and hashes the file without parsing it, for
a caller that may not need the model at all (a cached import).

The storey of a product is found by walking up the spatial structure (contained in,
decomposes, nests, fills an opening of, referenced in) to its ``IfcBuildingStorey``, so
a lamp in a room is on the room's level, not "in" the room. The model's name is the
first of its project's, building's and site's names that is not an exporter's
placeholder ("0001", "Project Number", "Default"), else the file's stem.

A few kilobytes of IFC can stand for billions of triangles: an ``IfcMappedItem`` places a
representation that may itself hold mapped items, so ten levels of four copies each are
a million solids. Before anything is tessellated, :func:`expand` walks each product's
mapped items (each representation map once) and counts the solids they place, how deep
they nest and the fewest triangles they can make; :class:`Limits` caps each per product
(the product is skipped, with the reason) and for the whole model (the model is
refused), and the triangles actually made are counted while tessellating.

>>> import numpy as np
>>> box = Mesh("0AbC", "IfcWall", "Wall", "Level 1",
...            np.array([[0, 0, 0], [2, 0, 0], [2, 1, 3]], np.float32),
...            np.array([[0, 1, 2]], np.uint32))
>>> box.triangles, box.centre.tolist(), box.size.tolist()
(1, [1.0, 0.5, 1.5], [2.0, 1.0, 3.0])
>>> model_name(["0001", "Duplex Apartment"], "duplex")
'Duplex Apartment'
>>> model_name(["Project Number", "Project Name", "", "Default"], "SampleHouse4")
'SampleHouse4'
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sqems import deadline
from sqems.errors import ValidationFailed

log = logging.getLogger(__name__)

LIBRARIES = ("hybrid-cgal-simple-opencascade", "opencascade", "cgal")
"""ifcopenshell's geometry kernels. The first, the default, builds simple extrusions
with CGAL and hands the rest to Open CASCADE: on a hall of 5,000 extruded elements it
tessellated 7x faster than Open CASCADE alone, with the same triangles (see
docs/benchmarks.md)."""
NOT_DRAWN = ("IfcOpeningElement", "IfcSpace", "IfcAnnotation", "IfcSpatialStructureElement")
"""Products with geometry that a model view does not draw: voids, room volumes,
drawing annotations, and the site or storeys themselves."""
SCHEMAS = ("IFC2X3", "IFC4", "IFC4X3")
"""The IFC schemas SQEMS reads (those ifcopenshell's wheels ship)."""
MAX_BYTES = 256 * 1024 * 1024
"""The largest IFC file read unless settings say otherwise."""
_MAGIC = b"ISO-10303-21;"
_HEADER_BYTES = 64 * 1024
"""How much of a file's start is searched for its header's ``FILE_SCHEMA``."""
_FILE_SCHEMA = re.compile(rb"FILE_SCHEMA\s*\(\s*\(\s*'([^']*)'", re.IGNORECASE)
LINK_ATTRIBUTES = ("Tag", "Description", "ObjectType")
"""The attributes (besides Name) kept with each drawn product, for the machine link
rule to read without opening the file again."""
PLACEHOLDERS = frozenset({
    "default", "unnamed", "untitled", "project number", "project name", "project",
    "building", "site", "name", "none", "null", "n/a",
})  # fmt: skip
"""Names exporters write when the author gave none (compared ignoring case)."""
Colour = tuple[float, float, float, float]
"""Red, green, blue (0 to 1, as the IFC style states them) and opacity."""
_FEWEST_TRIANGLES = 1
"""What a solid the walk cannot count (an extrusion, a boolean) makes at least."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one model may cost to tessellate (``SQEMS_BIM_MAX_*`` settings).

    A product whose mapped items nest deeper than ``mapping_depth``, or place more than
    ``product_instances`` solids, is skipped; a model whose products together place more
    than ``instances`` solids, or make more than ``triangles`` triangles, is refused.
    An import peaked at about 650 bytes per triangle (docs/viewer.md), so the default
    of 2 million keeps one under 1.5 GB.
    """

    triangles: int = 2_000_000
    instances: int = 200_000
    product_instances: int = 20_000
    mapping_depth: int = 8

    def __post_init__(self) -> None:
        if min(self.triangles, self.instances, self.product_instances, self.mapping_depth) < 1:
            raise ValidationFailed(f"BIM limits must be at least 1: {self}")


@dataclass(frozen=True, slots=True)
class Expansion:
    """What a model's products stand for once their mapped items are expanded."""

    draw: list[Any]
    """The drawable products within the per-product limits."""
    skipped: dict[str, str]
    """Why each drawable product over a per-product limit is left out, by GlobalId."""
    instances: int
    """Solids the products of ``draw`` place."""
    triangles: int
    """The fewest triangles they make."""


@dataclass(frozen=True, slots=True)
class Mesh:
    """The tessellated body of one IFC product."""

    global_id: str
    ifc_class: str
    name: str | None
    storey: str | None
    vertices: npt.NDArray[np.float32] = field(repr=False)
    """(n, 3) world coordinates in metres, z up."""
    faces: npt.NDArray[np.uint32] = field(repr=False)
    """(m, 3) vertex indices, counter-clockwise seen from outside."""
    colours: tuple[Colour | None, ...] = ()
    """The surface styles the faces carry (None: a face the model gives no style)."""
    face_colours: npt.NDArray[np.int32] | None = field(default=None, repr=False)
    """(m,) each face's index into ``colours``; None: every face has ``colours[0]``."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """The product's :data:`LINK_ATTRIBUTES` that have a value."""

    @property
    def triangles(self) -> int:
        return int(self.faces.shape[0])

    @property
    def colour(self) -> Colour | None:
        """The colour most of the faces carry (what a one-colour view draws)."""
        parts = self.parts()
        return max(parts, key=lambda p: len(p[1]))[0] if parts else None

    def parts(self) -> list[tuple[Colour | None, npt.NDArray[np.intp]]]:
        """The faces grouped by colour: each distinct colour with its face numbers, in
        the order the colours first appear."""
        if self.triangles == 0:
            return []
        if self.face_colours is None or len(self.colours) < 2:
            return [(self.colours[0] if self.colours else None, np.arange(self.triangles))]
        slot = {c: i for i, c in reversed(list(enumerate(self.colours)))}  # first index wins
        first = np.array([slot[c] for c in self.colours], np.int32)[self.face_colours]
        order = np.argsort(first, kind="stable")
        kinds, starts = np.unique(first[order], return_index=True)
        groups = np.split(order, starts[1:])
        return [(self.colours[int(k)], g) for k, g in zip(kinds, groups, strict=True)]

    @property
    def lower(self) -> npt.NDArray[np.float64]:
        lower: npt.NDArray[np.float64] = self.vertices.min(axis=0).astype(np.float64)
        return lower

    @property
    def upper(self) -> npt.NDArray[np.float64]:
        upper: npt.NDArray[np.float64] = self.vertices.max(axis=0).astype(np.float64)
        return upper

    @property
    def centre(self) -> npt.NDArray[np.float64]:
        """The centre of the bounding box."""
        return (self.lower + self.upper) / 2.0

    @property
    def size(self) -> npt.NDArray[np.float64]:
        """The bounding box's extents along x, y and z."""
        return self.upper - self.lower


@dataclass(frozen=True, slots=True)
class IfcSource:
    """An IFC file that passed the checks made before parsing, and its identity."""

    path: Path
    schema: str
    """As its header's ``FILE_SCHEMA`` names it (one of :data:`SCHEMAS`)."""
    sha256: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class IfcModel:
    """An opened IFC file and what identifies it."""

    path: Path
    file: Any = field(repr=False)
    """The ``ifcopenshell.file``."""
    schema: str
    sha256: str
    size_bytes: int

    @property
    def name(self) -> str:
        """The first real name of the project (long name, then name), building and site,
        else the file's stem (see :func:`model_name`)."""
        names: list[object] = []
        for kind in ("IfcProject", "IfcBuilding", "IfcSite"):
            for entity in self.file.by_type(kind):
                names += [getattr(entity, "LongName", None), entity.Name]
        return model_name(names, self.path.stem)

    def products(self) -> int:
        """Products with a body to draw: elements and proxies, not spaces or openings."""
        return sum(1 for _ in self.drawable())

    def drawable(self) -> Iterator[Any]:
        for product in self.file.by_type("IfcProduct"):
            if product.Representation is None or any(product.is_a(c) for c in NOT_DRAWN):
                continue
            yield product


def model_name(candidates: Iterable[object], stem: str) -> str:
    """The first of ``candidates`` that is a real name, else ``stem``: empty values,
    values without a letter ("0001") and :data:`PLACEHOLDERS` are passed over."""
    for value in candidates:
        text = " ".join(str(value or "").split())
        if any(c.isalpha() for c in text) and text.lower() not in PLACEHOLDERS:
            return text
    return stem


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_ifc(path: Path, *, max_bytes: int = MAX_BYTES, shown_as: str | None = None) -> IfcSource:
    """Check ``path`` as an IFC file without parsing it: its size, its ISO 10303-21
    header and the schema its ``FILE_SCHEMA`` names; hash it. Say clearly why it is
    refused (naming the file ``shown_as``, when ``path`` is a copy such as an upload)."""
    shown = shown_as or path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValidationFailed(f"cannot read IFC file {shown}: {exc.strerror}") from None
    if size > max_bytes:
        raise ValidationFailed(
            f"IFC file {shown} is {size / 2**20:.1f} MiB, over the limit of "
            f"{max_bytes / 2**20:.0f} MiB (SQEMS_BIM_MAX_BYTES)"
        )
    with path.open("rb") as f:
        head = f.read(_HEADER_BYTES)
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(_MAGIC):
        raise ValidationFailed(
            f"{shown} is not an IFC file: it does not start with {_MAGIC.decode()!r} "
            "(SQEMS reads IFC-SPF, the .ifc text format; export .ifcxml or .ifczip to it)"
        )
    named = _FILE_SCHEMA.search(head)
    if named is None:
        raise ValidationFailed(
            f"{shown} is not a readable IFC model: its header names no FILE_SCHEMA"
        )
    declared = named.group(1).decode("ascii", "replace").strip()
    # an addendum's schema is read as its base ("IFC4X3_ADD2" is IFC4X3)
    schema = declared.upper().split("_", 1)[0]
    if schema not in SCHEMAS:
        raise ValidationFailed(f"{shown} uses schema {declared}; SQEMS reads {', '.join(SCHEMAS)}")
    return IfcSource(path, schema, sha256_of(path), size)


def read_ifc(path: Path, *, max_bytes: int = MAX_BYTES, shown_as: str | None = None) -> IfcModel:
    """Open ``path`` as an IFC model, or say clearly why it is not one (naming the file
    ``shown_as``, when ``path`` is a copy such as an upload)."""
    return open_ifc(check_ifc(path, max_bytes=max_bytes, shown_as=shown_as), shown_as=shown_as)


def open_ifc(source: IfcSource, *, shown_as: str | None = None) -> IfcModel:
    """Parse a checked file with ifcopenshell."""
    import ifcopenshell  # noqa: PLC0415 - a large native module, loaded when a model is read

    shown = shown_as or source.path.name
    try:
        opened = ifcopenshell.open(str(source.path))
    except Exception as exc:  # ifcopenshell raises bare errors of several kinds for bad files
        reason = str(exc).strip() or type(exc).__name__
        raise ValidationFailed(f"{shown} is not a readable IFC model: {reason}") from None
    schema = str(opened.schema).upper()
    if schema not in SCHEMAS:
        raise ValidationFailed(
            f"{shown} uses schema {opened.schema}; SQEMS reads {', '.join(SCHEMAS)}"
        )
    return IfcModel(source.path, opened, schema, source.sha256, source.size_bytes)


def default_threads() -> int:
    """Two iterator threads per core. The iterator's threads wait on one another: on the
    2-core machine, two threads took longer than one on a 5,000-element hall, while
    four and eight were faster than one on walls with openings (docs/benchmarks.md)."""
    return 2 * (os.cpu_count() or 1)


def expand(model: IfcModel, limits: Limits | None = None) -> Expansion:
    """Count what each drawable product's mapped items place, without tessellating;
    refuse a model over ``limits`` (:class:`ValidationFailed`), skip a product over them.

    Each representation map is walked once, however often it is placed, so an 8 KB file
    of nested maps standing for a million solids is counted in milliseconds.
    """
    limits = limits or Limits()
    walk = _Walk(limits)
    draw: list[Any] = []
    skipped: dict[str, str] = {}
    instances = triangles = 0
    for product in model.drawable():
        cost = walk.product(product)
        if cost.depth > limits.mapping_depth:
            skipped[str(product.GlobalId)] = (
                f"its mapped items nest more than {limits.mapping_depth} deep "
                "(SQEMS_BIM_MAX_MAPPING_DEPTH)"
            )
        elif cost.instances > limits.product_instances:
            skipped[str(product.GlobalId)] = (
                f"its mapped items place {cost.instances:,} solids, over the limit of "
                f"{limits.product_instances:,} (SQEMS_BIM_MAX_PRODUCT_INSTANCES)"
            )
        else:
            draw.append(product)
            instances += cost.instances
            triangles += cost.triangles
    if instances > limits.instances:
        raise ValidationFailed(
            f"the model's products place {instances:,} solids, over the limit of "
            f"{limits.instances:,} (SQEMS_BIM_MAX_INSTANCES); nothing was imported"
        )
    if triangles > limits.triangles:
        raise ValidationFailed(_too_many_triangles(f"at least {triangles:,}", limits))
    return Expansion(draw, skipped, instances, triangles)


def _too_many_triangles(count: str, limits: Limits) -> str:
    return (
        f"the model makes {count} triangles, over the limit of {limits.triangles:,} "
        "(SQEMS_BIM_MAX_TRIANGLES); nothing was imported"
    )


@dataclass(frozen=True, slots=True)
class _Cost:
    instances: int
    depth: int
    """How deep mapped items nest (0: none)."""
    triangles: int


class _Walk:
    """The cost of representations, each representation map costed once."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.maps: dict[int, _Cost] = {}
        self.open: set[int] = set()

    def product(self, product: Any) -> _Cost:
        shapes = product.Representation.Representations or ()
        return self._sum([self.item(item) for shape in shapes for item in shape.Items or ()])

    def item(self, item: Any) -> _Cost:
        if not item.is_a("IfcMappedItem"):
            return _Cost(1, 0, _fewest_triangles(item))
        source = item.MappingSource
        key = source.id()
        if key not in self.maps:
            if key in self.open:  # a map that places itself: no finite count
                return _Cost(0, self.limits.mapping_depth + 1, 0)
            self.open.add(key)
            items = source.MappedRepresentation.Items or ()
            # past the depth limit the count no longer matters: stop walking there
            inner = (
                self._sum([self.item(i) for i in items])
                if len(self.open) <= self.limits.mapping_depth
                else _Cost(0, self.limits.mapping_depth, 0)
            )
            self.open.discard(key)
            self.maps[key] = inner
        inner = self.maps[key]
        return _Cost(inner.instances, inner.depth + 1, inner.triangles)

    @staticmethod
    def _sum(costs: list[_Cost]) -> _Cost:
        return _Cost(
            sum(c.instances for c in costs),
            max((c.depth for c in costs), default=0),
            sum(c.triangles for c in costs),
        )


def _fewest_triangles(item: Any) -> int:
    """The triangles a solid makes at least: counted for meshes and faceted shells, one
    for what only the kernel can tell (an extrusion, a boolean, a curved surface)."""
    if item.is_a("IfcTriangulatedFaceSet"):
        return len(item.CoordIndex)
    if item.is_a("IfcPolygonalFaceSet"):
        return sum(max(len(face.CoordIndex) - 2, 1) for face in item.Faces)
    if item.is_a("IfcFacetedBrep"):
        return len(item.Outer.CfsFaces)
    return _FEWEST_TRIANGLES


def tessellate(
    model: IfcModel,
    *,
    cores: int | None = None,
    library: str = LIBRARIES[0],
    limits: Limits | None = None,
) -> list[Mesh]:
    """Every drawable product of ``model`` within ``limits`` as a mesh, in GlobalId order.

    ``cores`` iterator threads tessellate (default :func:`default_threads`) with the
    geometry kernel ``library`` (one of :data:`LIBRARIES`). Products over a per-product
    limit (see :func:`expand`) and products whose geometry ifcopenshell cannot build are
    left out and logged; a product whose body comes out empty (a wall its openings cut
    away) is kept with no triangles. :func:`skipped` names both with the reason. A model
    over a model-wide limit is refused before tessellation starts, or as soon as its
    triangles pass the limit.
    """
    import ifcopenshell.geom  # noqa: PLC0415 - see read_ifc

    if library not in LIBRARIES:
        raise ValidationFailed(f"unknown geometry library {library!r}; one of {LIBRARIES}")
    limits = limits or Limits()
    plan = expand(model, limits)
    cores = cores or default_threads()
    settings = ifcopenshell.geom.settings()  # type: ignore[no-untyped-call]
    settings.set("use-world-coords", True)
    storeys = storeys_of(model.file)
    started = time.perf_counter()
    meshes: list[Mesh] = []
    if not plan.draw:
        return meshes
    # name the products to draw only when some are left out: otherwise ifcopenshell
    # runs its usual path, every product less the classes not drawn
    chosen: dict[str, Any] = (
        {"include": plan.draw} if plan.skipped else {"exclude": list(NOT_DRAWN)}
    )
    iterator = ifcopenshell.geom.iterator(
        settings,
        model.file,
        cores,
        geometry_library=library,  # type: ignore[arg-type]  # checked against LIBRARIES
        **chosen,
    )
    triangles = 0
    if iterator.initialize():
        while True:
            deadline.check()  # an upload whose request timed out stops here
            shape = iterator.get()  # type: ignore[no-untyped-call]
            meshes.append(_mesh(model.file, shape, storeys))
            triangles += meshes[-1].triangles
            if triangles > limits.triangles:
                raise ValidationFailed(_too_many_triangles(f"at least {triangles:,}", limits))
            if not iterator.next():
                break
    meshes.sort(key=lambda m: m.global_id)
    log.info(
        "tessellated %s: %d products, %d triangles in %.2f s on %d threads (%s)",
        model.path.name,
        len(meshes),
        sum(m.triangles for m in meshes),
        time.perf_counter() - started,
        cores,
        library,
    )
    return meshes


def skipped(model: IfcModel, meshes: list[Mesh], limits: Limits | None = None) -> dict[str, str]:
    """Why each drawable product that is not drawn was left out, by GlobalId: over a
    limit, geometry that could not be built, or a body that came out empty."""
    over = expand(model, limits).skipped
    drawn = {m.global_id for m in meshes if m.triangles}
    empty = {m.global_id for m in meshes if not m.triangles}
    found = {}
    for product in sorted(model.drawable(), key=lambda p: str(p.GlobalId)):
        key = str(product.GlobalId)
        if key in drawn:
            continue
        if key in over:
            found[key] = over[key]
        elif key in empty:
            found[key] = (
                "its openings leave no geometry"
                if _openings(product)
                else "its body has no surface to draw"
            )
        else:
            found[key] = "its geometry could not be built"
    return found


def _openings(product: Any) -> bool:
    return bool(getattr(product, "HasOpenings", None))


def _mesh(file: Any, shape: Any, storeys: Mapping[int, str]) -> Mesh:
    product = file.by_id(shape.id)
    geometry = shape.geometry
    vertices = np.asarray(geometry.verts, dtype=np.float32).reshape(-1, 3)
    faces = np.asarray(geometry.faces, dtype=np.uint32).reshape(-1, 3)
    colours: list[Colour | None] = [_colour(style) for style in geometry.materials]
    ids = np.asarray(geometry.material_ids, dtype=np.int32).reshape(-1)
    face_colours = None
    if len(ids) == len(faces) and len(faces):
        if (ids < 0).any() or (ids >= len(colours)).any():  # a face without a style
            ids = np.where((ids < 0) | (ids >= len(colours)), len(colours), ids)
            colours.append(None)
        face_colours = ids
    attributes = {}
    for key in LINK_ATTRIBUTES:
        value = getattr(product, key, None) if hasattr(product, key) else None
        if value not in (None, ""):
            attributes[key] = str(value)
    return Mesh(
        global_id=str(product.GlobalId),
        ifc_class=product.is_a(),
        name=str(product.Name) if product.Name else None,
        storey=storeys.get(product.id()),
        vertices=vertices,
        faces=faces,
        colours=tuple(colours),
        face_colours=face_colours,
        attributes=attributes,
    )


def _colour(style: Any) -> Colour | None:
    """A style's surface colour and opacity (IFC's transparency is 1 - opacity)."""
    diffuse = getattr(style, "diffuse", None)
    if diffuse is None:
        return None
    rgb = [min(max(float(c), 0.0), 1.0) for c in (diffuse.r(), diffuse.g(), diffuse.b())]
    transparency = float(getattr(style, "transparency", 0.0))
    alpha = 1.0 if math.isnan(transparency) else 1.0 - transparency
    # fully transparent glass would vanish and could not be clicked: keep a trace of it
    return (rgb[0], rgb[1], rgb[2], min(max(alpha, 0.05), 1.0))


_PARENT_RELATIONS = (
    ("IfcRelContainedInSpatialStructure", "RelatedElements", "RelatingStructure"),
    ("IfcRelAggregates", "RelatedObjects", "RelatingObject"),
    ("IfcRelNests", "RelatedObjects", "RelatingObject"),
    ("IfcRelFillsElement", "RelatedBuildingElement", "RelatingOpeningElement"),
    ("IfcRelVoidsElement", "RelatedOpeningElement", "RelatingBuildingElement"),
    ("IfcRelReferencedInSpatialStructure", "RelatedElements", "RelatingStructure"),
)
"""How an object hangs in the spatial structure, strongest tie first: contained in a
storey or space, a part of an aggregate or a nest (a space of a storey, a stair's
flight), a door in an opening of a wall, a spatial zone referenced by a storey."""


def storeys_of(file: Any) -> dict[int, str]:
    """The name of the building storey each object lies on, by id, for the objects
    that lie on one (walking up from spaces, aggregates, nests and openings).

    A storey is named by its Name, else its LongName, else its elevation in metres.
    Objects outside any storey (on the site, in the building itself) have none.
    """
    parent: dict[int, Any] = {}
    for kind, children, whole in _PARENT_RELATIONS:
        try:
            relations = file.by_type(kind)
        except RuntimeError:  # a relation the file's schema does not have
            continue
        for rel in relations:
            related = getattr(rel, children)
            for child in related if isinstance(related, tuple) else (related,):
                if child is not None:
                    parent.setdefault(child.id(), getattr(rel, whole))
    scale = _metres_per_unit(file)
    found: dict[int, str | None] = {}
    for start in list(parent):
        path: list[int] = []
        current: int | None = start
        label: str | None = None
        while current is not None and current not in found and current not in path:
            path.append(current)
            above = parent.get(current)
            if above is None:
                current = None
            elif above.is_a("IfcBuildingStorey"):
                label = _storey_label(above, scale)
                current = None
            else:
                current = above.id()
        if current is not None and current in found:
            label = found[current]
        for step in path:
            found[step] = label
    return {k: v for k, v in found.items() if v is not None}


def _storey_label(storey: Any, metres_per_unit: float) -> str:
    for text in (storey.Name, storey.LongName):
        if text and str(text).strip():
            return str(text).strip()
    if storey.Elevation is not None:
        metres = float(storey.Elevation) * metres_per_unit
        return f"Storey at elevation {metres:.2f} m"
    return "Unnamed storey"


def _metres_per_unit(file: Any) -> float:
    import ifcopenshell.util.unit  # noqa: PLC0415 - with ifcopenshell

    try:
        return float(ifcopenshell.util.unit.calculate_unit_scale(file))
    except (AttributeError, IndexError, TypeError):  # a model that states no length unit
        return 1.0
