"""The documents row of a stored object: a new document, or a new version of one.

Both run inside a unit of work (a GraphQL mutation's, or `system_unit` for the sync worker), so the
row is audited like any other write. A version chain is the first version's id: later versions name
it as `parent_document_id`, number themselves one past the highest, and take `is_current_version`
from the row that had it. The current row is locked first (FOR UPDATE), so two concurrent new
versions queue; the unique index ux_documents_current_version (migration 0013) refuses a second
current row whatever the path.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from models import Document, DocumentReader
from models.enums import AccessLevel, ProcessingStatus
from models.errors import Conflict, Invalid
from models.unit_of_work import UnitOfWork
from storage.base import DocumentStorage, StoredObject
from storage.keys import object_key

__all__ = ["add_document", "add_version", "chain_of", "new_document_key", "new_version_key"]

# A new version's named readers are copied from the version it is made from (models/document_readers.py).

# Metadata a caller may give with an upload (the file's own columns come from the stored object).
_METADATA = frozenset(
    {
        "category_id",
        "document_type",
        "access_level",
        "is_searchable",
        "tags",
        "custom_metadata",
        "document_source",
        "external_document_id",
        "external_sync_timestamp",
        "is_synced_from_external",
        "external_data_change_id",
    }
)


def chain_of(document: Document) -> uuid.UUID:
    """The id of the version chain a row belongs to (the first version's id)."""
    return document.parent_document_id or document.id


def new_document_key(
    storage: DocumentStorage, tenant_id: uuid.UUID, project_id: uuid.UUID | None, document_id: uuid.UUID
) -> str:
    """The full key of a new document's first version (its chain is its own id)."""
    return storage.key_for(object_key(tenant_id, project_id, document_id, document_id))


def new_version_key(storage: DocumentStorage, document: Document, version_id: uuid.UUID) -> str:
    """The full key of a new version `version_id` of `document`'s chain."""
    project = document.opportunity_project_id
    return storage.key_for(object_key(document.tenant_id, project, chain_of(document), version_id))


def _file_columns(storage: DocumentStorage, stored: StoredObject, original_filename: str) -> dict[str, Any]:
    return {
        "original_filename": original_filename[:255],
        "file_extension": stored.extension,
        "mime_type": stored.mime_type,
        "file_size_bytes": stored.size,
        "storage_provider": storage.provider,
        "storage_region": storage.region,
        "storage_bucket": storage.bucket,
        "storage_key": stored.key,
        "storage_url": None,
        "file_hash_md5": stored.md5,
        "file_hash_sha256": stored.sha256,
        "is_encrypted": storage.kms_key_id is not None,
        "encryption_key_id": storage.kms_key_id,
        "processing_status": ProcessingStatus.PENDING.value,
    }


def _metadata(values: dict[str, Any]) -> dict[str, Any]:
    unknown = set(values) - _METADATA
    if unknown:
        raise ValueError(f"not document metadata: {sorted(unknown)}")
    out = {k: v for k, v in values.items() if v is not None}
    if "access_level" in out:
        out["access_level"] = AccessLevel(out["access_level"]).value
    return out


async def add_document(
    uow: UnitOfWork,
    storage: DocumentStorage,
    stored: StoredObject,
    *,
    document_id: uuid.UUID,
    project_id: uuid.UUID | None,
    name: str,
    original_filename: str,
    uploaded_by: uuid.UUID,
    **metadata: Any,
) -> Document:
    """Insert the first version of a new document for `stored` (its key from new_document_key)."""
    if not name.strip():
        raise Invalid("name must not be empty.", field="name")
    document = Document(id=document_id, tenant_id=uow.tenant_id)
    uow.assign(
        document,
        {
            "opportunity_project_id": project_id,
            "name": name.strip()[:255],
            **_file_columns(storage, stored, original_filename),
            **_metadata(metadata),
            "version_number": 1,
            "is_current_version": True,
            "parent_document_id": None,
            "uploaded_by": uploaded_by,
        },
    )
    uow.add(document)
    uow.label(document, "document.uploaded", "document uploaded")
    await uow.flush()
    return document


async def add_version(
    uow: UnitOfWork,
    storage: DocumentStorage,
    stored: StoredObject,
    *,
    current: Document,
    version_id: uuid.UUID,
    uploaded_by: uuid.UUID,
    original_filename: str,
    name: str | None = None,
    **metadata: Any,
) -> Document:
    """Insert a new current version of `current`'s chain for `stored` (its key from new_version_key).

    `current` must be the chain's current row, locked by the caller (uow.lock, which also checks the
    updatedAt the client read); its metadata carries over unless given."""
    if current.is_deleted:
        raise Invalid("The document is deleted: restore it before adding a version.", field="id")
    if not current.is_current_version:
        raise Conflict("A newer version of this document exists: add the version to the current one.", field="id")
    chain = chain_of(current)
    highest = await uow.session.scalar(
        select(func.max(Document.version_number)).where(
            Document.tenant_id == uow.tenant_id,
            func.coalesce(Document.parent_document_id, Document.id) == chain,
        )
    )
    uow.assign(current, {"is_current_version": False})
    await uow.flush()
    carried = {
        "category_id": current.category_id,
        "document_type": current.document_type,
        "access_level": current.access_level,
        "is_searchable": current.is_searchable,
        "tags": list(current.tags),
        "custom_metadata": dict(current.custom_metadata),
        "document_source": current.document_source,
    }
    carried.update(_metadata(metadata))
    document = Document(id=version_id, tenant_id=uow.tenant_id)
    uow.assign(
        document,
        {
            "opportunity_project_id": current.opportunity_project_id,
            "name": (name or current.name).strip()[:255],
            **_file_columns(storage, stored, original_filename),
            **carried,
            "version_number": (highest or current.version_number) + 1,
            "is_current_version": True,
            "parent_document_id": chain,
            "uploaded_by": uploaded_by,
        },
    )
    uow.add(document)
    uow.label(document, "document.version_uploaded", f"version {(highest or 1) + 1} uploaded")
    await uow.flush()
    await _copy_readers(uow, current, document, uploaded_by)
    return document


async def _copy_readers(uow: UnitOfWork, source: Document, target: Document, actor: uuid.UUID) -> None:
    """The named readers of the version a new one is made from read the new one too (an event row
    of the new version's trail names them; the readers table is not audited by the flush hook)."""
    readers = list(
        await uow.session.scalars(
            select(DocumentReader.user_id)
            .where(DocumentReader.tenant_id == uow.tenant_id, DocumentReader.document_id == source.id)
            .order_by(DocumentReader.user_id)
        )
    )
    if not readers:
        return
    for user_id in readers:
        uow.add(DocumentReader(tenant_id=uow.tenant_id, document_id=target.id, user_id=user_id, added_by=actor))
    await uow.flush()
    uow.record_event(
        "document.readers_copied",
        entity_type="document",
        entity_id=target.id,
        description="named readers carried over to the new version",
        details={"from_version": str(source.id), "user_ids": [str(u) for u in readers]},
    )
