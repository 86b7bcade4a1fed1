"""Random read operations over the served schema, drawn with hypothesis, for the differential test.

The generator walks the GraphQL schema (graphql-core's view of the Strawberry schema): one or two
root fields per operation, mostly root lists and `node(id:)`, sometimes `viewer` or
`pipelineSummary` beside them. Each root list gets pages (`first`/`last`, with a cursor variable the
test fills from a first call's `pageInfo`), filters drawn from the filter input types with values
from the test's data (literal or as a variable), orders, and under it nested connections (`nodes`
or `edges`, `totalCount`, `pageInfo`), to-one relations, interfaces and unions (inline fragments per
possible type), leaves including the permission-guarded ones, `__typename`, random aliases (some
named like another field of the type), named and inline fragments and `@include`/`@skip` with
literal and variable conditions. Every document is valid against the schema (the test checks).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    Undefined,
    get_named_type,
    is_leaf_type,
)
from hypothesis import strategies as st

__all__ = ["CursorUse", "EnumValue", "Generated", "Pools", "guarded_fields", "literal", "operations"]

T = TypeVar("T")
Draw = Callable[[st.SearchStrategy[Any]], Any]

MAX_DEPTH = 2  # relations below a root list's items: item -> relation -> relation (now and then one more)
# Aliases a compiler might trip on: names of its own SQL, of the response's envelope, of JSON oddities.
ODD_ALIASES = (
    "__typename", "__rn", "__cursor", "t1", "id", "nodes", "edges", "totalCount", "pageInfo", "data", "errors",
    "extensions", "null", "true", "__proto__", "constructor", "json", "select", "E", "_",
)
ROOT_SIDE_FIELDS = ("viewer", "pipelineSummary")  # root fields that are not lists, drawn rarely


class EnumValue(str):
    """An enum value: a bare name in a document, a string in JSON variables."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Pools:
    """Values drawn into arguments: ids and strings from the test's data."""

    uuids: Sequence[str]
    strings: Sequence[str]
    node_ids: Sequence[str]
    datetimes: Sequence[str] = (
        "2020-01-01T00:00:00Z", "2026-02-02T09:30:15.123456+00:00", "2030-01-01T00:00:00+02:00",
    )
    dates: Sequence[str] = ("2026-03-02", "2020-01-01")
    decimals: Sequence[str] = ("10", "40.0", "75.5", "0")


@dataclass(frozen=True, slots=True)
class CursorUse:
    """A root list pages with a cursor variable: fill `variable` from `data[root_key].pageInfo[field]`."""

    variable: str
    root_key: str
    field: str  # endCursor (with after) | startCursor (with before)


@dataclass(frozen=True, slots=True)
class Generated:
    document: str
    variables: dict[str, Any]
    root_keys: tuple[str, ...]  # the response keys of the root fields, in order
    root_names: tuple[str, ...]  # their field names
    cursor: CursorUse | None


def guarded_fields(schema: GraphQLSchema) -> frozenset[str]:
    """`Type.field` of every field carrying @requiresPermission (schema/permissions.py)."""
    out: set[str] = set()
    for type_name, graphql_type in schema.type_map.items():
        if not isinstance(graphql_type, GraphQLObjectType) or type_name.startswith("__"):
            continue
        for field_name, graphql_field in graphql_type.fields.items():
            definition = graphql_field.extensions.get("strawberry-definition") if graphql_field.extensions else None
            for directive in getattr(definition, "directives", None) or ():
                if type(directive).__name__ == "RequiresPermission":
                    out.add(f"{type_name}.{field_name}")
    return frozenset(out)


def literal(value: Any) -> str:
    """`value` written as a GraphQL literal (strings escaped as JSON, which GraphQL reads the same)."""
    if value is None:
        return "null"
    if isinstance(value, EnumValue):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no literal for {value!r}")


def _type_string(graphql_type: GraphQLInputType) -> str:
    return str(graphql_type)


def _is_connection(graphql_type: GraphQLNamedType) -> bool:
    return (
        isinstance(graphql_type, GraphQLObjectType)
        and graphql_type.name.endswith("Connection")
        and {"nodes", "pageInfo"} <= set(graphql_type.fields)
    )


def _required_args(graphql_field: GraphQLField) -> bool:
    return any(
        isinstance(arg.type, GraphQLNonNull) and arg.default_value is Undefined for arg in graphql_field.args.values()
    )


