"""Against the peers: SQEMS beside PostgreSQL and plain Cypher on the same plant.

For each plant size (seed 3) the script loads one plant into

- the embedded store (in memory);
- a Neo4j Community 5.26 server it starts itself (heap 3 GiB, page cache 3 GiB), through
  the product's loader;
- PostgreSQL 15 from the distribution's package, in a temporary cluster it creates and
  starts on a free loopback port (run as the ``postgres`` user when the script runs as
  root), loaded with ``COPY`` into typed genealogy tables indexed both ways, then
  ``ANALYZE``;

then times, interleaved, the recall scope of the same random material lots and the
upstream trace of the same random defective units on every side:

- SQEMS embedded and SQEMS on Neo4j (``Traceability``, the public API);
- a PostgreSQL recursive CTE returning every affected unit with its path, its shipment
  and customer, and a counts-only variant;
- one plain Cypher query on the same Neo4j server (quantified path pattern), with paths
  and counts-only.

Every side's answer is checked against the embedded store's before anything is timed:
the same affected units, shipments and customers, the same path for each unit, the same
upstream nodes by label.

    python benchmarks/peers.py --plants-dir /tmp/p/plants        # 100k and 1M units
    python benchmarks/peers.py --sizes 20000 --lots 10
    python benchmarks/peers.py --sizes 1000000 --plants-dir /tmp/p/plants \
        --neo4j-home /tmp/p/neo4j-1m --embedded-dir /tmp/p/stores
        # a second run reuses both stores instead of loading them again
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, LiteralString

import neo4j
import psycopg
from figures import percentile

from sqems.datasets import PlantSpec, generate, load_plant, read_plant, write_plant
from sqems.datasets.files import plant_identity
from sqems.datasets.load import held_plants, load_in_progress
from sqems.graph_model import EmbeddedGraphStore, RecallSource, SourceKind, Traceability
from sqems.graph_model.neo4j_server import Neo4jServer, free_port
from sqems.graph_model.neo4j_store import Neo4jGraphStore

REPO = Path(__file__).resolve().parent.parent
PG_BIN = Path(os.environ.get("SQEMS_PG_BIN", "/usr/lib/postgresql/15/bin"))

# --- PostgreSQL: schema, load and queries ---------------------------------------------

PG_SETTINGS: dict[str, str] = {
    # memory comparable to the Neo4j server's 3 GiB page cache + 3 GiB heap
    "shared_buffers": "3GB",
    "effective_cache_size": "6GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "1GB",
    # the whole database sits in memory: random reads cost what sequential ones do
    "random_page_cost": "1.1",
    # short queries: compiling them with LLVM costs more than it saves
    "jit": "off",
    # bulk load: COPY into tables created in the same transaction skips the WAL
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
}
"""Server settings of the temporary cluster (also printed and documented)."""

PG_SESSION = (
    # the planner misjudges the recursive term's size and would hash or sort whole
    # edge tables; every step of these queries is an index probe from a few rows
    "SET enable_hashjoin = off",
    "SET enable_mergejoin = off",
)
"""Session settings the queries run with."""

NODE_TABLES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    # label: (table, [(csv column, sql column, sql type)])
    "MaterialLot": (
        "material_lot",
        [
            ("uid", "uid", "text PRIMARY KEY"),
            ("received_at", "received_at", "timestamptz"),
            ("quantity", "quantity", "numeric"),
            ("unit", "quantity_unit", "text"),
        ],
    ),
    "Batch": (
        "batch",
        [
            ("uid", "uid", "text PRIMARY KEY"),
            ("started_at", "started_at", "timestamptz"),
            ("ended_at", "ended_at", "timestamptz"),
            ("quantity", "quantity", "integer"),
            ("status", "status", "text"),
        ],
    ),
    "Unit": (
        "unit",
        [
            ("uid", "uid", "text PRIMARY KEY"),
            ("produced_at", "produced_at", "timestamptz"),
            ("status", "status", "text"),
        ],
    ),
    "Shipment": (
        "shipment",
        [
            ("uid", "uid", "text PRIMARY KEY"),
            ("shipped_at", "shipped_at", "timestamptz"),
            ("carrier", "carrier", "text"),
        ],
    ),
    "Customer": (
        "customer",
        [
            ("uid", "uid", "text PRIMARY KEY"),
            ("name", "name", "text"),
            ("country", "country", "text"),
        ],
    ),
    "Supplier": (
        "supplier",
        [
            ("uid", "uid", "text PRIMARY KEY"),
            ("name", "name", "text"),
            ("country", "country", "text"),
            ("status", "status", "text"),
        ],
    ),
    "Material": (
        "material",
        [
            ("uid", "uid", "text PRIMARY KEY"),
            ("name", "name", "text"),
            ("unit", "quantity_unit", "text"),
            ("critical", "critical", "boolean"),
        ],
    ),
    "ProcessRun": (
        "process_run",
        [
            ("uid", "uid", "text PRIMARY KEY"),
            ("started_at", "started_at", "timestamptz"),
            ("ended_at", "ended_at", "timestamptz"),
            ("shift", "shift", "text"),
        ],
    ),
    "Machine": (
        "machine",
        [
            ("uid", "uid", "text PRIMARY KEY"),
            ("name", "name", "text"),
            ("kind", "kind", "text"),
            ("x_m", "x_m", "double precision"),
            ("y_m", "y_m", "double precision"),
            ("rotation_deg", "rotation_deg", "double precision"),
            ("length_m", "length_m", "double precision"),
            ("width_m", "width_m", "double precision"),
            ("height_m", "height_m", "double precision"),
        ],
    ),
    "Operator": (
        "operator",
        [
            ("uid", "uid", "text PRIMARY KEY"),
            ("name", "name", "text"),
            ("qualified", "qualified", "boolean"),
        ],
    ),
    "Parameter": (
        "parameter",
        [
            ("uid", "uid", "text PRIMARY KEY"),
            ("name", "name", "text"),
            ("unit", "measure_unit", "text"),
            ("lsl", "lsl", "double precision"),
            ("usl", "usl", "double precision"),
            ("target", "target", "double precision"),
            ("critical", "critical", "boolean"),
        ],
    ),
}

EDGE_TABLES: dict[str, tuple[str, str, str, str, str, list[tuple[str, str, str]]]] = {
    # type: (table, source column, source table, target column, target table, [extra])
    "CONSUMED_IN": (
        "consumed_in",
        "lot",
        "material_lot",
        "batch",
        "batch",
        [("quantity", "quantity", "numeric")],
    ),
    "PRODUCED": ("produced", "batch", "batch", "unit", "unit", []),
    "ASSEMBLED_INTO": ("assembled_into", "unit", "unit", "assembly", "unit", []),
    "SHIPPED_IN": ("shipped_in", "unit", "unit", "shipment", "shipment", []),
    "DELIVERED_TO": ("delivered_to", "shipment", "shipment", "customer", "customer", []),
    "SUPPLIED": ("supplied", "supplier", "supplier", "lot", "material_lot", []),
    "LOT_OF": ("lot_of", "lot", "material_lot", "material", "material", []),
    "RAN": ("ran", "batch", "batch", "run", "process_run", []),
    "ON": ("ran_on", "run", "process_run", "machine", "machine", []),
    "OPERATED_BY": ("operated_by", "run", "process_run", "operator", "operator", []),
    "RECORDED": (
        "recorded",
        "run",
        "process_run",
        "parameter",
        "parameter",
        [("value", "value", "double precision"), ("unit", "measure_unit", "text")],
    ),
}

RECALL_PATHS_SQL: LiteralString = """\
WITH RECURSIVE walk (unit, hops, trail) AS (
    SELECT p.unit, 2, ARRAY[p.unit, c.batch, c.lot]
    FROM consumed_in c
    JOIN produced p ON p.batch = c.batch
    WHERE c.lot = %(lot)s
  UNION ALL
    SELECT a.assembly, w.hops + 1, a.assembly || w.trail
    FROM walk w
    JOIN assembled_into a ON a.unit = w.unit
),
scope AS (
    -- each unit's shortest path; among equals the one whose nodes, read backwards
    -- from the unit, come first (breadth-first, the first parent by uid)
    SELECT DISTINCT ON (unit) unit, trail
    FROM walk
    ORDER BY unit, hops, trail
)
SELECT s.unit, s.trail, si.shipment, d.customer
FROM scope s
LEFT JOIN shipped_in si ON si.unit = s.unit
LEFT JOIN delivered_to d ON d.shipment = si.shipment"""
"""Every unit a lot reaches, with its path (nodes from the unit back to the lot), the
shipment it left in and that shipment's customer."""

