"""Relay connections: `<Type>Connection { edges, nodes, pageInfo, totalCount }` and `<Type>Edge`.

Resolvers build a `Connection` from a page of rows (resolvers/common/connections.py); totalCount is a
resolver of its own, so the count statement runs only when a client selects it. Shared input
types for `filter:` and `orderBy:` live here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from functools import partial
from typing import Annotated, Any, Generic, TypeVar

import strawberry
from strawberry.utils.str_converters import to_camel_case

from resolvers.common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page
from schema.filters import UUIDFilter

__all__ = [
    "FILTER_DESCRIPTION",
    "ORDER_BY_DESCRIPTION",
    "PAGE_SIZES",
    "After",
    "Before",
    "Connection",
    "Edge",
    "First",
    "Last",
    "OrderDirection",
    "PageInfo",
    "describe_list_inputs",
    "paged",
]

NodeT = TypeVar("NodeT")

#: Appended to the description of every connection field (`paged`), from the limits the resolvers apply.
PAGE_SIZES = (
    f"Paged: {DEFAULT_PAGE_SIZE} items by default, at most {MAX_PAGE_SIZE} per page (`first` or `last`)."
)

# The four Relay paging arguments, described once for every connection field.
First = Annotated[
    int | None,
    strawberry.argument(
        description=f"Page forwards: this many items from the start or from `after` "
        f"(0 to {MAX_PAGE_SIZE}; {DEFAULT_PAGE_SIZE} when neither `first` nor `last` is given)."
    ),
]
After = Annotated[
    str | None, strawberry.argument(description="Start after this cursor (an edge's `cursor` or `pageInfo.endCursor`).")
]
Last = Annotated[
    int | None,
    strawberry.argument(
        description=f"Page backwards: this many items from the end or before `before` (0 to {MAX_PAGE_SIZE};"
        " not with `first`)."
    ),
]
Before = Annotated[
    str | None,
    strawberry.argument(description="End before this cursor (an edge's `cursor` or `pageInfo.startCursor`)."),
]

#: The `filter:` and `orderBy:` arguments of a list.
FILTER_DESCRIPTION = "Only items matching every condition given (all of them, AND)."
ORDER_BY_DESCRIPTION = "Sort keys, most significant first; ties end in row id order. Omitted: the list's default order."


def describe_list_inputs(item: str, filter_type: Any, order_type: Any) -> None:
    """Describe a list's `filter:` and `orderBy:` input types where they say nothing themselves.

    Every filter field is named like the field of `item` it tests (or the foreign key behind a
    relation), and every order field value like the column it sorts by, so one sentence each, pointing
    at that field, tells what they do; a description written on the type itself wins.
    """
    definition = filter_type.__strawberry_definition__
    definition.description = definition.description or (
        f"Conditions on {item} items; every condition given must hold (AND)."
    )
    for field in definition.fields:
        name = to_camel_case(field.python_name)
        if getattr(field.type, "of_type", None) is UUIDFilter and name != "rowId":
            relation = name.removesuffix("Id")
            text = f"Condition on the row id of the {item}'s `{relation}`."
        else:
            text = f"Condition on the {item} field `{name}`."
        field.description = field.description or text
    definition = order_type.__strawberry_definition__
    definition.description = definition.description or f"One sort key of a {item} list: a field and a direction."
    for field in definition.fields:
        if field.python_name == "field":
            field.description = field.description or f"The {item} field to sort by."
        elif field.python_name == "direction":
            field.description = field.description or "ASC (the default) or DESC."
        if field.python_name == "field":
            enum_definition = getattr(field.type, "__strawberry_definition__", field.type)
            enum_definition.description = enum_definition.description or f"The fields a {item} list can be sorted by."
            for value in enum_definition.values:
                value.description = value.description or (
                    f"By the {item} field `{to_camel_case(value.value)}`; rows with equal values by row id."
                )


def paged(description: str | None) -> str:
    """A connection field's description followed by its page sizes."""
    return f"{description} {PAGE_SIZES}" if description else PAGE_SIZES


@strawberry.type(description="Where a page sits in its list.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="More items follow this page (paging forwards).")
    has_previous_page: bool = strawberry.field(description="Items precede this page (paging backwards).")
    _size: strawberry.Private[int]
    _cursor_at: strawberry.Private[Callable[[int], str]]

    @strawberry.field(description="The cursor of the page's first item; null on an empty page.")
    def start_cursor(self) -> str | None:
        return self._cursor_at(0) if self._size else None

    @strawberry.field(description="The cursor of the page's last item (pass it as `after`); null on an empty page.")
    def end_cursor(self) -> str | None:
        return self._cursor_at(self._size - 1) if self._size else None


@strawberry.type(description="A node and the cursor that points at it.")
class Edge(Generic[NodeT]):
    node: NodeT = strawberry.field(description="The item at this position of the list.")
    _cursor: strawberry.Private[Callable[[], str]]

    @strawberry.field(description="Pass it as `after` (or `before`) to continue from this node.")
    def cursor(self) -> str:
        return self._cursor()


@strawberry.type(description="A page of a list, with cursors to move from it.")
class Connection(Generic[NodeT]):
    nodes: list[NodeT] = strawberry.field(description="The items of this page, in the list's order.")
    page_info: PageInfo = strawberry.field(description="Whether more pages exist, and the cursors to reach them.")
    _count: strawberry.Private[Callable[[], Awaitable[int]]]
    # Cursors cost a little per row: they are encoded only for the edges a client asks for.
    _cursor_at: strawberry.Private[Callable[[int], str]]

    @classmethod
    def of(cls, page: Page[NodeT]) -> Connection[NodeT]:
        """The connection of a page the resolvers built (resolvers/common/pagination.py)."""
        return cls(
            nodes=page.nodes,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                _size=len(page.nodes),
                _cursor_at=page.cursor_at,
            ),
            _count=page.count,
            _cursor_at=page.cursor_at,
        )

    @strawberry.field(description="The items of this page with their cursors (use `nodes` when no cursor is needed).")
    def edges(self) -> list[Edge[NodeT]]:
        return [Edge(node=node, _cursor=partial(self._cursor_at, i)) for i, node in enumerate(self.nodes)]

    @strawberry.field(description="How many items the whole list has (one more statement: select it only when needed).")
    async def total_count(self) -> int:
        return await self._count()


@strawberry.enum(description="Sort direction.")
class OrderDirection(Enum):
    ASC = strawberry.enum_value("asc", description="Smallest first (A to Z, oldest first); nulls last.")
    DESC = strawberry.enum_value("desc", description="Largest first (Z to A, newest first); nulls first.")