class _Builder:
    """One operation being drawn."""

    def __init__(self, draw: Draw, schema: GraphQLSchema, pools: Pools, guarded: frozenset[str]) -> None:
        self.draw = draw
        self.schema = schema
        self.pools = pools
        self.guarded = guarded
        self.var_defs: list[str] = []
        self.variables: dict[str, Any] = {}
        self.fragments: list[str] = []
        self.counter = 0

    # -- drawing helpers ---------------------------------------------------------------------------

    def chance(self, percent: int) -> bool:
        return bool(self.draw(st.integers(0, 99)) < percent)

    def pick(self, items: Sequence[T]) -> T:
        picked: T = self.draw(st.sampled_from(list(items)))
        return picked

    def some(self, items: Sequence[T], low: int, high: int) -> list[T]:
        if not items:
            return []
        high = min(high, len(items))
        low = min(low, high)
        chosen: list[T] = self.draw(st.lists(st.sampled_from(list(items)), min_size=low, max_size=high, unique=True))
        return chosen

    def unique(self) -> int:
        self.counter += 1
        return self.counter

    def variable(self, type_string: str, value: Any) -> str:
        name = f"v{self.unique()}"
        self.var_defs.append(f"${name}: {type_string}")
        self.variables[name] = value
        return f"${name}"

    def value_or_variable(self, type_string: str, value: Any) -> str:
        """A literal, a variable given in `variables`, or now and then a variable left to its default."""
        roll = self.draw(st.integers(0, 99))
        if roll < 60:
            return literal(value)
        if roll < 90:
            return self.variable(type_string, value)
        name = f"v{self.unique()}"
        self.var_defs.append(f"${name}: {type_string} = {literal(value)}")
        return f"${name}"

    def alias(self, taken: set[str], other_names: Sequence[str]) -> str:
        """A fresh alias: a random name, or now and then the name of another field of the type."""
        spare = [n for n in other_names if n not in taken]
        if spare and self.chance(25):
            return self.pick(spare)
        odd = [n for n in ODD_ALIASES if n not in taken]
        if odd and self.chance(10):
            return self.pick(odd)
        stem: str = self.draw(st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,8}", fullmatch=True))
        return f"{stem}_{self.unique()}"

    def directive(self) -> str:
        """Mostly nothing; sometimes @include/@skip (mostly keeping the field; literal or variable)."""
        if not self.chance(12):
            return ""
        which = self.pick(["include", "skip"])
        kept = self.chance(75)  # mostly kept; sometimes left out
        value = kept if which == "include" else not kept
        condition = self.variable("Boolean!", value) if self.chance(50) else literal(value)
        return f" @{which}(if: {condition})"

    # -- input values ------------------------------------------------------------------------------

    def input_value(self, graphql_type: GraphQLInputType) -> Any:
        nullable = not isinstance(graphql_type, GraphQLNonNull)
        inner = graphql_type.of_type if isinstance(graphql_type, GraphQLNonNull) else graphql_type
        if nullable and self.chance(6):
            return None
        if isinstance(inner, GraphQLList):
            return [self.input_value(inner.of_type) for _ in range(self.draw(st.integers(1, 3)))]
        if isinstance(inner, GraphQLEnumType):
            return EnumValue(self.pick(list(inner.values)))
        if isinstance(inner, GraphQLInputObjectType):
            return self.input_object(inner)
        assert isinstance(inner, GraphQLScalarType)
        name = inner.name
        if name == "Boolean":
            return self.draw(st.booleans())
        if name == "UUID":
            return self.pick(self.pools.uuids)
        if name == "ID":
            return self.pick(self.pools.node_ids)
        if name == "DateTime":
            return self.pick(self.pools.datetimes)
        if name == "Date":
            return self.pick(self.pools.dates)
        if name in ("Decimal", "Float"):
            return self.pick(self.pools.decimals) if name == "Decimal" else float(self.pick(self.pools.decimals))
        if name in ("Int", "BigInt"):
            return self.draw(st.integers(0, 5))
        if name == "String":
            return self.pick(self.pools.strings)
        return None if nullable else self.pick(self.pools.strings)

    def input_object(self, graphql_type: GraphQLInputObjectType) -> dict[str, Any]:
        """The required fields and one optional one (operator filters take one operator)."""
        fields = graphql_type.fields
        required = [n for n, f in fields.items() if isinstance(f.type, GraphQLNonNull) and f.default_value is Undefined]
        optional = [n for n in fields if n not in required]
        chosen = required + self.some(optional, 0 if required else 1, 1)
        return {name: self.input_value(fields[name].type) for name in chosen}

    def filter_value(self, graphql_type: GraphQLInputObjectType) -> dict[str, Any]:
        """A list filter: one or two of its columns, each with one operator."""
        columns = self.some(list(graphql_type.fields), 1, 2)
        out: dict[str, Any] = {}
        for column in columns:
            out[column] = self.input_value(graphql_type.fields[column].type)
        return out

    # -- selections --------------------------------------------------------------------------------

    def selection_set(self, graphql_type: GraphQLNamedType, depth: int) -> str:
        taken: set[str] = set()
        return "{ " + " ".join(self.selections(graphql_type, depth, taken)) + " }"

    def selections(self, graphql_type: GraphQLNamedType, depth: int, taken: set[str]) -> list[str]:
        if isinstance(graphql_type, GraphQLInterfaceType | GraphQLUnionType):
            return self.abstract_selections(graphql_type, depth, taken)
        assert isinstance(graphql_type, GraphQLObjectType), graphql_type
        if _is_connection(graphql_type):
            return self.connection_selections(graphql_type, depth, taken, cursor_field=None)
        return self.object_selections(graphql_type, depth, taken)

    def abstract_selections(
        self, graphql_type: GraphQLInterfaceType | GraphQLUnionType, depth: int, taken: set[str]
    ) -> list[str]:
        parts = ["__typename"]
        taken.add("__typename")
        if isinstance(graphql_type, GraphQLInterfaceType) and "id" in graphql_type.fields and self.chance(60):
            parts.append("id")
            taken.add("id")
        possible = list(self.schema.get_possible_types(graphql_type))
        for concrete in self.some(possible, 1, 2):
            # Fields under different types share the response keys: aliases keep them apart.
            inner = self.object_selections(concrete, depth, taken, alias_all=True)
            parts.append(f"... on {concrete.name} {{ {' '.join(inner)} }}")
        return parts

    def connection_selections(
        self, graphql_type: GraphQLObjectType, depth: int, taken: set[str], cursor_field: str | None
    ) -> list[str]:
        item = get_named_type(graphql_type.fields["nodes"].type)
        parts: list[str] = []
        page_fields = ["hasNextPage", "hasPreviousPage", "startCursor", "endCursor"]
        if cursor_field is not None:  # the test reads this cursor: plain keys, always present
            chosen = sorted(set(self.some(page_fields, 0, 3)) | {cursor_field}, key=page_fields.index)
            parts.append("pageInfo { " + " ".join(chosen) + " }")
            taken.add("pageInfo")
        elif self.chance(35):
            parts.append(self.keyed("pageInfo", taken, ["totalCount"]) + " { "
                         + " ".join(self.some(page_fields, 1, 4)) + " }")
        if self.chance(45):
            parts.append(self.keyed("totalCount", taken, ["nodes"]) + self.directive())
        shapes = ["nodes", "nodes", "nodes", "edges", "both", "neither"] if parts else ["nodes", "edges"]
        shape = self.pick(shapes)  # neither: totalCount and/or pageInfo alone
        if shape in ("nodes", "both"):
            parts.append(self.keyed("nodes", taken, []) + " " + self.selection_set(item, depth))
        if shape in ("edges", "both"):
            edge = get_named_type(graphql_type.fields["edges"].type)
            assert isinstance(edge, GraphQLObjectType)
            inner = ["cursor"] if self.chance(50) else []
            inner.append("node " + self.selection_set(item, depth))
            parts.append(self.keyed("edges", taken, []) + " { " + " ".join(inner) + " }")
        return parts

    def keyed(self, name: str, taken: set[str], others: Sequence[str]) -> str:
        """`name`, or `alias: name` (always when the name is taken as a key already)."""
        if name in taken or self.chance(20):
            key = self.alias(taken | {name}, others)
            taken.add(key)
            return f"{key}: {name}"
        taken.add(name)
        return name

    def object_selections(
        self, graphql_type: GraphQLObjectType, depth: int, taken: set[str], *, alias_all: bool = False
    ) -> list[str]:
        fields = {n: f for n, f in graphql_type.fields.items() if not _required_args(f)}
        leaves = [n for n, f in fields.items() if is_leaf_type(get_named_type(f.type))]
        relations = [n for n, f in fields.items() if not is_leaf_type(get_named_type(f.type))]
        guarded = [n for n in leaves if f"{graphql_type.name}.{n}" in self.guarded]
        chosen = self.some([n for n in leaves if n not in guarded], 1, 5)
        if guarded and self.chance(60):
            chosen.append(self.pick(guarded))
        if relations and (depth < MAX_DEPTH or (depth == MAX_DEPTH and self.chance(15))):
            picked = self.some(relations, 0, 2 if depth == 0 else 1)
            chosen += picked
            if picked and self.chance(15):
                chosen.append(picked[0])  # the same field again under another key, with other arguments
        if self.chance(20):
            chosen.append("__typename")
        chosen = self.draw(st.permutations(chosen))
        names = list(graphql_type.fields)
        pieces: list[str] = []
        later: list[str] = []  # selected again after the others (merged with the first by key)
        for name in chosen:
            if name == "__typename":
                if "__typename" in taken:
                    continue
                taken.add("__typename")
                pieces.append("__typename")
                continue
            graphql_field = fields[name]
            named = get_named_type(graphql_field.type)
            if alias_all or name in taken or self.chance(20):
                key = self.alias(taken | set(chosen), [n for n in names if n not in chosen] if not alias_all else [])
                head = f"{key}: {name}"
            else:
                key = name
                head = name
            taken.add(key)
            head += self.field_arguments(graphql_field, named)
            head += self.directive()
            if not is_leaf_type(named):
                if not alias_all and self.chance(12):
                    # One key twice, its selections merged: a part here, a part in a fragment after.
                    merged: set[str] = set()
                    here = self.selections(named, depth + 1, merged)
                    there = self.selections(named, depth + 1, merged)
                    pieces.append(f"{head} {{ {' '.join(here)} }}")
                    later.append(f"{head} {{ {' '.join(there)} }}")
                    continue
                head += " " + self.selection_set(named, depth + 1)
            elif not alias_all and self.chance(8):
                later.append(head)  # a leaf asked for twice
            pieces.append(head)
        out = self.wrap_in_fragments(graphql_type, pieces)
        if later:
            out.append("... { " + " ".join(later) + " }")
        is_node = any(interface.name == "Node" for interface in graphql_type.interfaces)
        if is_node and not alias_all and "id" not in taken and self.chance(10):
            taken.add("id")
            out.append("... on Node { id }")
        return out

    def field_arguments(self, graphql_field: GraphQLField, named: GraphQLNamedType) -> str:
        if not _is_connection(named) or "first" not in graphql_field.args:
            return ""
        kind = self.pick(["first", "first", "first", "last", "none"])
        if kind == "none":
            return ""
        size = self.draw(st.integers(0 if kind == "first" else 1, 3))
        return f"({kind}: {self.value_or_variable('Int', size)})"

    def wrap_in_fragments(self, graphql_type: GraphQLObjectType, pieces: list[str]) -> list[str]:
        """Move some selections into a named fragment or an inline fragment."""
        if len(pieces) < 2 or not self.chance(35):
            return pieces
        cut = self.draw(st.integers(1, len(pieces) - 1))
        moved, kept = pieces[:cut], pieces[cut:]
        how = self.pick(["named", "inline-typed", "inline-bare"])
        if how == "named":
            name = f"F{self.unique()}"
            self.fragments.append(f"fragment {name} on {graphql_type.name} {{ {' '.join(moved)} }}")
            spread = f"...{name}{self.directive()}"
        elif how == "inline-typed":
            spread = f"... on {graphql_type.name}{self.directive()} {{ {' '.join(moved)} }}"
        else:
            spread = f"...{self.directive()} {{ {' '.join(moved)} }}"
        return [*kept[:1], spread, *kept[1:]]

    # -- root fields -------------------------------------------------------------------------------

    def root_list(self, name: str, graphql_field: GraphQLField, key: str, allow_cursor: bool) -> tuple[str, str | None]:
        """The root list field's text and, when it pages with a cursor variable, that cursor's pageInfo field."""
        connection = get_named_type(graphql_field.type)
        assert isinstance(connection, GraphQLObjectType)
        args: list[str] = []
        cursor_field: str | None = None
        for arg_name, arg in graphql_field.args.items():
            if isinstance(arg.type, GraphQLNonNull):  # changeHistory(entityId:)
                args.append(f"{arg_name}: {self.value_or_variable(_type_string(arg.type), self.input_value(arg.type))}")
        paging = self.pick(["none", "first", "first", "last", "after", "before"])
        if paging in ("after", "before") and not allow_cursor:
            paging = "first"
        if paging in ("first", "after"):
            args.append(f"first: {self.value_or_variable('Int', self.draw(st.integers(0, 4)))}")
        elif paging in ("last", "before"):
            args.append(f"last: {self.value_or_variable('Int', self.draw(st.integers(1, 3)))}")
        if paging in ("after", "before"):
            cursor_field = "endCursor" if paging == "after" else "startCursor"
            args.append(f"{paging}: $cursor")
            self.var_defs.append("$cursor: String")
            self.variables["cursor"] = None
        if "filter" in graphql_field.args and self.chance(45):
            filter_type = get_named_type(graphql_field.args["filter"].type)
            assert isinstance(filter_type, GraphQLInputObjectType)
            args.append(f"filter: {self.value_or_variable(filter_type.name, self.filter_value(filter_type))}")
        if "orderBy" in graphql_field.args and self.chance(40):
            order_type = get_named_type(graphql_field.args["orderBy"].type)
            assert isinstance(order_type, GraphQLInputObjectType)
            field_enum = get_named_type(order_type.fields["field"].type)
            assert isinstance(field_enum, GraphQLEnumType)
            terms = []
            for field_name in self.some(list(field_enum.values), 1, 2):
                term: dict[str, Any] = {"field": EnumValue(field_name)}
                if self.chance(60):
                    term["direction"] = EnumValue(self.pick(["ASC", "DESC"]))
                terms.append(term)
            args.append(f"orderBy: {self.value_or_variable(f'[{order_type.name}!]', terms)}")
        if "search" in graphql_field.args and self.chance(15):
            args.append(f"search: {self.value_or_variable('String', self.pick(['volume', 'Proposal', 'rfp']))}")
        taken: set[str] = set()
        inner = self.connection_selections(connection, 0, taken, cursor_field=cursor_field)
        head = name if key == name else f"{key}: {name}"
        arg_text = f"({', '.join(args)})" if args else ""
        return f"{head}{arg_text} {{ {' '.join(inner)} }}", cursor_field

    def node_root(self, name: str, key: str) -> str:
        """`node(id:)`, or `nodes(ids:)` over a few ids (of this tenant, another one, or none)."""
        node_type = self.schema.type_map["Node"]
        assert isinstance(node_type, GraphQLInterfaceType)
        head = name if key == name else f"{key}: {name}"
        if name == "nodes":
            ids = self.some(list(self.pools.node_ids), 1, 3)
            return f"{head}(ids: {self.value_or_variable('[ID!]!', ids)}) {self.selection_set(node_type, 0)}"
        global_id = self.pick(self.pools.node_ids)
        return f"{head}(id: {self.value_or_variable('ID!', global_id)}) {self.selection_set(node_type, 0)}"

    def side_root(self, name: str, key: str) -> str:
        query_type = self.schema.query_type
        assert query_type is not None
        graphql_field = query_type.fields[name]
        head = name if key == name else f"{key}: {name}"
        return f"{head} {self.selection_set(get_named_type(graphql_field.type), MAX_DEPTH)}"

    def operation(self) -> Generated:
        query_type = self.schema.query_type
        assert query_type is not None
        lists = [n for n, f in query_type.fields.items() if _is_connection(get_named_type(f.type))]
        count = self.pick([1, 1, 1, 2])
        roots: list[str] = []
        keys: list[str] = []
        names: list[str] = []
        cursor: CursorUse | None = None
        for _ in range(count):
            kind = self.pick(["list"] * 6 + ["node"] * 2 + ["side"])
            name = (
                self.pick(lists) if kind == "list"
                else self.pick(["node", "node", "node", "nodes"]) if kind == "node"
                else self.pick(ROOT_SIDE_FIELDS)
            )
            key = name if name not in keys and self.chance(70) else self.alias(set(keys), [])
            keys.append(key)
            names.append(name)
            if kind == "list":
                text, cursor_field = self.root_list(name, query_type.fields[name], key, allow_cursor=cursor is None)
                if cursor_field is not None:
                    cursor = CursorUse(variable="cursor", root_key=key, field=cursor_field)
            elif kind == "node":
                text = self.node_root(name, key)
            else:
                text = self.side_root(name, key)
            roots.append(text)
        variables = f"({', '.join(self.var_defs)})" if self.var_defs else ""
        if self.chance(10):  # introspection beside the root fields (answered by the executor, never compiled)
            extra = self.pick(["__typename", "__schema { queryType { name } }", '__type(name: "PageInfo") { name }'])
            if extra.split("(")[0].split(" ")[0] not in keys:
                roots.insert(self.draw(st.integers(0, len(roots))), extra)
        document = "\n".join([f"query Generated{variables} {{ {' '.join(roots)} }}", *self.fragments])
        return Generated(
            document=document, variables=self.variables, root_keys=tuple(keys), root_names=tuple(names), cursor=cursor
        )

@st.composite
def operations(draw: Draw, schema: GraphQLSchema, pools: Pools, guarded: frozenset[str]) -> Generated:
    """One random read operation over `schema`, its variables and what the test needs to know of it."""
    return _Builder(draw, schema, pools, guarded).operation()
