"""The `documents` root list: filtered and ordered, or full-text searched and ranked by relevance.

Search (`search:` given) matches `websearch_to_tsquery('english', search)`, the syntax of web
search boxes (words, "quoted phrases", `or`, `-excluded`), against `documents.search_vector` (the
name weighted A, the first 200,000 characters of the extracted text weighted B; models/documents.py)
and against the chunks of the whole extracted text (`document_text_chunks`, weight B, written by the
extraction job, sync/extraction.py). The ids of the matching documents come from
`gwm_document_search` (migration 0016), which reaches the GIN indexes; the rows are then read by id
under the caller's policy and the documents rule. Rows are ranked by `ts_rank_cd` (cover density: a
word of the name counts 1.0, of the text 0.4), the better of the document's vector and its best
chunk, and paged by keyset over (rank DESC, id), so the cursor carries the rank and a later page
continues the same ranking. `orderBy` replaces the relevance order when a
client wants search results by date instead.

Each result also carries a snippet: `ts_headline` over the name and the best matching chunk (about
4,000 characters), else the first `SNIPPET_SOURCE_CHARS` characters of the text (a name match).
`ts_headline` parses the text again, so it must run for the page's rows
only, never for every match: it is a plain output column of the ranked, limited statement, and
PostgreSQL evaluates an output expression this costly (procost 100) above the Sort and Limit,
once per returned row (planner.c, make_sort_input_target; tests/api/test_documents.py checks the
plan). Matched words come back between two private-use characters (removed from the source
first); `snippet_html` escapes the rest and turns them into `<mark>` elements, so the snippet is
HTML a client can render as is.

Under row-level security PostgreSQL would not use a GIN index for `@@` (ts_match_vq is not
LEAKPROOF, so it may not run before the tenant policy): hence the SECURITY DEFINER function, owned by
gwm_lookup whose own policy on the two tables is `true`, which filters on the tenant in
`app.tenant_id` itself (docs/api/documents.md, "The GIN index under row-level security").

Documents marked `is_searchable = false` never match a search; a search of stop words only
("the") matches nothing. Deleted documents (`is_deleted`) are left out unless the filter's
`includeDeleted` is true or it filters on `deletedAt`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import and_, any_, cast, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY, REGCONFIG, UUID
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import REAL

from models.document_text import CHUNK_SEARCH_VECTOR, DocumentTextChunk
from models.documents import DOCUMENT_SEARCH_VECTOR
from resolvers.common.connections import root_connection
from resolvers.common.filters import FilterError, conditions_showing_hidden_on_request, order_terms
from resolvers.common.loaders import Loaders
from resolvers.common.pagination import OrderTerm, Page, PageArgs, decode_cursor
from resolvers.documents.loaders import DOCUMENT_ROWS, DOCUMENTS

__all__ = [
    "DEFAULT_ORDER",
    "MAX_SEARCH_LENGTH",
    "SNIPPET_SOURCE_CHARS",
    "list_documents",
    "snippet_html",
]

NodeT = TypeVar("NodeT")

# Newest first when there is no search and no orderBy; the id breaks ties.
DEFAULT_ORDER: Sequence[tuple[str, bool]] = (("created_at", True),)
# How much of the extracted text the snippet looks at: ts_headline costs about 0.1 ms per 1,000
# characters per row (measured on PostgreSQL 18), so 5,000 keeps a page of 100 results near 50 ms.
SNIPPET_SOURCE_CHARS = 5_000
MAX_SEARCH_LENGTH = 500

# The text search configuration of the generated column; a query must use the same one.
_ENGLISH = literal_column("'english'::regconfig", type_=REGCONFIG)
_MARK_START, _MARK_END = "\ue000", "\ue001"
# For the compiled read path (schema/compiled/), which runs the same search expressions.
ENGLISH, MARK_START, MARK_END = _ENGLISH, _MARK_START, _MARK_END
_HEADLINE_OPTIONS = (
    f"StartSel={_MARK_START}, StopSel={_MARK_END},"
    ' MaxFragments=2, MinWords=8, MaxWords=24, FragmentDelimiter=" … "'
)
_READ_COLUMNS = [DOCUMENTS.c[c.name] for c in DOCUMENT_ROWS.columns]
_CHUNKS = DocumentTextChunk.__table__


def snippet_html(raw: str) -> str:
    """A ts_headline result as HTML: the text escaped, the matched words in `<mark>` elements."""
    return html.escape(raw, quote=False).replace(_MARK_START, "<mark>").replace(_MARK_END, "</mark>")


def _search_query(search: str) -> ColumnElement[Any]:
    words = search.strip()
    if not words:
        raise FilterError("`search` needs at least one word.")
    if len(words) > MAX_SEARCH_LENGTH:
        raise FilterError(f"`search` takes at most {MAX_SEARCH_LENGTH} characters.")
    # A scalar subquery: an InitPlan PostgreSQL evaluates once per statement, even in a generic
    # plan of the prepared statement, where a function of a parameter would run once per row.
    return select(func.websearch_to_tsquery(_ENGLISH, words)).scalar_subquery()


def _chunk_match(query: ColumnElement[Any]) -> ColumnElement[bool]:
    return and_(_CHUNKS.c.document_id == DOCUMENTS.c.id, CHUNK_SEARCH_VECTOR.bool_op("@@")(query))


def _best_chunk(query: ColumnElement[Any]) -> ColumnElement[Any]:
    """The text of the document's best-ranked matching chunk (null when only the name or the start matched)."""
    return (
        select(_CHUNKS.c.content)
        .where(_chunk_match(query))
        .order_by(func.ts_rank_cd(CHUNK_SEARCH_VECTOR, query).desc(), _CHUNKS.c.chunk_index)
        .limit(1)
        .correlate_except(_CHUNKS)
        .scalar_subquery()
    )


