"""Effective values of a project's overridable fields, and where each one comes from.

The rule, for each field of `OVERRIDABLE` (named like its column):

1. OVERRIDE: the project has an active override of the field (`opportunity_project_overrides` with
   `is_active` and `field_name` = the column name). Its JSON value is read as the field's type; a
   JSON null, or a value that cannot be read as that type (e.g. "TBD" for a decimal), gives the
   value null. The override still wins then: it is the tenant's stated decision, and showing the
   external value instead would hide that the override is in force.
2. EXTERNAL: the project's current external version holds a value (not null).
3. LOCAL: the project's own column holds a value (only `title` and `description` exist there).
4. Otherwise the field has no effective value.

A project's current external version is its `external_opportunity_data` row with
`is_current_version`; should a project ever have several, the newest (`CURRENT_VERSION_ORDER`)
counts.

The pipeline summary needs the rule for `estimated_value_max` inside one SQL statement:
`effective_decimal_sql` writes it with the same reading of JSON values (`DECIMAL_TEXT`), and the
tests hold the SQL and the Python to the same crafted data.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import FromClause, Numeric, RowMapping, Text, and_, case, func, literal, literal_column
from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "DECIMAL_TEXT",
    "OVERRIDABLE",
    "Effective",
    "OverridableField",
    "OverrideValue",
    "ValueKind",
    "ValueSource",
    "current_version_order",
    "effective_decimal_sql",
    "effective_values",
    "json_text",
    "read_override",
]


class ValueSource(enum.StrEnum):
    """Where an effective value comes from."""

    OVERRIDE = "override"
    EXTERNAL = "external"
    LOCAL = "local"


class ValueKind(enum.Enum):
    STRING = "string"
    DECIMAL = "decimal"
    DATE = "date"
    DATETIME = "datetime"


@dataclass(frozen=True, slots=True)
class OverridableField:
    name: str  # the column of external_opportunity_data, and the overrides' field_name
    kind: ValueKind
    local: bool  # opportunity_projects has the column too


_S, _N, _D, _T = ValueKind.STRING, ValueKind.DECIMAL, ValueKind.DATE, ValueKind.DATETIME
OVERRIDABLE: tuple[OverridableField, ...] = (
    OverridableField("title", _S, True),
    OverridableField("description", _S, True),
    OverridableField("solicitation_status", _S, False),
    OverridableField("set_aside_type", _S, False),
    OverridableField("naics_codes", _S, False),
    OverridableField("estimated_value_min", _N, False),
    OverridableField("estimated_value_max", _N, False),
    OverridableField("posting_date", _D, False),
    OverridableField("response_due_date", _T, False),
    OverridableField("place_of_performance", _S, False),
)

# A decimal written as a JSON string: digits with an optional fraction, bounded so that the SQL
# cast can never fail. The same pattern runs in Python and in PostgreSQL (both read it alike).
DECIMAL_TEXT = r"^[-+]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})$"
_DECIMAL = re.compile(DECIMAL_TEXT)
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def current_version_order(table: FromClause) -> list[ColumnElement[Any]]:
    """Newest first: the version that counts when several are marked current."""
    return [table.c.data_snapshot_timestamp.desc(), table.c.version_number.desc(), table.c.id.desc()]


@dataclass(frozen=True, slots=True)
class OverrideValue:
    """An override's JSON value as PostgreSQL gives it: `jsonb_typeof` and the `#>> '{}'` text.

    Reading the text (not the decoded JSON) keeps decimals exact: JSON numbers never pass through
    a float.
    """

    json_type: str  # object, array, string, number, boolean, null
    text: str | None


@dataclass(frozen=True, slots=True)
class Effective:
    value: Any
    source: ValueSource


def read_override(kind: ValueKind, override: OverrideValue) -> Any:
    """The override's value as `kind`, or None (JSON null, or not readable as that kind)."""
    json_type, raw = override.json_type, override.text
    if raw is None or json_type == "null":
        return None
    if kind is ValueKind.STRING:
        return raw if json_type in ("string", "number", "boolean") else None
    if kind is ValueKind.DECIMAL:
        if json_type == "number" or (json_type == "string" and _DECIMAL.match(raw)):
            try:
                return Decimal(raw)
            except InvalidOperation:  # pragma: no cover - the pattern and JSON's grammar rule it out
                return None
        return None
    if json_type != "string":
        return None
    if kind is ValueKind.DATE:
        if not _DATE.match(raw):
            return None
        try:
            return dt.date.fromisoformat(raw)
        except ValueError:
            return None
    try:
        parsed = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None  # an instant needs its offset; guessing one would shift deadlines
    return parsed.astimezone(dt.UTC)


# The rows come as RowMapping (keyed by names and columns) or as plain dicts of names.
_Row = RowMapping | Mapping[str, Any]


def effective_values(
    project: _Row, current: _Row | None, overrides: Mapping[str, OverrideValue]
) -> dict[str, Effective | None]:
    """Field name -> its effective value and source (None: no source holds a value)."""
    out: dict[str, Effective | None] = {}
    for field in OVERRIDABLE:
        override = overrides.get(field.name)
        if override is not None:
            out[field.name] = Effective(read_override(field.kind, override), ValueSource.OVERRIDE)
        elif current is not None and current[field.name] is not None:
            out[field.name] = Effective(current[field.name], ValueSource.EXTERNAL)
        elif field.local and project[field.name] is not None:
            out[field.name] = Effective(project[field.name], ValueSource.LOCAL)
        else:
            out[field.name] = None
    return out


def json_text(value: ColumnElement[Any]) -> ColumnElement[str]:
    """`value #>> '{}'`: a jsonb scalar as text (strings unquoted), NULL for a JSON null."""
    return value.op("#>>", return_type=Text)(literal_column("'{}'::text[]"))


def _override_decimal_sql(value: ColumnElement[Any]) -> ColumnElement[Decimal]:
    raw = json_text(value)
    kind = func.jsonb_typeof(value)
    return case(
        (kind == "number", raw.cast(Numeric)),
        (and_(kind == "string", raw.regexp_match(DECIMAL_TEXT)), raw.cast(Numeric)),
        else_=literal(None, Numeric),
    )


def effective_decimal_sql(
    override_present: ColumnElement[bool],
    override_value: ColumnElement[Any],
    external: ColumnElement[Any],
    local: ColumnElement[Any] | None = None,
) -> ColumnElement[Decimal]:
    """The rule above for one decimal field, as a SQL expression over joined columns."""
    whens: list[tuple[ColumnElement[bool], ColumnElement[Any]]] = [
        (override_present, _override_decimal_sql(override_value)),
        (external.is_not(None), external),
    ]
    if local is not None:
        whens.append((local.is_not(None), local))
    return case(*whens, else_=literal(None, Numeric))
