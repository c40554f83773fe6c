"""Column tables: how the generator hands a plant to the file writer and the loader."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Table:
    """Named columns of equal length; cells are strings, or None/"" for a missing value."""

    columns: dict[str, Sequence[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def header(self) -> list[str]:
        return list(self.columns)

    def extend(self, other: Table) -> None:
        if not self.columns:
            self.columns = {k: list(v) for k, v in other.columns.items()}
            return
        if other.header != self.header:
            raise ValueError(f"cannot join tables with columns {self.header} and {other.header}")
        for key, values in other.columns.items():
            column = self.columns[key]
            if not isinstance(column, list):
                column = self.columns[key] = list(column)
            column.extend(values)

    def tuples(self) -> Iterator[tuple[Any, ...]]:
        return zip(*self.columns.values(), strict=True)

    def records(self) -> Iterator[dict[str, Any]]:
        """Rows as dicts, leaving out empty cells so models apply their defaults."""
        header = self.header
        for row in self.tuples():
            yield {k: v for k, v in zip(header, row, strict=True) if v is not None and v != ""}


def iso(seconds: np.ndarray | Sequence[int] | int) -> list[str]:
    """POSIX seconds → ISO 8601 UTC strings (``2026-01-05T06:00:00Z``), vectorised."""
    arr = np.atleast_1d(np.asarray(seconds, dtype="int64")).astype("datetime64[s]")
    return [str(s) for s in np.datetime_as_string(arr, timezone="UTC")]


def fmt(values: np.ndarray, digits: int) -> list[str]:
    """Floats as fixed-point strings (deterministic across platforms)."""
    return [f"{v:.{digits}f}" for v in np.asarray(values, dtype=float)]
