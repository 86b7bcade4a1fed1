"""The pipeline export: the opportunity projects the caller reads, with their main columns.

Rows are those of `opportunityProjects` for the same caller (`readable()` with the caller's
ReadScope: tenant-wide, or the projects of its project-scoped grants), archived projects left out
unless asked for, newest first as that list's default order (created_at DESC, id DESC: the index
(tenant_id, created_at DESC, id)). The score columns are guarded (auth.rules.FIELD_RULES): on a
project where the caller lacks `opportunity.score:read` their cells read `[withheld]`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import Table, select, tuple_

from auth.audit import AuthEvent
from auth.rules import guarded_columns
from models import OpportunityProject
from resolvers.common.loaders import readable
from resolvers.common.trail_guard import WITHHELD
from resolvers.exports.runner import Column, ExportRun
from resolvers.opportunities.queries import project_conditions

__all__ = ["PIPELINE_COLUMNS", "PipelineExport"]

_PROJECTS: Table = OpportunityProject.__table__
_GUARDED = guarded_columns("opportunity_projects")


def _column(header: str, key: str) -> Column:
    return Column(header=header, key=key, permission=_GUARDED.get(key))


PIPELINE_COLUMNS: tuple[Column, ...] = (
    _column("rowId", "id"),
    _column("projectName", "project_name"),
    _column("internalReferenceNumber", "internal_reference_number"),
    _column("solicitationNumber", "solicitation_number"),
    _column("title", "title"),
    _column("agencyName", "agency_name"),
    _column("contractingOffice", "contracting_office"),
    _column("projectStatus", "project_status"),
    _column("pipelineStage", "pipeline_stage"),
    _column("priorityLevel", "priority_level"),
    _column("winProbabilityScore", "win_probability_score"),
    _column("strategicValueScore", "strategic_value_score"),
    _column("pursuitHealthScore", "pursuit_health_score"),
    _column("assignedCaptureManagerId", "assigned_capture_manager"),
    _column("assignedProposalManagerId", "assigned_proposal_manager"),
    _column("externalOpportunityUrl", "external_opportunity_url"),
    _column("syncStatus", "sync_status"),
    _column("lastSyncedAt", "last_synced_at"),
    _column("createdAt", "created_at"),
    _column("updatedAt", "updated_at"),
    _column("archivedAt", "archived_at"),
)


class PipelineExport:
    name = "pipeline"
    event = AuthEvent.EXPORT_PIPELINE
    resource_type = "OpportunityProject"
    columns: Sequence[Column] = PIPELINE_COLUMNS

    def __init__(self, *, include_archived: bool = False) -> None:
        self.include_archived = include_archived

    def parameters(self) -> dict[str, Any]:
        return {"includeArchived": self.include_archived}

    async def batches(self, run: ExportRun) -> AsyncIterator[list[list[Any]]]:
        table, scope = _PROJECTS, run.scope
        key = tuple_(table.c.created_at, table.c.id)
        base = readable(select(*(table.c[c.key] for c in self.columns)), table, scope)
        if not self.include_archived:
            base = base.where(*project_conditions(None))
        last: tuple[Any, Any] | None = None
        while True:
            stmt = base if last is None else base.where(key < tuple_(*last))
            stmt = stmt.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(run.batch_size)
            rows = (await run.loaders.db.execute(stmt)).all()
            if not rows:
                return
            out: list[list[Any]] = []
            for row in rows:
                values: list[Any] = []
                for column in self.columns:
                    if column.permission is not None and not scope.allows_field(column.permission, table, row):
                        run.withhold(column.permission, column.header)
                        values.append(WITHHELD)
                    else:
                        values.append(row._mapping[column.key])
                out.append(values)
            yield out
            if len(rows) < run.batch_size:
                return
            last = (rows[-1].created_at, rows[-1].id)
