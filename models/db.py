"""Engines, sessions and the tenant setting every transaction of the server carries.

Row-level security reads `app.tenant_id`; it is set per transaction (`set_config(..., true)`), so
a pooled connection never carries one tenant's setting into another tenant's request.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = [
    "RequestConnection",
    "create_engine",
    "session_factory",
    "set_tenant",
    "tenant_connection",
    "tenant_session",
]

_SET_TENANT = text("SELECT set_config('app.tenant_id', :tenant_id, true)")


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    statement_timeout_ms: int | None = None,
    application_name: str = "gwm",
    **kwargs: Any,
) -> AsyncEngine:
    """An asyncpg engine; `statement_timeout_ms` bounds every statement on its connections.

    Bound parameters never reach an exception's text or the log (`hide_parameters`): they hold
    emails, search text and whatever a caller sent.
    """
    server_settings = {"application_name": application_name}
    if statement_timeout_ms is not None:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=False,
        hide_parameters=True,
        connect_args={"server_settings": server_settings},
        **kwargs,
    )


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
    """

    def __init__(self, engine: AsyncEngine, tenant_id: uuid.UUID, *, read_only: bool = True) -> None:
        import asyncio

        self._engine = engine
        self._tenant_id = tenant_id
        self._read_only = read_only
        self._lock = asyncio.Lock()
        self._conn: AsyncConnection | None = None
        self.statements = 0

    @property
    def tenant_id(self) -> uuid.UUID:
        return self._tenant_id

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            conn = await self._engine.connect()
            try:
                options: dict[str, Any] = {"isolation_level": "REPEATABLE READ"}
                if self._read_only:
                    options["postgresql_readonly"] = True
                await conn.execution_options(**options)
                await conn.begin()
                await set_tenant(conn, self._tenant_id)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def execute(self, statement: Any, params: Any = None) -> Any:
        """Execute on the request's connection (buffered result), one statement at a time."""
        async with self._lock:
            conn = await self._connection()
            self.statements += 1
            return await conn.execute(statement, params)

    async def close(self, *, commit: bool = False) -> None:
        """End the transaction (rolled back unless `commit`) and return the connection to the pool."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                if commit:
                    await conn.commit()
                else:
                    await conn.rollback()
            finally:
                await conn.close()
