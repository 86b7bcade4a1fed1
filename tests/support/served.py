"""An app served by a real uvicorn on a free port of 127.0.0.1, in the test's event loop.

The app's lifespan runs as under `gwm serve`; uvicorn's own proxy-header handling is off (as
`gwm serve` runs it), so the peer the app sees is the TCP peer: 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette

__all__ = ["closed_port", "served"]


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    """Serve `app` until the block ends; yields its base URL."""
    port = closed_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", proxy_headers=False,
        server_header=False, access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(600):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("uvicorn stopped before serving")
        assert server.started, "uvicorn did not start within 30 s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=60)
