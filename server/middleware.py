"""ASGI middleware: request id, principal resolution, MFA and password-change gates, JSON-only writes.

Runs once per HTTP request: it resolves the principal from `Authorization: Bearer` or the session
cookie and puts it, with the request's audit metadata, in `scope["state"]`. Every route requires a
principal except the public ones (health checks, sign-in, account-token and SAML endpoints,
GraphiQL's static page); a missing or bad credential gets 401 before any route runs. Until a
session has passed MFA it may call only the MFA endpoints and logout (401 MFA_REQUIRED); until a
forced password change is done, only that (403 PASSWORD_CHANGE_REQUIRED).

State-changing requests must be JSON: a cross-site form cannot send that content type without a
CORS preflight, which this server never grants, so the SameSite=Lax cookie cannot be ridden. The
SAML ACS (an IdP's form POST) is the one exception. A body-less one declaring a form's content type
is refused too, and with the cookie as credential, a GET of the GraphQL endpoint or a body-less unsafe
request must show it is not a cross-site one (server/csrf.py).

The request id is the server's own (a UUID) unless the peer is one of GWM_TRUSTED_PROXIES, whose
X-Request-ID is kept: a client must not choose the id audit rows are correlated by. Likewise only
such a peer's X-Forwarded-For / Forwarded and traceparent are believed (server/proxies.py): the client
address (audit rows, lockout, rate limits) is put in `scope["state"]["client_address"]` and the
RequestMeta, the trace id in models.tracing.TRACE_ID and the log records (server/logging_setup.py).
With telemetry on, the request runs in its span (server/telemetry.py); with it off, no span, timer
or metric is touched. A path no
route serves answers 404 before any authentication. Every refusal is JSON with a code, and an
exception no route handled becomes a 500 with INTERNAL_SERVER_ERROR and the request id, logged
with the id (a database error without its driver message, which quotes values).

A session token or an API key is resolved by the first statement of the request's read
transaction (auth/service.py `authenticate_request`). On `read_paths` (the GraphQL endpoint) that
transaction stays open for the route in `scope["state"]["db"]` (a models.db.RequestConnection the
GraphQL context adopts, so the caller's lookup and the reads share one snapshot: BEGIN, the lookup,
the reads, ROLLBACK); on every other path it is closed before the route runs. Either way it is
closed when the request ends.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable

from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth.audit import RequestMeta
from auth.exceptions import Unauthenticated
from auth.service import AuthService
from models.tracing import TRACE_ID
from schema.errors import describe_exception
from schema.writes import is_mutation_request
from server.csrf import CROSS_SITE_MESSAGE, cross_site_refusal, simple_content_type
from server.logging_setup import REQUEST_LOG, RequestLog
from server.proxies import CLIENT_ADDRESS_KEY, TrustedProxies
from server.telemetry import Telemetry, http_route, trace_id_of

__all__ = ["MAX_BODY_BYTES", "AuthMiddleware"]

_log = logging.getLogger(__name__)
_access = logging.getLogger("gwm.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,100}$")
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# The largest request body accepted (a GraphQL document with its variables, a SAML response).
MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(Exception):
    """A body without Content-Length grew past MAX_BODY_BYTES while being read."""


def _bounded(receive: Receive) -> Receive:
    """`receive` that refuses to deliver more than MAX_BODY_BYTES of body (chunked uploads too)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise BodyTooLarge
        return message

    return wrapped


