"""What reaches the user's terminal besides the command's own output.

By default a command shows its results, its errors and SQEMS's own warnings, and
nothing of the stacks underneath: PyTensor's compiler warnings (a missing BLAS among
them), PyMC's and nutpie's sampler logs, ArviZ's deprecation notices and every other
third-party warning stay out. ``sqems --verbose`` lets them all through and logs SQEMS
itself at debug level.

A library may set its own logger's level or add its own handler when it is imported
(PyMC and PyTensor do, and they are imported long after start-up, inside a command), so
levels set here would not hold. Instead one handler on the root logger decides what is
shown; its presence also keeps PyMC and PyTensor from adding handlers of their own.
"""

from __future__ import annotations

import logging
import sys
import warnings

OWN = "sqems"


HANDLER = "sqems-cli"
"""The name of the CLI's handler on the root logger (one, however often :func:`configure`
runs, as it does for every command a test invokes in one process)."""


class _Stderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record comes, not when it was made (a
    test runner swaps it for each command it invokes)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # what StreamHandler does: report it, never raise from a log call
            self.handleError(record)


class _Brief(logging.Formatter):
    """``warning: the message`` - a line for a user, not a log."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


class _OwnOrErrors(logging.Filter):
    """SQEMS's own records, and anyone's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == OWN or record.name.startswith(f"{OWN}.")
        return own or record.levelno >= logging.ERROR


def configure(*, verbose: bool) -> None:
    """Set up logging and warnings for one run of the CLI."""
    handler = _Stderr()
    handler.set_name(HANDLER)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != HANDLER] + [handler]
    if verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.setLevel(logging.INFO)
        logging.getLogger(OWN).setLevel(logging.DEBUG)
        if not sys.warnoptions:
            warnings.simplefilter("default")  # each warning once per place it comes from
        return
    handler.setFormatter(_Brief())
    handler.addFilter(_OwnOrErrors())
    root.setLevel(logging.WARNING)
    logging.getLogger(OWN).setLevel(logging.NOTSET)
    if not sys.warnoptions:  # python -W … or PYTHONWARNINGS: the user asked for them
        warnings.simplefilter("ignore")
