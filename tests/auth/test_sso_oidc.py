"""OIDC bearer tokens end to end: a test issuer (keys made here, JWKS served by the real uvicorn
server of tests/auth/test_oidc.py on 127.0.0.1), tenants configured in the database, and calls to
GET /auth/session over HTTP with `Authorization: Bearer <jwt>`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from auth.oidc_login import amr_shows_mfa
from models.db import set_tenant
from server.app import create_app
from tests.auth.test_oidc import DROP, JwksServer, Keys, claims, encode, rsa_jwk
from tests.conftest import Database
from tests.support import http as support_http
from tests.support.clock import FakeClock
from tests.support.db import TenantRef, create_tenant
from tests.support.http import app_client, make_login_user

AUDIENCE = "api://gwm-crm"
INVALID = {"error": {"code": "INVALID_TOKEN", "message": "The access token is not valid."}}
ACCOUNT = {
    "error": {
        "code": "SSO_ACCOUNT_UNAVAILABLE",
        "message": "The access token is valid, but its user has no usable account here.",
    }
}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        other_rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(jwks_server: JwksServer, keys: Keys) -> JwksServer:
    jwks_server.reset(keys.jwks())
    return jwks_server


@pytest.fixture
def app(database: Database, clock: FakeClock, jwks_server: JwksServer) -> Starlette:
    settings = support_http.test_settings(database.app_url, outbound_allow=jwks_server.base_url.removeprefix("http://"))
    application = create_app(settings)
    application.state.auth.clock = clock
    return application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as http:
        yield http


@dataclass(frozen=True)
class OidcTenant:
    ref: TenantRef
    issuer: str
    keys: Keys

    def token(self, **overrides: Any) -> str:
        """An RS256 token from this tenant's issuer; `header` replaces the header, `key` the signing key."""
        header = overrides.pop("header", {"alg": "RS256", "typ": "JWT", "kid": self.keys.rsa_kid})
        key = overrides.pop("key", self.keys.rsa)
        values = {"iss": self.issuer, "aud": AUDIENCE, "sub": "user-1", "email": "ada@example.test"}
        values.update(overrides)
        return encode(header, claims(**values), key)


async def configure(owner_engine: AsyncEngine, tenant: TenantRef, **entries: Any) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        for name, value in entries.items():
            await conn.execute(
                text(
                    "INSERT INTO tenant_configurations (tenant_id, config_key, config_value, config_type)"
                    " VALUES (:t, :k, CAST(:v AS jsonb), 'json') ON CONFLICT (tenant_id, config_key)"
                    " DO UPDATE SET config_value = EXCLUDED.config_value"
                ),
                {"t": tenant.id, "k": name.replace("_", ".", 1), "v": json.dumps(value)},
            )


TenantFactory = Callable[..., Any]


@pytest.fixture
def oidc_tenant(owner_engine: AsyncEngine, server: JwksServer, keys: Keys) -> TenantFactory:
    async def make(
        *, jit: bool = False, linking: bool = False, issuer: str | None = None, **tenant_columns: Any
    ) -> OidcTenant:
        ref = await create_tenant(owner_engine, **tenant_columns)
        # Every test tenant gets its own issuer: the session's database keeps all earlier tenants.
        issuer = issuer or f"https://idp.example.test/{ref.subdomain}"
        await configure(
            owner_engine,
            ref,
            auth_oidc={"issuer": issuer, "audience": AUDIENCE, "jwks_uri": f"{server.base_url}/jwks"},
            security_sso_jit_provisioning=jit,
            security_sso_allow_email_linking=linking,
        )
        return OidcTenant(ref, issuer, keys)

    return make


async def link(
    owner_engine: AsyncEngine, tenant: OidcTenant, user_id: uuid.UUID, subject: str = "user-1"
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.ref.id)
        await conn.execute(
            text(
                "INSERT INTO user_identities (tenant_id, user_id, provider, issuer, subject)"
                " VALUES (:t, :u, 'oidc', :i, :s)"
            ),
            {"t": tenant.ref.id, "u": user_id, "i": tenant.issuer, "s": subject},
        )


async def rows(owner_engine: AsyncEngine, tenant: TenantRef, sql: str, **params: Any) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        result = list((await conn.execute(text(sql), params)).all())
        await conn.rollback()
    return result