RECALL_COUNTS_SQL: LiteralString = """\
WITH RECURSIVE reached (unit) AS (
    SELECT p.unit
    FROM consumed_in c
    JOIN produced p ON p.batch = c.batch
    WHERE c.lot = %(lot)s
  UNION
    SELECT a.assembly
    FROM reached r
    JOIN assembled_into a ON a.unit = r.unit
)
SELECT count(DISTINCT r.unit), count(DISTINCT si.shipment), count(DISTINCT d.customer)
FROM reached r
LEFT JOIN shipped_in si ON si.unit = r.unit
LEFT JOIN delivered_to d ON d.shipment = si.shipment"""
"""How many units, shipments and customers a lot reaches."""

UPSTREAM_SQL: LiteralString = """\
WITH RECURSIVE parts (unit) AS (
    SELECT %(unit)s::text
  UNION
    SELECT a.unit
    FROM parts p
    JOIN assembled_into a ON a.assembly = p.unit
),
batches AS (
    SELECT DISTINCT pr.batch FROM parts p JOIN produced pr ON pr.unit = p.unit
),
lots AS (
    SELECT DISTINCT c.lot FROM batches b JOIN consumed_in c ON c.batch = b.batch
),
runs AS (
    SELECT DISTINCT r.run FROM batches b JOIN ran r ON r.batch = b.batch
)
SELECT 'Unit', unit FROM parts WHERE unit <> %(unit)s
UNION ALL SELECT 'Batch', batch FROM batches
UNION ALL SELECT 'MaterialLot', lot FROM lots
UNION ALL SELECT DISTINCT 'Supplier', s.supplier FROM lots l JOIN supplied s ON s.lot = l.lot
UNION ALL SELECT DISTINCT 'Material', m.material FROM lots l JOIN lot_of m ON m.lot = l.lot
UNION ALL SELECT 'ProcessRun', run FROM runs
UNION ALL SELECT DISTINCT 'Machine', o.machine FROM runs r JOIN ran_on o ON o.run = r.run
UNION ALL SELECT DISTINCT 'Operator', o.operator FROM runs r JOIN operated_by o ON o.run = r.run
UNION ALL SELECT DISTINCT 'Parameter', x.parameter FROM runs r JOIN recorded x ON x.run = r.run"""
"""Everything upstream of a unit, by label: sub-assemblies, their batches, the lots those
consumed with suppliers and materials, the process runs with machines, operators and the
parameters they recorded."""

