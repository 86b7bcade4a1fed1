"""TOTP MFA over HTTP against the real database: enrolment, verification, replay, recovery codes,
AC-7 lockout of the second factor, and FedRAMP tenants that cannot skip it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pyotp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from auth.exceptions import DecryptionError
from auth.mfa_service import totp_aad
from auth.tokens import new_api_key
from models.db import set_tenant
from tests.support.clock import FakeClock
from tests.support.db import TenantRef, create_tenant
from tests.support.http import LoginUser, make_login_user

# Paths outside MFA_PATHS: the middleware answers before routing, so they need not exist yet.
# Unknown paths answer 404 whoever asks (docs/api.md), so they are not part of the gate.
PROTECTED = [("GET", "/graphql"), ("POST", "/auth/password/change")]

Auth = dict[str, str]


@dataclass(frozen=True, slots=True)
class Enrolled:
    secret: str
    recovery_codes: list[str]


def _code(secret: str, clock: FakeClock, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(clock() + timedelta(seconds=30 * steps))


def _wrong_code(secret: str, clock: FakeClock) -> str:
    valid = {_code(secret, clock, s) for s in (-1, 0, 1)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in valid)


async def _login(client: httpx.AsyncClient, user: LoginUser) -> tuple[Auth, dict[str, object]]:
    response = await client.post("/auth/login", json=user.credentials())
    assert response.status_code == 200, response.text
    client.cookies.clear()  # each test session is named by its bearer token only
    body = response.json()
    return {"authorization": f"Bearer {body['token']}"}, body


async def _post(client: httpx.AsyncClient, path: str, auth: Auth, **body: str) -> httpx.Response:
    return await client.post(path, json=body, headers=auth)


async def _session(client: httpx.AsyncClient, auth: Auth) -> dict[str, object]:
    response = await client.get("/auth/session", headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def _assert_mfa_gate(client: httpx.AsyncClient, auth: Auth, *, closed: bool) -> None:
    for method, path in PROTECTED:
        if method == "POST":
            response = await client.post(path, json={}, headers=auth)
        else:
            response = await client.get(path, headers=auth)
        if closed:
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"]["code"] == "MFA_REQUIRED", path
        else:
            assert response.status_code != 401, (path, response.text)


async def _enroll(client: httpx.AsyncClient, user: LoginUser, clock: FakeClock) -> Enrolled:
    """Enrol and confirm through HTTP, then sign out; the clock moves past the confirmed step."""
    auth, _ = await _login(client, user)
    secret = (await _post(client, "/auth/mfa/enroll", auth)).json()["secret"]
    confirmed = await _post(client, "/auth/mfa/confirm", auth, code=_code(secret, clock))
    assert confirmed.status_code == 200, confirmed.text
    assert (await client.post("/auth/logout", headers=auth)).status_code == 204
    clock.advance(seconds=30)
    return Enrolled(secret=secret, recovery_codes=confirmed.json()["recoveryCodes"])


async def _rows(owner_engine: AsyncEngine, tenant: TenantRef, sql: str, **params: object) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = (await conn.execute(text(sql), params)).all()
        await conn.rollback()
    return list(rows)


async def _execute(owner_engine: AsyncEngine, tenant: TenantRef, sql: str, **params: object) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(text(sql), params)


async def _actions(owner_engine: AsyncEngine, user: LoginUser) -> list[str]:
    rows = await _rows(
        owner_engine, user.tenant, "SELECT action_type FROM audit_logs WHERE user_id = :u", u=user.id
    )
    return [r.action_type for r in rows]


@pytest.fixture
async def user(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> LoginUser:
    return await make_login_user(owner_engine, fresh_tenant, roles=["Capture Manager"])


# -- enrolment and sign-in -------------------------------------------------------------------


async def test_enrol_confirm_then_the_next_sign_in_needs_a_code(
    client: httpx.AsyncClient, user: LoginUser, clock: FakeClock, owner_engine: AsyncEngine
) -> None:
    auth, login = await _login(client, user)
    assert login["mfaRequired"] is False and login["mfaEnrollmentRequired"] is False

    enrolled = await _post(client, "/auth/mfa/enroll", auth)
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.headers["cache-control"] == "no-store"
    secret = enrolled.json()["secret"]
    uri = urlsplit(enrolled.json()["provisioningUri"])
    (tenant_name,) = await _rows(
        owner_engine, user.tenant, "SELECT name FROM tenants WHERE id = :t", t=user.tenant.id
    )
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    assert unquote(uri.path) == f"/GWM CRM ({tenant_name.name}):{user.email}"
    query = parse_qs(uri.query)
    assert query["secret"] == [secret] and query["issuer"] == [f"GWM CRM ({tenant_name.name})"]
    # Pending: MFA is not on until a code confirms it.
    (row,) = await _rows(owner_engine, user.tenant, "SELECT mfa_enabled FROM users WHERE id = :u", u=user.id)
    assert row.mfa_enabled is False

    confirmed = await _post(client, "/auth/mfa/confirm", auth, code=_code(secret, clock))
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.headers["cache-control"] == "no-store"
    codes = confirmed.json()["recoveryCodes"]
    assert len(codes) == len(set(codes)) == 10
    assert (await _session(client, auth))["mfaSatisfied"] is True  # the confirming session passed MFA
    await _assert_mfa_gate(client, auth, closed=False)
    assert (await client.post("/auth/logout", headers=auth)).status_code == 204

    auth, login = await _login(client, user)
    assert login["mfaRequired"] is True and login["mfaEnrollmentRequired"] is False
    state = await _session(client, auth)  # /auth/session stays reachable: it says what to do next
    assert state["mfaSatisfied"] is False and state["mfaEnrollmentRequired"] is False
    await _assert_mfa_gate(client, auth, closed=True)

    clock.advance(seconds=30)
    verified = await _post(client, "/auth/mfa/verify", auth, code=_code(secret, clock))
    assert verified.status_code == 204, verified.text
    assert (await _session(client, auth))["mfaSatisfied"] is True
    await _assert_mfa_gate(client, auth, closed=False)
    (row,) = await _rows(
        owner_engine,
        user.tenant,
        "SELECT mfa_verified FROM user_sessions WHERE id = :s",
        s=state["sessionId"],
    )
    assert row.mfa_verified is True


async def test_a_code_is_accepted_once_and_the_next_step_works(
    client: httpx.AsyncClient, user: LoginUser, clock: FakeClock
) -> None:
    auth, _ = await _login(client, user)
    secret = (await _post(client, "/auth/mfa/enroll", auth)).json()["secret"]
    confirm_code = _code(secret, clock)
    assert (await _post(client, "/auth/mfa/confirm", auth, code=confirm_code)).status_code == 200

    first, _ = await _login(client, user)
    replayed = await _post(
        client, "/auth/mfa/verify", first, code=confirm_code
    )  # the confirming step is spent
    assert replayed.status_code == 401 and replayed.json()["error"]["code"] == "MFA_CODE_INVALID"
    clock.advance(seconds=30)
    code = _code(secret, clock)
    assert (await _post(client, "/auth/mfa/verify", first, code=code)).status_code == 204

    second, _ = await _login(client, user)
    again = await _post(client, "/auth/mfa/verify", second, code=code)  # same step, another session
    assert again.status_code == 401 and again.json()["error"]["code"] == "MFA_CODE_INVALID"
    await _assert_mfa_gate(client, second, closed=True)
    earlier = await _post(
        client, "/auth/mfa/verify", second, code=_code(secret, clock, -1)
    )  # older, in window
    assert earlier.status_code == 401
    clock.advance(seconds=30)
    assert (await _post(client, "/auth/mfa/verify", second, code=_code(secret, clock))).status_code == 204
    await _assert_mfa_gate(client, second, closed=False)


async def test_wrong_and_malformed_codes_are_refused(
    client: httpx.AsyncClient, user: LoginUser, clock: FakeClock
) -> None:
    enrolled = await _enroll(client, user, clock)
    auth, _ = await _login(client, user)
    for bad in (_wrong_code(enrolled.secret, clock), "12345"):
        refused = await _post(client, "/auth/mfa/verify", auth, code=bad)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == {
            "code": "MFA_CODE_INVALID",
            "message": "The code is not valid.",
            "field": "code",
        }
        assert refused.headers["cache-control"] == "no-store"
    await _assert_mfa_gate(client, auth, closed=True)
    # Not codes at all: refused before any check, and not counted.
    missing = await _post(client, "/auth/mfa/verify", auth)
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "code"
    too_long = await _post(client, "/auth/mfa/verify", auth, code="1" * 65)
    assert too_long.status_code == 400
    form = await client.post("/auth/mfa/verify", data={"code": "123456"}, headers=auth)
    assert form.status_code == 415
    # Two failures so far; a right code resets the count, so two more do not lock.
    assert (
        await _post(client, "/auth/mfa/verify", auth, code=_code(enrolled.secret, clock))
    ).status_code == 204
    other, _ = await _login(client, user)
    for _ in range(2):
        assert (await _post(client, "/auth/mfa/verify", other, code="000000x")).status_code == 401
    clock.advance(seconds=30)
    assert (
        await _post(client, "/auth/mfa/verify", other, code=_code(enrolled.secret, clock))
    ).status_code == 204


async def test_one_code_raced_from_two_sessions_is_accepted_once(
    client: httpx.AsyncClient, user: LoginUser, clock: FakeClock, owner_engine: AsyncEngine
) -> None:
    enrolled = await _enroll(client, user, clock)
    first, _ = await _login(client, user)
    second, _ = await _login(client, user)
    code = _code(enrolled.secret, clock)
    # Hold the user's row so both requests check the code (and find it unused) before either can
    # write its step; released, the second UPDATE re-reads the row and must match nothing.
    async with owner_engine.connect() as conn:
        await set_tenant(conn, user.tenant.id)
        await conn.execute(text("SELECT 1 FROM users WHERE id = :u FOR UPDATE"), {"u": user.id})
        racing = asyncio.gather(
            _post(client, "/auth/mfa/verify", first, code=code),
            _post(client, "/auth/mfa/verify", second, code=code),
        )
        for _ in range(500):
            waiting = await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
            if waiting >= 2:
                break
            await asyncio.sleep(0.01)
        assert waiting >= 2, "both requests should be waiting on the user's row"
        await conn.commit()
        answers = await racing
    assert sorted(a.status_code for a in answers) == [204, 401]


# -- lockout (AC-7) ---------------------------------------------------------------------------


async def test_three_wrong_codes_lock_the_account_and_end_waiting_sessions(
    client: httpx.AsyncClient, user: LoginUser, clock: FakeClock, owner_engine: AsyncEngine
) -> None:
    enrolled = await _enroll(client, user, clock)
    verified, _ = await _login(client, user)
    assert (
        await _post(client, "/auth/mfa/verify", verified, code=_code(enrolled.secret, clock))
    ).status_code == 204
    wrong = _wrong_code(enrolled.secret, clock)

    # A right password between guesses does not reset the count: signing in again buys no guesses.
    pending = []
    for _ in range(3):
        auth, _ = await _login(client, user)
        refused = await _post(client, "/auth/mfa/verify", auth, code=wrong)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "MFA_CODE_INVALID"
        pending.append(auth)
    for auth in pending:
        ended = await client.get("/auth/session", headers=auth)
        assert ended.status_code == 401 and ended.json()["error"]["code"] == "INVALID_SESSION"
    # The session that passed MFA stays: the password alone cannot sign the real user out.
    assert (await _session(client, verified))["mfaSatisfied"] is True

    (row,) = await _rows(owner_engine, user.tenant, "SELECT locked_until FROM users WHERE id = :u", u=user.id)
    assert row.locked_until == clock() + timedelta(minutes=30)
    reasons = await _rows(
        owner_engine,
        user.tenant,
        "SELECT termination_reason FROM user_sessions WHERE user_id = :u AND terminated_at IS NOT NULL"
        " AND termination_reason <> 'logout'",
        u=user.id,
    )
    assert [r.termination_reason for r in reasons] == ["account_locked"] * 3
    locked = await client.post("/auth/login", json=user.credentials())
    assert locked.status_code == 401 and locked.json()["error"]["code"] == "INVALID_CREDENTIALS"

    clock.advance(minutes=31)
    auth, _ = await _login(client, user)
    assert (
        await _post(client, "/auth/mfa/verify", auth, code=_code(enrolled.secret, clock))
    ).status_code == 204

    actions = await _actions(owner_engine, user)
    assert actions.count("auth.mfa.failed") == 3
    assert actions.count("auth.account.locked") == 1
    (lock_row,) = await _rows(
        owner_engine,
        user.tenant,
        "SELECT risk_level, access_granted, after_values FROM audit_logs"
        " WHERE user_id = :u AND action_type = 'auth.account.locked'",
        u=user.id,
    )
    assert lock_row.risk_level == "high" and lock_row.access_granted is False
    assert lock_row.after_values["sessions_ended"] == 3


async def test_a_locked_account_refuses_even_the_right_code(
    client: httpx.AsyncClient, user: LoginUser, clock: FakeClock, owner_engine: AsyncEngine
) -> None:
    enrolled = await _enroll(client, user, clock)
    auth, _ = await _login(client, user)
    for _ in range(3):  # someone else locks the account with wrong passwords
        wrong = await client.post(
            "/auth/login", json={**user.credentials(), "password": "not it, not at all"}
        )
        assert wrong.status_code == 401
    right = await _post(client, "/auth/mfa/verify", auth, code=_code(enrolled.secret, clock))
    assert right.status_code == 401 and right.json()["error"]["code"] == "MFA_CODE_INVALID"
    assert (await client.get("/auth/session", headers=auth)).status_code == 401
    (row,) = await _rows(
        owner_engine,
        user.tenant,
        "SELECT termination_reason FROM user_sessions WHERE user_id = :u AND terminated_at IS NOT NULL"
        " AND termination_reason <> 'logout'",
        u=user.id,
    )
    assert row.termination_reason == "account_locked"


# -- recovery codes ---------------------------------------------------------------------------


async def test_recovery_codes_work_once_each(
    client: httpx.AsyncClient, user: LoginUser, clock: FakeClock, owner_engine: AsyncEngine
) -> None:
    enrolled = await _enroll(client, user, clock)
    first, second = enrolled.recovery_codes[:2]

    auth, _ = await _login(client, user)
    used = await _post(client, "/auth/mfa/recovery", auth, code=first)
    assert used.status_code == 200, used.text
    assert used.json() == {"remaining": 9}
    assert used.headers["cache-control"] == "no-store"
    await _assert_mfa_gate(client, auth, closed=False)

    auth, _ = await _login(client, user)
    again = await _post(client, "/auth/mfa/recovery", auth, code=first)
    assert again.status_code == 401 and again.json()["error"]["code"] == "MFA_CODE_INVALID"
    malformed = await _post(client, "/auth/mfa/recovery", auth, code="not-a-recovery-code")
    assert malformed.status_code == 401
    await _assert_mfa_gate(client, auth, closed=True)
    # Typed by hand from paper: case, spaces and dashes do not matter.
    typed = second.upper().replace("-", " ")
    assert (await _post(client, "/auth/mfa/recovery", auth, code=typed)).json() == {"remaining": 8}
    await _assert_mfa_gate(client, auth, closed=False)

    rows = await _rows(
        owner_engine, user.tenant, "SELECT used_at FROM mfa_recovery_codes WHERE user_id = :u", u=user.id
    )
    assert len(rows) == 10 and sum(r.used_at is not None for r in rows) == 2
    assert (await _actions(owner_engine, user)).count("auth.mfa.recovery_code_used") == 2


async def test_recovery_and_verify_need_mfa_to_be_on(client: httpx.AsyncClient, user: LoginUser) -> None:
    auth, _ = await _login(client, user)
    for path, code in (("/auth/mfa/verify", "123456"), ("/auth/mfa/recovery", "abcd-efgh-jkmn-pqrs")):
        refused = await _post(client, path, auth, code=code)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "MFA_NOT_ENABLED", path
    early = await _post(client, "/auth/mfa/confirm", auth, code="123456")
    assert early.status_code == 409 and early.json()["error"]["code"] == "MFA_ENROLLMENT_NOT_STARTED"


# -- FedRAMP tenants --------------------------------------------------------------------------


@pytest.fixture(params=["fedramp_compliant", "security.mfa_required"])
async def mfa_tenant(request: pytest.FixtureRequest, owner_engine: AsyncEngine) -> TenantRef:
    if request.param == "fedramp_compliant":
        return await create_tenant(owner_engine, fedramp_compliant=True)
    tenant = await create_tenant(owner_engine)
    await _execute(
        owner_engine,
        tenant,
        "INSERT INTO tenant_configurations (tenant_id, config_key, config_value, config_type)"
        " VALUES (:t, 'security.mfa_required', CAST('true' AS jsonb), 'boolean')",
        t=tenant.id,
    )
    return tenant


async def test_tenants_requiring_mfa_cannot_skip_it(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, mfa_tenant: TenantRef, clock: FakeClock
) -> None:
    user = await make_login_user(owner_engine, mfa_tenant, roles=["Tenant Admin"])
    auth, login = await _login(client, user)
    assert login["mfaEnrollmentRequired"] is True and login["mfaRequired"] is False
    state = await _session(client, auth)
    assert state["mfaSatisfied"] is False and state["mfaEnrollmentRequired"] is True
    await _assert_mfa_gate(client, auth, closed=True)
    for path in ("/auth/mfa/verify", "/auth/mfa/recovery"):  # nothing to verify with: enrol
        assert (await _post(client, path, auth, code="123456")).status_code == 409

    stale = (await _post(client, "/auth/mfa/enroll", auth)).json()["secret"]
    # A pending enrolment is not enough, not even after signing in again.
    assert (await client.post("/auth/logout", headers=auth)).status_code == 204
    auth, login = await _login(client, user)
    assert login["mfaEnrollmentRequired"] is True
    await _assert_mfa_gate(client, auth, closed=True)

    secret = (await _post(client, "/auth/mfa/enroll", auth)).json()["secret"]
    assert secret != stale
    for bad in (_code(stale, clock), _wrong_code(secret, clock)):  # the replaced secret no longer works
        refused = await _post(client, "/auth/mfa/confirm", auth, code=bad)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "MFA_CODE_INVALID"
    await _assert_mfa_gate(client, auth, closed=True)

    assert (await _post(client, "/auth/mfa/confirm", auth, code=_code(secret, clock))).status_code == 200
    state = await _session(client, auth)
    assert state["mfaSatisfied"] is True and state["mfaEnrollmentRequired"] is False
    await _assert_mfa_gate(client, auth, closed=False)

    assert (await client.post("/auth/logout", headers=auth)).status_code == 204
    auth, login = await _login(client, user)
    assert login["mfaRequired"] is True and login["mfaEnrollmentRequired"] is False
    await _assert_mfa_gate(client, auth, closed=True)
    clock.advance(seconds=30)
    assert (await _post(client, "/auth/mfa/verify", auth, code=_code(secret, clock))).status_code == 204
    await _assert_mfa_gate(client, auth, closed=False)


async def test_an_ordinary_tenant_does_not_force_enrolment(
    client: httpx.AsyncClient, user: LoginUser
) -> None:
    auth, login = await _login(client, user)
    assert login["mfaEnrollmentRequired"] is False
    await _assert_mfa_gate(client, auth, closed=False)


# -- re-enrolment, credentials that are not sessions, stored secrets --------------------------


async def test_re_enrolment_is_refused_once_mfa_is_on(
    client: httpx.AsyncClient, user: LoginUser, clock: FakeClock, owner_engine: AsyncEngine
) -> None:
    enrolled = await _enroll(client, user, clock)
    sql = "SELECT mfa_secret_encrypted FROM users WHERE id = :u"
    (before,) = await _rows(owner_engine, user.tenant, sql, u=user.id)

    pending, _ = await _login(client, user)  # password only: exactly what a thief might hold
    verified, _ = await _login(client, user)
    assert (
        await _post(client, "/auth/mfa/verify", verified, code=_code(enrolled.secret, clock))
    ).status_code == 204
    for auth in (pending, verified):
        refused = await _post(client, "/auth/mfa/enroll", auth)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "MFA_ALREADY_ENABLED"
        assert "secret" not in refused.text
        confirm = await _post(client, "/auth/mfa/confirm", auth, code=_code(enrolled.secret, clock, 1))
        assert confirm.status_code == 409 and confirm.json()["error"]["code"] == "MFA_ALREADY_ENABLED"
    (after,) = await _rows(owner_engine, user.tenant, sql, u=user.id)
    assert after.mfa_secret_encrypted == before.mfa_secret_encrypted
    await _assert_mfa_gate(client, pending, closed=True)


async def test_api_keys_cannot_use_the_mfa_endpoints(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, clock: FakeClock
) -> None:
    key, key_hash, prefix = new_api_key()
    await _execute(
        owner_engine,
        fresh_tenant,
        "INSERT INTO api_keys (tenant_id, name, key_prefix, key_hash, role_id, expires_at, created_by)"
        " SELECT :t, 'integration', :p, :h, id, :exp, :by FROM roles"
        " WHERE tenant_id = :t AND name = 'Viewer'",
        t=fresh_tenant.id,
        p=prefix,
        h=key_hash,
        exp=clock() + timedelta(days=1),
        by=fresh_tenant.system_user_id,
    )
    auth = {"authorization": f"Bearer {key}"}
    for path, body in (("/auth/mfa/enroll", {}), ("/auth/mfa/verify", {"code": "123456"})):
        refused = await client.post(path, json=body, headers=auth)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "NOT_A_SESSION", path
    rows = await _rows(
        owner_engine,
        fresh_tenant,
        "SELECT session_id FROM audit_logs WHERE action_type = 'auth.mfa.failed'",
    )
    assert len(rows) == 2 and all(r.session_id.startswith("api_key:") for r in rows)


async def test_a_sealed_secret_copied_to_another_user_does_not_open(
    app: Starlette,
    client: httpx.AsyncClient,
    user: LoginUser,
    clock: FakeClock,
    owner_engine: AsyncEngine,
) -> None:
    enrolled = await _enroll(client, user, clock)
    other = await make_login_user(owner_engine, user.tenant)
    await _execute(
        owner_engine,
        user.tenant,
        "UPDATE users SET mfa_enabled = true,"
        " mfa_secret_encrypted = (SELECT mfa_secret_encrypted FROM users WHERE id = :from) WHERE id = :to",
        **{"from": user.id, "to": other.id},
    )
    auth, _ = await _login(client, other)
    refused = await _post(client, "/auth/mfa/verify", auth, code=_code(enrolled.secret, clock))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "MFA_UNAVAILABLE"
    await _assert_mfa_gate(client, auth, closed=True)
    (row,) = await _rows(
        owner_engine,
        user.tenant,
        "SELECT risk_level FROM audit_logs WHERE user_id = :u AND action_type = 'auth.mfa.failed'",
        u=other.id,
    )
    assert row.risk_level == "high"
    (sealed,) = await _rows(
        owner_engine, user.tenant, "SELECT mfa_secret_encrypted FROM users WHERE id = :u", u=user.id
    )
    with pytest.raises(DecryptionError):
        app.state.auth.secret_box.decrypt(sealed.mfa_secret_encrypted, totp_aad(other.id))


# -- what the database and the audit trail hold -----------------------------------------------


def _normalized(code: str) -> str:
    return code.replace("-", "").lower()


async def test_no_plaintext_secret_or_code_is_stored_and_every_outcome_is_audited(
    app: Starlette, client: httpx.AsyncClient, user: LoginUser, clock: FakeClock, owner_engine: AsyncEngine
) -> None:
    auth, _ = await _login(client, user)
    enrolled_body = (await _post(client, "/auth/mfa/enroll", auth)).json()
    secret, uri = enrolled_body["secret"], enrolled_body["provisioningUri"]
    assert (
        await _post(client, "/auth/mfa/confirm", auth, code=_wrong_code(secret, clock))
    ).status_code == 400
    codes = (await _post(client, "/auth/mfa/confirm", auth, code=_code(secret, clock))).json()[
        "recoveryCodes"
    ]
    assert (await _post(client, "/auth/mfa/enroll", auth)).status_code == 409
    assert (await client.post("/auth/logout", headers=auth)).status_code == 204
    clock.advance(seconds=30)
    auth, _ = await _login(client, user)
    assert (await _post(client, "/auth/mfa/verify", auth, code=_wrong_code(secret, clock))).status_code == 401
    assert (await _post(client, "/auth/mfa/verify", auth, code=_code(secret, clock))).status_code == 204
    auth, _ = await _login(client, user)
    assert (await _post(client, "/auth/mfa/recovery", auth, code=codes[0])).status_code == 200

    (row,) = await _rows(owner_engine, user.tenant, "SELECT * FROM users WHERE id = :u", u=user.id)
    assert row.mfa_enabled is True and row.totp_last_step is not None
    assert row.mfa_secret_encrypted.startswith("v1.")
    everything = json.dumps([str(v) for v in row]).lower()
    assert secret.lower() not in everything
    assert app.state.auth.secret_box.decrypt(row.mfa_secret_encrypted, totp_aad(user.id)) == secret.encode()

    stored = await _rows(
        owner_engine, user.tenant, "SELECT * FROM mfa_recovery_codes WHERE user_id = :u", u=user.id
    )
    assert {r.code_hash for r in stored} == {
        hashlib.sha256(_normalized(c).encode()).hexdigest() for c in codes
    }
    dumped = json.dumps([[str(v) for v in r] for r in stored]).lower()
    assert not any(c in dumped or _normalized(c) in dumped for c in codes)

    audit = await _rows(owner_engine, user.tenant, "SELECT * FROM audit_logs WHERE user_id = :u", u=user.id)
    actions = [r.action_type for r in audit]
    for event in (
        "auth.mfa.enrollment_started",
        "auth.mfa.enabled",
        "auth.mfa.verified",
        "auth.mfa.recovery_code_used",
    ):
        assert actions.count(event) == 1, (event, actions)
    failed = [r for r in audit if r.action_type == "auth.mfa.failed"]
    assert len(failed) == 3  # wrong confirmation code, re-enrolment, wrong verification code
    assert all(r.risk_level == "medium" and r.access_granted is False for r in failed)
    assert all(r.session_id is not None and r.request_id is not None for r in audit)
    # Each row names the route it came through; the enrolment's changes of the user row have history.
    via = {r.action_type: r.operation_description.split(":")[0] for r in audit
           if r.access_granted and r.action_type.startswith("auth.mfa.")}
    assert via["auth.mfa.enrollment_started"] == "/auth/mfa/enroll" and via["auth.mfa.enabled"] == "/auth/mfa/confirm"
    assert via["auth.mfa.verified"] == "/auth/mfa/verify" and via["auth.mfa.recovery_code_used"] == "/auth/mfa/recovery"
    history = await _rows(owner_engine, user.tenant, "SELECT * FROM change_history WHERE entity_id = :u", u=user.id)
    assert {(h.field_name, str(h.new_value)) for h in history} == {
        ("mfa_secret_encrypted", "[redacted]"), ("mfa_enabled", "True")
    }
    trail = json.dumps([[str(v) for v in r] for r in audit]).lower()
    for value in (secret, uri, *codes, *(_normalized(c) for c in codes)):
        assert value.lower() not in trail, value


async def test_enrolment_is_scoped_to_the_callers_tenant(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    tenant_a: TenantRef,
    tenant_b: TenantRef,
    clock: FakeClock,
) -> None:
    user_a = await make_login_user(owner_engine, tenant_a)
    user_b = await make_login_user(owner_engine, tenant_b, email=user_a.email)
    await _enroll(client, user_a, clock)
    (row_b,) = await _rows(
        owner_engine,
        tenant_b,
        "SELECT mfa_enabled, mfa_secret_encrypted FROM users WHERE id = :u",
        u=user_b.id,
    )
    assert row_b.mfa_enabled is False and row_b.mfa_secret_encrypted is None
    auth, login = await _login(client, user_b)
    assert login["mfaRequired"] is False
    await _assert_mfa_gate(client, auth, closed=False)
    assert uuid.UUID(str((await _session(client, auth))["tenantId"])) == tenant_b.id


async def test_wrong_codes_outside_the_window_do_not_add_up(
    client: httpx.AsyncClient, user: LoginUser, clock: FakeClock
) -> None:
    enrolled = await _enroll(client, user, clock)
    auth, _ = await _login(client, user)
    for _ in range(2):
        assert (await _post(client, "/auth/mfa/verify", auth, code="000000x")).status_code == 401
    clock.advance(minutes=16)
    auth, _ = await _login(client, user)
    assert (await _post(client, "/auth/mfa/verify", auth, code="000000x")).status_code == 401  # a new window
    assert (
        await _post(client, "/auth/mfa/verify", auth, code=_code(enrolled.secret, clock))
    ).status_code == 204
