"""Helpers of the lifecycle tests (scan, purge, downloads): a stored document, its row and audit rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from storage.base import DocumentStorage
from storage.keys import object_key
from storage.scan import ScanVerdict
from tests.support.db import TenantRef
from tests.support.factories import make

__all__ = ["EICAR", "FakeScanner", "audit_rows", "document_row", "stored_document"]

#: The EICAR test string: every scanner reports it as a virus; nothing else in it is harmful.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


class FakeScanner:
    """Finds the EICAR string (across chunk boundaries); counts what it was given."""

    name = "fake"

    def __init__(self) -> None:
        self.scanned = 0

    async def scan(self, chunks: AsyncIterator[bytes]) -> ScanVerdict:
        data = b"".join([chunk async for chunk in chunks])
        self.scanned += 1
        if EICAR in data:
            return ScanVerdict(clean=False, reason="Eicar-Test-Signature")
        return ScanVerdict(clean=True, reason="nothing found")


async def stored_document(
    owner_engine: AsyncEngine,
    tenant: TenantRef,
    storage: DocumentStorage,
    data: bytes,
    tmp_path: Path,
    **columns: Any,
) -> tuple[uuid.UUID, str]:
    """A documents row (outside any project) whose object holds `data`; its id and key."""
    document_id = uuid.uuid4()
    key = storage.key_for(object_key(tenant.id, None, document_id, document_id))
    source = tmp_path / f"{document_id}.bin"
    source.write_bytes(data)
    await storage.put_file(key, source, content_type="text/plain")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await make(
            conn, "documents", tenant, id=document_id, storage_key=key, file_size_bytes=len(data),
            mime_type="text/plain", original_filename="notes.txt", storage_provider=storage.provider, **columns,
        )
    return document_id, key


async def document_row(owner_engine: AsyncEngine, tenant: TenantRef, document_id: uuid.UUID) -> Any:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        return (await conn.execute(text("SELECT * FROM documents WHERE id = :id"), {"id": document_id})).one()


async def audit_rows(owner_engine: AsyncEngine, tenant: TenantRef, entity_id: uuid.UUID, action: str) -> list[Any]:
    """The audit_logs rows about `entity_id` with `action_type` = action, with their changed fields sorted."""
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = await conn.execute(
            text(
                "SELECT a.*, (SELECT array_agg(f ORDER BY f) FROM jsonb_array_elements_text(a.changed_fields) AS f)"
                "   AS history_fields"
                " FROM audit_logs a WHERE a.entity_id = :e AND a.action_type = :a ORDER BY a.seq"
            ),
            {"e": entity_id, "a": action},
        )
        return list(rows.all())
