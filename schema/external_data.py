"""External opportunity sources, versioned external data, detected changes, polling and API logs.

Secrets: a source's `api_credentials_encrypted` is no field at all. What the poller recorded of
its traffic (`ApiIntegrationLog` headers, payloads, URL and error text) and a source's endpoint
and last error are shown through resolvers/external_data/redaction.py: credential headers and
keys dropped, credential parameters masked (see docs/api/external_data.md).

Value-set columns are GraphQL enums generated from models/enums.py (`schema.fields.enum_column`).
"""

from __future__ import annotations

import datetime
import importlib
import uuid
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry
from sqlalchemy import Table
from strawberry import relay

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import Activity as ActivityModel
from models import ApiIntegrationLog as ApiIntegrationLogModel
from models import ExternalDataChange as ExternalDataChangeModel
from models import ExternalOpportunityData as ExternalOpportunityDataModel
from models import ExternalOpportunitySource as ExternalOpportunitySourceModel
from models import OpportunityProject as OpportunityProjectModel
from models import PollingConfiguration as PollingConfigurationModel
from models import SavedSearch as SavedSearchModel
from models import User as UserModel
from models.enums import ChangeType, ConnectionStatus, EntityType, ImpactLevel, PollingPriority
from resolvers.common.filters import FilterError
from resolvers.common.pagination import PaginationError
from resolvers.external_data import queries
from resolvers.external_data.redaction import redact_headers, redact_json, redact_text
from resolvers.sync.health import call_statistics_by_source, health_of, schedule_by_source
from schema.context import Info
from schema.entities import history
from schema.fields import enum_column
from schema.filters import BooleanFilter, DateTimeFilter, EnumFilter, StringFilter, UUIDFilter
from schema.node import EntityNode, TenantOwned
from schema.pagination import (
    FILTER_DESCRIPTION,
    ORDER_BY_DESCRIPTION,
    After,
    Before,
    Connection,
    First,
    Last,
    OrderDirection,
    describe_list_inputs,
    paged,
)
from schema.permissions import requires
from schema.relations import bad_input, page_args, root_list, to_many, to_one
from schema.scalars import JSON

if TYPE_CHECKING:
    from schema.sync import SourceHealth

SourceHealthType = Annotated["SourceHealth", strawberry.lazy("schema.sync")]

__all__ = [
    "ApiIntegrationLog",
    "ExternalDataChange",
    "ExternalDataChangeFilter",
    "ExternalDataChangeOrder",
    "ExternalDataChangeOrderField",
    "ExternalDataQuery",
    "ExternalOpportunityData",
    "ExternalOpportunitySource",
    "ExternalOpportunitySourceFilter",
    "ExternalOpportunitySourceOrder",
    "ExternalOpportunitySourceOrderField",
    "PollingConfiguration",
]

_SOURCES: Table = ExternalOpportunitySourceModel.__table__
_DATA: Table = ExternalOpportunityDataModel.__table__
_CHANGES: Table = ExternalDataChangeModel.__table__
_POLLING: Table = PollingConfigurationModel.__table__
_LOGS: Table = ApiIntegrationLogModel.__table__
_PROJECTS: Table = OpportunityProjectModel.__table__
_USERS: Table = UserModel.__table__

_MODULE = "schema.external_data"
SOURCE = ("ExternalOpportunitySource", _MODULE)
CHANGE = ("ExternalDataChange", _MODULE)
POLLING = ("PollingConfiguration", _MODULE)
LOG = ("ApiIntegrationLog", _MODULE)
PROJECT = ("OpportunityProject", "schema.opportunities")
USER = ("User", "schema.identity")


def _document_list(fk: str, *, description: str) -> Any:
    from schema.documents import document_list

    return document_list(fk, description=description)


# Shared with change_history.change_impact_level (schema/audit.py): the same description, so the
# import order cannot change the SDL.


