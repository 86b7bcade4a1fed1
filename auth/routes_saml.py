"""/auth/saml/{tenant}/metadata, /login and /acs: per-tenant SAML 2.0 sign-in (SP-initiated only).

The tenant's setup is `tenant_configurations['auth.saml']` = {"idp_entity_id", "idp_sso_url",
"idp_x509_cert", "required_authn_contexts": [...], "clock_skew_seconds"?}. The SP entity id and
ACS URL derive from the public URL and the tenant's subdomain
(`{public_url}/auth/saml/{subdomain}/metadata` and `.../acs`). An unknown tenant and a tenant
without that entry get the same 404. An entry that is unusable (no IdP certificate, a tenant that
requires MFA without `required_authn_contexts`, ...) keeps SAML off for the tenant: /login and
/acs refuse (403, audited), /metadata answers 404.

- `GET /login` issues an AuthnRequest (HTTP-Redirect binding), stores its id for ten minutes in
  saml_authn_requests, and binds it to this browser with a short-lived HttpOnly Secure cookie
  scoped to the tenant's ACS path. SameSite=None: the IdP's form POST is a cross-site request and
  a Lax cookie would not come back with it; the attacker of a login CSRF cannot set it anyway.
  No RelayState is sent and any coming back is ignored: after sign-in the browser goes to "/".
- `POST /acs` (the server's only form-encoded POST) takes the `SAMLResponse`, validates it with
  `auth.saml.validate_response` against the DB-backed request and replay store, requires the
  binding cookie to name the very request the signed response answers, resolves the user
  (auth/sso.py), opens a session and answers a same-origin HTML page that sets the session cookie
  and continues to "/". The session is `mfa_verified` when the IdP's AuthnContextClassRef is one
  the tenant lists as MFA (or a well-known MFA context when it lists none).

Every refusal at the ACS is the same 403 (`SAML_LOGIN_FAILED`, HTML for browsers, JSON otherwise)
and leaves a SAML_LOGIN_FAILED audit row carrying the reason code; a success leaves
SAML_LOGIN_SUCCEEDED (and USER_PROVISIONED or SAML_IDENTITY_LINKED when that happened).
"""

from __future__ import annotations

import hmac
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from auth.audit import AuthEvent, RequestMeta, record_event
from auth.exceptions import SamlConfigError, SamlRejected
from auth.http import error_response, request_meta
from auth.login import tenant_by_subdomain
from auth.policy import TenantSecurityPolicy, load_policy
from auth.routes import session_cookie
from auth.saml import (
    SamlIdentity,
    SamlReason,
    SamlTenantConfig,
    build_login_request,
    request_url_data_from,
    sp_metadata,
    validate_response,
)
from auth.saml_store import REQUEST_TTL, DbSamlStateStore
from auth.service import AuthService
from auth.sso import ExternalIdentity, SsoReason, SsoRefused, normalize_email, start_sso_session
from models.credentials import IdentityProvider
from models.db import set_tenant
from models.enums import RiskLevel

__all__ = ["BINDING_COOKIE", "FAILED_CODE", "KNOWN_MFA_CONTEXTS", "routes", "tenant_config"]

_log = logging.getLogger(__name__)

CONFIG_KEY: Final = "auth.saml"
BINDING_COOKIE: Final = "gwm_saml_request"
FAILED_CODE: Final = "SAML_LOGIN_FAILED"
_FAILED_MESSAGE: Final = "Single sign-on did not succeed. Start again from your organization's sign-in page."
_NOT_FOUND_MESSAGE: Final = "SAML sign-in is not available here."

