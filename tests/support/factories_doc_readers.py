"""Matrix factories of the named-reader mutations of documents (tests/support/mutation_matrix.py).

Both act on a document (entity type `document`): the payload returns it, the documents row itself does
not change (no history), the event row of its trail names the user. Built under `ctx.tenant`, named
through `ctx.ref`, so the cross-tenant test and both Relay id shapes are exercised.
"""

from __future__ import annotations

from typing import Any

from tests.support.mutation_matrix import Case, MatrixContext, matrix


async def _document(ctx: MatrixContext) -> Any:
    """A project-team document (a reader may be named before it is restricted; the caller must read it)."""
    project = await ctx.make("opportunity_projects")
    return await ctx.make("documents", {"opportunity_projects": project.id}, opportunity_project_id=project.id)


@matrix("documentReaderAdd", kind="action", table="documents", entity_type="document",
        action="document.reader_added", permission="document.readers:manage", denied_role="BD Analyst",
        history=None, operational=True, actor_roles=("Capture Manager",))
async def document_reader_add(ctx: MatrixContext) -> Case:
    document = await _document(ctx)
    user = await ctx.user("Viewer")

    async def named(stored: Any, payload: dict[str, Any]) -> None:
        rows = await ctx.all("SELECT user_id FROM document_readers WHERE tenant_id = :t AND document_id = :d",
                             d=document.id)
        assert user.id in {r.user_id for r in rows}

    return Case({"input": {**ctx.ref("document", document.id), **ctx.ref("user", user.id)}},
                entity_id=document.id, tables=("document_readers",), verify=named)


@matrix("documentReaderRemove", kind="action", table="documents", entity_type="document",
        action="document.reader_removed", permission="document.readers:manage", denied_role="BD Analyst",
        history=None, operational=True, actor_roles=("Capture Manager",))
async def document_reader_remove(ctx: MatrixContext) -> Case:
    document = await _document(ctx)
    user = await ctx.user("Viewer")
    await ctx.execute(
        "INSERT INTO document_readers (tenant_id, document_id, user_id, added_by) VALUES (:t, :d, :u, :u)",
        d=document.id, u=user.id,
    )

    async def removed(stored: Any, payload: dict[str, Any]) -> None:
        rows = await ctx.all("SELECT 1 FROM document_readers WHERE tenant_id = :t AND document_id = :d AND"
                             " user_id = :u", d=document.id, u=user.id)
        assert rows == []

    return Case({"input": {**ctx.ref("document", document.id), **ctx.ref("user", user.id)}},
                entity_id=document.id, tables=("document_readers",), verify=removed)
