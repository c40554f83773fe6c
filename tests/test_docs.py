"""The documented formats name every label, property and relationship of the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqems.graph_model import NODE_TYPES, REL_TYPES

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("label", sorted(NODE_TYPES))
def test_data_formats_lists_every_column_of_each_label(label: str) -> None:
    text = (DOCS / "data-formats.md").read_text()
    row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{label}` |")), None)
    assert row is not None, f"docs/data-formats.md has no row for {label}"
    for field, info in NODE_TYPES[label].model_fields.items():
        marker = f"`{field}`" if info.is_required() else f"`{field}`?"
        assert marker in row, f"{label}.{field} is missing or mis-marked in data-formats.md"


@pytest.mark.parametrize("name", sorted(REL_TYPES))
def test_data_formats_lists_every_relationship_type(name: str) -> None:
    text = (DOCS / "data-formats.md").read_text()
    assert f"| `{name}` |" in text
    assert f"`{name}`" in (DOCS / "graph-model.md").read_text()
