"""Tenant isolation in PostgreSQL: row-level security, composite keys, the server's role, lookups."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from models.audit_chain import AuditChainError
from models.db import create_engine, set_tenant
from tests.conftest import Database
from tests.support.db import TenantRef, create_tenant
from tests.support.factories import TENANT_TABLES, make, populate_every_table

ALL_TABLES = ("tenants", *TENANT_TABLES)


@pytest.fixture(scope="module")
async def populated(owner_engine: AsyncEngine) -> tuple[TenantRef, TenantRef]:
    """Two committed tenants with a row in every table each."""
    a = await create_tenant(owner_engine, "Isolation A")
    b = await create_tenant(owner_engine, "Isolation B")
    for tenant in (a, b):
        async with owner_engine.begin() as conn:
            await set_tenant(conn, tenant.id)
            await populate_every_table(conn, tenant)
    return a, b


@pytest.fixture
async def one_conn_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """The server's role through a pool of exactly one connection, so every checkout reuses it."""
    engine = create_engine(database.app_url, pool_size=1, max_overflow=0, application_name="gwm-test-pool1")
    yield engine
    await engine.dispose()


def test_every_table_is_covered() -> None:
    # The factories know every table of the schema, so the isolation tests below cover them all.
    from models import Base

    assert set(ALL_TABLES) == set(Base.metadata.tables)


async def test_pooled_connection_sees_only_the_tenant_it_is_given(
    one_conn_engine: AsyncEngine, populated: tuple[TenantRef, TenantRef]
) -> None:
    a, b = populated
    async with one_conn_engine.begin() as conn:
        await set_tenant(conn, a.id)
        pid_a = await conn.scalar(text("SELECT pg_backend_pid()"))
        for table in TENANT_TABLES:
            assert await conn.scalar(text(f"SELECT count(*) FROM {table}")) >= 1, table

    async with one_conn_engine.begin() as conn:
        await set_tenant(conn, b.id)
        assert await conn.scalar(text("SELECT pg_backend_pid()")) == pid_a, "the pool handed out another connection"
        assert (await conn.execute(text("SELECT id FROM tenants"))).scalars().all() == [b.id]
        for table in TENANT_TABLES:
            tenants_seen = (await conn.execute(text(f"SELECT DISTINCT tenant_id FROM {table}"))).scalars().all()
            assert tenants_seen == [b.id], table


async def test_no_tenant_set_reads_nothing(
    one_conn_engine: AsyncEngine, populated: tuple[TenantRef, TenantRef]
) -> None:
    a, _ = populated
    async with one_conn_engine.begin() as conn:  # the connection served tenant A before
        await set_tenant(conn, a.id)
    async with one_conn_engine.begin() as conn:
        assert await conn.scalar(text("SELECT current_setting('app.tenant_id', true)")) in ("", None)
        for table in ALL_TABLES:
            assert await conn.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table


@pytest.mark.parametrize("table", ["organizations", "contacts", "audit_logs", "change_history"])
async def test_no_tenant_set_cannot_insert(
    one_conn_engine: AsyncEngine, populated: tuple[TenantRef, TenantRef], table: str
) -> None:
    a, _ = populated
    # Audit rows: the audit chain refuses first, having no tenant to chain for.
    with pytest.raises((DBAPIError, AuditChainError), match=r"row-level security|no tenant is set"):
        async with one_conn_engine.begin() as conn:
            await make(conn, table, a, {"opportunity_projects": uuid.uuid4()})


async def test_cannot_write_into_another_tenant(
    one_conn_engine: AsyncEngine, populated: tuple[TenantRef, TenantRef]
) -> None:
    a, b = populated
    with pytest.raises(DBAPIError, match="row-level security"):
        async with one_conn_engine.begin() as conn:
            await set_tenant(conn, a.id)
            await make(conn, "organizations", b)


async def test_child_with_another_tenants_parent_is_refused(
    owner_engine: AsyncEngine, populated: tuple[TenantRef, TenantRef]
) -> None:
    # As the owner, so that the composite foreign key (not row-level security) is what refuses it.
    a, b = populated
    async with owner_engine.connect() as conn:
        await set_tenant(conn, b.id)
        b_project = await conn.scalar(text("SELECT id FROM opportunity_projects LIMIT 1"))
        b_org = await conn.scalar(text("SELECT id FROM organizations LIMIT 1"))
        await conn.rollback()
    for table, refs in (
        ("capture_plans", {"opportunity_projects": b_project}),
        ("contacts", {}),
    ):
        extra = {"organization_id": b_org} if table == "contacts" else {}
        with pytest.raises(IntegrityError, match="foreign key"):
            async with owner_engine.begin() as conn:
                await set_tenant(conn, a.id)
                await make(conn, table, a, refs, **extra)


