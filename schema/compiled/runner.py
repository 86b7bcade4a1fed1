"""Running compiled root fields: the plan cache, the statement, and the executor for the rest.

`CompiledReads` is a schema extension placed after the limits and the input guard, so a document
they refuse never reaches it, and the cost, depth, alias and selection limits hold exactly as for
the executor. When a query starts executing it plans each root field (builder.py), runs the
statements of those it compiled on the operation's own connection (the same REPEATABLE READ
snapshot the executor's loaders read), and lets the executor run the others over the same
document with the compiled fields left out; the response keeps the document's order of keys.

The plan cache is bounded (least recently used) and keyed by the document, the operation, the
caller (tenant, user and its effective grants as loaded for this request) and the shape of the
variables (which are null, list lengths, enum and boolean values): a role change or an assignment
that expires changes the grants, hence the plan, on the next request. Values never enter the key's
SQL: they are bound per request.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    type_from_ast,
)
from graphql.execution.values import get_argument_values, get_variable_values
from strawberry.extensions import SchemaExtension

from auth.permissions import Permission
from models import tracing
from models.db import RequestConnection
from resolvers.documents.access_log import write_content_reads
from schema.compiled.builder import MARKER, PRINCIPAL, ROOT_FIELDS, Builder, Fallback, Marker, RootPlan, build_root
from schema.compiled.catalog import catalog
from schema.input_guard import PreparedCheck

__all__ = [
    "PLAN_CACHE_SIZE",
    "PREPARED_CACHE_SIZE",
    "CompiledReads",
    "PlanCache",
    "PreparedCache",
    "PreparedOperation",
    "TimedOut",
    "cost_key",
    "execute_plans",
    "plan_cache",
    "plan_operation",
]

PLAN_CACHE_SIZE = 512
PREPARED_CACHE_SIZE = 256
PREPARED_COSTS = 64
_log = logging.getLogger("gwm.compiled")


class PlanCache:
    """Plans by key, least recently used first out; `None` records a root field that falls back."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._plans: OrderedDict[Hashable, RootPlan | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, key: Hashable) -> tuple[bool, RootPlan | None]:
        try:
            plan = self._plans[key]
        except KeyError:
            return False, None
        self._plans.move_to_end(key)
        return True, plan

    def put(self, key: Hashable, plan: RootPlan | None) -> None:
        self._plans[key] = plan
        self._plans.move_to_end(key)
        while len(self._plans) > self.maxsize:
            self._plans.popitem(last=False)


plan_cache = PlanCache(PLAN_CACHE_SIZE)


@dataclass(frozen=True, slots=True)
class PreparedOperation:
    """A query document that passed the parser's token limit, the selection and overlap bounds and
    validation (none of which depends on the variables or the caller), and whose root fields all
    compiled for some caller: a repeat of its text may skip graphql-core (schema/context.py)."""

    document: DocumentNode
    operation: OperationDefinitionNode
    # What planning reads of the document whatever the variables and the caller (operation_facts).
    facts: OperationFacts | None = None
    # Estimated costs by what of the variables the estimate reads (cost_key): bounded, cleared when full.
    costs: dict[Hashable, int] = field(default_factory=dict)
    # The input guard's walk of the document (schema/input_guard.py PreparedCheck), by operationName as sent.
    checks: dict[str | None, PreparedCheck] = field(default_factory=dict)

    def check(
        self, schema: GraphQLSchema, operation_name: str | None, variables: dict[str, Any]
    ) -> GraphQLError | None:
        """The input guard's refusal of `variables` (schema/input_guard.py check_operation), or None."""
        guard = self.checks.get(operation_name)
        if guard is None:
            guard = self.checks[operation_name] = PreparedCheck(schema, self.document, operation_name)
        return guard.check(variables)

    def cost(self, variables: dict[str, Any], estimate: Callable[[], int]) -> int:
        """The operation's estimated cost for `variables` (schema/limits.py estimate_cost, via `estimate`)."""
        key = cost_key(variables)
        cost = self.costs.get(key)
        if cost is None:
            cost = estimate()
            if len(self.costs) >= PREPARED_COSTS:
                self.costs.clear()
            self.costs[key] = cost
        return cost


