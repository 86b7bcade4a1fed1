"""Which GraphQL type and table stand for each `EntityType` value (docs/enums.md).

Polymorphic columns (activity and document-association targets, change_history.entity_type)
resolve through this map, and every entity type's `history` field reads change_history rows
with its own entity_type value.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table

import models
from models.enums import EntityType
from resolvers.documents.loaders import DOCUMENT_ROWS
from schema.relations import Target, to_many

__all__ = ["ENTITY_TARGETS", "history", "targets"]

_E = EntityType
_NAMES: dict[EntityType, tuple[str, str, Any]] = {
    _E.TENANT: ("Tenant", "schema.identity", models.Tenant),
    _E.TENANT_CONFIGURATION: ("TenantConfiguration", "schema.identity", models.TenantConfiguration),
    _E.USER: ("User", "schema.identity", models.User),
    _E.ROLE: ("Role", "schema.identity", models.Role),
    _E.USER_ROLE: ("UserRole", "schema.identity", models.UserRole),
    _E.USER_SESSION: ("UserSession", "schema.identity", models.UserSession),
    _E.EXTERNAL_OPPORTUNITY_SOURCE: (
        "ExternalOpportunitySource",
        "schema.external_data",
        models.ExternalOpportunitySource,
    ),
    _E.OPPORTUNITY_PROJECT: ("OpportunityProject", "schema.opportunities", models.OpportunityProject),
    _E.EXTERNAL_OPPORTUNITY_DATA: ("ExternalOpportunityData", "schema.external_data", models.ExternalOpportunityData),
    _E.OPPORTUNITY_PROJECT_OVERRIDE: (
        "OpportunityProjectOverride",
        "schema.opportunities",
        models.OpportunityProjectOverride,
    ),
    _E.ORGANIZATION: ("Organization", "schema.crm", models.Organization),
    _E.CONTACT: ("Contact", "schema.crm", models.Contact),
    _E.OPPORTUNITY_PROJECT_CONTACT: (
        "OpportunityProjectContact",
        "schema.opportunities",
        models.OpportunityProjectContact,
    ),
    _E.DOCUMENT_CATEGORY: ("DocumentCategory", "schema.documents", models.DocumentCategory),
    _E.DOCUMENT: ("Document", "schema.documents", models.Document),
    _E.DOCUMENT_ASSOCIATION: ("DocumentAssociation", "schema.documents", models.DocumentAssociation),
    _E.DOCUMENT_ACCESS_LOG: ("DocumentAccessLog", "schema.documents", models.DocumentAccessLog),
    _E.ACTIVITY: ("Activity", "schema.activities", models.Activity),
    _E.ACTIVITY_PARTICIPANT: ("ActivityParticipant", "schema.activities", models.ActivityParticipant),
    _E.CAPTURE_PLAN: ("CapturePlan", "schema.capture", models.CapturePlan),
    _E.PROPOSAL: ("Proposal", "schema.capture", models.Proposal),
    _E.AUDIT_LOG: ("AuditLog", "schema.audit", models.AuditLog),
    _E.CHANGE_HISTORY: ("ChangeHistory", "schema.audit", models.ChangeHistory),
    _E.PERMISSION_AUDIT: ("PermissionAudit", "schema.audit", models.PermissionAudit),
    _E.POLLING_CONFIGURATION: ("PollingConfiguration", "schema.external_data", models.PollingConfiguration),
    _E.API_INTEGRATION_LOG: ("ApiIntegrationLog", "schema.external_data", models.ApiIntegrationLog),
    _E.EXTERNAL_DATA_CHANGE: ("ExternalDataChange", "schema.external_data", models.ExternalDataChange),
    _E.SAVED_SEARCH: ("SavedSearch", "schema.sync", models.SavedSearch),
    _E.SAVED_SEARCH_CANDIDATE: ("SavedSearchCandidate", "schema.sync", models.SavedSearchCandidate),
}

ENTITY_TARGETS: dict[str, tuple[Target, Table]] = {
    kind.value: ((name, module), model.__table__) for kind, (name, module, model) in _NAMES.items()
}
# Documents are read without their extracted text and search vector (megabytes per row; see
# resolvers/documents/loaders.py), here as everywhere else.
ENTITY_TARGETS[_E.DOCUMENT.value] = (("Document", "schema.documents"), DOCUMENT_ROWS)


def targets(kinds: Any) -> dict[str, tuple[Target, Table]]:
    """The entries of ENTITY_TARGETS for some EntityType values (a polymorphic column's allowed set)."""
    return {EntityType(k).value: ENTITY_TARGETS[EntityType(k).value] for k in kinds}


def history(entity_type: EntityType) -> Any:
    """`history`: the entity's change_history rows, newest first."""
    table: Table = models.ChangeHistory.__table__
    return to_many(
        ("ChangeHistory", "schema.audit"),
        table,
        "entity_id",
        order=(("change_timestamp", True),),
        where=lambda t: [t.c.entity_type == entity_type.value],
        where_key=f"entity_type={entity_type.value}",
        description="Field-level changes of this entity, newest first.",
    )
