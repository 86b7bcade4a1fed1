"""`filter:` inputs shared by every list: equality, `in`, ranges, case-insensitive `contains`.

An entity's filter input has one optional field per filterable column, named like the column's
field, whose type is one of these; fields set together are ANDed. `resolvers/common/filters.py`
turns them into SQL.
"""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from typing import Generic, TypeVar

import strawberry

__all__ = [
    "BooleanFilter",
    "DateFilter",
    "DateTimeFilter",
    "DecimalFilter",
    "EnumFilter",
    "IntFilter",
    "StringFilter",
    "UUIDFilter",
]

E = TypeVar("E")

# What each operator means, in every filter type.
_EQ = "Equal to this value."
_IN = "Equal to one of these values (an empty list matches nothing)."
_IS_NULL = "true: only rows without a value; false: only rows with one."
_CONTAINS = "Contains this text, ignoring case."
_GT = "Greater than this value (later, for times)."
_GTE = "Greater than or equal to this value."
_LT = "Less than this value (earlier, for times)."
_LTE = "Less than or equal to this value."


@strawberry.input(description="Matches a UUID column.")
class UUIDFilter:
    eq: uuid.UUID | None = strawberry.field(default=None, description=_EQ)
    in_: list[uuid.UUID] | None = strawberry.field(default=None, name="in", description=_IN)
    is_null: bool | None = strawberry.field(default=None, description=_IS_NULL)


@strawberry.input(description="Matches a text column; `contains` ignores case.")
class StringFilter:
    eq: str | None = strawberry.field(default=None, description=_EQ)
    in_: list[str] | None = strawberry.field(default=None, name="in", description=_IN)
    contains: str | None = strawberry.field(default=None, description=_CONTAINS)
    is_null: bool | None = strawberry.field(default=None, description=_IS_NULL)


@strawberry.input(description="Matches a boolean column.")
class BooleanFilter:
    eq: bool | None = strawberry.field(default=None, description=_EQ)


@strawberry.input(description="Matches an integer column; bounds are inclusive for gte/lte.")
class IntFilter:
    eq: int | None = strawberry.field(default=None, description=_EQ)
    in_: list[int] | None = strawberry.field(default=None, name="in", description=_IN)
    gt: int | None = strawberry.field(default=None, description=_GT)
    gte: int | None = strawberry.field(default=None, description=_GTE)
    lt: int | None = strawberry.field(default=None, description=_LT)
    lte: int | None = strawberry.field(default=None, description=_LTE)
    is_null: bool | None = strawberry.field(default=None, description=_IS_NULL)


@strawberry.input(description="Matches a decimal column (values as strings).")
class DecimalFilter:
    eq: Decimal | None = strawberry.field(default=None, description=_EQ)
    gt: Decimal | None = strawberry.field(default=None, description=_GT)
    gte: Decimal | None = strawberry.field(default=None, description=_GTE)
    lt: Decimal | None = strawberry.field(default=None, description=_LT)
    lte: Decimal | None = strawberry.field(default=None, description=_LTE)
    is_null: bool | None = strawberry.field(default=None, description=_IS_NULL)


@strawberry.input(description="Matches a date-time column.")
class DateTimeFilter:
    eq: datetime.datetime | None = strawberry.field(default=None, description=_EQ)
    gt: datetime.datetime | None = strawberry.field(default=None, description=_GT)
    gte: datetime.datetime | None = strawberry.field(default=None, description=_GTE)
    lt: datetime.datetime | None = strawberry.field(default=None, description=_LT)
    lte: datetime.datetime | None = strawberry.field(default=None, description=_LTE)
    is_null: bool | None = strawberry.field(default=None, description=_IS_NULL)


@strawberry.input(description="Matches a date column.")
class DateFilter:
    eq: datetime.date | None = strawberry.field(default=None, description=_EQ)
    gt: datetime.date | None = strawberry.field(default=None, description=_GT)
    gte: datetime.date | None = strawberry.field(default=None, description=_GTE)
    lt: datetime.date | None = strawberry.field(default=None, description=_LT)
    lte: datetime.date | None = strawberry.field(default=None, description=_LTE)
    is_null: bool | None = strawberry.field(default=None, description=_IS_NULL)


@strawberry.input(description="Matches a value-set column.")
class EnumFilter(Generic[E]):
    eq: E | None = strawberry.field(default=None, description=_EQ)
    in_: list[E] | None = strawberry.field(default=None, name="in", description=_IN)
