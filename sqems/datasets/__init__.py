"""The deterministic synthetic plant: generation, its file format, and loading."""

from sqems.datasets.files import read_plant, write_plant
from sqems.datasets.load import LoadReport, load_plant
from sqems.datasets.plant import Plant, PlantSpec, generate

__all__ = [
    "LoadReport",
    "Plant",
    "PlantSpec",
    "generate",
    "load_plant",
    "read_plant",
    "write_plant",
]
