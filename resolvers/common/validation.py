"""The validation registry: every rule a write checks before it writes anything, in one place.

A domain function calls `await validate(uow, entity, values, row=...)` before it assigns or adds
anything; the first failing rule raises, naming its field path and its rule id:

    ValidationFailed (models.errors.Invalid, VALIDATION)   a value the write cannot take
    ReferenceNotFound (models.errors.NotFound, NOT_FOUND)  the row the entity belongs to (a
                                                           reference with ON DELETE CASCADE) does not
                                                           exist in the caller's tenant

Rules come from two sources:

- derived from the models, for every audited model (models.audit_trail.AUDITED): a NOT NULL column
  given None (`required`), a NOT NULL text column given only spaces (`blank`), a value outside its
  CHECK value set (`enum`, models.base.values_check), a string longer than its column (`length`), a
  number with too many digits for its numeric(p, s) (`digits`), an integer outside its column's
  type (`integer`), a reference (models.base.tenant_fk) naming no row of the caller's tenant
  (`reference`), a parent reference whose chain reaches the row itself (`cycle`; it takes the
  tenant's hierarchy lock of the table first, so concurrent re-parentings take turns). Columns the
  write sets itself (ids, tenant, timestamps, the acting user) have no rules;
- declared, with `declare(...)` at module level of a resolvers module (every module under
  resolvers/ is imported when the registry is listed): ranges (`range_rule`), dates in order
  (`date_order`), value sets and lengths of JSON entries (`enum_rule`, `length_rule` on a
  pseudo-entity such as "proposal_review_stages"), anything else (`custom_rule`).

Each rule has a stable id (`<entity>.<field>.<kind>`), its entity and field, its error code and a
human sentence; docs/validation.md is generated from them (`gwm docs validation`, `render_docs()`),
and a test fails when the file and the registry differ. Rules run in the order of `RuleKind`
(required before length before reference...), declared rules after the derived ones of their kind.
Only the keys present in `values` are checked: which inputs a write requires is the GraphQL input's
and the domain function's business. Messages never quote the value (they reach clients and logs).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import importlib
import pkgutil
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from models.audit_trail import AUDITED
from models.base import Base
from models.errors import Invalid, NotFound
from models.unit_of_work import UnitOfWork

__all__ = [
    "DOCS_PATH",
    "Failure",
    "ReferenceNotFound",
    "Rule",
    "RuleContext",
    "RuleError",
    "RuleKind",
    "ValidationFailed",
    "custom_rule",
    "date_order",
    "declare",
    "enum_rule",
    "hierarchy_lock_key",
    "length_rule",
    "problems",
    "range_rule",
    "render_docs",
    "rules",
    "rules_for",
    "validate",
]

#: Where the generated reference lives, relative to the repository root.
DOCS_PATH = "docs/validation.md"

#: Columns the write sets itself, never taken from an input: no rules.
SYSTEM_COLUMNS = frozenset(
    {
        "id",
        "tenant_id",
        "created_at",
        "updated_at",
        "archived_at",
        "archived_by",
        "created_by",
        "updated_by",
        "deleted_at",
        "deleted_by",
        "uploaded_by",
        "added_by",
        "assigned_by",
        "acknowledged_by",
    }
)


class RuleKind(enum.StrEnum):
    """What a rule checks; rules run in this order."""

    REQUIRED = "required"
    BLANK = "blank"
    ENUM = "enum"
    LENGTH = "length"
    DIGITS = "digits"
    INTEGER = "integer"
    RANGE = "range"
    ORDER = "order"
    REFERENCE = "reference"
    CYCLE = "cycle"
    CUSTOM = "custom"


# -- errors ---------------------------------------------------------------------------------------


class RuleError:
    """Mixin of the errors a rule raises: `rule` is the id of the rule that failed."""

    rule: str


class ValidationFailed(Invalid, RuleError):
    """VALIDATION: a value refused by a rule of the registry."""

    def __init__(self, message: str, *, field: str, rule: str) -> None:
        super().__init__(message, field=field)
        self.rule = rule


class ReferenceNotFound(NotFound, RuleError):
    """NOT_FOUND: the row the entity belongs to does not exist in the caller's tenant."""

    def __init__(self, message: str, *, field: str, rule: str) -> None:
        super().__init__(message, field=field)
        self.rule = rule


