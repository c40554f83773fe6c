"""PyTensor links a real BLAS in the twin's process: the flags SQEMS finds, the user's
own flags winning, and the library search itself.

The set-up (``./dev test``) installs OpenBLAS, so a machine without one fails here
with what to install rather than fitting every model on PyTensor's slow fallbacks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sqems.twin.blas import CANDIDATES, INSTALL_HINT, find_ldflags

# The twin's own way into PyMC, then a matrix-vector product as the quality model's
# linear predictor has (runs x parameters times coefficients), compiled to C.
TWIN_PROCESS = textwrap.dedent(
    """
    import json
    import numpy as np
    from sqems.twin.quality import _pymc

    pm = _pymc()
    import pytensor
    import pytensor.tensor as pt

    x = pt.dmatrix("x")
    b = pt.dvector("b")
    f = pytensor.function([x, b], pt.exp(x @ b), mode="FAST_RUN")
    rng = np.random.default_rng(0)
    xs, bs = rng.normal(size=(300, 4)), rng.normal(size=4)
    print(json.dumps({
        "ldflags": pytensor.config.blas__ldflags,
        "ops": sorted({type(n.op).__name__ for n in f.maker.fgraph.apply_nodes}),
        "close": bool(np.allclose(f(xs, bs), np.exp(xs @ bs))),
    }))
    """
)


def twin_process(**env: str) -> tuple[dict[str, object], str]:
    clean = {k: v for k, v in os.environ.items() if k != "PYTENSOR_FLAGS"}
    done = subprocess.run(
        [sys.executable, "-c", TWIN_PROCESS],
        check=False,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_twin_process_links_a_blas_and_compiles_its_products_with_it() -> None:
    seen, stderr = twin_process()
    assert seen["ldflags"], (
        f"PyTensor has no BLAS in the twin's process: {INSTALL_HINT} "
        "(./dev test installs it when run as root)"
    )
    assert "could not link to a BLAS" not in stderr
    assert any(op in seen["ops"] for op in ("CGemv", "Gemv", "Dot22", "Gemm")), seen["ops"]
    assert seen["close"]


def test_user_flags_win_even_when_empty() -> None:
    seen, stderr = twin_process(PYTENSOR_FLAGS="blas__ldflags=")
    assert seen["ldflags"] == ""
    assert seen["close"]
    assert "PyTensor has no BLAS" not in stderr  # asked for, so no warning


def test_search_prefers_the_linker_folders_and_the_candidates_order(tmp_path: Path) -> None:
    system, env = tmp_path / "system", tmp_path / "env"
    system.mkdir()
    env.mkdir()
    assert find_ldflags([system], [env]) == ""
    (system / "libblas.so").touch()
    assert find_ldflags([system], [env]) == "-lblas"
    (env / "libopenblas.so").touch()  # a better library, outside the linker's folders
    assert find_ldflags([system], [env]) == (f"-L{env} -Xlinker -rpath -Xlinker {env} -lopenblas")
    assert "," not in find_ldflags([system], [env])  # PYTENSOR_FLAGS splits on commas
    (system / "libopenblas.so.0").touch()  # a runtime library alone cannot be linked
    assert find_ldflags([system], []) == "-lblas"
    assert CANDIDATES[0] == "openblas"


def test_a_library_is_checked_once_and_again_when_it_changes(tmp_path: Path) -> None:
    from sqems.twin.blas import _find, _links  # noqa: PLC0415

    flags, library = _find(None, None)
    assert library is not None, f"no BLAS to check: {INSTALL_HINT}"
    kept = tmp_path / "sqems-blas-checked"
    assert _links(flags, library, tmp_path, "g++")
    first = kept.read_text()
    assert first.startswith(f"{flags}|{library.resolve()}|")
    kept.write_text(first.replace(str(library.resolve()), "/gone/libopenblas.so"))
    assert _links(flags, library, tmp_path, "g++")  # checked anew, not trusted
    assert kept.read_text() == first
    assert not _links("-lno_such_blas_anywhere", library, tmp_path / "other", "g++")
    assert not (tmp_path / "other" / "sqems-blas-checked").exists()
