"""Engines, sessions and the tenant setting every transaction of the server carries.

Row-level security reads `app.tenant_id`; it is set per transaction (`set_config(..., true)`), so
a pooled connection never carries one tenant's setting into another tenant's request.
"""

from __future__ import annotations

import logging
import ssl
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.interfaces import PoolProxiedConnection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import greenlet_spawn

from models.driver_sql import pool_has_room

__all__ = [
    "TLS_MODES",
    "RequestConnection",
    "create_engine",
    "driver_connect_args",
    "session_factory",
    "set_tenant",
    "tenant_connection",
    "tenant_session",
    "tls_from_url",
]

_log = logging.getLogger(__name__)

_SET_TENANT = text("SELECT set_config('app.tenant_id', :tenant_id, true)")


# libpq's TLS parameters, accepted in a database URL's query (`?sslmode=verify-full&sslrootcert=...`).
TLS_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
_TLS_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


def tls_from_url(url: str) -> tuple[str, ssl.SSLContext | str | bool | None]:
    """`url` without libpq's TLS parameters, and what they ask of the driver (asyncpg's `ssl`).

    The parameters mean what they mean to libpq: `sslmode` disable | prefer | require | verify-ca |
    verify-full, `sslrootcert` the CA file the server's certificate must chain to (without it:
    the system's trust store), `sslcert`/`sslkey` a client certificate and its key. verify-full also
    checks the host name of the URL against the certificate. No `sslmode`: None (asyncpg's default,
    which is libpq's `prefer`: TLS when offered, unverified). Raises ValueError for an unknown mode,
    a file that does not exist, or `sslkey` without `sslcert`.
    """
    parsed = make_url(url)
    query = {k: v for k, v in parsed.query.items() if k in _TLS_PARAMETERS}
    if not query:
        return url, None
    stripped = parsed.difference_update_query(_TLS_PARAMETERS).render_as_string(hide_password=False)

    def one(name: str) -> str | None:
        value = query.get(name)
        if isinstance(value, tuple):
            raise ValueError(f"{name} is given more than once")
        return value or None

    mode = (one("sslmode") or "prefer").lower()
    if mode not in TLS_MODES:
        raise ValueError(f"sslmode must be one of {', '.join(TLS_MODES)}; got {mode!r}")
    root, cert, key = one("sslrootcert"), one("sslcert"), one("sslkey")
    for name, path in (("sslrootcert", root), ("sslcert", cert), ("sslkey", key)):
        if path is not None and not _readable(path):
            raise ValueError(f"{name}: no readable file at {path}")
    if key is not None and cert is None:
        raise ValueError("sslkey is given without sslcert")
    if mode == "disable":
        return stripped, False  # asyncpg's ssl=False: never TLS
    if mode == "prefer" and root is None and cert is None:
        return stripped, "prefer"
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=root)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode in {"prefer", "require"}:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode == "verify-ca":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
    if cert is not None:
        context.load_cert_chain(cert, key)
    return stripped, context


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


# What each engine's connections were opened with beyond its URL (TLS), for connections made outside
# its pool (the LISTEN connection of live/listener.py).
_DRIVER_EXTRAS: weakref.WeakKeyDictionary[Engine, dict[str, Any]] = weakref.WeakKeyDictionary()


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    statement_timeout_ms: int | None = None,
    idle_in_transaction_timeout_ms: int | None = None,
    pool_timeout_s: float = 30.0,
    application_name: str = "gwm",
    **kwargs: Any,
) -> AsyncEngine:
    """An asyncpg engine; `statement_timeout_ms` bounds every statement on its connections.

    `idle_in_transaction_timeout_ms` ends (server side) a session whose transaction sat idle that
    long, so a stuck request cannot hold locks and a snapshot indefinitely. At most `pool_size +
    max_overflow` connections are open; a checkout waits `pool_timeout_s` for one, then raises
    `sqlalchemy.exc.TimeoutError` (answered 503 with Retry-After by server/overload.py).
    libpq's TLS parameters in `url` (`tls_from_url`) become the driver's `ssl`.

    Bound parameters never reach an exception's text or the log (`hide_parameters`): they hold
    emails, search text and whatever a caller sent.
    """
    url, tls = tls_from_url(url)
    server_settings = {"application_name": application_name}
    if statement_timeout_ms is not None:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    if idle_in_transaction_timeout_ms is not None:
        server_settings["idle_in_transaction_session_timeout"] = str(idle_in_transaction_timeout_ms)
    connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", None) or {})
    connect_args["server_settings"] = {**server_settings, **connect_args.get("server_settings", {})}
    extras: dict[str, Any] = {}
    if tls is not None:
        connect_args["ssl"] = extras["ssl"] = tls
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
        pool_pre_ping=False,
        hide_parameters=True,
        connect_args=connect_args,
        **kwargs,
    )
    _DRIVER_EXTRAS[engine.sync_engine] = extras
    return engine


