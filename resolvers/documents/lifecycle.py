"""A document's legal hold: while held, the purge job (server/document_jobs.py) never deletes its file.

A hold is set on one version row (each version has its own file) with a reason, and by whom and
when; lifting it clears the three. Both are changes of the document, audited by the flush hook
(`document.legal_hold.set` / `document.legal_hold.lifted`), the reason also in the audit row.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func

from models.documents import Document
from models.errors import Invalid
from models.unit_of_work import UnitOfWork

__all__ = ["set_legal_hold"]


async def set_legal_hold(
    uow: UnitOfWork, document_id: uuid.UUID, seen: Any, *, hold: bool, reason: str | None
) -> uuid.UUID:
    """Hold (with a reason) or release the document read at `seen`."""
    document = await uow.lock(Document, document_id, updated_at=seen, what="document")
    if document.purged_at is not None:
        raise Invalid("The document's file was purged already: there is nothing left to hold.", field="id")
    if hold:
        if reason is None or not reason.strip():
            raise Invalid("A legal hold needs a reason (the matter or request it serves).", field="reason")
        if document.legal_hold:
            raise Invalid("The document is under a legal hold already.", field="hold")
        uow.assign(
            document,
            {"legal_hold": True, "legal_hold_reason": reason.strip(), "legal_hold_set_by": uow.actor_id},
        )
        document.legal_hold_set_at = func.now()
        uow.label(document, "document.legal_hold.set", "legal hold set: its file is not purged while held")
    else:
        if not document.legal_hold:
            raise Invalid("The document is not under a legal hold.", field="hold")
        uow.assign(
            document,
            {"legal_hold": False, "legal_hold_reason": None, "legal_hold_set_by": None, "legal_hold_set_at": None},
        )
        uow.label(document, "document.legal_hold.lifted", "legal hold lifted")
    await uow.flush()
    return document.id
