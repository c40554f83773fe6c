"""BIM models in the graph: import an IFC file, link its elements to machines, and
compare a survey of what was built with the design.

``import_bim`` reads the file (:mod:`sqems.viewer.ifc`), tessellates it once per file
content (the GLB is cached under the file's SHA-256), and writes a ``BimModel`` node
and one ``BimElement`` per product (``IN_MODEL``), each with its GlobalId, class, name,
storey, bounding box and triangle count. The cached GLB holds all of that and the
model's name and schema, so importing the same file again checks and hashes it but does
not parse it (see :func:`import_bim`). Elements are tied to the machines they model
(``Machine MODELLED_BY BimElement``) by a :class:`LinkRule`: an explicit map of machine
uid to GlobalId, or an IFC attribute or property whose value is a machine's uid.

``survey`` takes the as-built positions and sizes of elements (a CSV a surveyor or a
scan-to-BIM tool writes), stores them on the elements and reports those that deviate
from the design by more than a tolerance.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqems.errors import NotFound, ValidationFailed
from sqems.graph_model.nodes import BimElement, BimModel, Machine
from sqems.graph_model.store import Direction, Edge, GraphStore
from sqems.viewer import gltf
from sqems.viewer.ifc import (
    LINK_ATTRIBUTES,
    MAX_BYTES,
    IfcModel,
    IfcSource,
    Limits,
    check_ifc,
    open_ifc,
    skipped,
    tessellate,
)

if TYPE_CHECKING:
    from sqems.settings import Settings

log = logging.getLogger(__name__)

SURVEY_COLUMNS = ("global_id", "x_m", "y_m", "z_m", "length_m", "width_m", "height_m")
"""A survey CSV's columns: the element's GlobalId, then its measured bounding-box
centre and extents in the model's coordinates (metres); sizes may be left empty."""
DEFAULT_TOLERANCE_M = 0.02
CACHE_DIR = "bim"
"""Where tessellations are cached, under the data directory, one GLB per file content."""


def cache_of(data_dir: Path) -> Path:
    return data_dir / CACHE_DIR


def limits_of(settings: Settings) -> Limits:
    """The tessellation limits the settings (``SQEMS_BIM_MAX_*``) set."""
    return Limits(
        triangles=settings.bim_max_triangles,
        instances=settings.bim_max_instances,
        product_instances=settings.bim_max_product_instances,
        mapping_depth=settings.bim_max_mapping_depth,
    )


@dataclass(frozen=True, slots=True)
class LinkRule:
    """How elements find their machines.

    ``mapping`` names a GlobalId per machine uid. Otherwise ``key`` is read on every
    drawn element: an attribute (``Tag``, ``Name``, ``Description``, ``ObjectType``) or a
    property as ``Pset_Name.Property``; an element whose value is a machine's uid
    models that machine (where several have it, the first in GlobalId order).

    Those four attributes are kept in the cached tessellation, so a model imported
    again is linked without parsing its IFC file; a property (or another attribute)
    is read from the file, which is then parsed again.
    """

    key: str = "Tag"
    mapping: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.mapping:
            return f"{len(self.mapping)} machine to GlobalId pairs"
        return f"the element's {self.key}"

    @classmethod
    def from_csv(cls, text: str) -> LinkRule:
        """A mapping from CSV rows ``machine,global_id`` (a header row is optional)."""
        pairs: dict[str, str] = {}
        for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
            if not row or row[0].strip().startswith("#"):
                continue
            if len(row) != 2:
                raise ValidationFailed(
                    f"link file line {number}: expected machine,global_id, got {row!r}"
                )
            machine, global_id = (v.strip() for v in row)
            if number == 1 and (machine.lower(), global_id.lower()) == ("machine", "global_id"):
                continue
            pairs[machine] = global_id
        return cls(mapping=pairs)


@dataclass(frozen=True, slots=True)
class BimImport:
    model: BimModel
    elements: list[BimElement]
    glb: Path
    cached: bool
    """The tessellation came from the cache (this file content was imported before)."""
    links: dict[str, str]
    """GlobalId per linked machine uid."""
    unmatched: list[str]
    """Machine uids the link rule named that no element or machine answered to."""
    skipped: list[str]
    """Drawable products not drawn, each as ``<GlobalId>: <why>`` (over a
    :class:`Limits` cap, geometry that could not be built, openings that leave no
    body); with ``elements`` they are every drawable product of the file."""


