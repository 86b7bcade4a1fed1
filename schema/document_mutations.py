"""Mutations of document metadata and document categories (uploads arrive with the documents issue).

Each field is one audited transaction (schema/mutation_kit.py); the domain functions are in
resolvers/documents/mutations.py. All need `document:write`: for a document, tenant-wide or granted
on its opportunity project; for categories (the tenant's taxonomy), tenant-wide. A document is
soft-deleted and restorable (the payload returns it, `isDeleted` true: clients use @deleteEdge);
a category is deleted for good (`deletedId`, for @deleteRecord), its sub-categories moving up to
its parent and its documents becoming uncategorized.
"""

from __future__ import annotations

import datetime
import uuid

import strawberry
from sqlalchemy import Table
from strawberry import relay
from strawberry.types.unset import UNSET

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import Document as DocumentModel
from models.enums import AccessLevel
from resolvers.documents import mutations
from schema.document_readers import readable_first
from schema.documents import Document, DocumentCategory
from schema.mutation_kit import (
    IDEMPOTENCY_KEY,
    UPDATED_AT,
    Deleted,
    Entity,
    creates,
    mutation,
    node_id,
    removes,
    target_project,
    updates,
)
from schema.mutation_kit import row_id as ref_row_id
from schema.scalars import JSON
from schema.writes import describe_like

__all__ = [
    "DocumentCategoryCreateInput",
    "DocumentCategoryDeleteInput",
    "DocumentCategoryUpdateInput",
    "DocumentDeleteInput",
    "DocumentMutation",
    "DocumentRestoreInput",
    "DocumentUpdateInput",
]

_DOCUMENTS: Table = DocumentModel.__table__

# A document mutation's run is preceded by the check that the caller reads the document (its access
# level included): a hidden one answers NOT_FOUND, as a missing id does (schema/document_readers.py).
_readable = readable_first


@strawberry.input(description="A new document category, at the top or under another category.")
class DocumentCategoryCreateInput:
    name: str = strawberry.field(description="1 to 100 characters, unique among the parent's sub-categories.")
    description: str | None = None
    parent_category_id: relay.GlobalID | None = node_id("DocumentCategory", required=False)
    parent_category_row_id: uuid.UUID | None = ref_row_id("DocumentCategory")
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to a category (not a system one): only the fields given change.")
class DocumentCategoryUpdateInput:
    id: relay.GlobalID | None = node_id("DocumentCategory")
    row_id: uuid.UUID | None = ref_row_id("DocumentCategory")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    name: str | None = UNSET
    description: str | None = UNSET
    parent_category_id: relay.GlobalID | None = node_id(
        "DocumentCategory",
        required=False,
        description="The new parent's global id (null: move to the top; never the category itself or one of its "
        "sub-categories); or give its rowId instead.",
    )
    parent_category_row_id: uuid.UUID | None = ref_row_id("DocumentCategory")


@strawberry.input(description="Delete a category (not a system one): its sub-categories move up to its parent, "
                  "its documents become uncategorized.")
class DocumentCategoryDeleteInput:
    id: relay.GlobalID | None = node_id("DocumentCategory")
    row_id: uuid.UUID | None = ref_row_id("DocumentCategory")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)


@strawberry.input(description="Changes to a document's metadata (not a deleted document): only the fields given "
                  "change; null clears a field that may be empty.")
class DocumentUpdateInput:
    id: relay.GlobalID | None = node_id("Document")
    row_id: uuid.UUID | None = ref_row_id("Document")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    name: str | None = UNSET
    category_id: relay.GlobalID | None = node_id(
        "DocumentCategory", required=False,
        description="The category's global id (null: uncategorized); or give its rowId instead.",
    )
    category_row_id: uuid.UUID | None = ref_row_id("DocumentCategory")
    document_type: str | None = UNSET
    access_level: AccessLevel | None = UNSET
    is_searchable: bool | None = UNSET
    tags: list[str] | None = strawberry.field(
        default=UNSET, description="The document's labels (replaced whole): at most 50, each at most 100 characters."
    )
    custom_metadata: JSON | None = strawberry.field(
        default=UNSET, description="Further attributes (a JSON object of at most 100 keys, replaced whole)."
    )


describe_like(DocumentCategoryCreateInput, DocumentCategory)
describe_like(DocumentCategoryUpdateInput, DocumentCategory)
describe_like(DocumentUpdateInput, Document)


@strawberry.input(description="Delete a document: it is kept (evidence), hidden from lists, and can be restored.")
class DocumentDeleteInput:
    id: relay.GlobalID | None = node_id("Document")
    row_id: uuid.UUID | None = ref_row_id("Document")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description="Recorded in the audit log (255 characters).")


@strawberry.input(description="Restore a deleted document.")
class DocumentRestoreInput:
    id: relay.GlobalID | None = node_id("Document")
    row_id: uuid.UUID | None = ref_row_id("Document")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)


@strawberry.type
class DocumentMutation:
    document_category_create = mutation(
        "documentCategoryCreate",
        input=DocumentCategoryCreateInput,
        input_description="The category's name, description and parent.",
        permission=Permission.DOCUMENT_WRITE,
        run=creates(mutations.create_category),
        idempotent=True,
        returns=Entity(DocumentCategory, "document category created"),
        description="Create a document category.",
    )
    document_category_update = mutation(
        "documentCategoryUpdate",
        input=DocumentCategoryUpdateInput,
        input_description="The category, the updatedAt read, and the fields to change.",
        permission=Permission.DOCUMENT_WRITE,
        run=updates(mutations.update_category),
        returns=Entity(DocumentCategory, "document category as changed"),
        description="Rename, describe or move a document category read at updatedAt (no cycles).",
    )
    document_category_delete = mutation(
        "documentCategoryDelete",
        input=DocumentCategoryDeleteInput,
        input_description="The category and the updatedAt read.",
        permission=Permission.DOCUMENT_WRITE,
        run=removes(mutations.delete_category),
        returns=Deleted(DocumentCategory, "document category"),
        description="Delete a document category read at updatedAt (its sub-categories and documents are kept).",
    )
    document_update = mutation(
        "documentUpdate",
        input=DocumentUpdateInput,
        input_description="The document, the updatedAt read, and the metadata to change.",
        permission=Permission.DOCUMENT_WRITE,
        project=target_project(_DOCUMENTS),
        run=_readable(updates(mutations.update_document)),
        returns=Entity(Document, "document as changed"),
        description="Change a document's metadata (name, category, type, access level, tags...) read at updatedAt.",
    )
    document_delete = mutation(
        "documentDelete",
        input=DocumentDeleteInput,
        input_description="The document and the updatedAt read.",
        permission=Permission.DOCUMENT_WRITE,
        project=target_project(_DOCUMENTS),
        run=_readable(removes(mutations.delete_document)),
        returns=Entity(Document, "document, now deleted (kept and restorable)"),
        description="Delete a document read at updatedAt: it is kept, hidden from lists, and can be restored.",
    )
    document_restore = mutation(
        "documentRestore",
        input=DocumentRestoreInput,
        input_description="The document and the updatedAt read.",
        permission=Permission.DOCUMENT_WRITE,
        project=target_project(_DOCUMENTS),
        run=_readable(removes(mutations.restore_document)),
        returns=Entity(Document, "document, restored"),
        description="Restore a deleted document read at updatedAt.",
    )
