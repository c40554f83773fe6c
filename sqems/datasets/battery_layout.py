"""The fixed layout of the synthetic battery plant: a three-level bill of materials.

Three lines at one site feed each other. The cell line makes prismatic cells; the
module line welds four cells into a module; the pack line mounts two modules in a
pack, the product that ships and that customers complain about. Every number a
planted cause depends on lives here, so the ground truth and the generator cannot
disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqems.datasets.layout import DefectTypeSpec, LineSpec, ParamSpec, StepSpec
from sqems.graph_model.nodes import Category6M, InspectionMethod

SITE = ("SITE-B1", "Battery plant")

CELLS_PER_MODULE = 4
MODULES_PER_PACK = 2
SPARE = 0.06
PART_BUFFER_BATCHES = 3
"""Parts wait in a buffer of about this many of their line's batches before assembly:
an assembly takes parts from any of them, not strictly first in, first out."""
"""Share of extra cells and modules made beyond what the next level consumes, to
cover those scrapped at test."""

WELD_POWER = ParamSpec("P-WELD-POWER", "laser weld power", "W", 2800, 3200, 3000, True)

CELL_LINE = LineSpec(
    "LINE-CELL",
    "Cell line",
    "PRD-CELL",
    "Prismatic cell 50 Ah",
    250,
    20,
    (
        StepSpec(
            "STEP-CELL-10",
            "Electrode stacking",
            1,
            ("M-STACK-1", "M-STACK-2"),
            "Z-fold stacker",
            (ParamSpec("P-STACK-OVERHANG", "anode overhang", "mm", 0.5, 1.5, 1.0),),
        ),
        StepSpec(
            "STEP-CELL-20",
            "Electrolyte filling",
            2,
            ("M-FILL-1", "M-FILL-2"),
            "filling machine",
            (ParamSpec("P-FILL-MASS", "electrolyte mass", "g", 180, 190, 185, True),),
        ),
        StepSpec(
            "STEP-CELL-30",
            "Formation and cell test",
            3,
            ("M-FORM-1",),
            "formation rack",
            inspection=InspectionMethod.FUNCTIONAL,
        ),
    ),
    ("MAT-CATHODE", "MAT-ANODE", "MAT-SEPARATOR", "MAT-ELECTROLYTE"),
)

MODULE_LINE = LineSpec(
    "LINE-MOD",
    "Module line",
    "PRD-MODULE",
    "Battery module 4s",
    60,
    45,
    (
        StepSpec(
            "STEP-MOD-10",
            "Cell stacking and compression",
            1,
            ("M-COMP-1", "M-COMP-2"),
            "compression press",
            (ParamSpec("P-COMP-FORCE", "compression force", "kN", 8, 12, 10),),
        ),
        StepSpec(
            "STEP-MOD-20",
            "Busbar laser welding",
            2,
            ("M-WELD-1", "M-WELD-2"),
            "laser welder",
            (WELD_POWER, ParamSpec("P-WELD-SPEED", "weld speed", "mm/s", 80, 120, 100)),
        ),
        StepSpec(
            "STEP-MOD-30",
            "Module end-of-line test",
            3,
            ("M-MEOL-1",),
            "module tester",
            inspection=InspectionMethod.FUNCTIONAL,
        ),
    ),
    ("MAT-BUSBAR", "MAT-MODULE-HOUSING"),
)

PACK_LINE = LineSpec(
    "LINE-PACK",
    "Pack line",
    "PRD-PACK",
    "Battery pack 8s",
    20,
    150,
    (
        StepSpec(
            "STEP-PACK-10",
            "Module mounting and fastening",
            1,
            ("M-NUT-1", "M-NUT-2"),
            "nutrunner",
            (ParamSpec("P-MOUNT-TORQUE", "module mounting torque", "N*m", 8, 10, 9, True),),
        ),
        StepSpec(
            "STEP-PACK-20",
            "BMS and harness fit",
            2,
            ("M-BMS-1", "M-BMS-2"),
            "harness station",
            (ParamSpec("P-CRIMP-FORCE", "connector crimp force", "N", 350, 450, 400),),
        ),
        StepSpec(
            "STEP-PACK-30",
            "Pack end-of-line test",
            3,
            ("M-PEOL-1",),
            "pack tester",
            inspection=InspectionMethod.FUNCTIONAL,
        ),
    ),
    ("MAT-ENCLOSURE", "MAT-BMS", "MAT-BOLT"),
)
LINES = (CELL_LINE, MODULE_LINE, PACK_LINE)
"""Lowest level first; each line's product uses the one before it."""
PARTS_PER_UNIT = {MODULE_LINE.uid: CELLS_PER_MODULE, PACK_LINE.uid: MODULES_PER_PACK}

