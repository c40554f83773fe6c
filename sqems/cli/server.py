"""The API server and what surrounds it: serve, graphql-schema, apikey, neo4j."""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sqems.cli.app import apikey_app, command, err, neo4j_app, out
from sqems.cli.render import Column, print_table
from sqems.errors import ConfigError, GraphUnavailable, ValidationFailed

if TYPE_CHECKING:
    from sqems.graphql import AccessStore
    from sqems.settings import Settings


@command("install", on=neo4j_app)
def neo4j_install() -> None:
    """Fetch Neo4j Community's jars from Maven Central (needs Maven and Java 17).

    Example: sqems neo4j install
    """
    from sqems.graph_model.neo4j_server import NEO4J_VERSION
    from sqems.graph_model.open import local_server
    from sqems.settings import Settings

    server = local_server(Settings())
    with err.status(f"fetching Neo4j {NEO4J_VERSION} with Maven into {server.lib}…"):
        server.install()
    out.print(f"Neo4j {NEO4J_VERSION} installed in {server.lib}")


@command("start", on=neo4j_app)
def neo4j_start() -> None:
    """Start the local server and wait until Bolt answers.

    Example: sqems neo4j start
    """
    from sqems.graph_model.neo4j_server import NEO4J_VERSION
    from sqems.graph_model.open import local_server
    from sqems.settings import Settings

    server = local_server(Settings())
    with err.status(f"starting Neo4j {NEO4J_VERSION} on {server.uri}…"):
        server.start()
    out.print(server.status().describe())
    out.print(f"use it: SQEMS_GRAPH_URI={server.uri} (password in {server.password_file})")


@command("stop", on=neo4j_app)
def neo4j_stop() -> None:
    """Stop the local server cleanly.

    Example: sqems neo4j stop
    """
    from sqems.graph_model.open import local_server
    from sqems.settings import Settings

    server = local_server(Settings())
    server.stop()
    out.print(server.status().describe())


@command("status", on=neo4j_app)
def neo4j_status() -> None:
    """Say whether the local server is installed, running and answering.

    Example: sqems neo4j status
    """
    from sqems.graph_model.open import local_server
    from sqems.settings import Settings

    status = local_server(Settings()).status()
    out.print(status.describe())
    if status.installed and not status.bolt:
        raise typer.Exit(1)


def _access(settings: Settings) -> AccessStore:
    from sqems.graphql.access import ACCESS_FILE, AccessStore

    return AccessStore(settings.data_dir / ACCESS_FILE)


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, or one line saying why there is none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use by another program; stop it, or choose "
                "another port with --port"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _check_store_free(settings: Settings) -> None:
    """Refuse to serve an embedded store another process writes (the server writes)."""
    from sqems.graph_model import lock_holder
    from sqems.graph_model.open import NEO4J_SCHEMES, embedded_path

    uri = settings.graph_uri.strip()
    if uri.startswith(NEO4J_SCHEMES):
        return
    path = embedded_path(uri, settings)
    holder = None if path is None else lock_holder(path)
    if holder is not None:
        raise GraphUnavailable(
            f"graph store {path} is open for writing by {holder}; stop it first (one "
            "process writes a store at a time)"
        )


