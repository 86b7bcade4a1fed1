"""The process's one LISTEN connection: change batches and access events into the bus.

    listener = Listener(connector_for(app_engine), bus, config)
    await listener.start()      # returns once the first connection listens (or keeps trying)
    ...
    await listener.stop()

The connection is a plain asyncpg connection of the server's role (the app role), outside the
SQLAlchemy pool, LISTENing on `models.unit_of_work.CHANNEL` (one notification per committed audited
batch) and `models.access_events.ACCESS_CHANNEL`. Notifications are handled one at a time in the
order they arrived. A batch whose notification was cut (`"truncated": true`, over the notify size
limit) is read whole from change_history by its batch id before it is published.

When the connection is lost (terminated backend, restart, network: noticed by asyncpg's
termination callback or by a keepalive probe every `keepalive_seconds`), the listener reconnects
with exponential backoff (reconnect_min_seconds doubling up to reconnect_max_seconds). Whatever
was committed meanwhile was not heard, so after each reconnect every subscriber gets
`Resync(reason="reconnect", last_batch=<the last batch delivered before the loss>)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from live.bus import Bus
from live.config import LiveConfig
from live.events import ChangeBatch, parse_change_payload
from models.access_events import ACCESS_CHANNEL, parse_access_event
from models.unit_of_work import CHANNEL

__all__ = ["Connector", "Listener", "connector_for", "expand_batch"]

_log = logging.getLogger(__name__)

Connector = Callable[[], Awaitable[asyncpg.Connection]]

APPLICATION_NAME = "gwm-listen"


def connector_for(engine: AsyncEngine, *, application_name: str = APPLICATION_NAME) -> Connector:
    """Connect as `engine`'s role and database, outside its pool (a LISTEN connection of its own)."""
    from models.db import driver_connect_args

    args, options = driver_connect_args(engine)  # the engine's TLS settings included

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(*args, **options, server_settings={"application_name": application_name})

    return connect


_EXPAND = """
SELECT entity_type, entity_id FROM change_history
 WHERE change_batch_id = $1
 GROUP BY entity_type, entity_id
 ORDER BY min(change_timestamp), entity_type, entity_id
"""


async def expand_batch(conn: asyncpg.Connection, batch: ChangeBatch) -> ChangeBatch:
    """`batch` with every entity change_history holds for it (the notification's own ones first)."""
    async with conn.transaction(readonly=True):
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(batch.tenant_id))
        rows = await conn.fetch(_EXPAND, batch.batch_id)
    entities = dict.fromkeys(batch.entities)
    for row in rows:
        entities.setdefault((str(row["entity_type"]), row["entity_id"]), None)
    return ChangeBatch(
        batch_id=batch.batch_id, tenant_id=batch.tenant_id, entities=tuple(entities), received_at=batch.received_at
    )


class Listener:
    """One LISTEN connection per process, reconnecting; see the module docstring."""

    def __init__(self, connect: Connector, bus: Bus, config: LiveConfig | None = None) -> None:
        self._connect = connect
        self._bus = bus
        self._config = config or bus.config
        self._inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._using = asyncio.Lock()  # one statement at a time on the connection (probe, expansion)
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        #: Set while a connection is listening.
        self.listening = asyncio.Event()
        #: Connections made so far (1 after the first; each reconnect adds one).
        self.connections = 0
        #: The backend pid of the current LISTEN connection (None while disconnected).
        self.backend_pid: int | None = None

    async def start(self, *, wait: float | None = 10.0) -> None:
        """Start listening; wait up to `wait` seconds for the first connection (it keeps trying after)."""
        if self._runner is not None:
            return
        # A listener stopped before (an app whose lifespan runs again) starts afresh.
        self._stopping = False
        self.listening.clear()
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="gwm-live-listener")
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch(), name="gwm-live-dispatch")
        if wait is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.listening.wait(), wait)

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        self._stopping = True
        self._lost.set()
        for task in (self._runner, self._dispatcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._runner = self._dispatcher = None
        await self._close()

    # -- the connection ------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._config.reconnect_min_seconds
        while not self._stopping:
            try:
                await self._listen()
            except Exception as exc:  # any failure: the process must keep trying to listen
                _log.warning("live LISTEN connection failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                await self._close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._config.reconnect_max_seconds)
                continue
            delay = self._config.reconnect_min_seconds  # it listened: the next loss starts the backoff again
            await self._close()
            if not self._stopping:
                _log.warning("live LISTEN connection lost; reconnecting")

    async def _listen(self) -> None:
        self._lost.clear()
        conn = await asyncio.wait_for(self._connect(), timeout=max(self._config.keepalive_seconds, 5.0))
        self._conn = conn
        conn.add_termination_listener(self._on_termination)
        await conn.add_listener(CHANNEL, self._on_notify)
        await conn.add_listener(ACCESS_CHANNEL, self._on_notify)
        self.backend_pid = conn.get_server_pid()
        self.connections += 1
        if self.connections > 1:
            # What was committed while nobody listened was not heard: every subscriber catches up.
            self._bus.resync(self._bus.last_batch, reason="reconnect")
        self.listening.set()
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self._config.keepalive_seconds)
            if self._lost.is_set() or conn.is_closed():
                break
            async with self._using:
                await asyncio.wait_for(conn.execute("SELECT 1"), self._config.keepalive_seconds)

    def _on_termination(self, conn: object) -> None:
        self._lost.set()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._inbox.put_nowait((channel, str(payload)))

    async def _close(self) -> None:
        self.listening.clear()
        self.backend_pid = None
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), 2.0)
        except Exception:
            conn.terminate()

    # -- the notifications, in order -----------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            channel, payload = await self._inbox.get()
            try:
                if channel == ACCESS_CHANNEL:
                    self._bus.access(parse_access_event(payload))
                    continue
                notice = parse_change_payload(payload)
                batch: ChangeBatch | None = notice.batch
                if notice.truncated:
                    batch = await self._expand(notice.batch)
                if batch is not None:
                    self._bus.publish(batch)
            except (ValueError, KeyError, TypeError):
                _log.warning("live: ignored a malformed notification on %s", channel)
            except Exception:  # a bug in a hand-off must not stop the notifications that follow
                _log.exception("live: handing on a notification on %s failed", channel)

    async def _expand(self, batch: ChangeBatch) -> ChangeBatch | None:
        conn = self._conn
        if conn is None or conn.is_closed():
            return None  # the reconnect's resync covers it
        try:
            async with self._using:
                return await expand_batch(conn, batch)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _log.warning("live: batch %s not expanded (%s); subscribers resync", batch.batch_id, type(exc).__name__)
            self._bus.resync(self._bus.last_batch, reason="reconnect")
            return None
