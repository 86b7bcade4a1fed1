"""Per-tenant SAML sign-in over HTTP: /metadata, /login, /acs against the real database.

Responses are built and signed with the independent test IdP of tests/auth/saml_fixtures.py
(signxml); the core's unit tests (tests/auth/test_saml.py) cover every refusal in depth, these show
each class refused through the route, with its audit row, and the good path end to end: the
request after the ACS is signed in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from lxml import etree
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.exceptions import SamlRejected
from auth.routes_saml import BINDING_COOKIE, FAILED_CODE
from auth.saml_store import DbSamlStateStore, purge_expired
from models.db import set_tenant
from tests.auth.saml_fixtures import (
    EVIL_NAME_ID,
    IDP_ENTITY_ID,
    IDP_SSO_URL,
    MFA_CONTEXT,
    PASSWORD_CONTEXT,
    XSW_ATTACKS,
    ResponseSpec,
    Sha1XMLSigner,
    TestIdp,
    b64,
    comment_in_name_id,
    doctype_payload,
    make_idp,
    sign_assertion,
    sign_response,
    signature_stripped_keyinfo_kept,
    unsigned,
)
from tests.support.clock import FakeClock
from tests.support.db import TenantRef, create_tenant
from tests.support.http import make_login_user

PUBLIC_URL = "http://127.0.0.1:8000"  # tests/support/http.py test_settings
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"


@pytest.fixture(scope="module")
def idp() -> TestIdp:
    return make_idp("sso-test-idp")


@pytest.fixture(scope="module")
def other_idp() -> TestIdp:
    return make_idp("attacker-idp")


@dataclass(frozen=True)
class SamlTenant:
    ref: TenantRef

    @property
    def sub(self) -> str:
        return self.ref.subdomain

    @property
    def sp_entity_id(self) -> str:
        return f"{PUBLIC_URL}/auth/saml/{self.sub}/metadata"

    @property
    def acs_url(self) -> str:
        return f"{PUBLIC_URL}/auth/saml/{self.sub}/acs"

    @property
    def acs_path(self) -> str:
        return f"/auth/saml/{self.sub}/acs"


async def configure(owner_engine: AsyncEngine, tenant: TenantRef, **entries: Any) -> None:
    """Upsert tenant_configurations entries; keyword `auth_saml` -> key 'auth.saml', and so on."""
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


def saml_config(idp: TestIdp | None, **overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "idp_entity_id": IDP_ENTITY_ID,
        "idp_sso_url": IDP_SSO_URL,
        "required_authn_contexts": [],
    }
    if idp is not None:
        value["idp_x509_cert"] = idp.cert_pem
    value.update(overrides)
    return value


async def saml_tenant(
    owner_engine: AsyncEngine,
    idp: TestIdp | None,
    *,
    jit: bool = True,
    linking: bool = False,
    config: dict[str, Any] | None = None,
    **tenant_columns: Any,
) -> SamlTenant:
    ref = await create_tenant(owner_engine, **tenant_columns)
    await configure(
        owner_engine,
        ref,
        auth_saml=config if config is not None else saml_config(idp),
        security_sso_jit_provisioning=jit,
        security_sso_allow_email_linking=linking,
    )
    return SamlTenant(ref)


@pytest.fixture
async def tenant(owner_engine: AsyncEngine, idp: TestIdp) -> SamlTenant:
    return await saml_tenant(owner_engine, idp)


async def start_login(client: httpx.AsyncClient, tenant: SamlTenant) -> str:
    """GET /login as the browser would; return the AuthnRequest id the redirect carries."""
    response = await client.get(f"/auth/saml/{tenant.sub}/login")
    assert response.status_code == 303, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    request = etree.fromstring(zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15))
    request_id = request.get("ID")
    assert request_id
    return str(request_id)


def spec_for(tenant: SamlTenant, request_id: str | None, **overrides: Any) -> ResponseSpec:
    values: dict[str, Any] = {
        "in_response_to": request_id,
        "audience": tenant.sp_entity_id,
        "recipient": tenant.acs_url,
        "destination": tenant.acs_url,
    }
    values.update(overrides)
    return ResponseSpec(**values)


def signed(idp: TestIdp, tenant: SamlTenant, request_id: str | None, **overrides: Any) -> str:
    return sign_assertion(spec_for(tenant, request_id, **overrides).to_xml(), idp)


async def post_acs(client: httpx.AsyncClient, tenant: SamlTenant, xml: str, **headers: str) -> httpx.Response:
    return await client.post(tenant.acs_path, data={"SAMLResponse": b64(xml)}, headers=headers or None)


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
        " session_id, after_values, risk_level, access_granted, response_status"
        " FROM audit_logs WHERE tenant_id = :t AND action_type = :a ORDER BY timestamp_utc, id",
        t=tenant.id,
        a=action,
    )


async def failure_reasons(owner_engine: AsyncEngine, tenant: TenantRef) -> list[str]:
    return [r.after_values["reason"] for r in await audit(owner_engine, tenant, "auth.saml.failed")]


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json() == {
        "error": {
            "code": FAILED_CODE,
            "message": "Single sign-on did not succeed. Start again from your organization's sign-in page.",
        }
    }
    assert response.headers["cache-control"] == "no-store"
    assert "gwm_session=" not in response.headers.get("set-cookie", "")


# --- metadata --------------------------------------------------------------------------------------


async def test_metadata_names_the_tenants_sp_entity_and_acs(
    client: httpx.AsyncClient, tenant: SamlTenant
) -> None:
    response = await client.get(f"/auth/saml/{tenant.sub}/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/samlmetadata+xml")
    root = etree.fromstring(response.content)
    md = "urn:oasis:names:tc:SAML:2.0:metadata"
    assert root.get("entityID") == tenant.sp_entity_id
    acs = root.find(f"{{{md}}}SPSSODescriptor/{{{md}}}AssertionConsumerService")
    assert acs is not None and acs.get("Location") == tenant.acs_url


async def test_unknown_tenant_and_tenant_without_saml_get_the_same_404(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    answers = []
    for sub in ("no-such-tenant", fresh_tenant.subdomain, "Not_A_Label"):
        for path, method in (("metadata", "GET"), ("login", "GET"), ("acs", "POST")):
            form = {"SAMLResponse": "eA=="} if method == "POST" else None
            response = await client.request(method, f"/auth/saml/{sub}/{path}", data=form)
            if sub == "Not_A_Label" and method == "POST":
                assert response.status_code == 415  # the middleware's form-POST pattern is lower-case only
                continue
            answers.append((response.status_code, response.text))
    assert {status for status, _ in answers} == {404}
    assert len({body for _, body in answers}) == 1
    assert await audit(owner_engine, fresh_tenant, "auth.saml.failed") == []


# --- login -----------------------------------------------------------------------------------------


async def test_login_redirects_to_the_idp_stores_the_request_and_binds_the_browser(
    client: httpx.AsyncClient, tenant: SamlTenant, owner_engine: AsyncEngine, clock: FakeClock
) -> None:
    response = await client.get(f"/auth/saml/{tenant.sub}/login")
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == IDP_SSO_URL
    query = parse_qs(location.query)
    assert set(query) == {"SAMLRequest"}  # no RelayState: nothing comes back that we would follow
    request = etree.fromstring(zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15))
    assert request.get("AssertionConsumerServiceURL") == tenant.acs_url
    request_id = request.get("ID")

    (stored,) = await rows(
        owner_engine,
        tenant.ref,
        "SELECT request_id, expires_at FROM saml_authn_requests WHERE tenant_id = :t",
        t=tenant.ref.id,
    )
    assert stored.request_id == request_id
    assert stored.expires_at == clock() + timedelta(minutes=10)

    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{BINDING_COOKIE}={request_id};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=none", f"path={tenant.acs_path}", "max-age=600"} <= attributes
    assert response.headers["cache-control"] == "no-store"


# --- the good path ---------------------------------------------------------------------------------


async def test_good_response_provisions_the_user_and_the_next_request_is_signed_in(
    client: httpx.AsyncClient, tenant: SamlTenant, idp: TestIdp, owner_engine: AsyncEngine
) -> None:
    request_id = await start_login(client, tenant)
    attributes = {"email": ["alice@acme.test"], "givenName": ["Alice"], "sn": ["Liddell"]}
    response = await post_acs(client, tenant, signed(idp, tenant, request_id, attributes=attributes))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert '<meta http-equiv="refresh" content="0;url=/">' in response.text
    cookies = response.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("gwm_session="))
    assert {"httponly", "secure", "samesite=lax", "path=/"} <= {
        p.strip().lower() for p in session.split(";")[1:]
    }
    assert any(c.startswith(f'{BINDING_COOKIE}="";') or c.startswith(f"{BINDING_COOKIE}=;") for c in cookies)

    # The request after the ACS, with the cookie the page set, is signed in.
    me = await client.get("/auth/session")
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["kind"] == "session" and body["mfaSatisfied"] is True
    assert "opportunity:read" in body["permissions"] and "user:admin" not in body["permissions"]

    (user,) = await rows(
        owner_engine,
        tenant.ref,
        "SELECT id, email, first_name, last_name, is_saml_user, saml_id, password_hash, last_login_at"
        " FROM users WHERE tenant_id = :t AND NOT is_system",
        t=tenant.ref.id,
    )
    assert str(user.id) == body["userId"]
    assert (user.email, user.first_name, user.last_name) == ("alice@acme.test", "Alice", "Liddell")
    assert user.is_saml_user is True and user.saml_id == "alice@acme.test" and user.password_hash is None
    assert user.last_login_at is not None
    (identity,) = await rows(
        owner_engine,
        tenant.ref,
        "SELECT user_id, provider, issuer, subject FROM user_identities WHERE tenant_id = :t",
        t=tenant.ref.id,
    )
    assert (identity.user_id, identity.provider, identity.issuer, identity.subject) == (
        user.id,
        "saml",
        IDP_ENTITY_ID,
        "alice@acme.test",
    )
    (role,) = await rows(
        owner_engine,
        tenant.ref,
        "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = :u",
        u=user.id,
    )
    assert role.name == "Viewer"
    (session_row,) = await rows(
        owner_engine, tenant.ref, "SELECT id, mfa_verified FROM user_sessions WHERE user_id = :u", u=user.id
    )
    assert session_row.mfa_verified is False  # a password context is not MFA
    assert body["sessionId"] == str(session_row.id)

    (succeeded,) = await audit(owner_engine, tenant.ref, "auth.saml.succeeded")
    assert succeeded.user_id == user.id and succeeded.session_id == str(session_row.id)
    assert succeeded.after_values["resolution"] == "provisioned"
    assert succeeded.after_values["authn_context"] == PASSWORD_CONTEXT
    (provisioned,) = await audit(owner_engine, tenant.ref, "auth.user.provisioned")
    # Written by the sign-in's unit of work: the system provisions, the row is the new user.
    assert provisioned.user_id == tenant.ref.system_user_id and provisioned.entity_id == user.id
    assert provisioned.after_values["email"] == user.email and "with role Viewer" in provisioned.operation_description
    (granted,) = await audit(owner_engine, tenant.ref, "auth.role_assignment.granted")
    assert granted.entity_type == "user_role" and granted.after_values["user_id"] == str(user.id)
    assert (
        await rows(
            owner_engine,
            tenant.ref,
            "SELECT 1 FROM saml_authn_requests WHERE tenant_id = :t",
            t=tenant.ref.id,
        )
        == []
    )
    # The session token appears in no audit row.
    token = session.split(";", 1)[0].split("=", 1)[1]
    everything = await rows(
        owner_engine, tenant.ref, "SELECT * FROM audit_logs WHERE tenant_id = :t", t=tenant.ref.id
    )
    assert all(token not in str(tuple(row)) for row in everything)

    # Signing in again finds the same user through the linked identity.
    client.cookies.clear()
    again = await post_acs(client, tenant, signed(idp, tenant, await start_login(client, tenant)))
    assert again.status_code == 200
    assert (await client.get("/auth/session")).json()["userId"] == str(user.id)
    assert len(await audit(owner_engine, tenant.ref, "auth.user.provisioned")) == 1


async def test_browser_form_post_gets_html_on_failure(
    client: httpx.AsyncClient, tenant: SamlTenant, other_idp: TestIdp, owner_engine: AsyncEngine
) -> None:
    request_id = await start_login(client, tenant)
    response = await post_acs(client, tenant, signed(other_idp, tenant, request_id), accept="text/html")
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert (
        FAILED_CODE in response.text and "default-src 'none'" in response.headers["content-security-policy"]
    )
    assert await failure_reasons(owner_engine, tenant.ref) == ["SIGNATURE"]


# --- refusals at the ACS ---------------------------------------------------------------------------


def _xsw(name: str) -> Any:
    def build(idp: TestIdp, other: TestIdp, tenant: SamlTenant, request_id: str) -> str:
        attack, response_signed = XSW_ATTACKS[name]
        xml = signed(idp, tenant, request_id)
        return str(attack(sign_response(xml, idp) if response_signed else xml))

    return build


def _two_assertions(idp: TestIdp, other: TestIdp, tenant: SamlTenant, request_id: str) -> str:
    first = etree.fromstring(signed(idp, tenant, request_id).encode())
    second = etree.fromstring(signed(idp, tenant, request_id, name_id=EVIL_NAME_ID).encode())
    first.append(second.find("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion"))
    return str(etree.tostring(first, encoding="unicode"))


def _comment_in_name_id(idp: TestIdp, other: TestIdp, tenant: SamlTenant, request_id: str) -> str:
    name = "alice@acme.test.evil.example"
    return comment_in_name_id(signed(idp, tenant, request_id, name_id=name), name, "alice@acme.test")


def _sha1(idp: TestIdp, other: TestIdp, tenant: SamlTenant, request_id: str) -> str:
    signer = Sha1XMLSigner(
        signature_algorithm="rsa-sha1",
        digest_algorithm="sha1",
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
    )
    return sign_assertion(spec_for(tenant, request_id).to_xml(), idp, signer=signer)


REFUSED: dict[str, tuple[Any, str]] = {
    "unsigned": (lambda i, o, t, r: unsigned(spec_for(t, r).to_xml()), "SIGNATURE"),
    "wrong key": (lambda i, o, t, r: signed(o, t, r), "SIGNATURE"),
    "XSW1": (_xsw("XSW1"), "MULTIPLE_ASSERTIONS"),
    "XSW3": (_xsw("XSW3"), "MULTIPLE_ASSERTIONS"),
    "XSW5": (_xsw("XSW5"), "MULTIPLE_ASSERTIONS"),
    "XSW8": (_xsw("XSW8"), "MULTIPLE_ASSERTIONS"),
    "two assertions": (_two_assertions, "MULTIPLE_ASSERTIONS"),
    "comment in NameID": (_comment_in_name_id, "NAMEID_COMMENT"),
    "signature removed, certificate left in KeyInfo": (
        lambda i, o, t, r: signature_stripped_keyinfo_kept(signed(i, t, r), i, variant="in_signature"),
        "SIGNATURE",
    ),
    "expired": (
        lambda i, o, t, r: signed(
            i, t, r, not_on_or_after=timedelta(hours=-1), confirmation_not_on_or_after=timedelta(hours=-1)
        ),
        "EXPIRED",
    ),
    "wrong audience": (
        lambda i, o, t, r: signed(i, t, r, audience="https://other-sp.example/metadata"),
        "WRONG_AUDIENCE",
    ),
    "wrong recipient": (
        lambda i, o, t, r: signed(i, t, r, recipient="https://evil.example/acs"),
        "WRONG_RECIPIENT",
    ),
    "another tenant's ACS as recipient": (
        lambda i, o, t, r: signed(i, t, r, recipient=f"{PUBLIC_URL}/auth/saml/other/acs"),
        "WRONG_RECIPIENT",
    ),
    "unsolicited": (lambda i, o, t, r: signed(i, t, None), "UNSOLICITED"),
    "unknown InResponseTo": (lambda i, o, t, r: signed(i, t, "_never-issued"), "UNKNOWN_REQUEST"),
    "SHA-1": (_sha1, "DEPRECATED_ALGORITHM"),
    "DOCTYPE with XXE": (lambda i, o, t, r: doctype_payload(signed(i, t, r), "xxe"), "DOCTYPE"),
}
HIGH_RISK = {"SIGNATURE", "MULTIPLE_ASSERTIONS", "NAMEID_COMMENT", "DEPRECATED_ALGORITHM", "DOCTYPE"}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_refused_at_the_acs_with_an_audit_row(
    case: str,
    client: httpx.AsyncClient,
    tenant: SamlTenant,
    idp: TestIdp,
    other_idp: TestIdp,
    owner_engine: AsyncEngine,
) -> None:
    build, reason = REFUSED[case]
    request_id = await start_login(client, tenant)
    response = await post_acs(client, tenant, build(idp, other_idp, tenant, request_id))
    assert_refused(response)
    assert (await client.get("/auth/session")).status_code == 401
    (row,) = await audit(owner_engine, tenant.ref, "auth.saml.failed")
    assert row.after_values == {"reason": reason, "stage": "acs"}
    assert row.access_granted is False and row.response_status == 403
    assert row.risk_level == ("high" if reason in HIGH_RISK else "medium")
    assert (
        await rows(
            owner_engine,
            tenant.ref,
            "SELECT 1 FROM users WHERE tenant_id = :t AND NOT is_system",
            t=tenant.ref.id,
        )
        == []
    )
    assert await audit(owner_engine, tenant.ref, "auth.saml.succeeded") == []


async def test_replayed_response_is_refused(
    client: httpx.AsyncClient, tenant: SamlTenant, idp: TestIdp, owner_engine: AsyncEngine
) -> None:
    xml = signed(idp, tenant, await start_login(client, tenant))
    assert (await post_acs(client, tenant, xml)).status_code == 200
    client.cookies.clear()
    await start_login(client, tenant)  # a fresh binding cookie does not make the old response new
    assert_refused(await post_acs(client, tenant, xml))
    assert await failure_reasons(owner_engine, tenant.ref) == ["REPLAY"]
    (row,) = await audit(owner_engine, tenant.ref, "auth.saml.failed")
    assert row.risk_level == "high"


async def test_request_id_expires_after_ten_minutes(
    client: httpx.AsyncClient, tenant: SamlTenant, idp: TestIdp, owner_engine: AsyncEngine, clock: FakeClock
) -> None:
    request_id = await start_login(client, tenant)
    clock.advance(minutes=10, seconds=1)
    assert_refused(await post_acs(client, tenant, signed(idp, tenant, request_id)))
    assert await failure_reasons(owner_engine, tenant.ref) == ["UNKNOWN_REQUEST"]


async def test_missing_binding_cookie_is_refused_and_consumes_nothing(
    client: httpx.AsyncClient, tenant: SamlTenant, idp: TestIdp, owner_engine: AsyncEngine
) -> None:
    request_id = await start_login(client, tenant)
    client.cookies.clear()
    assert_refused(await post_acs(client, tenant, signed(idp, tenant, request_id)))
    assert await failure_reasons(owner_engine, tenant.ref) == ["NO_BINDING_COOKIE"]
    stored = await rows(
        owner_engine,
        tenant.ref,
        "SELECT request_id FROM saml_authn_requests WHERE tenant_id = :t",
        t=tenant.ref.id,
    )
    assert [r.request_id for r in stored] == [request_id]


async def test_response_to_another_browsers_request_is_refused(
    client: httpx.AsyncClient, tenant: SamlTenant, idp: TestIdp, owner_engine: AsyncEngine
) -> None:
    # Login CSRF: the attacker's own valid response (to the attacker's request) posted through the
    # victim's browser, whose binding cookie names the victim's own request.
    attackers_request = await start_login(client, tenant)
    client.cookies.clear()
    await start_login(client, tenant)  # the victim's browser
    assert_refused(
        await post_acs(client, tenant, signed(idp, tenant, attackers_request, name_id="mallory@x.test"))
    )
    assert await failure_reasons(owner_engine, tenant.ref) == ["BINDING_MISMATCH"]
    (row,) = await audit(owner_engine, tenant.ref, "auth.saml.failed")
    assert row.risk_level == "high"


@pytest.mark.parametrize(
    "form",
    [{}, {"SAMLResponse": ""}, {"SAMLResponse": "not base64!"}, {"SAMLResponse": ["eA==", "eA=="]}],
    ids=["missing", "empty", "garbage", "twice"],
)
async def test_malformed_form_is_refused(
    form: dict[str, Any], client: httpx.AsyncClient, tenant: SamlTenant, owner_engine: AsyncEngine
) -> None:
    await start_login(client, tenant)
    response = await client.post(tenant.acs_path, data=form or {"other": "x"})
    assert_refused(response)
    assert await failure_reasons(owner_engine, tenant.ref) == ["INVALID"]


async def test_acs_accepts_only_form_encoded_posts(client: httpx.AsyncClient, tenant: SamlTenant) -> None:
    response = await client.post(tenant.acs_path, json={"SAMLResponse": "eA=="})
    assert response.status_code == 415


async def test_transient_name_id_is_refused(
    client: httpx.AsyncClient, tenant: SamlTenant, idp: TestIdp, owner_engine: AsyncEngine
) -> None:
    request_id = await start_login(client, tenant)
    xml = (
        spec_for(tenant, request_id, name_id="_3f2a9c")
        .to_xml()
        .replace("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress", TRANSIENT)
    )
    assert_refused(await post_acs(client, tenant, sign_assertion(xml, idp)))
    assert await failure_reasons(owner_engine, tenant.ref) == ["TRANSIENT_NAME_ID"]


# --- configuration fails closed -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        pytest.param(saml_config(None), "NO_IDP_CERT", id="no-certificate"),
        pytest.param(saml_config(None, idp_x509_cert="   "), "NO_IDP_CERT", id="blank-certificate"),
        pytest.param(
            saml_config(None, idp_x509_cert="not a certificate"), "NO_IDP_CERT", id="bad-certificate"
        ),
        pytest.param({"idp_sso_url": IDP_SSO_URL}, "CONFIG", id="no-entity-id"),
        pytest.param(["not", "an", "object"], "CONFIG", id="not-an-object"),
    ],
)
async def test_unusable_configuration_refuses_login_and_acs(
    config: Any, reason: str, client: httpx.AsyncClient, owner_engine: AsyncEngine, idp: TestIdp
) -> None:
    tenant = await saml_tenant(owner_engine, None, config=config)
    assert_refused(await client.get(f"/auth/saml/{tenant.sub}/login", follow_redirects=False))
    assert (
        await rows(
            owner_engine,
            tenant.ref,
            "SELECT 1 FROM saml_authn_requests WHERE tenant_id = :t",
            t=tenant.ref.id,
        )
        == []
    )
    # Even a response the IdP really signed is refused: there is no key to check it with.
    assert_refused(await post_acs(client, tenant, signed(idp, tenant, "_any")))
    assert (await client.get(f"/auth/saml/{tenant.sub}/metadata")).status_code == 404
    failed = await audit(owner_engine, tenant.ref, "auth.saml.failed")
    assert [(r.after_values["reason"], r.after_values["stage"]) for r in failed] == [
        (reason, "login"),
        (reason, "acs"),
    ]


# --- MFA -------------------------------------------------------------------------------------------


async def test_mfa_tenant_without_required_contexts_is_refused_at_config_time(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, idp: TestIdp
) -> None:
    tenant = await saml_tenant(owner_engine, idp, fedramp_compliant=True)
    assert_refused(await client.get(f"/auth/saml/{tenant.sub}/login"))
    assert await failure_reasons(owner_engine, tenant.ref) == ["CONFIG"]


async def test_mfa_tenant_requires_the_configured_authn_context(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, idp: TestIdp
) -> None:
    tenant = await saml_tenant(
        owner_engine,
        idp,
        config=saml_config(idp, required_authn_contexts=[MFA_CONTEXT]),
        fedramp_compliant=True,
    )
    request_id = await start_login(client, tenant)
    assert_refused(
        await post_acs(client, tenant, signed(idp, tenant, request_id, authn_context=PASSWORD_CONTEXT))
    )
    assert await failure_reasons(owner_engine, tenant.ref) == ["AUTHN_CONTEXT"]

    request_id = await start_login(client, tenant)
    response = await post_acs(client, tenant, signed(idp, tenant, request_id, authn_context=MFA_CONTEXT))
    assert response.status_code == 200, response.text
    body = (await client.get("/auth/session")).json()
    assert body["mfaSatisfied"] is True and body["mfaEnrollmentRequired"] is False
    (session_row,) = await rows(
        owner_engine,
        tenant.ref,
        "SELECT mfa_verified FROM user_sessions WHERE tenant_id = :t",
        t=tenant.ref.id,
    )
    assert session_row.mfa_verified is True
    (succeeded,) = await audit(owner_engine, tenant.ref, "auth.saml.succeeded")
    assert succeeded.after_values["mfa_asserted"] is True


async def test_totp_user_without_idp_mfa_still_owes_the_second_factor(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, idp: TestIdp
) -> None:
    tenant = await saml_tenant(owner_engine, idp, jit=False, linking=True)
    await make_login_user(owner_engine, tenant.ref, email="alice@acme.test", mfa_enabled=True)
    response = await post_acs(client, tenant, signed(idp, tenant, await start_login(client, tenant)))
    assert response.status_code == 200
    body = (await client.get("/auth/session")).json()
    assert body["mfaSatisfied"] is False
    # With a well-known MFA context from the IdP, the session counts as MFA-verified.
    client.cookies.clear()
    xml = signed(
        idp, tenant, await start_login(client, tenant), authn_context="https://refeds.org/profile/mfa"
    )
    assert (await post_acs(client, tenant, xml)).status_code == 200
    assert (await client.get("/auth/session")).json()["mfaSatisfied"] is True


# --- linking and provisioning ------------------------------------------------------------------------


async def test_existing_user_is_linked_by_email_when_the_tenant_allows_it(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, idp: TestIdp
) -> None:
    tenant = await saml_tenant(owner_engine, idp, jit=False, linking=True)
    user = await make_login_user(owner_engine, tenant.ref, email="Alice@Acme.test", roles=["Capture Manager"])
    response = await post_acs(client, tenant, signed(idp, tenant, await start_login(client, tenant)))
    assert response.status_code == 200, response.text
    body = (await client.get("/auth/session")).json()
    assert body["userId"] == str(user.id) and "opportunity:write" in body["permissions"]
    (identity,) = await rows(
        owner_engine,
        tenant.ref,
        "SELECT user_id, subject FROM user_identities WHERE tenant_id = :t",
        t=tenant.ref.id,
    )
    assert (identity.user_id, identity.subject) == (user.id, "alice@acme.test")
    (linked,) = await audit(owner_engine, tenant.ref, "auth.saml.identity_linked")
    assert linked.user_id == user.id
    assert (await audit(owner_engine, tenant.ref, "auth.saml.succeeded"))[0].after_values[
        "resolution"
    ] == "linked"


async def test_email_match_without_linking_is_refused(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, idp: TestIdp
) -> None:
    tenant = await saml_tenant(owner_engine, idp, jit=True, linking=False)
    await make_login_user(owner_engine, tenant.ref, email="alice@acme.test")
    assert_refused(await post_acs(client, tenant, signed(idp, tenant, await start_login(client, tenant))))
    assert await failure_reasons(owner_engine, tenant.ref) == ["EMAIL_IN_USE"]
    assert (
        await rows(
            owner_engine, tenant.ref, "SELECT 1 FROM user_identities WHERE tenant_id = :t", t=tenant.ref.id
        )
        == []
    )


async def test_unknown_user_without_provisioning_is_refused(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, idp: TestIdp
) -> None:
    tenant = await saml_tenant(owner_engine, idp, jit=False, linking=True)
    assert_refused(await post_acs(client, tenant, signed(idp, tenant, await start_login(client, tenant))))
    assert await failure_reasons(owner_engine, tenant.ref) == ["NOT_LINKED"]


async def test_provisioning_stops_at_max_users(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, idp: TestIdp
) -> None:
    tenant = await saml_tenant(owner_engine, idp, max_users=2)
    await make_login_user(owner_engine, tenant.ref)
    ok = await post_acs(
        client,
        tenant,
        signed(idp, tenant, await start_login(client, tenant), name_id="a@acme.test", attributes={}),
    )
    assert ok.status_code == 200, ok.text
    client.cookies.clear()
    xml = signed(idp, tenant, await start_login(client, tenant), name_id="b@acme.test", attributes={})
    assert_refused(await post_acs(client, tenant, xml))
    assert await failure_reasons(owner_engine, tenant.ref) == ["MAX_USERS"]
    emails = await rows(
        owner_engine,
        tenant.ref,
        "SELECT email FROM users WHERE tenant_id = :t AND NOT is_system ORDER BY email",
        t=tenant.ref.id,
    )
    assert len(emails) == 2 and "a@acme.test" in [r.email for r in emails]


async def test_provisioning_refuses_an_administrator_role(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, idp: TestIdp
) -> None:
    tenant = await saml_tenant(owner_engine, idp)
    await configure(owner_engine, tenant.ref, security_sso_jit_role="Tenant Admin")
    assert_refused(await post_acs(client, tenant, signed(idp, tenant, await start_login(client, tenant))))
    assert await failure_reasons(owner_engine, tenant.ref) == ["JIT_ROLE"]


async def test_deactivated_user_is_refused(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, idp: TestIdp
) -> None:
    tenant = await saml_tenant(owner_engine, idp, jit=False, linking=True)
    user = await make_login_user(owner_engine, tenant.ref, email="alice@acme.test", is_active=False)
    assert_refused(await post_acs(client, tenant, signed(idp, tenant, await start_login(client, tenant))))
    (row,) = await audit(owner_engine, tenant.ref, "auth.saml.failed")
    assert row.after_values["reason"] == "USER_INACTIVE" and row.user_id == user.id


# --- the shared request / replay store ---------------------------------------------------------------


async def test_store_answers_once_under_concurrency_and_per_tenant(
    app_engine: AsyncEngine, owner_engine: AsyncEngine
) -> None:
    first, second = await create_tenant(owner_engine), await create_tenant(owner_engine)
    clock = FakeClock()
    store = DbSamlStateStore(app_engine, tenant_id=first.id, subdomain=first.subdomain, clock=clock)
    other = DbSamlStateStore(app_engine, tenant_id=second.id, subdomain=second.subdomain, clock=clock)

    await store.issue_request("_r1")
    assert await other.consume_request_id(second.subdomain, "_r1") is False  # another tenant's id
    assert await store.consume_request_id(second.subdomain, "_r1") is False  # asked for another tenant
    consumed = await asyncio.gather(*(store.consume_request_id(first.subdomain, "_r1") for _ in range(6)))
    assert sorted(consumed) == [False] * 5 + [True]

    until = clock() + timedelta(minutes=5)
    remembered = await asyncio.gather(
        *(store.remember_assertion(first.subdomain, "_a1", until) for _ in range(6))
    )
    assert sorted(remembered) == [False] * 5 + [True]
    assert await other.remember_assertion(second.subdomain, "_a1", until) is True  # the cache is per tenant

    await store.issue_request("_r2")
    clock.advance(minutes=10)
    assert await store.consume_request_id(first.subdomain, "_r2") is False  # expired: refused, and gone
    with pytest.raises(SamlRejected) as caught:
        await store.remember_assertion(first.subdomain, "_" + "x" * 300, until)
    assert caught.value.reason_code == "INVALID"

    await store.issue_request("_r3")
    clock.advance(minutes=11)
    assert await purge_expired(app_engine, first.id, clock()) == (1, 1)
    assert await purge_expired(app_engine, second.id, clock()) == (0, 1)
