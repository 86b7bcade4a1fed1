"""Activities and their participants."""

from __future__ import annotations

import strawberry

__all__ = ["ActivitiesQuery"]


@strawberry.type
class ActivitiesQuery:
    """Root fields of this domain (being built)."""
