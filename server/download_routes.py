"""GET /documents/download/<token>: the local backend's downloads, behind HMAC-signed URLs.

`documentDownloadUrl` (resolvers/documents/downloads.py) issues the URL; the token is the credential
(the path is public to the authentication middleware, as a link handed to a download manager must
work): HMAC-SHA256 over tenant, version row, version number, user and expiry (storage/signing.py,
purpose `documents.download`). Here it is verified against the same key and the server's clock, then
the version is checked again as it is now (not deleted, clean, still that version, the user or API
key still active, and still readable with its grants as they are now: the documents row rule with
the access levels, and `document.file:read`) and its file is streamed as an attachment:
`Content-Disposition: attachment` with the RFC 6266 file name (an ASCII fallback and `filename*` in
UTF-8), the stored media type, `X-Content-Type-Options: nosniff`, a sandboxing
Content-Security-Policy and `Cache-Control: no-store`.

Every outcome writes a `document_access_logs` row through the side-effect writer: the download
(`download`, success), and every refusal (an expired link, a tampered one when the ids it claims name
a document and a user of that tenant, a document no longer downloadable). Errors answer
`{"error": {"code", "message"}}`: 403 DOWNLOAD_LINK_INVALID, 410 DOWNLOAD_LINK_EXPIRED, 404 NOT_FOUND,
409 DOCUMENT_QUARANTINED / DOCUMENT_INFECTED / DOCUMENT_DELETED / NO_FILE, 503 STORAGE_UNAVAILABLE.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

from sqlalchemy import Table, select, text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from auth.audit import RequestMeta
from auth.permissions import Permission
from auth.principal import Principal, PrincipalKind, load_grants, load_role_grants
from auth.service import AuthService
from models.documents import Document
from resolvers.common.scope import ReadScope
from resolvers.documents.downloads import (
    DOWNLOAD_PATH,
    DOWNLOAD_PURPOSE,
    AccessType,
    app_storage,
    log_access,
    refusal_of,
)
from storage.base import DocumentStorage
from storage.errors import StorageUnavailable
from storage.local import LocalStorage
from storage.s3 import content_disposition
from storage.signing import BadSignature, Expired

__all__ = ["PUBLIC_PREFIXES", "download", "download_routes"]

#: Paths the authentication middleware lets through without a credential: the token is one.
PUBLIC_PREFIXES = (DOWNLOAD_PATH,)

_NO_STORE = {"cache-control": "no-store"}
_DOCUMENTS: Table = Document.__table__
_REFUSAL_STATUS = {"NO_FILE": 409, "DOCUMENT_DELETED": 409, "DOCUMENT_QUARANTINED": 409,
                   "DOCUMENT_INFECTED": 409, "STORAGE_MISMATCH": 409}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=_NO_STORE)


def _claimed(token: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID] | None:
    """The tenant, document and user a token CLAIMS, unverified (to attach a refusal's log row)."""
    body = token.partition(".")[0]
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return uuid.UUID(claims["t"]), uuid.UUID(claims["d"]), uuid.UUID(claims["u"])
    except (ValueError, TypeError, KeyError):
        return None


async def _log(
    auth: AuthService, ids: tuple[uuid.UUID, uuid.UUID, uuid.UUID], meta: RequestMeta | None,
    *, success: bool, reason: str | None = None,
) -> None:
    tenant_id, document_id, user_id = ids
    await log_access(
        auth.writer, tenant_id, document_id=document_id, user_id=user_id, meta=meta,
        access_type=AccessType.DOWNLOAD, success=success, reason=reason,
    )


async def download(request: Request) -> Response:
    token: str = request.path_params["token"]
    state: Any = request.app.state
    storage: DocumentStorage = app_storage(state)
    auth: AuthService = state.auth
    meta = request.scope.get("state", {}).get("meta")
    if not isinstance(storage, LocalStorage):
        return _error(404, "NOT_FOUND", "Downloads are served by the S3 store's own URLs on this server.")
    try:
        claims = storage.signer.verify(DOWNLOAD_PURPOSE, token)
        ids = (uuid.UUID(claims["t"]), uuid.UUID(claims["d"]), uuid.UUID(claims["u"]))
        version = int(claims["n"])
    except Expired:
        claimed = _claimed(token)  # genuine (the MAC held), only late
        if claimed is not None:
            await _log(auth, claimed, meta, success=False, reason="expired download link")
        return _error(410, "DOWNLOAD_LINK_EXPIRED", "This download link has expired: ask for a new one.")
    except (BadSignature, ValueError, KeyError, TypeError):
        claimed = _claimed(token)
        if claimed is not None:
            await _log(auth, claimed, meta, success=False, reason="invalid or tampered download link")
        return _error(403, "DOWNLOAD_LINK_INVALID", "This download link is not valid.")

    tenant_id, document_id, user_id = ids

    api_key_id = uuid.UUID(claims["k"]) if isinstance(claims.get("k"), str) else None

    async def current(conn: Any) -> tuple[Any, bool, bool]:
        """The version now, whether its user (or key) is still active, and whether it may still read the file."""
        row = (await conn.execute(text("SELECT * FROM documents WHERE id = :d"), {"d": document_id})).one_or_none()
        if api_key_id is not None:
            role_id = await conn.scalar(
                text("SELECT role_id FROM api_keys WHERE id = :k AND revoked_at IS NULL AND expires_at > now()"),
                {"k": api_key_id},
            )
            grants = await load_role_grants(conn, role_id) if role_id is not None else None
        else:
            active = await conn.scalar(text("SELECT is_active FROM users WHERE id = :u"), {"u": user_id})
            grants = await load_grants(conn, user_id) if active else None
        if row is None or grants is None:
            return row, grants is not None, False
        # Access is decided as now, not as when the URL was issued: a revoked role or reader ends it.
        principal = Principal(PrincipalKind.API_KEY if api_key_id else PrincipalKind.SESSION, tenant_id, user_id,
                              grants, api_key_id=api_key_id)
        condition = ReadScope(principal).condition(_DOCUMENTS)
        query = select(_DOCUMENTS.c.id).where(_DOCUMENTS.c.id == document_id)
        if condition is not None:
            query = query.where(condition)
        readable = (await conn.scalar(query)) is not None
        allowed = grants.allows(Permission.DOCUMENT_FILE_READ, row.opportunity_project_id)
        return row, True, readable and allowed

    row, active, readable = await auth.writer.run(tenant_id, current)
    if row is None or row.version_number != version:
        await _log(auth, ids, meta, success=False, reason="the version the link names is gone")
        return _error(404, "NOT_FOUND", "The document this link names is gone.")
    if not active:
        await _log(auth, ids, meta, success=False, reason="the user or API key the link was issued to is not active")
        return _error(403, "DOWNLOAD_LINK_INVALID", "This download link is not valid.")
    if not readable:
        await _log(auth, ids, meta, success=False, reason="no longer readable by the user")
        return _error(404, "NOT_FOUND", "The document this link names is not readable by its user any more.")
    refusal = refusal_of(row, storage.provider)
    if refusal is not None:
        await _log(auth, ids, meta, success=False, reason=refusal.code.lower())
        return _error(_REFUSAL_STATUS.get(refusal.code, 409), refusal.code, refusal.message)

    chunks = cast(AsyncGenerator[bytes, None], storage.read(row.storage_key))  # an async generator: closable
    try:
        size = await storage.size(row.storage_key)
        first = await anext(chunks, b"")
    except (FileNotFoundError, StorageUnavailable, ValueError) as exc:
        await chunks.aclose()
        await _log(auth, ids, meta, success=False, reason=f"file unavailable: {type(exc).__name__}")
        return _error(503, "STORAGE_UNAVAILABLE", "The file cannot be read right now.")
    await _log(auth, ids, meta, success=True)

    async def body() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    headers = {
        "content-disposition": content_disposition(row.original_filename),
        "x-content-type-options": "nosniff",
        "content-security-policy": "default-src 'none'; sandbox",
        **_NO_STORE,
    }
    if size is not None:
        headers["content-length"] = str(size)
    return StreamingResponse(body(), media_type=row.mime_type, headers=headers)


def download_routes() -> list[BaseRoute]:
    return [Route(DOWNLOAD_PATH + "{token}", download, methods=["GET"])]
