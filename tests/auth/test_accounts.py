"""The account lifecycle over real HTTP and a real SMTP server (aiosmtpd on 127.0.0.1).

Administrators' operations are called as the GraphQL layer calls them (`auth.accounts`, with a
principal resolved from an admin's session token); the public endpoints go through HTTP. Tokens
are read out of the emails the local SMTP server received. Every test registers the passwords
and tokens it used; a teardown check finds none of them in the tenant's audit rows or the logs.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
import re
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from auth import accounts
from auth.audit import RequestMeta
from auth.exceptions import AuthRequestError
from auth.mailer import SmtpMailer
from auth.principal import Principal
from auth.service import AuthService
from models.db import set_tenant
from server.app import create_app
from tests.conftest import Database
from tests.support.audit_trail import expect_audit
from tests.support.clock import FakeClock
from tests.support.db import TenantRef
from tests.support.http import LoginUser, app_client, make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.sqlcount import capture_statements

META = RequestMeta(request_id="test-accounts", ip="127.0.0.1", user_agent="pytest")
GOOD = "quiet lantern orbit mosaic"
OTHER_GOOD = "velvet cactus thunder ribbon"


# --- the outside world: an SMTP server ----------------------------------------------------------


@dataclass
class Inbox:
    """What the local SMTP server received, as (envelope recipients, parsed message)."""

    port: int
    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(
        self, server: Any, session: Any, envelope: Any
    ) -> str:  # aiosmtpd calls this hook by name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.received.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for rcpt, m in self.received if address in rcpt]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox(port=_free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port, ready_timeout=5)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def app(database: Database, clock: FakeClock, inbox: Inbox) -> Starlette:
    application = create_app(settings_for(database.app_url, smtp_host="127.0.0.1", smtp_port=inbox.port))
    application.state.auth.clock = clock
    return application


@pytest.fixture
def service(app: Starlette) -> AuthService:
    auth: AuthService = app.state.auth
    return auth


# --- secrets must not leak ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def secrets_used(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[set[str]]:
    """Tests add every password and token they use; none may appear in an audit row or a log line."""
    caplog.set_level(logging.DEBUG)
    used: set[str] = {GOOD, OTHER_GOOD}
    yield used
    async with owner_engine.connect() as conn:
        await set_tenant(conn, fresh_tenant.id)
        rows = (await conn.execute(text("SELECT * FROM audit_logs"))).all()
        await conn.rollback()
    dumped = "\n".join(repr(tuple(r)) for r in rows)
    logged = "\n".join(r.getMessage() for phase in ("setup", "call") for r in caplog.get_records(phase))
    for secret in used:
        assert secret not in dumped, "a secret reached audit_logs"
        assert secret not in logged, "a secret reached the logs"
        assert hashlib.sha256(secret.encode()).hexdigest() not in dumped, "a token hash reached audit_logs"


# --- helpers ----------------------------------------------------------------------------------------


async def _login(client: httpx.AsyncClient, **body: str) -> httpx.Response:
    response = await client.post("/auth/login", json=body)
    client.cookies.clear()  # every later call says who it is explicitly
    return response


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _session_token(client: httpx.AsyncClient, user: LoginUser, password: str | None = None) -> str:
    response = await _login(client, **{**user.credentials(), **({"password": password} if password else {})})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def _principal(client: httpx.AsyncClient, service: AuthService, user: LoginUser) -> Principal:
    return await service.authenticate(await _session_token(client, user), META)


@pytest.fixture
async def admin(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> LoginUser:
    return await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])


@pytest.fixture
async def admin_principal(client: httpx.AsyncClient, service: AuthService, admin: LoginUser) -> Principal:
    return await _principal(client, service, admin)


def _link_token(message: EmailMessage, path: str) -> str:
    body = message.get_content()
    match = re.search(re.escape(f"http://127.0.0.1:8000{path}?token=") + r"([A-Za-z0-9_-]+)\s", body)
    assert match, body
    return match.group(1)


async def _rows(owner_engine: AsyncEngine, tenant: TenantRef, sql: str, **params: Any) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = list((await conn.execute(text(sql), params)).all())
        await conn.rollback()
    return rows


async def _exec(owner_engine: AsyncEngine, tenant: TenantRef, sql: str, **params: Any) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(text(sql), params)


async def _history(owner_engine: AsyncEngine, tenant: TenantRef, entity_id: uuid.UUID) -> list[Any]:
    return await _rows(
        owner_engine,
        tenant,
        "SELECT * FROM change_history WHERE entity_id = :e ORDER BY seq",
        e=entity_id,
    )


async def _audit(owner_engine: AsyncEngine, tenant: TenantRef, action: str) -> list[Any]:
    return await _rows(
        owner_engine,
        tenant,
        "SELECT * FROM audit_logs WHERE action_type = :a ORDER BY timestamp_utc, id",
        a=action,
    )


async def _invite(
    service: AuthService,
    principal: Principal,
    inbox: Inbox,
    used: set[str],
    email_address: str,
    roles: tuple[str, ...] = ("Viewer",),
) -> tuple[uuid.UUID, str]:
    user_id = await accounts.invite_user(
        service,
        principal,
        email=email_address,
        first_name="Ada",
        last_name="Lovelace",
        role_names=roles,
        meta=META,
    )
    (message,) = inbox.to(email_address)
    token = _link_token(message, "/auth/invitations/accept")
    used.add(token)
    return user_id, token


def _error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


async def _refused(coro: Any) -> AuthRequestError:
    with pytest.raises(AuthRequestError) as caught:
        await coro
    return caught.value


# --- invitations ------------------------------------------------------------------------------------


async def test_invitation_end_to_end(
    client: httpx.AsyncClient,
    service: AuthService,
    admin: LoginUser,
    admin_principal: Principal,
    inbox: Inbox,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    clock: FakeClock,
    secrets_used: set[str],
) -> None:
    address = f"Ada.{uuid.uuid4().hex[:8]}@Example.test"
    user_id, token = await _invite(
        service, admin_principal, inbox, secrets_used, address, ("Viewer", "Auditor")
    )

    (message,) = inbox.to(address)
    assert message["Subject"] == f"You are invited to Tenant {fresh_tenant.subdomain} on GWM CRM"
    assert message["Auto-Submitted"] == "auto-generated"
    (user,) = await _rows(owner_engine, fresh_tenant, "SELECT * FROM users WHERE id = :u", u=user_id)
    assert user.email == address and user.password_hash is None and user.is_active and not user.email_verified
    assert user.created_by == admin.id
    roles = await _rows(
        owner_engine,
        fresh_tenant,
        "SELECT r.name, ur.assigned_by FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
        " WHERE ur.user_id = :u",
        u=user_id,
    )
    assert sorted(r.name for r in roles) == ["Auditor", "Viewer"] and {r.assigned_by for r in roles} == {
        admin.id
    }
    (stored,) = await _rows(
        owner_engine, fresh_tenant, "SELECT * FROM account_tokens WHERE user_id = :u", u=user_id
    )
    assert stored.purpose == "invitation" and stored.used_at is None and stored.created_by == admin.id
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert stored.expires_at == clock() + timedelta(hours=24)
    assert all(token not in str(value) for value in stored)

    # Before accepting, the account cannot sign in.
    assert (
        await _login(client, email=address, password=GOOD, tenant=fresh_tenant.subdomain)
    ).status_code == 401

    # The policy applies, and a refused password leaves the link usable.
    short = await client.post("/auth/invitations/accept", json={"token": token, "password": "fourteen chars"})
    assert short.status_code == 400 and _error(short)["code"] == "PASSWORD_POLICY"
    assert _error(short)["field"] == "password" and "15" in _error(short)["message"]
    contextual = f"{fresh_tenant.subdomain} ada tenant"
    secrets_used.add(contextual)
    weak = await client.post("/auth/invitations/accept", json={"token": token, "password": contextual})
    assert weak.status_code == 400 and _error(weak)["code"] == "PASSWORD_POLICY"

    accepted = await client.post("/auth/invitations/accept", json={"token": token, "password": GOOD})
    assert accepted.status_code == 204, accepted.text
    assert accepted.headers["cache-control"] == "no-store"
    signed_in = await _login(client, email=address.lower(), password=GOOD, tenant=fresh_tenant.subdomain)
    assert signed_in.status_code == 200
    (user,) = await _rows(owner_engine, fresh_tenant, "SELECT * FROM users WHERE id = :u", u=user_id)
    assert user.email_verified and user.password_hash.startswith("pbkdf2_sha256$")

    (sent,) = await _audit(owner_engine, fresh_tenant, "auth.invitation.sent")
    assert sent.user_id == admin.id and sent.entity_id == user_id and sent.permission_used == "user:admin"
    assert sent.session_id == str(admin_principal.session_id)
    # One audit row per change, written by the unit of work's flush hook in the invitation's
    # transaction: the user row created, each role assignment, with history sharing one batch.
    assert sent.entity_type == "user" and sent.before_values is None
    assert sent.after_values["email"] == address and sent.after_values["password_hash"] is None
    assert "Auditor, Viewer" in sent.operation_description
    granted = await _audit(owner_engine, fresh_tenant, "auth.role_assignment.granted")
    assert len(granted) == 2 and {g.entity_type for g in granted} == {"user_role"}
    assert {g.after_values["user_id"] for g in granted} == {str(user_id)}
    history = [h for h in await _history(owner_engine, fresh_tenant, user_id) if h.change_category == "create"]
    assert {h.field_name for h in history} >= {"email", "first_name", "last_name", "is_active"}
    assert len({h.change_batch_id for h in history}) == 1 and history[0].changed_by_user_id == admin.id
    (acc,) = await _audit(owner_engine, fresh_tenant, "auth.invitation.accepted")
    assert acc.user_id == user_id and acc.ip_address is not None and acc.entity_id == user_id
    # The password is recorded only as the fact that it changed.
    assert acc.after_values["password_hash"] == "[redacted]" and acc.before_values["password_hash"] is None
    assert acc.after_values["email_verified"] is True
    accepted_history = [h for h in await _history(owner_engine, fresh_tenant, user_id) if h.change_category == "update"]
    assert {h.field_name: h.new_value for h in accepted_history}["password_hash"] == "[redacted]"


async def test_an_invitation_works_once(
    client: httpx.AsyncClient,
    service: AuthService,
    admin_principal: Principal,
    inbox: Inbox,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    secrets_used: set[str],
) -> None:
    _, token = await _invite(
        service, admin_principal, inbox, secrets_used, f"once-{uuid.uuid4().hex[:8]}@example.test"
    )
    assert (
        await client.post("/auth/invitations/accept", json={"token": token, "password": GOOD})
    ).status_code == 204
    again = await client.post("/auth/invitations/accept", json={"token": token, "password": OTHER_GOOD})
    unknown = await client.post("/auth/invitations/accept", json={"token": "x" * 43, "password": OTHER_GOOD})
    assert again.status_code == unknown.status_code == 400
    assert again.json() == unknown.json() and _error(again)["code"] == "TOKEN_INVALID"
    (rejected,) = await _audit(owner_engine, fresh_tenant, "auth.account_token.rejected")
    assert rejected.operation_description == "invitation: already used" and rejected.risk_level == "medium"
    # An invitation token is not a reset token either.
    as_reset = await client.post("/auth/password/reset", json={"token": token, "password": OTHER_GOOD})
    assert as_reset.json() == unknown.json()


async def test_an_expired_invitation_is_refused_and_can_be_sent_again(
    client: httpx.AsyncClient,
    service: AuthService,
    admin_principal: Principal,
    inbox: Inbox,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    clock: FakeClock,
    secrets_used: set[str],
) -> None:
    address = f"late-{uuid.uuid4().hex[:8]}@example.test"
    user_id, token = await _invite(service, admin_principal, inbox, secrets_used, address)
    clock.advance(hours=24)
    expired = await client.post("/auth/invitations/accept", json={"token": token, "password": GOOD})
    assert expired.status_code == 400 and _error(expired)["code"] == "TOKEN_INVALID"
    (rejected,) = await _audit(owner_engine, fresh_tenant, "auth.account_token.rejected")
    assert rejected.operation_description == "invitation: expired"

    # The same address cannot be invited twice, but a pending invitee can get a new link.
    taken = await _refused(
        accounts.invite_user(
            service,
            admin_principal,
            email=address.upper(),
            first_name="A",
            last_name="B",
            role_names=["Viewer"],
            meta=META,
        )
    )
    assert (taken.status, taken.code) == (409, "EMAIL_TAKEN")
    await accounts.resend_invitation(service, admin_principal, user_id=user_id, meta=META)
    fresh = _link_token(inbox.to(address)[-1], "/auth/invitations/accept")
    secrets_used.add(fresh)
    assert (
        await client.post("/auth/invitations/accept", json={"token": fresh, "password": GOOD})
    ).status_code == 204
    done = await _refused(accounts.resend_invitation(service, admin_principal, user_id=user_id, meta=META))
    assert (done.status, done.code) == (409, "NOT_PENDING")
    assert len(await _audit(owner_engine, fresh_tenant, "auth.invitation.sent")) == 2


async def test_invitation_refusals_leave_nothing_behind(
    service: AuthService,
    admin_principal: Principal,
    inbox: Inbox,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
) -> None:
    async def invite(address: str, roles: list[str] | None = None, **names: str) -> AuthRequestError:
        return await _refused(
            accounts.invite_user(
                service,
                admin_principal,
                email=address,
                first_name=names.get("first", "A"),
                last_name=names.get("last", "B"),
                role_names=roles or ["Viewer"],
                meta=META,
            )
        )

    unknown_role = await invite("role@example.test", ["Viewer", "Astronaut"])
    assert (unknown_role.status, unknown_role.code, unknown_role.field) == (400, "UNKNOWN_ROLE", "roles")
    assert "Astronaut" in unknown_role.message
    bad_email = await invite("not an address")
    assert (bad_email.status, bad_email.code, bad_email.field) == (400, "INVALID_EMAIL", "email")
    injected = await invite("a@example.test\r\nBcc: victim@example.test")
    assert injected.code == "INVALID_EMAIL"
    no_name = await invite("noname@example.test", first="  ")
    assert (no_name.code, no_name.field) == ("INVALID_NAME", "firstName")

    seats = await _rows(
        owner_engine, fresh_tenant, "SELECT count(*) AS n FROM users WHERE is_active AND NOT is_system"
    )
    await _exec(
        owner_engine,
        fresh_tenant,
        "UPDATE tenants SET max_users = :n WHERE id = :t",
        n=seats[0].n,
        t=fresh_tenant.id,
    )
    full = await invite("full@example.test")
    assert (full.status, full.code) == (409, "USER_LIMIT")

    assert inbox.received == []
    emails = {r.email for r in await _rows(owner_engine, fresh_tenant, "SELECT email FROM users")}
    assert not emails & {"role@example.test", "noname@example.test", "full@example.test"}
    assert await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM account_tokens") == []
    assert await _audit(owner_engine, fresh_tenant, "auth.invitation.sent") == []


async def test_a_refused_email_rolls_the_invitation_back(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin: LoginUser
) -> None:
    closed_port = _free_port()  # nothing listens there
    app = create_app(settings_for(database.app_url, smtp_host="127.0.0.1", smtp_port=closed_port))
    async with app_client(app) as client:
        service: AuthService = app.state.auth
        principal = await _principal(client, service, admin)
        failed = await _refused(
            accounts.invite_user(
                service,
                principal,
                email="lost@example.test",
                first_name="A",
                last_name="B",
                role_names=["Viewer"],
                meta=META,
            )
        )
    assert (failed.status, failed.code) == (502, "EMAIL_FAILED")
    assert (
        await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM users WHERE email = 'lost@example.test'") == []
    )
    assert await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM account_tokens") == []


async def test_without_smtp_invitations_and_resets_answer_503(
    database: Database, admin: LoginUser, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    app = create_app(settings_for(database.app_url))  # no GWM_SMTP_HOST
    async with app_client(app) as client:
        service: AuthService = app.state.auth
        assert service.mailer is None
        principal = await _principal(client, service, admin)
        refused = await _refused(
            accounts.invite_user(
                service,
                principal,
                email="nomail@example.test",
                first_name="A",
                last_name="B",
                role_names=["Viewer"],
                meta=META,
            )
        )
        assert (refused.status, refused.code) == (503, "EMAIL_NOT_CONFIGURED")
        for address in (admin.email, "nobody@example.test"):  # the same answer whoever asks
            reset = await client.post(
                "/auth/password/reset/request", json={"email": address, "tenant": fresh_tenant.subdomain}
            )
            assert reset.status_code == 503 and _error(reset)["code"] == "EMAIL_NOT_CONFIGURED"
    assert (
        await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM users WHERE email = 'nomail@example.test'")
        == []
    )
    assert await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM account_tokens") == []


# --- password reset ----------------------------------------------------------------------------------


async def test_reset_requests_look_the_same_whether_or_not_the_account_exists(
    client: httpx.AsyncClient,
    service: AuthService,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    inbox: Inbox,
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant)
    inactive = await make_login_user(owner_engine, fresh_tenant, is_active=False)
    sso = await make_login_user(owner_engine, fresh_tenant, is_saml_user=True)
    system_email = (await _rows(owner_engine, fresh_tenant, "SELECT email FROM users WHERE is_system"))[
        0
    ].email
    cases = [
        {"email": user.email.upper(), "tenant": fresh_tenant.subdomain},
        {"email": "nobody@example.test", "tenant": fresh_tenant.subdomain},
        {"email": user.email, "tenant": "no-such-tenant"},
        {"email": inactive.email, "tenant": fresh_tenant.subdomain},
        {"email": sso.email, "tenant": fresh_tenant.subdomain},
        {"email": system_email, "tenant": fresh_tenant.subdomain},
    ]
    answers = []
    for body in cases:
        response = await client.post("/auth/password/reset/request", json=body)
        answers.append((response.status_code, response.text))
    assert len(set(answers)) == 1 and answers[0][0] == 202, answers
    mailer = service.mailer
    assert isinstance(mailer, SmtpMailer)
    await mailer.flush()
    assert [rcpt for rcpt, _ in inbox.received] == [[user.email]]  # to the stored address, once

    audit = await _audit(owner_engine, fresh_tenant, "auth.password.reset_requested")
    assert [(r.user_id, r.access_granted) for r in audit] == [
        (user.id, True),
        (None, False),
        (inactive.id, False),
        (sso.id, False),
        (fresh_tenant.system_user_id, False),
    ]
    assert all("nobody@example.test" not in repr(tuple(r)) for r in audit)  # not even the typed address


async def test_a_reset_request_does_the_same_work_on_every_path(
    client: httpx.AsyncClient,
    service: AuthService,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    inbox: Inbox,
) -> None:
    """Counted, not timed (as the sign-in test counts the KDF): every path runs the same lookups, the
    KDF once and queues one email; only the known account's email is delivered."""
    user = await make_login_user(owner_engine, fresh_tenant)
    sso = await make_login_user(owner_engine, fresh_tenant, is_saml_user=True)
    cases = {
        "known account": {"email": user.email, "tenant": fresh_tenant.subdomain},
        "unknown account": {"email": "nobody@example.test", "tenant": fresh_tenant.subdomain},
        "unknown tenant": {"email": user.email, "tenant": "no-such-tenant"},
        "account without a password": {"email": sso.email, "tenant": fresh_tenant.subdomain},
        "sent moments ago": {"email": user.email, "tenant": fresh_tenant.subdomain},
    }
    work: dict[str, tuple[int, int, list[str]]] = {}
    for name, body in cases.items():
        kdf, queued = service.hasher.kdf_calls, service.emails_queued
        with capture_statements(service.engine) as statements:
            response = await client.post("/auth/password/reset/request", json=body)
        assert response.status_code == 202, (name, response.text)
        lookups = [
            s for s in statements
            if s.lstrip().upper().startswith("SELECT")
            and any(t in s for t in ("users", "account_tokens", "gwm_tenant_by_subdomain"))
        ]
        work[name] = (service.hasher.kdf_calls - kdf, service.emails_queued - queued, lookups)
    first = work["known account"]
    assert first[0] == 1 and first[1] == 1 and len(first[2]) == 3, first  # tenant, account, its latest link
    for name, done in work.items():
        assert done == first, name
    mailer = service.mailer
    assert isinstance(mailer, SmtpMailer)
    await mailer.flush()
    assert [rcpt for rcpt, _ in inbox.received] == [[user.email]]
    # The link and its audit row commit together: one link, one "sent" row.
    links = await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM account_tokens WHERE user_id = :u", u=user.id)
    assert len(links) == 1
    requested = await _audit(owner_engine, fresh_tenant, "auth.password.reset_requested")
    assert [r.access_granted for r in requested] == [True, False, False, False]
    assert requested[0].user_id == user.id and requested[0].entity_id == user.id


