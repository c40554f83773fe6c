"""The ``sqems`` command.

Every command reads :class:`~sqems.settings.Settings` from the environment, opens the
configured graph store and closes it when done. A :class:`~sqems.errors.SqemsError`
becomes one red line on stderr and exit code 2, never a traceback.

Each command group lives in its own module and registers its commands on :data:`app`
when imported; importing this package imports them all, so :data:`app` is complete.
"""

# imported in the order their commands are listed in `sqems --help`
from sqems.cli import plant, check, trace, analysis, whatif, bim, server, ingest, records, rdf  # noqa: I001
from sqems.cli.app import app

__all__ = ["app", "main"]

# the command modules register on import; naming them keeps the imports meaningful
_COMMAND_MODULES = (plant, check, trace, analysis, whatif, bim, server, ingest, records, rdf)


def main() -> None:
    """Run the CLI (the ``sqems`` console script)."""
    app()
