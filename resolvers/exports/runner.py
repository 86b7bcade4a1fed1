"""Running an export: the caller's rows read in keyset batches from one snapshot, then audited.

An export reads through the same path as every GraphQL read: a `Loaders` over a `RequestConnection`
(one connection, one REPEATABLE READ, READ ONLY transaction with the tenant set) and the caller's
`ReadScope`, so every statement starts from `readable()` and a row the caller could not read over
GraphQL is not in the file. Guarded columns follow the same rule as their GraphQL fields
(`ReadScope.allows_field`, and resolvers/common/trail_guard.py for audit values): a value the
caller may not read is replaced by `[withheld]` and counted as a denial.

Bounds on the open snapshot (docs/api.md "Exports"):

- each batch is one statement of at most `batch_size` rows ordered by an indexed unique key and
  resumed after the last key (keyset), so no statement comes near the server's statement timeout
  (GWM_DB_STATEMENT_TIMEOUT_MS) however large the export;
- between batches the transaction waits for the client to take the previous chunk; the
  transaction sets `idle_in_transaction_session_timeout` (GWM_EXPORT_IDLE_SECONDS) so that a client that
  stops reading cannot keep the snapshot open: PostgreSQL ends the session and the export fails;
- the whole read is bounded by `max_seconds` (GWM_EXPORT_MAX_SECONDS): past it the export stops
  with ExportTooSlow, so no snapshot lives longer than that and vacuum is never held back further.

When the stream ends (finished or not) one audit_logs row records who exported what and how many
rows (`auth.audit.record_caller_event`, a side-effect event like every read's), and the withheld
columns are written to permission_audit with the number of rows they were withheld on.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audit import AuthEvent, RequestMeta, inet, record_caller_event
from auth.permissions import Permission
from auth.principal import Principal
from models import PermissionAudit
from models.db import RequestConnection
from models.enums import RiskLevel
from models.side_effects import SideEffectWriter
from resolvers.common.loaders import Loaders
from resolvers.common.scope import ReadScope

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "IDLE_LIMIT_MS",
    "Column",
    "ExportRun",
    "ExportSource",
    "ExportTooSlow",
    "record_refusal",
]

DEFAULT_BATCH_SIZE = 500
#: How long the export's transaction may sit idle waiting for the client to read (milliseconds;
#: GWM_EXPORT_IDLE_SECONDS sets it per server).
IDLE_LIMIT_MS = 60_000

_IDLE_LIMIT = text("SELECT set_config('idle_in_transaction_session_timeout', :limit, true)")


class ExportTooSlow(Exception):
    """The export's snapshot has been open longer than its bound."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of an export: its header (the GraphQL field's name) and its stored column."""

    header: str
    key: str
    #: The permission the value needs beyond the row's (auth.rules.FIELD_RULES); None for none.
    permission: Permission | None = None


class ExportSource(Protocol):
    """What is exported: the columns and the caller's rows, batch by batch."""

    name: str  # "pipeline", "audit_log": the file's and the audit row's name
    event: AuthEvent
    resource_type: str  # permission_audit.resource_type of withheld values
    columns: Sequence[Column]

    def batches(self, run: ExportRun) -> AsyncIterator[list[list[Any]]]:
        """The rows (one value per column, withheld values replaced) in batches of `run.batch_size`."""
        ...

    def parameters(self) -> dict[str, Any]:
        """What the caller asked for (period, flags), for the audit row."""
        ...


@dataclass(slots=True)
class ExportRun:
    """One export by one caller: its snapshot, its counters and its audit."""

    engine: AsyncEngine
    writer: SideEffectWriter
    principal: Principal
    meta: RequestMeta
    file_format: str
    batch_size: int = DEFAULT_BATCH_SIZE
    max_seconds: float = 300.0
    idle_limit_ms: int = IDLE_LIMIT_MS
    rows: int = 0
    batches_read: int = 0
    withheld: Counter[tuple[Permission, str]] = field(default_factory=Counter)
    _loaders: Loaders | None = None
    _started: float = 0.0

    @property
    def loaders(self) -> Loaders:
        assert self._loaders is not None, "ExportRun.loaders is available inside rows() only"
        return self._loaders

    @property
    def scope(self) -> ReadScope:
        return self.loaders.scope

    def withhold(self, permission: Permission, header: str) -> None:
        """Count one value of `header` withheld for want of `permission`."""
        self.withheld[(permission, header)] += 1

    def check_deadline(self) -> None:
        if time.monotonic() - self._started > self.max_seconds:
            raise ExportTooSlow(f"the export's snapshot was open for more than {self.max_seconds:g} s")

    async def rows_of(self, source: ExportSource) -> AsyncGenerator[list[list[Any]], None]:
        """`source`'s batches read from one snapshot; the audit rows are written when it ends."""
        db = RequestConnection(self.engine, self.principal.tenant_id, read_only=True)
        self._loaders = Loaders(db, ReadScope(self.principal))
        self._started = time.monotonic()
        completed = False
        try:
            await db.execute(_IDLE_LIMIT, {"limit": str(self.idle_limit_ms)})
            async for batch in source.batches(self):
                self.rows += len(batch)
                self.batches_read += 1
                yield batch
                self.check_deadline()
            completed = True
        finally:
            try:
                await db.close()  # may fail when PostgreSQL ended the session (idle limit)
            finally:
                self._loaders = None
                await self._record(source, completed)

    async def _record(self, source: ExportSource, completed: bool) -> None:
        import anyio

        # Shielded: a client that disconnects cancels the stream, and the export must still be audited.
        with anyio.CancelScope(shield=True):
            withheld = sorted(self.withheld.items())
            details = {
                "format": self.file_format,
                "rows": self.rows,
                "completed": completed,
                "columns": [column.header for column in source.columns],
                "withheldColumns": {header: count for (_, header), count in withheld},
                **source.parameters(),
            }
            state = "" if completed else " (stopped before the end)"
            await record_caller_event(
                self.writer,
                self.principal,
                source.event,
                self.meta,
                entity_type="export",
                entity_id=None,
                description=f"{source.name} export ({self.file_format}): {self.rows} rows{state}",
                details=details,
                risk=RiskLevel.MEDIUM,
                status=200,
            )
            if withheld:
                await self.writer.insert(
                    self.principal.tenant_id,
                    PermissionAudit.__table__,
                    [
                        {
                            "tenant_id": self.principal.tenant_id,
                            "user_id": self.principal.user_id,
                            "resource_type": source.resource_type,
                            "permission_checked": str(permission),
                            "permission_granted": False,
                            "denial_reason": f"{permission} is required",
                            "ip_address": inet(self.meta.ip),
                            "request_id": self.meta.request_id,
                            "field_path": f"export.{source.name}.{header}",
                            "denied_count": count,
                        }
                        for (permission, header), count in withheld
                    ],
                )


async def record_refusal(
    writer: SideEffectWriter, principal: Principal, meta: RequestMeta, name: str, permission: Permission
) -> None:
    """A refused export (the caller reads none of its rows): an `auth.access.denied` row."""
    await record_caller_event(
        writer,
        principal,
        AuthEvent.ACCESS_DENIED,
        meta,
        entity_type="export",
        entity_id=None,
        granted=False,
        risk=RiskLevel.MEDIUM,
        permission=permission.value,
        description=f"{name} export refused: {permission.value} required",
        status=403,
    )
