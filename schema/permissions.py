"""Declared permissions: the one way a GraphQL field asks for a permission.

    @strawberry.mutation(extensions=[requires(Permission.USER_ADMIN)])

attaches `Requires(Permission.USER_ADMIN)` (a strawberry `BasePermission`) through strawberry's
`PermissionExtension`, and prints `@requiresPermission(permission: "user:admin")` on the field in
the SDL, so the exported schema says who may call what. Resolvers never check permissions by hand.

"Own or admin" is declared too: `requires(Permission.USER_ADMIN, unless_owner=(arg, owner_of))`
lets a caller without the permission through when `owner_of(info, value of arg)` (a lookup the
resolver layer provides) returns the caller's own user id. The SDL shows it as
`@requiresPermission(permission: "user:admin", unlessOwnerOf: "sessionId")`.

A project-scoped grant counts where the target belongs to that project: on an entity's field, the
row's project (auth/rules.py says how a row finds it); on a mutation, `project=(arg, lookup)`
names the argument and the lookup that finds its project.

The fields of the columns in auth.rules.FIELD_RULES get this extension automatically
(schema/node.py); every such field is nullable, since a refusal there is field denial: the field is
null, the response carries a GraphQL error with `extensions.code = "FORBIDDEN"`, the permission and
the field's path, and the rest of the object is served. Rows the caller may not read at all are
never reached: that is row denial, in the SQL (resolvers/common/scope.py).

Every refusal is audited, outside the request's own transaction (a read stays read-only): a refused
query field counts in `context.denials`, which writes one permission_audit row per (permission,
field path without list indices) with the count when the operation ends; a refused mutation writes
one audit_logs row (ACCESS_DENIED, access_granted false, permission_used, risk medium) through
`record_event`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import strawberry
from graphql import OperationType
from sqlalchemy import Table
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema_directive import Location
from strawberry.types.field import StrawberryField
from strawberry.types.unset import UNSET
from strawberry.utils.str_converters import to_camel_case

from auth.audit import AuthEvent, record_caller_event
from auth.permissions import Permission
from auth.rules import READ_RULES
from models.enums import RiskLevel
from schema.context import GraphQLContext, Info
from schema.node import EntityNode

__all__ = ["DescribedPermissions", "OwnerLookup", "ProjectLookup", "Requires", "RequiresPermission", "requires"]

# (argument's Python name, lookup): the lookup returns the user id that owns the argument's target,
# or None when the target does not exist (for this tenant).
OwnerLookup = tuple[str, Callable[[GraphQLContext, Any], Awaitable[uuid.UUID | None]]]
# (argument's Python name, lookup): the lookup returns the opportunity project the argument's
# target belongs to (or will belong to), or None when there is none (for this tenant).
ProjectLookup = tuple[str, Callable[[GraphQLContext, Any], Awaitable[uuid.UUID | None]]]


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="requiresPermission",
    description="The caller needs this permission (unless it owns the target named by unlessOwnerOf).",
)
class RequiresPermission:
    permission: str
    unless_owner_of: str | None = UNSET


class Requires(BasePermission):
    """The caller holds `permission` where it applies, or owns the target (with `unless_owner`).

    Where it applies: tenant-wide always counts; on an entity's field, a grant on the row's project
    counts too; on a mutation, a grant on the project that `project`'s lookup finds for the
    argument; with `covering`, a grant on every project whose rows of that table the caller reads
    (an aggregate over them).
    """

    def __init__(
        self,
        permission: Permission,
        *,
        unless_owner: OwnerLookup | None = None,
        project: ProjectLookup | None = None,
        covering: Table | None = None,
    ) -> None:
        self.permission = permission
        self.unless_owner = unless_owner
        self.project = project
        self.covering = covering
        self.message = f"You do not have permission to do this ({permission.value} is required)."
        self.error_extensions = {"code": "FORBIDDEN", "permission": permission.value}
        owner_arg = strawberry.UNSET if unless_owner is None else to_camel_case(unless_owner[0])
        self._directive = RequiresPermission(permission=permission.value, unless_owner_of=owner_arg)

    def sentence(self, field: StrawberryField) -> str:
        """What the field's description says about this permission (appended by `requires`)."""
        text = f"Requires the `{self.permission.value}` permission"
        if self.unless_owner is not None:
            text += f", unless the caller owns the target of `{to_camel_case(self.unless_owner[0])}`"
        if self.project is not None:
            argument = to_camel_case(self.project[0])
            text += f"; a grant on the opportunity project of the target named by `{argument}` counts"
        elif self.covering is not None:
            text += "; project-scoped grants count when they cover every project whose rows are summed"
        elif isinstance(field.origin, type) and issubclass(field.origin, EntityNode):
            rule = READ_RULES.get(field.origin._table.name)
            if rule is not None and rule.project is not None:
                text += "; a grant on the row's opportunity project counts"
        return text + "."

    @property
    def schema_directive(self) -> object:
        """`@requiresPermission(...)` on the field in the SDL (instead of a bare `@Requires`)."""
        return self._directive

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        context = info.context
        principal = context.principal  # UNAUTHENTICATED without one
        if principal.allows(self.permission) or await self._allowed_here(context, source, kwargs):
            return True
        if self.unless_owner is not None:
            argument, owner_of = self.unless_owner
            if argument in kwargs and await owner_of(context, kwargs[argument]) == principal.user_id:
                return True
        if info.operation.operation == OperationType.MUTATION:
            await record_caller_event(
                context.auth.writer,
                principal,
                AuthEvent.ACCESS_DENIED,
                context.meta,
                entity_type="graphql_mutation",
                granted=False,
                risk=RiskLevel.MEDIUM,
                permission=self.permission.value,
                description=f"mutation {info.field_name} refused: {self.permission.value} required",
                status=403,
            )
        else:
            context.denials.add(self.permission, info)
        return False

    async def _allowed_here(self, context: GraphQLContext, source: Any, kwargs: dict[str, Any]) -> bool:
        grants = context.principal.grants
        if not grants.per_project:
            return False
        scope = context.scope
        if self.covering is not None:
            return scope.covers(self.covering, self.permission)
        if isinstance(source, EntityNode):
            return scope.allows_field(self.permission, source._table, getattr(source, "_row", None))
        if self.project is not None:
            argument, project_of = self.project
            if argument in kwargs:
                project_id = await project_of(context, kwargs[argument])
                return project_id is not None and context.principal.allows(self.permission, project_id)
        return False


def requires(
    permission: Permission,
    *,
    unless_owner: OwnerLookup | None = None,
    project: ProjectLookup | None = None,
    covering: Table | None = None,
) -> PermissionExtension:
    """The field extension that declares `Requires(permission, ...)` on a field."""
    return DescribedPermissions(
        [Requires(permission, unless_owner=unless_owner, project=project, covering=covering)]
    )


class DescribedPermissions(PermissionExtension):
    """strawberry's PermissionExtension that also says in the field's description what it needs.

    The sentence comes from the same `Requires` objects that print the directive and check the
    caller, so the description GraphiQL shows cannot drift from the rule.
    """

    def apply(self, field: StrawberryField) -> None:
        super().apply(field)
        description = field.description or ""
        for permission in self.permissions:
            if isinstance(permission, Requires):
                sentence = permission.sentence(field)
                if sentence not in description:
                    description = f"{description} {sentence}".strip()
        field.description = description

