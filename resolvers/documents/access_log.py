"""Content reads are accesses: reading a document's `extractedText`, `contentPreview` or a search
`searchSnippet` writes a `document_access_logs` row (who, IP, user agent, success, reason, risk).

The rows go through the side-effect writer (models/side_effects.py): each in a short transaction of
its own, so a read-only request leaves them too and a failing request keeps them. One statement per
access type and request level: the fields of a list are batched by a DataLoader, and a document whose
content is read twice in one request (two aliases) is logged once per access type.

Every read of a `confidential` document is logged at elevated risk (docs/enums.md, AccessLevel).
Only content a caller may read is ever served (the documents row rule, auth/rules.py), so a content
read is always a successful access; refusals (an expired or tampered download URL) are logged by the
download routes with `success` false and the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from auth.audit import RequestMeta
from auth.principal import Principal
from models import DocumentAccessLog
from models.enums import AccessLevel
from models.side_effects import SideEffectWriter
from resolvers.common.loaders import Loaders

__all__ = ["ELEVATED", "NORMAL", "ContentRead", "log_content_read", "risk_of", "write_content_reads"]

NORMAL = "normal"
ELEVATED = "elevated"


class ContentRead:
    """The `access_type` values of content reads."""

    EXTRACTED_TEXT = "read_extracted_text"
    CONTENT_PREVIEW = "read_content_preview"
    SEARCH_SNIPPET = "read_search_snippet"


def risk_of(access_level: str | None) -> str:
    """The risk level an access to a document of `access_level` is logged at."""
    return ELEVATED if access_level == AccessLevel.CONFIDENTIAL.value else NORMAL


def _ip(meta: RequestMeta) -> str | None:
    return meta.ip or None


async def log_content_read(
    loaders: Loaders,
    writer: SideEffectWriter,
    principal: Principal,
    meta: RequestMeta,
    access_type: str,
    document_id: uuid.UUID,
    access_level: str | None,
) -> None:
    """Log that the caller read `access_type` content of the document (batched per request level)."""

    async def batch(keys: Sequence[tuple[uuid.UUID, str | None]]) -> list[None]:
        await write_content_reads(writer, principal, meta, access_type, keys)
        return [None] * len(keys)

    await loaders.custom(("document_content_read", access_type), batch).load((document_id, access_level))


async def write_content_reads(
    writer: SideEffectWriter,
    principal: Principal,
    meta: RequestMeta,
    access_type: str,
    documents: Sequence[tuple[uuid.UUID, str | None]],
) -> None:
    """One access-log row per document (id, access level) whose `access_type` content the caller read.

    Both read paths write through here: the executor's DataLoader batch and the compiled path's runner.
    """
    rows: list[dict[str, Any]] = [
        {
            "tenant_id": principal.tenant_id,
            "document_id": document_id,
            "user_id": principal.user_id,
            "access_type": access_type,
            "ip_address": _ip(meta),
            "user_agent": meta.user_agent,
            "success": True,
            "failure_reason": None,
            "risk_level": risk_of(level),
        }
        for document_id, level in dict.fromkeys(documents)
    ]
    await writer.insert(principal.tenant_id, DocumentAccessLog.__table__, rows)
