"""External data sync state: the schedules the workers claim, the call budget per API key, saved
searches and the candidates they find (migration 0009; docs/decisions.md D14-D19).

- `SyncSchedule`: one row per (source) for its windowed search, and one per (saved search) for
  its own; next poll, last success, the lease (`claimed_until`, `claimed_by`) and the error
  state. Rows are created by the claim function for every pollable source and active saved search
  (`gwm_sync_claim`, migration 0009), so nothing else has to remember to create them.
- `SyncKeyBudget`: the daily and hourly call budget of one API key within a tenant, found by a
  keyed fingerprint of the key (HMAC-SHA256 under a server key, sync/schedule.py): sources of a
  tenant sharing a key share its row. A call reserves its slot with the row locked FOR UPDATE.
- `SavedSearch`: a tenant's SAM.gov query (NAICS, set-aside, notice types, title keywords,
  agency) run on one source's key.
- `SavedSearchCandidate`: a notice a saved search found, one per lineage per tenant, until it is
  dismissed or tracked (then `opportunity_project_id` is the project it became).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Date, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import (
    JSON_ARRAY,
    NOW,
    Base,
    Json,
    TenantScoped,
    Timestamps,
    Timestamptz,
    Uuid,
    UUIDPrimaryKey,
    tenant_fk,
    values_check,
)
from models.enums import CandidateStatus

__all__ = [
    "DEFAULT_DAILY_LIMIT",
    "DEFAULT_SEARCH_INTERVAL_MINUTES",
    "SavedSearch",
    "SavedSearchCandidate",
    "SyncKeyBudget",
    "SyncSchedule",
]

#: Calls a day for a key whose budget row was never configured: SAM.gov's quota for a key
#: without a SAM.gov role. A key with a role gets about 1,000 (`gwm sync budget --daily 1000`).
DEFAULT_DAILY_LIMIT = 10
#: Minutes between two windowed searches of one source or saved search, unless configured.
DEFAULT_SEARCH_INTERVAL_MINUTES = 360

_FINGERPRINT = "key_fingerprint ~ '^[0-9a-f]{64}$'"


class SyncSchedule(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """When a source's (saved_search_id NULL) or a saved search's windowed search runs next."""

    __tablename__ = "sync_schedules"
    __table_args__ = (
        # One row per source and one per saved search (NULLS NOT DISTINCT: one source row).
        UniqueConstraint("tenant_id", "external_source_id", "saved_search_id", postgresql_nulls_not_distinct=True),
        # The claim: due rows across tenants.
        Index(None, "next_poll_at"),
        Index(None, "tenant_id", "saved_search_id"),
        tenant_fk("external_source_id", "external_opportunity_sources", ondelete="CASCADE"),
        tenant_fk("saved_search_id", "saved_searches", ondelete="CASCADE"),
        CheckConstraint("poll_interval_minutes >= 1", name="poll_interval_positive"),
        CheckConstraint("consecutive_errors >= 0", name="consecutive_errors_not_negative"),
        CheckConstraint(f"key_fingerprint IS NULL OR {_FINGERPRINT}", name="key_fingerprint_format"),
    )

    external_source_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    saved_search_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    poll_interval_minutes: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text(str(DEFAULT_SEARCH_INTERVAL_MINUTES))
    )
    next_poll_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False, server_default=NOW)
    # The window's start: postedFrom = last_success_at - 1 day (NULL: never succeeded).
    last_success_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    last_attempt_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    last_error_message: Mapped[str | None] = mapped_column(Text)
    consecutive_errors: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))

    # The lease: a worker holds the job until claimed_until; past it, another may claim it.
    claimed_until: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    claimed_by: Mapped[str | None] = mapped_column(String(200))

    # The budget row of the source's key as last seen by a worker (for source health).
    key_fingerprint: Mapped[str | None] = mapped_column(String(64))


class SyncKeyBudget(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """The call budget of one API key (by fingerprint) within a tenant: limits and window counters."""

    __tablename__ = "sync_key_budgets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "key_fingerprint"),
        CheckConstraint(_FINGERPRINT, name="key_fingerprint_format"),
        CheckConstraint("daily_limit >= 0", name="daily_limit_not_negative"),
        CheckConstraint("hourly_limit IS NULL OR hourly_limit >= 0", name="hourly_limit_not_negative"),
        CheckConstraint("day_count >= 0 AND hour_count >= 0", name="counts_not_negative"),
    )

    key_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    daily_limit: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text(str(DEFAULT_DAILY_LIMIT)))
    # NULL: no hourly limit of the key's own (a source's rate_limit_per_hour still applies).
    hourly_limit: Mapped[int | None] = mapped_column(Integer)
    # The current windows (UTC day, clock hour) and the calls reserved in them.
    day_started_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    day_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    hour_started_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    hour_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    last_reserved_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)


class SavedSearch(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """A tenant's saved SAM.gov query; its matches become candidates."""

    __tablename__ = "saved_searches"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        UniqueConstraint("tenant_id", "id"),
        Index(None, "tenant_id", "external_source_id"),
        tenant_fk("external_source_id", "external_opportunity_sources", ondelete="RESTRICT"),
        tenant_fk("created_by", "users", ondelete=None),
        CheckConstraint("char_length(btrim(name)) >= 1", name="name_not_blank"),
        CheckConstraint(
            "jsonb_typeof(naics_codes) = 'array' AND jsonb_typeof(set_aside_codes) = 'array'"
            " AND jsonb_typeof(notice_types) = 'array' AND jsonb_typeof(title_keywords) = 'array'",
            name="lists_are_arrays",
        ),
    )

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    # The source searched (its endpoint and key).
    external_source_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # Query: each list is ORed within itself, the lists ANDed; an empty list does not filter.
    naics_codes: Mapped[Any] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)
    set_aside_codes: Mapped[Any] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)
    notice_types: Mapped[Any] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)
    title_keywords: Mapped[Any] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)
    # Matched against the notice's agency path (department, sub-tier, office), case-insensitively.
    agency: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)


