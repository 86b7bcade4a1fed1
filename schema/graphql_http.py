"""GraphQL over HTTP: the response media type negotiated from Accept, the status codes of each, and
the fields a GET may not select (docs/api.md, "Media types and status codes").

Media types (the GraphQL-over-HTTP specification, draft of 2025):
- `application/graphql-response+json` when Accept prefers it; `application/json` when Accept is
  missing, names it, or only matches through a wildcard (`*/*`, `application/*`). Ties between the
  two named explicitly at the same quality go to `application/graphql-response+json`.
- An Accept that rules both out (`text/plain`, or `application/json;q=0`) is answered 406
  NOT_ACCEPTABLE before anything else runs (no SQL beyond the principal lookup).

Status codes, per media type, of a well-formed request:
- `application/json`: 200, whatever the GraphQL errors (parse, validation, variable coercion, fields).
- `application/graphql-response+json`: 200 when the operation executed (`data` present, even null:
  a partial or field-error result); a request error (the document does not parse or validate, a
  variable does not coerce, a refusal before execution) has no `data` entry and answers 4xx: 401
  UNAUTHENTICATED, 403 FORBIDDEN (and TRUSTED_DOCUMENT_REQUIRED), 429 for a rate limit, 500 for an
  unexpected failure before execution, 400 for the rest.
- Both: 405 METHOD_NOT_ALLOWED (with `Allow: POST`) for a mutation or a side-effect field over GET;
  a status another hook set (429 with Retry-After) is kept.
Requests that are not well formed (not JSON, no query, a `variables` that is not an object...)
answer 400 in the negotiated media type.

GET and side effects: a query sent with GET must be safe (RFC 9110), so a field whose read writes
something is refused over GET by a validation rule (`GetSafety`), wherever the document came from.
`SIDE_EFFECT_FIELDS` lists them: the content reads that write a document_access_logs row
(resolvers/documents/access_log.py). Issuing a download URL (`documentDownloadUrl`) is a mutation,
so GET never reaches it (405, strawberry's operation-type check).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from graphql import FieldNode, GraphQLError, ValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.http import GraphQLHTTPResponse
from strawberry.types.execution import ExecutionResult, PreExecutionError

__all__ = [
    "APPLICATION_JSON",
    "GRAPHQL_RESPONSE_JSON",
    "SIDE_EFFECT_FIELDS",
    "GetSafety",
    "finish_status",
    "media_of",
    "negotiate",
    "not_acceptable_body",
    "shape_result",
]

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"
# Where the view keeps the negotiated media type and the outcome of the operation (ASGI scope keys).
MEDIA_KEY = "gwm.media_type"
OUTCOME_KEY = "gwm.graphql_outcome"

#: (type, field) pairs whose read writes a row: refused over GET.
SIDE_EFFECT_FIELDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("Document", "extractedText"),
        ("Document", "contentPreview"),
        ("Document", "searchSnippet"),
    }
)

# extensions.code of a request error -> its status under application/graphql-response+json.
_REQUEST_ERROR_STATUS: Mapping[str, int] = {
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "TRUSTED_DOCUMENT_REQUIRED": 403,  # a document only graphql:adhoc may run (schema/trusted_documents.py)
    "METHOD_NOT_ALLOWED": 405,
    "TOO_MANY_REQUESTS": 429,
    "RATE_LIMITED": 429,
    "INTERNAL_SERVER_ERROR": 500,
}


def _ranges(accept: str) -> Iterator[tuple[str, str, float]]:
    """(type, subtype, q) of each media range of an Accept header (RFC 9110 12.5.1), lower-cased."""
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        kind, _, subtype = parts[0].lower().partition("/")
        if not kind or not subtype:
            continue
        quality = 1.0
        for param in parts[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        yield kind.strip(), subtype.strip(), quality


def _quality(ranges: Sequence[tuple[str, str, float]], media: str) -> tuple[float, int]:
    """The quality Accept gives `media` and how specific the range that gave it is (2 exact, 0 `*/*`)."""
    kind, _, subtype = media.partition("/")
    best: tuple[int, float] | None = None
    for r_kind, r_subtype, q in ranges:
        if (r_kind, r_subtype) == (kind, subtype):
            specificity = 2
        elif r_kind == kind and r_subtype == "*":
            specificity = 1
        elif (r_kind, r_subtype) == ("*", "*"):
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, q)
    return (0.0, -1) if best is None else (best[1], best[0])


def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header value; None when neither JSON type is acceptable."""
    if accept is None or not accept.strip():
        return APPLICATION_JSON  # the specification's legacy rule: no Accept means application/json
    ranges = list(_ranges(accept))
    if not ranges:
        return APPLICATION_JSON
    graphql_q, graphql_exact = _quality(ranges, GRAPHQL_RESPONSE_JSON)
    json_q, json_exact = _quality(ranges, APPLICATION_JSON)
    if graphql_q <= 0 and json_q <= 0:
        return None
    if graphql_q != json_q:
        return GRAPHQL_RESPONSE_JSON if graphql_q > json_q else APPLICATION_JSON
    # Equal quality: the type the client named beats one matched by a wildcard; both named, the new type.
    return GRAPHQL_RESPONSE_JSON if graphql_exact == 2 and graphql_exact >= json_exact else APPLICATION_JSON


