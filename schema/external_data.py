"""External opportunity sources, versioned external data, detected changes, polling and API logs."""

from __future__ import annotations

import strawberry

__all__ = ["ExternalDataQuery"]


@strawberry.type
class ExternalDataQuery:
    """Root fields of this domain (being built)."""
