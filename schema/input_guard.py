"""One check of every argument value before an operation runs: text the database can store.

`InputGuard` (a schema extension) walks the selected operation once, after validation and before
execution: every argument of every field, through input objects, lists, variables and their
defaults, literals and variables alike. It refuses the whole operation, naming the argument path
(`input.projectName`), when

    a string holds NUL or an unpaired surrogate       PostgreSQL text cannot hold them (any scalar,
                                                      JSON values and keys included)
    a string is longer than its limit                 the column's length where the argument is
                                                      stored (`string_limits()`), else MAX_TEXT_LENGTH
    an `ID` is not the global id of a Node type       e.g. `UserError:1`, `Query:1`
    the document holds several operations and no      the GraphQL spec's GetOperation: it must not
    operationName was given                           silently run the first one

so no resolver, loader or unit of work ever sees such a value. Refusals are GraphQL errors with
`extensions {code: BAD_USER_INPUT, field: [path...]}` (`code: BAD_REQUEST` for the operation
name); docs/api.md lists the codes. The walk costs one pass over the operation's field nodes; a
document without arguments costs nothing more.

A mutation that already checks a length itself and answers with a `UserError` on that field
(`DOMAIN_CHECKED`) keeps doing so: the guard applies only MAX_TEXT_LENGTH there.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    get_named_type,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import SchemaExtension

__all__ = [
    "BAD_REQUEST",
    "BAD_USER_INPUT",
    "DOMAIN_CHECKED",
    "INPUT_TABLES",
    "MAX_ID_LENGTH",
    "MAX_TEXT_LENGTH",
    "InputGuard",
    "PreparedCheck",
    "check_operation",
    "string_limit",
    "string_limits",
]

BAD_USER_INPUT = "BAD_USER_INPUT"
BAD_REQUEST = "BAD_REQUEST"
# Any string argument without a column of its own (filters, search, text columns): generous for
# prose, and far below the 1 MiB body limit.
MAX_TEXT_LENGTH = 100_000
# A global id is base64 of "TypeName:uuid": well under this.
MAX_ID_LENGTH = 200
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# Input type -> the table its fields are stored in, by column name (snake_case of the field).
INPUT_TABLES: dict[str, str] = {
    "OpportunityProjectCreateInput": "opportunity_projects",
    "OpportunityProjectUpdateInput": "opportunity_projects",
    "OpportunityProjectOverrideCreateInput": "opportunity_project_overrides",
    "OpportunityProjectOverrideUpdateInput": "opportunity_project_overrides",
    "CapturePlanCreateInput": "capture_plans",
    "CapturePlanUpdateInput": "capture_plans",
    "ApiKeyCreateInput": "api_keys",
    "UserInviteInput": "users",
    "RoleCreateInput": "roles",
    "RoleUpdateInput": "roles",
}
# Fields stored under another column's name ("Type.field" -> (table, column)).
_STORED_AS: dict[str, tuple[str, str]] = {
    "ApiKeyCreateInput.roleName": ("roles", "name"),
    "UserInviteInput.roles": ("roles", "name"),
    "OpportunityProjectCreateInput.idempotencyKey": ("idempotency_keys", "key"),
    "OpportunityProjectOverrideCreateInput.idempotencyKey": ("idempotency_keys", "key"),
    "CapturePlanCreateInput.idempotencyKey": ("idempotency_keys", "key"),
    "OpportunityProjectArchiveInput.reason": ("audit_logs", "change_reason"),
    "CapturePlanArchiveInput.reason": ("audit_logs", "change_reason"),
}
# Limits of arguments that are not stored in a column at all.
_FIXED: dict[str, int] = {
    "MfaEnrollmentConfirmInput.code": 64,
    "UserSetTemporaryPasswordInput.password": 1024,  # as /auth/* accepts passwords
}
# Fields whose mutation refuses an over-long value itself, with a UserError on that field.
DOMAIN_CHECKED: frozenset[str] = frozenset(
    {
        "OpportunityProjectCreateInput.projectName",
        "OpportunityProjectUpdateInput.projectName",
        "CapturePlanCreateInput.planName",
        "CapturePlanUpdateInput.planName",
        "RoleCreateInput.name",
        "RoleUpdateInput.name",
        "ApiKeyCreateInput.name",
        "OpportunityProjectCreateInput.idempotencyKey",
        "OpportunityProjectOverrideCreateInput.idempotencyKey",
        "CapturePlanCreateInput.idempotencyKey",
    }
)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _column_length(table: str, column: str) -> int | None:
    from models.base import Base

    found = Base.metadata.tables.get(table)
    if found is None or column not in found.columns:
        return None
    length = getattr(found.columns[column].type, "length", None)
    return length if isinstance(length, int) else None


@functools.cache
def string_limit(owner: str) -> int:
    """The longest string `owner` ("InputType.field" or "Type.field.argument") accepts."""
    if owner in _FIXED:
        return _FIXED[owner]
    if owner in DOMAIN_CHECKED:
        return MAX_TEXT_LENGTH
    length: int | None = None
    if owner in _STORED_AS:
        length = _column_length(*_STORED_AS[owner])
    else:
        type_name, _, field = owner.partition(".")
        table = INPUT_TABLES.get(type_name)
        if table is not None:
            length = _column_length(table, _snake(field))
    return length if length is not None else MAX_TEXT_LENGTH


def string_limits() -> dict[str, int]:
    """Every owner with a limit below MAX_TEXT_LENGTH (for tests and docs)."""
    owners = [*_FIXED, *_STORED_AS]
    for type_name in INPUT_TABLES:
        owners.extend(f"{type_name}.{field}" for field in _input_fields(type_name))
    return {owner: limit for owner in owners if (limit := string_limit(owner)) < MAX_TEXT_LENGTH}


def _input_fields(type_name: str) -> list[str]:
    from schema.schema import schema

    found = schema._schema.type_map.get(type_name)
    return list(found.fields) if isinstance(found, GraphQLInputObjectType) else []


class _Refusal(Exception):
    def __init__(self, error: GraphQLError) -> None:
        self.error = error


def _refuse(message: str, path: tuple[str | int, ...], node: Any, code: str = BAD_USER_INPUT) -> _Refusal:
    return _Refusal(
        GraphQLError(message, nodes=node, extensions={"code": code, "field": [str(p) for p in path]})
    )


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Walk:
    """The walk over one operation; raises _Refusal at the first value it cannot accept."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.variables = variables
        self.defaults = {
            d.variable.name.value: d.default_value for d in operation.variable_definitions or () if d.default_value
        }
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        self.seen: set[str] = set()

    def selections(self, selection_set: SelectionSetNode | None, parent: GraphQLNamedType | None) -> None:
        if selection_set is None:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                self.field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                self.selections(selection.selection_set, self.schema.get_type(condition.name.value) if condition
                                else parent)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is not None and name not in self.seen:
                    self.seen.add(name)
                    self.selections(fragment.selection_set, self.schema.get_type(fragment.type_condition.name.value))

    def field(self, node: FieldNode, parent: GraphQLNamedType | None) -> None:
        name = node.name.value
        if name.startswith("__") or not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return  # introspection reads the schema, never the database
        definition = parent.fields.get(name)
        if definition is None:
            return
        for argument in node.arguments or ():
            arg = definition.args.get(argument.name.value)
            if arg is not None:
                owner = f"{parent.name}.{name}.{argument.name.value}"
                self.literal(argument.value, arg.type, (argument.name.value,), owner)
        if node.selection_set is not None:
            self.selections(node.selection_set, get_named_type(definition.type))

    def literal(self, node: ValueNode, type_: GraphQLInputType, path: tuple[str | int, ...], owner: str) -> None:
        if isinstance(node, VariableNode):
            name = node.name.value
            if name in self.variables:
                self.value(self.variables[name], type_, path, owner, node)
            elif name in self.defaults:
                self.literal(self.defaults[name], type_, path, owner)
            return
        if isinstance(type_, GraphQLNonNull):
            type_ = type_.of_type
        if isinstance(type_, GraphQLList):
            if isinstance(node, ListValueNode):
                for index, item in enumerate(node.values):
                    self.literal(item, type_.of_type, (*path, index), owner)
            else:
                self.literal(node, type_.of_type, path, owner)
        elif isinstance(type_, GraphQLInputObjectType):
            if isinstance(node, ObjectValueNode):
                for field in node.fields:
                    definition = type_.fields.get(field.name.value)
                    if definition is not None:
                        self.literal(field.value, definition.type, (*path, field.name.value),
                                     f"{type_.name}.{field.name.value}")
        elif isinstance(type_, GraphQLScalarType):
            for text in _literal_strings(node, self.variables):
                self.text(text, type_, path, owner, node)

    def value(self, value: Any, type_: GraphQLInputType, path: tuple[str | int, ...], owner: str, node: Any) -> None:
        if isinstance(type_, GraphQLNonNull):
            type_ = type_.of_type
        if isinstance(type_, GraphQLList):
            if isinstance(value, list):
                for index, item in enumerate(value):
                    self.value(item, type_.of_type, (*path, index), owner, node)
            else:
                self.value(value, type_.of_type, path, owner, node)
        elif isinstance(type_, GraphQLInputObjectType):
            if isinstance(value, dict):
                for key, item in value.items():
                    definition = type_.fields.get(key) if isinstance(key, str) else None
                    if definition is not None:
                        self.value(item, definition.type, (*path, key), f"{type_.name}.{key}", node)
        elif isinstance(type_, GraphQLScalarType):
            for text in _strings(value):
                self.text(text, type_, path, owner, node)

    def text(self, text: str, scalar: GraphQLScalarType, path: tuple[str | int, ...], owner: str, node: Any) -> None:
        where = _dotted(path)
        if _UNSTORABLE.search(text):
            raise _refuse(f"`{where}` contains a NUL character or an unpaired surrogate, which cannot be stored.",
                          path, node)
        if scalar.name == "ID":
            if len(text) > MAX_ID_LENGTH or not self.is_global_id(text):
                raise _refuse(f"`{where}` is not the global id of a node.", path, node)
            return
        limit = string_limit(owner) if scalar.name == "String" else MAX_TEXT_LENGTH
        if len(text) > limit:
            raise _refuse(f"`{where}` is longer than {limit} characters.", path, node)

    def is_global_id(self, text: str) -> bool:
        try:
            decoded = base64.b64decode(text, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        type_name, sep, key = decoded.partition(":")
        found = self.schema.get_type(type_name) if sep and key else None
        return isinstance(found, GraphQLObjectType) and any(i.name == "Node" for i in found.interfaces)


def _literal_strings(node: ValueNode, variables: Mapping[str, Any]) -> Iterator[str]:
    """Every string in a literal (a JSON literal's object keys, and variables inside it, too)."""
    stack: list[ValueNode] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, StringValueNode):
            yield current.value
        elif isinstance(current, VariableNode):
            yield from _strings(variables.get(current.name.value))
        elif isinstance(current, ListValueNode):
            stack.extend(current.values)
        elif isinstance(current, ObjectValueNode):
            for field in current.fields:
                yield field.name.value
                stack.append(field.value)


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included (iteratively: the body parser bounds the depth)."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            yield current
        elif isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict):
            for key, item in current.items():
                if isinstance(key, str):
                    yield key
                stack.append(item)