# --- plain Cypher ---------------------------------------------------------------------

RECALL_PATHS_CYPHER: LiteralString = """\
MATCH p = (:MaterialLot {uid: $lot})-[:CONSUMED_IN]->(:Batch)-[:PRODUCED]->(:Unit)
          -[:ASSEMBLED_INTO]->*(u:Unit)
WITH u, length(p) AS hops, [n IN reverse(nodes(p)) | n.uid] AS trail
ORDER BY hops, trail
WITH u, head(collect(trail)) AS trail
OPTIONAL MATCH (u)-[:SHIPPED_IN]->(s:Shipment)
OPTIONAL MATCH (s)-[:DELIVERED_TO]->(c:Customer)
RETURN collect([u.uid, trail, s.uid, c.uid]) AS rows"""
"""The same answer as :data:`RECALL_PATHS_SQL`, collected into one record (the Python
driver pays per record)."""

RECALL_COUNTS_CYPHER: LiteralString = """\
MATCH (:MaterialLot {uid: $lot})-[:CONSUMED_IN]->(:Batch)-[:PRODUCED]->(u0:Unit)
WITH DISTINCT u0
MATCH (u0)-[:ASSEMBLED_INTO]->*(u:Unit)
WITH DISTINCT u
OPTIONAL MATCH (u)-[:SHIPPED_IN]->(s:Shipment)
OPTIONAL MATCH (s)-[:DELIVERED_TO]->(c:Customer)
RETURN count(DISTINCT u) AS units, count(DISTINCT s) AS shipments,
       count(DISTINCT c) AS customers"""

UPSTREAM_CYPHER: LiteralString = """\
MATCH (u:Unit {uid: $unit})
WITH u, COLLECT { MATCH (u)<-[:ASSEMBLED_INTO]-*(p:Unit) RETURN DISTINCT p } AS parts
WITH u, parts,
     COLLECT { UNWIND parts AS p MATCH (b:Batch)-[:PRODUCED]->(p) RETURN DISTINCT b } AS batches
WITH u, parts, batches,
     COLLECT { UNWIND batches AS b MATCH (l:MaterialLot)-[:CONSUMED_IN]->(b)
               RETURN DISTINCT l } AS lots,
     COLLECT { UNWIND batches AS b MATCH (b)-[:RAN]->(r:ProcessRun) RETURN DISTINCT r } AS runs
RETURN [p IN parts WHERE p <> u | p.uid] AS Unit,
       [b IN batches | b.uid] AS Batch,
       [l IN lots | l.uid] AS MaterialLot,
       COLLECT { UNWIND lots AS l MATCH (s:Supplier)-[:SUPPLIED]->(l)
                 RETURN DISTINCT s.uid } AS Supplier,
       COLLECT { UNWIND lots AS l MATCH (l)-[:LOT_OF]->(m:Material)
                 RETURN DISTINCT m.uid } AS Material,
       [r IN runs | r.uid] AS ProcessRun,
       COLLECT { UNWIND runs AS r MATCH (r)-[:ON]->(m:Machine) RETURN DISTINCT m.uid } AS Machine,
       COLLECT { UNWIND runs AS r MATCH (r)-[:OPERATED_BY]->(o:Operator)
                 RETURN DISTINCT o.uid } AS Operator,
       COLLECT { UNWIND runs AS r MATCH (r)-[:RECORDED]->(x:Parameter)
                 RETURN DISTINCT x.uid } AS Parameter"""

# --- answers, in one shape for every side ---------------------------------------------

