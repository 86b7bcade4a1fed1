"""Graceful shutdown: SIGTERM to `gwm serve` lets the request in flight finish and closes subscribers
with 1012 (service restart), so clients reconnect to another process behind the load balancer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Database
from tests.support.db import TEST_AUDIT_KEYS, create_tenant
from tests.support.http import make_login_user

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
QUERY = json.dumps({"query": "{ viewer { user { id email } } }"}).encode()


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def served(database: Database, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """`gwm serve` in a process of its own on a free port of 127.0.0.1, against the test database
    (GWM_SHUTDOWN_GRACE_SECONDS from the test's parameter, else 60)."""
    grace = str(getattr(request, "param", 60))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    env.update(
        DATABASE_URL=database.owner_url, GWM_APP_DATABASE_URL=database.app_url,
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=", GWM_AUDIT_KEYS=TEST_AUDIT_KEYS, GWM_LOG_LEVEL="warning",
        GWM_SHUTDOWN_GRACE_SECONDS=grace,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--no-migrate", "--port", str(port),
        env=env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    served = Served(proc, port)
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(900):
                if proc.returncode is not None:
                    err = (await proc.stderr.read()).decode() if proc.stderr else ""
                    pytest.fail(f"gwm serve exited with {proc.returncode}: {err[-2000:]}")
                try:
                    await client.get(f"{served.base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
        yield served
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


@pytest.mark.timeout(300)
async def test_sigterm_finishes_the_request_in_flight_and_closes_subscribers_with_1012(
    owner_engine: AsyncEngine, served: Served
) -> None:
    tenant = await create_tenant(owner_engine)
    # A BD Analyst holds graphql:adhoc: `gwm serve` defaults to production, where a caller without it
    # runs only trusted documents (tests/test_trusted_documents.py), and these documents are ad hoc.
    user = await make_login_user(owner_engine, tenant, roles=("BD Analyst",))
    async with httpx.AsyncClient(base_url=served.base, timeout=60) as client:
        login = await client.post("/auth/login", json=user.credentials())
        assert login.status_code == 200, login.text
        token = login.json()["token"]

    async with connect(
        f"ws://127.0.0.1:{served.port}/graphql", subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        open_timeout=30, ping_interval=None,
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "s", "type": "subscribe", "payload": {
            "query": "subscription { changeBatchCommitted { batchId } }"}}))
        await ws.send(json.dumps({"type": "ping"}))  # answered after the subscribe was taken in
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "pong"

        # A request in flight: headers and half of its body sent, the rest still to come.
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {len(QUERY)}\r\n\r\n".encode()
            + QUERY[: len(QUERY) // 2]
        )
        await writer.drain()
        await asyncio.sleep(1.0)  # the server has read the head and started the request

        served.proc.send_signal(signal.SIGTERM)

        # The subscriber is told the service restarts (1012), so its client reconnects elsewhere.
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 60)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012

    # Shutting down: new connections are no longer taken.
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"{served.base}/healthz", timeout=5)
    assert served.proc.returncode is None  # still running: the request in flight holds the shutdown

    writer.write(QUERY[len(QUERY) // 2 :])
    await writer.drain()
    status, headers, body = await asyncio.wait_for(_read_response(reader), 60)
    writer.close()
    assert status == 200, body
    assert headers.get("connection") == "close"  # the connection is not kept for another request
    assert json.loads(body)["data"]["viewer"]["user"]["email"] == user.email

    await asyncio.wait_for(served.proc.wait(), 60)  # and then the process ends
    assert served.proc.returncode in {0, -signal.SIGTERM}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("served", [2], indirect=True)
async def test_a_request_that_never_finishes_holds_the_shutdown_no_longer_than_the_grace(
    owner_engine: AsyncEngine, served: Served
) -> None:
    tenant = await create_tenant(owner_engine)
    # A BD Analyst holds graphql:adhoc: `gwm serve` defaults to production, where a caller without it
    # runs only trusted documents (tests/test_trusted_documents.py), and these documents are ad hoc.
    user = await make_login_user(owner_engine, tenant, roles=("BD Analyst",))
    async with httpx.AsyncClient(base_url=served.base, timeout=60) as client:
        login = await client.post("/auth/login", json=user.credentials())
        assert login.status_code == 200, login.text
        token = login.json()["token"]
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(QUERY)}\r\n\r\n".encode()
        + QUERY[:5]
    )
    await writer.drain()
    await asyncio.sleep(1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    served.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(served.proc.wait(), 60)  # the body never completes; the process ends anyway
    elapsed = loop.time() - started
    assert elapsed >= 2 * 0.9  # it waited the configured grace for the request (generous upper bound above)
    # The stalled request was given up: uvicorn answers it 500 if it can, and closes the connection.
    leftover = await asyncio.wait_for(reader.read(), 30)
    assert leftover == b"" or leftover.startswith(b"HTTP/1.1 500 "), leftover
    writer.close()
