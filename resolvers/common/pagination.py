"""Keyset pagination: opaque cursors over a unique order, and the SQL that pages through it.

An order is a list of `OrderTerm`s that always ends with the primary key, so it is total and a
cursor names exactly one position. A cursor holds the order's values of one row; paging after it
is a row comparison expanded term by term (directions may differ), so inserts between requests
never shift a page the way OFFSET does. NULLs sort as PostgreSQL sorts them by default: after
every value ascending, before every value descending.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import and_, false, literal, or_, true
from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "MAX_PAGE_SIZE",
    "OrderTerm",
    "Page",
    "PageArgs",
    "PaginationError",
    "decode_cursor",
    "encode_cursor",
    "keyset_condition",
    "order_clauses",
]

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


NodeT = TypeVar("NodeT")


class PaginationError(ValueError):
    """Bad pagination arguments; the message is for the client."""


@dataclass(frozen=True, slots=True)
class Page(Generic[NodeT]):
    """One page of a list, as the resolvers build it; schema/pagination.py presents it as a Relay
    connection (`Connection.of(page)`), so the resolvers need nothing of the schema layer.

    `cursor_at(i)` encodes the cursor of the i-th node (only for the edges a client asks for);
    `count()` runs the list's count statement (only when a client selects totalCount).
    """

    nodes: list[NodeT]
    has_next_page: bool
    has_previous_page: bool
    cursor_at: Callable[[int], str]
    count: Callable[[], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class OrderTerm:
    name: str  # the attribute the cursor value is read from
    column: ColumnElement[Any]
    descending: bool = False


@dataclass(frozen=True, slots=True)
class PageArgs:
    first: int | None = None
    after: str | None = None
    last: int | None = None
    before: str | None = None

    def validate(self) -> PageArgs:
        for name in ("first", "last"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_PAGE_SIZE:
                raise PaginationError(f"`{name}` must be between 0 and {MAX_PAGE_SIZE}; got {value}.")
        if self.first is not None and self.last is not None:
            raise PaginationError("Pass `first` or `last`, not both.")
        if self.last is not None and self.after is not None and self.before is None:
            raise PaginationError("`last` pages backwards: combine it with `before`, not `after`.")
        return self

    @property
    def backwards(self) -> bool:
        return self.last is not None

    @property
    def limit(self) -> int:
        if self.last is not None:
            return self.last
        return self.first if self.first is not None else DEFAULT_PAGE_SIZE


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"t": value.isoformat()}
    if isinstance(value, dt.date):
        return {"d": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    if isinstance(value, Decimal):
        return {"n": str(value)}
    if isinstance(value, str | int | bool | float) or value is None:
        return value  # JSON round-trips a float exactly (e.g. a search rank)
    return {"s": str(value)}


def _typed(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((kind, raw),) = value.items()
        if kind == "t":
            return dt.datetime.fromisoformat(raw)
        if kind == "d":
            return dt.date.fromisoformat(raw)
        if kind == "u":
            return uuid.UUID(raw)
        if kind == "n":
            return Decimal(raw)
        if kind == "s":
            return raw
    if isinstance(value, str | int | bool | float) or value is None:
        return value
    raise ValueError("bad cursor value")


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def encode_cursor(values: Sequence[Any]) -> str:
    # ensure_ascii off: the compiled read path (schema/compiled/builder.py) encodes the same cursor in SQL,
    # where non-ASCII text stays as it is.
    raw = json.dumps([_plain(v) for v in values], separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, terms: Sequence[OrderTerm]) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = [_typed(v) for v in json.loads(raw)]
    except (ValueError, TypeError, RecursionError):  # RecursionError: a forged cursor nested thousands deep
        raise PaginationError("The cursor is not valid.") from None
    if any(isinstance(v, str) and _UNSTORABLE.search(v) for v in values):  # NUL: PostgreSQL text cannot hold it
        raise PaginationError("The cursor is not valid.")
    if not isinstance(values, list) or len(values) != len(terms):
        raise PaginationError("The cursor does not belong to this list and order.")
    if not all(_fits(term, value) for term, value in zip(terms, values, strict=True)):
        raise PaginationError("The cursor does not belong to this list and order.")
    return values


def _fits(term: OrderTerm, value: Any) -> bool:
    """Whether a cursor's value has the type of its order term's column (a cursor of another list may not)."""
    if value is None:
        return True
    try:
        expected = term.column.type.python_type
    except (NotImplementedError, AttributeError):
        return True
    if expected is bool or isinstance(value, bool):
        return expected is bool and isinstance(value, bool)
    if expected is dt.date:
        return isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)


def order_clauses(terms: Sequence[OrderTerm], *, reverse: bool = False) -> list[ColumnElement[Any]]:
    out: list[ColumnElement[Any]] = []
    for term in terms:
        descending = term.descending != reverse
        # PostgreSQL's defaults: NULLS LAST ascending, NULLS FIRST descending (NULL is the largest).
        out.append(term.column.desc().nulls_first() if descending else term.column.asc().nulls_last())
    return out


def _beyond(term: OrderTerm, value: Any, forward: bool) -> ColumnElement[bool]:
    """Rows strictly after `value` on this term in the scan direction."""
    greater = (not term.descending) == forward  # does the scan move towards larger values?
    column = term.column
    if value is not None:  # bound as a literal of the column's type (a bare True/False would not compare)
        value = literal(value, column.type)
    if greater:  # larger values come next; NULL is the largest
        return or_(column > value, column.is_(None)) if value is not None else false()
    return column < value if value is not None else column.is_not(None)


def _equal(term: OrderTerm, value: Any) -> ColumnElement[bool]:
    return term.column.is_(None) if value is None else term.column == value


def keyset_condition(terms: Sequence[OrderTerm], values: Sequence[Any], *, forward: bool) -> ColumnElement[bool]:
    """Rows after (forward) or before (not forward) the row with these order values."""
    clauses = []
    for i, term in enumerate(terms):
        prefix = [_equal(t, v) for t, v in zip(terms[:i], values[:i], strict=True)]
        clauses.append(
            and_(*prefix, _beyond(term, values[i], forward)) if prefix else _beyond(term, values[i], forward)
        )
    return or_(*clauses) if clauses else true()
