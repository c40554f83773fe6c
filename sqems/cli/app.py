"""The Typer application, its sub-applications, the consoles and the ``command``
decorator that turns a :class:`~sqems.errors.SqemsError` into one red line and exit 2."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar, get_args, get_origin

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from sqems.cli import verbosity
from sqems.errors import SqemsError

METAVARS: dict[type, str] = {int: "N", float: "NUMBER", Path: "PATH", datetime: "DATE", str: "TEXT"}
"""What an option's value is called in help when it names no metavar of its own (a uid
option says ``UID``, a window ``DATE``, a file ``FILE``)."""


class _Option(TyperOption):
    """An option whose help shows what to type - its metavar, or nothing for a flag - in
    place of typer's Python type (``<list[str]>``, ``<bool>``)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        if self.metavar:
            return self.metavar
        desc = self.type_descriptor
        if desc.is_choice:
            return "|".join(str(c) for c in desc.choices or ())
        kind: Any = desc.annotation
        if get_origin(kind) is list:
            (kind,) = get_args(kind)
        return METAVARS.get(kind, "VALUE")


class _Argument(TyperArgument):
    """An argument shown by its name in capitals (``LINE``), with no Python type."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _readable(params: Iterable[Any]) -> None:
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _Option
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
            param.metavar = param.metavar or (param.name or "value").upper()


class _Readable:
    """Options, the help option too, that read as what to type (see :class:`_Option`)."""

    params: list[Any]
    help: str | None
    short_help: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _readable(self.params)
        if self.help and not self.short_help:
            # a group's list of commands shows each one's first paragraph; its docstring's
            # line breaks would break the table's lines where the source's fall
            first = inspect.cleandoc(self.help).split("\n\n")[0]
            self.short_help = " ".join(first.split())

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        _readable([option])
        return option


class Command(_Readable, TyperCommand):
    """A command whose help reads as what to type."""


class Group(_Readable, TyperGroup):
    """A group of commands, its own options readable as :class:`Command`'s."""


app = typer.Typer(
    cls=Group,
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
    cls=Group,
    help="Run a local Neo4j Community server (jars from Maven Central, Java 17).",
    no_args_is_help=True,
)
app.add_typer(neo4j_app, name="neo4j")
apikey_app = typer.Typer(cls=Group, help="Manage the API's keys and roles.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
quarantine_app = typer.Typer(
    cls=Group, help="What ingestion refused, and replaying it.", no_args_is_help=True
)
app.add_typer(quarantine_app, name="quarantine")
audit_app = typer.Typer(cls=Group, help="The audit trail of quality records.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
report_app = typer.Typer(cls=Group, help="Compliance reports.", no_args_is_help=True)
app.add_typer(report_app, name="report")
bim_app = typer.Typer(
    cls=Group,
    help="BIM models: IFC import, links to machines, as-built surveys.",
                      no_args_is_help=True)  # fmt: skip
app.add_typer(bim_app, name="bim")
rdf_app = typer.Typer(
    cls=Group,
    help="The graph as RDF: export, import, SHACL validation, SPARQL.",
    no_args_is_help=True,
)
app.add_typer(rdf_app, name="rdf")


FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def file_error(exc: OSError) -> str:
    """``cannot open FILE: no such file or directory`` - what an OSError about a file says."""
    reason = (exc.strerror or str(exc)).lower()
    return f"cannot open {exc.filename}: {reason}" if exc.filename else reason


def fail(message: str) -> NoReturn:
    """One red line on stderr and exit 2: how every command reports a user's mistake."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def command(name: str, on: typer.Typer = app) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a command whose :class:`SqemsError` - or a file on its command line that
    cannot be opened - becomes one red line and exit 2."""

    def register(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except SqemsError as exc:
                fail(exc.message)
            except FILE_ERRORS as exc:
                # a file named on the command line that cannot be read or written
                fail(file_error(exc))

        on.command(name, cls=Command)(run)
        return run

    return register
