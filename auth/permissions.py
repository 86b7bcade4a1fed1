"""The permission catalog and the system roles' permission sets.

A permission is a `resource:action` string. Roles hold lists of them (`roles.permissions`, jsonb);
a principal's effective permissions are the union over its unexpired role assignments, loaded per
request so that a role change applies at once. Nothing checks a role by name: code asks for a
permission. docs/permissions.md lists what each one grants.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType

__all__ = ["PERMISSION_DESCRIPTIONS", "SYSTEM_ROLES", "Permission", "SystemRole"]


class Permission(StrEnum):
    OPPORTUNITY_READ = "opportunity:read"
    OPPORTUNITY_WRITE = "opportunity:write"
    OPPORTUNITY_ARCHIVE = "opportunity:archive"
    OPPORTUNITY_SCORE_READ = "opportunity.score:read"
    OPPORTUNITY_SCORE_WRITE = "opportunity.score:write"
    EXTERNAL_DATA_READ = "external_data:read"
    EXTERNAL_DATA_ACKNOWLEDGE = "external_data:acknowledge"
    ORGANIZATION_READ = "organization:read"
    ORGANIZATION_WRITE = "organization:write"
    CONTACT_READ = "contact:read"
    CONTACT_WRITE = "contact:write"
    DOCUMENT_READ = "document:read"
    DOCUMENT_WRITE = "document:write"
    DOCUMENT_FILE_READ = "document.file:read"
    DOCUMENT_LEGAL_HOLD = "document.legal_hold:manage"
    DOCUMENT_READERS_MANAGE = "document.readers:manage"
    DOCUMENT_STORAGE_READ = "document.storage:read"
    ACTIVITY_READ = "activity:read"
    ACTIVITY_WRITE = "activity:write"
    CAPTURE_PLAN_READ = "capture_plan:read"
    CAPTURE_PLAN_WRITE = "capture_plan:write"
    CAPTURE_PLAN_STRATEGY_READ = "capture_plan.strategy:read"
    PROPOSAL_READ = "proposal:read"
    PROPOSAL_WRITE = "proposal:write"
    SOURCE_READ = "source:read"
    SOURCE_ADMIN = "source:admin"
    SAVED_SEARCH_READ = "saved_search:read"
    SAVED_SEARCH_MANAGE = "saved_search:manage"
    USER_READ = "user:read"
    USER_ADMIN = "user:admin"
    ROLE_ADMIN = "role:admin"
    API_KEY_ADMIN = "api_key:admin"
    TENANT_ADMIN = "tenant:admin"
    AUDIT_READ = "audit:read"
    HISTORY_READ = "history:read"
    GRAPHQL_ADHOC = "graphql:adhoc"
    GRAPHQL_DOCUMENT_REGISTER = "graphql:document:register"


PERMISSION_DESCRIPTIONS: MappingProxyType[Permission, str] = MappingProxyType(
    {
        Permission.OPPORTUNITY_READ: "see opportunity projects, their overrides and contact links",
        Permission.OPPORTUNITY_WRITE: "create and edit opportunity projects and their local overrides",
        Permission.OPPORTUNITY_ARCHIVE: "archive and restore opportunity projects",
        Permission.OPPORTUNITY_SCORE_READ: "see win probability, strategic value and pursuit health scores",
        Permission.OPPORTUNITY_SCORE_WRITE: "set those scores",
        Permission.EXTERNAL_DATA_READ: "see synced external data versions and detected changes",
        Permission.EXTERNAL_DATA_ACKNOWLEDGE: "acknowledge detected external data changes, with notes",
        Permission.ORGANIZATION_READ: "see organizations",
        Permission.ORGANIZATION_WRITE: "create, edit, archive and restore organizations",
        Permission.CONTACT_READ: "see contacts",
        Permission.CONTACT_WRITE: "create, edit, archive and restore contacts; link them to projects",
        Permission.DOCUMENT_READ: "see document metadata",
        Permission.DOCUMENT_FILE_READ: "download documents' files (a short-lived URL per version, each one logged)",
        Permission.DOCUMENT_WRITE: "upload, edit and delete documents",
        Permission.DOCUMENT_LEGAL_HOLD: "put documents under a legal hold (their files are then never purged)"
        " and lift it",
        Permission.DOCUMENT_READERS_MANAGE: "name and remove the readers of restricted and confidential documents"
        " the caller itself may read",
        Permission.DOCUMENT_STORAGE_READ: "see where a document's object is stored (key, bucket, URL, region,"
        " encryption key id), also in history and audit values",
        Permission.ACTIVITY_READ: "see activities",
        Permission.ACTIVITY_WRITE: "create and edit activities",
        Permission.CAPTURE_PLAN_READ: "see capture plans (without their strategy sections)",
        Permission.CAPTURE_PLAN_WRITE: "create and edit capture plans and record go/no-go decisions",
        Permission.CAPTURE_PLAN_STRATEGY_READ: "see win strategy, competitive analysis and pricing-related sections",
        Permission.PROPOSAL_READ: "see proposals",
        Permission.PROPOSAL_WRITE: "create and edit proposals",
        Permission.SOURCE_READ: "see external opportunity sources (never their credentials)",
        Permission.SOURCE_ADMIN: "configure external sources, their credentials and polling",
        Permission.SAVED_SEARCH_READ: "see saved opportunity searches and the candidates they found",
        Permission.SAVED_SEARCH_MANAGE: "create, change and delete saved opportunity searches; dismiss candidates",
        Permission.USER_READ: "see the tenant's users",
        Permission.USER_ADMIN: "invite, deactivate and unlock users, reset their passwords, assign roles",
        Permission.ROLE_ADMIN: "create, edit and delete custom roles",
        Permission.API_KEY_ADMIN: "create and revoke API keys for integrations",
        Permission.TENANT_ADMIN: "change tenant settings (security policy, SSO, OIDC)",
        Permission.AUDIT_READ: "read the audit log and permission audit",
        Permission.HISTORY_READ: "read field-level change history",
        Permission.GRAPHQL_ADHOC: "run GraphQL documents that are not persisted operations (GraphiQL)",
        Permission.GRAPHQL_DOCUMENT_REGISTER: "register and unregister the tenant's trusted GraphQL documents, which"
        " callers without graphql:adhoc may then run",
    }
)


class SystemRole(StrEnum):
    """The roles every tenant has; their permission sets are kept current by `gwm db upgrade`."""

    TENANT_ADMIN = "Tenant Admin"
    CAPTURE_MANAGER = "Capture Manager"
    PROPOSAL_MANAGER = "Proposal Manager"
    BD_ANALYST = "BD Analyst"
    VIEWER = "Viewer"
    AUDITOR = "Auditor"


P = Permission
_READ_PURSUIT = frozenset(
    {
        P.OPPORTUNITY_READ,
        P.EXTERNAL_DATA_READ,
        P.ORGANIZATION_READ,
        P.CONTACT_READ,
        P.DOCUMENT_READ,
        P.DOCUMENT_FILE_READ,
        P.ACTIVITY_READ,
        P.CAPTURE_PLAN_READ,
        P.PROPOSAL_READ,
        P.SOURCE_READ,
        P.SAVED_SEARCH_READ,
        P.USER_READ,
    }
)

SYSTEM_ROLES: MappingProxyType[SystemRole, frozenset[Permission]] = MappingProxyType(
    {
        SystemRole.TENANT_ADMIN: frozenset(Permission),
        SystemRole.CAPTURE_MANAGER: _READ_PURSUIT
        | {
            P.OPPORTUNITY_WRITE,
            P.OPPORTUNITY_ARCHIVE,
            P.OPPORTUNITY_SCORE_READ,
            P.OPPORTUNITY_SCORE_WRITE,
            P.EXTERNAL_DATA_ACKNOWLEDGE,
            P.SAVED_SEARCH_MANAGE,
            P.ORGANIZATION_WRITE,
            P.CONTACT_WRITE,
            P.DOCUMENT_WRITE,
            P.DOCUMENT_READERS_MANAGE,
            P.ACTIVITY_WRITE,
            P.CAPTURE_PLAN_WRITE,
            P.CAPTURE_PLAN_STRATEGY_READ,
            P.PROPOSAL_WRITE,
            P.HISTORY_READ,
            P.GRAPHQL_ADHOC,
        },
        SystemRole.PROPOSAL_MANAGER: _READ_PURSUIT
        | {
            P.OPPORTUNITY_SCORE_READ,
            P.DOCUMENT_WRITE,
            P.DOCUMENT_READERS_MANAGE,
            P.ACTIVITY_WRITE,
            P.CAPTURE_PLAN_STRATEGY_READ,
            P.PROPOSAL_WRITE,
            P.HISTORY_READ,
            P.GRAPHQL_ADHOC,
        },
        SystemRole.BD_ANALYST: _READ_PURSUIT
        | {
            P.OPPORTUNITY_WRITE,
            P.EXTERNAL_DATA_ACKNOWLEDGE,
            P.OPPORTUNITY_SCORE_READ,
            P.SAVED_SEARCH_MANAGE,
            P.ORGANIZATION_WRITE,
            P.CONTACT_WRITE,
            P.ACTIVITY_WRITE,
            P.HISTORY_READ,
            P.GRAPHQL_ADHOC,
        },
        SystemRole.VIEWER: _READ_PURSUIT,
        # An auditor reads who accessed what, not the files themselves.
        SystemRole.AUDITOR: (_READ_PURSUIT - {P.DOCUMENT_FILE_READ})
        | {
            P.OPPORTUNITY_SCORE_READ,
            P.CAPTURE_PLAN_STRATEGY_READ,
            P.AUDIT_READ,
            P.HISTORY_READ,
            P.GRAPHQL_ADHOC,
        },
    }
)