async def test_reset_end_to_end_clears_lockout_and_ends_every_session(
    client: httpx.AsyncClient,
    service: AuthService,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    inbox: Inbox,
    secrets_used: set[str],
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant)
    secrets_used.add(user.password)
    sessions = [await _session_token(client, user) for _ in range(2)]
    for _ in range(3):  # lock the account
        await _login(client, **{**user.credentials(), "password": "not the password at all"})
    assert (await _login(client, **user.credentials())).status_code == 401

    requested = await client.post(
        "/auth/password/reset/request",
        json={"email": user.email},
        headers={"host": f"{fresh_tenant.subdomain}.gwm.example"},
    )
    assert requested.status_code == 202
    mailer = service.mailer
    assert isinstance(mailer, SmtpMailer)
    await mailer.flush()
    (message,) = inbox.to(user.email)
    token = _link_token(message, "/auth/password/reset")
    secrets_used.add(token)

    short = await client.post("/auth/password/reset", json={"token": token, "password": "too short"})
    assert short.status_code == 400 and _error(short)["code"] == "PASSWORD_POLICY"
    done = await client.post("/auth/password/reset", json={"token": token, "password": GOOD})
    assert done.status_code == 204, done.text
    for session in sessions:
        assert (await client.get("/auth/session", headers=_bearer(session))).status_code == 401
    assert (await _login(client, **user.credentials())).status_code == 401  # the old password is gone
    assert (
        await _login(client, **{**user.credentials(), "password": GOOD})
    ).status_code == 200  # and unlocked
    reused = await client.post("/auth/password/reset", json={"token": token, "password": OTHER_GOOD})
    assert reused.status_code == 400 and _error(reused)["code"] == "TOKEN_INVALID"

    ended = await _rows(
        owner_engine,
        fresh_tenant,
        "SELECT termination_reason FROM user_sessions WHERE user_id = :u AND terminated_at IS NOT NULL",
        u=user.id,
    )
    assert [r.termination_reason for r in ended] == ["password_changed"] * 2
    (reset,) = await _audit(owner_engine, fresh_tenant, "auth.password.reset")
    assert reset.user_id == user.id and reset.entity_id == user.id
    assert reset.after_values["password_hash"] == "[redacted]" and reset.after_values["locked_until"] is None
    assert reset.operation_description.endswith("lockout cleared; 2 session(s) ended")


