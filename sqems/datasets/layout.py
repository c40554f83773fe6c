"""The fixed layout of the synthetic plant: lines, routings, parameters and causes.

Two lines feed each other. The board line makes controller boards (a sub-assembly);
the assembly line builds each servo drive around one board. Every number a planted
cause depends on lives here, so the ground truth and the generator cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqems.graph_model.nodes import Category6M, InspectionMethod


@dataclass(frozen=True, slots=True)
class ParamSpec:
    uid: str
    name: str
    unit: str
    lsl: float
    usl: float
    target: float
    critical: bool = False

    @property
    def sigma(self) -> float:
        """Process spread that gives Cpk = 1.33 when centred."""
        return (self.usl - self.lsl) / 8.0


@dataclass(frozen=True, slots=True)
class StepSpec:
    uid: str
    name: str
    sequence: int
    machines: tuple[str, ...]
    machine_kind: str
    params: tuple[ParamSpec, ...] = ()
    inspection: InspectionMethod | None = None


@dataclass(frozen=True, slots=True)
class LineSpec:
    uid: str
    name: str
    product: str
    product_name: str
    batch_size: int
    cycle_s: int
    """Seconds per unit at each step."""
    steps: tuple[StepSpec, ...]
    materials: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DefectTypeSpec:
    uid: str
    name: str
    category: Category6M


SITE = ("SITE-1", "Main plant")
START = "2026-01-05T06:00:00+00:00"
DAY = 86_400
"""Seconds in a day."""
CHANGEOVER_S = 600
STEP_OFFSET_S = 900

REFLOW_PEAK = ParamSpec("P-REFLOW-PEAK", "reflow peak temperature", "degC", 235, 250, 242.5, True)
BOARD_LINE = LineSpec(
    "LINE-PCB",
    "Board line",
    "PRD-BOARD",
    "Controller board",
    200,
    27,
    (
        StepSpec(
            "STEP-PCB-10",
            "Solder paste print",
            1,
            ("M-PRINT-1", "M-PRINT-2"),
            "stencil printer",
            (ParamSpec("P-PASTE-THICK", "paste thickness", "um", 100, 150, 125),),
        ),
        StepSpec(
            "STEP-PCB-20",
            "Reflow",
            2,
            ("M-REFLOW-1", "M-REFLOW-2"),
            "reflow oven",
            (REFLOW_PEAK, ParamSpec("P-REFLOW-SPEED", "conveyor speed", "cm/min", 70, 90, 80)),
        ),
        StepSpec(
            "STEP-PCB-30",
            "Optical inspection",
            3,
            ("M-AOI-1",),
            "AOI",
            inspection=InspectionMethod.AOI,
        ),
    ),
    ("MAT-PCB", "MAT-PASTE", "MAT-MCU"),
)

MOULD_MACHINES = ("M-MOULD-1", "M-MOULD-2")
ASSEMBLY_LINE = LineSpec(
    "LINE-ASM",
    "Assembly line",
    "PRD-DRIVE",
    "Servo drive",
    100,
    50,
    (
        StepSpec(
            "STEP-ASM-10",
            "Housing moulding",
            1,
            MOULD_MACHINES,
            "injection moulding",
            (
                ParamSpec("P-MELT-TEMP", "melt temperature", "degC", 230, 260, 245),
                ParamSpec("P-INJ-PRESS", "injection pressure", "bar", 800, 1000, 900),
            ),
        ),
        StepSpec(
            "STEP-ASM-20",
            "Shaft press-fit",
            2,
            ("M-PRESS-1", "M-PRESS-2"),
            "servo press",
            (ParamSpec("P-PRESS-FORCE", "press-fit force", "kN", 4.0, 6.0, 5.0, True),),
        ),
        StepSpec(
            "STEP-ASM-30",
            "Screw fastening",
            3,
            ("M-SCREW-1", "M-SCREW-2"),
            "nutrunner",
            (ParamSpec("P-TORQUE", "fastening torque", "N*m", 2.0, 2.6, 2.3),),
        ),
        StepSpec(
            "STEP-ASM-40",
            "End-of-line test",
            4,
            ("M-EOL-1",),
            "test rig",
            inspection=InspectionMethod.FUNCTIONAL,
        ),
    ),
    ("MAT-RESIN", "MAT-SHAFT", "MAT-SCREW"),
)
LINES = (BOARD_LINE, ASSEMBLY_LINE)

MATERIALS = {
    # uid: (name, unit, per-unit use, suppliers)
    "MAT-PCB": ("Bare PCB, 4 layer", "pcs", 1.0, ("SUP-01", "SUP-02")),
    "MAT-PASTE": ("Solder paste SAC305", "kg", 0.002, ("SUP-03", "SUP-04")),
    "MAT-MCU": ("Microcontroller reel", "pcs", 1.0, ("SUP-05", "SUP-06")),
    "MAT-RESIN": ("PA66-GF30 housing resin", "kg", 0.35, ("SUP-07", "SUP-08")),
    "MAT-SHAFT": ("Steel output shaft", "pcs", 1.0, ("SUP-09", "SUP-02")),
    "MAT-SCREW": ("M4 fastener", "pcs", 4.0, ("SUP-10", "SUP-09")),
}
SUPPLIERS = {
    "SUP-01": ("Circuitex", "DE"),
    "SUP-02": ("Nordic Boards", "SE"),
    "SUP-03": ("Alloy Works", "JP"),
    "SUP-04": ("Solderline", "US"),
    "SUP-05": ("Siliconvale", "TW"),
    "SUP-06": ("Microparts", "KR"),
    "SUP-07": ("Polymerix", "BE"),
    "SUP-08": ("Resinco", "IT"),
    "SUP-09": ("Precision Steel", "CZ"),
    "SUP-10": ("Fastenall", "PL"),
}
LOT_SPAN_BATCHES = (3, 8)
"""A lot feeds between 3 and 8 consecutive batches of its line."""

DEFECT_TYPES = {
    d.uid: d
    for d in (
        DefectTypeSpec("DT-SOLDER-VOID", "Solder void / weak joint", Category6M.MACHINE),
        DefectTypeSpec("DT-SOLDER-BRIDGE", "Solder bridge", Category6M.METHOD),
        DefectTypeSpec("DT-CRACKED-HOUSING", "Cracked housing", Category6M.MATERIAL),
        DefectTypeSpec("DT-MISALIGNED-SHAFT", "Misaligned shaft", Category6M.MAN),
        DefectTypeSpec("DT-TORQUE-LOW", "Fastener under-torqued", Category6M.METHOD),
        DefectTypeSpec("DT-SCRATCH", "Cosmetic scratch", Category6M.ENVIRONMENT),
        DefectTypeSpec("DT-FALSE-CALL", "Test false call", Category6M.MEASUREMENT),
    )
}

ORIGINS = {
    # the PFMEA: the step where each failure mode arises (a false call arises in
    # testing and a scratch in handling anywhere: neither has one step)
    "DT-SOLDER-VOID": "STEP-PCB-20",
    "DT-SOLDER-BRIDGE": "STEP-PCB-10",
    "DT-CRACKED-HOUSING": "STEP-ASM-10",
    "DT-MISALIGNED-SHAFT": "STEP-ASM-20",
    "DT-TORQUE-LOW": "STEP-ASM-30",
}

MATERIAL_DEFECTS = {
    # the material-category defect type that originates with each material: a unit made
    # from a worse material (or a worse supplier's lots of it) shows more of this type
    "MAT-RESIN": "DT-CRACKED-HOUSING",
}

SHIFTS = ("early", "late", "night")
SHIFT_START_HOUR = {"early": 6, "late": 14, "night": 22}
OPERATORS_PER_SHIFT = 8
N_CUSTOMERS = 25


@dataclass(frozen=True, slots=True)
class Causes:
    """Strengths of the planted causes and the noise around them."""

    # a bad resin lot: housings crack; every batch it fed was moulded on one machine
    bad_lot_material: str = "MAT-RESIN"
    bad_lot_position: float = 0.45
    bad_lot_added_p: float = 0.10
    bad_lot_defect: str = "DT-CRACKED-HOUSING"
    co_exposed_machine: str = "M-MOULD-1"
    # a reflow oven whose peak temperature drifts up over a window, past the USL
    drift_machine: str = "M-REFLOW-2"
    drift_parameter: str = REFLOW_PEAK.uid
    drift_window: tuple[float, float] = (0.40, 0.55)
    drift_amount: float = 12.0
    drift_defect: str = "DT-SOLDER-VOID"
    void_threshold: float = 248.0
    void_full_at: float = 254.0
    void_max_p: float = 0.35
    # the night shift mis-seats shafts at press-fit
    shift: str = "night"
    shift_step: str = "STEP-ASM-20"
    shift_added_p: float = 0.03
    shift_defect: str = "DT-MISALIGNED-SHAFT"
    # a supplier whose lots are worse: units made from its lots of a material get this
    # much more probability of the material's defect type (MATERIAL_DEFECTS); off: None
    bad_supplier: str | None = None
    bad_supplier_added_p: float = 0.0
    # a machine that holds one parameter less tightly: that parameter's run-to-run
    # spread on that machine is multiplied by wide_factor; off: None
    wide_machine: str | None = None
    wide_parameter: str | None = None
    wide_factor: float = 1.0
    # baseline rates (noise) by defect type
    baseline: tuple[tuple[str, float], ...] = (
        ("DT-SOLDER-VOID", 0.002),
        ("DT-SOLDER-BRIDGE", 0.003),
        ("DT-CRACKED-HOUSING", 0.001),
        ("DT-MISALIGNED-SHAFT", 0.004),
        ("DT-TORQUE-LOW", 0.003),
        ("DT-SCRATCH", 0.004),
    )
    # detection: AOI on boards, end-of-line test on drives
    aoi_detects: float = 0.85
    eol_detects_board_defect: float = 0.5
    eol_detects: tuple[tuple[str, float], ...] = (
        ("DT-CRACKED-HOUSING", 0.7),
        ("DT-MISALIGNED-SHAFT", 0.8),
        ("DT-TORQUE-LOW", 0.6),
        ("DT-SCRATCH", 0.9),
    )
    # field
    complaint_p: float = 0.6
    complaint_lag_days: float = 20.0
    no_fault_found_p: float = 0.0008
    # unexplained batch-to-batch variation: each batch's baseline rate of each defect
    # type is moved by a normal draw with this SD on the log-odds scale (0: none)
    batch_log_sd: float = 0.0


BOARD_DEFECTS = ("DT-SOLDER-VOID", "DT-SOLDER-BRIDGE")
DRIVE_DEFECTS = ("DT-CRACKED-HOUSING", "DT-MISALIGNED-SHAFT", "DT-TORQUE-LOW", "DT-SCRATCH")
