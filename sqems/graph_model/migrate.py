"""Copy one graph store into another (embedded ⇄ Neo4j), resumably, and verify counts.

Nodes go label by label, then edges type by type, each in pages written as one
transaction. After every page the position is saved to a checkpoint file, so a copy
that was interrupted resumes behind its last finished page (writes are idempotent, so a
page written twice does no harm). At the end, every label and relationship type must
count the same in both stores.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqems.errors import ValidationFailed
from sqems.graph_model.edges import REL_TYPES
from sqems.graph_model.nodes import NODE_TYPES
from sqems.graph_model.store import GraphStore

log = logging.getLogger(__name__)

Progress = Callable[[str, int], None]
"""Called with (section, items just copied)."""


@dataclass(slots=True)
class CopyReport:
    copied: dict[str, int] = field(default_factory=dict)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per section: (count in source, count in target) after the copy."""
    resumed_from: str | None = None

    @property
    def total(self) -> int:
        return sum(self.copied.values())


def _sections() -> list[tuple[str, str]]:
    return [("nodes", label) for label in NODE_TYPES] + [("edges", t) for t in REL_TYPES]


@dataclass(slots=True)
class Checkpoint:
    """Where an interrupted copy stands."""

    source: str
    target: str
    done: list[str] = field(default_factory=list)
    section: str | None = None
    cursor: str = ""

    @classmethod
    def load(cls, path: Path | None, source: GraphStore, target: GraphStore) -> Checkpoint:
        fresh = cls(source.description, target.description)
        if path is None or not path.is_file():
            return fresh
        try:
            state = cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValidationFailed(f"checkpoint {path} is damaged ({exc}); delete it") from None
        if (state.source, state.target) != (fresh.source, fresh.target):
            raise ValidationFailed(
                f"checkpoint {path} belongs to a copy from {state.source} to {state.target}; "
                "delete it to start this copy afresh"
            )
        return state

    def save(self, path: Path | None) -> None:
        if path is None:
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)


def copy_store(
    source: GraphStore,
    target: GraphStore,
    *,
    checkpoint: Path | None = None,
    page: int = 10_000,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy everything in ``source`` into ``target`` and check the counts match."""
    state = Checkpoint.load(checkpoint, source, target)
    report = CopyReport(resumed_from=state.section if state.done or state.section else None)
    for kind, name in _sections():
        key = f"{kind}:{name}"
        if key in state.done:
            continue
        after = state.cursor if state.section == key else ""
        pages = (
            source.iter_nodes(name, after=after, page=page)
            if kind == "nodes"
            else source.iter_edges(name, after=after, page=page)
        )
        copied = 0
        for items, cursor in pages:
            if kind == "nodes":
                target.upsert_nodes(items)
            else:
                target.upsert_edges(items)
            copied += len(items)
            if progress:
                progress(name, len(items))
            state.section, state.cursor = key, cursor
            state.save(checkpoint)
        report.copied[name] = copied
        state.done.append(key)
        state.section, state.cursor = None, ""
        state.save(checkpoint)
    mismatched = []
    for kind, name in _sections():
        if kind == "nodes":
            pair = (source.count(name), target.count(name))
        else:
            pair = (source.count_edges(name), target.count_edges(name))
        report.counts[name] = pair
        if pair[0] != pair[1]:
            mismatched.append(f"{name}: {pair[0]:,} in the source, {pair[1]:,} in the target")
    if mismatched:
        raise ValidationFailed(
            f"copy from {source.description} to {target.description} finished but the counts "
            "differ (was the target not empty?): " + "; ".join(mismatched)
        )
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    log.info("store copied", extra={"entities": report.total, "target": target.description})
    return report