async def test_at_most_one_reset_link_per_user_at_a_time(
    client: httpx.AsyncClient,
    service: AuthService,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    inbox: Inbox,
    clock: FakeClock,
    secrets_used: set[str],
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant)
    mailer = service.mailer
    assert isinstance(mailer, SmtpMailer)
    body = {"email": user.email, "tenant": fresh_tenant.subdomain}
    for _ in range(3):  # a burst: one email
        assert (await client.post("/auth/password/reset/request", json=body)).status_code == 202
    await mailer.flush()
    assert len(inbox.to(user.email)) == 1
    clock.advance(minutes=11)
    assert (await client.post("/auth/password/reset/request", json=body)).status_code == 202
    await mailer.flush()
    first_token, second_token = (_link_token(m, "/auth/password/reset") for m in inbox.to(user.email))
    secrets_used.update({first_token, second_token})
    assert (
        len(
            await _rows(
                owner_engine, fresh_tenant, "SELECT 1 FROM account_tokens WHERE user_id = :u", u=user.id
            )
        )
        == 1
    )
    replaced = await client.post("/auth/password/reset", json={"token": first_token, "password": GOOD})
    assert replaced.status_code == 400 and _error(replaced)["code"] == "TOKEN_INVALID"
    assert (
        await client.post("/auth/password/reset", json={"token": second_token, "password": GOOD})
    ).status_code == 204
    outcomes = [
        r.operation_description
        for r in await _audit(owner_engine, fresh_tenant, "auth.password.reset_requested")
    ]
    assert [o.rsplit(": ", 1)[-1] for o in outcomes].count("reset link sent") == 2 and len(outcomes) == 4


