"""Writes of the opportunity domain: projects (create, update, archive, restore) and their field
overrides (create, update, delete). A closed project (an outcome status) refuses what
resolvers/opportunities/closed.py says.

Each function runs inside a unit of work (models/unit_of_work.py) and changes rows only through
it, so the flush hook audits every change; none writes audit rows, checks a permission (the
GraphQL fields declare them) or commits. Values arrive by column name; refusals are
models.errors exceptions naming the field. Projects are evidence: they are archived, never
deleted here. Overrides carry an updated_at and are deleted with a checked one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Table, Uuid, bindparam, func, select

from models import ExternalOpportunityData, OpportunityProject, OpportunityProjectOverride, Tenant, User
from models.audit_trail import wire_value
from models.db import RequestConnection
from models.enums import SyncStatus
from models.errors import DomainError, Invalid
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import Failure, RuleContext, custom_rule, declare, range_rule, validate
from resolvers.opportunities.closed import ensure_open, refuse_closed_update
from resolvers.opportunities.effective import OVERRIDABLE, OverrideValue, current_version_order, read_override

__all__ = [
    "SCORE_FIELDS",
    "ProjectLimitReached",
    "archive_project",
    "create_override",
    "create_project",
    "delete_override",
    "manual_source_id",
    "project_id_of",
    "restore_project",
    "update_override",
    "update_project",
]

#: Project columns whose writing also needs opportunity.score:write.
SCORE_FIELDS = ("win_probability_score", "strategic_value_score", "pursuit_health_score")

_PROJECTS: Table = OpportunityProject.__table__
_TENANTS: Table = Tenant.__table__
_DATA: Table = ExternalOpportunityData.__table__
_USERS: Table = User.__table__
_OVERRIDABLE = {f.name: f for f in OVERRIDABLE}
_SCORE_MAX = Decimal(100)
_PROJECT = "opportunity_projects"
_OVERRIDE = "opportunity_project_overrides"


# -- who a target belongs to (permission lookups, on the request's read connection) ---------------


async def project_id_of(db: RequestConnection, table: Table, entity_id: uuid.UUID) -> uuid.UUID | None:
    """The opportunity project a row of `table` belongs to (itself for a project); None if absent."""
    column = table.c.id if table is _PROJECTS else table.c.opportunity_project_id
    stmt = select(column).where(table.c.id == entity_id, table.c.tenant_id == db.tenant_id)
    found: uuid.UUID | None = (await db.execute(stmt)).scalar()
    return found


def manual_source_id(tenant_id: uuid.UUID) -> uuid.UUID:
    """The tenant's "Manual entry" source, as the bootstrap trigger derives its id (migration 0001:
    `md5(tenant_id || '/manual-source')::uuid`)."""
    return uuid.UUID(hashlib.md5(f"{tenant_id}/manual-source".encode(), usedforsecurity=False).hexdigest())


# -- projects -----------------------------------------------------------------------------------


async def create_project(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """A new project; without `external_source_id` it is a manual entry (the Manual entry source,
    an `external_opportunity_id` of MANUAL-<uuid> unless given, sync status manual). Named after
    another source, it is a reference to that source's opportunity, stored with sync status
    pending: the source's data arrives with its next sync."""
    values = {k: v for k, v in values.items() if v is not None}
    source = values.pop("external_source_id", None)
    external_id = values.pop("external_opportunity_id", None)
    manual = manual_source_id(uow.tenant_id)
    if source is None:
        source = manual
        external_id = external_id or f"MANUAL-{uuid.uuid4()}"
    elif external_id is None:
        raise Invalid("externalOpportunityId is required with externalSourceId.", field="external_opportunity_id")
    values["sync_status"] = (SyncStatus.MANUAL if source == manual else SyncStatus.PENDING).value
    values = {"external_opportunity_id": external_id, **values}
    # The source's existence, the tenant's limit (its row locked) and count in one round trip; the
    # validation rules run first as before (on a source that does not exist, its own rule refuses it).
    slots = await _project_slots(uow, source if isinstance(source, uuid.UUID) else None)
    if not slots.source_found or not isinstance(source, uuid.UUID):
        values["external_source_id"] = source
    await _check_project_values(uow, values)
    slots.refuse_when_full()
    values["external_source_id"] = source
    project = OpportunityProject(tenant_id=uow.tenant_id, created_by=uow.actor_id)
    uow.assign(project, values)
    uow.add(project)
    await uow.flush()
    return project.id


