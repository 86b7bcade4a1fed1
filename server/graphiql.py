"""GraphiQL for analysts: the page at /graphiql, its assets, and the browser redirect from /graphql.

Everything the page loads comes from this process, so it works with no internet and under a
Content-Security-Policy of 'self':
- GraphiQL, React, ReactDOM, graphql-ws and the explorer plugin are read from the
  `graphene-django-graphiql-static` wheel's package data (its Django modules are never imported);
- the page, its script and its stylesheet are ours, in server/static/.

Assets are served from an allow-list at `/graphiql/static/<digest>/<name>`: the digest is the
start of the file's SHA-256, so a URL names exactly one content and can be cached as immutable;
the page also carries each file's SRI hash. The page and the assets are public (they hold no
data); every query the page runs goes to `/graphql` with the caller's credential: the session
cookie (same-origin fetch) or a token pasted into GraphiQL's headers editor.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "GRAPHIQL_PATH",
    "PUBLIC_PATHS",
    "PUBLIC_PREFIXES",
    "STATIC_PREFIX",
    "Asset",
    "BrowserRedirect",
    "graphiql_routes",
    "load_assets",
    "render_page",
]

GRAPHIQL_PATH = "/graphiql"
STATIC_PREFIX = "/graphiql/static/"
# For the auth middleware: reachable without a principal.
PUBLIC_PATHS = (GRAPHIQL_PATH,)
PUBLIC_PREFIXES = (STATIC_PREFIX,)

# The SHA-256 of react-remove-scroll-bar's sheet as GraphiQL 3 inserts it on this page while a
# dialog is open (".with-scroll-bars-hidden {...} body {...}" with every gap 0, because this
# page's body has no margin and never scrolls). CSP hashes a <style> element's exact text.
_SCROLL_LOCK_STYLE_HASH = "sha256-Y/huXlwoYkVyQlxwSVcCi1RCDGDCSVBzDt0hYP9qlTc="

# Each directive says what the page truly needs; everything else falls back to default-src 'self'.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        # Scripts, stylesheets, fetches and anything not named below: this origin only, nothing inline.
        "default-src 'self'",
        # The fetcher's POST /graphql and the sign-in bar's /auth/* calls. CSP Level 3 'self' also
        # matches ws:/wss: to this host and port, which the (lazy) graphql-ws client would use.
        "connect-src 'self'",
        # Not 'unsafe-inline': the one <style> element GraphiQL inserts (the scroll lock of its
        # dialogs) is allowed by its hash; the browser test opens a dialog and fails on any CSP
        # violation, so a vendor upgrade that changes that text is caught. Everything else GraphiQL
        # and CodeMirror style at run time goes through the CSSOM (element.style), which CSP allows.
        f"style-src 'self' '{_SCROLL_LOCK_STYLE_HASH}'",
        # graphiql.min.css draws a few icons as data: PNG images.
        "img-src 'self' data:",
        # graphiql.min.css embeds its fonts (Roboto, Fira Code) as data: URLs.
        "font-src 'self' data:",
        # Not covered by default-src: never framed (X-Frame-Options DENY for older browsers), no
        # <base> to re-point relative URLs, and no native form submission (the sign-in form is sent
        # by our script as JSON; a native submit would put the password in a URL).
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    )
)

_PAGE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    # The page names its assets by digest: revalidate it so a deploy's new assets are picked up.
    "cache-control": "no-cache",
}
# An asset URL names one content (its digest), so it never needs revalidating.
_ASSET_HEADERS = {
    "cache-control": "public, max-age=31536000, immutable",
    "x-content-type-options": "nosniff",
    "vary": "Accept-Encoding",
}

_VENDOR_PACKAGE = "graphene_django_graphiql_static"
_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"


@dataclass(frozen=True, slots=True)
class _Source:
    package: str
    path: tuple[str, ...]
    media_type: str


def _vendor(file: str, media_type: str) -> _Source:
    return _Source(_VENDOR_PACKAGE, ("static", _VENDOR_PACKAGE, file), media_type)


def _own(file: str, media_type: str) -> _Source:
    return _Source("server", ("static", file), media_type)


# The allow-list: URL name -> file. Nothing else under STATIC_PREFIX is ever served.
_SOURCES: dict[str, _Source] = {
    "graphiql.min.css": _vendor("graphiql.min.css", _CSS),
    "graphiql-explorer.css": _vendor("style.css", _CSS),  # the explorer plugin's styles
    "react.production.min.js": _vendor("react.production.min.js", _JS),
    "react-dom.production.min.js": _vendor("react-dom.production.min.js", _JS),
    "graphiql.min.js": _vendor("graphiql.min.js", _JS),
    "graphql-ws.min.js": _vendor("graphql-ws.min.js", _JS),
    "graphiql-plugin-explorer.umd.js": _vendor("graphiql-plugin-explorer.umd.js", _JS),
    "graphiql.css": _own("graphiql.css", _CSS),
    "graphiql.js": _own("graphiql.js", _JS),
}
_PAGE = ("server", ("static", "graphiql.html"))
# {{url:NAME}} and {{integrity:NAME}} in the page template.
_PLACEHOLDER = re.compile(r"\{\{(url|integrity):([A-Za-z0-9._-]+)\}\}")


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    media_type: str
    body: bytes
    gzipped: bytes
    digest: str  # the first 16 hex digits of the SHA-256: the URL's version segment
    integrity: str  # "sha256-<base64>", for the page's integrity attributes

    @property
    def url(self) -> str:
        return f"{STATIC_PREFIX}{self.digest}/{self.name}"


def _read(package: str, path: tuple[str, ...]) -> bytes:
    # files() imports only the package's __init__ (for the vendor wheel: a version string).
    return resources.files(package).joinpath(*path).read_bytes()


def load_assets() -> dict[str, Asset]:
    """Every allow-listed file, read once; fails at startup when the vendor package is missing."""
    assets = {}
    for name, source in _SOURCES.items():
        body = _read(source.package, source.path)
        sha = hashlib.sha256(body)
        assets[name] = Asset(
            name=name,
            media_type=source.media_type,
            body=body,
            gzipped=gzip.compress(body, compresslevel=6, mtime=0),
            digest=sha.hexdigest()[:16],
            integrity="sha256-" + base64.b64encode(sha.digest()).decode(),
        )
    return assets


def render_page(assets: Mapping[str, Asset]) -> bytes:
    """The page template with each placeholder replaced by the asset's URL or SRI hash."""
    template = _read(*_PAGE).decode()

    def replace(match: re.Match[str]) -> str:
        kind, name = match.groups()
        asset = assets.get(name)
        if asset is None:
            raise ValueError(f"graphiql.html names {name!r}, which is not an allow-listed asset")
        return asset.url if kind == "url" else asset.integrity

    return _PLACEHOLDER.sub(replace, template).encode()


