"""The API server and what surrounds it: serve, graphql-schema, apikey, neo4j."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sqems.cli.app import apikey_app, command, err, neo4j_app, out
from sqems.cli.render import Column, print_table

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
    if settings.ingest:
        broker = BrokerAccess.of(settings)
        # a broker that refuses SQEMS is one line here, not a traceback from the start-up
        check(broker, f"{settings.mqtt_client_id}-check")
        out.print(f"ingesting from {broker.url}")
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
    )


@command("graphql-schema")
def graphql_schema_cmd() -> None:
    """Print the API's GraphQL schema (SDL).

    Example: sqems graphql-schema > schema.graphql
    """
    from sqems.graphql import sdl

    print(sdl(), end="")


@command("create", on=apikey_app)
def apikey_create(
    name: Annotated[str, typer.Option(metavar="NAME", help="Who or what uses the key.")],
    role: Annotated[
        str, typer.Option(metavar="ROLE", help="viewer, inspector, engineer or admin.")
    ] = "viewer",
) -> None:
    """Create an API key; its token is printed once and never stored.

    Example: sqems apikey create --name 'line 1 tablet' --role inspector
    """
    from sqems.graphql import Role
    from sqems.settings import Settings

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


# --- ingestion ---------------------------------------------------------------------------
