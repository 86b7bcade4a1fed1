"""GraphiQL over HTTP: the public page and its headers, the allow-listed assets, the browser redirect.

The browser test (tests/test_graphiql_browser.py) runs the page in Chromium; these check what the
server sends, in-process.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest
from starlette.applications import Starlette

from server import graphiql
from server.app import create_app
from tests.conftest import Database
from tests.support.http import app_client
from tests.support.http import test_settings as settings_for

VENDOR_FILES = {
    "graphiql.min.css", "graphiql-explorer.css", "react.production.min.js", "react-dom.production.min.js",
    "graphiql.min.js", "graphql-ws.min.js", "graphiql-plugin-explorer.umd.js",
}
OWN_FILES = {"graphiql.css", "graphiql.js"}


@pytest.fixture(scope="module")
def app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as http:
        yield http


class _Page(HTMLParser):
    """Collects the page's scripts, stylesheets and any inline code or style."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.stylesheets: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}=...>")
        if tag == "script":
            self.scripts.append(values)
            self._in_script = True
        elif tag == "style":
            self.inline.append("<style>")
        elif tag == "link" and values.get("rel") == "stylesheet":
            self.stylesheets.append(values)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script>{data.strip()[:40]}")


def _sri(body: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode()


async def test_the_page_is_public_with_its_security_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphiql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives == {
        "default-src": "'self'",
        "connect-src": "'self'",
        "style-src": "'self' 'sha256-Y/huXlwoYkVyQlxwSVcCi1RCDGDCSVBzDt0hYP9qlTc='",
        "img-src": "'self' data:",
        "font-src": "'self' data:",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'none'",
    }
    assert "unsafe" not in csp and "script-src" not in csp  # scripts: 'self' only, never inline or eval
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_the_page_has_no_inline_script_or_style_and_loads_only_allow_listed_assets(
    client: httpx.AsyncClient,
) -> None:
    page = _Page()
    page.feed((await client.get("/graphiql")).text)
    assert page.inline == []
    assert "{{" not in (await client.get("/graphiql")).text  # every placeholder was filled
    urls = [s["src"] for s in page.scripts] + [s["href"] for s in page.stylesheets]
    names = {str(url).rsplit("/", 1)[1] for url in urls}
    assert names == VENDOR_FILES | OWN_FILES
    assert all(re.fullmatch(r"/graphiql/static/[0-9a-f]{16}/[\w.-]+", str(url)) for url in urls), urls
    # Our script runs last, after everything it uses.
    assert str(page.scripts[-1]["src"]).endswith("/graphiql.js")
    for tag in [*page.scripts, *page.stylesheets]:
        url = str(tag.get("src") or tag.get("href"))
        asset = await client.get(url, headers={"accept-encoding": "identity"})
        assert asset.status_code == 200, url
        assert tag["integrity"] == _sri(asset.content), url


async def test_assets_are_served_with_their_types_immutable_and_compressed(client: httpx.AsyncClient) -> None:
    assets = graphiql.load_assets()
    assert set(assets) == VENDOR_FILES | OWN_FILES
    for name, asset in assets.items():
        plain = await client.get(asset.url, headers={"accept-encoding": "identity"})
        assert plain.status_code == 200
        assert plain.content == asset.body
        expected = "text/javascript; charset=utf-8" if name.endswith(".js") else "text/css; charset=utf-8"
        assert plain.headers["content-type"] == expected
        assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert plain.headers["x-content-type-options"] == "nosniff"
        assert "content-encoding" not in plain.headers
        zipped = await client.get(asset.url, headers={"accept-encoding": "gzip, br"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.content == asset.body  # httpx decodes it
        assert int(zipped.headers["content-length"]) < len(asset.body)
    # The vendor wheel is read as data: none of its Django modules was imported.
    assert not [m for m in sys.modules if m.startswith("graphene_django_graphiql_static.") or m == "django"]


@pytest.mark.parametrize(
    "path",
    [
        "/graphiql/static/{digest}/fetch.umd.js",  # in the wheel, not on the allow-list
        "/graphiql/static/{digest}/style.css",  # served under another name only
        "/graphiql/static/0000000000000000/graphiql.js",  # a stale or made-up digest
        "/graphiql/static/graphiql.js",
        "/graphiql/static/{digest}/..%2Fgraphiql.html",
    ],
)
async def test_anything_off_the_allow_list_is_not_found(client: httpx.AsyncClient, path: str) -> None:
    digest = graphiql.load_assets()["graphiql.js"].digest
    response = await client.get(path.format(digest=digest))
    assert response.status_code == 404


async def test_a_browser_opening_graphql_is_sent_to_graphiql_without_a_credential(
    client: httpx.AsyncClient,
) -> None:
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = await client.get("/graphql", headers={"accept": browser})
    assert response.status_code == 307 and response.headers["location"] == "/graphiql"
    query = "query=%7Bviewer%7Bcredential%7D%7D"
    shared = await client.get(f"/graphql?{query}", headers={"accept": browser})
    assert shared.status_code == 307 and shared.headers["location"] == f"/graphiql?{query}"
    head = await client.head("/graphql", headers={"accept": browser})
    assert head.status_code == 307


async def test_graphql_itself_still_requires_a_credential(client: httpx.AsyncClient) -> None:
    query = {"query": "{ viewer { credential } }"}
    for response in (
        await client.get("/graphql", params=query, headers={"accept": "application/json"}),
        await client.get("/graphql", params=query),
        await client.post("/graphql", json=query),
        await client.post("/graphql", json=query, headers={"accept": "text/html"}),
    ):
        assert response.status_code == 401, response.request
        assert response.json()["error"]["code"] == "UNAUTHENTICATED"
