"""Pool exhaustion answered 503 with Retry-After, not 500.

The engine's pool is bounded (GWM_DB_POOL_SIZE + GWM_DB_MAX_OVERFLOW per process); a checkout
waits GWM_DB_POOL_TIMEOUT_MS for a connection and then raises `sqlalchemy.exc.TimeoutError`. The
first checkout of an authenticated request is its principal lookup in server/middleware.py, so a
saturated process refuses the request before it runs anything; this middleware, outermost, turns
that exception into `503 SERVICE_UNAVAILABLE` with `Retry-After` and the request id, and counts it.
A load balancer retries elsewhere; a client waits the advertised seconds.
"""

from __future__ import annotations

import json
import logging
import math

from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["PoolExhaustion", "PoolTimeout", "retry_after_seconds"]

_log = logging.getLogger(__name__)


def retry_after_seconds(pool_timeout_ms: int) -> int:
    """The Retry-After advertised: the pool's wait rounded up to whole seconds, at least 1."""
    return max(1, math.ceil(pool_timeout_ms / 1000))


class PoolExhaustion:
    """ASGI middleware: a pool checkout that timed out becomes 503 with Retry-After (HTTP only)."""

    def __init__(self, app: ASGIApp, *, retry_after: int) -> None:
        self.app = app
        self.retry_after = retry_after
        self.refused = 0  # requests answered 503 by this process, for metrics and tests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except PoolTimeout:
            if started:
                raise
            self.refused += 1
            meta = scope.get("state", {}).get("meta")
            request_id = getattr(meta, "request_id", None)
            _log.warning("database pool exhausted: %s %s answered 503 (request id %s)",
                         scope.get("method"), scope.get("path"), request_id)
            body = {
                "error": {
                    "code": "SERVICE_UNAVAILABLE",
                    "message": f"The server is busy; retry in {self.retry_after} s.",
                    **({"requestId": request_id} if request_id else {}),
                }
            }
            headers = [
                (b"content-type", b"application/json"),
                (b"retry-after", str(self.retry_after).encode()),
                (b"cache-control", b"no-store"),
            ]
            if request_id:
                headers.append((b"x-request-id", str(request_id).encode()))
            payload = json.dumps(body).encode()
            headers.append((b"content-length", str(len(payload)).encode()))
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
