"""GraphQL identity over HTTP: viewer, declared permissions (refused, audited), admin mutations,
session revocation (own or admin), MFA enrolment, tenant isolation, masked errors."""

from __future__ import annotations

import logging
import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyotp
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.types import Message
from strawberry.relay import to_base64

from auth.permissions import SYSTEM_ROLES, SystemRole
from models.db import set_tenant
from server.app import create_app
from tests.conftest import Database
from tests.support.clock import FakeClock
from tests.support.db import TenantRef, create_tenant
from tests.support.graphql import audit_rows, gql, gql_response, sign_in
from tests.support.http import LoginUser, app_client, make_login_user
from tests.support.http import test_settings as settings_for

UTC_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
VIEWER = """
{ viewer {
    credential permissions
    user { rowId email firstName isSystem mfaEnabled createdAt lastLoginAt }
    tenant { rowId subdomain }
    roles { role { name permissions isSystemRole } opportunityProjectId expiresAt }
    sessions { rowId current createdAt lastActivityAt expiresAt mfaVerified ipAddress }
    apiKey { id }
} }"""
CREATE_KEY = (
    'mutation ($name: String!) { apiKeyCreate(input: {name: $name, roleName: "Viewer", expiresInDays: 5})'
    " { key apiKey { id } } }"
)
USER_FIELDS = "user { rowId isActive mustChangePassword lockedUntil email } errors { field code message }"


