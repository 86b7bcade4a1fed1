"""`gwm tenant create`, run as an operator runs it (a real `gwm` process against the test database),
then the first administrator's way in: the invitation link (printed without SMTP, emailed with it)
accepted over HTTP with a password, a password sign-in, and a GraphQL read as that administrator.
Every refusal exits 2 with one line and leaves nothing behind."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.permissions import SYSTEM_ROLES
from models.db import set_tenant
from server.app import create_app
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_KEYS, TenantRef
from tests.support.graphql import gql
from tests.support.http import app_client
from tests.support.http import test_settings as settings_for
from tests.support.secrets import remember

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_URL = "https://crm.example.test"
PASSWORD = "a long tenant admin passphrase 7301"
VIEWER = """
{ viewer {
    user { email firstName lastName isSystem }
    tenant { subdomain name planType maxUsers maxOpportunityProjects fedrampCompliant }
    roles { role { name } opportunityProjectId }
} }"""


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


async def _gwm(database: Database, *args: str, **extra_env: str) -> Ran:
    """`gwm ARGS` in a process of its own, with the test cluster's URLs and keys and no SMTP unless given."""
    env = {
        k: v for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL", "GWM_PUBLIC_URL"} and not k.startswith("GWM_SMTP_")
    }
    env.update(
        DATABASE_URL=database.owner_url,
        GWM_APP_DATABASE_URL=database.app_url,
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=",
        GWM_AUDIT_KEYS=TEST_AUDIT_KEYS,
        GWM_PUBLIC_URL=PUBLIC_URL,
        **extra_env,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def _create_args(subdomain: str, admin_email: str, *extra: str) -> list[str]:
    return [
        "tenant", "create", "--subdomain", subdomain, "--name", f"Acme {subdomain}",
        "--admin-email", admin_email, "--admin-first-name", "Ada", "--admin-last-name", "Lovelace", *extra,
    ]


def _token(link: str) -> str:
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{PUBLIC_URL}/auth/invitations/accept"
    (token,) = parse_qs(parts.query)["token"]
    remember(token)
    return token


async def _tenant_id(owner_engine: AsyncEngine, subdomain: str) -> uuid.UUID | None:
    """The tenant with `subdomain`, looked for in every tenant (row-level security shows one at a time)."""
    async with owner_engine.connect() as conn:
        ids = list((await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars())
        await conn.rollback()
        for tenant_id in ids:
            await set_tenant(conn, tenant_id)
            found = await conn.scalar(text("SELECT subdomain FROM tenants WHERE id = :t"), {"t": tenant_id})
            await conn.rollback()
            if found == subdomain:
                return uuid.UUID(str(tenant_id))
    return None


async def _rows(owner_engine: AsyncEngine, tenant_id: uuid.UUID, sql: str, **params: Any) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        rows = list((await conn.execute(text(sql), params)).all())
        await conn.rollback()
    return rows


async def _sign_in_and_read(database: Database, subdomain: str, admin_email: str, token: str) -> dict[str, Any]:
    """Accept the invitation with a password, sign in with it, and read `viewer` over GraphQL."""
    remember(PASSWORD)
    credentials = {"tenant": subdomain, "email": admin_email, "password": PASSWORD}
    async with app_client(create_app(settings_for(database.app_url))) as client:
        before = await client.post("/auth/login", json=credentials)
        assert before.status_code == 401  # no password until the invitation is accepted
        accepted = await client.post("/auth/invitations/accept", json={"token": token, "password": PASSWORD})
        assert accepted.status_code == 204, accepted.text
        again = await client.post("/auth/invitations/accept", json={"token": token, "password": PASSWORD + "x"})
        assert again.status_code == 400 and again.json()["error"]["code"] == "TOKEN_INVALID"  # single use
        signed_in = await client.post("/auth/login", json=credentials)
        assert signed_in.status_code == 200, signed_in.text
        client.cookies.clear()
        viewer: dict[str, Any] = (await gql(client, VIEWER, token=signed_in.json()["token"]))["data"]["viewer"]
    return viewer


async def test_tenant_create_prints_the_link_and_its_admin_signs_in_through_it(
    database: Database, owner_engine: AsyncEngine
) -> None:
    subdomain = f"acme-{uuid.uuid4().hex[:8]}"
    admin_email = f"Ada.{uuid.uuid4().hex[:6]}@Example.test"
    ran = await _gwm(
        database,
        *_create_args(subdomain.upper(), f"  {admin_email} ", "--plan", "enterprise", "--max-users", "25",
                      "--max-opportunity-projects", "40"),
    )
    assert ran.code == 0, ran.err
    lines = ran.out.strip().splitlines()
    tenant_id = await _tenant_id(owner_engine, subdomain)
    assert tenant_id is not None
    assert lines[0] == (
        f"tenant {subdomain} created (id {tenant_id}): 'Acme {subdomain.upper()}', plan enterprise, max_users 25,"
        " max_opportunity_projects 40, FedRAMP no"
    )
    assert "SMTP is not configured (GWM_SMTP_HOST)" in lines[1] and "single-use link" in lines[1]
    assert lines[1].startswith(f"{admin_email} invited as 'Tenant Admin'")
    token = _token(lines[2])
    assert len(lines) == 3

    # The tenant as asked, bootstrapped (decision D9) and with the catalog's system roles.
    (tenant,) = await _rows(owner_engine, tenant_id, "SELECT * FROM tenants WHERE id = :t", t=tenant_id)
    assert (tenant.subdomain, tenant.plan_type, tenant.max_users, tenant.max_opportunity_projects) == (
        subdomain, "enterprise", 25, 40
    )
    assert tenant.is_active and not tenant.fedramp_compliant
    (system_user,) = await _rows(owner_engine, tenant_id, "SELECT id FROM users WHERE is_system")
    assert await _rows(
        owner_engine, tenant_id, "SELECT 1 FROM external_opportunity_sources WHERE source_name = 'Manual entry'"
    )
    roles = await _rows(owner_engine, tenant_id, "SELECT name, is_system_role FROM roles")
    assert sorted(r.name for r in roles) == sorted(r.value for r in SYSTEM_ROLES)
    assert all(r.is_system_role for r in roles)
    (admin,) = await _rows(owner_engine, tenant_id, "SELECT * FROM users WHERE NOT is_system")
    assert (admin.email, admin.password_hash, admin.created_by) == (admin_email, None, system_user.id)
    (stored,) = await _rows(owner_engine, tenant_id, "SELECT * FROM account_tokens")
    assert stored.purpose == "invitation" and stored.user_id == admin.id and token not in str(stored)

    # Audited as the tenant's system user, by the CLI, in one transaction.
    audit = await _rows(owner_engine, tenant_id, "SELECT * FROM audit_logs ORDER BY seq")
    actions = [a.action_type for a in audit]
    assert actions.count("tenant.created") == 1 and actions.count("auth.role.created") == len(SYSTEM_ROLES)
    assert actions.count("auth.invitation.sent") == 1 and actions.count("auth.role_assignment.granted") == 1
    assert {(a.user_id, a.http_method, a.api_endpoint) for a in audit} == {
        (system_user.id, "CLI", "gwm tenant create")
    }
    (created,) = [a for a in audit if a.action_type == "tenant.created"]
    assert created.entity_id == tenant_id and created.after_values["subdomain"] == subdomain
    history = await _rows(owner_engine, tenant_id, "SELECT * FROM change_history")
    assert {(h.change_source, h.changed_by_system_process) for h in history} == {("system", "gwm tenant create")}
    assert len({h.change_batch_id for h in history}) == 1
    verified = await _gwm(database, "audit", "verify", "--tenant", subdomain)
    assert verified.code == 0 and verified.out.strip().endswith(": ok"), verified.out + verified.err

    # The administrator's way in: the link, a password, a sign-in, the API.
    viewer = await _sign_in_and_read(database, subdomain, admin_email.lower(), token)
    assert viewer["user"] == {"email": admin_email, "firstName": "Ada", "lastName": "Lovelace", "isSystem": False}
    assert viewer["tenant"] == {
        "subdomain": subdomain, "name": f"Acme {subdomain.upper()}", "planType": "enterprise", "maxUsers": 25,
        "maxOpportunityProjects": 40, "fedrampCompliant": False,
    }
    assert viewer["roles"] == [{"role": {"name": "Tenant Admin"}, "opportunityProjectId": None}]


async def test_tenant_create_refuses_what_it_cannot_make(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    good = f"ok-{uuid.uuid4().hex[:8]}"
    cases: list[tuple[list[str], str]] = [
        (_create_args(fresh_tenant.subdomain, "a@example.test"), f"subdomain {fresh_tenant.subdomain!r} is taken"),
        (_create_args(fresh_tenant.subdomain.upper(), "a@example.test"), "is taken"),
        (_create_args("bad_sub", "a@example.test"), "subdomain 'bad_sub' is not a DNS label"),
        (_create_args("dash-", "a@example.test"), "is not a DNS label"),
        (_create_args("x" * 64, "a@example.test"), "is not a DNS label"),
        ([*_create_args(good, "a@example.test")[:4], "--name", "n" * 256, *_create_args(good, "a@example.test")[6:]],
         "--name: give 1 to 255 characters"),
        (_create_args(good, "a@example.test", "--plan", " "), "--plan: give 1 to 50 characters"),
        (_create_args(good, "a@example.test", "--max-users", "0"), "--max-users must be between 1 and"),
        (_create_args(good, "a@example.test", "--max-opportunity-projects", "0"),
         "--max-opportunity-projects must be between 1 and"),
        (_create_args(good, "not-an-address"), "--admin-email: Enter a valid email address."),
        (_create_args(good, "a@example.test", "--max-users", "many"), "invalid int value: 'many'"),
        (["tenant", "create", "--subdomain", good, "--name", "No admin"], "--admin-email"),
    ]
    results = await asyncio.gather(*(_gwm(database, *args) for args, _ in cases))
    for (args, message), ran in zip(cases, results, strict=True):
        assert ran.code == 2 and message in ran.err, (args, ran)
        assert ran.out == "" and len(ran.err.strip().splitlines()) >= 1
    assert await _tenant_id(owner_engine, good) is None
    # The taken subdomain's tenant is untouched: nothing was written to it.
    assert await _rows(owner_engine, fresh_tenant.id, "SELECT 1 FROM audit_logs") == []


async def test_resend_invitation_replaces_an_unused_first_admin_link(
    database: Database, owner_engine: AsyncEngine
) -> None:
    subdomain = f"again-{uuid.uuid4().hex[:8]}"
    admin_email = f"kay-{uuid.uuid4().hex[:6]}@example.test"
    created = await _gwm(database, *_create_args(subdomain, admin_email))
    assert created.code == 0, created.err
    first = _token(created.out.strip().splitlines()[-1])

    again = await _gwm(database, "user", "resend-invitation", "--tenant", subdomain, "--email", admin_email.upper())
    assert again.code == 0, again.err
    message, link = again.out.strip().splitlines()
    assert message.startswith(f"{admin_email} in {subdomain}: SMTP is not configured (GWM_SMTP_HOST)")
    assert "earlier links no longer work" in message
    second = _token(link)
    assert second != first
    tenant_id = await _tenant_id(owner_engine, subdomain)
    assert tenant_id is not None
    (system_user,) = await _rows(owner_engine, tenant_id, "SELECT id FROM users WHERE is_system")
    sent = await _rows(
        owner_engine, tenant_id, "SELECT * FROM audit_logs WHERE action_type = 'auth.invitation.sent' ORDER BY seq"
    )
    assert [(s.user_id, s.api_endpoint) for s in sent] == [
        (system_user.id, "gwm tenant create"), (system_user.id, "gwm user resend-invitation")
    ]
    assert f"invitation sent again to {admin_email}" in sent[1].operation_description

    async with app_client(create_app(settings_for(database.app_url))) as client:
        old = await client.post("/auth/invitations/accept", json={"token": first, "password": PASSWORD})
    assert old.status_code == 400 and old.json()["error"]["code"] == "TOKEN_INVALID"
    viewer = await _sign_in_and_read(database, subdomain, admin_email, second)
    assert viewer["roles"] == [{"role": {"name": "Tenant Admin"}, "opportunityProjectId": None}]

    # Once joined, or for no such user, nothing is sent and nothing written.
    joined, nobody = await asyncio.gather(
        _gwm(database, "user", "resend-invitation", "--tenant", subdomain, "--email", admin_email),
        _gwm(database, "user", "resend-invitation", "--tenant", subdomain, "--email", "nobody@example.test"),
    )
    assert joined.code == 2 and "has already joined or cannot be invited; nothing was sent" in joined.err
    assert nobody.code == 2 and f"no user 'nobody@example.test' in {subdomain}" in nobody.err
    assert len(await _rows(
        owner_engine, tenant_id, "SELECT 1 FROM audit_logs WHERE action_type = 'auth.invitation.sent'"
    )) == 2


# --- with SMTP: the invitation is emailed ------------------------------------------------------------


@dataclass
class Inbox:
    """What the local SMTP server received."""

    port: int
    received: list[EmailMessage] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.received.append(message)
        return "250 Message accepted for delivery"


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


async def test_tenant_create_emails_the_invitation_when_smtp_is_configured(
    database: Database, owner_engine: AsyncEngine, inbox: Inbox
) -> None:
    subdomain = f"mail-{uuid.uuid4().hex[:8]}"
    admin_email = f"grace-{uuid.uuid4().hex[:6]}@example.test"
    ran = await _gwm(
        database, *_create_args(subdomain, admin_email, "--fedramp"),
        GWM_SMTP_HOST="127.0.0.1", GWM_SMTP_PORT=str(inbox.port),
    )
    assert ran.code == 0, ran.err
    assert ran.out.strip().splitlines()[1] == (
        f"{admin_email} invited as 'Tenant Admin': the invitation was emailed (valid 24 hours)"
    )
    assert "token=" not in ran.out  # the link went only to the invitee
    (message,) = inbox.received
    assert message["To"] == admin_email and message["Subject"] == f"You are invited to Acme {subdomain} on GWM CRM"
    body = message.get_content()
    links = re.findall(rf"{re.escape(PUBLIC_URL)}/auth/invitations/accept\?token=\S+", body)
    assert len(links) == 1
    tenant_id = await _tenant_id(owner_engine, subdomain)
    assert tenant_id is not None
    (tenant,) = await _rows(owner_engine, tenant_id, "SELECT fedramp_compliant FROM tenants WHERE id = :t", t=tenant_id)
    assert tenant.fedramp_compliant

    # The emailed link works like the printed one (a FedRAMP tenant then asks for MFA enrolment).
    remember(PASSWORD)
    async with app_client(create_app(settings_for(database.app_url))) as client:
        accepted = await client.post(
            "/auth/invitations/accept", json={"token": _token(links[0]), "password": PASSWORD}
        )
        assert accepted.status_code == 204, accepted.text
        signed_in = await client.post(
            "/auth/login", json={"tenant": subdomain, "email": admin_email, "password": PASSWORD}
        )
    assert signed_in.status_code == 200, signed_in.text


async def test_a_refused_invitation_email_leaves_no_tenant(database: Database, owner_engine: AsyncEngine) -> None:
    subdomain = f"nomail-{uuid.uuid4().hex[:8]}"
    ran = await _gwm(
        database, *_create_args(subdomain, "b@example.test"),
        GWM_SMTP_HOST="127.0.0.1", GWM_SMTP_PORT=str(_free_port()),  # nothing listens there
    )
    assert ran.code == 2 and "the invitation email to b@example.test could not be sent; nothing was created" in ran.err
    assert await _tenant_id(owner_engine, subdomain) is None


async def test_tenant_create_help_names_every_option(database: Database) -> None:
    ran = await _gwm(database, "tenant", "create", "--help")
    assert ran.code == 0
    for option in ("--subdomain", "--name", "--plan", "--max-users", "--max-opportunity-projects", "--fedramp",
                   "--admin-email", "--admin-first-name", "--admin-last-name"):
        assert option in ran.out
