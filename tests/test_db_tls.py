"""TLS to PostgreSQL with certificate verification, for both roles (docs/deploy.md "Database connections").

The embedded PostgreSQL is built without SSL, so these tests start Debian's `postgresql` cluster
(/usr/lib/postgresql/<version>/bin, installed by .ci/run) on 127.0.0.1 with a server certificate
from trustme for "localhost". As root (CI), the cluster runs as `nobody` (initdb refuses root).
Without Debian's PostgreSQL the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from sqlalchemy import text

from live.listener import connector_for
from models.db import create_engine, tls_from_url
from server.migrate import _owner_engine
from server.settings import Settings, SettingsError

RUN_AS = "nobody"


def _debian_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsCluster:
    port: int
    ca_file: Path  # the CA that signed the server's certificate
    other_ca_file: Path  # a CA that signed nothing of this server
    client_cert: Path  # CN=gwm_cert, signed by ca_file
    client_key: Path

    def url(self, role: str, host: str = "localhost", **query: str | Path) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql+asyncpg://{role}@{host}:{self.port}/postgres" + (f"?{params}" if params else "")


def _as_cluster_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["setpriv", f"--reuid={RUN_AS}", f"--regid={RUN_AS if RUN_AS != 'nobody' else 'nogroup'}",
            "--clear-groups", *argv]


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[TlsCluster]:
    bindir = _debian_bin()
    if bindir is None:
        reason = "Debian's postgresql package is not installed (.ci/run installs it): no cluster with SSL"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="gwm-tls-pg-"))
    os.chmod(work, 0o755)  # noqa: S103  # the cluster's user reaches its data dir and certificates
    ca, other_ca = trustme.CA(), trustme.CA()
    server_cert = ca.issue_cert("localhost")
    client = ca.issue_cert("gwm-client", common_name="gwm_cert")
    certs = work / "certs"
    certs.mkdir()
    server_cert.cert_chain_pems[0].write_to_path(str(certs / "server.crt"))
    server_cert.private_key_pem.write_to_path(str(certs / "server.key"))
    ca.cert_pem.write_to_path(str(certs / "ca.crt"))
    other_ca.cert_pem.write_to_path(str(certs / "other-ca.crt"))
    client.cert_chain_pems[0].write_to_path(str(certs / "client.crt"))
    client.private_key_pem.write_to_path(str(certs / "client.key"))
    os.chmod(certs / "client.key", 0o600)
    os.chmod(certs / "server.key", 0o600)
    data = work / "data"
    if os.geteuid() == 0:
        shutil.chown(work, RUN_AS)
        shutil.chown(certs / "server.key", RUN_AS)
    port = _free_port()
    log = work / "postgres.log"
    try:
        subprocess.run(
            _as_cluster_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                              "--no-sync", "-E", "UTF8"]),
            check=True, capture_output=True, timeout=300,
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{work}'\n"
                f"ssl = on\nssl_cert_file = '{certs / 'server.crt'}'\nssl_key_file = '{certs / 'server.key'}'\n"
                f"ssl_ca_file = '{certs / 'ca.crt'}'\nfsync = off\n"
            )
        # Only TLS over TCP; gwm_cert must present a client certificate whose CN is its name.
        (data / "pg_hba.conf").write_text(
            "local all postgres trust\n"
            "hostssl all gwm_cert 127.0.0.1/32 cert\n"
            "hostssl all all 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 reject\n"
        )
        subprocess.run(
            _as_cluster_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "120", "start"]),
            check=True, capture_output=True, timeout=180,
        )
        subprocess.run(
            _as_cluster_user([str(bindir / "psql"), "-h", str(work), "-p", str(port), "-U", "postgres",
                              "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c",
                              "CREATE ROLE gwm_owner LOGIN; CREATE ROLE gwm_app LOGIN; CREATE ROLE gwm_cert LOGIN;"]),
            check=True, capture_output=True, timeout=60,
        )
        yield TlsCluster(port, certs / "ca.crt", certs / "other-ca.crt", certs / "client.crt", certs / "client.key")
    except subprocess.CalledProcessError as exc:
        detail = log.read_text() if log.exists() else ""
        pytest.fail(f"the TLS cluster did not start: {exc.stderr!r}\n{detail}")
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_cluster_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                           capture_output=True, timeout=120)
        shutil.rmtree(work, ignore_errors=True)


_SSL_ROW = text("SELECT ssl, version, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


async def _session_tls(url: str) -> tuple[bool, str, str]:
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(_SSL_ROW)).one()
            return bool(row.ssl), str(row.version), str(row.current_user)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("role", ["gwm_owner", "gwm_app"])
async def test_verify_full_connects_both_roles_over_tls(tls_cluster: TlsCluster, role: str) -> None:
    url = tls_cluster.url(role, sslmode="verify-full", sslrootcert=tls_cluster.ca_file)
    assert await _session_tls(url) in {(True, "TLSv1.3", role), (True, "TLSv1.2", role)}


async def test_a_server_certificate_from_another_ca_is_refused(tls_cluster: TlsCluster) -> None:
    url = tls_cluster.url("gwm_app", sslmode="verify-full", sslrootcert=tls_cluster.other_ca_file)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await _session_tls(url)
    # verify-ca checks the chain too: the wrong CA is refused there as well.
    url = tls_cluster.url("gwm_app", sslmode="verify-ca", sslrootcert=tls_cluster.other_ca_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _session_tls(url)


async def test_a_host_name_the_certificate_does_not_name_is_refused(tls_cluster: TlsCluster) -> None:
    # The certificate names "localhost"; 127.0.0.1 reaches the same server under another name.
    url = tls_cluster.url("gwm_app", host="127.0.0.1", sslmode="verify-full", sslrootcert=tls_cluster.ca_file)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"IP address mismatch|Hostname mismatch"):
        await _session_tls(url)
    # verify-ca checks only the chain: the same name is accepted there (why production uses verify-full).
    url = tls_cluster.url("gwm_app", host="127.0.0.1", sslmode="verify-ca", sslrootcert=tls_cluster.ca_file)
    assert (await _session_tls(url))[0] is True


async def test_a_client_certificate_authenticates_its_role(tls_cluster: TlsCluster) -> None:
    with_cert = tls_cluster.url("gwm_cert", sslmode="verify-full", sslrootcert=tls_cluster.ca_file,
                                sslcert=tls_cluster.client_cert, sslkey=tls_cluster.client_key)
    assert (await _session_tls(with_cert))[::2] == (True, "gwm_cert")
    without = tls_cluster.url("gwm_cert", sslmode="verify-full", sslrootcert=tls_cluster.ca_file)
    with pytest.raises(Exception, match="certificate"):
        await _session_tls(without)


async def test_plain_connections_are_refused_by_this_cluster(tls_cluster: TlsCluster) -> None:
    """The cluster takes TCP only over TLS: sslmode=disable gets the server's refusal (shows TLS is what connects)."""
    with pytest.raises(Exception, match=r"pg_hba\.conf rejects connection"):
        await _session_tls(tls_cluster.url("gwm_app", sslmode="disable"))


