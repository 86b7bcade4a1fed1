"""/auth/oidc/{tenant}/login and /callback: browser sign-in through the tenant's OpenID provider, and
/auth/methods: which sign-in methods a tenant offers (the GraphiQL sign-in bar asks it).

- `GET /auth/oidc/{tenant}/login` discovers the provider, starts a `PendingSignIn` (auth/oidc_browser.py),
  records its state server-side, sets the sealed sign-in cookie (HttpOnly, Secure, SameSite=Lax:
  the provider's redirect back is a top-level GET, which carries a Lax cookie; path limited to the
  tenant's callback) and redirects (303) to the provider's authorization endpoint.
- `GET /auth/oidc/{tenant}/callback` requires the cookie, its state to be the callback's, and the
  state row to be there (consumed now, whatever happens next), then redeems the code with the PKCE
  verifier, verifies the ID token (signature, issuer, audience = client id, times, nonce, azp),
  applies the tenant's MFA rule (`amr`, auth/oidc_login.py `amr_shows_mfa`), finds, links or
  provisions the user (auth/sso.py, one unit of work) and opens a session like a password sign-in
  (decision A11): the session cookie is set and the browser goes to GraphiQL. The session is
  `mfa_verified` when `amr` shows MFA; a user with TOTP whose provider did not show MFA gets a
  session that waits for the code, as after a password.
- `GET /auth/methods?tenant=<subdomain>` answers `{"password": true, "oidc": {"name", "loginUrl"} | null,
  "saml": {"loginUrl"} | null}`; an unknown tenant gets the answer of a tenant without single sign-on.

Refusals are audited (`auth.oidc.login_failed`, reason in the row) and answered 403 (HTML with the
code for a browser, JSON `{"error": {"code", "message"}}` otherwise): `OIDC_STATE_INVALID` (no
cookie, state mismatch, replayed or expired state), `IDP_MFA_REQUIRED`, `SSO_ACCOUNT_UNAVAILABLE`,
`OIDC_LOGIN_FAILED` (everything about the code or the ID token). A provider that cannot be reached
is 502 `OIDC_PROVIDER_UNAVAILABLE`; a tenant without `auth.oidc` is 404.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from auth.audit import AuthEvent, RequestMeta, record_event
from auth.crypto import config_aad
from auth.exceptions import ConfigurationError, TokenRejected
from auth.http import error_response, request_meta
from auth.login import tenant_by_subdomain
from auth.oidc import RejectReason
from auth.oidc_browser import (
    CONFIG_KEY,
    SECRET_KEY,
    STATE_TTL_SECONDS,
    BrowserClient,
    BrowserReason,
    BrowserRefused,
    OidcBrowser,
    PendingSignIn,
    browser_client,
    consume_state,
    issue_state,
    open_pending,
    seal_pending,
    verify_id_token,
)
from auth.oidc_login import amr_shows_mfa
from auth.policy import TenantSecurityPolicy, load_policy
from auth.routes import session_cookie
from auth.saml_store import DbSamlStateStore
from auth.service import AuthService
from auth.sso import ExternalIdentity, SsoReason, SsoRefused, normalize_email, start_sso_session
from models.credentials import IdentityProvider
from models.db import set_tenant
from models.enums import RiskLevel

__all__ = ["BINDING_COOKIE", "METHODS_PATH", "routes"]

_log = logging.getLogger(__name__)

BINDING_COOKIE: Final = "gwm_oidc_sign_in"
METHODS_PATH: Final = "/auth/methods"
AFTER_SIGN_IN: Final = "/graphiql"
_TENANT_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MAX_CODE: Final = 2048

STATE_CODE: Final = "OIDC_STATE_INVALID"
FAILED_CODE: Final = "OIDC_LOGIN_FAILED"
MFA_CODE: Final = "IDP_MFA_REQUIRED"
ACCOUNT_CODE: Final = "SSO_ACCOUNT_UNAVAILABLE"
UNAVAILABLE_CODE: Final = "OIDC_PROVIDER_UNAVAILABLE"
_MESSAGES: Final = {
    STATE_CODE: "This sign-in was already used, has expired, or was started in another browser. Start again.",
    FAILED_CODE: "Sign-in with your identity provider did not succeed. Start again.",
    MFA_CODE: "Your organization requires multi-factor authentication: sign in at your identity provider with it.",
    ACCOUNT_CODE: "Your identity provider signed you in, but your account cannot be used here.",
    UNAVAILABLE_CODE: "Your identity provider cannot be reached. Try again later.",
}
_STATE_REASONS: Final = frozenset(
    {BrowserReason.NO_BINDING_COOKIE, BrowserReason.STATE_MISMATCH, BrowserReason.STATE_REPLAYED}
)
# Reasons that point at a forged, replayed or misdirected response rather than a slow user.
_HIGH_RISK: Final = frozenset(
    {
        BrowserReason.STATE_MISMATCH,
        BrowserReason.STATE_REPLAYED,
        BrowserReason.NONCE_MISMATCH,
        BrowserReason.AZP_MISMATCH,
        RejectReason.ALG_NOT_ALLOWED,
        RejectReason.KEY_REFERENCE_HEADER,
        RejectReason.KEY_ALG_MISMATCH,
        RejectReason.BAD_SIGNATURE,
        RejectReason.WRONG_ISSUER,
        RejectReason.WRONG_AUDIENCE,
    }
)
_SECURITY_HEADERS: Final = {
    "cache-control": "no-store",
    "pragma": "no-cache",
    "content-security-policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class _NotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Tenant:
    tenant_id: uuid.UUID
    subdomain: str
    policy: TenantSecurityPolicy
    client: BrowserClient | None  # None: the entry is there but unusable (refused, audited)


def _service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


def _browser(request: Request) -> OidcBrowser:
    """The process's OidcBrowser (made on first use, on the service's outbound guard)."""
    state = request.app.state
    browser: OidcBrowser | None = getattr(state, "oidc_browser", None)
    if browser is None:
        browser = OidcBrowser(_service(request).outbound)
        state.oidc_browser = browser
    return browser


async def _load_tenant(service: AuthService, subdomain: str) -> _Tenant:
    if not _TENANT_LABEL.fullmatch(subdomain):
        raise _NotFound
    tenant_id = await tenant_by_subdomain(service, subdomain)
    if tenant_id is None:
        raise _NotFound
    async with service.engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        rows = {
            row.config_key: row
            for row in (
                await conn.execute(
                    text(
                        "SELECT config_key, config_value, is_encrypted FROM tenant_configurations"
                        " WHERE tenant_id = :t AND config_key IN (:k, :s)"
                    ),
                    {"t": tenant_id, "k": CONFIG_KEY, "s": SECRET_KEY},
                )
            ).all()
        }
        policy = await load_policy(conn, tenant_id)
        await conn.rollback()
    entry = rows.get(CONFIG_KEY)
    if entry is None:
        raise _NotFound
    try:
        if entry.is_encrypted:
            raise ConfigurationError("auth.oidc must be a plain JSON object")
        secret = _open_secret(service, tenant_id, rows.get(SECRET_KEY))
        client = browser_client(entry.config_value, secret)
    except ConfigurationError as exc:
        _log.warning("tenant %s: OIDC browser sign-in configuration unusable: %s", tenant_id, exc)
        return _Tenant(tenant_id, subdomain, policy, None)
    return _Tenant(tenant_id, subdomain, policy, client)


def _open_secret(service: AuthService, tenant_id: uuid.UUID, row: object) -> object:
    """The client secret in the clear (a sealed entry, as tenant settings store it), or None."""
    if row is None:
        return None
    if not getattr(row, "is_encrypted", False):
        raise ConfigurationError("auth.oidc.client_secret must be stored encrypted")
    value = getattr(row, "config_value", None)
    sealed = value.get("sealed_secret") if isinstance(value, dict) else None
    if not isinstance(sealed, str):
        raise ConfigurationError("auth.oidc.client_secret is not a sealed value")
    try:
        return json.loads(service.secret_box.decrypt(sealed, config_aad(tenant_id, SECRET_KEY)))
    except Exception as exc:  # a key that is gone, a value sealed for another tenant: unusable
        raise ConfigurationError("auth.oidc.client_secret does not open with the server's keys") from exc


def _base_path(subdomain: str) -> str:
    return f"/auth/oidc/{subdomain}"


def _redirect_uri(service: AuthService, subdomain: str) -> str:
    return f"{service.public_url.rstrip('/')}{_base_path(subdomain)}/callback"


def _store(service: AuthService, tenant: _Tenant) -> DbSamlStateStore:
    return DbSamlStateStore(service.engine, tenant_id=tenant.tenant_id, subdomain=tenant.subdomain, clock=service.now)


def _not_found() -> Response:
    message = "OpenID Connect sign-in is not available here."
    return error_response(404, "NOT_FOUND", message, **{"cache-control": "no-store"})


# --- routes ----------------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    service = _service(request)
    meta = request_meta(request)
    try:
        tenant = await _load_tenant(service, request.path_params["tenant"])
    except _NotFound:
        return _not_found()
    if tenant.client is None:
        return await _refuse(request, service, tenant, meta, BrowserReason.CONFIG, stage="login")
    browser = _browser(request)
    try:
        metadata = await browser.metadata(tenant.client)
    except BrowserRefused as exc:
        return await _refuse(request, service, tenant, meta, exc.reason_code, stage="login", detail=str(exc))
    pending = PendingSignIn.new()
    url = await browser.authorization_url(tenant.client, metadata, _redirect_uri(service, tenant.subdomain), pending)
    await issue_state(_store(service, tenant), pending.state)
    response = RedirectResponse(url, status_code=303, headers={"cache-control": "no-store"})
    response.set_cookie(
        BINDING_COOKIE,
        seal_pending(service.secret_box, tenant.tenant_id, pending),
        max_age=STATE_TTL_SECONDS,
        path=f"{_base_path(tenant.subdomain)}/callback",
        secure=True,
        httponly=True,
        samesite="lax",
    )
    return response


async def callback(request: Request) -> Response:
    service = _service(request)
    meta = request_meta(request)
    try:
        tenant = await _load_tenant(service, request.path_params["tenant"])
    except _NotFound:
        return _not_found()
    if tenant.client is None:
        return await _refuse(request, service, tenant, meta, BrowserReason.CONFIG)
    client = tenant.client
    query = request.query_params
    pending = open_pending(service.secret_box, tenant.tenant_id, request.cookies.get(BINDING_COOKIE))
    if pending is None:
        return await _refuse(request, service, tenant, meta, BrowserReason.NO_BINDING_COOKIE)
    # The cookie's state is consumed whatever the callback says: a sign-in is answered once.
    fresh = await consume_state(_store(service, tenant), tenant.subdomain, pending.state)
    if not hmac.compare_digest(query.get("state", "").encode(), pending.state.encode()):
        return await _refuse(request, service, tenant, meta, BrowserReason.STATE_MISMATCH)
    if not fresh:
        return await _refuse(request, service, tenant, meta, BrowserReason.STATE_REPLAYED)
    if "error" in query:
        return await _refuse(
            request, service, tenant, meta, BrowserReason.IDP_ERROR, detail=query.get("error", "")[:100]
        )
    code = query.get("code", "")
    if not code or len(code) > _MAX_CODE:
        return await _refuse(request, service, tenant, meta, BrowserReason.CODE_REJECTED, detail="no code")
    browser = _browser(request)
    redirect_uri = _redirect_uri(service, tenant.subdomain)
    try:
        metadata = await browser.metadata(client)
        id_token = await browser.exchange(client, metadata, redirect_uri, code, pending)
        if service.jwks is None:
            raise TokenRejected(RejectReason.JWKS_UNAVAILABLE)
        verified = await verify_id_token(id_token, client, service.jwks, pending, now=service.now().timestamp())
    except BrowserRefused as exc:
        return await _refuse(request, service, tenant, meta, exc.reason_code, detail=str(exc))
    except TokenRejected as exc:
        return await _refuse(request, service, tenant, meta, str(exc.reason_code))

    mfa_shown = amr_shows_mfa(verified.amr)
    if tenant.policy.requires_mfa and not mfa_shown:
        return await _refuse(request, service, tenant, meta, SsoReason.MFA_NOT_ASSERTED, amr=verified.amr)
    name = verified.claims.get("given_name"), verified.claims.get("family_name")
    identity = ExternalIdentity(
        provider=IdentityProvider.OIDC,
        issuer=verified.issuer,
        subject=verified.subject,
        email=normalize_email(verified.email),
        email_verified=verified.email_verified,
        first_name=name[0] if isinstance(name[0], str) and name[0].strip() else None,
        last_name=name[1] if isinstance(name[1], str) and name[1].strip() else None,
    )
    try:
        # A TOTP user whose provider showed one factor verifies the code next, as after a password.
        user, token, session_id = await start_sso_session(
            service, tenant.tenant_id, tenant.policy, meta, identity, mfa_verified=mfa_shown,
            field="/auth/oidc/callback",
        )
    except SsoRefused as exc:
        return await _refuse(request, service, tenant, meta, exc.reason_code, user_id=exc.user_id)

    await record_event(
        service.writer,
        tenant_id=tenant.tenant_id,
        event=AuthEvent.OIDC_LOGIN_SUCCEEDED,
        meta=meta,
        user_id=user.user_id,
        session_id=session_id,
        description=f"OpenID Connect sign-in ({user.resolution.value} user)",
        details={
            "issuer": verified.issuer,
            "amr": list(verified.amr),
            "mfa_asserted": mfa_shown,
            "resolution": user.resolution.value,
        },
        status=303,
    )
    response = RedirectResponse(AFTER_SIGN_IN, status_code=303, headers=_SECURITY_HEADERS)
    session_cookie(response, service, token, int(tenant.policy.absolute_timeout.total_seconds()))
    _clear_binding(response, tenant.subdomain)
    return response


async def methods(request: Request) -> Response:
    """Which sign-in methods the tenant named by `?tenant=` offers; nothing else about it."""
    service = _service(request)
    subdomain = request.query_params.get("tenant", "").strip().lower()
    body: dict[str, object] = {"password": True, "oidc": None, "saml": None}
    headers = {"cache-control": "no-store"}
    if not _TENANT_LABEL.fullmatch(subdomain):
        return JSONResponse(body, headers=headers)
    tenant_id = await tenant_by_subdomain(service, subdomain)
    if tenant_id is None:
        return JSONResponse(body, headers=headers)
    async with service.engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        rows = (
            await conn.execute(
                text(
                    "SELECT config_key, config_value, is_encrypted FROM tenant_configurations"
                    " WHERE tenant_id = :t AND config_key IN ('auth.oidc', 'auth.saml')"
                ),
                {"t": tenant_id},
            )
        ).all()
        await conn.rollback()
    for row in rows:
        if row.config_key == CONFIG_KEY and not row.is_encrypted and isinstance(row.config_value, dict):
            display = row.config_value.get("display_name")
            name = display.strip()[:60] if isinstance(display, str) and display.strip() else "your identity provider"
            body["oidc"] = {"name": name, "loginUrl": f"{_base_path(subdomain)}/login"}
        elif row.config_key == "auth.saml":
            body["saml"] = {"loginUrl": f"/auth/saml/{subdomain}/login"}
    return JSONResponse(body, headers=headers)


# --- helpers ---------------------------------------------------------------------------------------


def _clear_binding(response: Response, subdomain: str) -> None:
    response.delete_cookie(
        BINDING_COOKIE, path=f"{_base_path(subdomain)}/callback", secure=True, httponly=True, samesite="lax"
    )


def _public_code(reason: str) -> tuple[int, str]:
    if reason in _STATE_REASONS:
        return 403, STATE_CODE
    if reason == SsoReason.MFA_NOT_ASSERTED:
        return 403, MFA_CODE
    if reason in set(SsoReason):
        return 403, ACCOUNT_CODE
    if reason == BrowserReason.PROVIDER_UNAVAILABLE:
        return 502, UNAVAILABLE_CODE
    return 403, FAILED_CODE


async def _refuse(
    request: Request,
    service: AuthService,
    tenant: _Tenant,
    meta: RequestMeta,
    reason: str,
    *,
    user_id: uuid.UUID | None = None,
    stage: str = "callback",
    detail: str | None = None,
    amr: tuple[str, ...] | None = None,
) -> Response:
    """Audit the refusal with its reason and answer it with its public code."""
    status, code = _public_code(reason)
    details: dict[str, object] = {"reason": str(reason), "stage": stage}
    if detail and detail != reason:
        details["detail"] = detail[:200]
    if amr is not None:
        details["amr"] = list(amr)
    await record_event(
        service.writer,
        tenant_id=tenant.tenant_id,
        event=AuthEvent.OIDC_LOGIN_FAILED,
        meta=meta,
        user_id=user_id,
        granted=False,
        risk=RiskLevel.HIGH if reason in _HIGH_RISK else RiskLevel.MEDIUM,
        description=f"OpenID Connect sign-in refused: {reason}",
        details=details,
        status=status,
    )
    message = _MESSAGES[code]
    response: Response
    if "text/html" in request.headers.get("accept", ""):
        page = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Sign-in failed</title></head>'
            f"<body><h1>Sign-in failed</h1><p>{html.escape(message)}</p><p>Code: {code}</p>"
            f'<p><a href="{AFTER_SIGN_IN}">Back to sign-in</a></p></body></html>'
        )
        response = HTMLResponse(page, status_code=status, headers=_SECURITY_HEADERS)
    else:
        response = error_response(status, code, message, **_SECURITY_HEADERS)
    if stage == "callback":
        _clear_binding(response, tenant.subdomain)
    return response


def routes() -> list[BaseRoute]:
    return [
        Route(METHODS_PATH, methods, methods=["GET"]),
        Route("/auth/oidc/{tenant}/login", login, methods=["GET"]),
        Route("/auth/oidc/{tenant}/callback", callback, methods=["GET"]),
    ]
