"""Mutations on custom roles and role assignments (auth/roles.py holds the rules)."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry
from strawberry import relay

from auth import roles
from auth.permissions import Permission
from schema.identity import Role, UserRole
from schema.mutation_kit import UPDATED_AT, Args, Deleted, Done, Entity, mutation, ref_id, ref_row_id

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
    id: relay.GlobalID | None = ref_id("Role", description="The role's global id (`Role.id`); or give its rowId "
                                    "instead. System roles cannot be changed.")
    row_id: uuid.UUID | None = ref_row_id("Role")
    updated_at: datetime = strawberry.field(description="The role's updatedAt as last read (CONFLICT if stale).")
    name: str | None = strawberry.field(default=None, description="The new name, unique within the tenant.")
    description: str | None = strawberry.field(default=None, description="The new description (null: unchanged).")
    permissions: list[str] | None = strawberry.field(
        default=None, description="The new set, replacing the old; added permissions must be held by the caller."
    )


@strawberry.input(description="The custom role to delete.")
class RoleDeleteInput:
    id: relay.GlobalID | None = ref_id("Role", description="The global id (`Role.id`) of a custom role with no "
                                    "assignment and no live API key; or give its rowId instead.")
    row_id: uuid.UUID | None = ref_row_id("Role")
    updated_at: datetime = strawberry.field(description=UPDATED_AT)


@strawberry.input(description="A role to grant to a user: tenant-wide or on one project, optionally until a time.")
class UserRoleGrantInput:
    user_id: relay.GlobalID | None = ref_id("User", description="The global id of the user who gets the role "
                                         "(`User.id`); or give userRowId instead.")
    user_row_id: uuid.UUID | None = ref_row_id("User")
    role_id: relay.GlobalID | None = ref_id("Role", description="The global id of the role to grant (`Role.id`); "
                                         "or give roleRowId instead.")
    role_row_id: uuid.UUID | None = ref_row_id("Role")
    opportunity_project_id: relay.GlobalID | None = ref_id(
        "OpportunityProject",
        required=False,
        description="Grant on this project only (and what hangs under it), by its global id (or "
        "opportunityProjectRowId); neither: tenant-wide.",
    )
    opportunity_project_row_id: uuid.UUID | None = ref_row_id("OpportunityProject")
    expires_at: datetime | None = strawberry.field(
        default=None, description="From this instant the assignment grants nothing; null: no expiry."
    )


@strawberry.input(description="The role assignment to take away.")
class UserRoleRevokeInput:
    id: relay.GlobalID | None = ref_id("UserRole", description="The assignment's global id (`UserRole.id`); or "
                                        "give its rowId instead.")
    row_id: uuid.UUID | None = ref_row_id("UserRole")


async def _create(args: Args[RoleCreateInput]) -> Done:
    ctx, value = args.context, args.input
    row = await roles.create_role(
        ctx.auth, ctx.principal, name=value.name, description=value.description,
        permissions=value.permissions, meta=ctx.meta,
    )
    return Done(node=Role.from_row(row))


async def _update(args: Args[RoleUpdateInput]) -> Done:
    ctx, value = args.context, args.input
    assert args.id is not None
    row = await roles.update_role(
        ctx.auth, ctx.principal, role_id=args.id, updated_at=value.updated_at, name=value.name,
        description=value.description, permissions=value.permissions, meta=ctx.meta,
    )
    return Done(node=Role.from_row(row))


async def _delete(args: Args[RoleDeleteInput]) -> uuid.UUID:
    ctx = args.context
    assert args.id is not None
    await roles.delete_role(ctx.auth, ctx.principal, role_id=args.id, updated_at=args.updated_at, meta=ctx.meta)
    return args.id


async def _grant(args: Args[UserRoleGrantInput]) -> Done:
    ctx, values = args.context, args.values
    row = await roles.grant_role(
        ctx.auth, ctx.principal, user_id=values["user_id"], role_id=values["role_id"],
        project_id=values.get("opportunity_project_id"), expires_at=args.input.expires_at, meta=ctx.meta,
    )
    return Done(node=UserRole.from_row(row))


async def _revoke(args: Args[UserRoleRevokeInput]) -> uuid.UUID:
    ctx = args.context
    assert args.id is not None
    await roles.revoke_role(ctx.auth, ctx.principal, user_role_id=args.id, meta=ctx.meta)
    return args.id


@strawberry.type
class RolesMutation:
    role_create = mutation(
        "roleCreate",
        input=RoleCreateInput,
        input_description="The new role: its name, description and permissions.",
        permission=Permission.ROLE_ADMIN,
        service=_create,
        returns=Entity(Role, "role created"),
        description="Create a custom role from permissions of the catalog.",
    )
    role_update = mutation(
        "roleUpdate",
        input=RoleUpdateInput,
        input_description="The role, the updatedAt read, and the fields to change.",
        permission=Permission.ROLE_ADMIN,
        service=_update,
        returns=Entity(Role, "role as changed"),
        description="Rename a custom role or change its permissions (effective at the holders' next request).",
    )
    role_delete = mutation(
        "roleDelete",
        input=RoleDeleteInput,
        input_description="The role to delete.",
        permission=Permission.ROLE_ADMIN,
        service=_delete,
        returns=Deleted(Role, "role"),
        description="Delete a custom role that nobody holds.",
    )
    user_role_grant = mutation(
        "userRoleGrant",
        input=UserRoleGrantInput,
        input_description="Who gets which role, where and until when.",
        permission=Permission.USER_ADMIN,
        service=_grant,
        returns=Entity(UserRole, "role assignment created"),
        description="Give a user a role, tenant-wide or on one opportunity project, optionally until a time.",
    )
    user_role_revoke = mutation(
        "userRoleRevoke",
        input=UserRoleRevokeInput,
        input_description="The assignment to take away.",
        permission=Permission.USER_ADMIN,
        service=_revoke,
        returns=Deleted(UserRole, "role assignment"),
        description="Take a role assignment away (the user's next request no longer has it).",
    )