async def test_migrations_and_the_listen_connection_use_the_urls_tls(tls_cluster: TlsCluster) -> None:
    owner = tls_cluster.url("gwm_owner", sslmode="verify-full", sslrootcert=tls_cluster.ca_file)
    engine = _owner_engine(owner)  # the engine server/migrate.py migrates with
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(_SSL_ROW)).one().ssl is True
    finally:
        await engine.dispose()

    app = create_engine(tls_cluster.url("gwm_app", sslmode="verify-full", sslrootcert=tls_cluster.ca_file))
    try:
        listen = await connector_for(app)()  # live/listener.py's connection outside the pool
        try:
            assert await listen.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        finally:
            await listen.close()
        wrong = create_engine(tls_cluster.url("gwm_app", sslmode="verify-full", sslrootcert=tls_cluster.other_ca_file))
        with pytest.raises(ssl.SSLCertVerificationError):
            await connector_for(wrong)()
        await wrong.dispose()
    finally:
        await app.dispose()


def test_tls_parameters_are_taken_out_of_the_url_and_checked(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    url, tls = tls_from_url(
        f"postgresql+asyncpg://gwm_app:s3cret@db.internal:5432/gwm?sslmode=verify-full&sslrootcert={ca_file}"
    )
    assert url == "postgresql+asyncpg://gwm_app:s3cret@db.internal:5432/gwm"
    assert isinstance(tls, ssl.SSLContext)
    assert tls.check_hostname is True and tls.verify_mode is ssl.CERT_REQUIRED
    assert tls_from_url("postgresql+asyncpg://gwm_app@db/gwm") == ("postgresql+asyncpg://gwm_app@db/gwm", None)
    assert tls_from_url("postgresql+asyncpg://gwm_app@db/gwm?sslmode=disable")[1] is False
    with pytest.raises(ValueError, match="sslmode must be one of"):
        tls_from_url("postgresql+asyncpg://gwm_app@db/gwm?sslmode=verify")
    with pytest.raises(ValueError, match="sslrootcert: no readable file"):
        tls_from_url("postgresql+asyncpg://gwm_app@db/gwm?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="sslkey is given without sslcert"):
        tls_from_url(f"postgresql+asyncpg://gwm_app@db/gwm?sslmode=verify-full&sslkey={ca_file}")


def test_settings_refuse_a_malformed_tls_setting_in_either_url(tmp_path: Path) -> None:
    good = "postgresql://gwm_owner@db/gwm"
    with pytest.raises(SettingsError, match="GWM_APP_DATABASE_URL: sslmode must be one of"):
        Settings.from_env({"DATABASE_URL": good, "GWM_APP_DATABASE_URL": good + "?sslmode=verify"})
    with pytest.raises(SettingsError, match="DATABASE_URL: sslrootcert: no readable file"):
        Settings.from_env({"DATABASE_URL": good + "?sslmode=verify-full&sslrootcert=/nonexistent",
                           "GWM_APP_DATABASE_URL": good})
    settings = Settings.from_env({
        "DATABASE_URL": good + "?sslmode=require", "GWM_APP_DATABASE_URL": good + "?sslmode=require",
        "GWM_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": "15000", "GWM_DB_POOL_TIMEOUT_MS": "2500",
        "GWM_SHUTDOWN_GRACE_SECONDS": "20",
    })
    assert settings.app_database_url == "postgresql+asyncpg://gwm_owner@db/gwm?sslmode=require"
    assert (settings.db_idle_in_transaction_timeout_ms, settings.db_pool_timeout_ms, settings.shutdown_grace_seconds) \
        == (15_000, 2_500, 20)
    with pytest.raises(SettingsError, match="GWM_DB_POOL_TIMEOUT_MS must be at least 1"):
        Settings.from_env({"GWM_DB_POOL_TIMEOUT_MS": "0"})
