"""Writes of document metadata and document categories (the files arrive with the documents issue).

As in resolvers/capture/mutations.py: each function runs inside a unit of work and changes rows
only through it (the flush hook audits them); permissions are declared on the GraphQL fields.

What is deleted and what is kept (docs/decisions.md W14, docs/api.md "Deleted or archived"):

- A document is soft-deleted: `is_deleted`, `deleted_at` (the transaction's instant) and
  `deleted_by` are set, the row and its file stay, lists leave it out, and `restore_document`
  brings it back. Its versions and associations are untouched.
- A category is deleted for good (it is a label, not evidence): its sub-categories move up to its
  parent and its documents become uncategorized, each through the unit of work so every moved row
  has its own audit and history rows (the database's ON DELETE SET NULL would change them
  unrecorded). System categories can be neither changed nor deleted.

Category moves take a per-tenant advisory lock before the cycle check, so two concurrent moves
(A under B, B under A) are serialized and the second one sees the first and is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, text, true

from models import Document, DocumentCategory
from models.enums import AccessLevel
from models.errors import Conflict, Invalid
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import validate

__all__ = [
    "DOCUMENT_FIELDS",
    "create_category",
    "delete_category",
    "delete_document",
    "restore_document",
    "update_category",
    "update_document",
]

#: The metadata a caller may change on a document (the file's own columns stay the upload's).
DOCUMENT_FIELDS = frozenset(
    {"name", "category_id", "document_type", "access_level", "is_searchable", "tags", "custom_metadata"}
)
_CATEGORY_FIELDS = frozenset({"name", "description", "parent_category_id"})
_TAGS_MAX = 50
_TAG_LENGTH = 100
_METADATA_KEYS_MAX = 100
_DEPTH_MAX = 20
# pg_advisory_xact_lock(int4, int4) class of category moves ("GWD"); the second key is the tenant's hash.
_CATEGORY_LOCK = 0x47574400


# -- categories ----------------------------------------------------------------------------------


async def create_category(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """A new category, at the top or under an existing category of the tenant."""
    values = {k: v for k, v in values.items() if v is not None and k in _CATEGORY_FIELDS}
    _check_name(values)
    await validate(uow, "document_categories", values)
    parent = values.get("parent_category_id")
    if parent is not None:
        await _lock_hierarchy(uow)
        await uow.find(DocumentCategory, parent, what="document category", field="parent_category_id")
        await _check_depth(uow, parent, below=1)
    await _check_unique(uow, values["name"], parent, None)
    category = DocumentCategory(tenant_id=uow.tenant_id)
    uow.assign(category, values)
    uow.add(category)
    await uow.flush()
    return category.id


async def update_category(uow: UnitOfWork, category_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]) -> uuid.UUID:
    """Rename, describe or move a category read at `seen` (its updatedAt)."""
    values = {k: v for k, v in changes.items() if k in _CATEGORY_FIELDS}
    if "parent_category_id" in values:
        await _lock_hierarchy(uow)  # before the row lock: every mover takes the two in this order
    category = await uow.lock(DocumentCategory, category_id, updated_at=seen, what="document category")
    if category.is_system_category:
        raise Invalid("A system category cannot be changed.", field="id")
    if "name" in values:
        _check_name(values)
    await validate(uow, "document_categories", values, row=category)
    parent = values.get("parent_category_id")
    if parent is not None:
        await uow.find(DocumentCategory, parent, what="document category", field="parent_category_id")
        if parent == category_id or category_id in await _ancestors(uow, parent):
            raise Invalid(
                "A category cannot be moved under itself or one of its sub-categories.", field="parent_category_id"
            )
        await _check_depth(uow, parent, below=1 + await _height(uow, category_id))
    if "name" in values or "parent_category_id" in values:
        await _check_unique(
            uow, values.get("name", category.name), values.get("parent_category_id", category.parent_category_id),
            category_id,
        )
    if uow.assign(category, values):
        await uow.flush()
    return category.id


async def delete_category(uow: UnitOfWork, category_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Delete a category read at `seen`: its sub-categories move to its parent, its documents
    become uncategorized (each change audited), then the category row goes."""
    await _lock_hierarchy(uow)
    category = await uow.lock(DocumentCategory, category_id, updated_at=seen, what="document category")
    if category.is_system_category:
        raise Invalid("A system category cannot be deleted.", field="id")
    children = await uow.session.scalars(
        select(DocumentCategory)
        .where(DocumentCategory.tenant_id == uow.tenant_id, DocumentCategory.parent_category_id == category_id)
        .with_for_update()
    )
    for child in children:
        uow.assign(child, {"parent_category_id": category.parent_category_id})
    documents = await uow.session.scalars(
        select(Document)
        .where(Document.tenant_id == uow.tenant_id, Document.category_id == category_id)
        .with_for_update()
    )
    for document in documents:
        uow.assign(document, {"category_id": None})
    await uow.flush()
    await uow.delete(category)
    await uow.flush()
    return category_id


def _check_name(values: Mapping[str, Any]) -> None:
    name = values.get("name")
    if name is None or not str(name).strip():
        raise Invalid("name must not be empty.", field="name")


