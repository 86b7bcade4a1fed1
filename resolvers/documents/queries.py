"""The `documents` root list: filtered and ordered, or full-text searched and ranked by relevance.

Search (`search:` given) matches `documents.search_vector` (the name weighted A, the first 200,000
characters of the extracted text weighted B; models/documents.py) against
`websearch_to_tsquery('english', search)`, the syntax of web search boxes: words, "quoted
phrases", `or`, `-excluded`. Rows are ranked by `ts_rank_cd` (cover density: a word of the name
counts 1.0, of the text 0.4) and paged by keyset over (rank DESC, id), so the cursor carries the
rank and a later page continues the same ranking. `orderBy` replaces the relevance order when a
client wants search results by date instead.

Each result also carries a snippet: `ts_headline` over the name and the first
`SNIPPET_SOURCE_CHARS` characters of the text (a match further in still ranks, but its snippet
shows the beginning). `ts_headline` parses the text again, so it must run for the page's rows
only, never for every match: it is a plain output column of the ranked, limited statement, and
PostgreSQL evaluates an output expression this costly (procost 100) above the Sort and Limit,
once per returned row (planner.c, make_sort_input_target; tests/api/test_documents.py checks the
plan). Matched words come back between two private-use characters (removed from the source
first); `snippet_html` escapes the rest and turns them into `<mark>` elements, so the snippet is
HTML a client can render as is.

Known limit: under row-level security PostgreSQL does not use the GIN index on search_vector,
because `@@` (ts_match_vq) is not LEAKPROOF and so may not run before the tenant policy; a search
checks every document row of the tenant (2,000 rows of 10 kB: 17 ms, against 0.06 ms through the
index for a role without RLS). docs/api/documents.md lists the ways out.

Documents marked `is_searchable = false` never match a search; a search of stop words only
("the") matches nothing. Deleted documents (`is_deleted`) are left out unless the filter's
`includeDeleted` is true or it filters on `deletedAt`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import and_, func, literal_column, select
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import REAL

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


def search_snippet_expression(query: ColumnElement[Any]) -> ColumnElement[Any]:
    """ts_headline over the name and the start of the text, matched words between the private marks."""
    text = func.left(func.coalesce(DOCUMENTS.c.extracted_text, ""), SNIPPET_SOURCE_CHARS)
    source = func.translate(DOCUMENTS.c.name + "\n" + text, _MARK_START + _MARK_END, "")
    return func.ts_headline(_ENGLISH, source, query, _HEADLINE_OPTIONS)


def search_select(query: ColumnElement[Any]) -> tuple[Any, ColumnElement[Any], ColumnElement[Any]]:
    """The search's (statement, rank, match condition); see _search_select."""
    return _search_select(query)


def _search_select(query: ColumnElement[Any]) -> tuple[Any, ColumnElement[Any], ColumnElement[Any]]:
    """(statement, rank, match condition) of a search; the statement's rows carry rank and snippet.

    Documents marked `is_searchable = false` never match.
    """
    rank = func.ts_rank_cd(DOCUMENT_SEARCH_VECTOR, query, type_=REAL)
    snippet = search_snippet_expression(query)
    stmt = select(*_READ_COLUMNS, rank.label("search_rank"), snippet.label("search_snippet"))
    matches = and_(DOCUMENT_SEARCH_VECTOR.bool_op("@@")(query), DOCUMENTS.c.is_searchable)
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
