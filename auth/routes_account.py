"""/auth account endpoints: accept an invitation, request and complete a password reset, change a password.

    POST /auth/invitations/accept       {token, password}            204   public
    POST /auth/password/reset/request   {email, tenant?}             202   public, same answer for every email
    POST /auth/password/reset           {token, password}            204   public
    POST /auth/password/change          {currentPassword, newPassword} 204 signed in (allowed while a
                                                                          password change is forced)

The tenant of a reset request comes from `tenant` or the Host's subdomain, as for sign-in. The
behaviour lives in `auth.accounts`; these handlers only read the body and map errors.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from auth import accounts
from auth.exceptions import AuthRequestError
from auth.http import error_response, principal_of, read_json, request_meta, require_str, subdomain_of
from auth.service import AuthService

__all__ = ["RESET_REQUESTED_MESSAGE", "routes"]

RESET_REQUESTED_MESSAGE = (
    "If an account with that email address can use a password, a reset link is on its way. "
    "It works once and expires in 24 hours."
)
_NO_STORE = {"cache-control": "no-store"}


def _service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


def _error(exc: AuthRequestError) -> Response:
    return error_response(exc.status, exc.code, exc.message, field=exc.field, **_NO_STORE)


async def accept_invitation(request: Request) -> Response:
    try:
        data = await read_json(request)
        token = require_str(data, "token", max_length=accounts.MAX_TOKEN_LENGTH)
        password = require_str(data, "password")
        await accounts.accept_invitation(
            _service(request), token=token, password=password, meta=request_meta(request)
        )
    except AuthRequestError as exc:
        return _error(exc)
    return Response(status_code=204, headers=_NO_STORE)


async def request_reset(request: Request) -> Response:
    try:
        data = await read_json(request)
        email = require_str(data, "email", max_length=255)
        tenant = data.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise AuthRequestError(400, "BAD_REQUEST", "`tenant` must be a string.", field="tenant")
        subdomain = tenant or subdomain_of(request.headers.get("host")) or ""
        await accounts.request_password_reset(
            _service(request), subdomain=subdomain, email=email, meta=request_meta(request)
        )
    except AuthRequestError as exc:
        return _error(exc)
    return JSONResponse(
        {"status": "accepted", "message": RESET_REQUESTED_MESSAGE}, status_code=202, headers=_NO_STORE
    )


async def reset_password(request: Request) -> Response:
    try:
        data = await read_json(request)
        token = require_str(data, "token", max_length=accounts.MAX_TOKEN_LENGTH)
        password = require_str(data, "password")
        await accounts.reset_password(
            _service(request), token=token, password=password, meta=request_meta(request)
        )
    except AuthRequestError as exc:
        return _error(exc)
    return Response(status_code=204, headers=_NO_STORE)


async def change_password(request: Request) -> Response:
    try:
        data = await read_json(request)
        current = require_str(data, "currentPassword")
        new = require_str(data, "newPassword")
        await accounts.change_password(
            _service(request),
            principal_of(request),
            current_password=current,
            new_password=new,
            meta=request_meta(request),
        )
    except AuthRequestError as exc:
        return _error(exc)
    return Response(status_code=204, headers=_NO_STORE)


def routes() -> list[BaseRoute]:
    return [
        Route("/auth/invitations/accept", accept_invitation, methods=["POST"]),
        Route("/auth/password/reset/request", request_reset, methods=["POST"]),
        Route("/auth/password/reset", reset_password, methods=["POST"]),
        Route("/auth/password/change", change_password, methods=["POST"]),
    ]
