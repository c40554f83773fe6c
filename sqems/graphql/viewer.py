"""GraphQL fields of the 3D viewer: line scenes, BIM models and their import.

``lineScene`` adapts :func:`sqems.viewer.scene.line_scene` one to one. ``bimModel``
gives a model's metadata, its element-to-machine links, the linked machines with their
status overlay (so a BIM view colours and labels them as a line view does) and where
its binary glTF is served (``/viewer/bim/{uid}.glb``). ``spcRules`` says in words what
each run rule an alarm may name looks for. ``importBim`` takes an IFC file as a GraphQL
multipart upload, refused past ``SQEMS_BIM_MAX_BYTES`` while it streams in.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import strawberry
from strawberry.file_uploads import Upload
from strawberry.types import Info

from sqems import localtime
from sqems.analysis.rules import RULES
from sqems.errors import ValidationFailed
from sqems.graph_model.nodes import BimElement, BimModel
from sqems.graph_model.store import GraphStore
from sqems.graphql.access import Role
from sqems.graphql.context import Context
from sqems.graphql.generate import Adapted, adapted, derived
from sqems.graphql.types import Connection, Node, paginate, site_zone, to_graphql
from sqems.settings import Settings
from sqems.viewer import bim
from sqems.viewer import scene as sc

UPLOAD_CHUNK = 1 << 20

SceneStatus = strawberry.enum(sc.Status, name="SceneStatus", description="An object's state.")


def bim_cache(settings: Settings) -> Path:
    return bim.cache_of(settings.data_dir)


@strawberry.type(description="A point or an extent in metres (z up).")
class Vector3:
    x: float
    y: float
    z: float

    @classmethod
    def of(cls, v: tuple[float, float, float]) -> Vector3:
        return cls(x=v[0], y=v[1], z=v[2])


@adapted(
    sc.Overlay,
    description="The status overlay of a scene object.",
    descriptions={
        "colour": "CSS colour of the status.",
        "utilisation": "Mean utilisation of the machine's station in the scenario, if one "
        "was named.",
    },
)
class SceneOverlay(Adapted):
    pass


@adapted(sc.SceneParameter, description="A parameter a machine's steps control.")
class SceneParameterView(Adapted):
    pass


@adapted(sc.SceneAlarm, description="An open alarm of a machine, its rule said in words.")
class SceneAlarmView(Adapted):
    pass


@strawberry.type(description="An SPC run rule: its code, its title and what it looks for.")
class SpcRule:
    name: str
    title: str
    description: str


@adapted(
    sc.SceneObject,
    description="A machine placed in a line scene.",
    descriptions={
        "bim_element": "GlobalId of its BIM element.",
        "parameters": "The parameters its steps control (each has a control chart).",
        "alarms": "Its open alarms, newest first.",
        "batches": "The last batches that ran on it, newest first.",
    },
)
class SceneObjectView(Adapted):
    position: Vector3 = derived(
        lambda o: Vector3.of(o.position), description="Centre of its footprint on the floor."
    )
    size: Vector3 = derived(lambda o: Vector3.of(o.size), description="Length, width, height.")


@strawberry.type(description="The floor's extent in metres.")
class Floor:
    x_min: float
    y_min: float
    x_max: float
    y_max: float


def _floor(scene: sc.Scene) -> Floor:
    x0, y0, x1, y1 = scene.floor
    return Floor(x_min=x0, y_min=y0, x_max=x1, y_max=y1)


@adapted(
    sc.Scene,
    name="LineScene",
    description="A line's machines in 3D, with their status.",
    exclude=("label", "window"),
    after={"scenario": "site", "floor": "scenario"},
)
class LineSceneView(Adapted):
    floor: Floor = derived(_floor)


@strawberry.type(description="A machine and the BIM element that models it.")
class BimLink:
    machine: str
    element: str


@dataclass(frozen=True, slots=True)
class _Loaded:
    model: BimModel
    elements: list[BimElement]
    links: dict[str, str]


@strawberry.type(description="An imported IFC model, its links to machines and its glTF.")
class BimModelView:
    uid: str
    name: str
    ifc_schema: str
    file_name: str
    sha256: str
    size_bytes: float
    element_count: int
    triangles: int
    imported_at: datetime
    glb_url: str = strawberry.field(description="Its binary glTF (send the API key with it).")
    links: list[BimLink]
    loaded: strawberry.Private[_Loaded]

    @strawberry.field(description="Elements in GlobalId order, a page at a time.")
    def elements(
        self, info: Info[Context, None], first: int = 100, after: str | None = None
    ) -> Connection[Node]:
        nodes = [to_graphql(e) for e in self.loaded.elements]
        return paginate(nodes, first, after, info.context.settings.api_max_page_size)

    @strawberry.field(
        description="The machines its elements model, with their status overlay as in a line scene."
    )
    async def machines(self, info: Info[Context, None]) -> list[SceneObjectView]:
        ctx = info.context
        found = await ctx.call(sc.machine_objects, ctx.store, list(self.loaded.links))
        return [SceneObjectView.of(o) for o in found]

    @strawberry.field(description="Elements whose survey deviates beyond the tolerance.")
    def deviating(self, tolerance_m: float = bim.DEFAULT_TOLERANCE_M) -> list[str]:
        return [e.uid for e in self.loaded.elements
                if e.deviation_m is not None and e.deviation_m > tolerance_m]  # fmt: skip

    @classmethod
    def of(cls, loaded: _Loaded) -> BimModelView:
        m = loaded.model
        return cls(uid=m.uid, name=m.name, ifc_schema=m.ifc_schema.value, file_name=m.file_name,
                   sha256=m.sha256, size_bytes=m.size_bytes, element_count=m.elements,
                   triangles=m.triangles, imported_at=m.imported_at,
                   glb_url=f"/viewer/bim/{m.uid}.glb",
                   links=[BimLink(machine=k, element=v) for k, v in sorted(loaded.links.items())],
                   loaded=loaded)  # fmt: skip


@strawberry.type(description="What an IFC import did.")
class BimImportResult:
    model: BimModelView
    cached: bool = strawberry.field(description="This file was tessellated before.")
    linked: int
    unmatched: list[str] = strawberry.field(description="Machines the links named but missed.")
    skipped: list[str] = strawberry.field(
        description="Products left out of the 3D model, each as 'GlobalId: reason'."
    )


@strawberry.input(description="An explicit link of a machine to a BIM element.")
class BimLinkInput:
    machine: str
    element: str = strawberry.field(description="The element's IFC GlobalId.")


def load_model(store: GraphStore, uid: str) -> _Loaded:
    model, elements = bim.model_elements(store, uid)
    machines = bim.machines_of(store, [e.uid for e in elements])
    return _Loaded(model, elements, {m: g for g, m in machines.items()})


@strawberry.type
class ViewerQuery:
    @strawberry.field(description="A line's machines in 3D with their status overlay.")
    async def line_scene(
        self,
        info: Info[Context, None],
        line: str,
        start: datetime | None = None,
        end: datetime | None = None,
        scenario: Annotated[
            str | None,
            strawberry.argument(description="A what-if scenario whose utilisation to show."),
        ] = None,
    ) -> LineSceneView:
        ctx = info.context
        ctx.require(Role.VIEWER)
        window = localtime.window(start, end, site_zone(info)) if start or end else None
        found = await ctx.call(
            lambda: sc.line_scene(ctx.store, line, window=window, scenario=scenario)
        )
        return LineSceneView.of(found)

    @strawberry.field(description="An imported BIM model with its links to machines.")
    async def bim_model(self, info: Info[Context, None], uid: str) -> BimModelView:
        ctx = info.context
        ctx.require(Role.VIEWER)
        return BimModelView.of(await ctx.call(load_model, ctx.store, uid))

    @strawberry.field(description="The SPC run rules an alarm may name, with what each means.")
    def spc_rules(self, info: Info[Context, None]) -> list[SpcRule]:
        info.context.require(Role.VIEWER)
        return [SpcRule(name=r.name, title=r.title, description=r.description)
                for r in RULES.values()]  # fmt: skip

    @strawberry.field(description="Every imported BIM model, newest first.")
    async def bim_models(self, info: Info[Context, None]) -> list[BimModelView]:
        ctx = info.context
        ctx.require(Role.VIEWER)

        def answer() -> list[_Loaded]:
            models = [n for n in ctx.store.find("BimModel") if isinstance(n, BimModel)]
            models.sort(key=lambda m: m.imported_at, reverse=True)
            return [load_model(ctx.store, m.uid) for m in models]

        return [BimModelView.of(m) for m in await ctx.call(answer)]


def upload_name(upload: Any) -> str:
    """The file name the client gave, without any directories."""
    return Path(getattr(upload, "filename", None) or "model.ifc").name[:300]


def receive_upload(upload: Any, directory: Path, limit: int) -> Path:
    """Copy an upload (already received by the server's form parser) into a file under
    ``directory``, refusing it past ``limit`` bytes."""
    name = upload_name(upload)
    source = getattr(upload, "file", None)
    if source is None:
        raise ValidationFailed(
            "the file must be sent as a part of a multipart request (the GraphQL multipart "
            "request spec: operations, map, then the file), not as a value"
        )
    directory.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept past this function
        dir=directory, prefix="upload-", suffix=".ifc", delete=False
    )
    target = Path(handle.name)
    received = 0
    try:
        with handle:
            source.seek(0)
            while chunk := source.read(UPLOAD_CHUNK):
                received += len(chunk)
                if received > limit:
                    raise ValidationFailed(
                        f"upload {name} is over the limit of {limit / 2**20:.0f} MiB "
                        "(SQEMS_BIM_MAX_BYTES)"
                    )
                handle.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def import_upload(
    ctx: Context,
    upload: Any,
    name: str | None,
    link_key: str,
    links: list[BimLinkInput] | None,
) -> BimImportResult:
    """Import an uploaded file; the copy is deleted after (the cache keeps its
    tessellation)."""
    file_name = upload_name(upload)
    path = receive_upload(upload, bim_cache(ctx.settings) / "incoming", ctx.settings.bim_max_bytes)
    try:
        rule = bim.LinkRule(key=link_key, mapping={lk.machine: lk.element for lk in links or []})
        done = bim.import_bim(
            ctx.store,
            path,
            cache_dir=bim_cache(ctx.settings),
            name=name,
            file_name=file_name,
            link=rule,
            max_bytes=ctx.settings.bim_max_bytes,
            limits=bim.limits_of(ctx.settings),
        )
    finally:
        path.unlink(missing_ok=True)
    loaded = load_model(ctx.store, done.model.uid)
    return BimImportResult(model=BimModelView.of(loaded), cached=done.cached,
                           linked=len(done.links), unmatched=done.unmatched,
                           skipped=done.skipped)  # fmt: skip


__all__ = [
    "BimImportResult",
    "BimLinkInput",
    "BimModelView",
    "LineSceneView",
    "SpcRule",
    "Upload",
    "ViewerQuery",
    "bim_cache",
    "import_upload",
    "receive_upload",
    "upload_name",
]
