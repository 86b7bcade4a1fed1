"""Identity in GraphQL: the viewer, tenants, users, roles, sessions, API keys, and their mutations.

Tenant, TenantConfiguration, User, Role, UserRole and UserSession are Relay nodes (`id` global,
`rowId` the primary key) with their relations in both directions; `users` and `roles` are root
connections. Only non-secret fields exist here: no password hash, TOTP secret, session token hash
or key hash (tests/test_graphql_schema.py checks the SDL), and an encrypted tenant configuration
value reads as null. Values shown once are fields of the payload that creates them and nowhere
else: `ApiKeyCreatePayload.key`, `MfaEnrollment` (the TOTP secret while enrolling) and
`MfaEnrollmentConfirmPayload.recoveryCodes`.

What `viewer` means for each kind of caller:
- a session or OIDC token: the signed-in user, their unexpired role assignments and active sessions;
- an API key: the tenant's system user (the actor recorded on everything the key does), the key's
  one role (tenant-wide, expiring with the key), no sessions, and `apiKey` set to the key.
`permissions` is always the effective tenant-wide permission set the request is checked against.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from sqlalchemy import Table
from strawberry import relay
from strawberry.types.base import get_object_definition

import models
from auth.api_keys import MAX_EXPIRY_DAYS, ApiKeyRecord
from auth.permissions import Permission
from auth.principal import Principal, PrincipalKind
from models.enums import EntityType, ParticipantType
from resolvers.documents.loaders import DOCUMENT_ROWS
from resolvers.identity import mutations, queries
from schema.activities import participations_of
from schema.context import Info
from schema.documents import document_list
from schema.entities import history
from schema.enums import describe_values
from schema.fields import inet_column
from schema.filters import BooleanFilter, DateTimeFilter, StringFilter, UUIDFilter
from schema.mutation_kit import Args, Done, Entity, Extra, mutation, ref_id, ref_row_id
from schema.node import EntityNode, TenantOwned
from schema.notifications import NOTIFICATION_PREFERENCE, NOTIFICATIONS
from schema.pagination import OrderDirection
from schema.permissions import requires
from schema.relations import root_list, to_many, to_one
from schema.scalars import JSON

if TYPE_CHECKING:
    from schema.opportunities import OpportunityProject

__all__ = [
    "ApiKey",
    "IdentityMutation",
    "IdentityQuery",
    "Role",
    "RoleAssignment",
    "RoleFilter",
    "RoleOrder",
    "RoleOrderField",
    "Tenant",
    "TenantConfiguration",
    "User",
    "UserFilter",
    "UserOrder",
    "UserOrderField",
    "UserRole",
    "UserSession",
    "Viewer",
]


def _t(model: Any) -> Table:
    table: Table = model.__table__
    return table


_TENANTS = _t(models.Tenant)
_CONFIGURATIONS = _t(models.TenantConfiguration)
_USERS = _t(models.User)
_ROLES = _t(models.Role)
_USER_ROLES = _t(models.UserRole)
_SESSIONS = _t(models.UserSession)
_PROJECTS = _t(models.OpportunityProject)
_ORGANIZATIONS = _t(models.Organization)
_CONTACTS = _t(models.Contact)
_CATEGORIES = _t(models.DocumentCategory)
_ACTIVITIES = _t(models.Activity)
_AUDIT_LOGS = _t(models.AuditLog)
_CHANGES = _t(models.ChangeHistory)
_PERMISSION_AUDITS = _t(models.PermissionAudit)
_EXTERNAL_CHANGES = _t(models.ExternalDataChange)
_SOURCES = _t(models.ExternalOpportunitySource)

USER = ("User", "schema.identity")
PROJECT = ("OpportunityProject", "schema.opportunities")
ACTIVITY = ("Activity", "schema.activities")
_ProjectType = Annotated["OpportunityProject", strawberry.lazy("schema.opportunities")]
_BY_NAME = (("last_name", False), ("first_name", False))

CAPTURE_PLAN = ("CapturePlan", "schema.capture")
PROPOSAL = ("Proposal", "schema.capture")
_CAPTURE_PLANS = _t(models.CapturePlan)
_PROPOSALS = _t(models.Proposal)


def _by_user(target: Any, table: Table, column: str, what: str, order_column: str = "created_at") -> Any:
    """A user's reverse list over one user-naming column, newest first."""
    return to_many(target, table, column, order=((order_column, True),), description=f"{what}, newest first.")


def _of_tenant(target: Any, table: Table, what: str, order_column: str = "created_at") -> Any:
    return to_many(target, table, "tenant_id", order=((order_column, True),), description=f"{what}, newest first.")


CredentialKind = strawberry.enum(PrincipalKind, name="CredentialKind", description="How the caller authenticated.")
describe_values(
    PrincipalKind,
    {
        "SESSION": "A signed-in session (the session cookie of a sign-in).",
        "OIDC": "An OIDC bearer access token of the tenant's identity provider.",
        "API_KEY": "An API key of a service integration (it acts with the key's role).",
    },
)