def model_uid(sha256: str) -> str:
    return f"BIM-{sha256[:16]}"


def glb_path(cache_dir: Path, sha256: str) -> Path:
    return cache_dir / f"{sha256}.glb"


def import_bim(
    store: GraphStore,
    path: Path,
    *,
    cache_dir: Path,
    name: str | None = None,
    file_name: str | None = None,
    link: LinkRule | None = None,
    max_bytes: int = MAX_BYTES,
    cores: int | None = None,
    limits: Limits | None = None,
) -> BimImport:
    """Import the IFC file at ``path`` into ``store`` (idempotent for the same file).
    ``file_name`` is the name to record when ``path`` is a temporary copy (an upload);
    ``limits`` caps what tessellating it may cost (a model over them is refused).

    The file is checked (size, header, the schema its header names) and hashed first.
    When the cache holds a tessellation of this content, written in the current GLB
    format under the same ``limits``, the import takes everything from it and does not
    parse the IFC file, unless ``link`` reads a property (``Pset.Prop``), which only
    the file holds. Otherwise the file is parsed and tessellated and the cache entry
    (re)written; an entry that is damaged or of an older format is written again.
    """
    link = link or LinkRule()
    limits = limits or Limits()
    source = check_ifc(path, max_bytes=max_bytes, shown_as=file_name)
    target = glb_path(cache_dir, source.sha256)
    # the cache answers only for the limits it was tessellated under
    wanted = dataclasses.asdict(limits)
    model: IfcModel | None = None
    hit = _cached(target, wanted)
    if hit is not None:
        found, kept = hit
    else:
        model = open_ifc(source, shown_as=file_name)
        meshes = tessellate(model, cores=cores, limits=limits)
        kept = {"model": {"name": model.name, "schema": model.schema}, "limits": wanted,
                "skipped": skipped(model, meshes, limits)}  # fmt: skip
        gltf.write_glb(meshes, target, name=model.name, extras=kept)
        del meshes  # the triangles are in the file now
        found = gltf.read_elements(target)
    missing = [f"{g}: {why}" for g, why in kept["skipped"].items()]
    elements = _keep_surveys(store, [_element(e) for e in found])
    node = BimModel(
        uid=model_uid(source.sha256),
        name=name or kept["model"]["name"],
        ifc_schema=source.schema,
        sha256=source.sha256,
        file_name=(file_name or path.name)[:300],
        size_bytes=source.size_bytes,
        elements=len(elements),
        triangles=sum(e.triangles or 0 for e in elements),
        imported_at=datetime.now(UTC),
    )
    links, unmatched = _links(store, source, model, found, link, file_name)
    with store.transaction() as tx:
        tx.add_nodes([node, *elements])
        tx.add_edges(Edge("IN_MODEL", e.uid, node.uid) for e in elements)
        tx.add_edges(Edge("MODELLED_BY", m, g) for m, g in sorted(links.items()))
    log.info(
        "imported BIM model %s (%s): %d elements%s, %d linked to machines by %s",
        node.uid,
        file_name or path.name,
        len(elements),
        " (tessellation from the cache)" if hit else "",
        len(links),
        link.describe(),
    )
    return BimImport(node, elements, target, hit is not None, links, unmatched, missing)


def _cached(
    target: Path, limits: dict[str, int]
) -> tuple[list[gltf.GlbElement], dict[str, Any]] | None:
    """The elements and extras of the cache entry at ``target``, when it answers for
    ``limits`` in the current format."""
    if not target.exists():
        return None
    try:
        document = gltf.read_document(target)
        asset = document.get("asset") if isinstance(document, dict) else None
        kept = asset.get("extras") if isinstance(asset, dict) else None
        if not isinstance(kept, dict):
            raise ValidationFailed(f"{target.name} does not say what it was made from")
        if kept.get("format") != gltf.FORMAT or kept.get("limits") != limits:
            log.info("cache entry %s is of another format or limits; tessellating", target)
            return None
        if not isinstance(kept.get("model"), dict) or not isinstance(kept.get("skipped"), dict):
            raise ValidationFailed(f"{target.name} does not say what it was made from")
        return gltf.elements_of(document, target.name), kept
    except ValidationFailed as exc:
        log.warning("cached tessellation %s is unreadable (%s); tessellating again", target, exc)
        return None


