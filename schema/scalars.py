"""Custom scalars: `UUID`, `DateTime` (always UTC, six fractional digits, `Z`), `Date`, `Decimal`
and `BigInt` (as strings, so no precision is lost in JSON), `JSON`.

Registered through `StrawberryConfig.scalar_map` (schema/schema.py), so annotations stay the plain
Python types (`uuid.UUID`, `datetime.datetime`). A fixed DateTime format lets clients compare and
sort the strings, and never depends on the server's time zone or on whether microseconds are zero.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NewType

import strawberry
from graphql import FloatValueNode, IntValueNode, StringValueNode, ValueNode
from starlette.datastructures import UploadFile
from strawberry.file_uploads import Upload
from strawberry.types.scalar import ScalarDefinition

__all__ = ["JSON", "SCALAR_MAP", "BigInt", "ScalarError", "parse_datetime", "parse_uuid", "serialize_datetime"]


class ScalarError(ValueError):
    """A value a scalar cannot represent: the caller's mistake, answered as BAD_USER_INPUT (never
    masked as a bug, whether it came in a variable or as a literal in the document)."""


def serialize_datetime(value: datetime) -> str:
    """`2026-11-25T09:30:00.000000Z`: UTC, microseconds, a `Z`. Naive datetimes are a bug here."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("DateTime values must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_datetime(value: Any) -> datetime:
    """An ISO 8601 date-time with an offset (`Z` or `+hh:mm`), returned in UTC."""
    if not isinstance(value, str):
        raise ScalarError("DateTime must be a string such as 2026-11-25T09:30:00.000000Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ScalarError(f"DateTime cannot represent {value!r}: use ISO 8601 with an offset") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ScalarError("DateTime needs an offset (for example Z)")
    return parsed.astimezone(UTC)


def parse_uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise ScalarError("UUID must be a string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ScalarError(f"UUID cannot represent {value!r}") from None


def _serialize_uuid(value: uuid.UUID | str) -> str:
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(value))


def _parse_date(value: Any) -> date:
    if not isinstance(value, str):
        raise ScalarError("Date must be a string such as 2026-11-25")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ScalarError(f"Date cannot represent {value!r}: use YYYY-MM-DD") from None


def _parse_decimal(value: Any) -> Decimal:
    if not isinstance(value, str | int):
        raise ScalarError("Decimal must be a string such as \"1250000.00\"")
    try:
        parsed = Decimal(str(value))
    except InvalidOperation:
        raise ScalarError(f"Decimal cannot represent {value!r}") from None
    if not parsed.is_finite():
        raise ScalarError("Decimal must be finite")
    return parsed


def _parse_decimal_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Decimal:
    """A decimal written in the document: `"1.5"`, `1.5` or `2`, read from its exact text."""
    if isinstance(node, StringValueNode | IntValueNode | FloatValueNode):
        return _parse_decimal(node.value)
    raise ScalarError("Decimal must be a string such as \"1250000.00\"")


def _parse_bigint(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ScalarError("BigInt must be a string of digits")
    try:
        return int(value)
    except ValueError:
        raise ScalarError(f"BigInt cannot represent {value!r}") from None


# Python-side types for two scalars whose Python type (int, any JSON value) is shared with others.
def _parse_upload(value: Any) -> UploadFile:
    """Only a file part of a multipart request is a file: any JSON value in its place is refused."""
    if not isinstance(value, UploadFile):
        raise ScalarError(
            "Upload must be a file sent in a GraphQL multipart request (a part named in its `map`), not a JSON value"
        )
    return value


def _parse_upload_literal(node: ValueNode, _variables: dict[str, Any] | None = None) -> UploadFile:
    raise ScalarError("Upload cannot be written in the document: send the file as a variable of a multipart request")


BigInt = NewType("BigInt", int)
JSON = NewType("JSON", object)

SCALAR_MAP: dict[object, ScalarDefinition] = {
    uuid.UUID: strawberry.scalar(
        name="UUID",
        description="A UUID in its canonical text form (8-4-4-4-12 lower-case hex digits).",
        serialize=_serialize_uuid,
        parse_value=parse_uuid,
    ),
    datetime: strawberry.scalar(
        name="DateTime",
        description="An instant in UTC: ISO 8601 with six fractional digits and Z "
        "(2026-11-25T09:30:00.000000Z). Inputs accept any offset.",
        serialize=serialize_datetime,
        parse_value=parse_datetime,
    ),
    date: strawberry.scalar(
        name="Date",
        description="A calendar date, YYYY-MM-DD.",
        serialize=lambda v: v.isoformat(),
        parse_value=_parse_date,
    ),
    Decimal: strawberry.scalar(
        name="Decimal",
        description="An exact decimal number, as a string (\"1250000.00\").",
        serialize=str,
        parse_value=_parse_decimal,
        parse_literal=_parse_decimal_literal,
    ),
    BigInt: strawberry.scalar(
        name="BigInt",
        description="A 64-bit integer, as a string of digits (JSON numbers lose precision past 2^53).",
        serialize=str,
        parse_value=_parse_bigint,
    ),
    JSON: strawberry.scalar(
        name="JSON",
        description="Any JSON value, as stored.",
        serialize=lambda v: v,
        parse_value=lambda v: v,
    ),
    Upload: strawberry.scalar(
        name="Upload",
        description="A file sent in a GraphQL multipart request (the variable a part of the request's `map` "
        "names); never a JSON value or a literal.",
        serialize=lambda v: v,
        parse_value=_parse_upload,
        parse_literal=_parse_upload_literal,
    ),
}