def _operation_of(
    document: DocumentNode, operation_name: str | None
) -> tuple[OperationDefinitionNode | None, GraphQLError | None]:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        if len(operations) > 1:
            return None, GraphQLError(
                "The document holds several operations: name the one to run in `operationName`.",
                extensions={"code": BAD_REQUEST},
            )
        return (operations[0] if operations else None), None
    return next((o for o in operations if o.name and o.name.value == operation_name), None), None


def check_operation(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> GraphQLError | None:
    """The refusal of the operation's arguments, or None when every value can be stored."""
    operation, error = _operation_of(document, operation_name)
    if operation is None:
        return error  # without an error: graphql-core reports the unknown operation name
    root = schema.get_root_type(operation.operation)
    walk = _Walk(schema, document, operation, variables or {})
    try:
        walk.selections(operation.selection_set, root)
    except _Refusal as refusal:
        return refusal.error
    return None


class _NotPrepared(Exception):
    """A literal whose strings depend on variables (a JSON literal holding one): the walk is not recorded."""


class _Recorder(_Walk):
    """The walk with no variables: it checks the document's literals (and the variables' defaults) and records,
    in the walk's order, each place a variable's value is read, instead of reading it."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode) -> None:
        super().__init__(schema, document, operation, {})
        self.reads: list[tuple[str, GraphQLInputType, tuple[str | int, ...], str, VariableNode]] = []

    def literal(self, node: ValueNode, type_: GraphQLInputType, path: tuple[str | int, ...], owner: str) -> None:
        if isinstance(node, VariableNode):
            name = node.name.value
            self.reads.append((name, type_, path, owner, node))
            if name in self.defaults:  # a default is a constant: checked once, here
                super().literal(self.defaults[name], type_, path, owner)
            return
        if isinstance(get_named_type(type_), GraphQLScalarType) and _holds_variable(node):
            raise _NotPrepared
        super().literal(node, type_, path, owner)


def _holds_variable(node: ValueNode) -> bool:
    stack: list[ValueNode] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, VariableNode):
            return True
        if isinstance(current, ListValueNode):
            stack.extend(current.values)
        elif isinstance(current, ObjectValueNode):
            stack.extend(f.value for f in current.fields)
    return False


class PreparedCheck:
    """`check_operation` of one parsed document and operation name, for documents run again and again (the
    prepared path, schema/context.py): the walk over the selections, the literals and the variables' defaults
    are the document's, so they are checked once; each run checks the variables' values where the walk reads
    them, in the same order, with the same refusals. A document whose literals or operation name are refused,
    or whose JSON literals hold variables, is checked whole on every run."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode, operation_name: str | None) -> None:
        self.schema, self.document, self.operation_name = schema, document, operation_name
        self._walk: _Walk | None = None
        self._reads: list[tuple[str, GraphQLInputType, tuple[str | int, ...], str, VariableNode]] | None = None
        operation, error = _operation_of(document, operation_name)
        if operation is None:
            self._reads = [] if error is None else None
            return
        recorder = _Recorder(schema, document, operation)
        try:
            recorder.selections(operation.selection_set, schema.get_root_type(operation.operation))
        except (_Refusal, _NotPrepared):
            return
        self._reads, self._walk = recorder.reads, recorder

    def check(self, variables: Mapping[str, Any] | None) -> GraphQLError | None:
        """What `check_operation(schema, document, operation_name, variables)` answers."""
        reads, walk = self._reads, self._walk
        if reads is None:
            return check_operation(self.schema, self.document, self.operation_name, variables)
        if walk is None or not variables:
            return None
        try:
            for name, type_, path, owner, node in reads:
                if name in variables:
                    walk.value(variables[name], type_, path, owner, node)
        except _Refusal as refusal:
            return refusal.error
        return None


class InputGuard(SchemaExtension):
    """Runs `check_operation` between validation and execution; a refusal replaces execution."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.result is None:
            error = check_operation(
                context.schema._schema, document, context._provided_operation_name, context.variables
            )
            if error is not None:
                context.result = GraphQLExecutionResult(data=None, errors=[error])
        yield