class ProjectLimitReached(DomainError):
    """The tenant has `max_opportunity_projects` projects that are not archived already."""

    code = "PROJECT_LIMIT"


@dataclasses.dataclass(frozen=True, slots=True)
class _Slots:
    """What `gwm_claim_project_slot` (migration 0023) read, the tenant row locked until the end."""

    source_found: bool
    limit: int
    counted: int

    def refuse_when_full(self) -> None:
        if self.counted >= self.limit:
            raise ProjectLimitReached(
                f"The organization has reached its limit of {self.limit} opportunity projects; archive one or "
                "raise the limit."
            )


_CLAIM = func.public.gwm_claim_project_slot(
    bindparam("tenant", type_=Uuid()), bindparam("source", type_=Uuid())
).table_valued("source_found", "max_projects", "counted")


_SLOTS = select(_CLAIM.c.source_found, _CLAIM.c.max_projects, _CLAIM.c.counted)


async def _project_slots(uow: UnitOfWork, source: uuid.UUID | None = None) -> _Slots:
    """The tenant row locked (as `_claim_project_slot` explains), its limit and count of unarchived
    projects read after the lock, and whether the external source `source` exists (True for None), in
    one statement: a VOLATILE plpgsql function, whose count reads a snapshot taken after the lock."""
    (row,) = await uow.rows(_SLOTS, {"tenant": uow.tenant_id, "source": source})
    return _Slots(source_found=bool(row[0]), limit=int(row[1]), counted=int(row[2]))


async def _claim_project_slot(uow: UnitOfWork) -> None:
    """Refuse a new project when the tenant's unarchived projects reach `tenants.max_opportunity_projects`.

    As `max_users` for invitations (auth/accounts.py): the tenant row is locked first, so
    concurrent creates of one tenant take turns from here to their commit, and each counts under
    READ COMMITTED only after the one before it has committed: two cannot both take the last
    slot. FOR NO KEY UPDATE, not FOR UPDATE: it queues the creates (and invitations) of the
    tenant, but not the foreign-key checks (FOR KEY SHARE) of every other insert into its tables.
    Archived projects do not count. Anything that brings a project back into the count (a
    restore from the archive: restore_project) claims a slot the same way.
    """
    (await _project_slots(uow)).refuse_when_full()


async def update_project(
    uow: UnitOfWork, project_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]
) -> uuid.UUID:
    """Change the given fields of a project read at `seen` (its updatedAt)."""
    project = await uow.lock(OpportunityProject, project_id, updated_at=seen, what="opportunity project")
    if project.archived_at is not None:
        raise Invalid("The opportunity project is archived: it can no longer be changed.", field="id")
    values = dict(changes)
    refuse_closed_update(project, values)
    await _check_project_values(uow, values, row=project)
    if uow.assign(project, values):
        await uow.flush()
    return project.id