@strawberry.type(description="A person who signs in to the tenant, or the tenant's system user.")
class User(EntityNode, TenantOwned, relay.Node):
    _table = _USERS
    _descriptions = {
        "email": "The sign-in address, unique in the tenant (compared without case).",
        "first_name": "Given name, as shown to colleagues.",
        "last_name": "Family name; user lists sort by it.",
        "title": "Job title, e.g. Capture Manager.",
        "phone": "Work phone number, free text.",
        "avatar_url": "URL of the user's picture.",
        "is_active": "Whether the account can sign in; false once deactivated (its history stays).",
        "is_saml_user": "The account signs in through the tenant's single sign-on, not with a password.",
        "email_verified": "The user proved control of the email address (an accepted invitation or a reset link).",
        "mfa_enabled": "A second factor (authenticator code) is required at sign-in.",
        "must_change_password": "The password is temporary (set by an administrator): the next sign-in must change it.",
        "last_login_at": "When the user last signed in successfully.",
    }

    row_id: uuid.UUID
    email: str
    first_name: str
    last_name: str
    title: str | None
    phone: str | None
    avatar_url: str | None
    is_active: bool
    is_system: bool = strawberry.field(description="The tenant's non-person actor (API keys act as it).")
    is_saml_user: bool
    email_verified: bool
    mfa_enabled: bool
    must_change_password: bool | None
    locked_until: datetime | None = strawberry.field(description="Set while the account is locked (AC-7).")
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime

    created_by = to_one(USER, _USERS, "created_by", description="Who invited or created the account.")
    user_roles = to_many(
        ("UserRole", "schema.identity"),
        _USER_ROLES,
        "user_id",
        order=(("assigned_at", False),),
        description="The user's role assignments (expired ones too), oldest first.",
    )
    user_sessions = to_many(
        ("UserSession", "schema.identity"),
        _SESSIONS,
        "user_id",
        order=(("created_at", True),),
        description="The user's sessions (ended ones too), newest first.",
    )
    opportunity_projects_as_capture = to_many(
        PROJECT,
        _PROJECTS,
        "assigned_capture_manager",
        order=(("created_at", True),),
        description="Projects this user is the capture manager of, newest first.",
    )
    opportunity_projects_as_proposal = to_many(
        PROJECT,
        _PROJECTS,
        "assigned_proposal_manager",
        order=(("created_at", True),),
        description="Projects this user is the proposal manager of, newest first.",
    )
    documents_uploaded = document_list(
        "uploaded_by", description="Documents this user uploaded (deleted ones left out), newest first."
    )
    assigned_activities = to_many(
        ACTIVITY,
        _ACTIVITIES,
        "assigned_to",
        order=(("due_date", False),),
        description="Activities assigned to this user, soonest due first (undated last).",
    )
    created_activities = to_many(
        ACTIVITY,
        _ACTIVITIES,
        "created_by",
        order=(("created_at", True),),
        description="Activities this user created, newest first.",
    )
    audit_logs = to_many(
        ("AuditLog", "schema.audit"),
        _AUDIT_LOGS,
        "user_id",
        order=(("timestamp_utc", True),),
        description="Audited actions of this user, newest first.",
    )
    changes_created = to_many(
        ("ChangeHistory", "schema.audit"),
        _CHANGES,
        "changed_by_user_id",
        order=(("change_timestamp", True),),
        description="Field changes this user made, newest first.",
    )
    permission_audits = to_many(
        ("PermissionAudit", "schema.audit"),
        _PERMISSION_AUDITS,
        "user_id",
        order=(("timestamp_utc", True),),
        description="Recorded permission checks of this user, newest first.",
    )
    changes_acknowledged = to_many(
        ("ExternalDataChange", "schema.external_data"),
        _EXTERNAL_CHANGES,
        "acknowledged_by",
        order=(("acknowledged_at", True),),
        description="External data changes this user acknowledged, most recently acknowledged first.",
    )
    # Every other column that names a user, listed from the user's side (newest first).
    users_created = _by_user(USER, _USERS, "created_by", "Accounts this user invited or created")
    user_roles_assigned = _by_user(
        ("UserRole", "schema.identity"), _USER_ROLES, "assigned_by", "Role grants this user made", "assigned_at"
    )
    organizations_created = _by_user(
        ("Organization", "schema.crm"), _ORGANIZATIONS, "created_by", "Organizations this user created"
    )
    organizations_updated = _by_user(
        ("Organization", "schema.crm"),
        _ORGANIZATIONS,
        "updated_by",
        "Organizations this user last updated",
        "updated_at",
    )
    contacts_created = _by_user(("Contact", "schema.crm"), _CONTACTS, "created_by", "Contacts this user created")
    contacts_updated = _by_user(
        ("Contact", "schema.crm"), _CONTACTS, "updated_by", "Contacts this user last updated", "updated_at"
    )
    opportunity_projects_created = _by_user(PROJECT, _PROJECTS, "created_by", "Projects this user created")
    opportunity_projects_archived = _by_user(
        PROJECT, _PROJECTS, "archived_by", "Projects this user archived", "archived_at"
    )
    opportunity_project_overrides_created = _by_user(
        ("OpportunityProjectOverride", "schema.opportunities"),
        _t(models.OpportunityProjectOverride),
        "created_by",
        "Field overrides this user made",
    )
    opportunity_project_contacts_created = _by_user(
        ("OpportunityProjectContact", "schema.opportunities"),
        _t(models.OpportunityProjectContact),
        "created_by",
        "Contact links this user made",
    )
    capture_plans_created = _by_user(CAPTURE_PLAN, _CAPTURE_PLANS, "created_by", "Capture plans this user created")
    capture_plans_updated = _by_user(
        CAPTURE_PLAN, _CAPTURE_PLANS, "updated_by", "Capture plans this user last updated", "updated_at"
    )
    capture_plans_archived = _by_user(
        CAPTURE_PLAN, _CAPTURE_PLANS, "archived_by", "Capture plans this user archived", "archived_at"
    )
    proposals_managed = _by_user(PROPOSAL, _PROPOSALS, "proposal_manager", "Proposals this user manages")
    proposals_created = _by_user(PROPOSAL, _PROPOSALS, "created_by", "Proposals this user created")
    proposals_updated = _by_user(PROPOSAL, _PROPOSALS, "updated_by", "Proposals this user last updated", "updated_at")
    proposals_archived = _by_user(PROPOSAL, _PROPOSALS, "archived_by", "Proposals this user archived", "archived_at")
    documents_legal_hold_set = _by_user(
        ("Document", "schema.documents"), DOCUMENT_ROWS, "legal_hold_set_by", "Documents this user put under a legal"
        " hold", "legal_hold_set_at"
    )
    documents_deleted = _by_user(
        ("Document", "schema.documents"), DOCUMENT_ROWS, "deleted_by", "Documents this user deleted", "deleted_at"
    )
    document_associations_created = _by_user(
        ("DocumentAssociation", "schema.documents"),
        _t(models.DocumentAssociation),
        "created_by",
        "Document links this user made",
    )
    document_access_logs = _by_user(
        ("DocumentAccessLog", "schema.documents"),
        _t(models.DocumentAccessLog),
        "user_id",
        "This user's document accesses",
        "accessed_at",
    )
    activities_updated = _by_user(
        ACTIVITY, _ACTIVITIES, "updated_by", "Activities this user last updated", "updated_at"
    )
    activity_participants_added = _by_user(
        ("ActivityParticipant", "schema.activities"),
        _t(models.ActivityParticipant),
        "added_by",
        "Participants this user added",
        "added_at",
    )
    activity_participations = participations_of(ParticipantType.USER)
    external_opportunity_sources_created = _by_user(
        ("ExternalOpportunitySource", "schema.external_data"),
        _SOURCES,
        "created_by",
        "External sources this user created",
    )
    polling_configurations_created = _by_user(
        ("PollingConfiguration", "schema.external_data"),
        _t(models.PollingConfiguration),
        "created_by",
        "Polling schedules this user created",
    )
    saved_searches_created = _by_user(
        ("SavedSearch", "schema.sync"), _t(models.SavedSearch), "created_by", "Saved searches this user created"
    )
    saved_search_candidates_decided = _by_user(
        ("SavedSearchCandidate", "schema.sync"),
        _t(models.SavedSearchCandidate),
        "decided_by",
        "Candidates this user dismissed or tracked, latest decision",
        "decided_at",
    )
    history = history(EntityType.USER)