@strawberry.type(
    description="An API the tenant pulls opportunities from (SAM.gov...), or its \"Manual entry\" source."
)
class ExternalOpportunitySource(EntityNode, TenantOwned, relay.Node):
    _table = _SOURCES
    _descriptions = {
        "source_name": "The source's name, unique in the tenant, e.g. SAM.gov Opportunities.",
        "api_version": "The version of the source's API the poller speaks, e.g. v2.",
        "rate_limit_per_hour": "Most calls per hour the source allows the tenant; the poller stays under it.",
        "timeout_seconds": "How long the poller waits for one call before giving up, in seconds.",
        "retry_attempts": "How often a failed call is retried before it counts as an error.",
        "is_active": "Whether the source is polled at all.",
        "last_successful_call": "When a call to the source last succeeded.",
        "consecutive_errors": "Failed calls in a row since the last success (0 when healthy).",
        "connection_status": "The source's health as the poller sees it.",
    }

    row_id: uuid.UUID
    source_name: str
    api_version: str
    authentication_type: str = strawberry.field(description="How the poller authenticates (api_key, oauth2).")
    rate_limit_per_hour: int
    timeout_seconds: Decimal
    retry_attempts: int
    is_active: bool
    last_successful_call: datetime.datetime | None
    consecutive_errors: int
    created_at: datetime.datetime
    updated_at: datetime.datetime

    connection_status = enum_column(ConnectionStatus, _SOURCES.c.connection_status)

    @strawberry.field(description="The endpoint URL, with any credential parameter masked.")
    def api_endpoint(self) -> str | None:
        return redact_text(self._row.api_endpoint)

    @strawberry.field(description="The last call's error, with any credential in it masked.")
    def last_error_message(self) -> str | None:
        return redact_text(self._row.last_error_message)

    @strawberry.field(
        description="The source's health for its administrators: connection status, last error, the calls its "
        "API key used and has left today, and when the next poll is due.",
        extensions=[requires(Permission.SOURCE_ADMIN)],
    )
    async def health(self, info: Info) -> SourceHealthType | None:
        loaders = info.context.loaders
        state = await schedule_by_source(loaders).load(self.row_id)
        calls = await call_statistics_by_source(loaders).load(self.row_id)
        cls = importlib.import_module("schema.sync").SourceHealth
        return cls.of(health_of(self._row, state, calls))  # type: ignore[no-any-return]

    opportunity_projects = to_many(
        PROJECT, _PROJECTS, "external_source_id", order=(("created_at", True),),
        description="Projects mirroring an opportunity of this source (archived included), newest first.",
    )
    polling_configurations = to_many(
        POLLING, _POLLING, "external_source_id", order=(("next_poll_timestamp", False),),
        description="Polling schedules of projects on this source, next poll first (unscheduled last).",
    )
    api_integration_logs = to_many(
        LOG, _LOGS, "external_source_id", order=(("api_call_timestamp", True),),
        description="Calls made to this source, newest first.",
    )
    external_data_changes = to_many(
        CHANGE, _CHANGES, "external_source_id", order=(("change_timestamp", True),),
        description="Changes detected in this source's data, newest first.",
    )
    saved_searches = to_many(
        ("SavedSearch", "schema.sync"), SavedSearchModel.__table__, "external_source_id", order=(("name", False),),
        description="Saved searches run on this source (its endpoint and key), by name.",
    )
    created_by = to_one(USER, _USERS, "created_by")
    history = history(EntityType.EXTERNAL_OPPORTUNITY_SOURCE)


