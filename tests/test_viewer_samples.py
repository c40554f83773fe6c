"""Real-world IFC models, where the shared samples folder holds some (it is never
committed): each reads, stays within the default limits of what a model may cost,
tessellates into one mesh per drawable product with its GlobalId, and round-trips
through the binary glTF cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import IFC_SAMPLES

from sqems.viewer import gltf
from sqems.viewer.ifc import Limits, expand, read_ifc, skipped, tessellate

MODELS = IFC_SAMPLES


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_a_sample_model_tessellates_and_round_trips_through_glb(path: Path, tmp_path: Path) -> None:
    model = read_ifc(path, max_bytes=1 << 40)
    plan = expand(model)
    assert plan.skipped == {} and len(plan.draw) == model.products()
    meshes = tessellate(model)
    assert meshes, f"{path.name}: no product tessellated"
    assert sum(m.triangles for m in meshes) < Limits().triangles
    missed = skipped(model, meshes)
    # real files carry the odd product whose geometry no kernel can build; most must draw
    assert len(missed) <= 0.05 * model.products(), list(missed.items())[:20]
    assert len({m.global_id for m in meshes}) == len(meshes)
    assert all(m.ifc_class.startswith("Ifc") for m in meshes)
    target = tmp_path / "model.glb"
    gltf.write_glb(meshes, target)
    read = gltf.read_elements(target)
    assert [e.global_id for e in read] == [m.global_id for m in meshes if m.triangles]
