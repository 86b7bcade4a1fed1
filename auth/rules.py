"""Who may read which rows: one rule per table, from docs/permissions.md ("Row rules").

A rule names the permission a caller needs to see the table's rows and, for data that hangs under
an opportunity project, how a row finds its project, so that a role assigned on one project grants
on that project's subtree only:

    Direct(column)            the row's own column names the project (`id` for projects themselves)
    Via(fk, parent)           the row belongs to a parent row (by `fk`) and is readable with it
    Targets(type, id, {...})  the row points at an entity by (entity_type, entity_id): readable
                              when that entity's project is granted

A rule without a project path is tenant-wide: only a tenant-wide assignment grants it. `own` names
a column that makes a row readable to the user it names whatever the roles say (a user's own
account, role assignments and sessions). Tables absent here are not readable through the API.

`levels` (documents only) adds the row's access level (docs/enums.md, AccessLevel) to the rule:
`tenant` rows are read with the permission held anywhere in the tenant, `project_team` rows as the
project path says (a document without a project: tenant-wide holders only), `restricted` and
`confidential` rows additionally only by their named readers (`document_readers`) and their uploader,
whatever else the caller holds. Rows of other tables that hang under such a row (Via, Targets) are
hidden with it (resolvers/common/scope.py), and so is the trail about them (trail_guard.py).

`FIELD_RULES` lists the columns that need more than the row's permission (field denial): the
entity type showing the column gets `@requiresPermission` on that field (schema/node.py), which
gives null and a FORBIDDEN error where the permission is missing, and a filter or order on the
column is refused unless the permission covers every row the caller reads.

The SQL is built in resolvers/common/scope.py; the field extension is schema/permissions.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from auth.permissions import Permission

__all__ = [
    "DOCUMENT_LEVELS",
    "ENTITY_TABLES",
    "FIELD_RULES",
    "POINTERS",
    "READ_RULES",
    "Direct",
    "Levels",
    "ProjectPath",
    "ReadRule",
    "Targets",
    "Via",
    "guarded_columns",
]

P = Permission


@dataclass(frozen=True, slots=True)
class Direct:
    column: str


@dataclass(frozen=True, slots=True)
class Via:
    fk: str
    parent: str


@dataclass(frozen=True, slots=True)
class Targets:
    type_column: str
    id_column: str
    tables: Mapping[str, str] = field(default_factory=dict)  # entity_type value -> table


ProjectPath = Direct | Via | Targets


@dataclass(frozen=True, slots=True)
class Levels:
    """Per-row access levels: the level column, the named readers' table and the owner column."""

    column: str  # e.g. access_level
    readers: str  # the table naming readers: (tenant_id, <readers_fk>, user_id)
    readers_fk: str
    owner: str  # the row's owner (uploader): always among its readers
    open_values: tuple[str, ...] = ("tenant", "project_team")  # levels every holder of the rule may read
    tenant_value: str = "tenant"  # the level read with the permission held anywhere in the tenant


@dataclass(frozen=True, slots=True)
class ReadRule:
    permission: Permission | None  # None: every caller of the tenant reads it
    project: ProjectPath | None = None
    own: str | None = None
    levels: Levels | None = None


DOCUMENT_LEVELS = Levels("access_level", "document_readers", "document_id", "uploaded_by")


_UNDER_PROJECT = Direct("opportunity_project_id")

READ_RULES: Mapping[str, ReadRule] = MappingProxyType(
    {
        "tenants": ReadRule(None),
        "users": ReadRule(P.USER_READ, own="id"),
        "roles": ReadRule(P.USER_READ),
        "user_roles": ReadRule(P.USER_READ, own="user_id"),
        "user_sessions": ReadRule(P.USER_ADMIN, own="user_id"),
        "tenant_configurations": ReadRule(P.TENANT_ADMIN),
        "organizations": ReadRule(P.ORGANIZATION_READ),
        "contacts": ReadRule(P.CONTACT_READ),
        "opportunity_projects": ReadRule(P.OPPORTUNITY_READ, Direct("id")),
        "opportunity_project_overrides": ReadRule(P.OPPORTUNITY_READ, _UNDER_PROJECT),
        "opportunity_project_contacts": ReadRule(P.OPPORTUNITY_READ, _UNDER_PROJECT),
        "external_opportunity_sources": ReadRule(P.SOURCE_READ),
        "external_opportunity_data": ReadRule(P.EXTERNAL_DATA_READ, _UNDER_PROJECT),
        "external_data_changes": ReadRule(P.EXTERNAL_DATA_READ, _UNDER_PROJECT),
        "polling_configurations": ReadRule(P.SOURCE_READ, _UNDER_PROJECT),
        "api_integration_logs": ReadRule(P.SOURCE_ADMIN),
        "saved_searches": ReadRule(P.SAVED_SEARCH_READ),
        "saved_search_candidates": ReadRule(P.SAVED_SEARCH_READ),
        "documents": ReadRule(P.DOCUMENT_READ, _UNDER_PROJECT, levels=DOCUMENT_LEVELS),
        "document_categories": ReadRule(P.DOCUMENT_READ),
        "document_associations": ReadRule(P.DOCUMENT_READ, Via("document_id", "documents")),
        "document_access_logs": ReadRule(P.AUDIT_READ),
        "activities": ReadRule(
            P.ACTIVITY_READ,
            Targets(
                "entity_type",
                "entity_id",
                {
                    "opportunity_project": "opportunity_projects",
                    "capture_plan": "capture_plans",
                    "proposal": "proposals",
                    "document": "documents",
                },
            ),
        ),
        "activity_participants": ReadRule(P.ACTIVITY_READ, Via("activity_id", "activities")),
        "capture_plans": ReadRule(P.CAPTURE_PLAN_READ, _UNDER_PROJECT),
        "proposals": ReadRule(P.PROPOSAL_READ, _UNDER_PROJECT),
        "audit_logs": ReadRule(P.AUDIT_READ),
        "change_history": ReadRule(P.HISTORY_READ),
        "permission_audit": ReadRule(P.AUDIT_READ),
    }
)