@strawberry.type(description="The customer organisation: every record of the caller belongs to it.")
class Tenant(EntityNode, relay.Node):
    _table = _TENANTS
    _descriptions = {
        "name": "The customer organisation's name.",
        "subdomain": "The tenant's unique subdomain; sign-in and password reset name the tenant by it.",
        "plan_type": "The subscription plan, e.g. enterprise (free text).",
        "max_users": "Most active user accounts the tenant may have; invitations beyond it are refused.",
        "max_opportunity_projects": "Most opportunity projects the tenant's plan allows (archived ones do not count).",
        "is_active": "Whether the tenant is in service; a deactivated tenant's sessions end.",
        "fedramp_compliant": "The tenant must run under FedRAMP-compliant settings.",
        "subscription_status": "The state of the subscription, e.g. active (free text).",
        "subscription_expires_at": "When the current subscription ends.",
        "billing_email": "Where invoices go.",
    }

    row_id: uuid.UUID
    name: str
    subdomain: str
    plan_type: str
    max_users: int
    max_opportunity_projects: int
    is_active: bool
    fedramp_compliant: bool
    subscription_status: str | None
    subscription_expires_at: datetime | None
    billing_email: str | None
    created_at: datetime
    updated_at: datetime

    users = to_many(USER, _USERS, "tenant_id", order=_BY_NAME, description="Users, by last and first name.")
    roles = to_many(
        ("Role", "schema.identity"),
        _ROLES,
        "tenant_id",
        order=(("name", False),),
        description="Roles (system and custom), by name.",
    )
    organizations = to_many(
        ("Organization", "schema.crm"),
        _ORGANIZATIONS,
        "tenant_id",
        order=(("name", False),),
        description="Organizations, by name.",
    )
    contacts = to_many(
        ("Contact", "schema.crm"),
        _CONTACTS,
        "tenant_id",
        order=_BY_NAME,
        description="Contacts, by last and first name.",
    )
    opportunity_projects = to_many(
        PROJECT, _PROJECTS, "tenant_id", order=(("created_at", True),), description="Projects, newest first."
    )
    documents = document_list("tenant_id", description="Documents (deleted ones left out), newest first.")
    document_categories = to_many(
        ("DocumentCategory", "schema.documents"),
        _CATEGORIES,
        "tenant_id",
        order=(("name", False),),
        description="Document categories, by name.",
    )
    activities = to_many(
        ACTIVITY, _ACTIVITIES, "tenant_id", order=(("created_at", True),), description="Activities, newest first."
    )
    audit_logs = to_many(
        ("AuditLog", "schema.audit"),
        _AUDIT_LOGS,
        "tenant_id",
        order=(("timestamp_utc", True),),
        description="The audit log, newest first.",
    )
    external_opportunity_sources = to_many(
        ("ExternalOpportunitySource", "schema.external_data"),
        _SOURCES,
        "tenant_id",
        order=(("source_name", False),),
        description="External opportunity sources, by name.",
    )
    tenant_configurations = to_many(
        ("TenantConfiguration", "schema.identity"),
        _CONFIGURATIONS,
        "tenant_id",
        order=(("config_key", False),),
        description="Configuration entries, by key.",
    )
    # The tenant's other lists, newest first.
    user_roles = _of_tenant(("UserRole", "schema.identity"), _USER_ROLES, "Role grants", "assigned_at")
    user_sessions = _of_tenant(("UserSession", "schema.identity"), _SESSIONS, "Sessions")
    capture_plans = _of_tenant(CAPTURE_PLAN, _CAPTURE_PLANS, "Capture plans")
    proposals = _of_tenant(PROPOSAL, _PROPOSALS, "Proposals")
    opportunity_project_overrides = _of_tenant(
        ("OpportunityProjectOverride", "schema.opportunities"), _t(models.OpportunityProjectOverride), "Field overrides"
    )
    opportunity_project_contacts = _of_tenant(
        ("OpportunityProjectContact", "schema.opportunities"), _t(models.OpportunityProjectContact), "Contact links"
    )
    document_associations = _of_tenant(
        ("DocumentAssociation", "schema.documents"), _t(models.DocumentAssociation), "Document links"
    )
    document_access_logs = _of_tenant(
        ("DocumentAccessLog", "schema.documents"), _t(models.DocumentAccessLog), "Document accesses", "accessed_at"
    )
    activity_participants = _of_tenant(
        ("ActivityParticipant", "schema.activities"),
        _t(models.ActivityParticipant),
        "Activity participants",
        "added_at",
    )
    external_opportunity_data = _of_tenant(
        ("ExternalOpportunityData", "schema.external_data"),
        _t(models.ExternalOpportunityData),
        "External data versions",
    )
    external_data_changes = _of_tenant(
        ("ExternalDataChange", "schema.external_data"),
        _EXTERNAL_CHANGES,
        "Detected external data changes",
        "change_timestamp",
    )
    polling_configurations = _of_tenant(
        ("PollingConfiguration", "schema.external_data"), _t(models.PollingConfiguration), "Polling schedules"
    )
    api_integration_logs = _of_tenant(
        ("ApiIntegrationLog", "schema.external_data"),
        _t(models.ApiIntegrationLog),
        "Logged API calls",
        "api_call_timestamp",
    )
    saved_searches = _of_tenant(("SavedSearch", "schema.sync"), _t(models.SavedSearch), "Saved searches")
    saved_search_candidates = _of_tenant(
        ("SavedSearchCandidate", "schema.sync"), _t(models.SavedSearchCandidate), "Saved-search candidates",
        "first_seen_at",
    )
    change_history = _of_tenant(("ChangeHistory", "schema.audit"), _CHANGES, "Field changes", "change_timestamp")
    permission_audits = _of_tenant(
        ("PermissionAudit", "schema.audit"), _PERMISSION_AUDITS, "Recorded permission checks", "timestamp_utc"
    )
    history = history(EntityType.TENANT)


