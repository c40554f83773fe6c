"""The twin's step models do not turn clustered defects into parameter effects.

A bad material lot makes the defects of the few batches it fed cluster; a model that
counts every unit as independent evidence pins that cluster on whatever parameter or
shift those batches happen to share. The product's model (beta-binomial runs) must
leave every coefficient without a planted effect with an interval over zero, where the
binomial model of independent units (the model as it was) did not. The full figures
over ten seeds and a second plant shape: ``benchmarks/twin_null.py``.
"""

from __future__ import annotations

import pytest

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore
from sqems.twin.fitting import step_data
from sqems.twin.line import build_twin
from sqems.twin.quality import QualityModel, fit


def _null_coefficients(model: QualityModel, planted: set[str]) -> dict[str, bool]:
    """Each beta and gamma of a parameter without a planted effect: whether its 94 %
    interval excludes zero."""
    out = {}
    for c in model.coefficients():
        parameter = model.parameter_of(c.name)
        if parameter is not None and parameter not in planted:
            out[c.name] = not c.covers(0.0)
    return out


@pytest.mark.parametrize(
    ("shape", "seed", "line", "step"),
    [
        # the bad resin lot's batches at the moulding step: the binomial model took
        # them for effects of melt temperature and the night shift
        ("drives", 9, "LINE-ASM", "STEP-ASM-10"),
        # a plant shaped differently: the bad separator lot's cells, which the binomial
        # model put down to the night shift at stacking
        ("battery", 1, "LINE-CELL", "STEP-CELL-10"),
    ],
)
def test_a_bad_lots_cluster_is_not_read_as_parameter_effects(
    shape: str, seed: int, line: str, step: str
) -> None:
    plant = generate(PlantSpec(shape=shape, units=10_000, seed=seed))  # type: ignore[arg-type]
    with EmbeddedGraphStore(None) as store:
        load_plant(store, plant_sections(plant))
        twin = build_twin(store, line)
    data = step_data(twin.step(step))
    settings = {"draws": 2000, "tune": 1000, "chains": 2, "seed": 1, "target_accept": 0.99}
    model = fit(data, **settings)  # type: ignore[arg-type]
    independent = fit(data, run_effects=False, **settings)  # type: ignore[arg-type]
    assert model.diagnostics.ok, model.diagnostics.problems
    assert model.overdispersed
    rho = next(c for c in model.coefficients() if c.name == "rho")
    assert rho.hdi_low > 0.0, rho  # the cluster is seen as runs that differ
    found = _null_coefficients(model, set())
    before = _null_coefficients(independent, set())
    assert not any(found.values()), {k for k, v in found.items() if v}
    assert any(before.values()), before  # what the binomial model made of it
