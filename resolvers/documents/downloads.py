"""Download URLs of document versions, and the access-log rows of every issuance, refusal and download.

`issue_download_url` runs inside the `documentDownloadUrl` mutation's unit of work (a GET never
issues one): the caller must be able to read the document (the documents row rule, access levels
included: `ReadScope.condition`), the version must have a file, not be deleted, and be `clean`
(quarantined or infected files are never served, SI-3). On S3 the URL is a SigV4 presigned GET whose
`X-Amz-Expires` is the configured lifetime; on the local backend it is this server's
`/documents/download/<token>`, an HMAC-signed token (storage/signing.py, purpose
`documents.download`) bound to the tenant, the version row, its version number, the user and the
expiry, which server/download_routes.py serves.

Every issuance and every refusal writes its own `document_access_logs` row through the side-effect
writer (its own transaction: a refusal's row stays although the mutation's transaction rolls back);
the mutation's audit row (`document.download_url.issued`) records issuances with the rest of the
trail. A refusal about a document the caller cannot read says NOT_FOUND, as for a missing one.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select, text

from auth.audit import RequestMeta
from models.documents import Document
from models.enums import AccessLevel, ProcessingStatus, RiskLevel, ScanStatus
from models.errors import DomainError, NotFound
from models.side_effects import SideEffectWriter
from models.unit_of_work import UnitOfWork
from resolvers.documents.access_log import ELEVATED, NORMAL
from storage.base import DocumentStorage
from storage.signing import Signer

__all__ = [
    "DOWNLOAD_PATH",
    "DOWNLOAD_PURPOSE",
    "AccessType",
    "DownloadRefused",
    "IssuedUrl",
    "app_storage",
    "issue_download_url",
    "log_access",
    "refusal_of",
]

#: The local backend's download route (server/download_routes.py): GET <path><token>.
DOWNLOAD_PATH = "/documents/download/"
#: Signer purpose of download tokens; claims: t (tenant), d (version row), n (version number), u (user),
#: k (the API key, when an integration asked).
DOWNLOAD_PURPOSE = "documents.download"


class AccessType:
    """document_access_logs.access_type values written here."""

    URL_ISSUED = "download_url"
    DOWNLOAD = "download"


class DownloadRefused(DomainError):
    """A version that cannot be downloaded now: DOCUMENT_QUARANTINED, DOCUMENT_INFECTED,
    DOCUMENT_DELETED, NO_FILE, STORAGE_MISMATCH."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, field="id")
        self.code = code


def app_storage(state: Any) -> DocumentStorage:
    """The app's document store: `app.state.storage`, else the uploads' (`app.state.uploads.storage`)."""
    storage = getattr(state, "storage", None)
    if storage is None:
        storage = state.uploads.storage
    assert isinstance(storage, DocumentStorage)
    return storage


@dataclass(frozen=True, slots=True)
class IssuedUrl:
    url: str
    expires_at: datetime.datetime


def refusal_of(row: Any, storage_provider: str) -> DownloadRefused | None:
    """Why the version `row` (a documents row) cannot be served now, or None."""
    if row.is_deleted or row.purged_at is not None:
        return DownloadRefused("DOCUMENT_DELETED", "The document is deleted: restore it to download it.")
    if row.processing_status == ProcessingStatus.NO_OBJECT:
        return DownloadRefused("NO_FILE", "This document has no stored file.")
    if row.scan_status == ScanStatus.INFECTED:
        return DownloadRefused("DOCUMENT_INFECTED", "The malware scan found a threat in this file; it is not served.")
    if row.scan_status != ScanStatus.CLEAN:
        return DownloadRefused(
            "DOCUMENT_QUARANTINED", "The file is quarantined until the malware scan finds it clean; try again later."
        )
    if row.storage_provider != storage_provider:
        return DownloadRefused(
            "STORAGE_MISMATCH", f"The file is held by the {row.storage_provider} store, not this one."
        )
    return None


