"""Capture plans and proposals: the pursuit's strategy (with its go/no-go decision) and its bid.

Both are archivable: the root lists hide archived rows unless the filter asks for them
(`includeArchived: true`, or a filter on `archivedAt`; resolvers/capture/queries.py); `node(id:)`
and the relation fields always find them.
"""

from __future__ import annotations

import datetime
import uuid
from enum import Enum

import strawberry
from sqlalchemy import Table
from strawberry import relay

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from models import CapturePlan as CapturePlanModel
from models import OpportunityProject as OpportunityProjectModel
from models import Proposal as ProposalModel
from models import User as UserModel
from models.enums import CapturePlanStatus, EntityType, GoNoGoDecision, ProposalStatus
from resolvers.capture import queries
from schema.activities import activities_of
from schema.documents import document_associations_of
from schema.entities import history
from schema.fields import enum_column
from schema.filters import DateTimeFilter, EnumFilter, UUIDFilter
from schema.node import EntityNode, TenantOwned
from schema.pagination import OrderDirection
from schema.relations import root_list, to_one
from schema.scalars import JSON

__all__ = [
    "CapturePlan",
    "CapturePlanFilter",
    "CapturePlanOrder",
    "CapturePlanOrderField",
    "CapturePlanStatus",
    "CaptureQuery",
    "GoNoGoDecision",
    "Proposal",
    "ProposalFilter",
    "ProposalOrder",
    "ProposalOrderField",
    "ProposalStatus",
]

_PLANS: Table = CapturePlanModel.__table__
_PROPOSALS: Table = ProposalModel.__table__
_USERS: Table = UserModel.__table__
_PROJECTS: Table = OpportunityProjectModel.__table__
USER = ("User", "schema.identity")
PROJECT = ("OpportunityProject", "schema.opportunities")

# The value sets as GraphQL enums (strawberry registers the models' own classes; docs/enums.md).


@strawberry.type(description="The capture strategy for an opportunity project, with its go/no-go decision.")
class CapturePlan(EntityNode, TenantOwned, relay.Node):
    _table = _PLANS
    _descriptions = {
        "plan_name": "The plan's title, e.g. the pursuit name and the plan's version.",
        "status": "Where the plan is in its review (draft, in review, approved, superseded).",
        "decision_date": "When the go/no-go decision was made (or is scheduled).",
        "decision_rationale": "Why the team decided to bid or not: the reasoning behind the go/no-go decision.",
        "win_strategy": "How the tenant means to win: discriminators, themes, the customer's hot buttons.",
        "competitive_analysis": "Who else is likely to bid and how the tenant compares (incumbent, strengths, "
        "weaknesses).",
        "external_data_considerations": "What in the source's notice data bears on the plan (amendments, set-aside, "
        "deadlines).",
        "resource_requirements": "The people, partners and budget the capture and proposal need.",
        "timeline": "The capture schedule: milestones and reviews up to submission.",
        "external_deadlines": "The deadlines the source publishes (e.g. questions due, response due), as text.",
        "last_external_sync": "When the external deadlines and data considerations were last checked against the "
        "source.",
        "external_data_impact_notes": "How changes at the source (amendments) affected the plan.",
    }

    row_id: uuid.UUID
    plan_name: str
    status = enum_column(CapturePlanStatus, _PLANS.c.status)
    go_no_go_decision = enum_column(
        GoNoGoDecision, _PLANS.c.go_no_go_decision, description="Null: no decision recorded yet."
    )
    decision_date: datetime.date | None
    decision_rationale: str | None
    win_strategy: str | None
    competitive_analysis: str | None
    external_data_considerations: str | None
    resource_requirements: str | None
    timeline: str | None
    external_deadlines: str | None
    last_external_sync: datetime.datetime | None
    external_data_impact_notes: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    archived_at: datetime.datetime | None = strawberry.field(description="Set while the plan is archived.")

    opportunity_project = to_one(PROJECT, _PROJECTS, "opportunity_project_id")
    created_by = to_one(USER, _USERS, "created_by")
    updated_by = to_one(USER, _USERS, "updated_by")
    archived_by = to_one(USER, _USERS, "archived_by")
    activities = activities_of(EntityType.CAPTURE_PLAN)
    document_associations = document_associations_of(EntityType.CAPTURE_PLAN)
    history = history(EntityType.CAPTURE_PLAN)


