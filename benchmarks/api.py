"""API benchmark: requests/s and latency of the GraphQL API on a 100k-unit plant.

Builds the plant into an embedded store in a temporary data directory (generated, or
read from ``--plant-dir``), starts ``sqems serve`` on it as a separate process on a
free loopback port, and drives it with an asynchronous load generator (httpx,
``--concurrency`` requests in flight for ``--seconds``), and measures the latency one
caller sees with a plain keep-alive client sending one request at a time, for:

* a node lookup by uid (``entity``), the simple query;
* a recall scope from a random lot: the summary a recall decision needs (counts,
  batches, shipments, customers), and the recall screen (counts, customers and the
  first page of 20 affected units with their paths; for scale, also a page of 200).

Beside them, the same recall scope called directly on a store holding the same plant
in this process (no HTTP, no GraphQL): the floor that the API's overhead is measured
against. One request at a time, each round calls the direct recall scope and then asks
the server(s) for the same lot, so both sides are timed under the same load.

``--baseline-src`` serves the same plant a second time from another source tree (an
older commit's ``sqems/``, e.g. unpacked with ``git archive <commit> sqems | tar -x``),
on a copy of the data directory: its requests alternate with the current server's in
the same rounds, for a before/after from one run.

    python benchmarks/api.py                       # 100k units, 10 s per phase
    python benchmarks/api.py --units 20000 --seconds 5
    python benchmarks/api.py --plant-dir plants/units-100000-seed-3 --baseline-src /tmp/base
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from figures import latency

from sqems.datasets import PlantSpec, generate, load_plant, read_plant
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


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system, every thread) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sequential(
    urls: list[str],
    token: str,
    query: str,
    pool: list[str],
    var: str,
    seconds: float,
    extra: dict[str, Any] | None = None,
    direct: Callable[[str], object] | None = None,
    pids: list[int] | None = None,
) -> list[dict[str, float]]:
    """One request at a time from a plain keep-alive client per server, the latency one
    caller sees: each round asks every server in ``urls`` for the same value, after
    timing ``direct(value)`` (the in-process call) if given. Figures per server, then
    the direct call's; with the servers' ``pids``, each side's CPU time per request
    too (``cpu``: the server's, all its threads; ``client_cpu``: the client's), which
    a loaded machine inflates far less than latency."""
    samples: list[list[float]] = [[] for _ in urls] + ([[]] if direct else [])
    cpu = [0.0] * len(samples)
    client_cpu = [0.0] * len(samples)
    errors = [0] * len(samples)
    rng = random.Random(1)
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=url, headers=headers) for url in urls]
    server_cpu = [cpu_seconds(pid) for pid in pids or []]
    try:
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            value = rng.choice(pool)
            if direct is not None:
                c0, t0 = time.thread_time(), time.perf_counter()
                direct(value)
                samples[-1].append((time.perf_counter() - t0) * 1000)
                cpu[-1] += time.thread_time() - c0
            body = {"query": query, "variables": {var: value, **(extra or {})}}
            for i, client in enumerate(clients):
                c0, t0 = time.thread_time(), time.perf_counter()
                response = client.post("/graphql", json=body)
                samples[i].append((time.perf_counter() - t0) * 1000)
                client_cpu[i] += time.thread_time() - c0
                if response.status_code != 200 or "errors" in response.json():
                    errors[i] += 1
        elapsed = time.perf_counter() - began
        for i, pid in enumerate(pids or []):
            cpu[i] = cpu_seconds(pid) - server_cpu[i]
    finally:
        for client in clients:
            client.close()
    out = []
    for i, (s, e) in enumerate(zip(samples, errors, strict=True)):
        figures = latency(s, elapsed, e)
        figures["cpu"] = cpu[i] * 1000 / len(s) if (pids or i == len(urls)) else float("nan")
        figures["client_cpu"] = client_cpu[i] * 1000 / len(s)
        out.append(figures)
    return out


def serve(data: Path, port: int, src: Path | None) -> subprocess.Popen[bytes]:
    """``sqems serve`` on ``data`` at ``port``, from ``src`` (a source tree holding
    ``sqems/``) if given, else from this checkout."""
    env = {**os.environ, "SQEMS_DATA_DIR": str(data), "SQEMS_API_PORT": str(port),
           "SQEMS_GRAPH_URI": "embedded"}  # fmt: skip
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(":")
    return subprocess.Popen(
        [sys.executable, "-c", "from sqems.cli import main; main()", "serve"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=src or None,
    )  # fmt: skip


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
    parser.add_argument("--plant-dir", type=Path, help="a plant directory to load (else generated)")
    parser.add_argument(
        "--baseline-src", type=Path, help="a source tree (holding sqems/) serving the plant too"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sqems-api-bench-") as tmp:
        data = Path(tmp) / "current"
        data.mkdir()
        with EmbeddedGraphStore(data / "graph.db") as store:
            if args.plant_dir is not None:
                print(f"loading {args.plant_dir}…", file=sys.stderr, flush=True)
                load_plant(store, read_plant(args.plant_dir))
            else:
                print(f"building a {args.units:,}-unit plant…", file=sys.stderr, flush=True)
                plant = generate(PlantSpec(units=args.units, seed=args.seed))
                load_plant(store, plant_sections(plant))
                del plant
            lots = [n.uid for n in store.find("MaterialLot")]
            units = [n.uid for n in store.find("Unit")]
        access = AccessStore(data / ACCESS_FILE)
        _, token = access.create_key("benchmark", Role.VIEWER)
        access.close()
        sides = {"current": (data, None)}
        if args.baseline_src is not None:
            sides["baseline"] = (Path(tmp) / "baseline", args.baseline_src.resolve())
            shutil.copytree(data, sides["baseline"][0], ignore=shutil.ignore_patterns("*.lock"))

        servers, urls = [], {}
        reader = EmbeddedGraphStore(data / "graph.db", read_only=True)
        trace = Traceability(reader)

        def direct(lot: str) -> object:
            return trace.recall_scope(RecallSource(SourceKind.LOT, lot))

        try:
            for name, (where, src) in sides.items():
                port = free_port()
                servers.append(serve(where, port, src))
                urls[name] = f"http://127.0.0.1:{port}"
            for server, url in zip(servers, urls.values(), strict=True):
                wait_ready(url, server)
            results: dict[str, dict[str, dict[str, float]]] = {n: {} for n in [*urls, "direct"]}
            for name, query, pool, var, conc, extra in (
                ("node lookup", ENTITY, units, "uid", args.concurrency, None),
                ("node lookup", ENTITY, units, "uid", 1, None),
                ("recall screen", RECALL, lots, "lot", args.concurrency, {"first": 20}),
                ("recall summary", SUMMARY, lots, "lot", 1, None),
                ("recall screen", RECALL, lots, "lot", 1, {"first": 20}),
                ("recall, 200 units", RECALL, lots, "lot", 1, {"first": 200}),
            ):
                key = f"{name}, {conc} in flight"
                if conc == 1:
                    floor = direct if var == "lot" else None
                    at = list(urls.values())
                    sequential(at, token, query, pool, var, 1.0, extra, floor)
                    pids = [server.pid for server in servers]
                    got = sequential(at, token, query, pool, var, args.seconds, extra, floor, pids)
                    for side, figures in zip([*urls, "direct"], got, strict=False):
                        results[side][key] = figures
                    continue
                for side, url in urls.items():
                    asyncio.run(drive(url, token, query, pool, var, conc, 1.0, extra))  # warm-up
                    results[side][key] = asyncio.run(
                        drive(url, token, query, pool, var, conc, args.seconds, extra)
                    )
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(timeout=30)
            reader.close()

    print()
    print(f"{'operation':<31} {'side':<9} {'requests':>8} {'req/s':>7} {'p50':>9} {'p99':>9}"
          f" {'errors':>6} {'p50/direct':>10} {'CPU/req':>8} {'client':>7}")  # fmt: skip
    for key in results["current"]:
        floor = results["direct"].get(key)
        for side in [*urls, "direct"]:
            r = results[side].get(key)
            if r is None:
                continue
            ratio = f"{r['p50'] / floor['p50']:.2f}x" if floor and side != "direct" else ""
            cpu = f"{r['cpu']:.2f}ms" if r.get("cpu", float("nan")) == r.get("cpu") else ""
            client = f"{r['client_cpu']:.2f}" if "client_cpu" in r and side != "direct" else ""
            print(f"{key:<31} {side:<9} {r['requests']:>8,.0f} {r['rps']:>7.1f} "
                  f"{r['p50']:>7.2f}ms {r['p99']:>7.2f}ms {r['errors']:>6.0f} {ratio:>10} "
                  f"{cpu:>8} {client:>7}")  # fmt: skip
    print()
    print("CPU/req: the server's CPU time per request (all its threads), or the direct")
    print("call's; client: the client's CPU time per request (ms).")
    for side in urls:
        rps = results[side][f"node lookup, {args.concurrency} in flight"]["rps"]
        print(f"{side}: simple queries {rps:.0f} req/s (target >= 300 on 2 cores)")
        for name in ("recall summary", "recall screen"):
            key = f"{name}, 1 in flight"
            mine, floor = results[side][key], results["direct"][key]
            print(f"  GraphQL {name}: p50 / direct call p50, same rounds = "
                  f"{mine['p50'] / floor['p50']:.2f}x (target <= 2x); "
                  f"server CPU / direct CPU = {mine['cpu'] / floor['cpu']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
