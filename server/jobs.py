"""Scheduled jobs: the nightly account sweep (`gwm jobs run`).

For every tenant, as the schema owner (row-level security still applies: each tenant's work runs in
its own transaction with the tenant set):

- disables accounts inactive for the tenant's `security.inactive_disable_days` (90 by default,
  NIST 800-53 AC-2(3)): the last sign-in, by password or through a linked SSO identity, or the
  account's creation if it never signed in (an invitation never accepted). The system user is
  exempt. Their sessions end (`user_deactivated`);
- deletes role assignments whose `expires_at` has passed and ends the sessions of the users who
  lost a role that way (`role_assignment_expired`): permissions are loaded per request, so the
  grant is gone already; ending the sessions makes the user sign in again under the new set;
- purges expired invitation and reset tokens, SAML request ids past their expiry and replay-cache
  entries past their `not_on_or_after` (which already includes the allowed clock skew), and
  idempotency keys past their 24 hours (models/idempotency.py);
- writes deadline reminders, sends the daily digest email and purges old inbox items
  (server/inbox_jobs.py; docs/decisions.md D20-D22).

A tenant's sweep is one unit of work acting as the tenant's system user (auth/audited.py): each
disabled account and each expired assignment is changed through its session, so the flush hook
writes its audit row (`auth.user.deactivated`, `auth.role_assignment.expired`) and change_history
rows in the same transaction; nothing is audited after COMMIT. Each row is locked and checked again
before it is changed, so two runs at once act on (and audit) each row once. A tenant that fails is
logged and skipped (its changes roll back with their evidence); the others still run.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.audit import AuthEvent, RequestMeta
from auth.audited import system_unit
from auth.mailer import Mailer
from auth.policy import load_policy
from auth.sessions import TerminationReason, terminate_user_sessions
from models.audit_chain import AuditChain
from models.errors import NotFound
from models.idempotency import purge_expired as purge_expired_idempotency_keys
from models.identity import User, UserRole
from models.side_effects import SideEffectWriter
from models.unit_of_work import UnitOfWork
from server.inbox_jobs import inbox_tenant

__all__ = ["NightlyReport", "TenantSweep", "run_nightly", "sweep_tenant"]

_log = logging.getLogger(__name__)
#: The system process recorded on the sweep's audit and history rows.
PROCESS = "gwm jobs run"


@dataclass
class TenantSweep:
    """What the sweep did in one tenant."""

    users_deactivated: int = 0
    role_assignments_expired: int = 0
    sessions_ended: int = 0
    account_links_purged: int = 0
    saml_requests_purged: int = 0
    saml_assertions_purged: int = 0
    idempotency_keys_purged: int = 0
    # The inbox (server/inbox_jobs.py): deadline reminders, digest emails, old items deleted.
    reminders_written: int = 0
    digests_sent: int = 0
    notifications_purged: int = 0


@dataclass
class NightlyReport:
    """The sweep over every tenant: totals, and the tenants that failed."""

    tenants: int = 0
    totals: TenantSweep = field(default_factory=TenantSweep)
    failed: list[uuid.UUID] = field(default_factory=list)

    def add(self, sweep: TenantSweep) -> None:
        for f in fields(TenantSweep):
            setattr(self.totals, f.name, getattr(self.totals, f.name) + getattr(sweep, f.name))

    def __str__(self) -> str:
        parts = ", ".join(
            f"{f.name.replace('_', ' ')} {getattr(self.totals, f.name)}" for f in fields(TenantSweep)
        )
        failed = f"; FAILED in {len(self.failed)}: {', '.join(map(str, self.failed))}" if self.failed else ""
        return f"nightly sweep over {self.tenants} tenant(s): {parts}{failed}"


async def run_nightly(
    owner_engine: AsyncEngine,
    chain: AuditChain,
    *,
    now: datetime | None = None,
    mailer: Mailer | None = None,
    public_url: str = "http://127.0.0.1:8000",
    notification_retention_days: int = 90,
) -> NightlyReport:
    """Sweep every tenant (see the module docstring); `now` is the job's clock (tests move it).

    Then the inbox jobs of each tenant (server/inbox_jobs.py): reminders, the daily digest (sent
    through `mailer`; none without one) and the purge of items older than the retention."""
    now = now or datetime.now(UTC)
    writer = SideEffectWriter(owner_engine, chain)
    meta = RequestMeta(request_id=f"job-nightly-{uuid.uuid4()}", endpoint="gwm jobs run", method="JOB")
    async with owner_engine.connect() as conn:
        tenant_ids = list((await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars())
        await conn.rollback()
    report = NightlyReport(tenants=len(tenant_ids))
    for tenant_id in tenant_ids:
        try:
            sweep = await sweep_tenant(owner_engine, writer, tenant_id, now=now, meta=meta)
            inbox = await inbox_tenant(
                owner_engine, chain, tenant_id, now=now, meta=meta, mailer=mailer, public_url=public_url,
                retention_days=notification_retention_days,
            )
            sweep.reminders_written, sweep.digests_sent = inbox.reminders_written, inbox.digests_sent
            sweep.notifications_purged = inbox.notifications_purged
            report.add(sweep)
        except Exception:
            _log.exception("nightly sweep failed for tenant %s", tenant_id)
            report.failed.append(tenant_id)
    return report


@dataclass(frozen=True, slots=True)
class _Disabled:
    user_id: uuid.UUID
    last_seen: datetime
    sessions_ended: int


@dataclass(frozen=True, slots=True)
class _Expired:
    assignment_id: uuid.UUID
    user_id: uuid.UUID
    role: str
    project_id: uuid.UUID | None
    expires_at: datetime


async def sweep_tenant(
    owner_engine: AsyncEngine,
    writer: SideEffectWriter,
    tenant_id: uuid.UUID,
    *,
    now: datetime,
    meta: RequestMeta,
) -> TenantSweep:
    """One tenant's sweep in one unit of work: every change commits with its audit rows, or none does."""
    sweep = TenantSweep()
    async with system_unit(owner_engine, writer.chain, tenant_id, process=PROCESS, meta=meta) as uow:
        conn = uow.connection
        policy = await load_policy(conn, tenant_id)
        days = policy.inactive_disable_days
        disabled = await _disable_inactive(uow, now - timedelta(days=days), now, days)
        expired = await _expire_assignments(uow, now)
        role_sessions = 0
        for user_id in dict.fromkeys(e.user_id for e in expired):
            role_sessions += await terminate_user_sessions(conn, user_id, TerminationReason.ROLE_EXPIRED, now)
        sweep.account_links_purged = await _delete(
            conn, "DELETE FROM account_tokens WHERE expires_at <= :now", now
        )
        sweep.saml_requests_purged = await _delete(
            conn, "DELETE FROM saml_authn_requests WHERE expires_at <= :now", now
        )
        sweep.saml_assertions_purged = await _delete(
            conn, "DELETE FROM saml_assertions_seen WHERE not_on_or_after <= :now", now
        )
        sweep.idempotency_keys_purged = await purge_expired_idempotency_keys(conn, now)
    sweep.users_deactivated = len(disabled)
    sweep.role_assignments_expired = len(expired)
    sweep.sessions_ended = sum(d.sessions_ended for d in disabled) + role_sessions
    return sweep


