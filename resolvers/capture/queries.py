"""Root lists of capture plans and proposals.

Both tables are archivable. Archived rows are evidence (kept, never deleted) but default lists hide
them: `includeArchived: true` (the convention of every archivable list) or a filter on
`archivedAt` lets them through; `archivedAt: {isNull: false}` lists only them.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.sql.elements import ColumnElement

from resolvers.common.filters import conditions_showing_hidden_on_request

__all__ = ["DEFAULT_ORDER", "archivable_conditions"]

NodeT = TypeVar("NodeT")

# Newest first: what a capture team looks at; the id breaks ties.
DEFAULT_ORDER = (("created_at", True),)


def archivable_conditions(table: Table, filter_input: Any) -> list[ColumnElement[bool]]:
    """The filter's conditions on `table`; archived rows left out unless asked for."""
    return conditions_showing_hidden_on_request(
        table, filter_input, flag="include_archived", column="archived_at", visible=table.c.archived_at.is_(None)
    )