async def test_server_role_is_unprivileged(app_engine: AsyncEngine) -> None:
    async with app_engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT current_user AS name, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb"
                    " FROM pg_roles WHERE rolname = current_user"
                )
            )
        ).one()
        assert row.name == "gwm_app"
        assert not (row.rolsuper or row.rolbypassrls or row.rolcreaterole or row.rolcreatedb)
        owned = await conn.scalar(
            text(
                "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid)"
                " + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)"
                " + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)"
                " FROM pg_roles r WHERE r.rolname = current_user"
            )
        )
        assert owned == 0


async def test_schema_owner_is_not_superuser(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as conn:
        owners = (
            await conn.execute(
                text(
                    "SELECT DISTINCT r.rolname, r.rolsuper FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
                )
            )
        ).all()
        assert [(o.rolname, o.rolsuper) for o in owners] == [("gwm_owner", False)]


async def test_every_table_forces_row_level_security(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'alembic_version'"
                )
            )
        ).all()
    assert {r.relname for r in rows} >= set(ALL_TABLES)
    assert [r.relname for r in rows if not (r.relrowsecurity and r.relforcerowsecurity)] == []


async def test_pre_tenant_lookups_work_for_the_server_role(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    token_hash = hashlib.sha256(b"a session token").hexdigest()
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        user = await make(conn, "users", fresh_tenant)
        session = await make(conn, "user_sessions", fresh_tenant, {"users": user.id}, session_token_hash=token_hash)

    async with app_engine.connect() as conn:  # no tenant set: these run before one is known
        found = (await conn.execute(text("SELECT * FROM gwm_session_by_token_hash(:h)"), {"h": token_hash})).one()
        assert (found.session_id, found.user_id, found.tenant_id) == (session.id, user.id, fresh_tenant.id)
        missing = await conn.execute(text("SELECT * FROM gwm_session_by_token_hash(:h)"), {"h": "0" * 64})
        assert missing.all() == []

        tenant = (
            await conn.execute(
                text("SELECT * FROM gwm_tenant_by_subdomain(:s)"), {"s": fresh_tenant.subdomain.upper()}
            )
        ).one()
        assert (tenant.tenant_id, tenant.is_active) == (fresh_tenant.id, True)
        # The functions reveal nothing else: the tables stay invisible without a tenant.
        assert await conn.scalar(text("SELECT count(*) FROM user_sessions")) == 0


async def test_lookup_role_cannot_log_in_and_owns_only_the_lookups(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as conn:
        role = (
            await conn.execute(text("SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = 'gwm_lookup'"))
        ).one()
        assert (role.rolcanlogin, role.rolsuper) == (False, False)
        functions = (
            await conn.execute(
                text(
                    "SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner"
                    " WHERE r.rolname = 'gwm_lookup' ORDER BY 1"
                )
            )
        ).all()
        assert [f.proname for f in functions] == [
            "gwm_account_token_by_hash",
            "gwm_api_key_by_hash",
            "gwm_document_search",
            "gwm_extraction_claim",
            "gwm_oidc_provider",
            "gwm_request_api_key",
            "gwm_request_session",
            "gwm_scan_pending",
            "gwm_session_by_token_hash",
            "gwm_sync_claim",
            "gwm_sync_lag",
            "gwm_tenant_by_subdomain",
            "gwm_tenant_ids",
        ]
        # Each is SECURITY DEFINER with an empty search_path; the search also turns sequential scans
        # off, so its GIN indexes answer `@@` under its own policies (docs/api/documents.md, option 2).
        extra_settings = {"gwm_document_search": ["enable_seqscan=off"]}
        assert all(
            f.prosecdef and f.proconfig == ["search_path=\"\"", *extra_settings.get(f.proname, [])]
            for f in functions
        ), functions
        owned_tables = await conn.scalar(
            text("SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = 'gwm_lookup'")
        )
        assert owned_tables == 0