# --- temporary passwords and changes ----------------------------------------------------------------


async def test_a_temporary_password_forces_a_change_before_anything_else(
    client: httpx.AsyncClient,
    service: AuthService,
    admin: LoginUser,
    admin_principal: Principal,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    secrets_used: set[str],
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant)
    secrets_used.add(user.password)
    before = await _session_token(client, user)
    temporary = "brisk walnut canyon sparrow"
    secrets_used.add(temporary)

    too_short = await _refused(
        accounts.set_temporary_password(
            service, admin_principal, user_id=user.id, password="short one", meta=META
        )
    )
    assert (too_short.code, too_short.field) == ("PASSWORD_POLICY", "password")
    await accounts.set_temporary_password(
        service, admin_principal, user_id=user.id, password=temporary, meta=META
    )
    assert (await client.get("/auth/session", headers=_bearer(before))).status_code == 401

    signed_in = await _login(client, **{**user.credentials(), "password": temporary})
    assert signed_in.status_code == 200 and signed_in.json()["passwordChangeRequired"] is True
    token = signed_in.json()["token"]
    state = await client.get("/auth/session", headers=_bearer(token))
    assert state.status_code == 200 and state.json()["passwordChangeRequired"] is True
    blocked = await client.get("/graphql", headers=_bearer(token))
    assert blocked.status_code == 403 and _error(blocked)["code"] == "PASSWORD_CHANGE_REQUIRED"

    same = await client.post(
        "/auth/password/change",
        headers=_bearer(token),
        json={"currentPassword": temporary, "newPassword": temporary},
    )
    assert same.status_code == 400 and _error(same)["code"] == "PASSWORD_POLICY"
    assert _error(same)["field"] == "newPassword"
    changed = await client.post(
        "/auth/password/change",
        headers=_bearer(token),
        json={"currentPassword": temporary, "newPassword": GOOD},
    )
    assert changed.status_code == 204, changed.text
    assert (await client.get("/auth/session", headers=_bearer(token))).json()[
        "passwordChangeRequired"
    ] is False
    after = await client.get("/graphql", headers=_bearer(token))
    assert after.status_code != 403
    assert (await _login(client, **{**user.credentials(), "password": temporary})).status_code == 401

    (temp,) = await _audit(owner_engine, fresh_tenant, "auth.password.temporary_set")
    assert (temp.user_id, temp.entity_id, temp.permission_used) == (admin.id, user.id, "user:admin")
    assert temp.after_values["must_change_password"] is True and temp.after_values["password_hash"] == "[redacted]"
    assert temp.operation_description.endswith("1 session(s) ended")
    (change,) = await _audit(owner_engine, fresh_tenant, "auth.password.changed")
    assert (
        change.user_id == user.id
        and change.operation_description
        == "/auth/password/change: forced change of a temporary password; 0 other session(s) ended"
    )


