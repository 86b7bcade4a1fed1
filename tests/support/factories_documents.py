"""Matrix factories of the document uploads (tests/support/mutation_matrix.py): the multipart ones
(a `FileUpload` in the variables makes the call a GraphQL multipart request) and the presigned ones.
Their refusals beyond the matrix's (types, sizes, disconnects, S3): tests/documents/.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

from tests.support.mutation_matrix import Case, FileUpload, MatrixContext, matrix

_PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


_START = """mutation S($input: DocumentUploadStartInput!) {
  documentUploadStart(input: $input) { upload { url headers } ticket errors { code message } }
}"""


def _claims(ticket: str) -> dict[str, Any]:
    body = ticket.split(".", 1)[0]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return claims


@matrix("documentUpload", kind="create", table="documents", entity_type="document", action="document.uploaded",
        permission="document:write", denied_role="BD Analyst", history={"name", "storage_key", "file_hash_sha256"},
        actor_roles=("Capture Manager",))
async def upload(ctx: MatrixContext) -> Case:
    project = await ctx.make("opportunity_projects")
    data = _PDF + uuid.uuid4().hex.encode()
    return Case(
        {"input": {**ctx.ref("opportunityProject", project.id), "file": FileUpload("RFP.pdf", data),
                   "name": "RFP", "documentType": "rfp"}},
        tables=("opportunity_projects",),
    )


@matrix("documentVersionUpload", kind="update", table="documents", entity_type="document", action="UPDATE",
        permission="document:write", denied_role="BD Analyst", history={"is_current_version"},
        actor_roles=("Capture Manager",), rows_in_request=2)
async def version_upload(ctx: MatrixContext) -> Case:
    """A new version of a document: the payload returns the target as changed (no longer current) and
    the new version's rowId (its own audit row: tests/documents/test_uploads.py)."""
    document = await ctx.make("documents")
    data = _PDF + uuid.uuid4().hex.encode()

    async def verify(stored: Any, payload: dict[str, Any]) -> None:
        assert stored.is_current_version is False
        version = await ctx.one("SELECT * FROM documents WHERE id = :v", v=payload["versionRowId"])
        assert version.parent_document_id == document.id and version.is_current_version

    return Case({"input": {**ctx.target(document.id, node="Document"), **ctx.updated_at(document),
                           "file": FileUpload("v2.pdf", data)}}, entity_id=document.id, verify=verify)


@matrix("documentUploadStart", kind="action", table="documents", entity_type="document",
        action="document.upload_started", permission="document:write", denied_role="BD Analyst", history=None,
        operational=True, actor_roles=("Capture Manager",))
async def upload_start(ctx: MatrixContext) -> Case:
    document = await ctx.make("documents")
    data = _PDF + uuid.uuid4().hex.encode()
    return Case(
        {"input": {**ctx.ref("document", document.id, node="Document"), "fileName": "v2.pdf",
                   "sizeBytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}},
        entity_id=document.id,
    )


@matrix("documentUploadComplete", kind="action", table="documents", entity_type="document",
        action="document.version_uploaded", permission="document:write", denied_role="BD Analyst",
        history={"version_number", "parent_document_id"}, actor_roles=("Capture Manager",), rows_in_request=2)
async def upload_complete(ctx: MatrixContext) -> Case:
    """A new version of a document, sent to the local backend's presigned URL by the success caller
    (a ticket is the user's own), then completed."""
    document = await ctx.make("documents")
    actor = await ctx.caller(*ctx.spec.actor_roles)
    data = _PDF + uuid.uuid4().hex.encode()
    variables = {"input": {
        "documentRowId": str(document.id), "fileName": "v2.pdf", "sizeBytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }}
    response = await ctx.client.post(
        "/graphql", json={"query": _START, "variables": variables}, headers={"authorization": f"Bearer {actor.token}"}
    )
    started = response.json()["data"]["documentUploadStart"]
    assert started["errors"] == [], started
    upload = started["upload"]
    sent = await ctx.client.put(urlsplit(upload["url"]).path, content=data, headers=upload["headers"])
    assert sent.status_code == 201, sent.text
    version_id = uuid.UUID(_claims(started["ticket"])["i"])
    return Case({"input": {"ticket": started["ticket"], "name": "Version two"}}, entity_id=version_id)
