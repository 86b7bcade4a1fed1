"""A database schema as plain data, read from a live PostgreSQL catalog, and the diff of two of them.

`tests.support.prisma` builds the same structure from the seed's Prisma block and
`tests.support.deviations` applies the deliberate changes to it; `diff` then prints every
remaining difference as one readable line. Objects are matched by what they are (columns, sort
order, referential actions), not by name, because the seed's Prisma names and our naming
convention differ; a name is compared only where the expected side states one.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "Catalog",
    "Column",
    "ForeignKey",
    "Index",
    "Key",
    "Table",
    "diff",
    "normalize_check",
    "normalize_default",
    "normalize_expression",
    "read_catalog",
    "render_ddl",
    "value_check",
]


@dataclass(frozen=True, slots=True)
class Column:
    type: str  # as format_type() prints it: "character varying(255)", "timestamp(6) with time zone"
    nullable: bool
    default: str | None = None  # normalize_default() form
    generated: str | None = None  # normalize_expression() of a GENERATED ALWAYS AS (...) STORED column

    def describe(self) -> str:
        parts = [self.type, "NULL" if self.nullable else "NOT NULL"]
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.generated is not None:
            parts.append(f"GENERATED ALWAYS AS ({self.generated}) STORED")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Key:
    """A unique key: a UNIQUE constraint or a plain unique btree index (Prisma makes the latter)."""

    columns: tuple[str, ...]
    nulls_not_distinct: bool = False
    name: str | None = field(default=None, compare=False)

    def describe(self) -> str:
        nnd = " NULLS NOT DISTINCT" if self.nulls_not_distinct else ""
        return f"UNIQUE{nnd} ({', '.join(self.columns)})"


@dataclass(frozen=True, slots=True)
class Index:
    """An index that is not a plain unique key. Columns read "created_at DESC" where not ascending."""

    columns: tuple[str, ...]
    method: str = "btree"
    unique: bool = False
    include: tuple[str, ...] = ()
    predicate: str | None = None
    name: str | None = field(default=None, compare=False)

    def describe(self) -> str:
        text_ = f"{'UNIQUE ' if self.unique else ''}INDEX USING {self.method} ({', '.join(self.columns)})"
        if self.include:
            text_ += f" INCLUDE ({', '.join(self.include)})"
        if self.predicate:
            text_ += f" WHERE {self.predicate}"
        return text_


@dataclass(frozen=True, slots=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str  # CASCADE | RESTRICT | NO ACTION | SET NULL | SET DEFAULT
    on_update: str
    set_null_columns: tuple[str, ...] = ()  # ON DELETE SET NULL (cols): PostgreSQL 15+
    match_full: bool = False
    deferrable: bool = False
    name: str | None = field(default=None, compare=False)

    def describe(self) -> str:
        on_delete = self.on_delete
        if self.set_null_columns:
            on_delete += f" ({', '.join(self.set_null_columns)})"
        text_ = (
            f"FOREIGN KEY ({', '.join(self.columns)}) REFERENCES {self.ref_table}"
            f"({', '.join(self.ref_columns)}) ON DELETE {on_delete} ON UPDATE {self.on_update}"
        )
        if self.match_full:
            text_ += " MATCH FULL"
        if self.deferrable:
            text_ += " DEFERRABLE"
        return text_


@dataclass(slots=True)
class Table:
    name: str
    columns: dict[str, Column] = field(default_factory=dict)
    primary_key: tuple[str, ...] | None = None
    unique_keys: list[Key] = field(default_factory=list)
    indexes: list[Index] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # name -> normalize_check() form
    # The seed's @@fulltext: a MySQL-only index with no PostgreSQL form. It stays on the expected
    # side until a deliberate change replaces it, so an unhandled one is reported.
    fulltext: list[tuple[str, ...]] = field(default_factory=list)
    # A table the seed does not have (an `add_table` change): only its presence is compared here;
    # its definition is the models' (named in defined_by), which `alembic check` holds the
    # migrations to.
    defined_by: str | None = None


Catalog = dict[str, Table]

_NUMERIC_TYPES = ("smallint", "integer", "bigint", "real", "double precision", "numeric")
_JSON_TYPES = ("json", "jsonb")
_NOW = {"current_timestamp", "now()", "transaction_timestamp()"}
# A literal, possibly parenthesised, followed by any number of casts as ruleutils prints them.
_CAST = r"::(?:\"[^\"]+\"|[a-z_][a-z0-9_]*(?: [a-z_][a-z0-9_]*)*)(?:\(\d+(?:,\s*\d+)?\))?(?:\[\])?"
_LITERAL = re.compile(rf"^\(?(?P<lit>'(?:[^']|'')*'|-?\d+(?:\.\d+)?)\)?(?:{_CAST})*$")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def normalize_default(expression: str | None, pg_type: str) -> str | None:
    """One spelling per default value, so the seed's and the catalog's forms compare equal.

    CURRENT_TIMESTAMP and now() are the same function; a literal loses its casts (the column
    type is compared on its own) and numbers, booleans and JSON are compared by value.
    """
    if expression is None:
        return None
    expr = " ".join(expression.split())
    if expr.lower() in _NOW:
        return "now()"
    match = _LITERAL.match(expr)
    if match is None:
        return expr if expr.lower() not in ("true", "false") else expr.lower()
    lit = match["lit"]
    value = lit[1:-1].replace("''", "'") if lit.startswith("'") else lit
    base = pg_type.split("(", 1)[0].strip()
    if base in _NUMERIC_TYPES:
        try:
            number = Decimal(value)
        except InvalidOperation:
            return expr
        return format(number.normalize(), "f") if number != 0 else "0"
    if base == "boolean":
        return {"t": "true", "true": "true", "f": "false", "false": "false"}.get(value.lower(), expr)
    if base in _JSON_TYPES:
        try:
            return _quote(json.dumps(json.loads(value), sort_keys=True, separators=(",", ":")))
        except ValueError:
            return expr
    return _quote(value)


_CAST_ANY = re.compile(_CAST)


def normalize_expression(expression: str) -> str:
    """A comparable fingerprint of an SQL expression: casts, parentheses and spacing dropped.

    ruleutils adds casts and parentheses the author never wrote; two expressions with the same
    fingerprint call the same functions on the same operands in the same order.
    """
    out: list[str] = []
    for piece in re.split(r"('(?:[^']|'')*')", expression):
        if piece.startswith("'"):
            out.append(piece)
            continue
        piece = _CAST_ANY.sub("", piece.lower())
        out.append(re.sub(r'[\s()"]+', "", piece))
    return "".join(out)


_CHECK_IN = re.compile(
    r"^CHECK \(+(?P<col>\"[^\"]+\"|\w+)\)?(?:" + _CAST + r")? = ANY \((?P<rest>.*)\)$", re.DOTALL
)
_STRING = re.compile(r"'((?:[^']|'')*)'")


def normalize_check(definition: str) -> str:
    """A value-set CHECK as "col IN ('a', 'b')" (values sorted); any other as printed."""
    match = _CHECK_IN.match(definition.strip())
    if match is not None:
        rest = match["rest"]
        leftover = _CAST_ANY.sub("", _STRING.sub("", rest))
        if re.fullmatch(r"[\s()\[\],]*ARRAY\[[\s(),]*\][\s()\[\]]*", leftover):
            values = sorted(v.replace("''", "'") for v in _STRING.findall(rest))
            return f"{match['col'].strip(chr(34))} IN ({', '.join(_quote(v) for v in values)})"
    text_ = " ".join(definition.split())
    # pg_get_constraintdef prints "CHECK (<expr>)": keep just <expr>, as the TOML spells it.
    if text_.startswith("CHECK (") and text_.endswith(")"):
        text_ = text_[len("CHECK (") : -1]
    return text_


def value_check(column: str, values: Iterable[str]) -> str:
    """The normalize_check() form of CHECK (column IN (values))."""
    return f"{column} IN ({', '.join(_quote(v) for v in sorted(values))})"


# --- reading a live catalog ------------------------------------------------------------------
# ("char" columns are cast to text: asyncpg returns the internal "char" type as bytes.)

_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

_TABLES_SQL = """
SELECT c.relname AS table_name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')
"""

_COLUMNS_SQL = """
SELECT c.relname AS table_name, a.attname AS column_name,
       format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
       a.attgenerated::text AS generated, a.attidentity::text AS identity,
       pg_get_expr(d.adbin, d.adrelid) AS expression
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')
ORDER BY c.relname, a.attnum
"""

_CONSTRAINTS_SQL = """
SELECT c.relname AS table_name, con.conname AS name, con.contype::text AS kind,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord)
         AS columns,
       fc.relname AS ref_table,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord)
         AS ref_columns,
       ARRAY(SELECT a.attname::text FROM unnest(con.confdelsetcols) WITH ORDINALITY AS k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord)
         AS set_null_columns,
       con.confupdtype::text AS on_update, con.confdeltype::text AS on_delete,
       con.confmatchtype::text AS match_type,
       con.condeferrable AS deferrable, con.convalidated AS validated,
       pg_get_constraintdef(con.oid) AS definition,
       CASE WHEN con.contype IN ('p', 'u') THEN i.indnullsnotdistinct END AS nulls_not_distinct
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class fc ON fc.oid = con.confrelid
LEFT JOIN pg_index i ON i.indexrelid = con.conindid
WHERE n.nspname = :schema AND con.contype IN ('p', 'u', 'f', 'c', 'x')
ORDER BY c.relname, con.conname
"""

_INDEXES_SQL = """
SELECT c.relname AS table_name, ic.relname AS name, am.amname AS method,
       i.indisunique AS is_unique, i.indnullsnotdistinct AS nulls_not_distinct,
       i.indnkeyatts AS key_count,
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnatts) AS k
             ORDER BY k) AS columns,
       i.indoption::int2[] AS options,
       pg_get_expr(i.indpred, i.indrelid, true) AS predicate,
       i.indisvalid AS valid
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema
  AND NOT EXISTS (SELECT 1 FROM pg_constraint con
                  WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                    AND con.contype IN ('p', 'u', 'x'))
