"""Cross-site request forgery: what a browser can send to this server from another site without a CORS
preflight must never act with the session cookie (docs/api.md, "CSRF").

The session cookie is SameSite=Lax, so another *site* cannot ride it on a POST, but a sibling
subdomain (same site) can, and a top-level GET carries it from anywhere. A request a browser sends
without a preflight is a "simple" one (Fetch standard): GET, HEAD or POST, only CORS-safelisted
headers, and a Content-Type of `text/plain`, `application/x-www-form-urlencoded` or
`multipart/form-data` (or none). This server never grants a preflight to an origin outside
GWM_CORS_ORIGINS, so a request that carries anything else was either same-origin or allowed.

Rules, applied by server/middleware.py before the principal lookup (a refused request runs no SQL):
- Unsafe methods (POST, PUT, PATCH, DELETE) must send `application/json`, whatever the credential;
  a body-less one may send no Content-Type, but one declaring a simple type is refused (415) even
  without a body. Exceptions: the SAML ACS (an IdP's cross-site form POST, `form_post_pattern`:
  `application/x-www-form-urlencoded` only, authenticated by its signed assertion, not the cookie),
  and multipart uploads, which server/storage_routes.py UploadGuard admits only with the
  `GraphQL-Require-Preflight` header (never simple).
- A request authenticated by the session cookie (no Authorization header) that is a GET or HEAD of
  the GraphQL endpoint, or an unsafe request without a body, must show it is not a cross-site
  simple request: `Sec-Fetch-Site: same-origin` (every current browser sends it), or one of
  `PREFLIGHT_HEADERS`, or a Content-Type that is not simple. Otherwise 403 CROSS_SITE_REQUEST.
  Bearer credentials (API keys, session tokens in Authorization) are never sent by a browser on
  its own, so they are not subject to this rule.
"""

from __future__ import annotations

from starlette.datastructures import Headers

__all__ = [
    "PREFLIGHT_HEADERS",
    "SIMPLE_CONTENT_TYPES",
    "cookie_authenticated",
    "cross_site_refusal",
    "simple_content_type",
]

#: Content types a browser sends cross-site without a preflight (an HTML form's encodings).
SIMPLE_CONTENT_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})

#: Headers that make a browser's request need a CORS preflight, as clients commonly send them to say so
#: (GraphQL-Require-Preflight is the one our uploads require; Apollo's two; the XMLHttpRequest marker).
PREFLIGHT_HEADERS = frozenset(
    {"graphql-require-preflight", "apollo-require-preflight", "x-apollo-operation-name", "x-requested-with"}
)

CROSS_SITE_MESSAGE = (
    "A request authenticated by the session cookie must come from this site (Sec-Fetch-Site: same-origin) "
    "or carry a header that needs a CORS preflight, such as GraphQL-Require-Preflight: 1."
)


def _content_type(headers: Headers) -> str | None:
    value = headers.get("content-type")
    return None if value is None else value.split(";", 1)[0].strip().lower()


def simple_content_type(headers: Headers) -> bool:
    """Whether the request declares a content type an HTML form can send."""
    return _content_type(headers) in SIMPLE_CONTENT_TYPES


def cookie_authenticated(headers: Headers, cookie_name: str) -> bool:
    """Whether the credential is the session cookie: the middleware reads Authorization first, and only
    without one the cookie (server/middleware.py `_credential`)."""
    if "authorization" in headers:
        return False
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == cookie_name and value:
            return True
    return False


def _shows_intent(headers: Headers) -> bool:
    """Whether the request is one a browser could not have sent cross-site without a preflight."""
    if headers.get("sec-fetch-site", "").strip().lower() == "same-origin":
        return True
    if any(name in headers for name in PREFLIGHT_HEADERS):
        return True
    content_type = _content_type(headers)
    return content_type is not None and content_type not in SIMPLE_CONTENT_TYPES


def cross_site_refusal(
    method: str, path: str, headers: Headers, *, cookie_name: str, graphql_paths: frozenset[str], bodyless: bool
) -> bool:
    """True when the cookie-authenticated request must be refused as a possible cross-site forgery."""
    if not cookie_authenticated(headers, cookie_name):
        return False
    guarded = (method in {"GET", "HEAD"} and path in graphql_paths) or (
        method in {"POST", "PUT", "PATCH", "DELETE"} and bodyless
    )
    return guarded and not _shows_intent(headers)
