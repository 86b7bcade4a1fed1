"""Full-text search over the extracted text in chunks (document_text_chunks, migration 0016).

A phrase inside a PDF, inside a DOCX and in the last 100 KB of a 5 MB text is found by
`documents(search:)` on both read paths (the text is extracted by the real child process and stored
by the extraction job's own `record_text`); another tenant's copy of the phrase is not. The GIN
indexes serve the search of gwm_app: the id match is an index condition of the caller's statement,
and `gwm_document_search` (owned by gwm_lookup, docs/api/documents.md option 2) reaches both GIN
indexes (shown with EXPLAIN under enable_seqscan = off and with the index's scan counter), where a
plain `@@` under the tenant policy could not.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from auth.audited import system_unit
from models.db import set_tenant
from models.documents import Document
from resolvers.documents.loaders import DOCUMENTS
from resolvers.documents.queries import ENGLISH, search_select
from storage.extract import DOCX_TYPE, ExtractionLimits, extract_in_child
from sync.extraction import record_text
from tests.conftest import Database
from tests.documents.text_samples import docx_with_text, pdf_with_pages
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef, create_tenant
from tests.support.factories import make
from tests.support.graphql import gql, sign_in
from tests.support.http import LoginUser, app_client, make_login_user
from tests.support.http import test_settings as settings_for

TAIL_PHRASE = "zebra mussel remediation plan"
PDF_PHRASE = "cybersecurity maturity model certification"
DOCX_PHRASE = "oral presentation rehearsal"


@dataclass(frozen=True)
class Corpus:
    tenant: TenantRef
    admin: LoginUser
    pdf: uuid.UUID
    docx: uuid.UUID
    big: uuid.UUID
    other_tenant_copy: uuid.UUID


async def _stored_text(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, tenant: TenantRef, tmp: Any, data: bytes, mime_type: str,
    name: str,
) -> uuid.UUID:
    """A document whose text the child process extracted from `data`, stored as the extraction job stores it."""
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        row = await make(conn, "documents", tenant, name=name, mime_type=mime_type, scan_status="clean",
                         processing_status="processing", file_size_bytes=len(data))
    path = tmp / f"{row.id}.bin"
    path.write_bytes(data)
    result = await extract_in_child(path, mime_type, ExtractionLimits())
    async with system_unit(app_engine, TEST_AUDIT_CHAIN, tenant.id, process="test.extraction", notify=False) as uow:
        document = await uow.session.scalar(select(Document).where(Document.id == row.id).with_for_update())
        assert document is not None
        await record_text(uow, document, result)
    return uuid.UUID(str(row.id))


@pytest.fixture(scope="module")
async def corpus(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> Corpus:
    tmp = tmp_path_factory.mktemp("search")
    tenant = await create_tenant(owner_engine)
    other = await create_tenant(owner_engine)
    admin = await make_login_user(owner_engine, tenant, roles=("Tenant Admin",))
    pdf = await _stored_text(
        owner_engine, app_engine, tenant, tmp,
        pdf_with_pages(["Request for proposal", f"Offerors shall hold {PDF_PHRASE} at Level 2."]),
        "application/pdf", "RFP.pdf",
    )
    docx = await _stored_text(
        owner_engine, app_engine, tenant, tmp, docx_with_text(f"Schedule the {DOCX_PHRASE} for May."), DOCX_TYPE,
        "Volume II.docx",
    )
    filler = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20 + "\n") * 4_400  # about 5 MB
    tail = "Appendix Q. " * 4_000 + f"The {TAIL_PHRASE} is due with the final proposal revision. " + "End. " * 100
    big_text = (filler + tail).encode()
    assert len(big_text) > 5_000_000 and big_text.index(TAIL_PHRASE.encode()) > len(big_text) - 100_000
    big = await _stored_text(owner_engine, app_engine, tenant, tmp, big_text, "text/plain", "Attachment J.txt")
    copy = await _stored_text(
        owner_engine, app_engine, other, tmp, f"{PDF_PHRASE} {TAIL_PHRASE} {DOCX_PHRASE}".encode(), "text/plain",
        "Other tenant.txt",
    )
    return Corpus(tenant, admin, pdf, docx, big, copy)


@pytest.fixture(scope="module")
def compiled_app(database: Database) -> Starlette:
    return create_app_for(database, compiled=True)


@pytest.fixture(scope="module")
def executor_app(database: Database) -> Starlette:
    return create_app_for(database, compiled=False)


def create_app_for(database: Database, *, compiled: bool) -> Starlette:
    from server.app import create_app

    return create_app(settings_for(database.app_url, compiled_reads=compiled))


@pytest.fixture(params=["compiled", "executor"])
async def client(
    request: pytest.FixtureRequest, compiled_app: Starlette, executor_app: Starlette
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(compiled_app if request.param == "compiled" else executor_app) as http:
        http.headers["x-test-path"] = request.param  # which read path this client is (for the assertions)
        yield http


SEARCH = """
query ($search: String!) {
  documents(search: $search, first: 10) { totalCount nodes { rowId name searchRank } }
}
"""


async def _found(client: httpx.AsyncClient, token: str, words: str) -> list[str]:
    body = await gql(client, SEARCH, {"search": words}, token=token)
    # The compiled read path runs the same search expressions in its one statement.
    assert body.get("extensions", {}).get("compiled", []) == (
        ["documents"] if client.headers["x-test-path"] == "compiled" else []
    ), body.get("extensions")
    return [node["rowId"] for node in body["data"]["documents"]["nodes"]]


async def test_a_phrase_in_a_pdf_a_docx_and_the_end_of_5_mb_of_text_is_found(
    client: httpx.AsyncClient, corpus: Corpus
) -> None:
    token = await sign_in(client, corpus.admin)
    assert await _found(client, token, f'"{PDF_PHRASE}"') == [str(corpus.pdf)]
    assert await _found(client, token, f'"{DOCX_PHRASE}"') == [str(corpus.docx)]
    assert await _found(client, token, f'"{TAIL_PHRASE}"') == [str(corpus.big)]  # beyond the first 200,000 characters
    assert await _found(client, token, "mussel -zebra") == []
    body = await gql(client, SEARCH, {"search": "remediation"}, token=token)
    ((node,),) = [body["data"]["documents"]["nodes"]]
    assert node["rowId"] == str(corpus.big) and node["searchRank"] > 0


async def test_the_snippet_shows_the_matching_chunk(executor_app: Starlette, corpus: Corpus) -> None:
    async with app_client(executor_app) as client:
        token = await sign_in(client, corpus.admin)
        body = await gql(
            client, 'query { documents(search: "\\"zebra mussel\\"") { nodes { searchSnippet } } }', token=token
        )
    ((node,),) = [body["data"]["documents"]["nodes"]]
    assert "<mark>zebra</mark> <mark>mussel</mark>" in node["searchSnippet"]


def _statement(words: str) -> str:
    """The executor's search statement (its match condition), with the words inlined for EXPLAIN."""
    query = select(func.websearch_to_tsquery(ENGLISH, words)).scalar_subquery()
    _stmt, _rank, matches = search_select(query)
    statement = select(DOCUMENTS.c.id, DOCUMENTS.c.name).where(matches)
    dialect: Any = postgresql.dialect()  # type: ignore[no-untyped-call]
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _superuser_dsn(database: Database) -> str:
    dsn = database.superuser_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    return re.sub(r"/postgres(\?|$)", rf"/{database.name}\1", dsn, count=1)


