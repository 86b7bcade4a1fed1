"""Batched loaders of the opportunity domain, one statement per batch, created per request.

- `current_external_data_by_project`: each project's current external version (or None).
- `active_overrides_by_project`: each project's active overrides, field name -> JSON value.

They live beside the generic loaders (`Loaders.by_id`, `children`...) in the request's `Loaders`
container, keyed by name, so every field of one request that needs them shares one batch.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from aiodataloader import DataLoader
from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import distinct_on

from models import ExternalOpportunityData, OpportunityProjectOverride
from resolvers.common.loaders import Loaders, readable
from resolvers.opportunities.effective import OverrideValue, current_version_order, json_text

__all__ = ["active_overrides_by_project", "current_external_data_by_project"]

_DATA: Table = ExternalOpportunityData.__table__
_OVERRIDES: Table = OpportunityProjectOverride.__table__


def current_external_data_by_project(loaders: Loaders) -> DataLoader[uuid.UUID, Any]:
    """Project id -> its current external_opportunity_data row (the newest if several are current)."""

    async def batch(keys: Sequence[uuid.UUID]) -> list[Any]:
        stmt = (
            readable(select(_DATA), _DATA, loaders.scope)
            .where(_DATA.c.opportunity_project_id.in_(set(keys)), _DATA.c.is_current_version)
            .ext(distinct_on(_DATA.c.opportunity_project_id))
            .order_by(_DATA.c.opportunity_project_id, *current_version_order(_DATA))
        )
        found = {row.opportunity_project_id: row for row in (await loaders.db.execute(stmt)).all()}
        return [found.get(k) for k in keys]

    return loaders.custom(("opportunities", "current_external_data_by_project"), batch)


def active_overrides_by_project(loaders: Loaders) -> DataLoader[uuid.UUID, dict[str, OverrideValue]]:
    """Project id -> {field_name: value} of its active overrides ({} when it has none)."""

    async def batch(keys: Sequence[uuid.UUID]) -> list[dict[str, OverrideValue]]:
        value = _OVERRIDES.c.override_value
        stmt = readable(
            select(
                _OVERRIDES.c.opportunity_project_id,
                _OVERRIDES.c.field_name,
                func.jsonb_typeof(value).label("json_type"),
                json_text(value).label("text"),
            ),
            _OVERRIDES,
            loaders.scope,
        ).where(_OVERRIDES.c.opportunity_project_id.in_(set(keys)), _OVERRIDES.c.is_active)
        found: dict[uuid.UUID, dict[str, OverrideValue]] = defaultdict(dict)
        for row in (await loaders.db.execute(stmt)).all():
            found[row.opportunity_project_id][row.field_name] = OverrideValue(row.json_type, row.text)
        return [found.get(k, {}) for k in keys]

    return loaders.custom(("opportunities", "active_overrides_by_project"), batch)
