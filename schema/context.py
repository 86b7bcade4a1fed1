"""The per-request GraphQL context, and the ASGI view that builds it.

The principal was resolved once by `server.middleware.AuthMiddleware` and sits in
`scope["state"]`; `/graphql` is not a public path, so every HTTP request that reaches the view has
one. The context carries it with the request's audit metadata, the `AuthService` (clock, writer,
hasher...) and the engine.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeAlias

import orjson
import strawberry
from cross_web import HTTPException
from graphql import GraphQLError
from graphql.execution.values import get_variable_values
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult

from auth.audit import RequestMeta, inet
from auth.exceptions import AuthRequestError
from auth.http import parse_json_object
from auth.permissions import Permission
from auth.principal import Principal
from auth.service import AuthService
from models import PermissionAudit
from models.db import RequestConnection
from models.tracing import name_operation
from resolvers.common.loaders import Loaders
from resolvers.common.scope import ReadScope
from schema.errors import MaskUnexpectedErrors, is_unexpected, log_errors
from schema.graphql_http import (
    APPLICATION_JSON,
    MEDIA_KEY,
    finish_status,
    media_of,
    negotiate,
    not_acceptable_body,
    shape_result,
)
from schema.limits import DEFAULT_MAX_COST, admission_cost
from schema.rate_limit_extension import charge_request
from schema.trusted_documents import TrustedDocuments, after, gate

if TYPE_CHECKING:
    from schema.compiled.runner import PreparedCache

__all__ = ["Denials", "GraphQLContext", "GraphQLView", "Info", "request_error"]


class Denials:
    """The permission refusals of one operation, counted per (permission, field path).

    The path drops list indices (`opportunityProjects.nodes.winProbabilityScore`), so a list of
    100 refused rows is one entry counted 100 times; `flush` writes one permission_audit row per
    entry through the side-effect writer, outside the operation's (read-only) transaction.
    """

    __slots__ = ("_counts", "_types")

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._types: dict[tuple[str, str], str] = {}

    def add(self, permission: str, info: Any, *, suffix: str = "") -> None:
        path = ".".join(str(p) for p in info.path.as_list() if not isinstance(p, int)) + suffix
        key = (str(permission), path)
        self._counts[key] += 1
        self._types.setdefault(key, info._raw_info.parent_type.name)

    def add_path(self, permission: str, path: str, type_name: str) -> None:
        """One refusal at `path` (no list indices) of a field of `type_name` (the compiled read path)."""
        key = (str(permission), path)
        self._counts[key] += 1
        self._types.setdefault(key, type_name)

    async def flush(self, context: GraphQLContext) -> None:
        counts, self._counts = self._counts, Counter()
        if not counts or context.caller is None:
            return
        principal, meta = context.caller, context.meta
        rows = [
            {
                "tenant_id": principal.tenant_id,
                "user_id": principal.user_id,
                "resource_type": self._types[key],
                "permission_checked": permission,
                "permission_granted": False,
                "denial_reason": f"{permission} is required",
                "ip_address": inet(meta.ip),
                "request_id": meta.request_id,
                "field_path": path,
                "denied_count": count,
            }
            for key, count in counts.items()
            for permission, path in [key]
        ]
        try:
            await context.auth.writer.insert(principal.tenant_id, PermissionAudit.__table__, rows)
        except IntegrityError:
            # A trusted proxy (GWM_TRUSTED_PROXIES) sent a request id again: the denials are recorded
            # under that id plus a suffix of the server's, never lost (the key is request id and path).
            suffix = f"+{uuid.uuid4().hex[:8]}"
            for row in rows:
                row["request_id"] = str(row["request_id"])[: 100 - len(suffix)] + suffix
            await context.auth.writer.insert(principal.tenant_id, PermissionAudit.__table__, rows)


@dataclass(slots=True)
class GraphQLContext:
    request: Request | WebSocket
    response: Response | WebSocket
    meta: RequestMeta
    auth: AuthService
    engine: AsyncEngine
    # None only on a WebSocket before connection_init authenticates it (subscriptions do not exist yet).
    caller: Principal | None
    # The operation's one database connection and its loaders, opened on first use and closed by
    # the view when the operation ends (models/db.py explains the sharing).
    _db: RequestConnection | None = None
    _loaders: Loaders | None = None
    _scope: ReadScope | None = None
    denials: Denials = field(default_factory=Denials)
    # How long a query may run (GWM_OPERATION_TIMEOUT_MS; schema/limits.py); None: no deadline.
    operation_timeout_ms: int | None = None
    # The cost limit (GWM_QUERY_COST_LIMIT; schema/limits.py); None: the default.
    query_cost_limit: int | None = None
    # Serve the root fields the read compiler covers from one SQL statement each (GWM_COMPILED_READS).
    compiled_reads: bool = False
    # The view's prepared operations (schema/compiled/runner.py), which CompiledReads records; None: none kept.
    prepared: PreparedCache | None = None
    # The view's trusted documents and persisted queries (schema/trusted_documents.py).
    trusted: TrustedDocuments | None = None

    @property
    def scope(self) -> ReadScope:
        """What the caller may read (resolvers/common/scope.py)."""
        if self._scope is None:
            self._scope = ReadScope(self.principal)
        return self._scope

    @property
    def db(self) -> RequestConnection:
        """The operation's read connection: first the one the middleware began by looking up the
        caller (`scope["state"]["db"]`, taken once), so the lookup and the reads share a snapshot;
        otherwise (after `refresh_reads`, a WebSocket, an OIDC bearer) a new one, opened on first use."""
        if self._db is None:
            principal = self.principal
            begun = self._take_begun()
            if begun is not None and begun.is_open and begun.tenant_id == principal.tenant_id:
                self._db = begun
            else:
                self._db = RequestConnection(self.engine, principal.tenant_id, read_only=True)
        return self._db

    def _take_begun(self) -> RequestConnection | None:
        """The middleware's connection (models/db.py), taken at most once."""
        begun = (self.request.scope.get("state") or {}).pop("db", None)
        return begun if isinstance(begun, RequestConnection) else None

    async def take_write_connection(self) -> AsyncConnection | None:
        """The transaction the middleware began for this mutation by looking up the caller (READ
        COMMITTED, read-write, the tenant set: models/db.py `RequestConnection.detach`), for the first
        unit of work to write in; the caller commits or rolls it back and closes it. None when there is
        none (not begun for a write, or taken already). Reads made in it so far (a permission check's
        lookup) saw what the write will; the next read opens a connection of its own."""
        db = self._db
        if db is None:
            state = self.request.scope.get("state") or {}
            db = state.get("db")
            if not isinstance(db, RequestConnection) or not db.for_write:
                return None
            del state["db"]
        elif db.for_write:
            self._db, self._loaders = None, None
        else:
            return None
        if not db.is_open or self.caller is None or db.tenant_id != self.caller.tenant_id:
            await db.close()
            return None
        return await db.detach()

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders(self.db, self.scope)
        return self._loaders

    async def refresh_reads(self) -> None:
        """End the read snapshot and forget loaded rows, keeping `denials` for `close`.

        A mutation calls this around its unit of work: the next read (its payload, or the next
        mutation of the document) opens a new snapshot that sees what was committed.
        """
        db, self._db, self._loaders = self._db or self._take_begun(), None, None
        if db is not None:
            await db.close()

    async def close(self) -> None:
        """Return the connection to the pool, then record the operation's denials."""
        try:
            await self.refresh_reads()
        finally:
            await self.denials.flush(self)

    @property
    def principal(self) -> Principal:
        """The authenticated caller; refuses (UNAUTHENTICATED) when there is none."""
        if self.caller is None:
            raise GraphQLError("Authentication required.", extensions={"code": "UNAUTHENTICATED"})
        return self.caller

    @property
    def request_id(self) -> str:
        return self.meta.request_id


