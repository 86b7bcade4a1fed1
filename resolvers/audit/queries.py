"""Root reads of the audit domain beyond the generic lists: one record's change history."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Table

import models
from resolvers.common.connections import root_connection
from resolvers.common.filters import filter_conditions, order_terms
from resolvers.common.loaders import Loaders
from resolvers.common.pagination import Page, PageArgs

__all__ = ["HISTORY_ORDER", "change_history"]

NodeT = TypeVar("NodeT")
_CHANGES: Table = models.ChangeHistory.__table__

# Newest first, like every entity's `history` field (index: entity_type, entity_id, change_timestamp DESC).
HISTORY_ORDER = (("change_timestamp", True),)


async def change_history(
    loaders: Loaders,
    entity_id: uuid.UUID,
    page: PageArgs,
    filter_input: Any,
    order_by: Sequence[Any] | None,
    make: Callable[[Any], NodeT],
) -> Page[NodeT]:
    """The change_history rows of one record (whatever its entity type), filtered and paged."""
    terms = order_terms(_CHANGES, order_by, HISTORY_ORDER)
    where = [_CHANGES.c.entity_id == entity_id, *filter_conditions(_CHANGES, filter_input)]
    return await root_connection(loaders, _CHANGES, page, terms, make, where=where)