async def _disable_inactive(uow: UnitOfWork, cutoff: datetime, now: datetime, days: int) -> list[_Disabled]:
    rows = (
        await uow.connection.execute(
            text(
                """
                SELECT u.id,
                       coalesce(greatest(u.last_login_at,
                                         (SELECT max(i.last_used_at) FROM user_identities i
                                           WHERE i.user_id = u.id)),
                                u.created_at) AS last_seen
                  FROM users u
                 WHERE u.is_active AND NOT u.is_system
                """
            )
        )
    ).all()
    disabled = []
    for row in rows:
        if row.last_seen > cutoff:
            continue
        user = await uow.lock(User, row.id)  # a concurrent run waits here, then finds it inactive
        if not user.is_active or user.is_system:
            continue
        uow.assign(user, {"is_active": False})
        ended = await terminate_user_sessions(uow.connection, row.id, TerminationReason.USER_DEACTIVATED, now)
        uow.label(
            user,
            AuthEvent.USER_DEACTIVATED,
            f"inactive for {days} days or more (AC-2(3)), last seen {row.last_seen.isoformat()};"
            f" disabled by the nightly job; {ended} session(s) ended",
        )
        disabled.append(_Disabled(user_id=row.id, last_seen=row.last_seen, sessions_ended=ended))
    return disabled


async def _expire_assignments(uow: UnitOfWork, now: datetime) -> list[_Expired]:
    rows = await uow.connection.execute(
        text(
            "SELECT ur.id, ur.user_id, r.name, ur.opportunity_project_id, ur.expires_at"
            " FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.expires_at <= :now"
        ),
        {"now": now},
    )
    expired = []
    for r in rows.all():
        try:
            assignment = await uow.lock(UserRole, r.id)
        except NotFound:  # removed meanwhile (a concurrent run, an administrator)
            continue
        uow.label(
            assignment,
            AuthEvent.ROLE_ASSIGNMENT_EXPIRED,
            f"role {r.name!r} expired"
            + (f" on project {r.opportunity_project_id}" if r.opportunity_project_id else ""),
        )
        await uow.delete(assignment)
        expired.append(
            _Expired(
                assignment_id=r.id,
                user_id=r.user_id,
                role=r.name,
                project_id=r.opportunity_project_id,
                expires_at=r.expires_at,
            )
        )
    await uow.flush()
    return expired


async def _delete(conn: AsyncConnection, sql: str, now: datetime) -> int:
    result = await conn.execute(text(sql), {"now": now})
    return int(result.rowcount)
