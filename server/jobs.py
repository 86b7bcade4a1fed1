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
  idempotency keys past their 24 hours (models/idempotency.py).

Each disabled account and each expired assignment leaves an audit row, with the tenant's system
user as the actor. Every statement is an UPDATE or DELETE ... RETURNING, so two runs at once act on
(and audit) each row once. A tenant that fails is logged and skipped; the others still run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.audit import AuthEvent, RequestMeta, record_event
from auth.policy import load_policy
from auth.sessions import TerminationReason, terminate_user_sessions
from models.audit_chain import AuditChain
from models.db import set_tenant
from models.enums import RiskLevel
from models.idempotency import purge_expired as purge_expired_idempotency_keys
from models.side_effects import SideEffectWriter

__all__ = ["NightlyReport", "TenantSweep", "run_nightly", "sweep_tenant"]

_log = logging.getLogger(__name__)


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


async def run_nightly(owner_engine: AsyncEngine, chain: AuditChain, *, now: datetime | None = None) -> NightlyReport:
    """Sweep every tenant (see the module docstring); `now` is the job's clock (tests move it)."""
    now = now or datetime.now(UTC)
    writer = SideEffectWriter(owner_engine, chain)
    meta = RequestMeta(request_id=f"job-nightly-{uuid.uuid4()}", endpoint="gwm jobs run", method="JOB")
    async with owner_engine.connect() as conn:
        tenant_ids = list((await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars())
        await conn.rollback()
    report = NightlyReport(tenants=len(tenant_ids))
    for tenant_id in tenant_ids:
        try:
            report.add(await sweep_tenant(owner_engine, writer, tenant_id, now=now, meta=meta))
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
    """One tenant's sweep in one transaction, then its audit rows."""
    sweep = TenantSweep()
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        policy = await load_policy(conn, tenant_id)
        actor = await conn.scalar(
            text("SELECT id FROM users WHERE tenant_id = :t AND is_system"), {"t": tenant_id}
        )
        disabled = await _disable_inactive(conn, now - timedelta(days=policy.inactive_disable_days), now)
        expired = await _expire_assignments(conn, now)
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
    await _audit(writer, tenant_id, actor, meta, policy.inactive_disable_days, disabled, expired)
    return sweep


async def _disable_inactive(conn: AsyncConnection, cutoff: datetime, now: datetime) -> list[_Disabled]:
    rows = (
        await conn.execute(
            text(
                """
                WITH seen AS (
                  SELECT u.id,
                         coalesce(greatest(u.last_login_at,
                                           (SELECT max(i.last_used_at) FROM user_identities i
                                             WHERE i.user_id = u.id)),
                                  u.created_at) AS last_seen
                    FROM users u
                   WHERE u.is_active AND NOT u.is_system
                )
                UPDATE users AS u SET is_active = false
                  FROM seen
                 WHERE u.id = seen.id AND seen.last_seen <= :cutoff AND u.is_active
                RETURNING u.id, seen.last_seen
                """
            ),
            {"cutoff": cutoff},
        )
    ).all()
    disabled = []
    for row in rows:
        ended = await terminate_user_sessions(conn, row.id, TerminationReason.USER_DEACTIVATED, now)
        disabled.append(_Disabled(user_id=row.id, last_seen=row.last_seen, sessions_ended=ended))
    return disabled


async def _expire_assignments(conn: AsyncConnection, now: datetime) -> list[_Expired]:
    rows = await conn.execute(
        text(
            "DELETE FROM user_roles AS ur USING roles AS r WHERE r.id = ur.role_id AND ur.expires_at <= :now"
            " RETURNING ur.id, ur.user_id, r.name, ur.opportunity_project_id, ur.expires_at"
        ),
        {"now": now},
    )
    return [
        _Expired(
            assignment_id=r.id,
            user_id=r.user_id,
            role=r.name,
            project_id=r.opportunity_project_id,
            expires_at=r.expires_at,
        )
        for r in rows
    ]


async def _delete(conn: AsyncConnection, sql: str, now: datetime) -> int:
    result = await conn.execute(text(sql), {"now": now})
    return int(result.rowcount)


async def _audit(
    writer: SideEffectWriter,
    tenant_id: uuid.UUID,
    actor: uuid.UUID | None,
    meta: RequestMeta,
    days: int,
    disabled: Iterable[_Disabled],
    expired: Iterable[_Expired],
) -> None:
    for d in disabled:
        await record_event(
            writer,
            tenant_id=tenant_id,
            event=AuthEvent.USER_DEACTIVATED,
            meta=meta,
            user_id=actor,
            entity_id=d.user_id,
            risk=RiskLevel.MEDIUM,
            description=f"inactive for {days} days or more (AC-2(3)); disabled by the nightly job",
            details={"last_seen": d.last_seen.isoformat(), "sessions_ended": d.sessions_ended},
        )
    for e in expired:
        await record_event(
            writer,
            tenant_id=tenant_id,
            event=AuthEvent.ROLE_ASSIGNMENT_EXPIRED,
            meta=meta,
            user_id=actor,
            entity_id=e.user_id,
            description=f"role {e.role!r} expired" + (f" on project {e.project_id}" if e.project_id else ""),
            details={
                "assignment_id": str(e.assignment_id),
                "role": e.role,
                "opportunity_project_id": str(e.project_id) if e.project_id else None,
                "expires_at": e.expires_at.isoformat(),
            },
        )