@strawberry.type(
    description="One version of a project's opportunity as the source returned it (every version is kept)."
)
class ExternalOpportunityData(EntityNode, TenantOwned, relay.Node):
    _table = _DATA
    _descriptions = {
        "version_number": "The version's number for its project, 1 for the first received.",
        "is_current_version": "This is the version in force (what `effective` values fall back to).",
        "title": "The notice's title at the source.",
        "description": "The notice's description at the source.",
        "opportunity_type": "The notice type (free text), e.g. Sources Sought, Presolicitation, Solicitation, Award "
        "Notice.",
        "set_aside_type": "The small-business set-aside as the source codes it, e.g. SBA, WOSB, or NONE for full "
        "and open.",
        "naics_codes": "The NAICS industry code(s) of the requirement, as the source lists them.",
        "estimated_value_min": "Low end of the estimated contract value, in US dollars.",
        "estimated_value_max": "High end of the estimated contract value, in US dollars.",
        "posting_date": "When the notice was posted at the source.",
        "response_due_date": "When responses are due, as the source states it.",
        "place_of_performance": "Where the work is done, as the source states it.",
        "solicitation_status": "The notice's status at the source (free text), e.g. active, archived, cancelled.",
        "amendment_number": "How many amendments the notice had when this version was taken (0: the original).",
        "change_detected_at": "When the poller found this version different from the previous one.",
        "opportunity_project": "The project this version belongs to.",
    }

    row_id: uuid.UUID
    data_snapshot_timestamp: datetime.datetime = strawberry.field(
        description="When the source returned this version."
    )
    version_number: int
    is_current_version: bool
    title: str | None
    description: str | None
    opportunity_type: str | None
    set_aside_type: str | None
    naics_codes: str | None
    estimated_value_min: Decimal | None
    estimated_value_max: Decimal | None
    posting_date: datetime.date | None
    response_due_date: datetime.datetime | None
    place_of_performance: str | None
    solicitation_status: str | None
    amendment_number: int
    raw_json_data: JSON = strawberry.field(description="The source's record, verbatim.")
    change_detected_at: datetime.datetime | None
    changed_fields: JSON | None = strawberry.field(
        description="Field paths that differ from the previous version."
    )
    created_at: datetime.datetime

    opportunity_project = to_one(PROJECT, _PROJECTS, "opportunity_project_id")
    history = history(EntityType.EXTERNAL_OPPORTUNITY_DATA)


@strawberry.type(
    description="A change the poller detected in a project's opportunity, classified and acknowledgeable."
)
class ExternalDataChange(EntityNode, TenantOwned, relay.Node):
    _table = _CHANGES
    _descriptions = {
        "change_timestamp": "When the change was detected.",
        "changed_fields": "The fields that changed (JSON array of field names).",
        "previous_values": "The changed fields' values before (JSON object by field name).",
        "new_values": "The changed fields' values after (JSON object by field name).",
        "notification_sent": "Whether the project's team was notified of the change.",
        "acknowledgment_notes": "What the acknowledging user noted, e.g. the follow-up decided.",
        "external_change_id": "The source's own id of the change (e.g. the amendment's notice id), where it has one.",
        "change_type": "What the source did to the opportunity.",
        "impact_level": "How much the change matters to the pursuit; HIGH and CRITICAL need acknowledgement.",
        "opportunity_project": "The project whose opportunity changed.",
        "external_source": "The source that reported the change.",
    }

    row_id: uuid.UUID
    change_timestamp: datetime.datetime
    changed_fields: JSON
    previous_values: JSON | None
    new_values: JSON | None
    notification_sent: bool
    acknowledged_at: datetime.datetime | None = strawberry.field(
        description="Null until someone acknowledges the change."
    )
    acknowledgment_notes: str | None
    external_change_id: str | None
    created_at: datetime.datetime

    change_type = enum_column(ChangeType, _CHANGES.c.change_type)
    impact_level = enum_column(ImpactLevel, _CHANGES.c.impact_level)

    opportunity_project = to_one(PROJECT, _PROJECTS, "opportunity_project_id")
    external_source = to_one(SOURCE, _SOURCES, "external_source_id")
    acknowledged_by = to_one(
        USER, _USERS, "acknowledged_by", description="Who acknowledged it (null until then)."
    )
    activities = to_many(
        ("Activity", "schema.activities"), ActivityModel.__table__, "external_change_reference",
        order=(("created_at", True),), description="Activities this change triggered, newest first.",
    )
    documents = _document_list(
        "external_data_change_id",
        description="Document versions of the notice's attachments this change brought (deleted ones left out), "
        "newest first.",
    )
    history = history(EntityType.EXTERNAL_DATA_CHANGE)