async def _plan(conn: asyncpg.Connection, role: str, tenant: TenantRef, sql: str) -> str:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {role}")
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch(f"EXPLAIN (VERBOSE) {sql}")
    return "\n".join(r[0] for r in rows)


async def test_the_gin_indexes_serve_the_search_of_gwm_app(database: Database, corpus: Corpus) -> None:
    conn = await asyncpg.connect(_superuser_dsn(database))
    try:
        # The caller's statement, as gwm_app: documents are read by id from the function's array.
        outer = await _plan(conn, "gwm_app", corpus.tenant, _statement(TAIL_PHRASE))
        # (uuid equality is leakproof, so the id match may be an index condition; for a tenant of a few
        # documents the planner may as well take them through a tenant index and filter the ids)
        assert re.search(r"(Index Scan using \w+|Bitmap Heap Scan) on public.documents", outer), outer
        assert re.search(r"(Index Cond|Filter): \(.*\bid = ANY \(\(InitPlan", outer), outer
        assert "gwm_document_search" in outer and "Seq Scan" not in outer, outer

        # What the function runs, as the role it runs as (gwm_lookup): both GIN indexes.
        body = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'gwm_document_search'")
        inner_sql = body.replace("p_query", f"websearch_to_tsquery('english', '{TAIL_PHRASE}')")
        inner = await _plan(conn, "gwm_lookup", corpus.tenant, inner_sql)
        assert "Bitmap Index Scan on ix_document_text_chunks_search_vector" in inner, inner
        assert "Bitmap Index Scan on ix_documents_search_vector" in inner, inner
        assert "Seq Scan" not in inner, inner

        # Without the function, `@@` under gwm_app's tenant policy cannot use the index (not LEAKPROOF).
        direct = await _plan(
            conn, "gwm_app", corpus.tenant,
            f"SELECT document_id FROM document_text_chunks WHERE search_vector @@ websearch_to_tsquery("
            f"'english', '{TAIL_PHRASE}')",
        )
        # (it reads every chunk of the tenant and filters them)
        assert "ix_document_text_chunks_search_vector" not in direct, direct
        conditions = [line.strip() for line in direct.splitlines() if "@@" in line]
        assert conditions and all(line.startswith("Filter:") for line in conditions), direct

        # At run time: a search by gwm_app scans the chunks' GIN index.
        before = await _index_scans(conn)
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE gwm_app")
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(corpus.tenant.id))
            found = await conn.fetch(_statement(TAIL_PHRASE))
        assert [r["id"] for r in found] == [corpus.big]
        await conn.execute("SELECT pg_stat_force_next_flush()")
        async with asyncio.timeout(30):
            while await _index_scans(conn) <= before:  # noqa: ASYNC110 - statistics arrive when flushed
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def _index_scans(conn: asyncpg.Connection) -> int:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    value = await conn.fetchval(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'ix_document_text_chunks_search_vector'"
    )
    return int(value or 0)
