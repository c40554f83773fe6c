"""The Typer application, its sub-applications, the consoles and the ``command``
decorator that turns a :class:`~sqems.errors.SqemsError` into one red line and exit 2."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from sqems.cli import verbosity
from sqems.errors import SqemsError

app = typer.Typer(
    name="sqems",
    help="SQEMS: a plant's quality knowledge graph — traceability, recall scope and more.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Also show what the libraries underneath say (compiler warnings, sampler "
            "logs, deprecations) and SQEMS's own debug log.",
        ),
    ] = False,
) -> None:
    """The options before a command's name, for every command."""
    verbosity.configure(verbose=verbose)


P = ParamSpec("P")
R = TypeVar("R")

neo4j_app = typer.Typer(
    help="Run a local Neo4j Community server (jars from Maven Central, Java 17).",
    no_args_is_help=True,
)
app.add_typer(neo4j_app, name="neo4j")
apikey_app = typer.Typer(help="Manage the API's keys and roles.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
quarantine_app = typer.Typer(help="What ingestion refused, and replaying it.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
audit_app = typer.Typer(help="The audit trail of quality records.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
report_app = typer.Typer(help="Compliance reports.", no_args_is_help=True)
app.add_typer(report_app, name="report")
bim_app = typer.Typer(help="BIM models: IFC import, links to machines, as-built surveys.",
                      no_args_is_help=True)  # fmt: skip
app.add_typer(bim_app, name="bim")
rdf_app = typer.Typer(
    help="The graph as RDF: export, import, SHACL validation, SPARQL.", no_args_is_help=True
)
app.add_typer(rdf_app, name="rdf")


def command(name: str, on: typer.Typer = app) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a command whose :class:`SqemsError` becomes one red line and exit 2."""

    def register(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except SqemsError as exc:
                err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None

        on.command(name)(run)
        return run

    return register
