"""Matrix factories of the project and user mutations beyond the first 23: the restore of a project
from the archive, a user's profile update and reactivation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.support.mutation_matrix import Case, MatrixContext, matrix


@matrix("opportunityProjectRestore", kind="restore", table="opportunity_projects",
        entity_type="opportunity_project", action="RESTORE", permission="opportunity:archive",
        denied_role="BD Analyst", history={"archived_at", "archived_by"}, actor_roles=("Capture Manager",))
async def project_restore(ctx: MatrixContext) -> Case:
    row = await ctx.make("opportunity_projects", archived_at=datetime.now(UTC),
                         archived_by=ctx.tenant.system_user_id)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "reason": "Matrix"}}, entity_id=row.id)


@matrix("userUpdate", kind="self-service", table="users", entity_type="user", action="auth.user.updated",
        permission=None, denied_role="Viewer", history={"title", "phone"}, actor_roles=("Viewer",))
async def user_update(ctx: MatrixContext) -> Case:
    """The subject's own profile (another user without user:admin gets it answered as missing)."""
    assert ctx.subject is not None
    row = await ctx.one("SELECT id, updated_at FROM users WHERE id = :u", u=ctx.subject.id)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "title": "Capture lead",
                           "phone": "+1 555 0100"}}, entity_id=row.id, owner=ctx.subject)


@matrix("userReactivate", kind="action", table="users", entity_type="user", action="auth.user.reactivated",
        permission="user:admin", denied_role="Capture Manager", history={"is_active"},
        actor_roles=("Tenant Admin",))
async def user_reactivate(ctx: MatrixContext) -> Case:
    row = await ctx.make("users", is_active=False)

    async def active(stored: Any, payload: dict[str, Any]) -> None:
        assert stored.is_active is True and payload["user"]["rowId"] == str(row.id)

    return Case({"input": ctx.target(row.id)}, entity_id=row.id, verify=active)
