"""Documents, categories, associations and access logs; full-text search.

- `Document`: one stored file (one version of it). Every column is a field but the generated
  `search_vector`. `extractedText` can be megabytes: lists never read it; the field loads it by
  its own batched statement when selected, optionally cut with `maxLength`
  (resolvers/documents/loaders.py). `searchRank` and `searchSnippet` are set only on the rows of
  `documents(search:)`.
- Deleted documents (`isDeleted`) are left out of every document list (the root list unless its
  filter's `includeDeleted` is true, and the nested `documents` and `childVersions` lists); `node`,
  `parentDocument` and the to-one fields of associations and access logs still find them.
- `DocumentAssociation.target` and the reverse `documentAssociations` / `activities` lists are
  polymorphic: (entity_type, entity_id) of the allowed set `ACTIVITY_ENTITY_TYPES`.
"""

from __future__ import annotations

import datetime
import uuid
from enum import Enum
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from sqlalchemy import Table
from strawberry import relay

import models.enums as enums
import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from models import DocumentAccessLog as AccessLogModel
from models import DocumentAssociation as AssociationModel
from models import DocumentCategory as CategoryModel
from models import ExternalDataChange as ExternalDataChangeModel
from models import OpportunityProject as ProjectModel
from models import User as UserModel
from models.enums import ACTIVITY_ENTITY_TYPES, AccessLevel, ProcessingStatus, ScanStatus
from resolvers.common.filters import FilterError
from resolvers.common.pagination import PaginationError
from resolvers.documents.access_log import ContentRead, log_content_read
from resolvers.documents.loaders import DOCUMENT_ROWS, extracted_text_by_document
from resolvers.documents.queries import list_documents, snippet_html
from schema.activities import activities_of
from schema.audit import EntityType
from schema.context import Info
from schema.entities import history, targets
from schema.fields import enum_column, inet_column
from schema.filters import BooleanFilter, DateTimeFilter, EnumFilter, StringFilter, UUIDFilter
from schema.node import EntityNode, TenantOwned
from schema.pagination import (
    FILTER_DESCRIPTION,
    ORDER_BY_DESCRIPTION,
    PAGE_SIZES,
    After,
    Before,
    Connection,
    First,
    Last,
    OrderDirection,
    describe_list_inputs,
)
from schema.relations import BAD_INPUT, bad_input, page_args, polymorphic, root_list, to_many, to_one
from schema.scalars import JSON, BigInt

__all__ = [
    "AccessLevel",
    "Document",
    "DocumentAccessLog",
    "DocumentAssociation",
    "DocumentCategory",
    "DocumentCategoryFilter",
    "DocumentCategoryOrder",
    "DocumentCategoryOrderField",
    "DocumentFilter",
    "DocumentOrder",
    "DocumentOrderField",
    "DocumentsQuery",
    "ProcessingStatus",
    "document_associations_of",
    "document_list",
]

_CATEGORIES: Table = CategoryModel.__table__
_ASSOCIATIONS: Table = AssociationModel.__table__
_ACCESS_LOGS: Table = AccessLogModel.__table__
_PROJECTS: Table = ProjectModel.__table__
_USERS: Table = UserModel.__table__
_CHANGES: Table = ExternalDataChangeModel.__table__
USER = ("User", "schema.identity")
PROJECT = ("OpportunityProject", "schema.opportunities")
DOCUMENT = ("Document", "schema.documents")
CATEGORY = ("DocumentCategory", "schema.documents")
ASSOCIATION = ("DocumentAssociation", "schema.documents")
ACCESS_LOG = ("DocumentAccessLog", "schema.documents")


_CHECKSUM = "A checksum of the file's content, to verify a download (not a secret)."
_NOT_DELETED = "is_deleted IS FALSE"  # where_key: no "=", so it names no column value to generate


def _not_deleted(table: Table) -> list[Any]:
    return [table.c.is_deleted.is_(False)]


def document_list(fk: str, *, description: str) -> Any:
    """A `documents` connection on another type: the documents whose `fk` is the parent's id,
    newest first, deleted ones left out (e.g. `OpportunityProject.documents`, `User.documentsUploaded`)."""
    return to_many(
        DOCUMENT, DOCUMENT_ROWS, fk, order=(("created_at", True),),
        where=_not_deleted, where_key=_NOT_DELETED, description=description,
    )


