"""Shared fixtures: every graph backend behind one ``store`` fixture.

A backend is registered once in :data:`BACKENDS`; every test that asks for ``store``
(or ``make_store``) then runs against each of them. A backend that needs a server (Neo4j)
adds an entry whose ``create`` connects to the session's server and empties it, and whose
``reopen`` connects again without emptying it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sqems.graph_model import EmbeddedGraphStore, GraphStore


@dataclass(frozen=True, slots=True)
class Backend:
    """How the tests open one kind of store.

    ``create(workdir)`` returns a new, empty store whose state (if any) lives under the
    empty directory ``workdir``. ``reopen(workdir)`` opens that same store again after it
    was closed; it is None for a backend that forgets everything on close.
    """

    create: Callable[[Path], GraphStore]
    reopen: Callable[[Path], GraphStore] | None = None


def _embedded_file(workdir: Path) -> GraphStore:
    return EmbeddedGraphStore(workdir / "graph.db")


BACKENDS: dict[str, Backend] = {
    "embedded-memory": Backend(create=lambda _workdir: EmbeddedGraphStore(None)),
    "embedded-file": Backend(create=_embedded_file, reopen=_embedded_file),
}
"""Every backend the conformance suite runs against, by name."""

PERSISTENT_BACKENDS = [name for name, backend in BACKENDS.items() if backend.reopen is not None]


@pytest.fixture(params=list(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    """A new, empty store of each registered backend, closed after the test."""
    opened = BACKENDS[request.param].create(tmp_path)
    try:
        yield opened
    finally:
        opened.close()


StoreFactory = Callable[[], AbstractContextManager[GraphStore]]


@pytest.fixture(params=list(BACKENDS))
def make_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> StoreFactory:
    """A factory of new, empty stores of each backend, for property tests that need a
    fresh store per example: ``with make_store() as store: ...`` closes it on exit."""
    backend = BACKENDS[request.param]

    @contextmanager
    def fresh() -> Iterator[GraphStore]:
        opened = backend.create(tmp_path_factory.mktemp(request.param))
        try:
            yield opened
        finally:
            opened.close()

    return fresh


@dataclass(frozen=True, slots=True)
class Reopenable:
    """A persistent backend and the directory its store lives in."""

    backend: Backend
    workdir: Path

    def create(self) -> GraphStore:
        return self.backend.create(self.workdir)

    def reopen(self) -> GraphStore:
        assert self.backend.reopen is not None
        return self.backend.reopen(self.workdir)


@pytest.fixture(params=PERSISTENT_BACKENDS)
def reopenable(request: pytest.FixtureRequest, tmp_path: Path) -> Reopenable:
    """Each backend that keeps its data across close and reopen; the test closes what
    it opens."""
    return Reopenable(BACKENDS[request.param], tmp_path)
