"""GraphiQL's "Sign in with <provider>" in a real browser: headless Chromium against `gwm serve` on
127.0.0.1, the tenant's OpenID provider being the fake one of tests/auth/test_oidc_browser.py (on
another port of 127.0.0.1, on the server's outbound allow-list).

The analyst types the organization, the bar offers the provider's button, a click goes through the
provider and back, and GraphiQL runs a query with the session cookie the callback set. Skips like
tests/test_graphiql_browser.py without Chromium and chromedriver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.auth.test_oidc_browser import FakeOpenIdProvider, Realm, provider  # noqa: F401 - the fixture
from tests.auth.test_sso_oidc import configure
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_KEYS, TenantRef, create_tenant
from tests.support.http import LoginUser, make_login_user
from tests.test_graphiql_browser import QUERY, _browser_binaries, _free_port, _Page, browser  # noqa: F401

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def served(database: Database, provider: FakeOpenIdProvider) -> Iterator[str]:  # noqa: F811
    """`gwm serve` on a free port of 127.0.0.1, allowed to reach the fake provider."""
    _browser_binaries()  # skip (or fail under CI) before starting anything
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    env.update(
        DATABASE_URL=database.owner_url,
        GWM_APP_DATABASE_URL=database.app_url,
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=",
        GWM_AUDIT_KEYS=TEST_AUDIT_KEYS,
        GWM_LOG_LEVEL="warning",
        GWM_PUBLIC_URL=base,
        GWM_OUTBOUND_ALLOW=f"127.0.0.1:{provider.port}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--no-migrate", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"gwm serve exited with {proc.returncode}:\n{out}")
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("gwm serve did not answer /healthz within 60 s")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
async def sso_analyst(owner_engine: AsyncEngine, provider: FakeOpenIdProvider) -> tuple[LoginUser, Realm]:  # noqa: F811
    """A tenant whose OpenID provider is a public client of the fake provider, and its analyst."""
    realm = provider.realm(secret=False, email=f"sso-{time.time_ns()}@example.test")
    tenant: TenantRef = await create_tenant(owner_engine)
    await configure(
        owner_engine,
        tenant,
        auth_oidc={
            "issuer": realm.issuer,
            "audience": realm.client_id,
            "jwks_uri": f"{realm.issuer}/jwks",
            "display_name": "Example IdP",
        },
        security_sso_allow_email_linking=True,
    )
    user = await make_login_user(owner_engine, tenant, email=realm.email, roles=["BD Analyst"])
    return user, realm


def test_the_bar_offers_the_provider_and_its_sign_in_reads_the_api(
    served: str, browser: Any, sso_analyst: tuple[LoginUser, Realm]  # noqa: F811
) -> None:
    analyst, realm = sso_analyst
    page = _Page(browser, served)
    page.open()
    page.wait(lambda d: page.visible("#gwm-sign-in"), "the sign-in form")
    assert not page.visible("#gwm-sso")  # no organization typed: no provider offered
    page.find("#gwm-sign-in [name=tenant]").send_keys(analyst.tenant.subdomain)
    page.wait(lambda d: page.visible("#gwm-sso"), "the provider's sign-in button")
    button = page.find("#gwm-sso")
    assert button.text == "Sign in with Example IdP"
    assert button.get_attribute("href") == f"{served}/auth/oidc/{analyst.tenant.subdomain}/login"

    button.click()  # to the provider, which signs the user in at once, and back through the callback
    page.wait(lambda d: d.current_url == f"{served}/graphiql", "the way back to GraphiQL")
    signed_in = f"Signed in as {analyst.email}"
    page.wait(lambda d: signed_in in page.find("#gwm-status").text, "the signed-in status")
    assert not page.visible("#gwm-sso")
    page.wait_for_editor()
    assert page.run(QUERY)["data"] == {"viewer": {"user": {"email": analyst.email}}}
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly, both cookies

    # The browser went to this server and to the tenant's provider (its authorize endpoint) only.
    allowed = {urlsplit(served).port, urlsplit(realm.issuer).port}
    strays = [
        url
        for url in page.requested_urls()
        if urlsplit(url).scheme not in {"data", "blob"}
        and not (urlsplit(url).hostname == "127.0.0.1" and urlsplit(url).port in allowed)
    ]
    assert strays == []
    page.assert_clean_console()
