"""What the benchmarks share: the database and data, a signed-in Tenant Admin, one `gwm serve` worker.

    bench = Bench.prepare(scale=1000, tenants=3)     # upgrade, seed (skipped when present), keys
    email, project_id = bench.admin()                 # a Tenant Admin of the first synthetic tenant
    with bench.serve() as base:                       # http://127.0.0.1:<free port>, stopped on exit
        token = bench.sign_in(base, email)

The embedded PostgreSQL lives under GWM_DATA_DIR (default .gwm-bench/) unless DATABASE_URL is set.
The database remembers which migration files built it (their SHA-256, in a comment on the database): when
one of the files it was migrated with has changed since (a revision filled in or edited after it ran there),
`gwm db upgrade` alone would leave it behind (alembic only runs revisions it has not recorded), so the
embedded bench database is dropped and built again (upgrade and seed); with DATABASE_URL the run stops and
says so. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SUBDOMAIN = "scale-42-0"  # the first synthetic tenant
PASSWORD = "bench reader password 2026"  # noqa: S105 - a throwaway account of the synthetic tenant
EMAIL = "bench.reader@example.test"

MIGRATIONS = ROOT / "migrations" / "versions"
#: The comment on the bench database recording the migration files it was built with.
_MIGRATIONS_MARK = "gwm-bench migrations"

__all__ = ["EMAIL", "PASSWORD", "ROOT", "SUBDOMAIN", "Bench", "free_port", "migration_files"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def migration_files() -> dict[str, str]:
    """File name -> SHA-256 of every migration revision of this checkout."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(MIGRATIONS.glob("*.py"))}


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _changed_migrations(owner_url: str) -> list[str]:
    """The migration files the database ran whose contents differ now (or ["(unrecorded)"] when the database
    was migrated but never recorded which files did it); empty for a database without tables."""
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(owner_url))
    try:
        migrated = await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL")
        comment = await conn.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    if not migrated:
        return []
    if not comment or not comment.startswith(_MIGRATIONS_MARK + " "):
        return ["(unrecorded)"]
    recorded: dict[str, str] = json.loads(comment.removeprefix(_MIGRATIONS_MARK + " "))
    current = migration_files()
    return sorted(name for name, digest in recorded.items() if current.get(name) != digest)


async def _record_migrations(owner_url: str) -> None:
    """Record in the database's comment the migration files it is now migrated with (after `gwm db upgrade`)."""
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(owner_url))
    try:
        database = await conn.fetchval("SELECT current_database()")
        mark = _MIGRATIONS_MARK + " " + json.dumps(migration_files(), separators=(",", ":"))
        literal = await conn.fetchval("SELECT quote_literal($1::text)", mark)
        await conn.execute(f'COMMENT ON DATABASE "{database}" IS {literal}')  # utility statement: no parameters
    finally:
        await conn.close()


async def _rebuild(app_url: str) -> None:
    """Drop the embedded bench database (ending its sessions) and create it empty again, as the superuser."""
    import asyncpg

    from server.embedded import bootstrap_database, urls_for

    split = urlsplit(_asyncpg_dsn(app_url))
    (socket_dir,) = parse_qs(split.query)["host"]
    urls = urls_for(socket_dir, split.path.lstrip("/"))
    conn = await asyncpg.connect(_asyncpg_dsn(urls.superuser_url))  # in the `postgres` database
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{urls.database}" WITH (FORCE)')
    finally:
        await conn.close()
    await bootstrap_database(urls.superuser_url, urls.database)


