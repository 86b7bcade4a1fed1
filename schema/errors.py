"""Errors: `UserError` for what the caller can fix, masking (with the request id) for the rest.

    expected, user-fixable   raised below a mutation resolver: auth.exceptions.AuthRequestError,
                             models.errors.DomainError (NotFound, Conflict, Invalid; also what a
                             unit of work makes of a database refusal the caller caused, and
                             the idempotency refusals of models/idempotency.py)
                             -> `UserError{field, code, message}` in the payload's `errors`
                             (`payload_or_errors`, the one place that mapping happens)
    refused                  a GraphQL error with extensions.code FORBIDDEN / UNAUTHENTICATED
                             (schema.permissions, schema.context): shown as raised
    anything else            a bug: logged with its traceback and request id, and answered as
                             "Unexpected error." with extensions {code: INTERNAL_SERVER_ERROR,
                             requestId} (`MaskUnexpectedErrors`), so no internals reach the client

Validation and coercion errors of the document itself (unknown field, bad UUID literal) carry no
original exception and are not masked: they only describe the caller's own request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.types import ExecutionContext
from strawberry.utils.str_converters import to_camel_case

from auth.exceptions import AuthRequestError
from models.errors import DomainError

__all__ = [
    "USER_FIXABLE",
    "MaskUnexpectedErrors",
    "UserError",
    "is_unexpected",
    "log_errors",
    "payload_or_errors",
    "user_error",
]

_log = logging.getLogger("gwm.graphql")
P = TypeVar("P")


@strawberry.type(description="A problem the caller can fix: which input, a stable code, and a message.")
class UserError:
    field: list[str] | None = strawberry.field(
        description="Path to the argument or input field at fault (e.g. [\"input\", \"roleName\"]); "
        "null when the whole request is at fault."
    )
    code: str = strawberry.field(description="Stable machine-readable code, e.g. ROLE_NOT_FOUND.")
    message: str = strawberry.field(description="Human-readable explanation.")


# What payload_or_errors turns into UserErrors: each carries `code`, `message` and `field` (a
# dotted snake_case path relative to `under`, or None).
USER_FIXABLE: tuple[type[Exception], ...] = (AuthRequestError, DomainError)


def user_error(exc: AuthRequestError | DomainError, *, under: Sequence[str] = ()) -> UserError:
    """`exc` as a UserError; `under` is where the service's field names live (e.g. ("input",))."""
    field: list[str] | None = None
    if exc.field:
        field = [*under, *(to_camel_case(part) for part in exc.field.split("."))]
    return UserError(field=field, code=exc.code, message=exc.message)


async def payload_or_errors(
    payload: Callable[..., P], work: Awaitable[P], *, under: Sequence[str] = ()
) -> P:
    """Await `work`; if it refuses with a USER_FIXABLE error, the payload carries the UserError instead."""
    try:
        return await work
    except USER_FIXABLE as exc:
        return payload(errors=[user_error(exc, under=under)])  # type: ignore[arg-type]


def is_unexpected(error: GraphQLError) -> bool:
    """True for an exception the code did not raise on purpose (a bug, a database outage...)."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


class MaskUnexpectedErrors(MaskErrors):
    """strawberry's MaskErrors, masking only unexpected errors and naming the request id."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message="Unexpected error.")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        request_id = _request_id(self.execution_context)
        return GraphQLError(
            message=f"Unexpected error (request id {request_id}).",
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
        )


def log_errors(errors: list[GraphQLError], execution_context: ExecutionContext | None) -> None:
    """Bugs at ERROR with traceback and request id; the caller's own mistakes at DEBUG."""
    request_id = _request_id(execution_context)
    for error in errors:
        if is_unexpected(error):
            _log.error(
                "unexpected error in GraphQL request %s at %s: %s",
                request_id,
                error.path,
                type(error.original_error).__name__,
                exc_info=error.original_error,
            )
        else:
            _log.debug("GraphQL request %s: %s", request_id, error.message)


def _request_id(execution_context: ExecutionContext | None) -> str:
    context: Any = getattr(execution_context, "context", None)
    return str(getattr(context, "request_id", None) or "unknown")
