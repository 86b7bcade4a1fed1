"""`externalDataChanges`: the root list of detected changes, newest first.

Its filter is the shared column filter plus `acknowledged` (whether `acknowledged_at` is set),
which no column holds, so this list is built here from the shared pieces instead of `root_list`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table

from models import ExternalDataChange
from resolvers.common.connections import root_connection
from resolvers.common.filters import filter_conditions, order_terms
from resolvers.common.loaders import Loaders
from resolvers.common.pagination import Page, PageArgs

__all__ = ["CHANGES_DEFAULT_ORDER", "external_data_changes"]

_CHANGES: Table = ExternalDataChange.__table__
CHANGES_DEFAULT_ORDER: tuple[tuple[str, bool], ...] = (("change_timestamp", True),)


async def external_data_changes(
    loaders: Loaders,
    page: PageArgs,
    filter_input: Any,
    order_by: Sequence[Any] | None,
    make: Callable[[Any], Any],
) -> Page[Any]:
    """A page of the tenant's changes; raises FilterError or PaginationError on bad input."""
    terms = order_terms(_CHANGES, order_by, CHANGES_DEFAULT_ORDER)
    where = []
    if filter_input is not None:
        acknowledged = filter_input.acknowledged
        where = filter_conditions(_CHANGES, dataclasses.replace(filter_input, acknowledged=None))
        if acknowledged is not None:
            column = _CHANGES.c.acknowledged_at
            where.append(column.is_not(None) if acknowledged else column.is_(None))
    return await root_connection(loaders, _CHANGES, page, terms, make, where=where)
