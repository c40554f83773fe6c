"""The lake jobs at scale: Spark local[2] beside DuckDB on the same Parquet files.

The script writes a lake of ``--readings`` readings (default 100 million) in the lake
layout (sqems.lake.layout, version 1): 10 Hz series of ``--lines`` lines x
``--machines`` machines x ``--parameters`` parameters, partitioned by day and line,
generated column-wise by DuckDB straight into the partitions, with the runs (one an
hour per machine, 55 minutes long, shifts by the hour of day), their inspections (three
per run) and the parameters' spec limits beside them. A small shift effect is planted
(night runs read 5 % of the tolerance high, and fail inspections a little more often)
so the comparison has something to find. The lake is cached under ``--cache`` and
reused by a rerun with the same sizes.

Then, interleaved, ``--repeats`` times each, on the same files in the same run:

- the shift-difference job, :func:`sqems.lake.compare` with ``factors=("shift",)``
  (per-run summaries of every reading, then whether the parameters' run means and the
  inspections' failure rates differ between shifts);
- the SPC job, :func:`sqems.lake.spc_scan` (the live stream's alarm rules over every
  series of good readings);

on Spark ``local[2]`` (driver 1 GiB) and on DuckDB with two threads. It prints the
medians, the ratio Spark / DuckDB, the load before and after, whether both engines gave
the same answers, the bytes on disk, and the same lake at one billion readings on paper
(rows and bytes scaled from the measured bytes per reading).

    python benchmarks/lake.py                          # 100 million readings
    python benchmarks/lake.py --readings 10000000      # a quick run
    python benchmarks/lake.py --readings 100000000 --repeats 1 --jobs spc
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sqems.lake import DuckEngine, Engine, compare, open_lake, spc_scan
from sqems.lake.jobs import Comparison
from sqems.lake.layout import (
    FORMAT,
    INSPECTIONS,
    INSPECTIONS_FILE,
    MANIFEST,
    PARAMETERS,
    PARAMETERS_FILE,
    READINGS_DIR,
    RUNS,
    RUNS_FILE,
    VERSION,
)
from sqems.lake.spark import SparkEngine, session

START = datetime(2026, 3, 2, tzinfo=UTC)
HZ = 10
RUN_MINUTES = 55
NIGHT_OFFSET = 0.05
"""Night runs' readings sit this many tolerances above the others' (planted)."""
FAIL_RATE, NIGHT_FAIL = 0.05, 0.03
BILLION = 1_000_000_000


def shift_of(hour: int) -> str:
    return "early" if 6 <= hour < 14 else "late" if 14 <= hour < 22 else "night"


def generate(folder: Path, readings: int, lines: int, machines: int, parameters: int,
             seed: int) -> dict[str, object]:  # fmt: skip
    """Write the lake at ``folder`` (replacing an unfinished one); returns its manifest."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / READINGS_DIR).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    series = lines * machines * parameters
    per_series = math.ceil(readings / series)
    hours = math.ceil(per_series / HZ / 3600)
    names = [(f"LINE-{a}", f"LINE-{a}-M{b}") for a in range(lines) for b in range(machines)]
    specs = [(f"P-{k}", 200.0 + 10 * k, 220.0 + 10 * k) for k in range(parameters)]

    params = pa.table(
        {
            "parameter": [p for p, _, _ in specs],
            "name": [f"parameter {p}" for p, _, _ in specs],
            "unit": ["degC"] * parameters,
            "lsl": [lo for _, lo, _ in specs],
            "usl": [hi for _, _, hi in specs],
            "target": [(lo + hi) / 2 for _, lo, hi in specs],
            "critical": [False] * parameters,
            "step": ["STEP-1"] * parameters,
        },
        schema=PARAMETERS,
    )
    runs: dict[str, list[object]] = {f.name: [] for f in RUNS}
    checks: dict[str, list[object]] = {f.name: [] for f in INSPECTIONS}
    for line, machine in names:
        for h in range(hours):
            start = START + timedelta(hours=h)
            end = start + timedelta(minutes=RUN_MINUTES)
            shift = shift_of(start.hour)
            run, batch = f"RUN-{machine}-{h}", f"B-{machine}-{h}"
            for name, value in zip(runs, (run, batch, "STEP-1", machine, line, "SITE-1",
                                          shift, start, end), strict=True):  # fmt: skip
                runs[name].append(value)
            for i in range(3):
                fails = rng.random() < FAIL_RATE + (NIGHT_FAIL if shift == "night" else 0)
                values = (f"INS-{run}-{i}", end + timedelta(minutes=i + 1), "aoi", 5,
                          1 if fails else 0, "fail" if fails else "pass", batch, run,
                          "STEP-1", machine, line, shift)  # fmt: skip
                for name, value in zip(checks, values, strict=True):
                    checks[name].append(value)
    pq.write_table(params, folder / PARAMETERS_FILE)
    pq.write_table(pa.table(runs, schema=RUNS), folder / RUNS_FILE)
    pq.write_table(pa.table(checks, schema=INSPECTIONS), folder / INSPECTIONS_FILE)

    db = duckdb.connect(":memory:")
    db.execute("SET TimeZone = 'UTC'")
    db.execute(f"SELECT setseed({(seed % 1000) / 1000})").fetchall()
    db.register("machines", pa.table({"line": [a for a, _ in names],
                                      "machine": [b for _, b in names]}))  # fmt: skip
    db.register("params", params)
    start_us = int(START.timestamp() * 1_000_000)
    step_us = 1_000_000 // HZ
    # one row per reading, column-wise: series x time index; values normal around the
    # target (sd a twelfth of the tolerance, Box-Muller), night hours offset
    db.execute(f"""
        COPY (
          SELECT s.machine || '/' || s.parameter || '/' || i AS message_id,
                 'SITE-1' AS site, s.machine AS machine, s.parameter AS parameter,
                 make_timestamptz({start_us} + i * {step_us}) AS ts,
                 round(s.target + (s.usl - s.lsl) * (
                     CASE WHEN hour(make_timestamptz({start_us} + i * {step_us})) >= 22
                            OR hour(make_timestamptz({start_us} + i * {step_us})) < 6
                          THEN {NIGHT_OFFSET} ELSE 0 END
                     + sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) / 12), 4)
                   AS value,
                 s.unit AS unit, 'good' AS quality,
                 make_timestamptz({start_us} + i * {step_us} + 400000) AS received_at,
                 strftime(make_timestamptz({start_us} + i * {step_us}), '%Y-%m-%d') AS day,
                 s.line AS line
          FROM (SELECT * FROM machines CROSS JOIN params) s
          CROSS JOIN range({per_series}) t(i)
        ) TO '{folder / READINGS_DIR}' (FORMAT PARQUET, PARTITION_BY (day, line))
    """)
    db.close()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "written_at": datetime.now(UTC).isoformat(),
        "rows": {
            "readings": per_series * series,
            "runs": len(runs["run"]),
            "inspections": len(checks["inspection"]),
            "parameters": parameters,
        },
        "generated": {
            "lines": lines,
            "machines_per_line": machines,
            "parameters": parameters,
            "hz": HZ,
            "seed": seed,
        },
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def lake_for(args: argparse.Namespace) -> Path:
    name = f"r{args.readings}-l{args.lines}-m{args.machines}-p{args.parameters}-s{args.seed}"
    folder = args.cache / name
    if (folder / MANIFEST).is_file():
        print(f"lake: reusing {folder}")
        return folder
    print(f"lake: generating {args.readings:,} readings into {folder} ...", flush=True)
    t = time.perf_counter()
    generate(folder, args.readings, args.lines, args.machines, args.parameters, args.seed)
    print(f"lake: generated in {time.perf_counter() - t:.0f} s (load {load()})")
    return folder


