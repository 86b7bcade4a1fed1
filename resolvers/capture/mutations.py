"""Writes of capture plans: create, update, archive.

As in resolvers/opportunities/mutations.py: each function runs inside a unit of work and changes
rows only through it (the flush hook audits them); permissions are declared on the GraphQL fields.
Capture plans are evidence in bid protests: they are archived, never deleted. `created_by`,
`updated_by` and `archived_by` are the acting user, set here, never taken from the input.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from models import CapturePlan
from models.errors import Invalid
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import validate
from resolvers.opportunities.closed import ensure_open

__all__ = ["archive_plan", "create_plan", "update_plan"]

_WHAT = "capture plan"


async def create_plan(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """A new capture plan for an open project (neither archived nor closed: resolvers/opportunities/closed.py)."""
    values = {k: v for k, v in values.items() if v is not None}
    await validate(uow, "capture_plans", values)
    project_id = values.pop("opportunity_project_id")
    await ensure_open(uow, project_id, field="opportunity_project_id", what="capture plans")
    plan = CapturePlan(tenant_id=uow.tenant_id, opportunity_project_id=project_id, created_by=uow.actor_id)
    uow.assign(plan, values)
    uow.add(plan)
    await uow.flush()
    return plan.id


async def update_plan(uow: UnitOfWork, plan_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]) -> uuid.UUID:
    """Change the given fields of a plan read at `seen` (its updatedAt)."""
    plan = await uow.lock(CapturePlan, plan_id, updated_at=seen, what=_WHAT)
    if plan.archived_at is not None:
        raise Invalid("The capture plan is archived: it can no longer be changed.", field="id")
    values = dict(changes)
    await validate(uow, "capture_plans", values, row=plan)
    if uow.assign(plan, values):
        uow.assign(plan, {"updated_by": uow.actor_id})
        await uow.flush()
    return plan.id


async def archive_plan(uow: UnitOfWork, plan_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Archive a plan read at `seen`: it is kept, and hidden from default lists."""
    plan = await uow.lock(CapturePlan, plan_id, updated_at=seen, what=_WHAT)
    if plan.archived_at is not None:
        raise Invalid("The capture plan is already archived.", field="id")
    uow.archive(plan)
    await uow.flush()
    return plan.id