Step = tuple[str, str, str | None]
"""One path step: uid, label, the edge type that led to it."""


@dataclass(frozen=True, slots=True)
class Recall:
    units: frozenset[str]
    shipments: frozenset[str]
    customers: frozenset[str]
    paths: dict[str, tuple[Step, ...]] | None = None
    """Each unit's path, where the side returns paths."""

    def counts(self) -> tuple[int, int, int]:
        return len(self.units), len(self.shipments), len(self.customers)


@dataclass(frozen=True, slots=True)
class Counts:
    units: int
    shipments: int
    customers: int

    def counts(self) -> tuple[int, int, int]:
        return self.units, self.shipments, self.customers


def typed_path(trail: list[str]) -> tuple[Step, ...]:
    """A genealogy path lot → batch → unit → assembly…, from its uids."""
    steps: list[Step] = [(trail[0], "MaterialLot", None), (trail[1], "Batch", "CONSUMED_IN")]
    steps.append((trail[2], "Unit", "PRODUCED"))
    steps += [(uid, "Unit", "ASSEMBLED_INTO") for uid in trail[3:]]
    return tuple(steps)


def recall_from_rows(rows: list[Any], backwards: bool) -> Recall:
    """Rows of (unit, path uids, shipment, customer) from a baseline."""
    units: set[str] = set()
    shipments: set[str] = set()
    customers: set[str] = set()
    paths: dict[str, tuple[Step, ...]] = {}
    for unit, trail, shipment, customer in rows:
        units.add(unit)
        paths[unit] = typed_path(trail[::-1] if backwards else trail)
        if shipment is not None:
            shipments.add(shipment)
        if customer is not None:
            customers.add(customer)
    return Recall(frozenset(units), frozenset(shipments), frozenset(customers), paths)


def recall_from_scope(scope: Any) -> Recall:
    return Recall(
        frozenset(u.uid for u in scope.units),
        frozenset(scope.shipments),
        frozenset(scope.customers),
        {u.uid: tuple((s.uid, s.label, s.edge) for s in u.path) for u in scope.units},
    )


def upstream_from_genealogy(genealogy: Any) -> dict[str, frozenset[str]]:
    grouped: dict[str, set[str]] = {}
    for r in genealogy.traversal.reached.values():
        if r.depth > 0:
            grouped.setdefault(r.label, set()).add(r.uid)
    return {label: frozenset(uids) for label, uids in grouped.items()}


def upstream_from_pairs(pairs: Iterator[tuple[str, str]]) -> dict[str, frozenset[str]]:
    grouped: dict[str, set[str]] = {}
    for label, uid in pairs:
        grouped.setdefault(label, set()).add(uid)
    return {label: frozenset(uids) for label, uids in grouped.items()}


# --- PostgreSQL server ----------------------------------------------------------------


@dataclass(slots=True)
class Postgres:
    """A throw-away PostgreSQL cluster on a free loopback port."""

    root: Path
    port: int
    password: str
    proc: subprocess.Popen[bytes]
    version: str

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            password=self.password,
            dbname="postgres",
            autocommit=True,
        )


def _pg_binary(name: str) -> str:
    path = PG_BIN / name
    if not path.is_file():
        raise SystemExit(
            f"{path} is missing: install PostgreSQL 15's server (Debian/Ubuntu: "
            "apt-get install postgresql-15) or point SQEMS_PG_BIN at its bin directory"
        )
    return str(path)


@contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """initdb a cluster in a temporary directory, start it, stop and remove it at exit.

    PostgreSQL refuses to run as root, so as root the cluster belongs to (and the server
    runs as) the ``postgres`` system user the distribution's package creates.
    """
    initdb, postgres = _pg_binary("initdb"), _pg_binary("postgres")
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise SystemExit(
                "running as root, and PostgreSQL refuses root: create a 'postgres' user "
                "(the postgresql-15 package does) or run the benchmark as another user"
            ) from None
    root = Path(tempfile.mkdtemp(prefix="sqems-peers-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        password = secrets.token_urlsafe(18)
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        user = owner.pw_name if owner is not None else None
        data = root / "data"
        subprocess.run(
            [
                initdb,
                "-D",
                str(data),
                "-U",
                "postgres",
                "--no-locale",
                "-E",
                "UTF8",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
            ],
            check=True,
            user=user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        pwfile.unlink()
        port = free_port()
        options = [f"-c{k}={v}" for k, v in PG_SETTINGS.items()]
        with (root / "server.log").open("ab") as log:
            proc = subprocess.Popen(
                [postgres, "-D", str(data), "-p", str(port), *options],
                user=user,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=port, user="postgres", password=password,
                    dbname="postgres", connect_timeout=2,
                ) as conn:  # fmt: skip
                    row = conn.execute("SHOW server_version").fetchone()
                    version = str(row[0]) if row else "?"
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (root / "server.log").read_text(errors="replace")[-2000:]
                    raise SystemExit(f"PostgreSQL did not start:\n{tail}") from None
                time.sleep(0.2)
        yield Postgres(root, port, password, proc, version)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _copy_csv(
    cur: psycopg.Cursor[Any], path: Path, table: str, columns: list[tuple[str, str]]
) -> None:
    """COPY a plant CSV into ``table``; ``columns`` pairs each CSV column with its SQL one."""
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader([handle.readline()]))
        wanted = [c for c, _ in columns]
        if header != wanted:
            raise SystemExit(f"{path}: columns {header}, expected {wanted}")
        sql_columns = ", ".join(s for _, s in columns)
        with cur.copy(f"COPY {table} ({sql_columns}) FROM STDIN WITH (FORMAT csv)") as copy:
            while chunk := handle.read(1 << 20):
                copy.write(chunk)


def load_postgres(pg: Postgres, plant: Path) -> dict[str, float]:
    """Typed tables by COPY (created in the loading transaction, so no WAL is written),
    then primary keys, an index on the other end of every edge table, foreign keys and
    ANALYZE; seconds per phase."""
    manifest = _manifest_files(plant)
    times: dict[str, float] = {}
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS genealogy CASCADE")
        began = time.perf_counter()
        with conn.transaction():
            cur.execute("CREATE SCHEMA genealogy")
            cur.execute("SET search_path = genealogy")
            for label, (table, columns) in NODE_TABLES.items():
                body = ", ".join(f"{s} {t.replace(' PRIMARY KEY', '')}" for _, s, t in columns)
                cur.execute(f"CREATE TABLE {table} ({body})")
                _copy_csv(cur, manifest["nodes"][label], table, [(c, s) for c, s, _ in columns])
            for rel, (table, src, _, dst, _, extra) in EDGE_TABLES.items():
                body = ", ".join(
                    [
                        f"{src} text NOT NULL",
                        f"{dst} text NOT NULL",
                        *(f"{s} {t}" for _, s, t in extra),
                    ]
                )
                cur.execute(f"CREATE TABLE {table} ({body})")
                pairs = [("src", src), ("dst", dst), *((c, s) for c, s, _ in extra)]
                _copy_csv(cur, manifest["edges"][rel], table, pairs)
        times["copy"] = time.perf_counter() - began
        began = time.perf_counter()
        cur.execute("SET search_path = genealogy")
        for table, _ in NODE_TABLES.values():
            cur.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (uid)")
        for table, src, _, dst, _, _ in EDGE_TABLES.values():
            cur.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({src}, {dst})")
            cur.execute(f"CREATE INDEX ON {table} ({dst}, {src})")
        times["indexes"] = time.perf_counter() - began
        began = time.perf_counter()
        for table, src, src_table, dst, dst_table, _ in EDGE_TABLES.values():
            for column, target in ((src, src_table), (dst, dst_table)):
                cur.execute(f"ALTER TABLE {table} ADD FOREIGN KEY ({column}) REFERENCES {target}")
        times["foreign keys"] = time.perf_counter() - began
        began = time.perf_counter()
        cur.execute("VACUUM (ANALYZE)")
        times["vacuum analyze"] = time.perf_counter() - began
    return times


def _manifest_files(plant: Path) -> dict[str, dict[str, Path]]:
    manifest = json.loads((plant / "manifest.json").read_text())
    return {
        kind: {name: plant / entry["file"] for name, entry in manifest[kind].items()}
        for kind in ("nodes", "edges")
    }


# --- plants ---------------------------------------------------------------------------


def plant_directory(units: int, seed: int, plants_dir: Path | None, scratch: Path) -> Path:
    """The plant's directory: reused from ``plants_dir`` when there, else generated
    (into ``plants_dir`` under a temporary name then renamed, or into ``scratch``)."""
    name = f"units-{units}-seed-{seed}"
    if plants_dir is not None and (plants_dir / name / "manifest.json").is_file():
        return plants_dir / name
    target = (plants_dir or scratch) / name
    print(f"generating a {units:,}-unit plant into {target}…", file=sys.stderr, flush=True)
    partial = target.with_name(f".{name}.partial-{os.getpid()}")
    write_plant(generate(PlantSpec(units=units, seed=seed)), partial)
    partial.rename(target)
    return target


def open_embedded(
    directory: Path | None, plant: Path, identity: str
) -> tuple[EmbeddedGraphStore, bool]:
    """The embedded store holding ``plant``: in memory, or in a file under ``directory``
    that a later run opens instead of loading again; and whether it was loaded now."""
    if directory is None:
        store = EmbeddedGraphStore(None)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{identity}.db"
        store = EmbeddedGraphStore(path)
        if held_plants(store) == [identity] and load_in_progress(store) is None:
            return store, False
        if store.count():
            store.close()
            raise SystemExit(f"{path} holds a partial or other load: delete it and run again")
    load_plant(store, read_plant(plant), plant=identity)
    return store, True


def _column(path: Path, column: str) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [row[column] for row in csv.DictReader(handle)]


# --- timing ---------------------------------------------------------------------------


@dataclass(slots=True)
class Side:
    name: str
    run: Callable[[str], Any]
    answer: Callable[[Any], Any]
    samples: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    """Picks where this side's answer differed from the embedded store's."""


def same_recall(ref: Recall, got: Recall | Counts, embedded: EmbeddedGraphStore) -> tuple[int, int]:
    """Assert ``got`` answers as ``ref``; (paths compared, paths that differ but are
    valid genealogy paths of the same length)."""
    if isinstance(got, Counts):
        assert got.counts() == ref.counts(), (got.counts(), ref.counts())
        return 0, 0
    assert got.units == ref.units, (len(got.units), len(ref.units))
    assert got.shipments == ref.shipments
    assert got.customers == ref.customers
    if got.paths is None or ref.paths is None:
        return 0, 0
    differ = 0
    g = embedded.graph
    for uid, path in got.paths.items():
        want = ref.paths[uid]
        if path == want:
            continue
        # another shortest path: same length, every step a real edge of its type
        assert len(path) == len(want), (uid, path, want)
        assert path[0][0] == want[0][0] and path[-1][0] == uid
        for (a, _, _), (b, label, edge) in itertools.pairwise(path):
            assert g.has_edge(a, b, key=edge) and g.nodes[b]["label"] == label, (a, b, edge)
        differ += 1
    return len(got.paths), differ


def time_round(sides: list[Side], uids: list[str], rotate: bool = True) -> None:
    """Each uid on every side in turn (the order rotating per uid), timed."""
    for i, uid in enumerate(uids):
        order = sides[i % len(sides) :] + sides[: i % len(sides)] if rotate else sides
        for side in order:
            t0 = time.perf_counter()
            side.run(uid)
            side.samples.append((time.perf_counter() - t0) * 1000)


def summary(sides: list[Side], baseline: str) -> list[tuple[str, float, float, float]]:
    base = statistics.median(next(s for s in sides if s.name == baseline).samples)
    rows = []
    for s in sides:
        median = statistics.median(s.samples)
        rows.append((s.name, median, percentile(s.samples, 0.95), median / base))
    return rows


# --- one size -------------------------------------------------------------------------


def run_size(
    units: int,
    args: argparse.Namespace,
    server: Neo4jServer,
    pg: Postgres,
    scratch: Path,
) -> dict[str, Any]:
    plant = plant_directory(units, args.seed, args.plants_dir, scratch)
    files = _manifest_files(plant)
    lots_all = sorted(_column(files["nodes"]["MaterialLot"], "uid"))
    defective_all = sorted(
        set(_column(files["edges"]["FOUND_ON"], "dst"))
        | set(_column(files["edges"]["ABOUT"], "dst"))
    )
    rng = random.Random(args.seed)
    lots = rng.sample(lots_all, min(args.lots, len(lots_all)))
    defective = rng.sample(defective_all, min(args.units, len(defective_all)))
    warm_lots = rng.sample(lots_all, min(args.warmup, len(lots_all)))
    warm_units = rng.sample(defective_all, min(args.warmup, len(defective_all)))

    load: dict[str, float | None] = {}
    print(f"[{units:,}] loading the embedded store…", file=sys.stderr, flush=True)
    identity = plant_identity(plant)
    began = time.perf_counter()
    embedded, loaded = open_embedded(args.embedded_dir, plant, identity)
    seconds = time.perf_counter() - began
    entities = embedded.count() + embedded.count_edges()
    if loaded:
        load["SQEMS embedded"] = seconds
    else:
        load["SQEMS embedded"] = None
        load["SQEMS embedded, opened from an earlier run's file"] = seconds

    print(f"[{units:,}] loading Neo4j…", file=sys.stderr, flush=True)
    store = Neo4jGraphStore(server.uri, password=server.password(), batch_size=10_000)
    if held_plants(store) == [identity] and load_in_progress(store) is None:
        # --neo4j-home: an earlier run loaded this plant into the kept database
        print(f"[{units:,}] Neo4j already holds {identity}", file=sys.stderr, flush=True)
        load["Neo4j (SQEMS loader)"] = None
    else:
        store.wipe()
        began = time.perf_counter()
        load_plant(store, read_plant(plant), batch_size=10_000, plant=identity)
        load["Neo4j (SQEMS loader)"] = time.perf_counter() - began

    print(f"[{units:,}] loading PostgreSQL…", file=sys.stderr, flush=True)
    began = time.perf_counter()
    pg_phases = load_postgres(pg, plant)
    load["PostgreSQL (COPY, keys, indexes, analyze)"] = time.perf_counter() - began

    conn = pg.connect()
    conn.execute("SET search_path = genealogy")
    for statement in PG_SESSION:
        conn.execute(statement)
    cur = conn.cursor()
    # the same statements without the session's planner settings, to show what they buy
    plain = pg.connect()
    plain.execute("SET search_path = genealogy")
    plain_cur = plain.cursor()
    driver = neo4j.GraphDatabase.driver(server.uri, auth=("neo4j", server.password()))
    session = driver.session(database="neo4j", default_access_mode=neo4j.READ_ACCESS)

    def sql(query: LiteralString, **params: Any) -> list[Any]:
        cur.execute(query, params, prepare=True)
        return cur.fetchall()

    def sql_plain(query: LiteralString, **params: Any) -> list[Any]:
        plain_cur.execute(query, params, prepare=True)
        return plain_cur.fetchall()

    def cypher(query: LiteralString, **params: Any) -> neo4j.Record:
        return session.run(query, params).single(strict=True)

    def recall_on(trace: Traceability) -> Callable[[str], Any]:
        return lambda uid: trace.recall_scope(RecallSource(SourceKind.LOT, uid))

    t_embedded, t_neo4j = Traceability(embedded), Traceability(store)
    recall_sides = [
        Side("SQEMS embedded", recall_on(t_embedded), recall_from_scope),
        Side("SQEMS on Neo4j", recall_on(t_neo4j), recall_from_scope),
        Side("PostgreSQL CTE, paths", lambda u: sql(RECALL_PATHS_SQL, lot=u),
             lambda rows: recall_from_rows(rows, backwards=True)),
        Side("PostgreSQL CTE, counts", lambda u: sql(RECALL_COUNTS_SQL, lot=u),
             lambda rows: Counts(*rows[0])),
        Side("PostgreSQL, planner default", lambda u: sql_plain(RECALL_PATHS_SQL, lot=u),
             lambda rows: recall_from_rows(rows, backwards=True)),
        Side("Cypher, paths", lambda u: cypher(RECALL_PATHS_CYPHER, lot=u),
             lambda rec: recall_from_rows(rec["rows"], backwards=True)),
        Side("Cypher, counts", lambda u: cypher(RECALL_COUNTS_CYPHER, lot=u),
             lambda rec: Counts(rec["units"], rec["shipments"], rec["customers"])),
    ]  # fmt: skip
    upstream_sides = [
        Side("SQEMS embedded", lambda u: t_embedded.upstream([u]), upstream_from_genealogy),
        Side("SQEMS on Neo4j", lambda u: t_neo4j.upstream([u]), upstream_from_genealogy),
        Side("PostgreSQL CTE", lambda u: sql(UPSTREAM_SQL, unit=u),
             lambda rows: upstream_from_pairs(iter(rows))),
        Side("Cypher", lambda u: cypher(UPSTREAM_CYPHER, unit=u),
             lambda rec: upstream_from_pairs(
                 (label, uid) for label, uids in rec.items() for uid in uids)),
    ]  # fmt: skip

    try:
        # warm-up: other lots and units, untimed, every side
        print(f"[{units:,}] warming up and checking answers…", file=sys.stderr, flush=True)
        for sides, picks in ((recall_sides, warm_lots), (upstream_sides, warm_units)):
            for uid in picks:
                for side in sides:
                    side.run(uid)
        # every answer checked against the embedded store's before anything is timed
        compared = differ = 0
        scope_units: list[int] = []
        for uid in lots:
            ref = recall_sides[0].answer(recall_sides[0].run(uid))
            scope_units.append(len(ref.units))
            for side in recall_sides[1:]:
                try:
                    c, d = same_recall(ref, side.answer(side.run(uid)), embedded)
                except AssertionError as exc:
                    side.wrong.append(f"{uid}: {str(exc)[:300]}")
                    continue
                compared, differ = compared + c, differ + d
        upstream_nodes: list[int] = []
        for uid in defective:
            ref_up = upstream_sides[0].answer(upstream_sides[0].run(uid))
            upstream_nodes.append(sum(len(v) for v in ref_up.values()))
            for side in upstream_sides[1:]:
                got = side.answer(side.run(uid))
                if got != ref_up:
                    side.wrong.append(f"{uid}: {str(got)[:150]} != {str(ref_up)[:150]}")
        print(f"[{units:,}] timing…", file=sys.stderr, flush=True)
        for _ in range(args.rounds):
            time_round(recall_sides, lots)
            time_round(upstream_sides, defective)
        biggest = lots[scope_units.index(max(scope_units))]
        plans = {
            "recall, paths": _explain(cur, RECALL_PATHS_SQL, lot=biggest),
            "recall, paths, planner default": _explain(plain_cur, RECALL_PATHS_SQL, lot=biggest),
            "upstream": _explain(cur, UPSTREAM_SQL, unit=defective[0]),
        }
    finally:
        session.close()
        driver.close()
        conn.close()
        plain.close()
        store.close()
        embedded.close()
    return {
        "units": units,
        "entities": entities,
        "load": load,
        "pg_phases": pg_phases,
        "wrong": {
            f"{kind} / {s.name}": s.wrong
            for kind, sides in (("recall", recall_sides), ("upstream", upstream_sides))
            for s in sides
            if s.wrong
        },
        "recall": summary(recall_sides, "PostgreSQL CTE, paths"),
        "upstream": summary(upstream_sides, "PostgreSQL CTE"),
        "lots": len(lots),
        "defective": len(defective),
        "scope_units": scope_units,
        "upstream_nodes": upstream_nodes,
        "paths_compared": compared,
        "paths_differ": differ,
        "plans": plans,
    }


def _explain(cur: psycopg.Cursor[Any], query: LiteralString, **params: Any) -> str:
    cur.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + query, params)
    return "\n".join(row[0] for row in cur.fetchall())


# --- report ---------------------------------------------------------------------------


def print_size(r: dict[str, Any], show_plans: bool) -> None:
    print()
    print(f"== {r['units']:,} units, {r['entities']:,} nodes + relationships")
    print()
    print("load")
    for name, seconds in r["load"].items():
        took = "loaded by an earlier run" if seconds is None else f"{seconds:>8.1f} s"
        print(f"  {name:<44} {took}")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in r["pg_phases"].items())
    print(f"  (PostgreSQL: {phases})")
    sizes = sorted(r["scope_units"])
    print()
    print(
        f"recall scope of {r['lots']} lots (units in scope: median "
        f"{statistics.median(sizes):,.0f}, max {sizes[-1]:,}); paths compared "
        f"{r['paths_compared']:,}, another shortest path {r['paths_differ']:,}"
    )
    _table(r["recall"], "PostgreSQL CTE, paths")
    nodes = sorted(r["upstream_nodes"])
    print()
    print(
        f"upstream trace of {r['defective']} defective units (nodes reached: median "
        f"{statistics.median(nodes):,.0f}, max {nodes[-1]:,})"
    )
    _table(r["upstream"], "PostgreSQL CTE")
    for name, picks in r["wrong"].items():
        print()
        print(f"ANSWERS DIFFER from the embedded store's: {name}, {len(picks)} picks, e.g.")
        print(f"  {picks[0]}")
    if not r["wrong"]:
        print()
        print("every side answered as the embedded store on every pick")
    if show_plans:
        for name, plan in r["plans"].items():
            print()
            print(f"PostgreSQL plan, {name}:")
            print(plan)