def _chunk_rank(query: ColumnElement[Any]) -> ColumnElement[Any]:
    """The best rank among the document's matching chunks (null for none)."""
    return (
        select(func.max(func.ts_rank_cd(CHUNK_SEARCH_VECTOR, query, type_=REAL)))
        .where(_chunk_match(query))
        .correlate_except(_CHUNKS)
        .scalar_subquery()
    )


def search_snippet_expression(query: ColumnElement[Any]) -> ColumnElement[Any]:
    """ts_headline over the name and the best matching chunk (else the start of the text), matched
    words between the private marks."""
    start = func.left(func.coalesce(DOCUMENTS.c.extracted_text, ""), SNIPPET_SOURCE_CHARS)
    text = func.coalesce(_best_chunk(query), start)
    source = func.translate(DOCUMENTS.c.name + "\n" + text, _MARK_START + _MARK_END, "")
    return func.ts_headline(_ENGLISH, source, query, _HEADLINE_OPTIONS)


def search_select(query: ColumnElement[Any]) -> tuple[Any, ColumnElement[Any], ColumnElement[Any]]:
    """The search's (statement, rank, match condition); see _search_select."""
    return _search_select(query)


def _search_select(query: ColumnElement[Any]) -> tuple[Any, ColumnElement[Any], ColumnElement[Any]]:
    """(statement, rank, match condition) of a search; the statement's rows carry rank and snippet.

    Documents marked `is_searchable = false` never match.
    """
    rank = func.greatest(
        func.ts_rank_cd(DOCUMENT_SEARCH_VECTOR, query, type_=REAL), func.coalesce(_chunk_rank(query), 0), type_=REAL
    )
    snippet = search_snippet_expression(query)
    stmt = select(*_READ_COLUMNS, rank.label("search_rank"), snippet.label("search_snippet"))
    # The matching ids come from gwm_document_search (migration 0016), which reaches both GIN indexes:
    # under the tenant policy `@@` could not use them (it is not LEAKPROOF). The rows themselves are
    # read here, under the caller's policy and the documents rule (uuid equality is leakproof, so the
    # id match can be an index condition).
    ids = ARRAY(UUID(as_uuid=True))
    # Cast: `= ANY (array)`, one InitPlan, not `= ANY (SELECT ...)` over a row set.
    hits = cast(select(func.public.gwm_document_search(query, type_=ids)).scalar_subquery(), ids)
    matches = and_(DOCUMENTS.c.id == any_(hits), DOCUMENTS.c.is_searchable)
    return stmt, rank, matches


def _check_cursor(page: PageArgs, terms: Sequence[OrderTerm]) -> None:
    """A cursor of another list or order is refused (decode_cursor checks its values' types), not sent to SQL."""
    cursor = page.before if page.backwards else page.after
    if cursor is not None:
        decode_cursor(cursor, terms)


async def list_documents(
    loaders: Loaders,
    page: PageArgs,
    make: Callable[[Any], NodeT],
    *,
    search: str | None,
    filter_input: Any,
    order_by: Sequence[Any] | None,
) -> Page[NodeT]:
    """The page of the `documents` root field.

    Raises FilterError or PaginationError (messages for the client) for bad input.
    """
    where = conditions_showing_hidden_on_request(
        DOCUMENTS, filter_input, flag="include_deleted", column="deleted_at", visible=DOCUMENTS.c.is_deleted.is_(False)
    )
    if search is None:
        base = select(*_READ_COLUMNS)
        terms = order_terms(DOCUMENTS, order_by, DEFAULT_ORDER)
    else:
        base, rank, matches = _search_select(_search_query(search))
        where.append(matches)
        terms = (
            order_terms(DOCUMENTS, order_by, DEFAULT_ORDER)
            if order_by
            else [OrderTerm("search_rank", rank, True), OrderTerm("id", DOCUMENTS.c.id, False)]
        )
    page.validate()
    _check_cursor(page, terms)
    return await root_connection(loaders, DOCUMENTS, page, terms, make, where=where, base=base)