# -- rules ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule's check sees: the unit of work, the values given and the row being changed."""

    uow: UnitOfWork
    entity: str
    values: Mapping[str, Any]
    row: Any | None

    def given(self, name: str) -> bool:
        return name in self.values

    def value(self, name: str) -> Any:
        """The value `name` will have after the write: the given one, else the row's current one."""
        if name in self.values:
            return _plain(self.values[name])
        return None if self.row is None else getattr(self.row, name, None)


@dataclass(frozen=True, slots=True)
class Failure:
    """A check's refusal: its message, and the field at fault when not the rule's own field."""

    message: str
    field: str | None = None


Check = Callable[[RuleContext], Awaitable[Failure | None]]


@dataclass(frozen=True, slots=True)
class Rule:
    """One validation rule; see the module docstring."""

    id: str
    entity: str
    field: str
    kind: RuleKind
    sentence: str
    check: Check = dataclasses.field(compare=False, repr=False)
    code: str = "VALIDATION"
    #: Fields whose presence in the values makes the rule run (default: its own field).
    triggers: frozenset[str] = frozenset()
    #: Values that fail this rule (and no rule before it): the generic test feeds them to validate().
    sample: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False)
    derived: bool = False

    def applies(self, values: Mapping[str, Any]) -> bool:
        return any(name in values for name in (self.triggers or {self.field}))

    def error(self, failure: Failure, under: str) -> ValidationFailed | ReferenceNotFound:
        path = failure.field or self.field
        path = f"{under}.{path}" if under else path
        if self.code == "NOT_FOUND":
            return ReferenceNotFound(failure.message, field=path, rule=self.id)
        return ValidationFailed(failure.message, field=path, rule=self.id)


_DECLARED: dict[str, Rule] = {}
_loaded = False
_loading = False


def declare(*new: Rule) -> None:
    """Add rules to the registry (at module level of a resolvers module); a taken id raises."""
    derived = _derived()
    for rule in new:
        if rule.id in _DECLARED or rule.id in derived:
            raise ValueError(f"validation rule {rule.id} is declared twice")
        _DECLARED[rule.id] = rule


def rules() -> list[Rule]:
    """Every rule, by entity, then in the order they run."""
    _load_declarations()
    everything = [*_derived().values(), *_DECLARED.values()]
    order = list(RuleKind)
    return sorted(everything, key=lambda r: (r.entity, order.index(r.kind), not r.derived))


def rules_for(entity: str) -> list[Rule]:
    """The rules of one entity, in the order they run."""
    return [r for r in rules() if r.entity == entity]


async def problems(
    uow: UnitOfWork, entity: str, values: Mapping[str, Any], *, row: Any | None = None, under: str = ""
) -> list[ValidationFailed | ReferenceNotFound]:
    """Every failure of the rules of `entity` over `values` (see `validate`)."""
    found: list[ValidationFailed | ReferenceNotFound] = []
    context = RuleContext(uow=uow, entity=entity, values=values, row=row)
    failed_fields: set[str] = set()
    for rule in _by_entity().get(entity, ()):
        if not rule.applies(values) or (rule.triggers or {rule.field}) & failed_fields:
            continue  # one failure per field: a too-long value is not also checked as a reference
        failure = await rule.check(context)
        if failure is not None:
            found.append(rule.error(failure, under))
            failed_fields.add(failure.field or rule.field)
    return found


async def validate(
    uow: UnitOfWork, entity: str, values: Mapping[str, Any], *, row: Any | None = None, under: str = ""
) -> None:
    """Refuse `values` (column -> value about to be written to `entity`) with the first failing rule.

    `row` is the object being changed (None on a create): rules across fields compare the given
    values over its current ones, cycle rules start from its id. `under` prefixes the field path
    (e.g. "review_stages.2"). Raises ValidationFailed or ReferenceNotFound (both name `field` and
    `rule`); unknown entities have no rules.
    """
    found = await problems(uow, entity, values, row=row, under=under)
    if found:
        raise found[0]


