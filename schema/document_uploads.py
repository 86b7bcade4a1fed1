"""Mutations that bring document files in (docs/api/documents.md, "Uploads").

- `documentUpload` / `documentVersionUpload`: the file travels in the request, as the GraphQL
  multipart request spec describes (an `Upload` variable). Such a request must carry a
  `GraphQL-Require-Preflight` header (a browser cannot send it cross-site without a CORS preflight);
  its size is limited before and while it is read (server/storage_routes.py).
- `documentUploadStart` / `documentUploadComplete`: for large files, the client sends the bytes
  itself to a presigned target (S3: a presigned POST limited to the announced size; local: a signed
  URL of this server), then completes the upload with the ticket; the object is checked (size, type
  from its bytes, SHA-256) and deleted when refused.

All need `document:write` (tenant-wide, or granted on the project). The domain functions are in
resolvers/documents/uploads.py; storage in storage/.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import strawberry
from sqlalchemy import Table
from strawberry import relay
from strawberry.extensions.field_extension import FieldExtension
from strawberry.file_uploads import Upload

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import Document as DocumentModel
from models import OpportunityProject as ProjectModel
from models.enums import AccessLevel
from models.unit_of_work import UnitOfWork
from resolvers.documents import readers, uploads
from resolvers.opportunities.mutations import project_id_of
from schema.context import GraphQLContext, Info
from schema.documents import Document
from schema.mutation_kit import (
    IDEMPOTENCY_KEY,
    UPDATED_AT,
    Args,
    Done,
    Entity,
    Extra,
    mutation,
    node_id,
    ref_project,
    resolve_ref_leniently,
    target_project,
)
from schema.mutation_kit import row_id as ref_row_id
from schema.scalars import JSON
from storage.signing import BadSignature, Expired

__all__ = [
    "DocumentUploadCompleteInput",
    "DocumentUploadInput",
    "DocumentUploadMutation",
    "DocumentUploadStartInput",
    "DocumentUploadTarget",
    "DocumentVersionUploadInput",
]

_DOCUMENTS: Table = DocumentModel.__table__
_PROJECTS: Table = ProjectModel.__table__

_FILE = (
    "The file, as a variable of the GraphQL multipart request (the request needs a GraphQL-Require-Preflight header)."
)
_NAME = "The document's name (1 to 255 characters); default: the file's name."


class CloseUploads(FieldExtension):
    """Closes the request's file (its spooled temporary file) when the field is done, whatever
    happened: also when the permission check refused the call before the resolver ran."""

    def resolve(self, next_: Any, source: Any, info: Any, **kwargs: Any) -> Any:  # pragma: no cover - async only
        raise NotImplementedError("upload mutations resolve asynchronously")

    async def resolve_async(self, next_: Any, source: Any, info: Any, **kwargs: Any) -> Any:
        try:
            return await next_(source, info, **kwargs)
        finally:
            file = getattr(kwargs.get("input"), "file", None)
            if file is not None and hasattr(file, "close"):
                await file.close()


def _uploads(info: Info) -> uploads.Uploads:
    found: uploads.Uploads = info.context.request.app.state.uploads
    return found


@strawberry.input(description="A new document from a file sent with the request.")
class DocumentUploadInput:
    file: Upload = strawberry.field(description=_FILE)
    opportunity_project_id: relay.GlobalID | None = node_id(
        "OpportunityProject", required=False,
        description="The project the document belongs to (none: a tenant document); or give its rowId instead.",
    )
    opportunity_project_row_id: uuid.UUID | None = ref_row_id("OpportunityProject")
    name: str | None = strawberry.field(default=None, description=_NAME)
    category_id: relay.GlobalID | None = node_id(
        "DocumentCategory", required=False, description="The category's global id; or give its rowId instead."
    )
    category_row_id: uuid.UUID | None = ref_row_id("DocumentCategory")
    document_type: str | None = strawberry.field(default=None, description="The kind of document (e.g. RFP).")
    access_level: AccessLevel | None = strawberry.field(
        default=None, description="Who may read it (default: project_team)."
    )
    is_searchable: bool | None = strawberry.field(default=None, description="Whether search finds it (default true).")
    tags: list[str] | None = strawberry.field(
        default=None, description="The document's labels: at most 50, each at most 100 characters."
    )
    custom_metadata: JSON | None = strawberry.field(
        default=None, description="Further attributes (a JSON object of at most 100 keys)."
    )
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="A new version of a document from a file sent with the request.")
class DocumentVersionUploadInput:
    id: relay.GlobalID | None = node_id("Document", description="The document's current version; or give its rowId.")
    row_id: uuid.UUID | None = ref_row_id("Document")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    file: Upload = strawberry.field(description=_FILE)
    name: str | None = strawberry.field(default=None, description="The new version's name; default: the document's.")


@strawberry.input(description="Announce a file the client will send itself to a presigned target.")
class DocumentUploadStartInput:
    opportunity_project_id: relay.GlobalID | None = node_id(
        "OpportunityProject", required=False,
        description="For a new document: its project (none: a tenant document); or give its rowId instead.",
    )
    opportunity_project_row_id: uuid.UUID | None = ref_row_id("OpportunityProject")
    document_id: relay.GlobalID | None = node_id(
        "Document", required=False,
        description="For a new version: the document's current version; or give its rowId instead.",
    )
    document_row_id: uuid.UUID | None = ref_row_id("Document")
    file_name: str = strawberry.field(description="The file's name (kept as the original file name; never a key).")
    size_bytes: int = strawberry.field(description="The file's exact size in bytes (at most the upload limit).")
    sha256: str = strawberry.field(description="The file's SHA-256, 64 hexadecimal digits.")


@strawberry.input(description="Complete a presigned upload: the object sent is checked, then becomes the document.")
class DocumentUploadCompleteInput:
    ticket: str = strawberry.field(description="The ticket documentUploadStart returned.")
    name: str | None = strawberry.field(default=None, description=_NAME)
    category_id: relay.GlobalID | None = node_id(
        "DocumentCategory", required=False, description="The category's global id; or give its rowId instead."
    )
    category_row_id: uuid.UUID | None = ref_row_id("DocumentCategory")
    document_type: str | None = strawberry.field(default=None, description="The kind of document (e.g. RFP).")
    access_level: AccessLevel | None = strawberry.field(
        default=None, description="Who may read it (default: project_team, or the document's for a version)."
    )
    is_searchable: bool | None = strawberry.field(default=None, description="Whether search finds it.")
    tags: list[str] | None = strawberry.field(
        default=None, description="The document's labels: at most 50, each at most 100 characters."
    )
    custom_metadata: JSON | None = strawberry.field(
        default=None, description="Further attributes (a JSON object of at most 100 keys)."
    )


@strawberry.type(description="Where and how the client sends the bytes of a presigned upload.")
class DocumentUploadTarget:
    method: str = strawberry.field(description="POST (S3: a form, fields first, the file in the part `file`) or PUT.")
    url: str = strawberry.field(description="Where to send it.")
    fields: JSON = strawberry.field(description="The form fields to send before the file (S3's POST policy).")
    headers: JSON = strawberry.field(
        description="The headers to send (the local server's PUT needs its preflight one)."
    )
    expires_at: datetime.datetime = strawberry.field(description="Until when the target takes the file.")


async def _upload(uow: UnitOfWork, args: Args[DocumentUploadInput]) -> uuid.UUID:
    file: uploads.FileLike = args.input.file  # type: ignore[assignment] # starlette's UploadFile
    try:
        return await uploads.upload_document(uow, _uploads(args.info), file, args.values, args.input.idempotency_key)
    finally:
        await file.close()  # its spooled temporary file goes now, not when collected


async def _version(uow: UnitOfWork, args: Args[DocumentVersionUploadInput]) -> Done:
    assert args.id is not None
    await readers.check_readable(uow, args.context.scope, args.id)  # a hidden document is NOT_FOUND
    file: uploads.FileLike = args.input.file  # type: ignore[assignment] # starlette's UploadFile
    try:
        version = await uploads.upload_version(uow, _uploads(args.info), file, args.id, args.updated_at, args.values)
    finally:
        await file.close()
    return Done(id=args.id, extra={"version_row_id": version})


async def _start(uow: UnitOfWork, args: Args[DocumentUploadStartInput]) -> Done:
    if args.values.get("document_id") is not None:
        await readers.check_readable(uow, args.context.scope, args.values["document_id"], field="document_id")
    started = await uploads.start_upload(uow, _uploads(args.info), args.values)
    target = DocumentUploadTarget(
        method=started.upload.method,
        url=started.upload.url,
        fields=JSON(started.upload.fields),
        headers=JSON(started.upload.headers),
        expires_at=started.upload.expires_at,
    )
    return Done(id=args.values.get("document_id"), extra={"upload": target, "ticket": started.ticket})


async def _complete(uow: UnitOfWork, args: Args[DocumentUploadCompleteInput]) -> uuid.UUID:
    values = {k: v for k, v in args.values.items() if k != "ticket"}
    scope = args.context.scope

    async def readable(document_id: uuid.UUID) -> None:
        await readers.check_readable(uow, scope, document_id, field="ticket")

    return await uploads.complete_upload(uow, _uploads(args.info), args.input.ticket, values, readable=readable)


async def _start_project(context: GraphQLContext, value: Any) -> uuid.UUID | None:
    """The project a presigned upload goes to: the new version's document's, or the one named."""
    document = resolve_ref_leniently(value, "document")
    if document is not None:
        return await project_id_of(context.loaders.db, _DOCUMENTS, document)
    project = resolve_ref_leniently(value, "opportunity_project")
    return None if project is None else await project_id_of(context.loaders.db, _PROJECTS, project)


async def _ticket_project(context: GraphQLContext, value: Any) -> uuid.UUID | None:
    """The project named in a (genuine) ticket; None otherwise (then tenant-wide permission is needed)."""
    signer = context.request.app.state.uploads.signer
    try:
        claims = signer.verify(uploads.TICKET_PURPOSE, value.ticket)
    except (BadSignature, Expired):
        return None
    project = claims.get("p")
    return uuid.UUID(project) if isinstance(project, str) else None


@strawberry.type
class DocumentUploadMutation:
    document_upload = mutation(
        "documentUpload",
        input=DocumentUploadInput,
        input_description="The file and the new document's project and metadata.",
        permission=Permission.DOCUMENT_WRITE,
        project=ref_project("opportunity_project", _PROJECTS),
        run=_upload,
        extensions=[CloseUploads()],
        returns=Entity(Document, "document uploaded (quarantined until the malware scan finds it clean)"),
        description="Upload a file as a new document (multipart request with a GraphQL-Require-Preflight header; "
        "the type is read from the bytes; accepted: PDF, DOCX, XLSX, PPTX, PNG, JPEG, GIF, plain text).",
    )
    document_version_upload = mutation(
        "documentVersionUpload",
        input=DocumentVersionUploadInput,
        input_description="The document's current version, the updatedAt read, and the file.",
        permission=Permission.DOCUMENT_WRITE,
        project=target_project(_DOCUMENTS),
        run=_version,
        extensions=[CloseUploads()],
        returns=Entity(Document, "version the new one was added to (as changed: no longer the current one)"),
        extra={"version_row_id": Extra(uuid.UUID | None, "The rowId of the new version, now the current one.")},
        description="Upload a file as the new current version of a document read at updatedAt (multipart request "
        "with a GraphQL-Require-Preflight header).",
    )
    document_upload_start = mutation(
        "documentUploadStart",
        input=DocumentUploadStartInput,
        input_description="The project (or the document a version is for) and the file's name, size and SHA-256.",
        permission=Permission.DOCUMENT_WRITE,
        project=("input", _start_project),
        run=_start,
        returns=Entity(Document, "document a new version is being added to (null for a new document)"),
        extra={
            "upload": Extra(DocumentUploadTarget | None, "Where to send the bytes, until `expiresAt`."),
            "ticket": Extra(str | None, "Give it to documentUploadComplete once the bytes are sent."),
        },
        description="Start a presigned upload of a large file: the client sends the bytes itself, then calls "
        "documentUploadComplete.",
    )
    document_upload_complete = mutation(
        "documentUploadComplete",
        input=DocumentUploadCompleteInput,
        input_description="The ticket of documentUploadStart and the document's metadata.",
        permission=Permission.DOCUMENT_WRITE,
        project=("input", _ticket_project),
        run=_complete,
        returns=Entity(
            Document, "document (or new version) uploaded, quarantined until the malware scan finds it clean"
        ),
        description="Complete a presigned upload: the object is checked (size, type from its bytes, SHA-256) and "
        "deleted when refused; completing again returns the same document.",
    )
