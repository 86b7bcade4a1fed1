"""Settings, read once from the environment and passed down explicitly.

Nothing below `server/` reads the environment: everything it needs arrives as a `Settings`
object or as plain arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "SettingsError", "to_async_url"]


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def to_async_url(url: str) -> str:
    """Return `url` with the asyncpg driver, accepting the usual libpq spellings."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise SettingsError(f"not a PostgreSQL URL: {url.split('://', 1)[0]}://...")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


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
    # GWM_LOG_LEVEL
    log_level: str = "info"

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
            log_level=env.get("GWM_LOG_LEVEL") or "info",
        )
