"""The fixed layout of the synthetic infusion-pump plant: two sub-assemblies into a pump.

One site in America/Chicago runs three lines. The board line makes controller boards;
the motor line makes motor modules and aligns their encoders on an encoder station; the
pump line builds a dual-channel infusion pump from one board and two motor modules,
then trims and tests its occlusion alarm on the occlusion tester ``M-OCCL-1``.

Production runs on a fixed calendar, from late February 2026 across the daylight-saving
change of 2026-03-08 into April, because every planted state is dated: calibrations
that lapse or are found out of tolerance, operators whose qualification lapsed, was
revoked, had not started, or covers only the old revision of a work instruction. Every
date and number a planted state depends on lives here, so the ground truth and the
generator cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqems.datasets.layout import DefectTypeSpec, LineSpec, ParamSpec, StepSpec
from sqems.graph_model.nodes import Category6M, InspectionMethod

SITE = ("SITE-CHI", "Infusion pump plant", "US")
TIMEZONE = "America/Chicago"
ZONE = ZoneInfo(TIMEZONE)


def local(text: str) -> int:
    """POSIX seconds of a wall-clock time at the site (``2026-03-02T23:59:59``)."""
    return int(datetime.fromisoformat(text).replace(tzinfo=ZONE).timestamp())


START = local("2026-02-23T06:00:00")
"""The sub-assembly lines start (a Monday, early shift, CST)."""
END = local("2026-04-17T22:00:00")
"""The last pump batch ends about then."""
DST_CHANGE = local("2026-03-08T03:00:00")
"""The first instant of daylight time (02:00 CST became 03:00 CDT)."""
PUMP_LEAD_S = 2 * 86_400
"""The pump line starts this long after the sub-assembly lines, once parts exist."""

MOTORS_PER_PUMP = 2
BOARDS_PER_PUMP = 1
SPARE = 0.2
"""Sub-assemblies are built about a fifth beyond what the pumps consume (service spares
and cover for those scrapped at test)."""
PART_BUFFER_BATCHES = 3

PUMP_BATCH_PREFIX = "WO/2026/"
"""Pump work orders are numbered the way the plant's ERP writes them, with slashes."""

OCCL_ALARM = ParamSpec(
    "P-OCCL-ALARM", "downstream occlusion alarm pressure", "kPa", 90, 116, 103, True
)

BOARD_LINE = LineSpec(
    "LINE-BRD",
    "Controller board line",
    "PRD-PUMP-BOARD",
    "Pump controller board",
    15,
    0,
    (
        StepSpec(
            "STEP-BRD-10",
            "SMT placement",
            1,
            ("M-SMT-1", "M-SMT-2"),
            "pick-and-place",
            (ParamSpec("P-PLACE-OFFSET", "placement offset", "um", -40, 40, 0),),
        ),
        StepSpec(
            "STEP-BRD-20",
            "Reflow soldering",
            2,
            ("M-REFLOW-P1",),
            "reflow oven",
            (ParamSpec("P-BRD-PEAK", "reflow peak temperature", "degC", 235, 250, 242.5, True),),
        ),
        StepSpec(
            "STEP-BRD-30",
            "In-circuit test",
            3,
            ("M-ICT-1",),
            "in-circuit tester",
            inspection=InspectionMethod.FUNCTIONAL,
        ),
    ),
    ("MAT-PCB", "MAT-MCU-P", "MAT-PRESSURE-SENSOR"),
)

MOTOR_LINE = LineSpec(
    "LINE-MOT",
    "Motor module line",
    "PRD-MOTOR-MODULE",
    "Peristaltic motor module",
    30,
    0,
    (
        StepSpec(
            "STEP-MOT-10",
            "Motor and gearbox assembly",
            1,
            ("M-MOTASM-1", "M-MOTASM-2"),
            "gearbox press",
            (ParamSpec("P-GEAR-PRESS", "gear press-fit force", "N", 400, 600, 500),),
        ),
        StepSpec(
            "STEP-MOT-20",
            "Encoder alignment",
            2,
            ("M-ENC-1", "M-ENC-2"),
            "encoder station",
            (ParamSpec("P-ENC-OFFSET", "encoder index offset", "deg", -0.5, 0.5, 0, True),),
        ),
        StepSpec(
            "STEP-MOT-30",
            "Motor run-in test",
            3,
            ("M-RUNIN-1",),
            "run-in bench",
            inspection=InspectionMethod.FUNCTIONAL,
        ),
    ),
    ("MAT-STEPPER", "MAT-GEARSET", "MAT-ENCODER"),
)

