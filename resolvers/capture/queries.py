"""Root lists of capture plans and proposals.

Both tables are archivable. Archived rows are evidence (kept, never deleted) but default lists hide
them: `includeArchived: true` (the convention of every archivable list) or a filter on
`archivedAt` lets them through; `archivedAt: {isNull: false}` lists only them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.sql.elements import ColumnElement

from resolvers.common.connections import root_connection
from resolvers.common.filters import filter_conditions, order_terms
from resolvers.common.loaders import Loaders
from resolvers.common.pagination import PageArgs
from schema.pagination import Connection

__all__ = ["DEFAULT_ORDER", "archivable_conditions", "archivable_list"]

NodeT = TypeVar("NodeT")

# Newest first: what a capture team looks at; the id breaks ties.
DEFAULT_ORDER = (("created_at", True),)


def archivable_conditions(table: Table, filter_input: Any) -> list[ColumnElement[bool]]:
    """The filter's conditions on `table`; archived rows left out unless asked for.

    They are asked for by `includeArchived: true`, or by filtering on `archivedAt` (a filter on
    the archive date that could only ever match nothing would be a trap).
    """
    if filter_input is None:
        return [table.c.archived_at.is_(None)]
    conditions = filter_conditions(table, dataclasses.replace(filter_input, include_archived=None))
    if not filter_input.include_archived and filter_input.archived_at is None:
        conditions.append(table.c.archived_at.is_(None))
    return conditions


async def archivable_list(
    loaders: Loaders,
    table: Table,
    page: PageArgs,
    filter_input: Any,
    order_by: Sequence[Any] | None,
    make: Callable[[Any], NodeT],
) -> Connection[NodeT]:
    terms = order_terms(table, order_by, DEFAULT_ORDER)
    where = archivable_conditions(table, filter_input)
    return await root_connection(loaders, table, page, terms, make, where=where)
