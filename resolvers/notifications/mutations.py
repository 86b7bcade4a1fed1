"""Changing the caller's inbox: mark one item or all read, set the notification preference.

Each runs in a unit of work acting as the caller (auth/audited.py `caller_unit`) and writes its event
row in the same transaction (the tables are not audited by the flush hook: docs/decisions.md
D20-D21). Another user's notification is answered as missing, and the attempt is audited
(`auth.access.denied`), as for another user's session.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert

from auth.audit import AuthEvent, RequestMeta, record_caller_event
from auth.audited import caller_unit
from auth.principal import Principal
from auth.service import AuthService
from models.enums import ImpactLevel, RiskLevel
from models.errors import Conflict, NotFound
from models.notifications import Notification, NotificationPreference

__all__ = ["ALL_READ", "PREFERENCES_CHANGED", "READ", "mark_all_read", "mark_read", "set_preference"]

READ = "notification.read"
ALL_READ = "notification.all_read"
PREFERENCES_CHANGED = "notification.preferences.changed"
#: audit_logs.entity_type of the events: the item, the caller's inbox as a whole, the preference.
INBOX = "notification_inbox"

_N = Notification.__table__
_P = NotificationPreference.__table__


class _NotYours(Exception):
    """The notification belongs to another user."""


def _missing() -> NotFound:
    return NotFound("There is no notification with that id.", field="id")


async def mark_read(service: AuthService, principal: Principal, meta: RequestMeta, notification_id: uuid.UUID) -> Any:
    """Mark one of the caller's notifications read (again: nothing changes); returns its row."""
    try:
        return await _mark_read(service, principal, meta, notification_id)
    except _NotYours:
        await record_caller_event(
            service.writer, principal, AuthEvent.ACCESS_DENIED, meta,
            entity_type="notification", entity_id=notification_id, granted=False, risk=RiskLevel.MEDIUM,
            status=404, description="mutation notificationMarkRead refused: another user's notification",
        )
        raise _missing() from None


async def _mark_read(service: AuthService, principal: Principal, meta: RequestMeta, notification_id: uuid.UUID) -> Any:
    async with caller_unit(service, principal, meta, field="notificationMarkRead") as uow:
        conn = uow.connection
        row = (await conn.execute(select(_N).where(_N.c.id == notification_id).with_for_update())).one_or_none()
        if row is None:
            raise _missing()
        if row.user_id != principal.user_id:
            raise _NotYours
        if row.read_at is not None:
            return row
        row = (
            await conn.execute(
                update(_N).where(_N.c.id == notification_id).values(read_at=func.now()).returning(*_N.c)
            )
        ).one()
        uow.record_event(
            READ, entity_type="notification", entity_id=notification_id, description="marked read",
            details={"kind": row.kind, "impact_level": row.impact_level},
        )
        return row


async def mark_all_read(
    service: AuthService, principal: Principal, meta: RequestMeta, *, before: datetime.datetime | None = None
) -> int:
    """Mark every unread notification of the caller read (those created up to `before`, if given);
    how many were marked. One event row about the caller's inbox when any was."""
    async with caller_unit(service, principal, meta, field="notificationMarkAllRead") as uow:
        stmt = update(_N).where(_N.c.user_id == principal.user_id, _N.c.read_at.is_(None)).values(read_at=func.now())
        if before is not None:
            stmt = stmt.where(_N.c.created_at <= before)
        marked = int((await uow.connection.execute(stmt)).rowcount)
        uow.record_event(
            ALL_READ, entity_type=INBOX, entity_id=principal.user_id,
            description=f"{marked} notification(s) marked read", details={"count": marked},
        )
        return marked


async def set_preference(
    service: AuthService,
    principal: Principal,
    meta: RequestMeta,
    *,
    min_impact_level: ImpactLevel | None,
    digest_enabled: bool | None,
    seen: datetime.datetime | None,
) -> Any:
    """Set the caller's threshold and/or digest choice (the row is created on first use); returns
    the row. `seen`: the updatedAt the client read, checked when given (W12)."""
    async with caller_unit(service, principal, meta, field="notificationPreferenceUpdate") as uow:
        conn = uow.connection
        # The row exists from here on (the defaults), locked: concurrent changes take turns.
        await conn.execute(
            insert(_P).values(tenant_id=principal.tenant_id, user_id=principal.user_id).on_conflict_do_nothing()
        )
        row = (await conn.execute(select(_P).where(_P.c.user_id == principal.user_id).with_for_update())).one()
        if seen is not None and row.updated_at != seen:
            raise Conflict(
                "The preference was changed meanwhile; read it again.", field="updated_at",
                current_updated_at=row.updated_at,
            )
        # W12: updated_at only moves forward: a transaction that began before the row's latest change
        # committed (it waited for that change's lock) is refused rather than stamping an older time.
        now = await conn.scalar(select(func.now()))
        if now is not None and now < row.updated_at:
            raise Conflict("The preference is being changed by another request; try again.", field="updated_at",
                           current_updated_at=row.updated_at)
        values: dict[str, Any] = {}
        if min_impact_level is not None and min_impact_level.value != row.min_impact_level:
            values["min_impact_level"] = min_impact_level.value
        if digest_enabled is not None and digest_enabled != row.digest_enabled:
            values["digest_enabled"] = digest_enabled
        if not values:
            return row
        before = {k: getattr(row, k) for k in values}
        row = (await conn.execute(update(_P).where(_P.c.id == row.id).values(**values).returning(*_P.c))).one()
        uow.record_event(
            PREFERENCES_CHANGED, entity_type="notification_preference", entity_id=row.id,
            description="notification preference changed", details={"before": before, "after": values},
        )
        return row