PUMP_LINE = LineSpec(
    "LINE-PUMP",
    "Pump assembly and test line",
    "PRD-INFUSION-PUMP",
    "Dual-channel infusion pump",
    12,
    0,
    (
        StepSpec(
            "STEP-PUMP-10",
            "Board and motor integration",
            1,
            ("M-SCREW-P1", "M-SCREW-P2"),
            "screwdriving station",
            (ParamSpec("P-CASE-TORQUE", "case screw torque", "N*m", 0.8, 1.2, 1.0),),
        ),
        StepSpec(
            "STEP-PUMP-20",
            "Pumping mechanism and door fit",
            2,
            ("M-DOOR-1", "M-DOOR-2"),
            "door fit station",
            (ParamSpec("P-DOOR-LATCH", "door latch force", "N", 20, 30, 25, True),),
        ),
        StepSpec(
            "STEP-PUMP-30",
            "Occlusion alarm trim and test",
            3,
            ("M-OCCL-1",),
            "occlusion tester",
            (OCCL_ALARM,),
            inspection=InspectionMethod.FUNCTIONAL,
        ),
    ),
    ("MAT-HOUSING-P", "MAT-DOOR-ASSY", "MAT-BATTERY-P"),
)
LINES = (BOARD_LINE, MOTOR_LINE, PUMP_LINE)
SUB_LINES = (BOARD_LINE, MOTOR_LINE)

MATERIALS = {
    # uid: (name, unit, per-unit use, suppliers)
    "MAT-PCB": ("Controller PCB, 6 layers", "pcs", 1.0, ("SUP-31", "SUP-32")),
    "MAT-MCU-P": ("Safety microcontroller", "pcs", 2.0, ("SUP-33", "SUP-34")),
    "MAT-PRESSURE-SENSOR": ("Downstream pressure sensor", "pcs", 1.0, ("SUP-35", "SUP-36")),
    "MAT-STEPPER": ("Stepper motor", "pcs", 1.0, ("SUP-37", "SUP-38")),
    "MAT-GEARSET": ("Planetary gear set", "pcs", 1.0, ("SUP-38", "SUP-39")),
    "MAT-ENCODER": ("Optical encoder disc", "pcs", 1.0, ("SUP-40", "SUP-37")),
    "MAT-HOUSING-P": ("Pump housing, PC/ABS", "pcs", 1.0, ("SUP-41", "SUP-42")),
    "MAT-DOOR-ASSY": ("Pumping door assembly", "pcs", 2.0, ("SUP-42", "SUP-43")),
    "MAT-BATTERY-P": ("Backup battery pack", "pcs", 1.0, ("SUP-44", "SUP-41")),
}
CRITICAL_MATERIALS = ("MAT-PRESSURE-SENSOR", "MAT-MCU-P", "MAT-DOOR-ASSY")
SUPPLIERS = {
    "SUP-31": ("Circuitry Partners", "US"),
    "SUP-32": ("Boardworks", "MX"),
    "SUP-33": ("Safechip", "DE"),
    "SUP-34": ("Microlog", "TW"),
    "SUP-35": ("Pressense", "CH"),
    "SUP-36": ("Medisense Components", "US"),
    "SUP-37": ("Stepdrive", "JP"),
    "SUP-38": ("Precision Gears", "DE"),
    "SUP-39": ("Gearcraft", "US"),
    "SUP-40": ("Optoindex", "JP"),
    "SUP-41": ("Polymold", "MX"),
    "SUP-42": ("Medform Plastics", "US"),
    "SUP-43": ("Latchtec", "IE"),
    "SUP-44": ("Cellpower Medical", "CN"),
}

DEFECT_TYPES = {
    d.uid: d
    for d in (
        DefectTypeSpec("DT-BRD-SOLDER", "Board solder joint open", Category6M.MACHINE),
        DefectTypeSpec("DT-BRD-PLACEMENT", "Board component misplaced", Category6M.MACHINE),
        DefectTypeSpec("DT-GEAR-NOISE", "Gearbox noise", Category6M.MATERIAL),
        DefectTypeSpec("DT-ENCODER-FAULT", "Encoder position error", Category6M.METHOD),
        DefectTypeSpec("DT-DOOR-MISFIT", "Pumping door misfit (free-flow risk)", Category6M.MAN),
        DefectTypeSpec(
            "DT-OCCLUSION-ALARM", "Occlusion alarm late or missing", Category6M.MEASUREMENT
        ),
        DefectTypeSpec("DT-CASE-SCRATCH", "Case scratch", Category6M.ENVIRONMENT),
    )
}
ORIGINS = {
    # the PFMEA: the step where each failure mode arises (a scratch arises in handling)
    "DT-BRD-PLACEMENT": "STEP-BRD-10",
    "DT-BRD-SOLDER": "STEP-BRD-20",
    "DT-GEAR-NOISE": "STEP-MOT-10",
    "DT-ENCODER-FAULT": "STEP-MOT-20",
    "DT-DOOR-MISFIT": "STEP-PUMP-20",
    "DT-OCCLUSION-ALARM": "STEP-PUMP-30",
}
LEVEL_DEFECTS = {
    BOARD_LINE.uid: ("DT-BRD-SOLDER", "DT-BRD-PLACEMENT"),
    MOTOR_LINE.uid: ("DT-GEAR-NOISE", "DT-ENCODER-FAULT"),
    PUMP_LINE.uid: ("DT-OCCLUSION-ALARM", "DT-DOOR-MISFIT", "DT-CASE-SCRATCH"),
}
COMPLAINT_DEFECTS = ("DT-OCCLUSION-ALARM", "DT-DOOR-MISFIT", "DT-GEAR-NOISE", "DT-BRD-SOLDER")
"""What customers report when a pump they return is in fact good."""

