"""OpenTelemetry, configured here and nowhere else (docs/deploy.md "Telemetry").

Off by default. `GWM_OTEL_ENDPOINT` set: traces and metrics go to that OTLP/HTTP collector
(`<endpoint>/v1/traces`, `<endpoint>/v1/metrics`); `GWM_OTEL_EXPORTER=console` (development only):
both are printed. Nothing else in the code base creates a provider or an exporter; the layers
below read the tracer this module publishes in `models.tracing.state` while an app with telemetry
on is running (its lifespan), and do nothing when it is None.

Spans, one trace per request:

    HTTP <method>                 server/middleware.py (the parent: a trusted proxy's traceparent)
      graphql.operation           schema/context.py, both the prepared and strawberry's path
        compiled.statement        schema/compiled/runner.py, one per compiled root field
        loader.batch              resolvers/common/loaders.py, with gwm.loader.keys (the key count)
          SQL <operation>         every statement sent to PostgreSQL (below)

never one per field. Attributes are names, counts and kinds: no bound parameter, no GraphQL
variable, no argument value, no SQL text (a statement may carry literals of the document; its
fingerprint, gwm.sql.fingerprint, identifies it instead).

SQL spans come from two hooks on the engine: SQLAlchemy's cursor events for statements it sends,
and asyncpg's query logger for those sent on the driver directly (the principal lookup, compiled
reads, BEGIN/ROLLBACK of the request transaction); a statement SQLAlchemy sends is not counted
twice, and a statement outside any trace (the sync lag sample) is not recorded.

Exporting never blocks a request: finished spans go into a bounded queue (GWM_OTEL_QUEUE_SIZE)
that a background thread exports in batches; a span that finds the queue full is dropped, as is
every span of a batch the collector did not take (unreachable, refusing, timing out after
GWM_OTEL_EXPORT_TIMEOUT_MS). `Telemetry.dropped` counts both; the metric gwm.telemetry.dropped_spans
reports it.

Metrics: gwm.http.server.duration (seconds, per method and status class), gwm.http.server.errors
(5xx answers), gwm.subscriptions.active, gwm.db.pool.checked_out / gwm.db.pool.size, and
gwm.sync.lag (seconds the oldest due sync job has waited, sampled by the lifespan every
GWM_OTEL_METRICS_INTERVAL_MS through the owner-only function gwm_sync_lag()).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from models.tracing import TRACE_ID, state

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import Histogram, Meter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.trace import Span, Tracer
    from sqlalchemy.ext.asyncio import AsyncEngine

    from server.settings import Settings

__all__ = ["GraphQLOperations", "Telemetry", "TelemetryConfig", "http_route", "trace_id_of"]

_log = logging.getLogger(__name__)

# True while SQLAlchemy sends a statement: asyncpg's query logger leaves it to the cursor events.
_IN_SQLALCHEMY: ContextVar[bool] = ContextVar("gwm_in_sqlalchemy", default=False)


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """What server/settings.py read for telemetry (GWM_OTEL_*)."""

    exporter: str = "off"  # off | otlp | console
    endpoint: str | None = None
    service_name: str = "gwm-crm"
    queue_size: int = 2048
    batch_size: int = 512
    schedule_delay_ms: int = 1000
    export_timeout_ms: int = 10_000
    sample_ratio: float = 1.0
    metrics_interval_ms: int = 60_000


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` (version 00 shape), or None when it is not one."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    trace_id = parts[1].lower()
    if parts[0].lower() == "ff" or trace_id == "0" * 32 or any(c not in "0123456789abcdef" for c in trace_id):
        return None
    return trace_id


class _Stats:
    """Counts of the export queue, shared by the processor thread and readers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.dropped = 0
        self.exported = 0

    def drop(self, count: int) -> None:
        with self._lock:
            self.dropped += count

    def sent(self, count: int) -> None:
        with self._lock:
            self.exported += count


