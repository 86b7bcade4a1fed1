"""Mutations on custom roles and role assignments (auth/roles.py holds the rules)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import strawberry

from auth import roles
from auth.permissions import Permission
from schema.context import Info
from schema.errors import PAYLOAD_ERRORS, UserError, payload_or_errors
from schema.identity import Role, UserRole
from schema.permissions import requires

__all__ = ["RolesMutation"]


@strawberry.input(description="A new custom role.")
class RoleCreateInput:
    name: str = strawberry.field(description="Unique within the tenant, 1 to 100 characters.")
    description: str | None = strawberry.field(default=None, description="What the role is for.")
    permissions: list[str] = strawberry.field(
        description="Any subset of the permission catalog (docs/permissions.md) that the caller holds tenant-wide."
    )


@strawberry.input(description="Changes to a custom role; fields left out stay as they are.")
class RoleUpdateInput:
    id: uuid.UUID = strawberry.field(description="The role's rowId; system roles cannot be changed.")
    updated_at: datetime = strawberry.field(description="The role's updatedAt as last read (CONFLICT if stale).")
    name: str | None = strawberry.field(default=None, description="The new name, unique within the tenant.")
    description: str | None = strawberry.field(default=None, description="The new description (null: unchanged).")
    permissions: list[str] | None = strawberry.field(
        default=None, description="The new set, replacing the old; added permissions must be held by the caller."
    )


@strawberry.input(description="The custom role to delete.")
class RoleDeleteInput:
    id: uuid.UUID = strawberry.field(description="A custom role with no assignment and no live API key.")


@strawberry.input(description="A role to grant to a user: tenant-wide or on one project, optionally until a time.")
class UserRoleGrantInput:
    user_id: uuid.UUID = strawberry.field(description="The rowId of the user who gets the role.")
    role_id: uuid.UUID = strawberry.field(description="The rowId of the role to grant.")
    opportunity_project_id: uuid.UUID | None = strawberry.field(
        default=None,
        description="Grant on this project only (and what hangs under it); null: tenant-wide.",
    )
    expires_at: datetime | None = strawberry.field(
        default=None, description="From this instant the assignment grants nothing; null: no expiry."
    )


@strawberry.input(description="The role assignment to take away.")
class UserRoleRevokeInput:
    id: uuid.UUID = strawberry.field(description="The assignment's rowId (UserRole).")


@strawberry.type(description="What `roleCreate` returns: its result, or the errors that prevented it.")
class RoleCreatePayload:
    role: Role | None = strawberry.field(
        default=None, description="The role created, as the caller may read it now; null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


@strawberry.type(description="What `roleUpdate` returns: its result, or the errors that prevented it.")
class RoleUpdatePayload:
    role: Role | None = strawberry.field(
        default=None, description="The role as changed, as the caller may read it now; null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


@strawberry.type(description="What `roleDelete` returns: its result, or the errors that prevented it.")
class RoleDeletePayload:
    deleted_id: uuid.UUID | None = strawberry.field(
        default=None, description="The deleted role's rowId; null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


@strawberry.type(description="What `userRoleGrant` returns: its result, or the errors that prevented it.")
class UserRoleGrantPayload:
    user_role: UserRole | None = strawberry.field(
        default=None, description="The role assignment created, as the caller may read it now;"
        " null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


@strawberry.type(description="What `userRoleRevoke` returns: its result, or the errors that prevented it.")
class UserRoleRevokePayload:
    deleted_id: uuid.UUID | None = strawberry.field(
        default=None, description="The revoked role assignment's rowId; null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


_UNDER = ("input",)


@strawberry.type
class RolesMutation:
    @strawberry.mutation(
        description="Create a custom role from permissions of the catalog.",
        extensions=[requires(Permission.ROLE_ADMIN)],
    )
    async def role_create(self,
        info: Info,
        input: Annotated[
            RoleCreateInput, strawberry.argument(description="The new role: its name, description and permissions.")
        ],
    ) -> RoleCreatePayload | None:
        ctx = info.context

        async def work() -> RoleCreatePayload:
            row = await roles.create_role(
                ctx.auth, ctx.principal, name=input.name, description=input.description,
                permissions=input.permissions, meta=ctx.meta,
            )
            return RoleCreatePayload(role=Role.from_row(row))

        return await payload_or_errors(RoleCreatePayload, work(), under=_UNDER)

    @strawberry.mutation(
        description="Rename a custom role or change its permissions (effective at the holders' next request).",
        extensions=[requires(Permission.ROLE_ADMIN)],
    )
    async def role_update(self,
        info: Info,
        input: Annotated[
            RoleUpdateInput, strawberry.argument(description="The role, the updatedAt read, and the fields to change.")
        ],
    ) -> RoleUpdatePayload | None:
        ctx = info.context

        async def work() -> RoleUpdatePayload:
            row = await roles.update_role(
                ctx.auth, ctx.principal, role_id=input.id, updated_at=input.updated_at, name=input.name,
                description=input.description, permissions=input.permissions, meta=ctx.meta,
            )
            return RoleUpdatePayload(role=Role.from_row(row))

        return await payload_or_errors(RoleUpdatePayload, work(), under=_UNDER)

    @strawberry.mutation(
        description="Delete a custom role that nobody holds.", extensions=[requires(Permission.ROLE_ADMIN)]
    )
    async def role_delete(self,
        info: Info,
        input: Annotated[RoleDeleteInput, strawberry.argument(description="The role to delete.")],
    ) -> RoleDeletePayload | None:
        ctx = info.context

        async def work() -> RoleDeletePayload:
            await roles.delete_role(ctx.auth, ctx.principal, role_id=input.id, meta=ctx.meta)
            return RoleDeletePayload(deleted_id=input.id)

        return await payload_or_errors(RoleDeletePayload, work(), under=_UNDER)

    @strawberry.mutation(
        description="Give a user a role, tenant-wide or on one opportunity project, optionally until a time.",
        extensions=[requires(Permission.USER_ADMIN)],
    )
    async def user_role_grant(self,
        info: Info,
        input: Annotated[
            UserRoleGrantInput, strawberry.argument(description="Who gets which role, where and until when.")
        ],
    ) -> UserRoleGrantPayload | None:
        ctx = info.context

        async def work() -> UserRoleGrantPayload:
            row = await roles.grant_role(
                ctx.auth, ctx.principal, user_id=input.user_id, role_id=input.role_id,
                project_id=input.opportunity_project_id, expires_at=input.expires_at, meta=ctx.meta,
            )
            return UserRoleGrantPayload(user_role=UserRole.from_row(row))

        return await payload_or_errors(UserRoleGrantPayload, work(), under=_UNDER)

    @strawberry.mutation(
        description="Take a role assignment away (the user's next request no longer has it).",
        extensions=[requires(Permission.USER_ADMIN)],
    )
    async def user_role_revoke(self,
        info: Info,
        input: Annotated[UserRoleRevokeInput, strawberry.argument(description="The assignment to take away.")],
    ) -> UserRoleRevokePayload | None:
        ctx = info.context

        async def work() -> UserRoleRevokePayload:
            await roles.revoke_role(ctx.auth, ctx.principal, user_role_id=input.id, meta=ctx.meta)
            return UserRoleRevokePayload(deleted_id=input.id)

        return await payload_or_errors(UserRoleRevokePayload, work(), under=_UNDER)
