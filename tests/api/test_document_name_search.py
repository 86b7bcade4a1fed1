"""Document search finds the words inside file names (migration 0007, docs/decisions.md D5).

PostgreSQL's English parser reads "Statement.pdf", "SOW-final.docx" or "v2.1" as one token (a
file or host name); the name is indexed split on punctuation too, so their words match on their
own, and as written, so a search for the whole file name still matches.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql

SEARCH = """
query ($search: String) {
  documents(search: $search, first: 50) { totalCount nodes { rowId name searchRank } }
}
"""


async def _found(client: httpx.AsyncClient, token: str, search: str) -> dict[str, Any]:
    body = await gql(client, SEARCH, {"search": search}, token=token)
    page: dict[str, Any] = body["data"]["documents"]
    return page


async def test_search_finds_the_last_word_of_a_file_name(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    names = [f"FY{24 + n % 3} Navy Task Order {n:02d} - Performance Work Statement.pdf" for n in range(12)]
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        statements = {str((await make(conn, "documents", fresh_tenant, name=name)).id) for name in names}
        sow = await make(conn, "documents", fresh_tenant, name="SOW-final.docx")
        rfp = await make(conn, "documents", fresh_tenant, name="Army_RFP v2.1 (draft).pdf")
        await make(conn, "documents", fresh_tenant, name="Statements of capability", extracted_text="none")

    # "statement" was the word the parser hid inside "Statement.pdf"; stemmed, "statements" matches too.
    found = await _found(client, admin_token, "statement")
    assert found["totalCount"] == 13
    assert statements <= {n["rowId"] for n in found["nodes"]}
    phrase = await _found(client, admin_token, '"performance work statement"')
    assert {n["rowId"] for n in phrase["nodes"]} == statements and phrase["totalCount"] == 12
    words = await _found(client, admin_token, "performance work statement")
    assert {n["rowId"] for n in words["nodes"]} == statements
    # The file name as written still matches, and the extension is a word of its own.
    assert {n["rowId"] for n in (await _found(client, admin_token, "Statement.pdf"))["nodes"]} == statements
    assert (await _found(client, admin_token, "pdf"))["totalCount"] == 13
    # Hyphens, underscores, dots and brackets split words as well.
    assert [n["rowId"] for n in (await _found(client, admin_token, "final"))["nodes"]] == [str(sow.id)]
    assert [n["rowId"] for n in (await _found(client, admin_token, "rfp draft"))["nodes"]] == [str(rfp.id)]
    assert [n["rowId"] for n in (await _found(client, admin_token, "SOW-final.docx"))["nodes"]] == [str(sow.id)]


async def test_the_generated_vector_holds_the_split_name(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> None:
    """The column itself, so the rule does not depend on how the API builds its query."""
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        doc = await make(conn, "documents", fresh_tenant, name="Performance Work Statement.pdf", extracted_text="")
        vector = await conn.scalar(text("SELECT search_vector::text FROM documents WHERE id = :id"), {"id": doc.id})
        await conn.rollback()
    assert vector == "'pdf':7A 'perform':1A,4A 'statement':6A 'statement.pdf':3A 'work':2A,5A"