def document_associations_of(entity_type: enums.EntityType, *, description: str | None = None) -> Any:
    """`documentAssociations` on a type documents can be linked to: the associations whose target is
    the parent (entity_type, entity_id), oldest first."""
    return to_many(
        ASSOCIATION, _ASSOCIATIONS, "entity_id", order=(("created_at", False),),
        where=lambda t: [t.c.entity_type == entity_type.value], where_key=f"entity_type={entity_type.value}",
        description=description or "Links of documents to this record, oldest first.",
    )


def _search_value(node: Any, key: str) -> Any:
    return node._row._mapping.get(key)


#: Why the storage location fields are deprecated (they are guarded by `document.storage:read`).
_INTERNAL = "Internal: where the object is stored is not part of the API (downloads go through a signed URL)."


async def _content_read(info: Info, access_type: str, document: Any) -> None:
    """Log a read of the document's content (resolvers/documents/access_log.py)."""
    context = info.context
    await log_content_read(
        context.loaders, context.auth.writer, context.principal, context.meta, access_type, document.row_id,
        _search_value(document, "access_level"),
    )


@strawberry.type(description="A document category of the tenant; categories form a tree.")
class DocumentCategory(EntityNode, TenantOwned, relay.Node):
    _table = _CATEGORIES
    _descriptions = {
        "name": "The category's name, e.g. Solicitation, Proposal Volumes, Past Performance.",
        "description": "What belongs in the category.",
        "is_system_category": "A category the system provides (every tenant has it), as opposed to one the tenant "
        "made.",
    }

    row_id: uuid.UUID
    name: str
    description: str | None
    is_system_category: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime

    parent_category = to_one(
        CATEGORY, _CATEGORIES, "parent_category_id", description="The parent in the tree."
    )
    child_categories = to_many(
        CATEGORY, _CATEGORIES, "parent_category_id", order=(("name", False),),
        description="Direct children in the tree, by name.",
    )
    documents = document_list(
        "category_id", description="Documents of this category, newest first; deleted ones left out."
    )
    history = history(enums.EntityType.DOCUMENT_CATEGORY)