async def test_changing_a_password_ends_the_other_sessions(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, secrets_used: set[str]
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant)
    secrets_used.add(user.password)
    this, other = await _session_token(client, user), await _session_token(client, user)

    wrong = await client.post(
        "/auth/password/change",
        headers=_bearer(this),
        json={"currentPassword": "a wrong current password", "newPassword": GOOD},
    )
    assert wrong.status_code == 400 and _error(wrong) == {
        "code": "PASSWORD_INVALID",
        "message": "The current password is incorrect, or too many attempts have locked the account.",
        "field": "currentPassword",
    }
    changed = await client.post(
        "/auth/password/change",
        headers=_bearer(this),
        json={"currentPassword": user.password, "newPassword": GOOD},
    )
    assert changed.status_code == 204, changed.text
    assert (await client.get("/auth/session", headers=_bearer(this))).status_code == 200
    assert (await client.get("/auth/session", headers=_bearer(other))).status_code == 401
    assert (await _login(client, **{**user.credentials(), "password": GOOD})).status_code == 200

    (change,) = await _audit(owner_engine, fresh_tenant, "auth.password.changed")
    assert change.after_values["password_hash"] == "[redacted]" and change.session_id is not None
    assert change.operation_description.endswith("1 other session(s) ended")
    (refused,) = await _audit(owner_engine, fresh_tenant, "auth.password.change_refused")
    assert refused.operation_description == "wrong current password" and not refused.access_granted
    anonymous = await client.post(
        "/auth/password/change", json={"currentPassword": GOOD, "newPassword": OTHER_GOOD}
    )
    assert anonymous.status_code == 401


