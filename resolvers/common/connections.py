"""Building connections: a root list (one statement) or a child list (a batched loader)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, Table, func, select
from sqlalchemy.sql.elements import ColumnElement

from resolvers.common.loaders import Loaders, columns_of, readable
from resolvers.common.pagination import (
    OrderTerm,
    Page,
    PageArgs,
    decode_cursor,
    encode_cursor,
    keyset_condition,
    order_clauses,
)

__all__ = ["child_connection", "root_connection"]

NodeT = TypeVar("NodeT")


def _connection(
    rows: Sequence[Any],
    has_more: bool,
    page: PageArgs,
    terms: Sequence[OrderTerm],
    make: Callable[[Any], NodeT],
    count: Callable[[], Awaitable[int]],
) -> Page[NodeT]:
    nodes = [make(row) for row in rows]

    def cursor_at(i: int) -> str:
        mapping = rows[i]._mapping
        return encode_cursor([mapping[t.name] for t in terms])

    if page.backwards:
        has_next, has_previous = page.before is not None, has_more
    else:
        has_next, has_previous = has_more, page.after is not None
    return Page(nodes, has_next_page=has_next, has_previous_page=has_previous, cursor_at=cursor_at, count=count)


def _cursor(page: PageArgs, terms: Sequence[OrderTerm]) -> list[Any] | None:
    cursor = page.before if page.backwards else page.after
    return decode_cursor(cursor, terms) if cursor is not None else None


async def root_connection(
    loaders: Loaders,
    table: Table,
    page: PageArgs,
    terms: Sequence[OrderTerm],
    make: Callable[[Any], NodeT],
    *,
    where: Sequence[ColumnElement[bool]] = (),
    base: Select[Any] | None = None,
) -> Page[NodeT]:
    """A page of a top-level list; `where` filters it; totalCount counts the filtered list."""
    page.validate()
    values = _cursor(page, terms)
    stmt = readable(base if base is not None else select(*columns_of(table)), table, loaders.scope).where(*where)
    paged = stmt
    if values is not None:
        paged = paged.where(keyset_condition(terms, values, forward=not page.backwards))
    paged = paged.order_by(*order_clauses(terms, reverse=page.backwards)).limit(page.limit + 1)
    rows = list((await loaders.db.execute(paged)).all())
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    if page.backwards:
        rows.reverse()

    async def count() -> int:
        counted = select(func.count()).select_from(stmt.order_by(None).subquery())
        return int((await loaders.db.execute(counted)).scalar_one())

    return _connection(rows, has_more, page, terms, make, count)


async def child_connection(
    loaders: Loaders,
    table: Table,
    fk: str,
    parent_id: uuid.UUID,
    page: PageArgs,
    terms: Sequence[OrderTerm],
    make: Callable[[Any], NodeT],
    *,
    where: Sequence[ColumnElement[bool]] = (),
    where_key: Hashable = (),
) -> Page[NodeT]:
    """A page of the children of one parent, batched with its siblings' pages."""
    page.validate()
    values = _cursor(page, terms)
    loader = loaders.children(table, fk, terms, page, where=where, where_key=where_key, cursor_values=values)
    result = await loader.load(parent_id)

    async def count() -> int:
        return int(await loaders.child_counts(table, fk, where=where, where_key=where_key).load(parent_id))

    return _connection(result.rows, result.has_more, page, terms, make, count)
