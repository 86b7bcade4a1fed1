"""The assembled schema: root types, scalars, extensions; and the ASGI app serving it.

Extensions: parsing and validation results are cached (bounded LRU, shared across requests;
validation keyed by the printed document); a document over the selection bound or the cost limit
is refused before validation, and a query past its deadline is stopped (schema/limits.py);
unexpected errors are masked with the request id (schema/errors.py). Introspection is served to
every caller in development, only to holders of graphql:adhoc in production (schema/limits.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import ASTValidationRule
from strawberry import relay
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionContext

from auth.service import AuthService
from schema.activities import ActivitiesQuery
from schema.activity_mutations import ActivityMutation
from schema.audit import AuditQuery
from schema.capture import CaptureQuery
from schema.capture_mutations import CaptureMutation
from schema.compiled.runner import CompiledReads
from schema.crm import CrmQuery
from schema.crm_mutations import CrmMutation
from schema.document_downloads import DocumentDownloadMutation
from schema.document_mutations import DocumentMutation
from schema.document_readers import DocumentReaderMutation
from schema.document_uploads import DocumentUploadMutation
from schema.documents import DocumentsQuery
from schema.errors import MaskUnexpectedErrors, log_errors
from schema.external_data import ExternalDataQuery
from schema.external_data_mutations import ExternalDataMutation
from schema.graphql_http import GetSafety
from schema.identity import IdentityMutation, IdentityQuery
from schema.input_guard import InputGuard
from schema.limits import (
    DEFAULT_MAX_COST,
    DEFAULT_MAX_OVERLAPS,
    DEFAULT_MAX_SELECTIONS,
    DEVELOPMENT,
    DocumentCache,
    OperationLimits,
    ProfileRules,
)
from schema.notification_mutations import NotificationMutation
from schema.opportunities import OpportunitiesQuery
from schema.opportunity_mutations import OpportunitiesMutation
from schema.project_mutations import ProjectsMutation
from schema.proposal_mutations import ProposalMutation
from schema.rate_limit_extension import RateLimits
from schema.roles import RolesMutation
from schema.scalars import SCALAR_MAP
from schema.sso_mutations import TenantSsoMutation, TenantSsoSettingsQuery
from schema.subscriptions import Subscription
from schema.sync import SyncQuery
from schema.sync_mutations import SyncMutation
from schema.tenant_mutations import TenantMutation, TenantSecuritySettingsQuery
from schema.trusted_document_mutations import TrustedDocumentMutation, TrustedDocumentQuery
from schema.user_mutations import UserMutation
from schema.websocket import LiveConnections, WebSocketView

__all__ = ["SDL_PATH", "GwmSchema", "build_schema", "graphql_app", "schema", "sdl"]

CACHE_SIZE = 256
# Bounds on one document (OWASP GraphQL: depth, aliases, size). Depth 15 admits GraphiQL's
# introspection query (about 13 deep) and any sensible read (the nested pursuit read is 7), so
# introspection needs no exemption (exemptions by field name have been a bypass elsewhere).
# These are the development profile's; production's are tighter (schema/limits.py PRODUCTION).
MAX_DEPTH = 15
MAX_ALIASES = DEVELOPMENT.max_aliases
MAX_TOKENS = DEVELOPMENT.max_tokens
# Field selections after fragment expansion, pairs of same-named fields to merge, and the default
# of the estimated cost's limit (schema/limits.py, docs/api.md).
MAX_SELECTIONS = DEFAULT_MAX_SELECTIONS
MAX_OVERLAPS = DEFAULT_MAX_OVERLAPS
MAX_COST = DEFAULT_MAX_COST
# Parsed documents that passed, and validation results keyed by the printed document: shared by
# every request of the process.
DOCUMENT_CACHE = DocumentCache(CACHE_SIZE)
# The depth and alias limits as validation rules, made once: strawberry's QueryDepthLimiter and
# MaxAliasesLimiter build a new rule class per instance, hence per request, and the validation cache
# is keyed by the rules, so with them every request was validated again (a third of a small read).
LIMIT_RULES: list[type[ASTValidationRule]] = list(DEVELOPMENT.rules)
# Where `gwm schema export` writes the SDL, relative to the repository root.
SDL_PATH = "graphql/schema.graphql"


@strawberry.type(description="Reads: every list is scoped to the caller's tenant and to the rows its roles may read.")
class Query(
    IdentityQuery,
    OpportunitiesQuery,
    CrmQuery,
    ExternalDataQuery,
    DocumentsQuery,
    ActivitiesQuery,
    CaptureQuery,
    AuditQuery,
    TenantSecuritySettingsQuery,
    TenantSsoSettingsQuery,
    SyncQuery,
    TrustedDocumentQuery,
):
    node: relay.Node | None = relay.node(description="Any entity by its global id; null when not found.")
    nodes: list[relay.Node | None] = relay.node(description="Entities by global id, in order; null where not found.")


@strawberry.type(description="Writes: each mutation field is one audited transaction of its own.")
class Mutation(
    IdentityMutation,
    RolesMutation,
    UserMutation,
    OpportunitiesMutation,
    ProjectsMutation,
    CaptureMutation,
    CrmMutation,
    DocumentMutation,
    DocumentReaderMutation,
    DocumentDownloadMutation,
    DocumentUploadMutation,
    ExternalDataMutation,
    TenantMutation,
    TenantSsoMutation,
    ActivityMutation,
    ProposalMutation,
    SyncMutation,
    NotificationMutation,
    TrustedDocumentMutation,
):
    pass


class GwmSchema(strawberry.Schema):
    """Logs bugs with their request id; expected refusals stay out of the error log."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors, execution_context)


