"""Planted design facts (a bad supplier, a wide machine) and a plan's trial production.

The generator's new planted facts are off by default, and off they change nothing: the
plant of a fixed spec is byte for byte the one generated before they existed (its
digest is pinned below). On, they raise their defect type on the supplier's units and
widen the machine's spread, and ``produce`` realises a plan's first-pass yield from the
same truths.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from sqems.datasets import PlantSpec, generate, layout
from sqems.datasets.plant import Plant
from sqems.errors import ValidationFailed

# the plant PlantSpec(units=3000, seed=7) generated before the bad supplier and the wide
# machine existed
DRIVES_3000_SEED_7 = "613ef9aacbd28e2217d3f1cbc3e31cb3ddf1bf943db191decc6361a14c1c9d32"
BAD = layout.Causes(bad_supplier="SUP-08", bad_supplier_added_p=0.08)
WIDE = layout.Causes(wide_machine="M-SCREW-2", wide_parameter="P-TORQUE", wide_factor=2.5)


def _digest(plant: Plant) -> str:
    """A digest of every table and the ground truth of ``plant``."""
    h = hashlib.sha256()
    for kind, tables in (("nodes", plant.nodes), ("edges", plant.edges)):
        for name in sorted(tables):
            table = tables[name]
            rows = [list(r) for r in table.tuples()]
            h.update(json.dumps([kind, name, table.header, rows], default=str).encode())
    h.update(json.dumps(plant.truth, sort_keys=True, default=str).encode())
    units = plant.truth_units
    h.update(json.dumps([units.header, [list(r) for r in units.tuples()]]).encode())
    return h.hexdigest()


def test_the_planted_facts_off_leave_the_plant_byte_for_byte_as_it_was() -> None:
    assert _digest(generate(PlantSpec(units=3000, seed=7))) == DRIVES_3000_SEED_7
    explicit_off = layout.Causes(bad_supplier=None, wide_machine=None, wide_factor=1.0)
    assert _digest(generate(PlantSpec(units=3000, seed=7), explicit_off)) == DRIVES_3000_SEED_7


def _resin_supplier_of_drives(plant: Plant) -> dict[str, str]:
    """Drive serial → the supplier of the resin lot its batch consumed."""
    supplier_of_lot = {lot: sup for sup, lot in plant.edges["SUPPLIED"].tuples()}
    consumed = plant.edges["CONSUMED_IN"].columns
    resin_of_batch = {
        batch: supplier_of_lot[lot]
        for lot, batch in zip(consumed["src"], consumed["dst"], strict=True)
        if lot.startswith("LOT-RESIN-")
    }
    produced = plant.edges["PRODUCED"].columns
    return {
        unit: resin_of_batch[batch]
        for batch, unit in zip(produced["src"], produced["dst"], strict=True)
        if batch in resin_of_batch
    }


def test_a_bad_supplier_cracks_the_housings_made_from_its_lots() -> None:
    plant = generate(PlantSpec(units=6000, seed=5), BAD)
    fact = next(c for c in plant.truth["causes"] if c["kind"] == "supplier")
    assert fact["uid"] == "SUP-08"
    assert fact["material"] == "MAT-RESIN"
    assert fact["defect_type"] == "DT-CRACKED-HOUSING"
    assert fact["added_probability"] == 0.08
    supplier = _resin_supplier_of_drives(plant)
    exposed = [u for u, s in supplier.items() if s == "SUP-08"]
    assert fact["exposed_units"] == len(exposed) > 300
    cracked = {
        row[0] for row in plant.truth_units.tuples() if "DT-CRACKED-HOUSING" in row[1].split(";")
    }
    assert fact["defective_units"] == sum(u in cracked for u in exposed)
    bad_lot = next(c for c in plant.truth["causes"] if c["kind"] == "material_lot")
    in_bad_lot = {u for b in bad_lot["batches"] for u in _units_of(plant, b)}
    rate = {
        s: np.mean([u in cracked for u, t in supplier.items() if t == s and u not in in_bad_lot])
        for s in ("SUP-07", "SUP-08")
    }
    # baseline 0.001 for SUP-07, 0.081 for SUP-08: far apart for a few hundred units each
    assert rate["SUP-07"] < 0.02
    assert rate["SUP-08"] > 0.04


def _units_of(plant: Plant, batch: str) -> list[str]:
    produced = plant.edges["PRODUCED"].columns
    return [u for b, u in zip(produced["src"], produced["dst"], strict=True) if b == batch]


def test_a_wide_machine_spreads_its_parameter_and_the_others_do_not() -> None:
    plant = generate(PlantSpec(units=6000, seed=5), WIDE)
    fact = next(c for c in plant.truth["causes"] if c["kind"] == "machine_spread")
    assert (fact["uid"], fact["step"], fact["parameter"]) == (
        "M-SCREW-2",
        "STEP-ASM-30",
        "P-TORQUE",
    )
    on = dict(plant.edges["ON"].tuples())
    recorded = plant.edges["RECORDED"].columns
    values: dict[str, list[float]] = {"M-SCREW-1": [], "M-SCREW-2": []}
    for run, par, value in zip(recorded["src"], recorded["dst"], recorded["value"], strict=True):
        if par == "P-TORQUE":
            values[on[run]].append(float(value))
    sigma = (2.6 - 2.0) / 8
    assert fact["runs"] == len(values["M-SCREW-2"])
    assert fact["sigma"] == pytest.approx(2.5 * sigma)
    # sample SDs of ~15 runs each: within a factor ~1.6 of the truth
    assert np.std(values["M-SCREW-1"], ddof=1) < 1.6 * sigma
    assert np.std(values["M-SCREW-2"], ddof=1) > 2.5 * sigma / 1.6
    # nothing else moved: the other parameters are the plant's without the fact
    plain = generate(PlantSpec(units=6000, seed=5))
    assert plain.edges["ON"].columns == plant.edges["ON"].columns
    plain_values = plain.edges["RECORDED"].columns["value"]
    changed = {
        par
        for par, run, a, b in zip(
            recorded["dst"], recorded["src"], recorded["value"], plain_values, strict=True
        )
        if a != b
    }
    assert changed == {"P-TORQUE"}


@pytest.mark.parametrize(
    ("causes", "match"),
    [
        (layout.Causes(bad_supplier="SUP-01", bad_supplier_added_p=0.1), "SUP-01"),
        (layout.Causes(bad_supplier="SUP-08", bad_supplier_added_p=1.5), "probability"),
        (layout.Causes(wide_machine="M-NOPE", wide_parameter="P-TORQUE"), "M-NOPE"),
        (layout.Causes(wide_machine="M-SCREW-2", wide_parameter="P-MELT-TEMP"), "P-MELT-TEMP"),
        (
            layout.Causes(wide_machine="M-SCREW-2", wide_parameter="P-TORQUE", wide_factor=0),
            "wide_factor",
        ),
    ],
)
def test_facts_the_plant_cannot_honour_are_refused(causes: layout.Causes, match: str) -> None:
    with pytest.raises(ValidationFailed, match=match):
        generate(PlantSpec(units=1000, seed=1), causes)
