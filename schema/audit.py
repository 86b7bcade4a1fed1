"""The audit trail: audit logs, field-level change history, permission audit.

These rows are written by the flush hook and the side-effect writer with secret values already
redacted (models/audit.py), so `beforeValues`, `afterValues`, `oldValue` and `newValue` are shown
as stored. `entity` resolves the polymorphic (entity_type, entity_id) pair to the `Node` it names;
it is null when the type is not an entity (audit logs record events such as `session`), when the
row is gone, or when the id belongs to another tenant.
"""

from __future__ import annotations

import datetime
import uuid
from enum import Enum
from typing import Annotated

import strawberry
from graphql import GraphQLError
from sqlalchemy import Table
from strawberry import relay

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from models import AuditLog as AuditLogModel
from models import ChangeHistory as ChangeHistoryModel
from models import PermissionAudit as PermissionAuditModel
from models import User as UserModel
from models.enums import ChangeSource, EntityType, ImpactLevel, RiskLevel
from resolvers.audit import queries
from resolvers.common.filters import FilterError
from resolvers.common.pagination import PaginationError
from resolvers.common.trail_guard import withheld_columns, withhold
from schema.context import Info
from schema.entities import ENTITY_TARGETS, history
from schema.fields import enum_column, inet_column
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
from schema.relations import (
    bad_input,
    page_args,
    polymorphic,
    refuse_unreadable_columns,
    root_list,
    to_many,
    to_one,
)
from schema.scalars import JSON

__all__ = [
    "AuditLog",
    "AuditLogFilter",
    "AuditLogOrder",
    "AuditLogOrderField",
    "AuditQuery",
    "ChangeHistory",
    "ChangeHistoryFilter",
    "ChangeHistoryOrder",
    "ChangeHistoryOrderField",
    "ChangeSource",
    "EntityType",
    "ImpactLevel",
    "PermissionAudit",
    "RiskLevel",
]

_AUDIT: Table = AuditLogModel.__table__
_CHANGES: Table = ChangeHistoryModel.__table__
_PERMISSIONS: Table = PermissionAuditModel.__table__
_USERS: Table = UserModel.__table__
USER = ("User", "schema.identity")
CHANGE = ("ChangeHistory", "schema.audit")

# The value sets as GraphQL enums (strawberry registers the models' own classes; docs/enums.md).


@strawberry.type(
    description="One audited action: who, what, on which record, before and after, from which request."
)
class AuditLog(EntityNode, TenantOwned, relay.Node):
    _table = _AUDIT
    _descriptions = {
        "user_agent": "The client software of the request (its User-Agent header).",
        "ip_address": "The client address of the request.",
        "entity_id": "The rowId of the record acted on, when there is one (see `entity`).",
        "operation_description": "A sentence saying what happened, for people reading the log.",
        "change_reason": "The reason the actor gave, e.g. an archive's reason.",
        "access_granted": "False for a refused action (a denial); true otherwise.",
        "permission_used": "The permission(s) the action needed, as resource:action, comma-separated.",
        "risk_level": "How sensitive the action was, for review and alerting.",
        "request_id": "The id of the HTTP request the action was part of: the rows of one request share it.",
        "trace_id": "The W3C trace id of that request (its OpenTelemetry trace, or a trusted proxy's"
        " traceparent), when it had one: a trace may span several requests.",
        "api_endpoint": "The endpoint called, e.g. /graphql or /auth/login.",
        "http_method": "The HTTP method of the request.",
        "response_status": "The HTTP status answered, where the action was a request of its own (e.g. 401).",
        "timestamp_utc": "When the action happened (UTC).",
    }

    row_id: uuid.UUID
    session_id: str | None = strawberry.field(
        description="The session's id (or `api_key:<id>`) the action was made with; never a token."
    )
    ip_address = inet_column(_AUDIT.c.ip_address)
    user_agent: str | None
    action_type: str = strawberry.field(description="What happened, e.g. `create`, `auth.session.revoked`.")
    entity_type: str = strawberry.field(
        description="The kind of record: an EntityType value, or an event kind such as `session`."
    )
    entity_id: uuid.UUID | None
    operation_description: str | None
    @strawberry.field(
        description="Values before the action (secrets redacted at write time). A guarded column's value"
        ' the caller may not read on this record is "[withheld]" (docs/permissions.md).'
    )
    async def before_values(self, info: Info) -> JSON | None:
        return await _document(self, info, "before_values")

    @strawberry.field(
        description="Values after the action (secrets redacted at write time). A guarded column's value"
        ' the caller may not read on this record is "[withheld]" (docs/permissions.md).'
    )
    async def after_values(self, info: Info) -> JSON | None:
        return await _document(self, info, "after_values")

    @strawberry.field(
        description="The names of the changed columns (as an object of values, guarded values the caller"
        ' may not read are "[withheld]").'
    )
    async def changed_fields(self, info: Info) -> JSON | None:
        return await _document(self, info, "changed_fields")

    change_reason: str | None
    access_granted: bool
    permission_used: str | None
    risk_level = enum_column(RiskLevel, _AUDIT.c.risk_level)
    request_id: str | None
    trace_id: str | None
    api_endpoint: str | None
    http_method: str | None
    response_status: int | None
    timestamp_utc: datetime.datetime

    user = to_one(USER, _USERS, "user_id", description="The actor; null for system processes.")
    entity = polymorphic(
        "entity_type", "entity_id", ENTITY_TARGETS,
        description="The record acted on, when entityType is an EntityType value and it still exists.",
    )
    history = history(EntityType.AUDIT_LOG)


