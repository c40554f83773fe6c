"""The master data every plant shape writes the same way: its suppliers, materials and
defect types, each line's product with its steps, parameters and machines, a plain
operator roster and the customers.

The drives, battery and pump generators differ in their layouts (passed in) and in what
they add of their own (a site's country and time zone, which parts go into what, the pump
plant's operators and their qualifications); the rows and their order are what each
generator wrote before, so a seed gives the same plant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sqems.datasets import layout
from sqems.datasets.layout import DefectTypeSpec, LineSpec

if TYPE_CHECKING:
    from sqems.datasets.plant import Plant

Material = tuple[str, str, float, tuple[str, ...]]
"""A material's name, unit, use per unit of its product, and its suppliers."""


def emit_catalogue(
    plant: Plant,
    suppliers: Mapping[str, tuple[str, str]],
    materials: Mapping[str, Material],
    critical: Sequence[str],
    defect_types: Mapping[str, DefectTypeSpec],
    origins: Mapping[str, str],
) -> None:
    """Approved suppliers (name, country), materials (``critical`` ones marked), the
    defect types and the step each arises at."""
    plant.add_nodes(
        "Supplier",
        uid=list(suppliers),
        name=[v[0] for v in suppliers.values()],
        country=[v[1] for v in suppliers.values()],
        status=["approved"] * len(suppliers),
    )
    plant.add_nodes(
        "Material",
        uid=list(materials),
        name=[v[0] for v in materials.values()],
        unit=[v[1] for v in materials.values()],
        critical=["true" if k in critical else "false" for k in materials],
    )
    plant.add_nodes(
        "DefectType",
        uid=[d.uid for d in defect_types.values()],
        name=[d.name for d in defect_types.values()],
        category=[d.category.value for d in defect_types.values()],
    )
    plant.add_edges("ORIGINATES_AT", src=list(origins), dst=list(origins.values()))


def emit_line(
    plant: Plant,
    line: LineSpec,
    site_uid: str,
    revision: str,
    kind: str,
    materials: Mapping[str, Material],
) -> None:
    """The line's product (``kind`` finished or subassembly, at ``revision``), the line
    at the site, and the materials its product uses."""
    plant.add_nodes(
        "Product", uid=[line.product], name=[line.product_name], revision=[revision], kind=[kind]
    )
    plant.add_nodes("Line", uid=[line.uid], name=[line.name])
    plant.add_edges("PART_OF", src=[line.uid], dst=[site_uid])
    for mat in line.materials:
        plant.add_edges("USES", src=[line.product], dst=[mat], quantity=[f"{materials[mat][2]:g}"])


def emit_steps(plant: Plant, line: LineSpec, line_no: int) -> None:
    """The line's process steps with their parameters and machines, the machines placed
    on a plausible floor: lines 8 m apart, steps 6 m apart, parallel machines side by
    side."""
    for step_no, step in enumerate(line.steps):
        plant.add_nodes(
            "ProcessStep", uid=[step.uid], name=[step.name], sequence=[str(step.sequence)]
        )
        plant.add_edges("STEP_OF", src=[step.uid], dst=[line.product])
        for par in step.params:
            plant.add_nodes(
                "Parameter",
                uid=[par.uid],
                name=[par.name],
                unit=[par.unit],
                lsl=[f"{par.lsl:g}"],
                usl=[f"{par.usl:g}"],
                target=[f"{par.target:g}"],
                critical=["true" if par.critical else "false"],
            )
            plant.add_edges("PARAMETER_OF", src=[par.uid], dst=[step.uid])
        for m_no, machine in enumerate(step.machines):
            plant.add_nodes(
                "Machine",
                uid=[machine],
                name=[f"{step.name} {m_no + 1}"],
                kind=[step.machine_kind],
                x_m=[f"{6.0 * step_no:g}"],
                y_m=[f"{8.0 * line_no + 3.0 * m_no:g}"],
                rotation_deg=["0"],
                length_m=["4"],
                width_m=["2"],
                height_m=["2.2"],
            )
            plant.add_edges("PART_OF", src=[machine], dst=[line.uid])
            plant.add_edges("CAN_PERFORM", src=[machine], dst=[step.uid])


def emit_operators(plant: Plant) -> None:
    """A plain roster, every operator qualified: as many per shift as the layout says."""
    n_ops = layout.OPERATORS_PER_SHIFT * len(layout.SHIFTS)
    plant.add_nodes(
        "Operator",
        uid=[f"OP-{i + 1:03d}" for i in range(n_ops)],
        name=[f"Operator {i + 1:03d}" for i in range(n_ops)],
        qualified=["true"] * n_ops,
    )


def emit_customers(
    plant: Plant, first: Sequence[str], second: Sequence[str], stride: int, countries: Sequence[str]
) -> None:
    """The customers, named by pairing ``first`` words in turn with every ``stride``-th
    of ``second``, in ``countries`` in turn."""
    n = layout.N_CUSTOMERS
    plant.add_nodes(
        "Customer",
        uid=[f"CUST-{i + 1:03d}" for i in range(n)],
        name=[f"{first[i % len(first)]} {second[(i * stride) % len(second)]}" for i in range(n)],
        country=[countries[i % len(countries)] for i in range(n)],
    )