Info: TypeAlias = strawberry.Info[GraphQLContext, None]


# HTTP status of a refused request -> its extensions.code (docs/api.md, "Error codes").
_HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "TOO_LARGE"}


def request_error(
    status: int, message: str, media_type: str = APPLICATION_JSON, *, allow: str = "POST"
) -> JSONResponse:
    """A request refused before any operation ran, as the GraphQL-over-HTTP spec shapes it, in the
    negotiated media type (schema/graphql_http.py); a 405 names the methods allowed (`allow`)."""
    code = _HTTP_CODES.get(status, "BAD_REQUEST")
    headers = {"cache-control": "no-store"} | ({"allow": allow} if status == 405 else {})
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]},
        status_code=status,
        headers=headers,
        media_type=media_type,
    )


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_surrogates(v) for v in value]
    return value


class GraphQLView(GraphQL[GraphQLContext, None]):
    """strawberry's ASGI view with our context; responses are never cached (they may hold secrets).

    Request bodies go through the server's strict JSON parser (auth.http.parse_json_object: UTF-8,
    an object, bounded depth); every refusal of the request itself (bad JSON, a mutation over GET,
    no query) is a JSON body with an error code, never plain text.
    """

    def parse_json(self, data: str | bytes) -> Any:
        raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
        try:
            return parse_json_object(raw)
        except AuthRequestError as exc:
            raise HTTPException(400, exc.message) from None

    async def run(self, request: Any, context: Any = strawberry.UNSET, root_value: Any = strawberry.UNSET) -> Any:
        try:
            response = await super().run(request, context, root_value)
        except HTTPException as exc:
            # A mutation over GET may be sent with POST; any other method (HEAD) with GET or POST.
            allow = "POST" if request.scope.get("method") == "GET" else "GET, POST"
            return request_error(exc.status_code, exc.reason, media_of(request.scope), allow=allow)
        if isinstance(response, Response) and not isinstance(response, StreamingResponse):
            # GraphQL over HTTP: the negotiated media type and its status code (schema/graphql_http.py).
            response.status_code, extra = finish_status(request.scope, response.status_code)
            response.headers.update(extra)
            response.headers["content-type"] = media_of(request.scope)
        return response

    def should_render_graphql_ide(self, request: Any) -> bool:
        """Never: GraphiQL is a page of its own (server/graphiql.py), so a GET without a query is a 400."""
        return False

    async def execute_single(self, *args: Any, **kwargs: Any) -> Any:
        request_data = kwargs.get("request_data")
        if (
            not args
            and request_data is not None
            and request_data.extensions is None
            and kwargs["request_adapter"].method == "POST"
        ):  # a kept mutation document: without strawberry's per-request pipeline (schema/prepared_mutations.py)
            from schema.prepared_mutations import execute_prepared_mutation

            result = await execute_prepared_mutation(
                self.schema, request_data.query, request_data.variables, request_data.operation_name,
                kwargs["context"], kwargs["root_value"],
            )
            if result is not None:
                return result
        try:
            return await super().execute_single(*args, **kwargs)
        except HTTPException as exc:
            if isinstance(exc.__cause__, InvalidOperationTypeError):  # a mutation over GET: 405 per the spec
                raise HTTPException(405, exc.reason) from exc
            raise

    def __init__(
        self,
        schema: strawberry.Schema,
        *,
        auth: AuthService,
        operation_timeout_ms: int | None = None,
        query_cost_limit: int | None = None,
        compiled_reads: bool = False,
        trusted_documents: TrustedDocuments | None = None,
        **options: Any,
    ) -> None:
        super().__init__(schema, **options)
        self.auth = auth
        # Who may run which document, and the persisted queries (schema/trusted_documents.py).
        self.trusted = trusted_documents or TrustedDocuments(auth.engine, enforce=False)
        self.operation_timeout_ms = operation_timeout_ms
        self.query_cost_limit = query_cost_limit
        self.compiled_reads = compiled_reads
        from schema.compiled.runner import PreparedCache  # the compiler imports this module's Info

        self.prepared = PreparedCache() if compiled_reads else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A POST repeating a prepared query is answered here; everything else by strawberry's view."""
        if scope["type"] == "http" and not await self._negotiate(scope, receive, send):
            return
        prepared = self.prepared
        # Not for a streaming Accept (no media type recorded: strawberry's to answer), nor for a request the
        # middleware began for a mutation (schema/writes.py is_mutation_request): only queries are prepared here.
        if (
            scope["type"] == "http" and prepared is not None and scope.get("method") == "POST" and MEDIA_KEY in scope
            and not _begun_for_write(scope)
        ):
            messages, body = await _read_body(receive)
            answer = await self._serve_prepared(scope, body, prepared)
            if answer is not None:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    (b"content-type", media_of(scope).encode()),
                    (b"cache-control", b"no-store"),
                ]})
                await send({"type": "http.response.body", "body": answer})
                return
            receive = _replay(messages, receive)
        elif (  # a mutation the middleware began its write for (schema/writes.py is_mutation_request)
            scope["type"] == "http" and scope.get("method") == "POST" and MEDIA_KEY in scope and _begun_for_write(scope)
        ):
            messages, body = await _read_body(receive)
            if await self._serve_prepared_mutation(scope, receive, send, body):
                return
            receive = _replay(messages, receive)
        await super().__call__(scope, receive, send)

    async def _serve_prepared_mutation(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> bool:
        """Answer a POSTed mutation whose document is kept (schema/prepared_mutations.py) without strawberry's
        HTTP handling; False, before anything ran, whenever strawberry's view must serve it: a body it would
        parse otherwise or refuse, a trusted-document lookup to make, or a check the prepared path declines.
        What runs, and the response (status, headers, body in the negotiated media type), are the view's own:
        its context, the operation's connection closed and `after` called as `execute_operation` does, the
        result shaped by `process_result` and `create_response`, the status by `run`."""
        from schema.prepared_mutations import execute_prepared_mutation

        plain = _plain_request(body)
        if plain is None:
            return False
        query, variables, operation_name = plain
        state = scope.get("state") or {}
        caller = state.get("principal")
        if not isinstance(caller, Principal) or self.trusted.needs_lookup(caller, query):
            return False
        request = Request(scope, receive)
        sub_response = await self.get_sub_response(request)
        context = await self.get_context(request, sub_response)
        try:
            result = await execute_prepared_mutation(self.schema, query, variables, operation_name, context, None)
        except BaseException:
            await context.close()
            raise
        if result is None:
            return False  # nothing ran, nothing was taken from the request: strawberry's view serves it
        await context.close()
        await after(self.trusted, context, result)
        response_data = await self.process_result(request, result)
        response = self.create_response(response_data=response_data, sub_response=sub_response)
        response.status_code, extra = finish_status(scope, response.status_code)
        response.headers.update(extra)
        response.headers["content-type"] = media_of(scope)
        await response(scope, receive, send)
        return True

    async def _negotiate(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Record the response media type Accept asks for (schema/graphql_http.py); False once a 406
        is sent (neither JSON type acceptable). A streaming Accept is strawberry's to answer."""
        accept = Headers(scope=scope).get("accept")
        # strawberry reads the first Accept header only: the mapping holds that one.
        if self._get_stream_transport_from_headers({"accept": accept or ""}) is not None:
            return True
        media = negotiate(accept)
        if media is None:
            refusal = JSONResponse(not_acceptable_body(), status_code=406, headers={"cache-control": "no-store"})
            await refusal(scope, receive, send)
            return False
        scope[MEDIA_KEY] = media
        return True

    async def process_result(self, request: Any, result: Any) -> Any:
        """strawberry's response body, shaped for the negotiated media type (schema/graphql_http.py)."""
        return shape_result(request.scope, result, await super().process_result(request, result))

    async def _serve_prepared(self, scope: Scope, body: bytes, prepared: PreparedCache) -> bytes | None:
        """The response body of a query whose document is prepared (schema/compiled/runner.py), or None.

        A prepared document passed the token limit, the selection and overlap bounds and validation when
        it was first run (none of them depends on the variables or the caller), so a repeat of its text
        skips graphql-core and strawberry: the variables are coerced by graphql-core's own function, the
        cost limit and the input guard run on them as in the executor's pipeline, and every root field
        is served by its compiled statement on the request's connection (the principal lookup's
        transaction). None, before anything is read, whenever any of that would differ: the body is not
        a plain JSON request, a variable is refused, the cost is over the limit, the input guard refuses
        a value, or a root field does not compile for this caller. Then the normal view serves the
        request and reports what it must, exactly as before.
        """
        from schema.compiled.runner import TimedOut, execute_plans, plan_cache, plan_operation

        if Headers(scope=scope).get("content-type", "").split(";", 1)[0].strip().lower() != "application/json":
            return None
        plain = _plain_request(body)
        if plain is None:
            return None
        query, variables, operation_name = plain
        entry = prepared.get((query, operation_name))
        state = scope.get("state") or {}
        meta, caller = state.get("meta"), state.get("principal")
        if entry is None or not isinstance(meta, RequestMeta) or not isinstance(caller, Principal):
            return None
        if self.trusted.needs_lookup(caller, query):  # trusted documents: a refusal is strawberry's path's to send
            begun = state.get("db")
            lookup = begun if isinstance(begun, RequestConnection) else None
            if (await self.trusted.admit(state, caller, query, None, lambda: lookup)).error is not None:
                return None
        name_operation(entry.operation.name.value if entry.operation.name else None, "query")  # its span (telemetry)
        schema = self.schema._schema  # type: ignore[attr-defined]
        given: dict[str, Any] = variables or {}
        coerced = get_variable_values(schema, entry.operation.variable_definitions or (), given)
        if isinstance(coerced, list):
            return None
        try:
            cost = entry.cost(given, lambda: admission_cost(schema, entry.document, operation_name, given))
        except RecursionError:
            return None
        if cost > (self.query_cost_limit or DEFAULT_MAX_COST):
            return None
        if entry.check(schema, operation_name, given) is not None:
            return None
        context = GraphQLContext(
            request=Request(scope),
            response=Response(),
            meta=meta,
            auth=self.auth,
            engine=self.auth.engine,
            caller=caller,
            operation_timeout_ms=self.operation_timeout_ms,
            query_cost_limit=self.query_cost_limit,
            compiled_reads=True,
            prepared=prepared,
        )
        planned = plan_operation(
            schema, entry.document, entry.operation, query, coerced, context, plan_cache, entry.facts
        )
        if planned is None or len(planned[1]) < len(planned[0]):
            return None  # nothing was read: the context's connection is still the middleware's, for the view
        if await charge_request(scope, entry.document, operation_name) is not None:
            return None  # refused (429): strawberry's path answers the refusal decided here, charging nothing
        order, bound = planned
        errors: list[GraphQLError] = []
        result: dict[str, Any] | None = None
        compiled: list[str] = []
        try:
            try:
                outcome = await execute_plans(schema, order, bound, context)
            except TimedOut as exc:
                errors = [exc.error]
            except Exception as exc:  # a database failure: masked with the request id, like the executor's
                errors = [GraphQLError(str(exc), original_error=exc)]
            else:
                result = {key: outcome.compiled[key] for key in order}
                errors = outcome.errors
                compiled = list(order)
            response: dict[str, Any] = {"data": result}
            if errors:
                # As GwmSchema.process_errors and MaskUnexpectedErrors treat the executor's errors.
                execution = SimpleNamespace(context=context)
                log_errors(errors, execution)  # type: ignore[arg-type]
                mask = MaskUnexpectedErrors()
                mask.execution_context = execution  # type: ignore[assignment]
                response["errors"] = [
                    (mask.anonymise_error(error) if is_unexpected(error) else error).formatted for error in errors
                ]
            if caller.allows(Permission.GRAPHQL_ADHOC):
                response["extensions"] = {"compiled": compiled}
            prepared.hits += 1
            return self.encode_json(response)
        finally:
            await context.close()

    def encode_json(self, data: object) -> bytes:
        """The response body; compiled root fields are spliced in as the JSON PostgreSQL built.

        A string holding an unpaired surrogate (a client's, echoed in an error message) cannot be UTF-8:
        such characters become "?" rather than failing the response.
        """
        try:
            return orjson.dumps(data)
        except orjson.JSONEncodeError:
            return orjson.dumps(_without_surrogates(data))

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> GraphQLContext:
        state = request.scope.get("state") or {}
        meta = state.get("meta")
        if not isinstance(meta, RequestMeta):  # the middleware always sets it; fail closed if it did not
            raise RuntimeError("GraphQL view mounted without AuthMiddleware")
        if isinstance(response, Response):
            response.headers["cache-control"] = "no-store"
        return GraphQLContext(
            request=request,
            response=response,
            meta=meta,
            auth=self.auth,
            engine=self.auth.engine,
            caller=state.get("principal"),
            operation_timeout_ms=self.operation_timeout_ms,
            query_cost_limit=self.query_cost_limit,
            compiled_reads=self.compiled_reads,
            prepared=self.prepared,
            trusted=self.trusted,
        )


    async def execute_operation(
        self,
        request: Any,
        request_adapter: Any,
        request_data: Any,
        context: GraphQLContext,
        root_value: Any,
        sub_response: Any,
    ) -> Any:
        """Run the operation, then return its database connection to the pool, whatever happened."""
        result: Any = None
        try:
            refused = await gate(self.trusted, request_data, context)  # trusted documents, persisted queries
            if refused is not None:
                return ExecutionResult(data=None, errors=[refused])
            result = await super().execute_operation(
                request, request_adapter, request_data, context, root_value, sub_response
            )
            return result
        finally:
            await context.close()
            await after(self.trusted, context, result)


def _plain_request(body: bytes) -> tuple[str, dict[str, Any] | None, str | None] | None:
    """The query, variables and operationName of a plain JSON GraphQL request body (an object with a string
    query, an object or no variables, a string or no operation name, no extensions); None for anything
    else, which strawberry's view parses and answers."""
    try:
        data = parse_json_object(body)
    except AuthRequestError:
        return None
    query, variables, operation_name = data.get("query"), data.get("variables"), data.get("operationName")
    if (
        not isinstance(query, str)
        or not isinstance(variables, dict | None)
        or not isinstance(operation_name, str | None)
        or data.get("extensions") is not None
    ):
        return None
    return query, variables, operation_name


def _begun_for_write(scope: Scope) -> bool:
    """Whether the middleware began the request's transaction for a mutation (its body certainly runs one)."""
    begun = (scope.get("state") or {}).get("db")
    return isinstance(begun, RequestConnection) and begun.for_write


async def _read_body(receive: Receive) -> tuple[list[Message], bytes]:
    """Every message of the request body (the middleware has buffered it), and the body's bytes."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    return messages, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """`receive` handing the already read messages out again, then the connection's own."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
