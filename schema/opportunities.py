"""Opportunity projects, their overrides and contact links; the pipeline summary."""

from __future__ import annotations

import strawberry

__all__ = ["OpportunitiesQuery"]


@strawberry.type
class OpportunitiesQuery:
    """Root fields of this domain (being built)."""