# -- declared rule constructors ---------------------------------------------------------------------


def range_rule(
    entity: str,
    name: str,
    *,
    low: int | Decimal | None = None,
    high: int | Decimal | None = None,
    sentence: str | None = None,
    rule_id: str | None = None,
) -> Rule:
    """`low <= value <= high` (either bound may be None); None values pass."""
    if low is None and high is None:
        raise ValueError("range_rule needs a bound")
    if low is not None and high is not None:
        bounds = f"between {low} and {high}"
    elif low is not None:
        bounds = f"at least {low}"
    else:
        bounds = f"at most {high}"
    message = f"{_words(name)} must be {bounds}."

    async def check(ctx: RuleContext) -> Failure | None:
        value = _plain(ctx.values[name])
        if value is None or isinstance(value, bool):
            return None
        try:
            number = Decimal(value) if not isinstance(value, Decimal) else value
        except (InvalidOperation, TypeError, ValueError):
            return Failure(f"{_words(name)} must be a number.")
        if (low is not None and number < low) or (high is not None and number > high):
            return Failure(message)
        return None

    sample_value: Any = (low - 1) if low is not None else (high + 1 if high is not None else None)
    return Rule(
        id=rule_id or f"{entity}.{name}.range",
        entity=entity,
        field=name,
        kind=RuleKind.RANGE,
        sentence=sentence or message[0].upper() + message[1:],
        check=check,
        sample={name: sample_value},
    )


def date_order(
    entity: str,
    earlier: str,
    later: str,
    *,
    sentence: str | None = None,
    rule_id: str | None = None,
    sample: Mapping[str, Any] | None = None,
) -> Rule:
    """`earlier <= later` once both have a value (given or stored); the field at fault is the one
    given (`later` when both are). Dates and instants compare by their UTC date when mixed."""
    message = f"{_words(later)} must not be before {_words(earlier)}."

    async def check(ctx: RuleContext) -> Failure | None:
        first, second = ctx.value(earlier), ctx.value(later)
        if first is None or second is None:
            return None
        a, b = _comparable(first, second)
        if a <= b:
            return None
        return Failure(message, field=later if ctx.given(later) else earlier)

    if sample is None:
        sample = _order_sample(entity, earlier, later)
    return Rule(
        id=rule_id or f"{entity}.{later}.order",
        entity=entity,
        field=later,
        kind=RuleKind.ORDER,
        sentence=sentence or f"{_words(earlier).capitalize()} comes no later than {_words(later)}.",
        check=check,
        triggers=frozenset({earlier, later}),
        sample=sample,
    )


def enum_rule(
    entity: str, name: str, values: Iterable[str], *, sentence: str | None = None, rule_id: str | None = None
) -> Rule:
    """The value is one of `values` (an enum class or strings); None passes."""
    allowed = tuple(v.value if isinstance(v, enum.Enum) else str(v) for v in values)
    return _enum(entity, name, allowed, derived=False, sentence=sentence, rule_id=rule_id)


def length_rule(
    entity: str, name: str, limit: int, *, sentence: str | None = None, rule_id: str | None = None
) -> Rule:
    """A string of at most `limit` characters; None passes."""
    return _length(entity, name, limit, derived=False, sentence=sentence, rule_id=rule_id)


def custom_rule(
    entity: str,
    name: str,
    kind: str,
    *,
    sentence: str,
    check: Check,
    code: str = "VALIDATION",
    triggers: Iterable[str] = (),
    sample: Mapping[str, Any] | None = None,
) -> Rule:
    """Any other check, with the id `<entity>.<name>.<kind>`; runs after every other kind. Give a
    `sample` (failing values) or write a test marked `validates("<id>")`."""
    return Rule(
        id=f"{entity}.{name}.{kind}",
        entity=entity,
        field=name,
        kind=RuleKind.CUSTOM,
        sentence=sentence,
        check=check,
        code=code,
        triggers=frozenset(triggers),
        sample=sample,
    )