MATERIALS = {
    # uid: (name, unit, per-unit use, suppliers)
    "MAT-CATHODE": ("NMC811 cathode coil", "m", 1.2, ("SUP-11", "SUP-12")),
    "MAT-ANODE": ("Graphite anode coil", "m", 1.25, ("SUP-12", "SUP-13")),
    "MAT-SEPARATOR": ("Ceramic-coated PE separator", "m2", 0.9, ("SUP-14", "SUP-15")),
    "MAT-ELECTROLYTE": ("LiPF6 electrolyte", "kg", 0.185, ("SUP-16", "SUP-17")),
    "MAT-BUSBAR": ("Aluminium busbar", "pcs", 3.0, ("SUP-18", "SUP-19")),
    "MAT-MODULE-HOUSING": ("Module housing", "pcs", 1.0, ("SUP-19", "SUP-20")),
    "MAT-ENCLOSURE": ("Pack enclosure", "pcs", 1.0, ("SUP-20", "SUP-18")),
    "MAT-BMS": ("Battery management board", "pcs", 1.0, ("SUP-21", "SUP-22")),
    "MAT-BOLT": ("M8 mounting bolt", "pcs", 8.0, ("SUP-22", "SUP-20")),
}
CRITICAL_MATERIALS = ("MAT-SEPARATOR", "MAT-ELECTROLYTE", "MAT-BMS")
SUPPLIERS = {
    "SUP-11": ("Cathodia", "KR"),
    "SUP-12": ("Graphenix", "CN"),
    "SUP-13": ("Anodyne Materials", "JP"),
    "SUP-14": ("Septum Films", "KR"),
    "SUP-15": ("Porex Membranes", "US"),
    "SUP-16": ("Ionic Fluids", "DE"),
    "SUP-17": ("Electrolyte Europe", "PL"),
    "SUP-18": ("Alu Conductors", "NO"),
    "SUP-19": ("Formtec Housings", "CZ"),
    "SUP-20": ("Metalform", "ES"),
    "SUP-21": ("Cellguard Electronics", "TW"),
    "SUP-22": ("Boltline", "IT"),
}

DEFECT_TYPES = {
    d.uid: d
    for d in (
        DefectTypeSpec("DT-INTERNAL-SHORT", "Internal short circuit", Category6M.MATERIAL),
        DefectTypeSpec("DT-ELECTROLYTE-LEAK", "Electrolyte leak", Category6M.METHOD),
        DefectTypeSpec("DT-WEAK-WELD", "Weak busbar weld", Category6M.MACHINE),
        DefectTypeSpec("DT-LOOSE-FASTENER", "Loose module fastener", Category6M.MAN),
        DefectTypeSpec("DT-BMS-FAULT", "BMS communication fault", Category6M.METHOD),
        DefectTypeSpec("DT-ENCLOSURE-DENT", "Enclosure dent", Category6M.ENVIRONMENT),
        DefectTypeSpec("DT-FALSE-CALL", "Test false call", Category6M.MEASUREMENT),
    )
}

ORIGINS = {
    # the PFMEA: the step where each failure mode arises (a dent arises in handling
    # anywhere and a false call in testing: neither has one step)
    "DT-INTERNAL-SHORT": "STEP-CELL-10",
    "DT-ELECTROLYTE-LEAK": "STEP-CELL-20",
    "DT-WEAK-WELD": "STEP-MOD-20",
    "DT-LOOSE-FASTENER": "STEP-PACK-10",
    "DT-BMS-FAULT": "STEP-PACK-20",
}

