"""Closed opportunity projects: what a project in an outcome status refuses.

A project whose `project_status` is an outcome (won, lost, no_bid, cancelled_by_government,
withdrawn) is closed: the pursuit is over, its record is evidence. A closed project refuses

- an update of any field but `project_status` (a reopening, to active or on_hold, may carry
  other fields along; a correction from one outcome to another carries none);
- creating, changing or deleting its field overrides;
- anything new about it: capture plans, contact links, activities, proposals (each write calls
  `ensure_open` before it writes).

It still takes being archived and restored (a restored closed project stays closed), and the rows
it already has stay readable. docs/api/opportunities.md states the same for clients.

`ensure_open` reads the project FOR SHARE: a status change (an UPDATE, FOR NO KEY UPDATE) waits
for the writes that saw the project open, and a write arriving after a closing reads the closed
status (READ COMMITTED re-reads a row whose lock it waited for), so no new row slips in under a
project that closed meanwhile. Archiving waits likewise. Foreign-key checks (FOR KEY SHARE) of
other inserts are not blocked.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from models import OpportunityProject
from models.enums import ProjectStatus
from models.errors import Invalid, NotFound
from models.unit_of_work import UnitOfWork

__all__ = ["CLOSED_STATUSES", "OPEN_STATUSES", "ProjectClosed", "ensure_open", "is_closed", "refuse_closed_update"]

#: Outcome statuses: a project in one of them is closed.
CLOSED_STATUSES: frozenset[str] = frozenset(
    s.value
    for s in (
        ProjectStatus.WON,
        ProjectStatus.LOST,
        ProjectStatus.NO_BID,
        ProjectStatus.CANCELLED_BY_GOVERNMENT,
        ProjectStatus.WITHDRAWN,
    )
)
#: The statuses of a project still being pursued (a closed project is reopened to one of them).
OPEN_STATUSES: frozenset[str] = frozenset(s.value for s in ProjectStatus) - CLOSED_STATUSES


class ProjectClosed(Invalid):
    """VALIDATION: the project is closed (or archived) and refuses the write."""


def is_closed(status: Any) -> bool:
    """Whether `status` (a ProjectStatus or its value) is an outcome status."""
    return (status.value if isinstance(status, ProjectStatus) else status) in CLOSED_STATUSES


def _words(status: str) -> str:
    return status.replace("_", " ")


async def ensure_open(
    uow: UnitOfWork, project_id: uuid.UUID, *, field: str = "opportunity_project_id", what: str = "rows"
) -> OpportunityProject:
    """The project `project_id`, read FOR SHARE, if it is open: neither archived nor closed.

    NotFound (on `field`) when it does not exist for this tenant; ProjectClosed (VALIDATION, on
    `field`) when it is archived or in an outcome status. `what` names what the caller was about
    to add, e.g. "contact links" ("The opportunity project is closed (won): it takes no new
    contact links ...").
    """
    stmt = (
        select(OpportunityProject)
        .where(OpportunityProject.id == project_id, OpportunityProject.tenant_id == uow.tenant_id)
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    )
    project = (await uow.session.execute(stmt)).scalar_one_or_none()
    if project is None:
        raise NotFound("There is no opportunity project with this id.", field=field)
    if project.archived_at is not None:
        raise ProjectClosed(
            f"The opportunity project is archived: it takes no new {what}; restore it first.", field=field
        )
    if is_closed(project.project_status):
        raise ProjectClosed(
            f"The opportunity project is closed ({_words(project.project_status)}): it takes no new {what}; "
            "reopen it first (project status active or on hold).",
            field=field,
        )
    return project


def refuse_closed_update(project: OpportunityProject, changes: dict[str, Any], *, field: str = "id") -> None:
    """ProjectClosed unless `changes` may be made to `project` as it is now.

    An open project takes any change. A closed one takes a change of `project_status` only: to an
    open status (a reopening, which may carry other fields along) or to another outcome (a
    correction, alone). The field named is the first one refused (`project_status` when no status
    is given).
    """
    if not is_closed(project.project_status):
        return
    status = changes.get("project_status")
    status = status.value if isinstance(status, ProjectStatus) else status
    closed = _words(project.project_status)
    if status is None:
        others = sorted(changes)
        raise ProjectClosed(
            f"The opportunity project is closed ({closed}): only its status can change; reopen it first "
            "(project status active or on hold).",
            field=others[0] if others else field,
        )
    if status in OPEN_STATUSES:
        return
    others = sorted(name for name in changes if name != "project_status")
    if others:
        raise ProjectClosed(
            f"The opportunity project is closed ({closed}): correcting its outcome changes its status only; "
            "reopen it to change other fields.",
            field=others[0],
        )
