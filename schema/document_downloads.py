"""Mutations of a document's file lifecycle: a short-lived download URL, and the legal hold.

`documentDownloadUrl` is a mutation because issuing a URL is an access (logged, audited) that a GET
must never cause; resolvers/documents/downloads.py says what it checks and logs. `documentLegalHoldSet`
puts a document under a legal hold (its file is then never purged, `gwm jobs run`) or lifts one;
it needs `document:legal_hold`.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import strawberry
from sqlalchemy import Table
from strawberry import relay

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import Document as DocumentModel
from models.unit_of_work import UnitOfWork
from resolvers.documents import downloads, lifecycle
from schema.documents import Document
from schema.mutation_kit import UPDATED_AT, Args, Done, Entity, Extra, mutation, node_id, target_project
from schema.mutation_kit import row_id as ref_row_id
from storage.local import LocalStorage

__all__ = ["DocumentDownloadMutation", "DocumentDownloadUrlInput", "DocumentLegalHoldSetInput"]

_DOCUMENTS: Table = DocumentModel.__table__


@strawberry.input(description="The document version to download.")
class DocumentDownloadUrlInput:
    id: relay.GlobalID | None = node_id("Document")
    row_id: uuid.UUID | None = ref_row_id("Document")


@strawberry.input(description="Put a document under a legal hold, or lift it.")
class DocumentLegalHoldSetInput:
    id: relay.GlobalID | None = node_id("Document")
    row_id: uuid.UUID | None = ref_row_id("Document")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    hold: bool = strawberry.field(
        description="True: held (its file is never purged while held); false: the hold is lifted."
    )
    reason: str | None = strawberry.field(
        default=None,
        description="Why (the matter or request): required to set a hold; recorded on the document and in the "
        "audit log (255 characters).",
    )


async def _issue(uow: UnitOfWork, args: Args[DocumentDownloadUrlInput]) -> Done:
    assert args.id is not None
    context = args.context
    state: Any = context.request.app.state
    storage = downloads.app_storage(state)
    settings = state.settings
    issued = await downloads.issue_download_url(
        uow,
        document_id=args.id,
        user_id=context.principal.user_id,
        api_key_id=context.principal.api_key_id,
        readable=context.scope.condition(_DOCUMENTS),
        writer=context.auth.writer,
        meta=context.meta,
        storage=storage,
        signer=storage.signer if isinstance(storage, LocalStorage) else None,
        public_url=settings.public_url,
        lifetime=datetime.timedelta(seconds=settings.download_url_seconds),
    )
    return Done(id=args.id, extra={"url": issued.url, "expires_at": issued.expires_at})


async def _legal_hold(uow: UnitOfWork, args: Args[DocumentLegalHoldSetInput]) -> uuid.UUID:
    assert args.id is not None
    return await lifecycle.set_legal_hold(
        uow, args.id, args.updated_at, hold=args.input.hold, reason=args.input.reason
    )


@strawberry.type
class DocumentDownloadMutation:
    document_download_url = mutation(
        "documentDownloadUrl",
        input=DocumentDownloadUrlInput,
        input_description="The document version.",
        permission=Permission.DOCUMENT_FILE_READ,
        project=target_project(_DOCUMENTS),
        run=_issue,
        returns=Entity(Document, "document the URL serves"),
        extra={
            "url": Extra(
                str | None,
                "Where to GET the file, as an attachment, until expiresAt (on S3 a presigned URL; otherwise this "
                "server's signed link, valid for the caller only). Null on errors.",
            ),
            "expires_at": Extra(datetime.datetime | None, "When the URL stops working. Null on errors."),
        },
        description="Issue a short-lived URL to download a document version's file; each issuance and each "
        "refusal is written to the document's access log. DOCUMENT_QUARANTINED until the malware scan finds the "
        "file clean; DOCUMENT_INFECTED, DOCUMENT_DELETED, NO_FILE otherwise; NOT_FOUND for a document the "
        "caller cannot read.",
    )
    document_legal_hold_set = mutation(
        "documentLegalHoldSet",
        input=DocumentLegalHoldSetInput,
        input_description="The document, the updatedAt read, and whether it is held.",
        permission=Permission.DOCUMENT_LEGAL_HOLD,
        project=target_project(_DOCUMENTS),
        run=_legal_hold,
        returns=Entity(Document, "document, with its hold as set"),
        description="Put a document under a legal hold (its file is then never purged, even once deleted) or "
        "lift the hold. VALIDATION when a hold is set without a reason or the file was purged already.",
    )
