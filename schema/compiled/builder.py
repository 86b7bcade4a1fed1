"""One root field of a validated query as one SQL statement whose single value is its response JSON.

The statement nests the way the selection nests: an entity is `json_build_object(key, value, ...)`;
a connection read forward for its rows alone (no pageInfo) is `array_to_json(ARRAY(SELECT row FROM
(the page: keyset conditions, ORDER BY, LIMIT first) ...))`, its JSON built for the page's rows only
and in their order; any other connection is a sub-select aggregating its numbered page (`LIMIT
first + 1`, then `json_agg ... FILTER (WHERE rn <= first)`); a to-one relation is a LEFT JOIN of its
table on the page's rows (or, where no FROM clause takes it, a scalar sub-select of one object).
Every table is read under the same conditions as the executor's loaders: the tenant and the caller's
`ReadScope` (resolvers/common/scope.py), so a row the caller may not read is absent (or its to-one
null) on this path exactly as on the other.

Nothing a client sends is written into the SQL text. Response keys (aliases included), type names,
filter values, cursor values and limits are bind parameters; the text holds only names from the
schema's own declarations (tables, columns, enum values). Two documents that differ only in aliases
or variable values therefore give the same SQL text (the plan cache keys on the variables' shape).

A field guarded by a permission (auth.rules.FIELD_RULES) is decided here too: tenant-wide grant,
the value; project-scoped grants, the value where the row's project is granted and a marker
elsewhere; no grant, the marker. `runner.py` turns each marker into null plus the FORBIDDEN error
and the permission_audit count the executor would have given.

Anything not covered raises `Fallback`: that root field is served by the executor instead.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from graphql import (
    BooleanValueNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
)
from graphql.execution.values import get_argument_values
from sqlalchemy import ARRAY, Boolean, Column, Float, String, Table, Text, Uuid, any_, bindparam, literal_column
from sqlalchemy import Enum as EnumType
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, ColumnElement
from strawberry.types.field import StrawberryField

from auth.permissions import Permission
from auth.rules import READ_RULES, Direct
from resolvers.common.filters import FilterError
from resolvers.common.pagination import OrderTerm, PageArgs, PaginationError, decode_cursor
from resolvers.common.scope import FieldDenied, ReadScope
from schema.compiled.catalog import (
    Catalog,
    ColumnField,
    ConnectionField,
    EntityType,
    GlobalIdField,
    ToOneField,
)

__all__ = ["MARKER", "PRINCIPAL", "ROOT_FIELDS", "Fallback", "Marker", "RootPlan", "build_root"]

# The JSON a denied guarded field holds in the statement's output: `{"\u0000":N}`. No stored value
# can produce it (PostgreSQL text and jsonb cannot hold U+0000, and a string's quotes are escaped).
MARKER = '{"\\u0000":'
_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_MAX_KEYS = 50  # json_build_object takes at most 100 arguments


class Fallback(Exception):
    """This root field is not compiled: the executor serves it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Marker:
    permission: Permission | None  # None: a content read (access_type), not a denial
    type_name: str  # the parent type, as permission_audit names it
    node: FieldNode
    access_type: str | None = None  # a content read to log (resolvers/documents/access_log.py)


# A parameter: a constant of the plan, or a function of the request's arguments (by field id).
Args = dict[int, dict[str, Any]]
Param = Callable[[Args], Any]


@dataclasses.dataclass(slots=True)
class RootPlan:
    key: str
    sql: str
    params: list[Param]
    arg_fields: list[tuple[int, GraphQLField, FieldNode]]
    markers: list[Marker]
    row_denial: Permission | None  # a root list the caller can read no row of: audited once
    # The caller's project grants are read by the statement from user_roles (Builder.grants_in_sql), not bound:
    # it may run only in the transaction whose principal lookup loaded those grants (the same snapshot).
    grants_in_sql: bool = False

    def arguments(self, variables: Any) -> Args:
        return {fid: get_argument_values(definition, node, variables) for fid, definition, node in self.arg_fields}

    def bind(self, args: Args) -> list[Any]:
        return [param(args) for param in self.params]


def _ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise Fallback(f"unexpected identifier {name!r}")
    return f'"{name}"'


def _literal(text: str) -> str:
    """A schema constant (an enum's stored value or name) as an SQL literal."""
    if not re.fullmatch(r"[A-Za-z0-9_ .:/-]*", text):
        raise Fallback(f"unexpected constant {text!r}")
    return "'" + text + "'"


_ISO = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"


def _sql_type(column: Column[Any] | ColumnElement[Any]) -> str:
    return str(column.type.compile(dialect=_DIALECT))


