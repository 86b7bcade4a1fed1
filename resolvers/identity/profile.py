"""Validation of a user's profile (userUpdate): the registry's rules derived from the users table
(lengths, required names), and the avatar address rule declared here."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from models.unit_of_work import UnitOfWork
from resolvers.common.validation import Failure, RuleContext, custom_rule, declare, validate

__all__ = ["check_profile"]

_USERS = "users"


async def check_profile(uow: UnitOfWork, values: dict[str, Any], row: Any) -> None:
    """The registry's rules for the profile values about to be written over `row`."""
    await validate(uow, _USERS, values, row=row)


async def _avatar_https(ctx: RuleContext) -> Failure | None:
    value = ctx.values["avatar_url"]
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc:
        return Failure("avatar url must be an https:// address.")
    return None


declare(
    custom_rule(
        _USERS,
        "avatar_url",
        "https",
        sentence="Avatar url is an https:// address (no other scheme is ever rendered as an image source).",
        check=_avatar_https,
        sample={"avatar_url": "javascript:alert(1)"},
    ),
)
