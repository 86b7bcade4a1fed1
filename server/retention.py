"""Retention of operational records, run by `gwm jobs run` after the nightly sweep.

Per tenant, in one unit of work acting as the tenant's system user (auth/audited.py):

- ended sessions (`user_sessions`) are deleted GWM_SESSION_RETENTION_DAYS (default 90) after they
  ended. A session has ended when it was terminated (`is_active` false: its end is `terminated_at`,
  or its last activity when that is not set), when its absolute expiry (`expires_at`) has passed
  (its end is `expires_at`), or when it has not been used for the whole retention period (a
  session without an expiry that nobody uses any more). A live session is never deleted;
  the sign-ins and sign-outs themselves stay in audit_logs, which has its own retention
  (`gwm audit archive` / `purge`, server/audit_commands.py).
- integration logs (`api_integration_logs`, one row per call to an external API) are deleted
  GWM_INTEGRATION_LOG_RETENTION_DAYS (default 90) after the call.

Neither table is audited row by row (models/audit_trail.py NOT_AUDITED: operational), so the
deletes are plain statements on the unit of work's connection, and when anything was deleted one
audit_logs row (`retention.purged`) records how many rows of each and the cutoffs, in the same
transaction. A tenant that fails is logged and counted; the others still run.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audit import RequestMeta
from auth.audited import system_unit
from models.audit_chain import AuditChain

__all__ = ["PROCESS", "PURGED_ACTION", "RetentionReport", "purge_tenant", "run_retention"]

_log = logging.getLogger(__name__)
#: The system process recorded on the retention's audit rows.
PROCESS = "gwm jobs run (retention)"
#: audit_logs.action_type of the row recording a tenant's retention purge.
PURGED_ACTION = "retention.purged"

_ENDED_SESSIONS = text(
    """
    DELETE FROM user_sessions
     WHERE (NOT is_active AND coalesce(terminated_at, last_activity_at) < :cutoff)
        OR (expires_at IS NOT NULL AND expires_at <= :now AND expires_at < :cutoff)
        OR last_activity_at < :cutoff
    """
)
_OLD_INTEGRATION_LOGS = text("DELETE FROM api_integration_logs WHERE api_call_timestamp < :cutoff")


@dataclass
class RetentionReport:
    """What the retention deleted over every tenant, and the tenants that failed."""

    tenants: int = 0
    sessions_purged: int = 0
    integration_logs_purged: int = 0
    failed: list[uuid.UUID] = field(default_factory=list)

    def __str__(self) -> str:
        failed = f"; FAILED in {len(self.failed)}: {', '.join(map(str, self.failed))}" if self.failed else ""
        return (
            f"retention over {self.tenants} tenant(s): ended sessions purged {self.sessions_purged}, "
            f"integration logs purged {self.integration_logs_purged}{failed}"
        )


async def purge_tenant(
    engine: AsyncEngine,
    chain: AuditChain,
    tenant_id: uuid.UUID,
    *,
    now: datetime,
    session_days: int,
    integration_log_days: int,
    meta: RequestMeta | None = None,
) -> tuple[int, int]:
    """Delete one tenant's ended sessions and old integration logs; (sessions, logs) deleted."""
    session_cutoff = now - timedelta(days=session_days)
    log_cutoff = now - timedelta(days=integration_log_days)
    async with system_unit(engine, chain, tenant_id, process=PROCESS, meta=meta) as uow:
        conn = uow.connection
        sessions = int((await conn.execute(_ENDED_SESSIONS, {"now": now, "cutoff": session_cutoff})).rowcount)
        logs = int((await conn.execute(_OLD_INTEGRATION_LOGS, {"cutoff": log_cutoff})).rowcount)
        if sessions or logs:
            uow.record_event(
                PURGED_ACTION,
                entity_type="tenant",
                entity_id=tenant_id,
                description=(
                    f"{sessions} session(s) ended before {session_cutoff.isoformat()} and "
                    f"{logs} integration log(s) before {log_cutoff.isoformat()} deleted"
                ),
                details={
                    "user_sessions": {"deleted": sessions, "ended_before": session_cutoff.isoformat(),
                                      "retention_days": session_days},
                    "api_integration_logs": {"deleted": logs, "before": log_cutoff.isoformat(),
                                             "retention_days": integration_log_days},
                },
            )
    return sessions, logs


async def run_retention(
    owner_engine: AsyncEngine,
    chain: AuditChain,
    *,
    session_days: int,
    integration_log_days: int,
    now: datetime | None = None,
) -> RetentionReport:
    """`purge_tenant` for every tenant (`now` is the job's clock: tests move it)."""
    now = now or datetime.now(UTC)
    meta = RequestMeta(request_id=f"job-retention-{uuid.uuid4()}", endpoint="gwm jobs run", method="JOB")
    async with owner_engine.connect() as conn:
        tenant_ids = list((await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars())
        await conn.rollback()
    report = RetentionReport(tenants=len(tenant_ids))
    for tenant_id in tenant_ids:
        try:
            sessions, logs = await purge_tenant(
                owner_engine, chain, tenant_id, now=now, session_days=session_days,
                integration_log_days=integration_log_days, meta=meta,
            )
        except Exception:
            _log.exception("retention failed for tenant %s", tenant_id)
            report.failed.append(tenant_id)
            continue
        report.sessions_purged += sessions
        report.integration_logs_purged += logs
    return report
