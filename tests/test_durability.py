"""A writer killed with SIGKILL leaves every committed batch whole and no half batch.

A child process writes numbered batches of units into an embedded store file, one
transaction each, and says ``committed N`` after each commit. The test kills it at a
random moment while it is writing the next batch, reopens the store for writing (so
the writer lock must have gone with the process) and checks batch by batch.
"""

from __future__ import annotations

import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sqems.errors import GraphUnavailable
from sqems.graph_model import Direction, EmbeddedGraphStore, hops
from sqems.graph_model.nodes import Supplier

BATCH_SIZE = 2_000
KILLS = 3
BATCHES_BEFORE_KILL = 3
LINE_TIMEOUT_S = 30.0

WRITER = """
import sys
from datetime import UTC, datetime

from sqems.graph_model import Edge, EmbeddedGraphStore
from sqems.graph_model.nodes import Unit

path, number, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
made = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)
store = EmbeddedGraphStore(path)
print("open", flush=True)
while True:
    uids = [f"U-b{number}-{i}" for i in range(size)]
    with store.transaction() as batch:
        batch.add_nodes(Unit(uid=uid, produced_at=made) for uid in uids)
        batch.add_edges(
            Edge("ASSEMBLED_INTO", uids[i], uids[(i - 1) // 2]) for i in range(1, size)
        )
    print(f"committed {number}", flush=True)
    number += 1
"""

BATCH_OF = re.compile(r"^U-b(\d+)-(\d+)$")


class Writer:
    """The child process and a thread that hands its stdout lines to the test."""

    def __init__(self, script: Path, store: Path, first_batch: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(store), str(first_batch), str(BATCH_SIZE)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def next_line(self) -> str:
        try:
            line = self.lines.get(timeout=LINE_TIMEOUT_S)
        except queue.Empty:
            self.proc.kill()
            pytest.fail(f"writer said nothing for {LINE_TIMEOUT_S} s")
        if line is None:
            self.proc.wait()
            assert self.proc.stderr is not None
            pytest.fail(f"writer exited early ({self.proc.returncode}): {self.proc.stderr.read()}")
        return line

    def kill(self) -> list[str]:
        """SIGKILL the writer; the lines it wrote before dying."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        rest = []
        while (line := self.lines.get_nowait()) is not None:
            rest.append(line)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rest


def committed_numbers(lines: list[str]) -> set[int]:
    return {int(line.split()[1]) for line in lines if line.startswith("committed ")}


def check_batches(store: EmbeddedGraphStore, reported: set[int]) -> set[int]:
    """Assert every batch present is whole and every reported batch is present; return
    the batch numbers present."""
    members: dict[int, list[str]] = {}
    for node in store.find("Unit"):
        match = BATCH_OF.match(node.uid)
        assert match, f"unexpected unit {node.uid}"
        members.setdefault(int(match.group(1)), []).append(node.uid)
    present = set(members)
    assert reported <= present, f"committed but missing: {sorted(reported - present)}"
    sizes = Counter({number: len(uids) for number, uids in members.items()})
    half = {number: size for number, size in sizes.items() if size != BATCH_SIZE}
    assert not half, f"half-written batches (number: units): {half}"
    for number, uids in members.items():
        edges = store.edges(uids, hops(Direction.OUT, "ASSEMBLED_INTO"))
        assert len(edges) == BATCH_SIZE - 1, f"batch {number} has {len(edges)} edges"
        assert all(e.dst.startswith(f"U-b{number}-") for e in edges)
    assert store.count("Unit") == BATCH_SIZE * len(present)
    assert store.count_edges("ASSEMBLED_INTO") == (BATCH_SIZE - 1) * len(present)
    # batches are written one after another, so the ones that survive have no gaps
    assert present == set(range(max(present) + 1))
    return present


def test_sigkill_mid_batch_leaves_committed_batches_whole_and_no_half_batch(
    tmp_path: Path,
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "graph.db"
    rng = random.Random(20240301)
    reported: set[int] = set()
    next_batch = 0
    for kill in range(KILLS):
        writer = Writer(script, path, next_batch)
        try:
            assert writer.next_line() == "open"
            with pytest.raises(GraphUnavailable, match=f"pid {writer.proc.pid}"):
                EmbeddedGraphStore(path)
            seen: list[str] = []
            stamps: list[float] = []
            while len(seen) < BATCHES_BEFORE_KILL:
                seen.append(writer.next_line())
                stamps.append(time.monotonic())
            # the writer is now inside the next batch; kill it somewhere in there
            period = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
            time.sleep(rng.uniform(0.0, period))
        finally:
            rest = writer.kill()
        assert writer.proc.returncode == -signal.SIGKILL
        newly = committed_numbers(seen + rest)
        assert len(newly) >= BATCHES_BEFORE_KILL
        reported |= newly

        store = EmbeddedGraphStore(path)  # for writing: the dead writer's lock is gone
        try:
            present = check_batches(store, reported)
            store.upsert_nodes([Supplier(uid=f"SUP-after-kill-{kill}", name="probe")])
            assert store.count("Supplier") == kill + 1
        finally:
            store.close()
        next_batch = max(present) + 1
    assert len(reported) >= KILLS * BATCHES_BEFORE_KILL