@strawberry.type(description="How often and how urgently one project is refreshed from its source.")
class PollingConfiguration(EntityNode, TenantOwned, relay.Node):
    _table = _POLLING
    _descriptions = {
        "polling_frequency_minutes": "How often the project is refreshed from its source, in minutes.",
        "is_active": "Whether the project is polled at all.",
        "last_poll_timestamp": "When the project was last polled.",
        "next_poll_timestamp": "When the next poll is due; null: not scheduled.",
        "consecutive_errors": "Failed polls in a row since the last success.",
        "max_retries": "How often a failed poll is retried before it waits for the next schedule.",
        "backoff_multiplier": "Factor by which the wait between retries grows, e.g. 2.0 doubles it.",
        "average_response_time_ms": "Average time the source took to answer, in milliseconds.",
        "success_rate_percentage": "Share of polls that succeeded, 0 to 100.",
        "priority_level": "Which due polls are served first when the source's quota cannot cover all.",
        "opportunity_project": "The project being polled.",
        "external_source": "The source it is polled from.",
    }

    row_id: uuid.UUID
    polling_frequency_minutes: int
    is_active: bool
    last_poll_timestamp: datetime.datetime | None
    next_poll_timestamp: datetime.datetime | None
    consecutive_errors: int
    max_retries: int
    backoff_multiplier: Decimal
    average_response_time_ms: int | None
    success_rate_percentage: Decimal | None
    created_at: datetime.datetime
    updated_at: datetime.datetime

    priority_level = enum_column(PollingPriority, _POLLING.c.priority_level)

    opportunity_project = to_one(PROJECT, _PROJECTS, "opportunity_project_id")
    external_source = to_one(SOURCE, _SOURCES, "external_source_id")
    created_by = to_one(USER, _USERS, "created_by")
    history = history(EntityType.POLLING_CONFIGURATION)


@strawberry.type(
    description="One call to an external API. Headers, payloads, URL and error text are shown redacted: "
    "credential headers and keys dropped, credential parameters masked as REDACTED."
)
class ApiIntegrationLog(EntityNode, TenantOwned, relay.Node):
    _table = _LOGS
    _descriptions = {
        "api_call_timestamp": "When the call was made.",
        "http_method": "The HTTP method, e.g. GET.",
        "http_status": "The HTTP status of the answer; null when no answer came (timeout, connection error).",
        "processing_time_ms": "How long the call took, in milliseconds.",
        "rate_limit_remaining": "Calls left in the source's rate-limit window, as the answer reported.",
        "rate_limit_reset_at": "When the source's rate-limit window resets, as the answer reported.",
        "success": "Whether the call succeeded.",
        "retry_attempt": "Which attempt this was: 0 for the first, 1 for the first retry...",
        "created_at": "When the log entry was written.",
        "external_source": "The source called.",
    }

    row_id: uuid.UUID
    api_call_timestamp: datetime.datetime
    http_method: str
    http_status: int | None
    processing_time_ms: int | None
    rate_limit_remaining: int | None
    rate_limit_reset_at: datetime.datetime | None
    success: bool
    retry_attempt: int
    created_at: datetime.datetime

    @strawberry.field(description="The URL called, with credential parameters (api_key...) masked.")
    def endpoint_called(self) -> str:
        return redact_text(self._row.endpoint_called) or ""

    @strawberry.field(
        description="Request headers without Authorization, X-Api-Key, cookies and other credential headers; "
        "null when they were not stored as an object or name/value pairs."
    )
    def request_headers(self) -> JSON | None:
        return cast("JSON | None", redact_headers(self._row.request_headers))

    @strawberry.field(description="The request body, without credential-looking keys.")
    def request_payload(self) -> JSON | None:
        return cast("JSON | None", redact_json(self._row.request_payload))

    @strawberry.field(description="Response headers without Set-Cookie and other credential headers.")
    def response_headers(self) -> JSON | None:
        return cast("JSON | None", redact_headers(self._row.response_headers))

    @strawberry.field(description="The response body, without credential-looking keys.")
    def response_payload(self) -> JSON | None:
        return cast("JSON | None", redact_json(self._row.response_payload))

    @strawberry.field(description="The error, with any credential in it masked.")
    def error_message(self) -> str | None:
        return redact_text(self._row.error_message)

    external_source = to_one(SOURCE, _SOURCES, "external_source_id")
    opportunity_project = to_one(
        PROJECT, _PROJECTS, "opportunity_project_id", description="Null for a call not made for one project."
    )
    history = history(EntityType.API_INTEGRATION_LOG)


