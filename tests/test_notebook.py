"""The example notebook runs from top to bottom in a real Jupyter kernel (nbclient) and
shows its scenes as pythreejs widgets."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "line_viewer.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_the_example_notebook_runs_and_shows_both_scenes_as_widgets(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        "commit the notebook without outputs"
    )
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    code = [c for c in notebook.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "5 objects" in text  # the board line's five machines
    assert "IFC4" in text and "products" in text
    widgets = [c for c in code for o in c.outputs if WIDGET in o.get("data", {})]
    assert len(widgets) == 2
