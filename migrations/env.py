"""Alembic environment (async, asyncpg).

`gwm db ...` runs migrations on a connection it already holds (under an advisory lock) and passes
it in `config.attributes["connection"]`; `alembic -c migrations/alembic.ini ...` by hand connects
with DATABASE_URL. Either way the schema owner role runs them.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("set DATABASE_URL (the schema owner) or run migrations through `gwm db`")
    # Any libpq spelling (postgres://, postgresql://, postgresql+asyncpg://) with the asyncpg driver.
    parsed = make_url(url)
    if parsed.get_backend_name() not in {"postgres", "postgresql"}:
        raise RuntimeError(f"DATABASE_URL is not a PostgreSQL URL: {parsed.drivername}://...")
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        transaction_per_migration=True,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    from models.db import tls_from_url

    url, tls = tls_from_url(_url())  # libpq's TLS parameters in the URL (docs/deploy.md)
    engine = create_async_engine(url, connect_args={} if tls is None else {"ssl": tls})
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
