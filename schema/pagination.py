"""Relay connections: `<Type>Connection { edges, nodes, pageInfo, totalCount }` and `<Type>Edge`.

Resolvers build a `Connection` from a page of rows (resolvers/common/connections.py); totalCount is a
resolver of its own, so the count statement runs only when a client selects it. Shared input
types for `filter:` and `orderBy:` live here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Generic, TypeVar

import strawberry

__all__ = ["Connection", "Edge", "OrderDirection", "PageInfo"]

NodeT = TypeVar("NodeT")


@strawberry.type(description="Where a page sits in its list.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="A node and the cursor that points at it.")
class Edge(Generic[NodeT]):
    cursor: str
    node: NodeT


@strawberry.type(description="A page of a list, with cursors to move from it.")
class Connection(Generic[NodeT]):
    edges: list[Edge[NodeT]]
    nodes: list[NodeT]
    page_info: PageInfo
    _count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="How many items the whole list has (one more statement: select it only when needed).")
    async def total_count(self) -> int:
        return await self._count()


@strawberry.enum(description="Sort direction.")
class OrderDirection(Enum):
    ASC = "asc"
    DESC = "desc"
