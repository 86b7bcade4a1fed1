"""Uploads of document files: through the GraphQL multipart request (a new document, a new version)
and through a presigned upload completed by a mutation.

Each runs inside the mutation's unit of work. The bytes are spooled and checked (storage/ingest.py:
size while streaming, SHA-256/MD5, type from the bytes against the allow-list) before anything is
written; the object is stored, then the row inserted; if the insert fails the object is deleted.
A refused file leaves no row, no object and no temporary file.

Presigned uploads: `start_upload` signs a ticket (tenant, user, staging key, the announced size and
SHA-256, the project or the document a version is added to) and asks the backend for a way to send
the bytes to the staging key; `complete_upload` checks the ticket and the object (size, type, SHA-256;
deleting it when refused), moves that very object version to its key and inserts the row. A ticket
completes once: the staging object is gone afterwards.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from sqlalchemy import select

from models import Document, OpportunityProject
from models.errors import Conflict, Invalid
from models.idempotency import idempotent
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import validate
from resolvers.documents.mutations import DOCUMENT_FIELDS, _check_metadata, _check_tags
from storage import ingest
from storage.base import DocumentStorage, PresignedUpload
from storage.documents import add_document, add_version, new_document_key, new_version_key
from storage.errors import Refused
from storage.keys import object_key, staging_key
from storage.signing import BadSignature, Expired, Signer

__all__ = [
    "TICKET_PURPOSE",
    "FileLike",
    "Started",
    "Uploads",
    "complete_upload",
    "start_upload",
    "upload_document",
    "upload_version",
]

#: Signer purpose of the tickets that complete presigned uploads.
TICKET_PURPOSE = "documents.upload-ticket"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_CHUNK = 64 * 1024


class FileLike(Protocol):
    """What the multipart request hands over for a file (starlette's UploadFile)."""

    filename: str | None

    async def read(self, size: int = -1) -> bytes: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Uploads:
    """The storage and its limits, as the app configured them."""

    storage: DocumentStorage
    limits: ingest.Limits
    signer: Signer
    url_lifetime: datetime.timedelta


@dataclass(frozen=True, slots=True)
class Started:
    """A presigned upload: how to send the bytes, and the ticket that completes it."""

    upload: PresignedUpload
    ticket: str


async def _chunks(file: FileLike) -> AsyncIterator[bytes]:
    while chunk := await file.read(_CHUNK):
        yield chunk


def _file_name(file: FileLike, given: str | None = None) -> str:
    name = (given if given is not None else file.filename) or "upload"
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "upload"
    return name[:255]


async def _metadata(uow: UnitOfWork, values: Mapping[str, Any]) -> dict[str, Any]:
    """The document metadata an upload gives (checked as documentUpdate checks it)."""
    out = {k: v for k, v in values.items() if k in DOCUMENT_FIELDS and k != "name" and v is not None}
    await validate(uow, "documents", out)
    if "tags" in out:
        out["tags"] = _check_tags(out["tags"])
    if "custom_metadata" in out:
        _check_metadata(out["custom_metadata"])
    if out.get("category_id") is not None:
        from models import DocumentCategory

        await uow.find(DocumentCategory, out["category_id"], what="document category", field="category_id")
    return out


async def _insert_or_delete(storage: DocumentStorage, key: str, insert: Any) -> uuid.UUID:
    try:
        document: Document = await insert()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await storage.delete(key)
        raise
    return document.id


async def upload_document(
    uow: UnitOfWork, uploads: Uploads, file: FileLike, values: Mapping[str, Any], idempotency_key: str | None
) -> uuid.UUID:
    """A new document from a multipart upload (`values`: opportunity_project_id, name, metadata)."""
    project_id = values.get("opportunity_project_id")
    if project_id is not None:
        await uow.find(OpportunityProject, project_id, what="opportunity project", field="opportunity_project_id")
    metadata = await _metadata(uow, values)
    original = _file_name(file)
    name = str(values.get("name") or original).strip()
    if not name:
        raise Invalid("name must not be empty.", field="name")
    async with ingest.spool(_chunks(file), uploads.limits) as spooled:
        ingest.check(spooled)
        described = {
            **{k: v for k, v in values.items() if k != "file"},
            "file": {"name": original, "size": spooled.size, "sha256": spooled.sha256},
        }

        async def create() -> uuid.UUID:
            document_id = uuid.uuid4()
            key = new_document_key(uploads.storage, uow.tenant_id, project_id, document_id)
            stored = await ingest.put(uploads.storage, key, spooled)
            return await _insert_or_delete(
                uploads.storage,
                key,
                lambda: add_document(
                    uow, uploads.storage, stored, document_id=document_id, project_id=project_id, name=name,
                    original_filename=original, uploaded_by=_actor(uow), **metadata,
                ),
            )

        return await idempotent(uow, idempotency_key, mutation="documentUpload", values=described, create=create)


async def upload_version(
    uow: UnitOfWork, uploads: Uploads, file: FileLike, document_id: uuid.UUID, seen: Any, values: Mapping[str, Any]
) -> uuid.UUID:
    """A new current version of the document `document_id` (its current row, read at `seen`)."""
    current = await uow.lock(Document, document_id, updated_at=seen, what="document")
    _check_current(current, field="id")
    original = _file_name(file)
    name = values.get("name")
    await validate(uow, "documents", {} if name is None else {"name": name}, row=current)
    async with ingest.spool(_chunks(file), uploads.limits) as spooled:
        ingest.check(spooled)
        version_id = uuid.uuid4()
        key = new_version_key(uploads.storage, current, version_id)
        stored = await ingest.put(uploads.storage, key, spooled)
        return await _insert_or_delete(
            uploads.storage,
            key,
            lambda: add_version(
                uow, uploads.storage, stored, current=current, version_id=version_id, uploaded_by=_actor(uow),
                original_filename=original, name=name,
            ),
        )


def _check_current(document: Document, *, field: str) -> None:
    """Refused before any byte is stored: a version is added to the current, not deleted row."""
    if document.is_deleted:
        raise Invalid("The document is deleted: restore it before adding a version.", field=field)
    if not document.is_current_version:
        raise Conflict("A newer version of this document exists: add the version to the current one.", field=field)


def _actor(uow: UnitOfWork) -> uuid.UUID:
    if uow.actor_id is None:
        raise RuntimeError("an upload belongs to a user: this unit of work has no actor")
    return uow.actor_id


async def start_upload(uow: UnitOfWork, uploads: Uploads, values: Mapping[str, Any]) -> Started:
    """A presigned upload of `size_bytes` bytes whose SHA-256 is `sha256`, for a new document of the
    project `opportunity_project_id` (or none), or for a new version of `document_id`."""
    size = int(values["size_bytes"])
    if size < 1:
        raise Refused("EMPTY_FILE", "The file is empty.", field="sizeBytes")
    if size > uploads.limits.max_bytes:
        raise Refused(
            "TOO_LARGE", f"The file is larger than the limit of {uploads.limits.max_bytes} bytes.", field="sizeBytes"
        )
    sha256 = str(values["sha256"])
    if not _SHA256.match(sha256):
        raise Invalid("sha256 must be 64 hexadecimal digits.", field="sha256")
    document_id = values.get("document_id")
    project_id = values.get("opportunity_project_id")
    file_name = values.get("file_name")
    await validate(uow, "documents", {} if file_name is None else {"original_filename": file_name})
    if document_id is not None:
        current = await uow.find(Document, document_id, what="document", field="document_id")
        _check_current(current, field="document_id")
        project_id = current.opportunity_project_id
    elif project_id is not None:
        await uow.find(OpportunityProject, project_id, what="opportunity project", field="opportunity_project_id")
    upload_id = uuid.uuid4()
    key = uploads.storage.key_for(staging_key(uow.tenant_id, upload_id))
    claims = {
        "t": str(uow.tenant_id),
        "u": str(_actor(uow)),
        "i": str(upload_id),
        "k": key,
        "p": None if project_id is None else str(project_id),
        "d": None if document_id is None else str(document_id),
        "s": size,
        "h": sha256.lower(),
        "f": str(values.get("file_name") or "upload")[:255],
    }
    ticket, _ = uploads.signer.sign(TICKET_PURPOSE, claims, uploads.url_lifetime)
    upload = await uploads.storage.presign_upload(key, max_bytes=size, lifetime=uploads.url_lifetime)
    # Nothing is written yet, but who was let to send which file where is recorded (an event row):
    # about the document a version is for, or the id the new document will have.
    uow.record_event(
        "document.upload_started",
        entity_type="document",
        entity_id=document_id or upload_id,
        description="presigned upload started",
        details={"upload_id": str(upload_id), "size_bytes": size, "sha256": sha256.lower(),
                 "file_name": claims["f"], "expires_at": upload.expires_at.isoformat()},
    )
    return Started(upload=upload, ticket=ticket)


async def complete_upload(
    uow: UnitOfWork,
    uploads: Uploads,
    ticket: str,
    values: Mapping[str, Any],
    *,
    readable: Callable[[uuid.UUID], Awaitable[None]] | None = None,
) -> uuid.UUID:
    """The document (or version) of a presigned upload whose object now checks out (`readable`: the
    caller's check that the document a version is added to is still one they may read)."""
    try:
        claims = uploads.signer.verify(TICKET_PURPOSE, ticket)
    except Expired:
        raise Refused(
            "UPLOAD_EXPIRED", "The upload ticket has expired: start the upload again.", field="ticket"
        ) from None
    except BadSignature:
        raise Refused("UPLOAD_INVALID", "The upload ticket is not valid.", field="ticket") from None
    if claims.get("t") != str(uow.tenant_id) or claims.get("u") != str(_actor(uow)):
        # Another user's or tenant's upload is as unknown as one that never was.
        raise Refused("UPLOAD_NOT_FOUND", "No such upload of yours.", field="ticket")
    key, upload_id = str(claims["k"]), uuid.UUID(str(claims["i"]))
    project_id = uuid.UUID(claims["p"]) if claims.get("p") else None
    document_id = uuid.UUID(claims["d"]) if claims.get("d") else None
    done = await uow.session.scalar(
        select(Document.id).where(Document.tenant_id == uow.tenant_id, Document.id == upload_id)
    )
    if done is not None:
        return done  # completed already: the same document again
    metadata = await _metadata(uow, values)
    if document_id is not None and readable is not None:
        await readable(document_id)
    current = await uow.lock(Document, document_id, what="document") if document_id is not None else None
    if current is not None:
        _check_current(current, field="ticket")
        target = new_version_key(uploads.storage, current, upload_id)
    else:
        target = uploads.storage.key_for(object_key(uow.tenant_id, project_id, upload_id, upload_id))
    stored = await ingest.verify(
        uploads.storage, key, uploads.limits, sha256=str(claims["h"]), size=int(claims["s"]), target=target
    )
    original = str(claims["f"])
    if current is not None:
        return await _insert_or_delete(
            uploads.storage,
            target,
            lambda: add_version(
                uow, uploads.storage, stored, current=current, version_id=upload_id, uploaded_by=_actor(uow),
                original_filename=original, name=values.get("name"), **metadata,
            ),
        )
    name = str(values.get("name") or original).strip() or original
    return await _insert_or_delete(
        uploads.storage,
        target,
        lambda: add_document(
            uow, uploads.storage, stored, document_id=upload_id, project_id=project_id, name=name,
            original_filename=original, uploaded_by=_actor(uow), **metadata,
        ),
    )
