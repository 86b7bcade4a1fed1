"""HTTP plumbing shared by the /auth routes: JSON bodies, error responses, the caller's identity.

`parse_json_object` is the one strict JSON body parser of the server (the /auth routes and
/graphql): UTF-8 only, an object at the top, nested at most MAX_JSON_DEPTH deep, and (for /auth,
whose values go straight to the database) no NUL or unpaired surrogate in any string.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from auth.audit import RequestMeta
from auth.exceptions import AuthRequestError
from auth.principal import Principal

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_JSON_STRING",
    "error_response",
    "parse_json_object",
    "principal_of",
    "read_json",
    "request_meta",
    "require_str",
    "subdomain_of",
]

MAX_JSON_BYTES = 64 * 1024
# Deeper than any request of ours (GraphQL variables included); bounds every later walk of the value.
MAX_JSON_DEPTH = 32
# The longest string an /auth body may hold (routes check tighter limits per field).
MAX_JSON_STRING = 4096
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


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
    return parse_json_object(body, storable=True)


def parse_json_object(body: bytes, *, storable: bool = False) -> dict[str, Any]:
    """`body` as a JSON object, or AuthRequestError (400 BAD_REQUEST) saying what is wrong.

    With `storable`, a string (key or value) holding NUL or an unpaired surrogate is refused too,
    naming the top-level field it is under.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthRequestError(400, "BAD_REQUEST", "The body must be JSON encoded as UTF-8.") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise AuthRequestError(400, "BAD_REQUEST", f"The body is nested deeper than {MAX_JSON_DEPTH} levels.") from None
    except ValueError:
        raise AuthRequestError(400, "BAD_REQUEST", "The body must be a JSON object.") from None
    if not isinstance(data, dict):
        raise AuthRequestError(400, "BAD_REQUEST", "The body must be a JSON object.")
    _check_json(data, storable=storable)
    return data


def _check_json(data: dict[str, Any], *, storable: bool) -> None:
    """Depth (always) and storable strings (if asked), iteratively: no recursion on hostile input."""
    stack: list[tuple[Any, int, str | None]] = [(data, 1, None)]
    while stack:
        value, depth, field = stack.pop()
        if isinstance(value, str):
            if storable:
                where = f"`{field}`" if field else "A field name"
                if _UNSTORABLE.search(value):
                    raise AuthRequestError(
                        400, "BAD_REQUEST", f"{where} contains a NUL character or an unpaired surrogate.", field=field
                    )
                if len(value) > MAX_JSON_STRING:
                    raise AuthRequestError(
                        400, "BAD_REQUEST", f"{where} is longer than {MAX_JSON_STRING} characters.", field=field
                    )
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise AuthRequestError(400, "BAD_REQUEST", f"The body is nested deeper than {MAX_JSON_DEPTH} levels.")
        if isinstance(value, dict):
            for key, item in value.items():
                under = key if field is None else field
                stack.append((key, depth, None if field is None and _UNSTORABLE.search(key) else under))
                stack.append((item, depth + 1, under))
        else:
            stack.extend((item, depth + 1, field) for item in value)


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
