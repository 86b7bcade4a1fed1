"""Relation fields built from the foreign keys: to-one fields and to-many connections.

`to_one(...)` and `to_many(...)` return strawberry fields whose resolvers go through the
request's loaders (one batched statement per relation per level). Targets are named lazily
(`"User", "schema.identity"`), so domain modules can point at each other without import cycles.
"""

from __future__ import annotations

import dataclasses
import importlib
import uuid
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from sqlalchemy import Table
from sqlalchemy.sql.elements import ColumnElement
from strawberry.utils.str_converters import to_camel_case

from auth.rules import READ_RULES
from resolvers.common.connections import child_connection
from resolvers.common.pagination import OrderTerm, PageArgs, PaginationError
from resolvers.common.scope import FieldDenied
from schema.context import Info
from schema.pagination import (
    FILTER_DESCRIPTION,
    ORDER_BY_DESCRIPTION,
    After,
    Before,
    Connection,
    First,
    Last,
    describe_list_inputs,
    paged,
)

__all__ = [
    "BAD_INPUT",
    "RELATIONS",
    "Relation",
    "RootList",
    "Target",
    "bad_input",
    "collect_relations",
    "page_args",
    "polymorphic",
    "refuse_unreadable_columns",
    "root_list",
    "to_many",
    "to_one",
]

BAD_INPUT = "BAD_USER_INPUT"
Target = tuple[str, str]  # (GraphQL type name, module that defines it)


@dataclasses.dataclass(frozen=True, slots=True)
class Relation:
    """What a relation field reads: the SDL-generated tests use this to build data for every field."""

    kind: str  # "one" | "many" | "polymorphic"
    target: Target | None
    table: str
    column: str  # the foreign key column (on the parent for "one", on `table` for "many")
    where: str = ""  # a description of the fixed condition (e.g. entity_type = 'opportunity_project')
    # What the read compiler (schema/compiled/) needs beyond the above: the list's order, its fixed
    # conditions and the parent's key column (to-many); `table_object` is the Table read.
    order: tuple[tuple[str, bool], ...] = ()
    conditions: tuple[ColumnElement[bool], ...] = ()
    parent_key: str = "id"
    table_object: Table | None = None


# (parent class name, python attribute) -> Relation; filled as the domain modules are imported.
RELATIONS: dict[tuple[str, str], Relation] = {}


def _register(field: Any, relation: Relation) -> Any:
    field._gwm_relation = relation
    return field


def collect_relations(cls: type) -> None:
    """Record the relation fields defined on an entity type (called by EntityNode.__init_subclass__)."""
    for name, value in list(vars(cls).items()):
        relation = getattr(value, "_gwm_relation", None)
        if relation is not None:
            RELATIONS[(cls.__name__, name)] = relation


_CLASSES: dict[Target, Any] = {}


def _class(target: Target) -> Any:
    cls = _CLASSES.get(target)
    if cls is None:
        name, module = target
        cls = _CLASSES[target] = getattr(importlib.import_module(module), name)
    return cls


def _lazy(target: Target) -> Any:
    name, module = target
    return Annotated[name, strawberry.lazy(module)]


def bad_input(exc: Exception) -> GraphQLError:
    """A client's bad pagination, filter or order argument, as a GraphQL error with its message."""
    return GraphQLError(str(exc), extensions={"code": BAD_INPUT})


def page_args(first: int | None, after: str | None, last: int | None, before: str | None) -> PageArgs:
    try:
        return PageArgs(first=first, after=after, last=last, before=before).validate()
    except PaginationError as exc:
        raise bad_input(exc) from None


def to_one(target: Target, table: Table, fk: str, *, description: str | None = None) -> Any:
    """`fk` on the parent's row names one row of `table` (None when the column is NULL)."""

    async def resolve(root: Any, info: Info) -> Any:
        key = root._row._mapping[fk]
        if key is None:
            return None
        row = await info.context.loaders.by_id(table).load(key)
        return _class(target).from_row(row)

    resolve.__annotations__ = {"root": Any, "info": Info, "return": _lazy(target) | None}
    return _register(
        strawberry.field(resolver=resolve, description=description),
        Relation("one", target, table.name, fk, table_object=table),
    )


