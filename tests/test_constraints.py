"""What the database itself refuses or maintains, whatever path a write takes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.support.db import TenantRef
from tests.support.factories import make


async def test_duplicate_email_in_a_tenant_is_refused(app_conn: AsyncConnection, tenant_a: TenantRef) -> None:
    await make(app_conn, "users", tenant_a, email="ada@example.test")
    with pytest.raises(IntegrityError, match="uq_users_tenant_id_email"):
        await make(app_conn, "users", tenant_a, email="ada@example.test")


async def test_same_email_in_two_tenants_is_allowed(
    owner_engine: object, app_conn: AsyncConnection, tenant_a: TenantRef, fresh_tenant: TenantRef
) -> None:
    from models.db import set_tenant

    await make(app_conn, "users", tenant_a, email="shared@example.test")
    await set_tenant(app_conn, fresh_tenant.id)
    row = await make(app_conn, "users", fresh_tenant, email="shared@example.test")
    assert row.tenant_id == fresh_tenant.id


async def test_deleting_a_project_removes_its_external_data(app_conn: AsyncConnection, tenant_a: TenantRef) -> None:
    project = await make(app_conn, "opportunity_projects", tenant_a)
    for version in (1, 2):
        await make(app_conn, "external_opportunity_data", tenant_a, {"opportunity_projects": project.id},
                   version_number=version)
    count = text("SELECT count(*) FROM external_opportunity_data WHERE opportunity_project_id = :p")
    assert await app_conn.scalar(count, {"p": project.id}) == 2
    await app_conn.execute(text("DELETE FROM opportunity_projects WHERE id = :p"), {"p": project.id})
    assert await app_conn.scalar(count, {"p": project.id}) == 0


async def test_deleting_a_user_who_uploaded_a_document_is_refused(
    app_conn: AsyncConnection, tenant_a: TenantRef
) -> None:
    user = await make(app_conn, "users", tenant_a)
    await make(app_conn, "documents", tenant_a, uploaded_by=user.id)
    with pytest.raises(IntegrityError, match="fk_documents"):
        await app_conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": user.id})


async def test_raw_update_moves_updated_at(app_conn: AsyncConnection, tenant_a: TenantRef) -> None:
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    org = await make(app_conn, "organizations", tenant_a, updated_at=long_ago)
    assert org.updated_at == long_ago
    await app_conn.execute(text("UPDATE organizations SET city = 'Reston' WHERE id = :o"), {"o": org.id})
    moved = await app_conn.scalar(text("SELECT updated_at FROM organizations WHERE id = :o"), {"o": org.id})
    now = await app_conn.scalar(text("SELECT now()"))
    assert moved == now


@pytest.mark.parametrize(
    "table", ["opportunity_project_overrides", "document_categories", "opportunity_project_contacts"]
)
async def test_updated_at_added_where_the_seed_lacks_it(
    app_conn: AsyncConnection, tenant_a: TenantRef, table: str
) -> None:
    refs = {"opportunity_projects": (await make(app_conn, "opportunity_projects", tenant_a)).id,
            "contacts": (await make(app_conn, "contacts", tenant_a)).id}
    row = await make(app_conn, table, tenant_a, refs, updated_at=datetime(2001, 1, 1, tzinfo=UTC))
    await app_conn.execute(text(f"UPDATE {table} SET created_at = created_at WHERE id = :i"), {"i": row.id})
    assert await app_conn.scalar(text(f"SELECT updated_at FROM {table} WHERE id = :i"), {"i": row.id}) == (
        await app_conn.scalar(text("SELECT now()"))
    )


async def test_second_global_role_assignment_is_refused(app_conn: AsyncConnection, tenant_a: TenantRef) -> None:
    user = await make(app_conn, "users", tenant_a)
    role = await make(app_conn, "roles", tenant_a)
    refs = {"users": user.id, "roles": role.id}
    await make(app_conn, "user_roles", tenant_a, refs)  # opportunity_project_id NULL: tenant-wide
    with pytest.raises(IntegrityError, match="uq_user_roles"):
        await make(app_conn, "user_roles", tenant_a, refs)


async def test_project_scoped_assignments_of_one_role_to_two_projects_are_allowed(
    app_conn: AsyncConnection, tenant_a: TenantRef
) -> None:
    user = await make(app_conn, "users", tenant_a)
    role = await make(app_conn, "roles", tenant_a)
    for _ in range(2):
        project = await make(app_conn, "opportunity_projects", tenant_a)
        await make(app_conn, "user_roles", tenant_a, {"users": user.id, "roles": role.id},
                   opportunity_project_id=project.id)


@pytest.mark.parametrize(
    ("table", "column", "bad"),
    [
        ("opportunity_projects", "pipeline_stage", "phase_7"),
        ("opportunity_projects", "project_status", "maybe"),
        ("opportunity_projects", "priority_level", "urgent"),
        ("activities", "status", "done-ish"),
        ("documents", "processing_status", "lost"),
        ("documents", "access_level", "everyone"),
        ("change_history", "entity_type", "spaceship"),
        ("external_data_changes", "impact_level", "apocalyptic"),
    ],
)
async def test_bad_enum_value_is_refused_by_the_database(
    app_conn: AsyncConnection, tenant_a: TenantRef, table: str, column: str, bad: str
) -> None:
    refs = {"opportunity_projects": (await make(app_conn, "opportunity_projects", tenant_a)).id}
    with pytest.raises(IntegrityError, match=f"ck_{table}_{column}"):
        await make(app_conn, table, tenant_a, refs, **{column: bad})


async def test_every_tenant_starts_with_a_system_user_that_cannot_sign_in(
    app_conn: AsyncConnection, tenant_a: TenantRef
) -> None:
    row = (
        await app_conn.execute(
            text("SELECT is_system, password_hash, is_saml_user FROM users WHERE id = :u"),
            {"u": tenant_a.system_user_id},
        )
    ).one()
    assert row.is_system and row.password_hash is None and not row.is_saml_user
    source = await app_conn.scalar(
        text("SELECT source_name FROM external_opportunity_sources WHERE id = :s"), {"s": tenant_a.manual_source_id}
    )
    assert source == "Manual entry"


async def test_statement_against_a_missing_parent_is_refused(app_conn: AsyncConnection, tenant_a: TenantRef) -> None:
    import uuid

    with pytest.raises((IntegrityError, DBAPIError), match="foreign key"):
        await make(app_conn, "capture_plans", tenant_a, {"opportunity_projects": uuid.uuid4()})


async def test_the_system_user_id_is_derived_from_the_tenant_id(tenant_a: TenantRef, tenant_b: TenantRef) -> None:
    from models.tenancy import system_user_id

    # The bootstrap trigger and models.tenancy.system_user_id must agree: code relies on it.
    assert system_user_id(tenant_a.id) == tenant_a.system_user_id
    assert system_user_id(tenant_b.id) == tenant_b.system_user_id