@strawberry.type(description="One configuration entry of the tenant (key -> JSON value).")
class TenantConfiguration(EntityNode, TenantOwned, relay.Node):
    _table = _CONFIGURATIONS
    _descriptions = {
        "config_key": "The setting's name, unique in the tenant.",
        "config_type": "The type of the JSON value (free text), e.g. integer, string, json.",
    }

    row_id: uuid.UUID
    config_key: str
    config_type: str
    is_encrypted: bool = strawberry.field(description="Stored encrypted: configValue reads null.")
    created_at: datetime
    updated_at: datetime

    @strawberry.field(description="The value as stored; null when the entry is encrypted (never decrypted here).")
    def config_value(self) -> JSON | None:
        if self.is_encrypted:
            return None
        value: JSON = self._row._mapping["config_value"]
        return value

    history = history(EntityType.TENANT_CONFIGURATION)


@strawberry.type(description="A named set of permissions.")
class Role(EntityNode, TenantOwned, relay.Node):
    _table = _ROLES
    _descriptions = {
        "name": "The role's name, unique in the tenant, e.g. Capture Manager.",
        "description": "What the role is for, in the tenant's words.",
        "is_system_role": "A built-in role: it cannot be changed or deleted.",
    }

    row_id: uuid.UUID
    name: str
    description: str | None
    is_system_role: bool
    created_at: datetime
    updated_at: datetime

    @strawberry.field(description="Permission strings (resource:action), sorted.")
    def permissions(self) -> list[str]:
        stored = self._row._mapping["permissions"] or []
        return sorted(p for p in stored if isinstance(p, str))

    user_roles = to_many(
        ("UserRole", "schema.identity"),
        _USER_ROLES,
        "role_id",
        order=(("assigned_at", False),),
        description="Who holds this role (expired assignments too), oldest first.",
    )
    history = history(EntityType.ROLE)