async def test_wrong_current_passwords_count_toward_lockout(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, secrets_used: set[str]
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant)
    secrets_used.add(user.password)
    token = await _session_token(client, user)
    for attempt in range(3):
        response = await client.post(
            "/auth/password/change",
            headers=_bearer(token),
            json={"currentPassword": f"wrong guess number {attempt}", "newPassword": GOOD},
        )
        assert _error(response)["code"] == "PASSWORD_INVALID"
    (row,) = await _rows(
        owner_engine, fresh_tenant, "SELECT locked_until FROM users WHERE id = :u", u=user.id
    )
    assert row.locked_until is not None
    locked = await client.post(
        "/auth/password/change",
        headers=_bearer(token),
        json={"currentPassword": user.password, "newPassword": GOOD},
    )
    assert _error(locked)["code"] == "PASSWORD_INVALID"  # even the right one, while locked
    assert (await _login(client, **user.credentials())).status_code == 401
    assert len(await _audit(owner_engine, fresh_tenant, "auth.account.locked")) == 1
    assert len(await _audit(owner_engine, fresh_tenant, "auth.login.failed")) == 5  # 4 changes + 1 sign-in


async def test_eight_characters_are_enough_only_with_mfa(
    client: httpx.AsyncClient,
    service: AuthService,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    secrets_used: set[str],
) -> None:
    short = "Zq7#pL2m"
    plain = await make_login_user(owner_engine, fresh_tenant)
    with_mfa = await make_login_user(owner_engine, fresh_tenant, mfa_enabled=True)
    secrets_used.update({short, plain.password, with_mfa.password})
    refused = await _refused(
        accounts.change_password(
            service,
            await _principal(client, service, plain),
            current_password=plain.password,
            new_password=short,
            meta=META,
        )
    )
    assert (refused.code, refused.field) == ("PASSWORD_POLICY", "newPassword") and "15" in refused.message
    await accounts.change_password(
        service,
        await _principal(client, service, with_mfa),
        current_password=with_mfa.password,
        new_password=short,
        meta=META,
    )


# --- unlock and deactivation ------------------------------------------------------------------------


async def test_an_admin_unlocks_a_locked_account(
    client: httpx.AsyncClient,
    service: AuthService,
    admin: LoginUser,
    admin_principal: Principal,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    secrets_used: set[str],
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant)
    secrets_used.add(user.password)
    for _ in range(3):
        await _login(client, **{**user.credentials(), "password": "not the password at all"})
    assert (await _login(client, **user.credentials())).status_code == 401

    await accounts.unlock_user(service, admin_principal, user_id=user.id, meta=META)
    assert (await _login(client, **user.credentials())).status_code == 200
    (row,) = await _audit(owner_engine, fresh_tenant, "auth.account.unlocked")
    assert (row.user_id, row.entity_id, row.permission_used) == (admin.id, user.id, "user:admin")
    assert row.after_values == {"was_locked": True}

    missing = await _refused(accounts.unlock_user(service, admin_principal, user_id=uuid.uuid4(), meta=META))
    assert (missing.status, missing.code) == (404, "USER_NOT_FOUND")
    system = await _refused(
        accounts.unlock_user(service, admin_principal, user_id=fresh_tenant.system_user_id, meta=META)
    )
    assert (system.status, system.code) == (400, "SYSTEM_USER")


async def test_deactivation_ends_sessions_and_sign_in(
    client: httpx.AsyncClient,
    service: AuthService,
    admin: LoginUser,
    admin_principal: Principal,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    tenant_b: TenantRef,
    secrets_used: set[str],
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant)
    secrets_used.add(user.password)
    session = await _session_token(client, user)

    await accounts.deactivate_user(service, admin_principal, user_id=user.id, meta=META)
    assert (await client.get("/auth/session", headers=_bearer(session))).status_code == 401
    assert (await _login(client, **user.credentials())).status_code == 401
    (row,) = await _audit(owner_engine, fresh_tenant, "auth.user.deactivated")
    assert (row.user_id, row.entity_id, row.risk_level) == (admin.id, user.id, "high")
    assert row.before_values["is_active"] is True and row.after_values["is_active"] is False
    assert row.operation_description == "userDeactivate: deactivated by an administrator; 1 session(s) ended"
    (history,) = await _history(owner_engine, fresh_tenant, user.id)
    assert (history.field_name, history.old_value, history.new_value) == ("is_active", True, False)
    assert history.change_category == "deactivate" and history.changed_by_user_id == admin.id
    # Deactivating again changes no audited row: the sessions and links it ends are its event row.
    await accounts.deactivate_user(service, admin_principal, user_id=user.id, meta=META)
    _, again = await _audit(owner_engine, fresh_tenant, "auth.user.deactivated")
    assert again.after_values == {"sessions_ended": 0} and "(was already inactive)" in again.operation_description

    yourself = await _refused(accounts.deactivate_user(service, admin_principal, user_id=admin.id, meta=META))
    assert (yourself.status, yourself.code) == (400, "CANNOT_DEACTIVATE_SELF")
    system = await _refused(
        accounts.deactivate_user(service, admin_principal, user_id=fresh_tenant.system_user_id, meta=META)
    )
    assert (system.status, system.code) == (400, "SYSTEM_USER")
    elsewhere = await make_login_user(owner_engine, tenant_b)
    cross = await _refused(
        accounts.deactivate_user(service, admin_principal, user_id=elsewhere.id, meta=META)
    )
    assert (cross.status, cross.code) == (404, "USER_NOT_FOUND")
    (still,) = await _rows(
        owner_engine, tenant_b, "SELECT is_active FROM users WHERE id = :u", u=elsewhere.id
    )
    assert still.is_active


