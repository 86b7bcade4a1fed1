"""OpenTelemetry (server/telemetry.py) against a real uvicorn on 127.0.0.1 and the test database.

An in-memory span exporter sees one trace per request: the HTTP span, the GraphQL operation, each
compiled statement or loader batch (with its key count) and each SQL statement; no attribute
carries a variable's value; the trace id is stored beside the request id on the mutation's audit
row. A `traceparent` is believed only from a trusted proxy, and never merges two requests' ids.
With the collector unreachable requests still complete and the drop counter rises. With
telemetry off (the default) nothing is published for the request path to use.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models import tracing
from models.db import set_tenant
from server.app import create_app
from server.settings import Settings, SettingsError
from server.telemetry import Telemetry, TelemetryConfig, http_route, trace_id_of
from tests.conftest import Database
from tests.support.db import TenantRef
from tests.support.graphql import sign_in
from tests.support.http import make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.served import closed_port, served

pytestmark = pytest.mark.server

CREATE = (
    "mutation Create($input: OrganizationCreateInput!) {"
    " organizationCreate(input: $input) { organization { id name } } }"
)
BY_ID = (
    "query OrganizationById($id: ID!) { node(id: $id) { __typename"
    " ... on Organization { id name parentOrganization { name } } } }"
)
AUDIT = (
    "query Audit($r: String!) { auditLogs(filter: {requestId: {eq: $r}, actionType: {eq: \"CREATE\"}})"
    " { nodes { requestId traceId } } }"
)
INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{INCOMING_TRACE}-00f067aa0ba902b7-01"


def _telemetry(exporter: InMemorySpanExporter, **config: Any) -> Telemetry:
    return Telemetry(TelemetryConfig(schedule_delay_ms=50, **config), span_exporter=exporter)


def _traces(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    by_trace: dict[str, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        assert span.context is not None
        by_trace[format_trace_id(span.context.trace_id)].append(span)
    return by_trace


def _request_trace(spans: tuple[ReadableSpan, ...], request_id: str) -> tuple[str, list[ReadableSpan]]:
    """The trace whose HTTP span carries `request_id`, with its spans."""
    for trace_id, members in _traces(spans).items():
        if any(s.attributes and s.attributes.get("gwm.request_id") == request_id for s in members):
            return trace_id, members
    raise AssertionError(f"no trace for request {request_id}")


def _parent(span: ReadableSpan, members: list[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next((s for s in members if s.context is not None and s.context.span_id == span.parent.span_id), None)


def _no_values(spans: tuple[ReadableSpan, ...], values: list[str]) -> None:
    for span in spans:
        for key, value in (span.attributes or {}).items():
            for secret in values:
                assert secret not in str(value), f"{span.name} {key}={value!r} carries {secret!r}"


async def _post(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any],
                headers: dict[str, str] | None = None) -> httpx.Response:
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables},
        headers={"authorization": f"Bearer {token}", **(headers or {})},
    )
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    return response


async def _audit_row(owner_engine: AsyncEngine, tenant: TenantRef, request_id: str) -> Any:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        row = (await conn.execute(
            text("SELECT request_id, trace_id FROM audit_logs WHERE request_id = :r AND action_type = 'CREATE'"),
            {"r": request_id},
        )).one()
        await conn.rollback()
    return row


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "executor"])
async def test_one_trace_per_request_with_operation_statement_and_sql_spans(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef, compiled: bool
) -> None:
    exporter = InMemorySpanExporter()
    telemetry = _telemetry(exporter)
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Capture Manager"])
    name = f"Traced Agency {uuid.uuid4().hex}"
    app = create_app(settings_for(database.app_url, compiled_reads=compiled), telemetry=telemetry)
    async with served(app) as base, httpx.AsyncClient(base_url=base) as client:
        assert tracing.state.tracer is telemetry.tracer  # published while the app runs
        token = await sign_in(client, user)
        created = await _post(client, token, CREATE, {"input": {"name": name}})
        org_id = created.json()["data"]["organizationCreate"]["organization"]["id"]
        reads = [await _post(client, token, BY_ID, {"id": org_id}) for _ in range(2)]  # the 2nd: prepared
        assert reads[0].json() == reads[1].json()
        assert telemetry.flush()
    assert tracing.state.tracer is None  # unpublished when the app stopped
    spans = exporter.get_finished_spans()
    assert spans and telemetry.dropped == 0
    assert {s.name for s in spans if s.parent is None} == {"HTTP POST"}, [
        (s.name, s.parent) for s in spans if s.parent is None
    ]  # every span belongs to a request's trace: no statement of its own

    # One trace per request, each with exactly one root (the HTTP span), all distinct.
    request_ids = [created.headers["x-request-id"], *(r.headers["x-request-id"] for r in reads)]
    traces = [_request_trace(spans, rid) for rid in request_ids]
    assert len({trace_id for trace_id, _ in traces}) == 3
    for _, members in traces:
        roots = [s for s in members if s.parent is None]
        assert [s.name for s in roots] == ["HTTP POST"], [s.name for s in members]
        assert roots[0].attributes is not None and roots[0].attributes["http.response.status_code"] == 200
        assert roots[0].attributes["http.route"] == "/graphql"
        operation = [s for s in members if s.name == "graphql.operation"]
        assert len(operation) == 1 and _parent(operation[0], members) is roots[0]
        sql = [s for s in members if s.name.startswith("SQL ")]
        assert sql, [s.name for s in members]
        for span in sql:  # every statement hangs under the request, none is orphaned in another trace
            assert span.attributes is not None and span.attributes["db.system.name"] == "postgresql"
            assert "db.query.text" not in span.attributes
    mutation_names = {s.attributes.get("graphql.operation.name") for s in traces[0][1] if s.attributes}
    assert "Create" in mutation_names
    for _, members in traces[1:]:
        assert any((s.attributes or {}).get("graphql.operation.name") == "OrganizationById" for s in members), [
            (s.name, dict(s.attributes or {})) for s in members]
        if compiled:
            statements = [s for s in members if s.name == "compiled.statement"]
            assert statements and all((s.attributes or {}).get("gwm.root_field") == "node" for s in statements)
            for statement in statements:  # its SQL under it
                assert any(_parent(s, members) is statement for s in members if s.name.startswith("SQL "))
        else:
            batches = [s for s in members if s.name == "loader.batch"]
            assert batches and all((s.attributes or {}).get("gwm.loader.keys") == 1 for s in batches)
            assert any(_parent(s, members) in batches for s in members if s.name.startswith("SQL "))
    # Not one span per field: a handful per request.
    assert all(len(members) < 40 for _, members in traces)

    # No variable value in any attribute (nor the credential, nor the global id).
    _no_values(spans, [name, org_id, token, uuid.UUID(str(fresh_tenant.id)).hex])

    # The mutation's audit row: the trace id beside the request id.
    row = await _audit_row(owner_engine, fresh_tenant, request_ids[0])
    assert row.trace_id == traces[0][0]


async def test_a_traceparent_never_merges_two_requests(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Capture Manager"])
    admin = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])
    for trusted in (False, True):
        exporter = InMemorySpanExporter()
        telemetry = _telemetry(exporter)
        proxies = ("127.0.0.1/32",) if trusted else ()
        app = create_app(settings_for(database.app_url, trusted_proxies=proxies), telemetry=telemetry)
        async with served(app) as base, httpx.AsyncClient(base_url=base) as client:
            token = await sign_in(client, user)
            responses = [
                await _post(client, token, CREATE, {"input": {"name": f"Agency {uuid.uuid4().hex[:8]}"}},
                            {"traceparent": TRACEPARENT})
                for _ in range(2)
            ]
            # The API shows the trace id beside the request id (AuditLog.traceId).
            admin_token = await sign_in(client, admin)
            listed = await _post(client, admin_token, AUDIT, {"r": responses[0].headers["x-request-id"]})
            assert telemetry.flush()
        ids = [r.headers["x-request-id"] for r in responses]
        assert ids[0] != ids[1] and all(uuid.UUID(i) for i in ids)  # two requests, two server ids
        spans = exporter.get_finished_spans()
        trace_ids = [_request_trace(spans, rid)[0] for rid in ids]
        rows = [await _audit_row(owner_engine, fresh_tenant, rid) for rid in ids]
        assert [row.trace_id for row in rows] == trace_ids
        (shown,) = listed.json()["data"]["auditLogs"]["nodes"]
        assert (shown["requestId"], shown["traceId"]) == (ids[0], trace_ids[0])
        if trusted:  # the proxy's trace continues: both requests in it, each its own request id
            assert trace_ids == [INCOMING_TRACE, INCOMING_TRACE]
        else:  # a client cannot choose the trace either
            assert INCOMING_TRACE not in trace_ids and trace_ids[0] != trace_ids[1]


async def test_with_telemetry_off_a_trusted_traceparent_is_still_recorded(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    """Nothing exported, no tracer published, no span made; the proxy's trace id still reaches the audit row."""
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Capture Manager"])
    app = create_app(settings_for(database.app_url, trusted_proxies=("127.0.0.1/32",)))
    assert not app.state.telemetry.tracing and not app.state.telemetry.metrics
    async with served(app) as base, httpx.AsyncClient(base_url=base) as client:
        assert tracing.state.tracer is None
        token = await sign_in(client, user)
        traced = await _post(client, token, CREATE, {"input": {"name": "Agency traced"}}, {"traceparent": TRACEPARENT})
        plain = await _post(client, token, CREATE, {"input": {"name": "Agency plain"}})
    assert (await _audit_row(owner_engine, fresh_tenant, traced.headers["x-request-id"])).trace_id == INCOMING_TRACE
    assert (await _audit_row(owner_engine, fresh_tenant, plain.headers["x-request-id"])).trace_id is None


