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
    """An asyncpg engine; `statement_timeout_ms` bounds every statement on its connections."""
    server_settings = {"application_name": application_name}
    if statement_timeout_ms is not None:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=False,
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