# AuthnContextClassRefs that mean more than one factor, used when the tenant lists none of its own:
# REFEDS MFA, Microsoft Entra's multipleauthn, and the SAML 2.0 classes that are two factors by
# definition (a smart card unlocked by a PIN: PIV/CAC; OTP token plus password; mobile 2FA).
KNOWN_MFA_CONTEXTS: Final = frozenset(
    {
        "https://refeds.org/profile/mfa",
        "http://schemas.microsoft.com/claims/multipleauthn",
        "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI",
        "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken",
        "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract",
        "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorUnregistered",
    }
)
_TRANSIENT: Final = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
_EMAIL_FORMAT: Final = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
# Attribute names IdPs use (compared case-insensitively): short names, LDAP OIDs, WS-Fed claim URIs.
_EMAIL_ATTRIBUTES: Final = (
    "email",
    "mail",
    "emailaddress",
    "urn:oid:0.9.2342.19200300.100.1.3",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
)
_FIRST_NAME_ATTRIBUTES: Final = (
    "givenname",
    "firstname",
    "first_name",
    "urn:oid:2.5.4.42",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
)
_LAST_NAME_ATTRIBUTES: Final = (
    "sn",
    "surname",
    "lastname",
    "last_name",
    "urn:oid:2.5.4.4",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
)
# Failures that point at a forged, tampered, wrapped or replayed message rather than a slow user.
_HIGH_RISK: Final = frozenset(
    {
        SamlReason.SIGNATURE,
        SamlReason.MULTIPLE_ASSERTIONS,
        SamlReason.NAMEID_COMMENT,
        SamlReason.DEPRECATED_ALGORITHM,
        SamlReason.DOCTYPE,
        SamlReason.REPLAY,
        "BINDING_MISMATCH",
    }
)
_MAX_ACS_BODY: Final = 1024 * 1024  # the core refuses a SAMLResponse over 512 KiB of base64
_TENANT_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SECURITY_HEADERS: Final = {
    "cache-control": "no-store",
    "pragma": "no-cache",
    "content-security-policy": (
        "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_CONTINUE_PAGE: Final = (
    '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
    '<meta http-equiv="refresh" content="0;url=/"><title>Signed in</title></head>'
    '<body><p>You are signed in. <a href="/">Continue to GWM CRM</a>.</p></body></html>'
)
_FAILED_PAGE: Final = (
    '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Sign-in failed</title></head>'
    f"<body><h1>Sign-in failed</h1><p>{_FAILED_MESSAGE}</p><p>Code: {FAILED_CODE}</p></body></html>"
)


class _NotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Tenant:
    tenant_id: uuid.UUID
    subdomain: str
    policy: TenantSecurityPolicy
    config: SamlTenantConfig | None
    config_error: SamlConfigError | None


def _service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


async def _load_tenant(service: AuthService, subdomain: str) -> _Tenant:
    """The tenant and its SAML setup; _NotFound when there is no tenant or no `auth.saml` entry."""
    if not _TENANT_LABEL.fullmatch(subdomain):
        raise _NotFound
    tenant_id = await tenant_by_subdomain(service, subdomain)
    if tenant_id is None:
        raise _NotFound
    async with service.engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        row = (
            await conn.execute(
                text(
                    "SELECT config_value, is_encrypted FROM tenant_configurations"
                    " WHERE tenant_id = :t AND config_key = :k"
                ),
                {"t": tenant_id, "k": CONFIG_KEY},
            )
        ).first()
        if row is None:
            raise _NotFound
        policy = await load_policy(conn, tenant_id)
    try:
        config = tenant_config(
            service.public_url, subdomain, row.config_value, policy, encrypted=row.is_encrypted
        )
    except SamlConfigError as exc:
        _log.warning("tenant %s: SAML configuration unusable (%s)", tenant_id, exc.reason_code)
        return _Tenant(tenant_id, subdomain, policy, None, exc)
    return _Tenant(tenant_id, subdomain, policy, config, None)


def tenant_config(
    public_url: str, subdomain: str, value: object, policy: TenantSecurityPolicy, *, encrypted: bool = False
) -> SamlTenantConfig:
    """A `SamlTenantConfig` from the tenant's `auth.saml` entry, or SamlConfigError (fail closed)."""
    if encrypted or not isinstance(value, Mapping):
        raise SamlConfigError(SamlReason.CONFIG, "auth.saml must be a plain JSON object")
    contexts = value.get("required_authn_contexts", [])
    if not isinstance(contexts, list):
        raise SamlConfigError(SamlReason.CONFIG, "required_authn_contexts must be a list")
    extra: dict[str, Any] = {}
    if "clock_skew_seconds" in value:
        extra["clock_skew_seconds"] = value["clock_skew_seconds"]
    base = f"{public_url.rstrip('/')}/auth/saml/{subdomain}"
    config = SamlTenantConfig(
        tenant=subdomain,
        sp_entity_id=f"{base}/metadata",
        acs_url=f"{base}/acs",
        idp_entity_id=value.get("idp_entity_id"),  # type: ignore[arg-type]  # validated by the dataclass
        idp_sso_url=value.get("idp_sso_url"),  # type: ignore[arg-type]
        idp_x509_cert=value.get("idp_x509_cert"),
        required_authn_contexts=tuple(contexts),
        **extra,
    )
    if policy.requires_mfa and not config.required_authn_contexts:
        # Without a required class the core cannot tell an MFA sign-in from a password one.
        raise SamlConfigError(
            SamlReason.CONFIG, "the tenant requires MFA: list the IdP's MFA AuthnContextClassRefs"
        )
    return config


def _not_found() -> Response:
    return error_response(404, "NOT_FOUND", _NOT_FOUND_MESSAGE, **{"cache-control": "no-store"})


def _store(service: AuthService, tenant: _Tenant) -> DbSamlStateStore:
    return DbSamlStateStore(
        service.engine, tenant_id=tenant.tenant_id, subdomain=tenant.subdomain, clock=service.now
    )


def _acs_path(subdomain: str) -> str:
    return f"/auth/saml/{subdomain}/acs"


# --- routes ------------------------------------------------------------------------------------------


async def metadata(request: Request) -> Response:
    service = _service(request)
    try:
        tenant = await _load_tenant(service, request.path_params["tenant"])
    except _NotFound:
        return _not_found()
    if tenant.config is None:
        return _not_found()
    try:
        xml = sp_metadata(tenant.config)
    except SamlConfigError as exc:
        _log.warning("tenant %s: SP metadata refused (%s)", tenant.tenant_id, exc.reason_code)
        return _not_found()
    return Response(xml, media_type="application/samlmetadata+xml", headers={"cache-control": "no-cache"})


async def login(request: Request) -> Response:
    service = _service(request)
    meta = request_meta(request)
    try:
        tenant = await _load_tenant(service, request.path_params["tenant"])
    except _NotFound:
        return _not_found()
    if tenant.config is None:
        assert tenant.config_error is not None
        return await _refuse(request, service, tenant, meta, tenant.config_error.reason_code, stage="login")
    try:
        url, request_id = build_login_request(tenant.config, None)
    except SamlConfigError as exc:  # python3-saml refused the settings
        return await _refuse(request, service, tenant, meta, exc.reason_code, stage="login")
    await _store(service, tenant).issue_request(request_id, REQUEST_TTL)
    response = RedirectResponse(url, status_code=303, headers={"cache-control": "no-store"})
    response.set_cookie(
        BINDING_COOKIE,
        request_id,
        max_age=int(REQUEST_TTL.total_seconds()),
        path=_acs_path(tenant.subdomain),
        secure=True,
        httponly=True,
        samesite="none",
    )
    return response


async def acs(request: Request) -> Response:
    service = _service(request)
    meta = request_meta(request)
    try:
        tenant = await _load_tenant(service, request.path_params["tenant"])
    except _NotFound:
        return _not_found()
    if tenant.config is None:
        assert tenant.config_error is not None
        return await _refuse(request, service, tenant, meta, tenant.config_error.reason_code)
    config = tenant.config

    saml_response = await _saml_response(request)
    if saml_response is None:
        return await _refuse(request, service, tenant, meta, SamlReason.INVALID)
    bound_request = request.cookies.get(BINDING_COOKIE)
    if not bound_request:
        # Checked before validation, so nothing is consumed for a response this browser never asked for.
        return await _refuse(request, service, tenant, meta, "NO_BINDING_COOKIE")
    try:
        identity = await validate_response(
            config,
            saml_response,
            # The route is this tenant's ACS; its public URL (not the Host a proxy passed on) is what
            # the IdP was told and what the Recipient must name.
            request_url_data=request_url_data_from(config.acs_url),
            store=_store(service, tenant),
        )
    except SamlRejected as exc:
        return await _refuse(request, service, tenant, meta, exc.reason_code)
    if not hmac.compare_digest(bound_request.encode(), identity.in_response_to.encode()):
        # A valid response to someone else's request (login CSRF), posted through this browser.
        return await _refuse(request, service, tenant, meta, "BINDING_MISMATCH")
    if identity.name_id_format == _TRANSIENT:
        return await _refuse(request, service, tenant, meta, SsoReason.TRANSIENT_NAME_ID)

    mfa_asserted = _mfa_asserted(config, identity)
    if tenant.policy.requires_mfa and not mfa_asserted:  # the core already required the context
        return await _refuse(request, service, tenant, meta, SsoReason.MFA_NOT_ASSERTED)
    external = _external_identity(identity)
    try:
        user, token, session_id = await start_sso_session(
            service, tenant.tenant_id, tenant.policy, meta, external, mfa_verified=mfa_asserted, field="/auth/saml/acs"
        )
    except SsoRefused as exc:
        return await _refuse(request, service, tenant, meta, exc.reason_code, user_id=exc.user_id)

    await record_event(
        service.writer,
        tenant_id=tenant.tenant_id,
        event=AuthEvent.SAML_LOGIN_SUCCEEDED,
        meta=meta,
        user_id=user.user_id,
        session_id=session_id,
        description=f"SAML sign-in ({user.resolution.value} user)",
        details={
            "issuer": identity.issuer,
            "authn_context": identity.authn_context,
            "mfa_asserted": mfa_asserted,
            "resolution": user.resolution.value,
        },
        status=200,
    )
    response = HTMLResponse(_CONTINUE_PAGE, headers=_SECURITY_HEADERS)
    session_cookie(response, service, token, int(tenant.policy.absolute_timeout.total_seconds()))
    _clear_binding(response, tenant.subdomain)
    return response


# --- helpers -----------------------------------------------------------------------------------------


async def _saml_response(request: Request) -> str | None:
    """The one SAMLResponse field of the form body (read with a size cap), or None."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_ACS_BODY:
            return None
    try:
        fields = parse_qsl(body.decode("ascii"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return None
    values = [value for name, value in fields if name == "SAMLResponse"]
    return values[0] if len(values) == 1 and values[0] else None


def _mfa_asserted(config: SamlTenantConfig, identity: SamlIdentity) -> bool:
    accepted = config.required_authn_contexts or KNOWN_MFA_CONTEXTS
    return identity.authn_context is not None and identity.authn_context in accepted


def _attribute(attributes: Mapping[str, tuple[str, ...]], names: tuple[str, ...]) -> str | None:
    lowered = {name.lower(): values for name, values in attributes.items()}
    for name in names:
        for value in lowered.get(name, ()):
            if value.strip():
                return value.strip()
    return None


def _external_identity(identity: SamlIdentity) -> ExternalIdentity:
    email = normalize_email(_attribute(identity.attributes, _EMAIL_ATTRIBUTES))
    if email is None and identity.name_id_format == _EMAIL_FORMAT:
        email = normalize_email(identity.name_id)
    return ExternalIdentity(
        provider=IdentityProvider.SAML,
        issuer=identity.issuer,
        subject=identity.name_id,
        email=email,
        # Signed by the certificate the tenant pinned for its own IdP: the tenant vouches for it.
        email_verified=email is not None,
        first_name=_attribute(identity.attributes, _FIRST_NAME_ATTRIBUTES),
        last_name=_attribute(identity.attributes, _LAST_NAME_ATTRIBUTES),
    )



def _clear_binding(response: Response, subdomain: str) -> None:
    response.delete_cookie(
        BINDING_COOKIE, path=_acs_path(subdomain), secure=True, httponly=True, samesite="none"
    )


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def _refuse(
    request: Request,
    service: AuthService,
    tenant: _Tenant,
    meta: RequestMeta,
    reason: str,
    *,
    user_id: uuid.UUID | None = None,
    stage: str = "acs",
) -> Response:
    """Audit the refusal with its reason and answer the one generic 403."""
    await record_event(
        service.writer,
        tenant_id=tenant.tenant_id,
        event=AuthEvent.SAML_LOGIN_FAILED,
        meta=meta,
        user_id=user_id,
        granted=False,
        risk=RiskLevel.HIGH if reason in _HIGH_RISK else RiskLevel.MEDIUM,
        description=f"SAML sign-in refused: {reason}",
        details={"reason": str(reason), "stage": stage},
        status=403,
    )
    response: Response
    if _wants_html(request):
        response = HTMLResponse(_FAILED_PAGE, status_code=403, headers=_SECURITY_HEADERS)
    else:
        response = error_response(403, FAILED_CODE, _FAILED_MESSAGE, **_SECURITY_HEADERS)
    if stage == "acs":
        _clear_binding(response, tenant.subdomain)
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/auth/saml/{tenant}/metadata", metadata, methods=["GET"]),
        Route("/auth/saml/{tenant}/login", login, methods=["GET"]),
        Route("/auth/saml/{tenant}/acs", acs, methods=["POST"]),
    ]
