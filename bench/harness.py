"""What the benchmarks share: the database and data, a signed-in Tenant Admin, one `gwm serve` worker.

    bench = Bench.prepare(scale=1000, tenants=3)     # upgrade, seed (skipped when present), keys
    email, project_id = bench.admin()                 # a Tenant Admin of the first synthetic tenant
    with bench.serve() as base:                       # http://127.0.0.1:<free port>, stopped on exit
        token = bench.sign_in(base, email)

The embedded PostgreSQL lives under GWM_DATA_DIR (default .gwm-bench/) unless DATABASE_URL is set.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
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

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SUBDOMAIN = "scale-42-0"  # the first synthetic tenant
PASSWORD = "bench reader password 2026"  # noqa: S105 - a throwaway account of the synthetic tenant
EMAIL = "bench.reader@example.test"

__all__ = ["EMAIL", "PASSWORD", "ROOT", "SUBDOMAIN", "Bench", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        from server.cli import resolve_database, resolve_secrets
        from server.settings import Settings

        os.environ.update({k: v for k, v in env.items() if k.startswith("GWM_") or k == "DATABASE_URL"})
        settings = resolve_database(resolve_secrets(Settings.from_env(env)))
        env.update(
            DATABASE_URL=settings.database_url or "",
            GWM_APP_DATABASE_URL=settings.app_database_url or "",
            GWM_SECRET_KEYS=settings.secret_keys or "",
            GWM_AUDIT_KEYS=settings.audit_keys or "",
        )
        bench = cls(env, settings.database_url or "", settings.app_database_url or "")
        started = time.monotonic()
        bench.gwm("db", "upgrade")
        bench.gwm("db", "seed", "--scale", str(scale), "--tenants", str(tenants))
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
