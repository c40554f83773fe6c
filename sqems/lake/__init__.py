"""The readings lake: a versioned Parquet layout any engine reads, and the jobs that run
over it on DuckDB or Spark (per-run summaries, SPC rule scans, capability, and whether
quality differs between shifts, lines and machines). See docs/lake.md."""

from sqems.lake.engine import ENGINES, DuckEngine, Engine, open_engine
from sqems.lake.jobs import (
    Comparison,
    capability_table,
    compare,
    spc_scan,
    summaries,
    write_recorded,
)
from sqems.lake.layout import VERSION, Lake, LakeError, open_lake, write_lake

__all__ = [
    "ENGINES",
    "VERSION",
    "Comparison",
    "DuckEngine",
    "Engine",
    "Lake",
    "LakeError",
    "capability_table",
    "compare",
    "open_engine",
    "open_lake",
    "spc_scan",
    "summaries",
    "write_lake",
    "write_recorded",
]