async def log_access(
    writer: SideEffectWriter,
    tenant_id: uuid.UUID,
    *,
    document_id: uuid.UUID,
    user_id: uuid.UUID,
    meta: RequestMeta | None,
    access_type: str,
    success: bool,
    reason: str | None = None,
) -> bool:
    """One document_access_logs row, committed on its own; False when the document or the user does
    not exist in the tenant (nothing to attach a row to: a forged link naming ids of nothing)."""

    async def insert(conn: Any) -> bool:
        result = await conn.execute(
            text(
                "INSERT INTO document_access_logs (tenant_id, document_id, user_id, access_type, ip_address,"
                " user_agent, success, failure_reason, risk_level)"
                " SELECT :t, d.id, u.id, :type, CAST(:ip AS inet), :ua, :ok, :reason,"
                "        CASE WHEN d.access_level = :confidential THEN :elevated ELSE :normal END"
                "   FROM documents d JOIN users u ON u.tenant_id = d.tenant_id AND u.id = :u"
                "  WHERE d.tenant_id = :t AND d.id = :d"
            ),
            {
                "t": tenant_id, "d": document_id, "u": user_id, "type": access_type,
                "ip": meta.ip if meta else None, "ua": meta.user_agent if meta else None,
                "ok": success, "reason": reason,
                # Every access to a confidential document at elevated risk (resolvers/documents/access_log.py).
                "confidential": AccessLevel.CONFIDENTIAL.value, "elevated": ELEVATED, "normal": NORMAL,
            },
        )
        return bool(result.rowcount)

    return await writer.run(tenant_id, insert)


async def issue_download_url(
    uow: UnitOfWork,
    *,
    document_id: uuid.UUID,
    user_id: uuid.UUID,
    api_key_id: uuid.UUID | None = None,
    readable: Any,
    writer: SideEffectWriter,
    meta: RequestMeta | None,
    storage: DocumentStorage,
    signer: Signer | None,
    public_url: str,
    lifetime: datetime.timedelta,
) -> IssuedUrl:
    """A URL serving version `document_id` to `user_id` until now + `lifetime` (see the module doc).

    `readable`: the caller's row condition on documents (None: every row); `signer`: the local
    backend's (None on S3)."""
    table: Table = Document.__table__
    query = select(table).where(table.c.id == document_id)
    if readable is not None:
        query = query.where(readable)
    row = (await uow.connection.execute(query)).one_or_none()
    tenant_id = uow.tenant_id

    async def refuse(error: DomainError, reason: str) -> DomainError:
        await log_access(
            writer, tenant_id, document_id=document_id, user_id=user_id, meta=meta,
            access_type=AccessType.URL_ISSUED, success=False, reason=reason,
        )
        return error

    if row is None:
        # Missing, or outside what the caller may read (then the attempt is logged against it).
        raise await refuse(NotFound("No document with this id.", field="id"), "not readable by the caller")
    refusal = refusal_of(row, storage.provider)
    if refusal is not None:
        raise await refuse(refusal, refusal.code.lower())

    if signer is None:
        url = await storage.presign_download(
            row.storage_key, lifetime=lifetime, filename=row.original_filename, content_type=row.mime_type
        )
        if url is None:
            raise RuntimeError(f"the {storage.provider} store gave no download URL")
        expires_at = datetime.datetime.now(datetime.UTC) + lifetime
    else:
        claims = {"t": str(tenant_id), "d": str(row.id), "n": row.version_number, "u": str(user_id)}
        if api_key_id is not None:  # the download acts with the key's grants, checked again when it is used
            claims["k"] = str(api_key_id)
        token, expires_at = signer.sign(DOWNLOAD_PURPOSE, claims, lifetime)
        url = f"{public_url.rstrip('/')}{DOWNLOAD_PATH}{token}"

    await log_access(
        writer, tenant_id, document_id=document_id, user_id=user_id, meta=meta,
        access_type=AccessType.URL_ISSUED, success=True,
        reason=f"{storage.provider} URL valid until {expires_at.isoformat(timespec='seconds')}",
    )
    confidential = row.access_level == AccessLevel.CONFIDENTIAL
    uow.record_event(
        "document.download_url.issued",
        entity_type="document",
        entity_id=row.id,
        description=f"download URL issued ({storage.provider}), valid until {expires_at.isoformat(timespec='seconds')}",
        details={
            "version_number": row.version_number, "storage": storage.provider, "expires_at": expires_at.isoformat()
        },
        risk=RiskLevel.HIGH if confidential else RiskLevel.LOW,
    )
    return IssuedUrl(url=url, expires_at=expires_at)
