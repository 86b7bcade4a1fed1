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


@strawberry.input(description="Matches a UUID column.")
class UUIDFilter:
    eq: uuid.UUID | None = None
    in_: list[uuid.UUID] | None = strawberry.field(default=None, name="in")
    is_null: bool | None = None


@strawberry.input(description="Matches a text column; `contains` ignores case.")
class StringFilter:
    eq: str | None = None
    in_: list[str] | None = strawberry.field(default=None, name="in")
    contains: str | None = None
    is_null: bool | None = None


@strawberry.input(description="Matches a boolean column.")
class BooleanFilter:
    eq: bool | None = None


@strawberry.input(description="Matches an integer column; bounds are inclusive for gte/lte.")
class IntFilter:
    eq: int | None = None
    in_: list[int] | None = strawberry.field(default=None, name="in")
    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None
    is_null: bool | None = None


@strawberry.input(description="Matches a decimal column (values as strings).")
class DecimalFilter:
    eq: Decimal | None = None
    gt: Decimal | None = None
    gte: Decimal | None = None
    lt: Decimal | None = None
    lte: Decimal | None = None
    is_null: bool | None = None


@strawberry.input(description="Matches a date-time column.")
class DateTimeFilter:
    eq: datetime.datetime | None = None
    gt: datetime.datetime | None = None
    gte: datetime.datetime | None = None
    lt: datetime.datetime | None = None
    lte: datetime.datetime | None = None
    is_null: bool | None = None


@strawberry.input(description="Matches a date column.")
class DateFilter:
    eq: datetime.date | None = None
    gt: datetime.date | None = None
    gte: datetime.date | None = None
    lt: datetime.date | None = None
    lte: datetime.date | None = None
    is_null: bool | None = None


@strawberry.input(description="Matches a value-set column.")
class EnumFilter(Generic[E]):
    eq: E | None = None
    in_: list[E] | None = strawberry.field(default=None, name="in")