def _table(rows: list[tuple[str, float, float, float]], baseline: str) -> None:
    print(f"  {'side':<30} {'median':>10} {'p95':>10} {'vs ' + baseline:>26}")
    for name, median, p95, ratio in rows:
        print(f"  {name:<30} {median:>8.2f}ms {p95:>8.2f}ms {ratio:>25.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=3, help="plant seed, also picks the lots")
    parser.add_argument("--lots", type=int, default=30, help="random lots to recall")
    parser.add_argument("--units", type=int, default=30, help="random defective units to trace")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the picks")
    parser.add_argument("--warmup", type=int, default=20, help="untimed picks per side first")
    parser.add_argument("--plants-dir", type=Path, default=None)
    parser.add_argument(
        "--embedded-dir",
        type=Path,
        default=None,
        help="keep the embedded store in a file here (default: in memory); a later run "
        "opens it instead of loading the plant again",
    )
    parser.add_argument(
        "--neo4j-home",
        type=Path,
        default=None,
        help="keep the Neo4j server's files here; a later run with one size reuses the "
        "plant loaded there instead of loading it again",
    )
    parser.add_argument("--heap", default="3g")
    parser.add_argument("--pagecache", default="3g")
    parser.add_argument("--plans", action="store_true", help="print PostgreSQL's plans")
    args = parser.parse_args()
    # a terminated run still stops its servers and removes their directories
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    rows = []
    with tempfile.TemporaryDirectory(prefix="sqems-peers-") as scratch:
        server = Neo4jServer(
            args.neo4j_home or Path(scratch) / "neo4j",
            lib=REPO / ".neo4j" / "lib",
            port=free_port(),
            heap=args.heap,
            pagecache=args.pagecache,
        )
        with postgres_cluster() as pg:
            print(f"PostgreSQL {pg.version} on port {pg.port}; starting Neo4j on {server.uri}…",
                  file=sys.stderr, flush=True)  # fmt: skip
            server.start()
            try:
                for size in args.sizes:
                    rows.append(run_size(size, args, server, pg, Path(scratch)))
            finally:
                server.stop()
        print()
        print(f"PostgreSQL {pg.version}: " + ", ".join(f"{k}={v}" for k, v in PG_SETTINGS.items()))
        print("session: " + "; ".join(PG_SESSION) + "; statements prepared")
        print(f"Neo4j 5.26: heap {args.heap}, page cache {args.pagecache}")
        for r in rows:
            print_size(r, args.plans)


if __name__ == "__main__":
    main()
