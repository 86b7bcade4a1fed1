"""Opportunity projects, their overrides and contact links; effective values; the pipeline summary.

`OpportunityProject.effective` gives each overridable field's value with its source (an active
override beats the current external version, which beats the project's own column; the rule is
in resolvers/opportunities/effective.py). `OpportunitiesQuery` holds the root list
`opportunityProjects` and `pipelineSummary`; both hide archived projects unless the filter asks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import importlib
import uuid
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Self

import strawberry
from sqlalchemy import Table
from strawberry import relay

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import Activity as ActivityModel
from models import ApiIntegrationLog as ApiIntegrationLogModel
from models import CapturePlan as CapturePlanModel
from models import Contact as ContactModel
from models import ExternalDataChange as ExternalDataChangeModel
from models import ExternalOpportunityData as ExternalOpportunityDataModel
from models import ExternalOpportunitySource as ExternalOpportunitySourceModel
from models import OpportunityProject as ProjectModel
from models import OpportunityProjectContact as ProjectContactModel
from models import OpportunityProjectOverride as OverrideModel
from models import PollingConfiguration as PollingConfigurationModel
from models import Proposal as ProposalModel
from models import SavedSearchCandidate as SavedSearchCandidateModel
from models import User as UserModel
from models import UserRole as UserRoleModel
from models.enums import EntityType, PipelineStage, Priority, ProjectStatus, SyncStatus
from resolvers.common.filters import FilterError
from resolvers.opportunities import queries
from resolvers.opportunities.effective import Effective, ValueSource, effective_values
from resolvers.opportunities.loaders import active_overrides_by_project, current_external_data_by_project
from resolvers.sync.loaders import unacknowledged_changes_by_project
from schema.context import Info
from schema.entities import history
from schema.enums import describe_values
from schema.fields import enum_column
from schema.filters import DateTimeFilter, DecimalFilter, EnumFilter, StringFilter, UUIDFilter
from schema.node import EntityNode, TenantOwned
from schema.pagination import OrderDirection
from schema.permissions import requires
from schema.relations import bad_input, refuse_unreadable_columns, root_list, to_many, to_one
from schema.scalars import JSON

if TYPE_CHECKING:
    from schema.external_data import ExternalOpportunityData

__all__ = [
    "EffectiveDate",
    "EffectiveDateTime",
    "EffectiveDecimal",
    "EffectiveString",
    "OpportunitiesQuery",
    "OpportunityProject",
    "OpportunityProjectContact",
    "OpportunityProjectEffectiveValues",
    "OpportunityProjectFilter",
    "OpportunityProjectOrder",
    "OpportunityProjectOrderField",
    "OpportunityProjectOverride",
    "PipelineStageSummary",
]


def _t(model: Any) -> Table:
    table: Table = model.__table__
    return table


_PROJECTS = _t(ProjectModel)
_OVERRIDES = _t(OverrideModel)
_PROJECT_CONTACTS = _t(ProjectContactModel)
_USERS = _t(UserModel)

USER = ("User", "schema.identity")
PROJECT = ("OpportunityProject", "schema.opportunities")

# The value sets of the project's columns, as GraphQL enums (docs/enums.md has their meanings).
strawberry.enum(
    ValueSource,
    name="EffectiveSource",
    description="Where an effective value comes from: an active override, the current external version, "
    "or the project's own column.",
)
describe_values(
    ValueSource,
    {
        "OVERRIDE": "An active override of the project (`OpportunityProjectOverride`) sets it.",
        "EXTERNAL": "The current version of the project's external data (as the source published it).",
        "LOCAL": "The project's own column (no active override and no external value).",
    },
)

ExternalOpportunityDataType = Annotated["ExternalOpportunityData", strawberry.lazy("schema.external_data")]


# -- effective values ---------------------------------------------------------------------------------


_SOURCE = "Where the value comes from: an active override, the current external version, or the project's column."


@strawberry.type(description="A text field's effective value and its source.")
class EffectiveString:
    value: str | None = strawberry.field(description="Null only when an override sets no readable value.")
    source: ValueSource = strawberry.field(description=_SOURCE)


@strawberry.type(description="A decimal field's effective value and its source.")
class EffectiveDecimal:
    value: Decimal | None = strawberry.field(description="Null only when an override sets no readable value.")
    source: ValueSource = strawberry.field(description=_SOURCE)


@strawberry.type(description="A date field's effective value and its source.")
class EffectiveDate:
    value: datetime.date | None = strawberry.field(
        description="Null only when an override sets no readable value."
    )
    source: ValueSource = strawberry.field(description=_SOURCE)


@strawberry.type(description="A date-time field's effective value and its source.")
class EffectiveDateTime:
    value: datetime.datetime | None = strawberry.field(
        description="Null only when an override sets no readable value."
    )
    source: ValueSource = strawberry.field(description=_SOURCE)


def _wrap(cls: Any, effective: Effective | None) -> Any:
    return None if effective is None else cls(value=effective.value, source=effective.source)


@strawberry.type(
    description="The values in force for the overridable fields: an active override beats the current "
    "external version, which beats the project's own column (title and description only). A field is "
    "null when no source holds a value; an override whose JSON cannot be read as the field's type gives "
    "value null with source OVERRIDE."
)
class OpportunityProjectEffectiveValues:
    title: EffectiveString | None = strawberry.field(description="The opportunity's title.")
    description: EffectiveString | None = strawberry.field(description="The opportunity's description (plain text).")
    solicitation_status: EffectiveString | None = strawberry.field(
        description="The notice's status at the source, e.g. active, archived (free text)."
    )
    set_aside_type: EffectiveString | None = strawberry.field(
        description="The small-business set-aside as the source codes it, e.g. SBA, WOSB, or NONE for full and open."
    )
    naics_codes: EffectiveString | None = strawberry.field(
        description="The NAICS industry code(s) of the requirement, as the source lists them."
    )
    estimated_value_min: EffectiveDecimal | None = strawberry.field(
        description="Low end of the estimated contract value, in US dollars."
    )
    estimated_value_max: EffectiveDecimal | None = strawberry.field(
        description="High end of the estimated contract value, in US dollars (what the pipeline summary adds up)."
    )
    posting_date: EffectiveDate | None = strawberry.field(description="When the notice was posted at the source.")
    response_due_date: EffectiveDateTime | None = strawberry.field(
        description="When proposals or responses are due (the deadline that drives the schedule)."
    )
    place_of_performance: EffectiveString | None = strawberry.field(
        description="Where the work is done, as the source states it."
    )

    @classmethod
    def build(cls, values: dict[str, Effective | None]) -> Self:
        types: dict[str, Any] = {
            "estimated_value_min": EffectiveDecimal,
            "estimated_value_max": EffectiveDecimal,
            "posting_date": EffectiveDate,
            "response_due_date": EffectiveDateTime,
        }
        return cls(**{name: _wrap(types.get(name, EffectiveString), value) for name, value in values.items()})


# -- entity types -------------------------------------------------------------------------------------


def _document_list(fk: str, *, description: str) -> Any:
    from schema.documents import document_list

    return document_list(fk, description=description)


def _document_associations_of(entity_type: EntityType) -> Any:
    from schema.documents import document_associations_of

    return document_associations_of(entity_type)


@strawberry.type(description="An opportunity the tenant has decided to pursue.")
class OpportunityProject(EntityNode, TenantOwned, relay.Node):
    _table = _PROJECTS
    _descriptions = {
        "project_name": "The tenant's working name for the pursuit.",
        "internal_reference_number": "The tenant's own reference for the pursuit (e.g. a bid number in its finance "
        "system).",
        "external_opportunity_url": "Link to the opportunity at its source (e.g. the SAM.gov notice).",
        "solicitation_number": "The government's solicitation number (e.g. W912DY-25-R-0042), as synced from the "
        "source.",
        "agency_name": "The buying agency, as synced from the source.",
        "contracting_office": "The contracting office within the agency, as synced from the source.",
        "project_status": "Whether and how the pursuit goes on (active, won, lost, no bid...).",
        "pipeline_stage": "Where the pursuit is in the capture lifecycle (PHASE_0 identified to PHASE_6 "
        "post-submittal).",
        "priority_level": "How urgent the pursuit is for the tenant.",
        "strategic_value_score": "The capture team's rating of how much a win matters beyond its value, 0 to 100.",
        "pursuit_health_score": "The capture team's rating of how well the pursuit is going, 0 to 100.",
        "assigned_team_members": "The capture team beyond the two managers: a JSON array of user rowIds.",
        "last_synced_at": "When the project was last refreshed from its external source.",
        "sync_status": "The state of the last refresh from the external source.",
        "sync_error_message": "Why the last refresh failed (with syncStatus ERROR).",
        "version_hash": "SHA-256 of the current external version's raw data: a new hash means the source changed it.",
        "capture_manager": "The capture manager who owns the pursuit.",
        "proposal_manager": "The proposal manager who runs the proposal.",
    }

    row_id: uuid.UUID
    project_name: str
    internal_reference_number: str | None
    external_opportunity_id: str = strawberry.field(
        description="The opportunity's id at its external source."
    )
    external_opportunity_url: str | None
    solicitation_number: str | None
    agency_name: str | None
    contracting_office: str | None
    title: str | None = strawberry.field(
        description="The project's own column; see `effective` for the value in force."
    )
    description: str | None = strawberry.field(
        description="The project's own column; see `effective` for the value in force."
    )
    project_status = enum_column(ProjectStatus, _PROJECTS.c.project_status)
    pipeline_stage = enum_column(PipelineStage, _PROJECTS.c.pipeline_stage)
    priority_level = enum_column(Priority, _PROJECTS.c.priority_level)
    win_probability_score: Decimal | None = strawberry.field(description="Pwin, 0 to 100.")
    strategic_value_score: Decimal | None
    pursuit_health_score: Decimal | None
    assigned_team_members: JSON
    last_synced_at: datetime.datetime | None
    sync_status = enum_column(SyncStatus, _PROJECTS.c.sync_status)
    sync_error_message: str | None
    version_hash: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    archived_at: datetime.datetime | None = strawberry.field(
        description="Set when archived: archived projects are kept, and hidden from default lists."
    )

    external_source = to_one(
        ("ExternalOpportunitySource", "schema.external_data"),
        _t(ExternalOpportunitySourceModel),
        "external_source_id",
        description="Where the opportunity comes from (the tenant's manual source for "
        "projects entered by hand).",
    )
    capture_manager = to_one(USER, _USERS, "assigned_capture_manager")
    proposal_manager = to_one(USER, _USERS, "assigned_proposal_manager")
    created_by = to_one(USER, _USERS, "created_by")
    archived_by = to_one(USER, _USERS, "archived_by")

    external_opportunity_data = to_many(
        ("ExternalOpportunityData", "schema.external_data"),
        _t(ExternalOpportunityDataModel),
        "opportunity_project_id",
        order=(("data_snapshot_timestamp", True), ("version_number", True)),
        description="Every version received from the source, newest first (snapshot time, then version "
        "number).",
    )
    overrides = to_many(
        ("OpportunityProjectOverride", "schema.opportunities"),
        _OVERRIDES,
        "opportunity_project_id",
        order=(("field_name", False),),
        description="Local overrides, active or not, by field name.",
    )
    contacts = to_many(
        ("OpportunityProjectContact", "schema.opportunities"),
        _PROJECT_CONTACTS,
        "opportunity_project_id",
        order=(("created_at", False),),
        description="Links to the project's contacts, in the order they were made.",
    )
    documents = _document_list(
        "opportunity_project_id", description="Documents filed under the project (deleted ones left out), newest first."
    )
    document_associations = _document_associations_of(EntityType.OPPORTUNITY_PROJECT)
    activities = to_many(
        ("Activity", "schema.activities"),
        _t(ActivityModel),
        "entity_id",
        order=(("activity_date", True), ("created_at", True)),
        where=lambda t: [t.c.entity_type == EntityType.OPPORTUNITY_PROJECT.value],
        where_key=f"entity_type={EntityType.OPPORTUNITY_PROJECT.value}",
        description="Activities about the project, latest activity date first (undated ones first, "
        "then by creation, newest first).",
    )
    capture_plans = to_many(
        ("CapturePlan", "schema.capture"),
        _t(CapturePlanModel),
        "opportunity_project_id",
        order=(("created_at", True),),
        description="Capture plans, newest first.",
    )
    proposals = to_many(
        ("Proposal", "schema.capture"),
        _t(ProposalModel),
        "opportunity_project_id",
        order=(("created_at", True),),
        description="Proposals, newest first.",
    )
    polling_configurations = to_many(
        ("PollingConfiguration", "schema.external_data"),
        _t(PollingConfigurationModel),
        "opportunity_project_id",
        order=(("created_at", False),),
        description="Polling set-ups, oldest first.",
    )
    external_data_changes = to_many(
        ("ExternalDataChange", "schema.external_data"),
        _t(ExternalDataChangeModel),
        "opportunity_project_id",
        order=(("change_timestamp", True),),
        description="Changes detected at the source, newest first.",
    )
    api_integration_logs = to_many(
        ("ApiIntegrationLog", "schema.external_data"),
        _t(ApiIntegrationLogModel),
        "opportunity_project_id",
        order=(("api_call_timestamp", True),),
        description="Calls made to the source for this project, newest first.",
    )
    saved_search_candidates = to_many(
        ("SavedSearchCandidate", "schema.sync"),
        _t(SavedSearchCandidateModel),
        "opportunity_project_id",
        order=(("decided_at", True),),
        description="The saved-search candidates this project was tracked from (or marked tracked by), latest "
        "first.",
    )
    user_roles = to_many(
        ("UserRole", "schema.identity"),
        _t(UserRoleModel),
        "opportunity_project_id",
        order=(("assigned_at", False),),
        description="Roles granted on this project only, oldest grant first.",
    )
    history = history(EntityType.OPPORTUNITY_PROJECT)

    @strawberry.field(
        description="The current version from the external source (is_current_version; the newest if "
        "several are marked current); null when none has been received."
    )
    async def current_external_data(self, info: Info) -> ExternalOpportunityDataType | None:
        row = await current_external_data_by_project(info.context.loaders).load(self.row_id)
        cls = importlib.import_module("schema.external_data").ExternalOpportunityData
        return cls.from_row(row)  # type: ignore[no-any-return]

    @strawberry.field(
        description="How many detected external data changes of HIGH or CRITICAL impact on this project nobody "
        "has acknowledged yet (only changes the caller may read count: 0 without external_data:read)."
    )
    async def unacknowledged_high_impact_change_count(self, info: Info) -> int:
        return await unacknowledged_changes_by_project(info.context.loaders).load(self.row_id)

    @strawberry.field(description="The values in force for the overridable fields, each with its source.")
    async def effective(self, info: Info) -> OpportunityProjectEffectiveValues:
        loaders = info.context.loaders
        current, overrides = await asyncio.gather(
            current_external_data_by_project(loaders).load(self.row_id),
            active_overrides_by_project(loaders).load(self.row_id),
        )
        project = self._row._mapping
        return OpportunityProjectEffectiveValues.build(
            effective_values(project, None if current is None else current._mapping, overrides)
        )


@strawberry.type(description="A local value that wins over the external source's value of one project field.")
class OpportunityProjectOverride(EntityNode, TenantOwned, relay.Node):
    _table = _OVERRIDES
    _descriptions = {
        "override_reason": "Why the tenant overrides the source's value (e.g. the agency's figure was confirmed by "
        "phone).",
        "opportunity_project": "The project whose field is overridden.",
    }

    row_id: uuid.UUID
    field_name: str = strawberry.field(description="The overridden column, e.g. estimated_value_max.")
    original_external_value: JSON | None = strawberry.field(description="The source's value when overridden.")
    override_value: JSON | None = strawberry.field(
        description="The local value (null: the field has no value)."
    )
    override_reason: str | None
    is_active: bool = strawberry.field(description="Only active overrides count in `effective`.")
    created_at: datetime.datetime
    updated_at: datetime.datetime

    opportunity_project = to_one(PROJECT, _PROJECTS, "opportunity_project_id")
    created_by = to_one(USER, _USERS, "created_by")
    history = history(EntityType.OPPORTUNITY_PROJECT_OVERRIDE)


@strawberry.type(
    description="A contact's relationship to a project (e.g. contracting officer, teaming partner)."
)
class OpportunityProjectContact(EntityNode, TenantOwned, relay.Node):
    _table = _PROJECT_CONTACTS
    _descriptions = {
        "relationship_type": "The contact's role on this pursuit (free text), e.g. contracting officer, technical "
        "POC, teaming partner.",
        "influence_level": "How much the contact sways the decision on this pursuit (integer; higher is more).",
        "notes": "What the capture team knows about this contact on this pursuit.",
        "opportunity_project": "The project the contact is linked to.",
        "contact": "The person linked to the project.",
    }

    row_id: uuid.UUID
    relationship_type: str | None
    influence_level: int | None
    notes: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime

    opportunity_project = to_one(PROJECT, _PROJECTS, "opportunity_project_id")
    contact = to_one(("Contact", "schema.crm"), _t(ContactModel), "contact_id")
    created_by = to_one(USER, _USERS, "created_by")
    history = history(EntityType.OPPORTUNITY_PROJECT_CONTACT)


# -- root fields --------------------------------------------------------------------------------------


@strawberry.input(description="Which projects to list; fields set together are ANDed.")
class OpportunityProjectFilter:
    row_id: UUIDFilter | None = None
    project_name: StringFilter | None = None
    title: StringFilter | None = strawberry.field(default=None, description="The project's own title column.")
    project_status: EnumFilter[ProjectStatus] | None = None
    pipeline_stage: EnumFilter[PipelineStage] | None = None
    priority_level: EnumFilter[Priority] | None = None
    assigned_capture_manager: UUIDFilter | None = None
    created_at: DateTimeFilter | None = None
    win_probability_score: DecimalFilter | None = None
    archived_at: DateTimeFilter | None = strawberry.field(
        default=None, description="When archived; setting it also lets archived projects through."
    )
    include_archived: bool | None = strawberry.field(
        default=False,
        description="Archived projects (archivedAt set) are left out unless this is true or archivedAt is "
        "filtered; only archived ones: {archivedAt: {isNull: false}}.",
    )


@strawberry.enum(
    description="Orders of the project list; the id always breaks ties. WIN_PROBABILITY_SCORE needs "
    "opportunity.score:read on every project listed (projects without one sort last ascending)."
)
class OpportunityProjectOrderField(Enum):
    CREATED_AT = "created_at"
    PROJECT_STATUS = "project_status"
    PIPELINE_STAGE = "pipeline_stage"
    WIN_PROBABILITY_SCORE = "win_probability_score"


@strawberry.input
class OpportunityProjectOrder:
    field: OpportunityProjectOrderField
    direction: OrderDirection = OrderDirection.ASC


@strawberry.type(description="One pipeline stage: its projects and their effective estimated value.")
class PipelineStageSummary:
    stage: PipelineStage = strawberry.field(description="The pipeline stage these figures are for.")
    project_count: int = strawberry.field(description="How many of the listed projects are in this stage.")
    total_estimated_value_max: Decimal = strawberry.field(
        description="Sum of the projects' effective estimatedValueMax, rounded to cents (0.00 when none "
        "has one)."
    )
    weighted_estimated_value_max: Decimal | None = strawberry.field(
        description="Sum of effective estimatedValueMax x winProbabilityScore / 100, rounded to cents; a "
        "project without a win probability adds nothing.",
        extensions=[requires(Permission.OPPORTUNITY_SCORE_READ, covering=_PROJECTS)],
    )
    projects_without_value: int = strawberry.field(
        description="Projects with no effective estimatedValueMax (they add nothing to the sums)."
    )
    projects_without_win_probability: int | None = strawberry.field(
        description="Projects with no winProbabilityScore (they add nothing to the weighted sum).",
        extensions=[requires(Permission.OPPORTUNITY_SCORE_READ, covering=_PROJECTS)],
    )



@strawberry.type
class OpportunitiesQuery:
    opportunity_projects = root_list(
        ("OpportunityProject", "schema.opportunities"), _PROJECTS, OpportunityProjectFilter,
        OpportunityProjectOrder, default_order=queries.DEFAULT_ORDER,
        conditions=lambda _table, filter_input: queries.project_conditions(filter_input),
        hidden_unless=("include_archived", "archived_at"),
        description="Opportunity projects, newest first (createdAt descending) unless ordered otherwise; "
        "archived projects only when the filter asks for them.",
    )

    @strawberry.field(
        description="Per pipeline stage (all seven, in stage order): how many projects, the sum of their "
        "effective estimated value max, that sum weighted by win probability, and how many lack a value. "
        "The filter is the project list's (archived projects excluded by default)."
    )
    async def pipeline_summary(
        self,
        info: Info,
        filter: Annotated[
            OpportunityProjectFilter | None,
            strawberry.argument(description="Which projects to count, as on `opportunityProjects`."),
        ] = None,
    ) -> list[PipelineStageSummary]:
        refuse_unreadable_columns(info, _PROJECTS, filter, None)
        try:
            totals = await queries.pipeline_summary(info.context.loaders, filter)
        except FilterError as exc:
            raise bad_input(exc) from None
        return [PipelineStageSummary(**dataclasses.asdict(t)) for t in totals]
