"""The caller's read scope as SQL: which rows of a table its grants let it see.

Every read starts from `readable()` (resolvers/common/loaders.py), which ANDs the tenant and
`ReadScope.condition(table)`: nothing (a tenant-wide grant), the rows of the granted projects, the
caller's own rows, or nothing at all (`false`). A row a caller may not read is therefore absent in
every way it could be reached (root lists, `node`, nested lists and to-one fields, filters,
counts), exactly as a missing row is. The rules are data, in auth/rules.py; this module only
translates them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, and_, false, or_, select
from sqlalchemy.sql.elements import ColumnElement

from auth.permissions import Permission
from auth.principal import Principal
from auth.rules import FIELD_RULES, POINTERS, READ_RULES, Direct, Levels, ProjectPath, ReadRule, Targets, Via
from models import Base

__all__ = ["FieldDenied", "ReadScope", "under_projects"]

# The audit trail about entities: its rows also follow their entity's rule (resolvers/common/trail_guard.py).
_TRAIL_TABLES = frozenset({"change_history", "audit_logs"})


class FieldDenied(Exception):
    """A filter or order names a column the caller may not read."""

    def __init__(self, column: str, permission: Permission) -> None:
        super().__init__(column, permission)
        self.column = column
        self.permission = permission


def _table(name: str) -> Table:
    table: Table = Base.metadata.tables[name]
    return table


class ReadScope:
    """What one principal may read; conditions are built once per table and request."""

    __slots__ = ("_conditions", "grants", "tenant_id", "user_id")

    def __init__(self, principal: Principal) -> None:
        self.tenant_id = principal.tenant_id
        self.user_id = principal.user_id
        self.grants = principal.grants
        self._conditions: dict[Table, ColumnElement[bool] | None] = {}

    # -- rows -----------------------------------------------------------------------------------

    def condition(self, table: Table) -> ColumnElement[bool] | None:
        """The condition on `table`'s rows beyond the tenant's; None when every row is readable."""
        # Keyed by the Table object, not its name: the same SQL table can have two Table objects (documents
        # and resolvers.documents.loaders.DOCUMENT_ROWS), and a condition on one must not reach a statement
        # of the other (SQLAlchemy would add a second FROM).
        if table not in self._conditions:
            self._conditions[table] = self._build(table)
        return self._conditions[table]

    def reads_any(self, table: Table) -> bool:
        """False when no grant of the caller reaches any row of `table` (own rows aside)."""
        rule = READ_RULES.get(table.name)
        if rule is None:
            return False
        if rule.permission is None or str(rule.permission) in self.grants.tenant_wide:
            return True
        return rule.project is not None and bool(self.projects_with(rule.permission))

    def projects_with(self, permission: Permission) -> frozenset[uuid.UUID]:
        """The projects on which `permission` is granted by a project-scoped assignment."""
        return frozenset(p for p, perms in self.grants.per_project.items() if str(permission) in perms)

    def _build(self, table: Table) -> ColumnElement[bool] | None:
        rule = READ_RULES.get(table.name)
        if rule is None:
            return false()
        if rule.levels is not None:
            return self._leveled(table, rule, rule.levels)
        base = self._granted(table, rule)
        hidden = self.under_hidden(table, rule)
        if hidden is None:
            return base
        if base is None:
            return hidden
        return and_(base, hidden)

    def _granted(self, table: Table, rule: ReadRule) -> ColumnElement[bool] | None:
        """The rule's permission and project path (and own rows); None when every row is readable."""
        if rule.permission is None or str(rule.permission) in self.grants.tenant_wide:
            return self._trail(table) if table.name in _TRAIL_TABLES else None
        parts: list[ColumnElement[bool]] = []
        if rule.project is not None:
            projects = self.projects_with(rule.permission)
            if projects:
                parts.append(_under(table, rule.project, projects))
        if rule.own is not None:
            parts.append(table.c[rule.own] == self.user_id)
        if not parts:
            return false()
        return parts[0] if len(parts) == 1 else or_(*parts)

    # -- access levels (auth.rules.Levels; docs/enums.md AccessLevel) ---------------------------------

    def level_visible(self, table: Table, levels: Levels) -> ColumnElement[bool]:
        """Rows of a leveled `table` whose level lets the caller read them, permissions aside: an open
        level, or the caller is the row's owner or one of its named readers."""
        readers = _table(levels.readers)
        named = (
            select(readers.c[levels.readers_fk])
            .correlate(None)
            .where(readers.c.tenant_id == self.tenant_id, readers.c.user_id == self.user_id)
        )
        return or_(
            table.c[levels.column].in_(list(levels.open_values)),
            table.c[levels.owner] == self.user_id,
            table.c.id.in_(named.scalar_subquery()),
        )

    def hidden_ids(self, table_name: str) -> Any:
        """A subquery of the ids of `table_name` (a leveled table) the caller may not read for their
        level (restricted or confidential, not named, not the owner): what hangs under them is hidden."""
        rule = READ_RULES[table_name]
        assert rule.levels is not None
        table = _table(table_name)
        return (
            select(table.c.id)
            .correlate(None)
            .where(table.c.tenant_id == self.tenant_id, ~self.level_visible(table, rule.levels))
            .scalar_subquery()
        )

    def _leveled(self, table: Table, rule: ReadRule, levels: Levels) -> ColumnElement[bool]:
        assert rule.permission is not None and rule.project is not None and rule.own is None
        visible = self.level_visible(table, levels)
        if str(rule.permission) in self.grants.tenant_wide:
            return visible
        projects = self.projects_with(rule.permission)
        if not projects:
            return false()
        # `tenant` rows are read with the permission held on any project; the others as the path says.
        return and_(or_(table.c[levels.column] == levels.tenant_value, _under(table, rule.project, projects)), visible)

    def under_hidden(self, table: Table, rule: ReadRule) -> ColumnElement[bool] | None:
        """Rows of `table` that do not hang under (or point at) a leveled row hidden from the caller (None:
        no such path)."""
        parts = [p for p in (self._path_hidden(table, rule), self._pointer_hidden(table)) if p is not None]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else and_(*parts)

    def _pointer_hidden(self, table: Table) -> ColumnElement[bool] | None:
        pointer = POINTERS.get(table.name)
        if pointer is None:
            return None
        return and_(
            *(
                ~and_(
                    table.c[pointer.type_column] == entity_type,
                    table.c[pointer.id_column].in_(self.hidden_ids(target)),
                )
                for entity_type, target in pointer.tables.items()
            )
        )

    def _path_hidden(self, table: Table, rule: ReadRule) -> ColumnElement[bool] | None:
        path = rule.project
        if isinstance(path, Via):
            parent_rule = READ_RULES[path.parent]
            if parent_rule.levels is not None:
                return table.c[path.fk].not_in(self.hidden_ids(path.parent))
            parent = _table(path.parent)
            parent_visible = self.under_hidden(parent, parent_rule)  # e.g. participants of an activity
            if parent_visible is None:
                return None
            gone = select(parent.c.id).correlate(None).where(parent.c.tenant_id == self.tenant_id, ~parent_visible)
            return table.c[path.fk].not_in(gone.scalar_subquery())
        if isinstance(path, Targets):
            parts = [
                ~and_(table.c[path.type_column] == entity_type, table.c[path.id_column].in_(self.hidden_ids(target)))
                for entity_type, target in path.tables.items()
                if READ_RULES[target].levels is not None
            ]
            if parts:
                return parts[0] if len(parts) == 1 else and_(*parts)
        return None

    def _trail(self, table: Table) -> ColumnElement[bool] | None:
        """Trail rows (change_history, audit_logs) only about entities the caller may read.

        The rule lives in resolvers/common/trail_guard.py (imported here late: it builds on this module).
        """
        from resolvers.common.trail_guard import trail_condition

        return trail_condition(self, table)

    # -- fields ---------------------------------------------------------------------------------

    def project_of(self, table: Table, row: Any) -> uuid.UUID | None:
        """The project a row of `table` belongs to, when its own columns say (Direct rules)."""
        rule = READ_RULES.get(table.name)
        if rule is None or not isinstance(rule.project, Direct):
            return None
        value: uuid.UUID | None = row._mapping.get(rule.project.column)
        return value

    def allows_field(self, permission: Permission, table: Table | None, row: Any) -> bool:
        """May the caller read a field guarded by `permission` on this row (of `table`)?"""
        if str(permission) in self.grants.tenant_wide:
            return True
        if table is None or row is None:
            return False
        project = self.project_of(table, row)
        return project is not None and str(permission) in self.grants.per_project.get(project, frozenset())

    def covers(self, table: Table, permission: Permission) -> bool:
        """True when `permission` holds on every row of `table` the caller can read.

        A filter, an order or an aggregate over a guarded column reaches every readable row at
        once, so it needs the field's permission wherever the rows come from: tenant-wide, or on
        each project the caller reads the table on (and no own-row exception widening the set).
        """
        if str(permission) in self.grants.tenant_wide:
            return True
        rule = READ_RULES.get(table.name)
        if rule is None or rule.permission is None or str(rule.permission) in self.grants.tenant_wide:
            return False
        if not isinstance(rule.project, Direct) or rule.own is not None or rule.levels is not None:
            return False  # levels: `tenant` rows are read beyond the granted projects
        return self.projects_with(rule.permission) <= self.projects_with(permission)

    def check_columns(self, table: Table, columns: Iterable[str]) -> None:
        """Refuse (FieldDenied) a filter or order on a column whose field the caller may not read."""
        columns = list(columns)
        for column in columns:
            permission = FIELD_RULES.get((table.name, column))
            if permission is not None and not self.covers(table, permission):
                raise FieldDenied(column, permission)
        if table.name in _TRAIL_TABLES:  # columns carrying guarded values of any entity
            from resolvers.common.trail_guard import check_value_columns

            check_value_columns(self, table, columns)