@strawberry.type(
    description="A stored file (one version of it): metadata, storage location, extracted text."
    " `searchRank` and `searchSnippet` are set only in the results of `documents(search:)`."
)
class Document(EntityNode, TenantOwned, relay.Node):
    _table = DOCUMENT_ROWS
    _descriptions = {
        "name": "The document's display name (what document search matches besides the text).",
        "original_filename": "The file name as uploaded, e.g. RFP_Section_L.pdf.",
        "file_extension": "The file's extension without the dot, e.g. pdf, docx.",
        "mime_type": "The file's media type, e.g. application/pdf.",
        "file_size_bytes": "The file's size in bytes.",
        "storage_provider": "Where the file is stored, e.g. s3 (free text).",
        "document_type": "What the document is (free text), e.g. rfp, amendment, compliance_matrix, proposal_volume.",
        "document_source": "Where it came from (free text), e.g. internal (uploaded by the team) or external "
        "(synced).",
        "external_document_id": "The attachment's id at the external source, for synced documents.",
        "external_sync_timestamp": "When a synced document was last fetched from its source.",
        "is_synced_from_external": "The document came from the external source (a notice attachment), not an upload.",
        "version_number": "The version of the document, 1 for the first; later versions point at it as "
        "`parentDocument`.",
        "is_current_version": "This is the latest version of the document.",
        "access_level": "Who in the tenant may read it, beyond the permission to read documents at all.",
        "is_searchable": "Whether document search may find it; false keeps it out of every search.",
        "page_count": "Number of pages, where the format has pages.",
        "tags": "Labels as a JSON array of strings.",
        "custom_metadata": "Further attributes of the tenant's choosing (JSON object).",
        "processing_status": "Where text extraction and indexing stand (content search needs COMPLETED).",
        "processing_error": "Why text extraction FAILED: the limit the file hit (pages, decompressed size, CPU, time,"
        " memory) or the parser's complaint; null otherwise.",
        "is_deleted": "Deleted (kept as evidence, left out of lists unless asked for).",
        "deleted_at": "When it was deleted; null while it is not.",
        "scan_status": "The malware scan of its file: only a CLEAN file can be downloaded.",
        "scan_reason": "What the scanner found (a threat's name), or why the file was released unscanned.",
        "scanned_at": "When the scanner gave its verdict; null while quarantined.",
        "legal_hold": "Under a legal hold: its file is never purged, even once the document is deleted.",
        "legal_hold_reason": "Why the hold was set (the matter or request); null without a hold.",
        "legal_hold_set_at": "When the hold was set; null without a hold.",
        "purged_at": "When its file was deleted from storage, after the retention of a deleted document; the record"
        " stays.",
        "category": "The category it is filed under.",
        "deleted_by": "The user who deleted it.",
        "opportunity_project": "The opportunity project it is filed under.",
    }

    row_id: uuid.UUID
    name: str
    original_filename: str
    file_extension: str | None
    mime_type: str
    file_size_bytes: BigInt
    storage_provider: str
    storage_region: str | None = strawberry.field(
        description="The storage region, e.g. us-gov-west-1 (internal).", deprecation_reason=_INTERNAL
    )
    storage_bucket: str | None = strawberry.field(
        description="The bucket holding the object (internal).", deprecation_reason=_INTERNAL
    )
    storage_key: str | None = strawberry.field(
        description="The object's key in its bucket (internal: a location, not a credential).",
        deprecation_reason=_INTERNAL,
    )
    storage_url: str | None = strawberry.field(
        description="A URL of the stored object, where the provider gives one (internal).",
        deprecation_reason=_INTERNAL,
    )
    file_hash_md5: str | None = strawberry.field(description=_CHECKSUM)
    file_hash_sha256: str | None = strawberry.field(description=_CHECKSUM)
    is_encrypted: bool = strawberry.field(description="Whether the stored object is encrypted at rest.")
    encryption_key_id: str | None = strawberry.field(
        description="The identifier of the key (never the key; internal).", deprecation_reason=_INTERNAL
    )
    document_type: str | None
    document_source: str
    external_document_id: str | None
    external_sync_timestamp: datetime.datetime | None
    is_synced_from_external: bool
    version_number: int
    is_current_version: bool
    access_level = enum_column(AccessLevel, DOCUMENT_ROWS.c.access_level)
    is_searchable: bool
    page_count: int | None
    tags: JSON
    custom_metadata: JSON
    processing_status = enum_column(ProcessingStatus, DOCUMENT_ROWS.c.processing_status)
    processing_error: str | None
    is_deleted: bool
    deleted_at: datetime.datetime | None
    scan_status = enum_column(ScanStatus, DOCUMENT_ROWS.c.scan_status)
    scan_reason: str | None
    scanned_at: datetime.datetime | None
    legal_hold: bool
    legal_hold_reason: str | None
    legal_hold_set_at: datetime.datetime | None
    purged_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime

    @strawberry.field(
        description="The text extracted from the file (null until extracted). It can be megabytes: it is"
        " read only when selected, by one statement per level; `maxLength` cuts it in the database."
    )
    async def extracted_text(
        self,
        info: Info,
        max_length: Annotated[
            int | None, strawberry.argument(description="At most this many characters (from the start); null: all.")
        ] = None,
    ) -> str | None:
        if max_length is not None and max_length < 0:
            raise GraphQLError("`maxLength` must not be negative.", extensions={"code": BAD_INPUT})
        loader = extracted_text_by_document(info.context.loaders, max_length)
        text: str | None = await loader.load(self.row_id)
        if text is not None:
            await _content_read(info, ContentRead.EXTRACTED_TEXT, self)
        return text

    @strawberry.field(
        description="The beginning of the extracted text, for lists. Reading it is an access: it writes an"
        " access-log row (`accessLogs`)."
    )
    async def content_preview(self, info: Info) -> str | None:
        value: str | None = _search_value(self, "content_preview")
        if value is not None:
            await _content_read(info, ContentRead.CONTENT_PREVIEW, self)
        return value

    @strawberry.field(
        description="Relevance to the search (ts_rank_cd; higher ranks first); null outside search results."
    )
    def search_rank(self) -> float | None:
        value = _search_value(self, "search_rank")
        return None if value is None else float(value)

    @strawberry.field(
        description="A highlighted excerpt of the name and the beginning of the text: HTML with the"
        " matched words in <mark> elements, everything else escaped; null outside search results."
    )
    async def search_snippet(self, info: Info) -> str | None:
        value = _search_value(self, "search_snippet")
        if value is None:
            return None
        await _content_read(info, ContentRead.SEARCH_SNIPPET, self)
        return snippet_html(value)

    opportunity_project = to_one(PROJECT, _PROJECTS, "opportunity_project_id")
    category = to_one(CATEGORY, _CATEGORIES, "category_id")
    uploader = to_one(USER, _USERS, "uploaded_by", description="Who uploaded this version.")
    deleted_by = to_one(USER, _USERS, "deleted_by")
    legal_hold_set_by = to_one(
        USER, _USERS, "legal_hold_set_by", description="Who set the legal hold; null without one."
    )
    external_data_change = to_one(
        ("ExternalDataChange", "schema.external_data"), _CHANGES, "external_data_change_id",
        description="The external data change that brought this version (a notice attachment); null for uploads.",
    )
    parent_document = to_one(
        DOCUMENT, DOCUMENT_ROWS, "parent_document_id", description="The document this version was made from."
    )
    child_versions = to_many(
        DOCUMENT, DOCUMENT_ROWS, "parent_document_id", order=(("version_number", False),),
        where=_not_deleted, where_key=_NOT_DELETED,
        description="Versions made from this document, by version number; deleted ones left out.",
    )
    associations = to_many(
        ASSOCIATION, _ASSOCIATIONS, "document_id", order=(("created_at", False),),
        description="The records this document is linked to, oldest link first.",
    )
    access_logs = to_many(
        ACCESS_LOG, _ACCESS_LOGS, "document_id", order=(("accessed_at", True),),
        description="Accesses to this document, newest first.",
    )
    document_associations = document_associations_of(
        enums.EntityType.DOCUMENT,
        description="Links of other documents to this document (associations whose target it is),"
        " oldest first.",
    )
    activities = activities_of(enums.EntityType.DOCUMENT)
    history = history(enums.EntityType.DOCUMENT)