@dataclass(frozen=True, slots=True)
class OperationFacts:
    """What plan_operation reads of an operation whatever the variables and the caller."""

    name: str | None
    roots: dict[str, list[FieldNode]] | None  # _root_fields
    fragments: dict[str, FragmentDefinitionNode]
    variables: tuple[tuple[str, GraphQLInputType], ...]  # each variable's name and type


def operation_facts(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode
) -> OperationFacts:
    return OperationFacts(
        name=operation.name.value if operation.name is not None else None,
        roots=_root_fields(operation.selection_set),
        fragments={d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)},
        variables=tuple(
            (d.variable.name.value, type_from_ast(schema, d.type))  # type: ignore[misc]
            for d in operation.variable_definitions or ()
        ),
    )


def cost_key(value: Any) -> Hashable:
    """All that schema/limits.py's cost estimate can read of variables: the integers (page sizes), the
    list lengths (list arguments count their elements) and which variables are given (defaults apply to
    the others); any other value (a string, an id, a boolean, a float, null) counts for nothing."""
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        return ("L", tuple(cost_key(v) for v in value))
    if isinstance(value, dict):
        return ("D", tuple((k, cost_key(v)) for k, v in value.items()))
    return "s"


class PreparedCache:
    """Prepared operations by (document text, operationName as sent), least recently used first out."""

    def __init__(self, maxsize: int = PREPARED_CACHE_SIZE) -> None:
        self.maxsize = maxsize
        self.hits = 0  # requests answered without the executor (counted by the view)
        self._entries: OrderedDict[tuple[str, str | None], PreparedOperation] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str | None]) -> PreparedOperation | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str | None], entry: PreparedOperation) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)


_GRANT_KEYS: OrderedDict[int, tuple[Any, Hashable]] = OrderedDict()


def _grants_key(grants: Any) -> Hashable:
    """A hashable identity of effective grants, worked out once per Grants object (auth.principal keeps the
    object of an unchanged grant set across requests, so a caller with hundreds of project grants is not
    hashed again on each). The entry holds the object, so its id is not reused while it is here."""
    entry = _GRANT_KEYS.get(id(grants))
    if entry is not None and entry[0] is grants:
        _GRANT_KEYS.move_to_end(id(grants))
        return entry[1]
    key = (grants.tenant_wide, frozenset(grants.per_project.items()))
    _GRANT_KEYS[id(grants)] = (grants, key)
    if len(_GRANT_KEYS) > PLAN_CACHE_SIZE:
        _GRANT_KEYS.popitem(last=False)
    return key


def _reads_lookup_snapshot(db: Any, principal: Any) -> bool:
    """True when `db` is the transaction whose first statement loaded `principal`'s grants (auth/service.py):
    a sub-select of the caller's assignments there gives exactly the project grants the principal holds."""
    return bool(
        isinstance(db, RequestConnection) and db.is_open and db.grants_user is not None
        and db.grants_user == principal.user_id and db.tenant_id == principal.tenant_id
    )


def _grants_in_snapshot(context: Any) -> bool:
    """Whether this request's compiled statements may read the caller's project grants in SQL (Builder.grants_in_sql)
    rather than bind them: the caller has project-scoped grants and the statements will run on the connection
    whose principal lookup loaded them. Nothing is taken or opened: the connection the context will use is the
    one it holds, else the middleware's begun one (GraphQLContext.db takes that when it is open, of the tenant)."""
    principal = context.principal
    if not principal.grants.per_project:
        return False
    db = getattr(context, "_db", None)
    if db is None:
        state = getattr(context.request, "scope", {}).get("state") or {}
        db = state.get("db")
    return _reads_lookup_snapshot(db, principal)


def _shape(value: Any, gql_type: GraphQLInputType) -> Hashable:
    """What of a variable's value can change the SQL: null-ness, list lengths, enum and boolean values."""
    if value is None:
        return None
    if isinstance(gql_type, GraphQLNonNull):
        return _shape(value, gql_type.of_type)
    if isinstance(gql_type, GraphQLList):
        items = value if isinstance(value, list) else [value]
        return ("L", len(items), tuple(_shape(v, gql_type.of_type) for v in items))
    if isinstance(gql_type, GraphQLInputObjectType):
        if not isinstance(value, dict):
            return "?"
        return tuple(sorted((k, _shape(v, gql_type.fields[k].type)) for k, v in value.items() if k in gql_type.fields))
    if isinstance(gql_type, GraphQLEnumType):
        return ("E", str(value))
    if isinstance(gql_type, GraphQLScalarType) and gql_type.name == "Boolean":
        return ("B", bool(value))
    return "v"


