"""Root lists of capture plans and proposals.

Both tables are archivable. Archived rows are evidence (kept, never deleted) but default lists hide
them: `includeArchived: true` (the convention of every archivable list) or a filter on
`archivedAt` lets them through; `archivedAt: {isNull: false}` lists only them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.sql.elements import ColumnElement

from resolvers.common.connections import root_connection
from resolvers.common.filters import conditions_showing_hidden_on_request, order_terms
from resolvers.common.loaders import Loaders
from resolvers.common.pagination import PageArgs
from schema.pagination import Connection

__all__ = ["DEFAULT_ORDER", "archivable_conditions", "archivable_list"]

NodeT = TypeVar("NodeT")

# Newest first: what a capture team looks at; the id breaks ties.
DEFAULT_ORDER = (("created_at", True),)


def archivable_conditions(table: Table, filter_input: Any) -> list[ColumnElement[bool]]:
    """The filter's conditions on `table`; archived rows left out unless asked for."""
    return conditions_showing_hidden_on_request(
        table, filter_input, flag="include_archived", column="archived_at", visible=table.c.archived_at.is_(None)
    )


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
