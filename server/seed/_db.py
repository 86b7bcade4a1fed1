"""Writing seed rows under row-level security.

Every table forces RLS for every role, the owner included, so each transaction first sets
``app.tenant_id`` to the tenant it writes. Rows go in with SQLAlchemy Core executemany inserts
(``INSERT ... ON CONFLICT DO NOTHING``): PostgreSQL refuses COPY FROM on tables with RLS, and
"do nothing when the row exists" is what makes re-seeding a no-op.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Table, func, null, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import Computed, DefaultClause
from sqlalchemy.types import JSON

__all__ = [
    "INSERT_ORDER",
    "Row",
    "SeedError",
    "bootstrap_ids",
    "count_rows",
    "dump_tenant",
    "insert_rows",
    "insert_tenant",
    "metadata_tables",
    "set_tenant",
]

Row = dict[str, Any]

#: Parents before children, so every foreign key (composite ones included) finds its target.
INSERT_ORDER: tuple[str, ...] = (
    "tenant_configurations",
    "users",
    "roles",
    "external_opportunity_sources",
    "organizations",
    "contacts",
    "opportunity_projects",
    "user_roles",
    "external_opportunity_data",
    "opportunity_project_overrides",
    "opportunity_project_contacts",
    "polling_configurations",
    "external_data_changes",
    "document_categories",
    "documents",
    "document_associations",
    "activities",
    "activity_participants",
    "capture_plans",
    "proposals",
)

#: Tables that get at least this many rows are re-analyzed right after (see insert_rows).
_ANALYZE_AFTER = 1000

# A server default naming one of these is not reproducible, so the seed must supply the column.
_VOLATILE_DEFAULT = re.compile(r"now\(|current_|clock_|statement_|transaction_|random|uuid", re.IGNORECASE)


class SeedError(RuntimeError):
    """The database refuses what the seed is asked to do (e.g. the subdomain belongs to another tenant)."""


def metadata_tables() -> Mapping[str, Table]:
    """The tables of the application models (imported late: ``models`` is a sibling package)."""
    import models

    return models.Base.metadata.tables


def _needs_explicit_value(col: Column[Any]) -> bool:
    default = col.default
    if (
        default is not None
        and not getattr(default, "is_scalar", False)
        and not getattr(default, "is_sentinel", False)
    ):
        return True  # a Python callable or SQL expression evaluated per row
    server_default = col.server_default
    if isinstance(server_default, DefaultClause):
        arg = server_default.arg
        return bool(_VOLATILE_DEFAULT.search(str(getattr(arg, "text", arg))))
    return False


def check_rows(table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Fail early (before any SQL) if the rows could not be inserted reproducibly."""
    keys = set(rows[0])
    unknown = keys - set(table.c.keys())
    if unknown:
        raise SeedError(f"{table.name}: unknown columns {sorted(unknown)}")
    missing = sorted(c.name for c in table.c if c.name not in keys and _needs_explicit_value(c))
    if missing:
        raise SeedError(f"{table.name}: columns with a volatile default must be given: {missing}")
    generated = sorted(c.name for c in table.c if c.name in keys and isinstance(c.computed, Computed))
    if generated:
        raise SeedError(f"{table.name}: generated columns cannot be inserted: {generated}")
    for row in rows:
        if row.keys() != keys:
            raise SeedError(f"{table.name}: rows must all name the same columns ({sorted(keys ^ set(row))})")


async def set_tenant(conn: AsyncConnection, tenant_id: uuid.UUID) -> None:
    """Scope the current transaction to one tenant (RLS reads this setting)."""
    await conn.execute(text("SELECT set_config('app.tenant_id', :tid, true)"), {"tid": str(tenant_id)})


async def insert_tenant(conn: AsyncConnection, row: Mapping[str, Any]) -> bool:
    """Insert the tenants row unless it exists; True when it was created now.

    The caller must have set ``app.tenant_id`` to ``row["id"]`` (the RLS WITH CHECK). A new row fires
    the bootstrap trigger that creates the tenant's system user and "Manual entry" source.
    """
    tenants = metadata_tables()["tenants"]
    check_rows(tenants, [row])
    created = (
        await conn.execute(
            pg_insert(tenants).values(dict(row)).on_conflict_do_nothing().returning(tenants.c.id)
        )
    ).first()
    if created is not None:
        return True
    exists = (await conn.execute(select(tenants.c.id).where(tenants.c.id == row["id"]))).first()
    if exists is None:
        raise SeedError(
            f"subdomain {row['subdomain']!r} belongs to another tenant; delete it or pick another seed"
        )
    return False


async def bootstrap_ids(conn: AsyncConnection, tenant_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    """The (system user id, "Manual entry" source id) the tenants trigger created."""
    tables = metadata_tables()
    users, sources = tables["users"], tables["external_opportunity_sources"]
    user_id = (
        await conn.execute(
            select(users.c.id).where(users.c.tenant_id == tenant_id, users.c.is_system.is_(True))
        )
    ).scalar_one()
    source_id = (
        await conn.execute(
            select(sources.c.id).where(
                sources.c.tenant_id == tenant_id, sources.c.source_name == "Manual entry"
            )
        )
    ).scalar_one()
    return user_id, source_id


async def insert_rows(
    conn: AsyncConnection,
    table_name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    chunk_size: int = 2000,
    on_progress: Callable[[int], object] | None = None,
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, ``chunk_size`` rows per executemany."""
    if not rows:
        return
    table = metadata_tables()[table_name]
    check_rows(table, rows)
    stmt = pg_insert(table).on_conflict_do_nothing()
    # A Python None bound to a JSON column would be stored as JSON 'null'; the seed means SQL NULL.
    json_cols = [c.name for c in table.c if isinstance(c.type, JSON) and c.name in rows[0]]
    for start in range(0, len(rows), chunk_size):
        chunk = [dict(r) for r in rows[start : start + chunk_size]]
        for r in chunk:
            for c in json_cols:
                if r[c] is None:
                    r[c] = null()
        await conn.execute(stmt, chunk)
        if on_progress is not None:
            on_progress(len(chunk))
    if len(rows) >= _ANALYZE_AFTER:
        # Foreign-key checks run cached plans. If the statistics still describe the table as it was
        # before this transaction (say 25 demo rows), those plans are sequential scans and every
        # child row rescans the parent: quadratic. ANALYZE counts our own uncommitted rows and
        # invalidates the cached plans, so the children's checks use the primary key index.
        await conn.execute(text(f'ANALYZE "{table.name}"'))


async def count_rows(conn: AsyncConnection) -> dict[str, int]:
    """Rows per seeded table (tenants included) visible under the transaction's tenant."""
    tables = metadata_tables()
    counts = {}
    for name in ("tenants", *INSERT_ORDER):
        counts[name] = (await conn.execute(select(func.count()).select_from(tables[name]))).scalar_one()
    return counts


async def dump_tenant(conn: AsyncConnection) -> dict[str, list[dict[str, Any]]]:
    """Every visible row of every table, ordered by primary key (for reproducibility checks)."""
    dump = {}
    for name, table in sorted(metadata_tables().items()):
        result = await conn.execute(select(table).order_by(*table.primary_key.columns))
        dump[name] = [dict(r._mapping) for r in result]
    return dump
