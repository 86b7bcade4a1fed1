"""`gwm tenant export`, `import` and `purge` (server/tenant_transfer.py): a tenant moved to another
database keeps its rows, its verifying audit chain and its sign-in; failures leave nothing; purge
needs a recorded export and removes exactly that tenant."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.crypto import SecretBox
from models.audit_chain import AUDIT_TABLE_NAMES, AuditChain, audit_table
from models.db import create_engine, set_tenant
from server import cli, migrate
from server.app import create_app
from server.embedded import bootstrap_database
from server.tenant_transfer import (
    EXPORT_ACTION,
    IMPORT_ACTION,
    TransferError,
    export_tenant,
    import_tenant,
    purge_tenant,
)
from tests.conftest import Database
from tests.support import http as http_support
from tests.support.db import TEST_AUDIT_CHAIN, TEST_AUDIT_KEYS, TenantRef, create_tenant
from tests.support.factories import make, populate_every_table
from tests.support.http import LoginUser, app_client, make_login_user

SECRET_KEYS = "s1:" + base64.b64encode(secrets.token_bytes(32)).decode()
SECRET_BOX = SecretBox.from_setting(SECRET_KEYS)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="module")
async def target(database: Database) -> AsyncIterator[Database]:
    """An empty database of its own in the session's cluster, migrated to head."""
    name = f"gwm_move_{uuid.uuid4().hex[:8]}"
    await bootstrap_database(database.superuser_url, name)
    owner = database.owner_url.replace(f"/{database.name}", f"/{name}", 1)
    app = database.app_url.replace(f"/{database.name}", f"/{name}", 1)
    await migrate.upgrade(owner)
    yield Database(superuser_url=database.superuser_url, owner_url=owner, app_url=app, name=name)
    conn = await asyncpg.connect(_dsn(database.superuser_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def target_engine(target: Database) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(target.owner_url, pool_size=1, max_overflow=1, application_name="gwm-test-target")
    yield engine
    await engine.dispose()


@dataclass(frozen=True, slots=True)
class Populated:
    tenant: TenantRef
    login: LoginUser


async def _populated(owner_engine: AsyncEngine, *, purge: bool) -> Populated:
    """A tenant with a row in every table, a password user, a sealed secret and (purge) a chain
    whose first audit_logs row was removed by a retention purge."""
    tenant = await create_tenant(owner_engine)
    login = await make_login_user(owner_engine, tenant, roles=("Tenant Admin",))
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        refs = await populate_every_table(conn, tenant)
        await make(conn, "users", tenant, refs,
                   mfa_secret_encrypted=SECRET_BOX.encrypt(b"JBSWY3DPEHPK3PXP", b"mfa:test"))
    if purge:
        async with owner_engine.begin() as conn:
            await set_tenant(conn, tenant.id)
            await make(conn, "audit_logs", tenant, refs)
        async with owner_engine.begin() as conn:
            await set_tenant(conn, tenant.id)
            last = await conn.scalar(
                text("SELECT max(timestamp_utc) FROM audit_logs WHERE tenant_id = :t"), {"t": tenant.id}
            )
            await TEST_AUDIT_CHAIN.purge_before(conn, tenant.id, last, requested_by="test")
    return Populated(tenant, login)


async def _tenant_tables(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        names = (
            await conn.execute(
                text(
                    "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public'"
                    " AND column_name = 'tenant_id' ORDER BY 1"
                )
            )
        ).scalars()
        return ["tenants", *names]


async def _dump(engine: AsyncEngine, tenant_id: uuid.UUID) -> dict[str, list[str]]:
    """Every row of the tenant per table, as PostgreSQL prints it (jsonb), in a stable order."""
    dump: dict[str, list[str]] = {}
    tables = await _tenant_tables(engine)
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        for table in tables:
            key = "id" if table == "tenants" else "tenant_id"
            rows = await conn.execute(
                text(f"SELECT to_jsonb(t)::text FROM {table} AS t WHERE t.{key} = :t ORDER BY 1"),
                {"t": tenant_id},
            )
            dump[table] = list(rows.scalars())
        await conn.rollback()
    return dump


async def _counts(db: Database, tables: list[str]) -> dict[tuple[str, str], int]:
    """Rows per (table, tenant) of every tenant (as the superuser: row-level security does not apply)."""
    url = make_url(db.superuser_url).set(database=db.name).render_as_string(hide_password=False)
    conn = await asyncpg.connect(_dsn(url))
    try:
        found: dict[tuple[str, str], int] = {}
        for table in tables:
            key = "id" if table == "tenants" else "tenant_id"
            for row in await conn.fetch(f"SELECT {key}::text AS t, count(*) AS n FROM {table} GROUP BY 1"):
                found[(table, row["t"])] = int(row["n"])
        return found
    finally:
        await conn.close()


def _rows_of(counts: dict[tuple[str, str], int], tenant_id: uuid.UUID) -> int:
    return sum(n for (_, t), n in counts.items() if t == str(tenant_id))


def _without_events(dump: dict[str, list[str]], *actions: str) -> dict[str, list[str]]:
    return {
        table: [r for r in rows if json.loads(r).get("action_type") not in actions] if table == "audit_logs" else rows
        for table, rows in dump.items()
    }


async def test_export_then_import_into_an_empty_database(
    owner_engine: AsyncEngine, database: Database, target: Database, target_engine: AsyncEngine, tmp_path: Path
) -> None:
    source = await _populated(owner_engine, purge=True)
    tenant_id = source.tenant.id
    before = await _dump(owner_engine, tenant_id)
    path = tmp_path / "tenant.jsonl"

    exported = await export_tenant(owner_engine, TEST_AUDIT_CHAIN, source.tenant.subdomain, path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["tenant.jsonl"]  # the spool file is gone
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["tenant_id"] == str(tenant_id)
    assert header["audit_key_ids"] == list(TEST_AUDIT_CHAIN.key_ids)
    assert header["secret_key_ids"] == ["s1"]
    assert header["tables"][0] == "tenants"
    assert header["row_counts"] == {t: len(rows) for t, rows in before.items()}
    assert sum(header["row_counts"].values()) == len(lines) - 1
    assert json.loads(lines[1])["table"] == "tenants"
    first_audit = next(json.loads(line)["row"] for line in lines[1:] if json.loads(line)["table"] == "audit_logs")
    assert first_audit["seq"] > 1, "the fixture's retention purge should have removed the chain's first row"
    async with owner_engine.connect() as conn:  # the export is recorded with its sha256
        await set_tenant(conn, tenant_id)
        recorded = (await conn.execute(
            text("SELECT after_values FROM audit_logs WHERE tenant_id = :t AND action_type = :a"),
            {"t": tenant_id, "a": EXPORT_ACTION},
        )).scalar_one()
        await conn.rollback()
    assert recorded["sha256"] == exported.sha256
    tables = await _tenant_tables(target_engine)

    # Key ids not configured: refused before anything is written, naming the missing ids.
    other_chain = AuditChain.from_setting("other:" + base64.b64encode(secrets.token_bytes(32)).decode())
    with pytest.raises(TransferError, match=r"audit rows are signed with key id.*test1"):
        await import_tenant(target_engine, other_chain, path, secret_ids=("s1",))
    with pytest.raises(TransferError, match=r"secrets are sealed with key id.*s1.*would not decrypt"):
        await import_tenant(target_engine, TEST_AUDIT_CHAIN, path, secret_ids=("s2",))
    # The same key id holding another key: the rows go in, the chain fails to verify, all rolls back.
    same_id = AuditChain.from_setting("test1:" + base64.b64encode(secrets.token_bytes(32)).decode())
    with pytest.raises(TransferError, match=r"does not verify under GWM_AUDIT_KEYS.*hash mismatch"):
        await import_tenant(target_engine, same_id, path, secret_ids=("s1",))
    assert _rows_of(await _counts(target, tables), tenant_id) == 0

    # A line near the end corrupted: every table before it was inserted, then all is rolled back.
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines[:-1], lines[-1][: len(lines[-1]) // 2]]) + "\n")
    with pytest.raises(TransferError, match=f"line {len(lines)} is not a row"):
        await import_tenant(target_engine, TEST_AUDIT_CHAIN, broken, secret_ids=("s1",))
    # A value the database refuses in the last table: the same.
    row = json.loads(lines[-1])
    row["row"]["id"] = "not-a-uuid"
    bad_value = tmp_path / "bad-value.jsonl"
    bad_value.write_text("\n".join([*lines[:-1], json.dumps(row)]) + "\n")
    with pytest.raises(TransferError, match="the database refused the rows"):
        await import_tenant(target_engine, TEST_AUDIT_CHAIN, bad_value, secret_ids=("s1",))
    # A file cut short: the counts do not match the header.
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(TransferError, match="do not match the header"):
        await import_tenant(target_engine, TEST_AUDIT_CHAIN, short, secret_ids=("s1",))
    assert _rows_of(await _counts(target, tables), tenant_id) == 0

    imported = await import_tenant(target_engine, TEST_AUDIT_CHAIN, path, secret_ids=("s1", "s0"))

    assert imported.sha256 == exported.sha256
    assert any("audit chains verify" in note for note in imported.notes)
    after = await _dump(target_engine, tenant_id)
    assert _without_events(after, IMPORT_ACTION) == before
    assert [json.loads(r)["action_type"] for r in after["audit_logs"] if r not in before["audit_logs"]] == [
        IMPORT_ACTION
    ]
    # One system user and one "Manual entry" source: the bootstrap trigger's rows were replaced.
    assert sum(json.loads(r)["is_system"] for r in after["users"]) == 1
    assert sum(json.loads(r)["source_name"] == "Manual entry" for r in after["external_opportunity_sources"]) == 1
    async with target_engine.connect() as conn:  # the chain verifies there, from its purge anchor
        await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            await set_tenant(conn, tenant_id)
            reports = [await TEST_AUDIT_CHAIN.verify(conn, audit_table(name)) for name in AUDIT_TABLE_NAMES]
    assert all(r.ok for r in reports), [str(r) for r in reports]
    assert reports[0].first_seq is not None and reports[0].first_seq > 1

    # A password sign-in against an app on the second database.
    app = create_app(http_support.test_settings(target.app_url, secret_keys=SECRET_KEYS))
    async with app_client(app) as client:
        response = await client.post("/auth/login", json=source.login.credentials())
        assert response.status_code == 200, response.text
        wrong = await client.post("/auth/login", json={**source.login.credentials(), "password": "not it at all"})
        assert wrong.status_code != 200

    # A second import of the same tenant is refused, and changes nothing.
    counts = await _counts(target, tables)
    with pytest.raises(TransferError, match="already exists"):
        await import_tenant(target_engine, TEST_AUDIT_CHAIN, path, secret_ids=("s1",))
    assert await _counts(target, tables) == counts


async def test_import_refuses_what_does_not_fit(
    owner_engine: AsyncEngine, target_engine: AsyncEngine, tmp_path: Path
) -> None:
    source = await create_tenant(owner_engine)
    path = tmp_path / "small.jsonl"
    await export_tenant(owner_engine, TEST_AUDIT_CHAIN, source.subdomain, path)
    header, *rows = path.read_text().splitlines()

    def variant(name: str, first: str, rest: list[str]) -> Path:
        changed = tmp_path / name
        changed.write_text("\n".join([first, *rest]) + "\n")
        return changed

    older = json.dumps({**json.loads(header), "schema_revision": "0001"})
    with pytest.raises(TransferError, match="schema revision 0001"):
        await import_tenant(target_engine, TEST_AUDIT_CHAIN, variant("old.jsonl", older, rows), secret_ids=())
    newer = json.dumps({**json.loads(header), "version": 2})
    with pytest.raises(TransferError, match="format version 2"):
        await import_tenant(target_engine, TEST_AUDIT_CHAIN, variant("v2.jsonl", newer, rows), secret_ids=())
    last = json.loads(rows[-1])
    last["row"]["tenant_id"] = str(uuid.uuid4())
    with pytest.raises(TransferError, match="row of another tenant"):
        await import_tenant(
            target_engine, TEST_AUDIT_CHAIN, variant("mixed.jsonl", header, [*rows[:-1], json.dumps(last)]),
            secret_ids=(),
        )
    assert json.loads(rows[1])["table"] != json.loads(rows[-1])["table"]
    with pytest.raises(TransferError, match="rows are not together"):  # a table's rows split in two
        await import_tenant(
            target_engine, TEST_AUDIT_CHAIN, variant("split.jsonl", header, [*rows, rows[1]]), secret_ids=()
        )
    taken = await create_tenant(target_engine, subdomain=source.subdomain)
    with pytest.raises(TransferError, match=f"subdomain '{source.subdomain}' belongs to another tenant here"):
        await import_tenant(target_engine, TEST_AUDIT_CHAIN, path, secret_ids=())
    assert taken.id != source.id


async def test_import_refuses_what_is_not_an_export(target_engine: AsyncEngine, tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": "world"}\n')
    with pytest.raises(TransferError, match="not a gwm tenant export header"):
        await import_tenant(target_engine, TEST_AUDIT_CHAIN, other, secret_ids=("s1",))
    with pytest.raises(TransferError, match="no file"):
        await import_tenant(target_engine, TEST_AUDIT_CHAIN, tmp_path / "missing.jsonl", secret_ids=("s1",))


async def test_export_refuses_an_existing_file_and_an_unknown_tenant(
    owner_engine: AsyncEngine, tenant_a: TenantRef, tmp_path: Path
) -> None:
    existing = tmp_path / "existing.jsonl"
    existing.write_text("keep me\n")
    with pytest.raises(TransferError, match="exists"):
        await export_tenant(owner_engine, TEST_AUDIT_CHAIN, tenant_a.subdomain, existing)
    assert existing.read_text() == "keep me\n"
    with pytest.raises(TransferError, match="no tenant"):
        await export_tenant(owner_engine, TEST_AUDIT_CHAIN, "no-such-tenant", tmp_path / "x.jsonl")
    with pytest.raises(TransferError, match="cannot write in"):
        await export_tenant(owner_engine, TEST_AUDIT_CHAIN, tenant_a.subdomain, tmp_path / "no-dir" / "x.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.jsonl"]  # no spool file left behind


async def test_purge_needs_a_recorded_export_and_removes_only_that_tenant(
    owner_engine: AsyncEngine, database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    doomed = await _populated(owner_engine, purge=False)
    tenant_id = doomed.tenant.id
    neighbour = (await _populated(owner_engine, purge=False)).tenant  # rows everywhere, which must stay
    first = await export_tenant(owner_engine, TEST_AUDIT_CHAIN, doomed.tenant.subdomain, tmp_path / "1.jsonl")
    tables = await _tenant_tables(owner_engine)

    with pytest.raises(TransferError, match=r"no export of .* is recorded"):
        await purge_tenant(owner_engine, TEST_AUDIT_CHAIN, doomed.tenant.subdomain, "0" * 64)
    with pytest.raises(TransferError, match="64 hex digits"):
        await purge_tenant(owner_engine, TEST_AUDIT_CHAIN, doomed.tenant.subdomain, "abc")
    # The trail moved on after the export: that export no longer covers everything.
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        await make(conn, "audit_logs", doomed.tenant, {"users": doomed.login.id})
    with pytest.raises(TransferError, match="changed after that export"):
        await purge_tenant(owner_engine, TEST_AUDIT_CHAIN, doomed.tenant.subdomain, first.sha256)
    # Another tenant's export does not count for this one.
    other = await export_tenant(owner_engine, TEST_AUDIT_CHAIN, neighbour.subdomain, tmp_path / "a.jsonl")
    with pytest.raises(TransferError, match="no export of"):
        await purge_tenant(owner_engine, TEST_AUDIT_CHAIN, doomed.tenant.subdomain, other.sha256)

    second = await export_tenant(owner_engine, TEST_AUDIT_CHAIN, doomed.tenant.subdomain, tmp_path / "2.jsonl")
    before = await _counts(database, tables)
    assert _rows_of(before, tenant_id) > len(tables)
    with caplog.at_level(logging.WARNING):
        deletion = await purge_tenant(owner_engine, TEST_AUDIT_CHAIN, doomed.tenant.subdomain, second.sha256)
    after = await _counts(database, tables)

    assert _rows_of(after, tenant_id) == 0
    assert {k: v for k, v in before.items() if k[1] != str(tenant_id)} == after
    head_seq, head_hash = deletion.heads["audit_logs"]
    assert head_seq >= 2 and head_hash is not None
    assert any(head_hash in r.getMessage() and "purged" in r.getMessage() for r in caplog.records)


async def test_cli_export_import_and_purge(
    database: Database, target: Database, owner_engine: AsyncEngine, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    tenant = (await _populated(owner_engine, purge=False)).tenant

    async def gwm(*argv: str) -> int:  # the command runs its own event loop: in a thread of its own
        return await asyncio.to_thread(cli.main, list(argv))

    monkeypatch.setenv("DATABASE_URL", database.owner_url)
    monkeypatch.setenv("GWM_APP_DATABASE_URL", database.app_url)
    monkeypatch.setenv("GWM_AUDIT_KEYS", TEST_AUDIT_KEYS)
    monkeypatch.setenv("GWM_SECRET_KEYS", SECRET_KEYS)
    path = tmp_path / "b.jsonl"

    assert await gwm("tenant", "export", "--tenant", tenant.subdomain, str(path)) == 0
    out = capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sha = out.split("sha256 ")[1].split()[0]
    assert len(sha) == 64

    assert await gwm("tenant", "export", "--tenant", tenant.subdomain, str(path)) == 2
    assert "exists" in capsys.readouterr().err

    # Into the second database: the key ids are checked and reported, then the import goes through.
    monkeypatch.setenv("DATABASE_URL", target.owner_url)
    monkeypatch.setenv("GWM_APP_DATABASE_URL", target.app_url)
    monkeypatch.setenv("GWM_AUDIT_KEYS", "a9:" + base64.b64encode(secrets.token_bytes(32)).decode())
    assert await gwm("tenant", "import", str(path)) == 2
    assert "key id(s) test1 not in GWM_AUDIT_KEYS" in capsys.readouterr().err
    monkeypatch.setenv("GWM_AUDIT_KEYS", TEST_AUDIT_KEYS)
    assert await gwm("tenant", "import", str(path)) == 0
    out = capsys.readouterr().out
    assert "audit key ids test1: configured" in out and "audit chains verify under the configured keys" in out
    assert f"imported {tenant.subdomain}" in out and sha in out
    monkeypatch.setenv("DATABASE_URL", database.owner_url)
    monkeypatch.setenv("GWM_APP_DATABASE_URL", database.app_url)
    assert await gwm("tenant", "purge", "--tenant", tenant.subdomain, "--export-sha256", sha) == 2
    assert "--yes" in capsys.readouterr().err
    assert await gwm("tenant", "purge", "--tenant", tenant.subdomain, "--export-sha256", "1" * 64, "--yes") == 2
    assert "no export of" in capsys.readouterr().err
    assert await gwm("tenant", "import", str(path)) == 2
    assert "already exists" in capsys.readouterr().err

    assert await gwm("tenant", "purge", "--tenant", tenant.subdomain, "--export-sha256", sha, "--yes") == 0
    out = capsys.readouterr().out
    assert f"purged {tenant.subdomain}" in out and "audit_logs:" in out and "head seq" in out
