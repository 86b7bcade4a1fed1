"""The Starlette application: `create_app(settings)` assembles routes, middleware and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match, Route, WebSocketRoute
from starlette.types import Scope

from auth.crypto import SecretBox
from auth.mailer import SmtpMailer
from auth.oidc import JwksCache
from auth.outbound import OutboundPolicy
from auth.passwords import PasswordHasher
from auth.rate_limits import RateLimiter
from auth.routes import (
    MFA_PATHS,
    PASSWORD_CHANGE_PATHS,
    PUBLIC_PATHS,
    PUBLIC_PREFIXES,
    SAML_ACS_PATTERN,
    auth_routes,
)
from auth.service import AuthService
from live.bus import Bus
from live.config import LiveConfig
from live.listener import Listener, connector_for
from models.audit_chain import AuditChain
from models.db import create_engine
from models.side_effects import SideEffectWriter
from schema.schema import graphql_app
from schema.trusted_documents import TrustedDocuments
from server import download_routes, graphiql
from server.exports import export_routes
from server.logging_setup import configure_logging
from server.middleware import AuthMiddleware
from server.overload import PoolExhaustion, retry_after_seconds
from server.security import SecurityMiddleware
from server.settings import Settings
from server.storage_routes import UPLOAD_PREFIXES, UploadGuard, build_uploads, storage_routes
from server.telemetry import GraphQLOperations, Telemetry

__all__ = ["app_from_env", "create_app"]

_log = logging.getLogger(__name__)


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers as the server's own role."""
    engine = request.app.state.engine
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach the database means "not ready"
        _log.warning("readiness check failed: %s", type(exc).__name__)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


def _mailer(settings: Settings) -> SmtpMailer | None:
    """The invitation and reset email sender; None (those requests answer 503) without GWM_SMTP_HOST."""
    if settings.smtp_host is None:
        return None
    return SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_from,
        settings.smtp_username,
        settings.smtp_password,
        settings.smtp_starttls,
    )


def _known_path(scope: Scope) -> bool:
    """True when some route serves the path (with any method): other paths answer 404 unauthenticated."""
    app: Starlette = scope["app"]  # Starlette puts itself in the scope before its middleware runs
    if not scope.get("root_path") and scope["path"] in _static_paths(app):
        return True  # a route without parameters matches its own path: /graphql is not tried on every route
    return any(route.matches(scope)[0] is not Match.NONE for route in app.routes)


def _static_paths(app: Starlette) -> frozenset[str]:
    """The paths of the routes that take no path parameters, worked out once per app."""
    paths: frozenset[str] | None = getattr(app.state, "static_paths", None)
    if paths is None:
        paths = frozenset(
            route.path for route in app.routes
            if isinstance(route, Route | WebSocketRoute) and not route.param_convertors
        )
        app.state.static_paths = paths
    return paths


_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (a method a route does not take...) as JSON with a code."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Unexpected error."
    return JSONResponse(
        {"error": {"code": _HTTP_CODES.get(status, "BAD_REQUEST"), "message": detail}},
        status_code=status,
        headers=dict(exc.headers or {}) if isinstance(exc, HTTPException) else None,
    )


