"""GraphiQL in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium) against `gwm serve` on 127.0.0.1.

An analyst signs in (with the page's form, or by pasting a token into the headers editor), runs a
query from the editor and sees the result; every request the browser made, read from Chrome's
DevTools performance log, went to 127.0.0.1, and the page ran without a CSP violation or a
script error. Without Chromium and chromedriver the tests skip with a reason, except under
`CI=true`, where they fail: `.ci/run` installs both.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Database
from tests.support.db import TEST_AUDIT_KEYS, TenantRef
from tests.support.http import LoginUser, make_login_user
from tests.support.secrets import remember

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
QUERY = "{ viewer { user { email } } }"
WAIT = 30
# Chromium reaches nothing but the server under test: no sign-in, sync, component or field-trial
# downloads, no QUIC probing; a fresh profile each time.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1400,900",
)


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = "needs Chromium and chromedriver (Debian: apt-get install -y chromium chromium-driver)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI must run the browser test: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(database: Database) -> Iterator[str]:
    """`gwm serve` on a free port of 127.0.0.1, against the test database."""
    _browser_binaries()  # skip (or fail under CI) before starting anything
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    env.update(
        DATABASE_URL=database.owner_url,
        GWM_APP_DATABASE_URL=database.app_url,
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=",
        GWM_AUDIT_KEYS=TEST_AUDIT_KEYS,
        GWM_LOG_LEVEL="warning",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--no-migrate", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
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
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser_binaries()
    profile = tempfile.mkdtemp(prefix="gwm-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # An explicit driver path: Selenium Manager (which would download drivers) never runs.
    driver: Any = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    # Debian's Chromium opens its built-in new-tab page (chrome:// resources, no network): leave it,
    # then drop what the logs hold so far, so they describe only what the test's pages do.
    driver.get("about:blank")
    driver.get_log("performance")
    driver.get_log("browser")
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def analyst(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> LoginUser:
    return await make_login_user(owner_engine, fresh_tenant, roles=["BD Analyst"])


# --- page helpers -----------------------------------------------------------------------------

_EDITOR = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"
_RESULT = "document.querySelector('.result-window .CodeMirror').CodeMirror"
_HEADERS_EDITOR = (
    "Array.from(document.querySelectorAll('.graphiql-editor-tool .graphiql-editor'))"
    ".filter(e => !e.classList.contains('hidden'))[0].querySelector('.CodeMirror').CodeMirror"
)


class _Page:
    """The GraphiQL page in the browser, with what the browser logged along the way."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver = driver
        self.base = base
        self._console: list[dict[str, Any]] = []

    def wait(self, condition: Any, what: str) -> Any:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, WAIT).until(condition)
        except TimeoutException:
            bar = self.driver.execute_script("return document.getElementById('gwm-bar').innerText")
            pytest.fail(f"timed out waiting for {what}; bar: {bar!r}; console: {self.console()}")

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def visible(self, css: str) -> bool:
        from selenium.webdriver.common.by import By

        return any(e.is_displayed() for e in self.driver.find_elements(By.CSS_SELECTOR, css))

    def open(self) -> None:
        self.driver.get(f"{self.base}/graphql")  # a browser opening the endpoint is sent to the page
        self.wait(lambda d: d.current_url == f"{self.base}/graphiql", "the redirect to /graphiql")
        self.wait_for_editor()

    def wait_for_editor(self) -> None:
        script = "return !!document.querySelector('.graphiql-query-editor .CodeMirror')"
        self.wait(lambda d: d.execute_script(script), "GraphiQL's editor")

    def run(self, query: str) -> Any:
        """Put `query` in the editor, press GraphiQL's run button, and return the result pane's JSON."""
        self.driver.execute_script(f"{_EDITOR}.setValue(arguments[0])", query)
        self.driver.execute_script(f"{_RESULT}.setValue('')")
        self.find(".graphiql-execute-button").click()
        return json.loads(self.wait(lambda d: d.execute_script(f"return {_RESULT}.getValue()"), "a result"))

    def open_and_close_settings(self) -> None:
        """A dialog inserts GraphiQL's one <style> element: the CSP must allow it (by its hash)."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        self.find('[aria-label="Open settings dialog"]').click()
        self.wait(lambda d: self.visible("[role=dialog]"), "the settings dialog")
        ActionChains(self.driver).send_keys(Keys.ESCAPE).perform()
        self.wait(lambda d: not self.visible("[role=dialog]"), "the dialog to close")

    def local_storage(self) -> str:
        text: str = self.driver.execute_script("return JSON.stringify(window.localStorage)")
        return text

    def console(self) -> list[dict[str, Any]]:
        self._console.extend(self.driver.get_log("browser"))  # reading the log empties it
        return list(self._console)

    def requested_urls(self) -> list[str]:
        """Every URL the browser requested or opened a WebSocket to (DevTools performance log)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
            elif message["method"] == "Network.webSocketCreated":
                urls.append(message["params"]["url"])
        return urls

    def assert_only_this_server_was_reached(self) -> None:
        urls = self.requested_urls()
        port = urlsplit(self.base).port
        assert any(u == f"{self.base}/graphql" for u in urls), urls
        strays = []
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme in {"data", "blob"}:
                continue
            if parts.scheme in {"http", "ws"} and parts.hostname == "127.0.0.1" and parts.port == port:
                continue
            strays.append(url)
        assert strays == [], f"the browser reached beyond the server under test: {strays}"

    def assert_clean_console(self) -> None:
        """No CSP violation, no script error: only the signed-out probes' expected 401s."""
        problems = []
        for entry in self.console():
            message = entry["message"]
            if "Content Security Policy" in message or "Content-Security-Policy" in message:
                problems.append(message)
            elif entry["level"] == "SEVERE" and "status of 401" not in message:
                problems.append(message)
        assert problems == []


