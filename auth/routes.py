"""The /auth HTTP endpoints: sign-in and sign-out here; MFA, account lifecycle and SAML in their modules.

Every route answers JSON; errors are `{"error": {"code", "message", "field"?}}`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from auth.audit import AuthEvent, record_event
from auth.exceptions import AuthRequestError, LoginFailed
from auth.http import error_response, principal_of, read_json, request_meta, require_str, subdomain_of
from auth.login import password_login
from auth.rate_limits import limit_sensitive_routes
from auth.service import AuthService
from auth.sessions import TerminationReason, terminate_session
from models.db import set_tenant

__all__ = [
    "MFA_PATHS",
    "PASSWORD_CHANGE_PATHS",
    "PUBLIC_PATHS",
    "PUBLIC_PREFIXES",
    "SAML_ACS_PATTERN",
    "auth_routes",
    "session_cookie",
]

# Reachable without a principal.
PUBLIC_PATHS = (
    "/healthz",
    "/readyz",
    "/auth/login",
    "/auth/password/reset",
    "/auth/password/reset/request",
    "/auth/invitations/accept",
    "/auth/methods",
)
PUBLIC_PREFIXES = ("/auth/saml/", "/auth/oidc/")
# Reachable by a session that has not passed MFA yet, or must change its password.
MFA_PATHS = ("/auth/mfa/enroll", "/auth/mfa/confirm", "/auth/mfa/verify", "/auth/mfa/recovery", "/auth/logout",
             "/auth/session")
PASSWORD_CHANGE_PATHS = ("/auth/password/change", "/auth/logout", "/auth/session", *MFA_PATHS)
# The only form-encoded POST the server accepts: the IdP's HTTP-POST binding.
SAML_ACS_PATTERN = r"/auth/saml/[a-z0-9-]+/acs"

INVALID_CREDENTIALS = "The email or password is incorrect, or the account is locked or disabled."


def _service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


def session_cookie(response: Response, service: AuthService, token: str, max_age: int) -> None:
    """HttpOnly, Secure, SameSite=Lax: Strict would drop the cookie on the SAML POST round trip."""
    response.set_cookie(
        service.session_cookie, token, max_age=max_age, httponly=True, secure=True, samesite="lax", path="/"
    )


async def login(request: Request) -> Response:
    service = _service(request)
    try:
        data = await read_json(request)
        email = require_str(data, "email", max_length=255)
        password = require_str(data, "password", max_length=1024)
        tenant = data.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise AuthRequestError(400, "BAD_REQUEST", "`tenant` must be a string.", field="tenant")
    except AuthRequestError as exc:
        return error_response(exc.status, exc.code, exc.message, field=exc.field)
    subdomain = tenant or subdomain_of(request.headers.get("host")) or ""
    try:
        result = await password_login(
            service, subdomain=subdomain, email=email, password=password, meta=request_meta(request)
        )
    except LoginFailed:
        return error_response(401, "INVALID_CREDENTIALS", INVALID_CREDENTIALS)
    max_age = int((result.expires_at - service.now()).total_seconds())
    response = JSONResponse(
        {
            "token": result.token,
            "sessionId": str(result.session_id),
            "expiresAt": result.expires_at.isoformat().replace("+00:00", "Z"),
            "mfaRequired": result.mfa_required,
            "mfaEnrollmentRequired": result.mfa_enrollment_required,
            "passwordChangeRequired": result.password_change_required,
        },
        headers={"cache-control": "no-store"},
    )
    session_cookie(response, service, result.token, max_age)
    return response


async def logout(request: Request) -> Response:
    service = _service(request)
    principal = principal_of(request)
    response = Response(status_code=204)
    response.delete_cookie(service.session_cookie, path="/", secure=True, httponly=True, samesite="lax")
    if principal.session_id is None:
        return error_response(400, "NOT_A_SESSION", "Only a session can sign out; revoke API keys instead.")
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        await terminate_session(conn, principal.session_id, TerminationReason.LOGOUT, service.now())
    await record_event(
        service.writer,
        tenant_id=principal.tenant_id,
        event=AuthEvent.LOGOUT,
        meta=request_meta(request),
        user_id=principal.user_id,
        session_id=principal.session_id,
    )
    return response


async def session_info(request: Request) -> Response:
    """What the current credential is allowed to do next (the sign-in flow's state)."""
    principal = principal_of(request)
    return JSONResponse(
        {
            "kind": principal.kind.value,
            "tenantId": str(principal.tenant_id),
            "userId": str(principal.user_id),
            "sessionId": str(principal.session_id) if principal.session_id else None,
            "mfaSatisfied": principal.mfa_satisfied,
            "mfaEnrollmentRequired": principal.mfa_enrollment_required,
            "passwordChangeRequired": principal.password_change_required,
            "permissions": sorted(principal.grants.tenant_wide),
        },
        headers={"cache-control": "no-store"},
    )


def auth_routes() -> list[BaseRoute]:
    from auth import routes_account, routes_mfa, routes_oidc, routes_saml

    return limit_sensitive_routes([  # sign-in and the other sensitive routes charged first (auth/rate_limits.py)
        Route("/auth/login", login, methods=["POST"]),
        Route("/auth/logout", logout, methods=["POST"]),
        Route("/auth/session", session_info, methods=["GET"]),
        *routes_mfa.routes(),
        *routes_account.routes(),
        *routes_saml.routes(),
        *routes_oidc.routes(),
    ])
