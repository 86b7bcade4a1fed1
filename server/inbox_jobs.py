"""The inbox's part of `gwm jobs run`: deadline reminders, the daily digest email, the purge.

Per tenant (docs/decisions.md D20-D22):

- **Reminders** when an open activity's `due_date` or an active project's response deadline
  (`response_due_date` of its current version) is 7, 2 or 1 days away, counted in **UTC calendar
  days**: the deadline's UTC date minus the run's UTC date (a deadline at 00:30 UTC on the 10th is
  2 days away for a run at 23:59 UTC on the 8th and 1 day away for a run two minutes later).
  Recipients: the activity's assignee and user participants; the people who work on the project
  (models.notifications.project_team). Each reminder is an inbox item (kind `deadline_reminder`).
- **Digest**: one email a UTC day per user with the digest on, listing the unread high and critical
  items (title, impact and link only) of projects the user may still read, through the SMTP sender
  (auth/mailer.py). No sender configured: no digest is sent or recorded.
- **Purge**: items (and records of sends) older than the retention.

Each reminder and digest is recorded in `notification_sends` under a unique key, inserted before it
is produced, in the same transaction: two runs at once produce each once (the second waits on the
first's row, then finds it). A digest whose delivery fails rolls its record back, so the next run
tries again.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.audit import RequestMeta
from auth.audited import system_unit
from auth.mailer import Mailer, MailerError, valid_address
from models.audit_chain import AuditChain
from models.enums import ImpactLevel
from models.notifications import NotificationKind, SendKind, add_notifications, project_team

__all__ = ["REMINDER_DAYS", "InboxRun", "days_away", "inbox_tenant", "send_digests", "send_reminders"]

_log = logging.getLogger(__name__)

PROCESS = "gwm jobs run (inbox)"
#: Days before a deadline on which a reminder is written, and the reminder's impact level.
REMINDER_DAYS: dict[int, ImpactLevel] = {7: ImpactLevel.MEDIUM, 2: ImpactLevel.HIGH, 1: ImpactLevel.CRITICAL}
#: Items listed in one digest at most (the count says how many there are).
DIGEST_ITEMS = 50
_OPEN_ACTIVITY = ("pending", "in_progress", "deferred")
_POLLED_PROJECT = ("active", "on_hold")


@dataclass
class InboxRun:
    """What the inbox jobs did in one tenant."""

    reminders_written: int = 0
    digests_sent: int = 0
    notifications_purged: int = 0


def days_away(deadline: dt.datetime, now: dt.datetime) -> int:
    """UTC calendar days from `now` to `deadline` (0: the same UTC date)."""
    return (deadline.astimezone(dt.UTC).date() - now.astimezone(dt.UTC).date()).days


def link(public_url: str, notification_id: uuid.UUID) -> str:
    """Where a digest item points: the web client's route of the inbox item."""
    return f"{public_url.rstrip('/')}/notifications/{notification_id}"


async def inbox_tenant(
    engine: AsyncEngine,
    chain: AuditChain,
    tenant_id: uuid.UUID,
    *,
    now: dt.datetime,
    meta: RequestMeta | None,
    mailer: Mailer | None,
    public_url: str,
    retention_days: int,
) -> InboxRun:
    """Reminders, digests and the purge of one tenant."""
    run = InboxRun()
    run.reminders_written = await send_reminders(engine, chain, tenant_id, now=now, meta=meta)
    if mailer is not None:
        run.digests_sent = await send_digests(engine, chain, tenant_id, now=now, meta=meta, mailer=mailer,
                                              public_url=public_url)
    async with system_unit(engine, chain, tenant_id, process=PROCESS, meta=meta) as uow:
        cutoff = now - dt.timedelta(days=retention_days)
        result = await uow.connection.execute(text("DELETE FROM notifications WHERE created_at < :c"), {"c": cutoff})
        run.notifications_purged = int(result.rowcount)
        await uow.connection.execute(text("DELETE FROM notification_sends WHERE sent_at < :c"), {"c": cutoff})
    return run


# -- reminders --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Due:
    subject_type: str  # "activity" | "opportunity_project"
    subject_id: uuid.UUID
    title: str
    deadline: dt.datetime
    project_id: uuid.UUID | None
    recipients: tuple[uuid.UUID, ...]