@dataclass(frozen=True)
class Bench:
    env: dict[str, str]
    owner_url: str
    app_url: str

    @classmethod
    def prepare(cls, *, scale: int, tenants: int) -> Bench:
        """Resolve the database and keys, `gwm db upgrade`, then `gwm db seed` the synthetic tenants."""
        env = dict(os.environ)
        env.setdefault("GWM_DATA_DIR", str(ROOT / ".gwm-bench"))
        env.setdefault("GWM_LOG_LEVEL", "warning")
        # `gwm serve` defaults to production, whose rate limits (README, configuration) would refuse a load
        # test from one address within a second: they stay on (every operation is charged, as in production)
        # with budgets no run reaches.
        for kind in ("RATE", "SENSITIVE"):
            for per in ("ADDRESS", "USER", "TENANT"):
                env.setdefault(f"GWM_{kind}_LIMIT_PER_{per}", "1000000000")
        from server.cli import resolve_database, resolve_secrets
        from server.settings import Settings

        os.environ.update({k: v for k, v in env.items() if k.startswith("GWM_") or k == "DATABASE_URL"})
        embedded = Settings.from_env(env).embedded  # before the URLs are filled in
        settings = resolve_database(resolve_secrets(Settings.from_env(env)))
        env.update(
            DATABASE_URL=settings.database_url or "",
            GWM_APP_DATABASE_URL=settings.app_database_url or "",
            GWM_SECRET_KEYS=settings.secret_keys or "",
            GWM_AUDIT_KEYS=settings.audit_keys or "",
        )
        bench = cls(env, settings.database_url or "", settings.app_database_url or "")
        started = time.monotonic()
        changed = asyncio.run(_changed_migrations(bench.owner_url))
        if changed:
            if not embedded:
                raise SystemExit(
                    f"the database of DATABASE_URL was migrated with other contents of {', '.join(changed)}:"
                    " drop it and create it again (the bench rebuilds only its own embedded database)"
                )
            print(f"the bench database was migrated with other contents of {', '.join(changed)}:"
                  " dropping it and building it again", file=sys.stderr)
            asyncio.run(_rebuild(bench.app_url))
        bench.gwm("db", "upgrade")
        bench.gwm("db", "seed", "--scale", str(scale), "--tenants", str(tenants))
        asyncio.run(_record_migrations(bench.owner_url))
        print(f"schema and data ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        return bench

    def gwm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the `gwm` CLI of this checkout with the benchmark's environment."""
        return subprocess.run(  # noqa: S603
            [sys.executable, "-m", "server.cli", *args], env=self.env, cwd=ROOT, check=check,
            capture_output=not check, text=True,
        )

    def tenant_id(self, subdomain: str = SUBDOMAIN) -> uuid.UUID:
        return asyncio.run(self._tenant_id(subdomain))

    async def _tenant_id(self, subdomain: str) -> uuid.UUID:
        from sqlalchemy import text

        from models.db import create_engine

        lookup = create_engine(self.app_url, pool_size=1, max_overflow=0)  # pre-tenant lookups are the server's
        try:
            async with lookup.connect() as conn:
                tenant_id: uuid.UUID = (
                    await conn.execute(text("SELECT tenant_id FROM gwm_tenant_by_subdomain(:s)"), {"s": subdomain})
                ).scalar_one()
        finally:
            await lookup.dispose()
        return tenant_id

    def admin(self, subdomain: str = SUBDOMAIN) -> tuple[str, uuid.UUID]:
        """A Tenant Admin with the known password in the tenant; returns (email, its newest project's id)."""
        return asyncio.run(self._admin(subdomain))

    async def _admin(self, subdomain: str) -> tuple[str, uuid.UUID]:
        from sqlalchemy import text

        from auth.passwords import PasswordHasher
        from models.db import create_engine, set_tenant

        tenant_id = await self._tenant_id(subdomain)
        engine = create_engine(self.owner_url, pool_size=1, max_overflow=0)
        try:
            async with engine.begin() as conn:
                await set_tenant(conn, tenant_id)
                password_hash = await PasswordHasher(600_000).hash(PASSWORD)
                user_id = await conn.scalar(
                    text(
                        "INSERT INTO users (tenant_id, email, first_name, last_name, password_hash)"
                        " VALUES (:t, :e, 'Bench', 'Reader', :h) ON CONFLICT (tenant_id, email)"
                        " DO UPDATE SET password_hash = EXCLUDED.password_hash RETURNING id"
                    ),
                    {"t": tenant_id, "e": EMAIL, "h": password_hash},
                )
                await conn.execute(
                    text(
                        "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by)"
                        " SELECT :t, :u, id, :u FROM roles WHERE tenant_id = :t AND name = 'Tenant Admin'"
                        " ON CONFLICT DO NOTHING"
                    ),
                    {"t": tenant_id, "u": user_id},
                )
                project: uuid.UUID = await conn.scalar(
                    text("SELECT id FROM opportunity_projects ORDER BY created_at DESC, id LIMIT 1")
                )
        finally:
            await engine.dispose()
        return EMAIL, project

    @contextmanager
    def serve(self) -> Iterator[str]:
        """One `gwm serve` worker on a free loopback port (no migration); yields its base URL."""
        port = free_port()
        server = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "server.cli", "serve", "--no-migrate", "--port", str(port), "--workers", "1"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                if server.poll() is not None:
                    stderr = server.stderr.read() if server.stderr is not None else b""
                    raise RuntimeError(f"gwm serve exited: {stderr.decode()[-2000:]}")
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            yield base
        finally:
            server.terminate()
            server.wait(timeout=30)

    @staticmethod
    def sign_in(base: str, email: str, subdomain: str = SUBDOMAIN) -> str:
        login = httpx.post(
            f"{base}/auth/login", json={"tenant": subdomain, "email": email, "password": PASSWORD}, timeout=30
        )
        login.raise_for_status()
        token: str = login.json()["token"]
        return token
