"""Browser sign-in through a tenant's OpenID provider, end to end: a small OpenID provider (discovery,
JWKS, authorize, token; ID tokens signed RS256 with a key made here) runs on a real uvicorn on
127.0.0.1, the app runs in-process with its outbound guard allowing that one host:port, and each
test walks the browser's redirects by hand: /auth/oidc/<tenant>/login -> the provider's authorize
endpoint -> /auth/oidc/<tenant>/callback -> a session cookie that reads /graphql."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from auth.routes_oidc import BINDING_COOKIE
from models.db import set_tenant
from resolvers.identity.tenant_settings import config_aad
from server.app import create_app
from tests.auth.test_sso_oidc import configure
from tests.conftest import Database
from tests.support import http as support_http
from tests.support.clock import FakeClock
from tests.support.db import TenantRef, create_tenant
from tests.support.http import app_client, make_login_user
from tests.support.secrets import remember

VIEWER = {"query": "{ viewer { user { email } } }"}


# --- the fake OpenID provider -----------------------------------------------------------------------


@dataclass
class Realm:
    """One issuer of the provider (`<base>/<name>`), with one registered client."""

    name: str
    issuer: str
    client_id: str
    client_secret: str | None
    subject: str = "subject-1"
    email: str = "ada@example.test"
    amr: list[str] | None = field(default_factory=lambda: ["pwd", "otp"])
    nonce: str | None = None  # set: every ID token carries this nonce instead of the requested one
    lax: bool = False  # set: the token endpoint redeems any code, whoever it was issued for
    token_padding: int = 0  # characters of padding in the token answer
    token_gzip: bool = False  # set: the token answer comes gzip-compressed, asked or not
    token_status: int = 200


@dataclass
class _Code:
    realm: str
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str


class FakeOpenIdProvider:
    """A Starlette app on a real uvicorn in a background thread, serving any number of realms."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "fake-rsa-1", "use": "sig"})
        self.realms: dict[str, Realm] = {}
        self.codes: dict[str, _Code] = {}
        self.token_requests: list[dict[str, str]] = []
        app = Starlette(
            routes=[
                Route("/{realm}/.well-known/openid-configuration", self._discovery),
                Route("/{realm}/jwks", self._jwks),
                Route("/{realm}/authorize", self._authorize),
                Route("/{realm}/token", self._token, methods=["POST"]),
            ]
        )
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, lifespan="off", ws="none", http="h11", log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="fake-op", daemon=True
        )

    def realm(self, *, secret: bool = True, **values: Any) -> Realm:
        name = f"r{uuid.uuid4().hex[:10]}"
        realm = Realm(
            name=name,
            issuer=f"{self.base_url}/{name}",
            client_id=f"client-{name}",
            client_secret=secrets.token_urlsafe(24) if secret else None,
            **values,
        )
        if realm.client_secret is not None:
            remember(realm.client_secret)  # tests/test_zz_secrets.py: never in an audit row or a log line
        self.realms[name] = realm
        return realm

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OpenID provider did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def _realm(self, request: Request) -> Realm | None:
        return self.realms.get(request.path_params["realm"])

    async def _discovery(self, request: Request) -> Response:
        realm = self._realm(request)
        if realm is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse(
            {
                "issuer": realm.issuer,
                "authorization_endpoint": f"{realm.issuer}/authorize",
                "token_endpoint": f"{realm.issuer}/token",
                "jwks_uri": f"{realm.issuer}/jwks",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def _authorize(self, request: Request) -> Response:
        """The user signs in at once: the browser goes straight back with a code."""
        realm = self._realm(request)
        q = request.query_params
        if realm is None or q.get("client_id") != realm.client_id or q.get("response_type") != "code":
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge") or "openid" not in q.get(
            "scope", ""
        ).split():
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(24)
        self.codes[code] = _Code(realm.name, realm.client_id, q["redirect_uri"], q["code_challenge"], q["nonce"])
        target = httpx.URL(q["redirect_uri"]).copy_merge_params({"code": code, "state": q["state"]})
        return RedirectResponse(str(target), status_code=302)

    async def _token(self, request: Request) -> Response:
        realm = self._realm(request)
        form = dict(parse_qsl((await request.body()).decode()))
        self.token_requests.append(form)
        if realm is None:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        client_id, client_secret = str(form.get("client_id", "")), None
        basic = request.headers.get("authorization", "")
        if basic.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        if client_id != realm.client_id or client_secret != realm.client_secret:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        issued = self.codes.pop(str(form.get("code", "")), None)
        if issued is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if not realm.lax:
            verifier = str(form.get("code_verifier", ""))
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if issued.realm != realm.name or issued.client_id != client_id:
                return JSONResponse({"error": "invalid_grant", "error_description": "another client's code"}, 400)
            if challenge != issued.challenge or form.get("redirect_uri") != issued.redirect_uri:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
        owner = self.realms[issued.realm]  # a lax provider answers as the code's own realm would
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": owner.issuer,
            "aud": owner.client_id,
            "sub": owner.subject,
            "email": owner.email,
            "email_verified": True,
            "nonce": owner.nonce or issued.nonce,
            "iat": now,
            "exp": now + 300,
        }
        if owner.amr is not None:
            claims["amr"] = owner.amr
        id_token = jwt.encode({"alg": "RS256", "kid": "fake-rsa-1"}, claims, self.key)
        answer = {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "id_token": id_token}
        if realm.token_padding:
            answer["padding"] = "x" * realm.token_padding
        if realm.token_status != 200:
            return Response("upstream trouble", status_code=realm.token_status, media_type="text/plain")
        if realm.token_gzip:
            body = gzip.compress(json.dumps(answer).encode())
            return Response(body, media_type="application/json", headers={"content-encoding": "gzip"})
        return JSONResponse(answer)


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOpenIdProvider]:
    server = FakeOpenIdProvider()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def app(database: Database, clock: FakeClock, provider: FakeOpenIdProvider) -> Starlette:
    settings = support_http.test_settings(database.app_url, outbound_allow=f"127.0.0.1:{provider.port}")
    application = create_app(settings)
    application.state.auth.clock = clock
    return application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as http:
        yield http