async def _due_activities(conn: AsyncConnection, lo: dt.datetime, hi: dt.datetime) -> list[_Due]:
    rows = (
        await conn.execute(
            text(
                """
                SELECT a.id, a.subject, a.due_date,
                       CASE WHEN a.entity_type = 'opportunity_project' THEN a.entity_id END AS project_id,
                       array_remove(array_agg(DISTINCT u.id), NULL) AS recipients
                  FROM activities a
                  LEFT JOIN activity_participants ap
                         ON ap.activity_id = a.id AND ap.participant_type = 'user'
                  JOIN users u ON (u.id = a.assigned_to OR u.id = ap.participant_id)
                              AND u.is_active AND NOT u.is_system
                 WHERE a.status = ANY(:open) AND a.due_date >= :lo AND a.due_date < :hi
                 GROUP BY a.id
                """
            ),
            {"open": list(_OPEN_ACTIVITY), "lo": lo, "hi": hi},
        )
    ).all()
    return [
        _Due("activity", r.id, f"Activity due in {{days}}: {r.subject}", r.due_date, r.project_id,
             tuple(sorted(r.recipients)))
        for r in rows
    ]


async def _due_projects(conn: AsyncConnection, lo: dt.datetime, hi: dt.datetime) -> list[_Due]:
    rows = (
        await conn.execute(
            text(
                """
                SELECT p.id, p.project_name, v.response_due_date
                  FROM opportunity_projects p
                  JOIN external_opportunity_data v ON v.opportunity_project_id = p.id AND v.is_current_version
                 WHERE p.archived_at IS NULL AND p.project_status = ANY(:statuses)
                   AND v.response_due_date >= :lo AND v.response_due_date < :hi
                """
            ),
            {"statuses": list(_POLLED_PROJECT), "lo": lo, "hi": hi},
        )
    ).all()
    team = await project_team(conn, [r.id for r in rows])
    return [
        _Due("opportunity_project", r.id, f"Response deadline in {{days}}: {r.project_name}", r.response_due_date,
             r.id, tuple(team.get(r.id, [])))
        for r in rows
    ]


async def send_reminders(
    engine: AsyncEngine, chain: AuditChain, tenant_id: uuid.UUID, *, now: dt.datetime, meta: RequestMeta | None
) -> int:
    """Write the reminders due at `now` (module docstring) once each; how many were written."""
    today = dt.datetime.combine(now.astimezone(dt.UTC).date(), dt.time(), tzinfo=dt.UTC)
    lo, hi = today + dt.timedelta(days=min(REMINDER_DAYS)), today + dt.timedelta(days=max(REMINDER_DAYS) + 1)
    written = 0
    async with system_unit(engine, chain, tenant_id, process=PROCESS, meta=meta) as uow:
        conn = uow.connection
        for due in [*await _due_activities(conn, lo, hi), *await _due_projects(conn, lo, hi)]:
            days = days_away(due.deadline, now)
            impact = REMINDER_DAYS.get(days)
            if impact is None:
                continue
            key = f"{due.subject_type}:{due.subject_id}:{due.deadline.astimezone(dt.UTC).date().isoformat()}:{days}"
            for user_id in due.recipients:
                if not await _claim(conn, tenant_id, user_id, SendKind.REMINDER, key):
                    continue  # produced already (by an earlier run, or a concurrent one that committed)
                (notification_id,) = await add_notifications(conn, [{
                    "tenant_id": tenant_id,
                    "user_id": user_id,
                    "kind": NotificationKind.DEADLINE_REMINDER.value,
                    "impact_level": impact.value,
                    "title": due.title.format(days="1 day" if days == 1 else f"{days} days")[:500],
                    "entity_type": due.subject_type,
                    "entity_id": due.subject_id,
                    "opportunity_project_id": due.project_id,
                    "due_at": due.deadline,
                }])
                await conn.execute(
                    text("UPDATE notification_sends SET notification_id = :n, item_count = 1"
                         " WHERE tenant_id = :t AND user_id = :u AND kind = :k AND key = :key"),
                    {"n": notification_id, "t": tenant_id, "u": user_id, "k": SendKind.REMINDER.value, "key": key},
                )
                written += 1
    return written


async def _claim(conn: AsyncConnection, tenant_id: uuid.UUID, user_id: uuid.UUID, kind: SendKind, key: str) -> bool:
    """Record a send; False when it is recorded already (waits for a concurrent run's row to commit)."""
    inserted = await conn.scalar(
        text(
            "INSERT INTO notification_sends (tenant_id, user_id, kind, key) VALUES (:t, :u, :k, :key)"
            " ON CONFLICT (tenant_id, user_id, kind, key) DO NOTHING RETURNING id"
        ),
        {"t": tenant_id, "u": user_id, "k": kind.value, "key": key},
    )
    return inserted is not None


