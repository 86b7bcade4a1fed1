"""Building blocks of the database fixtures: one cluster per test session, migrated by Alembic."""

from __future__ import annotations

import base64
import json
import os
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.permissions import SYSTEM_ROLES
from models.audit_chain import AuditChain
from models.db import set_tenant

__all__ = ["TEST_AUDIT_CHAIN", "TEST_AUDIT_KEYS", "TenantRef", "create_tenant"]

# One audit key for the whole session: every app, job and factory signs with it, so the chains of
# every tenant verify at the end of the run (tests/test_zz_audit_chain.py).
TEST_AUDIT_KEYS = "test1:" + base64.b64encode(secrets.token_bytes(32)).decode()
TEST_AUDIT_CHAIN = AuditChain.from_setting(TEST_AUDIT_KEYS)


@dataclass(frozen=True, slots=True)
class TenantRef:
    """A committed tenant and the two rows every tenant is born with."""

    id: uuid.UUID
    subdomain: str
    system_user_id: uuid.UUID
    manual_source_id: uuid.UUID


async def create_tenant(owner_engine: AsyncEngine, name: str | None = None, **columns: object) -> TenantRef:
    """Insert and commit a tenant as the schema owner (gwm_app may not create tenants)."""
    tenant_id = uuid.uuid4()
    subdomain = str(columns.pop("subdomain", f"t-{tenant_id.hex[:12]}"))
    values = {"id": tenant_id, "name": name or f"Tenant {subdomain}", "subdomain": subdomain, "plan_type": "standard"}
    values.update(columns)
    cols = ", ".join(values)
    params = ", ".join(f":{k}" for k in values)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        await conn.execute(text(f"INSERT INTO tenants ({cols}) VALUES ({params})"), values)
        system_user = await conn.scalar(
            text("SELECT id FROM users WHERE tenant_id = :t AND is_system"), {"t": tenant_id}
        )
        await _system_roles(conn, tenant_id)
        source = await conn.scalar(
            text("SELECT id FROM external_opportunity_sources WHERE tenant_id = :t AND source_name = 'Manual entry'"),
            {"t": tenant_id},
        )
    assert system_user is not None and source is not None, "tenant bootstrap trigger did not run"
    return TenantRef(id=tenant_id, subdomain=subdomain, system_user_id=system_user, manual_source_id=source)


async def _system_roles(conn: AsyncConnection, tenant_id: uuid.UUID) -> None:
    """The tenant's system roles as `gwm db upgrade` makes them (auth/provisioning.py), written as
    fixture data so a new tenant's audit trail starts empty."""
    for role, permissions in SYSTEM_ROLES.items():
        await conn.execute(
            text(
                "INSERT INTO roles (tenant_id, name, description, is_system_role, permissions)"
                " VALUES (:t, :n, :d, true, CAST(:p AS jsonb))"
            ),
            {
                "t": tenant_id,
                "n": role.value,
                "d": f"System role: {role.value}. Its permissions are managed by GWM CRM.",
                "p": json.dumps(sorted(p.value for p in permissions)),
            },
        )


def admin_url_from_env() -> str | None:
    """GWM_TEST_ADMIN_URL: a superuser URL of an existing cluster to test against instead of the embedded one."""
    return os.environ.get("GWM_TEST_ADMIN_URL") or None