ORDER BY c.relname, ic.relname
"""


async def read_catalog(
    conn: AsyncConnection, *, schema: str = "public", exclude: Sequence[str] = ("alembic_version",)
) -> Catalog:
    """The tables of `schema` as they are now (any role can read pg_catalog; RLS does not apply)."""
    params = {"schema": schema}
    catalog: Catalog = {}
    for row in (await conn.execute(text(_TABLES_SQL), params)).mappings():
        if row["table_name"] not in exclude:
            catalog[row["table_name"]] = Table(row["table_name"])

    for row in (await conn.execute(text(_COLUMNS_SQL), params)).mappings():
        table = catalog.get(row["table_name"])
        if table is None:
            continue
        pg_type = row["type"]
        expression = row["expression"]
        if row["identity"]:
            expression = f"GENERATED {'ALWAYS' if row['identity'] == 'a' else 'BY DEFAULT'} AS IDENTITY"
        if row["generated"]:
            column = Column(pg_type, not row["not_null"], generated=normalize_expression(expression or ""))
        else:
            column = Column(pg_type, not row["not_null"], normalize_default(expression, pg_type))
        table.columns[row["column_name"]] = column

    for row in (await conn.execute(text(_CONSTRAINTS_SQL), params)).mappings():
        table = catalog.get(row["table_name"])
        if table is None:
            continue
        kind, name, columns = row["kind"], row["name"], tuple(row["columns"])
        if kind == "p":
            table.primary_key = columns
        elif kind == "u":
            table.unique_keys.append(Key(columns, bool(row["nulls_not_distinct"]), name=name))
        elif kind == "f":
            table.foreign_keys.append(
                ForeignKey(
                    columns,
                    row["ref_table"],
                    tuple(row["ref_columns"]),
                    on_delete=_ACTIONS[row["on_delete"]],
                    on_update=_ACTIONS[row["on_update"]],
                    set_null_columns=tuple(row["set_null_columns"] or ()),
                    match_full=row["match_type"] == "f",
                    deferrable=bool(row["deferrable"]),
                    name=name,
                )
            )
        else:  # CHECK, EXCLUDE
            table.checks[name] = normalize_check(row["definition"])
            if not row["validated"]:
                table.checks[name] += " NOT VALID"

    for row in (await conn.execute(text(_INDEXES_SQL), params)).mappings():
        table = catalog.get(row["table_name"])
        if table is None:
            continue
        key_count = row["key_count"]
        names = list(row["columns"])
        keys = tuple(
            _index_column(col, opt) for col, opt in zip(names[:key_count], row["options"], strict=False)
        )
        include = tuple(names[key_count:])
        plain = all(" " not in k and "(" not in k for k in keys)
        if row["is_unique"] and row["method"] == "btree" and plain and not include and not row["predicate"]:
            table.unique_keys.append(Key(keys, bool(row["nulls_not_distinct"]), name=row["name"]))
        else:
            table.indexes.append(
                Index(
                    keys,
                    method=row["method"],
                    unique=row["is_unique"],
                    include=include,
                    predicate=row["predicate"],
                    name=row["name"],
                )
            )
    return catalog


def _index_column(column: str, option: int) -> str:
    desc, nulls_first = bool(option & 1), bool(option & 2)
    if desc:
        return f"{column} DESC" + ("" if nulls_first else " NULLS LAST")
    return column + (" NULLS FIRST" if nulls_first else "")


# --- comparing -------------------------------------------------------------------------------


def diff(expected: Catalog, actual: Catalog) -> list[str]:
    """Every difference between two catalogs, one readable line each; [] when they agree."""
    lines: list[str] = []
    for name in sorted(expected.keys() - actual.keys()):
        lines.append(f"{name}: table missing")
    for name in sorted(actual.keys() - expected.keys()):
        lines.append(f"{name}: unexpected table ({', '.join(actual[name].columns)})")
    for name in sorted(expected.keys() & actual.keys()):
        if expected[name].defined_by is not None:
            continue
        lines.extend(f"{name}: {line}" for line in _diff_table(expected[name], actual[name]))
    return lines


def _diff_table(exp: Table, act: Table) -> list[str]:
    lines: list[str] = []
    for col in exp.columns.keys() - act.columns.keys():
        lines.append(f"column {col} missing (expected {exp.columns[col].describe()})")
    for col in act.columns.keys() - exp.columns.keys():
        lines.append(f"unexpected column {col} {act.columns[col].describe()}")
    for col in exp.columns.keys() & act.columns.keys():
        e, a = exp.columns[col], act.columns[col]
        for attribute in fields(Column):
            ev, av = getattr(e, attribute.name), getattr(a, attribute.name)
            if ev != av:
                lines.append(f"column {col}: {attribute.name} expected {ev!r}, got {av!r}")
    if exp.primary_key != act.primary_key:
        lines.append(f"primary key expected {exp.primary_key}, got {act.primary_key}")
    lines += _diff_multiset("unique key", exp.unique_keys, act.unique_keys)
    lines += _diff_multiset("index", exp.indexes, act.indexes)
    lines += _diff_multiset("foreign key", exp.foreign_keys, act.foreign_keys)
    for name in exp.checks.keys() - act.checks.keys():
        lines.append(f"check {name} missing (expected {exp.checks[name]})")
    for name in act.checks.keys() - exp.checks.keys():
        lines.append(f"unexpected check {name}: {act.checks[name]}")
    for name in exp.checks.keys() & act.checks.keys():
        if exp.checks[name] != act.checks[name]:
            lines.append(f"check {name}: expected {exp.checks[name]}, got {act.checks[name]}")
    for columns in exp.fulltext:
        lines.append(f"@@fulltext({', '.join(columns)}) has no PostgreSQL form; list what replaces it")
    for columns in act.fulltext:
        lines.append(f"unexpected fulltext index ({', '.join(columns)})")
    return sorted(lines)


def _diff_multiset(
    label: str, expected: Sequence[Key | Index | ForeignKey], actual: Sequence[Key | Index | ForeignKey]
) -> list[str]:
    lines: list[str] = []
    exp_count, act_count = Counter(expected), Counter(actual)
    for item, n in (exp_count - act_count).items():
        lines.append(f"{label} missing: {item.describe()}" + (f" (x{n})" if n > 1 else ""))
    for item, n in (act_count - exp_count).items():
        named = f" [{item.name}]" if item.name else ""
        lines.append(f"unexpected {label}: {item.describe()}{named}" + (f" (x{n})" if n > 1 else ""))
    # Names count only where the expected side states one (the spec names some objects).
    for item in exp_count.keys() & act_count.keys():
        wanted = sorted(e.name for e in expected if e == item and e.name is not None)
        got = sorted(a.name or "" for a in actual if a == item)
        missing = [n for n in wanted if n not in got]
        if missing:
            lines.append(f"{label} {item.describe()}: named {got}, expected {missing}")
    return lines


# --- rendering (to prove the reader: render, read back, diff) ----------------------------------


def render_ddl(catalog: Catalog, schema: str) -> list[str]:
    """CREATE statements for `catalog` in `schema`, the way Prisma writes them (unique keys as
    unique indexes). Generated columns cannot be rendered: their expression is only a fingerprint."""
    statements: list[str] = []
    for table in catalog.values():
        parts: list[str] = []
        for name, column in table.columns.items():
            if column.generated is not None:
                raise ValueError(f"{table.name}.{name}: cannot render a generated column")
            spec = f'"{name}" {column.type}' + ("" if column.nullable else " NOT NULL")
            if column.default is not None:
                spec += f" DEFAULT {column.default}"
            parts.append(spec)
        if table.primary_key:
            parts.append(f"PRIMARY KEY ({', '.join(table.primary_key)})")
        for check_name, check in table.checks.items():
            parts.append(f'CONSTRAINT "{check_name}" CHECK ({check})')
        statements.append(f'CREATE TABLE {schema}."{table.name}" ({", ".join(parts)})')
    for table in catalog.values():
        for number, key in enumerate(table.unique_keys):
            nnd = " NULLS NOT DISTINCT" if key.nulls_not_distinct else ""
            name = key.name or f"{table.name}_key{number}"
            statements.append(
                f'CREATE UNIQUE INDEX "{name}" ON {schema}."{table.name}" ({", ".join(key.columns)}){nnd}'
            )
        for number, index in enumerate(table.indexes):
            name = index.name or f"{table.name}_idx{number}"
            statements.append(
                f'CREATE {"UNIQUE " if index.unique else ""}INDEX "{name}" ON {schema}."{table.name}" '
                f"USING {index.method} ({', '.join(index.columns)})"
                + (f" INCLUDE ({', '.join(index.include)})" if index.include else "")
                + (f" WHERE {index.predicate}" if index.predicate else "")
            )
    for table in catalog.values():
        for fk in table.foreign_keys:
            on_delete = fk.on_delete + (f" ({', '.join(fk.set_null_columns)})" if fk.set_null_columns else "")
            statements.append(
                f'ALTER TABLE {schema}."{table.name}" ADD FOREIGN KEY ({", ".join(fk.columns)}) '
                f'REFERENCES {schema}."{fk.ref_table}" ({", ".join(fk.ref_columns)})'
                + (" MATCH FULL" if fk.match_full else "")
                + f" ON DELETE {on_delete} ON UPDATE {fk.on_update}"
                + (" DEFERRABLE" if fk.deferrable else "")
            )
    return statements