def _operation_timeout_ms(context: Any) -> int | None:
    timeout: int | None = getattr(context, "operation_timeout_ms", None)
    return timeout or None


def _query_cost_limit(context: Any) -> int | None:
    limit: int | None = getattr(context, "query_cost_limit", None)
    return limit


def build_schema() -> GwmSchema:
    return GwmSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(scalar_map=SCALAR_MAP),
        # A repeated mutation document runs without them: schema/prepared_mutations.py applies the same
        # checks in this order (docs/decisions.md Q9); an extension acting on mutations is mirrored there.
        extensions=[
            # Limits first: a document over them is refused before anything runs. The token limit is
            # enforced by the parser; depth and aliases by validation (cached like any validation); all
            # three from the request's profile (GWM_ENV: DEVELOPMENT's are the constants above).
            ProfileRules,
            GetSafety,  # over GET, fields with side effects are refused (schema/graphql_http.py)
            # Parsing (cached once passed), the selection and overlap bounds and the cost limit, then
            # validation (cached), then the deadline.
            lambda: OperationLimits(
                cache=DOCUMENT_CACHE,
                max_selections=MAX_SELECTIONS,
                max_overlaps=MAX_OVERLAPS,
                max_cost=MAX_COST,
                timeout_ms=_operation_timeout_ms,
                cost_limit=_query_cost_limit,
            ),
            # Rate limits: the operation's root fields charged before anything executes (429 when refused).
            RateLimits,
            InputGuard,  # every argument value storable, before execution (schema/input_guard.py)
            # Root fields the read compiler covers run as one SQL statement each (schema/compiled/).
            CompiledReads,
            MaskUnexpectedErrors,
        ],
    )


schema = build_schema()


def sdl() -> str:
    """The served schema as SDL, exactly as `gwm schema export` writes it."""
    return schema.as_str() + "\n"


def graphql_app(
    auth: AuthService,
    *,
    operation_timeout_ms: int | None = None,
    query_cost_limit: int | None = None,
    compiled_reads: bool = False,
    ws_max_subscriptions: int = 20,
    ws_max_connections_per_user: int = 10,
    ws_init_timeout_ms: int = 10_000,
    **options: Any,
) -> WebSocketView:
    """The /graphql endpoint: POST for everything, GET for queries only, no IDE; and over WebSocket,
    subscriptions with graphql-transport-ws only (never the legacy graphql-ws), authenticated on
    connection_init (schema/websocket.py).
    """
    settings: dict[str, Any] = {
        "graphql_ide": None,
        "allow_queries_via_get": True,
        "subscription_protocols": (GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        "connection_init_wait_timeout": timedelta(milliseconds=ws_init_timeout_ms),
        "max_subscriptions_per_connection": ws_max_subscriptions,
        "multipart_uploads_enabled": False,
    }
    settings.update(options)
    return WebSocketView(
        schema, auth=auth, operation_timeout_ms=operation_timeout_ms, query_cost_limit=query_cost_limit,
        compiled_reads=compiled_reads, connections=LiveConnections(ws_max_connections_per_user), **settings
    )