# --- tests ------------------------------------------------------------------------------------


def test_an_analyst_signs_in_runs_a_query_and_the_browser_stays_on_127_0_0_1(
    served: str, browser: Any, analyst: LoginUser, tmp_path: Path
) -> None:
    page = _Page(browser, served)
    page.open()
    page.wait(lambda d: page.visible("#gwm-sign-in"), "the sign-in form")
    page.find("#gwm-sign-in [name=tenant]").send_keys(analyst.tenant.subdomain)
    page.find("#gwm-sign-in [name=email]").send_keys(analyst.email)
    page.find("#gwm-sign-in [name=password]").send_keys(analyst.password)
    page.find("#gwm-sign-in button[type=submit]").click()
    signed_in = f"Signed in as {analyst.email}"
    page.wait(lambda d: signed_in in page.find("#gwm-status").text, "the signed-in status")
    page.wait_for_editor()  # GraphiQL was mounted again, and fetched the schema with the cookie

    assert page.run(QUERY)["data"] == {"viewer": {"user": {"email": analyst.email}}}
    page.open_and_close_settings()
    screenshot = tmp_path / "graphiql.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")

    # The session lives in its HttpOnly cookie: the page's script cannot read it, nor is it stored.
    assert browser.execute_script("return document.cookie") == ""
    assert analyst.password not in page.local_storage()

    # Signing out ends the session: the same query now gets the middleware's 401, shown as an error.
    page.find("#gwm-sign-out").click()
    page.wait(lambda d: page.visible("#gwm-sign-in"), "the sign-in form again")
    page.wait_for_editor()
    signed_out = page.run(QUERY)
    assert signed_out["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", signed_out

    page.assert_only_this_server_was_reached()
    page.assert_clean_console()


def test_a_token_pasted_into_the_headers_editor_signs_the_query_in(
    served: str, browser: Any, analyst: LoginUser
) -> None:
    from selenium.webdriver.common.by import By

    login = httpx.post(f"{served}/auth/login", json=analyst.credentials(), timeout=30)
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    remember(token)
    page = _Page(browser, served)
    page.open()
    page.wait(lambda d: page.visible("#gwm-sign-in"), "the signed-out bar")

    browser.find_element(By.XPATH, "//button[normalize-space()='Headers']").click()
    header = json.dumps({"Authorization": f"Bearer {token}"})
    page.wait(lambda d: d.execute_script(f"return !!({_HEADERS_EDITOR})"), "the headers editor")
    browser.execute_script(f"{_HEADERS_EDITOR}.setValue(arguments[0])", header)
    assert page.run(QUERY)["data"] == {"viewer": {"user": {"email": analyst.email}}}
    # Headers are not persisted: the token never reaches localStorage.
    assert token not in page.local_storage()

    page.assert_only_this_server_was_reached()
    page.assert_clean_console()
