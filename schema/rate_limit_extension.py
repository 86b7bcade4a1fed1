"""Rate limits on GraphQL operations: each operation is charged its root fields before it runs.

An operation costs the number of its root fields as executed: every alias counts (a document of 30
aliased root fields costs 30), and so do root fields reached through fragment spreads and inline
fragments on the root type. `__typename` at the root costs nothing. A mutation's sensitive root
fields (auth/rate_limits.py `SENSITIVE_MUTATIONS`) are charged to the shared buckets as well.

Operations over WebSocket (queries and subscriptions) are charged by `charge_socket` when their
subscribe message arrives (a refusal is an `error` message). Both ways the view serves an HTTP
request charge here, once per request: the prepared fast path
(schema/context.py `_serve_prepared`) calls `charge_request` right before its compiled statements
run, and the `RateLimits` extension calls it before execution (ahead of the compiled reads and the
resolvers) on strawberry's path. The decision is kept in the request scope: a request the fast path
refused falls through to strawberry's path, which answers that same refusal without charging again.

A refusal is answered before any SQL beyond the principal lookup: HTTP 429 with `Retry-After`, and
a GraphQL error with extensions.code `RATE_LIMITED` (docs/api.md "Rate limits").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, MutableMapping
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
)
from starlette.responses import Response
from strawberry.extensions import SchemaExtension

from auth.principal import Principal
from auth.rate_limits import SENSITIVE_MUTATIONS, Refusal, caller_keys, limiter_of

__all__ = ["RateLimits", "charge_request", "charge_socket", "refusal_error", "root_fields"]

# The scope key holding the request's decision: None (admitted) or a Refusal.
_DECIDED = "gwm.rate_limit"


def _operation(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name is not None and o.name.value == operation_name), None)


def root_fields(document: DocumentNode, operation: OperationDefinitionNode) -> list[str]:
    """The names of the root fields `operation` executes, once per response key (aliases count).

    Fragment spreads and inline fragments at the root are followed; a fragment is expanded at most
    once per path (a cycle, which validation refuses anyway, ends the walk).
    """
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    keys: dict[str, str] = {}

    def walk(selection_set: SelectionSetNode, seen: frozenset[str]) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name != "__typename":
                    keys.setdefault((selection.alias or selection.name).value, name)
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set, seen)
            elif isinstance(selection, FragmentSpreadNode):
                spread = selection.name.value
                fragment = fragments.get(spread)
                if fragment is not None and spread not in seen:
                    walk(fragment.selection_set, seen | {spread})

    walk(operation.selection_set, frozenset())
    return list(keys.values())


def _sensitive(operation: OperationDefinitionNode, names: Iterable[str]) -> int:
    if operation.operation is not OperationType.MUTATION:
        return 0
    return sum(1 for name in names if name in SENSITIVE_MUTATIONS)


# The cost of each operation of recently charged documents, by the document's identity (the parse cache
# and the prepared operations hand out the same DocumentNode for the same text; its own hash would walk it).
_COSTS: dict[int, tuple[DocumentNode, dict[str | None, tuple[int, int] | None]]] = {}
_COSTS_MAX = 1024


def _cost(document: DocumentNode, operation_name: str | None) -> tuple[int, int] | None:
    """(root fields, sensitive root fields) of the operation named, worked out once per document and
    name; None when the document has no such operation (or several and no name)."""
    entry = _COSTS.get(id(document))
    if entry is None or entry[0] is not document:
        if len(_COSTS) >= _COSTS_MAX:
            _COSTS.clear()
        entry = _COSTS[id(document)] = (document, {})
    costs = entry[1]
    if operation_name in costs:
        return costs[operation_name]
    operation = _operation(document, operation_name)
    names = root_fields(document, operation) if operation is not None else None
    cost = costs[operation_name] = (
        (len(names), _sensitive(operation, names)) if operation is not None and names is not None else None
    )
    return cost


async def charge_request(
    scope: MutableMapping[str, Any], document: DocumentNode, operation_name: str | None
) -> Refusal | None:
    """Charge the request's operation to its caller's buckets, once per request; its refusal, if any."""
    if _DECIDED in scope:
        decided: Refusal | None = scope[_DECIDED]
        return decided
    limiter = limiter_of(scope)
    state = scope.get("state") or {}
    principal = state.get("principal")
    costs = _cost(document, operation_name)
    if limiter is None or not isinstance(principal, Principal) or costs is None:
        return None  # nothing to charge (validation refuses an operation it cannot pick)
    meta = state.get("meta")
    address: str | None = getattr(meta, "ip", None)
    cost, sensitive = costs
    refusal = limiter.charge_operation(address, principal, cost)
    if refusal is None and sensitive:
        user, tenant = caller_keys(principal)
        refusal = await limiter.charge_sensitive(address, user=user, tenant=tenant, cost=sensitive)
    scope[_DECIDED] = refusal
    return refusal


async def charge_socket(
    scope: MutableMapping[str, Any], principal: Principal, document: DocumentNode, operation_name: str | None
) -> GraphQLError | None:
    """Charge an operation subscribed over WebSocket (schema/websocket.py) to the connection's caller and
    address, like an HTTP request's; the error to send back (in an `error` message) when refused.

    Every subscribe message is charged once, when it starts (a subscription's events are not operations).
    """
    limiter = limiter_of(scope)
    costs = _cost(document, operation_name)
    if limiter is None or costs is None:
        return None
    meta = (scope.get("state") or {}).get("meta")
    refusal = limiter.charge_operation(getattr(meta, "ip", None), principal, costs[0])
    return refusal_error(refusal) if refusal is not None else None


def refusal_error(refusal: Refusal) -> GraphQLError:
    return GraphQLError(refusal.message, extensions=refusal.extensions())


class RateLimits(SchemaExtension):
    """Charges the operation before it executes; a refused one answers 429 with `Retry-After`."""

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        context = ec.context
        request = getattr(context, "request", None)
        document = ec.graphql_document
        if ec.result is None and document is not None and request is not None and request.scope["type"] == "http":
            refusal = await charge_request(request.scope, document, ec.operation_name)
            if refusal is not None:
                ec.result = ExecutionResult(data=None, errors=[refusal_error(refusal)])
                response = getattr(context, "response", None)
                if isinstance(response, Response):  # strawberry copies its status and headers to the answer
                    response.status_code = 429
                    for name, value in refusal.headers.items():
                        response.headers[name] = value
        yield
