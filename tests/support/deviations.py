"""The deliberate changes to the seed (docs/schema-deviations.toml), applied to the seed's catalog.

Each `[[change]]` is an edit of the expected catalog: add this column, make these foreign keys
composite, drop that index. Applying them turns "what Prisma would build from the seed" into
"what the migration must build", and the conformance test then demands exact equality, so a
change is never a blanket ignore: it states the result precisely. A change that no longer finds
its target (the column already exists, the index is gone, the rule matches nothing) is reported
as an error too, so the file cannot go stale.

Kinds (every entry also has `reason`, pointing to its decision):
- add_tenant_id {tables}: `tenant_id uuid NOT NULL` + FK -> tenants(id) ON DELETE/UPDATE CASCADE.
- add_column {table | tables, column, type, nullable = false, default?, generated?}
- set_default {columns, default}: columns are "table.column" or "*.column" (every table having it).
- set_type {columns, type, default?}: those columns get that type (and default, as it reads back after it).
- add_fk {columns, except?, references = "table.column", on_delete, on_update}
- composite_tenant_fks {tenant_column, unique_name}: every FK between two tables that both have
  the tenant column becomes (tenant, cols) -> parent(tenant, refs), keeping its actions; SET NULL
  becomes SET NULL (cols); each referenced parent gets UNIQUE (tenant, id) named unique_name.
- drop_index / add_index {table, columns, method = "btree", name?, where?, include?} (where: a partial index's
  predicate; include: a covering index's INCLUDE columns)
- index_where_none_leads {tables, column, name}: each listed table on which no primary key,
  unique key or index starts with `column` gets an index on (column) named name.format(...).
- nulls_not_distinct {table, columns}: that unique key becomes NULLS NOT DISTINCT.
- value_check {enum, values, columns, name}: CHECK (column IN values) named name.format(...).
- drop_fulltext {table, columns}: removes a seed @@fulltext (PostgreSQL has none).
- add_table {table, defined_by}: a table the seed lacks; it must exist, and its definition is the
  models' in `defined_by` (held to the migrations by `alembic check`), not compared here.
- add_unique {table, columns, name}: a unique key (a unique index on plain columns reads back as one).
- add_check {table, name, check}: any other CHECK, `check` as pg_get_constraintdef prints it.
- set_on_delete {columns, on_delete}: the foreign key holding each "table.column" (after the D2
  rule: the composite one) gets that ON DELETE action instead (SET NULL (cols) is dropped).
Index columns may be expressions ("lower(email::text)"), written as PostgreSQL prints them.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.support.catalog import (
    Catalog,
    Column,
    ForeignKey,
    Index,
    Key,
    Table,
    normalize_check,
    normalize_default,
    normalize_expression,
    value_check,
)

__all__ = ["DEVIATIONS_PATH", "KINDS", "apply_changes", "load_changes"]

DEVIATIONS_PATH = Path(__file__).resolve().parents[2] / "docs" / "schema-deviations.toml"

Change = dict[str, Any]


class _NotApplicable(Exception):
    """The change does not find what it changes: the file and the schema disagree."""


def load_changes(path: Path = DEVIATIONS_PATH) -> list[Change]:
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    unknown = set(data) - {"change"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    changes: list[Change] = data.get("change", [])
    return changes


def apply_changes(expected: Catalog, changes: list[Change]) -> tuple[Catalog, list[str]]:
    """A copy of `expected` with the changes applied in order, and a line per change that failed."""
    catalog = copy.deepcopy(expected)
    errors: list[str] = []
    for number, change in enumerate(changes, start=1):
        label = f"change #{number} ({change.get('kind')})"
        handler = KINDS.get(str(change.get("kind")))
        if handler is None:
            errors.append(f"{label}: unknown kind")
            continue
        if not str(change.get("reason", "")).strip():
            errors.append(f"{label}: no reason")
        try:
            handler(catalog, change)
        except (_NotApplicable, KeyError, TypeError, ValueError) as exc:
            detail = str(exc) if isinstance(exc, _NotApplicable) else f"{type(exc).__name__}: {exc}"
            errors.append(f"{label}: {detail}")
    return catalog, errors


# --- helpers -------------------------------------------------------------------------------------


def _table(catalog: Catalog, name: str) -> Table:
    if name not in catalog:
        raise _NotApplicable(f"no table {name}")
    return catalog[name]


def _column_targets(catalog: Catalog, patterns: list[str], excluded: list[str]) -> list[tuple[str, str]]:
    """("table", "column") for "t.c" (must exist) and "*.c" (every table with c; at least one)."""
    targets: list[tuple[str, str]] = []
    for pattern in patterns:
        table_name, _, column = pattern.partition(".")
        if table_name == "*":
            found = [(t, column) for t in sorted(catalog) if column in catalog[t].columns]
            if not found:
                raise _NotApplicable(f"no table has a column {column}")
            targets.extend(found)
        else:
            if column not in _table(catalog, table_name).columns:
                raise _NotApplicable(f"no column {pattern}")
            targets.append((table_name, column))
    for item in excluded:
        table_name, _, column = item.partition(".")
        if (table_name, column) not in targets:
            raise _NotApplicable(f"except {item}: not among the targets")
    wanted = [t for t in targets if f"{t[0]}.{t[1]}" not in excluded]
    if len(set(wanted)) != len(wanted):
        raise _NotApplicable("a column is targeted twice")
    return wanted


def _tables(change: Change) -> list[str]:
    if ("table" in change) == ("tables" in change):
        raise ValueError("give exactly one of table / tables")
    return [change["table"]] if "table" in change else list(change["tables"])


# --- kinds ---------------------------------------------------------------------------------------


def _add_column_to(table: Table, name: str, column: Column) -> None:
    if name in table.columns:
        raise _NotApplicable(f"{table.name}.{name} already exists")
    table.columns[name] = column


def _add_tenant_id(catalog: Catalog, change: Change) -> None:
    for name in change["tables"]:
        table = _table(catalog, name)
        _add_column_to(table, "tenant_id", Column("uuid", nullable=False))
        table.foreign_keys.append(ForeignKey(("tenant_id",), "tenants", ("id",), "CASCADE", "CASCADE"))


def _add_column(catalog: Catalog, change: Change) -> None:
    pg_type = change["type"]
    generated = change.get("generated")
    column = Column(
        pg_type,
        bool(change.get("nullable", False)),
        normalize_default(change.get("default"), pg_type),
        normalize_expression(generated) if generated else None,
    )
    for name in _tables(change):
        _add_column_to(_table(catalog, name), change["column"], column)


def _set_default(catalog: Catalog, change: Change) -> None:
    for table_name, column_name in _column_targets(catalog, change["columns"], change.get("except", [])):
        table = catalog[table_name]
        column = table.columns[column_name]
        default = normalize_default(change["default"], column.type)
        if column.default == default:
            raise _NotApplicable(f"{table_name}.{column_name} already defaults to {default}")
        table.columns[column_name] = replace(column, default=default)


def _set_type(catalog: Catalog, change: Change) -> None:
    for table_name, column_name in _column_targets(catalog, change["columns"], change.get("except", [])):
        table = catalog[table_name]
        column = table.columns[column_name]
        if column.type == change["type"]:
            raise _NotApplicable(f"{table_name}.{column_name} already is {change['type']}")
        default = normalize_default(change["default"], change["type"]) if "default" in change else column.default
        table.columns[column_name] = replace(column, type=change["type"], default=default)


def _add_fk(catalog: Catalog, change: Change) -> None:
    ref_table, _, ref_column = change["references"].partition(".")
    if ref_column not in _table(catalog, ref_table).columns:
        raise _NotApplicable(f"no column {change['references']}")
    for table_name, column_name in _column_targets(catalog, change["columns"], change.get("except", [])):
        table = catalog[table_name]
        if any(column_name in fk.columns for fk in table.foreign_keys):
            raise _NotApplicable(f"{table_name}.{column_name} already has a foreign key")
        table.foreign_keys.append(
            ForeignKey((column_name,), ref_table, (ref_column,), change["on_delete"], change["on_update"])
        )


def _composite_tenant_fks(catalog: Catalog, change: Change) -> None:
    tenant = change["tenant_column"]
    parents: set[str] = set()
    for table in catalog.values():
        if tenant not in table.columns:
            continue
        converted: list[ForeignKey] = []
        for fk in table.foreign_keys:
            parent = catalog[fk.ref_table]
            if tenant in fk.columns or tenant not in parent.columns:
                converted.append(fk)
                continue
            converted.append(
                replace(
                    fk,
                    columns=(tenant, *fk.columns),
                    ref_columns=(tenant, *fk.ref_columns),
                    set_null_columns=fk.columns if fk.on_delete == "SET NULL" else (),
                )
            )
            parents.add(fk.ref_table)
        table.foreign_keys = converted
    if not parents:
        raise _NotApplicable("no foreign key between two tenant-owned tables")
    for name in sorted(parents):
        parent = catalog[name]
        if parent.primary_key is None:
            raise _NotApplicable(f"{name} has no primary key")
        key = Key((tenant, *parent.primary_key), name=change["unique_name"].format(table=name))
        if key in parent.unique_keys:
            raise _NotApplicable(f"{name} already has {key.describe()}")
        parent.unique_keys.append(key)


def _index(change: Change) -> Index:
    return Index(
        tuple(change["columns"]),
        method=change.get("method", "btree"),
        unique=bool(change.get("unique", False)),
        include=tuple(change.get("include", ())),  # a covering index's INCLUDE columns
        predicate=change.get("where"),  # a partial index's WHERE, as pg_get_expr prints it
        name=change.get("name"),
    )


def _drop_index(catalog: Catalog, change: Change) -> None:
    table = _table(catalog, change["table"])
    index = _index(change)
    if index not in table.indexes:
        raise _NotApplicable(f"{table.name} has no {index.describe()}")
    table.indexes.remove(index)


def _add_index(catalog: Catalog, change: Change) -> None:
    table = _table(catalog, change["table"])
    index = _index(change)
    for column in index.columns + index.include:
        if "(" not in column and column.removesuffix(" DESC") not in table.columns:
            raise _NotApplicable(f"{table.name} has no column {column}")
    if index in table.indexes:
        raise _NotApplicable(f"{table.name} already has {index.describe()}")
    table.indexes.append(index)


def _index_where_none_leads(catalog: Catalog, change: Change) -> None:
    column = change["column"]
    added = 0
    for name in change["tables"]:
        table = _table(catalog, name)
        if column not in table.columns:
            raise _NotApplicable(f"{name} has no column {column}")
        leading = [key.columns for key in table.unique_keys] + [index.columns for index in table.indexes]
        if table.primary_key:
            leading.append(table.primary_key)
        if not any(columns[0] == column for columns in leading):
            table.indexes.append(Index((column,), name=change["name"].format(table=name, column=column)))
            added += 1
    if not added:
        raise _NotApplicable(f"every listed table already has an index leading with {column}")


def _nulls_not_distinct(catalog: Catalog, change: Change) -> None:
    table = _table(catalog, change["table"])
    key = Key(tuple(change["columns"]))
    if key not in table.unique_keys:
        raise _NotApplicable(f"{table.name} has no {key.describe()}")
    position = table.unique_keys.index(key)
    table.unique_keys[position] = replace(table.unique_keys[position], nulls_not_distinct=True)


def _value_check(catalog: Catalog, change: Change) -> None:
    values = list(change["values"])
    if len(set(values)) != len(values) or not values:
        raise ValueError(f"{change.get('enum')}: values must be distinct and non-empty")
    for table_name, column_name in _column_targets(catalog, change["columns"], []):
        table = catalog[table_name]
        name = change["name"].format(table=table_name, column=column_name)
        if name in table.checks:
            raise _NotApplicable(f"{table_name} already has a check {name}")
        table.checks[name] = value_check(column_name, values)


def _drop_fulltext(catalog: Catalog, change: Change) -> None:
    table = _table(catalog, change["table"])
    columns = tuple(change["columns"])
    if columns not in table.fulltext:
        raise _NotApplicable(f"{table.name} has no @@fulltext({', '.join(columns)})")
    table.fulltext.remove(columns)


def _add_table(catalog: Catalog, change: Change) -> None:
    name = change["table"]
    if name in catalog:
        raise _NotApplicable(f"{name} is already in the seed")
    catalog[name] = Table(name, defined_by=change["defined_by"])


def _add_unique(catalog: Catalog, change: Change) -> None:
    table = _table(catalog, change["table"])
    for column in change["columns"]:
        if column not in table.columns:
            raise _NotApplicable(f"{table.name} has no column {column}")
    key = Key(tuple(change["columns"]), name=change["name"])
    if key in table.unique_keys:
        raise _NotApplicable(f"{table.name} already has unique key {change['name']}")
    table.unique_keys.append(key)


def _add_check(catalog: Catalog, change: Change) -> None:
    table = _table(catalog, change["table"])
    if change["name"] in table.checks:
        raise _NotApplicable(f"{table.name} already has a check {change['name']}")
    table.checks[change["name"]] = normalize_check(change["check"])


def _set_on_delete(catalog: Catalog, change: Change) -> None:
    action = change["on_delete"]
    if action not in {"CASCADE", "RESTRICT", "NO ACTION", "SET NULL", "SET DEFAULT"}:
        raise ValueError(f"unknown ON DELETE action {action!r}")
    for table_name, column_name in _column_targets(catalog, change["columns"], []):
        table = catalog[table_name]
        matches = [i for i, fk in enumerate(table.foreign_keys) if column_name in fk.columns]
        if len(matches) != 1:
            raise _NotApplicable(f"{table_name}.{column_name} is in {len(matches)} foreign keys, not one")
        fk = table.foreign_keys[matches[0]]
        if fk.on_delete == action and not fk.set_null_columns:
            raise _NotApplicable(f"{table_name}.{column_name} already has ON DELETE {action}")
        table.foreign_keys[matches[0]] = replace(fk, on_delete=action, set_null_columns=())


KINDS: dict[str, Callable[[Catalog, Change], None]] = {
    "add_tenant_id": _add_tenant_id,
    "add_column": _add_column,
    "set_default": _set_default,
    "set_type": _set_type,
    "add_fk": _add_fk,
    "composite_tenant_fks": _composite_tenant_fks,
    "drop_index": _drop_index,
    "add_index": _add_index,
    "index_where_none_leads": _index_where_none_leads,
    "nulls_not_distinct": _nulls_not_distinct,
    "value_check": _value_check,
    "drop_fulltext": _drop_fulltext,
    "add_table": _add_table,
    "add_unique": _add_unique,
    "add_check": _add_check,
    "set_on_delete": _set_on_delete,
}