@dataclass
class Mailbox:
    port: int
    messages: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """An SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox(port)
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def app(database: Database, clock: FakeClock, mailbox: Mailbox) -> Starlette:
    application = create_app(settings_for(database.app_url, smtp_host="127.0.0.1", smtp_port=mailbox.port))
    application.state.auth.clock = clock
    return application


@pytest.fixture
async def admin(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> LoginUser:
    return await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"], first_name="Ada")


@pytest.fixture
async def member(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> LoginUser:
    return await make_login_user(owner_engine, fresh_tenant, roles=["Capture Manager"])


@pytest.fixture
async def victim(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> LoginUser:
    return await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"])


async def _one(owner_engine: AsyncEngine, tenant_id: uuid.UUID, sql: str, **params: Any) -> Any:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        row = (await conn.execute(text(sql), params)).first()
        await conn.rollback()
    return row


async def _session_id(client: httpx.AsyncClient, token: str) -> str:
    response = await client.get("/auth/session", headers={"authorization": f"Bearer {token}"})
    session_id: str = response.json()["sessionId"]
    return session_id


# -- viewer and the endpoint --------------------------------------------------------------------


async def test_viewer_is_the_caller(client: httpx.AsyncClient, admin: LoginUser, clock: FakeClock) -> None:
    token = await sign_in(client, admin)
    response = await gql_response(client, VIEWER, token=token)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    viewer = response.json()["data"]["viewer"]
    assert viewer["credential"] == "SESSION"
    assert viewer["user"]["rowId"] == str(admin.id) and viewer["user"]["email"] == admin.email
    assert viewer["user"]["firstName"] == "Ada" and viewer["user"]["isSystem"] is False
    assert UTC_FORMAT.match(viewer["user"]["createdAt"]) and UTC_FORMAT.match(viewer["user"]["lastLoginAt"])
    assert viewer["tenant"] == {"rowId": str(admin.tenant.id), "subdomain": admin.tenant.subdomain}
    everything = sorted(p.value for p in SYSTEM_ROLES[SystemRole.TENANT_ADMIN])
    assert viewer["permissions"] == everything
    assert viewer["roles"] == [
        {
            "role": {"name": "Tenant Admin", "permissions": everything, "isSystemRole": True},
            "opportunityProjectId": None,
            "expiresAt": None,
        }
    ]
    (session,) = viewer["sessions"]
    assert session["current"] is True and session["rowId"] == await _session_id(client, token)
    assert session["createdAt"] == clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert session["ipAddress"] == "127.0.0.1"
    assert viewer["apiKey"] is None


async def test_viewer_lists_only_the_callers_usable_sessions(
    client: httpx.AsyncClient, member: LoginUser, victim: LoginUser, clock: FakeClock
) -> None:
    first = await sign_in(client, member)
    second = await sign_in(client, member)
    await sign_in(client, victim)
    body = await gql(client, "{ viewer { sessions { rowId current } } }", token=second)
    sessions = body["data"]["viewer"]
    assert sorted(s["rowId"] for s in sessions["sessions"]) == sorted(
        [await _session_id(client, first), await _session_id(client, second)]
    )
    second_id = await _session_id(client, second)
    assert [s["current"] for s in sessions["sessions"] if s["rowId"] == second_id] == [True]
    # The first session idles past the 15-minute timeout while the second stays in use.
    for _ in range(4):
        clock.advance(minutes=4)
        await gql(client, "{ viewer { credential } }", token=second)
    body = await gql(client, "{ viewer { sessions { rowId } } }", token=second)
    listed = body["data"]["viewer"]["sessions"]
    assert [s["rowId"] for s in listed] == [await _session_id(client, second)]


async def test_graphql_needs_a_principal_and_takes_queries_by_get_only(
    client: httpx.AsyncClient, member: LoginUser
) -> None:
    anonymous = await client.post("/graphql", json={"query": "{ viewer { credential } }"})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "UNAUTHENTICATED"
    token = await sign_in(client, member)
    auth = {"authorization": f"Bearer {token}"}
    by_get = await client.get("/graphql", params={"query": "{ viewer { user { rowId } } }"}, headers=auth)
    assert by_get.status_code == 200 and by_get.json()["data"]["viewer"]["user"]["rowId"] == str(member.id)
    mutation = "mutation { mfaEnrollmentStart { errors { code } } }"
    by_get_mutation = await client.get("/graphql", params={"query": mutation}, headers=auth)
    assert by_get_mutation.status_code in {400, 405} and "data" not in by_get_mutation.text
    form = await client.post("/graphql", content=b"query={viewer{credential}}", headers={
        **auth, "content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    ide = await client.get("/graphql", headers={**auth, "accept": "text/html"})
    assert ide.status_code == 307 and ide.headers["location"] == "/graphiql"  # a browser gets GraphiQL
    other_method = await client.put("/graphql", json={}, headers=auth)
    assert other_method.status_code == 405


async def test_graphql_refuses_the_legacy_websocket_subprotocol(app: Starlette) -> None:
    # Subscriptions speak graphql-transport-ws only: the legacy graphql-ws is refused at the handshake
    # (tests/live/test_ws_protocol.py drives the whole protocol over a real connection).
    messages: list[Message] = []
    received = iter([{"type": "websocket.connect"}])

    async def receive() -> Message:
        return next(received, {"type": "websocket.disconnect", "code": 1000})

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {
        "type": "websocket",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"sec-websocket-protocol", b"graphql-ws")],
        "subprotocols": ["graphql-ws"],
        "scheme": "wss",
        "server": ("testserver", 443),
        "client": ("127.0.0.1", 50000),
        "app": app,
    }
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
    assert messages and messages[0]["type"] == "websocket.close"
    assert not any(m["type"] == "websocket.accept" for m in messages)


# -- declared permissions: refused for a non-admin, audited; nothing changes ---------------------


DENIED_CASES = {
    "apiKeyCreate": (
        'mutation { apiKeyCreate(input: {name: "n", roleName: "Viewer", expiresInDays: 5}) { key } }',
        "api_key:admin",
    ),
    "apiKeyRevoke": ("mutation ($key: UUID!) { apiKeyRevoke(input: {id: $key}) { apiKey { id } } }", "api_key:admin"),
    "userInvite": (
        'mutation { userInvite(input: {email: "new@example.test", firstName: "N", lastName: "U",'
        ' roles: ["Viewer"]}) { user { rowId } } }',
        "user:admin",
    ),
    "userUnlock": ("mutation ($u: UUID!) { userUnlock(input: {rowId: $u}) { user { rowId } } }", "user:admin"),
    "userDeactivate": (
        "mutation ($u: UUID!) { userDeactivate(input: {rowId: $u}) { user { rowId } } }", "user:admin"
    ),
    "userSetTemporaryPassword": (
        "mutation ($u: UUID!) {"
        ' userSetTemporaryPassword(input: {rowId: $u, password: "a brand new temporary pass"}) { user { rowId } } }',
        "user:admin",
    ),
}

_STATE = """
SELECT u.is_active, u.locked_until, u.password_hash, u.must_change_password,
       (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM api_keys) AS keys,
       (SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL) AS revoked,
       (SELECT count(*) FROM user_sessions WHERE terminated_at IS NOT NULL) AS ended