@dataclass(slots=True)
class _Outcome:
    order: list[str]
    compiled: dict[str, Any] = field(default_factory=dict)
    errors: list[GraphQLError] = field(default_factory=list)
    rest: DocumentNode | None = None


class CompiledReads(SchemaExtension):
    """Serves the root fields the compiler covers from one SQL statement each (see the module)."""

    def __init__(self, *, cache: PlanCache = plan_cache) -> None:
        super().__init__()
        self.cache = cache
        self.compiled_keys: list[str] = []
        self._outcome: _Outcome | None = None

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        context = ec.context
        if tracing.state.tracer is not None:  # name the graphql.operation span (models/tracing.py)
            tracing.name_operation(ec.operation_name, ec.operation_type.value)
        outcome: _Outcome | None = None
        original = ec.graphql_document
        if (
            getattr(context, "compiled_reads", False)
            and ec.result is None
            and original is not None
            and getattr(context, "caller", None) is not None
        ):
            try:
                outcome = await self._run(original)
            except _TimedOut as exc:
                ec.result = ExecutionResult(data=None, errors=[exc.error])
                outcome = None
            except Exception as exc:  # a database failure: masked with the request id, like the executor's
                ec.result = ExecutionResult(data=None, errors=[GraphQLError(str(exc), original_error=exc)])
                outcome = None
        if outcome is not None and outcome.compiled:
            self.compiled_keys = [k for k in outcome.order if k in outcome.compiled]
            if outcome.rest is None:
                ec.result = ExecutionResult(data=dict(outcome.compiled), errors=outcome.errors or None)
            else:
                ec.graphql_document = outcome.rest
        try:
            yield
        finally:
            ec.graphql_document = original
        if outcome is not None and outcome.compiled and outcome.rest is not None:
            result = ec.result
            if isinstance(result, ExecutionResult) and result.data is not None:
                data = result.data
                result.data = {
                    key: outcome.compiled[key] if key in outcome.compiled else data.get(key)
                    for key in outcome.order
                }
                errors = list(result.errors or []) + outcome.errors
                result.errors = errors or None

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        caller = getattr(context, "caller", None)
        if not getattr(context, "compiled_reads", False) or caller is None:
            return {}
        if not caller.allows(Permission.GRAPHQL_ADHOC):
            return {}
        return {"compiled": list(self.compiled_keys)}

    # -- planning and running --------------------------------------------------------------------

    async def _run(self, document: DocumentNode) -> _Outcome | None:
        ec = self.execution_context
        operation = _operation(document, ec.operation_name)
        if operation is None or operation.operation is not OperationType.QUERY:
            return None
        schema = ec.schema._schema
        definitions = operation.variable_definitions or ()
        variables = get_variable_values(schema, definitions, dict(ec.variables or {}))
        if isinstance(variables, list):  # the executor reports variable errors
            return None
        planned = plan_operation(schema, document, operation, ec.query, variables, ec.context, self.cache)
        if planned is None:
            return None
        order, bound = planned
        outcome = await execute_plans(schema, order, bound, ec.context)
        if len(outcome.compiled) < len(outcome.order):
            outcome.rest = _without(document, operation, set(outcome.compiled))
        else:
            prepared: PreparedCache | None = getattr(ec.context, "prepared", None)
            if prepared is not None and ec.query is not None:
                # Parsed, within the limits, validated and a query whose root fields all compiled: the next
                # request sending this text may skip the executor (schema/context.py, GraphQLView).
                entry = PreparedOperation(document, operation, operation_facts(schema, document, operation))
                prepared.put((ec.query, ec._provided_operation_name), entry)
        return outcome