# -- rules derived from the models ------------------------------------------------------------------

_VALUES_CHECK = re.compile(r"^\s*(\w+)\s+IN\s*\((.*)\)\s*$", re.S)
_QUOTED = re.compile(r"'((?:[^']|'')*)'")
_INT_BOUNDS = {SmallInteger: 2**15, Integer: 2**31, BigInteger: 2**63}


def _derived_rules(table: Table) -> list[Rule]:
    found: list[Rule] = []
    value_sets = _value_sets(table)
    references = _references(table)
    for column in table.columns:
        name = column.name
        if name in SYSTEM_COLUMNS:
            continue
        kind = column.type
        is_json = isinstance(kind, JSONB)
        if not column.nullable and not is_json:
            found.append(_required(table.name, name))
        if not column.nullable and isinstance(kind, String) and name not in value_sets:
            found.append(_blank(table.name, name))
        if name in value_sets:
            found.append(_enum(table.name, name, value_sets[name], derived=True))
        elif isinstance(kind, String) and kind.length is not None:
            found.append(_length(table.name, name, kind.length, derived=True))
        if isinstance(kind, Numeric) and not isinstance(kind, Integer) and kind.precision is not None:
            found.append(_digits(table.name, name, kind.precision, kind.scale or 0))
        for int_type, bound in _INT_BOUNDS.items():
            if type(kind) is int_type:
                found.append(_integer(table.name, name, bound))
        if name in references:
            parent, owner = references[name]
            found.append(_reference(table.name, name, parent, owner=owner))
            if parent is table:
                found.append(_cycle(table, name))
    return found


def _value_sets(table: Table) -> dict[str, tuple[str, ...]]:
    """column -> allowed values, read from the `ck_<table>_<column>_values` CHECKs (values_check)."""
    found: dict[str, tuple[str, ...]] = {}
    for constraint in table.constraints:
        if not isinstance(constraint, CheckConstraint) or not str(constraint.name or "").endswith("_values"):
            continue
        match = _VALUES_CHECK.match(str(constraint.sqltext))
        if match is not None:
            found[match.group(1)] = tuple(v.replace("''", "'") for v in _QUOTED.findall(match.group(2)))
    return found


def _references(table: Table) -> dict[str, tuple[Table, bool]]:
    """column -> (the table it references within the tenant, whether the row belongs to it)."""
    found: dict[str, tuple[Table, bool]] = {}
    for constraint in table.constraints:
        if not isinstance(constraint, ForeignKeyConstraint):
            continue
        names = [c.name for c in constraint.columns]
        if len(names) != 2 or names[0] != "tenant_id":
            continue
        parent = constraint.elements[0].column.table
        assert isinstance(parent, Table)
        found[names[1]] = (parent, (constraint.ondelete or "").upper() == "CASCADE")
    return found


def _required(entity: str, name: str) -> Rule:
    message = f"{_words(name)} is required."

    async def check(ctx: RuleContext) -> Failure | None:
        return Failure(message) if _plain(ctx.values[name]) is None else None

    return Rule(
        id=f"{entity}.{name}.required",
        entity=entity,
        field=name,
        kind=RuleKind.REQUIRED,
        sentence=f"{_words(name).capitalize()} cannot be set to null.",
        check=check,
        sample={name: None},
        derived=True,
    )


def _blank(entity: str, name: str) -> Rule:
    message = f"{_words(name)} must not be empty."

    async def check(ctx: RuleContext) -> Failure | None:
        value = _plain(ctx.values[name])
        return Failure(message) if isinstance(value, str) and not value.strip() else None

    return Rule(
        id=f"{entity}.{name}.blank",
        entity=entity,
        field=name,
        kind=RuleKind.BLANK,
        sentence=f"{_words(name).capitalize()} must not be empty or only spaces.",
        check=check,
        sample={name: "   "},
        derived=True,
    )