def driver_connect_args(engine: AsyncEngine) -> tuple[list[Any], dict[str, Any]]:
    """asyncpg.connect's arguments for a connection as `engine`'s role outside its pool (TLS included)."""
    args, params = engine.dialect.create_connect_args(engine.url)
    return list(args), {**params, **_DRIVER_EXTRAS.get(engine.sync_engine, {})}


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def set_tenant(conn: AsyncConnection | AsyncSession, tenant_id: uuid.UUID | str | None) -> None:
    """Scope the current transaction to `tenant_id` (None: to no tenant, which sees nothing)."""
    await conn.execute(_SET_TENANT, {"tenant_id": "" if tenant_id is None else str(tenant_id)})


@asynccontextmanager
async def tenant_connection(
    engine: AsyncEngine, tenant_id: uuid.UUID | str
) -> AsyncIterator[AsyncConnection]:
    """A connection in one transaction scoped to `tenant_id`; commits on success."""
    async with engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        yield conn


@asynccontextmanager
async def tenant_session(
    factory: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID | str
) -> AsyncIterator[AsyncSession]:
    """An ORM session in one transaction scoped to `tenant_id`; commits on success."""
    async with factory() as session, session.begin():
        await set_tenant(session, tenant_id)
        yield session


class RequestConnection:
    """One connection and one transaction for a whole GraphQL operation, shared by its dataloaders.

    aiodataloader runs each batch as its own task and an asyncpg connection runs one statement
    at a time, so statements take turns through a lock. Queries run REPEATABLE READ and READ ONLY:
    every batch of one request sees the same snapshot, and a read cannot write by accident. The
    tenant is set once, when the connection is first used; nothing is opened for a request that
    never reads.

    A request's own connection is opened differently (auth/service.py): `open()` begins the
    transaction with the statement that resolves the caller and sets `app.tenant_id` itself, so the
    principal lookup and the reads share one snapshot (BEGIN, that statement, the reads, ROLLBACK).
    Actions given to `after_close` (the once-a-minute activity writes) run once the connection is
    back in the pool, so a request never holds two connections.

    The connection `open()` begins is driven on the driver: taken from the engine's pool (its events,
    bounds and timeout as for any checkout), the transaction begun and ended with asyncpg's own
    transaction (the same BEGIN and ROLLBACK SQLAlchemy's adapter sends) and registered with the
    adapter, so a statement through SQLAlchemy (`execute`, which wraps the pooled connection in an
    AsyncConnection only then) runs in it rather than beginning another. Only then does the request
    pay for SQLAlchemy's connection and transaction objects; the compiled read never does.
    """

    def __init__(
        self, engine: AsyncEngine, tenant_id: uuid.UUID | None, *, read_only: bool = True, write: bool = False
    ) -> None:
        import asyncio

        self._engine = engine
        self._tenant_id = tenant_id
        self._read_only = read_only and not write
        # `write`: begun by `open()` READ COMMITTED and read-write for a mutation, whose first unit of
        # work takes the transaction over (`detach`): the caller's lookup is the write's first statement.
        self._write = write
        self._lock = asyncio.Lock()
        self._conn: AsyncConnection | None = None
        # The pooled connection `open()` began its transaction on, its driver connection and that
        # transaction; `_conn` wraps it once a statement goes through SQLAlchemy (then `_pooled` is None).
        self._pooled: PoolProxiedConnection | None = None
        self._driver: asyncpg.Connection | None = None
        self._transaction: Any = None
        self._after_close: list[Callable[[], Awaitable[None]]] = []
        self.statements = 0
        # The user whose grants the statement that began this transaction loaded (auth/service.py, read-only
        # REPEATABLE READ only): statements here may read that user's grants and see what the principal holds.
        self.grants_user: uuid.UUID | None = None

    @property
    def tenant_id(self) -> uuid.UUID:
        if self._tenant_id is None:
            raise RuntimeError("the request connection has no tenant yet")
        return self._tenant_id

    @property
    def for_write(self) -> bool:
        """Begun READ COMMITTED and read-write for a mutation's unit of work to take over (`detach`)."""
        return self._write

    async def detach(self) -> AsyncConnection:
        """The open transaction, handed over as an SQLAlchemy connection (its tenant set by `open()`):
        the taker commits or rolls it back and closes the connection. This object keeps only its
        `after_close` actions (`close()` still runs them). RuntimeError when nothing is open."""
        async with self._lock:
            if not self.is_open:
                raise RuntimeError("the request connection is not open")
            conn = await self._connection()
            self._conn, self._driver, self._transaction = None, None, None
            return conn

    @property
    def is_open(self) -> bool:
        """True while a transaction is open on a connection taken from the pool."""
        return self._conn is not None or self._pooled is not None

    async def _begin(self) -> AsyncConnection:
        conn = await self._engine.connect()
        try:
            options: dict[str, Any] = {"isolation_level": "REPEATABLE READ"}
            if self._read_only:
                options["postgresql_readonly"] = True
            await conn.execution_options(**options)
            await conn.begin()  # the driver sends BEGIN with the first statement
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _connection(self) -> AsyncConnection:
        if self._conn is None and self._pooled is not None:
            # SQLAlchemy takes over the pooled connection; its adapter already tracks the transaction.
            # Its begin() sends nothing (the asyncpg dialect's do_begin is a no-op): it only gives
            # SQLAlchemy the Transaction that commit() and close() end through the adapter.
            pooled, self._pooled = self._pooled, None
            self._conn = AsyncConnection(self._engine, Connection(self._engine.sync_engine, connection=pooled))
            await self._conn.begin()
        if self._conn is None:
            tenant_id = self.tenant_id
            conn = await self._begin()
            try:
                await set_tenant(conn, tenant_id)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def open(
        self, sql: str, *args: object, tenant_of: Callable[[asyncpg.Record], uuid.UUID | None]
    ) -> asyncpg.Record | None:
        """Begin the transaction with `sql` (`$n` parameters), which sets `app.tenant_id` itself; its first row.

        It is on every request's path, so it runs on the driver's connection, without SQLAlchemy's
        statement machinery (a quarter of a millisecond of CPU), but in the transaction SQLAlchemy
        began and tracks: returning the connection to the pool still rolls it back. `tenant_of(row)`
        names the tenant the statement set for the transaction; without a row, or when it gives
        None, the transaction ends at once. Later reads run in that tenant without setting it again.
        """
        async with self._lock:
            if self.is_open:
                raise RuntimeError("the request connection is already open")
            pooled = await self._engine.raw_connection()
            try:
                driver = pooled.driver_connection
                if not isinstance(driver, asyncpg.Connection):
                    raise TypeError(f"the engine's driver is not asyncpg: {type(driver).__name__}")
                adapter: Any = pooled.dbapi_connection
                if getattr(adapter, "_transaction", False) is not None:
                    raise RuntimeError("the engine's asyncpg adapter does not track its transaction as expected")
                isolation: Literal["read_committed", "repeatable_read"] = (
                    "read_committed" if self._write else "repeatable_read"
                )
                transaction = driver.transaction(isolation=isolation, readonly=self._read_only)
                await transaction.start()
                adapter._transaction = transaction  # what SQLAlchemy's adapter records when it begins one
                self._pooled, self._driver, self._transaction = pooled, driver, transaction
            except BaseException:
                await _discard(pooled)
                raise
            try:
                row: asyncpg.Record | None = await driver.fetchrow(sql, *args)
                tenant_id = None if row is None else tenant_of(row)
            except BaseException:
                await self._end(commit=False)
                raise
            if tenant_id is None:
                await self._end(commit=False)
            else:
                self._tenant_id = tenant_id
            return row

    def after_close(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` when the transaction has ended and the connection is back in the pool."""
        self._after_close.append(action)

    async def execute(self, statement: Any, params: Any = None) -> Any:
        """Execute on the request's connection (buffered result), one statement at a time."""
        async with self._lock:
            conn = await self._connection()
            self.statements += 1
            return await conn.execute(statement, params)

    async def _driver_connection(self) -> asyncpg.Connection:
        """The driver's connection inside the open transaction (opened if needed); hold the lock."""
        if self._driver is None:
            self._driver = await _driver_connection(await self._connection())
        return self._driver

    async def raw(self) -> asyncpg.Connection:
        """The driver's connection inside the open transaction (opened if needed), counted as one statement.

        Not locked: only for a caller that knows no loader batch runs meanwhile (`driver()` is).
        """
        async with self._lock:
            driver = await self._driver_connection()
        self.statements += 1
        return driver

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[asyncpg.Connection]:
        """The driver's connection for one statement, holding the lock loader batches take turns with."""
        async with self._lock:
            driver = await self._driver_connection()
            self.statements += 1
            yield driver

    async def fetchval(self, sql: str, *args: object, limit_s: float | None = None) -> Any:
        """The first value of `sql` (`$n` parameters) on the driver inside the transaction, one statement at a time."""
        async with self._lock:
            driver = await self._driver_connection()
            self.statements += 1
            return await driver.fetchval(sql, *args, timeout=limit_s)

    async def close(self, *, commit: bool = False) -> None:
        """End the transaction (rolled back unless `commit`) and return the connection to the pool,
        then run the `after_close` actions."""
        async with self._lock:
            actions, self._after_close = self._after_close, []
            await self._end(commit=commit)
        for action in actions:
            await action()

    async def _end(self, *, commit: bool) -> None:
        """End the transaction and give the connection back (hold the lock). A connection whose
        transaction did not end cleanly is closed, never pooled: after a cancellation (re-raised) or
        an error (logged, as the pool logs a failed reset; the server ends a transaction whose
        connection closes)."""
        self.grants_user = None
        conn, self._conn = self._conn, None
        pooled, self._pooled = self._pooled, None
        transaction, self._transaction, self._driver = self._transaction, None, None
        if conn is not None:
            try:
                if commit:
                    await conn.commit()
            finally:
                await conn.close()  # rolls back what is still open
        elif pooled is not None:
            adapter: Any = pooled.dbapi_connection
            try:
                await (transaction.commit() if commit else transaction.rollback())
            except Exception:
                await _discard(pooled)
                if commit:
                    raise
                _log.warning("the read transaction did not roll back; its connection is closed", exc_info=True)
                return
            except BaseException:
                await _discard(pooled)
                raise
            adapter._transaction = None
            if pool_has_room(pooled):
                # Back to the pool without a greenlet: its reset has nothing left to roll back and the record goes
                # into the pool's queue, which has room (no connection is closed), so the checkin does no I/O.
                pooled.close()
            else:
                await greenlet_spawn(pooled.close)  # may close the connection (the queue is full): I/O



async def _discard(pooled: PoolProxiedConnection) -> None:
    """Close a pooled connection in an unknown transaction state for good (the pool opens a new one)."""
    driver = pooled.driver_connection
    if isinstance(driver, asyncpg.Connection):
        driver.terminate()
    adapter: Any = pooled.dbapi_connection
    if adapter is not None:
        adapter._transaction = None
    await greenlet_spawn(pooled.invalidate)


async def _driver_connection(conn: AsyncConnection) -> asyncpg.Connection:
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, asyncpg.Connection):
        raise TypeError(f"the engine's driver is not asyncpg: {type(driver).__name__}")
    return driver
