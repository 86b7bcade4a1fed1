"""Trusted documents and automatic persisted queries: which document a request may run (docs/api.md).

A caller holding `graphql:adhoc` runs any document. With trusted documents on (GWM_TRUSTED_DOCUMENTS,
on by default in production), a caller without it runs only **registered** documents:

- the files of graphql/operations/, by the sha256 of their exact text, hashed once at start (no SQL);
- the documents its tenant registered (`trustedDocumentRegister`, permission
  `graphql:document:register`; models/trusted_documents.py), looked up by hash with one statement on
  the request's connection, in the principal lookup's transaction.

A registered document is sent as its full text (`query`) or by hash alone
(`extensions.persistedQuery.sha256Hash`). Anything else is refused before execution with
`TRUSTED_DOCUMENT_REQUIRED`, having run no SQL beyond the principal lookup and that registry lookup.
Registered documents are not exempt from anything: they pass the profile's limits and validation like
any document (and are checked against the production limits when registered).

Automatic persisted queries (Apollo's protocol, `extensions.persistedQuery {version: 1, sha256Hash}`):
a hash alone answers `PERSISTED_QUERY_NOT_FOUND` (message `PersistedQueryNotFound`) until a client
sends the hash with the text; the text is then kept in `persisted_queries`, so every gateway process
finds it. Storing one needs `graphql:adhoc` (the text of anyone else is not stored), and an entry is a
cache, never a grant: a caller without `graphql:adhoc` still runs only registered documents. The cache
is bounded per tenant (GWM_PERSISTED_QUERIES_MAX; the oldest entries go) and written after the read
transaction has given its connection back, so a request never holds two connections.

Both view paths call `TrustedDocuments.admit` (schema/context.py: the prepared path and strawberry's).
A registry lookup's answer is kept in the request's scope state, so a request the prepared path passed
on to strawberry's is not looked up twice.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.permissions import Permission
from auth.principal import Principal
from models.db import RequestConnection, set_tenant
from models.trusted_documents import MAX_DOCUMENT_CHARS, document_hash

__all__ = [
    "DEFAULT_MAX_PERSISTED",
    "DEFAULT_MAX_REGISTERED",
    "OPERATIONS_DIR",
    "Admission",
    "TrustedDocuments",
    "after",
    "gate",
    "gate_socket",
    "not_registered",
    "shipped_operations",
]

_log = logging.getLogger(__name__)

OPERATIONS_DIR = Path(__file__).resolve().parents[1] / "graphql" / "operations"
#: Documents a tenant may register (GWM_TRUSTED_DOCUMENTS_MAX); persisted queries it keeps (GWM_PERSISTED_QUERIES_MAX).
DEFAULT_MAX_REGISTERED = 500
DEFAULT_MAX_PERSISTED = 2_000
# Where a request's registry lookups are remembered (hash -> text, None: not registered).
_STATE_KEY = "gwm.trusted_documents"
# A persisted query to keep once the request's operation ran: (tenant, hash, text).
_PERSIST_KEY = "gwm.persist_query"
_HASH = re.compile(r"[0-9a-f]{64}")

_REGISTERED = "SELECT document FROM trusted_documents WHERE sha256_hash = $1"
_REGISTERED_OR_PERSISTED = (
    "SELECT document FROM trusted_documents WHERE sha256_hash = $1"
    " UNION ALL SELECT document FROM persisted_queries WHERE sha256_hash = $1 LIMIT 1"
)
_STORE = (
    "INSERT INTO persisted_queries (tenant_id, sha256_hash, document) VALUES (:tenant, :hash, :document)"
    " ON CONFLICT (tenant_id, sha256_hash) DO NOTHING"
)
# Keep the newest `keep` entries of the tenant.
_EVICT = (
    "DELETE FROM persisted_queries WHERE id IN (SELECT id FROM persisted_queries WHERE tenant_id = :tenant"
    " ORDER BY created_at DESC, id DESC OFFSET :keep)"
)


def shipped_operations(directory: Path = OPERATIONS_DIR) -> Mapping[str, str]:
    """The documents of graphql/operations/ by the sha256 of their exact text."""
    found: dict[str, str] = {}
    for path in sorted(directory.glob("*.graphql")):
        text = path.read_bytes().decode("utf-8")
        found[document_hash(text)] = text
    return MappingProxyType(found)


def _error(message: str, code: str, **more: Any) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code, **more})


def not_registered(sha256: str) -> GraphQLError:
    """The refusal of a document a caller without graphql:adhoc may not run."""
    return _error(
        f"Only registered documents run without {Permission.GRAPHQL_ADHOC}: the document {sha256} is not one of"
        " the shipped operations nor registered for the tenant (trustedDocumentRegister; docs/api.md, Trusted"
        " documents).",
        "TRUSTED_DOCUMENT_REQUIRED",
        permission=str(Permission.GRAPHQL_ADHOC),
        sha256Hash=sha256,
    )


@dataclass(frozen=True, slots=True)
class Admission:
    """What a request may run: `query` (the text, found by hash when only a hash was sent), or `error`.

    `persist`: the hash to keep in the persisted queries cache once the read connection is back.
    """

    query: str | None = None
    error: GraphQLError | None = None
    persist: str | None = None


_PASS = Admission()


def _persisted_query(extensions: object) -> tuple[str | None, GraphQLError | None]:
    """The hash of `extensions.persistedQuery` (None without one), or the refusal of a malformed one."""
    if not isinstance(extensions, Mapping):
        return None, None
    persisted = extensions.get("persistedQuery")
    if persisted is None:
        return None, None
    if not isinstance(persisted, Mapping) or persisted.get("version") != 1:
        return None, _error(
            "extensions.persistedQuery must be {version: 1, sha256Hash}: only version 1 is supported.",
            "PERSISTED_QUERY_NOT_SUPPORTED",
        )
    sha256 = persisted.get("sha256Hash")
    if not isinstance(sha256, str) or not _HASH.fullmatch(sha256.lower()):
        return None, _error(
            "extensions.persistedQuery.sha256Hash must be the sha256 of the document, 64 hexadecimal digits.",
            "BAD_REQUEST",
        )
    return sha256.lower(), None


class TrustedDocuments:
    """The shipped operations, the tenant registry lookup and the persisted queries cache of one view."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        enforce: bool,
        max_registered: int = DEFAULT_MAX_REGISTERED,
        max_persisted: int = DEFAULT_MAX_PERSISTED,
        operations: Mapping[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.enforce = enforce
        self.max_registered = max_registered
        self.max_persisted = max_persisted
        self.operations = operations if operations is not None else shipped_operations()

    def needs_lookup(self, caller: Principal | None, query: object) -> bool:
        """Whether `admit` would read the registry for this plain (no extensions) request."""
        if not self.enforce or (caller is not None and caller.allows(Permission.GRAPHQL_ADHOC)):
            return False
        return not isinstance(query, str) or document_hash(query) not in self.operations

    async def admit(
        self,
        state: MutableMapping[str, Any],
        caller: Principal | None,
        query: object,
        extensions: object,
        db: Callable[[], RequestConnection | None],
    ) -> Admission:
        """What the request may run. `db()`: the request's connection (the principal lookup's transaction),
        taken only for a registry lookup; None refuses what a lookup would have to admit."""
        sha256, malformed = _persisted_query(extensions)
        if malformed is not None:
            return Admission(error=malformed)
        adhoc = caller is not None and caller.allows(Permission.GRAPHQL_ADHOC)
        trusted_only = self.enforce and not adhoc
        if isinstance(query, str):
            if sha256 is not None and document_hash(query) != sha256:
                return Admission(error=_error("provided sha does not match query", "PERSISTED_QUERY_HASH_MISMATCH"))
            if trusted_only:
                sha256 = sha256 or document_hash(query)
                if sha256 in self.operations:
                    return _PASS
                if await self._lookup(state, db, sha256, _REGISTERED) is None:
                    return Admission(error=not_registered(sha256))
                return _PASS
            if sha256 is not None and adhoc and sha256 not in self.operations and len(query) <= MAX_DOCUMENT_CHARS:
                return Admission(persist=sha256)  # kept once it ran (the view: `after`)
            return _PASS
        if sha256 is None:
            return _PASS  # no document at all: strawberry's own refusal
        text = self.operations.get(sha256)
        if text is None:
            text = await self._lookup(state, db, sha256, _REGISTERED if trusted_only else _REGISTERED_OR_PERSISTED)
        if text is not None:
            return Admission(query=text)
        if trusted_only:
            return Admission(error=not_registered(sha256))
        return Admission(error=_error("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND"))

    async def _lookup(
        self, state: MutableMapping[str, Any], db: Callable[[], RequestConnection | None], sha256: str, sql: str
    ) -> str | None:
        seen: dict[tuple[str, str], str | None] = state.setdefault(_STATE_KEY, {})
        key = (sql, sha256)
        if key not in seen:
            connection = db()
            if connection is None:
                return None  # not remembered: a path with the connection may still look it up
            found: object = await connection.fetchval(sql, sha256)
            seen[key] = found if isinstance(found, str) else None
        return seen[key]

    async def persist(self, tenant_id: uuid.UUID, sha256: str, text: str) -> None:
        """Keep `text` under `sha256` for the tenant, dropping its oldest entries past the bound.

        A cache: a failure is logged, never the request's."""
        from sqlalchemy import text as sql

        try:
            async with self.engine.begin() as conn:
                await set_tenant(conn, tenant_id)
                await conn.execute(sql(_STORE), {"tenant": tenant_id, "hash": sha256, "document": text})
                await conn.execute(sql(_EVICT), {"tenant": tenant_id, "keep": self.max_persisted})
        except Exception:
            _log.warning("a persisted query was not stored", exc_info=True)


async def gate(trusted: TrustedDocuments, request_data: Any, context: Any) -> GraphQLError | None:
    """strawberry's path (schema/context.py `execute_operation`): the refusal of the request, or None with
    the document found by hash put in `request_data.query`. A batch (refused by the view) passes."""
    if isinstance(request_data, list):
        return None
    caller = context.caller
    state = context.request.scope.setdefault("state", {})
    admission = await trusted.admit(
        state, caller, request_data.query, request_data.extensions,
        lambda: context.db if caller is not None else None,
    )
    if admission.query is not None:
        request_data.query = admission.query
    if admission.persist is not None and caller is not None:
        state[_PERSIST_KEY] = (caller.tenant_id, admission.persist, request_data.query)
    return admission.error


async def after(trusted: TrustedDocuments, context: Any, result: Any) -> None:
    """Once the operation's connection is back in the pool: keep the persisted query a caller holding
    graphql:adhoc sent, if its document ran (it parsed and validated: the result has data)."""
    pending = (context.request.scope.get("state") or {}).pop(_PERSIST_KEY, None)
    if pending is not None and getattr(result, "data", None) is not None:
        await trusted.persist(*pending)


async def gate_socket(trusted: TrustedDocuments, caller: Principal, payload: Mapping[str, Any]) -> GraphQLError | None:
    """A subscribe message over WebSocket (schema/websocket.py): the same rule, its refusal or None. The
    socket has no request transaction: a registry lookup reads on a connection of its own, closed at once
    (persisted queries are neither looked up by hash nor stored over a socket: the text is required)."""
    query = payload.get("query")
    if not trusted.needs_lookup(caller, query):
        return None
    connection = RequestConnection(trusted.engine, caller.tenant_id, read_only=True)
    try:
        admission = await trusted.admit({}, caller, query, payload.get("extensions"), lambda: connection)
    finally:
        await connection.close()
    return admission.error