#: Rows that also name a row by (entity_type, entity_id) beside their rule's own path: hidden too when
#: that row is hidden by its access level (a link of a readable document to a restricted one).
POINTERS: Mapping[str, Targets] = MappingProxyType(
    {"document_associations": Targets("entity_type", "entity_id", {"document": "documents"})}
)

FIELD_RULES: Mapping[tuple[str, str], Permission] = MappingProxyType(
    {
        ("opportunity_projects", "win_probability_score"): P.OPPORTUNITY_SCORE_READ,
        ("opportunity_projects", "strategic_value_score"): P.OPPORTUNITY_SCORE_READ,
        ("opportunity_projects", "pursuit_health_score"): P.OPPORTUNITY_SCORE_READ,
        ("capture_plans", "win_strategy"): P.CAPTURE_PLAN_STRATEGY_READ,
        ("capture_plans", "competitive_analysis"): P.CAPTURE_PLAN_STRATEGY_READ,
        ("capture_plans", "resource_requirements"): P.CAPTURE_PLAN_STRATEGY_READ,
        ("external_opportunity_sources", "api_endpoint"): P.SOURCE_ADMIN,
        ("external_opportunity_sources", "last_error_message"): P.SOURCE_ADMIN,
        ("tenants", "billing_email"): P.TENANT_ADMIN,
        ("tenants", "subscription_status"): P.TENANT_ADMIN,
        ("tenants", "subscription_expires_at"): P.TENANT_ADMIN,
        ("users", "locked_until"): P.USER_ADMIN,
        ("users", "last_login_at"): P.USER_ADMIN,
        ("users", "must_change_password"): P.USER_ADMIN,
        # Where a document's object is stored: internal (deprecated fields, withheld in the trail too).
        ("documents", "storage_key"): P.DOCUMENT_STORAGE_READ,
        ("documents", "storage_bucket"): P.DOCUMENT_STORAGE_READ,
        ("documents", "storage_url"): P.DOCUMENT_STORAGE_READ,
        ("documents", "storage_region"): P.DOCUMENT_STORAGE_READ,
        ("documents", "encryption_key_id"): P.DOCUMENT_STORAGE_READ,
    }
)

# The table each `entity_type` value of the audit trail (change_history, audit_logs) names
# (models.enums.EntityType, docs/enums.md): a trail row about an entity is read under that table's
# rules (resolvers/common/trail_guard.py). audit_logs rows whose entity_type is not listed here are
# events (a sign-in, a refused mutation), not rows about an entity.
ENTITY_TABLES: Mapping[str, str] = MappingProxyType(
    {
        "tenant": "tenants",
        "tenant_configuration": "tenant_configurations",
        "user": "users",
        "role": "roles",
        "user_role": "user_roles",
        "user_session": "user_sessions",
        "external_opportunity_source": "external_opportunity_sources",
        "opportunity_project": "opportunity_projects",
        "external_opportunity_data": "external_opportunity_data",
        "opportunity_project_override": "opportunity_project_overrides",
        "organization": "organizations",
        "contact": "contacts",
        "opportunity_project_contact": "opportunity_project_contacts",
        "document_category": "document_categories",
        "document": "documents",
        "document_association": "document_associations",
        "document_access_log": "document_access_logs",
        "activity": "activities",
        "activity_participant": "activity_participants",
        "capture_plan": "capture_plans",
        "proposal": "proposals",
        "audit_log": "audit_logs",
        "change_history": "change_history",
        "permission_audit": "permission_audit",
        "polling_configuration": "polling_configurations",
        "api_integration_log": "api_integration_logs",
        "external_data_change": "external_data_changes",
        "saved_search": "saved_searches",
        "saved_search_candidate": "saved_search_candidates",
    }
)

_GUARDED_BY_TABLE: dict[str, dict[str, Permission]] = {}
for (_table_name, _column), _permission in FIELD_RULES.items():
    _GUARDED_BY_TABLE.setdefault(_table_name, {})[_column] = _permission


def guarded_columns(table: str) -> Mapping[str, Permission]:
    """The guarded columns of `table` (FIELD_RULES) with the permission each needs; {} for none."""
    return MappingProxyType(_GUARDED_BY_TABLE.get(table, {}))