async def test_an_unreachable_collector_drops_spans_and_requests_complete(database: Database) -> None:
    port = closed_port()
    telemetry = Telemetry(TelemetryConfig(
        exporter="otlp", endpoint=f"http://127.0.0.1:{port}", export_timeout_ms=300, schedule_delay_ms=50,
        queue_size=16, metrics_interval_ms=3_600_000,
    ))
    assert telemetry.tracing and telemetry.metrics
    app = create_app(settings_for(database.app_url), telemetry=telemetry)
    async with served(app) as base, httpx.AsyncClient(base_url=base) as client:
        for _ in range(40):  # more spans than the queue holds, too
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
        for _ in range(600):
            if telemetry.dropped > 0:
                break
            await asyncio.sleep(0.1)
    assert telemetry.dropped > 0 and telemetry.exported == 0


async def test_metrics_latency_errors_pool_and_sync_lag(database: Database, owner_engine: AsyncEngine,
                                                        fresh_tenant: TenantRef) -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(TelemetryConfig(metrics_interval_ms=100), metric_reader=reader)
    assert telemetry.metrics and not telemetry.tracing
    app = create_app(
        settings_for(database.app_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout_ms=500), telemetry=telemetry
    )
    async with served(app) as base, httpx.AsyncClient(base_url=base) as client:
        for _ in range(3):
            assert (await client.get("/readyz")).status_code == 200
        for _ in range(100):
            if telemetry.sync_lag_s is not None:
                break
            await asyncio.sleep(0.05)
        points = _points(reader)
        async with app.state.engine.connect():  # the only connection held: readiness fails, 503
            assert (await client.get("/readyz")).status_code == 503
        errors = _points(reader)["gwm.http.server.errors"]
    assert [(p.attributes["http.response.status_code"], p.value) for p in errors] == [(503, 1)]
    durations = points["gwm.http.server.duration"]
    assert sum(p.count for p in durations if p.attributes.get("http.response.status_code") == 200) == 3
    assert "gwm.db.pool.checked_out" in points and "gwm.db.pool.size" in points
    assert "gwm.subscriptions.active" in points
    assert [p.value for p in points["gwm.sync.lag"]] and all(p.value >= 0 for p in points["gwm.sync.lag"])
    assert "gwm.http.server.errors" not in points  # none before the failing one


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = defaultdict(list)
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name].extend(metric.data.data_points)
    return points