@strawberry.type(description="One changed field of one record; the rows of one change share changeBatchId.")
class ChangeHistory(EntityNode, TenantOwned, relay.Node):
    _table = _CHANGES
    _descriptions = {
        "entity_type": "The kind of record changed (see `entity`).",
        "entity_id": "The rowId of the record changed.",
        "change_timestamp": "When the change was made.",
        "field_name": "The changed column, by its database name (e.g. pipeline_stage).",
        "changed_by_system_process": "The process that made the change when no person did, e.g. the sync worker.",
        "change_source": "Who or what made the change.",
        "change_category": "A grouping of the change (free text), e.g. create, update, delete, archive.",
        "change_impact_level": "How much the change matters; HIGH and CRITICAL need acknowledgement.",
        "notification_triggered": "Whether the change sent a notification.",
        "change_batch_id": "Shared by the rows of one change: the fields one write changed together.",
        "changed_by_user": "The person who made the change; null for system and sync changes.",
        "parent_change": "The change this one was made as part of (e.g. a cascade).",
    }

    row_id: uuid.UUID
    entity_type = enum_column(EntityType, _CHANGES.c.entity_type)
    entity_id: uuid.UUID
    change_timestamp: datetime.datetime
    field_name: str
    @strawberry.field(
        description="The value before the change, as stored (secrets redacted at write time). A guarded"
        " column's value needs its permission on this record (null and FORBIDDEN without it;"
        " docs/permissions.md)."
    )
    async def old_value(self, info: Info) -> JSON | None:
        return await _column_value(self, info, "old_value")

    @strawberry.field(
        description="The value after the change, as stored (secrets redacted at write time). A guarded"
        " column's value needs its permission on this record (null and FORBIDDEN without it;"
        " docs/permissions.md)."
    )
    async def new_value(self, info: Info) -> JSON | None:
        return await _column_value(self, info, "new_value")
    changed_by_system_process: str | None
    change_source = enum_column(ChangeSource, _CHANGES.c.change_source)
    change_category: str | None
    change_impact_level = enum_column(ImpactLevel, _CHANGES.c.change_impact_level)
    notification_triggered: bool
    change_batch_id: uuid.UUID | None
    created_at: datetime.datetime

    entity = polymorphic(
        "entity_type", "entity_id", ENTITY_TARGETS, description="The changed record; null once it is gone."
    )
    changed_by_user = to_one(USER, _USERS, "changed_by_user_id")
    parent_change = to_one(CHANGE, _CHANGES, "parent_change_id")
    child_changes = to_many(
        CHANGE, _CHANGES, "parent_change_id", order=(("change_timestamp", False),),
        description="Changes made as part of this one, oldest first.",
    )
    history = history(EntityType.CHANGE_HISTORY)


@strawberry.type(description="One recorded permission check: resource, permission, outcome and why.")
class PermissionAudit(EntityNode, TenantOwned, relay.Node):
    _table = _PERMISSIONS
    _descriptions = {
        "resource_type": "The kind of resource checked: for a refused GraphQL field, the type it is on (e.g."
        " CapturePlan).",
        "resource_id": "The rowId of the record accessed, where one is known.",
        "permission_checked": "The permission that was needed, as resource:action.",
        "permission_granted": "Whether the caller held it.",
        "role_used": "The role that granted it, where one did.",
        "explicit_permission": "Whether the permission was named explicitly by a role the caller holds.",
        "denial_reason": "Why access was refused, e.g. capture_plan.strategy:read is required.",
        "ip_address": "The client address of the request.",
        "timestamp_utc": "When the check happened (UTC).",
        "user": "Who was checked.",
    }

    row_id: uuid.UUID
    resource_type: str
    resource_id: uuid.UUID | None
    permission_checked: str
    permission_granted: bool
    role_used: str | None
    explicit_permission: bool
    denial_reason: str | None
    ip_address = inet_column(_PERMISSIONS.c.ip_address)
    timestamp_utc: datetime.datetime

    user = to_one(USER, _USERS, "user_id")
    history = history(EntityType.PERMISSION_AUDIT)