async def _check_unique(
    uow: UnitOfWork, name: str, parent: uuid.UUID | None, category_id: uuid.UUID | None
) -> None:
    """CONFLICT on `name` when a sibling has it already (the unique key would name the parent)."""
    taken = await uow.session.scalar(
        select(DocumentCategory.id).where(
            DocumentCategory.tenant_id == uow.tenant_id,
            DocumentCategory.name == name,
            DocumentCategory.parent_category_id.is_not_distinct_from(parent),
            DocumentCategory.id != category_id if category_id is not None else true(),
        )
    )
    if taken is not None:
        raise Conflict("Another category under the same parent already has this name.", field="name")


async def _lock_hierarchy(uow: UnitOfWork) -> None:
    await uow.connection.execute(
        text("SELECT pg_advisory_xact_lock(:c, hashtext(:t))"), {"c": _CATEGORY_LOCK, "t": str(uow.tenant_id)}
    )


async def _ancestors(uow: UnitOfWork, category_id: uuid.UUID) -> list[uuid.UUID]:
    """The ids above `category_id`, nearest first (bounded: a stored cycle cannot loop forever)."""
    found: list[uuid.UUID] = []
    current: uuid.UUID | None = category_id
    while current is not None and len(found) <= _DEPTH_MAX + 1:
        current = await uow.session.scalar(
            select(DocumentCategory.parent_category_id).where(
                DocumentCategory.tenant_id == uow.tenant_id, DocumentCategory.id == current
            )
        )
        if current is not None:
            if current in found:
                break
            found.append(current)
    return found


async def _height(uow: UnitOfWork, category_id: uuid.UUID) -> int:
    """How many levels of sub-categories hang below `category_id` (0 for a leaf)."""
    height, level = 0, [category_id]
    while level and height <= _DEPTH_MAX:
        level = list(
            await uow.session.scalars(
                select(DocumentCategory.id).where(
                    DocumentCategory.tenant_id == uow.tenant_id, DocumentCategory.parent_category_id.in_(level)
                )
            )
        )
        if level:
            height += 1
    return height


async def _check_depth(uow: UnitOfWork, parent: uuid.UUID, *, below: int) -> None:
    depth = len(await _ancestors(uow, parent)) + 1 + below
    if depth > _DEPTH_MAX:
        raise Invalid(f"Categories nest at most {_DEPTH_MAX} levels deep.", field="parent_category_id")


# -- documents -----------------------------------------------------------------------------------


async def update_document(uow: UnitOfWork, document_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]) -> uuid.UUID:
    """Change the metadata of a (not deleted) document read at `seen`."""
    document = await uow.lock(Document, document_id, updated_at=seen, what="document")
    if document.is_deleted:
        raise Invalid("The document is deleted: restore it before changing it.", field="id")
    values = {k: v for k, v in changes.items() if k in DOCUMENT_FIELDS}
    if "name" in values:
        _check_name(values)
    await validate(uow, "documents", values, row=document)
    for required in ("access_level", "is_searchable", "tags", "custom_metadata"):
        if required in values and values[required] is None:
            raise Invalid(f"{required.replace('_', ' ')} cannot be cleared.", field=required)
    if values.get("access_level") is not None:
        values["access_level"] = AccessLevel(values["access_level"]).value
    if values.get("category_id") is not None:
        await uow.find(DocumentCategory, values["category_id"], what="document category", field="category_id")
    if "tags" in values:
        values["tags"] = _check_tags(values["tags"])
    if "custom_metadata" in values:
        _check_metadata(values["custom_metadata"])
    if uow.assign(document, values):
        await uow.flush()
    return document.id


async def delete_document(uow: UnitOfWork, document_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Soft-delete a document read at `seen`: kept, hidden from lists, restorable."""
    document = await uow.lock(Document, document_id, updated_at=seen, what="document")
    if document.is_deleted:
        raise Invalid("The document is already deleted.", field="id")
    uow.assign(document, {"is_deleted": True, "deleted_by": uow.actor_id})
    document.deleted_at = func.now()
    uow.label(document, "document.deleted", "document deleted (kept, restorable)")
    await uow.flush()
    return document.id


async def restore_document(uow: UnitOfWork, document_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Bring back a deleted document read at `seen`."""
    document = await uow.lock(Document, document_id, updated_at=seen, what="document")
    if not document.is_deleted:
        raise Invalid("The document is not deleted.", field="id")
    if document.purged_at is not None:  # the purge job deleted its file (server/document_jobs.py)
        raise Invalid("The document's file was purged after its retention: it cannot be restored.", field="id")
    uow.assign(document, {"is_deleted": False, "deleted_at": None, "deleted_by": None})
    uow.label(document, "document.restored", "document restored")
    await uow.flush()
    return document.id


def _check_tags(tags: Any) -> list[str]:
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise Invalid("tags must be a list of texts.", field="tags")
    cleaned = list(dict.fromkeys(t.strip() for t in tags if t.strip()))
    if len(cleaned) > _TAGS_MAX:
        raise Invalid(f"A document has at most {_TAGS_MAX} tags.", field="tags")
    if any(len(t) > _TAG_LENGTH for t in cleaned):
        raise Invalid(f"A tag has at most {_TAG_LENGTH} characters.", field="tags")
    return cleaned


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise Invalid("custom metadata must be a JSON object.", field="custom_metadata")
    if len(metadata) > _METADATA_KEYS_MAX:
        raise Invalid(f"custom metadata has at most {_METADATA_KEYS_MAX} keys.", field="custom_metadata")
