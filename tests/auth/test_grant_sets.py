"""A caller's grants pre-aggregated by the database (migration 0024, docs/decisions.md W28).

The principal lookup reads each user's grants text from gwm_principal.user_grant_sets, which triggers on
user_roles and roles keep current in the writing transaction; it computes the text live when the stored one
may be out of date by time (an included assignment has expired since). These tests change grants the ways the
API and the database can, and check that the next request follows and that the stored text is always the one
the live aggregation gives.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.db import set_tenant
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql, sign_in
from tests.support.http import LoginUser, make_login_user

GRANT = """mutation ($input: UserRoleGrantInput!) {
  userRoleGrant(input: $input) { userRole { rowId expiresAt } errors { field code message } }
}"""
REVOKE = """mutation ($input: UserRoleRevokeInput!) {
  userRoleRevoke(input: $input) { deletedRowId errors { field code message } }
}"""
CREATE_ROLE = """mutation ($input: RoleCreateInput!) {
  roleCreate(input: $input) { role { rowId permissions updatedAt } errors { field code message } }
}"""
UPDATE_ROLE = """mutation ($input: RoleUpdateInput!) {
  roleUpdate(input: $input) { role { rowId permissions updatedAt } errors { field code message } }
}"""
VIEWER = "{ viewer { permissions projectPermissions { opportunityProjectId permissions } } }"

# What the stored row says next to what the live aggregation gives now, and what the lookup returns.
STORED_AND_LIVE = text(
    "SELECT gs.grants AS stored, gs.valid_until, gs.updated_at,"
    " (SELECT g.grants FROM gwm_principal.user_grants(:t, :u) AS g) AS live"
    " FROM (SELECT) AS one LEFT JOIN gwm_principal.user_grant_sets AS gs ON gs.user_id = :u"
)


@pytest.fixture
async def admin(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> LoginUser:
    return await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])


@pytest.fixture
async def admin_token(client: httpx.AsyncClient, admin: LoginUser) -> str:
    return await sign_in(client, admin)


async def _projects(owner_engine: AsyncEngine, tenant: TenantRef, n: int) -> list[str]:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        refs: dict[str, Any] = {"users": tenant.system_user_id, "external_opportunity_sources": tenant.manual_source_id}
        return [str((await make(conn, "opportunity_projects", tenant, refs)).id) for _ in range(n)]


async def _role_id(owner_engine: AsyncEngine, tenant: TenantRef, name: str) -> str:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        return str(await conn.scalar(text("SELECT id FROM roles WHERE name = :n"), {"n": name}))


async def _sets(owner_engine: AsyncEngine, tenant: TenantRef, user_id: uuid.UUID | str) -> Any:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        return (await conn.execute(STORED_AND_LIVE, {"t": tenant.id, "u": user_id})).one()


async def _scoped(client: httpx.AsyncClient, token: str) -> dict[str, list[str]]:
    body = await gql(client, VIEWER, token=token)
    return {p["opportunityProjectId"]: p["permissions"] for p in body["data"]["viewer"]["projectPermissions"]}


async def test_a_grant_and_its_revocation_reach_the_next_request(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, admin: LoginUser, admin_token: str
) -> None:
    tenant = admin.tenant
    first, second = await _projects(owner_engine, tenant, 2)
    role = await _role_id(owner_engine, tenant, "Capture Manager")
    user = await make_login_user(owner_engine, tenant, roles=[])
    token = await sign_in(client, user)
    assert await _scoped(client, token) == {}
    row = await _sets(owner_engine, tenant, user.id)
    assert row.stored is None and row.live == "[]"  # never held anything: no row, the lookup computes "[]"

    granted = []
    for project in (first, second):
        body = await gql(client, GRANT, {"input": {"userRowId": str(user.id), "roleRowId": role,
                                                   "opportunityProjectRowId": project}}, token=admin_token)
        assert body["data"]["userRoleGrant"]["errors"] == []
        granted.append(body["data"]["userRoleGrant"]["userRole"]["rowId"])
        row = await _sets(owner_engine, tenant, user.id)
        assert row.stored == row.live and project in row.stored and row.valid_until is None
    scoped = await _scoped(client, token)
    assert set(scoped) == {first, second} and "opportunity:write" in scoped[first]

    body = await gql(client, REVOKE, {"input": {"rowId": granted[0]}}, token=admin_token)
    assert body["data"]["userRoleRevoke"]["errors"] == []
    row = await _sets(owner_engine, tenant, user.id)
    assert row.stored == row.live and first not in row.stored and second in row.stored
    assert set(await _scoped(client, token)) == {second}
    await gql(client, REVOKE, {"input": {"rowId": granted[1]}}, token=admin_token)
    assert await _scoped(client, token) == {}
    assert (await _sets(owner_engine, tenant, user.id)).stored == "[]"


async def test_a_roles_new_permissions_reach_its_holders_next_request(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, admin: LoginUser, admin_token: str
) -> None:
    tenant = admin.tenant
    (project,) = await _projects(owner_engine, tenant, 1)
    body = await gql(client, CREATE_ROLE, {"input": {"name": "Desk", "permissions": ["opportunity:read"]}},
                     token=admin_token)
    role = body["data"]["roleCreate"]["role"]
    holders = [await make_login_user(owner_engine, tenant, roles=[]) for _ in range(2)]
    tokens = [await sign_in(client, h) for h in holders]
    for holder, scope in zip(holders, ({"opportunityProjectRowId": project}, {}), strict=True):
        body = await gql(client, GRANT, {"input": {"userRowId": str(holder.id), "roleRowId": role["rowId"], **scope}},
                         token=admin_token)
        assert body["data"]["userRoleGrant"]["errors"] == []
    assert await _scoped(client, tokens[0]) == {project: ["opportunity:read"]}
    assert (await gql(client, VIEWER, token=tokens[1]))["data"]["viewer"]["permissions"] == ["opportunity:read"]

    body = await gql(client, UPDATE_ROLE, {"input": {"rowId": role["rowId"], "updatedAt": role["updatedAt"],
                                                     "permissions": ["opportunity:read", "contact:read"]}},
                     token=admin_token)
    assert body["data"]["roleUpdate"]["errors"] == []
    assert await _scoped(client, tokens[0]) == {project: ["contact:read", "opportunity:read"]}
    assert (await gql(client, VIEWER, token=tokens[1]))["data"]["viewer"]["permissions"] == [
        "contact:read", "opportunity:read"
    ]
    for holder in holders:
        row = await _sets(owner_engine, tenant, holder.id)
        assert row.stored == row.live and "contact:read" in row.stored


async def test_an_expiring_assignment_holds_until_its_expiry_and_not_after(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, app_engine: AsyncEngine, admin: LoginUser,
    admin_token: str,
) -> None:
    tenant = admin.tenant
    lasting, expiring = await _projects(owner_engine, tenant, 2)
    role = await _role_id(owner_engine, tenant, "Capture Manager")
    user = await make_login_user(owner_engine, tenant, roles=[])
    token = await sign_in(client, user)
    await gql(client, GRANT, {"input": {"userRowId": str(user.id), "roleRowId": role,
                                        "opportunityProjectRowId": lasting}}, token=admin_token)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    body = await gql(client, GRANT, {"input": {"userRowId": str(user.id), "roleRowId": role,
                                               "opportunityProjectRowId": expiring,
                                               "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}},
                     token=admin_token)
    assert body["data"]["userRoleGrant"]["errors"] == []
    row = await _sets(owner_engine, tenant, user.id)
    # Stored with the expiry it depends on: used until then.
    assert row.stored == row.live and expiring in row.stored and row.valid_until == expires
    assert set(await _scoped(client, token)) == {lasting, expiring}

    await asyncio.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
    # Nothing was written since: the stored text still names the expired assignment, the lookup computes live.
    row = await _sets(owner_engine, tenant, user.id)
    assert expiring in row.stored and row.valid_until == expires and expiring not in row.live
    assert set(await _scoped(client, token)) == {lasting}
    async with owner_engine.connect() as conn:  # what the lookup returns is the live text, byte for byte
        await set_tenant(conn, tenant.id)
        session = await conn.scalar(
            text("SELECT session_token_hash FROM user_sessions WHERE user_id = :u AND is_active"
                 " ORDER BY created_at DESC LIMIT 1"), {"u": user.id})
    async with app_engine.connect() as conn:  # as the server calls it
        looked_up = await conn.scalar(text("SELECT grants FROM gwm_request_session(:h)"), {"h": session})
    assert looked_up == row.live

    # An assignment written already expired is left out of the stored text, which stays usable.
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(text("UPDATE user_roles SET expires_at = now() - interval '1 second'"
                                " WHERE user_id = :u AND opportunity_project_id = :p"), {"u": user.id, "p": lasting})
    row = await _sets(owner_engine, tenant, user.id)
    assert row.stored == row.live == "[]" and row.valid_until is None
    assert await _scoped(client, token) == {}


async def _grant(conn: AsyncConnection, tenant: TenantRef, user: uuid.UUID, role: str, project: str | None,
                 expires: str | None = None) -> None:
    await conn.execute(
        text("INSERT INTO user_roles (tenant_id, user_id, role_id, opportunity_project_id, assigned_by, expires_at)"
             " VALUES (:t, :u, :r, :p, :by, CAST(:e AS timestamptz))"),
        {"t": tenant.id, "u": user, "r": role, "p": project, "by": tenant.system_user_id, "e": expires},
    )


async def _all_equal_live(conn: AsyncConnection, tenant: TenantRef) -> list[tuple[uuid.UUID, int]]:
    """Every user of the tenant whose stored text is not the live one, and how many rows are stored."""
    rows = (await conn.execute(
        text("SELECT u.id, gs.grants IS NOT DISTINCT FROM g.grants AS same, gs.user_id IS NOT NULL AS stored"
             " FROM users u CROSS JOIN LATERAL gwm_principal.user_grants(u.tenant_id, u.id) AS g"
             " LEFT JOIN gwm_principal.user_grant_sets gs ON gs.user_id = u.id"
             " WHERE u.tenant_id = :t AND (gs.user_id IS NOT NULL OR g.grants <> '[]')"),
        {"t": tenant.id},
    )).all()
    return [(r.id, int(r.stored)) for r in rows if not r.same]


async def test_the_stored_text_is_the_live_one_after_every_kind_of_change(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    tenant = fresh_tenant
    projects = await _projects(owner_engine, tenant, 4)
    manager = await _role_id(owner_engine, tenant, "Capture Manager")
    viewer = await _role_id(owner_engine, tenant, "Viewer")
    users = [(await make_login_user(owner_engine, tenant, roles=[])).id for _ in range(4)]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    changes = [
        # several users and roles in one statement, expiring and not
        "INSERT INTO user_roles (tenant_id, user_id, role_id, opportunity_project_id, assigned_by, expires_at)"
        " SELECT :t, u, :manager, p, :by, CASE WHEN p = :p0 THEN CAST(:later AS timestamptz) END"
        " FROM unnest(CAST(:users AS uuid[])) u CROSS JOIN unnest(CAST(:projects AS uuid[])) p",
        "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by)"
        " SELECT :t, u, :viewer, :by FROM unnest(CAST(:users AS uuid[])) u",
        # an assignment moved to another user, another project, another expiry
        "UPDATE user_roles SET user_id = :u0 WHERE user_id = :u1 AND opportunity_project_id = :p3 AND false",
        "DELETE FROM user_roles WHERE user_id = :u0 AND opportunity_project_id = :p3",
        "UPDATE user_roles SET user_id = :u0 WHERE user_id = :u1 AND opportunity_project_id = :p3",
        "UPDATE user_roles SET expires_at = now() + interval '1 hour' WHERE user_id = :u2",
        "UPDATE user_roles SET expires_at = now() - interval '1 hour' WHERE user_id = :u3 AND role_id = :viewer",
        # a role's permissions, then something else about it (no recomputation needed, still equal)
        "UPDATE roles SET permissions = permissions || '[\"contact:read\"]'::jsonb WHERE id = :manager",
        "UPDATE roles SET description = 'changed' WHERE id = :manager",
        # a project's deletion cascades to its assignments; a role's deletion to its holders'
        "DELETE FROM opportunity_projects WHERE id = :p1",
        "DELETE FROM roles WHERE id = :viewer",
        "DELETE FROM users WHERE id = :u3",
    ]
    values: dict[str, Any] = {
        "t": tenant.id, "by": tenant.system_user_id, "manager": manager, "viewer": viewer, "later": later,
        "users": users, "projects": projects, **{f"u{i}": u for i, u in enumerate(users)},
        **{f"p{i}": p for i, p in enumerate(projects)},
    }
    for statement in changes:
        async with owner_engine.begin() as conn:
            await set_tenant(conn, tenant.id)
            await conn.execute(text(statement), {k: v for k, v in values.items() if f":{k}" in statement})
            assert await _all_equal_live(conn, tenant) == [], statement
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = await conn.execute(
            text("SELECT user_id, grants FROM gwm_principal.user_grant_sets WHERE tenant_id = :t"), {"t": tenant.id}
        )
        stored: dict[uuid.UUID, str] = {r.user_id: r.grants for r in rows}
    assert set(stored) == set(users[:3])  # the deleted user's row went with it
    assert projects[1] not in stored[users[0]] and projects[3] in stored[users[0]]
    assert projects[3] not in stored[users[1]] and '"contact:read"' in stored[users[2]]


async def test_concurrent_changes_for_one_user_both_end_up_stored(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    tenant = fresh_tenant
    first, second = await _projects(owner_engine, tenant, 2)
    manager = await _role_id(owner_engine, tenant, "Capture Manager")
    user = (await make_login_user(owner_engine, tenant, roles=[])).id
    holder = (await make_login_user(owner_engine, tenant, roles=[])).id

    async with owner_engine.connect() as one, owner_engine.connect() as two:
        for conn in (one, two):
            await conn.begin()
            await set_tenant(conn, tenant.id)
        await _grant(one, tenant, user, manager, first)  # computed and locked, not committed
        pid_two = await two.scalar(text("SELECT pg_backend_pid()"))
        waiting = asyncio.ensure_future(_grant(two, tenant, user, manager, second))
        await _wait_for_lock(owner_engine, pid_two)
        await one.commit()
        await waiting  # computed again after the first committed: it sees both
        await two.commit()
    row = await _sets(owner_engine, tenant, user)
    assert first in row.stored and second in row.stored and row.stored == row.live

    # A role's permissions changed while it is granted to someone new: the grant waits for the change (or the
    # change for the grant), and the new holder's text has the new permissions.
    async with owner_engine.connect() as one, owner_engine.connect() as two:
        for conn in (one, two):
            await conn.begin()
            await set_tenant(conn, tenant.id)
        await one.execute(text("UPDATE roles SET permissions = '[\"opportunity:read\"]'::jsonb WHERE id = :r"),
                          {"r": manager})
        pid_two = await two.scalar(text("SELECT pg_backend_pid()"))
        waiting = asyncio.ensure_future(_grant(two, tenant, holder, manager, first))
        await _wait_for_lock(owner_engine, pid_two)
        await one.commit()
        await waiting
        await two.commit()
    for who in (user, holder):
        row = await _sets(owner_engine, tenant, who)
        assert row.stored == row.live and row.stored.startswith('[[["opportunity:read"]'), row.stored


async def _wait_for_lock(owner_engine: AsyncEngine, pid: int) -> None:
    """Until backend `pid` waits for a lock (the second writer blocked by the first)."""
    for _ in range(200):
        async with owner_engine.connect() as conn:
            waiting = await conn.scalar(
                text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
            )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the second writer never waited for the first")


async def test_the_server_role_cannot_read_or_write_the_sets(app_conn: AsyncConnection) -> None:
    for statement in ("SELECT count(*) FROM gwm_principal.user_grant_sets",
                      "DELETE FROM gwm_principal.user_grant_sets",
                      "SELECT * FROM gwm_principal.user_grants(gen_random_uuid(), gen_random_uuid())"):
        with pytest.raises(DBAPIError, match="permission denied"):
            async with app_conn.begin_nested():
                await app_conn.execute(text(statement))
    # Trigger functions run only as triggers.
    with pytest.raises(DBAPIError, match="permission denied"):
        async with app_conn.begin_nested():
            await app_conn.execute(text("SELECT gwm_principal.user_roles_inserted()"))