# --- helpers -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OidcTenant:
    ref: TenantRef
    realm: Realm


async def oidc_tenant(
    owner_engine: AsyncEngine, app: Starlette, realm: Realm, *, linking: bool = True, **security: Any
) -> OidcTenant:
    ref = await create_tenant(owner_engine)
    entry = {
        "issuer": realm.issuer,
        "audience": realm.client_id,
        "client_id": realm.client_id,
        "jwks_uri": f"{realm.issuer}/jwks",
        "display_name": "Example IdP",
    }
    await configure(
        owner_engine,
        ref,
        auth_oidc=entry,
        security_sso_allow_email_linking=linking,
        **{f"security_{k}": v for k, v in security.items()},
    )
    if realm.client_secret is not None:
        key = "auth.oidc.client_secret"
        sealed = app.state.auth.secret_box.encrypt(json.dumps(realm.client_secret).encode(), config_aad(ref.id, key))
        async with owner_engine.begin() as conn:
            await set_tenant(conn, ref.id)
            await conn.execute(
                text(
                    "INSERT INTO tenant_configurations (tenant_id, config_key, config_value, config_type, is_encrypted)"
                    " VALUES (:t, :k, CAST(:v AS jsonb), 'string', true)"
                ),
                {"t": ref.id, "k": key, "v": json.dumps({"v": 1, "sealed_secret": sealed})},
            )
    return OidcTenant(ref, realm)


async def start(client: httpx.AsyncClient, tenant: OidcTenant) -> str:
    """GET /login: the provider's authorization URL (the sealed sign-in cookie is now in the jar)."""
    response = await client.get(f"/auth/oidc/{tenant.ref.subdomain}/login")
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(f"{tenant.realm.issuer}/authorize?")
    return location


async def authorize(url: str) -> str:
    """The browser at the provider: the path and query of the callback it is sent back to."""
    async with httpx.AsyncClient() as browser:
        response = await browser.get(url)
    assert response.status_code == 302, response.text
    target = httpx.URL(response.headers["location"])
    return target.raw_path.decode()


async def audit(owner_engine: AsyncEngine, tenant: TenantRef, action: str) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = list(
            (
                await conn.execute(
                    text(
                        "SELECT user_id, after_values, risk_level, access_granted, response_status FROM audit_logs"
                        " WHERE tenant_id = :t AND action_type = :a ORDER BY timestamp_utc, id"
                    ),
                    {"t": tenant.id, "a": action},
                )
            ).all()
        )
        await conn.rollback()
    return rows