# --- the demo seed ------------------------------------------------------------------------------------


async def test_demo_users_sign_in_with_the_printed_password(
    client: httpx.AsyncClient, owner_engine: AsyncEngine
) -> None:
    from server.seed.demo import DEMO_PASSWORD, SUBDOMAIN, TENANT_ID, seed_demo

    summary = await seed_demo(owner_engine)
    printed = str(summary)
    assert DEMO_PASSWORD in printed
    for address, role in summary.users:
        assert re.search(rf"{re.escape(address)}\s+{re.escape(role)}\s+{re.escape(DEMO_PASSWORD)}", printed)
    async with owner_engine.connect() as conn:
        await set_tenant(conn, TENANT_ID)
        hashes = (
            (await conn.execute(text("SELECT password_hash FROM users WHERE NOT is_system"))).scalars().all()
        )
        await conn.rollback()
    assert len(hashes) == 7 and all(h.startswith("pbkdf2_sha256$600000$") for h in hashes)
    assert len(set(hashes)) == 7  # salted
    admin_email = next(a for a, role in summary.users if role == "Tenant Admin")
    response = await _login(client, email=admin_email, password=DEMO_PASSWORD, tenant=SUBDOMAIN)
    assert response.status_code == 200, response.text


# --- through GraphQL --------------------------------------------------------------------------------

_INVITE = """
mutation Invite($input: UserInviteInput!) {
  userInvite(input: $input) { user { rowId email isActive } errors { field code message } }
}
"""


async def test_invitation_through_the_graphql_mutation(
    client: httpx.AsyncClient,
    admin: LoginUser,
    inbox: Inbox,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    secrets_used: set[str],
) -> None:
    token = await _session_token(client, admin)
    address = f"gql-{uuid.uuid4().hex[:8]}@example.test"
    variables: dict[str, Any] = {
        "input": {"email": address, "firstName": "Grace", "lastName": "Hopper", "roles": ["Viewer"]}
    }
    response = await client.post(
        "/graphql", headers=_bearer(token), json={"query": _INVITE, "variables": variables}
    )
    assert response.status_code == 200, response.text
    payload = response.json()["data"]["userInvite"]
    assert payload["errors"] == [] and payload["user"]["email"] == address
    invite_token = _link_token(inbox.to(address)[0], "/auth/invitations/accept")
    secrets_used.add(invite_token)
    assert "errors" not in response.json() and invite_token not in response.text  # only in the email

    again = await client.post(
        "/graphql", headers=_bearer(token), json={"query": _INVITE, "variables": variables}
    )
    (error,) = again.json()["data"]["userInvite"]["errors"]
    assert error["code"] == "EMAIL_TAKEN" and again.json()["data"]["userInvite"]["user"] is None

    viewer = await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"])
    secrets_used.add(viewer.password)
    denied_address = f"denied-{uuid.uuid4().hex[:8]}@example.test"
    variables["input"]["email"] = denied_address
    denied = await client.post(
        "/graphql",
        headers=_bearer(await _session_token(client, viewer)),
        json={"query": _INVITE, "variables": variables},
    )
    assert denied.json()["data"] == {"userInvite": None}
    assert [e["extensions"]["code"] for e in denied.json()["errors"]] == ["FORBIDDEN"]
    assert inbox.to(denied_address) == []


_ADMIN_MUTATIONS = {
    "userUnlock": "mutation ($u: UUID!) { userUnlock(input: {rowId: $u}) { user { rowId } errors { code } } }",
    "userDeactivate": "mutation ($u: UUID!) { userDeactivate(input: {rowId: $u}) { user { rowId } errors { code } } }",
    "userSetTemporaryPassword": "mutation ($u: UUID!, $p: String!) {"
    " userSetTemporaryPassword(input: {rowId: $u, password: $p}) { user { rowId } errors { code } } }",
}


async def _admin_mutation(client: httpx.AsyncClient, token: str, name: str, **variables: str) -> None:
    response = await client.post(
        "/graphql", headers=_bearer(token), json={"query": _ADMIN_MUTATIONS[name], "variables": variables}
    )
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    assert response.json()["data"][name]["errors"] == [], response.text