# -- digests ----------------------------------------------------------------------------------------

# Unread high and critical items a user may still read: no project, or a project on which one of the
# user's unexpired role assignments (tenant-wide or scoped to it) grants opportunity:read.
_DIGEST_ITEMS = """
SELECT n.id, n.title, n.impact_level, n.created_at
  FROM notifications n
 WHERE n.user_id = :u AND n.read_at IS NULL AND n.impact_level IN ('high', 'critical')
   AND (n.opportunity_project_id IS NULL OR EXISTS (
        SELECT 1 FROM user_roles ur JOIN roles r ON r.id = ur.role_id
         WHERE ur.user_id = n.user_id AND (ur.expires_at IS NULL OR ur.expires_at > :now)
           AND (ur.opportunity_project_id IS NULL OR ur.opportunity_project_id = n.opportunity_project_id)
           AND r.permissions ? 'opportunity:read'))
 ORDER BY (n.impact_level = 'critical') DESC, n.created_at DESC, n.id
"""


async def _digest_users(engine: AsyncEngine, chain: AuditChain, tenant_id: uuid.UUID,
                        meta: RequestMeta | None) -> list[Any]:
    async with system_unit(engine, chain, tenant_id, process=PROCESS, meta=meta) as uow:
        return list(
            (
                await uow.connection.execute(
                    text(
                        """
                        SELECT u.id, u.email, u.first_name
                          FROM users u
                          LEFT JOIN notification_preferences np ON np.user_id = u.id
                         WHERE u.is_active AND NOT u.is_system AND coalesce(np.digest_enabled, true)
                           AND EXISTS (SELECT 1 FROM notifications n WHERE n.user_id = u.id AND n.read_at IS NULL
                                         AND n.impact_level IN ('high', 'critical'))
                         ORDER BY u.id
                        """
                    )
                )
            ).all()
        )


def digest_message(first_name: str | None, items: Sequence[Any], total: int, public_url: str) -> tuple[str, str]:
    """The digest's subject and body: titles, impact levels and links, nothing else."""
    subject = f"GWM CRM: {total} unread high and critical notification{'s' if total != 1 else ''}"
    lines = [f"Hello {first_name or ''},".replace(" ,", ","), "", "Unread items of your GWM CRM inbox:", ""]
    for item in items:
        lines.append(f"- [{item.impact_level.upper()}] {item.title}")
        lines.append(f"  {link(public_url, item.id)}")
    if total > len(items):
        lines.append(f"... and {total - len(items)} more.")
    lines += ["", "You can turn this daily email off in your notification preference."]
    return subject, "\n".join(lines) + "\n"


async def send_digests(
    engine: AsyncEngine,
    chain: AuditChain,
    tenant_id: uuid.UUID,
    *,
    now: dt.datetime,
    meta: RequestMeta | None,
    mailer: Mailer,
    public_url: str,
) -> int:
    """Send today's (UTC) digest to each user who has one due and has not had it; how many were sent."""
    key = now.astimezone(dt.UTC).date().isoformat()
    sent = 0
    for user in await _digest_users(engine, chain, tenant_id, meta):
        if not valid_address(user.email):
            continue
        try:
            async with system_unit(engine, chain, tenant_id, process=PROCESS, meta=meta) as uow:
                conn = uow.connection
                if not await _claim(conn, tenant_id, user.id, SendKind.DIGEST, key):
                    continue
                items = list((await conn.execute(text(_DIGEST_ITEMS), {"u": user.id, "now": now})).all())
                if not items:
                    await uow.rollback()  # nothing to say: no record, so a later run today may still send
                    continue
                subject, body = digest_message(user.first_name, items[:DIGEST_ITEMS], len(items), public_url)
                await conn.execute(
                    text("UPDATE notification_sends SET item_count = :n"
                         " WHERE tenant_id = :t AND user_id = :u AND kind = 'digest' AND key = :key"),
                    {"n": len(items), "t": tenant_id, "u": user.id, "key": key},
                )
                await mailer.send(user.email, subject, body)  # fails: the record rolls back with it
                sent += 1
        except MailerError:
            _log.warning("digest for user %s of tenant %s not delivered; the next run tries again", user.id, tenant_id)
    return sent