async def refusals(owner_engine: AsyncEngine, tenant: TenantRef) -> list[str]:
    return [row.after_values["reason"] for row in await audit(owner_engine, tenant, "auth.oidc.login_failed")]


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# --- the good path -----------------------------------------------------------------------------------


async def test_sign_in_creates_a_session_that_reads_the_api(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm()
    tenant = await oidc_tenant(owner_engine, app, realm)
    user = await make_login_user(owner_engine, tenant.ref, email=realm.email, roles=["Capture Manager"])

    authorization = httpx.URL(await start(client, tenant))
    params = authorization.params
    assert params["client_id"] == realm.client_id and params["response_type"] == "code"
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["redirect_uri"] == f"http://127.0.0.1:8000/auth/oidc/{tenant.ref.subdomain}/callback"
    assert params["state"] and params["nonce"] and params["state"] != params["nonce"]
    cookie = client.cookies.get(BINDING_COOKIE)
    assert cookie and params["state"] not in cookie and params["nonce"] not in cookie  # sealed

    callback = await authorize(str(authorization))
    response = await client.get(callback)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/graphiql"
    assert BINDING_COOKIE not in client.cookies  # spent
    # The token request carried the PKCE verifier and authenticated the confidential client.
    exchange = provider.token_requests[-1]
    assert exchange["grant_type"] == "authorization_code" and len(exchange["code_verifier"]) == 64

    # The session cookie reads the API, as the user the identity was linked to.
    graphql = await client.post("/graphql", json=VIEWER)
    assert graphql.status_code == 200, graphql.text
    assert graphql.json()["data"]["viewer"]["user"]["email"] == realm.email
    session = (await client.get("/auth/session")).json()
    assert session["kind"] == "session" and session["userId"] == str(user.id) and session["mfaSatisfied"] is True

    (succeeded,) = await audit(owner_engine, tenant.ref, "auth.oidc.succeeded")
    assert succeeded.user_id == user.id and succeeded.access_granted is True
    assert succeeded.after_values["resolution"] == "linked" and succeeded.after_values["mfa_asserted"] is True
    assert len(await audit(owner_engine, tenant.ref, "auth.oidc.identity_linked")) == 1
    assert await refusals(owner_engine, tenant.ref) == []


async def test_public_client_without_a_secret_signs_in_with_pkce_only(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm(secret=False)
    tenant = await oidc_tenant(owner_engine, app, realm)
    await make_login_user(owner_engine, tenant.ref, email=realm.email)
    response = await client.get(await authorize(await start(client, tenant)))
    assert response.status_code == 303, response.text
    assert provider.token_requests[-1]["client_id"] == realm.client_id
    assert (await client.post("/graphql", json=VIEWER)).status_code == 200


# --- refusals ----------------------------------------------------------------------------------------


async def test_replayed_state_is_refused_and_audited(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm()
    tenant = await oidc_tenant(owner_engine, app, realm)
    await make_login_user(owner_engine, tenant.ref, email=realm.email)
    callback = await authorize(await start(client, tenant))
    bound = client.cookies.get(BINDING_COOKIE)
    assert bound is not None
    assert (await client.get(callback)).status_code == 303

    # The whole old exchange replayed by another browser: the same cookie and the same callback URL.
    async with app_client(app) as attacker:
        attacker.cookies.set(BINDING_COOKIE, str(bound), path=f"/auth/oidc/{tenant.ref.subdomain}/callback")
        replay = await attacker.get(callback)
        assert replay.status_code == 403
        assert error_code(replay) == "OIDC_STATE_INVALID"
        assert "gwm_session" not in replay.headers.get("set-cookie", "").split("=")[0]
        # A browser gets a page with the code.
        attacker.cookies.set(BINDING_COOKIE, str(bound), path=f"/auth/oidc/{tenant.ref.subdomain}/callback")
        page = await attacker.get(callback, headers={"accept": "text/html"})
        assert page.status_code == 403 and "OIDC_STATE_INVALID" in page.text
    assert await refusals(owner_engine, tenant.ref) == ["STATE_REPLAYED", "STATE_REPLAYED"]
    (row, _) = await audit(owner_engine, tenant.ref, "auth.oidc.login_failed")
    assert row.risk_level == "high" and row.access_granted is False and row.response_status == 403
    assert len(await audit(owner_engine, tenant.ref, "auth.oidc.succeeded")) == 1


async def test_callback_without_cookie_or_with_another_state_is_refused(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm()
    tenant = await oidc_tenant(owner_engine, app, realm)
    callback = await authorize(await start(client, tenant))
    async with app_client(app) as other:  # a browser that never started this sign-in (login CSRF)
        response = await other.get(callback)
        assert response.status_code == 403 and error_code(response) == "OIDC_STATE_INVALID"
    bound = client.cookies.get(BINDING_COOKIE)
    forged = callback.replace("state=", "state=x", 1)
    response = await client.get(forged)
    assert response.status_code == 403 and error_code(response) == "OIDC_STATE_INVALID"
    assert BINDING_COOKIE not in client.cookies  # the refusal cleared it
    # The mismatch spent the cookie's state as well: the genuine callback cannot follow it.
    client.cookies.set(BINDING_COOKIE, str(bound), path=f"/auth/oidc/{tenant.ref.subdomain}/callback")
    response = await client.get(callback)
    assert response.status_code == 403 and error_code(response) == "OIDC_STATE_INVALID"
    assert await refusals(owner_engine, tenant.ref) == ["NO_BINDING_COOKIE", "STATE_MISMATCH", "STATE_REPLAYED"]
    assert "gwm_session" not in client.cookies


async def test_wrong_nonce_is_refused_and_audited(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm(nonce="a-nonce-from-another-sign-in")
    tenant = await oidc_tenant(owner_engine, app, realm)
    await make_login_user(owner_engine, tenant.ref, email=realm.email)
    response = await client.get(await authorize(await start(client, tenant)))
    assert response.status_code == 403 and error_code(response) == "OIDC_LOGIN_FAILED"
    assert "gwm_session" not in client.cookies
    assert await refusals(owner_engine, tenant.ref) == ["NONCE_MISMATCH"]
    assert await audit(owner_engine, tenant.ref, "auth.oidc.succeeded") == []


async def test_code_issued_for_another_tenants_provider_is_refused(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm_a, realm_b = provider.realm(), provider.realm()
    tenant_a = await oidc_tenant(owner_engine, app, realm_a)
    tenant_b = await oidc_tenant(owner_engine, app, realm_b)
    await make_login_user(owner_engine, tenant_a.ref, email=realm_a.email)

    async with app_client(app) as other:
        code_b = httpx.URL(await authorize(await start(other, tenant_b))).params["code"]
    callback_a = httpx.URL(await authorize(await start(client, tenant_a)))
    injected = callback_a.copy_set_param("code", code_b)
    response = await client.get(injected.raw_path.decode())
    assert response.status_code == 403 and error_code(response) == "OIDC_LOGIN_FAILED"
    assert await refusals(owner_engine, tenant_a.ref) == ["CODE_REJECTED"]

    # A provider that redeems any code gives tenant B's ID token: its issuer is not tenant A's.
    realm_a.lax = True
    async with app_client(app) as other:
        code_b = httpx.URL(await authorize(await start(other, tenant_b))).params["code"]
    callback_a = httpx.URL(await authorize(await start(client, tenant_a)))
    response = await client.get(callback_a.copy_set_param("code", code_b).raw_path.decode())
    assert response.status_code == 403 and error_code(response) == "OIDC_LOGIN_FAILED"
    assert await refusals(owner_engine, tenant_a.ref) == ["CODE_REJECTED", "WRONG_ISSUER"]
    assert await audit(owner_engine, tenant_a.ref, "auth.oidc.succeeded") == []
    assert await refusals(owner_engine, tenant_b.ref) == []


async def test_mfa_tenant_refuses_an_id_token_without_mfa_amr(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm(amr=["pwd"])
    tenant = await oidc_tenant(owner_engine, app, realm, mfa_required=True)
    await make_login_user(owner_engine, tenant.ref, email=realm.email)
    response = await client.get(await authorize(await start(client, tenant)))
    assert response.status_code == 403 and error_code(response) == "IDP_MFA_REQUIRED"
    realm.amr = None  # no amr at all
    response = await client.get(await authorize(await start(client, tenant)))
    assert response.status_code == 403 and error_code(response) == "IDP_MFA_REQUIRED"
    assert await refusals(owner_engine, tenant.ref) == ["MFA_NOT_ASSERTED", "MFA_NOT_ASSERTED"]
    # Nothing was linked by the refused sign-ins; with MFA shown the same user signs in.
    assert await audit(owner_engine, tenant.ref, "auth.oidc.identity_linked") == []
    realm.amr = ["mfa"]
    response = await client.get(await authorize(await start(client, tenant)))
    assert response.status_code == 303, response.text
    assert (await client.post("/graphql", json=VIEWER)).status_code == 200


async def test_identity_without_an_account_is_refused(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm()
    tenant = await oidc_tenant(owner_engine, app, realm, linking=False)
    response = await client.get(await authorize(await start(client, tenant)))
    assert response.status_code == 403 and error_code(response) == "SSO_ACCOUNT_UNAVAILABLE"
    assert await refusals(owner_engine, tenant.ref) == ["NOT_LINKED"]


async def test_unknown_tenant_and_tenant_without_provider_are_not_found(
    client: httpx.AsyncClient, owner_engine: AsyncEngine
) -> None:
    ref = await create_tenant(owner_engine)
    for path in ("/auth/oidc/no-such-tenant/login", f"/auth/oidc/{ref.subdomain}/login",
                 f"/auth/oidc/{ref.subdomain}/callback?code=x&state=y"):
        response = await client.get(path)
        assert response.status_code == 404 and error_code(response) == "NOT_FOUND"


async def test_unreachable_provider_is_502_and_audited(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm()
    tenant = await oidc_tenant(owner_engine, app, realm)
    del provider.realms[realm.name]  # discovery answers 404
    response = await client.get(f"/auth/oidc/{tenant.ref.subdomain}/login")
    assert response.status_code == 502 and error_code(response) == "OIDC_PROVIDER_UNAVAILABLE"
    assert await refusals(owner_engine, tenant.ref) == ["PROVIDER_UNAVAILABLE"]


# --- the sign-in methods endpoint ----------------------------------------------------------------------


async def test_methods_tells_which_sign_in_a_tenant_offers(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    tenant = await oidc_tenant(owner_engine, app, provider.realm())
    plain = await create_tenant(owner_engine)
    response = await client.get("/auth/methods", params={"tenant": tenant.ref.subdomain})
    assert response.status_code == 200
    assert response.json() == {
        "password": True,
        "oidc": {"name": "Example IdP", "loginUrl": f"/auth/oidc/{tenant.ref.subdomain}/login"},
        "saml": None,
    }
    nothing = {"password": True, "oidc": None, "saml": None}
    assert (await client.get("/auth/methods", params={"tenant": plain.subdomain})).json() == nothing
    # An unknown or malformed tenant gets the same answer as a tenant without single sign-on.
    assert (await client.get("/auth/methods", params={"tenant": "no-such-tenant"})).json() == nothing
    assert (await client.get("/auth/methods", params={"tenant": "../x"})).json() == nothing


# --- more of the flow ----------------------------------------------------------------------------------


async def test_totp_user_whose_provider_showed_one_factor_must_verify_the_code_next(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm(amr=["pwd"])
    tenant = await oidc_tenant(owner_engine, app, realm)  # the tenant does not require MFA
    await make_login_user(owner_engine, tenant.ref, email=realm.email, mfa_enabled=True)
    response = await client.get(await authorize(await start(client, tenant)))
    assert response.status_code == 303, response.text
    assert (await client.get("/auth/session")).json()["mfaSatisfied"] is False
    graphql = await client.post("/graphql", json=VIEWER)
    assert graphql.status_code == 401 and error_code(graphql) == "MFA_REQUIRED"
    (succeeded,) = await audit(owner_engine, tenant.ref, "auth.oidc.succeeded")
    assert succeeded.after_values["mfa_asserted"] is False and succeeded.after_values["amr"] == ["pwd"]


async def test_just_in_time_provisioning_through_the_browser(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm(email=f"new-{uuid.uuid4().hex[:8]}@example.test")
    tenant = await oidc_tenant(owner_engine, app, realm, sso_jit_provisioning=True)
    response = await client.get(await authorize(await start(client, tenant)))
    assert response.status_code == 303, response.text
    graphql = await client.post("/graphql", json=VIEWER)
    assert graphql.json()["data"]["viewer"]["user"]["email"] == realm.email
    (succeeded,) = await audit(owner_engine, tenant.ref, "auth.oidc.succeeded")
    assert succeeded.after_values["resolution"] == "provisioned"
    assert len(await audit(owner_engine, tenant.ref, "auth.user.provisioned")) == 1


async def test_expired_state_and_provider_error_are_refused(
    client: httpx.AsyncClient,
    app: Starlette,
    owner_engine: AsyncEngine,
    provider: FakeOpenIdProvider,
    clock: FakeClock,
) -> None:
    realm = provider.realm()
    tenant = await oidc_tenant(owner_engine, app, realm)
    await make_login_user(owner_engine, tenant.ref, email=realm.email)
    callback = await authorize(await start(client, tenant))
    clock.advance(minutes=11)  # the state lives ten minutes
    response = await client.get(callback)
    assert response.status_code == 403 and error_code(response) == "OIDC_STATE_INVALID"

    # The provider sends the browser back with an error instead of a code.
    authorization = httpx.URL(await start(client, tenant))
    state = authorization.params["state"]
    denied = f"/auth/oidc/{tenant.ref.subdomain}/callback?error=access_denied&state={state}"
    response = await client.get(denied)
    assert response.status_code == 403 and error_code(response) == "OIDC_LOGIN_FAILED"
    (_, row) = await audit(owner_engine, tenant.ref, "auth.oidc.login_failed")
    assert row.after_values == {"reason": "IDP_ERROR", "stage": "callback", "detail": "access_denied"}
    assert await refusals(owner_engine, tenant.ref) == ["STATE_REPLAYED", "IDP_ERROR"]


async def test_provider_off_the_outbound_allow_list_is_not_contacted(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    with socket.socket() as other:  # a loopback port that is not on the allow-list
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]
    realm = provider.realm()
    realm.issuer = f"http://127.0.0.1:{port}/{realm.name}"
    tenant = await oidc_tenant(owner_engine, app, realm)
    response = await client.get(f"/auth/oidc/{tenant.ref.subdomain}/login")
    assert response.status_code == 502 and error_code(response) == "OIDC_PROVIDER_UNAVAILABLE"
    (row,) = await audit(owner_engine, tenant.ref, "auth.oidc.login_failed")
    assert row.after_values["reason"] == "PROVIDER_UNAVAILABLE" and "must use https" in row.after_values["detail"]


async def test_unusable_configuration_is_refused_and_audited(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm(secret=False)
    tenant = await oidc_tenant(owner_engine, app, realm)
    # A client secret stored in the clear is not used (it must be sealed): sign-in stays off.
    await configure(owner_engine, tenant.ref, **{"auth_oidc.client_secret": "in-the-clear"})
    response = await client.get(f"/auth/oidc/{tenant.ref.subdomain}/login")
    assert response.status_code == 403 and error_code(response) == "OIDC_LOGIN_FAILED"
    assert await refusals(owner_engine, tenant.ref) == ["CONFIG"]


async def test_hostile_callback_and_methods_parameters_answer_cleanly(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    realm = provider.realm()
    tenant = await oidc_tenant(owner_engine, app, realm)
    callback = f"/auth/oidc/{tenant.ref.subdomain}/callback"
    hostile = ("\x00", "x" * 5000, "%00", "'; DROP TABLE users; --")
    for value in hostile:
        for params in ({"code": value, "state": value}, {"error": value, "state": value}):
            response = await client.get(callback, params=params)
            assert response.status_code == 403 and error_code(response) == "OIDC_STATE_INVALID", params
        methods = await client.get("/auth/methods", params={"tenant": value})
        assert methods.json() == {"password": True, "oidc": None, "saml": None}
    # Bytes that are not UTF-8 (a lone surrogate, percent-encoded) in the query.
    response = await client.get(f"{callback}?code=%ED%A0%80&state=%ED%A0%80")
    assert response.status_code == 403 and error_code(response) == "OIDC_STATE_INVALID"
    methods = await client.get("/auth/methods?tenant=%ED%A0%80")
    assert methods.json() == {"password": True, "oidc": None, "saml": None}
    # A sealed cookie that does not open (tampered, or another tenant's) counts as no cookie.
    client.cookies.set(BINDING_COOKIE, "v1.t1.AAAA", path=callback)
    response = await client.get(callback, params={"code": "c", "state": "s"})
    assert response.status_code == 403 and error_code(response) == "OIDC_STATE_INVALID"
    assert set(await refusals(owner_engine, tenant.ref)) == {"NO_BINDING_COOKIE"}
    # Another tenant's sealed cookie does not open here either.
    other = await oidc_tenant(owner_engine, app, provider.realm())
    async with app_client(app) as browser:
        await start(browser, other)
        sealed = browser.cookies.get(BINDING_COOKIE)
    client.cookies.set(BINDING_COOKIE, str(sealed), path=callback)
    response = await client.get(callback, params={"code": "c", "state": "s"})
    assert response.status_code == 403 and error_code(response) == "OIDC_STATE_INVALID"
    assert (await refusals(owner_engine, tenant.ref))[-1] == "NO_BINDING_COOKIE"


@pytest.mark.parametrize(
    ("answer", "reason", "status", "code"),
    [
        ({"token_padding": 2 * 1024 * 1024}, "PROVIDER_UNAVAILABLE", 502, "OIDC_PROVIDER_UNAVAILABLE"),
        ({"token_gzip": True}, "PROVIDER_UNAVAILABLE", 502, "OIDC_PROVIDER_UNAVAILABLE"),
        ({"token_status": 500}, "CODE_REJECTED", 403, "OIDC_LOGIN_FAILED"),
    ],
    ids=["too-large", "compressed", "server-error"],
)
async def test_token_answers_that_are_too_large_compressed_or_errors_are_refused(
    client: httpx.AsyncClient,
    app: Starlette,
    owner_engine: AsyncEngine,
    provider: FakeOpenIdProvider,
    answer: dict[str, Any],
    reason: str,
    status: int,
    code: str,
) -> None:
    realm = provider.realm(**answer)
    tenant = await oidc_tenant(owner_engine, app, realm)
    await make_login_user(owner_engine, tenant.ref, email=realm.email)
    response = await client.get(await authorize(await start(client, tenant)))
    assert response.status_code == status and error_code(response) == code
    assert await refusals(owner_engine, tenant.ref) == [reason]
    (row,) = await audit(owner_engine, tenant.ref, "auth.oidc.login_failed")
    if reason == "PROVIDER_UNAVAILABLE":  # the cap refused it, before Authlib read the whole answer
        assert row.after_values["detail"].startswith("token endpoint: OutboundRefused"), row.after_values
    assert "gwm_session" not in client.cookies


async def test_provider_set_with_the_sso_settings_mutation_signs_users_in(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, provider: FakeOpenIdProvider
) -> None:
    """The whole path an administrator takes: tenantSsoSettingsUpdate stores the provider (client
    secret sealed), then a user signs in through the browser with it."""
    realm = provider.realm()
    ref = await create_tenant(owner_engine)
    admin = await make_login_user(owner_engine, ref, roles=["Tenant Admin"])
    user = await make_login_user(owner_engine, ref, email=realm.email)
    async with app_client(app) as admin_client:
        login = await admin_client.post("/auth/login", json=admin.credentials())
        assert login.status_code == 200, login.text
        update = (
            "mutation($input: TenantSsoSettingsUpdateInput!) { tenantSsoSettingsUpdate(input: $input) {"
            " ssoSettings { oidc { clientId clientSecretSet displayName } } errors { code field message } } }"
        )
        oidc = {
            "issuer": realm.issuer,
            "clientId": realm.client_id,
            "jwksUri": f"{realm.issuer}/jwks",
            "displayName": "Example IdP",
            "clientSecret": realm.client_secret,
        }
        variables = {"input": {"updatedAt": None, "oidc": oidc, "ssoAllowEmailLinking": True}}
        result = await admin_client.post("/graphql", json={"query": update, "variables": variables})
        data = result.json()["data"]["tenantSsoSettingsUpdate"]
        assert data["errors"] == [], data
        assert data["ssoSettings"]["oidc"] == {
            "clientId": realm.client_id, "clientSecretSet": True, "displayName": "Example IdP"
        }

    methods = (await client.get("/auth/methods", params={"tenant": ref.subdomain})).json()
    assert methods["oidc"] == {"name": "Example IdP", "loginUrl": f"/auth/oidc/{ref.subdomain}/login"}
    response = await client.get(await authorize(await start(client, OidcTenant(ref, realm))))
    assert response.status_code == 303, response.text
    # The fake provider's token endpoint answers this realm only with HTTP Basic and its secret: the
    # sign-in went through with the secret the mutation sealed.
    assert (await client.get("/auth/session")).json()["userId"] == str(user.id)
    assert "client_secret" not in provider.token_requests[-1]  # sent in the Authorization header
