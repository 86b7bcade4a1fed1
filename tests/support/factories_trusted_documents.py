"""Matrix factories of the trusted document mutations (tests/support/mutation_matrix.py).

Registrations are rows of `trusted_documents` (not audited by the hook: each change is an event row
with the hash and name in its values). A register names no row (cross tenant: "own_tenant"); an
unregister names the registration by its plain UUID id, built under `ctx.tenant`, so the cross-tenant
test sends another tenant's id. Rows are added or removed, never edited (no updated_at).
"""

from __future__ import annotations

import uuid
from typing import Any

from models.trusted_documents import document_hash
from tests.support.mutation_matrix import Case, MatrixContext, matrix


def _document() -> str:
    return f"query Matrix{uuid.uuid4().hex[:8]} {{ organizations(first: 1) {{ nodes {{ rowId }} }} }}"


@matrix("trustedDocumentRegister", kind="create", table="trusted_documents", entity_type="trusted_document",
        action="graphql.document.registered", permission="graphql:document:register", denied_role="Viewer",
        history=None, cross_tenant="own_tenant")
async def trusted_document_register(ctx: MatrixContext) -> Case:
    document = _document()

    async def registered(stored: Any, payload: dict[str, Any]) -> None:
        assert stored is not None and stored.sha256_hash == document_hash(document)
        assert stored.document == document and stored.name == "matrix"

    return Case({"input": {"document": document, "name": "matrix"}}, verify=registered)


@matrix("trustedDocumentUnregister", kind="delete", table="trusted_documents", entity_type="trusted_document",
        action="graphql.document.unregistered", permission="graphql:document:register", denied_role="Viewer",
        history=None,
        immutable="a registration is added or removed, never edited (docs/decisions.md D32)")
async def trusted_document_unregister(ctx: MatrixContext) -> Case:
    document = _document()
    admin = await ctx.user("Tenant Admin")
    row_id = uuid.uuid4()
    await ctx.execute(
        "INSERT INTO trusted_documents (id, tenant_id, sha256_hash, document, registered_by)"
        " VALUES (:id, :t, :h, :d, :u)",
        id=row_id, h=document_hash(document), d=document, u=admin.id,
    )
    return Case(ctx.args(row_id), entity_id=row_id)
