"""Viewer benchmark: IFC load and tessellation, serial beside parallel, in the same run.

Models: two generated halls written with ifcopenshell's API — *extrusions*, 5,000
elements (``--elements``: walls, slab, columns, 60 machines, roof purlins), and
*openings*, 1,000 elements (``--opening-elements``: the same shell and machines, then
partition walls each with a door and a window cut out, so the kernel runs boolean
operations as on most real building models, at about 10 ms an element) — and every
``.ifc`` file of the real samples folder, where it exists (``ifc/`` under
``SQEMS_SAMPLES_DIR``, else ``../shared/samples/``, as the tests find it). For each model:

1. **load**: ``read_ifc`` (size and header checks, ifcopenshell's parser, SHA-256);
2. **tessellation** with each geometry kernel (``hybrid-cgal-simple-opencascade``,
   the default, and ``opencascade``) on 1 thread, one per core and two per core, in
   turn, ``--repeats`` rounds, medians, and each run's speed-up over 1 thread;
3. **triangles** and products, and writing the binary glTF (time and size): GLB bytes
   over IFC bytes beside the same ratio for the layout written before the GLB was
   indexed (every triangle's corners unshared, each with its face's normal; rebuilt
   here by :func:`unshared_glb_bytes` as the baseline);
4. **import**: ``import_bim`` into an empty embedded store with an empty cache (parse,
   tessellate, write the GLB, store the elements), beside the same import again from
   the cache (checks, SHA-256 and the GLB's JSON only; the IFC is not parsed).

    python benchmarks/viewer.py
    python benchmarks/viewer.py --elements 2000 --opening-elements 300 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from figures import median_seconds

from sqems.datasets.building import write_building_ifc
from sqems.graph_model.embedded import EmbeddedGraphStore
from sqems.graph_model.nodes import Machine
from sqems.viewer import gltf
from sqems.viewer.bim import import_bim
from sqems.viewer.ifc import LIBRARIES, IfcModel, Mesh, read_ifc, tessellate

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("SQEMS_SAMPLES_DIR", REPO.parent / "shared" / "samples")) / "ifc"
"""The real IFC models, found as tests/conftest.py finds them."""


def unshared_glb_bytes(meshes: Sequence[Mesh]) -> int:
    """The size of the GLB the writer made before it was indexed: per product one
    material, every triangle's three corners and three copies of its normal as floats,
    a bufferView and accessor per attribute (the baseline of the size ratio)."""
    blob = 0
    parts: list[dict[str, Any]] = []
    for mesh in meshes:
        if not mesh.triangles:
            continue
        corners = mesh.vertices[mesh.faces.reshape(-1)].astype(np.float32)
        a, b, c = (corners[i::3].astype(np.float64) for i in range(3))
        normals = np.repeat(np.cross(b - a, c - a), 3, axis=0).astype(np.float32)
        blob += corners.nbytes + normals.nbytes
        parts.append({
            "accessors": [{"bufferView": 0, "componentType": 5126, "count": len(corners),
                           "type": "VEC3", "min": corners.min(axis=0).tolist(),
                           "max": corners.max(axis=0).tolist()}] * 2,
            "views": [{"buffer": 0, "byteOffset": blob, "byteLength": corners.nbytes,
                       "target": 34962}] * 2,
            "mesh": {"name": mesh.global_id, "primitives": [{"attributes": {"POSITION": 0,
                     "NORMAL": 1}, "material": 0}]},
            "node": {"name": mesh.global_id, "mesh": 0,
                     "extras": {"globalId": mesh.global_id, "ifcClass": mesh.ifc_class,
                                "name": mesh.name, "storey": mesh.storey,
                                "triangles": mesh.triangles}},
        })  # fmt: skip
    text = len(json.dumps(parts, separators=(",", ":")))
    return 12 + 8 + text + 8 + blob


def hall(folder: Path, elements: int, kind: str) -> Path:
    """A hall of ``elements`` products: 60 machines in rows, its shell, then purlins
    (``extrusions``) or partitions with a door and a window each (``openings``)."""
    machines = [
        Machine(uid=f"M-{i:03d}", name=f"Machine {i}", x_m=6.0 * (i % 12), y_m=5.0 * (i // 12),
                rotation_deg=90.0 * (i % 2), length_m=4.0, width_m=2.0, height_m=2.2)
        for i in range(60)
    ]  # fmt: skip
    path = folder / f"hall-{kind}-{elements}.ifc"
    started = time.perf_counter()
    write_building_ifc(path, machines)
    more = max(0, elements - read_ifc(path).products())
    if kind == "openings":
        write_building_ifc(path, machines, partitions=more)
    else:
        write_building_ifc(path, machines, filler=more)
    print(f"wrote {path.name} in {time.perf_counter() - started:.1f} s")
    return path


def tessellation(model: IfcModel, repeats: int, runs: list[tuple[str, int]]) -> dict[Any, Any]:
    """Median seconds and speed-up over the first run of each (kernel, threads)."""
    times: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    meshes: list[Any] = []
    for _ in range(repeats):  # in turn, so every run sees the same machine load
        for library, threads in runs:
            started = time.perf_counter()
            made = tessellate(model, cores=threads, library=library)
            if library == LIBRARIES[0]:  # the GLB is written from the default kernel's
                meshes = made
            times[(library, threads)].append(time.perf_counter() - started)
    found: dict[Any, Any] = {"meshes": meshes}
    for (library, threads), seconds in times.items():
        serial = times[(library, 1)]
        found[(library, threads)] = (
            statistics.median(seconds),
            statistics.median(s / t for s, t in zip(serial, seconds, strict=True)),
        )
    return found


def imports(path: Path, repeats: int) -> tuple[float, float, int]:
    """Median seconds of a first import (empty cache) and of an import from the cache,
    and the GLB's bytes."""
    firsts, again = [], []
    size = 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp)
            started = time.perf_counter()
            done = import_bim(EmbeddedGraphStore(None), path, cache_dir=cache, max_bytes=1 << 40)
            firsts.append(time.perf_counter() - started)
            size = done.glb.stat().st_size
            started = time.perf_counter()
            cached = import_bim(EmbeddedGraphStore(None), path, cache_dir=cache,
                                max_bytes=1 << 40)  # fmt: skip
            again.append(time.perf_counter() - started)
            assert cached.cached
    return statistics.median(firsts), statistics.median(again), size