LEVEL_DEFECTS = {
    # the defect types that arise at each line (lowest level first)
    CELL_LINE.uid: ("DT-INTERNAL-SHORT", "DT-ELECTROLYTE-LEAK"),
    MODULE_LINE.uid: ("DT-WEAK-WELD",),
    PACK_LINE.uid: ("DT-LOOSE-FASTENER", "DT-BMS-FAULT", "DT-ENCLOSURE-DENT"),
}
COMPLAINT_DEFECTS = ("DT-INTERNAL-SHORT", "DT-WEAK-WELD", "DT-LOOSE-FASTENER", "DT-BMS-FAULT")
"""What customers report when a pack they return is in fact good."""


@dataclass(frozen=True, slots=True)
class BatteryCauses:
    """Strengths of the planted causes and the noise around them.

    ``BatteryCauses.none()`` is the same plant with every planted effect switched off.
    """

    # a bad separator lot: cells short internally, mostly after they pass cell test;
    # every cell batch it fed was stacked on one machine
    bad_lot_material: str = "MAT-SEPARATOR"
    bad_lot_position: float = 0.45
    bad_lot_added_p: float = 0.04
    bad_lot_defect: str = "DT-INTERNAL-SHORT"
    co_exposed_machine: str = "M-STACK-1"
    # a laser welder whose power sags over a window, below the LSL: weak welds
    drift_machine: str = "M-WELD-2"
    drift_parameter: str = WELD_POWER.uid
    drift_window: tuple[float, float] = (0.40, 0.55)
    drift_amount: float = -320.0
    drift_defect: str = "DT-WEAK-WELD"
    weak_threshold: float = 2850.0
    weak_full_at: float = 2700.0
    weak_max_p: float = 0.30
    # the night shift leaves module fasteners loose in the pack
    shift: str = "night"
    shift_step: str = "STEP-PACK-10"
    shift_added_p: float = 0.06
    shift_defect: str = "DT-LOOSE-FASTENER"
    # baseline rates (noise) by defect type, per unit of the level it arises at
    baseline: tuple[tuple[str, float], ...] = (
        ("DT-INTERNAL-SHORT", 0.001),
        ("DT-ELECTROLYTE-LEAK", 0.002),
        ("DT-WEAK-WELD", 0.003),
        ("DT-LOOSE-FASTENER", 0.003),
        ("DT-BMS-FAULT", 0.003),
        ("DT-ENCLOSURE-DENT", 0.004),
    )
    # detection at each line's test: (line, defect type, probability); a type found
    # above its own level was carried up in a part that passed its own test
    detects: tuple[tuple[str, str, float], ...] = (
        ("LINE-CELL", "DT-INTERNAL-SHORT", 0.25),
        ("LINE-CELL", "DT-ELECTROLYTE-LEAK", 0.8),
        ("LINE-MOD", "DT-INTERNAL-SHORT", 0.15),
        ("LINE-MOD", "DT-ELECTROLYTE-LEAK", 0.5),
        ("LINE-MOD", "DT-WEAK-WELD", 0.6),
        ("LINE-PACK", "DT-INTERNAL-SHORT", 0.3),
        ("LINE-PACK", "DT-ELECTROLYTE-LEAK", 0.5),
        ("LINE-PACK", "DT-WEAK-WELD", 0.3),
        ("LINE-PACK", "DT-LOOSE-FASTENER", 0.6),
        ("LINE-PACK", "DT-BMS-FAULT", 0.8),
        ("LINE-PACK", "DT-ENCLOSURE-DENT", 0.9),
    )
    # field
    complaint_p: float = 0.6
    complaint_lag_days: float = 20.0
    no_fault_found_p: float = 0.002
    # unexplained batch-to-batch variation: each batch's baseline rate of each defect
    # type is moved by a normal draw with this SD on the log-odds scale (0: none)
    batch_log_sd: float = 0.0

    @classmethod
    def none(cls) -> BatteryCauses:
        """Every planted cause switched off: only baseline rates and noise remain."""
        return cls(bad_lot_added_p=0.0, drift_amount=0.0, weak_max_p=0.0, shift_added_p=0.0)