def _counting_exporter(inner: SpanExporter, stats: _Stats) -> SpanExporter:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        """The configured exporter; a batch it could not deliver counts as dropped."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            try:
                result = inner.export(spans)
            except Exception:  # an exporter bug must not kill the export thread; the spans are lost
                stats.drop(len(spans))
                return SpanExportResult.FAILURE
            if result is SpanExportResult.SUCCESS:
                stats.sent(len(spans))
            else:
                stats.drop(len(spans))
            return result

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return inner.force_flush(timeout_millis)

    return CountingExporter()


def _span_processor(exporter: SpanExporter, config: TelemetryConfig, stats: _Stats) -> Any:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class BoundedProcessor(BatchSpanProcessor):
        """The SDK's batch processor (bounded deque, export thread); a span it drops is counted."""

        def on_end(self, span: ReadableSpan) -> None:
            if span.context is not None and span.context.trace_flags.sampled:
                if len(self._batch_processor._queue) >= config.queue_size:
                    stats.drop(1)  # the deque drops its oldest span to take this one
            super().on_end(span)

    return BoundedProcessor(
        _counting_exporter(exporter, stats),
        max_queue_size=config.queue_size,
        max_export_batch_size=min(config.batch_size, config.queue_size),
        schedule_delay_millis=config.schedule_delay_ms,
        export_timeout_millis=config.export_timeout_ms,
        meter_provider=NoOpMeterProvider(),
    )


