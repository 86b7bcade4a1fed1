"""Mutation matrix factories of the document file lifecycle: documentDownloadUrl, documentLegalHoldSet."""

from __future__ import annotations

import uuid
from typing import Any

from storage.keys import object_key
from tests.support.mutation_matrix import Case, MatrixContext, matrix


async def _clean_document(ctx: MatrixContext, **columns: Any) -> Any:
    """A readable (tenant-wide) document whose file passed the scan, on the local store."""
    document_id = uuid.uuid4()
    return await ctx.make(
        "documents", id=document_id, access_level="tenant", scan_status="clean", storage_provider="local",
        storage_key=object_key(ctx.tenant.id, None, document_id, document_id), **columns,
    )


@matrix("documentDownloadUrl", kind="action", table="documents", entity_type="document",
        action="document.download_url.issued", permission="document.file:read", denied_role="Auditor", history=None,
        operational=True, actor_roles=("Viewer",))
async def document_download_url(ctx: MatrixContext) -> Case:
    row = await _clean_document(ctx)

    async def issued(stored: Any, payload: dict[str, Any]) -> None:
        assert payload["url"] and payload["expiresAt"]
        (log,) = await ctx.all(
            "SELECT access_type, success FROM document_access_logs WHERE document_id = :d", d=row.id
        )
        assert (log.access_type, log.success) == ("download_url", True)

    return Case({"input": ctx.target(row.id)}, entity_id=row.id, verify=issued)


@matrix("documentLegalHoldSet", kind="update", table="documents", entity_type="document",
        action="document.legal_hold.set", permission="document.legal_hold:manage", denied_role="Capture Manager",
        history={"legal_hold", "legal_hold_reason", "legal_hold_set_by"})
async def document_legal_hold_set(ctx: MatrixContext) -> Case:
    row = await _clean_document(ctx)
    return Case(
        {"input": {**ctx.target(row.id), **ctx.updated_at(row), "hold": True, "reason": "Matter 2026-17"}},
        entity_id=row.id,
    )
