"""The named readers of restricted and confidential documents: add and remove (docs/enums.md, AccessLevel).

A named reader reads a `restricted` or `confidential` document (with `document:read` on its project or
tenant-wide); a reader may be named while the document is still open, so that restricting it leaves no
window without readers. Only a caller who reads the document may change its readers (the mutations check
that first: a document the caller cannot read answers NOT_FOUND, as for a missing id), so nobody names
himself into a document hidden from him. Each change is an event row of the document's trail
(`document.reader_added` / `document.reader_removed`, the user in its values) in the same transaction;
the document_readers table is not audited by the flush hook (models/audit_trail.py NOT_AUDITED).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from models import Document, DocumentReader, User
from models.enums import RiskLevel
from models.errors import Conflict, Invalid, NotFound
from models.unit_of_work import UnitOfWork
from resolvers.common.loaders import readable
from resolvers.common.scope import ReadScope
from resolvers.documents.loaders import DOCUMENT_ROWS

__all__ = ["READER_ADDED", "READER_REMOVED", "add_reader", "check_readable", "remove_reader"]

READER_ADDED = "document.reader_added"
READER_REMOVED = "document.reader_removed"


async def check_readable(
    uow: UnitOfWork, scope: ReadScope, document_id: uuid.UUID | None, *, field: str = "id"
) -> None:
    """NotFound unless the caller may read the document (its row rule, access level included); read on the
    unit of work's own connection, in its transaction."""
    found = None
    if document_id is not None:
        stmt = readable(select(DOCUMENT_ROWS.c.id), DOCUMENT_ROWS, scope).where(DOCUMENT_ROWS.c.id == document_id)
        found = (await uow.connection.execute(stmt)).scalar()
    if found is None:
        raise NotFound("No such document.", field=field)


async def _document(uow: UnitOfWork, document_id: uuid.UUID) -> Document:
    document: Document = await uow.lock(Document, document_id, what="document", field="document_id")
    if document.is_deleted:
        raise Invalid("The document is deleted: restore it before changing its readers.", field="document_id")
    return document


async def _reader(uow: UnitOfWork, document_id: uuid.UUID, user_id: uuid.UUID) -> DocumentReader | None:
    found: DocumentReader | None = await uow.session.scalar(
        select(DocumentReader).where(
            DocumentReader.tenant_id == uow.tenant_id,
            DocumentReader.document_id == document_id,
            DocumentReader.user_id == user_id,
        )
    )
    return found


async def add_reader(uow: UnitOfWork, document_id: uuid.UUID, user_id: uuid.UUID) -> uuid.UUID:
    """Name `user_id` a reader of the document; returns the document's id."""
    document = await _document(uow, document_id)
    user = await uow.find(User, user_id, what="user", field="user_id")
    if user.is_system or not user.is_active:
        raise Invalid("Only an active user can be named a reader.", field="user_id")
    if await _reader(uow, document.id, user.id) is not None:
        raise Conflict("The user is already a named reader of the document.", field="user_id")
    actor = uow.actor_id
    assert actor is not None, "a caller's unit of work names its actor"
    uow.add(DocumentReader(tenant_id=uow.tenant_id, document_id=document.id, user_id=user.id, added_by=actor))
    await uow.flush()
    uow.record_event(
        READER_ADDED, entity_type="document", entity_id=document.id,
        description="named reader added", details={"user_id": str(user.id), "access_level": document.access_level},
        risk=RiskLevel.MEDIUM,
    )
    return document.id


async def remove_reader(uow: UnitOfWork, document_id: uuid.UUID, user_id: uuid.UUID) -> uuid.UUID:
    """Remove `user_id` from the document's named readers; returns the document's id."""
    document = await _document(uow, document_id)
    reader = await _reader(uow, document.id, user_id)
    if reader is None:
        raise NotFound("The user is not a named reader of the document.", field="user_id")
    await uow.delete(reader)
    await uow.flush()
    uow.record_event(
        READER_REMOVED, entity_type="document", entity_id=document.id,
        description="named reader removed", details={"user_id": str(user_id), "access_level": document.access_level},
        risk=RiskLevel.MEDIUM,
    )
    return document.id