def _element(e: gltf.GlbElement) -> BimElement:
    centre = [(lo + hi) / 2.0 for lo, hi in zip(e.lower, e.upper, strict=True)]
    size = [hi - lo for lo, hi in zip(e.lower, e.upper, strict=True)]
    return BimElement(
        uid=e.global_id,
        ifc_class=e.ifc_class,
        name=e.name[:300] if e.name else None,
        storey=e.storey[:300] if e.storey else None,
        x_m=round(centre[0], 6),
        y_m=round(centre[1], 6),
        z_m=round(centre[2], 6),
        length_m=round(size[0], 6),
        width_m=round(size[1], 6),
        height_m=round(size[2], 6),
        triangles=e.triangles,
    )


_SURVEYED = (*(f for f in BimElement.model_fields if f.startswith("as_built_")), "deviation_m")


def _keep_surveys(store: GraphStore, elements: list[BimElement]) -> list[BimElement]:
    """The elements with the as-built values already stored for them: importing a
    model again (or its next revision) must not forget a survey."""
    stored = store.get_many(e.uid for e in elements)
    kept = []
    for element in elements:
        before = stored.get(element.uid)
        if isinstance(before, BimElement) and before.deviation_m is not None:
            kept.append(element.model_copy(update={f: getattr(before, f) for f in _SURVEYED}))
        else:
            kept.append(element)
    return kept


def _links(
    store: GraphStore,
    source: IfcSource,
    model: IfcModel | None,
    drawn: list[gltf.GlbElement],
    rule: LinkRule,
    file_name: str | None,
) -> tuple[dict[str, str], list[str]]:
    """GlobalId per machine uid under ``rule``, and the machine uids left unmatched."""
    ids = {e.global_id for e in drawn}
    if rule.mapping:
        wanted = dict(rule.mapping)
    else:
        values: dict[str, str | None]
        if rule.key == "Name":
            values = {e.global_id: _clean(e.name) for e in drawn}
        elif rule.key in LINK_ATTRIBUTES:
            values = {e.global_id: _clean(e.attributes.get(rule.key)) for e in drawn}
        else:  # a property or another attribute: only the file has it
            model = model or open_ifc(source, shown_as=file_name)
            values = {str(p.GlobalId): _read_key(p, rule.key) for p in model.drawable()
                      if p.GlobalId in ids}  # fmt: skip
        wanted = {}
        for global_id in sorted(values):
            value = values[global_id]
            if value:
                wanted.setdefault(value, global_id)
    machines = {m.uid for m in store.get_many(wanted).values() if isinstance(m, Machine)}
    links = {m: g for m, g in wanted.items() if m in machines and g in ids}
    unmatched = sorted(set(wanted) - set(links)) if rule.mapping else []
    return links, unmatched


def _clean(value: object) -> str | None:
    return str(value).strip() or None if value not in (None, "") else None


def _read_key(product: Any, key: str) -> str | None:
    if "." in key:
        import ifcopenshell.util.element  # noqa: PLC0415 - with ifcopenshell

        pset, prop = key.split(".", 1)
        value = ifcopenshell.util.element.get_psets(product).get(pset, {}).get(prop)
    else:
        value = getattr(product, key, None) if hasattr(product, key) else None
    return _clean(value)


# --- models in the graph ------------------------------------------------------------------


def model_elements(store: GraphStore, uid: str) -> tuple[BimModel, list[BimElement]]:
    """A model and its elements, in GlobalId order."""
    found = store.get_many([uid]).get(uid)
    if not isinstance(found, BimModel):
        raise NotFound(f"BIM model {uid} is not in the graph (import one with `sqems bim import`)")
    members = [e.src for e in store.edges([uid], {"IN_MODEL": Direction.IN})]
    nodes = store.get_many(members)
    return found, sorted(
        (n for n in nodes.values() if isinstance(n, BimElement)), key=lambda n: n.uid
    )


def machines_of(store: GraphStore, elements: Iterable[str]) -> dict[str, str]:
    """The machine uid each of ``elements`` models, where one does."""
    return {e.dst: e.src for e in store.edges(list(elements), {"MODELLED_BY": Direction.IN})}