def _enum(
    entity: str,
    name: str,
    allowed: tuple[str, ...],
    *,
    derived: bool,
    sentence: str | None = None,
    rule_id: str | None = None,
) -> Rule:
    listed = ", ".join(allowed)
    message = f"{_words(name)} must be one of: {listed}."

    async def check(ctx: RuleContext) -> Failure | None:
        value = _plain(ctx.values[name])
        return Failure(message) if value is not None and value not in allowed else None

    return Rule(
        id=rule_id or f"{entity}.{name}.enum",
        entity=entity,
        field=name,
        kind=RuleKind.ENUM,
        sentence=sentence or f"{_words(name).capitalize()} is one of: {', '.join(f'`{v}`' for v in allowed)}.",
        check=check,
        sample={name: "not-a-listed-value"},
        derived=derived,
    )


def _length(
    entity: str, name: str, limit: int, *, derived: bool, sentence: str | None = None, rule_id: str | None = None
) -> Rule:
    message = f"{_words(name)} must be at most {limit} characters long."

    async def check(ctx: RuleContext) -> Failure | None:
        value = _plain(ctx.values[name])
        return Failure(message) if isinstance(value, str) and len(value) > limit else None

    return Rule(
        id=rule_id or f"{entity}.{name}.length",
        entity=entity,
        field=name,
        kind=RuleKind.LENGTH,
        sentence=sentence or f"{_words(name).capitalize()} is at most {limit} characters long.",
        check=check,
        sample={name: "x" * (limit + 1)},
        derived=derived,
    )


def _digits(entity: str, name: str, precision: int, scale: int) -> Rule:
    whole = precision - scale
    limit = Decimal(10) ** whole

    async def check(ctx: RuleContext) -> Failure | None:
        value = _plain(ctx.values[name])
        if value is None or isinstance(value, bool):
            return None
        try:
            number = value if isinstance(value, Decimal) else Decimal(str(value))
        except (InvalidOperation, ValueError):
            return Failure(f"{_words(name)} must be a number.")
        if not number.is_finite():
            return Failure(f"{_words(name)} must be a finite number.")
        if abs(number) >= limit:
            return Failure(f"{_words(name)} is out of range (fewer than {whole + 1} digits before the point).")
        if number != number.quantize(Decimal(1).scaleb(-scale)):
            return Failure(f"{_words(name)} takes at most {scale} decimal places.")
        return None

    return Rule(
        id=f"{entity}.{name}.digits",
        entity=entity,
        field=name,
        kind=RuleKind.DIGITS,
        sentence=f"{_words(name).capitalize()} has at most {whole} digits before the decimal point "
        f"and {scale} after it.",
        check=check,
        sample={name: Decimal(1) + Decimal(1).scaleb(-(scale + 1))},
        derived=True,
    )


def _integer(entity: str, name: str, bound: int) -> Rule:
    message = f"{_words(name)} is out of range."

    async def check(ctx: RuleContext) -> Failure | None:
        value = _plain(ctx.values[name])
        if isinstance(value, int) and not isinstance(value, bool) and not -bound <= value < bound:
            return Failure(message)
        return None

    return Rule(
        id=f"{entity}.{name}.integer",
        entity=entity,
        field=name,
        kind=RuleKind.INTEGER,
        sentence=f"{_words(name).capitalize()} is a whole number from -{bound} to {bound - 1}.",
        check=check,
        sample={name: bound},
        derived=True,
    )


def _reference(entity: str, name: str, parent: Table, *, owner: bool) -> Rule:
    what = _singular(parent.name)
    message = f"{_words(name)} names {_article(what)} {what} that does not exist."
    if owner:
        message = f"There is no {what} with this id."

    async def check(ctx: RuleContext) -> Failure | None:
        value = _plain(ctx.values[name])
        if value is None:
            return None
        if not isinstance(value, uuid.UUID):
            try:
                value = uuid.UUID(str(value))
            except ValueError:
                return Failure(f"{_words(name)} is not an id.")
        found = await ctx.uow.connection.execute(
            select(literal(1)).where(parent.c.id == value, parent.c.tenant_id == ctx.uow.tenant_id)
        )
        return None if found.first() is not None else Failure(message)

    return Rule(
        id=f"{entity}.{name}.reference",
        entity=entity,
        field=name,
        kind=RuleKind.REFERENCE,
        sentence=f"{_words(name).capitalize()} names {_article(what)} {what} of the same tenant"
        + (" (the row it belongs to: NOT_FOUND when missing)." if owner else "."),
        check=check,
        code="NOT_FOUND" if owner else "VALIDATION",
        sample={name: uuid.UUID("00000000-0000-4000-8000-000000000000")},
        derived=True,
    )


