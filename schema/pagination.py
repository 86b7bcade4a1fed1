"""Relay connections: `<Type>Connection { edges, nodes, pageInfo, totalCount }` and `<Type>Edge`.

Resolvers build a `Connection` from a page of rows (resolvers/common/connections.py); totalCount is a
resolver of its own, so the count statement runs only when a client selects it. Shared input
types for `filter:` and `orderBy:` live here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from functools import partial
from typing import Generic, TypeVar

import strawberry

__all__ = ["Connection", "Edge", "OrderDirection", "PageInfo"]

NodeT = TypeVar("NodeT")


@strawberry.type(description="Where a page sits in its list.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    _size: strawberry.Private[int]
    _cursor_at: strawberry.Private[Callable[[int], str]]

    @strawberry.field
    def start_cursor(self) -> str | None:
        return self._cursor_at(0) if self._size else None

    @strawberry.field
    def end_cursor(self) -> str | None:
        return self._cursor_at(self._size - 1) if self._size else None


@strawberry.type(description="A node and the cursor that points at it.")
class Edge(Generic[NodeT]):
    node: NodeT
    _cursor: strawberry.Private[Callable[[], str]]

    @strawberry.field(description="Pass it as `after` (or `before`) to continue from this node.")
    def cursor(self) -> str:
        return self._cursor()


@strawberry.type(description="A page of a list, with cursors to move from it.")
class Connection(Generic[NodeT]):
    nodes: list[NodeT]
    page_info: PageInfo
    _count: strawberry.Private[Callable[[], Awaitable[int]]]
    # Cursors cost a little per row: they are encoded only for the edges a client asks for.
    _cursor_at: strawberry.Private[Callable[[int], str]]

    @strawberry.field
    def edges(self) -> list[Edge[NodeT]]:
        return [Edge(node=node, _cursor=partial(self._cursor_at, i)) for i, node in enumerate(self.nodes)]

    @strawberry.field(description="How many items the whole list has (one more statement: select it only when needed).")
    async def total_count(self) -> int:
        return await self._count()


@strawberry.enum(description="Sort direction.")
class OrderDirection(Enum):
    ASC = "asc"
    DESC = "desc"
