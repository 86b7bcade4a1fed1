"""The per-request GraphQL context, and the ASGI view that builds it.

The principal was resolved once by `server.middleware.AuthMiddleware` and sits in
`scope["state"]`; `/graphql` is not a public path, so every HTTP request that reaches the view has
one. The context carries it with the request's audit metadata, the `AuthService` (clock, writer,
hasher...) and the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import strawberry
from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from auth.audit import RequestMeta
from auth.principal import Principal
from auth.service import AuthService
from models.db import RequestConnection
from resolvers.common.loaders import Loaders

__all__ = ["GraphQLContext", "GraphQLView", "Info"]


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

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._db = RequestConnection(self.engine, self.principal.tenant_id, read_only=True)
            self._loaders = Loaders(self._db)
        return self._loaders

    async def close(self) -> None:
        db, self._db, self._loaders = self._db, None, None
        if db is not None:
            await db.close()

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


class GraphQLView(GraphQL[GraphQLContext, None]):
    """strawberry's ASGI view with our context; responses are never cached (they may hold secrets)."""

    def __init__(self, schema: strawberry.Schema, *, auth: AuthService, **options: Any) -> None:
        super().__init__(schema, **options)
        self.auth = auth

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
        )


    async def execute_operation(  # type: ignore[override]
        self,
        request: Any,
        request_adapter: Any,
        request_data: Any,
        context: GraphQLContext,
        root_value: Any,
        sub_response: Any,
    ) -> Any:
        """Run the operation, then return its database connection to the pool, whatever happened."""
        try:
            return await super().execute_operation(
                request, request_adapter, request_data, context, root_value, sub_response
            )
        finally:
            await context.close()