async def archive_project(uow: UnitOfWork, project_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Archive a project read at `seen`: it is kept, and hidden from default lists."""
    project = await uow.lock(OpportunityProject, project_id, updated_at=seen, what="opportunity project")
    if project.archived_at is not None:
        raise Invalid("The opportunity project is already archived.", field="id")
    uow.archive(project)
    await uow.flush()
    return project.id


async def restore_project(uow: UnitOfWork, project_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Bring an archived project read at `seen` back: it counts again, so it claims a slot under
    `max_opportunity_projects` as a create does (PROJECT_LIMIT when none is free). The project is
    locked before the tenant row; nothing locks them the other way round (a create locks the
    tenant row and no existing project). A closed project comes back closed."""
    project = await uow.lock(OpportunityProject, project_id, updated_at=seen, what="opportunity project")
    if project.archived_at is None:
        raise Invalid("The opportunity project is not archived.", field="id")
    await _claim_project_slot(uow)
    uow.assign(project, {"archived_at": None, "archived_by": None})
    await uow.flush()
    return project.id


async def _check_project_values(uow: UnitOfWork, values: dict[str, Any], row: Any = None) -> None:
    """The registry's rules (resolvers/common/validation.py); the team list is stored as text ids."""
    if "assigned_team_members" in values and values["assigned_team_members"] is None:
        values["assigned_team_members"] = []
    await validate(uow, _PROJECT, values, row=row)
    if "assigned_team_members" in values:
        values["assigned_team_members"] = [str(m) for m in values["assigned_team_members"]]


async def _members_listed_once(ctx: RuleContext) -> Failure | None:
    members = ctx.values["assigned_team_members"] or []
    if len(set(members)) != len(members):
        return Failure("assigned team members lists someone twice.")
    return None


async def _members_exist(ctx: RuleContext) -> Failure | None:
    members = set(ctx.values["assigned_team_members"] or [])
    if not members:
        return None
    found = set(
        (
            await ctx.uow.connection.execute(
                select(_USERS.c.id).where(_USERS.c.tenant_id == ctx.uow.tenant_id, _USERS.c.id.in_(members))
            )
        ).scalars()
    )
    if found != members:
        return Failure("assigned team members names a user that does not exist.")
    return None


_NO_USER = uuid.UUID("00000000-0000-4000-8000-000000000000")
declare(
    *(
        range_rule(_PROJECT, name, low=Decimal(0), high=_SCORE_MAX, sentence=f"{name.replace('_', ' ').capitalize()} "
                   "is a percentage, from 0 to 100.")
        for name in SCORE_FIELDS
    ),
    custom_rule(
        _PROJECT,
        "assigned_team_members",
        "unique",
        sentence="Assigned team members names each user at most once.",
        check=_members_listed_once,
        sample={"assigned_team_members": [_NO_USER, _NO_USER]},
    ),
    custom_rule(
        _PROJECT,
        "assigned_team_members",
        "reference",
        sentence="Assigned team members names users of the same tenant.",
        check=_members_exist,
        sample={"assigned_team_members": [_NO_USER]},
    ),
)


# -- overrides ----------------------------------------------------------------------------------


async def create_override(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """Override one field of a project; the source's current value is kept beside it."""
    values = dict(values)
    await validate(uow, _OVERRIDE, values)
    project_id = values.pop("opportunity_project_id")
    field_name = values.pop("field_name")
    await ensure_open(uow, project_id, field="opportunity_project_id", what="overrides")
    value = values.pop("override_value", None)
    current = (
        await uow.connection.execute(
            select(_DATA.c[field_name])
            .where(
                _DATA.c.tenant_id == uow.tenant_id,
                _DATA.c.opportunity_project_id == project_id,
                _DATA.c.is_current_version,
            )
            .order_by(*current_version_order(_DATA))
            .limit(1)
        )
    ).first()
    original = None if current is None else wire_value(current[0], _DATA.c[field_name].type)
    override = OpportunityProjectOverride(
        tenant_id=uow.tenant_id,
        opportunity_project_id=project_id,
        field_name=field_name,
        created_by=uow.actor_id,
        override_value=JSON.NULL if value is None else value,
        original_external_value=original,
    )
    uow.assign(override, {k: v for k, v in values.items() if v is not None})
    uow.add(override)
    await uow.flush()
    return override.id


async def update_override(
    uow: UnitOfWork, override_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]
) -> uuid.UUID:
    """Change an override read at `seen`: its value, its reason, whether it is active."""
    override = await uow.lock(OpportunityProjectOverride, override_id, updated_at=seen, what="override")
    await _check_project_open(uow, override.opportunity_project_id)
    values = dict(changes)
    await validate(uow, _OVERRIDE, values, row=override)
    changed = False
    if "override_value" in values:
        value = values.pop("override_value")
        if _json_differs(override.override_value, value):
            override.override_value = JSON.NULL if value is None else value
            changed = True
    changed = bool(uow.assign(override, values)) or changed
    if changed:
        await uow.flush()
    return override.id


async def delete_override(uow: UnitOfWork, override_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Delete an override read at `seen` (the effective value falls back to the source's)."""
    override = await uow.lock(OpportunityProjectOverride, override_id, updated_at=seen, what="override")
    await _check_project_open(uow, override.opportunity_project_id)
    await uow.delete(override)
    await uow.flush()
    return override_id


async def _check_project_open(uow: UnitOfWork, project_id: uuid.UUID) -> None:
    """An override changes only while its project is open (not archived, not closed)."""
    await ensure_open(uow, project_id, field="id", what="override changes")


async def _field_overridable(ctx: RuleContext) -> Failure | None:
    if ctx.values["field_name"] in _OVERRIDABLE:
        return None
    return Failure(f"field name must be one of: {', '.join(sorted(_OVERRIDABLE))}.")


async def _value_readable(ctx: RuleContext) -> Failure | None:
    """A JSON value the effective-value rule can read as the field's type (or null: no value)."""
    value = ctx.values["override_value"]
    field = _OVERRIDABLE.get(ctx.value("field_name") or "")
    if value is None or field is None:
        return None
    if read_override(field.kind, _candidate(value)) is None:
        return Failure(
            f"override value cannot be read as a {field.kind.value} (send a JSON string or number of that type, "
            "or null for no value)."
        )
    return None


#: Overridable fields holding money: an override of them is not negative.
_MONEY_FIELDS = frozenset({"estimated_value_min", "estimated_value_max"})


async def _money_not_negative(ctx: RuleContext) -> Failure | None:
    value = ctx.values["override_value"]
    name = ctx.value("field_name")
    if value is None or name not in _MONEY_FIELDS:
        return None
    amount = read_override(_OVERRIDABLE[name].kind, _candidate(value))
    if amount is not None and amount < 0:
        return Failure(f"override value of {name.replace('_', ' ')} must not be negative.")
    return None


def _candidate(value: Any) -> OverrideValue:
    """A JSON value as the effective-value rule reads stored ones (jsonb_typeof and its text)."""
    if isinstance(value, bool):
        return OverrideValue("boolean", "true" if value else "false")
    if isinstance(value, int | float):
        return OverrideValue("number", json.dumps(value))
    if isinstance(value, str):
        return OverrideValue("string", value)
    return OverrideValue("array" if isinstance(value, list) else "object", json.dumps(value))


declare(
    custom_rule(
        _OVERRIDE,
        "field_name",
        "overridable",
        sentence="Field name is one of the overridable fields: " + ", ".join(f"`{f.name}`" for f in OVERRIDABLE) + ".",
        check=_field_overridable,
        sample={"field_name": "project_name"},
    ),
    custom_rule(
        _OVERRIDE,
        "override_value",
        "readable",
        sentence="Override value reads as the field's type (text, decimal, date or instant with its offset), "
        "or is null.",
        check=_value_readable,
        triggers=("override_value",),
        sample={"field_name": "estimated_value_min", "override_value": "many"},
    ),
    custom_rule(
        _OVERRIDE,
        "override_value",
        "money",
        sentence="An override of an estimated value (money) is not negative.",
        check=_money_not_negative,
        triggers=("override_value",),
        sample={"field_name": "estimated_value_max", "override_value": "-0.01"},
    ),
)


def _json_differs(current: Any, value: Any) -> bool:
    return json.dumps(current, sort_keys=True) != json.dumps(value, sort_keys=True)
