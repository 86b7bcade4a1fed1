"""What the layers below `server/` need of tracing: the tracer (None while telemetry is off) and the
request's trace id.

OpenTelemetry is configured in one place, server/telemetry.py, which sets `state.tracer` when a
trace exporter is configured. Code on the request path asks `state.tracer` before doing anything, so
with telemetry off (the default) it makes no span object, no attribute dict and no context switch:
one attribute read per instrumented point.

`TRACE_ID` holds the current request's trace id (32 lower-case hex digits) or None: the
middleware sets it per request, from the request's span or, with telemetry off, from a trusted
proxy's `traceparent`. The audit chain copies it onto the audit_logs rows the request appends
(models/audit_chain.py), beside the request id. Span attributes never carry bound parameters,
variables or other values: names, counts and kinds only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = ["TRACE_ID", "name_operation", "state", "traced_batch"]

TRACE_ID: ContextVar[str | None] = ContextVar("gwm_trace_id", default=None)

B = TypeVar("B", bound=Callable[..., Awaitable[Any]])


class _State:
    __slots__ = ("tracer",)

    def __init__(self) -> None:
        self.tracer: Tracer | None = None


# The process's tracer; set by server/telemetry.py only.
state = _State()


def name_operation(name: str | None, kind: str | None) -> None:
    """Name the current `graphql.operation` span (the operation's name from the document, its type
    when known); nothing while telemetry is off."""
    if state.tracer is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if name:
        span.set_attribute("graphql.operation.name", name[:200])
    if kind:
        span.set_attribute("graphql.operation.type", kind)


def _loader_name(key: Hashable) -> tuple[str, str | None]:
    """The loader's kind and table from its key: names only, never a key value or a filter."""
    if isinstance(key, tuple) and key and isinstance(key[0], str):
        table = key[1] if len(key) > 1 and isinstance(key[1], str) and key[0] in _TABLE_KINDS else None
        return key[0], table
    return type(key).__name__, None


_TABLE_KINDS = frozenset({"by_id", "children", "child_counts"})


def traced_batch(key: Hashable, batch: B) -> B:
    """`batch` (a DataLoader's batch function) run in a `loader.batch` span with its key count.

    Returns `batch` itself while telemetry is off.
    """
    tracer = state.tracer
    if tracer is None:
        return batch
    kind, table = _loader_name(key)
    attributes: dict[str, Any] = {"gwm.loader": kind}
    if table is not None:
        attributes["db.collection.name"] = table

    async def traced(keys: Sequence[Any]) -> Any:
        with tracer.start_as_current_span("loader.batch", attributes={**attributes, "gwm.loader.keys": len(keys)}):
            return await batch(keys)

    return cast(B, traced)