def test_settings_and_helpers() -> None:
    assert Settings.from_env({}).telemetry.exporter == "off"
    otlp = Settings.from_env({"GWM_OTEL_ENDPOINT": "http://collector:4318"}).telemetry
    assert (otlp.exporter, otlp.endpoint) == ("otlp", "http://collector:4318")
    console = Settings.from_env({"GWM_ENV": "development", "GWM_OTEL_EXPORTER": "console"}).telemetry
    assert console.exporter == "console"
    printing = Telemetry(console)
    assert printing.tracing and printing.metrics
    printing.stop()
    off = Telemetry.from_settings(Settings())
    assert not off.tracing and not off.metrics and off.tracer is None
    for env, name in (
        ({"GWM_OTEL_EXPORTER": "console"}, "GWM_OTEL_EXPORTER"),  # production by default
        ({"GWM_OTEL_EXPORTER": "otlp"}, "GWM_OTEL_EXPORTER"),
        ({"GWM_OTEL_EXPORTER": "jaeger"}, "GWM_OTEL_EXPORTER"),
        ({"GWM_OTEL_ENDPOINT": "collector:4318"}, "GWM_OTEL_ENDPOINT"),
        ({"GWM_OTEL_SAMPLE_RATIO": "2"}, "GWM_OTEL_SAMPLE_RATIO"),
        ({"GWM_OTEL_QUEUE_SIZE": "0"}, "GWM_OTEL_QUEUE_SIZE"),
        ({"GWM_LOG_FORMAT": "xml"}, "GWM_LOG_FORMAT"),
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env(env)
    assert trace_id_of(TRACEPARENT) == INCOMING_TRACE
    assert trace_id_of(f"00-{'0' * 32}-00f067aa0ba902b7-01") is None
    assert trace_id_of("garbage") is None and trace_id_of(None) is None
    assert http_route("/graphql") == "/graphql"
    assert http_route("/auth/login") == "/auth/login"
    assert http_route(f"/download/{uuid.uuid4()}/sig-abcdefABCDEF0123456789xyz") == "/download/{}"