def to_many(
    target: Target,
    table: Table,
    fk: str,
    *,
    order: Sequence[tuple[str, bool]] = (("created_at", False),),
    where: Callable[[Table], list[ColumnElement[bool]]] | None = None,
    where_key: str = "",
    parent_key: str = "id",
    description: str | None = None,
) -> Any:
    """The rows of `table` whose `fk` equals the parent's `parent_key`, as a connection."""
    terms = [OrderTerm(column, table.c[column], descending) for column, descending in order]
    if not any(t.name == "id" for t in terms):
        terms.append(OrderTerm("id", table.c.id, False))
    conditions = where(table) if where is not None else []

    async def resolve(
        root: Any,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Any:
        parent: uuid.UUID = root._row._mapping[parent_key]
        cls = _class(target)
        try:
            return Connection.of(await child_connection(
                info.context.loaders, table, fk, parent, page_args(first, after, last, before), terms,
                cls.from_row, where=conditions, where_key=where_key,
            ))
        except PaginationError as exc:
            raise bad_input(exc) from None

    resolve.__annotations__ = {
        "root": Any,
        "info": Info,
        "first": First,
        "after": After,
        "last": Last,
        "before": Before,
        "return": Connection[_lazy(target)],  # type: ignore[misc]  # the node type is looked up at run time
    }
    return _register(
        strawberry.field(resolver=resolve, description=paged(description)),
        Relation(
            "many", target, table.name, fk, where_key, order=tuple((t.name, t.descending) for t in terms),
            conditions=tuple(conditions), parent_key=parent_key, table_object=table,
        ),
    )


def root_list(
    target: Target,
    table: Table,
    filter_type: Any,
    order_type: Any,
    *,
    default_order: Sequence[tuple[str, bool]],
    description: str | None = None,
    conditions: Callable[[Table, Any], list[ColumnElement[bool]]] | None = None,
    hidden_unless: tuple[str, str] | None = None,
) -> Any:
    """A top-level connection over `table` with `filter:` and `orderBy:`.

    `conditions(table, filter)` turns the filter into SQL (default: filter_conditions); a list with
    a default view (archived rows hidden...) passes its own, and says which in `hidden_unless`
    (flag, column): rows whose `column` is set are hidden unless the filter sets `flag` or filters on
    `column` (resolvers.common.filters.conditions_showing_hidden_on_request), for the read compiler.
    """
    if conditions is not None and hidden_unless is None:
        raise TypeError("root_list: a list with its own conditions names its default view in hidden_unless")
    from resolvers.common.connections import root_connection
    from resolvers.common.filters import FilterError, filter_conditions, order_terms

    describe_list_inputs(target[0], filter_type, order_type)

    async def resolve(
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: Any = None,
        order_by: Any = None,
    ) -> Any:
        cls = _class(target)
        refuse_unreadable_columns(info, table, filter, order_by)
        if not info.context.scope.reads_any(table):
            _note_row_denial(info, table)
        try:
            terms = order_terms(table, order_by, default_order)
            where = (conditions or filter_conditions)(table, filter)
            return Connection.of(await root_connection(
                info.context.loaders, table, page_args(first, after, last, before), terms, cls.from_row, where=where
            ))
        except (PaginationError, FilterError) as exc:
            raise bad_input(exc) from None

    resolve.__annotations__ = {
        "info": Info,
        "first": First,
        "after": After,
        "last": Last,
        "before": Before,
        "filter": Annotated[filter_type | None, strawberry.argument(description=FILTER_DESCRIPTION)],
        "order_by": Annotated[list[order_type] | None, strawberry.argument(description=ORDER_BY_DESCRIPTION)],
        "return": Connection[_lazy(target)],  # type: ignore[misc]  # the node type is looked up at run time
    }
    field: Any = strawberry.field(resolver=resolve, description=paged(description))
    field._gwm_root_list = RootList(target, table, tuple(default_order), hidden_unless)
    return field


@dataclasses.dataclass(frozen=True, slots=True)
class RootList:
    """What the read compiler needs of a root list built by `root_list`."""

    target: Target
    table: Table
    default_order: tuple[tuple[str, bool], ...]
    hidden_unless: tuple[str, str] | None


def refuse_unreadable_columns(info: Info, table: Table, filter_input: Any, order_by: Any) -> None:
    """A FORBIDDEN error when `filter:` or `orderBy:` names a column the caller may not read.

    Filtering on a field one may not read would reveal it row by row ("which projects have a win
    probability above 80?"), and sorting would too; so both need the field's permission on every
    row the list can show (ReadScope.covers).
    """
    filtered = []
    if filter_input is not None:
        filtered = [
            "id" if f.name == "row_id" else f.name
            for f in dataclasses.fields(filter_input)
            if getattr(filter_input, f.name) is not None
        ]
    for argument, columns in (("filter", filtered), ("orderBy", [item.field.value for item in order_by or ()])):
        try:
            info.context.scope.check_columns(table, columns)
        except FieldDenied as exc:
            name = to_camel_case(exc.column)
            info.context.denials.add(exc.permission, info, suffix=f".{argument}.{name}")
            raise GraphQLError(
                f"You may not filter or sort on {name} ({exc.permission.value} is required).",
                extensions={"code": "FORBIDDEN", "permission": exc.permission.value},
            ) from None


def _note_row_denial(info: Info, table: Table) -> None:
    """A root list the caller can see no row of: empty, as the rules say, and audited once."""
    rule = READ_RULES.get(table.name)
    if rule is not None and rule.permission is not None:
        info.context.denials.add(rule.permission, info)



def polymorphic(
    type_column: str,
    id_column: str,
    targets: dict[str, tuple[Target, Table]],
    *,
    description: str | None = None,
) -> Any:
    """A `Node` named by (type_column, id_column) on the parent row, e.g. an activity's target.

    `targets` maps each allowed entity_type value (docs/enums.md) to its GraphQL type and table;
    a row whose target is gone (or of another tenant) gives null.
    """

    async def resolve(root: Any, info: Info) -> Any:
        mapping = root._row._mapping
        entry = targets.get(mapping[type_column])
        if entry is None or mapping[id_column] is None:
            return None
        target, table = entry
        row = await info.context.loaders.by_id(table).load(mapping[id_column])
        return _class(target).from_row(row)

    resolve.__annotations__ = {"root": Any, "info": Info, "return": strawberry.relay.Node | None}
    field = strawberry.field(resolver=resolve, description=description)
    return _register(field, Relation("polymorphic", None, ",".join(sorted(targets)), id_column, type_column))
