"""Viewer benchmark: IFC load and tessellation, serial beside parallel, in the same run.

Models: two generated halls written with ifcopenshell's API — *extrusions*, 5,000
elements (``--elements``: walls, slab, columns, 60 machines, roof purlins), and
*openings*, 1,000 elements (``--opening-elements``: the same shell and machines, then
partition walls each with a door and a window cut out, so the kernel runs boolean
operations as on most real building models, at about 10 ms an element) — and every
``.ifc`` file under ``../shared/samples/ifc/`` where that folder exists. For each model:

1. **load**: ``read_ifc`` (size and header checks, ifcopenshell's parser, SHA-256);
2. **tessellation** with each geometry kernel (``hybrid-cgal-simple-opencascade``,
   the default, and ``opencascade``) on 1 thread, one per core and two per core, in
   turn, ``--repeats`` rounds, medians, and each run's speed-up over 1 thread;
3. **triangles** and products, and writing the binary glTF (time and size).

    python benchmarks/viewer.py
    python benchmarks/viewer.py --elements 2000 --opening-elements 300 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from figures import median_seconds

from sqems.datasets.building import write_building_ifc
from sqems.graph_model.nodes import Machine
from sqems.viewer import gltf
from sqems.viewer.ifc import LIBRARIES, IfcModel, read_ifc, tessellate

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples" / "ifc"


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
            meshes = tessellate(model, cores=threads, library=library)
            times[(library, threads)].append(time.perf_counter() - started)
    found: dict[Any, Any] = {"meshes": meshes}
    for (library, threads), seconds in times.items():
        serial = times[(library, 1)]
        found[(library, threads)] = (
            statistics.median(seconds),
            statistics.median(s / t for s, t in zip(serial, seconds, strict=True)),
        )
    return found


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
    return {
        "bytes": path.stat().st_size,
        "products": model.products(),
        "meshes": len(meshes),
        "triangles": sum(m.triangles for m in meshes),
        "load": statistics.median(loads),
        "runs": found,
        "glb_s": write_s,
        "glb_bytes": size,
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
              f"GLB {r['glb_bytes'] / 2**20:.1f} MiB written in {r['glb_s']:.2f} s")  # fmt: skip
        print(f"  {'kernel':32} {'threads':>7} {'seconds':>8} {'vs 1 thread':>11}")
        for (library, threads), (seconds, speedup) in r["runs"].items():
            print(f"  {library:32} {threads:7} {seconds:8.2f} {speedup:10.2f}x")


if __name__ == "__main__":
    main()