FROM users u WHERE u.id = :u
"""


@pytest.mark.parametrize("mutation", sorted(DENIED_CASES))
async def test_admin_mutations_are_refused_for_a_non_admin_and_audited(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    admin: LoginUser,
    member: LoginUser,
    victim: LoginUser,
    clock: FakeClock,
    mutation: str,
) -> None:
    tenant = admin.tenant
    admin_token = await sign_in(client, admin)
    key = await gql(client, CREATE_KEY, {"name": "k"}, token=admin_token)
    victim_token = await sign_in(client, victim)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(text("UPDATE users SET locked_until = :t WHERE id = :u"),
                           {"t": clock().replace(year=clock().year + 1), "u": victim.id})
    before = await _one(owner_engine, tenant.id, _STATE, u=victim.id)

    token = await sign_in(client, member)
    query, permission = DENIED_CASES[mutation]
    variables = {"key": key["data"]["apiKeyCreate"]["apiKey"]["id"], "u": str(victim.id),
                 "s": await _session_id(client, victim_token)}
    used = {k: v for k, v in variables.items() if f"${k}" in query}
    response = await gql_response(client, query, used, token=token)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {mutation: None}  # the guarded field is nullable: null, and the error says why
    (error,) = body["errors"]
    assert error["path"] == [mutation]
    assert error["extensions"] == {"code": "FORBIDDEN", "permission": permission}
    assert permission in error["message"]

    after = await _one(owner_engine, tenant.id, _STATE, u=victim.id)
    assert tuple(after) == tuple(before)
    (denied,) = await audit_rows(owner_engine, tenant.id, "auth.access.denied")
    assert denied.user_id == member.id and denied.permission_used == permission
    assert denied.access_granted is False and denied.risk_level == "medium"
    assert denied.request_id == response.headers["x-request-id"]
    assert denied.session_id == await _session_id(client, token)
    assert mutation in denied.operation_description
    # The victim's own session still works (sessionRevoke refused).
    still = await gql(client, "{ viewer { user { rowId } } }", token=victim_token)
    assert still["data"]["viewer"]["user"]["rowId"] == str(victim.id)


async def test_a_refused_query_field_is_forbidden_without_a_mutation_audit_row(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, member: LoginUser
) -> None:
    token = await sign_in(client, member)
    body = await gql(client, "{ viewer { credential } apiKeys { id } }", token=token, errors=True)
    assert body["data"] == {"viewer": {"credential": "SESSION"}, "apiKeys": None}  # field denial, the rest served
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN", "permission": "api_key:admin"}
    assert await audit_rows(owner_engine, member.tenant.id, "auth.access.denied") == []


# -- admin mutations: allowed, audited by the account service ------------------------------------


async def test_admin_can_unlock_deactivate_and_set_a_temporary_password(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    admin: LoginUser,
    victim: LoginUser,
    clock: FakeClock,
) -> None:
    tenant = admin.tenant
    victim_token = await sign_in(client, victim)
    token = await sign_in(client, admin)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(text("UPDATE users SET locked_until = :t WHERE id = :u"),
                           {"t": clock().replace(year=clock().year + 1), "u": victim.id})

    unlock = f"mutation ($u: UUID!) {{ userUnlock(input: {{rowId: $u}}) {{ {USER_FIELDS} }} }}"
    unlocked = (await gql(client, unlock, {"u": str(victim.id)}, token=token))["data"]["userUnlock"]
    assert unlocked["errors"] == [] and unlocked["user"]["lockedUntil"] is None
    (audit,) = await audit_rows(owner_engine, tenant.id, "auth.account.unlocked")
    assert audit.user_id == admin.id and audit.entity_id == victim.id

    temporary = (
        "mutation ($u: UUID!, $p: String!) {"
        f" userSetTemporaryPassword(input: {{rowId: $u, password: $p}}) {{ {USER_FIELDS} }} }}"
    )
    too_short = await gql(client, temporary, {"u": str(victim.id), "p": "short"}, token=token)
    (error,) = too_short["data"]["userSetTemporaryPassword"]["errors"]
    assert error["field"] == ["input", "password"] and error["code"]
    done = await gql(client, temporary, {"u": str(victim.id), "p": "a long enough temporary passphrase 7"},
                     token=token)
    payload = done["data"]["userSetTemporaryPassword"]
    assert payload["errors"] == [] and payload["user"]["mustChangePassword"] is True
    assert len(await audit_rows(owner_engine, tenant.id, "auth.password.temporary_set")) == 1
    assert (await gql_response(client, "{ viewer { credential } }", token=victim_token)).status_code == 401

    deactivate = f"mutation ($u: UUID!) {{ userDeactivate(input: {{rowId: $u}}) {{ {USER_FIELDS} }} }}"
    body = await gql(client, deactivate, {"u": str(victim.id)}, token=token)
    deactivated = body["data"]["userDeactivate"]
    assert deactivated["errors"] == [] and deactivated["user"]["isActive"] is False
    assert len(await audit_rows(owner_engine, tenant.id, "auth.user.deactivated")) == 1

    self_deactivate = await gql(client, deactivate, {"u": str(admin.id)}, token=token)
    codes = [e["code"] for e in self_deactivate["data"]["userDeactivate"]["errors"]]
    assert codes == ["CANNOT_DEACTIVATE_SELF"]
    unknown = await gql(client, unlock, {"u": str(uuid.uuid4())}, token=token)
    (missing,) = unknown["data"]["userUnlock"]["errors"]
    assert missing["field"] == ["input", "rowId"] and missing["code"] == "USER_NOT_FOUND"
    by_global_id = f"mutation ($u: ID!) {{ userUnlock(input: {{id: $u}}) {{ {USER_FIELDS} }} }}"
    unknown = await gql(client, by_global_id, {"u": to_base64("User", uuid.uuid4())}, token=token)
    (missing,) = unknown["data"]["userUnlock"]["errors"]
    assert missing["field"] == ["input", "id"] and missing["code"] == "USER_NOT_FOUND"


async def test_admin_can_invite_a_user(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, admin: LoginUser, mailbox: Mailbox
) -> None:
    token = await sign_in(client, admin)
    invite = f"mutation ($i: UserInviteInput!) {{ userInvite(input: $i) {{ {USER_FIELDS} }} }}"
    values = {
        "email": "grace@example.test",
        "firstName": "Grace",
        "lastName": "Hopper",
        "roles": ["BD Analyst"],
    }
    payload = (await gql(client, invite, {"i": values}, token=token))["data"]["userInvite"]
    assert payload["errors"] == [] and payload["user"]["email"] == "grace@example.test"
    assert [m.rcpt_tos for m in mailbox.messages] == [["grace@example.test"]]
    (audit,) = await audit_rows(owner_engine, admin.tenant.id, "auth.invitation.sent")
    assert audit.user_id == admin.id and str(audit.entity_id) == payload["user"]["rowId"]

    again = (await gql(client, invite, {"i": values}, token=token))["data"]["userInvite"]
    assert again["user"] is None and again["errors"][0]["field"] == ["input", "email"]
    bad_role = (await gql(client, invite, {"i": {**values, "email": "x@example.test", "roles": ["Nope"]}},
                          token=token))["data"]["userInvite"]
    assert bad_role["user"] is None and bad_role["errors"][0]["code"] == "UNKNOWN_ROLE"


# -- sessions: your own, or any with user:admin; never another tenant's ---------------------------


REVOKE_SESSION = (
    "mutation ($s: UUID!) { sessionRevoke(input: {rowId: $s}) {"
    " session { rowId isActive terminatedAt terminationReason current } errors { field code message } } }"
)


async def test_anyone_can_revoke_their_own_session(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, member: LoginUser
) -> None:
    keep = await sign_in(client, member)
    drop = await sign_in(client, member)
    drop_id = await _session_id(client, drop)
    payload = (await gql(client, REVOKE_SESSION, {"s": drop_id}, token=keep))["data"]["sessionRevoke"]
    assert payload["errors"] == []
    assert payload["session"]["rowId"] == drop_id and payload["session"]["isActive"] is False
    assert payload["session"]["terminationReason"] == "revoked" and payload["session"]["current"] is False
    refused = await gql_response(client, "{ viewer { credential } }", token=drop)
    assert refused.status_code == 401
    (audit,) = await audit_rows(owner_engine, member.tenant.id, "auth.session.revoked")
    assert audit.user_id == member.id and str(audit.entity_id) == drop_id
    again = (await gql(client, REVOKE_SESSION, {"s": drop_id}, token=keep))["data"]["sessionRevoke"]
    assert [e["code"] for e in again["errors"]] == ["SESSION_ALREADY_ENDED"]


async def test_admin_can_revoke_anyones_session_in_the_tenant(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, admin: LoginUser, victim: LoginUser
) -> None:
    victim_token = await sign_in(client, victim)
    token = await sign_in(client, admin)
    payload = (await gql(client, REVOKE_SESSION, {"s": await _session_id(client, victim_token)}, token=token))
    assert payload["data"]["sessionRevoke"]["errors"] == []
    assert (await gql_response(client, "{ viewer { credential } }", token=victim_token)).status_code == 401
    (audit,) = await audit_rows(owner_engine, admin.tenant.id, "auth.session.revoked")
    assert audit.user_id == admin.id and audit.risk_level == "medium"
    body = await gql(client, REVOKE_SESSION, {"s": str(uuid.uuid4())}, token=token)
    missing = body["data"]["sessionRevoke"]
    assert missing["errors"] == [
        {"field": ["input", "rowId"], "code": "NOT_FOUND", "message": "There is no session with that id."}
    ]


async def test_no_one_can_revoke_another_tenants_session_or_key(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, admin: LoginUser, member: LoginUser
) -> None:
    other = await create_tenant(owner_engine)
    outsider = await make_login_user(owner_engine, other, roles=["Tenant Admin"])
    outsider_token = await sign_in(client, outsider)
    outsider_session = await _session_id(client, outsider_token)
    key = await gql(client, CREATE_KEY, {"name": "b"}, token=outsider_token)
    key_id = key["data"]["apiKeyCreate"]["apiKey"]["id"]

    admin_token = await sign_in(client, admin)
    payload = (await gql(client, REVOKE_SESSION, {"s": outsider_session}, token=admin_token))["data"]
    assert [e["code"] for e in payload["sessionRevoke"]["errors"]] == ["NOT_FOUND"]
    revoke_key = "mutation ($k: UUID!) { apiKeyRevoke(input: {id: $k}) { apiKey { id } errors { code } } }"
    payload = (await gql(client, revoke_key, {"k": key_id}, token=admin_token))["data"]
    assert payload["apiKeyRevoke"] == {"apiKey": None, "errors": [{"code": "NOT_FOUND"}]}
    # A non-admin is answered the same: the session is neither theirs nor visible.
    member_token = await sign_in(client, member)
    payload = (await gql(client, REVOKE_SESSION, {"s": outsider_session}, token=member_token))["data"]
    assert [e["code"] for e in payload["sessionRevoke"]["errors"]] == ["NOT_FOUND"]

    assert (await gql(client, "{ viewer { credential } }", token=outsider_token))["data"]
    row = await _one(owner_engine, other.id, "SELECT revoked_at FROM api_keys WHERE id = :k", k=key_id)
    assert row.revoked_at is None


async def test_another_users_session_is_missing_to_a_non_admin_and_the_attempt_audited(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, member: LoginUser, victim: LoginUser
) -> None:
    victim_token = await sign_in(client, victim)
    victim_session = await _session_id(client, victim_token)
    token = await sign_in(client, member)
    body = await gql(client, REVOKE_SESSION, {"s": victim_session}, token=token)
    assert body["data"]["sessionRevoke"] == {"session": None, "errors": [
        {"field": ["input", "rowId"], "code": "NOT_FOUND", "message": "There is no session with that id."}
    ]}
    still = await gql(client, "{ viewer { user { rowId } } }", token=victim_token)
    assert still["data"]["viewer"]["user"]["rowId"] == str(victim.id)
    (denied,) = await audit_rows(owner_engine, member.tenant.id, "auth.access.denied")
    assert denied.user_id == member.id and denied.permission_used == "user:admin"
    assert denied.access_granted is False and str(denied.entity_id) == victim_session
    assert "sessionRevoke" in denied.operation_description
    assert await audit_rows(owner_engine, member.tenant.id, "auth.session.revoked") == []


# -- MFA enrolment -----------------------------------------------------------------------------


START = (
    "mutation { mfaEnrollmentStart {"
    " enrollment { provisioningUri secret } errors { field code message } } }"
)
CONFIRM = (
    "mutation ($c: String!) { mfaEnrollmentConfirm(input: {code: $c}) {"
    " user { rowId mfaEnabled } recoveryCodes errors { field code message } } }"
)


async def test_mfa_enrollment_through_graphql(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, member: LoginUser, clock: FakeClock
) -> None:
    token = await sign_in(client, member)
    started = (await gql(client, START, token=token))["data"]["mfaEnrollmentStart"]
    assert started["errors"] == []
    secret = started["enrollment"]["secret"]
    assert started["enrollment"]["provisioningUri"].startswith("otpauth://totp/") and secret in (
        started["enrollment"]["provisioningUri"]
    )
    wrong = (await gql(client, CONFIRM, {"c": "000000"}, token=token))["data"]["mfaEnrollmentConfirm"]
    assert wrong["recoveryCodes"] is None and wrong["errors"][0]["field"] == ["input", "code"]
    code = pyotp.TOTP(secret).at(clock())
    confirmed = (await gql(client, CONFIRM, {"c": code}, token=token))["data"]["mfaEnrollmentConfirm"]
    assert confirmed["errors"] == [] and confirmed["user"] == {"rowId": str(member.id), "mfaEnabled": True}
    assert len(confirmed["recoveryCodes"]) == 10
    assert len(await audit_rows(owner_engine, member.tenant.id, "auth.mfa.enabled")) == 1
    again = (await gql(client, START, token=token))["data"]["mfaEnrollmentStart"]
    assert again["enrollment"] is None and [e["code"] for e in again["errors"]] == ["MFA_ALREADY_ENABLED"]


async def test_mfa_enrollment_is_for_sessions_not_api_keys(
    client: httpx.AsyncClient, admin: LoginUser
) -> None:
    token = await sign_in(client, admin)
    created = await gql(client, CREATE_KEY, {"name": "m"}, token=token)
    key = created["data"]["apiKeyCreate"]["key"]
    payload = (await gql(client, START, token=key))["data"]["mfaEnrollmentStart"]
    assert payload["enrollment"] is None and [e["code"] for e in payload["errors"]] == ["NOT_A_SESSION"]


# -- errors ------------------------------------------------------------------------------------


async def test_bad_input_is_described_not_masked(client: httpx.AsyncClient, member: LoginUser) -> None:
    token = await sign_in(client, member)
    body = await gql(client, REVOKE_SESSION, {"s": "not-a-uuid"}, token=token, errors=True)
    assert "not-a-uuid" in body["errors"][0]["message"]
    assert body["errors"][0].get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR"
    unknown = await gql(client, "{ viewer { passwordHash } }", token=token, errors=True)
    assert "passwordHash" in unknown["errors"][0]["message"]


@pytest.fixture
async def impatient_client(database: Database, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a 300 ms statement timeout, so a held lock becomes a database error."""
    application = create_app(settings_for(database.app_url, db_statement_timeout_ms=300))
    application.state.auth.clock = clock
    async with app_client(application) as http:
        yield http


async def test_unexpected_errors_are_masked_with_the_request_id(
    impatient_client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    admin: LoginUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = await sign_in(impatient_client, admin)
    # A database fault the user cannot fix: api_keys is locked, the listing's statement times out.
    async with owner_engine.connect() as blocker:
        await blocker.execute(text("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE"))
        with caplog.at_level(logging.ERROR, logger="gwm.graphql"):
            response = await gql_response(impatient_client, "{ apiKeys { id } }", token=token)
        await blocker.rollback()
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    (error,) = response.json()["errors"]
    assert error["message"] == f"Unexpected error (request id {request_id})."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    assert "statement" not in response.text.lower() and "api_keys" not in response.text
    (record,) = [r for r in caplog.records if r.name == "gwm.graphql"]
    # A database error is logged with its SQLSTATE and stack, never its driver message (which quotes values).
    message = record.getMessage()
    assert request_id in message and "SQLSTATE 57014" in message and 'File "' in message
