"""The web pages' routes: the 3D viewer, the dashboard, their scripts, their npm
packages, and models as binary glTF.

- ``/viewer`` — the 3D viewer (``?line=LINE-PCB`` or ``?bim=BIM-…``);
- ``/dashboard`` — the quality dashboard (today's board, heat map, KPIs, SPC chart);
- ``/investigate`` — a complaint investigated end to end (``?complaint=CMP-…``), with
  the what-if of its fix;
- ``/trace`` — what a batch, lot, machine window or alarm reached (the recall scope)
  and the ranked causes of the defects within it;
- ``/inspect`` — the inspector's phone app (installable): scan or type a code, see what
  it is, report a defect with photos (queued on the phone while offline), hold a batch,
  sign the CAPA tasks; its service worker at ``/inspect/sw.js`` (controlling
  ``/inspect``), its manifest and icon beside it;
- ``/board`` — the engineers' live board (open alarms, CAPAs by state, what is overdue),
  pushed by the ``boardUpdates`` subscription;
- ``/viewer/app/{file}`` — their own scripts and styles (``sqems/viewer/web/``);
- ``/viewer/vendor/{package}/{path}`` — three.js, Chart.js and GraphiQL (with React)
  as npm installed them (``package.json`` and its lock beside the pages; the set-up
  command runs ``npm ci``), never a copy in git; a scoped package is
  ``/viewer/vendor/@scope/name/{path}``;
- ``/viewer/bim/{uid}.glb`` — a BIM model's cached tessellation (viewer role, the API
  key sent as a header like every other call).

Each page comes with a Content-Security-Policy (:func:`page_policy`): scripts, styles
and data from this origin only, its inline scripts (an import map) by their hashes, no
framing.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import re
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.requests import HTTPConnection

from sqems.errors import NotFound, SqemsError, Unauthenticated
from sqems.graph_model.nodes import BimModel
from sqems.graphql.access import Role
from sqems.graphql.middleware import error_body
from sqems.graphql.viewer import bim_cache
from sqems.settings import Settings
from sqems.viewer.bim import glb_path

WEB = Path(__file__).resolve().parent.parent / "viewer" / "web"
"""The page and its scripts (package data)."""
PAGES = {
    "/viewer": "index.html",
    "/dashboard": "dashboard.html",
    "/investigate": "investigate.html",
    "/trace": "trace.html",
    "/inspect": "inspect.html",
    "/board": "board.html",
}
"""Each page's path and its file."""
POLICIES: dict[str, dict[str, str]] = {
    "/inspect": {"scripts": "'wasm-unsafe-eval'", "workers": "'self'"},
}
"""What a page's policy allows beyond :func:`page_policy`'s defaults: the phone app
compiles the barcode decoder's WebAssembly and registers a service worker."""
INSPECT_FILES = {
    "sw.js": ("inspect-sw.js", "text/javascript"),
    "manifest.webmanifest": ("inspect.webmanifest", "application/manifest+json"),
    "icon.svg": ("inspect-icon.svg", "image/svg+xml"),
}
"""The phone app's files served under ``/inspect/``: its service worker (there, with
``Service-Worker-Allowed: /inspect``, so that it may control the page at ``/inspect``),
its web app manifest and its icon."""
APP_FILES = frozenset(p.name for p in WEB.iterdir() if p.suffix in (".js", ".css") and p.is_file())
"""The pages' own scripts and styles: every ``.js`` and ``.css`` file beside them."""
VENDOR = {
    "three": ("build/", "examples/jsm/"),
    "chart.js": ("dist/",),
    "react": ("umd/react.production.min.js",),
    "react-dom": ("umd/react-dom.production.min.js",),
    "graphiql": ("dist/index.umd.js", "dist/style.css"),
    "@graphiql/plugin-explorer": ("dist/index.umd.js", "dist/style.css"),
    "zxing-wasm": ("dist/es/reader/", "dist/es/share.js", "dist/reader/zxing_reader.wasm"),
}
"""The npm packages the pages load, and the parts of each they may (path prefixes):
three's core and add-ons, Chart.js's builds, and GraphiQL (at ``/graphql``) as its
browser build with React's and its query builder's, and the barcode reader (ES module
and its WebAssembly) of the phone app."""

mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("model/gltf-binary", ".glb")


def assets_dir(settings: Settings) -> Path:
    return settings.viewer_assets or WEB / "node_modules"


_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\ssrc=)[^>]*>(.*?)</script>", re.DOTALL)


