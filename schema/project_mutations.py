"""Mutations of opportunity projects beyond create, update and archive: the restore from the archive.

    opportunityProjectRestore           opportunity:archive on the project

A restored project counts again under the tenant's `max_opportunity_projects` (PROJECT_LIMIT when
no slot is free, resolvers/opportunities/mutations.py); a closed project comes back closed.
"""

from __future__ import annotations

import datetime
import uuid

import strawberry
from sqlalchemy import Table
from strawberry import relay

from auth.permissions import Permission
from models import OpportunityProject as ProjectModel
from resolvers.opportunities import mutations
from schema.mutation_kit import UPDATED_AT, Entity, mutation, ref_id, ref_row_id, removes, target_project
from schema.opportunities import OpportunityProject

__all__ = ["OpportunityProjectRestoreInput", "ProjectsMutation"]

_PROJECTS: Table = ProjectModel.__table__


@strawberry.input(description="Restore an archived project: it is listed and counted again.")
class OpportunityProjectRestoreInput:
    id: relay.GlobalID | None = ref_id("OpportunityProject")
    row_id: uuid.UUID | None = ref_row_id("OpportunityProject")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description="Recorded in the audit log (255 characters).")


@strawberry.type
class ProjectsMutation:
    opportunity_project_restore = mutation(
        "opportunityProjectRestore",
        input=OpportunityProjectRestoreInput,
        input_description="The archived project and the updatedAt read.",
        permission=Permission.OPPORTUNITY_ARCHIVE,
        project=target_project(_PROJECTS),
        run=removes(mutations.restore_project),
        returns=Entity(OpportunityProject, "opportunity project, restored"),
        description="Restore an archived opportunity project read at updatedAt; it counts again under the "
        "tenant's project limit (PROJECT_LIMIT when it is reached).",
    )
