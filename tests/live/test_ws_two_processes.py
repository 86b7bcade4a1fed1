"""Two server processes on one database: a subscriber connected to one receives a change committed
through the other (its pg_notify reaches every process's LISTEN connection)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Database
from tests.live.ws_support import live_server, ws_connect
from tests.support.db import TEST_AUDIT_KEYS, create_tenant
from tests.support.http import make_login_user

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def other_process(database: Database) -> AsyncIterator[str]:
    """`gwm serve` in a process of its own on a free port of 127.0.0.1, against the test database."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    env.update(
        DATABASE_URL=database.owner_url, GWM_APP_DATABASE_URL=database.app_url,
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=", GWM_AUDIT_KEYS=TEST_AUDIT_KEYS, GWM_LOG_LEVEL="warning",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--no-migrate", "--port", str(port),
        env=env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                if proc.returncode is not None:
                    err = (await proc.stderr.read()).decode() if proc.stderr else ""
                    pytest.fail(f"gwm serve exited with {proc.returncode}: {err[-2000:]}")
                try:
                    await client.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


async def test_a_change_committed_through_another_process_reaches_the_subscriber(
    database: Database, owner_engine: AsyncEngine, other_process: str
) -> None:
    tenant = await create_tenant(owner_engine)
    admin = await make_login_user(owner_engine, tenant, roles=("Tenant Admin",))
    viewer = await make_login_user(owner_engine, tenant, roles=("Viewer",))
    async with httpx.AsyncClient(base_url=other_process, timeout=60) as b:
        login = await b.post("/auth/login", json=admin.credentials())
        assert login.status_code == 200, login.text
        admin_token = login.json()["token"]

        async def through_b(query: str, variables: dict[str, object]) -> dict[str, object]:
            response = await b.post("/graphql", json={"query": query, "variables": variables},
                                    headers={"authorization": f"Bearer {admin_token}"})
            body: dict[str, object] = response.json()
            assert response.status_code == 200 and "errors" not in body, body
            return body

        async with live_server(database.app_url) as a:
            token = await a.sign_in(viewer)
            async with ws_connect(a) as ws:
                assert (await ws.init({"authorization": f"Bearer {token}"}))["type"] == "connection_ack"
                await ws.subscribe("s", "subscription { changeBatchCommitted(entityTypes: [OPPORTUNITY_PROJECT]) {"
                                   " entities { entityId } } }")
                bus = a.app.state.live_bus
                for _ in range(200):
                    if bus.subscribers >= 1:
                        break
                    await asyncio.sleep(0.05)
                created = await through_b(
                    "mutation { opportunityProjectCreate(input: {projectName: \"Made through B\"}) {"
                    " opportunityProject { rowId } } }", {},
                )
                data = created["data"]
                assert isinstance(data, dict)
                row_id = data["opportunityProjectCreate"]["opportunityProject"]["rowId"]
                message = await ws.next_of("s", wait=60)
                assert message["payload"]["data"]["changeBatchCommitted"]["entities"] == [{"entityId": row_id}]