@strawberry.input
class ExternalOpportunitySourceFilter:
    row_id: UUIDFilter | None = None
    source_name: StringFilter | None = None
    is_active: BooleanFilter | None = None
    connection_status: EnumFilter[ConnectionStatus] | None = None
    authentication_type: StringFilter | None = None
    created_at: DateTimeFilter | None = None


@strawberry.enum
class ExternalOpportunitySourceOrderField(Enum):
    SOURCE_NAME = "source_name"


@strawberry.input
class ExternalOpportunitySourceOrder:
    field: ExternalOpportunitySourceOrderField
    direction: OrderDirection = OrderDirection.ASC


@strawberry.input
class ExternalDataChangeFilter:
    row_id: UUIDFilter | None = None
    impact_level: EnumFilter[ImpactLevel] | None = None
    change_type: EnumFilter[ChangeType] | None = None
    opportunity_project_id: UUIDFilter | None = None
    external_source_id: UUIDFilter | None = None
    acknowledged: bool | None = strawberry.field(
        default=None, description="true: acknowledged (acknowledgedAt is set); false: not acknowledged yet."
    )
    acknowledged_by: UUIDFilter | None = None
    change_timestamp: DateTimeFilter | None = None


@strawberry.enum
class ExternalDataChangeOrderField(Enum):
    CHANGE_TIMESTAMP = "change_timestamp"
    ACKNOWLEDGED_AT = "acknowledged_at"


@strawberry.input
class ExternalDataChangeOrder:
    field: ExternalDataChangeOrderField
    direction: OrderDirection = OrderDirection.ASC


describe_list_inputs("ExternalDataChange", ExternalDataChangeFilter, ExternalDataChangeOrder)


@strawberry.type
class ExternalDataQuery:
    external_opportunity_sources = root_list(
        SOURCE, _SOURCES, ExternalOpportunitySourceFilter, ExternalOpportunitySourceOrder,
        default_order=(("source_name", False),),
        description="The tenant's sources, by name unless ordered otherwise.",
    )

    @strawberry.field(
        description=paged("Detected changes, newest first (changeTimestamp descending) unless ordered otherwise.")
    )
    async def external_data_changes(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
        filter: Annotated[ExternalDataChangeFilter | None, strawberry.argument(description=FILTER_DESCRIPTION)] = None,
        order_by: Annotated[
            list[ExternalDataChangeOrder] | None, strawberry.argument(description=ORDER_BY_DESCRIPTION)
        ] = None,
    ) -> Connection[ExternalDataChange]:
        try:
            return Connection.of(await queries.external_data_changes(
                info.context.loaders, page_args(first, after, last, before), filter, order_by,
                ExternalDataChange.from_row,
            ))
        except (PaginationError, FilterError) as exc:
            raise bad_input(exc) from None
