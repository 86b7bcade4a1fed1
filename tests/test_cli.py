"""The `gwm` command line and `gwm serve`, as a user runs them (real processes, real HTTP)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.cli import bind_host
from server.settings import Settings, SettingsError
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_KEYS

ROOT = Path(__file__).resolve().parent.parent
GWM = [sys.executable, "-m", "server.cli"]


def _env(database: Database, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    env.update(
        DATABASE_URL=database.owner_url,
        GWM_APP_DATABASE_URL=database.app_url,
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=",
        GWM_AUDIT_KEYS=TEST_AUDIT_KEYS,
        **extra,
    )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_settings_refuse_owner_url_without_app_url() -> None:
    with pytest.raises(SettingsError, match="GWM_APP_DATABASE_URL"):
        Settings.from_env({"DATABASE_URL": "postgresql://owner@db/gwm"})


def test_settings_refuse_non_postgres_url() -> None:
    with pytest.raises(SettingsError, match="not a PostgreSQL URL"):
        Settings.from_env({"DATABASE_URL": "mysql://x@y/z", "GWM_APP_DATABASE_URL": "postgresql://a@b/c"})


def test_settings_refuse_bad_integer() -> None:
    with pytest.raises(SettingsError, match="GWM_PORT must be an integer"):
        Settings.from_env({"GWM_PORT": "eighty"})


def test_settings_accept_libpq_urls() -> None:
    s = Settings.from_env({"DATABASE_URL": "postgres://o@h/db", "GWM_APP_DATABASE_URL": "postgresql://a@h/db"})
    assert s.database_url == "postgresql+asyncpg://o@h/db"
    assert s.app_database_url == "postgresql+asyncpg://a@h/db"
    assert not s.embedded


def test_embedded_mode_binds_loopback_unless_told_on_the_command_line() -> None:
    embedded = Settings.from_env({"GWM_HOST": "0.0.0.0"})  # noqa: S104 - the case under test
    assert embedded.embedded
    assert bind_host(embedded, None) == "127.0.0.1"
    assert bind_host(embedded, "::1") == "::1"
    external = Settings.from_env(
        {"GWM_HOST": "0.0.0.0", "DATABASE_URL": "postgresql://o@h/d", "GWM_APP_DATABASE_URL": "postgresql://a@h/d"}  # noqa: S104
    )
    assert bind_host(external, None) == "0.0.0.0"  # noqa: S104


def test_cli_reports_bad_settings_with_exit_2(database: Database) -> None:
    env = _env(database)
    del env["GWM_APP_DATABASE_URL"]
    result = subprocess.run([*GWM, "db", "status"], env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert "GWM_APP_DATABASE_URL" in result.stderr


def test_db_status_and_check(database: Database) -> None:
    status = subprocess.run(
        [*GWM, "db", "status"], env=_env(database), capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert status.returncode == 0, status.stderr
    assert "pending: none" in status.stdout
    check = subprocess.run(
        [*GWM, "db", "check"], env=_env(database), capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert check.returncode == 0, check.stderr
    assert "models and database agree" in check.stdout


def test_db_reset_requires_confirmation(database: Database) -> None:
    result = subprocess.run(
        [*GWM, "db", "reset"], env=_env(database), capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 2
    assert "--yes" in result.stderr


@pytest.fixture
def served(database: Database) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [*GWM, "serve", "--port", str(port)],
        env=_env(database, GWM_LOG_LEVEL="warning"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"gwm serve exited with {proc.returncode}:\n{out}")
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()


def test_serve_answers_health_and_readiness(served: str) -> None:
    health = httpx.get(f"{served}/healthz", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = httpx.get(f"{served}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "database": "ok"}


async def test_readyz_answers_503_when_the_database_is_unreachable() -> None:
    from server.app import create_app

    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    app = create_app(
        Settings(
            app_database_url="postgresql+asyncpg://gwm_app@127.0.0.1:1/gwm",
            secret_keys="k1:" + "A" * 43 + "=",
            audit_keys="a1:" + "A" * 43 + "=",
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "database": "unreachable"}


def test_embedded_mode_generates_a_secret_key_once(tmp_path: Path) -> None:
    from server.cli import resolve_secrets

    settings = Settings.from_env({"GWM_DATA_DIR": str(tmp_path)})
    first = resolve_secrets(settings)
    assert first.secret_keys is not None and first.secret_keys.startswith("k1:")
    assert (tmp_path / "secret-keys").stat().st_mode & 0o777 == 0o600
    assert resolve_secrets(settings).secret_keys == first.secret_keys
    assert "k1:" not in repr(first)  # secrets stay out of reprs and logs


def test_a_real_database_needs_explicit_secret_keys() -> None:
    from server.cli import resolve_secrets

    settings = Settings.from_env({"DATABASE_URL": "postgresql://o@h/d", "GWM_APP_DATABASE_URL": "postgresql://a@h/d"})
    with pytest.raises(SettingsError, match="GWM_SECRET_KEYS"):
        resolve_secrets(settings)


def test_the_environment_cannot_weaken_the_password_kdf() -> None:
    with pytest.raises(SettingsError, match="GWM_PASSWORD_ITERATIONS must be at least 600000"):
        Settings.from_env({"GWM_PASSWORD_ITERATIONS": "1000"})
    assert Settings.from_env({}).password_iterations == 600_000


def test_unreachable_database_is_a_clear_error_without_the_password() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    # Port 1 on loopback: nothing listens there.
    env.update(
        DATABASE_URL="postgresql://owner:s3cret-pw@127.0.0.1:1/gwm",
        GWM_APP_DATABASE_URL="postgresql://gwm_app@127.0.0.1:1/gwm",
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=",
        GWM_AUDIT_KEYS=TEST_AUDIT_KEYS,
    )
    result = subprocess.run([*GWM, "db", "status"], env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1
    assert "cannot use the database at 127.0.0.1:1/gwm" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
