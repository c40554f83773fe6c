"""Settings, read once at the edge (CLI, app factory) and passed down.

Every field can be set from the environment with the ``SQEMS_`` prefix, e.g.
``SQEMS_DATA_DIR=/srv/sqems`` or ``SQEMS_GRAPH_URI=embedded:///srv/sqems/plant.db``.
"""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_data_path
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return user_data_path("sqems", appauthor=False)


class Settings(BaseSettings):
    """Where SQEMS keeps its data and which graph store it talks to."""

    model_config = SettingsConfigDict(env_prefix="SQEMS_", extra="ignore")

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Directory for the embedded graph file, readings and caches.",
    )
    graph_uri: str = Field(
        default="embedded",
        description=(
            "'embedded' (a file under data_dir), 'embedded:///abs/path.db', "
            "or 'memory' for a store that lives only as long as the process."
        ),
    )
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()
