"""How the read API loads document rows, and the extracted text of a document on demand.

`DOCUMENT_ROWS` is the documents table as every list and lookup of the API reads it: all columns
but `extracted_text` and the generated `search_vector`. Both can be megabytes per row (the text of
a 500-page PDF, and its tsvector), and a page of 100 documents must not carry them when the client
asked for names and dates. The text is read by its own batched statement, only when the
`extractedText` field is selected (`extracted_text_by_document`); the search vector is never read.

`DOCUMENT_ROWS` is a second `Table` object for the same SQL table, in a private MetaData. It must
never be mixed with `models.Document.__table__` in one statement (SQLAlchemy would treat them as
two FROM entries); statements that need the full table (the search) select its columns by name.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from aiodataloader import DataLoader
from sqlalchemy import Column, MetaData, Table, func, select

from models import Document
from resolvers.common.loaders import Loaders, readable

__all__ = ["DOCUMENTS", "DOCUMENT_ROWS", "extracted_text_by_document"]

DOCUMENTS: Table = Document.__table__
_LEFT_OUT = frozenset({"extracted_text", "search_vector"})

DOCUMENT_ROWS = Table(
    DOCUMENTS.name,
    MetaData(),
    *(
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in DOCUMENTS.columns
        if c.name not in _LEFT_OUT
    ),
)


def extracted_text_by_document(loaders: Loaders, max_length: int | None) -> DataLoader[uuid.UUID, str | None]:
    """Document id -> its extracted text, cut to `max_length` characters in the database (None: all)."""
    text = DOCUMENTS.c.extracted_text
    value = text if max_length is None else func.left(text, max_length)

    async def batch(keys: Sequence[uuid.UUID]) -> list[Any]:
        stmt = readable(select(DOCUMENTS.c.id, value.label("text")), DOCUMENTS, loaders.scope).where(
            DOCUMENTS.c.id.in_(set(keys))
        )
        found = {row.id: row.text for row in (await loaders.db.execute(stmt)).all()}
        return [found.get(k) for k in keys]

    # Keyed like the domain loaders of the other modules (see resolvers/opportunities/loaders.py).
    return loaders.custom(("documents", "extracted_text", max_length), batch)
