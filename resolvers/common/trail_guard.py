"""What a caller may see of the audit trail: the one rule for change_history and audit_logs rows.

A trail row is about one entity, named by (entity_type, entity_id) (auth.rules.ENTITY_TABLES maps
the type to its table). Two decisions, both from the caller's grants:

(a) The row is served only where the caller could read that entity's row: the table's own rule
    (`history:read`, `audit:read`) and the entity's row rule (auth.rules.READ_RULES), a
    project-scoped grant counting on the entity's project. The project is the live row's; for a
    deleted row, the one its deleting audit row recorded (before_values, written by the flush hook);
    an entity whose project cannot be found either way needs the permission tenant-wide. Own rows
    count as on the entity (a user's own account, its own role assignments). audit_logs rows whose
    entity_type is not an entity type are events (sign-in, a refused mutation): the table's rule is
    all they need. `trail_condition` is this rule as SQL; ReadScope.condition ANDs it into every
    read of those tables (root lists, each type's `history`, `node`, nested lists, counts).

(b) Within a served row, a value of a guarded column (auth.rules.FIELD_RULES for the entity's
    table) is served only to a caller who could read that field on that entity: the field's
    permission tenant-wide, or on the entity's project (found as in (a)). Otherwise it is withheld:
    a column value (`ChangeHistory.oldValue`/`newValue`) is null with a FORBIDDEN error, and inside
    a JSON document (`AuditLog.beforeValues`/`afterValues`/`changedFields` when it maps names to
    values) the key stays and its value becomes `WITHHELD`. `withheld_columns` decides, `withhold`
    replaces. Values are withheld when served, never when written: stored rows and the hash chain
    keep them whole.

A filter or order on the columns that carry those values (old/new value, before/after values) needs
every guarded permission tenant-wide (`check_value_columns`), as filters on guarded fields do.

Later readers of the trail (subscription payloads, exports, compiled reads) use the same functions:
`trail_condition` (or any read through `readable()`) for rows, `guarded` / `withheld_columns` /
`withhold` for values; `Loaders` (resolvers/common/loaders.py) gives them the caller's scope and
connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, Text, and_, cast, false, or_, select
from sqlalchemy.sql.elements import ColumnElement

from auth.permissions import Permission
from auth.rules import ENTITY_TABLES, FIELD_RULES, READ_RULES, Direct, ProjectPath, Targets, Via, guarded_columns
from models import Base
from resolvers.common.loaders import Loaders
from resolvers.common.scope import FieldDenied, ReadScope, under_projects

__all__ = [
    "TRAIL_TABLES",
    "VALUE_COLUMNS",
    "WITHHELD",
    "check_value_columns",
    "guarded",
    "trail_condition",
    "withheld_columns",
    "withhold",
]

#: What a withheld value of a JSON document (before/after values) is replaced by (docs/permissions.md).
WITHHELD = "[withheld]"
#: The tables of the trail about entities: (entity_type, entity_id) on every row.
TRAIL_TABLES = frozenset({"change_history", "audit_logs"})
#: The columns of those tables that carry an entity's column values.
VALUE_COLUMNS: Mapping[str, frozenset[str]] = {
    "change_history": frozenset({"old_value", "new_value"}),
    "audit_logs": frozenset({"before_values", "after_values", "changed_fields"}),
}

_TABLE_TYPES = {table: entity_type for entity_type, table in ENTITY_TABLES.items()}


def _table(name: str) -> Table:
    table: Table = Base.metadata.tables[name]
    return table


# -- (a) which rows ---------------------------------------------------------------------------------


def trail_condition(scope: ReadScope, table: Table) -> ColumnElement[bool] | None:
    """The rows of `table` (a trail table) whose entity the caller may read; None for every row.

    Only the entity's rule: the table's own permission is ReadScope's (it calls this once it holds).
    """
    type_column, id_column = table.c.entity_type, table.c.entity_id
    everything: list[str] = []
    some: list[ColumnElement[bool]] = []
    for entity_type, table_name in ENTITY_TABLES.items():
        rule = READ_RULES.get(table_name)
        if rule is None:
            continue
        if rule.permission is None or str(rule.permission) in scope.grants.tenant_wide:
            everything.append(entity_type)
            continue
        parts: list[ColumnElement[bool]] = []
        if rule.project is not None:
            projects = scope.projects_with(rule.permission)
            if projects:
                parts.append(_entity_under(id_column, table_name, projects, scope.tenant_id))
        if rule.own is not None:
            parts.append(_entity_owned(id_column, table_name, rule.own, scope))
        if parts:
            some.append(and_(type_column == entity_type, or_(*parts)))
    hidden = _level_hidden(scope, type_column, id_column)
    if len(everything) == len(ENTITY_TABLES):
        return hidden
    branches = list(some)
    if everything:
        branches.insert(0, type_column.in_(everything))
    if table.name == "audit_logs":  # events: not about an entity row
        branches.append(or_(type_column.is_(None), type_column.not_in(list(ENTITY_TABLES))))
    if not branches:
        return false()
    allowed = branches[0] if len(branches) == 1 else or_(*branches)
    return allowed if hidden is None else and_(allowed, hidden)


def _level_hidden(
    scope: ReadScope, type_column: ColumnElement[Any], id_column: ColumnElement[Any]
) -> ColumnElement[bool] | None:
    """Trail rows not about a row hidden by its access level (auth.rules.Levels): a restricted or
    confidential document the caller is not a reader of, live or deleted (as its deleting audit row
    recorded it), and the rows that hang under one (its associations, activities about it)."""
    parts: list[ColumnElement[bool]] = []
    for entity_type, table_name in ENTITY_TABLES.items():
        rule = READ_RULES.get(table_name)
        if rule is None:
            continue
        table = _table(table_name)
        if rule.levels is not None:
            levels = rule.levels
            gone = _deleted(
                table_name, scope.tenant_id,
                and_(
                    _recorded(levels.column).not_in(list(levels.open_values)),
                    _recorded(levels.owner) != str(scope.user_id),
                ),
            )
            parts.append(~and_(type_column == entity_type, or_(id_column.in_(scope.hidden_ids(table_name)),
                                                               id_column.in_(gone))))
            continue
        visible = scope.under_hidden(table, rule)
        if visible is not None:
            under = select(table.c.id).correlate(None).where(table.c.tenant_id == scope.tenant_id, ~visible)
            parts.append(~and_(type_column == entity_type, id_column.in_(under.scalar_subquery())))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else and_(*parts)


def _audit() -> Table:
    return _table("audit_logs")


# Every subquery here is `.correlate(None)`: it is embedded in reads of audit_logs itself (and of the
# entity tables), where SQLAlchemy would otherwise correlate it to the outer row.


def _deleted(table_name: str, tenant_id: uuid.UUID, recorded: ColumnElement[bool]) -> Any:
    """Ids of `table_name` rows that are gone and whose deleting audit row satisfies `recorded`.

    The flush hook writes one audit row per deleted row with its whole stored row as before_values
    and no after_values (whatever the action's label); the live table no longer has the id.
    """
    audit, table = _audit(), _table(table_name)
    return (
        select(audit.c.entity_id)
        .correlate(None)
        .where(
            audit.c.tenant_id == tenant_id,
            audit.c.entity_type == _TABLE_TYPES[table_name],
            audit.c.entity_id.is_not(None),
            audit.c.before_values.is_not(None),
            audit.c.after_values.is_(None),
            recorded,
            audit.c.entity_id.not_in(select(table.c.id).correlate(None).where(table.c.tenant_id == tenant_id)),
        )
        .scalar_subquery()
    )


def _recorded(key: str) -> ColumnElement[Any]:
    """before_values ->> key of the deleting audit row (text)."""
    text: ColumnElement[Any] = _audit().c.before_values[key].astext  # JSONB's comparator: untyped
    return text


def _entity_under(
    id_column: ColumnElement[Any], table_name: str, projects: frozenset[uuid.UUID], tenant_id: uuid.UUID
) -> ColumnElement[bool]:
    """`id_column` names a row of `table_name`, live or deleted, under one of `projects`."""
    rule = READ_RULES[table_name]
    assert rule.project is not None, f"{table_name} has no project path"
    path = rule.project
    if isinstance(path, Direct) and path.column == "id":
        return id_column.in_(sorted(projects))  # a project is its own project, even once deleted
    table = _table(table_name)
    live = select(table.c.id).correlate(None).where(
        table.c.tenant_id == tenant_id, under_projects(table, path, projects)
    )
    return or_(
        id_column.in_(live.scalar_subquery()),
        id_column.in_(_deleted(table_name, tenant_id, _recorded_under(path, projects, tenant_id))),
    )


def _recorded_under(path: ProjectPath, projects: frozenset[uuid.UUID], tenant_id: uuid.UUID) -> ColumnElement[bool]:
    """The deleting audit row's before_values put the row under one of `projects` along `path`."""
    if isinstance(path, Direct):
        return _recorded(path.column).in_(sorted(str(p) for p in projects))
    if isinstance(path, Via):
        return _text_in(_recorded(path.fk), path.parent, projects, tenant_id)
    assert isinstance(path, Targets)
    return or_(
        *(
            and_(_recorded(path.type_column) == entity_type,
                 _text_in(_recorded(path.id_column), target, projects, tenant_id))
            for entity_type, target in path.tables.items()
        )
    )


def _text_in(
    text_id: ColumnElement[Any], table_name: str, projects: frozenset[uuid.UUID], tenant_id: uuid.UUID
) -> ColumnElement[bool]:
    """A recorded id (text) names a row of `table_name`, live or deleted, under `projects`.

    Compared as text, so that a recorded value that is not a UUID never fails the read.
    """
    rule = READ_RULES[table_name]
    assert rule.project is not None
    if isinstance(rule.project, Direct) and rule.project.column == "id":
        return text_id.in_(sorted(str(p) for p in projects))
    table, audit = _table(table_name), _audit()
    live = select(cast(table.c.id, Text)).correlate(None).where(
        table.c.tenant_id == tenant_id, under_projects(table, rule.project, projects)
    )
    gone = select(cast(audit.c.entity_id, Text)).correlate(None).where(
        audit.c.entity_id.in_(_deleted(table_name, tenant_id, _recorded_under(rule.project, projects, tenant_id)))
    )
    return or_(text_id.in_(live.scalar_subquery()), text_id.in_(gone.scalar_subquery()))


def _entity_owned(
    id_column: ColumnElement[Any], table_name: str, own: str, scope: ReadScope
) -> ColumnElement[bool]:
    """`id_column` names a row of `table_name`, live or deleted, that is the caller's own."""
    if own == "id":
        return id_column == scope.user_id
    table = _table(table_name)
    live = select(table.c.id).correlate(None).where(
        table.c.tenant_id == scope.tenant_id, table.c[own] == scope.user_id
    )
    return or_(
        id_column.in_(live.scalar_subquery()),
        id_column.in_(_deleted(table_name, scope.tenant_id, _recorded(own) == str(scope.user_id))),
    )


# -- (b) which values -------------------------------------------------------------------------------


def guarded(entity_type: str | None) -> Mapping[str, Permission]:
    """The guarded columns of an entity type's table; {} for events and unguarded tables."""
    table_name = ENTITY_TABLES.get(entity_type or "")
    return guarded_columns(table_name) if table_name is not None else {}


async def withheld_columns(
    loaders: Loaders, entity_type: str | None, entity_id: uuid.UUID | None, columns: Iterable[str]
) -> dict[str, Permission]:
    """Of `columns` of one entity's row, those whose values the caller may not read, with the
    permission each needs. Rows are batched: one statement per entity table and permission per
    level, and none where the grants alone decide (tenant-wide, or held on no project)."""
    rules = guarded(entity_type)
    if not rules:
        return {}
    out: dict[str, Permission] = {}
    verdicts: dict[Permission, bool] = {}
    for column in columns:
        permission = rules.get(column)
        if permission is None:
            continue
        if permission not in verdicts:
            verdicts[permission] = await _may_read(loaders, str(entity_type), entity_id, permission)
        if not verdicts[permission]:
            out[column] = permission
    return out


async def _may_read(loaders: Loaders, entity_type: str, entity_id: uuid.UUID | None, permission: Permission) -> bool:
    scope = loaders.scope
    if str(permission) in scope.grants.tenant_wide:
        return True
    table_name = ENTITY_TABLES[entity_type]
    rule = READ_RULES.get(table_name)
    projects = scope.projects_with(permission)
    if entity_id is None or rule is None or rule.project is None or not projects:
        return False
    if isinstance(rule.project, Direct) and rule.project.column == "id":
        return entity_id in projects

    path = rule.project

    async def batch(keys: Sequence[uuid.UUID]) -> list[bool]:
        table = _table(table_name)
        stmt = select(table.c.id, under_projects(table, path, projects).label("under")).where(
            table.c.tenant_id == scope.tenant_id, table.c.id.in_(list(set(keys)))
        )
        live = {row.id: bool(row.under) for row in (await loaders.db.execute(stmt)).all()}
        gone = [k for k in set(keys) if k not in live]
        if gone:  # deleted rows: decided by the project their deleting audit row recorded
            audit = _audit()
            recorded = _deleted(table_name, scope.tenant_id, _recorded_under(path, projects, scope.tenant_id))
            stmt = select(audit.c.entity_id).where(audit.c.entity_id.in_(gone), audit.c.entity_id.in_(recorded))
            live.update({entity_id: True for entity_id in (await loaders.db.execute(stmt)).scalars().all()})
        return [live.get(k, False) for k in keys]

    loader = loaders.custom(("trail_field", table_name, str(permission)), batch)
    allowed: bool = await loader.load(entity_id)
    return allowed


def withhold(document: Any, withheld: Mapping[str, Permission]) -> Any:
    """`document` (a before/after values object) with the values of `withheld` keys replaced by
    WITHHELD; anything that is not an object (a list of changed field names, null) as it is."""
    if not withheld or not isinstance(document, Mapping):
        return document
    return {key: WITHHELD if key in withheld else value for key, value in document.items()}


# -- filters ----------------------------------------------------------------------------------------


def check_value_columns(scope: ReadScope, table: Table, columns: Collection[str]) -> None:
    """Refuse (FieldDenied) a filter or order on a trail column that carries guarded values.

    Such a column holds values of every guarded column of every entity type, so it needs every
    field permission tenant-wide.
    """
    carried = VALUE_COLUMNS.get(table.name, frozenset())
    for column in columns:
        if column not in carried:
            continue
        for permission in sorted(set(FIELD_RULES.values())):
            if str(permission) not in scope.grants.tenant_wide:
                raise FieldDenied(column, permission)
