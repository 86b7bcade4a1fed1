"""Settings, read once from the environment and passed down explicitly.

Nothing below `server/` reads the environment: everything it needs arrives as a `Settings`
object or as plain arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auth.rate_limits import RateLimitConfig
    from schema.limits import LimitProfile
    from server.telemetry import TelemetryConfig
    from storage.config import StorageConfig

__all__ = ["Settings", "SettingsError", "to_async_url"]


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def to_async_url(url: str) -> str:
    """Return `url` with the asyncpg driver, accepting the usual libpq spellings."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise SettingsError(f"not a PostgreSQL URL: {url.split('://', 1)[0]}://...")


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in {"on", "true", "1", "yes"}:
        return True
    if raw in {"off", "false", "0", "no"}:
        return False
    raise SettingsError(f"{name} must be on or off; got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _outbound_allow(env: Mapping[str, str]) -> str | None:
    from auth.outbound import parse_allow_list

    raw = env.get("GWM_OUTBOUND_ALLOW") or None
    try:
        parse_allow_list(raw)
    except ValueError as exc:
        raise SettingsError(f"GWM_OUTBOUND_ALLOW: {exc}") from None
    return raw


def _at_least(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = _int(env, name, default)
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks, each checked (a typo must not trust nobody silently)."""
    import ipaddress

    out: list[str] = []
    for part in (env.get(name) or "").split(","):
        if part.strip():
            try:
                out.append(str(ipaddress.ip_network(part.strip(), strict=False)))
            except ValueError:
                raise SettingsError(f"{name}: {part.strip()!r} is not an IP address or CIDR network") from None
    return tuple(out)


def _check_tls(name: str, url: str | None) -> None:
    """libpq's TLS parameters in a database URL are checked now (unknown sslmode, missing CA file)."""
    from models.db import tls_from_url

    if url is not None:
        try:
            tls_from_url(url)
        except (ValueError, OSError) as exc:
            raise SettingsError(f"{name}: {exc}") from None


def _storage_backend(env: Mapping[str, str]) -> str:
    raw = (env.get("GWM_STORAGE_BACKEND") or "local").strip().lower()
    if raw not in {"local", "s3"}:
        raise SettingsError(f"GWM_STORAGE_BACKEND must be local or s3; got {raw!r}")
    if raw == "s3" and not env.get("GWM_S3_BUCKET"):
        raise SettingsError("GWM_STORAGE_BACKEND=s3 needs GWM_S3_BUCKET")
    return raw


def _environment(env: Mapping[str, str]) -> str:
    raw = (env.get("GWM_ENV") or "production").strip().lower()
    if raw not in ("production", "development"):
        raise SettingsError(f"GWM_ENV must be production or development, not {raw!r}")
    return raw


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    """GWM_CORS_ORIGINS: scheme://host[:port] entries; a path, a wildcard or `null` is refused."""
    origins = []
    for part in (env.get("GWM_CORS_ORIGINS") or "").split(","):
        origin = part.strip().rstrip("/")
        if not origin:
            continue
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest or "*" in rest:
            raise SettingsError(f"GWM_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port])")
        origins.append(origin)
    return tuple(origins)


def _rate_limits(env: Mapping[str, str]) -> dict[str, Any]:
    """GWM_RATE_LIMIT_* and GWM_SENSITIVE_LIMIT_* (per minute, 0: none), defaults by GWM_ENV."""
    production = _environment(env) == "production"
    ordinary = (6_000, 1_200, 12_000) if production else (100_000, 100_000, 100_000)
    sensitive = (30, 10, 600) if production else (10_000, 10_000, 10_000)
    return {
        "rate_limit_per_address": _at_least(env, "GWM_RATE_LIMIT_PER_ADDRESS", ordinary[0], 0),
        "rate_limit_per_user": _at_least(env, "GWM_RATE_LIMIT_PER_USER", ordinary[1], 0),
        "rate_limit_per_tenant": _at_least(env, "GWM_RATE_LIMIT_PER_TENANT", ordinary[2], 0),
        "rate_limit_processes": _at_least(env, "GWM_RATE_LIMIT_PROCESSES", _int(env, "GWM_WORKERS", 1), 1),
        "sensitive_limit_per_address": _at_least(env, "GWM_SENSITIVE_LIMIT_PER_ADDRESS", sensitive[0], 0),
        "sensitive_limit_per_user": _at_least(env, "GWM_SENSITIVE_LIMIT_PER_USER", sensitive[1], 0),
        "sensitive_limit_per_tenant": _at_least(env, "GWM_SENSITIVE_LIMIT_PER_TENANT", sensitive[2], 0),
    }


def _clamd(env: Mapping[str, str]) -> str | None:
    from storage.scan import scanner_from_setting

    raw = env.get("GWM_SCAN_CLAMD") or None
    try:
        scanner_from_setting(raw)
    except ValueError as exc:
        raise SettingsError(f"GWM_SCAN_CLAMD: {exc}") from None
    return raw


def _telemetry(env: Mapping[str, str]) -> dict[str, Any]:
    """The GWM_OTEL_* and GWM_LOG_FORMAT settings, checked."""
    endpoint = (env.get("GWM_OTEL_ENDPOINT") or "").strip() or None
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise SettingsError(f"GWM_OTEL_ENDPOINT must be an http(s) URL, got {endpoint!r}")
    exporter = (env.get("GWM_OTEL_EXPORTER") or ("otlp" if endpoint else "off")).strip().lower()
    if exporter not in {"off", "otlp", "console"}:
        raise SettingsError(f"GWM_OTEL_EXPORTER must be off, otlp or console; got {exporter!r}")
    if exporter == "otlp" and endpoint is None:
        raise SettingsError("GWM_OTEL_EXPORTER=otlp needs GWM_OTEL_ENDPOINT")
    if exporter == "console" and _environment(env) != "development":
        raise SettingsError("GWM_OTEL_EXPORTER=console is for GWM_ENV=development only")
    raw_ratio = (env.get("GWM_OTEL_SAMPLE_RATIO") or "1").strip()
    try:
        ratio = float(raw_ratio)
    except ValueError:
        raise SettingsError(f"GWM_OTEL_SAMPLE_RATIO must be a number from 0 to 1, got {raw_ratio!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise SettingsError(f"GWM_OTEL_SAMPLE_RATIO must be a number from 0 to 1, got {raw_ratio!r}")
    log_format = (env.get("GWM_LOG_FORMAT") or "text").strip().lower()
    if log_format not in {"text", "json"}:
        raise SettingsError(f"GWM_LOG_FORMAT must be text or json; got {log_format!r}")
    return {
        "otel_exporter": exporter,
        "otel_endpoint": endpoint,
        "otel_service_name": (env.get("GWM_OTEL_SERVICE_NAME") or "gwm-crm").strip(),
        "otel_queue_size": _at_least(env, "GWM_OTEL_QUEUE_SIZE", 2048, 1),
        "otel_export_timeout_ms": _at_least(env, "GWM_OTEL_EXPORT_TIMEOUT_MS", 10_000, 1),
        "otel_sample_ratio": ratio,
        "otel_metrics_interval_ms": _at_least(env, "GWM_OTEL_METRICS_INTERVAL_MS", 60_000, 100),
        "log_format": log_format,
    }


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable, with its environment variable in the comment."""

    # DATABASE_URL: the schema owner; migrations run as it. Unset: the embedded PostgreSQL.
    database_url: str | None = None
    # GWM_APP_DATABASE_URL: the unprivileged role the server uses (gwm_app).
    app_database_url: str | None = None
    # GWM_DATA_DIR: local state (embedded cluster under pgdata/, its runtime dir under run/).
    data_dir: Path = field(default_factory=lambda: Path(".gwm"))
    # GWM_HOST / GWM_PORT: where `gwm serve` listens.
    host: str = "127.0.0.1"
    port: int = 8000
    # GWM_WORKERS: uvicorn worker processes.
    workers: int = 1
    # GWM_DB_POOL_SIZE / GWM_DB_MAX_OVERFLOW: per process.
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # GWM_DB_STATEMENT_TIMEOUT_MS: bound on any single statement of the server's role.
    db_statement_timeout_ms: int = 30_000
    # Database connections under load and over TLS (docs/deploy.md "Database connections"; TLS is set in
    # both URLs with libpq's parameters: ?sslmode=verify-full&sslrootcert=...&sslcert=...&sslkey=...):
    # GWM_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: a server session whose transaction sits idle this long is
    # ended by PostgreSQL (0: never); GWM_DB_POOL_TIMEOUT_MS: how long a request waits for a pooled
    # connection before it is answered 503 with Retry-After; GWM_SHUTDOWN_GRACE_SECONDS: how long
    # SIGTERM waits for requests in flight before the process stops anyway.
    db_idle_in_transaction_timeout_ms: int = 60_000
    db_pool_timeout_ms: int = 5_000
    shutdown_grace_seconds: int = 30
    # GWM_OPERATION_TIMEOUT_MS: how long one GraphQL query may run before it is stopped with
    # OPERATION_TIMEOUT (checked between field resolutions; mutations are bounded by the statement
    # timeout instead); 0 turns the deadline off.
    operation_timeout_ms: int = 10_000
    # GWM_QUERY_COST_LIMIT: the most a GraphQL operation may cost (docs/api.md, Query cost).
    query_cost_limit: int = 50_000
    # GWM_EXPORT_MAX_SECONDS: how long an export (GET /export/*) may keep its read snapshot open
    # (docs/api.md "Exports"); past it the export stops.
    export_max_seconds: int = 300
    # GWM_EXPORT_IDLE_SECONDS: how long an export's snapshot may wait for a client that stopped
    # reading (its transaction's idle_in_transaction_session_timeout).
    export_idle_seconds: int = 60
    # GWM_LOG_LEVEL
    log_level: str = "info"
    # GWM_PUBLIC_URL: how users reach this server (links in emails, SAML SP URLs).
    public_url: str = "http://127.0.0.1:8000"
    # GWM_PASSWORD_ITERATIONS: PBKDF2-HMAC-SHA256 iterations (>= 600,000; tests build Settings
    # directly with a low count, the environment cannot lower it).
    password_iterations: int = 600_000
    # GWM_KDF_CONCURRENCY: password hashes computed at once per process (each takes a core).
    kdf_concurrency: int = 4
    # GWM_SECRET_KEYS: "kid:base64-32-bytes[,kid:...]", the first encrypts; AES-256-GCM for MFA
    # secrets and other secrets at rest. Embedded mode generates one under GWM_DATA_DIR if unset.
    secret_keys: str | None = field(default=None, repr=False)
    # GWM_AUDIT_KEYS: "kid:base64-32-bytes[,kid:...]", the first signs; HMAC-SHA256 keys of the audit
    # chain (models/audit_chain.py), never stored in the database. Embedded mode generates one under
    # GWM_DATA_DIR if unset.
    audit_keys: str | None = field(default=None, repr=False)
    # GWM_SESSION_COOKIE: the session cookie's name (HttpOnly, Secure, SameSite=Lax).
    session_cookie: str = "gwm_session"
    # GWM_SMTP_HOST/PORT/FROM/USERNAME/PASSWORD/STARTTLS: the invitation and reset email sender.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "GWM CRM <no-reply@gwm-crm.invalid>"
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = False
    # GWM_OUTBOUND_ALLOW: comma-separated host:port destinations that URLs a tenant sets (OpenID
    # issuer, JWKS, token endpoint) may reach even though they resolve to a private, loopback or
    # other non-global address, and over plain http (auth/outbound.py). Empty: public https only.
    outbound_allow: str | None = None
    # GWM_TRUSTED_PROXIES: comma-separated addresses or CIDR networks of the reverse proxies in front
    # of the server; only a peer among them may set X-Request-ID (else the server makes the id).
    trusted_proxies: tuple[str, ...] = ()
    # GWM_COMPILED_READS: on (default) | off. On: a query's root fields that the read compiler covers run as one
    # SQL statement each that PostgreSQL shapes into the response JSON (schema/compiled/); off: every
    # field goes through the field-by-field executor. Both give the same answers.
    compiled_reads: bool = True
    # GraphQL subscriptions over WebSocket (graphql-transport-ws; docs/api.md "Subscriptions"):
    # GWM_WS_MAX_SUBSCRIPTIONS operations at once on one connection (one more gets an `error`
    # message), GWM_WS_MAX_CONNECTIONS_PER_USER connections of one user (or API key) in one process
    # (one more is closed with 4429), GWM_WS_INIT_TIMEOUT_MS for connection_init (then 4408).
    ws_max_subscriptions: int = 20
    ws_max_connections_per_user: int = 10
    ws_init_timeout_ms: int = 10_000
    # GWM_NOTIFICATION_RETENTION_DAYS: inbox items older than this are deleted by `gwm jobs run`
    # (docs/decisions.md D20).
    notification_retention_days: int = 90
    # Retention run by `gwm jobs run` (server/retention.py): GWM_SESSION_RETENTION_DAYS: an ended
    # session is deleted this many days after it ended; GWM_INTEGRATION_LOG_RETENTION_DAYS: an
    # api_integration_logs row this many days after its call.
    session_retention_days: int = 90
    integration_log_retention_days: int = 90
    # Document downloads and lifecycle (server/document_jobs.py, server/download_routes.py):
    # GWM_DOWNLOAD_URL_SECONDS: how long an issued download URL works (S3: its X-Amz-Expires; local:
    # the signed URL's expiry); GWM_DOCUMENT_PURGE_DAYS: a soft-deleted document's file is deleted by
    # `gwm jobs run` this many days after the delete, unless under a legal hold; GWM_SCAN_CLAMD:
    # host:port of a ClamAV daemon scanning new files (empty: files are released unscanned, and their
    # audit rows say so).
    download_url_seconds: int = 300
    document_purge_days: int = 30
    scan_clamd: str | None = None
    # Text extraction of new documents (storage/extract.py, sync/extraction.py), each file parsed in a
    # child process: GWM_EXTRACT_MAX_PAGES (a PDF with more fails), GWM_EXTRACT_MAX_UNPACKED_BYTES (a
    # DOCX inflating to more fails; also pypdf's bound per stream), GWM_EXTRACT_MEMORY_BYTES (the
    # child's RLIMIT_AS), GWM_EXTRACT_CPU_SECONDS (its RLIMIT_CPU), GWM_EXTRACT_WALL_SECONDS (killed after).
    extract_max_pages: int = 2_000
    extract_max_unpacked_bytes: int = 256 * 1024 * 1024
    extract_memory_bytes: int = 1024 * 1024 * 1024
    extract_cpu_seconds: int = 60
    extract_wall_seconds: int = 120
    # Documents (storage/): GWM_STORAGE_BACKEND local (default: files under GWM_STORAGE_DIR, default
    # <GWM_DATA_DIR>/documents) | s3 (GWM_S3_BUCKET, GWM_S3_REGION, GWM_S3_PREFIX, GWM_S3_ENDPOINT_URL,
    # GWM_S3_KMS_KEY_ID; credentials from the usual AWS chain). GWM_UPLOAD_MAX_BYTES: the largest file;
    # GWM_UPLOAD_CONCURRENCY: multipart uploads read at once (their temporary disk is at most this
    # times the largest file); GWM_UPLOAD_URL_SECONDS: how long a presigned upload may be used.
    storage_backend: str = "local"
    storage_dir: Path | None = None
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_kms_key_id: str | None = None
    upload_max_bytes: int = 50 * 1024 * 1024
    upload_concurrency: int = 4
    upload_url_seconds: int = 900
    # GWM_UPLOAD_TEMP_DIR: where uploads are spooled while they are checked (default: the system's).
    upload_temp_dir: Path | None = None
    # Rate limits (auth/rate_limits.py; docs/api.md "Rate limits"), each an allowance per minute, 0: none.
    # GraphQL operations are charged their root fields (aliases count) per client address, per user (an
    # API key counts as its own user) and per tenant: GWM_RATE_LIMIT_PER_ADDRESS / _PER_USER / _PER_TENANT
    # are PER DEPLOYMENT, counted in process: each process enforces ceil(limit / GWM_RATE_LIMIT_PROCESSES)
    # (default GWM_WORKERS; with several machines, set it to the processes of all of them). Sign-in and the
    # other sensitive operations are counted in PostgreSQL, shared by every process:
    # GWM_SENSITIVE_LIMIT_PER_ADDRESS / _PER_USER (the account) / _PER_TENANT. Defaults: production
    # 6,000 / 1,200 / 12,000 root fields and 30 / 10 / 600 attempts; development (also a Settings built in
    # code) 100,000 and 10,000 each.
    rate_limit_per_address: int = 100_000
    rate_limit_per_user: int = 100_000
    rate_limit_per_tenant: int = 100_000
    rate_limit_processes: int = 1
    sensitive_limit_per_address: int = 10_000
    sensitive_limit_per_user: int = 10_000
    sensitive_limit_per_tenant: int = 10_000
    # Production switches (server/security.py, schema/limits.py; docs/deploy.md). GWM_ENV:
    # "production" (the default of the environment: tokens 2,000, aliases 15, introspection only for
    # graphql:adhoc) or "development" (tokens 5,000, aliases 30, introspection for every caller; the
    # default of a Settings built in code). GWM_CORS_ORIGINS: comma-separated origins allowed to call
    # the API from a browser (none by default). GWM_HSTS=on: send Strict-Transport-Security on every
    # response, not only those of requests that came over https.
    environment: str = "development"
    cors_origins: tuple[str, ...] = ()
    force_hsts: bool = False
    # Trusted documents (schema/trusted_documents.py; docs/api.md): GWM_TRUSTED_DOCUMENTS=on lets callers
    # without graphql:adhoc run only registered documents (graphql/operations/ and the tenant's); on by
    # default with GWM_ENV=production, off in development and in a Settings built in code.
    # GWM_TRUSTED_DOCUMENTS_MAX: documents a tenant may register; GWM_PERSISTED_QUERIES_MAX: automatic
    # persisted queries kept per tenant (the oldest go).
    trusted_documents: bool = False
    trusted_documents_max: int = 500
    persisted_queries_max: int = 2_000
    # Telemetry and logs (server/telemetry.py, server/logging_setup.py; docs/deploy.md "Telemetry").
    # GWM_OTEL_EXPORTER: off (default) | otlp | console (development only); GWM_OTEL_ENDPOINT: the
    # collector's OTLP/HTTP base URL (setting it alone means otlp; traces to /v1/traces, metrics to
    # /v1/metrics); GWM_OTEL_SERVICE_NAME; GWM_OTEL_QUEUE_SIZE: finished spans waiting for export (more
    # are dropped and counted); GWM_OTEL_EXPORT_TIMEOUT_MS: one export's bound, retries included;
    # GWM_OTEL_SAMPLE_RATIO: share of new traces kept (a trusted parent's decision is followed);
    # GWM_OTEL_METRICS_INTERVAL_MS. GWM_LOG_FORMAT: text (default) | json (one JSON object a line,
    # with request id, trace id, tenant and user).
    otel_exporter: str = "off"
    otel_endpoint: str | None = None
    otel_service_name: str = "gwm-crm"
    otel_queue_size: int = 2048
    otel_export_timeout_ms: int = 10_000
    otel_sample_ratio: float = 1.0
    otel_metrics_interval_ms: int = 60_000
    log_format: str = "text"

    @property
    def telemetry(self) -> TelemetryConfig:
        """What server/telemetry.py builds its providers from."""
        from server.telemetry import TelemetryConfig

        return TelemetryConfig(
            exporter=self.otel_exporter,
            endpoint=self.otel_endpoint,
            service_name=self.otel_service_name,
            queue_size=self.otel_queue_size,
            export_timeout_ms=self.otel_export_timeout_ms,
            sample_ratio=self.otel_sample_ratio,
            metrics_interval_ms=self.otel_metrics_interval_ms,
        )

    @property
    def rate_limits(self) -> RateLimitConfig:
        """The limits auth/rate_limits.py enforces."""
        from auth.rate_limits import RateLimitConfig

        return RateLimitConfig(
            per_address=self.rate_limit_per_address,
            per_user=self.rate_limit_per_user,
            per_tenant=self.rate_limit_per_tenant,
            processes=self.rate_limit_processes,
            sensitive_per_address=self.sensitive_limit_per_address,
            sensitive_per_user=self.sensitive_limit_per_user,
            sensitive_per_tenant=self.sensitive_limit_per_tenant,
        )

    @property
    def limit_profile(self) -> LimitProfile:
        """The GraphQL limits and switches of `environment` (schema/limits.py)."""
        from schema.limits import DEVELOPMENT, PRODUCTION

        return PRODUCTION if self.environment == "production" else DEVELOPMENT

    def storage_config(self) -> StorageConfig:
        """The document store these settings describe (its signing key derived from GWM_SECRET_KEYS)."""
        from storage.config import S3Config, StorageConfig, derive_signing_key

        s3 = None
        if self.storage_backend == "s3":
            if not self.s3_bucket:
                raise SettingsError("GWM_STORAGE_BACKEND=s3 needs GWM_S3_BUCKET")
            s3 = S3Config(
                bucket=self.s3_bucket, region=self.s3_region, prefix=self.s3_prefix,
                endpoint_url=self.s3_endpoint_url, kms_key_id=self.s3_kms_key_id,
            )
        return StorageConfig(
            backend=self.storage_backend,
            root=self.storage_dir or self.data_dir / "documents",
            s3=s3,
            max_upload_bytes=self.upload_max_bytes,
            upload_concurrency=self.upload_concurrency,
            presign_seconds=self.upload_url_seconds,
            temp_dir=self.upload_temp_dir,
            signing_key=derive_signing_key(self.secret_keys) if self.secret_keys else b"",
        )

    @property
    def embedded(self) -> bool:
        """True when no DATABASE_URL is given and the embedded PostgreSQL serves."""
        return self.database_url is None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        database_url = env.get("DATABASE_URL") or None
        app_url = env.get("GWM_APP_DATABASE_URL") or None
        if database_url is not None:
            database_url = to_async_url(database_url)
            if app_url is None:
                raise SettingsError(
                    "DATABASE_URL is set but GWM_APP_DATABASE_URL is not: the server never connects as the "
                    "schema owner; give it the gwm_app role's URL (see docs/deploy.md)"
                )
        if app_url is not None:
            app_url = to_async_url(app_url)
        _check_tls("DATABASE_URL", database_url)
        _check_tls("GWM_APP_DATABASE_URL", app_url)
        return cls(
            database_url=database_url,
            app_database_url=app_url,
            data_dir=Path(env.get("GWM_DATA_DIR") or ".gwm"),
            host=env.get("GWM_HOST") or "127.0.0.1",
            port=_int(env, "GWM_PORT", 8000),
            workers=_int(env, "GWM_WORKERS", 1),
            db_pool_size=_int(env, "GWM_DB_POOL_SIZE", 10),
            db_max_overflow=_int(env, "GWM_DB_MAX_OVERFLOW", 10),
            db_statement_timeout_ms=_int(env, "GWM_DB_STATEMENT_TIMEOUT_MS", 30_000),
            db_idle_in_transaction_timeout_ms=_at_least(env, "GWM_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 60_000, 0),
            db_pool_timeout_ms=_at_least(env, "GWM_DB_POOL_TIMEOUT_MS", 5_000, 1),
            shutdown_grace_seconds=_at_least(env, "GWM_SHUTDOWN_GRACE_SECONDS", 30, 1),
            operation_timeout_ms=_at_least(env, "GWM_OPERATION_TIMEOUT_MS", 10_000, 0),
            query_cost_limit=_at_least(env, "GWM_QUERY_COST_LIMIT", 50_000, 1),
            export_max_seconds=_at_least(env, "GWM_EXPORT_MAX_SECONDS", 300, 1),
            export_idle_seconds=_at_least(env, "GWM_EXPORT_IDLE_SECONDS", 60, 1),
            log_level=env.get("GWM_LOG_LEVEL") or "info",
            public_url=(env.get("GWM_PUBLIC_URL") or "http://127.0.0.1:8000").rstrip("/"),
            password_iterations=_at_least(env, "GWM_PASSWORD_ITERATIONS", 600_000, 600_000),
            kdf_concurrency=_at_least(env, "GWM_KDF_CONCURRENCY", 4, 1),
            secret_keys=env.get("GWM_SECRET_KEYS") or None,
            audit_keys=env.get("GWM_AUDIT_KEYS") or None,
            session_cookie=env.get("GWM_SESSION_COOKIE") or "gwm_session",
            smtp_host=env.get("GWM_SMTP_HOST") or None,
            smtp_port=_int(env, "GWM_SMTP_PORT", 25),
            smtp_from=env.get("GWM_SMTP_FROM") or "GWM CRM <no-reply@gwm-crm.invalid>",
            smtp_username=env.get("GWM_SMTP_USERNAME") or None,
            smtp_password=env.get("GWM_SMTP_PASSWORD") or None,
            smtp_starttls=(env.get("GWM_SMTP_STARTTLS") or "").lower() in {"1", "true", "yes"},
            outbound_allow=_outbound_allow(env),
            trusted_proxies=_networks(env, "GWM_TRUSTED_PROXIES"),
            compiled_reads=_switch(env, "GWM_COMPILED_READS", True),
            ws_max_subscriptions=_at_least(env, "GWM_WS_MAX_SUBSCRIPTIONS", 20, 1),
            ws_max_connections_per_user=_at_least(env, "GWM_WS_MAX_CONNECTIONS_PER_USER", 10, 1),
            ws_init_timeout_ms=_at_least(env, "GWM_WS_INIT_TIMEOUT_MS", 10_000, 1),
            notification_retention_days=_at_least(env, "GWM_NOTIFICATION_RETENTION_DAYS", 90, 1),
            session_retention_days=_at_least(env, "GWM_SESSION_RETENTION_DAYS", 90, 1),
            integration_log_retention_days=_at_least(env, "GWM_INTEGRATION_LOG_RETENTION_DAYS", 90, 1),
            download_url_seconds=_at_least(env, "GWM_DOWNLOAD_URL_SECONDS", 300, 1),
            document_purge_days=_at_least(env, "GWM_DOCUMENT_PURGE_DAYS", 30, 1),
            scan_clamd=_clamd(env),
            extract_max_pages=_at_least(env, "GWM_EXTRACT_MAX_PAGES", 2_000, 1),
            extract_max_unpacked_bytes=_at_least(env, "GWM_EXTRACT_MAX_UNPACKED_BYTES", 256 * 1024 * 1024, 1),
            extract_memory_bytes=_at_least(env, "GWM_EXTRACT_MEMORY_BYTES", 1024 * 1024 * 1024, 128 * 1024 * 1024),
            extract_cpu_seconds=_at_least(env, "GWM_EXTRACT_CPU_SECONDS", 60, 1),
            extract_wall_seconds=_at_least(env, "GWM_EXTRACT_WALL_SECONDS", 120, 1),
            storage_backend=_storage_backend(env),
            storage_dir=Path(env["GWM_STORAGE_DIR"]) if env.get("GWM_STORAGE_DIR") else None,
            s3_bucket=env.get("GWM_S3_BUCKET") or None,
            s3_region=env.get("GWM_S3_REGION") or "us-east-1",
            s3_prefix=env.get("GWM_S3_PREFIX") or "",
            s3_endpoint_url=env.get("GWM_S3_ENDPOINT_URL") or None,
            s3_kms_key_id=env.get("GWM_S3_KMS_KEY_ID") or None,
            upload_max_bytes=_at_least(env, "GWM_UPLOAD_MAX_BYTES", 50 * 1024 * 1024, 1),
            upload_concurrency=_at_least(env, "GWM_UPLOAD_CONCURRENCY", 4, 1),
            upload_url_seconds=_at_least(env, "GWM_UPLOAD_URL_SECONDS", 900, 1),
            upload_temp_dir=Path(env["GWM_UPLOAD_TEMP_DIR"]) if env.get("GWM_UPLOAD_TEMP_DIR") else None,
            **_rate_limits(env),
            environment=_environment(env),
            cors_origins=_origins(env),
            force_hsts=_switch(env, "GWM_HSTS", False),
            trusted_documents=_switch(env, "GWM_TRUSTED_DOCUMENTS", _environment(env) == "production"),
            trusted_documents_max=_at_least(env, "GWM_TRUSTED_DOCUMENTS_MAX", 500, 0),
            persisted_queries_max=_at_least(env, "GWM_PERSISTED_QUERIES_MAX", 2_000, 0),
            **_telemetry(env),
        )
