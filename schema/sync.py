"""Saved searches, their candidates, and the health of an external source (issue 14).

`SavedSearch` is a tenant's standing SAM.gov query; the sync job runs it on its source's key and
lists what it finds as `SavedSearchCandidate`s, one per notice lineage in the tenant, leaving out
lineages a project already tracks. A candidate is dismissed or tracked (it becomes an opportunity
project) with the mutations of schema/sync_mutations.py. Reading both needs `saved_search:read`.

`SourceHealth` is what the poller knows of one source: its connection status and last error, the
calls its API key has used and has left today, and when its next windowed search is due
(`ExternalOpportunitySource.health`, for holders of `source:admin`).
"""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from enum import Enum

import strawberry
from sqlalchemy import Table
from strawberry import relay

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from models import ExternalOpportunitySource as SourceModel
from models import OpportunityProject as ProjectModel
from models import SavedSearch as SavedSearchModel
from models import SavedSearchCandidate as CandidateModel
from models import User as UserModel
from models.enums import CandidateStatus, ConnectionStatus, EntityType
from resolvers.external_data.redaction import redact_text
from resolvers.sync.health import Health
from schema.entities import history
from schema.fields import enum_column
from schema.filters import BooleanFilter, DateFilter, DateTimeFilter, EnumFilter, StringFilter, UUIDFilter
from schema.node import EntityNode, TenantOwned
from schema.pagination import OrderDirection
from schema.relations import root_list, to_many, to_one
from schema.scalars import JSON

__all__ = [
    "SavedSearch",
    "SavedSearchCandidate",
    "SavedSearchCandidateFilter",
    "SavedSearchCandidateOrder",
    "SavedSearchCandidateOrderField",
    "SavedSearchFilter",
    "SavedSearchOrder",
    "SavedSearchOrderField",
    "SourceHealth",
    "SyncQuery",
]

_SEARCHES: Table = SavedSearchModel.__table__
_CANDIDATES: Table = CandidateModel.__table__
_SOURCES: Table = SourceModel.__table__
_PROJECTS: Table = ProjectModel.__table__
_USERS: Table = UserModel.__table__

SEARCH = ("SavedSearch", "schema.sync")
CANDIDATE = ("SavedSearchCandidate", "schema.sync")
SOURCE = ("ExternalOpportunitySource", "schema.external_data")
PROJECT = ("OpportunityProject", "schema.opportunities")
USER = ("User", "schema.identity")


@strawberry.type(
    description="A saved SAM.gov query of the tenant: the sync job runs it on its source and lists what it "
    "finds as candidates."
)
class SavedSearch(EntityNode, TenantOwned, relay.Node):
    _table = _SEARCHES
    _descriptions = {
        "name": "The search's name, unique in the tenant.",
        "description": "What the search is for (free text).",
        "naics_codes": "NAICS codes (or prefixes) a notice must carry one of; empty: any.",
        "set_aside_codes": "SAM.gov set-aside codes (e.g. SBA, 8A, WOSB) a notice must have one of; empty: any.",
        "notice_types": "SAM.gov procurement type codes (o solicitation, p presolicitation, k combined, r sources "
        "sought, s special notice...) a notice must be one of; empty: any.",
        "title_keywords": "Words that must all appear in a notice's title (case-insensitive); empty: any title.",
        "agency": "Text the notice's agency path (department, sub-tier, office; names or codes) must contain, "
        "case-insensitively; null: any agency.",
        "is_active": "Whether the sync job runs the search; an inactive search keeps its candidates.",
        "external_source": "The source searched (its endpoint and API key, and that key's call budget).",
    }

    row_id: uuid.UUID
    name: str
    description: str | None
    naics_codes: list[str]
    set_aside_codes: list[str]
    notice_types: list[str]
    title_keywords: list[str]
    agency: str | None
    is_active: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime

    external_source = to_one(SOURCE, _SOURCES, "external_source_id")
    created_by = to_one(USER, _USERS, "created_by")
    candidates = to_many(
        CANDIDATE, _CANDIDATES, "saved_search_id", order=(("first_seen_at", True),),
        description="The candidates this search found first (whatever became of them), newest first.",
    )
    history = history(EntityType.SAVED_SEARCH)


@strawberry.type(
    description="A notice a saved search found that no project tracks: new until someone dismisses it or "
    "tracks it as an opportunity project. One per notice lineage in the tenant."
)
class SavedSearchCandidate(EntityNode, TenantOwned, relay.Node):
    _table = _CANDIDATES
    _descriptions = {
        "lineage_key": "The notice's lineage: its solicitation number, trimmed and upper-cased (split by agency "
        "where numbers collide), or its first noticeId when it has none. A project tracking it holds it as "
        "externalOpportunityId.",
        "notice_id": "The SAM.gov noticeId of the latest revision seen.",
        "solicitation_number": "The notice's solicitation number, as published.",
        "title": "The notice's title.",
        "agency": "The notice's agency path (department, sub-tier, office).",
        "notice_type": "The notice type, e.g. Solicitation, Sources Sought.",
        "posted_date": "When the latest revision was posted.",
        "response_deadline": "When responses are due, as the latest revision states it.",
        "first_seen_at": "When a saved search first found it.",
        "last_seen_at": "When a saved search last found it.",
        "decided_at": "When it was dismissed or tracked; null while new.",
        "status": "Whether it waits for a decision, was dismissed, or was tracked.",
        "saved_search": "The saved search that found it first; null once that search is deleted.",
        "opportunity_project": "The project it became (when tracked); null otherwise.",
        "decided_by": "Who dismissed or tracked it; null while new or when the sync job marked it tracked.",
    }

    row_id: uuid.UUID
    lineage_key: str
    notice_id: str
    solicitation_number: str | None
    title: str | None
    agency: str | None
    notice_type: str | None
    posted_date: datetime.date | None
    response_deadline: datetime.datetime | None
    raw_json_data: JSON = strawberry.field(description="The notice as SAM.gov returned it, verbatim.")
    first_seen_at: datetime.datetime
    last_seen_at: datetime.datetime
    decided_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime

    status = enum_column(CandidateStatus, _CANDIDATES.c.status)

    saved_search = to_one(SEARCH, _SEARCHES, "saved_search_id")
    opportunity_project = to_one(PROJECT, _PROJECTS, "opportunity_project_id")
    decided_by = to_one(USER, _USERS, "decided_by")
    history = history(EntityType.SAVED_SEARCH_CANDIDATE)