def _accepts_gzip(headers: Headers) -> bool:
    for part in headers.get("accept-encoding", "").lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() == "gzip":
            return params.replace(" ", "") not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}
    return False


def graphiql_routes() -> list[BaseRoute]:
    """GET /graphiql (the page) and GET /graphiql/static/<digest>/<name> (the allow-listed assets)."""
    assets = load_assets()
    page = render_page(assets)

    async def graphiql_page(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def graphiql_asset(request: Request) -> Response:
        asset = assets.get(request.path_params["name"])
        if asset is None or request.path_params["digest"] != asset.digest:
            return Response("Not Found", status_code=404, media_type="text/plain; charset=utf-8")
        headers = {**_ASSET_HEADERS}
        if _accepts_gzip(request.headers):
            headers["content-encoding"] = "gzip"
            return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    return [
        Route(GRAPHIQL_PATH, graphiql_page, methods=["GET"]),
        Route(STATIC_PREFIX + "{digest}/{name}", graphiql_asset, methods=["GET"]),
    ]


class BrowserRedirect:
    """A browser navigating to /graphql (GET, Accept names text/html) is sent to the GraphiQL page.

    Runs before authentication: the redirect holds no data, and the page is public. GraphQL
    clients (Accept: application/json, or none) reach the endpoint as before. The query string
    goes along, so `/graphql?query=...` opens GraphiQL with that query in the editor.
    """

    def __init__(self, app: ASGIApp, *, paths: Mapping[str, str]) -> None:
        self.app = app
        self.paths = dict(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in {"GET", "HEAD"}:
            target = self.paths.get(scope["path"])
            if target is not None and "text/html" in Headers(scope=scope).get("accept", "").lower():
                query = scope.get("query_string", b"")
                location = target + ("?" + query.decode("latin-1") if query else "")
                headers = {"location": location, "cache-control": "no-store"}
                await Response(status_code=307, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)