async def _buffered(receive: Receive) -> tuple[Receive, bytes]:
    """Read the whole body now; the returned `receive` hands the same messages to the app."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        service: AuthService,
        public_paths: Iterable[str],
        public_prefixes: Iterable[str] = (),
        mfa_paths: Iterable[str] = (),
        password_change_paths: Iterable[str] = (),
        form_post_pattern: str | None = None,
        trusted_proxies: Iterable[str] = (),
        known_path: Callable[[Scope], bool] | None = None,
        read_paths: Iterable[str] = ("/graphql",),
        telemetry: Telemetry | None = None,
        access_log: bool = False,
    ) -> None:
        self.app = app
        self.read_paths = frozenset(read_paths)
        self.proxies = TrustedProxies(trusted_proxies)
        # Only when something is exported: with telemetry off a request pays for no span or timer.
        self.telemetry = telemetry if telemetry is not None and (telemetry.tracing or telemetry.metrics) else None
        self.access_log = access_log  # GWM_LOG_FORMAT=json: one `request` record per HTTP request
        self.known_path = known_path
        self.service = service
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = tuple(public_prefixes)
        self.mfa_paths = frozenset(mfa_paths)
        self.password_change_paths = frozenset(password_change_paths)
        self.form_post = re.compile(form_post_pattern) if form_post_pattern else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        # Who is asking (server/proxies.py): only a trusted proxy's X-Forwarded-For / Forwarded,
        # X-Request-ID and traceparent are believed; the request id is otherwise always the server's.
        headers = Headers(scope=scope)
        client = scope.get("client")
        trusted = self.proxies.peer_trusted(scope)
        incoming = headers.get("x-request-id", "") if trusted else ""
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else str(uuid.uuid4())
        address = self.proxies.resolve(scope, headers) if trusted else (client[0] if client else None)
        state = scope.setdefault("state", {})
        state[CLIENT_ADDRESS_KEY] = address
        log = RequestLog(request_id)
        log_token = REQUEST_LOG.set(log)
        try:
            telemetry = self.telemetry
            if (telemetry is None and not self.access_log) or scope["type"] != "http":
                # A WebSocket is no request span (it may stay open for hours): its operations are
                # subscriptions, bounded and counted on their own (live/, gwm.subscriptions.active).
                trace_token = TRACE_ID.set(trace_id_of(headers.get("traceparent"))) if trusted else None
                log.trace_id = TRACE_ID.get()
                try:
                    await self._serve(scope, receive, send, headers, request_id, address)
                finally:
                    if trace_token is not None:
                        TRACE_ID.reset(trace_token)
                return
            await self._observed(scope, receive, send, headers, request_id, address, trusted, log)
        finally:
            REQUEST_LOG.reset(log_token)

    async def _observed(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, request_id: str,
        address: str | None, trusted: bool, log: RequestLog,
    ) -> None:
        """`_serve` inside the request's span (telemetry on), timed for the metrics and the access record."""
        status = 500

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        async def serve() -> None:
            nonlocal status
            try:
                await self._serve(scope, receive, observing_send, headers, request_id, address)
            except PoolTimeout:
                status = 503  # answered by server/overload.py, outside this middleware
                raise

        started = time.perf_counter()
        method = scope.get("method", "WS")
        telemetry = self.telemetry
        try:
            if telemetry is not None and telemetry.tracing:
                with telemetry.request_span(scope, headers, believe_traceparent=trusted, request_id=request_id) as span:
                    log.trace_id = TRACE_ID.get()
                    try:
                        await serve()
                    finally:
                        if scope["type"] == "http":
                            span.set_attribute("http.response.status_code", status)
            else:
                token = TRACE_ID.set(trace_id_of(headers.get("traceparent"))) if trusted else None
                log.trace_id = TRACE_ID.get()
                try:
                    await serve()
                finally:
                    if token is not None:
                        TRACE_ID.reset(token)
        finally:
            if scope["type"] == "http":
                elapsed = time.perf_counter() - started
                if telemetry is not None:
                    telemetry.record_request(method, status, elapsed)
                if self.access_log:
                    _access.info(
                        "request", extra={
                            "method": method, "route": http_route(scope.get("path", "")), "status": status,
                            "duration_ms": round(elapsed * 1000, 3),
                        },
                    )

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, request_id: str, address: str | None
    ) -> None:
        meta = RequestMeta(
            request_id=request_id,
            ip=address,
            user_agent=(headers.get("user-agent") or "")[:1000] or None,
            endpoint=scope.get("path"),
            method=scope.get("method", "WS"),
        )
        state = scope["state"]
        state["meta"] = meta
        state["principal"] = None
        if scope["type"] == "websocket":
            # The GraphQL WebSocket handler authenticates on connection_init (same credential rules).
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        path: str = scope["path"]
        method: str = scope["method"]
        if self.known_path is not None and not self.known_path(scope):
            await _reject(send_with_id, 404, "NOT_FOUND", "No such path.")
            return
        # An upload admitted by server/storage_routes.py UploadGuard (multipart, preflight header, its own
        # size limit already enforced on the body) is exempt from the JSON-only rule and the 1 MiB bound.
        upload = scope.get("gwm.upload_guarded") is True
        if method in _UNSAFE and not upload and not self._json_content(headers, path):
            await _reject(send_with_id, 415, "UNSUPPORTED_MEDIA_TYPE", "Send the request body as application/json.")
            return
        declared = headers.get("content-length")
        if not upload and declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            await _reject(send_with_id, 413, "TOO_LARGE", f"Request bodies are limited to {MAX_BODY_BYTES} bytes.")
            return
        receive = receive if upload else _bounded(receive)
        public = path in self.public_paths or path.startswith(self.public_prefixes)
        credential = _credential(headers, self.service.session_cookie)
        if credential is None:
            if public:
                await _call(self.app, scope, receive, send_with_id)
                return
            await _reject(send_with_id, 401, "UNAUTHENTICATED", "Authentication required.", bearer=True)
            return
        if not public and cross_site_refusal(
            method, path, headers, cookie_name=self.service.session_cookie, graphql_paths=self.read_paths,
            bodyless=_bodyless(headers),
        ):  # before the principal lookup: a forged request runs no SQL (server/csrf.py)
            await _reject(send_with_id, 403, "CROSS_SITE_REQUEST", CROSS_SITE_MESSAGE)
            return
        write = False
        if path in self.read_paths:
            # The body is read before the read transaction begins: a slow sender must not hold a
            # pooled connection while it trickles in.
            try:
                receive, body = await _buffered(receive)
            except BodyTooLarge:
                await _reject(send_with_id, 413, "TOO_LARGE", f"Request bodies are limited to {MAX_BODY_BYTES} bytes.")
                return
            # A mutation (certainly one: schema/writes.py) is authenticated in its write's transaction.
            write = method == "POST" and is_mutation_request(body)
        try:
            principal, db = await self.service.authenticate_request(credential, meta, write=write)
        except Unauthenticated as exc:
            if public:  # a stale cookie must not stop anyone from signing in again
                await _call(self.app, scope, receive, send_with_id)
                return
            await _reject(send_with_id, 401, exc.code, exc.message, bearer=True)
            return
        state["principal"] = principal
        current_log = REQUEST_LOG.get()
        if current_log is not None:
            current_log.principal = principal  # tenant and user on the request's log records
        try:
            if not principal.mfa_satisfied and not public and path not in self.mfa_paths:
                code = "MFA_ENROLLMENT_REQUIRED" if principal.mfa_enrollment_required else "MFA_REQUIRED"
                await _reject(send_with_id, 401, "MFA_REQUIRED", _MFA_MESSAGES[code])
                return
            if principal.password_change_required and not public and path not in self.password_change_paths:
                await _reject(
                    send_with_id, 403, "PASSWORD_CHANGE_REQUIRED", "Change your temporary password before continuing."
                )
                return
            if db is not None:
                if path in self.read_paths:
                    state["db"] = db  # the view's reads continue the lookup's transaction
                else:
                    await db.close()  # other routes open their own: never hold two connections
            await _call(self.app, scope, receive, send_with_id)
        finally:
            if db is not None:
                await db.close()  # idempotent: the view has usually closed it already

    def _json_content(self, headers: Headers, path: str) -> bool:
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if self.form_post is not None and self.form_post.fullmatch(path):
            return content_type == "application/x-www-form-urlencoded"
        if _bodyless(headers):
            return not simple_content_type(headers)  # no body (e.g. logout), and no form's type (server/csrf.py)
        return content_type == "application/json"