def plan_operation(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    query: str | None,
    variables: Any,
    context: Any,
    cache: PlanCache,
    facts: OperationFacts | None = None,
) -> tuple[list[str], list[tuple[RootPlan, list[Any]]]] | None:
    """The response keys of the operation's root fields, and the plans (with their bound parameters) of
    those that compile; None when none does or binding falls back. Nothing is read from the database.
    `facts`: operation_facts of the operation, when kept (a prepared operation's)."""
    query_type = schema.query_type
    assert query_type is not None
    if facts is None:
        facts = operation_facts(schema, document, operation)
    roots = facts.roots
    if roots is None:
        return None
    fragments = facts.fragments
    operation_name = facts.name
    scope = context.scope
    principal = context.principal
    caller_key = (scope.tenant_id, scope.user_id, str(principal.kind), _grants_key(scope.grants))
    grants_in_sql = _grants_in_snapshot(context)
    coerced = variables.coerced
    shape = tuple((name, _shape(coerced.get(name), gql_type)) for name, gql_type in facts.variables)
    book = catalog(schema)
    plans: list[RootPlan] = []
    for key, nodes in roots.items():
        name = nodes[0].name.value
        definition = query_type.fields.get(name)
        if definition is None or (name not in book.roots and name not in ROOT_FIELDS):
            continue
        extra: Hashable = None
        if name in {"node", "nodes"}:  # the plan depends on the types the ids name
            extra = _node_types(definition, nodes[0], variables)
            if extra is None:
                continue
        plan_key = (query, operation_name, key, caller_key, shape, extra, grants_in_sql)
        found, plan = cache.get(plan_key)
        if not found:
            builder = Builder(schema, book, scope, fragments, variables)
            builder.principal_kind = str(principal.kind)
            builder.grants_in_sql = grants_in_sql
            try:
                plan = build_root(builder, key, name, definition, nodes)
            except Fallback:
                plan = None
            except Exception:  # a bug of the compiler must not cost the answer: the executor serves it
                _log.exception("compiling root field %s failed; the executor serves it", name)
                plan = None
            cache.put(plan_key, plan)
        if plan is not None:
            plans.append(plan)
    if not plans:
        return None
    bound: list[tuple[RootPlan, list[Any]]] = []
    try:
        for plan in plans:
            arguments = plan.arguments(variables)
            arguments[PRINCIPAL] = {"principal": principal}
            bound.append((plan, plan.bind(arguments)))
    except Fallback:
        return None
    return list(roots), bound


async def execute_plans(
    schema: GraphQLSchema, order: list[str], bound: list[tuple[RootPlan, list[Any]]], context: Any
) -> _Outcome:
    """Run the bound plans on the operation's connection, within its deadline (raises _TimedOut past it)."""
    query_type = schema.query_type
    assert query_type is not None
    outcome = _Outcome(order=order)
    deadline = _deadline(context)
    db = context.db
    if any(plan.grants_in_sql for plan, _params in bound) and not _reads_lookup_snapshot(db, context.principal):
        raise RuntimeError("a plan reading the caller's grants in SQL runs outside the principal lookup's snapshot")
    reads: dict[str, list[tuple[uuid.UUID, str | None]]] = {}
    tracer = tracing.state.tracer  # a `compiled.statement` span per root field while telemetry is on
    for plan, params in bound:
        if tracer is None:
            text = await _fetch(db, plan.sql, params, deadline)
        else:
            with tracer.start_as_current_span("compiled.statement", attributes={"gwm.root_field": plan.key}):
                text = await _fetch(db, plan.sql, params, deadline)
        outcome.compiled[plan.key] = _value(plan, text, outcome.errors, context.denials, reads)
        if plan.row_denial is not None:
            context.denials.add_path(plan.row_denial, plan.key, query_type.name)
    for access_type, documents in reads.items():  # content reads are accesses, as on the executor's path
        await write_content_reads(context.auth.writer, context.principal, context.meta, access_type, documents)
    return outcome


def _value(
    plan: RootPlan,
    text: str | None,
    errors: list[GraphQLError],
    denials: Any,
    reads: dict[str, list[tuple[uuid.UUID, str | None]]],
) -> Any:
    if text is None:
        return None
    if not plan.markers or MARKER not in text:
        return orjson.Fragment(text)
    value = orjson.loads(text)
    found: list[tuple[list[str | int], int]] = []
    value = _strip_markers(value, [plan.key], found, plan.markers, reads)
    for path, index in found:
        marker = plan.markers[index]
        permission = marker.permission
        assert permission is not None  # content reads are unwrapped by _strip_markers
        errors.append(GraphQLError(
            f"You do not have permission to do this ({permission.value} is required).",
            nodes=[marker.node],
            path=path,
            extensions={"code": "FORBIDDEN", "permission": permission.value},
        ))
        denials.add_path(permission, ".".join(str(p) for p in path if not isinstance(p, int)), marker.type_name)
    return value


