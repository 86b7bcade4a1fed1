"""Cross-site request forgery (server/csrf.py, docs/api.md "CSRF"): what a browser sends from another
site without a CORS preflight never acts with the session cookie.

- A cookie-authenticated GET of /graphql needs `Sec-Fetch-Site: same-origin` or a header that needs a
  preflight; otherwise 403 CROSS_SITE_REQUEST. A bearer credential is never subject to it.
- A POST whose content type an HTML form can send (text/plain, urlencoded, multipart) is refused
  with 415, a body-less one too; the SAML ACS is the one route that takes a form. Multipart uploads
  need GraphQL-Require-Preflight (server/storage_routes.py UploadGuard), unchanged.
- A cookie-authenticated body-less POST (sign-out) needs the same proof as a GET.

Every refusal runs no SQL at all: it is answered before the principal lookup (round trips counted
at the driver, tests/support/roundtrips.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from server.app import create_app
from server.csrf import PREFLIGHT_HEADERS
from tests.conftest import Database
from tests.support.db import TenantRef
from tests.support.graphql import sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.roundtrips import count_round_trips

QUERY = {"query": "{ __typename }"}


@pytest.fixture(scope="module")
def app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as http:
        yield http


@pytest.fixture
async def token(client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> str:
    return await sign_in(client, await make_login_user(owner_engine, fresh_tenant, roles=["BD Analyst"]))


def _cookie(app: Starlette, token: str) -> dict[str, str]:
    return {"cookie": f"{app.state.auth.session_cookie}={token}"}


async def _refused_without_sql(
    app: Starlette, client: httpx.AsyncClient, method: str, path: str, status: int, code: str, **kwargs: object
) -> httpx.Response:
    with count_round_trips(app.state.engine) as trips:
        response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert trips == [], [str(t) for t in trips]  # answered before the principal lookup
    return response


# -- GET ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fetch_site", [None, "cross-site", "same-site", "none"])
async def test_a_cookie_get_without_proof_is_refused_before_any_sql(
    app: Starlette, client: httpx.AsyncClient, token: str, fetch_site: str | None
) -> None:
    headers = _cookie(app, token) | ({"sec-fetch-site": fetch_site} if fetch_site else {})
    response = await _refused_without_sql(
        app, client, "GET", "/graphql", 403, "CROSS_SITE_REQUEST", params=QUERY, headers=headers
    )
    assert "Sec-Fetch-Site" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "proof",
    [
        {"sec-fetch-site": "same-origin"},
        {"sec-fetch-site": "SAME-ORIGIN"},
        *({name: "1"} for name in sorted(PREFLIGHT_HEADERS)),
        {"content-type": "application/json"},  # not a type a form can send: fetch preflights it
    ],
    ids=lambda proof: next(iter(proof)),
)
async def test_a_cookie_get_with_proof_is_served(
    app: Starlette, client: httpx.AsyncClient, token: str, proof: dict[str, str]
) -> None:
    response = await client.get("/graphql", params=QUERY, headers=_cookie(app, token) | proof)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"__typename": "Query"}


async def test_a_simple_content_type_is_no_proof(app: Starlette, client: httpx.AsyncClient, token: str) -> None:
    await _refused_without_sql(
        app, client, "GET", "/graphql", 403, "CROSS_SITE_REQUEST", params=QUERY,
        headers=_cookie(app, token) | {"content-type": "text/plain"},
    )


async def test_a_bearer_get_needs_no_proof(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get("/graphql", params=QUERY, headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json()["data"] == {"__typename": "Query"}


async def test_a_cookie_post_of_json_needs_no_proof(app: Starlette, client: httpx.AsyncClient, token: str) -> None:
    # application/json cannot be sent cross-site without a preflight, which is never granted.
    response = await client.post("/graphql", json=QUERY, headers=_cookie(app, token))
    assert response.status_code == 200 and response.json()["data"] == {"__typename": "Query"}


async def test_a_cookie_get_of_another_path_is_not_this_rule(
    app: Starlette, client: httpx.AsyncClient, token: str
) -> None:
    response = await client.get("/auth/session", headers=_cookie(app, token))
    assert response.status_code == 200, response.text


# -- POST content types ---------------------------------------------------------------------------

FORM_BODIES = [
    ("text/plain", b'{"query": "{ __typename }"}'),
    ("text/plain; charset=utf-8", b'{"query": "{ __typename }"}'),
    ("application/x-www-form-urlencoded", b"query=%7B__typename%7D"),
    ("application/x-www-form-urlencoded", b""),  # an empty form still declares its type
    ("text/plain", b""),
]


@pytest.mark.parametrize(("content_type", "body"), FORM_BODIES)
@pytest.mark.parametrize("credential", ["cookie", "bearer"])
async def test_form_content_types_are_refused_before_any_sql(
    app: Starlette, client: httpx.AsyncClient, token: str, content_type: str, body: bytes, credential: str
) -> None:
    auth = _cookie(app, token) if credential == "cookie" else {"authorization": f"Bearer {token}"}
    for path in ("/graphql", "/auth/logout"):
        await _refused_without_sql(
            app, client, "POST", path, 415, "UNSUPPORTED_MEDIA_TYPE", content=body,
            headers=auth | {"content-type": content_type, "sec-fetch-site": "same-origin"},
        )


async def test_multipart_without_the_preflight_header_is_refused(
    app: Starlette, client: httpx.AsyncClient, token: str
) -> None:
    files = {"operations": (None, b'{"query": "{ __typename }"}'), "map": (None, b"{}")}
    with count_round_trips(app.state.engine) as trips:
        response = await client.post("/graphql", files=files, headers=_cookie(app, token))
    assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == "PREFLIGHT_REQUIRED"
    assert trips == []
    # Elsewhere multipart is a form's type like any other.
    await _refused_without_sql(
        app, client, "POST", "/auth/login", 415, "UNSUPPORTED_MEDIA_TYPE", files=files,
        headers={"graphql-require-preflight": "1"},
    )


async def test_the_saml_acs_is_the_one_form_post(client: httpx.AsyncClient, fresh_tenant: TenantRef) -> None:
    path = f"/auth/saml/{fresh_tenant.subdomain}/acs"
    form = await client.post(path, content=b"SAMLResponse=bm90LWEtcmVzcG9uc2U%3D", headers={
        "content-type": "application/x-www-form-urlencoded", "sec-fetch-site": "cross-site"})
    # Refused by the assertion's checks (no SSO configured, or not a valid response), never by the media type.
    assert form.status_code not in (403, 415), form.text
    as_text = await client.post(path, content=b"SAMLResponse=x", headers={"content-type": "text/plain"})
    assert as_text.status_code == 415


# -- body-less POST with the cookie ---------------------------------------------------------------


async def test_a_cookie_signout_without_proof_is_refused_before_any_sql(
    app: Starlette, client: httpx.AsyncClient, token: str
) -> None:
    await _refused_without_sql(
        app, client, "POST", "/auth/logout", 403, "CROSS_SITE_REQUEST", headers=_cookie(app, token)
    )
    # The session still works: nothing ran.
    alive = await client.get("/graphql", params=QUERY, headers={"authorization": f"Bearer {token}"})
    assert alive.status_code == 200
    signed_out = await client.post("/auth/logout", headers=_cookie(app, token) | {"sec-fetch-site": "same-origin"})
    assert signed_out.status_code == 204, signed_out.text
    gone = await client.get("/graphql", params=QUERY, headers={"authorization": f"Bearer {token}"})
    assert gone.status_code == 401


async def test_a_bearer_signout_needs_no_proof(client: httpx.AsyncClient, token: str) -> None:
    response = await client.post("/auth/logout", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 204, response.text