def _bodyless(headers: Headers) -> bool:
    return headers.get("content-length") in (None, "0") and "transfer-encoding" not in headers


_MFA_MESSAGES = {
    "MFA_REQUIRED": "Complete multi-factor authentication first (POST /auth/mfa/verify).",
    "MFA_ENROLLMENT_REQUIRED": "Your organization requires multi-factor authentication: enroll first "
    "(POST /auth/mfa/enroll).",
}


async def _call(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run the app; a body that turns out too large becomes 413 if nothing was answered yet."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, tracking_send)
    except BodyTooLarge:
        if started:
            raise
        await _reject(send, 413, "TOO_LARGE", f"Request bodies are limited to {MAX_BODY_BYTES} bytes.")
    except PoolTimeout:
        raise  # the pool stayed exhausted: 503 with Retry-After (server/overload.py)
    except Exception as exc:  # a bug below: logged here, answered as JSON, never re-raised to the server's log
        meta: RequestMeta = scope["state"]["meta"]
        _log.error("unhandled error in request %s to %s: %s", meta.request_id, scope.get("path"),
                   describe_exception(exc))
        if not started:
            await _reject(
                send, 500, "INTERNAL_SERVER_ERROR", f"Unexpected error (request id {meta.request_id}).",
                request_id=meta.request_id,
            )


def _credential(headers: Headers, cookie_name: str) -> str | None:
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()[:16384]
        return None
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == cookie_name and value:
            return value[:16384]
    return None


async def _reject(
    send: Send, status: int, code: str, message: str, *, bearer: bool = False, request_id: str | None = None
) -> None:
    error: dict[str, str] = {"code": code, "message": message}
    if request_id is not None:
        error["requestId"] = request_id
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if bearer:
        headers.append((b"www-authenticate", b'Bearer realm="gwm"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