class _TimedOut(Exception):
    def __init__(self, error: GraphQLError) -> None:
        super().__init__(error.message)
        self.error = error


TimedOut = _TimedOut  # raised by execute_plans past the operation's deadline; `.error` is the response's error


def _deadline(context: Any) -> tuple[float, int] | None:
    timeout: int | None = getattr(context, "operation_timeout_ms", None)
    if not timeout:
        return None
    return time.monotonic() + timeout / 1000, timeout


async def _fetch(db: Any, sql: str, params: list[Any], deadline: tuple[float, int] | None) -> str | None:
    """One statement on the operation's connection, within the operation's deadline."""
    remaining = None
    if deadline is not None:
        remaining = deadline[0] - time.monotonic()
        if remaining <= 0:
            raise _TimedOut(_timeout_error(deadline[1]))
    try:
        value = await db.fetchval(sql, *params, limit_s=remaining)
    except TimeoutError:
        assert deadline is not None
        raise _TimedOut(_timeout_error(deadline[1])) from None
    return None if value is None else str(value)


def _timeout_error(timeout: int) -> GraphQLError:
    return GraphQLError(
        f"The operation ran past its deadline of {timeout} ms and was stopped; ask for less "
        "(smaller pages, fewer fields) or split it.",
        extensions={"code": "OPERATION_TIMEOUT", "timeoutMs": timeout},
    )


def _strip_markers(
    value: Any,
    path: list[str | int],
    found: list[tuple[list[str | int], int]],
    markers: list[Marker],
    reads: dict[str, list[tuple[uuid.UUID, str | None]]],
) -> Any:
    """`value` without its markers: a denied field becomes null (listed in `found`), a content read its
    value (the document listed in `reads` under the access type)."""
    if isinstance(value, dict):
        if "\x00" in value:
            marker = markers[int(value["\x00"])]
            if marker.access_type is None:
                found.append((list(path), int(value["\x00"])))
                return None
            reads.setdefault(marker.access_type, []).append((uuid.UUID(value["d"]), value["l"]))
            return value["v"]
        return {k: _strip_markers(v, [*path, k], found, markers, reads) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_markers(v, [*path, i], found, markers, reads) for i, v in enumerate(value)]
    return value


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    for operation in operations:
        if operation.name is not None and operation.name.value == name:
            return operation
    return None


def _root_fields(selection_set: SelectionSetNode) -> dict[str, list[FieldNode]] | None:
    """Root fields by response key; None when the root selects through fragments or directives."""
    out: dict[str, list[FieldNode]] = {}
    for selection in selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives:
            return None
        key = selection.alias.value if selection.alias else selection.name.value
        out.setdefault(key, []).append(selection)
    return out


def _node_types(definition: Any, node: FieldNode, variables: Any) -> Hashable:
    """The type names the global ids of `node(id:)` / `nodes(ids:)` name; None when one is malformed."""
    from strawberry.relay import GlobalID

    try:
        args = get_argument_values(definition, node, variables)
        ids = [args["id"]] if "id" in args else list(args["ids"])
        return tuple(GlobalID.from_id(i).type_name for i in ids)
    except Exception:
        return None


def _without(document: DocumentNode, operation: OperationDefinitionNode, keys: set[str]) -> DocumentNode:
    """The document with the compiled root fields left out (the executor serves the rest)."""
    selections = tuple(
        s for s in operation.selection_set.selections
        if not (isinstance(s, FieldNode) and (s.alias.value if s.alias else s.name.value) in keys)
    )
    rest = copy.copy(operation)
    object.__setattr__(rest, "selection_set", SelectionSetNode(selections=selections))
    definitions = tuple(rest if d is operation else d for d in document.definitions)
    return DocumentNode(definitions=definitions)
