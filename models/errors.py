"""Domain errors: what a write refuses for a reason the caller can fix.

    DomainError          code + field + message; schema/errors.py turns it into a UserError
    ├── NotFound         NOT_FOUND: the target does not exist for this tenant
    ├── Conflict         CONFLICT: the target changed since the caller read it (stale updatedAt), a
    │                    unique value is taken, or a concurrent transaction won
    └── Invalid          VALIDATION: a value the write cannot take (out of range, unknown reference,
                         a state that does not allow the change)

`field` is the dotted path of the input field at fault, relative to the mutation's input, in
snake_case as the resolvers name it (`"win_probability_score"`); None when the request as a whole
is at fault. Anything else raised below a mutation is a bug and is masked with the request id.
Messages may reach clients and logs: they never carry stored values.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Conflict", "DomainError", "Invalid", "NotFound"]


class DomainError(Exception):
    """A refusal the caller can fix; `code` is the UserError code."""

    code = "DOMAIN"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(DomainError):
    code = "NOT_FOUND"


class Conflict(DomainError):
    """`current_updated_at`: on a stale `updatedAt`, the row's value now (the caller merges without
    reading the row again); None for the other conflicts."""

    code = "CONFLICT"

    def __init__(self, message: str, *, field: str | None = None, current_updated_at: Any = None) -> None:
        super().__init__(message, field=field)
        self.current_updated_at = current_updated_at


class Invalid(DomainError):
    code = "VALIDATION"
