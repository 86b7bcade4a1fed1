"""A real uvicorn on 127.0.0.1 serving the app, and a raw graphql-transport-ws client for tests."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.app import create_app
from tests.support.http import LoginUser, test_settings

__all__ = ["LiveServer", "WsClient", "live_server", "ws_connect"]

PROTOCOL = "graphql-transport-ws"


@dataclass
class LiveServer:
    app: Starlette
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    async def sign_in(self, user: LoginUser) -> str:
        async with httpx.AsyncClient(base_url=self.http_url) as client:
            response = await client.post("/auth/login", json=user.credentials())
            assert response.status_code == 200, response.text
            token: str = response.json()["token"]
            return token

    async def graphql(self, token: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.http_url, timeout=60) as client:
            response = await client.post(
                "/graphql", json={"query": query, "variables": variables or {}},
                headers={"authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            assert "errors" not in body, body
            return body


@asynccontextmanager
async def live_server(app_url: str, **overrides: Any) -> AsyncIterator[LiveServer]:
    """The app under uvicorn on a free port of 127.0.0.1, in this event loop, lifespan included."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    settings = test_settings(app_url, public_url=f"http://127.0.0.1:{port}", **overrides)
    app = create_app(settings)
    config = uvicorn.Config(app, lifespan="on", log_level="warning", ws="websockets-sansio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(600):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield LiveServer(app, port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 60)
        sock.close()


class WsClient:
    """One graphql-transport-ws connection, spoken message by message."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: Any) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def receive(self, wait: float = 30) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), wait)
        assert isinstance(raw, str), "graphql-transport-ws messages are text frames"
        message: dict[str, Any] = json.loads(raw)
        return message

    async def init(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.send({"type": "connection_init", "payload": payload or {}})
        return await self.receive()

    async def subscribe(self, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        await self.send({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})

    async def next_of(self, op_id: str, wait: float = 30) -> dict[str, Any]:
        """The next message for `op_id`, skipping pings and other operations' messages."""
        while True:
            message = await self.receive(wait)
            if message.get("type") == "ping":
                await self.send({"type": "pong"})
                continue
            if message.get("id") == op_id:
                return message

    async def closed(self, wait: float = 30) -> tuple[int | None, str]:
        """Wait for the server to close; the close code and reason."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), wait)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")

    async def quiet(self, op_id: str, seconds: float) -> list[dict[str, Any]]:
        """Messages for `op_id` within `seconds` (a subscriber that must receive nothing gets [])."""
        got: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                message = await self.receive(left)
            except TimeoutError:
                break
            if message.get("id") == op_id:
                got.append(message)
        return got


@asynccontextmanager
async def ws_connect(
    server: LiveServer,
    *,
    subprotocols: Sequence[str] = (PROTOCOL,),
    headers: dict[str, str] | None = None,
    origin: str | None = None,
) -> AsyncIterator[WsClient]:
    async with connect(
        server.ws_url,
        subprotocols=list(subprotocols) or None,  # type: ignore[arg-type]
        additional_headers=headers or {},
        origin=origin,  # type: ignore[arg-type]
        open_timeout=30,
        ping_interval=None,
    ) as ws:
        yield WsClient(ws)