@strawberry.type(description="A role granted to a user: tenant-wide, or on one opportunity project.")
class UserRole(EntityNode, TenantOwned, relay.Node):
    _table = _USER_ROLES
    _descriptions = {
        "assigned_at": "When the role was granted.",
        "user": "The user holding the role.",
        "role": "The role granted.",
        "assigned_by": "The administrator who granted it.",
    }

    row_id: uuid.UUID
    assigned_at: datetime
    expires_at: datetime | None = strawberry.field(description="Null: the assignment does not expire.")

    user = to_one(USER, _USERS, "user_id")
    role = to_one(("Role", "schema.identity"), _ROLES, "role_id")
    opportunity_project = to_one(
        PROJECT, _PROJECTS, "opportunity_project_id", description="Null: the role applies tenant-wide."
    )
    assigned_by = to_one(USER, _USERS, "assigned_by")
    history = history(EntityType.USER_ROLE)


@strawberry.type(description="A signed-in session. Its token is never shown again after sign-in, nor its hash.")
class UserSession(EntityNode, TenantOwned, relay.Node):
    _table = _SESSIONS
    _descriptions = {
        "created_at": "When the user signed in (the session began).",
        "last_activity_at": "The last request on the session (written at most once a minute); the idle timeout"
        " counts from it.",
        "expires_at": "The absolute end of the session, whatever the activity.",
        "ip_address": "The client address at sign-in.",
        "user_agent": "The browser or client that signed in (its User-Agent header).",
        "is_active": "The session can still be used (not ended, not expired).",
        "terminated_at": "When the session was ended; null while it runs.",
        "termination_reason": "Why it ended: logout, idle_timeout, absolute_timeout, revoked, password_changed,"
        " user_deactivated, tenant_deactivated, role_assignment_expired or account_locked.",
        "mfa_verified": "The second factor was verified for this session.",
        "user": "Whose session it is.",
    }

    row_id: uuid.UUID
    created_at: datetime
    last_activity_at: datetime
    expires_at: datetime | None
    ip_address = inet_column(_SESSIONS.c.ip_address)
    user_agent: str | None
    is_active: bool
    terminated_at: datetime | None
    termination_reason: str | None
    mfa_verified: bool

    @strawberry.field(description="True for the session this request is made with.")
    def current(self, info: Info) -> bool:
        return self.row_id == info.context.principal.session_id

    user = to_one(USER, _USERS, "user_id")
    history = history(EntityType.USER_SESSION)


@strawberry.type(description="A role the caller acts with now: an unexpired assignment, or an API key's role.")
class RoleAssignment:
    role: Role = strawberry.field(description="The role and its permissions.")
    opportunity_project_id: uuid.UUID | None = strawberry.field(description="Null: the role applies tenant-wide.")
    expires_at: datetime | None = strawberry.field(description="When the assignment ends; null: it does not expire.")
    _user_role_id: strawberry.Private[uuid.UUID | None]

    @strawberry.field(description="The assignment's record; null for an API key's role (it has none).")
    async def user_role(self, info: Info) -> UserRole | None:
        if self._user_role_id is None:
            return None
        return UserRole.from_row(await info.context.loaders.by_id(_USER_ROLES).load(self._user_role_id))


@strawberry.type(description="A key for a service integration; the key itself is shown only when created.")
class ApiKey:
    id: uuid.UUID = strawberry.field(description="The key's id: what `apiKeyRevoke` takes.")
    name: str = strawberry.field(description="What the key is for, as its creator named it.")
    key_prefix: str = strawberry.field(description="The key's first characters, to tell keys apart.")
    role_id: uuid.UUID = strawberry.field(description="The rowId of the role the key acts with.")
    role_name: str = strawberry.field(description="The name of the role the key acts with.")
    expires_at: datetime = strawberry.field(description="After this the key is refused.")
    revoked_at: datetime | None = strawberry.field(description="When the key was revoked; null while it is usable.")
    revoked_by: uuid.UUID | None = strawberry.field(description="The rowId of the user who revoked it.")
    last_used_at: datetime | None = strawberry.field(description="Updated at most once a minute.")
    created_at: datetime = strawberry.field(description="When the key was created.")
    created_by: uuid.UUID = strawberry.field(description="The rowId of the user who created it.")

    @classmethod
    def from_record(cls, record: ApiKeyRecord) -> ApiKey:
        return cls(**{name: getattr(record, name) for name in _FIELDS[cls]})