@strawberry.type(
    description="A proposal being written for an opportunity project, through its reviews to award."
)
class Proposal(EntityNode, TenantOwned, relay.Node):
    _table = _PROPOSALS
    _descriptions = {
        "proposal_title": "The proposal's title, as on its cover.",
        "status": "Where the proposal is: planning, a colour-team review, submitted, awarded or not.",
        "submission_date": "When the proposal was submitted to the government; null until then.",
        "final_submittal_date": "The deadline for the final submission (the response due date the proposal works "
        "to).",
        "compliance_matrix": "The requirements of sections L and M mapped to proposal volumes, with their status "
        "(JSON).",
        "review_stages": "The colour-team reviews (pink, red, gold...) with their dates and outcomes (JSON).",
        "external_deadline_sync": "When the proposal's deadlines were last checked against the source.",
        "amendment_impact_log": "What each amendment of the solicitation changed for the proposal (JSON array).",
        "proposal_manager": "The proposal manager who runs the proposal.",
    }

    row_id: uuid.UUID
    proposal_title: str
    status = enum_column(ProposalStatus, _PROPOSALS.c.status)
    team_members: JSON = strawberry.field(description="The writing team, as stored (JSON array).")
    submission_date: datetime.datetime | None
    final_submittal_date: datetime.datetime | None
    compliance_matrix: JSON | None
    review_stages: JSON
    external_deadline_sync: datetime.datetime | None
    amendment_impact_log: JSON
    created_at: datetime.datetime
    updated_at: datetime.datetime
    archived_at: datetime.datetime | None = strawberry.field(
        description="Set while the proposal is archived."
    )

    opportunity_project = to_one(PROJECT, _PROJECTS, "opportunity_project_id")
    proposal_manager = to_one(USER, _USERS, "proposal_manager")
    created_by = to_one(USER, _USERS, "created_by")
    updated_by = to_one(USER, _USERS, "updated_by")
    archived_by = to_one(USER, _USERS, "archived_by")
    activities = activities_of(EntityType.PROPOSAL)
    document_associations = document_associations_of(EntityType.PROPOSAL)
    history = history(EntityType.PROPOSAL)


# -- filters and orders ------------------------------------------------------------------------

_ARCHIVED_AT = "When archived; setting it also lets archived rows through."
_INCLUDE_ARCHIVED = (
    "Archived rows (archivedAt set) are left out unless this is true or archivedAt is filtered;"
    " only archived ones: {archivedAt: {isNull: false}}."
)


@strawberry.input
class CapturePlanFilter:
    row_id: UUIDFilter | None = None
    status: EnumFilter[CapturePlanStatus] | None = None
    go_no_go_decision: EnumFilter[GoNoGoDecision] | None = None
    opportunity_project_id: UUIDFilter | None = None
    created_at: DateTimeFilter | None = None
    archived_at: DateTimeFilter | None = strawberry.field(default=None, description=_ARCHIVED_AT)
    include_archived: bool | None = strawberry.field(default=False, description=_INCLUDE_ARCHIVED)


# Only indexed columns: capture_plans has (opportunity_project_id, status) and (tenant_id).
@strawberry.enum
class CapturePlanOrderField(Enum):
    OPPORTUNITY_PROJECT_ID = "opportunity_project_id"
    STATUS = "status"


@strawberry.input
class CapturePlanOrder:
    field: CapturePlanOrderField
    direction: OrderDirection = OrderDirection.ASC


@strawberry.input
class ProposalFilter:
    row_id: UUIDFilter | None = None
    status: EnumFilter[ProposalStatus] | None = None
    opportunity_project_id: UUIDFilter | None = None
    proposal_manager: UUIDFilter | None = None
    created_at: DateTimeFilter | None = None
    archived_at: DateTimeFilter | None = strawberry.field(default=None, description=_ARCHIVED_AT)
    include_archived: bool | None = strawberry.field(default=False, description=_INCLUDE_ARCHIVED)


# Only indexed columns: proposals has (opportunity_project_id, status) and (tenant_id).
@strawberry.enum
class ProposalOrderField(Enum):
    OPPORTUNITY_PROJECT_ID = "opportunity_project_id"
    STATUS = "status"


@strawberry.input
class ProposalOrder:
    field: ProposalOrderField
    direction: OrderDirection = OrderDirection.ASC



@strawberry.type
class CaptureQuery:
    capture_plans = root_list(
        ("CapturePlan", "schema.capture"), _PLANS, CapturePlanFilter, CapturePlanOrder,
        default_order=queries.DEFAULT_ORDER, conditions=queries.archivable_conditions,
        hidden_unless=("include_archived", "archived_at"),
        description="Capture plans, newest first unless ordered otherwise; archived ones only when"
        " the filter asks for them.",
    )
    proposals = root_list(
        ("Proposal", "schema.capture"), _PROPOSALS, ProposalFilter, ProposalOrder,
        default_order=queries.DEFAULT_ORDER, conditions=queries.archivable_conditions,
        hidden_unless=("include_archived", "archived_at"),
        description="Proposals, newest first unless ordered otherwise; archived ones only when"
        " the filter asks for them.",
    )