@strawberry.type(description="A link from a document to another record (a project, contact, proposal...).")
class DocumentAssociation(EntityNode, TenantOwned, relay.Node):
    _table = _ASSOCIATIONS
    _descriptions = {
        "entity_type": "The kind of record the document is linked to (see `target`).",
        "association_type": "What the link means (free text), e.g. reference, attachment, deliverable.",
        "notes": "Why the document is linked there.",
        "document": "The linked document.",
        "created_by": "The user who made the link.",
    }

    row_id: uuid.UUID
    entity_type = enum_column(EntityType, _ASSOCIATIONS.c.entity_type)
    entity_id: uuid.UUID = strawberry.field(description="The target's rowId (see `target`).")
    association_type: str | None
    notes: str | None
    created_at: datetime.datetime

    document = to_one(DOCUMENT, DOCUMENT_ROWS, "document_id")
    target = polymorphic(
        "entity_type", "entity_id", targets(ACTIVITY_ENTITY_TYPES),
        description="The linked record; null once it is gone.",
    )
    created_by = to_one(USER, _USERS, "created_by")
    history = history(enums.EntityType.DOCUMENT_ASSOCIATION)


@strawberry.type(description="One access to a document (view, download...), successful or not.")
class DocumentAccessLog(EntityNode, TenantOwned, relay.Node):
    _table = _ACCESS_LOGS
    _descriptions = {
        "access_type": "What was done (free text), e.g. view, download, preview.",
        "ip_address": "The client's address.",
        "user_agent": "The client software (its User-Agent header).",
        "success": "Whether the access was allowed and served.",
        "failure_reason": "Why the access failed or was refused.",
        "risk_level": "normal, or elevated for an access to a confidential document.",
        "accessed_at": "When the access happened.",
        "document": "The document accessed.",
        "user": "Who accessed it.",
    }

    row_id: uuid.UUID
    access_type: str
    ip_address = inet_column(_ACCESS_LOGS.c.ip_address)
    user_agent: str | None
    success: bool
    failure_reason: str | None
    risk_level: str
    accessed_at: datetime.datetime

    document = to_one(DOCUMENT, DOCUMENT_ROWS, "document_id")
    user = to_one(USER, _USERS, "user_id")
    history = history(enums.EntityType.DOCUMENT_ACCESS_LOG)


