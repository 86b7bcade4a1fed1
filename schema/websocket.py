"""GraphQL subscriptions over WebSocket: graphql-transport-ws only, authenticated on connection_init.

strawberry's graphql-transport-ws handler does the protocol (ack, ping/pong, subscribe, complete,
the init timeout 4408, subscribe before ack 4401, a duplicate id 4409, a second connection_init
4429, an invalid message 4400, the per-connection operation limit answered with an `error`
message); this module adds what the server needs on top of it (docs/api.md, "Subscriptions"):

- The handshake: only the `graphql-transport-ws` subprotocol is served; an upgrade that does not
  offer it (the legacy `graphql-ws` one) is refused before it is accepted (HTTP 403). An upgrade
  carrying the session cookie is refused unless its `Origin` is the server's own public URL (a page
  on another site must not ride the cookie); without the cookie any origin may connect, since the
  credential then travels in `connection_init`.
- `connection_init`: the payload's `authorization` ("Bearer <session token or API key>") or
  `token`, else the session cookie of the upgrade. It is checked by the same paths as an HTTP
  request (AuthService.authenticate_request), but the session's activity time is not touched: a
  subscription is not session activity. A refused credential closes with 4403, as do a session that
  still needs MFA or a password change. Connections per user (or API key) per process are limited:
  one more is closed with 4429.
- Each subscription operation gets a context of its own (its own read connection and loaders), so
  two subscriptions of one socket never share a connection; schema/subscriptions.py opens a read
  per delivery with the principal as it is at that moment.
- The right to receive ends: announced (live/ access events, `LiveConnections.on_access`) or not
  (a session timing out: each connection re-reads its access when it may have changed, at the
  latest every GWM_LIVE_SESSION_RECHECK_SECONDS): 4401 when the session ends or expires or the API
  key is revoked, 4403 when the user or the tenant is deactivated.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError, get_operation_ast, parse
from graphql.language.ast import OperationType as OperationKind
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.http.websocket_origin import normalize_origin
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    ConnectionInitMessage,
    Message,
    SubscribeMessage,
)
from strawberry.types.graphql import OperationType
from strawberry.utils.aio import aclosing

from auth.audit import RequestMeta
from auth.exceptions import Unauthenticated
from auth.principal import Principal
from auth.service import AuthService
from auth.sessions import touch_session
from live.access import load_access
from schema.context import Denials, GraphQLContext, GraphQLView
from schema.rate_limit_extension import charge_socket
from schema.trusted_documents import gate_socket

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_UNAUTHORIZED",
    "LiveConnections",
    "SubscriptionContext",
    "TransportWSHandler",
    "WebSocketView",
]

_log = logging.getLogger(__name__)

#: The session ended or expired (sign-out, revocation, idle or absolute timeout).
CLOSE_UNAUTHORIZED = 4401
#: The credential was refused at connection_init, or the user or tenant was deactivated.
CLOSE_FORBIDDEN = 4403
#: A second connection_init, or one connection more than GWM_WS_MAX_CONNECTIONS_PER_USER.
CLOSE_TOO_MANY = 4429
CLOSE_INVALID = 4400
#: The database pool stayed exhausted past GWM_DB_POOL_TIMEOUT_MS (the IANA-registered "Try Again Later").
CLOSE_TRY_AGAIN_LATER = 1013
# The parser's token bound for a subscribe document (schema/schema.py MAX_TOKENS).
_MAX_TOKENS = 5_000


@dataclass(slots=True)
class SubscriptionContext(GraphQLContext):
    """The context of one subscription operation: a read connection of its own, begun per delivery.

    `caller` is the connection's principal, replaced by `begin_delivery` with the one current at
    that moment (permissions reloaded), so a role change applies to the next delivery.
    """

    connection: TransportWSHandler | None = None

    async def begin_delivery(self, principal: Principal) -> None:
        """Forget the previous delivery's reads (and record its denials); read next as `principal`."""
        await self.close()
        self.caller = principal
        self._scope = None

    @classmethod
    def of(cls, context: GraphQLContext, connection: TransportWSHandler, *, query: bool) -> SubscriptionContext:
        return cls(
            request=context.request,
            response=context.response,
            meta=context.meta,
            auth=context.auth,
            engine=context.engine,
            caller=context.caller,
            denials=Denials(),
            # A query has the deadline it has over HTTP; a subscription runs as long as the client
            # wants (no deadline), its deliveries bounded by the database's statement timeout.
            operation_timeout_ms=context.operation_timeout_ms if query else None,
            query_cost_limit=context.query_cost_limit,
            compiled_reads=False,
            connection=connection,
        )


