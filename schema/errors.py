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
original exception and are not masked: they only describe the caller's own request. Every error
leaves with an `extensions.code` (docs/api.md, "Error codes"): GRAPHQL_PARSE_FAILED for syntax
errors and documents over the token limit, GRAPHQL_VALIDATION_FAILED for validation errors,
BAD_USER_INPUT for any other error raised without a code (a variable that does not coerce, a
malformed global id).

Database errors are logged without their values: the engines hide bound parameters
(models/db.py), and the log line carries the traceback's frames, the exception types and the
SQLSTATE, never a driver message (which quotes the offending value).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLError, GraphQLSyntaxError
from sqlalchemy.exc import DBAPIError
from strawberry.extensions import MaskErrors
from strawberry.types import ExecutionContext
from strawberry.utils.str_converters import to_camel_case

from auth.exceptions import AuthRequestError
from models.errors import Conflict, DomainError
from schema.scalars import ScalarError

__all__ = [
    "BAD_USER_INPUT",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "USER_FIXABLE",
    "MaskUnexpectedErrors",
    "UserError",
    "describe_exception",
    "is_unexpected",
    "log_errors",
    "payload_or_errors",
    "user_error",
]

_log = logging.getLogger("gwm.graphql")
P = TypeVar("P")

GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
BAD_USER_INPUT = "BAD_USER_INPUT"


@strawberry.type(description="A problem the caller can fix: which input, a stable code, and a message.")
class UserError:
    field: list[str] | None = strawberry.field(
        description="Path to the argument or input field at fault (e.g. [\"input\", \"roleName\"]); "
        "null when the whole request is at fault."
    )
    code: str = strawberry.field(description="Stable machine-readable code, e.g. ROLE_NOT_FOUND.")
    message: str = strawberry.field(description="Human-readable explanation.")
    current_updated_at: datetime | None = strawberry.field(
        default=None,
        description="On a CONFLICT over a stale updatedAt: the row's updatedAt now, to merge and retry with "
        "without reading the row again; null otherwise.",
    )


#: The `errors` field of every mutation payload.
PAYLOAD_ERRORS = "What prevented the change, each naming the input at fault; empty when it succeeded."


# What payload_or_errors turns into UserErrors: each carries `code`, `message` and `field` (a
# dotted snake_case path relative to `under`, or None).
USER_FIXABLE: tuple[type[Exception], ...] = (AuthRequestError, DomainError)


def user_error(exc: AuthRequestError | DomainError, *, under: Sequence[str] = ()) -> UserError:
    """`exc` as a UserError; `under` is where the service's field names live (e.g. ("input",))."""
    field: list[str] | None = None
    if exc.field:
        field = [*under, *(to_camel_case(part) for part in exc.field.split("."))]
    current = exc.current_updated_at if isinstance(exc, Conflict) else None
    return UserError(field=field, code=exc.code, message=exc.message, current_updated_at=current)


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
    return original is not None and not isinstance(original, GraphQLError | ScalarError)


def _with_code(error: GraphQLError, code: str) -> None:
    if not (error.extensions or {}).get("code"):
        error.extensions = {**(error.extensions or {}), "code": code}


class MaskUnexpectedErrors(MaskErrors):
    """strawberry's MaskErrors, masking only unexpected errors and naming the request id; it also
    marks validation errors GRAPHQL_VALIDATION_FAILED (log_errors codes the rest)."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message="Unexpected error.")

    def on_validate(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            _with_code(error, GRAPHQL_VALIDATION_FAILED)


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
    """Bugs at ERROR with traceback and request id; the caller's own mistakes at DEBUG.

    Every error of every phase passes here (GwmSchema.process_errors), so this is also where an
    error raised without a code gets one: GRAPHQL_PARSE_FAILED for syntax, else BAD_USER_INPUT
    (a bug keeps none here: masking gives it INTERNAL_SERVER_ERROR).
    """
    request_id = _request_id(execution_context)
    for error in errors:
        if not is_unexpected(error):
            _with_code(error, GRAPHQL_PARSE_FAILED if isinstance(error, GraphQLSyntaxError) else BAD_USER_INPUT)
        if is_unexpected(error) and isinstance(error.original_error, DBAPIError):
            _log.error(
                "unexpected database error in GraphQL request %s at %s: %s",
                request_id,
                error.path,
                describe_exception(error.original_error),
            )
        elif is_unexpected(error):
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


def describe_exception(exc: BaseException) -> str:
    """A database error for the log: exception types, SQLSTATE and the frames, never a message.

    Driver messages quote the values they refused (`invalid input for query argument $2: '...'`),
    and those can be emails or search text; the frames and the state say where and what.
    """
    chain: list[str] = []
    current: BaseException | None = exc
    state = None
    while current is not None and len(chain) < 5:
        chain.append(type(current).__name__)
        state = state or getattr(current, "sqlstate", None) or getattr(getattr(current, "orig", None), "sqlstate", None)
        current = current.__cause__ or current.__context__
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"{' <- '.join(chain)} (SQLSTATE {state or 'unknown'})\n{frames}"
