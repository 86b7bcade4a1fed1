"""Security headers, CORS and the limit profile of every request (docs/deploy.md, "Production switches").

`SecurityMiddleware` is the outermost layer of the application:

- every HTTP response carries `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
  `X-Frame-Options: DENY` and a Content-Security-Policy with `frame-ancestors 'none'` (a route's own
  policy, such as GraphiQL's, is kept and gets `frame-ancestors 'none'` appended if it lacks one);
  `Strict-Transport-Security` when the request came over https (or GWM_HSTS=on forces it, for a TLS
  proxy that is not a trusted one); a route's own value of any of these is kept;
- CORS from a configured origin allow-list (GWM_CORS_ORIGINS, none by default): an allowed origin's
  preflight and requests are answered by Starlette's CORSMiddleware; a preflight from any other
  origin is refused with 403 and no CORS header, and its other requests get no CORS header (the
  browser then withholds the response from the page);
- the request's limit profile (schema/limits.py: development or production, from GWM_ENV) is put
  in the ASGI scope's state, where the GraphQL extensions read it.

The `server` header is uvicorn's: `gwm serve` starts it with `server_header=False`.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schema.limits import PROFILE_STATE_KEY, LimitProfile

__all__ = ["CORS_HEADERS", "HSTS", "SecurityMiddleware"]

HSTS = "max-age=31536000; includeSubDomains"
# Request headers a cross-origin caller may send: the JSON body, a bearer token or API key, the
# request id and trace context, the non-simple header uploads require.
CORS_HEADERS = ("authorization", "content-type", "graphql-require-preflight", "x-request-id", "traceparent")
_FRAME_ANCESTORS = "frame-ancestors 'none'"
_DEFAULTS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        profile: LimitProfile,
        cors_origins: Sequence[str] = (),
        force_hsts: bool = False,
    ) -> None:
        self.app = app
        self.profile = profile
        self.origins = frozenset(o.rstrip("/") for o in cors_origins)
        self.force_hsts = force_hsts
        # Starlette's CORS handling for the allowed origins only; none when the list is empty.
        self.cors: ASGIApp | None = (
            CORSMiddleware(
                app,
                allow_origins=sorted(self.origins),
                allow_methods=("GET", "POST"),
                allow_headers=CORS_HEADERS,
                expose_headers=("x-request-id", "retry-after"),
                max_age=600,
            )
            if self.origins
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[PROFILE_STATE_KEY] = self.profile
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        hsts = self.force_hsts or scope.get("scheme") == "https"

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                _secure(MutableHeaders(scope=message), hsts)
            await send(message)

        allowed = origin is not None and origin.rstrip("/") in self.origins
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if origin is not None and not allowed and preflight:
            response = JSONResponse(
                {"error": {"code": "CORS_ORIGIN_REFUSED", "message": "This origin may not call the API."}},
                status_code=403,
            )
            await response(scope, receive, send_secured)
            return
        if allowed and self.cors is not None:
            await self.cors(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)


def _secure(headers: MutableHeaders, hsts: bool) -> None:
    """Add the security headers a response lacks; a route's own values stay."""
    for name, value in _DEFAULTS:
        if name.decode() not in headers:
            headers.append(name.decode(), value.decode())
    policy = headers.get("content-security-policy")
    if policy is None:
        headers.append("content-security-policy", _FRAME_ANCESTORS)
    elif "frame-ancestors" not in policy:
        headers["content-security-policy"] = f"{policy.rstrip('; ')}; {_FRAME_ANCESTORS}"
    if hsts and "strict-transport-security" not in headers:
        headers.append("strict-transport-security", HSTS)
    if "server" in headers:
        del headers["server"]