def create_app(
    settings: Settings, *, live: LiveConfig | None = None, telemetry: Telemetry | None = None
) -> Starlette:
    if settings.app_database_url is None:
        raise ValueError("create_app needs settings.app_database_url (resolve the database first)")
    if settings.secret_keys is None:
        raise ValueError("create_app needs settings.secret_keys (GWM_SECRET_KEYS)")
    if settings.audit_keys is None:
        raise ValueError("create_app needs settings.audit_keys (GWM_AUDIT_KEYS)")
    engine = create_engine(
        settings.app_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        idle_in_transaction_timeout_ms=settings.db_idle_in_transaction_timeout_ms,
        pool_timeout_s=settings.db_pool_timeout_ms / 1000,
        application_name="gwm-server",
    )
    # OpenTelemetry (server/telemetry.py): off unless GWM_OTEL_* configure an exporter (tests pass their own).
    telemetry = telemetry if telemetry is not None else Telemetry.from_settings(settings)
    telemetry.instrument_engine(engine)
    writer = SideEffectWriter(engine, AuditChain.from_setting(settings.audit_keys))
    outbound = OutboundPolicy.from_setting(settings.outbound_allow)
    jwks = JwksCache(outbound=outbound)
    auth = AuthService(
        engine=engine,
        writer=writer,
        hasher=PasswordHasher(settings.password_iterations, settings.kdf_concurrency),
        secret_box=SecretBox.from_setting(settings.secret_keys),
        public_url=settings.public_url,
        session_cookie=settings.session_cookie,
        jwks=jwks,
        outbound=outbound,
    )
    mailer = _mailer(settings)
    auth.mailer = mailer
    # Live alerts (live/): the bus of this process's subscribers, fed by one LISTEN connection
    # that the lifespan opens; none at all when subscriptions are off (GWM_SUBSCRIPTIONS=off).
    live_config = LiveConfig.from_env() if live is None else live
    live_bus = Bus(live_config) if live_config.enabled else None
    listener = Listener(connector_for(engine), live_bus, live_config) if live_bus is not None else None
    graphql = graphql_app(
        auth,
        operation_timeout_ms=settings.operation_timeout_ms,
        query_cost_limit=settings.query_cost_limit,
        compiled_reads=settings.compiled_reads,
        ws_max_subscriptions=settings.ws_max_subscriptions,
        ws_max_connections_per_user=settings.ws_max_connections_per_user,
        ws_init_timeout_ms=settings.ws_init_timeout_ms,
        multipart_uploads_enabled=True,  # documentUpload; guarded by UploadGuard (server/storage_routes.py)
        trusted_documents=TrustedDocuments(
            engine, enforce=settings.trusted_documents, max_registered=settings.trusted_documents_max,
            max_persisted=settings.persisted_queries_max,
        ),
    )
    uploads = build_uploads(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Everything alive now (modules, the schema, its caches) lives as long as the process: move it
        # out of the cyclic collector's sight, so collections during requests only walk request
        # objects. Measured on the nested pursuit read: 78 -> 58 ms CPU per request (bench/read.py).
        gc.collect()
        gc.freeze()
        telemetry.start()
        telemetry.observe_app(engine, (lambda: live_bus.subscribers) if live_bus is not None else None)
        sync_lag = asyncio.create_task(telemetry.sample_sync_lag(engine)) if telemetry.metrics else None
        if listener is not None:
            await listener.start()
        try:
            yield
        finally:
            if listener is not None:
                await listener.stop()
            if live_bus is not None:
                await live_bus.aclose()
            await jwks.aclose()
            if mailer is not None:
                await mailer.aclose()
            if sync_lag is not None:
                sync_lag.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sync_lag
            await engine.dispose()
            await asyncio.to_thread(telemetry.stop)  # flushing may wait for the collector: not on the loop

    app = Starlette(
        routes=[
            # First: the router tries routes in order, and nearly every request is a GraphQL one.
            # With telemetry on, inside a graphql.operation span; off, the view itself (nothing in between).
            Route("/graphql", GraphQLOperations(graphql) if telemetry.tracing else graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),  # subscriptions (graphql-transport-ws, schema/websocket.py)
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *auth_routes(),
            *graphiql.graphiql_routes(),
            *export_routes(),
            *download_routes.download_routes(),  # the local backend's signed download links
            *storage_routes(),
        ],
        middleware=[
            # Outermost: security headers on every response, CORS, the request's limit profile (server/security.py).
            Middleware(
                SecurityMiddleware, profile=settings.limit_profile, cors_origins=settings.cors_origins,
                force_hsts=settings.force_hsts,
            ),
            # A pool checkout that timed out answers 503 with Retry-After (server/overload.py).
            Middleware(PoolExhaustion, retry_after=retry_after_seconds(settings.db_pool_timeout_ms)),
            # Before authentication: a browser opening /graphql gets the (public) GraphiQL page.
            Middleware(graphiql.BrowserRedirect, paths={"/graphql": graphiql.GRAPHIQL_PATH}),
            # Multipart uploads: preflight header, size limit while reading, concurrency bound.
            Middleware(UploadGuard, max_bytes=settings.upload_max_bytes, concurrency=settings.upload_concurrency),
            Middleware(
                AuthMiddleware,
                service=auth,
                public_paths=(*PUBLIC_PATHS, *graphiql.PUBLIC_PATHS),
                public_prefixes=(
                    *PUBLIC_PREFIXES, *graphiql.PUBLIC_PREFIXES, *download_routes.PUBLIC_PREFIXES, *UPLOAD_PREFIXES
                ),
                mfa_paths=MFA_PATHS,
                password_change_paths=PASSWORD_CHANGE_PATHS,
                form_post_pattern=SAML_ACS_PATTERN,
                trusted_proxies=settings.trusted_proxies,
                known_path=_known_path,
                telemetry=telemetry,
                access_log=settings.log_format == "json",
            )
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.auth = auth
    app.state.settings = settings
    app.state.live_config = live_config
    app.state.live_bus = live_bus
    app.state.live_listener = listener
    app.state.graphql = graphql
    app.state.uploads = uploads
    # Rate limits (auth/rate_limits.py): in-process buckets for GraphQL, PostgreSQL's for sensitive operations.
    app.state.rate_limits = RateLimiter(settings.rate_limits, engine)
    app.state.telemetry = telemetry
    return app


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory server.app:app_from_env` (worker processes)."""
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)  # each worker process configures its own
    return create_app(settings)
