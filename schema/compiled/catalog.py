"""What the read compiler knows of each entity type: which GraphQL field is which column or relation.

Built once from the schema itself (the Strawberry definitions of the `EntityNode` types, the
relation registry of schema/relations.py and the column markers of schema/fields.py), so the
compiler and the field-by-field executor read the same declarations. A field the catalog cannot
classify (a resolver with logic of its own) is absent: an operation selecting it is not compiled.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from graphql import GraphQLNamedType, GraphQLNonNull, GraphQLObjectType, GraphQLSchema, get_named_type
from sqlalchemy import Table
from sqlalchemy.sql.elements import ColumnElement
from strawberry.types.field import StrawberryField

from auth.permissions import Permission
from auth.rules import FIELD_RULES, READ_RULES, Direct
from resolvers.common.loaders import SECRET_COLUMNS
from schema.node import EntityNode
from schema.relations import RELATIONS, RootList

__all__ = ["Catalog", "ColumnField", "ConnectionField", "EntityType", "GlobalIdField", "ToOneField", "catalog"]

# GraphQL scalar name -> how the compiler renders the column (schema/scalars.py serializes them).
_SCALAR_KINDS = {
    "String": "plain",
    "Int": "plain",
    "Boolean": "plain",
    "Float": "plain",
    "UUID": "plain",
    "JSON": "plain",
    "DateTime": "datetime",
    "Date": "plain",
    "Decimal": "text",
    "BigInt": "text",
}


@dataclasses.dataclass(frozen=True, slots=True)
class ColumnField:
    column: str
    kind: str  # plain | datetime | text | enum | inet
    enum_names: tuple[tuple[str, str], ...] = ()  # (stored value, GraphQL name) for enums
    permission: Permission | None = None  # FIELD_RULES: the field's own permission
    non_null: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class GlobalIdField:
    type_name: str


@dataclasses.dataclass(frozen=True, slots=True)
class ToOneField:
    target: str  # GraphQL type name
    table: Table
    fk: str


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionField:
    target: str
    table: Table
    fk: str | None  # None: a root list
    order: tuple[tuple[str, bool], ...]
    conditions: tuple[ColumnElement[bool], ...] = ()
    parent_key: str = "id"
    hidden_unless: tuple[str, str] | None = None  # root lists: (filter flag, column)
    # The default view's condition when `hidden_unless`'s flag is not set (default: the column IS NULL).
    visible: ColumnElement[bool] | None = None


Field = ColumnField | GlobalIdField | ToOneField | ConnectionField


@dataclasses.dataclass(slots=True)
class EntityType:
    name: str
    table: Table
    fields: dict[str, Field]
    project_column: str | None  # the row's own project column (Direct rule), for project-scoped grants


class Catalog:
    """Entity types by GraphQL name, and the root lists by Query field name."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.types: dict[str, EntityType] = {}
        self.roots: dict[str, ConnectionField] = {}
        for gql_type in schema.type_map.values():
            if isinstance(gql_type, GraphQLObjectType):
                self._add_type(gql_type)
        query = schema.query_type
        assert query is not None
        definition = query.extensions.get("strawberry-definition")
        for field in getattr(definition, "fields", ()):
            spec: RootList | None = getattr(field, "_gwm_root_list", None)
            if spec is not None:
                self.roots[field.name if field.graphql_name is None else field.graphql_name] = ConnectionField(
                    spec.target[0], spec.table, None, spec.default_order, hidden_unless=spec.hidden_unless
                )
        self._fix_root_names(query)

    def _fix_root_names(self, query: GraphQLObjectType) -> None:
        # strawberry names fields in camelCase; the definition's python names are snake_case.
        renamed: dict[str, ConnectionField] = {}
        for name, gql_field in query.fields.items():
            definition_field = gql_field.extensions.get("strawberry-definition")
            python_name = getattr(definition_field, "python_name", None)
            if python_name in self.roots:
                renamed[name] = self.roots[python_name]
        self.roots = renamed

    def _add_type(self, gql_type: GraphQLObjectType) -> None:
        definition = gql_type.extensions.get("strawberry-definition")
        cls = getattr(definition, "origin", None)
        if definition is None or not (isinstance(cls, type) and issubclass(cls, EntityNode)):
            return
        if not hasattr(cls, "_table"):
            return
        table = cls._table
        rule = READ_RULES.get(table.name)
        project_column = rule.project.column if rule is not None and isinstance(rule.project, Direct) else None
        columns = {v: k for k, v in cls._renames.items()}
        fields: dict[str, Field] = {}
        by_python = {f.python_name: f for f in definition.fields}
        for name, gql_field in gql_type.fields.items():
            sfield = gql_field.extensions.get("strawberry-definition")
            if not isinstance(sfield, StrawberryField):
                continue
            if name == "id" and sfield.python_name == "_id":  # relay.Node's global id
                fields[name] = GlobalIdField(gql_type.name)
                continue
            spec = self._field(cls, table, columns, by_python.get(sfield.python_name, sfield), gql_field.type)
            if spec is not None:
                fields[name] = spec
        self.types[gql_type.name] = EntityType(gql_type.name, table, fields, project_column)

    @staticmethod
    def _field(
        cls: type[EntityNode], table: Table, renames: dict[str, str], field: StrawberryField, gql_type: Any
    ) -> Field | None:
        python_name = field.python_name
        relation = RELATIONS.get((cls.__name__, python_name))
        if relation is not None:
            if relation.table_object is None or relation.target is None or relation.kind == "polymorphic":
                return None
            if relation.kind == "one":
                return ToOneField(relation.target[0], relation.table_object, relation.column)
            return ConnectionField(
                relation.target[0], relation.table_object, relation.column, relation.order,
                relation.conditions, relation.parent_key,
            )
        marker = getattr(field, "_gwm_column", None)
        column: str | None
        if marker is not None:
            column, kind, enum = marker
            permission = FIELD_RULES.get((table.name, column))
            if not _only_guard(field, permission):
                return None
            names: tuple[tuple[str, str], ...] = ()
            if kind == "enum":
                assert isinstance(enum, type) and issubclass(enum, Enum)
                names = tuple((str(m.value), m.name) for m in enum)
            return ColumnField(column, kind, names, permission, isinstance(gql_type, GraphQLNonNull))
        if field.base_resolver is not None:
            return None
        column = "id" if python_name == "row_id" else renames.get(python_name, python_name)
        if column not in table.c or (table.name, column) in SECRET_COLUMNS:
            return None
        permission = FIELD_RULES.get((table.name, column))
        if not _only_guard(field, permission):
            return None
        named: GraphQLNamedType = get_named_type(gql_type)
        kind = _SCALAR_KINDS.get(named.name)
        if kind is None:
            return None
        return ColumnField(column, kind, (), permission, isinstance(gql_type, GraphQLNonNull))


def _only_guard(field: StrawberryField, permission: Permission | None) -> bool:
    """True when the field's extensions are at most the column's own `@requiresPermission`."""
    from schema.permissions import DescribedPermissions, Requires

    extensions = list(field.extensions)
    if not extensions:
        return True
    if permission is None or len(extensions) != 1 or not isinstance(extensions[0], DescribedPermissions):
        return False
    checks = extensions[0].permissions
    return (
        len(checks) == 1
        and isinstance(checks[0], Requires)
        and checks[0].permission == permission
        and checks[0].unless_owner is None
        and checks[0].project is None
        and checks[0].covering is None
    )


_CATALOG: Catalog | None = None


def catalog(schema: GraphQLSchema) -> Catalog:
    global _CATALOG
    if _CATALOG is None:
        _CATALOG = Catalog(schema)
    return _CATALOG
