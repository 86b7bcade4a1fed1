"""The export routes: GET /export/pipeline.csv, /export/pipeline.xlsx, /export/audit-log.csv.

Behind the authentication middleware like /graphql (any credential: session, OIDC token, API key).
The rows, the withheld columns and the audit of each export are resolvers/exports/'s; this module
reads the query string, refuses what it must (400 and 403 as JSON with a code), and streams.
docs/api.md ("Exports") is the contract.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Send

from auth.audit import RequestMeta
from auth.permissions import Permission
from auth.principal import Principal
from auth.service import AuthService
from models import AuditLog, OpportunityProject
from resolvers.common.scope import ReadScope
from resolvers.exports.audit_log import AuditLogExport
from resolvers.exports.cells import CsvEncoder, XlsxBuilder, read_chunks
from resolvers.exports.pipeline import PipelineExport
from resolvers.exports.runner import DEFAULT_BATCH_SIZE, ExportRun, ExportSource, record_refusal
from server.settings import Settings

__all__ = ["MAX_PERIOD_DAYS", "audit_log_export", "export_routes", "pipeline_csv", "pipeline_xlsx"]

#: The longest period one audit log export may cover.
MAX_PERIOD_DAYS = 366
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CSV = "text/csv; charset=utf-8"
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ExportRequestError(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _error(status: int, code: str, message: str, **extra: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, **extra}},
        status_code=status,
        headers={"cache-control": "no-store"},
    )


class _ClosingStream(StreamingResponse):
    """A StreamingResponse that always closes its body generator, also when the client goes away
    mid-stream (Starlette cancels the send; an abandoned generator would never run its `finally`,
    which ends the export's snapshot and writes its audit row)."""

    def __init__(self, body: AsyncIterator[bytes], **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self._body = body

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                close = getattr(self._body, "aclose", None)
                if close is not None:
                    await close()


def _caller(request: Request) -> tuple[Principal, RequestMeta]:
    state = request.scope.get("state") or {}
    principal, meta = state.get("principal"), state.get("meta")
    if not isinstance(principal, Principal) or not isinstance(meta, RequestMeta):
        raise RuntimeError("export routes mounted without AuthMiddleware")  # fail closed
    return principal, meta


def _params(request: Request, allowed: set[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            raise ExportRequestError(f"Unknown parameter {name!r}.", name)
        if name in params:
            raise ExportRequestError(f"Parameter {name!r} given more than once.", name)
        params[name] = value
    return params


def _flag(params: dict[str, str], name: str) -> bool:
    value = params.get(name, "false")
    if value not in {"true", "false"}:
        raise ExportRequestError(f"{name} takes true or false.", name)
    return value == "true"


def _instant(params: dict[str, str], name: str) -> datetime.datetime:
    """A period bound: a date (midnight UTC) or an ISO 8601 instant with its offset."""
    value = params.get(name)
    if not value:
        raise ExportRequestError(f"{name} is required: a date (YYYY-MM-DD, UTC) or an ISO 8601 instant.", name)
    try:
        if _DATE.match(value):
            return datetime.datetime.combine(datetime.date.fromisoformat(value), datetime.time(), datetime.UTC)
        instant = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ExportRequestError(f"{name} is not a date (YYYY-MM-DD) or an ISO 8601 instant.", name) from None
    if instant.tzinfo is None:
        raise ExportRequestError(f"{name} needs an offset (e.g. Z): an instant without one is ambiguous.", name)
    return instant.astimezone(datetime.UTC)


def _period(params: dict[str, str]) -> tuple[datetime.datetime, datetime.datetime]:
    start, end = _instant(params, "from"), _instant(params, "to")
    if end <= start:
        raise ExportRequestError("to must be after from (the period is [from, to)).", "to")
    if end - start > datetime.timedelta(days=MAX_PERIOD_DAYS):
        raise ExportRequestError(f"The period may cover at most {MAX_PERIOD_DAYS} days.", "to")
    return start, end


def _filename(name: str, extension: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{name}-{stamp}.{extension}"


def _headers(filename: str) -> dict[str, str]:
    return {
        "content-disposition": f'attachment; filename="{filename}"',
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
    }


def _run(request: Request, principal: Principal, meta: RequestMeta, file_format: str) -> ExportRun:
    auth: AuthService = request.app.state.auth
    settings: Settings = request.app.state.settings
    return ExportRun(
        engine=auth.engine,
        writer=auth.writer,
        principal=principal,
        meta=meta,
        file_format=file_format,
        batch_size=DEFAULT_BATCH_SIZE,
        max_seconds=settings.export_max_seconds,
        idle_limit_ms=settings.export_idle_seconds * 1000,
    )


async def _refused(request: Request, principal: Principal, meta: RequestMeta, name: str,
                   permission: Permission) -> JSONResponse:
    auth: AuthService = request.app.state.auth
    await record_refusal(auth.writer, principal, meta, name, permission)
    return _error(403, "FORBIDDEN", f"Exporting the {name} requires the {permission.value} permission.",
                  permission=permission.value)


def _csv_body(run: ExportRun, source: ExportSource) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        encoder = CsvEncoder()
        rows = run.rows_of(source)
        # A failure propagates to the middleware, which logs it without the driver's message.
        try:
            yield encoder.encode([[column.header for column in source.columns]])
            async for batch in rows:
                yield encoder.encode(batch)
        finally:
            with anyio.CancelScope(shield=True):
                await rows.aclose()

    return body()


async def _xlsx_file(run: ExportRun, source: ExportSource, title: str) -> Iterator[bytes]:
    """The workbook, written while the snapshot is open and streamed once it is closed."""
    builder = XlsxBuilder(title)
    builder.append([[column.header for column in source.columns]])
    async for batch in run.rows_of(source):
        await run_in_threadpool(builder.append, batch)
    file = await run_in_threadpool(builder.save)
    return read_chunks(file)


def _refuse_head(request: Request) -> JSONResponse | None:
    if request.method != "GET":  # HEAD: an export is run and audited only when it is downloaded
        return _error(405, "METHOD_NOT_ALLOWED", "Exports answer GET only.")
    return None


async def _pipeline(request: Request, file_format: str) -> Response:
    if (refused := _refuse_head(request)) is not None:
        return refused
    principal, meta = _caller(request)
    if not ReadScope(principal).reads_any(OpportunityProject.__table__):
        return await _refused(request, principal, meta, "pipeline", Permission.OPPORTUNITY_READ)
    try:
        include_archived = _flag(_params(request, {"includeArchived"}), "includeArchived")
    except ExportRequestError as exc:
        return _error(400, "BAD_REQUEST", exc.message, **({"field": exc.field} if exc.field else {}))
    source = PipelineExport(include_archived=include_archived)
    run = _run(request, principal, meta, file_format)
    if file_format == "xlsx":
        chunks = await _xlsx_file(run, source, "Pipeline")
        return _ClosingStream(iterate_in_threadpool(chunks), media_type=_XLSX,
                              headers=_headers(_filename("pipeline", "xlsx")))
    return _ClosingStream(_csv_body(run, source), media_type=_CSV, headers=_headers(_filename("pipeline", "csv")))


async def audit_log_export(request: Request) -> Response:
    """GET /export/audit-log.csv?from=...&to=..."""
    if (refused := _refuse_head(request)) is not None:
        return refused
    principal, meta = _caller(request)
    if not ReadScope(principal).reads_any(AuditLog.__table__):
        return await _refused(request, principal, meta, "audit log", Permission.AUDIT_READ)
    try:
        start, end = _period(_params(request, {"from", "to"}))
    except ExportRequestError as exc:
        return _error(400, "BAD_REQUEST", exc.message, **({"field": exc.field} if exc.field else {}))
    source = AuditLogExport(start, end)
    run = _run(request, principal, meta, "csv")
    return _ClosingStream(_csv_body(run, source), media_type=_CSV, headers=_headers(_filename("audit-log", "csv")))


async def pipeline_csv(request: Request) -> Response:
    """GET /export/pipeline.csv[?includeArchived=true]."""
    return await _pipeline(request, "csv")


async def pipeline_xlsx(request: Request) -> Response:
    """GET /export/pipeline.xlsx[?includeArchived=true]."""
    return await _pipeline(request, "xlsx")


def export_routes() -> list[BaseRoute]:
    return [
        Route("/export/pipeline.csv", pipeline_csv, methods=["GET"]),
        Route("/export/pipeline.xlsx", pipeline_xlsx, methods=["GET"]),
        Route("/export/audit-log.csv", audit_log_export, methods=["GET"]),
    ]