# --- work instructions: one per step, one revised mid-period --------------------------

WI_CHANGE_STEP = "STEP-PUMP-20"
WI_OLD_REVISION = "C"
WI_NEW_REVISION = "D"
WI_BASE_EFFECTIVE = local("2025-11-03T06:00:00")
WI_CHANGE_AT = local("2026-03-16T06:00:00")
"""Revision D of the door-fit instruction (a new latch seating sequence) takes effect."""


def instruction_of(step_uid: str) -> str:
    """The work instruction of a step: ``STEP-PUMP-20`` → ``WI-PUMP-20``."""
    return "WI-" + step_uid.removeprefix("STEP-")


# --- calibrations ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gauge:
    """What a machine's calibration measures: the standard's value, the tolerance, the
    unit, and how many days a calibration is good for."""

    reference: float
    tolerance: float
    unit: str
    interval_days: int


GAUGES = {
    "M-SMT-1": Gauge(0.0, 15.0, "um", 28),
    "M-SMT-2": Gauge(0.0, 15.0, "um", 28),
    "M-REFLOW-P1": Gauge(250.0, 2.0, "degC", 28),
    "M-ICT-1": Gauge(10.0, 0.05, "kOhm", 28),
    "M-MOTASM-1": Gauge(500.0, 10.0, "N", 28),
    "M-MOTASM-2": Gauge(500.0, 10.0, "N", 28),
    "M-ENC-1": Gauge(0.0, 0.05, "deg", 28),
    "M-ENC-2": Gauge(0.0, 0.05, "deg", 28),
    "M-RUNIN-1": Gauge(50.0, 1.0, "mN*m", 28),
    "M-SCREW-P1": Gauge(1.0, 0.03, "N*m", 28),
    "M-SCREW-P2": Gauge(1.0, 0.03, "N*m", 28),
    "M-DOOR-1": Gauge(25.0, 0.5, "N", 28),
    "M-DOOR-2": Gauge(25.0, 0.5, "N", 28),
    "M-OCCL-1": Gauge(100.0, 1.5, "kPa", 10),
}
FIRST_CALIBRATION = local("2026-02-09T10:00:00")
"""The machines' calibrations before the period are performed from this day on,
staggered by a day per machine."""
CALIBRATION_HOUR = 10
"""Calibrations are performed at about 10:00 local, two days before they fall due."""
DUE_TIME = "23:59:59"
"""A calibration due on a day is due at the end of that day, site time."""
CALIBRATION_LEAD_DAYS = 2

ENCODER_STATION = "M-ENC-1"
ENCODER_LAPSE_DUE = "2026-03-02"
"""The encoder station's calibration falls due that day (23:59:59 CST) …"""
ENCODER_LAPSE_DUE_AT = local(f"{ENCODER_LAPSE_DUE}T{DUE_TIME}")
ENCODER_LATE_CALIBRATION = local("2026-03-12T14:30:00")
"""… and the next one is performed ten days late (found in tolerance)."""

OCCLUSION_TESTER = "M-OCCL-1"
OCCLUSION_LAST_GOOD = local("2026-03-24T10:00:00")
"""The occlusion tester's last passing calibration …"""
OCCLUSION_FOUND_OOT = local("2026-04-01T10:00:00")
"""… and the one that finds it reading 3.4 kPa low (out of tolerance, verdict fail): the
tester is taken out of service, repaired and calibrated again (pass) before the next pump
batch reaches it, at most this many seconds later:"""
OCCLUSION_REPAIR_S = 4 * 3600
OCCLUSION_AS_FOUND = 96.6

LIMITED_MACHINE = "M-RUNIN-1"
LIMITED_LIMITATION = (
    "torque channel linear only up to 60 mN*m; run-in limits above that may not be used"
)
ADJUSTED_MACHINES = ("M-REFLOW-P1", "M-SCREW-P2")
"""Machines whose mid-period calibration finds them in tolerance but near its edge,
and adjusts them to nominal."""

# --- operators and their qualifications ------------------------------------------------

