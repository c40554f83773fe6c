"""The BLAS that PyTensor links: matrix products in the quality model's compiled code.

PyTensor compiles a model's graph to C (PyMC's own NUTS sampler, the log-likelihood,
draws from the posterior predictive) and calls a BLAS for its matrix products (gemm,
gemv, dot) when its ``blas__ldflags`` name a library to link; with none it falls back
to slower loops over NumPy's C API, and says so with a warning. Left to itself it
looks for a BLAS by compiling and running test programs, in every process, and a
PyTensor installed from PyPI usually finds none: the OpenBLAS NumPy ships (the
``scipy-openblas`` wheels) exports its routines renamed - ``scipy_dgemm_64_``, with
64-bit integers - where PyTensor's C code calls ``dgemm_``, so it cannot be linked.

So SQEMS links a system BLAS - OpenBLAS from Debian's ``libopenblas-dev``, which
``./dev`` installs - and tells PyTensor which before it compiles anything
(:func:`configure`, called before PyMC is imported): the first library of
:data:`CANDIDATES` that the C compiler can link, checked once with one test program.
Flags the user gave PyTensor (``PYTENSOR_FLAGS=blas__ldflags=...``, or ``[blas]
ldflags`` in ``~/.pytensorrc``) win, an empty value included; with no library found,
PyTensor's own search runs and a one-line warning says what to install.

``python -m sqems.twin.blas`` prints the flags it would use, or what to install and
exit status 1.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

#: Libraries with the Fortran BLAS interface PyTensor's C code calls, best first.
CANDIDATES: Final = ("openblas", "mkl_rt", "blis", "blas")

INSTALL_HINT: Final = (
    "install a BLAS to link against: OpenBLAS (Debian/Ubuntu: apt-get install "
    "libopenblas-dev; Fedora: dnf install openblas-devel)"
)

_configured: str | None = None


def compiler_library_dirs(compiler: str | None = None) -> list[Path]:
    """The folders the C++ compiler's linker searches for ``-l`` libraries (``g++
    -print-search-dirs``), then the Python environment's own ``lib``; none without a
    compiler."""
    cxx = compiler or shutil.which("g++") or shutil.which("c++")
    dirs: list[Path] = []
    if cxx:
        try:
            out = subprocess.run(
                [cxx, "-print-search-dirs"], capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            log.debug("cannot ask %s for its library folders: %s", cxx, exc)
            out = ""
        for line in out.splitlines():
            if line.startswith("libraries:"):
                listed = line.partition("=")[2]
                dirs += [Path(p).resolve() for p in listed.split(os.pathsep) if p]
    return [*dict.fromkeys(d for d in dirs if d.is_dir())]


def find_ldflags(
    default_dirs: Sequence[Path] | None = None, extra_dirs: Sequence[Path] | None = None
) -> str:
    """The linker flags of the first of :data:`CANDIDATES` found as a linkable shared
    library (``lib<name>.so``, the development link), or ``""``.

    A library in one of the linker's ``default_dirs`` (default: the compiler's) needs
    only ``-l<name>``; one in ``extra_dirs`` (default: this Python's ``lib``, where a
    conda environment keeps its BLAS) also needs its folder, at link and at load time.
    Nothing is compiled here; :func:`configure` checks the flags link.
    """
    return _find(default_dirs, extra_dirs)[0]


def _find(
    default_dirs: Sequence[Path] | None, extra_dirs: Sequence[Path] | None
) -> tuple[str, Path | None]:
    """:func:`find_ldflags` with the library file they link."""
    defaults = list(compiler_library_dirs() if default_dirs is None else default_dirs)
    extras = [Path(sys.prefix) / "lib"] if extra_dirs is None else list(extra_dirs)
    for name in CANDIDATES:
        for folder in defaults:
            if (folder / f"lib{name}.so").exists():
                return f"-l{name}", folder / f"lib{name}.so"
        for folder in extras:
            if (folder / f"lib{name}.so").exists():
                # no commas: PYTENSOR_FLAGS separates its entries with them
                flags = f"-L{folder} -Xlinker -rpath -Xlinker {folder} -l{name}"
                return flags, folder / f"lib{name}.so"
    return "", None


def _links(flags: str, library: Path, compiledir: Path, compiler: str) -> bool:
    """Whether ``flags`` link and run a BLAS call, checked once per library file and
    compiler (the answer is kept in PyTensor's compile folder: the check compiles a
    program, seconds at the start of every fit otherwise)."""
    from pytensor.link.c.cmodule import try_blas_flag  # noqa: PLC0415 - see configure

    real = library.resolve()
    key = f"{flags}|{real}|{real.stat().st_mtime_ns}|{compiler}"
    kept = compiledir / "sqems-blas-checked"
    try:
        if kept.read_text() == key:
            return True
    except OSError:
        pass
    if not try_blas_flag(flags.split()):
        return False
    try:
        compiledir.mkdir(parents=True, exist_ok=True)
        kept.write_text(key)
    except OSError as exc:  # a read-only home: check again next time
        log.debug("cannot keep the BLAS check in %s: %s", compiledir, exc)
    return True


def configure() -> str:
    """Give PyTensor its BLAS flags before it compiles anything; returns the flags in
    force (``""``: none, PyTensor falls back to NumPy's C API).

    Idempotent. Sets ``pytensor.config.blas__ldflags`` in this process and
    ``PYTENSOR_FLAGS`` for the processes it starts (PyMC's sampler chains), unless
    the user's PyTensor configuration already names the flags."""
    global _configured  # noqa: PLW0603 - one answer per process, as PyTensor keeps it
    if _configured is not None:
        return _configured
    # fitting only: importing PyTensor takes seconds
    from pytensor.configdefaults import config  # noqa: PLC0415

    param = vars(type(config))["blas__ldflags"]
    if hasattr(param, "val"):  # given by the user, or PyTensor already decided
        flags = str(config.blas__ldflags)
        source = "PyTensor's configuration"
    else:
        found, library = _find(None, None)
        if library is not None and _links(found, library, Path(config.compiledir), str(config.cxx)):
            flags, source = found, "found"
        else:
            if found:
                log.info("PyTensor cannot link %s; trying its own search", found)
            with warnings.catch_warnings():  # its warning recommends conda; ours says more
                warnings.simplefilter("ignore", UserWarning)
                flags = str(config.blas__ldflags)
            source = "PyTensor's search"
        config.blas__ldflags = flags
        quoted = flags.replace("'", "")
        os.environ["PYTENSOR_FLAGS"] = ",".join(
            part
            for part in (os.environ.get("PYTENSOR_FLAGS", ""), f"blas__ldflags='{quoted}'")
            if part
        )
    if flags or source == "PyTensor's configuration":  # an empty value asked for
        log.debug("PyTensor links BLAS with %r (%s)", flags, source)
    else:
        log.warning(
            "PyTensor has no BLAS: the quality model's matrix products run on slower fallbacks; %s",
            INSTALL_HINT,
        )
    _configured = flags
    return flags


def main() -> int:
    """Print the flags :func:`find_ldflags` finds, or what to install (status 1)."""
    flags = find_ldflags()
    if flags:
        print(flags)
        return 0
    print(f"no BLAS for PyTensor to link: {INSTALL_HINT}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
