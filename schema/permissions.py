"""Declared permissions: the one way a GraphQL field asks for a permission.

    @strawberry.mutation(extensions=[requires(Permission.USER_ADMIN)])

attaches `Requires(Permission.USER_ADMIN)` (a strawberry `BasePermission`) through strawberry's
`PermissionExtension`, and prints `@requiresPermission(permission: "user:admin")` on the field in
the SDL, so the exported schema says who may call what. Resolvers never check permissions by hand.

"Own or admin" is declared too: `requires(Permission.USER_ADMIN, unless_owner=(arg, owner_of))`
lets a caller without the permission through when `owner_of(info, value of arg)` (a lookup the
resolver layer provides) returns the caller's own user id. The SDL shows it as
`@requiresPermission(permission: "user:admin", unlessOwnerOf: "sessionId")`.

A refusal is a GraphQL error with `extensions.code = "FORBIDDEN"` and the permission. A refused
mutation also writes one audit row (ACCESS_DENIED, access_granted false, permission_used, risk
medium) through `record_event`, in its own transaction; refused query fields will go to
permission_audit once field-level RBAC is enforced.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import strawberry
from graphql import OperationType
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema_directive import Location
from strawberry.types.unset import UNSET

from auth.audit import AuthEvent, record_event
from auth.permissions import Permission
from models.enums import RiskLevel
from schema.context import GraphQLContext, Info

__all__ = ["OwnerLookup", "Requires", "RequiresPermission", "requires"]

# (argument's Python name, lookup): the lookup returns the user id that owns the argument's target,
# or None when the target does not exist (for this tenant).
OwnerLookup = tuple[str, Callable[[GraphQLContext, Any], Awaitable[uuid.UUID | None]]]


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="requiresPermission",
    description="The caller needs this permission (unless it owns the target named by unlessOwnerOf).",
)
class RequiresPermission:
    permission: str
    unless_owner_of: str | None = UNSET


class Requires(BasePermission):
    """The caller holds `permission` tenant-wide (or owns the target, with `unless_owner`)."""

    def __init__(self, permission: Permission, *, unless_owner: OwnerLookup | None = None) -> None:
        self.permission = permission
        self.unless_owner = unless_owner
        self.message = f"You do not have permission to do this ({permission.value} is required)."
        self.error_extensions = {"code": "FORBIDDEN", "permission": permission.value}
        owner_arg = strawberry.UNSET if unless_owner is None else _camel(unless_owner[0])
        self._directive = RequiresPermission(permission=permission.value, unless_owner_of=owner_arg)

    @property
    def schema_directive(self) -> object:
        """`@requiresPermission(...)` on the field in the SDL (instead of a bare `@Requires`)."""
        return self._directive

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        context = info.context
        principal = context.principal  # UNAUTHENTICATED without one
        if principal.allows(self.permission):
            return True
        if self.unless_owner is not None:
            argument, owner_of = self.unless_owner
            if argument in kwargs and await owner_of(context, kwargs[argument]) == principal.user_id:
                return True
        if info.operation.operation == OperationType.MUTATION:
            await record_event(
                context.auth.writer,
                tenant_id=principal.tenant_id,
                event=AuthEvent.ACCESS_DENIED,
                meta=context.meta,
                user_id=principal.user_id,
                session_id=principal.audit_session,
                entity_type="graphql_mutation",
                granted=False,
                risk=RiskLevel.MEDIUM,
                permission=self.permission.value,
                description=f"mutation {info.field_name} refused: {self.permission.value} required",
                status=403,
            )
        return False


def requires(permission: Permission, *, unless_owner: OwnerLookup | None = None) -> PermissionExtension:
    """The field extension that declares `Requires(permission)` on a field."""
    return PermissionExtension([Requires(permission, unless_owner=unless_owner)])


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