#: How far up a parent chain the cycle check looks before calling the chain a cycle.
MAX_DEPTH = 1000


def hierarchy_lock_key(table: str, tenant_id: uuid.UUID) -> str:
    """The key of the transaction-scoped advisory lock serialising re-parentings of `table` in a tenant
    (`pg_advisory_xact_lock(hashtextextended(key, 0))`); a write may take it earlier, before it reads."""
    return f"gwm.{table}.hierarchy/{tenant_id}"


def _cycle(table: Table, name: str) -> Rule:
    what = _singular(table.name)
    message = f"{_words(name)} would make the {what} its own ancestor."

    async def check(ctx: RuleContext) -> Failure | None:
        start = _plain(ctx.values[name])
        row_id = None if ctx.row is None else getattr(ctx.row, "id", None)
        if start is None or row_id is None:
            return None  # a new row has no descendants: it cannot close a cycle
        if start == row_id:
            return Failure(message)
        # Two re-parentings that together close a loop (A under B, B under A) would each pass
        # alone: they take turns on the tenant's hierarchy lock, and the walk below, a fresh
        # statement under READ COMMITTED, sees the parent the other committed.
        key = hierarchy_lock_key(table.name, ctx.uow.tenant_id)
        await ctx.uow.connection.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))
        chain = (
            select(table.c.id, table.c[name].label("up"), literal(1).label("depth"))
            .where(table.c.id == start, table.c.tenant_id == ctx.uow.tenant_id)
            .cte("chain", recursive=True)
        )
        chain = chain.union_all(
            select(table.c.id, table.c[name], chain.c.depth + 1).where(
                table.c.id == chain.c.up, table.c.tenant_id == ctx.uow.tenant_id, chain.c.depth < MAX_DEPTH
            )
        )
        found = await ctx.uow.connection.execute(
            select(literal(1)).select_from(chain).where((chain.c.id == row_id) | (chain.c.depth >= MAX_DEPTH))
        )
        return Failure(message) if found.first() is not None else None

    return Rule(
        id=f"{table.name}.{name}.cycle",
        entity=table.name,
        field=name,
        kind=RuleKind.CYCLE,
        sentence=f"Following {_words(name)} upwards never leads back to the {what} itself (no cycles).",
        check=check,
        derived=True,
    )


_derived_cache: dict[str, Rule] | None = None


def _derived() -> dict[str, Rule]:
    global _derived_cache
    if _derived_cache is None:
        found: dict[str, Rule] = {}
        for model in AUDITED:
            table = model.__table__
            for rule in _derived_rules(table):
                found[rule.id] = rule
        _derived_cache = found
    return _derived_cache


_by_entity_cache: tuple[int, dict[str, list[Rule]]] | None = None


def _by_entity() -> dict[str, list[Rule]]:
    global _by_entity_cache
    _load_declarations()
    if _by_entity_cache is None or _by_entity_cache[0] != len(_DECLARED):
        grouped: dict[str, list[Rule]] = {}
        for rule in rules():
            grouped.setdefault(rule.entity, []).append(rule)
        _by_entity_cache = (len(_DECLARED), grouped)
    return _by_entity_cache[1]


def _load_declarations() -> None:
    """Import every module under resolvers/, so each one's `declare(...)` has run."""
    global _loaded, _loading
    if _loaded or _loading:
        return  # listed already, or a module being imported asks (its own rules are declared by then)
    _loading = True
    try:
        import resolvers

        for module in pkgutil.walk_packages(resolvers.__path__, prefix="resolvers."):
            importlib.import_module(module.name)
        _loaded = True  # not before: a module that fails to import fails every listing, never a partial one
    finally:
        _loading = False