OPERATORS_PER_SHIFT = 3
"""Operators per line and shift; each is qualified for every step of their line."""
QUAL_GRANTED = local("2025-09-01T08:00:00")
QUAL_EXPIRES = local("2026-09-01T23:59:59")


@dataclass(frozen=True, slots=True)
class OperatorState:
    """A planted operator: who, which step and shift they run, and the dates that make
    their qualification for that step lapse, be revoked, not have started, or cover only
    an old revision."""

    id: str
    operator: str
    name: str
    step: str
    shift: str
    kind: str
    start: int
    """Start of the window in which the operator is not qualified."""
    end: int
    """End of that window (a requalification, or the end of the runs)."""
    share: float = 0.8
    """Share of the step's runs on the operator's shift they run, period-long."""


LAPSED = OperatorState(
    "qualification-lapsed",
    "OP-BRD-05",
    "Dana Whitfield",
    "STEP-BRD-20",
    "late",
    "lapsed",
    local("2026-03-06T23:59:59"),
    local("2026-03-24T09:00:00"),
)
REVOKED = OperatorState(
    "qualification-revoked",
    "OP-PUMP-02",
    "Luis Ortega",
    "STEP-PUMP-10",
    "early",
    "revoked",
    local("2026-03-04T15:00:00"),
    local("2026-03-13T14:00:00"),
)
REVOKED_REASON = (
    "revoked after failing the practical re-assessment of the case screw sequence (CAPA "
    "training record TR-0412)"
)
TRAINEE = OperatorState(
    "trainee-not-yet-qualified",
    "OP-MOT-10",
    "Priya Raman",
    "STEP-MOT-10",
    "early",
    "not yet qualified",
    START,
    local("2026-03-20T12:00:00"),
    share=0.5,
)
OLD_REVISION = OperatorState(
    "qualified-on-old-revision",
    "OP-PUMP-08",
    "Kim Novak",
    WI_CHANGE_STEP,
    "night",
    "other revision",
    WI_CHANGE_AT,
    local("2026-04-10T12:00:00"),
)
OPERATOR_STATES = (LAPSED, REVOKED, TRAINEE, OLD_REVISION)


@dataclass(frozen=True, slots=True)
class PumpCauses:
    """Strengths of the planted effects and the noise around them.

    ``PumpCauses.none()`` is the same plant, states and records included, with every
    planted effect on defects switched off.
    """

    # the occlusion tester reads low while out of tolerance: pumps trimmed on it between
    # its last good calibration and the failing one set their alarm high, pass its test
    # and alarm late in the field
    occlusion_added_p: float = 0.10
    occlusion_defect: str = "DT-OCCLUSION-ALARM"
    # an operator trained only on revision C of the door-fit instruction seats the latch
    # the old way while revision D is in force
    old_revision_added_p: float = 0.08
    old_revision_defect: str = "DT-DOOR-MISFIT"
    baseline: tuple[tuple[str, float], ...] = (
        ("DT-BRD-SOLDER", 0.004),
        ("DT-BRD-PLACEMENT", 0.003),
        ("DT-GEAR-NOISE", 0.004),
        ("DT-ENCODER-FAULT", 0.003),
        ("DT-DOOR-MISFIT", 0.003),
        ("DT-OCCLUSION-ALARM", 0.006),
        ("DT-CASE-SCRATCH", 0.003),
    )
    detects: tuple[tuple[str, str, float], ...] = (
        ("LINE-BRD", "DT-BRD-SOLDER", 0.9),
        ("LINE-BRD", "DT-BRD-PLACEMENT", 0.9),
        ("LINE-MOT", "DT-GEAR-NOISE", 0.8),
        ("LINE-MOT", "DT-ENCODER-FAULT", 0.85),
        ("LINE-PUMP", "DT-BRD-SOLDER", 0.5),
        ("LINE-PUMP", "DT-BRD-PLACEMENT", 0.5),
        ("LINE-PUMP", "DT-GEAR-NOISE", 0.5),
        ("LINE-PUMP", "DT-ENCODER-FAULT", 0.5),
        ("LINE-PUMP", "DT-DOOR-MISFIT", 0.5),
        ("LINE-PUMP", "DT-OCCLUSION-ALARM", 0.95),
        ("LINE-PUMP", "DT-CASE-SCRATCH", 0.9),
    )
    """(line, defect type, probability its test catches a unit carrying it); the
    occlusion alarms the biased tester set are never caught by that same tester."""
    complaint_p: float = 0.7
    complaint_lag_days: float = 12.0
    no_fault_found_p: float = 0.002

    @classmethod
    def none(cls) -> PumpCauses:
        """Every planted effect switched off: the states stay, only baseline rates and
        noise remain."""
        return cls(occlusion_added_p=0.0, old_revision_added_p=0.0)