async def audit(owner_engine: AsyncEngine, tenant: TenantRef, action: str) -> list[Any]:
    return await rows(
        owner_engine,
        tenant,
        "SELECT user_id, entity_type, entity_id, operation_description,"
        " after_values, risk_level, access_granted FROM audit_logs"
        " WHERE tenant_id = :t AND action_type = :a ORDER BY timestamp_utc, id",
        t=tenant.id,
        a=action,
    )


async def rejections(owner_engine: AsyncEngine, tenant: TenantRef) -> list[str]:
    return [r.after_values["reason"] for r in await audit(owner_engine, tenant, "auth.oidc.rejected")]


async def call(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/auth/session", headers={"authorization": f"Bearer {token}"})


# --- the good path ---------------------------------------------------------------------------------


async def test_good_token_is_a_principal_with_the_users_permissions(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine, server: JwksServer
) -> None:
    tenant = await oidc_tenant()
    user = await make_login_user(owner_engine, tenant.ref, roles=["Capture Manager"])
    await link(owner_engine, tenant, user.id)

    response = await call(client, tenant.token())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (
        body["kind"] == "oidc" and body["userId"] == str(user.id) and body["tenantId"] == str(tenant.ref.id)
    )
    assert body["sessionId"] is None and body["mfaSatisfied"] is True
    assert "opportunity:write" in body["permissions"] and "user:admin" not in body["permissions"]
    es256 = encode(
        {"alg": "ES256", "kid": tenant.keys.ec_kid},
        claims(iss=tenant.issuer, aud=AUDIENCE, sub="user-1"),
        tenant.keys.ec,
    )
    assert (await call(client, es256)).status_code == 200
    # Stateless: no session row; the key set was fetched once.
    assert (
        await rows(owner_engine, tenant.ref, "SELECT 1 FROM user_sessions WHERE user_id = :u", u=user.id)
        == []
    )
    assert server.requests == 1
    (identity,) = await rows(
        owner_engine,
        tenant.ref,
        "SELECT last_used_at FROM user_identities WHERE tenant_id = :t",
        t=tenant.ref.id,
    )
    assert identity.last_used_at is not None
    assert await audit(owner_engine, tenant.ref, "auth.oidc.rejected") == []


async def test_audience_list_picks_the_tenant(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant()
    user = await make_login_user(owner_engine, tenant.ref)
    await link(owner_engine, tenant, user.id)
    response = await call(client, tenant.token(aud=["https://graph.example.test", AUDIENCE]))
    assert response.status_code == 200, response.text


async def test_a_role_change_applies_to_the_next_request(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant()
    user = await make_login_user(owner_engine, tenant.ref, roles=["Viewer"])
    await link(owner_engine, tenant, user.id)
    token = tenant.token()
    assert "opportunity:write" not in (await call(client, token)).json()["permissions"]
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.ref.id)
        await conn.execute(
            text(
                "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by)"
                " SELECT :t, :u, id, :by FROM roles WHERE tenant_id = :t AND name = 'Capture Manager'"
            ),
            {"t": tenant.ref.id, "u": user.id, "by": tenant.ref.system_user_id},
        )
    assert "opportunity:write" in (await call(client, token)).json()["permissions"]


# --- refused tokens --------------------------------------------------------------------------------


def _public_pem(keys: Keys) -> bytes:
    return keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _now() -> int:
    import time

    return int(time.time())


# case -> (token factory, reason audited in the tenant, or None when no tenant is found)
REFUSED: dict[str, tuple[Callable[[OidcTenant, JwksServer], str], str | None]] = {
    "alg none": (
        lambda t, s: encode({"alg": "none", "kid": t.keys.rsa_kid}, claims(iss=t.issuer, aud=AUDIENCE)),
        "ALG_NOT_ALLOWED",
    ),
    "HS256 signed with the public key": (
        lambda t, s: t.token(header={"alg": "HS256", "kid": t.keys.rsa_kid}, key=_public_pem(t.keys)),
        "ALG_NOT_ALLOWED",
    ),
    "wrong aud": (lambda t, s: t.token(aud="api://someone-else"), None),
    "wrong iss": (lambda t, s: t.token(iss=t.issuer + "/"), None),
    "unknown issuer": (lambda t, s: t.token(iss="https://unknown-idp.example.test"), None),
    "no aud": (lambda t, s: t.token(aud=DROP), None),
    "expired": (lambda t, s: t.token(exp=_now() - 3600), "EXPIRED"),
    "not yet valid": (lambda t, s: t.token(nbf=_now() + 3600), "NOT_YET_VALID"),
    "embedded jwk header": (
        lambda t, s: t.token(
            header={"alg": "RS256", "kid": t.keys.rsa_kid, "jwk": rsa_jwk(t.keys.other_rsa, t.keys.rsa_kid)},
            key=t.keys.other_rsa,
        ),
        "KEY_REFERENCE_HEADER",
    ),
    "jku header": (
        lambda t, s: t.token(
            header={"alg": "RS256", "kid": "attacker", "jku": f"{s.base_url}/attacker/jwks"},
            key=t.keys.other_rsa,
        ),
        "KEY_REFERENCE_HEADER",
    ),
    "unknown kid": (lambda t, s: t.token(header={"alg": "RS256", "kid": "no-such-kid"}), "UNKNOWN_KID"),
    "signed by another key": (lambda t, s: t.token(key=t.keys.other_rsa), "BAD_SIGNATURE"),
    "not a JWT": (lambda t, s: "a.b.c", None),
}
HIGH = {"ALG_NOT_ALLOWED", "KEY_REFERENCE_HEADER", "BAD_SIGNATURE"}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_token_is_refused(
    case: str,
    client: httpx.AsyncClient,
    oidc_tenant: TenantFactory,
    owner_engine: AsyncEngine,
    server: JwksServer,
) -> None:
    tenant = await oidc_tenant()
    user = await make_login_user(owner_engine, tenant.ref)
    await link(owner_engine, tenant, user.id)
    factory, reason = REFUSED[case]
    response = await call(client, factory(tenant, server))
    assert response.status_code == 401
    assert response.json() == INVALID
    assert response.headers["www-authenticate"].startswith("Bearer")
    audited = await audit(owner_engine, tenant.ref, "auth.oidc.rejected")
    assert [r.after_values["reason"] for r in audited] == ([reason] if reason else [])
    for row in audited:
        assert row.access_granted is False
        assert row.risk_level == ("high" if reason in HIGH else "low" if reason == "EXPIRED" else "medium")
        assert row.after_values["issuer"] == tenant.issuer
    assert server.hits["/attacker/jwks"] == 0


async def test_unreachable_key_set_fails_closed(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine, server: JwksServer
) -> None:
    tenant = await oidc_tenant()
    user = await make_login_user(owner_engine, tenant.ref)
    await link(owner_engine, tenant, user.id)
    server.status, server.body = 503, b"{}"
    response = await call(client, tenant.token())
    assert response.status_code == 401 and response.json() == INVALID
    assert await rejections(owner_engine, tenant.ref) == ["JWKS_UNAVAILABLE"]


async def test_unusable_tenant_configuration_is_refused(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant()
    await configure(
        owner_engine,
        tenant.ref,
        auth_oidc={"issuer": tenant.issuer, "audience": AUDIENCE, "jwks_uri": "x", "algorithms": ["HS256"]},
    )
    assert (await call(client, tenant.token())).json() == INVALID
    assert await rejections(owner_engine, tenant.ref) == ["CONFIG"]


async def test_two_tenants_trusting_one_issuer_and_audience_are_refused(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    first = await oidc_tenant()
    second = await oidc_tenant(issuer=first.issuer)
    user = await make_login_user(owner_engine, first.ref)
    await link(owner_engine, first, user.id)
    assert (await call(client, first.token())).json() == INVALID
    for tenant in (first, second):
        (row,) = await audit(owner_engine, tenant.ref, "auth.oidc.rejected")
        assert row.after_values["reason"] == "AMBIGUOUS_PROVIDER" and row.risk_level == "high"


# --- accounts --------------------------------------------------------------------------------------


async def test_no_linked_user_is_refused(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant()
    await make_login_user(owner_engine, tenant.ref, email="ada@example.test")  # linking is off
    response = await call(client, tenant.token())
    assert response.status_code == 401 and response.json() == ACCOUNT
    assert await rejections(owner_engine, tenant.ref) == ["NOT_LINKED"]


@pytest.mark.parametrize("columns", [{"is_active": False}], ids=["deactivated"])
async def test_unusable_user_is_refused(
    columns: dict[str, Any], client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant()
    user = await make_login_user(owner_engine, tenant.ref, **columns)
    await link(owner_engine, tenant, user.id)
    assert (await call(client, tenant.token())).json() == ACCOUNT
    (row,) = await audit(owner_engine, tenant.ref, "auth.oidc.rejected")
    assert row.after_values["reason"] == "USER_INACTIVE" and row.user_id == user.id


async def test_identity_of_the_system_user_is_refused(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant()
    await link(owner_engine, tenant, tenant.ref.system_user_id)
    assert (await call(client, tenant.token())).json() == ACCOUNT
    assert await rejections(owner_engine, tenant.ref) == ["USER_INACTIVE"]


async def test_email_links_only_when_verified_and_allowed(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant(linking=True)
    user = await make_login_user(owner_engine, tenant.ref, email="Ada@Example.test", roles=["BD Analyst"])

    for unverified in (False, "true", DROP):
        response = await call(client, tenant.token(email_verified=unverified))
        assert response.json() == ACCOUNT
    assert await rejections(owner_engine, tenant.ref) == ["EMAIL_NOT_VERIFIED"] * 3
    assert (
        await rows(
            owner_engine, tenant.ref, "SELECT 1 FROM user_identities WHERE tenant_id = :t", t=tenant.ref.id
        )
        == []
    )

    response = await call(client, tenant.token(email_verified=True))
    assert response.status_code == 200, response.text
    assert response.json()["userId"] == str(user.id)
    (identity,) = await rows(
        owner_engine,
        tenant.ref,
        "SELECT user_id, provider, issuer, subject FROM user_identities WHERE tenant_id = :t",
        t=tenant.ref.id,
    )
    assert tuple(identity) == (user.id, "oidc", tenant.issuer, "user-1")
    (linked,) = await audit(owner_engine, tenant.ref, "auth.oidc.identity_linked")
    assert linked.user_id == user.id

    # Once linked, the identity is found by (issuer, subject): the email no longer matters.
    assert (
        await call(client, tenant.token(email="changed@example.test", email_verified=False))
    ).status_code == 200
    # A second identity at the same issuer claiming the same email does not take the account over.
    response = await call(client, tenant.token(sub="someone-else", email_verified=True))
    assert response.json() == ACCOUNT
    assert (await rejections(owner_engine, tenant.ref))[-1] == "IDENTITY_CONFLICT"


async def test_email_linking_off_refuses_even_a_verified_email(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant(linking=False, jit=True)
    await make_login_user(owner_engine, tenant.ref, email="ada@example.test")
    assert (await call(client, tenant.token(email_verified=True))).json() == ACCOUNT
    assert await rejections(owner_engine, tenant.ref) == ["EMAIL_IN_USE"]


async def test_just_in_time_provisioning_within_max_users(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant(jit=True, max_users=1)
    token = tenant.token(sub="new-1", email="new-1@example.test", given_name="New", family_name="Person")
    response = await call(client, token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (
        "opportunity:read" in body["permissions"] and "opportunity:write" not in body["permissions"]
    )  # Viewer
    (user,) = await rows(
        owner_engine,
        tenant.ref,
        "SELECT id, email, first_name, last_name, is_saml_user, password_hash, email_verified FROM users"
        " WHERE tenant_id = :t AND NOT is_system",
        t=tenant.ref.id,
    )
    assert str(user.id) == body["userId"]
    assert (user.email, user.first_name, user.last_name) == ("new-1@example.test", "New", "Person")
    assert user.is_saml_user is False and user.password_hash is None and user.email_verified is True
    (provisioned,) = await audit(owner_engine, tenant.ref, "auth.user.provisioned")
    # Written by the sign-in's unit of work: the system provisions, the row is the new user.
    assert provisioned.user_id == tenant.ref.system_user_id and provisioned.entity_id == user.id
    assert provisioned.after_values["email"] == user.email and "with role Viewer" in provisioned.operation_description
    (granted,) = await audit(owner_engine, tenant.ref, "auth.role_assignment.granted")
    assert granted.entity_type == "user_role" and granted.after_values["user_id"] == str(user.id)

    assert (await call(client, token)).json()["userId"] == str(user.id)  # matched now, not provisioned again
    assert len(await audit(owner_engine, tenant.ref, "auth.user.provisioned")) == 1

    full = await call(client, tenant.token(sub="new-2", email="new-2@example.test"))
    assert full.json() == ACCOUNT
    assert await rejections(owner_engine, tenant.ref) == ["MAX_USERS"]
    unverified = await call(
        client, tenant.token(sub="new-3", email="new-3@example.test", email_verified=False)
    )
    assert unverified.json() == ACCOUNT
    no_email = await call(client, tenant.token(sub="new-4", email=DROP))
    assert no_email.json() == ACCOUNT
    assert (await rejections(owner_engine, tenant.ref))[1:] == ["EMAIL_NOT_VERIFIED", "NO_EMAIL"]
    assert (
        len(
            await rows(
                owner_engine,
                tenant.ref,
                "SELECT 1 FROM users WHERE tenant_id = :t AND NOT is_system",
                t=tenant.ref.id,
            )
        )
        == 1
    )


# --- MFA -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amr", "accepted"),
    [
        (["pwd", "mfa"], True),
        (["mfa"], True),
        (["pwd", "otp"], True),
        (["hwk", "pin"], True),
        (["sc", "fpt"], True),
        (["pwd"], False),
        (["otp"], False),
        (["pwd", "sms"], False),
        (DROP, False),
        ("mfa", False),  # not a list
    ],
)
async def test_mfa_tenant_requires_amr_to_show_mfa(
    amr: Any, accepted: bool, client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant(fedramp_compliant=True)
    user = await make_login_user(owner_engine, tenant.ref)
    await link(owner_engine, tenant, user.id)
    response = await call(client, tenant.token(amr=amr))
    if accepted:
        assert response.status_code == 200, response.text
        assert await rejections(owner_engine, tenant.ref) == []
    else:
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "IDP_MFA_REQUIRED"
        assert await rejections(owner_engine, tenant.ref) == ["MFA_NOT_ASSERTED"]


async def test_mfa_tenant_does_not_provision_without_mfa(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant(jit=True)
    await configure(owner_engine, tenant.ref, security_mfa_required=True)
    assert (await call(client, tenant.token(amr=["pwd"]))).status_code == 401
    assert (
        await rows(
            owner_engine,
            tenant.ref,
            "SELECT 1 FROM users WHERE tenant_id = :t AND NOT is_system",
            t=tenant.ref.id,
        )
        == []
    )
    assert (await call(client, tenant.token(amr=["pwd", "mfa"]))).status_code == 200


async def test_totp_user_needs_mfa_from_the_idp_even_where_the_tenant_does_not_require_it(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant()
    user = await make_login_user(owner_engine, tenant.ref, mfa_enabled=True)
    await link(owner_engine, tenant, user.id)
    assert (await call(client, tenant.token(amr=["pwd"]))).json()["error"]["code"] == "IDP_MFA_REQUIRED"
    assert (await call(client, tenant.token(amr=["pwd", "otp"]))).status_code == 200


def test_amr_rule() -> None:
    assert amr_shows_mfa(["mfa"]) and amr_shows_mfa(["swk", "face"])
    assert (
        not amr_shows_mfa([])
        and not amr_shows_mfa(["pwd", "pin", "kba"])
        and not amr_shows_mfa(["hwk", "user"])
    )


async def test_concurrent_first_requests_provision_one_user(
    client: httpx.AsyncClient, oidc_tenant: TenantFactory, owner_engine: AsyncEngine
) -> None:
    tenant = await oidc_tenant(jit=True)
    token = tenant.token(sub="burst", email="burst@example.test")
    responses = await asyncio.gather(*(call(client, token) for _ in range(6)))
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert len({r.json()["userId"] for r in responses}) == 1
    assert len(await audit(owner_engine, tenant.ref, "auth.user.provisioned")) == 1
    assert await rejections(owner_engine, tenant.ref) == []
