"""Mutations of the named readers of restricted and confidential documents (docs/enums.md, AccessLevel).

`documentReaderAdd` / `documentReaderRemove` need `document.readers:manage` (tenant-wide, or granted on the
document's project) and a caller who reads the document: a document hidden from the caller answers
NOT_FOUND, as a missing id does. Each is one audited transaction (schema/mutation_kit.py): an event row of
the document's trail names the user (resolvers/documents/readers.py). The payload returns the document.

The document mutations (documentUpdate, documentDelete, documentRestore) get the same readability check
here (`readable_first`), so a caller outside a restricted document's readers can neither change it nor
learn it exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import strawberry
from sqlalchemy import Table
from strawberry import relay

from auth.permissions import Permission
from models import Document as DocumentModel
from models.unit_of_work import UnitOfWork
from resolvers.documents import readers
from schema.documents import Document
from schema.mutation_kit import IDEMPOTENCY_KEY, Args, Entity, mutation, ref_id, ref_project, ref_row_id

__all__ = ["DocumentReaderAddInput", "DocumentReaderMutation", "DocumentReaderRemoveInput", "readable_first"]

_DOCUMENTS: Table = DocumentModel.__table__

Run = Callable[[UnitOfWork, Args[Any]], Awaitable[Any]]


def readable_first(run: Run, *, field: str = "id") -> Run:
    """`run` preceded by the readability check of its target document (NOT_FOUND when hidden)."""

    async def checked(uow: UnitOfWork, args: Args[Any]) -> Any:
        await readers.check_readable(uow, args.context.scope, args.id, field=field)
        return await run(uow, args)

    return checked


@strawberry.input(description="Name a user a reader of a document (it matters while the document is restricted or"
                  " confidential; a reader may be named before).")
class DocumentReaderAddInput:
    document_id: relay.GlobalID | None = ref_id("Document")
    document_row_id: uuid.UUID | None = ref_row_id("Document")
    user_id: relay.GlobalID | None = ref_id("User")
    user_row_id: uuid.UUID | None = ref_row_id("User")
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Remove a user from a document's named readers.")
class DocumentReaderRemoveInput:
    document_id: relay.GlobalID | None = ref_id("Document")
    document_row_id: uuid.UUID | None = ref_row_id("Document")
    user_id: relay.GlobalID | None = ref_id("User")
    user_row_id: uuid.UUID | None = ref_row_id("User")


async def _add(uow: UnitOfWork, args: Args[DocumentReaderAddInput]) -> uuid.UUID:
    document_id = args.values["document_id"]
    await readers.check_readable(uow, args.context.scope, document_id, field="document_id")
    return await readers.add_reader(uow, document_id, args.values["user_id"])


async def _remove(uow: UnitOfWork, args: Args[DocumentReaderRemoveInput]) -> uuid.UUID:
    document_id = args.values["document_id"]
    await readers.check_readable(uow, args.context.scope, document_id, field="document_id")
    return await readers.remove_reader(uow, document_id, args.values["user_id"])


@strawberry.type
class DocumentReaderMutation:
    document_reader_add = mutation(
        "documentReaderAdd",
        input=DocumentReaderAddInput,
        input_description="The document and the user to name as its reader.",
        permission=Permission.DOCUMENT_READERS_MANAGE,
        project=ref_project("document", _DOCUMENTS),
        run=_add,
        idempotent=True,
        returns=Entity(Document, "document, with the reader named"),
        description="Name a user a reader of a document the caller reads (restricted and confidential documents"
        " are read only by their named readers and their uploader).",
    )
    document_reader_remove = mutation(
        "documentReaderRemove",
        input=DocumentReaderRemoveInput,
        input_description="The document and the reader to remove.",
        permission=Permission.DOCUMENT_READERS_MANAGE,
        project=ref_project("document", _DOCUMENTS),
        run=_remove,
        returns=Entity(Document, "document, without the reader"),
        description="Remove a user from the named readers of a document the caller reads.",
    )