# -- the generated reference -----------------------------------------------------------------------


def render_docs() -> str:
    """docs/validation.md: every rule of the registry, by entity."""
    lines = [
        "# Validation rules",
        "",
        "<!-- Generated from resolvers/common/validation.py by `gwm docs validation`: do not edit by hand",
        "     (tests/writes/test_validation_docs.py fails when this file and the registry differ). -->",
        "",
        "Every write checks its input against these rules before it writes anything. A refusal is a",
        "`UserError` in the payload's `errors` with the rule's code and the path of the input field at",
        "fault (`[\"input\", \"projectName\"]`; entries of a list are numbered, e.g. `reviewStages.2.name`);",
        "the first failing rule is reported. Rules are derived from the models where possible (a",
        "column's NOT NULL, its CHECK value set, its length, its numeric precision, its foreign key",
        "within the tenant, a self-reference's hierarchy) and declared otherwise. A reference to",
        "another tenant's row fails exactly as a reference to no row. Derived rules apply to the",
        "columns a caller can write; ids, the tenant, timestamps and the acting user are set by the",
        "write itself. Before any of this, a string argument longer than its column may already be",
        "refused for the whole operation (`BAD_USER_INPUT`, schema/input_guard.py, docs/api.md);",
        "the rules below apply to every value that reaches a write.",
        "",
        "| Kind | What it checks |",
        "|---|---|",
        "| `required` | A NOT NULL column is not set to null. |",
        "| `blank` | A NOT NULL text column holds more than spaces. |",
        "| `enum` | The value is one of the column's value set (models/enums.py, the CHECK constraint). |",
        "| `length` | A string fits its column (characters). |",
        "| `digits` | A decimal fits its numeric(precision, scale) column. |",
        "| `integer` | A whole number fits its column's type. |",
        "| `range` | A number lies within its declared bounds. |",
        "| `order` | Two dates or instants are in order. |",
        "| `reference` | An id names a row of the caller's tenant. |",
        "| `cycle` | A parent reference does not make a row its own ancestor. |",
        "| `custom` | Any other declared rule. |",
        "",
    ]
    grouped: dict[str, list[Rule]] = {}
    for rule in rules():
        grouped.setdefault(rule.entity, []).append(rule)
    for entity in sorted(grouped):
        lines += [f"## {entity}", "", "| Rule id | Field | Code | Rule |", "|---|---|---|---|"]
        for rule in grouped[entity]:
            sentence = rule.sentence.replace("|", "\\|")
            lines.append(f"| `{rule.id}` | `{rule.field}` | {rule.code} | {sentence} |")
        lines.append("")
    return "\n".join(lines)


# -- helpers ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _words(name: str) -> str:
    return name.replace("_", " ")


def _singular(table: str) -> str:
    words = table.replace("_", " ")
    if words.endswith("ies"):
        return words[:-3] + "y"
    return words[:-1] if words.endswith("s") else words


def _article(word: str) -> str:
    return "an" if word[:1] in "aeio" else "a"  # "a user"


def _comparable(first: Any, second: Any) -> tuple[Any, Any]:
    if isinstance(first, datetime.datetime) != isinstance(second, datetime.datetime):
        return _as_date(first), _as_date(second)
    return first, second


def _as_date(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
        return aware.astimezone(datetime.UTC).date()
    return value


def _order_sample(entity: str, earlier: str, later: str) -> dict[str, Any] | None:
    """Values in the wrong order, typed as the entity's columns (None for a pseudo-entity)."""
    table = Base.metadata.tables.get(entity)
    if table is not None:
        values: dict[str, Any] = {}
        for name, day in ((earlier, 2), (later, 1)):
            kind = table.c[name].type
            if isinstance(kind, DateTime):
                values[name] = datetime.datetime(2030, 1, day, 12, tzinfo=datetime.UTC)
            elif isinstance(kind, Date):
                values[name] = datetime.date(2030, 1, day)
            elif isinstance(kind, Numeric | Integer):
                values[name] = day
            else:
                return None
        return values
    return None