def measure(path: Path, repeats: int, cores: int) -> dict[Any, Any]:
    loads = []
    for _ in range(repeats):
        started = time.perf_counter()
        model = read_ifc(path, max_bytes=1 << 40)
        loads.append(time.perf_counter() - started)
    runs = [(lib, n) for lib in LIBRARIES[:2] for n in sorted({1, cores, 2 * cores})]
    found = tessellation(model, repeats, runs)
    meshes = found.pop("meshes")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.glb"
        write_s = median_seconds(lambda: gltf.write_glb(meshes, target), repeats)
        size = target.stat().st_size
    first_s, cached_s, _ = imports(path, repeats)
    return {
        "bytes": path.stat().st_size,
        "products": model.products(),
        "meshes": sum(1 for m in meshes if m.triangles),
        "triangles": sum(m.triangles for m in meshes),
        "load": statistics.median(loads),
        "runs": found,
        "glb_s": write_s,
        "glb_bytes": size,
        "old_glb_bytes": unshared_glb_bytes(meshes),
        "import_s": first_s,
        "cached_s": cached_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=5_000)
    parser.add_argument("--opening-elements", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{cores} cores; medians of {args.repeats} rounds; serial and parallel in turn\n")
    with tempfile.TemporaryDirectory() as tmp:
        models = [hall(Path(tmp), args.elements, "extrusions"),
                  hall(Path(tmp), args.opening_elements, "openings")]  # fmt: skip
        samples = sorted(SAMPLES.glob("*.ifc")) if SAMPLES.is_dir() else []
        if not samples:
            print(f"no sample models under {SAMPLES}")
        models += samples
        rows = [(p.name, measure(p, args.repeats, cores)) for p in models]
    for name, r in rows:
        print(f"\n{name}: {r['bytes'] / 2**20:.1f} MiB, {r['meshes']:,} products drawn "
              f"of {r['products']:,}, {r['triangles']:,} triangles; load {r['load']:.2f} s; "
              f"GLB {r['glb_bytes'] / 2**20:.2f} MiB written in {r['glb_s']:.2f} s")  # fmt: skip
        print(
            f"  GLB / IFC bytes {r['glb_bytes'] / r['bytes']:.2f}x "
            f"(unshared layout before: {r['old_glb_bytes'] / r['bytes']:.2f}x; target <= 1.5x)"
        )
        print(f"  import {r['import_s']:.2f} s; again from the cache {r['cached_s']:.3f} s")
        print(f"  {'kernel':32} {'threads':>7} {'seconds':>8} {'vs 1 thread':>11}")
        for (library, threads), (seconds, speedup) in r["runs"].items():
            print(f"  {library:32} {threads:7} {seconds:8.2f} {speedup:10.2f}x")
    print(f"\n{'model':36} {'import s':>9} {'cached s':>9} {'GLB/IFC':>8} {'before':>8}")
    for name, r in rows:
        print(
            f"{name:36} {r['import_s']:9.2f} {r['cached_s']:9.3f} "
            f"{r['glb_bytes'] / r['bytes']:7.2f}x {r['old_glb_bytes'] / r['bytes']:7.2f}x"
        )


if __name__ == "__main__":
    main()
