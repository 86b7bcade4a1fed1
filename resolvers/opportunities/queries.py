"""Root reads of the opportunity domain: the project list and the pipeline summary.

Both take the same filter input. Archived projects are evidence (they are kept, never deleted),
but default lists hide them: `includeArchived: true` (the convention of every archivable list) or
a filter on `archivedAt` lets them through; `archivedAt: {isNull: false}` lists only them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, Select, String, Table, and_, column, func, literal, select, true, values
from sqlalchemy.sql.elements import ColumnElement

from models import ExternalOpportunityData, OpportunityProject, OpportunityProjectOverride
from models.enums import PipelineStage
from resolvers.common.filters import conditions_showing_hidden_on_request
from resolvers.common.loaders import Loaders, readable
from resolvers.common.scope import ReadScope
from resolvers.opportunities.effective import current_version_order, effective_decimal_sql

__all__ = ["DEFAULT_ORDER", "StageTotals", "pipeline_summary", "project_conditions"]

_PROJECTS: Table = OpportunityProject.__table__
_DATA: Table = ExternalOpportunityData.__table__
_OVERRIDES: Table = OpportunityProjectOverride.__table__

# Newest first, served by the index (tenant_id, created_at DESC, id).
DEFAULT_ORDER: tuple[tuple[str, bool], ...] = (("created_at", True),)


def project_conditions(filter_input: Any) -> list[ColumnElement[bool]]:
    """The filter's conditions on opportunity_projects; archived projects left out unless asked for."""
    return conditions_showing_hidden_on_request(
        _PROJECTS, filter_input, flag="include_archived", column="archived_at",
        visible=_PROJECTS.c.archived_at.is_(None),
    )


@dataclass(frozen=True, slots=True)
class StageTotals:
    stage: PipelineStage
    project_count: int
    total_estimated_value_max: Decimal
    weighted_estimated_value_max: Decimal
    projects_without_value: int
    projects_without_win_probability: int


async def pipeline_summary(loaders: Loaders, filter_input: Any) -> list[StageTotals]:
    """Per pipeline stage, in stage order and all of them: counts and sums of effective value max."""
    stmt = pipeline_summary_statement(loaders.scope, project_conditions(filter_input))
    rows = (await loaders.db.execute(stmt)).all()
    return [
        StageTotals(
            stage=PipelineStage(row.stage),
            project_count=int(row.project_count),
            total_estimated_value_max=Decimal(row.total),
            weighted_estimated_value_max=Decimal(row.weighted),
            projects_without_value=int(row.without_value),
            projects_without_win_probability=int(row.without_probability),
        )
        for row in rows
    ]


def pipeline_summary_statement(scope: ReadScope, conditions: Sequence[ColumnElement[bool]]) -> Select[Any]:
    """The pipeline summary as one statement over the projects matching `conditions` (the list's filter).

    The projects the caller may read, each with its current external version (LATERAL, newest current
    first) and its active `estimated_value_max` override (at most one: unique per project and field),
    grouped over the seven stages (a VALUES list, so a stage with no project still gives a row of
    zeros), in stage order (`position`). The compiled read path (schema/compiled/) runs the same
    statement with the filter's values bound per request.
    """
    tenant = scope.tenant_id
    projects, data, override = _PROJECTS, _DATA.alias("cur_data"), _OVERRIDES.alias("ov")
    current = (
        select(data.c.estimated_value_max)
        .where(
            data.c.tenant_id == tenant,
            data.c.opportunity_project_id == projects.c.id,
            data.c.is_current_version,
        )
        .order_by(*current_version_order(data))
        .limit(1)
        .lateral("cur")
    )
    value = effective_decimal_sql(
        override.c.id.is_not(None), override.c.override_value, current.c.estimated_value_max
    )
    joined = projects.outerjoin(current, true()).outerjoin(
        override,
        and_(
            override.c.tenant_id == tenant,
            override.c.opportunity_project_id == projects.c.id,
            override.c.is_active,
            override.c.field_name == "estimated_value_max",
        ),
    )
    matching = (
        readable(
            select(projects.c.pipeline_stage, projects.c.win_probability_score, value.label("value")),
            projects,
            scope,
        )
        .select_from(joined)
        .where(*conditions)
        .subquery("p")
    )
    stages = values(column("stage", String), column("position", Integer), name="stages").data(
        [(stage.value, i) for i, stage in enumerate(PipelineStage)]
    )
    counted = matching.c.pipeline_stage  # NULL on a stage's row of zeros (outer join)
    cents = 2
    stmt = (
        select(
            stages.c.stage,
            func.count(counted).label("project_count"),
            func.round(func.coalesce(func.sum(matching.c.value), 0), cents).label("total"),
            func.round(
                func.coalesce(func.sum(matching.c.value * matching.c.win_probability_score), 0)
                * literal(Decimal("0.01")),
                cents,
            ).label("weighted"),
            func.count(counted).filter(matching.c.value.is_(None)).label("without_value"),
            func.count(counted)
            .filter(matching.c.win_probability_score.is_(None))
            .label("without_probability"),
            stages.c.position,
        )
        .select_from(stages.outerjoin(matching, matching.c.pipeline_stage == stages.c.stage))
        .group_by(stages.c.stage, stages.c.position)
        .order_by(stages.c.position)
    )
    return stmt
