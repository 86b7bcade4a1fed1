"""Batched loaders (aiodataloader), created per request: one statement per relation per level.

`Loaders` hands out DataLoaders keyed by what they load, so every field that needs "users by id"
in one request shares one loader and one batch. Every statement starts from `readable()`, which
scopes it to the request's tenant (row-level security in PostgreSQL is the second wall) and to the
rows the caller's grants reach (resolvers/common/scope.py), and runs on the request's one
connection.

- `by_id(table)`: rows by primary key; a missing (or other tenant's) id gives None.
- `children(table, fk, ...)`: the rows whose `fk` is the key, ordered and paginated per parent in
  one statement (row_number() OVER (PARTITION BY fk ...)), fetching one extra row per parent so
  the connection knows whether there is a next page.
- `child_counts(table, fk, ...)`: totalCount of those children, per parent, one GROUP BY.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any

from aiodataloader import DataLoader
from sqlalchemy import Select, Table, func, select
from sqlalchemy.sql.elements import ColumnElement

from models.db import RequestConnection
from models.tracing import traced_batch
from resolvers.common.pagination import OrderTerm, PageArgs, keyset_condition, order_clauses
from resolvers.common.scope import ReadScope

__all__ = ["SECRET_COLUMNS", "ChildPage", "Loaders", "columns_of", "readable"]


# Stored secrets: never a GraphQL field, so never read by the API's loaders either (a row in memory
# is one more place a secret could leak from, e.g. a logged statement result).
SECRET_COLUMNS = frozenset(
    {
        ("users", "password_hash"),
        ("users", "mfa_secret_encrypted"),
        ("user_sessions", "session_token_hash"),
        ("external_opportunity_sources", "api_credentials_encrypted"),
    }
)


def columns_of(table: Table) -> list[Any]:
    """The columns the API reads of `table`: all but its stored secrets."""
    return [c for c in table.c if (table.name, c.name) not in SECRET_COLUMNS]


def readable(stmt: Select[Any], table: Table, scope: ReadScope) -> Select[Any]:
    """`stmt` limited to the rows of the tenant the caller may read: every read starts here."""
    column = table.c.id if table.name == "tenants" else table.c.tenant_id
    condition = scope.condition(table)
    if condition is None:
        return stmt.where(column == scope.tenant_id)
    return stmt.where(column == scope.tenant_id, condition)


class ChildPage:
    """One parent's slice of a child list: the rows of the page and whether more follow."""

    __slots__ = ("has_more", "rows")

    def __init__(self, rows: list[Any], has_more: bool) -> None:
        self.rows = rows
        self.has_more = has_more


class Loaders:
    def __init__(self, db: RequestConnection, scope: ReadScope) -> None:
        self.db = db
        self.scope = scope
        self._loaders: dict[Hashable, DataLoader[Any, Any]] = {}

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.db.tenant_id

    def custom(self, key: Hashable, batch: Any) -> DataLoader[Any, Any]:
        """The request's loader for `key`, made from `batch` the first time (domain-specific loads)."""
        loader = self._loaders.get(key)
        if loader is None:
            # A `loader.batch` span with its key count while telemetry is on (models/tracing.py).
            loader = DataLoader(batch_load_fn=traced_batch(key, batch), max_batch_size=1000)
            self._loaders[key] = loader
        return loader

    def by_id(self, table: Table) -> DataLoader[uuid.UUID, Any]:
        async def batch(keys: Sequence[uuid.UUID]) -> list[Any]:
            stmt = readable(select(*columns_of(table)), table, self.scope).where(table.c.id.in_(list(set(keys))))
            found = {row.id: row for row in (await self.db.execute(stmt)).all()}
            return [found.get(k) for k in keys]

        return self.custom(("by_id", table.name), batch)

    def children(
        self,
        table: Table,
        fk: str,
        terms: Sequence[OrderTerm],
        page: PageArgs,
        *,
        where: Sequence[ColumnElement[bool]] = (),
        where_key: Hashable = (),
        cursor_values: Sequence[Any] | None = None,
    ) -> DataLoader[uuid.UUID, ChildPage]:
        """Children by parent id, one page per parent. `where_key` identifies `where` for caching."""
        key = ("children", table.name, fk, tuple(t.name for t in terms), tuple(t.descending for t in terms),
               page, where_key)

        async def batch(keys: Sequence[uuid.UUID]) -> list[ChildPage]:
            parent = table.c[fk]
            rank = func.row_number().over(partition_by=parent, order_by=order_clauses(terms, reverse=page.backwards))
            inner = readable(select(*columns_of(table), rank.label("_rank")), table, self.scope).where(
                parent.in_(list(set(keys))), *where
            )
            if cursor_values is not None:
                inner = inner.where(keyset_condition(terms, cursor_values, forward=not page.backwards))
            ranked = inner.subquery()
            stmt = select(ranked).where(ranked.c._rank <= page.limit + 1).order_by(ranked.c[fk], ranked.c._rank)
            grouped: dict[uuid.UUID, list[Any]] = defaultdict(list)
            for row in (await self.db.execute(stmt)).all():
                grouped[row._mapping[fk]].append(row)
            pages = []
            for k in keys:
                rows = grouped.get(k, [])
                has_more = len(rows) > page.limit
                rows = rows[: page.limit]
                if page.backwards:
                    rows.reverse()
                pages.append(ChildPage(rows, has_more))
            return pages

        return self.custom(key, batch)

    def child_counts(
        self, table: Table, fk: str, *, where: Sequence[ColumnElement[bool]] = (), where_key: Hashable = ()
    ) -> DataLoader[uuid.UUID, int]:
        async def batch(keys: Sequence[uuid.UUID]) -> list[int]:
            parent = table.c[fk]
            stmt = (
                readable(select(parent, func.count()), table, self.scope)
                .where(parent.in_(list(set(keys))), *where)
                .group_by(parent)
            )
            counts = {row[0]: int(row[1]) for row in (await self.db.execute(stmt)).all()}
            return [counts.get(k, 0) for k in keys]

        return self.custom(("child_counts", table.name, fk, where_key), batch)