@pytest.mark.audits("userInvite", "userSetTemporaryPassword", "userUnlock", "userDeactivate")
async def test_the_user_mutations_commit_their_audit_and_history_rows(
    client: httpx.AsyncClient,
    admin: LoginUser,
    inbox: Inbox,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    secrets_used: set[str],
) -> None:
    token = await _session_token(client, admin)
    address = f"audited-{uuid.uuid4().hex[:8]}@example.test"
    invited = await client.post("/graphql", headers=_bearer(token), json={"query": _INVITE, "variables": {
        "input": {"email": address, "firstName": "Audre", "lastName": "Lorde", "roles": ["Viewer"]}}})
    user_id = invited.json()["data"]["userInvite"]["user"]["rowId"]
    secrets_used.add(_link_token(inbox.to(address)[0], "/auth/invitations/accept"))
    log, history = await expect_audit(
        owner_engine, fresh_tenant.id, "userInvite", action="auth.invitation.sent", entity_id=user_id,
        history={"email", "first_name", "last_name", "is_active"}, user_id=admin.id,
    )
    assert log.entity_type == "user" and log.permission_used == "user:admin"
    assert {h.change_category for h in history} == {"create"}

    target = await make_login_user(owner_engine, fresh_tenant)
    secrets_used.add(target.password)
    temporary = "a brand new temporary passphrase"
    secrets_used.add(temporary)
    await _admin_mutation(client, token, "userSetTemporaryPassword", u=str(target.id), p=temporary)
    log, _ = await expect_audit(
        owner_engine, fresh_tenant.id, "userSetTemporaryPassword", action="auth.password.temporary_set",
        entity_id=target.id, history={"password_hash", "must_change_password"}, secrets=["password_hash"],
        user_id=admin.id,
    )
    assert log.after_values["must_change_password"] is True

    await _exec(owner_engine, fresh_tenant, "UPDATE users SET locked_until = now() + interval '1 hour',"
                " failed_login_attempts = 2 WHERE id = :u", u=target.id)
    await _admin_mutation(client, token, "userUnlock", u=str(target.id))
    # Only operational columns change: the hook writes nothing (W11), so the unlock's event row is the
    # evidence, written in its transaction; there is no history (expect_audit requires some for users).
    (unlocked,) = await _audit(owner_engine, fresh_tenant, "auth.account.unlocked")
    assert (unlocked.user_id, unlocked.entity_id, unlocked.entity_type) == (admin.id, target.id, "user")
    assert unlocked.operation_description.startswith("userUnlock: unlocked by an administrator")
    assert unlocked.after_values == {"was_locked": True} and unlocked.permission_used == "user:admin"
    assert unlocked.request_id and unlocked.session_id is not None
    assert [
        h for h in await _history(owner_engine, fresh_tenant, target.id) if h.field_name != "password_hash"
        and h.field_name not in {"must_change_password", "password_changed_at"}
    ] == []
    (row,) = await _rows(owner_engine, fresh_tenant, "SELECT locked_until, failed_login_attempts FROM users"
                         " WHERE id = :u", u=target.id)
    assert (row.locked_until, row.failed_login_attempts) == (None, 0)

    await _admin_mutation(client, token, "userDeactivate", u=str(target.id))
    log, history = await expect_audit(
        owner_engine, fresh_tenant.id, "userDeactivate", action="auth.user.deactivated", entity_id=target.id,
        history={"is_active"}, user_id=admin.id,
    )
    assert [(h.field_name, h.old_value, h.new_value) for h in history] == [("is_active", True, False)]


# --- no escalation through user:admin -----------------------------------------------------------------


async def test_user_admin_alone_cannot_reach_higher_privileges(
    client: httpx.AsyncClient,
    service: AuthService,
    admin: LoginUser,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    inbox: Inbox,
    secrets_used: set[str],
) -> None:
    await _exec(
        owner_engine,
        fresh_tenant,
        "INSERT INTO roles (tenant_id, name, permissions) VALUES (:t, 'User Manager', CAST(:p AS jsonb))",
        t=fresh_tenant.id,
        p='["user:admin", "opportunity:read"]',
    )
    manager = await make_login_user(owner_engine, fresh_tenant, roles=["User Manager"])
    peer = await make_login_user(owner_engine, fresh_tenant, roles=["User Manager"])
    secrets_used.update({manager.password, peer.password, admin.password})
    principal = await _principal(client, service, manager)

    escalate = await _refused(
        accounts.invite_user(
            service,
            principal,
            email="boss@example.test",
            first_name="A",
            last_name="B",
            role_names=["Tenant Admin"],
            meta=META,
        )
    )
    assert (escalate.status, escalate.code, escalate.field) == (403, "ROLE_NOT_GRANTABLE", "roles")
    takeover = await _refused(
        accounts.set_temporary_password(service, principal, user_id=admin.id, password=GOOD, meta=META)
    )
    assert (takeover.status, takeover.code) == (403, "INSUFFICIENT_PRIVILEGE")
    switch_off = await _refused(accounts.deactivate_user(service, principal, user_id=admin.id, meta=META))
    assert (switch_off.status, switch_off.code) == (403, "INSUFFICIENT_PRIVILEGE")
    assert inbox.received == []
    (row,) = await _rows(
        owner_engine,
        fresh_tenant,
        "SELECT is_active, must_change_password FROM users WHERE id = :u",
        u=admin.id,
    )
    assert row.is_active and not row.must_change_password

    # Within the caller's own permissions, all of it works.
    await _invite(
        service,
        principal,
        inbox,
        secrets_used,
        f"peer-{uuid.uuid4().hex[:8]}@example.test",
        ("User Manager",),
    )
    await accounts.set_temporary_password(service, principal, user_id=peer.id, password=OTHER_GOOD, meta=META)
    await accounts.deactivate_user(service, principal, user_id=peer.id, meta=META)


# --- the mailer's bounds ------------------------------------------------------------------------------


async def test_a_mail_server_that_never_answers_is_given_up_on() -> None:
    import asyncio
    import time

    from auth.mailer import MailerError

    with socket.socket() as silent:  # accepts connections (backlog) but never sends a greeting
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        mailer = SmtpMailer("127.0.0.1", silent.getsockname()[1], "GWM <no-reply@gwm.example>", timeout=0.3)
        started = time.monotonic()
        # smtplib reports a read timeout as a disconnection; either way it is bounded.
        with pytest.raises(MailerError, match=r"did not answer in time|SMTPServerDisconnected"):
            await mailer.send("someone@example.test", "Subject", "body with a secret-looking link")
        assert time.monotonic() - started < 3
        assert mailer.send_later("someone@example.test", "Subject", "body") is True
        await asyncio.wait_for(mailer.flush(), timeout=5)  # a scheduled delivery gives up too, and is logged
        assert (mailer.sent, mailer.failed, mailer.pending) == (0, 2, 0)
        with pytest.raises(MailerError, match="not a deliverable"):
            mailer.send_later("a@example.test\r\nBcc: b@example.test", "Subject", "body")
        await mailer.aclose()
        assert mailer.send_later("someone@example.test", "Subject", "body") is False  # closed