class Telemetry:
    """The process's tracer and meter provider, built from settings (or given exporters in tests).

    `tracing` is False when no span exporter is configured: then nothing below creates a span.
    """

    def __init__(
        self,
        config: TelemetryConfig,
        *,
        span_exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
    ) -> None:
        self.config = config
        self._stats = _Stats()
        self._provider: TracerProvider | None = None
        self._meters: MeterProvider | None = None
        self.tracer: Tracer | None = None
        self._previous: Tracer | None = None
        self._duration: Histogram | None = None
        self._errors: Any = None
        self._observed: list[Callable[[], Iterator[tuple[str, float, dict[str, str]]]]] = []
        self.sync_lag_s: float | None = None
        span_exporter = span_exporter or _span_exporter(config)
        metric_reader = metric_reader or _metric_reader(config)
        if span_exporter is None and metric_reader is None:
            return
        from opentelemetry.sdk.resources import Resource

        resource = Resource.create({"service.name": config.service_name})
        if span_exporter is not None:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

            self._provider = TracerProvider(
                resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio))
            )
            self._provider.add_span_processor(_span_processor(span_exporter, config, self._stats))
            self.tracer = self._provider.get_tracer("gwm")
        if metric_reader is not None:
            from opentelemetry.sdk.metrics import MeterProvider

            self._meters = MeterProvider(resource=resource, metric_readers=[metric_reader])
            self._instruments(self._meters.get_meter("gwm"))

    @classmethod
    def from_settings(cls, settings: Settings) -> Telemetry:
        return cls(settings.telemetry)

    @property
    def tracing(self) -> bool:
        return self.tracer is not None

    @property
    def metrics(self) -> bool:
        return self._meters is not None

    @property
    def dropped(self) -> int:
        """Spans lost so far: the queue was full, or the collector did not take their batch."""
        return self._stats.dropped

    @property
    def exported(self) -> int:
        return self._stats.exported

    # -- lifecycle (the app's lifespan) ----------------------------------------------------------

    def start(self) -> None:
        """Publish the tracer to the layers below (models.tracing.state) while the app runs."""
        self._previous, state.tracer = state.tracer, self.tracer

    def stop(self) -> None:
        """Unpublish, then flush and stop the exporters (bounded by the export timeout)."""
        if state.tracer is self.tracer:
            state.tracer = self._previous
        if self._provider is not None:
            self._provider.shutdown()
        if self._meters is not None:
            self._meters.shutdown(timeout_millis=self.config.export_timeout_ms)

    def flush(self) -> bool:
        """Export what is queued now (tests; a shutdown does it too)."""
        return self._provider.force_flush(self.config.export_timeout_ms) if self._provider is not None else True

    # -- the request span (server/middleware.py) -------------------------------------------------

    @contextmanager
    def request_span(
        self, scope: MutableMapping[str, Any], headers: Headers, *, believe_traceparent: bool, request_id: str
    ) -> Iterator[Span]:
        """The HTTP request's span, current while the request runs; TRACE_ID set to its trace id.

        Its parent is the incoming `traceparent` only when `believe_traceparent` (a trusted proxy
        sent it); otherwise the request starts a new trace.
        """
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        tracer = self.tracer
        assert tracer is not None
        parent: Context | None = None
        if believe_traceparent and "traceparent" in headers:
            carrier = {"traceparent": headers["traceparent"]}
            if "tracestate" in headers:
                carrier["tracestate"] = headers["tracestate"]
            parent = TraceContextTextMapPropagator().extract(carrier)
        method = scope.get("method", "WS")
        route = http_route(scope.get("path", ""))
        with tracer.start_as_current_span(
            f"HTTP {method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route, "gwm.request_id": request_id},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            context = span.get_span_context()
            token = TRACE_ID.set(trace.format_trace_id(context.trace_id) if context.is_valid else None)
            try:
                yield span
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
                raise
            finally:
                TRACE_ID.reset(token)

    # -- metrics ---------------------------------------------------------------------------------

    def _instruments(self, meter: Meter) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        self._duration = meter.create_histogram(
            "gwm.http.server.duration", unit="s", description="Time to answer an HTTP request."
        )
        self._errors = meter.create_counter(
            "gwm.http.server.errors", description="HTTP requests answered with a 5xx status."
        )

        def observe(name: str) -> Callable[[CallbackOptions], list[Observation]]:
            def callback(options: CallbackOptions) -> list[Observation]:
                out = []
                for source in list(self._observed):
                    try:
                        for metric, value, attributes in source():
                            if metric == name:
                                out.append(Observation(value, attributes))
                    except RuntimeError:  # a structure changed while it was read: skip this sample
                        continue
                return out

            return callback

        for name, description, unit in (
            ("gwm.subscriptions.active", "GraphQL subscriptions open in this process.", "1"),
            ("gwm.db.pool.checked_out", "Database connections in use (this process's pool).", "1"),
            ("gwm.db.pool.size", "Database connections open (this process's pool).", "1"),
            ("gwm.sync.lag", "Seconds the oldest due sync job has waited past its due time.", "s"),
        ):
            meter.create_observable_gauge(name, callbacks=[observe(name)], description=description, unit=unit)
        meter.create_observable_counter(
            "gwm.telemetry.dropped_spans",
            callbacks=[lambda options: [Observation(self.dropped)]],
            description="Spans dropped by the export queue (full) or not taken by the collector.",
        )

    def record_request(self, method: str, status: int, seconds: float) -> None:
        """One answered HTTP request (latency, and an error when 5xx)."""
        if self._duration is None:
            return
        attributes: dict[str, str | int] = {"http.request.method": method, "http.response.status_code": status}
        self._duration.record(seconds, attributes)
        if status >= 500:
            self._errors.add(1, attributes)

    async def sample_sync_lag(self, engine: AsyncEngine) -> None:
        """Every metrics interval, read the sync lag (gwm_sync_lag, migration 0020) for its gauge; runs
        until cancelled (the app's lifespan). A failed sample leaves the gauge empty until the next."""
        import asyncio

        from sqlalchemy import text

        while True:
            try:
                async with engine.connect() as conn:
                    value = (await conn.execute(text("SELECT public.gwm_sync_lag(now())"))).scalar_one()
                self.sync_lag_s = float(value)
            except Exception as exc:  # the database is away: no sample now, the next one retries
                self.sync_lag_s = None
                _log.warning("sync lag sample failed: %s", type(exc).__name__)
            await asyncio.sleep(self.config.metrics_interval_ms / 1000)

    def observe(self, source: Callable[[], Iterator[tuple[str, float, dict[str, str]]]]) -> None:
        """Add a source of gauge samples: yields (metric name, value, attributes) when read."""
        self._observed.append(source)

    def observe_app(self, engine: AsyncEngine, subscribers: Callable[[], int] | None) -> None:
        """Gauges of the app's pool, its subscriptions and the sync lag the lifespan samples."""
        pool: Any = engine.sync_engine.pool

        def sample() -> Iterator[tuple[str, float, dict[str, str]]]:
            yield "gwm.db.pool.checked_out", float(pool.checkedout()), {}
            yield "gwm.db.pool.size", float(pool.checkedout() + pool.checkedin()), {}
            if subscribers is not None:
                yield "gwm.subscriptions.active", float(subscribers()), {}
            if self.sync_lag_s is not None:
                yield "gwm.sync.lag", self.sync_lag_s, {}

        self.observe(sample)

    # -- SQL spans --------------------------------------------------------------------------------

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """SQL spans for every statement on `engine`'s connections (no-op while tracing is off)."""
        if self.tracer is None:
            return
        from sqlalchemy import event

        tracer = self.tracer
        sync_engine = engine.sync_engine

        def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            if not _in_trace():
                return
            span = tracer.start_span(f"SQL {_operation(statement)}", attributes=_sql_attributes(statement))
            conn.info["gwm_sql"] = (span, _IN_SQLALCHEMY.set(True))

        def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            _end_sql(conn, None)

        def failed(context: Any) -> None:
            _end_sql(context.connection, context.original_exception)

        event.listen(sync_engine, "before_cursor_execute", before)
        event.listen(sync_engine, "after_cursor_execute", after)
        event.listen(sync_engine, "handle_error", failed)

        def logged(record: Any) -> None:
            if _IN_SQLALCHEMY.get() or not _in_trace():
                return
            end = time.time_ns()
            span = tracer.start_span(
                f"SQL {_operation(record.query)}",
                attributes=_sql_attributes(record.query),
                start_time=end - int(record.elapsed * 1e9),
            )
            if record.exception is not None:
                _fail(span, record.exception)
            span.end(end_time=end)

        def connected(dbapi_connection: Any, record: Any) -> None:
            driver = record.driver_connection
            if hasattr(driver, "add_query_logger"):
                driver.add_query_logger(logged)

        event.listen(sync_engine.pool, "connect", connected)


class GraphQLOperations:
    """The /graphql endpoint inside a `graphql.operation` span (HTTP; while telemetry is on).

    The view names the span when it knows the operation (models.tracing.name_operation): on the
    prepared path and on strawberry's.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = state.tracer
        if tracer is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with tracer.start_as_current_span("graphql.operation"):
            await self.app(scope, receive, send)


def _in_trace() -> bool:
    """True inside a span (a request's): statements of no request (pool pings, the sync lag sample)
    would each be a trace of their own and are not recorded."""
    from opentelemetry import trace

    return trace.get_current_span().get_span_context().is_valid


def _end_sql(conn: Any, error: BaseException | None) -> None:
    pending = conn.info.pop("gwm_sql", None) if conn is not None else None
    if pending is None:
        return
    span, token = pending
    try:
        _IN_SQLALCHEMY.reset(token)
    except ValueError:  # reset from another context (cannot happen on one connection; be safe)
        _IN_SQLALCHEMY.set(False)
    if error is not None:
        _fail(span, error)
    span.end()


def _fail(span: Span, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    sqlstate = getattr(error, "sqlstate", None) or getattr(getattr(error, "orig", None), "sqlstate", None)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.set_attribute("error.type", type(error).__name__)
    if isinstance(sqlstate, str):
        span.set_attribute("db.response.status_code", sqlstate)


def _operation(sql: str) -> str:
    word = sql.lstrip(" (\n\t").split(None, 1)[0].upper() if sql.strip() else ""
    return word if word.isalpha() and len(word) <= 16 else "statement"


def _sql_attributes(sql: str) -> dict[str, Any]:
    return {
        "db.system.name": "postgresql",
        "db.operation.name": _operation(sql),
        "gwm.sql.fingerprint": hashlib.blake2b(sql.encode("utf-8", "replace"), digest_size=8).hexdigest(),
    }


def http_route(path: str) -> str:
    """The path with everything after its fixed words replaced: ids and signed tokens stay out of spans."""
    kept = []
    for segment in path.split("/")[1:5]:
        if not segment or len(segment) > 24 or not segment.replace("-", "").replace("_", "").isalpha():
            kept.append("{}")
            break
        kept.append(segment)
    return "/" + "/".join(kept)


def _span_exporter(config: TelemetryConfig) -> SpanExporter | None:
    if config.exporter == "otlp" and config.endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=config.endpoint.rstrip("/") + "/v1/traces", timeout=config.export_timeout_ms / 1000
        )
    if config.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    return None


def _metric_reader(config: TelemetryConfig) -> MetricReader | None:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    if config.exporter == "otlp" and config.endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter: Any = OTLPMetricExporter(
            endpoint=config.endpoint.rstrip("/") + "/v1/metrics", timeout=config.export_timeout_ms / 1000
        )
    elif config.exporter == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        exporter = ConsoleMetricExporter()
    else:
        return None
    return PeriodicExportingMetricReader(
        exporter,
        export_interval_millis=config.metrics_interval_ms,
        export_timeout_millis=config.export_timeout_ms,
    )
