"""The lake jobs on a real Spark standalone cluster: a master and two workers started
from the installed pyspark on loopback, once for the module. The jobs answer as DuckDB
does on the same files, and a job survives a worker killed while it runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from test_lake import Shape, assert_same_answers, assert_tables_equal, lake_of, run_all

from sqems.errors import ConfigError
from sqems.lake import DuckEngine, open_engine, open_lake, summaries
from sqems.lake.cluster import ClusterUnavailable, SparkStandalone
from sqems.lake.spark import SparkEngine

DELAY = 0.4
"""Seconds each task of the kill test waits before reading its file: the test's way of
making a small job last long enough to lose a worker in the middle of it."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkStandalone]:
    standalone = SparkStandalone(tmp_path_factory.mktemp("spark"), workers=2)
    standalone.start()  # a cluster that cannot start fails every test here, with its log
    yield standalone
    standalone.stop()
    assert standalone.processes() == [], "a Spark process outlived the cluster's stop"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # eight-hour runs: the readings span nine days on two lines, 18 files to spread
    return lake_of(tmp_path_factory.mktemp("lake"), Shape(run_hours=8.0))


@pytest.fixture(scope="module")
def local(lake: Path) -> dict[str, object]:
    engine = DuckEngine()
    try:
        return run_all(engine, lake)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def spark(cluster: SparkStandalone) -> Iterator[SparkSession]:
    """The session ``sqems lake … --engine spark --master spark://…`` opens."""
    with pytest.MonkeyPatch.context() as patch:
        # the driver on loopback too, whatever this machine's name resolves to
        patch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        engine = open_engine("spark", master=cluster.master_url)
    assert isinstance(engine, SparkEngine)
    spark = engine.spark
    deadline = time.monotonic() + 60
    while _executors(spark)[0] < 2:
        assert time.monotonic() < deadline, "the executors did not register with the driver"
        time.sleep(0.2)
    yield spark
    engine.close()


def _executors(spark: SparkSession) -> tuple[int, int]:
    """How many executors the driver holds, and how many of them run a task now."""
    sc = spark.sparkContext._jsc.sc()  # type: ignore[union-attr]
    busy = sum(1 for i in sc.statusTracker().getExecutorInfos() if i.numRunningTasks() > 0)
    return sc.getExecutorIds().size(), busy


def test_cluster_starts_from_the_installed_pyspark_with_its_workers_registered(
    cluster: SparkStandalone,
) -> None:
    assert cluster.master_url.startswith("spark://127.0.0.1:")
    assert cluster.alive_workers() == [0, 1]
    status = cluster.status()
    assert status["status"] == "ALIVE"
    assert sorted(w["cores"] for w in status["workers"]) == [1, 1]
    assert (cluster.home / "worker-0" / "worker.log").is_file()
    with pytest.raises(ConfigError, match="workers 0-1"):
        cluster.kill_worker(2)


def test_cluster_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one worker"):
        SparkStandalone(tmp_path, workers=0)
    with pytest.raises(ClusterUnavailable, match="not started"):
        _ = SparkStandalone(tmp_path).master_url
    # a worker refused by its own launcher (no memory unit it knows): the error carries
    # the worker's log, and nothing of the half-started cluster is left running
    broken = SparkStandalone(tmp_path / "broken", workers=1, worker_memory="lots")
    with pytest.raises(ClusterUnavailable, match="worker-0 exited with code"):
        broken.start(timeout=60)
    assert broken.processes() == []


def test_lake_jobs_on_the_cluster_answer_as_duckdb_does(
    spark: SparkSession, cluster: SparkStandalone, lake: Path, local: dict[str, object]
) -> None:
    on_cluster = run_all(SparkEngine(spark), lake)
    assert_same_answers(local, on_cluster)
    apps = cluster.status()["activeapps"]
    assert [a["name"] for a in apps] == ["sqems-lake"]
    assert _executors(spark)[0] == 2


def test_job_finishes_with_the_same_answer_after_a_worker_is_killed_mid_job(
    spark: SparkSession, cluster: SparkStandalone, lake: Path, local: dict[str, object]
) -> None:
    engine = SparkEngine(spark)
    engine.attach(open_lake(lake))
    # one task per lake file (18), so both executors get work
    spark.conf.set("spark.sql.files.openCostInBytes", str(128 << 20))
    readings = spark.table("readings")

    def slowly(batches):  # a closure: shipped to the executors by value
        time.sleep(DELAY)
        yield from batches

    readings.mapInArrow(slowly, readings.schema).createOrReplaceTempView("readings")
    outcome: dict[str, object] = {}

    def job() -> None:
        try:
            outcome["table"] = summaries(engine)
        except BaseException as exc:  # handed to the test thread below
            outcome["error"] = exc

    started = time.monotonic()
    runner = threading.Thread(target=job, name="lake-job")
    runner.start()
    deadline = started + 60
    while _executors(spark)[1] < 2:
        assert runner.is_alive(), f"the job ended before both workers ran a task: {outcome}"
        assert time.monotonic() < deadline, "the job never ran tasks on both workers"
        time.sleep(0.05)
    cluster.kill_worker(0)
    killed = time.monotonic()
    assert runner.is_alive(), "the job was already over when the worker was killed"
    runner.join(timeout=120)
    finished = time.monotonic()
    assert not runner.is_alive(), "the job did not finish after a worker was lost"
    assert "error" not in outcome, f"the job failed after a worker was lost: {outcome}"
    assert_tables_equal(local["summaries"], outcome["table"])  # type: ignore[arg-type]
    # the worker and its executor are gone; the job finished on the other one
    assert _executors(spark)[0] == 1
    deadline = time.monotonic() + 30
    while cluster.alive_workers() != [1]:
        assert time.monotonic() < deadline, "the master still holds the killed worker alive"
        time.sleep(0.2)
    print(
        f"kill test: worker killed {killed - started:.1f} s into the job, "
        f"job done {finished - killed:.1f} s after the kill"
    )