# -- guarded values (resolvers/common/trail_guard.py decides) -------------------------------------


async def _column_value(root: ChangeHistory, info: Info, column: str) -> JSON | None:
    """A change's old or new value; null and FORBIDDEN where its column is guarded on this record."""
    row = root._row._mapping
    field_name = row["field_name"]
    withheld = await withheld_columns(info.context.loaders, row["entity_type"], row["entity_id"], [field_name])
    permission = withheld.get(field_name)
    if permission is not None:
        info.context.denials.add(permission, info)
        raise GraphQLError(
            f"You do not have permission to do this ({permission.value} is required).",
            extensions={"code": "FORBIDDEN", "permission": permission.value},
        )
    value: JSON | None = row[column]
    return value


async def _document(root: AuditLog, info: Info, column: str) -> JSON | None:
    """Before or after values with the guarded values the caller may not read withheld."""
    row = root._row._mapping
    document = row[column]
    if not isinstance(document, dict) or not document:
        return JSON(document) if document is not None else None
    withheld = await withheld_columns(info.context.loaders, row["entity_type"], row["entity_id"], list(document))
    for permission in withheld.values():
        info.context.denials.add(permission, info)
    return JSON(withhold(document, withheld))


# -- filters and orders ------------------------------------------------------------------------


@strawberry.input
class AuditLogFilter:
    row_id: UUIDFilter | None = None
    action_type: StringFilter | None = None
    entity_type: StringFilter | None = None
    entity_id: UUIDFilter | None = None
    user_id: UUIDFilter | None = None
    access_granted: BooleanFilter | None = None
    risk_level: EnumFilter[RiskLevel] | None = None
    request_id: StringFilter | None = None
    timestamp_utc: DateTimeFilter | None = None


# Indexed: (tenant_id, user_id, timestamp_utc DESC), (tenant_id, entity_type, entity_id,
# timestamp_utc DESC), (action_type, timestamp_utc DESC).
@strawberry.enum
class AuditLogOrderField(Enum):
    TIMESTAMP_UTC = "timestamp_utc"
    ACTION_TYPE = "action_type"
    ENTITY_TYPE = "entity_type"


@strawberry.input
class AuditLogOrder:
    field: AuditLogOrderField
    direction: OrderDirection = OrderDirection.ASC


@strawberry.input
class ChangeHistoryFilter:
    entity_type: EnumFilter[EntityType] | None = None
    field_name: StringFilter | None = None
    change_source: EnumFilter[ChangeSource] | None = None
    change_impact_level: EnumFilter[ImpactLevel] | None = None
    changed_by_user_id: UUIDFilter | None = None
    change_batch_id: UUIDFilter | None = None
    change_timestamp: DateTimeFilter | None = None


# Indexed: (entity_type, entity_id, change_timestamp DESC).
@strawberry.enum
class ChangeHistoryOrderField(Enum):
    CHANGE_TIMESTAMP = "change_timestamp"


@strawberry.input
class ChangeHistoryOrder:
    field: ChangeHistoryOrderField
    direction: OrderDirection = OrderDirection.ASC


describe_list_inputs("ChangeHistory", ChangeHistoryFilter, ChangeHistoryOrder)


@strawberry.type
class AuditQuery:
    audit_logs = root_list(
        ("AuditLog", "schema.audit"), _AUDIT, AuditLogFilter, AuditLogOrder,
        default_order=(("timestamp_utc", True),),
        description="The tenant's audit log, newest first (timestampUtc descending) unless ordered"
        " otherwise.",
    )

    @strawberry.field(
        description=paged(
            "The change history of one record (any entity type), newest first unless ordered otherwise."
        )
    )
    async def change_history(
        self,
        info: Info,
        entity_id: Annotated[uuid.UUID, strawberry.argument(description="The record's row id (its `rowId`).")],
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
        filter: Annotated[ChangeHistoryFilter | None, strawberry.argument(description=FILTER_DESCRIPTION)] = None,
        order_by: Annotated[
            list[ChangeHistoryOrder] | None, strawberry.argument(description=ORDER_BY_DESCRIPTION)
        ] = None,
    ) -> Connection[ChangeHistory]:
        refuse_unreadable_columns(info, _CHANGES, filter, order_by)
        try:
            return Connection.of(await queries.change_history(
                info.context.loaders, entity_id, page_args(first, after, last, before), filter, order_by,
                ChangeHistory.from_row,  # type: ignore[arg-type]
            ))
        except (PaginationError, FilterError) as exc:
            raise bad_input(exc) from None
