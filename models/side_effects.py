"""The side-effect writer: rows that must persist whatever happens to the request's transaction.

A read-only request still leaves traces (a session's last activity, a permission denial, a
document access); a failed login must still count the failure; a denied mutation is audited
after its transaction rolled back. Each write here runs in its own short transaction, scoped to
its tenant, on the server's role: row-level security applies as everywhere else.

Rows for the audit tables (audit_logs, change_history, permission_audit) go through the audit
chain (models/audit_chain.py), which numbers and signs them; the database refuses them otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.audit_chain import AUDIT_TABLE_NAMES, AuditChain
from models.db import set_tenant

__all__ = ["SideEffectWriter"]

T = TypeVar("T")


class SideEffectWriter:
    """Commits small writes in their own transactions."""

    def __init__(self, engine: AsyncEngine, chain: AuditChain) -> None:
        self._engine = engine
        self._chain = chain

    @property
    def chain(self) -> AuditChain:
        """The audit chain this writer appends audit rows with."""
        return self._chain

    async def insert(self, tenant_id: uuid.UUID, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert `rows` into `table` for `tenant_id` and commit (audit tables: appended to the chain)."""
        if not rows:
            return
        async with self._engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            if table.name in AUDIT_TABLE_NAMES:
                await self._chain.append(conn, table, rows)
            else:
                await conn.execute(insert(table), [dict(r) for r in rows])

    async def run(self, tenant_id: uuid.UUID, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in a transaction of its own scoped to `tenant_id`; commit if it returns."""
        async with self._engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            return await work(conn)
