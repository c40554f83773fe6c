"""The deterministic synthetic plant: generation, its file format, and loading."""

from sqems.datasets.battery_layout import BatteryCauses
from sqems.datasets.files import read_plant, write_plant
from sqems.datasets.load import LoadReport, load_plant
from sqems.datasets.plant import Plant, PlantShape, PlantSpec, generate
from sqems.datasets.pump_layout import PumpCauses

__all__ = [
    "BatteryCauses",
    "LoadReport",
    "Plant",
    "PlantShape",
    "PlantSpec",
    "PumpCauses",
    "generate",
    "load_plant",
    "read_plant",
    "write_plant",
]
