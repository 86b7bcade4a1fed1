"""The audit log export: the audit_logs rows of a period, for the weekly review (AU-6).

Rows are those `auditLogs` serves the same caller (`readable()`: `audit:read` tenant-wide, and a
row about an entity only where the caller reads that entity: resolvers/common/trail_guard.py),
with `timestampUtc` in [from, to), in the chain's order (`seq`, unique per tenant: a reviewer sees
the sequence, and the key is the keyset). Inside `beforeValues`, `afterValues` and
`changedFields`, a guarded column's value the caller may not read on that entity is `[withheld]`
(trail_guard.withheld_columns / withhold), exactly as over GraphQL.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, select

from auth.audit import AuthEvent
from models import AuditLog
from resolvers.common.loaders import readable
from resolvers.common.trail_guard import VALUE_COLUMNS, withheld_columns, withhold
from resolvers.exports.runner import Column, ExportRun

__all__ = ["AUDIT_LOG_COLUMNS", "AuditLogExport"]

_AUDIT: Table = AuditLog.__table__
_VALUES = VALUE_COLUMNS["audit_logs"]

AUDIT_LOG_COLUMNS: tuple[Column, ...] = (
    Column("seq", "seq"),
    Column("timestampUtc", "timestamp_utc"),
    Column("rowId", "id"),
    Column("actionType", "action_type"),
    Column("entityType", "entity_type"),
    Column("entityId", "entity_id"),
    Column("userId", "user_id"),
    Column("sessionId", "session_id"),
    Column("accessGranted", "access_granted"),
    Column("permissionUsed", "permission_used"),
    Column("riskLevel", "risk_level"),
    Column("operationDescription", "operation_description"),
    Column("changedFields", "changed_fields"),
    Column("beforeValues", "before_values"),
    Column("afterValues", "after_values"),
    Column("changeReason", "change_reason"),
    Column("ipAddress", "ip_address"),
    Column("userAgent", "user_agent"),
    Column("requestId", "request_id"),
    Column("traceId", "trace_id"),
    Column("apiEndpoint", "api_endpoint"),
    Column("httpMethod", "http_method"),
    Column("responseStatus", "response_status"),
)


class AuditLogExport:
    name = "auditLog"
    event = AuthEvent.EXPORT_AUDIT_LOG
    resource_type = "AuditLog"
    columns: Sequence[Column] = AUDIT_LOG_COLUMNS

    def __init__(self, start: datetime.datetime, end: datetime.datetime) -> None:
        self.start = start
        self.end = end

    def parameters(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}

    async def batches(self, run: ExportRun) -> AsyncIterator[list[list[Any]]]:
        table = _AUDIT
        base = readable(select(*(table.c[c.key] for c in self.columns)), table, run.scope).where(
            table.c.timestamp_utc >= self.start, table.c.timestamp_utc < self.end
        )
        last: int | None = None
        while True:
            stmt = base if last is None else base.where(table.c.seq > last)
            stmt = stmt.order_by(table.c.seq).limit(run.batch_size)
            rows = (await run.loaders.db.execute(stmt)).all()
            if not rows:
                return
            yield list(await asyncio.gather(*(self._values(run, row._mapping) for row in rows)))
            if len(rows) < run.batch_size:
                return
            last = rows[-1].seq

    async def _values(self, run: ExportRun, row: Mapping[str, Any]) -> list[Any]:
        values = dict(row)
        keys: set[str] = set()
        for key in _VALUES:
            if isinstance(values[key], Mapping):
                keys.update(values[key])
        if keys:
            withheld = await withheld_columns(run.loaders, values["entity_type"], values["entity_id"], keys)
            if withheld:
                for column in self.columns:
                    if column.key not in _VALUES or not isinstance(values[column.key], Mapping):
                        continue
                    for name, permission in withheld.items():
                        if name in values[column.key]:
                            run.withhold(permission, column.header)
                    values[column.key] = withhold(values[column.key], withheld)
        return [values[column.key] for column in self.columns]
