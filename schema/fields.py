"""Plain fields whose database value needs a conversion before GraphQL sees it.

- `enum_column(Enum, table.c.col)`: a value-set column (a VARCHAR guarded by a CHECK built from
  models/enums.py) as its GraphQL enum. The row holds the enum's string value; the field returns
  the enum member, so resolvers and filters work with members, never with loose strings.
- `inet_column(table.c.col)`: an INET column (asyncpg gives `IPv4Address`/`IPv6Address`) as text.

Both read the entity's row (`EntityNode.from_row` keeps it), so the dataclass holds only the
columns that need no conversion, and the field is nullable exactly when the column is.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import strawberry
from sqlalchemy import Column

from schema.context import Info

__all__ = ["enum_column", "inet_column"]


def enum_column(enum: type[Enum], column: Column[Any], *, description: str | None = None) -> Any:
    """The column's value as a member of `enum` (a class registered with `strawberry.enum`)."""
    name = column.name

    def resolve(root: Any, info: Info) -> Any:
        value = root._row._mapping[name]
        return None if value is None else enum(value)

    resolve.__annotations__ = {"root": Any, "info": Info, "return": enum | None if column.nullable else enum}
    field: Any = strawberry.field(resolver=resolve, description=description)
    field._gwm_column = (name, "enum", enum)  # for the read compiler
    return field


def inet_column(column: Column[Any], *, description: str | None = None) -> Any:
    """An INET column as its text form (`127.0.0.1`, `2001:db8::1`), or null."""
    name = column.name

    def resolve(root: Any, info: Info) -> str | None:
        value = root._row._mapping[name]
        return None if value is None else str(value)

    field: Any = strawberry.field(resolver=resolve, description=description)
    field._gwm_column = (name, "inet", None)  # for the read compiler
    return field
