"""The declarative base, its naming convention, the shared column mixins and constraint helpers.

Every model derives from `Base`. Column types are spelled out per column (the seed's exact
PostgreSQL types); the mixins carry only the columns that are identical wherever they occur: the
UUID primary key, `tenant_id`, `created_at`/`updated_at` and `archived_at`/`archived_by`.
"""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import CheckConstraint, FetchedValue, ForeignKey, ForeignKeyConstraint, MetaData, Table, text
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "JSON_ARRAY",
    "JSON_OBJECT",
    "NAMING_CONVENTION",
    "NOW",
    "Archivable",
    "Base",
    "CreatedAt",
    "IPAddress",
    "Json",
    "TenantScoped",
    "Timestamps",
    "Timestamptz",
    "UUIDPrimaryKey",
    "Uuid",
    "tenant_fk",
    "values_check",
]

# Constraint and index names are generated from this convention, so a model never spells a name
# and Alembic autogenerate produces the same names as the migration. PostgreSQL truncates
# identifiers at 63 bytes; SQLAlchemy shortens longer generated names deterministically
# (prefix + "_" + 4 hex digits of their md5), identically at DDL time and in `alembic check`.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The seed's @db.Timestamptz(6) and @db.Uuid.
Timestamptz = TIMESTAMP(timezone=True, precision=6)
Uuid = UUID(as_uuid=True)
# Prisma `Json` is jsonb. none_as_null: Python None is SQL NULL on the nullable `Json?` columns,
# not the JSON literal 'null' (which IS NOT NULL would not catch).
Json = JSONB(none_as_null=True)
# What asyncpg returns for an INET column holding a host address (a value written with a
# prefix length, e.g. "10.0.0.0/24", would come back as an IPv4Interface/IPv6Interface). A str is
# accepted on write; reads give these objects.
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
JSON_ARRAY = text("'[]'::jsonb")
JSON_OBJECT = text("'{}'::jsonb")
NOW = text("now()")


class Base(DeclarativeBase):
    """Declarative base of every GWM model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    # Server-generated values (id, created_at, and updated_at set by the trigger on every UPDATE)
    # come back in the INSERT/UPDATE ... RETURNING of the flush, so an object is never stale after
    # a flush and reading one of them never needs another round trip (lazy loads are forbidden).
    __mapper_args__: Any = {"eager_defaults": True}

    if TYPE_CHECKING:
        # DeclarativeBase types it as any FromClause (a class may be mapped to a subquery); every
        # model here is mapped to a Table by its __tablename__.
        __table__: ClassVar[Table]


class UUIDPrimaryKey:
    """`id uuid PRIMARY KEY DEFAULT gen_random_uuid()` (core since PostgreSQL 13)."""

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, server_default=text("gen_random_uuid()"), sort_order=-100
    )


class TenantScoped:
    """`tenant_id uuid NOT NULL` referencing tenants; row-level security filters on it."""

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid,
        ForeignKey("tenants.id", ondelete="CASCADE", onupdate="CASCADE"),
        nullable=False,
        sort_order=-99,
    )


class CreatedAt:
    """`created_at timestamptz(6) NOT NULL DEFAULT now()`."""

    # sort_order: after the model's own columns, in this order, whichever mixins a model uses.
    created_at: Mapped[datetime.datetime] = mapped_column(
        Timestamptz, nullable=False, server_default=NOW, sort_order=90
    )


class Timestamps(CreatedAt):
    """created_at plus `updated_at`, kept current by the trigger trg_<table>_updated_at.

    The trigger (not the ORM) sets it, so raw SQL writes keep it true too; FetchedValue tells
    the ORM that an UPDATE changes it server-side, and eager_defaults reads it back.
    """

    updated_at: Mapped[datetime.datetime] = mapped_column(
        Timestamptz, nullable=False, server_default=NOW, server_onupdate=FetchedValue(), sort_order=91
    )


class Archivable:
    """`archived_at`/`archived_by`: archiving hides a record from default lists without deleting it.

    The table adds `tenant_fk("archived_by", "users", ondelete=None)` to its __table_args__.
    """

    archived_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz, sort_order=100)
    archived_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, sort_order=100)


def tenant_fk(column: str, parent: str, *, ondelete: str | None) -> ForeignKeyConstraint:
    """`(tenant_id, column) -> parent(tenant_id, id)`: a reference that cannot cross tenants.

    `ondelete` is the seed's action. "SET NULL" becomes PostgreSQL 15's `SET NULL (column)`, which
    nulls only the reference and keeps tenant_id (a plain SET NULL would null tenant_id too).
    None is NO ACTION (PostgreSQL's default, checked at the end of the statement, so deleting a
    whole tenant, which removes referencing and referenced rows in one statement, still works).
    """
    if ondelete == "SET NULL":
        ondelete = f"SET NULL ({column})"
    return ForeignKeyConstraint(
        ["tenant_id", column],
        [f"{parent}.tenant_id", f"{parent}.id"],
        ondelete=ondelete,
        onupdate="CASCADE",
    )


def values_check(column: str, values: Iterable[StrEnum]) -> CheckConstraint:
    """`CHECK (column IN (...))` named ck_<table>_<column>_values, generated from an enum.

    NULL passes a CHECK, so a nullable enum column stays nullable.
    """
    listed = ", ".join(f"'{value.value}'" for value in values)
    return CheckConstraint(f"{column} IN ({listed})", name=f"{column}_values")
