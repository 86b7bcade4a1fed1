"""The pipeline export: the opportunity projects the caller reads, with their main columns.

Rows are those of `opportunityProjects` for the same caller (`readable()` with the caller's
ReadScope: tenant-wide, or the projects of its project-scoped grants), archived projects left out
unless asked for, newest first as that list's default order (created_at DESC, id DESC: the index
(tenant_id, created_at DESC, id)). `effective.*` columns hold the values in force, as the
project's `effective` field computes them (resolvers/opportunities/effective.py), from the same
loaders, so external data counts only where the caller reads it. The score columns are guarded
(auth.rules.FIELD_RULES): on a project where the caller lacks `opportunity.score:read` their cells
read `[withheld]`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import Table, select, tuple_
from strawberry.utils.str_converters import to_camel_case

from auth.audit import AuthEvent
from auth.rules import guarded_columns
from models import OpportunityProject
from resolvers.common.loaders import readable
from resolvers.common.trail_guard import WITHHELD
from resolvers.exports.runner import Column, ExportRun
from resolvers.opportunities.effective import OVERRIDABLE, effective_values
from resolvers.opportunities.loaders import active_overrides_by_project, current_external_data_by_project
from resolvers.opportunities.queries import project_conditions

__all__ = ["PIPELINE_COLUMNS", "PipelineExport"]

_PROJECTS: Table = OpportunityProject.__table__
_GUARDED = guarded_columns("opportunity_projects")


_EFFECTIVE = "effective."


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
    # The values in force (`effective` over GraphQL: an active override, else the current external
    # version, else the project's own column), for every overridable field but the long description.
    *(
        Column(header=f"effective.{to_camel_case(field.name)}", key=f"{_EFFECTIVE}{field.name}")
        for field in OVERRIDABLE
        if field.name != "description"
    ),
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
        stored = [c.key for c in self.columns if not c.key.startswith(_EFFECTIVE)]
        base = readable(select(*(table.c[k] for k in [*stored, "description"])), table, scope)
        if not self.include_archived:
            base = base.where(*project_conditions(None))
        current_of = current_external_data_by_project(run.loaders)
        overrides_of = active_overrides_by_project(run.loaders)
        last: tuple[Any, Any] | None = None
        while True:
            stmt = base if last is None else base.where(key < tuple_(*last))
            stmt = stmt.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(run.batch_size)
            rows = (await run.loaders.db.execute(stmt)).all()
            if not rows:
                return
            ids = [row.id for row in rows]
            # The same loaders as `OpportunityProject.effective` (one statement each per batch, read
            # under the caller's scope), emptied after each batch so memory holds one batch.
            currents, overrides = await asyncio.gather(current_of.load_many(ids), overrides_of.load_many(ids))
            current_of.clear_all()
            overrides_of.clear_all()
            out: list[list[Any]] = []
            for row, current, override in zip(rows, currents, overrides, strict=True):
                effective = effective_values(row._mapping, None if current is None else current._mapping, override)
                values: list[Any] = []
                for column in self.columns:
                    if column.key.startswith(_EFFECTIVE):
                        value = effective[column.key.removeprefix(_EFFECTIVE)]
                        values.append(None if value is None else value.value)
                    elif column.permission is not None and not scope.allows_field(column.permission, table, row):
                        run.withhold(column.permission, column.header)
                        values.append(WITHHELD)
                    else:
                        values.append(row._mapping[column.key])
                out.append(values)
            yield out
            if len(rows) < run.batch_size:
                return
            last = (rows[-1].created_at, rows[-1].id)
