"""Mutations of user accounts beyond invitation, unlock, deactivation and temporary passwords
(schema/identity.py): the profile update and the reactivation. The rules live in auth/accounts.py.

    userUpdate          one's own profile: any signed-in user; another user's: user:admin (and
                        holding everything that user holds); without it, answered as missing
    userReactivate      user:admin; the tenant's max_users holds (USER_LIMIT)
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import strawberry
from strawberry import relay
from strawberry.types.unset import UNSET

from auth import accounts
from auth.permissions import Permission
from resolvers.identity.profile import check_profile
from resolvers.identity.queries import user as user_row
from schema.identity import User
from schema.mutation_kit import UPDATED_AT, Args, Done, Entity, mutation, ref_id, ref_row_id

__all__ = ["UserMutation", "UserReactivateInput", "UserUpdateInput"]


@strawberry.input(description="Changes to a user's profile: only the fields given change; null clears a field.")
class UserUpdateInput:
    id: relay.GlobalID | None = ref_id("User", description="The user's global id (`User.id`; the caller's own: "
                                       "`viewer.user.id`); or give its rowId instead.")
    row_id: uuid.UUID | None = ref_row_id("User")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    first_name: str | None = strawberry.field(default=UNSET, description="1 to 100 characters.")
    last_name: str | None = strawberry.field(default=UNSET, description="1 to 100 characters.")
    title: str | None = strawberry.field(default=UNSET, description="The job title, up to 150 characters.")
    phone: str | None = strawberry.field(default=UNSET, description="A phone number, up to 50 characters.")
    avatar_url: str | None = strawberry.field(default=UNSET, description="An https:// address of a picture, up to "
                                              "500 characters.")


@strawberry.input(description="The deactivated user to switch back on.")
class UserReactivateInput:
    id: relay.GlobalID | None = ref_id("User")
    row_id: uuid.UUID | None = ref_row_id("User")


async def _update(args: Args[UserUpdateInput]) -> Done:
    ctx = args.context
    assert args.id is not None
    await accounts.update_user(
        ctx.auth, ctx.principal, user_id=args.id, updated_at=args.input.updated_at, changes=dict(args.values),
        meta=ctx.meta, check=check_profile,
    )
    return await _done(args, args.id)


async def _reactivate(args: Args[UserReactivateInput]) -> Done:
    ctx = args.context
    assert args.id is not None
    await accounts.reactivate_user(ctx.auth, ctx.principal, user_id=args.id, meta=ctx.meta)
    return await _done(args, args.id)


async def _done(args: Args[Any], user_id: uuid.UUID) -> Done:
    row = await user_row(args.context.auth, args.context.principal, user_id)
    assert row is not None  # the account call just changed it, in the caller's tenant
    return Done(node=User.from_row(row))


_USER_FIELDS = {"userId": "id"}  # what auth/accounts.py names the target user


@strawberry.type
class UserMutation:
    user_update = mutation(
        "userUpdate",
        input=UserUpdateInput,
        input_description="The user, the updatedAt read, and the profile fields to change.",
        permission=None,
        service=_update,
        returns=Entity(User, "user as changed", field="user"),
        error_fields=_USER_FIELDS,
        description="Change a profile: one's own (any signed-in user), or another user's with user:admin "
        "(another user's without it is answered as missing, and audited). Roles, email and security state are "
        "not profile fields.",
    )
    user_reactivate = mutation(
        "userReactivate",
        input=UserReactivateInput,
        input_description="The user to reactivate.",
        permission=Permission.USER_ADMIN,
        service=_reactivate,
        returns=Entity(User, "user, active again", field="user"),
        error_fields=_USER_FIELDS,
        description="Switch a deactivated user back on (their roles are as they were), within the tenant's "
        "maxUsers (USER_LIMIT).",
    )
