"""Logging: plain text (default) or structured JSON (GWM_LOG_FORMAT=json), with the request's ids.

Every record logged while a request runs carries its request id (the server's own, or a trusted
proxy's), its trace id (when the request has one: telemetry on, or a trusted proxy's traceparent),
and once the caller is known its tenant and user ids; the middleware keeps them in `REQUEST_LOG`.
In JSON each record is one object on one line:

    {"time": "2026-12-06T02:10:00.123456Z", "level": "ERROR", "logger": "server.middleware",
     "message": "...", "request_id": "...", "trace_id": "...", "tenant_id": "...", "user_id": "...",
     "exception": "Traceback ..."}

(absent keys have no value). JSON mode also replaces uvicorn's access log, whose line quotes the
full URL (a GET's query string holds the document and its variables; a signed download link is a
credential), by one `request` record per HTTP request with the method, the route (fixed path words
only), the status and the duration.

Never a secret: nothing here logs a header, a body, a URL's query or a bound parameter, and as a
last guard the message of every record has bearer tokens, `password=`/`token=`/`secret=`/`key=`
values and session cookies replaced by `[redacted]` before it is written.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REQUEST_LOG", "JsonFormatter", "RequestLog", "configure_logging", "redact_message", "uvicorn_log_config",
]


@dataclass(slots=True)
class RequestLog:
    """The ids every log record of one request carries (tenant and user once authenticated)."""

    request_id: str
    trace_id: str | None = None
    # The authenticated caller (auth.principal.Principal), once known: its ids are read when a record
    # is written, so a request that logs nothing pays for no conversion.
    principal: Any = None


REQUEST_LOG: ContextVar[RequestLog | None] = ContextVar("gwm_request_log", default=None)

_SECRETS = re.compile(
    r"(?i)((?:bearer|basic)\s+|(?:password|passwd|token|secret|api[_-]?key|key|cookie|authorization|gwm_session)"
    r"[\"']?\s*[=:]\s*[\"']?(?:(?:bearer|basic)\s+)?)[^\s\"',;&]+"
)


def redact_message(message: str) -> str:
    """`message` with credential-shaped values replaced (the last guard; callers log no secrets)."""
    return _SECRETS.sub(lambda m: m.group(1) + "[redacted]", message)


class _RequestFields(logging.Filter):
    """Copies the current request's ids onto each record (text and JSON formats both use them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = REQUEST_LOG.get()
        principal = current.principal if current else None
        record.request_id = current.request_id if current else None
        record.trace_id = current.trace_id if current else None
        tenant_id = getattr(principal, "tenant_id", None)
        user_id = getattr(principal, "user_id", None)
        record.tenant_id = None if tenant_id is None else str(tenant_id)
        record.user_id = None if user_id is None else str(user_id)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the request's ids, extra fields."""

    _EXTRA = ("method", "route", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_message(record.getMessage()),
        }
        for name in ("request_id", "trace_id", "tenant_id", "user_id", *self._EXTRA):
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = redact_message(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def uvicorn_log_config(log_format: str) -> dict[str, Any] | None:
    """uvicorn's `log_config`: its own plain-text setup for text, none for JSON (the root handler serves)."""
    if log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = LOGGING_CONFIG
    return config


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler writing to whatever `sys.stderr` is when a record is emitted, not the stream of
    the moment it was configured (which a test harness capturing output may have closed since, while
    threads of the process still log)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # StreamHandler.__init__ and setStream assign it: always the current sys.stderr


def configure_logging(level: str, log_format: str, *, force: bool = False) -> None:
    """The root logger: one stderr handler in `log_format` (text | json) at `level`; idempotent.

    As `logging.basicConfig`, a root logger that something else has configured (an application running
    `gwm` commands in its own process, a test runner) is left as it is, its level included, unless
    `force`: `gwm serve` and its workers start with none.
    """
    root = logging.getLogger()
    if not force and any(not getattr(handler, "_gwm", False) for handler in root.handlers):
        return
    for handler in list(root.handlers):
        if getattr(handler, "_gwm", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler._gwm = True  # type: ignore[attr-defined]
    handler.addFilter(_RequestFields())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    if log_format == "json":
        # uvicorn's own loggers go through the root handler (no second, plain-text handler), and its
        # access log (the full URL) is replaced by the middleware's `request` records.
        for name in ("uvicorn", "uvicorn.error"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
        logging.getLogger("uvicorn.access").disabled = True
