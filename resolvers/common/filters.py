"""`filter:` and `orderBy:` inputs to SQL.

A filter input's fields are named after columns (the `_renames` of its node type aside); each
holds an operator input from schema/filters.py. Unknown combinations cannot reach here: GraphQL
validation has already checked the input's shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from sqlalchemy import Table, false
from sqlalchemy.sql.elements import ColumnElement

from resolvers.common.pagination import OrderTerm

__all__ = ["conditions_showing_hidden_on_request", "filter_conditions", "filter_key", "order_terms"]

_MAX_IN = 500


class FilterError(ValueError):
    """A filter value the database cannot sensibly use; the message is for the client."""


def _value(v: Any) -> Any:
    return v.value if isinstance(v, Enum) else v


def _escape_like(text_: str) -> str:
    return text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filter_conditions(
    table: Table, filter_input: Any, renames: Mapping[str, str] | None = None
) -> list[ColumnElement[bool]]:
    """The SQL conditions of a filter input (ANDed by the caller)."""
    if filter_input is None:
        return []
    renames = renames or {}
    out: list[ColumnElement[bool]] = []
    for field in dataclasses.fields(filter_input):
        ops = getattr(filter_input, field.name)
        if ops is None:
            continue
        column = table.c[renames.get(field.name, "id" if field.name == "row_id" else field.name)]
        for op in dataclasses.fields(ops):
            value = getattr(ops, op.name)
            if value is None:
                continue
            name = op.name
            if name == "eq":
                out.append(column == _value(value))
            elif name == "in_":
                if len(value) > _MAX_IN:
                    raise FilterError(f"`in` takes at most {_MAX_IN} values.")
                out.append(column.in_([_value(v) for v in value]) if value else false())
            elif name == "contains":
                out.append(column.ilike(f"%{_escape_like(value)}%", escape="\\"))
            elif name == "is_null":
                out.append(column.is_(None) if value else column.is_not(None))
            elif name == "gt":
                out.append(column > value)
            elif name == "gte":
                out.append(column >= value)
            elif name == "lt":
                out.append(column < value)
            elif name == "lte":
                out.append(column <= value)
            else:  # pragma: no cover - the inputs above define every operator
                raise AssertionError(f"unknown filter operator {name}")
    return out


def conditions_showing_hidden_on_request(
    table: Table, filter_input: Any, *, flag: str, column: str, visible: ColumnElement[bool]
) -> list[ColumnElement[bool]]:
    """A filter's conditions on a list whose default view leaves some rows out (archived, deleted).

    Only rows matching `visible` are listed unless the filter sets `flag` (e.g. includeArchived)
    or filters on `column` (e.g. archivedAt): asking about the hidden rows' date must not match
    nothing. `flag` is not a column, so it is taken out before the conditions are built.
    """
    if filter_input is None:
        return [visible]
    conditions = filter_conditions(table, dataclasses.replace(filter_input, **{flag: None}))
    if not getattr(filter_input, flag) and getattr(filter_input, column) is None:
        conditions.append(visible)
    return conditions


def filter_key(filter_input: Any) -> Any:
    """A hashable identity of a filter input (for loader caching)."""
    if filter_input is None:
        return None
    if dataclasses.is_dataclass(filter_input):
        return tuple((f.name, filter_key(getattr(filter_input, f.name))) for f in dataclasses.fields(filter_input))
    if isinstance(filter_input, list):
        return tuple(filter_key(v) for v in filter_input)
    return _value(filter_input)


def order_terms(
    table: Table, order_by: Sequence[Any] | None, default: Sequence[tuple[str, bool]]
) -> list[OrderTerm]:
    """Terms for `orderBy: [{field, direction}]` (or the default), always ending with the id."""
    spec = [(item.field.value, item.direction.value == "desc") for item in order_by] if order_by else list(default)
    terms: list[OrderTerm] = []
    seen: set[str] = set()
    for column, descending in spec:
        if column in seen:
            raise FilterError(f"`orderBy` names {column} twice.")
        seen.add(column)
        terms.append(OrderTerm(column, table.c[column], descending))
    if "id" not in seen:
        terms.append(OrderTerm("id", table.c.id, False))
    return terms