def _principal_key(principal: Principal) -> tuple[str, uuid.UUID]:
    """Whose connections count together: the user's, or the API key's (its user is the system user)."""
    if principal.api_key_id is not None:
        return ("api_key", principal.api_key_id)
    return ("user", principal.user_id)


@dataclass
class LiveConnections:
    """The process's authenticated WebSocket connections, by user (or API key)."""

    max_per_user: int = 10
    _by_key: dict[tuple[str, uuid.UUID], set[TransportWSHandler]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def add(self, handler: TransportWSHandler, principal: Principal) -> bool:
        """Register an authenticated connection; False when its user already has the most allowed."""
        connections = self._by_key.setdefault(_principal_key(principal), set())
        if len(connections) >= self.max_per_user:
            return False
        connections.add(handler)
        return True

    def discard(self, handler: TransportWSHandler, principal: Principal) -> None:
        key = _principal_key(principal)
        connections = self._by_key.get(key)
        if connections is not None:
            connections.discard(handler)
            if not connections:
                del self._by_key[key]

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_key.values())

    def all(self) -> list[TransportWSHandler]:
        return [h for handlers in self._by_key.values() for h in handlers]

    def on_access(self, event: Any) -> None:
        """The live bus's access hook (live.events.AccessEnded): close the connections it ends.

        A session ended, all of a user's sessions ended, or an API key revoked: 4401; the user or the
        tenant deactivated: 4403. A role change closes nothing (subscriptions reload permissions).
        """
        kind = str(getattr(event.kind, "value", event.kind))
        code = {
            "session_ended": CLOSE_UNAUTHORIZED,
            "user_sessions_ended": CLOSE_UNAUTHORIZED,
            "api_key_revoked": CLOSE_UNAUTHORIZED,
            "user_deactivated": CLOSE_FORBIDDEN,
            "tenant_deactivated": CLOSE_FORBIDDEN,
        }.get(kind)
        if code is None:
            return
        for handler in self.all():
            principal = handler.principal
            if principal is None or not event.concerns(
                tenant_id=principal.tenant_id, user_id=principal.user_id,
                session_id=principal.session_id, api_key_id=principal.api_key_id,
            ):
                continue
            task = asyncio.get_running_loop().create_task(handler.close(code, f"Access ended: {kind}"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """Messages go out as text frames (the protocol's JSON is text; the view's encoder gives bytes)."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        encoded = self.view.encode_json(message)
        try:
            await self.ws.send_text(encoded.decode() if isinstance(encoded, bytes) else encoded)
        except Exception as exc:  # the peer went away meanwhile (starlette raises several kinds)
            raise WebSocketDisconnected from exc


def _valid_subscribe(message: Mapping[str, Any]) -> bool:
    """A subscribe message shaped as the protocol says (anything else closes with 4400)."""
    op_id, payload = message.get("id"), message.get("payload")
    if not isinstance(op_id, str) or not op_id or len(op_id) > 200 or not isinstance(payload, dict):
        return False
    return (
        isinstance(payload.get("query"), str)
        and isinstance(payload.get("variables"), dict | None)
        and isinstance(payload.get("operationName"), str | None)
        and isinstance(payload.get("extensions"), dict | None)
    )


class TransportWSHandler(BaseGraphQLTransportWSHandler[GraphQLContext, None]):
    """strawberry's graphql-transport-ws handler with our authentication, limits and contexts."""

    view: WebSocketView

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.principal: Principal | None = None
        self._registered = False
        self._closed = False
        self._watch: asyncio.Task[None] | None = None
        self._queries: dict[str, bool] = {}  # operation id -> a query (not a subscription)

    # -- messages ------------------------------------------------------------------------------

    async def handle_message(self, message: Message) -> None:
        raw: object = message
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            await self.handle_invalid_message("Invalid message")
            return
        if raw["type"] == "subscribe" and not _valid_subscribe(raw):
            await self.handle_invalid_message("Invalid subscribe message")
            return
        if raw["type"] == "complete" and not isinstance(raw.get("id"), str):
            await self.handle_invalid_message("Invalid complete message")
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if self.connection_timed_out:
            return
        if self.connection_init_received:
            await self.close(CLOSE_TOO_MANY, "Too many initialisation requests")
            return
        if self.connection_init_timeout_task:
            self.connection_init_timeout_task.cancel()
        payload = message.get("payload") or {}
        if not isinstance(payload, dict):
            await self.close(CLOSE_INVALID, "Invalid connection init payload")
            return
        self.connection_init_received = True
        try:
            principal = await self.view.authenticate_init(self.context, payload)
        except Unauthenticated as exc:
            await self.close(CLOSE_FORBIDDEN, f"Forbidden: {exc.code}")
            return
        except PoolTimeout:
            await self.close(CLOSE_TRY_AGAIN_LATER, "The server is busy; try again later")
            return
        if not self.view.connections.add(self, principal):
            await self.close(CLOSE_TOO_MANY, "Too many connections for this user")
            return
        self._registered = True
        self.principal = principal
        self.context.caller = principal
        await self.send_message({"type": "connection_ack"})
        self.connection_acknowledged = True
        self._watch = asyncio.create_task(self._watch_access(principal))
        self._watch.add_done_callback(self._task_done)

    async def _watch_access(self, principal: Principal) -> None:
        """Close the connection when its right to receive ends without any event announcing it (an
        idle or absolute session timeout, an API key's expiry, an assignment expiring is only a
        permission change): re-read when the access read last says it may change, at the latest
        after the re-check interval (GWM_LIVE_SESSION_RECHECK_SECONDS)."""
        engine = self.view.auth.engine
        while True:
            access = await load_access(
                engine, tenant_id=principal.tenant_id, user_id=principal.user_id, session_id=principal.session_id,
                api_key_id=principal.api_key_id, recheck=self.view.live_recheck,
            )
            code = access.state.close_code
            if code is not None:
                await self.close(code, f"Access ended: {access.state.value}")
                return
            left = (access.valid_until - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(min(max(left, 0.5), self.view.live_recheck.total_seconds()))

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not self.connection_acknowledged or self.principal is None:
            await self.close(CLOSE_UNAUTHORIZED, "Unauthorized")
            return
        refused = await gate_socket(self.view.trusted, self.principal, message["payload"])  # trusted documents
        if refused is not None:
            await self.send_message({"id": message["id"], "type": "error", "payload": [refused.formatted]})
            return
        try:
            document = parse(message["payload"]["query"], max_tokens=_MAX_TOKENS)
        except GraphQLSyntaxError as exc:
            await self.close(CLOSE_INVALID, exc.message)
            return
        operation = get_operation_ast(document, message["payload"].get("operationName"))
        if operation is not None and operation.operation == OperationKind.MUTATION:
            # Writes go over HTTP (its request checks and audit metadata); a socket only reads.
            error = GraphQLError("Mutations are not served over WebSocket; send them with HTTP POST.",
                                 extensions={"code": "BAD_REQUEST"})
            await self.send_message({"id": message["id"], "type": "error", "payload": [error.formatted]})
            return
        limited = await charge_socket(self.context.request.scope, self.principal, document,
                                      message["payload"].get("operationName"))  # schema/rate_limit_extension.py
        if limited is not None:
            await self.send_message({"id": message["id"], "type": "error", "payload": [limited.formatted]})
            return
        self._queries[message["id"]] = operation is not None and operation.operation == OperationKind.QUERY
        await super().handle_subscribe(message)
        if message["id"] not in self.operations:  # refused (the limit): nothing will run
            self._queries.pop(message["id"], None)

    async def run_operation(self, operation: Operation[GraphQLContext, None]) -> None:
        """strawberry's, with a context of the operation's own (closed when the operation ends)."""
        context = SubscriptionContext.of(self.context, self, query=self._queries.pop(operation.id, False))
        try:
            result_source = await self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=context,
                root_value=self.root_value,
                operation_name=operation.operation_name,
                allowed_operation_types=(OperationType.QUERY, OperationType.SUBSCRIPTION),
            )
            async with aclosing(result_source):
                await self._send_result_stream(operation, result_source)
            await operation.send_operation_message(CompleteMessage(id=operation.id, type="complete"))
        except Exception as exc:
            if isinstance(exc, _OperationStreamClosed):
                return
            if isinstance(exc, GraphQLSyntaxError):  # the parse cache raises it before strawberry sees it
                self.operations.pop(operation.id, None)
                await self.close(CLOSE_INVALID, exc.message)
                return
            await self.handle_task_exception(exc)
            with suppress(Exception):
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
        finally:
            with suppress(Exception):
                await context.close()

    # -- the connection --------------------------------------------------------------------

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (once); its operations end when the receive loop sees the close."""
        if self._closed:
            return
        self._closed = True
        with suppress(Exception):
            await self.websocket.close(code=code, reason=reason)

    async def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._watch
        try:
            await super().shutdown()
        finally:
            if self._registered and self.principal is not None:
                self.view.connections.discard(self, self.principal)
                self._registered = False


class WebSocketView(GraphQLView):
    """The /graphql view with graphql-transport-ws served (see the module docstring)."""

    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = TextWebSocketAdapter  # type: ignore[assignment]

    def __init__(
        self,
        *args: Any,
        connections: LiveConnections | None = None,
        live: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("allowed_origins", ("*",))  # the cookie rule below decides (run)
        kwargs.setdefault("subscription_protocols", (GRAPHQL_TRANSPORT_WS_PROTOCOL,))
        super().__init__(*args, **kwargs)
        self.connections = connections if connections is not None else LiveConnections()
        # The live event feed (live/ package) the subscription fields read from, and how it
        # refreshes a connection's principal; set by the composition root.
        self.live = live
        self.live_recheck = timedelta(seconds=60)
        self._bus: Any = None
        self._batch_reader: Any = None
        self._own_origin = normalize_origin(self.auth.public_url)

    @property
    def batch_reader(self) -> Any:
        """The live bus's reader (schema/subscriptions.py BatchReader), made on first use."""
        if self._batch_reader is None:
            from schema.subscriptions import BatchReader

            self._batch_reader = BatchReader(self.auth.engine)
        return self._batch_reader

    def live_bus(self, context: GraphQLContext) -> Any:
        """The process's live bus (live/bus.py; app.state.live_bus), our reader and access hook set on it."""
        state = getattr(context.request.app, "state", None)
        bus = getattr(state, "live_bus", None)
        if bus is None:
            raise GraphQLError("Subscriptions are turned off on this server.", extensions={"code": "UNAVAILABLE"})
        if self._bus is not bus:
            self._bus = bus
            bus.set_reader(self.batch_reader)
            bus.on_access(self.connections.on_access)
            config = getattr(state, "live_config", None)
            seconds = getattr(config, "session_recheck_seconds", None)
            if seconds:
                self.live_recheck = timedelta(seconds=seconds)
        return bus

    async def run(self, request: Any, context: Any = None, root_value: Any = None) -> Any:
        if isinstance(request, WebSocket):
            if GRAPHQL_TRANSPORT_WS_PROTOCOL not in request.scope.get("subprotocols", []):
                return await self.reject_websocket(request)  # the legacy graphql-ws, or none
            if self.auth.session_cookie in request.cookies:
                origin = request.headers.get("origin")
                if origin is None or normalize_origin(origin) != self._own_origin:
                    _log.warning("refused a WebSocket upgrade with the session cookie from origin %r", origin)
                    return await self.reject_websocket(request)
            return await super().run(request)
        return await super().run(request)

    async def authenticate_init(self, context: GraphQLContext, payload: Mapping[str, object]) -> Principal:
        """The principal of connection_init's credential (see the module docstring)."""
        credential = _payload_credential(payload)
        if credential is None:
            credential = context.request.cookies.get(self.auth.session_cookie) or None
        if credential is None:
            raise Unauthenticated("UNAUTHENTICATED", "Authentication required.")
        principal = await authenticate_quietly(self.auth, credential[:16384], context.meta)
        if not principal.mfa_satisfied:
            raise Unauthenticated("MFA_REQUIRED", "Complete multi-factor authentication first.")
        if principal.password_change_required:
            raise Unauthenticated("PASSWORD_CHANGE_REQUIRED", "Change your temporary password first.")
        return principal


def _payload_credential(payload: Mapping[str, object]) -> str | None:
    authorization = payload.get("authorization") or payload.get("Authorization")
    if isinstance(authorization, str):
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    token = payload.get("token")
    if isinstance(token, str) and token:
        return token
    return None


async def authenticate_quietly(auth: AuthService, credential: str, meta: RequestMeta) -> Principal:
    """`authenticate_request` without the session activity write: a subscription is not activity.

    An API key's use is still recorded (at most once a minute, as over HTTP).
    """
    principal, db = await auth.authenticate_request(credential, meta)
    if db is not None:
        pending = db._after_close
        pending[:] = [a for a in pending if getattr(a, "func", None) is not touch_session]
        await db.close()
    return principal
