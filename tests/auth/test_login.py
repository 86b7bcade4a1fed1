"""Password sign-in, lockout, sessions and their timeouts, over HTTP against the real database."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from auth.passwords import PasswordHasher
from models.db import set_tenant
from tests.support.clock import FakeClock
from tests.support.db import TenantRef
from tests.support.http import LoginUser, make_login_user


async def _login(client: httpx.AsyncClient, **body: str) -> httpx.Response:
    return await client.post("/auth/login", json=body)


async def _rows(owner_engine: AsyncEngine, tenant: TenantRef, sql: str, **params: object) -> Sequence[Row[Any]]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = (await conn.execute(text(sql), params)).all()
        await conn.rollback()
    return rows


@pytest.fixture
async def user(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> LoginUser:
    return await make_login_user(owner_engine, fresh_tenant, roles=["Capture Manager"])


async def test_login_returns_a_token_that_works_as_bearer_and_as_cookie(
    client: httpx.AsyncClient, user: LoginUser
) -> None:
    response = await _login(client, **user.credentials())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mfaRequired"] is False and body["passwordChangeRequired"] is False
    assert response.headers["cache-control"] == "no-store"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=lax" in cookie

    by_bearer = await client.get("/auth/session", headers={"authorization": f"Bearer {body['token']}"})
    assert by_bearer.status_code == 200
    assert by_bearer.json()["userId"] == str(user.id)
    assert "opportunity:write" in by_bearer.json()["permissions"]
    by_cookie = await client.get("/auth/session")  # the client keeps the cookie it was given
    assert by_cookie.status_code == 200 and by_cookie.json()["sessionId"] == body["sessionId"]


async def test_tenant_can_come_from_the_host_subdomain(client: httpx.AsyncClient, user: LoginUser) -> None:
    response = await client.post(
        "/auth/login",
        json={"email": user.email.upper(), "password": user.password},
        headers={"host": f"{user.tenant.subdomain}.gwm.example"},
    )
    assert response.status_code == 200, response.text


async def test_the_database_holds_only_the_token_hash(
    client: httpx.AsyncClient, user: LoginUser, owner_engine: AsyncEngine
) -> None:
    token = (await _login(client, **user.credentials())).json()["token"]
    assert len(token) >= 43  # 256 bits, base64url
    rows = await _rows(owner_engine, user.tenant, "SELECT * FROM user_sessions WHERE user_id = :u", u=user.id)
    assert len(rows) == 1
    assert rows[0].session_token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(value) for value in rows[0])


async def test_refusals_are_indistinguishable(
    app: Starlette, client: httpx.AsyncClient, user: LoginUser, owner_engine: AsyncEngine
) -> None:
    hasher: PasswordHasher = app.state.auth.hasher
    answers = []
    cases = [
        {**user.credentials(), "password": "not the right password at all"},
        {**user.credentials(), "email": "nobody@example.test"},
        {**user.credentials(), "tenant": "no-such-tenant"},
    ]
    for case in cases:
        before = hasher.kdf_calls
        response = await _login(client, **case)
        assert hasher.kdf_calls == before + 1, case  # the KDF ran exactly once, whatever the cause
        answers.append((response.status_code, response.json()))
    # Lock the account, then try the right password.
    await _login(client, **{**user.credentials(), "password": "wrong again, second"})
    await _login(client, **{**user.credentials(), "password": "wrong again, third"})
    locked = await _login(client, **user.credentials())
    answers.append((locked.status_code, locked.json()))
    assert len({(status, str(body)) for status, body in answers}) == 1, answers
    assert answers[0][0] == 401 and answers[0][1]["error"]["code"] == "INVALID_CREDENTIALS"


async def test_third_failure_locks_for_thirty_minutes_then_the_lock_expires(
    client: httpx.AsyncClient, user: LoginUser, clock: FakeClock, owner_engine: AsyncEngine
) -> None:
    wrong = {**user.credentials(), "password": "definitely the wrong password"}
    for _ in range(2):
        assert (await _login(client, **wrong)).status_code == 401
    assert (await _login(client, **user.credentials())).status_code == 200  # 2 failures: not locked
    for _ in range(3):
        assert (await _login(client, **wrong)).status_code == 401
    (row,) = await _rows(owner_engine, user.tenant, "SELECT locked_until FROM users WHERE id = :u", u=user.id)
    assert row.locked_until is not None
    assert abs((row.locked_until - clock()).total_seconds() - 30 * 60) < 1

    clock.advance(minutes=29)
    assert (await _login(client, **user.credentials())).status_code == 401  # still locked: right password fails
    clock.advance(minutes=2)
    assert (await _login(client, **user.credentials())).status_code == 200

    actions = [
        r.action_type
        for r in await _rows(
            owner_engine, user.tenant,
            "SELECT action_type FROM audit_logs WHERE user_id = :u ORDER BY timestamp_utc, action_type", u=user.id,
        )
    ]
    assert actions.count("auth.account.locked") == 1
    assert actions.count("auth.login.failed") == 6
    assert actions.count("auth.login.succeeded") == 2


async def test_failures_outside_the_window_do_not_add_up(
    client: httpx.AsyncClient, user: LoginUser, clock: FakeClock
) -> None:
    wrong = {**user.credentials(), "password": "definitely the wrong password"}
    for _ in range(2):
        await _login(client, **wrong)
    clock.advance(minutes=16)
    await _login(client, **wrong)  # a new window: 1 failure
    assert (await _login(client, **user.credentials())).status_code == 200


async def test_login_rehashes_a_hash_with_fewer_iterations(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    old_hash = await PasswordHasher(500).hash("an old but fine passphrase")
    user = await make_login_user(owner_engine, fresh_tenant, password="an old but fine passphrase")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await conn.execute(text("UPDATE users SET password_hash = :h WHERE id = :u"), {"h": old_hash, "u": user.id})
    assert (await _login(client, **user.credentials())).status_code == 200
    (row,) = await _rows(owner_engine, fresh_tenant, "SELECT password_hash FROM users WHERE id = :u", u=user.id)
    assert row.password_hash.startswith("pbkdf2_sha256$1000$")
    assert (await _login(client, **user.credentials())).status_code == 200


async def test_system_and_inactive_users_cannot_sign_in(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    inactive = await make_login_user(owner_engine, fresh_tenant, is_active=False)
    assert (await _login(client, **inactive.credentials())).status_code == 401
    system = await make_login_user(owner_engine, fresh_tenant, is_system=True)
    assert (await _login(client, **system.credentials())).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"), [({"password": "x" * 20}, "email"), ({"email": "a@b.test"}, "password")]
)
async def test_missing_fields_are_named(client: httpx.AsyncClient, body: dict[str, str], field: str) -> None:
    response = await client.post("/auth/login", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


async def test_non_json_posts_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/login", data={"email": "a@b.test", "password": "x"})
    assert response.status_code == 415
    garbage = await client.post("/auth/login", content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 400


async def test_protected_routes_need_a_credential(client: httpx.AsyncClient) -> None:
    missing = await client.get("/auth/session")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "UNAUTHENTICATED"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    bogus = await client.get("/auth/session", headers={"authorization": "Bearer not-a-real-token"})
    assert bogus.status_code == 401 and bogus.json()["error"]["code"] == "INVALID_SESSION"
    assert uuid.UUID(bogus.headers["x-request-id"])


class TestSessionLifetime:
    async def _session(self, client: httpx.AsyncClient, user: LoginUser) -> dict[str, str]:
        token = (await _login(client, **user.credentials())).json()["token"]
        client.cookies.clear()
        return {"authorization": f"Bearer {token}"}

    async def test_idle_timeout_is_fifteen_minutes(
        self, client: httpx.AsyncClient, user: LoginUser, clock: FakeClock, owner_engine: AsyncEngine
    ) -> None:
        auth = await self._session(client, user)
        clock.advance(minutes=14)
        assert (await client.get("/auth/session", headers=auth)).status_code == 200  # activity resets idle time
        clock.advance(minutes=14)
        assert (await client.get("/auth/session", headers=auth)).status_code == 200
        clock.advance(minutes=15, seconds=1)
        expired = await client.get("/auth/session", headers=auth)
        assert expired.status_code == 401 and expired.json()["error"]["code"] == "SESSION_EXPIRED"
        (row,) = await _rows(
            owner_engine, user.tenant, "SELECT termination_reason, is_active FROM user_sessions WHERE user_id = :u",
            u=user.id,
        )
        assert (row.termination_reason, row.is_active) == ("idle_timeout", False)
        again = await client.get("/auth/session", headers=auth)
        assert again.status_code == 401 and again.json()["error"]["code"] == "INVALID_SESSION"

    async def test_tenant_admins_idle_out_after_ten_minutes(
        self, client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, clock: FakeClock
    ) -> None:
        admin = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])
        viewer = await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"])
        admin_auth = await self._session(client, admin)
        viewer_auth = await self._session(client, viewer)
        clock.advance(minutes=10, seconds=1)
        assert (await client.get("/auth/session", headers=admin_auth)).status_code == 401
        assert (await client.get("/auth/session", headers=viewer_auth)).status_code == 200

    async def test_absolute_timeout_is_twelve_hours(
        self, client: httpx.AsyncClient, user: LoginUser, clock: FakeClock
    ) -> None:
        auth = await self._session(client, user)
        for _ in range(12 * 6 - 1):
            clock.advance(minutes=10)
            assert (await client.get("/auth/session", headers=auth)).status_code == 200
        clock.advance(minutes=10)
        expired = await client.get("/auth/session", headers=auth)
        assert expired.status_code == 401 and expired.json()["error"]["code"] == "SESSION_EXPIRED"

    async def test_last_activity_is_written_at_most_once_a_minute(
        self, client: httpx.AsyncClient, user: LoginUser, clock: FakeClock, owner_engine: AsyncEngine
    ) -> None:
        auth = await self._session(client, user)
        sql = "SELECT last_activity_at FROM user_sessions WHERE user_id = :u"
        (before,) = await _rows(owner_engine, user.tenant, sql, u=user.id)
        clock.advance(seconds=30)
        await client.get("/auth/session", headers=auth)
        (same,) = await _rows(owner_engine, user.tenant, sql, u=user.id)
        assert same.last_activity_at == before.last_activity_at
        clock.advance(seconds=31)
        await client.get("/auth/session", headers=auth)
        (moved,) = await _rows(owner_engine, user.tenant, sql, u=user.id)
        assert moved.last_activity_at == clock()

    async def test_logout_ends_the_session(
        self, client: httpx.AsyncClient, user: LoginUser, owner_engine: AsyncEngine
    ) -> None:
        auth = await self._session(client, user)
        assert (await client.post("/auth/logout", headers=auth)).status_code == 204
        assert (await client.get("/auth/session", headers=auth)).status_code == 401
        (row,) = await _rows(
            owner_engine, user.tenant, "SELECT termination_reason, terminated_at FROM user_sessions WHERE user_id = :u",
            u=user.id,
        )
        assert row.termination_reason == "logout" and row.terminated_at is not None

    async def test_deactivating_the_user_ends_the_session(
        self, client: httpx.AsyncClient, user: LoginUser, owner_engine: AsyncEngine
    ) -> None:
        auth = await self._session(client, user)
        async with owner_engine.begin() as conn:
            await set_tenant(conn, user.tenant.id)
            await conn.execute(text("UPDATE users SET is_active = false WHERE id = :u"), {"u": user.id})
        assert (await client.get("/auth/session", headers=auth)).status_code == 401

    async def test_role_change_applies_at_once(
        self, client: httpx.AsyncClient, user: LoginUser, owner_engine: AsyncEngine
    ) -> None:
        auth = await self._session(client, user)
        assert "opportunity:write" in (await client.get("/auth/session", headers=auth)).json()["permissions"]
        async with owner_engine.begin() as conn:
            await set_tenant(conn, user.tenant.id)
            await conn.execute(text("DELETE FROM user_roles WHERE user_id = :u"), {"u": user.id})
        assert (await client.get("/auth/session", headers=auth)).json()["permissions"] == []


async def test_deactivating_the_tenant_ends_its_sessions_and_stops_sign_in(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant)
    token = (await _login(client, **user.credentials())).json()["token"]
    client.cookies.clear()
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await conn.execute(text("UPDATE tenants SET is_active = false WHERE id = :t"), {"t": fresh_tenant.id})
    refused = await client.get("/auth/session", headers={"authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    (row,) = await _rows(
        owner_engine, fresh_tenant, "SELECT termination_reason FROM user_sessions WHERE user_id = :u", u=user.id
    )
    assert row.termination_reason == "tenant_deactivated"
    again = await _login(client, **user.credentials())
    assert again.status_code == 401 and again.json()["error"]["code"] == "INVALID_CREDENTIALS"


async def test_oversized_bodies_are_refused(client: httpx.AsyncClient, user: LoginUser) -> None:
    from server.middleware import MAX_BODY_BYTES

    big = b'{"email": "' + b"a" * MAX_BODY_BYTES + b'"}'
    declared = await client.post("/auth/login", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "TOO_LARGE"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while the body is read
        for _ in range(3):
            yield b" " * (MAX_BODY_BYTES // 2)
        yield b"{}"

    streamed = await client.post("/auth/login", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "TOO_LARGE"
    assert (await _login(client, **user.credentials())).status_code == 200  # the next request is fine