# --- as built against design --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deviation:
    global_id: str
    name: str | None
    ifc_class: str
    position_m: float
    """Distance between the design and the as-built centre."""
    size_m: float | None
    """The largest difference of an extent, when the survey measured them."""
    design: tuple[float, float, float]
    as_built: tuple[float, float, float]

    @property
    def worst_m(self) -> float:
        return max(self.position_m, self.size_m or 0.0)


@dataclass(frozen=True, slots=True)
class SurveyReport:
    model: str
    tolerance_m: float
    surveyed: int
    within: int
    deviating: list[Deviation]
    """Elements beyond the tolerance, the worst first."""
    unknown: list[str]
    """Survey rows whose GlobalId is not an element of the model."""
    refused: list[str]
    """Rows that could not be read, each with its line number and the reason."""
    not_surveyed: int


def survey(
    store: GraphStore, model: str, text: str, *, tolerance_m: float = DEFAULT_TOLERANCE_M
) -> SurveyReport:
    """Store the as-built values of CSV ``text`` on ``model``'s elements and report the
    deviations beyond ``tolerance_m``."""
    if not (tolerance_m > 0 and math.isfinite(tolerance_m)):
        raise ValidationFailed(f"tolerance must be a positive length in metres, got {tolerance_m}")
    _, elements = model_elements(store, model)
    by_uid = {e.uid: e for e in elements}
    reader = csv.DictReader(io.StringIO(text))
    header = [c.strip() for c in reader.fieldnames or []]
    if header[:4] != list(SURVEY_COLUMNS[:4]):
        raise ValidationFailed(
            f"a survey starts with the columns {', '.join(SURVEY_COLUMNS)}; got {header}"
        )
    updated: dict[str, BimElement] = {}
    deviations: list[Deviation] = []
    unknown: list[str] = []
    refused: list[str] = []
    for number, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        uid = row.get("global_id", "")
        element = by_uid.get(uid)
        if element is None:
            unknown.append(uid)
            continue
        try:
            at = [_number(row, c, required=True) for c in ("x_m", "y_m", "z_m")]
            size = [_number(row, c, required=False) for c in ("length_m", "width_m", "height_m")]
        except ValueError as exc:
            refused.append(f"line {number} ({uid}): {exc}")
            continue
        design_at = (element.x_m or 0.0, element.y_m or 0.0, element.z_m or 0.0)
        design_size = (element.length_m, element.width_m, element.height_m)
        position = math.dist(design_at, at)  # type: ignore[arg-type]
        sizes = [abs(s - d) for s, d in zip(size, design_size, strict=True)
                 if s is not None and d is not None]  # fmt: skip
        d = Deviation(
            global_id=uid,
            name=element.name,
            ifc_class=element.ifc_class,
            position_m=position,
            size_m=max(sizes) if sizes else None,
            design=design_at,
            as_built=(at[0], at[1], at[2]),  # type: ignore[arg-type]
        )
        updated[uid] = element.model_copy(
            update={
                "as_built_x_m": at[0],
                "as_built_y_m": at[1],
                "as_built_z_m": at[2],
                "as_built_length_m": size[0],
                "as_built_width_m": size[1],
                "as_built_height_m": size[2],
                "deviation_m": round(d.worst_m, 6),
            }
        )
        if d.worst_m > tolerance_m:
            deviations.append(d)
    # model_copy skips validation: parse again so a bad survey value cannot be stored
    store.upsert_nodes([BimElement.parse(e.model_dump()) for e in updated.values()])
    deviations.sort(key=lambda d: (-d.worst_m, d.global_id))
    return SurveyReport(
        model=model,
        tolerance_m=tolerance_m,
        surveyed=len(updated),
        within=len(updated) - len(deviations),
        deviating=deviations,
        unknown=unknown,
        refused=refused,
        not_surveyed=len(by_uid) - len(updated),
    )


def _number(row: dict[str, str], column: str, *, required: bool) -> float | None:
    text = row.get(column, "")
    if not text:
        if required:
            raise ValueError(f"{column} is empty")
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value) or (column.endswith(("length_m", "width_m", "height_m"))
                                    and value < 0):  # fmt: skip
        raise ValueError(f"{column} {text!r} is not a length")
    return value