class SavedSearchCandidate(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """A notice a saved search found: new until someone dismisses or tracks it (one per lineage)."""

    __tablename__ = "saved_search_candidates"
    __table_args__ = (
        # One candidate per notice lineage in a tenant, whichever searches found it.
        UniqueConstraint("tenant_id", "lineage_key"),
        # The candidates connection: a search's (or the tenant's) newest first.
        Index(None, "tenant_id", "saved_search_id", "status", "first_seen_at"),
        Index(None, "tenant_id", "opportunity_project_id"),
        tenant_fk("saved_search_id", "saved_searches", ondelete="SET NULL"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="SET NULL"),
        tenant_fk("decided_by", "users", ondelete=None),
        values_check("status", CandidateStatus),
        CheckConstraint("status <> 'tracked' OR decided_at IS NOT NULL", name="tracked_is_decided"),
    )

    # The saved search that found it first (NULL once that search is deleted).
    saved_search_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Notice lineage (sync/connectors/samgov.py lineage_key): a project's external_opportunity_id.
    lineage_key: Mapped[str] = mapped_column(String(255), nullable=False)
    # The latest version seen.
    notice_id: Mapped[str] = mapped_column(String(100), nullable=False)
    solicitation_number: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(String(500))
    agency: Mapped[str | None] = mapped_column(String(500))
    notice_type: Mapped[str | None] = mapped_column(String(100))
    posted_date: Mapped[datetime.date | None] = mapped_column(Date)
    response_deadline: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    raw_json_data: Mapped[Any] = mapped_column(Json, nullable=False)
    first_seen_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False, server_default=NOW)
    last_seen_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False, server_default=NOW)

    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default=CandidateStatus.NEW.value)
    # Who dismissed or tracked it, when, and the project it became.
    decided_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    decided_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    opportunity_project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
