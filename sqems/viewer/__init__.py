"""3D views of the plant: line scenes from the graph, IFC/BIM models, and their outputs
(pythreejs in Jupyter, binary glTF and the web viewer)."""

from sqems.viewer.bim import BimImport, LinkRule, SurveyReport, import_bim, model_elements, survey
from sqems.viewer.scene import Scene, SceneObject, Status, line_scene

__all__ = [
    "BimImport",
    "LinkRule",
    "Scene",
    "SceneObject",
    "Status",
    "SurveyReport",
    "import_bim",
    "line_scene",
    "model_elements",
    "survey",
]