# -- filters and orders ------------------------------------------------------------------------


@strawberry.input(description="Conditions on documents, ANDed.")
class DocumentFilter:
    row_id: UUIDFilter | None = None
    name: StringFilter | None = None
    document_type: StringFilter | None = None
    processing_status: EnumFilter[ProcessingStatus] | None = None
    access_level: EnumFilter[AccessLevel] | None = None
    opportunity_project_id: UUIDFilter | None = None
    category_id: UUIDFilter | None = None
    uploaded_by: UUIDFilter | None = None
    parent_document_id: UUIDFilter | None = None
    is_current_version: BooleanFilter | None = None
    created_at: DateTimeFilter | None = None
    deleted_at: DateTimeFilter | None = None
    include_deleted: bool | None = strawberry.field(
        default=False,
        description="Deleted documents (isDeleted) are left out unless this is true or the filter"
        " names `deletedAt`; `deletedAt: {isNull: false}` lists only them.",
    )


# Only indexed columns: documents has (tenant_id, document_type, created_at DESC).
@strawberry.enum
class DocumentOrderField(Enum):
    CREATED_AT = "created_at"
    DOCUMENT_TYPE = "document_type"


@strawberry.input
class DocumentOrder:
    field: DocumentOrderField
    direction: OrderDirection = OrderDirection.ASC


describe_list_inputs("Document", DocumentFilter, DocumentOrder)


@strawberry.input(description="Conditions on document categories, ANDed.")
class DocumentCategoryFilter:
    row_id: UUIDFilter | None = None
    name: StringFilter | None = None
    parent_category_id: UUIDFilter | None = None
    is_system_category: BooleanFilter | None = None


# Only indexed columns: document_categories has (tenant_id, name, parent_category_id).
@strawberry.enum
class DocumentCategoryOrderField(Enum):
    NAME = "name"


@strawberry.input
class DocumentCategoryOrder:
    field: DocumentCategoryOrderField
    direction: OrderDirection = OrderDirection.ASC


@strawberry.type
class DocumentsQuery:
    @strawberry.field(
        description="Documents. Without `search`: newest first unless ordered otherwise. With `search`"
        " (web-search syntax: words, \"phrases\", or, -word): only matching documents, most relevant"
        " first (unless `orderBy` is given), each with `searchRank` and `searchSnippet`; cursors carry"
        " the rank, so `after` continues the same search. Deleted documents only with"
        " `filter: {includeDeleted: true}` (or a `deletedAt` filter). " + PAGE_SIZES
    )
    async def documents(
        self,
        info: Info,
        search: Annotated[
            str | None,
            strawberry.argument(
                description="Full-text search in web-search syntax: words (all must match), \"quoted"
                " phrases\", `or` between alternatives, -word to exclude."
            ),
        ] = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
        filter: Annotated[DocumentFilter | None, strawberry.argument(description=FILTER_DESCRIPTION)] = None,
        order_by: Annotated[list[DocumentOrder] | None, strawberry.argument(description=ORDER_BY_DESCRIPTION)] = None,
    ) -> Connection[Document]:
        try:
            return Connection.of(await list_documents(
                info.context.loaders, page_args(first, after, last, before), Document.from_row,  # type: ignore[arg-type]
                search=search, filter_input=filter, order_by=order_by,
            ))
        except (PaginationError, FilterError) as exc:
            raise bad_input(exc) from None

    document_categories = root_list(
        CATEGORY, _CATEGORIES, DocumentCategoryFilter, DocumentCategoryOrder,
        default_order=(("name", False),),
        description="Document categories, by name unless ordered otherwise.",
    )
