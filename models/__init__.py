"""GWM CRM's SQLAlchemy models: `Base` (whose metadata Alembic compares) and every mapped table.

The seed's 27 tables, and those added to it (credentials, idempotency keys: docs/decisions.md).

Importing this package registers every model, so string references between modules resolve.
Engines and sessions are in `models.db`; the value sets in `models.enums`.
"""

from models.activities import Activity, ActivityParticipant
from models.audit_log import AuditLog, ChangeHistory, PermissionAudit
from models.base import Base
from models.capture import CapturePlan, Proposal
from models.credentials import (
    AccountToken,
    ApiKey,
    MfaRecoveryCode,
    SamlAssertionSeen,
    SamlAuthnRequest,
    UserIdentity,
)
from models.crm import Contact, Organization
from models.document_readers import DocumentReader
from models.document_text import DocumentExtractionJob, DocumentTextChunk
from models.documents import Document, DocumentAccessLog, DocumentAssociation, DocumentCategory
from models.external_data import (
    ApiIntegrationLog,
    ExternalDataChange,
    ExternalOpportunityData,
    ExternalOpportunitySource,
    PollingConfiguration,
)
from models.idempotency import IdempotencyKey
from models.identity import Role, User, UserRole, UserSession
from models.notifications import Notification, NotificationPreference, NotificationSend
from models.opportunities import OpportunityProject, OpportunityProjectContact, OpportunityProjectOverride
from models.sync import SavedSearch, SavedSearchCandidate, SyncKeyBudget, SyncSchedule
from models.tenancy import Tenant, TenantConfiguration
from models.trusted_documents import PersistedQuery, TrustedDocument

__all__ = [
    "AccountToken",
    "Activity",
    "ActivityParticipant",
    "ApiIntegrationLog",
    "ApiKey",
    "AuditLog",
    "Base",
    "CapturePlan",
    "ChangeHistory",
    "Contact",
    "Document",
    "DocumentAccessLog",
    "DocumentAssociation",
    "DocumentCategory",
    "DocumentExtractionJob",
    "DocumentReader",
    "DocumentTextChunk",
    "ExternalDataChange",
    "ExternalOpportunityData",
    "ExternalOpportunitySource",
    "IdempotencyKey",
    "MfaRecoveryCode",
    "Notification",
    "NotificationPreference",
    "NotificationSend",
    "OpportunityProject",
    "OpportunityProjectContact",
    "OpportunityProjectOverride",
    "Organization",
    "PermissionAudit",
    "PersistedQuery",
    "PollingConfiguration",
    "Proposal",
    "Role",
    "SamlAssertionSeen",
    "SamlAuthnRequest",
    "SavedSearch",
    "SavedSearchCandidate",
    "SyncKeyBudget",
    "SyncSchedule",
    "Tenant",
    "TenantConfiguration",
    "TrustedDocument",
    "User",
    "UserIdentity",
    "UserRole",
    "UserSession",
]
