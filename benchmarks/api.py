"""API benchmark: requests/s and latency of the GraphQL API on a 100k-unit plant.

Builds the plant into an embedded store in a temporary data directory, starts
``sqems serve`` on it as a separate process on a free loopback port, and drives it with
an asynchronous load generator (httpx, ``--concurrency`` requests in flight for
``--seconds``), and measures the latency one caller sees with a plain keep-alive
client sending one request at a time, for:

* a node lookup by uid (``entity``), the simple query;
* a recall scope from a random lot: the summary a recall decision needs (counts,
  batches, shipments, customers), and the recall screen (counts, customers and the
  first page of 20 affected units with their paths; for scale, also a page of 200).

Beside them, the same recall scope called directly on a store holding the same plant
in this process (no HTTP, no GraphQL): the floor that the API's overhead is measured
against, one request at a time on both sides.

    python benchmarks/api.py                       # 100k units, 10 s per phase
    python benchmarks/api.py --units 20000 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from figures import latency, percentile

from sqems.datasets import PlantSpec, generate, load_plant
from sqems.datasets.files import plant_sections
from sqems.graph_model import EmbeddedGraphStore, RecallSource, SourceKind, Traceability
from sqems.graph_model.neo4j_server import free_port
from sqems.graphql import AccessStore, Role
from sqems.graphql.app import ACCESS_FILE

ENTITY = "query($uid: String!) { entity(uid: $uid) { uid label } }"
SUMMARY = """query($lot: String!) { recallScope(input: {lot: $lot}) {
  counts { batches units unitsShipped shipments customers }
  batches shipments customers { uid }
} }"""
RECALL = """query($lot: String!, $first: Int!) { recallScope(input: {lot: $lot}) {
  counts { batches units unitsShipped shipments customers }
  customers { uid }
  units(first: $first) { totalCount edges { node { uid shipment path { uid edge } } } }
} }"""


async def drive(
    url: str,
    token: str,
    query: str,
    pool: list[str],
    var: str,
    concurrency: int,
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Keep ``concurrency`` requests in flight for ``seconds``; latency and throughput."""
    latencies: list[float] = []
    errors = 0
    rng = random.Random(1)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60
    ) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                body = {"query": query, "variables": {var: rng.choice(pool), **(extra or {})}}
                began = time.perf_counter()
                response = await client.post("/graphql", json=body)
                latencies.append((time.perf_counter() - began) * 1000)
                if response.status_code != 200 or "errors" in response.json():
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return latency(latencies, elapsed, errors)


def sequential(
    url: str,
    token: str,
    query: str,
    pool: list[str],
    var: str,
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, float]:
    """One request at a time from a plain keep-alive client: the latency one caller sees."""
    latencies: list[float] = []
    errors = 0
    rng = random.Random(1)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            body = {"query": query, "variables": {var: rng.choice(pool), **(extra or {})}}
            t0 = time.perf_counter()
            response = client.post("/graphql", json=body)
            latencies.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200 or "errors" in response.json():
                errors += 1
        elapsed = time.perf_counter() - began
    return latency(latencies, elapsed, errors)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sqems serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("sqems serve did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sqems-api-bench-") as tmp:
        data = Path(tmp)
        print(f"building a {args.units:,}-unit plant…", file=sys.stderr, flush=True)
        plant = generate(PlantSpec(units=args.units, seed=args.seed))
        with EmbeddedGraphStore(data / "graph.db") as store:
            load_plant(store, plant_sections(plant))
        lots = list(plant.nodes["MaterialLot"].columns["uid"])
        units = list(plant.nodes["Unit"].columns["uid"])
        del plant
        access = AccessStore(data / ACCESS_FILE)
        _, admin = access.create_key("bootstrap", Role.ADMIN)
        _, token = access.create_key("benchmark", Role.VIEWER)
        access.close()

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "SQEMS_DATA_DIR": str(data), "SQEMS_API_PORT": str(port),
               "SQEMS_GRAPH_URI": "embedded"}  # fmt: skip
        server = subprocess.Popen(
            [sys.executable, "-c", "from sqems.cli import main; main()", "serve"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(url, server)
            results = {}
            for name, query, pool, var, conc, extra in (
                ("node lookup", ENTITY, units, "uid", args.concurrency, None),
                ("node lookup, 1 at a time", ENTITY, units, "uid", 1, None),
                ("recall scope", RECALL, lots, "lot", args.concurrency, {"first": 20}),
                ("recall summary, 1 at a time", SUMMARY, lots, "lot", 1, None),
                ("recall scope, 1 at a time", RECALL, lots, "lot", 1, {"first": 20}),
                ("recall, 200 units, 1 at a time", RECALL, lots, "lot", 1, {"first": 200}),
            ):
                if conc == 1:
                    sequential(url, token, query, pool, var, 1.0, extra)  # warm-up
                    results[name] = sequential(url, token, query, pool, var, args.seconds, extra)
                    continue
                asyncio.run(drive(url, token, query, pool, var, conc, 1.0, extra))  # warm-up
                results[name] = asyncio.run(
                    drive(url, token, query, pool, var, conc, args.seconds, extra)
                )
        finally:
            server.terminate()
            server.wait(timeout=30)

        store = EmbeddedGraphStore(data / "graph.db", read_only=True)
        trace = Traceability(store)
        rng = random.Random(1)
        direct = []
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline:
            lot = rng.choice(lots)
            began = time.perf_counter()
            trace.recall_scope(RecallSource(SourceKind.LOT, lot))
            direct.append((time.perf_counter() - began) * 1000)
        store.close()

    print()
    print(f"{'operation':<28} {'in flight':>9} {'requests':>9} {'req/s':>8} {'p50':>9} {'p99':>9}"
          f" {'errors':>7}")  # fmt: skip
    for name, r in results.items():
        conc = 1 if "1 at a time" in name else args.concurrency
        print(f"{name:<28} {conc:>9} {r['requests']:>9,.0f} {r['rps']:>8.1f} "
              f"{r['p50']:>7.2f}ms {r['p99']:>7.2f}ms {r['errors']:>7.0f}")  # fmt: skip
    d50, d99 = statistics.median(direct), percentile(direct, 0.99)
    print(f"{'recall scope, direct call':<28} {1:>9} {len(direct):>9,} "
          f"{len(direct) / args.seconds:>8.1f} {d50:>7.2f}ms {d99:>7.2f}ms {0:>7}")  # fmt: skip
    print()
    print(f"simple queries: {results['node lookup']['rps']:.0f} req/s (target >= 300 on 2 cores)")
    for name in ("recall summary, 1 at a time", "recall scope, 1 at a time"):
        ratio = results[name]["p50"] / d50
        print(f"GraphQL {name.split(',')[0]} p50 / direct call p50 = {ratio:.2f}x (target <= 2x)")
    _ = admin


if __name__ == "__main__":
    main()