def disk_bytes(folder: Path) -> tuple[int, int, int]:
    """Bytes of the readings files, of everything, and how many readings files."""
    files = list((folder / READINGS_DIR).rglob("*.parquet"))
    readings = sum(f.stat().st_size for f in files)
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return readings, total, len(files)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(run: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    answer = run()
    return time.perf_counter() - t, answer


def same_spc(a: pa.Table, b: pa.Table) -> bool:
    if a.num_rows != b.num_rows:
        return False
    exact = [n for n in a.column_names if n not in ("center", "sigma")]
    return all(a.column(n).to_pylist() == b.column(n).to_pylist() for n in exact)


def same_comparison(a: Comparison, b: Comparison) -> bool:
    ta, tb = a.table(), b.table()
    if ta.num_rows != tb.num_rows or a.untested != b.untested:
        return False
    for name in ("subject", "factor", "significant", "high", "low"):
        if ta.column(name).to_pylist() != tb.column(name).to_pylist():
            return False
    return bool(np.allclose(ta.column("p_value").to_numpy(), tb.column("p_value").to_numpy(),
                            rtol=1e-6, atol=1e-12))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000_000)
    parser.add_argument("--lines", type=int, default=4)
    parser.add_argument("--machines", type=int, default=4, help="machines per line")
    parser.add_argument("--parameters", type=int, default=2, help="parameters per machine")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", nargs="+", choices=("shifts", "spc"),
                        default=["shifts", "spc"])  # fmt: skip
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "sqems-lake-bench"
    )
    args = parser.parse_args()

    folder = lake_for(args)
    lake = open_lake(folder)
    rows = lake.manifest["rows"]
    readings_bytes, total_bytes, files = disk_bytes(folder)
    per_reading = readings_bytes / rows["readings"]
    print(f"lake: {rows['readings']:,} readings in {files} files, {readings_bytes / 1e9:.2f} GB "
          f"of readings ({per_reading:.1f} bytes a reading), {total_bytes / 1e9:.2f} GB in all; "
          f"{rows['runs']:,} runs, {rows['inspections']:,} inspections")  # fmt: skip
    scale = BILLION / rows["readings"]
    print(f"on paper, 1 billion readings: {BILLION:,} rows, {per_reading * BILLION / 1e9:.0f} GB "
          f"of readings at the same bytes a reading, {rows['runs'] * scale:,.0f} runs "
          f"(the same plant, {scale:.0f}x longer)")  # fmt: skip

    duck = DuckEngine(threads=2)
    duck.attach(lake)
    spark = session("local[2]", shuffle_partitions=8,
                    conf={"spark.local.dir": str(args.cache / "spark-scratch")})  # fmt: skip
    engine = SparkEngine(spark, owned=True)
    engine.attach(lake)
    jobs: dict[str, Callable[[Engine], object]] = {
        "shifts": lambda e: compare(e, factors=("shift",)),
        "spc": spc_scan,
    }
    times: dict[tuple[str, str], list[float]] = {}
    answers: dict[tuple[str, str], object] = {}
    print(f"timing {', '.join(args.jobs)} x {args.repeats} (load before {load()})", flush=True)
    try:
        for r in range(args.repeats):
            for job in args.jobs:
                for name, e in (("duckdb", duck), ("spark", engine)):
                    seconds, answer = timed(lambda e=e, job=job: jobs[job](e))
                    times.setdefault((job, name), []).append(seconds)
                    answers[(job, name)] = answer
                    print(f"  pass {r + 1}: {job:8s} {name:7s} {seconds:8.1f} s  "
                          f"(load {load()})", flush=True)  # fmt: skip
    finally:
        duck.close()
        engine.close()
    print(f"load after: {load()}  (2 cores; loadavg 1/5/15 min)")
    print(f"\n{'job':10s} {'DuckDB 2 threads':>17s} {'Spark local[2]':>15s} {'Spark/DuckDB':>13s}"
          f" {'readings/s Spark':>17s}  same answer")  # fmt: skip
    for job in args.jobs:
        d = statistics.median(times[(job, "duckdb")])
        s = statistics.median(times[(job, "spark")])
        a, b = answers[(job, "duckdb")], answers[(job, "spark")]
        same = (same_comparison(a, b) if job == "shifts"  # type: ignore[arg-type]
                else same_spc(a, b))  # type: ignore[arg-type]  # fmt: skip
        print(f"{job:10s} {d:16.1f}s {s:14.1f}s {s / d:12.2f}x {rows['readings'] / s:17,.0f}"
              f"  {'yes' if same else 'NO'}")  # fmt: skip
        print(f"{'':10s} on paper at 1 billion readings, same 2 cores, linear: DuckDB "
              f"{d * scale / 60:.0f} min, Spark {s * scale / 60:.0f} min")  # fmt: skip
    found = answers.get(("shifts", "spark"))
    if isinstance(found, Comparison):
        hits = [f for f in found.findings if f.significant]
        print(
            f"\nshifts: {len(found.findings)} tests, {len(hits)} significant after Holm: "
            + "; ".join(f"{f.subject} by {f.factor}" for f in hits)
        )
    if not all(
        (same_comparison(answers[(j, "duckdb")], answers[(j, "spark")]) if j == "shifts"  # type: ignore[arg-type]
         else same_spc(answers[(j, "duckdb")], answers[(j, "spark")]))  # type: ignore[arg-type]
        for j in args.jobs
    ):  # fmt: skip
        sys.exit("the engines disagree: see above")


if __name__ == "__main__":
    main()
