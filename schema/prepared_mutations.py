"""A mutation whose document the schema has already parsed, checked and kept, run without strawberry's
per-request pipeline (schema/context.py `GraphQLView.execute_single`).

strawberry's `Schema.execute` builds, for every request, an execution context, an instance of each of
the schema's seven extensions, and the context managers of their parse, validate and execute hooks;
for a small mutation that machinery cost about as much as the mutation's own GraphQL work. A document
kept by the document cache (schema/limits.py `DocumentCache`) passed the token limit, the selection and
overlap bounds and validation when it was first run, and none of those depends on the variables or the
caller; so a POST repeating it is checked here exactly as the extensions would check it, in their
order, and executed by graphql-core with the schema's own executor:

    parse            the kept document, for the request profile's token limit (ProfileRules)
    introspection    refused by the profile to this caller: not here (OperationLimits)
    cost             the estimate for these variables, over the limit or a page over the maximum:
                     not here (OperationLimits; the cache's own remembered estimate)
    validation       the cached result for the profile's rules must be clean (OperationLimits)
    rate limits      charged here, once per request; a refusal: not here (RateLimits, which then
                     answers the refusal decided without charging again)
    input guard      the recorded walk of the operation (schema/input_guard.py PreparedCheck): a
                     refusal: not here (InputGuard)

"Not here" means None before anything ran: strawberry's pipeline then serves the request and reports
what it must, as before. After execution, errors go through the schema's error processing (logged,
coded), lose graphql-core's suggestions (OperationLimits), and unexpected ones are masked with the
request id (MaskUnexpectedErrors); the result's extensions are the compiled-read keys a caller holding
graphql:adhoc sees (CompiledReads: none for a mutation). Mutations get no deadline in either path.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, cast

import strawberry
from graphql import DocumentNode, GraphQLError, OperationDefinitionNode, OperationType, specified_rules
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.execution import execute
from strawberry.execution import optimized_is_awaitable
from strawberry.schema.base import BaseSchema
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType as StrawberryOperationType
from strawberry.utils.await_maybe import await_maybe

from auth.permissions import Permission
from models import tracing
from schema.errors import MaskUnexpectedErrors, is_unexpected
from schema.input_guard import PreparedCheck
from schema.limits import DEFAULT_MAX_COST, has_introspection, profile_of, without_suggestions
from schema.rate_limit_extension import charge_request

__all__ = ["COUNTS", "execute_prepared_mutation"]

# Prepared operations kept, by (document identity, operation name as sent).
_KEPT = 256


@dataclass(frozen=True, slots=True)
class _Prepared:
    document: DocumentNode
    # The operation's name as strawberry's execution context gives it (the one sent, else the first
    # operation's): the cost, the rate limits and graphql-core are given this one.
    name: str | None
    check: PreparedCheck
    introspection: bool


_PREPARED: OrderedDict[tuple[int, str | None], _Prepared] = OrderedDict()


@dataclass(slots=True)
class _Counts:
    """Mutations this path ran, in this process (tests read it)."""

    served: int = 0


COUNTS = _Counts()


def _prepared(schema: Any, document: DocumentNode, operation_name: str | None) -> _Prepared | None:
    """The document's mutation `operation_name` selects, prepared once; None for anything else (a query,
    several operations and no name, a name no operation has)."""
    key = (id(document), operation_name)
    found = _PREPARED.get(key)
    if found is not None and found.document is document:
        _PREPARED.move_to_end(key)
        return found
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        chosen = operations[0] if len(operations) == 1 else None
    else:
        chosen = next((o for o in operations if o.name is not None and o.name.value == operation_name), None)
    if chosen is None or chosen.operation is not OperationType.MUTATION:
        return None
    name = operation_name if operation_name is not None else (chosen.name.value if chosen.name else None)
    found = _Prepared(document, name, PreparedCheck(schema, document, operation_name), has_introspection(document))
    _PREPARED[key] = found
    if len(_PREPARED) > _KEPT:
        _PREPARED.popitem(last=False)
    return found


def _holds(caller: Any, permission: str) -> bool:
    allows = getattr(caller, "allows", None)
    return bool(allows(permission)) if callable(allows) else False


async def execute_prepared_mutation(
    schema: BaseSchema,
    query: object,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    context: Any,
    root_value: Any,
) -> ExecutionResult | None:
    """The result of the POSTed mutation `query` run here, or None (nothing ran) when strawberry's pipeline
    must serve it: see the module docstring."""
    from schema.schema import DOCUMENT_CACHE  # the schema module imports the view's module

    caller = getattr(context, "caller", None)
    if not isinstance(schema, strawberry.Schema) or not isinstance(query, str) or caller is None:
        return None
    profile = profile_of(context)
    document = DOCUMENT_CACHE.kept(query, profile.max_tokens)
    if document is None:
        return None
    core = schema._schema
    prepared = _prepared(core, document, operation_name)
    if prepared is None:
        return None
    permission = profile.introspection_permission
    if prepared.introspection and permission is not None and not _holds(caller, permission):
        return None
    name = prepared.name
    try:
        cost, oversized = DOCUMENT_CACHE.estimate(core, document, name, variables)
    except RecursionError:
        return None
    if oversized is not None or cost > (getattr(context, "query_cost_limit", None) or DEFAULT_MAX_COST):
        return None
    if DOCUMENT_CACHE.validate(core, document, (*specified_rules, *profile.rules)):
        return None
    if prepared.check.check(variables) is not None:
        return None
    DOCUMENT_CACHE.keep(query, document, profile.max_tokens)  # as OperationLimits keeps a document that passed
    if await charge_request(context.request.scope, document, name) is not None:
        return None
    if tracing.state.tracer is not None:  # name the graphql.operation span (as CompiledReads does)
        tracing.name_operation(name, StrawberryOperationType.MUTATION.value)
    execution = ExecutionContext(
        query=query,
        schema=schema,
        allowed_operations=(StrawberryOperationType.MUTATION,),
        context=context,
        root_value=root_value,
        variables=variables,
        provided_operation_name=operation_name,
        graphql_document=document,
    )
    COUNTS.served += 1
    try:
        result = await await_maybe(
            execute(
                core,
                document,
                root_value=root_value,
                variable_values=variables,
                operation_name=name,
                context_value=context,
                is_awaitable=cast(Any, optimized_is_awaitable),
                executor_class=schema.execution_context_class,
                operation_extensions=None,
            )
        )
    except Exception as exc:  # as strawberry answers an error escaping the execution: logged, not masked
        error = exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
        schema._process_errors([error], execution)
        return PreExecutionError(data=None, errors=[error], extensions=_extensions(context))
    assert isinstance(result, GraphQLExecutionResult)
    errors = result.errors
    if errors:
        schema._process_errors(errors, execution)  # before masking: the log keeps the original
        without_suggestions(errors)
        mask = MaskUnexpectedErrors()
        mask.execution_context = execution
        errors = [mask.anonymise_error(error) if is_unexpected(error) else error for error in errors]
    return ExecutionResult(data=result.data, errors=errors, extensions=_extensions(context))


def _extensions(context: Any) -> dict[str, Any]:
    """What the schema's extensions add to the result: CompiledReads' keys (none for a mutation), shown
    to a caller holding graphql:adhoc when compiled reads are on."""
    caller = getattr(context, "caller", None)
    if getattr(context, "compiled_reads", False) and caller is not None and caller.allows(Permission.GRAPHQL_ADHOC):
        return {"compiled": []}
    return {}