def under_projects(table: Table, path: ProjectPath, projects: frozenset[uuid.UUID]) -> ColumnElement[bool]:
    """Rows of `table` that hang under one of `projects` along `path` (a rule's project path)."""
    return _under(table, path, projects)


def _under(table: Table, path: ProjectPath, projects: frozenset[uuid.UUID]) -> ColumnElement[bool]:
    """Rows of `table` that hang under one of `projects` along `path`."""
    ids = sorted(projects)
    if isinstance(path, Direct):
        return table.c[path.column].in_(ids)
    if isinstance(path, Via):
        parent = _table(path.parent)
        parent_rule = READ_RULES[path.parent]
        assert parent_rule.project is not None, f"{path.parent} has no project path"
        inner = select(parent.c.id).where(_under(parent, parent_rule.project, projects))
        return table.c[path.fk].in_(inner.scalar_subquery())
    assert isinstance(path, Targets)
    branches: list[ColumnElement[bool]] = []
    for entity_type, target_name in path.tables.items():
        target = _table(target_name)
        target_rule = READ_RULES[target_name]
        assert target_rule.project is not None, f"{target_name} has no project path"
        if isinstance(target_rule.project, Direct) and target_rule.project.column == "id":
            target_ids: Any = ids
        else:
            target_ids = select(target.c.id).where(_under(target, target_rule.project, projects)).scalar_subquery()
        branches.append(and_(table.c[path.type_column] == entity_type, table.c[path.id_column].in_(target_ids)))
    return or_(*branches)
