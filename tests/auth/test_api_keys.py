"""API keys over HTTP: create (shown once, stored hashed), use, last-used tracking, expiry, revocation."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.permissions import SYSTEM_ROLES, Permission, SystemRole
from models.db import set_tenant
from tests.support.clock import FakeClock
from tests.support.db import TenantRef, create_tenant
from tests.support.graphql import audit_rows, gql, gql_response, sign_in
from tests.support.http import LoginUser, make_login_user

CREATE = """
mutation ($input: ApiKeyCreateInput!) {
  apiKeyCreate(input: $input) {
    key
    apiKey { id name keyPrefix roleId roleName expiresAt revokedAt lastUsedAt createdAt createdBy }
    errors { field code message }
  }
}"""
REVOKE = """
mutation ($id: UUID!) {
  apiKeyRevoke(input: {id: $id}) { apiKey { id revokedAt revokedBy } errors { field code message } }
}"""
VIEWER = """
{ viewer {
    credential permissions
    user { rowId isSystem }
    tenant { rowId }
    roles { role { name permissions } opportunityProjectId expiresAt }
    sessions { id }
    apiKey { id name roleName }
} }"""
LIST = "query ($all: Boolean!) { apiKeys(includeRevoked: $all) { id name revokedAt } }"


@pytest.fixture
async def admin(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> LoginUser:
    return await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])


@pytest.fixture
async def admin_token(client: httpx.AsyncClient, admin: LoginUser) -> str:
    return await sign_in(client, admin)


async def _create(
    client: httpx.AsyncClient,
    token: str,
    *,
    name: str | None = None,
    role: str = "BD Analyst",
    days: int = 30,
) -> dict[str, Any]:
    """The apiKeyCreate payload (a random name unless given)."""
    values = {"name": name or f"key {uuid.uuid4().hex[:8]}", "roleName": role, "expiresInDays": days}
    body = await gql(client, CREATE, {"input": values}, token=token)
    payload: dict[str, Any] = body["data"]["apiKeyCreate"]
    return payload


async def _viewer_kind(client: httpx.AsyncClient, token: str) -> str:
    kind: str = (await gql(client, "{ viewer { credential } }", token=token))["data"]["viewer"]["credential"]
    return kind


async def _listed(client: httpx.AsyncClient, token: str, *, include_revoked: bool) -> list[str]:
    body = await gql(client, LIST, {"all": include_revoked}, token=token)
    return [k["id"] for k in body["data"]["apiKeys"]]


async def _key_row(owner_engine: AsyncEngine, tenant: TenantRef, key_id: str) -> Row[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        row = (await conn.execute(text("SELECT * FROM api_keys WHERE id = :k"), {"k": key_id})).one()
        await conn.rollback()
    return row


async def test_key_is_shown_once_stored_hashed_and_acts_with_its_role(
    client: httpx.AsyncClient, admin: LoginUser, admin_token: str, owner_engine: AsyncEngine, clock: FakeClock
) -> None:
    tenant = admin.tenant
    created = await _create(client, admin_token, name="CRM sync", role="BD Analyst", days=30)
    assert created["errors"] == []
    key, api_key = created["key"], created["apiKey"]
    assert key.startswith("gwm_") and len(key) >= 4 + 43
    assert api_key["name"] == "CRM sync" and api_key["roleName"] == "BD Analyst"
    assert key.startswith(api_key["keyPrefix"]) and len(api_key["keyPrefix"]) == 10
    assert api_key["createdBy"] == str(admin.id) and api_key["lastUsedAt"] is None
    assert api_key["expiresAt"] == (clock() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    row = await _key_row(owner_engine, tenant, api_key["id"])
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert all(key not in str(value) for value in row)
    (audit,) = await audit_rows(owner_engine, tenant.id, "auth.api_key.created")
    assert audit.user_id == admin.id and audit.entity_id == uuid.UUID(api_key["id"])
    assert key not in str(tuple(audit))

    # The key on /graphql: it acts as the tenant's system user, with exactly its role's permissions.
    viewer = (await gql(client, VIEWER, token=key))["data"]["viewer"]
    assert viewer["credential"] == "API_KEY"
    assert viewer["user"] == {"rowId": str(tenant.system_user_id), "isSystem": True}
    assert viewer["tenant"]["rowId"] == str(tenant.id)
    expected = sorted(p.value for p in SYSTEM_ROLES[SystemRole.BD_ANALYST])
    assert viewer["permissions"] == expected
    (role,) = viewer["roles"]
    assert role["role"]["name"] == "BD Analyst" and role["role"]["permissions"] == expected
    assert role["opportunityProjectId"] is None and role["expiresAt"] == api_key["expiresAt"]
    assert viewer["sessions"] == []
    assert viewer["apiKey"] == {"id": api_key["id"], "name": "CRM sync", "roleName": "BD Analyst"}

    # last_used_at: written (and audited) at most once a minute.
    first_use = clock()
    row = await _key_row(owner_engine, tenant, api_key["id"])
    assert row.last_used_at == first_use
    clock.advance(seconds=30)
    await gql(client, "{ viewer { credential } }", token=key)
    assert (await _key_row(owner_engine, tenant, api_key["id"])).last_used_at == first_use
    assert len(await audit_rows(owner_engine, tenant.id, "auth.api_key.used")) == 1
    clock.advance(seconds=31)
    await gql(client, "{ viewer { credential } }", token=key)
    assert (await _key_row(owner_engine, tenant, api_key["id"])).last_used_at == clock()
    used = await audit_rows(owner_engine, tenant.id, "auth.api_key.used")
    assert len(used) == 2 and all(u.session_id == f"api_key:{api_key['id']}" for u in used)

    # Expiry (the clock passes expires_at): 401, audited as a rejected key.
    clock.advance(days=30)
    refused = await gql_response(client, "{ viewer { credential } }", token=key)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "INVALID_API_KEY"
    (rejected,) = await audit_rows(owner_engine, tenant.id, "auth.api_key.rejected")
    assert rejected.access_granted is False and rejected.operation_description == "expired"

    # Revoking the expired key still works, and it stays refused.
    admin_token = await sign_in(client, admin)
    revoked = (await gql(client, REVOKE, {"id": api_key["id"]}, token=admin_token))["data"]["apiKeyRevoke"]
    assert revoked["errors"] == [] and revoked["apiKey"]["revokedBy"] == str(admin.id)
    assert (await gql_response(client, "{ viewer { credential } }", token=key)).status_code == 401


async def test_revocation_takes_effect_at_once(
    client: httpx.AsyncClient, admin: LoginUser, admin_token: str, owner_engine: AsyncEngine
) -> None:
    created = await _create(client, admin_token, name="to revoke")
    key, key_id = created["key"], created["apiKey"]["id"]
    assert await _viewer_kind(client, key) == "API_KEY"
    assert await _listed(client, admin_token, include_revoked=False) == [key_id]
    payload = (await gql(client, REVOKE, {"id": key_id}, token=admin_token))["data"]["apiKeyRevoke"]
    assert payload["errors"] == [] and payload["apiKey"]["revokedAt"].endswith("Z")
    refused = await gql_response(client, "{ viewer { credential } }", token=key)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "INVALID_API_KEY"
    (audit,) = await audit_rows(owner_engine, admin.tenant.id, "auth.api_key.revoked")
    assert audit.user_id == admin.id and audit.entity_id == uuid.UUID(key_id)

    again = (await gql(client, REVOKE, {"id": key_id}, token=admin_token))["data"]["apiKeyRevoke"]
    assert again == {"apiKey": None, "errors": [
        {"field": ["input", "id"], "code": "ALREADY_REVOKED", "message": "The key was already revoked."}
    ]}
    assert await _listed(client, admin_token, include_revoked=False) == []
    assert await _listed(client, admin_token, include_revoked=True) == [key_id]


async def test_unknown_key_is_refused(client: httpx.AsyncClient) -> None:
    refused = await gql_response(client, "{ viewer { credential } }", token="gwm_" + "A" * 43)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "INVALID_API_KEY"


@pytest.mark.parametrize(
    ("values", "field", "code"),
    [
        ({"expiresInDays": 0}, "expiresInDays", "INVALID_EXPIRY"),
        ({"expiresInDays": 366}, "expiresInDays", "INVALID_EXPIRY"),
        ({"expiresInDays": -5}, "expiresInDays", "INVALID_EXPIRY"),
        ({"roleName": "No Such Role"}, "roleName", "ROLE_NOT_FOUND"),
        ({"name": "   "}, "name", "NAME_REQUIRED"),
        ({"name": "x" * 101}, "name", "NAME_TOO_LONG"),
        # NUL never reaches the mutation: the input guard refuses it (tests/api/test_hostile_input.py).
    ],
)
async def test_invalid_input_is_a_user_error_and_creates_nothing(
    client: httpx.AsyncClient,
    admin: LoginUser,
    admin_token: str,
    owner_engine: AsyncEngine,
    values: dict[str, Any],
    field: str,
    code: str,
) -> None:
    data = {"name": "integration", "roleName": "Viewer", "expiresInDays": 30, **values}
    payload = (await gql(client, CREATE, {"input": data}, token=admin_token))["data"]["apiKeyCreate"]
    assert payload["key"] is None and payload["apiKey"] is None
    (error,) = payload["errors"]
    assert error["field"] == ["input", field] and error["code"] == code and error["message"]
    async with owner_engine.connect() as conn:
        await set_tenant(conn, admin.tenant.id)
        assert await conn.scalar(text("SELECT count(*) FROM api_keys")) == 0
        await conn.rollback()


async def test_longest_expiry_and_duplicate_names(
    client: httpx.AsyncClient, admin_token: str, clock: FakeClock
) -> None:
    created = await _create(client, admin_token, name="yearly", days=365)
    assert created["errors"] == []
    expected = (clock() + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert created["apiKey"]["expiresAt"] == expected
    duplicate = await _create(client, admin_token, name=" yearly ", role="Viewer", days=5)
    assert [e["code"] for e in duplicate["errors"]] == ["NAME_TAKEN"]


async def test_a_key_cannot_manage_keys(client: httpx.AsyncClient, admin_token: str) -> None:
    # Even a key whose role could (Tenant Admin): revoking a leaked key must not leave keys it minted.
    strong = await _create(client, admin_token, role="Tenant Admin")
    payload = await _create(client, strong["key"], name="child", role="Viewer", days=1)
    assert payload["key"] is None and [e["code"] for e in payload["errors"]] == ["NOT_A_PERSON"]


async def test_a_key_without_the_permission_is_forbidden_and_audited(
    client: httpx.AsyncClient, admin: LoginUser, admin_token: str, owner_engine: AsyncEngine
) -> None:
    weak = await _create(client, admin_token, role="Viewer")
    body = await gql(
        client, CREATE, {"input": {"name": "child", "roleName": "Viewer", "expiresInDays": 1}},
        token=weak["key"], errors=True,
    )
    assert body["data"] == {"apiKeyCreate": None}
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "FORBIDDEN", "permission": "api_key:admin"}
    (denied,) = await audit_rows(owner_engine, admin.tenant.id, "auth.access.denied")
    assert denied.session_id == f"api_key:{weak['apiKey']['id']}"
    assert denied.user_id == admin.tenant.system_user_id
    assert denied.permission_used == "api_key:admin" and denied.access_granted is False
    # Nor may it list keys.
    listed = await gql(client, LIST, {"all": True}, token=weak["key"], errors=True)
    assert listed["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_key_may_not_hold_more_than_its_creator(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await conn.execute(
            text(
                "INSERT INTO roles (tenant_id, name, permissions) VALUES"
                " (:t, 'Key Steward', CAST(:p AS jsonb)), (:t, 'Reader', CAST(:r AS jsonb))"
            ),
            {
                "t": fresh_tenant.id,
                "p": f'["{Permission.API_KEY_ADMIN}", "{Permission.OPPORTUNITY_READ}"]',
                "r": f'["{Permission.OPPORTUNITY_READ}"]',
            },
        )
    steward = await make_login_user(owner_engine, fresh_tenant, roles=["Key Steward"])
    token = await sign_in(client, steward)
    refused = await _create(client, token, name="k1", role="Viewer", days=7)
    (error,) = refused["errors"]
    assert error["code"] == "ROLE_EXCEEDS_YOUR_PERMISSIONS" and error["field"] == ["input", "roleName"]
    assert "user:read" in error["message"]
    allowed = await _create(client, token, name="k2", role="Reader", days=7)
    assert allowed["errors"] == [] and allowed["key"].startswith("gwm_")


async def test_keys_and_roles_of_another_tenant_are_not_found(
    client: httpx.AsyncClient, admin: LoginUser, admin_token: str, owner_engine: AsyncEngine
) -> None:
    other = await create_tenant(owner_engine)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, other.id)
        await conn.execute(
            text("INSERT INTO roles (tenant_id, name, permissions) VALUES (:t, 'Elsewhere', '[]'::jsonb)"),
            {"t": other.id},
        )
    other_admin = await make_login_user(owner_engine, other, roles=["Tenant Admin"])
    other_token = await sign_in(client, other_admin)
    theirs = await _create(client, other_token, name="theirs")

    body = await gql(client, REVOKE, {"id": theirs["apiKey"]["id"]}, token=admin_token)
    payload = body["data"]["apiKeyRevoke"]
    assert payload["apiKey"] is None and [e["code"] for e in payload["errors"]] == ["NOT_FOUND"]
    assert await _listed(client, admin_token, include_revoked=True) == []
    assert (await _key_row(owner_engine, other, theirs["apiKey"]["id"])).revoked_at is None
    still = await gql(client, "{ viewer { tenant { rowId } } }", token=theirs["key"])
    assert still["data"]["viewer"]["tenant"]["rowId"] == str(other.id)

    role = await _create(client, admin_token, name="x", role="Elsewhere", days=1)
    assert [e["code"] for e in role["errors"]] == ["ROLE_NOT_FOUND"]


async def test_keys_of_a_deactivated_tenant_stop_working(
    client: httpx.AsyncClient, admin: LoginUser, admin_token: str, owner_engine: AsyncEngine
) -> None:
    from sqlalchemy import text

    from models.db import set_tenant

    key = (await _create(client, admin_token))["key"]
    assert await _viewer_kind(client, key) == "API_KEY"
    async with owner_engine.begin() as conn:
        await set_tenant(conn, admin.tenant.id)
        await conn.execute(text("UPDATE tenants SET is_active = false WHERE id = :t"), {"t": admin.tenant.id})
    refused = await gql_response(client, "{ viewer { credential } }", token=key)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "INVALID_API_KEY"
