"""Batched loaders of the sync API, one statement per batch, created per request.

- `unacknowledged_changes_by_project`: per project, how many of its detected external data changes
  of HIGH or CRITICAL impact nobody has acknowledged yet (only changes the caller may read count).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from aiodataloader import DataLoader
from sqlalchemy import Table, func, select

from models import ExternalDataChange
from models.enums import ImpactLevel
from resolvers.common.loaders import Loaders, readable

__all__ = ["ATTENTION_LEVELS", "unacknowledged_changes_by_project"]

_CHANGES: Table = ExternalDataChange.__table__

#: The impact levels whose changes wait for an acknowledgement.
ATTENTION_LEVELS: tuple[ImpactLevel, ...] = (ImpactLevel.HIGH, ImpactLevel.CRITICAL)


def unacknowledged_changes_by_project(loaders: Loaders) -> DataLoader[uuid.UUID, int]:
    """Project id -> its unacknowledged HIGH and CRITICAL changes the caller reads (0 when none)."""

    async def batch(keys: Sequence[uuid.UUID]) -> list[int]:
        project = _CHANGES.c.opportunity_project_id
        stmt = (
            readable(select(project, func.count().label("n")), _CHANGES, loaders.scope)
            .where(
                project.in_(set(keys)),
                _CHANGES.c.acknowledged_at.is_(None),
                _CHANGES.c.impact_level.in_([level.value for level in ATTENTION_LEVELS]),
            )
            .group_by(project)
        )
        found = {row[0]: int(row[1]) for row in (await loaders.db.execute(stmt)).all()}
        return [found.get(key, 0) for key in keys]

    return loaders.custom(("sync", "unacknowledged_changes_by_project"), batch)