@strawberry.type(description="What the poller knows of one source: connection, errors, today's call budget, "
                 "next poll.")
class SourceHealth:
    connection_status: ConnectionStatus = strawberry.field(description="The source's health as the poller sees it.")
    consecutive_errors: int = strawberry.field(description="Failed calls in a row since the last success.")
    last_successful_call: datetime.datetime | None = strawberry.field(
        description="When a call to the source last succeeded; null: never."
    )
    last_error_text: strawberry.Private[str | None]
    calls_used_today: int = strawberry.field(
        description="Calls the source's API key has used today (UTC day; sources sharing a key share it)."
    )
    calls_left_today: int | None = strawberry.field(
        description="Calls the key has left today (daily limit minus calls used, never below 0); null until the "
        "key's budget is known (no call made yet)."
    )
    daily_call_limit: int | None = strawberry.field(
        description="The key's daily call limit; null until the key's budget is known."
    )
    next_poll_at: datetime.datetime | None = strawberry.field(
        description="When the source's next windowed search is due; null: not scheduled yet (the next sync run "
        "schedules it)."
    )
    last_poll_success_at: datetime.datetime | None = strawberry.field(
        description="When the source's windowed search last succeeded (the next window starts a day before)."
    )
    recent_calls: int = strawberry.field(
        description="How many logged calls the two figures below are over: the source's last 100 at most."
    )
    average_response_time_ms: int | None = strawberry.field(
        description="Average response time of those calls that got an answer, in milliseconds; null: none did."
    )
    success_rate_percentage: Decimal | None = strawberry.field(
        description="Share of those calls that succeeded, 0 to 100; null: no call logged yet."
    )

    @strawberry.field(description="The last call's error, with any credential in it masked; null after a success.")
    def last_error_message(self) -> str | None:
        return redact_text(self.last_error_text)

    @classmethod
    def of(cls, health: Health) -> SourceHealth:
        return cls(
            connection_status=ConnectionStatus(health.connection_status),
            consecutive_errors=health.consecutive_errors,
            last_successful_call=health.last_successful_call,
            last_error_text=health.last_error_message,
            calls_used_today=health.calls_used_today,
            calls_left_today=health.calls_left_today,
            daily_call_limit=health.daily_limit,
            next_poll_at=health.next_poll_at,
            last_poll_success_at=health.last_success_at,
            recent_calls=health.calls.calls,
            average_response_time_ms=health.calls.average_response_time_ms,
            success_rate_percentage=health.calls.success_rate_percentage,
        )


# -- root lists -----------------------------------------------------------------------------------


@strawberry.input
class SavedSearchFilter:
    row_id: UUIDFilter | None = None
    name: StringFilter | None = None
    is_active: BooleanFilter | None = None
    external_source_id: UUIDFilter | None = None
    created_at: DateTimeFilter | None = None


@strawberry.enum
class SavedSearchOrderField(Enum):
    NAME = "name"
    CREATED_AT = "created_at"


@strawberry.input
class SavedSearchOrder:
    field: SavedSearchOrderField
    direction: OrderDirection = OrderDirection.ASC


@strawberry.input
class SavedSearchCandidateFilter:
    row_id: UUIDFilter | None = None
    status: EnumFilter[CandidateStatus] | None = None
    saved_search_id: UUIDFilter | None = None
    lineage_key: StringFilter | None = None
    title: StringFilter | None = None
    posted_date: DateFilter | None = None
    response_deadline: DateTimeFilter | None = None
    first_seen_at: DateTimeFilter | None = None


@strawberry.enum
class SavedSearchCandidateOrderField(Enum):
    FIRST_SEEN_AT = "first_seen_at"
    POSTED_DATE = "posted_date"
    RESPONSE_DEADLINE = "response_deadline"


@strawberry.input
class SavedSearchCandidateOrder:
    field: SavedSearchCandidateOrderField
    direction: OrderDirection = OrderDirection.ASC


@strawberry.type
class SyncQuery:
    saved_searches = root_list(
        SEARCH, _SEARCHES, SavedSearchFilter, SavedSearchOrder, default_order=(("name", False),),
        description="The tenant's saved searches, by name unless ordered otherwise.",
    )
    saved_search_candidates = root_list(
        CANDIDATE, _CANDIDATES, SavedSearchCandidateFilter, SavedSearchCandidateOrder,
        default_order=(("first_seen_at", True),),
        description="Candidates of every saved search of the tenant, newest first unless ordered otherwise; "
        "filter on status NEW for those waiting for a decision.",
    )
