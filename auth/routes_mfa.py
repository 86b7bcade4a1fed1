"""/auth/mfa endpoints: TOTP enrolment, verification and recovery codes (auth/mfa_service.py).

    POST /auth/mfa/enroll    {}        -> 200 {secret, provisioningUri}   (pending until confirmed)
    POST /auth/mfa/confirm   {code}    -> 200 {recoveryCodes}             (shown once)
    POST /auth/mfa/verify    {code}    -> 204                             (the session passed MFA)
    POST /auth/mfa/recovery  {code}    -> 200 {remaining}

A session that has not passed MFA may call these (MFA_PATHS in auth/routes.py), nothing else.
Every answer is `Cache-Control: no-store`: some carry the secret or the recovery codes, and none
should be kept by a proxy or the browser.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from auth.exceptions import AuthRequestError
from auth.http import error_response, principal_of, read_json, request_meta, require_str
from auth.mfa_service import confirm_enrollment, start_enrollment, use_recovery_code, verify_mfa
from auth.service import AuthService

__all__ = ["routes"]

_NO_STORE = {"cache-control": "no-store"}
# Six digits, or a 16-character recovery code with dashes and spaces: anything longer is not one.
_MAX_CODE_LENGTH = 64


def _service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


async def _code(request: Request) -> str:
    return require_str(await read_json(request), "code", max_length=_MAX_CODE_LENGTH)


def _handled(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            response = await endpoint(request)
        except AuthRequestError as exc:
            return error_response(exc.status, exc.code, exc.message, field=exc.field, **_NO_STORE)
        response.headers.update(_NO_STORE)
        return response

    return run


@_handled
async def enroll(request: Request) -> Response:
    enrollment = await start_enrollment(_service(request), principal_of(request), request_meta(request))
    return JSONResponse({"secret": enrollment.secret, "provisioningUri": enrollment.provisioning_uri})


@_handled
async def confirm(request: Request) -> Response:
    code = await _code(request)
    codes = await confirm_enrollment(_service(request), principal_of(request), code, request_meta(request))
    return JSONResponse({"recoveryCodes": codes})


@_handled
async def verify(request: Request) -> Response:
    code = await _code(request)
    await verify_mfa(_service(request), principal_of(request), code, request_meta(request))
    return Response(status_code=204)


@_handled
async def recovery(request: Request) -> Response:
    code = await _code(request)
    remaining = await use_recovery_code(_service(request), principal_of(request), code, request_meta(request))
    return JSONResponse({"remaining": remaining})


def routes() -> list[BaseRoute]:
    return [
        Route("/auth/mfa/enroll", enroll, methods=["POST"]),
        Route("/auth/mfa/confirm", confirm, methods=["POST"]),
        Route("/auth/mfa/verify", verify, methods=["POST"]),
        Route("/auth/mfa/recovery", recovery, methods=["POST"]),
    ]