@strawberry.type(description="What a project-scoped role assignment grants on its project.")
class ProjectPermissions:
    opportunity_project_id: uuid.UUID = strawberry.field(description="The rowId of the opportunity project.")
    permissions: list[str] = strawberry.field(description="Sorted; the tenant-wide ones left out.")

    @strawberry.field(description="The project (null if the caller cannot read it, e.g. without opportunity:read).")
    async def opportunity_project(self, info: Info) -> _ProjectType | None:
        from schema.opportunities import OpportunityProject

        row = await info.context.loaders.by_id(_PROJECTS).load(self.opportunity_project_id)
        return OpportunityProject.from_row(row)


@strawberry.type(description="The caller: who, in which tenant, with which roles and permissions.")
class Viewer:
    _principal: strawberry.Private[Principal]

    @strawberry.field(description="How the caller authenticated.")
    def credential(self) -> PrincipalKind:
        return self._principal.kind

    @strawberry.field(
        description="Effective permissions of this request, sorted: tenant-wide ones, or with "
        "`opportunityProjectId` those that hold on that project (tenant-wide and project-scoped together)."
    )
    def permissions(
        self,
        opportunity_project_id: Annotated[
            uuid.UUID | None, strawberry.argument(description="An opportunity project's rowId.")
        ] = None,
    ) -> list[str]:
        grants = self._principal.grants
        if opportunity_project_id is None:
            return sorted(grants.tenant_wide)
        return sorted(grants.tenant_wide | grants.per_project.get(opportunity_project_id, frozenset()))

    @strawberry.field(
        description="Permissions granted on single opportunity projects by project-scoped role assignments "
        "(beyond the tenant-wide ones, which hold on every project too), by project id."
    )
    def project_permissions(self) -> list[ProjectPermissions]:
        grants = self._principal.grants
        return [
            ProjectPermissions(opportunity_project_id=project, permissions=sorted(perms - grants.tenant_wide))
            for project, perms in sorted(grants.per_project.items(), key=lambda item: str(item[0]))
            if perms - grants.tenant_wide
        ]

    notifications = NOTIFICATIONS
    notification_preference = NOTIFICATION_PREFERENCE

    @strawberry.field(description="The signed-in user; for an API key, the tenant's system user.")
    async def user(self, info: Info) -> User:
        user = User.from_row(await info.context.loaders.by_id(_USERS).load(self._principal.user_id))
        if user is None:  # the middleware resolved this principal a moment ago
            raise RuntimeError("the caller's user row is not visible")
        return user

    @strawberry.field(description="The caller's tenant.")
    async def tenant(self, info: Info) -> Tenant:
        tenant = Tenant.from_row(await info.context.loaders.by_id(_TENANTS).load(self._principal.tenant_id))
        if tenant is None:
            raise RuntimeError("the caller's tenant row is not visible")
        return tenant

    @strawberry.field(
        description="Unexpired role assignments (by role name, tenant-wide first); for an API key, its role."
        " Every assignment, expired ones too, is on `user.userRoles`."
    )
    async def roles(self, info: Info) -> list[RoleAssignment]:
        rows = await queries.role_assignments(info.context.loaders.db, self._principal)
        return [
            RoleAssignment(
                role=Role.from_row(r),  # type: ignore[arg-type]
                opportunity_project_id=r.opportunity_project_id,
                expires_at=r.expires_at,
                _user_role_id=r.user_role_id,
            )
            for r in rows
        ]

    @strawberry.field(description="The caller's sessions that are still usable, newest first (none for an API key).")
    async def sessions(self, info: Info) -> list[UserSession]:
        rows = await queries.active_sessions(info.context.loaders.db, info.context.auth, self._principal)
        return [UserSession.from_row(r) for r in rows]  # type: ignore[misc]

    @strawberry.field(description="The API key the request was made with, if any.")
    async def api_key(self, info: Info) -> ApiKey | None:
        record = await queries.caller_api_key(info.context.auth, self._principal)
        return None if record is None else ApiKey.from_record(record)


_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.python_name for f in get_object_definition(cls, strict=True).fields) for cls in (ApiKey,)
}


# -- filters and orders of the root lists ------------------------------------------------------


@strawberry.input
class UserFilter:
    row_id: UUIDFilter | None = None
    email: StringFilter | None = None
    last_name: StringFilter | None = None
    is_active: BooleanFilter | None = None
    is_system: BooleanFilter | None = None
    created_at: DateTimeFilter | None = None


@strawberry.enum
class UserOrderField(Enum):
    LAST_NAME = "last_name"
    EMAIL = "email"
    CREATED_AT = "created_at"


@strawberry.input
class UserOrder:
    field: UserOrderField
    direction: OrderDirection = OrderDirection.ASC


@strawberry.input
class RoleFilter:
    row_id: UUIDFilter | None = None
    name: StringFilter | None = None
    is_system_role: BooleanFilter | None = None


# roles: unique (tenant_id, name), (tenant_id, is_system_role).
@strawberry.enum
class RoleOrderField(Enum):
    NAME = "name"
    IS_SYSTEM_ROLE = "is_system_role"


@strawberry.input
class RoleOrder:
    field: RoleOrderField
    direction: OrderDirection = OrderDirection.ASC


