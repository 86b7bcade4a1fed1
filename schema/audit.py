"""The audit trail: audit logs, change history, permission audit."""

from __future__ import annotations

import strawberry

__all__ = ["AuditQuery"]


@strawberry.type
class AuditQuery:
    """Root fields of this domain (being built)."""
