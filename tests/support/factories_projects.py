"""Matrix factories of the project and user mutations beyond the first 23: the restore of a project
from the archive, a user's profile update and reactivation."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.support.mutation_matrix import Case, MatrixContext, matrix


@matrix("opportunityProjectRestore", kind="restore", table="opportunity_projects",
        entity_type="opportunity_project", action="RESTORE", permission="opportunity:archive",
        denied_role="BD Analyst", history={"archived_at", "archived_by"}, actor_roles=("Capture Manager",))
async def project_restore(ctx: MatrixContext) -> Case:
    row = await ctx.make("opportunity_projects", archived_at=datetime.now(UTC),
                         archived_by=ctx.tenant.system_user_id)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "reason": "Matrix"}}, entity_id=row.id)
