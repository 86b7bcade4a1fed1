"""The domain value sets: one StrEnum per set, the single source of truth for its values.

The database keeps the seed's VARCHAR columns; each enum-valued column carries a CHECK constraint
`ck_<table>_<column>_values` generated from the enum here (`models.base.values_check`), and the
GraphQL enums are generated from these classes too, so one list rules all three. The meaning of
every value is in docs/enums.md. Adding a value needs a migration that replaces the CHECK.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVITY_ENTITY_TYPES",
    "AccessLevel",
    "ActivityStatus",
    "CandidateStatus",
    "CapturePlanStatus",
    "ChangeSource",
    "ChangeType",
    "ConnectionStatus",
    "EntityType",
    "GoNoGoDecision",
    "ImpactLevel",
    "ParticipantType",
    "PipelineStage",
    "PollingPriority",
    "Priority",
    "ProcessingStatus",
    "ProjectStatus",
    "ProposalStatus",
    "RiskLevel",
    "ScanStatus",
    "SyncStatus",
]


class PipelineStage(StrEnum):
    """opportunity_projects.pipeline_stage: the capture lifecycle phase (Shipley-style 0..6)."""

    PHASE_0 = "phase_0"
    PHASE_1 = "phase_1"
    PHASE_2 = "phase_2"
    PHASE_3 = "phase_3"
    PHASE_4 = "phase_4"
    PHASE_5 = "phase_5"
    PHASE_6 = "phase_6"


class ProjectStatus(StrEnum):
    """opportunity_projects.project_status: whether and how the pursuit goes on."""

    ACTIVE = "active"
    ON_HOLD = "on_hold"
    WON = "won"
    LOST = "lost"
    NO_BID = "no_bid"
    CANCELLED_BY_GOVERNMENT = "cancelled_by_government"
    WITHDRAWN = "withdrawn"


class Priority(StrEnum):
    """opportunity_projects.priority_level and activities.priority."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class PollingPriority(StrEnum):
    """polling_configurations.priority_level: the order in which due polls are served."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class SyncStatus(StrEnum):
    """opportunity_projects.sync_status: the state of the project's last external refresh."""

    PENDING = "pending"
    SYNCING = "syncing"
    SYNCED = "synced"
    ERROR = "error"
    MANUAL = "manual"


class ConnectionStatus(StrEnum):
    """external_opportunity_sources.connection_status: the source's health as the poller sees it."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILING = "failing"
    DISABLED = "disabled"


class ActivityStatus(StrEnum):
    """activities.status."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DEFERRED = "deferred"


class CapturePlanStatus(StrEnum):
    """capture_plans.status."""

    DRAFT = "draft"
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    SUPERSEDED = "superseded"


class GoNoGoDecision(StrEnum):
    """capture_plans.go_no_go_decision (NULL: no decision recorded yet)."""

    PENDING = "pending"
    GO = "go"
    NO_GO = "no_go"


class ProposalStatus(StrEnum):
    """proposals.status: the proposal's progress through the colour-team reviews to award."""

    DRAFT = "draft"
    PLANNING = "planning"
    PINK_TEAM = "pink_team"
    RED_TEAM = "red_team"
    GOLD_TEAM = "gold_team"
    FINAL_REVIEW = "final_review"
    SUBMITTED = "submitted"
    AWARDED = "awarded"
    NOT_AWARDED = "not_awarded"
    WITHDRAWN = "withdrawn"


class ProcessingStatus(StrEnum):
    """documents.processing_status: text extraction and indexing of the stored object."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    NO_OBJECT = "no_object"


class ScanStatus(StrEnum):
    """documents.scan_status: the malware scan of the stored object (storage/scan.py, SI-3).

    A new object is quarantined until the scanner finds it clean; only a clean one is downloaded."""

    QUARANTINED = "quarantined"
    CLEAN = "clean"
    INFECTED = "infected"


class ImpactLevel(StrEnum):
    """external_data_changes.impact_level and change_history.change_impact_level."""

    INFORMATIONAL = "informational"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ChangeType(StrEnum):
    """external_data_changes.change_type: what the external source did to the opportunity."""

    CREATED = "created"
    AMENDED = "amended"
    UPDATED = "updated"
    TYPE_CHANGED = "type_changed"
    AWARDED = "awarded"
    ARCHIVED = "archived"
    CANCELLED = "cancelled"
    REMOVED = "removed"


class AccessLevel(StrEnum):
    """documents.access_level: who in the tenant may read the document."""

    TENANT = "tenant"
    PROJECT_TEAM = "project_team"
    RESTRICTED = "restricted"
    CONFIDENTIAL = "confidential"


class RiskLevel(StrEnum):
    """audit_logs.risk_level."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ChangeSource(StrEnum):
    """change_history.change_source: who or what made the change."""

    USER = "user"
    EXTERNAL_SYNC = "external_sync"
    SYSTEM = "system"
    IMPORT = "import"


class EntityType(StrEnum):
    """The targets of the polymorphic (entity_type, entity_id) columns: one per table, singular.

    change_history.entity_type may name any of them; activities and document_associations only
    the subset in ACTIVITY_ENTITY_TYPES. audit_logs.entity_type is deliberately not checked: auth
    events record values such as "session" that are not tables.
    """

    TENANT = "tenant"
    TENANT_CONFIGURATION = "tenant_configuration"
    USER = "user"
    ROLE = "role"
    USER_ROLE = "user_role"
    USER_SESSION = "user_session"
    EXTERNAL_OPPORTUNITY_SOURCE = "external_opportunity_source"
    OPPORTUNITY_PROJECT = "opportunity_project"
    EXTERNAL_OPPORTUNITY_DATA = "external_opportunity_data"
    OPPORTUNITY_PROJECT_OVERRIDE = "opportunity_project_override"
    ORGANIZATION = "organization"
    CONTACT = "contact"
    OPPORTUNITY_PROJECT_CONTACT = "opportunity_project_contact"
    DOCUMENT_CATEGORY = "document_category"
    DOCUMENT = "document"
    DOCUMENT_ASSOCIATION = "document_association"
    DOCUMENT_ACCESS_LOG = "document_access_log"
    ACTIVITY = "activity"
    ACTIVITY_PARTICIPANT = "activity_participant"
    CAPTURE_PLAN = "capture_plan"
    PROPOSAL = "proposal"
    AUDIT_LOG = "audit_log"
    CHANGE_HISTORY = "change_history"
    PERMISSION_AUDIT = "permission_audit"
    POLLING_CONFIGURATION = "polling_configuration"
    API_INTEGRATION_LOG = "api_integration_log"
    EXTERNAL_DATA_CHANGE = "external_data_change"
    SAVED_SEARCH = "saved_search"
    SAVED_SEARCH_CANDIDATE = "saved_search_candidate"


# What an activity or a document association can be attached to (activities.entity_type,
# document_associations.entity_type): the business records a user works on, not logs or settings.
ACTIVITY_ENTITY_TYPES: tuple[EntityType, ...] = (
    EntityType.OPPORTUNITY_PROJECT,
    EntityType.ORGANIZATION,
    EntityType.CONTACT,
    EntityType.CAPTURE_PLAN,
    EntityType.PROPOSAL,
    EntityType.DOCUMENT,
)


class ParticipantType(StrEnum):
    """activity_participants.participant_type: what participant_id points at."""

    USER = "user"
    CONTACT = "contact"


class CandidateStatus(StrEnum):
    """saved_search_candidates.status: what became of a notice a saved search found."""

    NEW = "new"
    DISMISSED = "dismissed"
    TRACKED = "tracked"
