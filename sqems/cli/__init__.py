"""The ``sqems`` command.

Every command reads :class:`~sqems.settings.Settings` from the environment, opens the
configured graph store and closes it when done. A :class:`~sqems.errors.SqemsError`
becomes one red line on stderr and exit code 2, never a traceback.

Each command group lives in its own module and registers its commands on :data:`app`
when imported; importing this package imports them all, so :data:`app` is complete.
"""

# imported in the order their commands are listed in `sqems --help`
from sqems.cli import plant, check, trace, analysis, whatif, bim, server, ingest, records, rdf, lake  # noqa: I001
from sqems.cli import edge
from sqems.cli import design
from sqems.cli import design_review
import importlib
import sys
from typing import Any

import typer

from sqems.cli.app import app, err

__all__ = ["app", "main"]

# the command modules register on import; naming them keeps the imports meaningful
_COMMAND_MODULES = (
    plant,
    check,
    trace,
    analysis,
    whatif,
    bim,
    server,
    ingest,
    records,
    rdf,
    lake,
    edge,
    design,
    design_review,
)


def main() -> None:
    """Run the CLI (the ``sqems`` console script).

    A mistake on the command line (an unknown option, a missing argument, a value of the
    wrong kind) is one line naming it and where to look, and exit code 2, like every
    other mistake; a command or group given without what it needs shows its help.
    """
    usage = _usage_errors()
    try:
        code = app(standalone_mode=False, prog_name="sqems")
    except usage.NoArgsIsHelpError as exc:
        exc.show()
        code = 2
    except usage.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "sqems"
        err.print(f"[red]error:[/red] {exc.format_message()} (see {where} --help)",
                  highlight=False, soft_wrap=True)  # fmt: skip
        code = exc.exit_code
    except usage.ClickException as exc:
        err.print(f"[red]error:[/red] {exc.format_message()}", highlight=False, soft_wrap=True)
        code = exc.exit_code
    except typer.Abort:
        err.print("aborted", highlight=False)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


def _usage_errors() -> Any:
    """The module of the command-line parser's exceptions: typer 0.29 and later parse
    with their own copy of click, earlier ones with click itself."""
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:
        return importlib.import_module("click.exceptions")