# -- inputs and payloads -----------------------------------------------------------------------


@strawberry.input(description="A new API key: its name, the role it acts with and how long it lives.")
class ApiKeyCreateInput:
    name: str = strawberry.field(description="Unique within the tenant, at most 100 characters.")
    role_name: str = strawberry.field(description="The role of the tenant whose permissions the key gets.")
    expires_in_days: int = strawberry.field(description=f"1 to {MAX_EXPIRY_DAYS}: every key expires.")


@strawberry.input(description="A person to invite by email, with the roles the account starts with.")
class UserInviteInput:
    email: str = strawberry.field(description="Where the invitation goes; the new user's sign-in address.")
    first_name: str = strawberry.field(description="The new user's given name.")
    last_name: str = strawberry.field(description="The new user's family name.")
    roles: list[str] = strawberry.field(description="Names of roles of the tenant (system or custom).")


@strawberry.type(description="A TOTP secret being enrolled: show it to the user once (QR code or typed in).")
class MfaEnrollment:
    provisioning_uri: str = strawberry.field(description="otpauth:// URI; contains the secret.")
    secret: str = strawberry.field(description="The base32 secret, for manual entry.")


@strawberry.input(description="The code that confirms an authenticator being enrolled.")
class MfaEnrollmentConfirmInput:
    code: str = strawberry.field(description="The 6-digit code the authenticator shows now.")


@strawberry.input(description="The session to end.")
class SessionRevokeInput:
    id: relay.GlobalID | None = ref_id(
        "UserSession", description="The session's global id (`UserSession.id`); or give its rowId instead."
    )
    row_id: uuid.UUID | None = ref_row_id("UserSession")


@strawberry.input(description="The API key to revoke.")
class ApiKeyRevokeInput:
    id: uuid.UUID = strawberry.field(description="The key's id (`ApiKey.id`).")


@strawberry.input(description="The locked user.")
class UserUnlockInput:
    id: relay.GlobalID | None = ref_id("User")
    row_id: uuid.UUID | None = ref_row_id("User")


@strawberry.input(description="The user to deactivate.")
class UserDeactivateInput:
    id: relay.GlobalID | None = ref_id("User")
    row_id: uuid.UUID | None = ref_row_id("User")


@strawberry.input(description="The user and the temporary password to set.")
class UserSetTemporaryPasswordInput:
    id: relay.GlobalID | None = ref_id("User")
    row_id: uuid.UUID | None = ref_row_id("User")
    password: str = strawberry.field(description="The temporary password; the tenant's password policy applies.")


# -- root fields -------------------------------------------------------------------------------


@strawberry.type
class IdentityQuery:
    @strawberry.field(description="The caller.")
    def viewer(self, info: Info) -> Viewer:
        return Viewer(_principal=info.context.principal)

    users = root_list(
        USER,
        _USERS,
        UserFilter,
        UserOrder,
        default_order=_BY_NAME,
        description="The tenant's users, by last and first name unless ordered otherwise.",
    )
    roles = root_list(
        ("Role", "schema.identity"),
        _ROLES,
        RoleFilter,
        RoleOrder,
        default_order=(("name", False),),
        description="The tenant's roles (system and custom), by name unless ordered otherwise.",
    )

    @strawberry.field(
        description="The tenant's API keys, newest first (not paged: all of them).",
        extensions=[requires(Permission.API_KEY_ADMIN)],
    )
    async def api_keys(
        self,
        info: Info,
        include_revoked: Annotated[bool, strawberry.argument(description="Also list revoked keys.")] = False,
    ) -> list[ApiKey] | None:
        ctx = info.context
        records = await queries.api_keys(ctx.auth, ctx.principal, include_revoked=include_revoked)
        return [ApiKey.from_record(r) for r in records]


async def _mfa_start(args: Args[None]) -> Done:
    ctx = args.context
    enrollment = await mutations.mfa_enrollment_start(ctx.auth, ctx.principal, ctx.meta)
    return Done(node=MfaEnrollment(provisioning_uri=enrollment.provisioning_uri, secret=enrollment.secret))


async def _mfa_confirm(args: Args[MfaEnrollmentConfirmInput]) -> Done:
    ctx = args.context
    codes = await mutations.mfa_enrollment_confirm(ctx.auth, ctx.principal, args.input.code, ctx.meta)
    row = await queries.user(ctx.auth, ctx.principal, ctx.principal.user_id)
    return Done(node=User.from_row(row), extra={"recovery_codes": codes})


async def _session_revoke(args: Args[SessionRevokeInput]) -> Done:
    ctx = args.context
    assert args.id is not None
    row = await mutations.session_revoke(ctx.auth, ctx.principal, args.id, ctx.meta)
    return Done(node=UserSession.from_row(row))


async def _api_key_create(args: Args[ApiKeyCreateInput]) -> Done:
    ctx, value = args.context, args.input
    record, key = await mutations.api_key_create(
        ctx.auth, ctx.principal, name=value.name, role_name=value.role_name,
        expires_in_days=value.expires_in_days, meta=ctx.meta,
    )
    return Done(node=ApiKey.from_record(record), extra={"key": key})