class Builder:
    """Builds the statement of one root field (one instance per plan)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        catalog: Catalog,
        scope: ReadScope,
        fragments: dict[str, FragmentDefinitionNode],
        variables: Any,
    ) -> None:
        self.schema = schema
        self.catalog = catalog
        self.scope = scope
        self.fragments = fragments
        self.variables = variables
        self.params: list[Param] = []
        self.arg_fields: list[tuple[int, GraphQLField, FieldNode]] = []
        self.markers: list[Marker] = []
        self._aliases = 0
        self._args: Args = {}
        # alias -> the projects its rows are known to belong to (through their Direct project column).
        self.bounds: dict[str, frozenset[uuid.UUID] | None] = {}
        self._alias_types: dict[str, EntityType] = {}
        self._late: dict[str, Param] = {}
        self._computed: dict[str, dict[str, tuple[str, str]]] = {}
        self.principal_kind = ""  # the caller's credential kind (part of the plan's key)
        # Project grants as sub-selects of the caller's unexpired assignments rather than id arrays bound per
        # request (the plan's key says which): only for a statement run in the principal lookup's snapshot,
        # where the sub-select gives exactly the projects `scope.grants` holds (models/db.py grants_user).
        self.grants_in_sql = False
        self._granted_sets: dict[frozenset[uuid.UUID], list[str]] | None = None
        self._rule_permission: str | None = None  # the read rule's permission while `rows` renders its condition
        # While `rows` renders a condition: the rule's project column and the projects its rows are known to
        # belong to (a list under a project row).
        self._known_projects: tuple[str, frozenset[uuid.UUID]] | None = None
        # Row sources whose FROM clause takes joins (`joined`): a to-one field under one of them is a LEFT JOIN
        # (one index probe of the target per row) rather than a correlated sub-select (a sub-plan run per row).
        self._join_sources: set[str] = set()
        self._joins: dict[str, list[tuple[str, str]]] = {}

    # -- parameters -------------------------------------------------------------------------------

    def const(self, value: Any, cast: str) -> str:
        self.params.append(_constant(value))
        return f"${len(self.params)}::{cast}"

    def content_read(
        self, access_type: str, etype: EntityType, alias: str, raw: str, value: str, nodes: list[FieldNode],
        used: set[str],
    ) -> str:
        """A document's content as a marker the runner logs and unwraps: `{"\\u0000":N,"d":id,"l":level,"v":value}`.

        Reading a document's content is an access (resolvers/documents/access_log.py): the runner writes
        the access-log rows of the documents whose content the answer holds, as the executor does. Null
        content is no read: the value stays null.
        """
        used.update(("id", "access_level"))
        self.markers.append(Marker(None, etype.name, nodes[0], access_type))
        head = self.const(MARKER + f"{len(self.markers) - 1},", "text")
        return (
            f"CASE WHEN {raw} IS NULL THEN NULL ELSE ({head} || '\"d\":' || to_json({alias}.id)::text"
            f" || ',\"l\":' || coalesce(to_json({alias}.access_level)::text, 'null')"
            f" || ',\"v\":' || to_json({value})::text || '}}')::json END"
        )

    def _grant_permission(self, projects: frozenset[uuid.UUID]) -> str | None:
        """A permission whose project-scoped grants are exactly `projects`, the read rule's own when it is one of
        them (None: no such permission)."""
        if self._granted_sets is None:
            held = sorted({p for perms in self.scope.grants.per_project.values() for p in perms})
            sets: dict[frozenset[uuid.UUID], list[str]] = {}
            for permission in held:
                sets.setdefault(frozenset(
                    p for p, perms in self.scope.grants.per_project.items() if permission in perms
                ), []).append(permission)
            self._granted_sets = sets
        candidates = self._granted_sets.get(projects) if projects else None
        if not candidates:
            return None
        return self._rule_permission if self._rule_permission in candidates else candidates[0]

    def granted_projects(self, permission: str) -> str:
        """The projects the caller holds `permission` on through project-scoped assignments, as a sub-select of
        its unexpired assignments (the same rows and rule as auth.principal's grants, read in the same snapshot)."""
        tenant = self.const(self.scope.tenant_id, "uuid")
        user = self.const(self.scope.user_id, "uuid")
        held = self.const(permission, "text")
        # The roles holding the permission are read once (an array), then the caller's assignments from the
        # index that covers them; a join would probe the roles once per assignment under a generic plan.
        return (
            "SELECT ga.opportunity_project_id FROM user_roles ga"
            f" WHERE ga.user_id = {user} AND ga.opportunity_project_id IS NOT NULL AND ga.tenant_id = {tenant}"
            " AND (ga.expires_at IS NULL OR ga.expires_at > now())"
            " AND ga.role_id = ANY(ARRAY(SELECT gr.id FROM roles gr"
            f" WHERE gr.tenant_id = {tenant} AND gr.permissions ? {held}))"
        )

    def runtime(self, getter: Param, cast: str | None = None) -> str:
        self.params.append(getter)
        return f"${len(self.params)}" + (f"::{cast}" if cast else "")

    def alias(self) -> str:
        self._aliases += 1
        return f"t{self._aliases}"

    def field_args(self, definition: GraphQLField, node: FieldNode) -> tuple[int, dict[str, Any]]:
        fid = len(self.arg_fields)
        self.arg_fields.append((fid, definition, node))
        try:
            args = get_argument_values(definition, node, self.variables)
        except Exception as exc:  # the executor reports argument errors
            raise Fallback(str(exc)) from None
        self._args[fid] = args
        return fid, args

    # -- selections -------------------------------------------------------------------------------

    def _included(self, node: Any) -> bool:
        for directive in node.directives or ():
            name = directive.name.value
            if name not in {"skip", "include"}:
                continue
            (argument,) = [a for a in directive.arguments if a.name.value == "if"]
            value_node = argument.value
            if isinstance(value_node, BooleanValueNode):
                value = value_node.value
            elif isinstance(value_node, VariableNode):
                value = bool(self.variables.coerced.get(value_node.name.value))
            else:  # pragma: no cover - validation allows nothing else
                raise Fallback("directive argument")
            if (name == "skip") == bool(value):
                return False
        return True

    def _applies(self, condition: str | None, type_name: str) -> bool:
        if condition is None or condition == type_name:
            return True
        abstract = self.schema.get_type(condition)
        concrete = self.schema.get_type(type_name)
        if abstract is None or not isinstance(concrete, GraphQLObjectType):
            return False
        return bool(
            getattr(abstract, "fields", None) is not None
            and not isinstance(abstract, GraphQLObjectType)
            and self.schema.is_sub_type(abstract, concrete)  # type: ignore[arg-type]
        )

    def collect(self, type_name: str, nodes: Sequence[FieldNode]) -> dict[str, list[FieldNode]]:
        """The sub-fields selected on `type_name` by these field nodes, by response key, in order."""
        out: dict[str, list[FieldNode]] = {}
        for node in nodes:
            if node.selection_set is not None:
                self._collect(type_name, node.selection_set, out, set())
        return out

    def _collect(self, type_name: str, selection_set: SelectionSetNode, out: dict[str, list[FieldNode]],
                 visited: set[str]) -> None:
        for selection in selection_set.selections:
            if not self._included(selection):
                continue
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                out.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition.name.value if selection.type_condition else None
                if self._applies(condition, type_name):
                    self._collect(type_name, selection.selection_set, out, visited)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in visited:
                    continue
                visited.add(name)
                fragment = self.fragments.get(name)
                if fragment is not None and self._applies(fragment.type_condition.name.value, type_name):
                    self._collect(type_name, fragment.selection_set, out, visited)

    # -- rows the caller may read -----------------------------------------------------------------

    def rows(self, table: Table, alias: str, known: frozenset[uuid.UUID] | None = None) -> str:
        """The tenant's rows of `table` (under `alias`) that the caller's scope lets it read.

        `known`: the projects the rows are already known to belong to (a child list under a project row
        read through a project-scoped grant). When the caller may read this table on each of them, the
        condition is implied and left out; either way the projects the rows are bound to are recorded
        for `alias` (`self.bounds`), which decides guarded fields at plan time where it can.
        """
        tenant_column = "id" if table.name == "tenants" else "tenant_id"
        parts = [f"{alias}.{_ident(tenant_column)} = {self.const(self.scope.tenant_id, 'uuid')}"]
        condition = self.scope.condition(table)
        rule = READ_RULES.get(table.name)
        project_only = (
            rule is not None and rule.permission is not None and rule.own is None and isinstance(rule.project, Direct)
            and rule.levels is None  # access levels: the condition is more than the project's
        )
        granted = self.scope.projects_with(rule.permission) if project_only and rule is not None and rule.permission \
            else None
        if condition is not None and not (known is not None and granted is not None and known <= granted):
            self._rule_permission = str(rule.permission) if rule is not None and rule.permission else None
            if known is not None and rule is not None and isinstance(rule.project, Direct):
                self._known_projects = (rule.project.column, known)
            try:
                parts.append(self.render(condition, table, alias))
            finally:
                self._rule_permission = None
                self._known_projects = None
            self.bounds[alias] = granted if project_only else None
        else:
            self.bounds[alias] = known if condition is not None else None
        return " AND ".join(parts)

    def render(self, expression: ColumnElement[Any], table: Table, alias: str) -> str:
        """A SQLAlchemy condition on `table` as SQL on `alias`, its values as bind parameters."""
        aliased = table.alias(alias)

        def replace(element: Any, **_kw: Any) -> Any:
            if isinstance(element, Column) and isinstance(element.table, Table) and element.table.name == table.name:
                return aliased.c[element.name]
            if (
                isinstance(element, BinaryExpression)
                and element.operator is operators.in_op
                and isinstance(element.right, BindParameter)
                and element.right.expanding
            ):
                # `col IN (list)` as `col = ANY($n)`: one array parameter (a caller with project grants on
                # hundreds of projects would otherwise bind hundreds of parameters per condition).
                left = visitors.replacement_traverse(element.left, {}, replace)
                values = list(element.right.value or ())
                if (
                    self._known_projects is not None and isinstance(element.left, Column)
                    and element.left.name == self._known_projects[0]
                    and self._known_projects[1] <= frozenset(values)
                ):
                    return literal_column("true", Boolean())  # every row here is under one of these projects
                permission = (
                    self._grant_permission(frozenset(values))
                    if self.grants_in_sql and all(isinstance(v, uuid.UUID) for v in values) else None
                )
                if permission is not None:  # the caller's grants of `permission`: read, not sent
                    column = self.render_statement(left)
                    granted = self.granted_projects(permission)
                    if element is expression and isinstance(element.left, Column) and element.left.primary_key:
                        # The whole condition, on the primary key: the granted ids as one array, which the
                        # primary key's index probes in one sorted pass (a semi-join probes it once per grant).
                        return literal_column(f"({column} = ANY(ARRAY({granted})))", Boolean())
                    return literal_column(f"({column} IN ({granted}))", Boolean())
                item_type = element.left.type
                if isinstance(item_type, String) and not isinstance(item_type, EnumType):
                    # text[], which the driver encodes itself (a varchar[] costs a fresh connection two round
                    # trips of type introspection); a varchar compares with text as with varchar.
                    item_type = Text()
                return left == any_(bindparam(None, values, type_=ARRAY(item_type)))
            return None

        adapted = visitors.replacement_traverse(expression, {}, replace)
        return "(" + self.render_statement(adapted) + ")"

    # -- fields -----------------------------------------------------------------------------------

    def entity(self, etype: EntityType, alias: str, nodes: Sequence[FieldNode], used: set[str]) -> str:
        fields = self.collect(etype.name, nodes)
        if len(fields) > _MAX_KEYS:
            raise Fallback("too many keys for one object")
        parts: list[str] = []
        gql_type = self.schema.get_type(etype.name)
        assert isinstance(gql_type, GraphQLObjectType)
        strings = True  # every value is text (or null) that the JSON spells as a string
        for key, field_nodes in fields.items():
            name = field_nodes[0].name.value
            parts.append(self.const(key, "text"))
            if name == "__typename":
                parts.append(self.const(etype.name, "text"))
                continue
            definition = gql_type.fields[name]
            domain = DOMAIN_FIELDS.get((etype.name, name))
            if domain is not None:
                parts.append(domain(self, etype, alias, definition, field_nodes, used))
                strings = False
                continue
            spec = etype.fields.get(name)
            if spec is None:
                raise Fallback(f"{etype.name}.{name} is not compiled")
            value = self.field(etype, alias, spec, definition, field_nodes, used)
            parts.append(value)
            strings = strings and (
                isinstance(spec, GlobalIdField)
                or (isinstance(spec, ColumnField) and _string_column(spec, etype.table)
                    and value == self.column(alias, spec))  # not a guarded value's CASE
            )
        if strings and parts:
            # The same JSON text as json_build_object's, without its per-value type lookups: the cheaper form
            # for the objects (most leaves of a nested read) whose values are all strings.
            return (
                f"json_object(ARRAY[{', '.join(parts[0::2])}], "
                f"ARRAY[{', '.join(f'({v})::text' for v in parts[1::2])}])"
            )
        return "json_build_object(" + ", ".join(parts) + ")"

    def field(
        self,
        etype: EntityType,
        alias: str,
        spec: Any,
        definition: GraphQLField,
        nodes: list[FieldNode],
        used: set[str],
    ) -> str:
        if isinstance(spec, ColumnField):
            used.add(spec.column)
            value = self.column(alias, spec)
            if spec.permission is None or str(spec.permission) in self.scope.grants.tenant_wide:
                return value
            granted_projects = self.scope.projects_with(spec.permission)
            known = self.bounds.get(alias)
            if etype.project_column is not None and known is not None and known <= granted_projects:
                return value  # every row here is under a project the permission is granted on
            self.markers.append(Marker(spec.permission, etype.name, nodes[0]))
            marker = self.const(MARKER + f"{len(self.markers) - 1}}}", "json")
            projects = sorted(granted_projects)
            if etype.project_column is None or not projects:
                return marker
            used.add(etype.project_column)
            if self.grants_in_sql:  # the caller's grants of the permission: read in the statement, not sent
                condition = f"{alias}.{_ident(etype.project_column)} IN ({self.granted_projects(str(spec.permission))})"
            else:
                condition = f"{alias}.{_ident(etype.project_column)} = ANY({self.const(projects, 'uuid[]')})"
            return f"CASE WHEN {condition} THEN to_json({value}) ELSE {marker} END"
        if isinstance(spec, GlobalIdField):
            used.add("id")
            prefix = self.const(f"{spec.type_name}:", "text")
            return f"translate(encode(convert_to({prefix} || {alias}.\"id\"::text, 'UTF8'), 'base64'), E'\\n', '')"
        if isinstance(spec, ToOneField):
            if definition.args:
                raise Fallback("arguments on a to-one field")
            used.add(spec.fk)
            target = self.catalog.types.get(spec.target)
            if target is None:
                raise Fallback(f"{spec.target} is not compiled")
            inner = self.alias()
            inner_used: set[str] = set()
            rows = self.rows(spec.table, inner)
            self._alias_types[inner] = target
            if alias in self._join_sources:
                # The same rows as the sub-select below: the target row by id, under the same conditions (in ON,
                # so a row the caller may not read leaves null); `id` is the key, so at most one row joins.
                self._join_sources.add(inner)
                body = self.entity(target, inner, nodes, inner_used)
                self._joins.setdefault(alias, []).append((inner, (
                    f"LEFT JOIN {_ident(spec.table.name)} {inner} ON {inner}.\"id\" = {alias}.{_ident(spec.fk)} "
                    f"AND {rows}"
                )))
                return f"(CASE WHEN {inner}.\"id\" IS NULL THEN NULL ELSE {body} END)"
            body = self.entity(target, inner, nodes, inner_used)
            return (
                f"(SELECT {body} FROM {_ident(spec.table.name)} {inner} WHERE {inner}.\"id\" = "
                f"{alias}.{_ident(spec.fk)} AND {rows})"
            )
        if isinstance(spec, ConnectionField):
            used.add(spec.parent_key)
            return self.connection(spec, definition, nodes, parent=(alias, spec.parent_key))
        raise Fallback("unknown field kind")  # pragma: no cover

    def joined(self, alias: str) -> str:
        """The LEFT JOINs the to-one fields under `alias` asked for (theirs after each), for its FROM clause."""
        out = ""
        for inner, join in self._joins.get(alias, ()):
            out += " " + join + self.joined(inner)
        return out

    def column(self, alias: str, spec: ColumnField) -> str:
        ref = f"{alias}.{_ident(spec.column)}"
        if spec.kind == "plain":
            return ref
        if spec.kind == "datetime":
            return f"to_char({ref} AT TIME ZONE 'UTC', {_ISO})"
        if spec.kind == "text":
            return f"{ref}::text"
        if spec.kind == "inet":
            return f"host({ref})"
        if spec.kind == "enum":
            cases = " ".join(f"WHEN {_literal(v)} THEN {_literal(n)}" for v, n in spec.enum_names)
            return f"(CASE {ref} {cases} END)"
        raise Fallback(f"column kind {spec.kind}")

    # -- connections ------------------------------------------------------------------------------

    def connection(
        self,
        spec: ConnectionField,
        definition: GraphQLField,
        nodes: list[FieldNode],
        *,
        parent: tuple[str, str] | None,
        computed: Callable[[str, int, dict[str, Any]], dict[str, tuple[str, str]]] | None = None,
        extra_where: Callable[[str, int, dict[str, Any]], list[str]] | None = None,
    ) -> str:
        """A connection's JSON. `computed(alias, fid, args)` gives extra columns of the page rows
        (name -> (SQL on the table's alias, Python type of the value for cursors)), which the order may
        name; `extra_where` extra conditions (both for the documents search)."""
        fid, args = self.field_args(definition, nodes[0])
        table = spec.table
        target = self.catalog.types.get(spec.target)
        if target is None:
            raise Fallback(f"{spec.target} is not compiled")
        try:
            page = PageArgs(
                first=args.get("first"), after=args.get("after"), last=args.get("last"), before=args.get("before")
            ).validate()
        except PaginationError:
            raise Fallback("pagination arguments") from None
        backwards = page.backwards
        page_alias = self.alias()
        extra = computed(page_alias, fid, args) if computed is not None else {}
        self._computed[page_alias] = extra
        terms = self.order_terms(table, spec, args, extra)
        cursor_text = page.before if backwards else page.after
        connection_type = get_named_type(definition.type)
        assert isinstance(connection_type, GraphQLObjectType)

        where: list[str] = []
        if parent is not None:
            assert spec.fk is not None
            where.append(f"{page_alias}.{_ident(spec.fk)} = {parent[0]}.{_ident(parent[1])}")
        if extra_where is not None:
            where.extend(extra_where(page_alias, fid, args))
        known: frozenset[uuid.UUID] | None = None
        rule = READ_RULES.get(table.name)
        direct = rule is not None and isinstance(rule.project, Direct) and rule.project.column == spec.fk
        if parent is not None and direct:
            parent_type = self._alias_types.get(parent[0])
            if parent_type is not None and parent_type.project_column == parent[1]:
                known = self.bounds.get(parent[0])
        where.append(self.rows(table, page_alias, known))
        self._alias_types[page_alias] = target
        for condition in spec.conditions:
            where.append(self.render(condition, table, page_alias))
        filter_sql = self.filters(table, spec, args, page_alias, fid) if parent is None else []
        where.extend(filter_sql)
        if cursor_text is not None:
            where.append(self.keyset(table, terms, page_alias, fid, "before" if backwards else "after", not backwards))

        limit_name = "last" if backwards else "first"
        limit = self.runtime(_page_size(fid, limit_name), "int")
        order_sql = ", ".join(
            f"{page_alias}.{_ident(name)} {'DESC NULLS FIRST' if desc != backwards else 'ASC NULLS LAST'}"
            for name, desc in terms
        )
        inner_order_sql = ", ".join(
            f"{extra[name][0] if name in extra else page_alias + '.' + _ident(name)} "
            f"{'DESC NULLS FIRST' if desc != backwards else 'ASC NULLS LAST'}"
            for name, desc in terms
        )
        output_dir = "DESC" if backwards else "ASC"

        # The connection's own fields, from the rows of the page (alias `page_alias` in the outer query).
        used: set[str] = {name for name, _ in terms} | {"id"}
        fields = self.collect(connection_type.name, nodes)
        parts: list[str] = []
        cursor_sql: str | None = None

        def cursor() -> str:
            nonlocal cursor_sql
            if cursor_sql is None:
                cursor_sql = self.cursor(table, terms, page_alias)
            return cursor_sql

        in_page = f"{page_alias}.__rn <= {limit}"
        selected = [field_nodes[0].name.value for field_nodes in fields.values()]
        # A forward page read only for its rows (no pageInfo, one list of them) needs neither the row past the
        # page nor numbered rows: `ARRAY(SELECT row ... ORDER BY ... LIMIT first)` keeps the order, and nothing
        # sorts the page again to aggregate it.
        plain_page = (
            not backwards and not extra and "pageInfo" not in selected
            and selected.count("nodes") + selected.count("edges") == 1  # its parameters are used in that list
        )
        page_rows: list[tuple[int, str]] = []  # (index in parts, the JSON of one row) of a plain page
        self._join_sources.add(page_alias)
        for key, field_nodes in fields.items():
            name = field_nodes[0].name.value
            parts.append(self.const(key, "text"))
            if name == "__typename":
                parts.append(self.const(connection_type.name, "text"))
            elif name == "nodes" and plain_page:
                page_rows.append((len(parts), self.entity(target, page_alias, field_nodes, used)))
                parts.append("")
            elif name == "nodes":
                node = self.entity(target, page_alias, field_nodes, used)
                parts.append(
                    f"COALESCE(json_agg({node} ORDER BY {page_alias}.__rn {output_dir}) FILTER (WHERE {in_page}), "
                    "'[]'::json)"
                )
            elif name == "edges":
                edge_type = get_named_type(connection_type.fields["edges"].type)
                assert isinstance(edge_type, GraphQLObjectType)
                edge_parts: list[str] = []
                for edge_key, edge_nodes in self.collect(edge_type.name, field_nodes).items():
                    edge_name = edge_nodes[0].name.value
                    edge_parts.append(self.const(edge_key, "text"))
                    if edge_name == "__typename":
                        edge_parts.append(self.const(edge_type.name, "text"))
                    elif edge_name == "cursor":
                        edge_parts.append(cursor())
                    elif edge_name == "node":
                        edge_parts.append(self.entity(target, page_alias, edge_nodes, used))
                    else:
                        raise Fallback(f"edge field {edge_name}")
                edge = "json_build_object(" + ", ".join(edge_parts) + ")"
                if plain_page:
                    page_rows.append((len(parts), edge))
                    parts.append("")
                    continue
                parts.append(
                    f"COALESCE(json_agg({edge} ORDER BY {page_alias}.__rn {output_dir}) FILTER (WHERE {in_page}), "
                    "'[]'::json)"
                )
            elif name == "pageInfo":
                parts.append(self.page_info(
                    connection_type, field_nodes, page_alias, in_page, output_dir, cursor, fid, backwards, limit
                ))
            elif name == "totalCount":
                parts.append(self.total_count(spec, table, args, fid, parent, extra_where))
            else:
                raise Fallback(f"connection field {name}")
        if len(parts) > 2 * _MAX_KEYS:
            raise Fallback("too many keys")

        columns = ", ".join(
            [f"{page_alias}.{_ident(c)}" for c in sorted(used) if c in table.c]
            + [f"{sql} AS {_ident(name)}" for name, (sql, _t) in extra.items()]
        )
        missing = [c for c in used if c not in table.c and c not in extra]
        if missing:
            raise Fallback(f"unknown columns {missing}")
        if plain_page:
            # The page's rows first (only their columns), the JSON then of those rows alone: PostgreSQL would
            # otherwise build it for every row before a sort. The outer ORDER BY costs no sort where the joins keep
            # the page's order (a nested loop over it), and holds the order where they do not.
            rows = (
                f"SELECT {columns} FROM {_ident(table.name)} {page_alias} WHERE {' AND '.join(where)} "
                f"ORDER BY {inner_order_sql} LIMIT {limit}"
            )
            source = f"FROM ({rows}) {page_alias}{self.joined(page_alias)} ORDER BY {order_sql}"
            for index, row in page_rows:
                parts[index] = f"array_to_json(ARRAY(SELECT {row} {source}))"
            return f"json_build_object({', '.join(parts)})"
        inner = (
            f"SELECT {columns} FROM {_ident(table.name)} {page_alias} WHERE {' AND '.join(where)} "
            f"ORDER BY {inner_order_sql} LIMIT {limit} + 1"
        )
        numbered = (
            f"SELECT {page_alias}.*, row_number() OVER (ORDER BY {order_sql}) AS __rn FROM ({inner}) {page_alias}"
        )
        # GROUP BY (): one row even when no aggregate is selected (totalCount alone) or the page is empty.
        return (
            f"(SELECT json_build_object({', '.join(parts)}) FROM ({numbered}) {page_alias}{self.joined(page_alias)} "
            "GROUP BY ())"
        )

    def page_info(
        self,
        connection_type: GraphQLObjectType,
        nodes: list[FieldNode],
        alias: str,
        in_page: str,
        output_dir: str,
        cursor: Callable[[], str],
        fid: int,
        backwards: bool,
        limit: str,
    ) -> str:
        info_type = get_named_type(connection_type.fields["pageInfo"].type)
        assert isinstance(info_type, GraphQLObjectType)
        more = f"(count(*) > {limit})"
        given_sql: str | None = None

        def given() -> str:  # made only when selected: every parameter of a statement must be used
            nonlocal given_sql
            if given_sql is None:
                given_sql = self.runtime(_given(fid, "before" if backwards else "after"), "boolean")
            return given_sql

        parts: list[str] = []
        reverse = "ASC" if output_dir == "DESC" else "DESC"
        for key, field_nodes in self.collect(info_type.name, nodes).items():
            name = field_nodes[0].name.value
            parts.append(self.const(key, "text"))
            if name == "__typename":
                parts.append(self.const(info_type.name, "text"))
            elif name == "hasNextPage":
                parts.append(given() if backwards else more)
            elif name == "hasPreviousPage":
                parts.append(more if backwards else given())
            elif name == "startCursor":
                parts.append(f"(array_agg({cursor()} ORDER BY {alias}.__rn {output_dir}) FILTER (WHERE {in_page}))[1]")
            elif name == "endCursor":
                parts.append(f"(array_agg({cursor()} ORDER BY {alias}.__rn {reverse}) FILTER (WHERE {in_page}))[1]")
            else:
                raise Fallback(f"pageInfo field {name}")
        return "json_build_object(" + ", ".join(parts) + ")"

    def total_count(
        self, spec: ConnectionField, table: Table, args: dict[str, Any], fid: int, parent: tuple[str, str] | None,
        extra_where: Callable[[str, int, dict[str, Any]], list[str]] | None = None,
    ) -> str:
        alias = self.alias()
        where: list[str] = []
        if parent is not None:
            assert spec.fk is not None
            where.append(f"{alias}.{_ident(spec.fk)} = {parent[0]}.{_ident(parent[1])}")
        where.append(self.rows(table, alias))
        for condition in spec.conditions:
            where.append(self.render(condition, table, alias))
        if parent is None:
            where.extend(self.filters(table, spec, args, alias, fid))
        if extra_where is not None:
            where.extend(extra_where(alias, fid, args))
        return f"(SELECT count(*) FROM {_ident(table.name)} {alias} WHERE {' AND '.join(where)})"

    # -- order, cursors, filters ------------------------------------------------------------------

    def order_terms(
        self, table: Table, spec: ConnectionField, args: dict[str, Any],
        computed: dict[str, tuple[str, str]] | None = None,
    ) -> list[tuple[str, bool]]:
        order_by = args.get("orderBy")
        if order_by:
            terms = [(_plain(item["field"]), _plain(item.get("direction") or "asc") == "desc") for item in order_by]
        else:
            terms = list(spec.order)
        names = [name for name, _ in terms]
        if len(set(names)) != len(names):
            raise Fallback("an order names a column twice")
        if "id" not in names:
            terms.append(("id", False))
        for name, _ in terms:
            if name not in table.c and name not in (computed or {}):
                raise Fallback(f"order column {name}")
        if order_by:
            try:
                self.scope.check_columns(table, [name for name, _ in terms[: len(order_by)]])
            except FieldDenied:
                raise Fallback("order on a guarded column") from None
        return terms

    def keyset(self, table: Table, terms: list[tuple[str, bool]], alias: str, fid: int, argument: str,
               forward: bool) -> str:
        extra = self._computed.get(alias, {})
        order_terms = [
            OrderTerm(name, table.c[name] if name in table.c else literal_column(name, type_=Float()), desc)
            for name, desc in terms
        ]

        def values(a: Args) -> list[Any]:
            try:
                return decode_cursor(a[fid][argument], order_terms)
            except PaginationError:
                raise Fallback("cursor") from None

        clauses: list[str] = []
        value_sql: list[str] = []
        def ref_of(name: str) -> str:
            return extra[name][0] if name in extra else f"{alias}.{_ident(name)}"

        for i, (name, _desc) in enumerate(terms):
            sql_type = "float8" if name in extra else _sql_type(table.c[name])
            value_sql.append(self.runtime(_item(values, i), sql_type))
        for i, (name, desc) in enumerate(terms):
            prefix = [f"{ref_of(n)} IS NOT DISTINCT FROM {value_sql[j]}" for j, (n, _) in enumerate(terms[:i])]
            ref = ref_of(name)
            v = value_sql[i]
            greater = (not desc) == forward
            if greater:
                beyond = f"(CASE WHEN {v} IS NULL THEN false ELSE ({ref} > {v} OR {ref} IS NULL) END)"
            else:
                beyond = f"(CASE WHEN {v} IS NULL THEN {ref} IS NOT NULL ELSE {ref} < {v} END)"
            if name in table.c and not table.c[name].nullable:
                beyond = f"{ref} > {v}" if greater else f"{ref} < {v}"
            clauses.append("(" + " AND ".join([*prefix, beyond]) + ")")
        keyset = "(" + " OR ".join(clauses) + ")"
        first, first_desc = terms[0]
        if len(terms) > 1 and first in table.c and not table.c[first].nullable:
            # Implied by the clauses; stated as a range on the first order column so that an index on the
            # order starts its scan at the cursor (the OR alone reads from the start of the range).
            bound = "<=" if first_desc == forward else ">="
            keyset = f"({ref_of(first)} {bound} {value_sql[0]} AND {keyset})"
        return keyset

    def cursor(self, table: Table, terms: list[tuple[str, bool]], alias: str) -> str:
        pieces: list[str] = []
        extra = self._computed.get(alias, {})
        for name, _ in terms:
            ref = f"{alias}.{_ident(name)}"
            python_type = extra[name][1] if name in extra else _python_type(table.c[name])
            if python_type == "datetime":
                typed = (
                    f"'{{\"t\":\"' || to_char({ref} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
                    f"CASE WHEN extract(microseconds FROM {ref})::bigint % 1000000 = 0 THEN '' "
                    f"ELSE to_char({ref} AT TIME ZONE 'UTC', '.US') END || '+00:00\"}}'"
                )
            elif python_type == "uuid":
                typed = f"'{{\"u\":\"' || {ref}::text || '\"}}'"
            elif python_type == "date":
                typed = f"'{{\"d\":\"' || to_char({ref}, 'YYYY-MM-DD') || '\"}}'"
            elif python_type == "decimal":
                typed = f"'{{\"n\":\"' || {ref}::text || '\"}}'"
            elif python_type == "str":
                typed = f"to_json({ref}::text)::text"
            elif python_type == "int":
                typed = f"{ref}::text"
            elif python_type == "bool":
                typed = f"(CASE WHEN {ref} THEN 'true' ELSE 'false' END)"
            elif python_type == "float":  # shortest exact text on both sides (PostgreSQL 12+, Python repr)
                number = f"{ref}::float8"
                typed = (
                    f"(CASE WHEN {number} = trunc({number}) AND abs({number}) < 1e16 "
                    f"THEN trunc({number})::bigint::text || '.0' ELSE {number}::text END)"
                )
            else:
                raise Fallback(f"cursor over {name}")
            pieces.append(f"COALESCE({typed}, 'null')")
        text = " || ',' || ".join(pieces)
        return (
            f"translate(rtrim(encode(convert_to('[' || {text} || ']', 'UTF8'), 'base64'), '='), E'+/\\n', '-_')"
        )

    def filters(self, table: Table, spec: ConnectionField, args: dict[str, Any], alias: str, fid: int) -> list[str]:
        """The filter's conditions (and the list's default view) as SQL on `alias`."""
        return [self.render(e, table, alias) for e in self.filter_expressions(table, spec, args, fid)]

    def render_statement(self, statement: Any) -> str:
        """A SQLAlchemy statement or condition as SQL, its values as bind parameters (late ones per request)."""
        compiled = statement.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
        values = compiled.params
        positions: dict[str, str] = {}

        def placeholder(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in positions:
                late = self._late.get(name)
                positions[name] = self.runtime(late if late is not None else _constant(values[name]))
            return positions[name]

        return re.sub(r"%\(([^)]+)\)s", placeholder, str(compiled)).replace("%%", "%")

    def late(self, getter: Param, type_: Any) -> BindParameter[Any]:
        """A bind parameter whose value each request's arguments give (rendered by `render`)."""
        key = f"late_{len(self._late)}"
        self._late[key] = getter
        return bindparam(key, type_=type_)

    def filter_expressions(
        self, table: Table, spec: ConnectionField, args: dict[str, Any], fid: int
    ) -> list[ColumnElement[bool]]:
        """resolvers/common/filters.py's conditions, their values bound per request (the plan keeps the shape)."""
        raw = args.get("filter")
        out: list[ColumnElement[bool]] = []
        flag, hidden_column = spec.hidden_unless or (None, None)
        visible = spec.visible if spec.visible is not None else (
            table.c[hidden_column].is_(None) if hidden_column is not None else None
        )
        if raw is None:
            if visible is not None:
                out.append(visible)
            return out
        names = _filter_names(self.schema, spec.target)
        filtered_columns: list[str] = []
        show_hidden = False
        for graphql_name, ops in raw.items():
            python_name = names.get(graphql_name, graphql_name)
            if python_name == flag:
                show_hidden = show_hidden or bool(ops)
                continue
            if ops is None:
                continue
            column_name = "id" if python_name == "row_id" else python_name
            if column_name not in table.c:
                raise Fallback(f"filter column {column_name}")
            filtered_columns.append(column_name)
            if column_name == hidden_column:
                show_hidden = True
            column = table.c[column_name]
            for op, value in ops.items():
                if value is None:
                    continue
                getter = _op_getter(fid, graphql_name, op)
                if op == "eq":
                    out.append(column == self.late(getter, column.type))
                elif op == "in":
                    if len(value) > 500:
                        raise Fallback("in list too long")
                    out.append(column == any_(self.late(getter, ARRAY(column.type))))
                elif op == "contains":
                    out.append(column.ilike(self.late(_like(getter), Text()), escape="\\"))
                elif op == "isNull":
                    out.append(column.is_(None) if value else column.is_not(None))
                elif op in {"gt", "gte", "lt", "lte"}:
                    bound = self.late(getter, column.type)
                    out.append({"gt": column > bound, "gte": column >= bound, "lt": column < bound,
                                "lte": column <= bound}[op])
                else:
                    raise Fallback(f"filter operator {op}")
        try:
            self.scope.check_columns(table, filtered_columns)
        except FieldDenied:
            raise Fallback("filter on a guarded column") from None
        if visible is not None and not show_hidden:
            out.append(visible)
        return out


def _string_column(spec: ColumnField, table: Table) -> bool:
    """True when the column's value, as `Builder.column` renders it, is a text json_build_object writes as a
    JSON string (or null): never a number, boolean, date or JSON value."""
    if spec.kind in {"datetime", "text", "inet", "enum"}:
        return True
    column = table.c.get(spec.column)
    return spec.kind == "plain" and column is not None and isinstance(column.type, (String, Uuid))


def _constant(value: Any) -> Param:
    return lambda _args: value


def _page_size(fid: int, name: str) -> Param:
    def get(a: Args) -> int:
        value = a[fid].get(name)
        return PageArgs().limit if value is None else int(value)

    return get


def _given(fid: int, name: str) -> Param:
    return lambda a: a[fid].get(name) is not None


def _item(values: Callable[[Args], list[Any]], i: int) -> Param:
    return lambda a: values(a)[i]


def _plain(value: Any) -> Any:
    """An argument value as the database holds it (an enum member's value)."""
    return value.value if isinstance(value, Enum) else value


def _op_getter(fid: int, name: str, op: str) -> Param:
    def get(a: Args) -> Any:
        value = a[fid]["filter"][name][op]
        if isinstance(value, list):
            if len(value) > 500:
                raise Fallback("in list too long")
            return [_plain(v) for v in value]
        return _plain(value)

    return get


def _like(getter: Param) -> Param:
    def get(a: Args) -> str:
        text = str(getter(a))
        return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

    return get


_FILTER_NAMES: dict[str, dict[str, str]] = {}


def _filter_names(schema: GraphQLSchema, target: str) -> dict[str, str]:
    """GraphQL field name -> Python name of the filter input of a root list of `target`."""
    if target not in _FILTER_NAMES:
        names: dict[str, str] = {}
        filter_type = schema.get_type(f"{target}Filter")
        for name, field in getattr(filter_type, "fields", {}).items():
            definition = field.extensions.get("strawberry-definition")
            names[name] = definition.python_name if isinstance(definition, StrawberryField) else name
        _FILTER_NAMES[target] = names
    return _FILTER_NAMES[target]


def _python_type(column: Column[Any]) -> str:
    try:
        python = column.type.python_type
    except NotImplementedError:
        return "?"
    import datetime
    import decimal

    if python is datetime.datetime:
        return "datetime"
    if python is datetime.date:
        return "date"
    if python is uuid.UUID:
        return "uuid"
    if python is decimal.Decimal:
        return "decimal"
    if python is str:
        return "str"
    if python is bool:
        return "bool"
    if python is int:
        return "int"
    return "?"


# Root fields compiled beside the root lists (schema.relations.root_list).
ROOT_FIELDS = frozenset({"node", "nodes", "pipelineSummary", "viewer", "documents"})
# Where a parameter finds the request's principal (the runner adds it to the arguments).
PRINCIPAL = -1


def build_root(
    builder: Builder,
    key: str,
    field_name: str,
    definition: GraphQLField,
    nodes: list[FieldNode],
) -> RootPlan:
    """The plan of one root field, or Fallback."""
    spec = builder.catalog.roots.get(field_name)
    row_denial: Permission | None = None
    if spec is not None:
        if not builder.scope.reads_any(spec.table):
            rule = READ_RULES.get(spec.table.name)
            if rule is not None and rule.permission is not None:
                row_denial = rule.permission
        try:
            body = builder.connection(spec, definition, nodes, parent=None)
        except FilterError:
            raise Fallback("filter") from None
        sql = f"SELECT ({body})::text"
    elif field_name == "node":
        sql = _node(builder, definition, nodes)
    elif field_name == "nodes":
        sql = _nodes(builder, definition, nodes)
    elif field_name == "pipelineSummary":
        sql = _pipeline_summary(builder, definition, nodes)
    elif field_name == "viewer":
        sql = _viewer(builder, definition, nodes)
    elif field_name == "documents":
        sql = f"SELECT ({_documents(builder, definition, nodes)})::text"
    else:
        raise Fallback(f"root field {field_name}")
    return RootPlan(key, sql, builder.params, builder.arg_fields, builder.markers, row_denial, builder.grants_in_sql)


def _nodes(builder: Builder, definition: GraphQLField, nodes: list[FieldNode]) -> str:
    """`nodes(ids:)`: one object (or null) per id, in order: a sub-select per id."""
    from strawberry.relay import GlobalID

    fid, args = builder.field_args(definition, nodes[0])
    ids = args["ids"]
    if not 0 < len(ids) <= _MAX_KEYS * 2:
        raise Fallback("nodes: number of ids")
    items: list[str] = []
    for i, raw in enumerate(ids):
        try:
            global_id = GlobalID.from_id(raw)
            uuid.UUID(global_id.node_id)
        except Exception:
            raise Fallback("node id") from None
        etype = builder.catalog.types.get(global_id.type_name)
        if etype is None:
            raise Fallback("node type")
        alias = builder.alias()
        rows = builder.rows(etype.table, alias)
        builder._alias_types[alias] = etype
        body = builder.entity(etype, alias, nodes, set())
        ident = builder.runtime(_nth_id(fid, i, etype.name), "uuid")
        items.append(
            f"(SELECT {body} FROM {_ident(etype.table.name)} {alias} WHERE {alias}.\"id\" = {ident} AND {rows})"
        )
    return f"SELECT json_build_array({', '.join(items)})::text"


def _pipeline_summary(builder: Builder, definition: GraphQLField, nodes: list[FieldNode]) -> str:
    """`pipelineSummary(filter:)`: resolvers/opportunities/queries.py's statement, shaped into the response."""
    from models import OpportunityProject
    from resolvers.opportunities.queries import pipeline_summary_statement

    projects: Table = OpportunityProject.__table__
    fid, args = builder.field_args(definition, nodes[0])
    spec = ConnectionField("OpportunityProject", projects, None, (), hidden_unless=("include_archived", "archived_at"))
    conditions = builder.filter_expressions(projects, spec, args, fid)
    statement = pipeline_summary_statement(builder.scope, conditions).subquery("summary")
    rendered = builder.render_statement(statement.element)
    summary_type = get_named_type(definition.type)
    assert isinstance(summary_type, GraphQLObjectType)
    columns = {
        "projectCount": "project_count", "totalEstimatedValueMax": "total",
        "weightedEstimatedValueMax": "weighted", "projectsWithoutValue": "without_value",
        "projectsWithoutWinProbability": "without_probability",
    }
    decimals = {"total", "weighted"}
    parts: list[str] = []
    for key, field_nodes in builder.collect(summary_type.name, nodes).items():
        name = field_nodes[0].name.value
        parts.append(builder.const(key, "text"))
        if name == "__typename":
            parts.append(builder.const(summary_type.name, "text"))
            continue
        if name == "stage":
            from models.enums import PipelineStage

            cases = " ".join(f"WHEN {_literal(m.value)} THEN {_literal(m.name)}" for m in PipelineStage)
            parts.append(f"(CASE s.\"stage\" {cases} END)")
            continue
        column = columns.get(name)
        if column is None:
            raise Fallback(f"pipelineSummary field {name}")
        value = f"s.{_ident(column)}::text" if column in decimals else f"s.{_ident(column)}"
        guard = _covering_guard(summary_type.fields[name])
        if guard is not None and not builder.scope.covers(projects, guard):
            builder.markers.append(Marker(guard, summary_type.name, field_nodes[0]))
            value = builder.const(MARKER + f"{len(builder.markers) - 1}}}", "json")
        parts.append(value)
    if len(parts) > 2 * _MAX_KEYS:
        raise Fallback("too many keys")
    return (
        f"SELECT COALESCE(json_agg(json_build_object({', '.join(parts)}) ORDER BY s.\"position\"), '[]'::json)::text "
        f"FROM ({rendered}) s"
    )


def _principal_value(read: Callable[[Any], Any]) -> Param:
    return lambda a: read(a[PRINCIPAL]["principal"])


def _viewer(builder: Builder, definition: GraphQLField, nodes: list[FieldNode]) -> str:
    """`viewer`: the principal's own facts as parameters, its user, tenant and roles as sub-selects."""
    import json

    import models
    from auth.principal import PrincipalKind

    viewer_type = get_named_type(definition.type)
    assert isinstance(viewer_type, GraphQLObjectType)
    parts: list[str] = []
    for key, field_nodes in builder.collect(viewer_type.name, nodes).items():
        name = field_nodes[0].name.value
        parts.append(builder.const(key, "text"))
        if name == "__typename":
            parts.append(builder.const(viewer_type.name, "text"))
            continue
        field = viewer_type.fields[name]
        if name == "credential":
            parts.append(builder.runtime(_principal_value(lambda p: PrincipalKind(p.kind).name), "text"))
        elif name == "permissions":
            fid, _args = builder.field_args(field, field_nodes[0])

            def permissions(a: Args, fid: int = fid) -> str:
                grants = a[PRINCIPAL]["principal"].grants
                project = a[fid].get("opportunityProjectId")
                held = grants.tenant_wide if project is None else grants.tenant_wide | grants.per_project.get(
                    project, frozenset()
                )
                return json.dumps(sorted(held))

            parts.append(builder.runtime(permissions, "json"))
        elif name in {"user", "tenant"}:
            table: Table = (models.User if name == "user" else models.Tenant).__table__
            target = builder.catalog.types[get_named_type(field.type).name]
            alias = builder.alias()
            rows = builder.rows(table, alias)
            builder._alias_types[alias] = target
            body = builder.entity(target, alias, field_nodes, set())
            ident = builder.runtime(_principal_value(
                (lambda p: p.user_id) if name == "user" else (lambda p: p.tenant_id)
            ), "uuid")
            parts.append(f"(SELECT {body} FROM {_ident(table.name)} {alias} WHERE {alias}.\"id\" = {ident} AND {rows})")
        elif name == "roles":
            parts.append(_viewer_roles(builder, field, field_nodes))
        else:
            raise Fallback(f"viewer.{name}")
    if len(parts) > 2 * _MAX_KEYS:
        raise Fallback("too many keys")
    return f"SELECT json_build_object({', '.join(parts)})::text"


def _viewer_roles(builder: Builder, field: GraphQLField, nodes: list[FieldNode]) -> str:
    """`viewer.roles`: resolvers/identity/queries.py role_assignments (sessions; an API key falls back)."""
    if builder.principal_kind != "session":
        raise Fallback("viewer.roles of an API key")
    assignment_type = get_named_type(field.type)
    assert isinstance(assignment_type, GraphQLObjectType)
    ur, r = builder.alias(), builder.alias()
    parts: list[str] = []
    for key, field_nodes in builder.collect(assignment_type.name, nodes).items():
        name = field_nodes[0].name.value
        parts.append(builder.const(key, "text"))
        if name == "__typename":
            parts.append(builder.const(assignment_type.name, "text"))
        elif name == "opportunityProjectId":
            parts.append(f"{ur}.\"opportunity_project_id\"")
        elif name == "expiresAt":
            parts.append(f"to_char({ur}.\"expires_at\" AT TIME ZONE 'UTC', {_ISO})")
        elif name == "role":
            target = builder.catalog.types["Role"]
            builder._alias_types[r] = target
            parts.append(builder.entity(target, r, field_nodes, set()))
        elif name == "userRole":
            target = builder.catalog.types["UserRole"]
            inner = builder.alias()
            rows = builder.rows(target.table, inner)
            builder._alias_types[inner] = target
            body = builder.entity(target, inner, field_nodes, set())
            parts.append(f"(SELECT {body} FROM \"user_roles\" {inner} WHERE {inner}.\"id\" = {ur}.\"id\" AND {rows})")
        else:
            raise Fallback(f"viewer.roles.{name}")
    user = builder.runtime(_principal_value(lambda p: p.user_id), "uuid")
    tenant = builder.const(builder.scope.tenant_id, "uuid")
    return (
        f"(SELECT COALESCE(json_agg(json_build_object({', '.join(parts)}) ORDER BY {r}.\"name\", "
        f"{ur}.\"opportunity_project_id\" NULLS FIRST), '[]'::json) FROM \"user_roles\" {ur} "
        f"JOIN \"roles\" {r} ON {r}.\"id\" = {ur}.\"role_id\" WHERE {ur}.\"user_id\" = {user} "
        f"AND {ur}.\"tenant_id\" = {tenant} AND ({ur}.\"expires_at\" IS NULL OR {ur}.\"expires_at\" > now()))"
    )


def _documents(builder: Builder, definition: GraphQLField, nodes: list[FieldNode]) -> str:
    """`documents(search:, filter:, orderBy:)`: resolvers/documents/queries.py's list, its search included
    (the same match, rank and snippet expressions, the search words bound per request)."""
    from sqlalchemy import func, select

    from resolvers.documents import queries as documents
    from resolvers.documents.loaders import DOCUMENT_ROWS, DOCUMENTS

    args = get_argument_values(definition, nodes[0], builder.variables)
    search = args.get("search")
    spec = ConnectionField(
        "Document", DOCUMENT_ROWS, None, tuple(documents.DEFAULT_ORDER),
        hidden_unless=("include_deleted", "deleted_at"), visible=DOCUMENT_ROWS.c.is_deleted.is_(False),
    )
    if search is None:
        return builder.connection(spec, definition, nodes, parent=None)
    if not search.strip() or len(search.strip()) > documents.MAX_SEARCH_LENGTH:
        raise Fallback("search words")  # the executor's FilterError
    fid_holder: list[int] = []

    def words(a: Args) -> str:
        text = str(a[fid_holder[0]]["search"]).strip()
        if not text or len(text) > documents.MAX_SEARCH_LENGTH:
            raise Fallback("search words")
        return text

    query = select(func.websearch_to_tsquery(documents.ENGLISH, builder.late(words, Text()))).scalar_subquery()
    _stmt, rank, matches = documents.search_select(query)
    snippet = documents.search_snippet_expression(query)
    if not args.get("orderBy"):
        spec = dataclasses.replace(spec, order=(("search_rank", True),))

    def computed(alias: str, fid: int, _args: dict[str, Any]) -> dict[str, tuple[str, str]]:
        fid_holder.append(fid)
        return {
            "search_rank": (builder.render(rank, DOCUMENTS, alias) + "::float8", "float"),
            "search_snippet": (builder.render(snippet, DOCUMENTS, alias), "str"),
        }

    def where(alias: str, _fid: int, _args: dict[str, Any]) -> list[str]:
        return [builder.render(matches, DOCUMENTS, alias)]

    return builder.connection(spec, definition, nodes, parent=None, computed=computed, extra_where=where)


def _search_value(column: str) -> DomainField:
    """Document.searchRank / searchSnippet: the page's computed column in search results, null elsewhere."""

    def compile_value(
        builder: Builder, etype: EntityType, alias: str, definition: GraphQLField, nodes: list[FieldNode],
        used: set[str],
    ) -> str:
        if column not in builder._computed.get(alias, {}):
            return "NULL::text"
        ref = f"{alias}.{_ident(column)}"
        if column == "search_rank":
            return ref
        from resolvers.documents.access_log import ContentRead
        from resolvers.documents.queries import MARK_END, MARK_START

        escaped = f"replace(replace(replace({ref}, '&', '&amp;'), '<', '&lt;'), '>', '&gt;')"
        html = (
            f"replace(replace({escaped}, {builder.const(MARK_START, 'text')}, '<mark>'), "
            f"{builder.const(MARK_END, 'text')}, '</mark>')"
        )
        return builder.content_read(ContentRead.SEARCH_SNIPPET, etype, alias, ref, html, nodes, used)

    return compile_value


def _content_preview(
    builder: Builder, etype: EntityType, alias: str, definition: GraphQLField, nodes: list[FieldNode], used: set[str]
) -> str:
    """Document.contentPreview: the column, its read logged like the executor's (a content read)."""
    from resolvers.documents.access_log import ContentRead

    used.add("content_preview")
    ref = f"{alias}.{_ident('content_preview')}"
    return builder.content_read(ContentRead.CONTENT_PREVIEW, etype, alias, ref, ref, nodes, used)


def _covering_guard(field: GraphQLField) -> Permission | None:
    """The permission a field's `requires(..., covering=table)` asks for, if any."""
    from schema.permissions import DescribedPermissions, Requires

    definition = field.extensions.get("strawberry-definition")
    for extension in getattr(definition, "extensions", ()):
        if isinstance(extension, DescribedPermissions):
            for check in extension.permissions:
                if isinstance(check, Requires):
                    if check.covering is None:
                        raise Fallback("a permission the compiler does not decide")
                    return check.permission
    return None


def _nth_id(fid: int, i: int, type_name: str) -> Param:
    from strawberry.relay import GlobalID

    def get(a: Args) -> uuid.UUID:
        gid = GlobalID.from_id(a[fid]["ids"][i])
        if gid.type_name != type_name:
            raise Fallback("node type changed")
        return uuid.UUID(gid.node_id)

    return get


_ROW_ID = " row id"  # no argument's name: where `_node`'s row id is kept in the request's arguments


def _node(builder: Builder, definition: GraphQLField, nodes: list[FieldNode]) -> str:
    from strawberry.relay import GlobalID

    fid, args = builder.field_args(definition, nodes[0])
    try:
        global_id = GlobalID.from_id(args["id"])
        uuid.UUID(global_id.node_id)
    except Exception:
        raise Fallback("node id") from None
    etype = builder.catalog.types.get(global_id.type_name)
    if etype is None:
        raise Fallback("node type")
    alias = builder.alias()

    def row_id(a: Args) -> uuid.UUID:
        given = a[fid]
        found: uuid.UUID | None = given.get(_ROW_ID)  # decoded once per request, bound twice for a granted read
        if found is None:
            gid = GlobalID.from_id(given["id"])
            if gid.type_name != etype.name:
                raise Fallback("node type changed")
            found = given[_ROW_ID] = uuid.UUID(gid.node_id)
        return found

    granted = _granted_by_id(builder, etype.table)
    if granted is None:
        rows = builder.rows(etype.table, alias)
    else:
        # The row is a project read through project-scoped grants only: whether its id is one of them is known
        # from the id itself, a boolean bound per request, rather than a condition on the grants in SQL.
        tenant = builder.const(builder.scope.tenant_id, "uuid")
        held = builder.runtime(lambda a: row_id(a) in granted, "boolean")
        rows = f"{alias}.\"tenant_id\" = {tenant} AND {held}"
        builder.bounds[alias] = granted  # as `rows` records a project-scoped read
    builder._alias_types[alias] = etype
    body = builder.entity(etype, alias, nodes, set())

    ident = builder.runtime(row_id, "uuid")
    return (
        f"SELECT ({body})::text FROM {_ident(etype.table.name)} {alias} WHERE {alias}.\"id\" = {ident} "
        f"AND {rows}"
    )


def _granted_by_id(builder: Builder, table: Table) -> frozenset[uuid.UUID] | None:
    """The projects granted for reading `table`, when its rows are projects (a Direct rule on `id`) the caller reads
    through project-scoped grants only and its read condition is exactly "the id is one of them"; else None."""
    rule = READ_RULES.get(table.name)
    if (
        rule is None or rule.permission is None or rule.own is not None or rule.levels is not None
        or not isinstance(rule.project, Direct) or rule.project.column != "id"
        or str(rule.permission) in builder.scope.grants.tenant_wide
    ):
        return None
    granted = builder.scope.projects_with(rule.permission)
    condition = builder.scope.condition(table)
    if (
        granted and isinstance(condition, BinaryExpression) and condition.operator is operators.in_op
        and condition.left is table.c.id and isinstance(condition.right, BindParameter)
        and condition.right.expanding and frozenset(condition.right.value or ()) == granted
    ):
        return granted
    return None


# -- domain fields ---------------------------------------------------------------------------------
# Fields with a resolver of their own whose rule is written here in SQL too; each is held to the
# executor's answer by the differential tests (tests/compiled/, tests/test_compiled_reads.py).

DomainField = Callable[[Builder, EntityType, str, GraphQLField, list[FieldNode], set[str]], str]

_SOURCE_NAMES = {"override": "OVERRIDE", "external": "EXTERNAL", "local": "LOCAL"}
_DATETIME_TEXT = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"
)


def _current_version(builder: Builder, project_alias: str, columns: str) -> str:
    """The project's current external version (the newest if several are current), readable rows only."""
    from models import ExternalOpportunityData

    table: Table = ExternalOpportunityData.__table__
    alias = builder.alias()
    return (
        f"SELECT {columns.replace('@', alias)} FROM \"external_opportunity_data\" {alias} "
        f"WHERE {alias}.\"opportunity_project_id\" = {project_alias}.\"id\" AND {alias}.\"is_current_version\" "
        f"AND {builder.rows(table, alias)} ORDER BY {alias}.\"data_snapshot_timestamp\" DESC, "
        f"{alias}.\"version_number\" DESC, {alias}.\"id\" DESC LIMIT 1"
    )


def _override_value(kind: str, v: str) -> str:
    raw = f"({v} #>> '{{}}')"
    typ = f"jsonb_typeof({v})"
    if kind == "string":
        return f"CASE WHEN {typ} IN ('string', 'number', 'boolean') THEN {raw} END"
    if kind == "decimal":
        from resolvers.opportunities.effective import DECIMAL_TEXT

        return (
            f"CASE WHEN {typ} = 'number' OR ({typ} = 'string' AND {raw} ~ {_literal_pattern(DECIMAL_TEXT)}) "
            f"THEN {raw}::numeric::text END"
        )
    if kind == "date":
        return (
            f"CASE WHEN {typ} = 'string' AND {raw} ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}$' "
            f"AND pg_input_is_valid({raw}, 'date') THEN to_char({raw}::date, 'YYYY-MM-DD') END"
        )
    return (
        f"CASE WHEN {typ} = 'string' AND {raw} ~ {_literal_pattern(_DATETIME_TEXT)} "
        f"AND pg_input_is_valid({raw}, 'timestamptz') THEN to_char({raw}::timestamptz AT TIME ZONE 'UTC', {_ISO}) END"
    )


def _literal_pattern(pattern: str) -> str:
    if "'" in pattern:
        raise Fallback("pattern")  # pragma: no cover - the patterns are constants of this codebase
    return "'" + pattern + "'"


def _effective(
    builder: Builder, etype: EntityType, alias: str, definition: GraphQLField, nodes: list[FieldNode], used: set[str]
) -> str:
    """`OpportunityProject.effective`: resolvers/opportunities/effective.py's rule in SQL."""
    from models import OpportunityProjectOverride
    from resolvers.opportunities.effective import OVERRIDABLE, ValueKind

    values_type = get_named_type(definition.type)
    assert isinstance(values_type, GraphQLObjectType)
    used.update({"id", "title", "description"})
    kinds = {f.name: f for f in OVERRIDABLE}
    overrides: Table = OpportunityProjectOverride.__table__
    cur, ovr = builder.alias(), builder.alias()
    parts: list[str] = []
    for key, field_nodes in builder.collect(values_type.name, nodes).items():
        name = field_nodes[0].name.value
        parts.append(builder.const(key, "text"))
        if name == "__typename":
            parts.append(builder.const(values_type.name, "text"))
            continue
        gql_field = values_type.fields[name]
        python_name = getattr(gql_field.extensions.get("strawberry-definition"), "python_name", None)
        spec = kinds.get(str(python_name))
        if spec is None:
            raise Fallback(f"effective field {name}")
        kind = {ValueKind.STRING: "string", ValueKind.DECIMAL: "decimal", ValueKind.DATE: "date",
                ValueKind.DATETIME: "datetime"}[spec.kind]
        column = _ident(spec.name)
        external = f"{cur}.{column}"
        external_value = {
            "string": external, "decimal": f"{external}::text", "date": f"to_char({external}, 'YYYY-MM-DD')",
            "datetime": f"to_char({external} AT TIME ZONE 'UTC', {_ISO})",
        }[kind]
        override = f"({ovr}.values -> {_literal(spec.name)})"
        value_type = get_named_type(gql_field.type)
        assert isinstance(value_type, GraphQLObjectType)

        def wrapped(value: str, source: str, value_type: GraphQLObjectType = value_type,
                    field_nodes: list[FieldNode] = field_nodes) -> str:
            inner: list[str] = []
            for inner_key, inner_nodes in builder.collect(value_type.name, field_nodes).items():
                inner_name = inner_nodes[0].name.value
                inner.append(builder.const(inner_key, "text"))
                if inner_name == "__typename":
                    inner.append(builder.const(value_type.name, "text"))
                elif inner_name == "value":
                    inner.append(value)
                elif inner_name == "source":
                    inner.append(_literal(_SOURCE_NAMES[source]))
                else:
                    raise Fallback(f"effective value field {inner_name}")
            return "json_build_object(" + ", ".join(inner) + ")"

        whens = [
            f"WHEN {ovr}.values ? {_literal(spec.name)} THEN {wrapped(_override_value(kind, override), 'override')}",
            f"WHEN {external} IS NOT NULL THEN {wrapped(external_value, 'external')}",
        ]
        if spec.local:
            whens.append(f"WHEN {alias}.{column} IS NOT NULL THEN {wrapped(f'{alias}.{column}', 'local')}")
        parts.append("CASE " + " ".join(whens) + " END")
    if len(parts) > 2 * _MAX_KEYS:
        raise Fallback("too many keys")
    columns = ", ".join(f"@.{_ident(f.name)}" for f in OVERRIDABLE)
    o = builder.alias()
    return (
        f"(SELECT json_build_object({', '.join(parts)}) FROM (SELECT 1) _one "
        f"LEFT JOIN LATERAL ({_current_version(builder, alias, columns)}) {cur} ON true "
        f"LEFT JOIN LATERAL (SELECT jsonb_object_agg({o}.\"field_name\", {o}.\"override_value\") "
        f"AS values FROM \"opportunity_project_overrides\" {o} WHERE {o}.\"opportunity_project_id\" "
        f"= {alias}.\"id\" AND {o}.\"is_active\" AND {builder.rows(overrides, o)}) {ovr} ON true)"
    )


def _current_external_data(
    builder: Builder, etype: EntityType, alias: str, definition: GraphQLField, nodes: list[FieldNode], used: set[str]
) -> str:
    """`OpportunityProject.currentExternalData`: the current version, as the executor's loader picks it."""
    target = builder.catalog.types.get("ExternalOpportunityData")
    if target is None:
        raise Fallback("ExternalOpportunityData is not compiled")
    used.add("id")
    inner = builder.alias()
    inner_used: set[str] = set()
    body = builder.entity(target, inner, nodes, inner_used)
    return f"(SELECT {body} FROM ({_current_version(builder, alias, '@.*')}) {inner})"


def _trail_value(column: str) -> DomainField:
    """A trail value (ChangeHistory.oldValue, AuditLog.afterValues...): compiled for a caller who holds every
    guarded permission tenant-wide (nothing can be withheld); otherwise resolvers/common/trail_guard.py decides
    per row on the executor."""

    def compile_value(
        builder: Builder, etype: EntityType, alias: str, definition: GraphQLField, nodes: list[FieldNode],
        used: set[str],
    ) -> str:
        from auth.rules import FIELD_RULES

        if not {str(p) for p in FIELD_RULES.values()} <= builder.scope.grants.tenant_wide:
            raise Fallback("trail values under a guard")
        used.add(column)
        return f"{alias}.{_ident(column)}"

    return compile_value


DOMAIN_FIELDS: dict[tuple[str, str], DomainField] = {
    ("Document", "searchRank"): _search_value("search_rank"),
    ("Document", "searchSnippet"): _search_value("search_snippet"),
    ("Document", "contentPreview"): _content_preview,
    ("ChangeHistory", "oldValue"): _trail_value("old_value"),
    ("ChangeHistory", "newValue"): _trail_value("new_value"),
    ("AuditLog", "beforeValues"): _trail_value("before_values"),
    ("AuditLog", "afterValues"): _trail_value("after_values"),
    ("AuditLog", "changedFields"): _trail_value("changed_fields"),
    ("OpportunityProject", "effective"): _effective,
    ("OpportunityProject", "currentExternalData"): _current_external_data,
}
