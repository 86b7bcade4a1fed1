"""Documents, categories, associations and access logs; full-text search."""

from __future__ import annotations

import strawberry

__all__ = ["DocumentsQuery"]


@strawberry.type
class DocumentsQuery:
    """Root fields of this domain (being built)."""