async def _api_key_revoke(args: Args[ApiKeyRevokeInput]) -> Done:
    ctx = args.context
    record = await mutations.api_key_revoke(ctx.auth, ctx.principal, args.input.id, ctx.meta)
    return Done(node=ApiKey.from_record(record))


async def _user_invite(args: Args[UserInviteInput]) -> Done:
    ctx, value = args.context, args.input
    row = await mutations.user_invite(
        ctx.auth, ctx.principal, email=value.email, first_name=value.first_name, last_name=value.last_name,
        role_names=list(value.roles), meta=ctx.meta,
    )
    return Done(node=User.from_row(row))


async def _user_unlock(args: Args[UserUnlockInput]) -> Done:
    ctx = args.context
    assert args.id is not None
    return Done(node=User.from_row(await mutations.user_unlock(ctx.auth, ctx.principal, args.id, ctx.meta)))


async def _user_deactivate(args: Args[UserDeactivateInput]) -> Done:
    ctx = args.context
    assert args.id is not None
    return Done(node=User.from_row(await mutations.user_deactivate(ctx.auth, ctx.principal, args.id, ctx.meta)))


async def _user_set_temporary_password(args: Args[UserSetTemporaryPasswordInput]) -> Done:
    ctx = args.context
    assert args.id is not None
    row = await mutations.user_set_temporary_password(ctx.auth, ctx.principal, args.id, args.input.password, ctx.meta)
    return Done(node=User.from_row(row))


_USER_FIELDS = {"userId": "id"}  # what auth/accounts.py names the target user


@strawberry.type
class IdentityMutation:
    mfa_enrollment_start = mutation(
        "mfaEnrollmentStart",
        input=None,
        permission=None,
        service=_mfa_start,
        returns=Entity(MfaEnrollment, "new authenticator secret to confirm with a code", field="enrollment"),
        description="Begin TOTP enrolment for the signed-in user (password sessions only).",
    )
    mfa_enrollment_confirm = mutation(
        "mfaEnrollmentConfirm",
        input=MfaEnrollmentConfirmInput,
        input_description="The code the authenticator shows now.",
        permission=None,
        service=_mfa_confirm,
        returns=Entity(User, "caller, now with MFA enabled", field="user"),
        extra={"recovery_codes": Extra(list[str] | None, "Single-use recovery codes, shown this once.")},
        description="Turn MFA on with a code from the authenticator; returns recovery codes.",
    )
    session_revoke = mutation(
        "sessionRevoke",
        input=SessionRevokeInput,
        input_description="The session to end.",
        permission=None,
        service=_session_revoke,
        returns=Entity(UserSession, "session, now ended", field="session"),
        error_fields={"sessionId": "id"},
        description="End a session now: your own, or any of the tenant's with user:admin (without it, another "
        "user's session is answered as missing, and the attempt is audited).",
    )
    api_key_create = mutation(
        "apiKeyCreate",
        input=ApiKeyCreateInput,
        input_description="The new key: name, role and lifetime.",
        permission=Permission.API_KEY_ADMIN,
        service=_api_key_create,
        returns=Entity(ApiKey, "API key created (its secret is in `key`)", field="api_key"),
        extra={"key": Extra(str | None, "The key, shown this once: send it as `Authorization: Bearer <key>`.")},
        description="Create an API key scoped to one role; the key is in the payload, this once.",
    )
    api_key_revoke = mutation(
        "apiKeyRevoke",
        input=ApiKeyRevokeInput,
        input_description="The key to revoke.",
        permission=Permission.API_KEY_ADMIN,
        service=_api_key_revoke,
        returns=Entity(ApiKey, "API key, now revoked", field="api_key"),
        description="Revoke an API key at once.",
    )
    user_invite = mutation(
        "userInvite",
        input=UserInviteInput,
        input_description="Who to invite and with which roles.",
        permission=Permission.USER_ADMIN,
        service=_user_invite,
        returns=Entity(User, "invited user (inactive until the invitation is accepted)", field="user"),
        description="Invite a person by email (a single-use link valid 24 hours).",
    )
    user_unlock = mutation(
        "userUnlock",
        input=UserUnlockInput,
        input_description="The locked user.",
        permission=Permission.USER_ADMIN,
        service=_user_unlock,
        returns=Entity(User, "user, no longer locked", field="user"),
        error_fields=_USER_FIELDS,
        description="Lift a lockout.",
    )
    user_deactivate = mutation(
        "userDeactivate",
        input=UserDeactivateInput,
        input_description="The user to deactivate.",
        permission=Permission.USER_ADMIN,
        service=_user_deactivate,
        returns=Entity(User, "user, now deactivated", field="user"),
        error_fields=_USER_FIELDS,
        description="Disable an account and end its sessions.",
    )
    user_set_temporary_password = mutation(
        "userSetTemporaryPassword",
        input=UserSetTemporaryPasswordInput,
        input_description="The user and the temporary password.",
        permission=Permission.USER_ADMIN,
        service=_user_set_temporary_password,
        returns=Entity(User, "user, who must change the password at the next sign-in", field="user"),
        error_fields=_USER_FIELDS,
        description="Set a temporary password the user must change at the next sign-in.",
    )
