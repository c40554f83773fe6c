"""Settings, read once at the edge (CLI, app factory) and passed down.

Every field can be set from the environment with the ``SQEMS_`` prefix, e.g.
``SQEMS_DATA_DIR=/srv/sqems`` or ``SQEMS_GRAPH_URI=embedded:///srv/sqems/plant.db``.
"""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_data_path
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return user_data_path("sqems", appauthor=False)


class Settings(BaseSettings):
    """Where SQEMS keeps its data and which graph store it talks to."""

    model_config = SettingsConfigDict(env_prefix="SQEMS_", extra="ignore")

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Directory for the embedded graph file, readings and caches.",
    )
    graph_uri: str = Field(
        default="embedded",
        description=(
            "'embedded' (a file under data_dir), 'embedded:///abs/path.db', "
            "'memory' for a store that lives only as long as the process, or a Neo4j URI "
            "(neo4j://, neo4j+s://, bolt://, bolt+s://)."
        ),
    )
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000)
    neo4j_user: str = "neo4j"
    neo4j_password: str | None = Field(
        default=None,
        description="Password for a neo4j:// store; defaults to the local server's generated one.",
    )
    neo4j_database: str = "neo4j"
    neo4j_home: Path | None = Field(
        default=None, description="Home of the local Neo4j server (default: data_dir/neo4j)."
    )
    neo4j_lib: Path | None = Field(
        default=None, description="Where the local server's jars go (default: neo4j_home/lib)."
    )
    neo4j_port: int = Field(default=7687, ge=1, le=65535)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_request_timeout_s: float = Field(default=30.0, gt=0)
    api_max_page_size: int = Field(default=500, ge=1, le=10_000)
    api_max_depth: int = Field(default=12, ge=2, le=50)
    api_max_tokens: int = Field(default=2_000, ge=50)
    api_max_aliases: int = Field(default=15, ge=1)
    api_max_fields: int = Field(
        default=5_000,
        ge=10,
        description="Fields a GraphQL document may select once its fragments are expanded.",
    )
    api_validation_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="How long parsing and validating one GraphQL document may take.",
    )
    api_subscription_recheck_s: float = Field(
        default=5.0,
        gt=0,
        description="How often an open subscription checks that its API key is not revoked.",
    )
    ingest: bool = Field(default=False, description="Run the MQTT ingestion inside `sqems serve`.")
    mqtt_host: str = Field(default="127.0.0.1", description="The MQTT broker readings come from.")
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_tls: bool = Field(
        default=False,
        description=(
            "Talk TLS to the broker (its TLS listener, usually port 8883), always verifying "
            "its certificate."
        ),
    )
    mqtt_ca_file: Path | None = Field(
        default=None,
        description="The CA that signed the broker's certificate (default: the system's CAs).",
    )
    mqtt_cert_file: Path | None = Field(
        default=None, description="A client certificate, for a broker that requires one."
    )
    mqtt_key_file: Path | None = Field(
        default=None, description="The client certificate's private key."
    )
    mqtt_client_id: str = Field(
        default="sqems-ingest",
        description="The subscriber's id; its persistent session on the broker is keyed by it.",
    )
    mqtt_subscription: str = Field(
        default="sqems/v1/+/+/+/+",
        pattern=r"^sqems/v1(/(\+|[^/#+$]+)){4}$",
        description=(
            "The reading topics the ingestion listens to: the whole tree, or a site's or a "
            "line's part of it (sqems/v1/SITE-2/+/+/+) for a set of workers of its own."
        ),
    )
    edge_id: str = Field(
        default="EDGE-1",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="This edge agent's id: its status and judgement topics carry it.",
    )
    edge_site: str | None = Field(
        default=None, description="The site of the line the edge agent watches (sqems edge run)."
    )
    edge_line: str | None = Field(
        default=None, description="The line the edge agent watches (sqems edge run)."
    )
    edge_local_host: str = Field(
        default="127.0.0.1", description="The line's own MQTT broker, where the edge listens."
    )
    edge_local_port: int = Field(default=1883, ge=1, le=65535)
    edge_model_key: Path | None = Field(
        default=None,
        description=(
            "The public key (PEM) model bundles must be signed with; the edge refuses every "
            "model without it. The central broker is the SQEMS_MQTT_* one."
        ),
    )
    twin_draws: int = Field(
        default=2_000, ge=50, le=100_000, description="NUTS draws per chain of a quality model."
    )
    twin_tune: int = Field(default=1_000, ge=0, le=100_000, description="NUTS tuning steps.")
    twin_chains: int = Field(default=4, ge=1, le=16, description="NUTS chains.")
    bim_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="The largest IFC file an import or upload accepts, in bytes.",
    )
    bim_max_triangles: int = Field(
        default=2_000_000,
        ge=1,
        description="The most triangles an IFC model may tessellate into; a larger one is refused.",
    )
    bim_max_instances: int = Field(
        default=200_000,
        ge=1,
        description="The most solids an IFC model's products may place, mapped items expanded.",
    )
    bim_max_product_instances: int = Field(
        default=20_000,
        ge=1,
        description="The most solids one product may place; a product over it is skipped.",
    )
    bim_max_mapping_depth: int = Field(
        default=8,
        ge=1,
        description="How deep a product's mapped items may nest; a deeper one is skipped.",
    )
    import_max_cell_chars: int = Field(
        default=10_000,
        ge=1,
        description="The longest cell a file import takes; a row with a longer one is quarantined.",
    )
    viewer_assets: Path | None = Field(
        default=None,
        description=(
            "The web viewer's npm packages (node_modules); default: those the set-up "
            "command installs beside the viewer's page."
        ),
    )
    rdf_base: str = Field(
        default="https://sqems.dev/id/",
        pattern=r"^(https?://\S+|urn:\S+)[/#:]$",
        description=(
            "Where the IRIs of exported nodes live ({base}{Label}/{uid}); a plant that "
            "publishes its graph sets an address of its own."
        ),
    )
    rdf_api_max_nodes: int = Field(
        default=50_000,
        ge=1,
        description="The most nodes one GraphQL exportRdf answer may hold (the CLI has no cap).",
    )
    audit_key: SecretStr | None = Field(
        default=None,
        description=(
            "The secret that seals the audit trail's entries (HMAC-SHA256), at least 32 "
            "characters; default: the key file."
        ),
    )
    audit_key_file: Path | None = Field(
        default=None,
        description=(
            "Where the audit trail's key lives (made with mode 0600 if missing); keep it "
            "apart from the trail's backups. Default: data_dir/audit-trail.key."
        ),
    )
    audit_busy_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="How long a change waits for another writer of the audit trail.",
    )
    site_timezone: str | None = Field(
        default=None,
        description=(
            "The IANA time zone (e.g. America/Chicago) of dates and times given without an "
            "offset, in the CLI and the API; default: the graph's site's, else UTC."
        ),
    )
    neo4j_heap: str = Field(default="1g", pattern=r"^\d+[kmg]$")
    neo4j_pagecache: str = Field(default="512m", pattern=r"^\d+[kmg]$")

    @field_validator("site_timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if not value:
            return None
        from sqems.localtime import zone_named  # noqa: PLC0415

        zone_named(value, "SQEMS_SITE_TIMEZONE")
        return value

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()