@command("serve")
def serve_cmd(
    host: Annotated[
        str | None, typer.Option(metavar="ADDRESS", help="Address to listen on.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    ingest: Annotated[
        bool | None,
        typer.Option("--ingest/--no-ingest", help="Run the MQTT ingestion in the server too."),
    ] = None,
) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql) on the configured store.

    Example: sqems serve --port 8000
    """
    import uvicorn

    from sqems import logs
    from sqems.graphql import Role, create_app
    from sqems.ingestion.broker import BrokerAccess, check
    from sqems.settings import Settings

    settings = Settings()
    updates = {
        k: v
        for k, v in (("api_host", host), ("api_port", port), ("ingest", ingest))
        if v is not None
    }
    settings = settings.model_copy(update=updates)
    # the port and the store first: a refusal must come before anything is announced
    # or written (the bootstrap admin key)
    listening = _listen(settings.api_host, settings.api_port)
    try:
        _check_store_free(settings)
        access = _access(settings)
        try:
            if not access.has_admin():
                key, token = access.create_key(access.free_name("bootstrap admin"), Role.ADMIN)
                out.print(
                    f"[bold]No admin key existed, so one was made (id {key.id}). It is shown "
                    f"this once:[/bold]\n  {token}\nSend it as 'Authorization: Bearer <key>'; "
                    "make more with `sqems apikey create`."
                )
        finally:
            access.close()
        logs.configure()
        out.print(f"serving on http://{settings.api_host}:{settings.api_port}/graphql")
        base = f"http://{settings.api_host}:{settings.api_port}"
        out.print(f"3D viewer at {base}/viewer?line=<line uid>, dashboard at {base}/dashboard")
        out.print(f"inspector's phone app at {base}/inspect, engineers' board at {base}/board")
        if settings.ingest:
            broker = BrokerAccess.of(settings)
            # a broker that refuses SQEMS is one line here, not a traceback from the start-up
            check(broker, f"{settings.mqtt_client_id}-check")
            out.print(f"ingesting from {broker.url}")
        config = uvicorn.Config(
            create_app(settings),
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            access_log=False,
        )
        # the socket bound above: no other process can take the port between the check and
        # the server's start
        uvicorn.Server(config).run(sockets=[listening])
    finally:
        listening.close()


@command("graphql-schema")
def graphql_schema_cmd() -> None:
    """Print the API's GraphQL schema (SDL).

    Example: sqems graphql-schema > schema.graphql
    """
    from sqems.graphql import sdl

    print(sdl(), end="")


@command("create", on=apikey_app)
def apikey_create(
    given: Annotated[
        str | None, typer.Argument(metavar="NAME", help="Who or what uses the key.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="The same, as an option.")
    ] = None,
    role: Annotated[
        str, typer.Option(metavar="ROLE", help="viewer, inspector, engineer or admin.")
    ] = "viewer",
) -> None:
    """Create an API key; its token is printed once and never stored.

    Example: sqems apikey create 'line 1 tablet' --role inspector
    """
    from sqems.graphql import Role
    from sqems.settings import Settings

    if given is not None and name is not None and given != name:
        raise ValidationFailed(f"two names given, {given!r} and --name {name!r}; give one")
    name = given if given is not None else name
    if name is None:
        raise ValidationFailed("name the key: sqems apikey create NAME")
    settings = Settings()
    access = _access(settings)
    try:
        key, token = access.create_key(name, Role.parse(role))
    finally:
        access.close()
    out.print(f"key {key.id} ({key.name}, {key.role.label}):\n{token}")


@command("list", on=apikey_app)
def apikey_list() -> None:
    """List API keys (never their secrets).

    Example: sqems apikey list
    """
    from sqems.settings import Settings

    access = _access(Settings())
    try:
        keys = access.keys()
    finally:
        access.close()
    print_table(
        [Column("id", "id"), Column("name", "id"), "role", Column("created", "id"),
         Column("revoked", "id")],
        [(k.id, escape(k.name), k.role.label, k.created_at, k.revoked_at or "") for k in keys],
    )  # fmt: skip


@command("reissue", on=apikey_app)
def apikey_reissue(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """A new secret for a key (live or revoked), same person and name; the old one stops
    working. Names are never given to anyone else, so this is how a lost key is replaced.

    Example: sqems apikey reissue 4f2a9c1b7e3d
    """
    from sqems.settings import Settings

    access = _access(Settings())
    try:
        key, token = access.reissue(key_id)
    finally:
        access.close()
    out.print(f"key {key.id} ({key.name}, {key.role.label}):\n{token}")


@command("revoke", on=apikey_app)
def apikey_revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke an API key at once.

    Example: sqems apikey revoke 4f2a9c1b7e3d
    """
    from sqems.settings import Settings

    access = _access(Settings())
    try:
        key = access.revoke(key_id)
    finally:
        access.close()
    out.print(f"revoked key {key.id} ({key.name})")


@command("signing-password", on=apikey_app)
def apikey_signing_password(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The user: a key's name.")],
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from stdin's first line."),
    ] = False,
) -> None:
    """Set or reset a user's signing password (typed at each electronic signature) and
    lift a signing lock; prompted twice, hidden.

    Example: sqems apikey signing-password vera
    """
    import getpass
    import sys

    from sqems.graphql.access import check_signing_password_rules
    from sqems.settings import Settings

    access = _access(Settings())
    try:
        user = access.user(name)  # before the prompts: a mistyped name costs no typing
        if password_stdin:
            password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
            if not password:
                raise ValidationFailed("no password on stdin: send it as the first line")
        else:
            if not sys.stdin.isatty():
                raise ValidationFailed(
                    "no terminal to prompt on: pipe the password with --password-stdin"
                )
            typed = getpass.getpass(f"signing password for {user}: ")
            password = check_signing_password_rules(typed)
            if getpass.getpass("again: ") != password:
                raise ValidationFailed("the two passwords differ; nothing changed")
        access.reset_signing_password(user, password)
    finally:
        access.close()
    out.print(f"signing password set for {escape(user)}; their signing is unlocked")


# --- ingestion ---------------------------------------------------------------------------
