"""Capture plans and proposals."""

from __future__ import annotations

import strawberry

__all__ = ["CaptureQuery"]


@strawberry.type
class CaptureQuery:
    """Root fields of this domain (being built)."""