def media_of(scope: Mapping[str, Any]) -> str:
    """The media type negotiated for this request (application/json until negotiated)."""
    media = scope.get(MEDIA_KEY)
    return media if isinstance(media, str) else APPLICATION_JSON


def not_acceptable_body() -> dict[str, Any]:
    return {
        "errors": [
            {
                "message": f"Accept must allow {GRAPHQL_RESPONSE_JSON} or {APPLICATION_JSON}.",
                "extensions": {"code": "NOT_ACCEPTABLE"},
            }
        ]
    }


def _code(error: GraphQLError) -> str | None:
    code = (error.extensions or {}).get("code")
    return code if isinstance(code, str) else None


def _is_request_error(result: ExecutionResult) -> bool:
    """Whether `result` answers a request error: nothing was executed (the document does not parse or
    validate, a variable does not coerce, a refusal before execution), so there is no `data` entry.

    strawberry marks parse and validation failures (and refusals of the extensions before execution)
    as PreExecutionError; graphql-core answers a variable that does not coerce with data null and
    errors without a path. A field error always has a path; the one executor error without a path is
    the deadline's (OPERATION_TIMEOUT, schema/limits.py), which follows execution.
    """
    if isinstance(result, PreExecutionError):
        return True
    errors = result.errors or []
    return (
        result.data is None
        and bool(errors)
        and all(error.path is None and _code(error) != "OPERATION_TIMEOUT" for error in errors)
    )


def shape_result(
    scope: MutableMapping[str, Any], result: ExecutionResult, response: GraphQLHTTPResponse
) -> GraphQLHTTPResponse:
    """The response body of `result` for the negotiated media type; the status is decided by `finish_status`.

    A request error keeps `data: null` under application/json (strawberry's shape, relied on by its
    clients) and has no `data` entry under application/graphql-response+json (as the specification
    requires of a request error).
    """
    request_error = _is_request_error(result)
    codes = [code for error in result.errors or [] if (code := _code(error)) is not None]
    scope[OUTCOME_KEY] = (request_error, codes)
    if request_error and media_of(scope) == GRAPHQL_RESPONSE_JSON:
        response.pop("data", None)
    return response


def finish_status(scope: Mapping[str, Any], status: int) -> tuple[int, dict[str, str]]:
    """The status of a response strawberry answered with `status`, and headers to add."""
    outcome = scope.get(OUTCOME_KEY)
    if status != 200 or outcome is None:
        return status, {}  # another hook's status (a rate limit), or no operation ran
    request_error, codes = outcome
    if not request_error:
        return 200, {}
    if "METHOD_NOT_ALLOWED" in codes:
        return 405, {"allow": "POST"}
    if media_of(scope) != GRAPHQL_RESPONSE_JSON:
        return 200, {}
    for code in codes:
        if code in _REQUEST_ERROR_STATUS:
            return _REQUEST_ERROR_STATUS[code], {}
    return 400, {}


# -- GET safety -----------------------------------------------------------------------------------


class _NoSideEffects(ValidationRule):
    """Refuses the fields of SIDE_EFFECT_FIELDS (in the operation and in fragments alike)."""

    def enter_field(self, node: FieldNode, *_args: Any) -> None:
        parent = self.context.get_parent_type()
        if parent is not None and (parent.name, node.name.value) in SIDE_EFFECT_FIELDS:
            self.report_error(
                GraphQLError(
                    f"`{parent.name}.{node.name.value}` writes an access-log row when read: send the query"
                    " with POST.",
                    node,
                    extensions={"code": "METHOD_NOT_ALLOWED"},
                )
            )


def _method(context: Any) -> str | None:
    request = getattr(context, "request", None)
    scope = getattr(request, "scope", None)
    method = scope.get("method") if isinstance(scope, Mapping) else None
    return method if isinstance(method, str) else None


class GetSafety(SchemaExtension):
    """Over GET, validation also refuses every field with a side effect (SIDE_EFFECT_FIELDS).

    The rule joins the request's validation rules, so the validation cache (schema/limits.py), keyed
    by the rules, never answers a GET with a POST's result.
    """

    def on_operation(self) -> Iterator[None]:
        ec = self.execution_context
        if _method(ec.context) == "GET":
            ec.validation_rules = (*ec.validation_rules, _NoSideEffects)
        yield