def page_policy(
    html: str, *, scripts: str = "", styles: str = "", fonts: str = "", workers: str = ""
) -> str:
    """The Content-Security-Policy of the page ``html``: everything from this origin
    only (plus the ``scripts``, ``styles`` and ``fonts`` sources named), its inline
    scripts by the SHA-256 of each, images also as data: and blob: URLs (glTF textures),
    never framed; ``workers`` (the sources of workers and service workers) when named."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(html)
    ]
    directives = [
        "default-src 'self'",
        " ".join(["script-src 'self'", *hashes, scripts]),
        f"style-src 'self' {styles}",
        "img-src 'self' data: blob:",
        f"font-src 'self' {fonts}",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        *([f"worker-src {workers}"] if workers else []),
    ]
    return "; ".join(d.strip() for d in directives)


def _add_page(app: FastAPI, route: str, name: str) -> None:
    policy = page_policy((WEB / name).read_text(), **POLICIES.get(route, {}))
    headers = {"content-security-policy": policy}

    async def page() -> Response:
        return FileResponse(WEB / name, media_type="text/html", headers=headers)

    app.add_api_route(route, page, methods=["GET"], include_in_schema=False)


def _error(status: int, error: SqemsError) -> JSONResponse:
    return JSONResponse(error_body(error), status)


def add_viewer_routes(
    app: FastAPI, settings: Settings, token_of: Callable[[HTTPConnection], str | None]
) -> None:
    """Mount the viewer on ``app``; ``token_of(request)`` reads a request's API key."""
    for route, name in PAGES.items():
        _add_page(app, route, name)

    @app.get("/inspect/{name}", include_in_schema=False)
    async def inspect_file(name: str) -> Response:
        if name not in INSPECT_FILES:
            return _error(404, NotFound(f"the phone app has no file {name}"))
        file, media_type = INSPECT_FILES[name]
        # revalidated on every visit (the worker caches them for offline use); the
        # worker may control the page one level above its folder
        headers = {"cache-control": "no-cache"}
        if name == "sw.js":
            headers["service-worker-allowed"] = "/inspect"
        return FileResponse(WEB / file, media_type=media_type, headers=headers)

    @app.get("/viewer/app/{name}", include_in_schema=False)
    async def app_file(name: str) -> Response:
        if name not in APP_FILES:
            return _error(404, NotFound(f"the viewer has no file {name}"))
        return FileResponse(WEB / name)

    @app.get("/viewer/vendor/{package}/{path:path}", include_in_schema=False)
    async def vendor(package: str, path: str) -> Response:
        if package.startswith("@"):  # a scoped package: /viewer/vendor/@scope/name/file
            name, _, path = path.partition("/")
            package = f"{package}/{name}"
        if package not in VENDOR:
            return _error(404, NotFound(f"the pages load no package {package}"))
        root = (assets_dir(settings) / package).resolve()
        if not root.is_dir():
            return _error(
                503,
                NotFound(
                    f"{package} is not installed on the server: run `./dev demo` (or `npm ci` "
                    "in sqems/viewer/web) to install the pages' npm packages"
                ),
            )
        target = (root / path).resolve()
        # the allowed parts are judged on the resolved path: "dist/../package.json"
        # starts like one but is not in it
        inside = target.is_relative_to(root) and target.relative_to(root).as_posix()
        if not (inside and inside.startswith(VENDOR[package]) and target.is_file()):
            return _error(404, NotFound(f"{package} has no file {path}"))
        return FileResponse(target, headers={"cache-control": "public, max-age=86400"})

    @app.get("/viewer/bim/{uid}.glb", include_in_schema=False)
    async def glb(uid: str, request: Request) -> Response:
        principal = request.app.state.access.verify(token_of(request))
        if principal is None or principal.role < Role.VIEWER:
            return _error(401, Unauthenticated("a valid API key is required for BIM models"))
        store = request.app.state.store
        found = (await anyio.to_thread.run_sync(lambda: store.get_many([uid]))).get(uid)
        if not isinstance(found, BimModel):
            return _error(404, NotFound(f"BIM model {uid} is not in the graph"))
        path = glb_path(bim_cache(settings), found.sha256)
        if not path.is_file():
            return _error(
                404,
                NotFound(
                    f"the tessellation of {uid} is not in this server's cache; "
                    f"import {found.file_name} again"
                ),
            )
        return FileResponse(path, media_type="model/gltf-binary")
