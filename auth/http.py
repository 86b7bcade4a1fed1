"""HTTP plumbing shared by the /auth routes: JSON bodies, error responses, the caller's identity."""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from auth.audit import RequestMeta
from auth.exceptions import AuthRequestError
from auth.principal import Principal

__all__ = [
    "error_response",
    "principal_of",
    "read_json",
    "request_meta",
    "require_str",
    "subdomain_of",
]

MAX_JSON_BYTES = 64 * 1024


def error_response(status: int, code: str, message: str, *, field: str | None = None, **headers: str) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status, headers=headers or None)


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body, or AuthRequestError (400) saying what is wrong."""
    body = await request.body()
    if len(body) > MAX_JSON_BYTES:
        raise AuthRequestError(413, "TOO_LARGE", "The request body is too large.")
    try:
        data = await request.json()
    except ValueError:
        raise AuthRequestError(400, "BAD_REQUEST", "The body must be a JSON object.") from None
    if not isinstance(data, dict):
        raise AuthRequestError(400, "BAD_REQUEST", "The body must be a JSON object.")
    return data


def require_str(data: dict[str, Any], name: str, *, max_length: int = 1024) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise AuthRequestError(400, "BAD_REQUEST", f"`{name}` is required (a non-empty string).", field=name)
    if len(value) > max_length:
        raise AuthRequestError(400, "BAD_REQUEST", f"`{name}` is too long.", field=name)
    return value


def request_meta(conn: HTTPConnection) -> RequestMeta:
    meta: RequestMeta = conn.scope["state"]["meta"]
    return meta


def principal_of(conn: HTTPConnection) -> Principal:
    """The authenticated caller; the middleware guarantees one on every non-public route."""
    principal: Principal = conn.scope["state"]["principal"]
    return principal


def subdomain_of(host: str | None) -> str | None:
    """`acme` for `acme.gwm.example` or `acme.localhost[:port]`; None for bare hosts and addresses."""
    if not host:
        return None
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]").lower()
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        pass
    labels = name.split(".")
    if len(labels) >= 3 or (len(labels) == 2 and labels[1] == "localhost"):
        return labels[0]
    return None
