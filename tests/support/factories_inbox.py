"""Matrix factories of the inbox's mutations (schema/notification_mutations.py): all self-service.

`notificationMarkRead` names an item: another user's is answered as missing and audited (the
generic self-service denied test). `notificationMarkAllRead` and `notificationPreferenceUpdate` name
nothing: whoever calls them acts on their own inbox only (custom denied tests), and the cross-tenant
test shows the call lands in the caller's tenant.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.mutation_matrix import Case, MatrixContext, matrix


async def _notification(ctx: MatrixContext, user_id: uuid.UUID, *, title: str = "Matrix item") -> uuid.UUID:
    row_id = uuid.uuid4()
    await ctx.execute(
        "INSERT INTO notifications (id, tenant_id, user_id, kind, impact_level, title, entity_type, entity_id)"
        " VALUES (:i, :t, :u, 'activity_assigned', 'high', :title, 'activity', gen_random_uuid())",
        i=row_id, u=user_id, title=title,
    )
    return row_id


async def _unread(ctx: MatrixContext, user_id: uuid.UUID) -> int:
    row = await ctx.one("SELECT count(*) AS n FROM notifications WHERE user_id = :u AND read_at IS NULL", u=user_id)
    return int(row.n)


@matrix("notificationMarkRead", kind="self-service", table="notifications", entity_type="notification",
        action="notification.read", permission=None, denied_role="Viewer", history=None, actor_roles=("Viewer",))
async def notification_mark_read(ctx: MatrixContext) -> Case:
    """One unread item of the subject's inbox (another user may not mark it)."""
    assert ctx.subject is not None
    row_id = await _notification(ctx, ctx.subject.id)

    async def read(stored: Any, payload: dict[str, Any]) -> None:
        assert stored.read_at is not None and payload["notification"]["rowId"] == str(row_id)

    return Case(ctx.args(row_id), entity_id=row_id, verify=read, owner=ctx.subject)


async def _mark_all_denied(ctx: MatrixContext) -> None:
    """The mutation names no user: another user's call marks its own items only."""
    subject = await ctx.sign_in(await ctx.user("Viewer"))
    await _notification(ctx, subject.id)
    other = await ctx.sign_in(await ctx.user("Viewer"))
    await _notification(ctx, other.id)
    payload = await ctx.run(other, "notificationMarkAllRead", {"input": {}})
    assert payload["markedCount"] == 1
    assert await _unread(ctx, subject.id) == 1 and await _unread(ctx, other.id) == 0
    (log,) = await ctx.all("SELECT user_id, entity_id FROM audit_logs WHERE tenant_id = :t"
                           " AND action_type = 'notification.all_read' AND user_id = :u", u=other.id)
    assert log.entity_id == other.id
    assert await ctx.all("SELECT 1 FROM audit_logs WHERE tenant_id = :t AND action_type = 'notification.all_read'"
                         " AND entity_id = :s", s=subject.id) == []


@matrix("notificationMarkAllRead", kind="self-service", table="users", entity_type="notification_inbox",
        action="notification.all_read", permission=None, denied_role="Viewer", history=None,
        actor_roles=("Viewer",), cross_tenant="own_tenant", denied=_mark_all_denied)
async def notification_mark_all_read(ctx: MatrixContext) -> Case:
    """The subject's inbox with two unread items (the audit row names the subject's inbox: its user id)."""
    assert ctx.subject is not None
    if ctx.subject.user.tenant.id == ctx.tenant.id:
        for _ in range(2):
            await _notification(ctx, ctx.subject.id)

    async def all_read(stored: Any, payload: dict[str, Any]) -> None:
        assert await _unread(ctx, ctx.subject.id if ctx.subject else uuid.uuid4()) == 0
        assert payload["markedCount"] == 2

    return Case(ctx.args(), entity_id=ctx.subject.id, verify=all_read, owner=ctx.subject)


async def _preference_denied(ctx: MatrixContext) -> None:
    """The mutation names no user: another user's call sets its own preference only."""
    subject = await ctx.sign_in(await ctx.user("Viewer"))
    await ctx.run(subject, "notificationPreferenceUpdate", {"input": {"minImpactLevel": "CRITICAL"}})
    other = await ctx.sign_in(await ctx.user("Viewer"))
    await ctx.run(other, "notificationPreferenceUpdate", {"input": {"minImpactLevel": "LOW", "digestEnabled": False}})
    rows = {r.user_id: r for r in await ctx.all(
        "SELECT user_id, min_impact_level, digest_enabled FROM notification_preferences WHERE user_id IN (:s, :o)",
        s=subject.id, o=other.id)}
    assert (rows[subject.id].min_impact_level, rows[subject.id].digest_enabled) == ("critical", True)
    assert (rows[other.id].min_impact_level, rows[other.id].digest_enabled) == ("low", False)


@matrix("notificationPreferenceUpdate", kind="self-service", table="notification_preferences",
        entity_type="notification_preference", action="notification.preferences.changed", permission=None,
        denied_role="Viewer", history=None, actor_roles=("Viewer",), cross_tenant="own_tenant",
        denied=_preference_denied)
async def notification_preference_update(ctx: MatrixContext) -> Case:
    """The subject raises its threshold and turns the digest off (its row, with the defaults, made by a
    first call that changes nothing and so writes no event)."""
    assert ctx.subject is not None
    first = await ctx.run(ctx.subject, "notificationPreferenceUpdate", {"input": {"digestEnabled": True}})
    row_id = uuid.UUID(first["notificationPreference"]["rowId"])

    async def changed(stored: Any, payload: dict[str, Any]) -> None:
        assert (stored.min_impact_level, stored.digest_enabled) == ("high", False)
        assert payload["notificationPreference"]["rowId"] == str(row_id)

    return Case(ctx.args(minImpactLevel="HIGH", digestEnabled=False), entity_id=row_id, verify=changed,
                owner=ctx.subject)
