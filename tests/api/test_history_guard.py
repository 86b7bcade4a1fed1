"""Guarded values and unreadable entities never leak through the audit trail (docs/permissions.md).

Generated from the rules (auth/rules.py): for every guarded column (FIELD_RULES) and every path
that can carry its value (`changeHistory(entityId:)`, the type's `history`, `auditLogs`
before/after values and changed fields), on rows the flush hook wrote for a create, an update
and a delete, three callers who read every row: one without the column's permission (null and
FORBIDDEN, or the "[withheld]" marker, and one permission_audit row per refused path), one holding
it on one project only (values on that project alone), one holding it tenant-wide (the stored
values). For every entity type whose row rule needs more than the trail's own permission, a
caller holding only `history:read` (or only `audit:read`) sees none of its trail. Meta-tests fail
when a guarded column or an entity type has no case.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.permissions import Permission
from auth.principal import Grants, Principal, PrincipalKind
from auth.rules import ENTITY_TABLES, FIELD_RULES, READ_RULES
from models import (
    Activity,
    CapturePlan,
    Document,
    DocumentAssociation,
    ExternalOpportunitySource,
    OpportunityProject,
    Tenant,
    User,
)
from models.audit_trail import OPERATIONAL_COLUMNS, AuditContext
from models.db import set_tenant
from models.unit_of_work import UnitOfWork
from resolvers.common.scope import FieldDenied, ReadScope
from resolvers.common.trail_guard import TRAIL_TABLES, VALUE_COLUMNS, WITHHELD
from schema.entities import ENTITY_TARGETS
from schema.writes import REDACTION
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef, create_tenant
from tests.support.factories import make, populate_every_table
from tests.support.graphql import gql_response, sign_in
from tests.support.http import make_login_user

P = Permission
FIELD_PERMISSIONS = frozenset(FIELD_RULES.values())
_TYPE_OF_TABLE = {table.name: target[0] for target, table in ENTITY_TARGETS.values()}
T0 = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)


def _gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


# -- how each guarded table's rows are created, updated and deleted through the unit of work ------------


@dataclass(frozen=True, slots=True)
class Writer:
    """Writes rows of one guarded table through the flush hook. `create` builds a new row (with its
    guarded columns set); `update` the values an update assigns (every guarded column and one plain
    column, so the update is recorded even where the guarded columns are operational)."""

    model: Any
    create: Callable[[TenantRef, uuid.UUID, int], Any] | None
    update: Callable[[int], dict[str, Any]]
    under_project: bool  # the row belongs to an opportunity project (a project-scoped grant can count)
    deletable: bool = True


def _project(t: TenantRef, project: uuid.UUID, n: int) -> Any:
    return OpportunityProject(
        tenant_id=t.id, project_name=f"Guarded project {n}", created_by=t.system_user_id,
        external_source_id=t.manual_source_id, external_opportunity_id=f"TG-{n}",
        win_probability_score=Decimal(n % 90 + 1), strategic_value_score=Decimal(n % 80 + 2),
        pursuit_health_score=Decimal(n % 70 + 3),
    )


WRITERS: dict[str, Writer] = {
    "opportunity_projects": Writer(
        OpportunityProject,
        _project,
        lambda n: {"project_name": f"Renamed {n}", "win_probability_score": Decimal("61.25"),
                   "strategic_value_score": Decimal("62.50"), "pursuit_health_score": Decimal("63.75")},
        under_project=True,
    ),
    "capture_plans": Writer(
        CapturePlan,
        lambda t, project, n: CapturePlan(
            tenant_id=t.id, opportunity_project_id=project, plan_name=f"Plan {n}", created_by=t.system_user_id,
            win_strategy=f"secret strategy {n}", competitive_analysis=f"secret rivals {n}",
            resource_requirements=f"secret staffing {n}",
        ),
        lambda n: {"plan_name": f"Plan renamed {n}", "win_strategy": f"new secret strategy {n}",
                   "competitive_analysis": f"new secret rivals {n}", "resource_requirements": f"new staffing {n}"},
        under_project=True,
    ),
    "external_opportunity_sources": Writer(
        ExternalOpportunitySource,
        lambda t, project, n: ExternalOpportunitySource(
            tenant_id=t.id, source_name=f"Guarded source {n}", api_endpoint=f"https://secret-{n}.example.test/v2",
            api_version="v2", authentication_type="api_key", api_credentials_encrypted={},
            created_by=t.system_user_id, last_error_message=f"secret failure {n}",
        ),
        lambda n: {"source_name": f"Source renamed {n}", "api_endpoint": f"https://moved-{n}.example.test/v3",
                   "last_error_message": f"new secret failure {n}"},
        under_project=False,
    ),
    "users": Writer(
        User,
        lambda t, project, n: User(
            tenant_id=t.id, email=f"guarded-{n}-{uuid.uuid4().hex[:6]}@example.test", first_name="Guarded",
            last_name=f"User {n}", must_change_password=True, locked_until=T0, last_login_at=T0,
        ),
        lambda n: {"first_name": f"Renamed {n}", "must_change_password": False,
                   "locked_until": datetime(2032, 1, 1, tzinfo=UTC), "last_login_at": datetime(2032, 1, 2, tzinfo=UTC)},
        under_project=False,
    ),
    # Where a document's object is stored (document.storage:read).
    "documents": Writer(
        Document,
        lambda t, project, n: Document(
            tenant_id=t.id, opportunity_project_id=project, name=f"Guarded document {n}",
            original_filename=f"guarded-{n}.pdf", mime_type="application/pdf", file_size_bytes=10,
            uploaded_by=t.system_user_id, storage_key=f"secret/key/{n}", storage_bucket=f"secret-bucket-{n}",
            storage_url=f"https://secret-{n}.example.test/object", storage_region=f"secret-region-{n}",
            encryption_key_id=f"secret-kms-{n}",
        ),
        lambda n: {"name": f"Document renamed {n}", "storage_key": f"moved/key/{n}",
                   "storage_bucket": f"moved-bucket-{n}", "storage_url": f"https://moved-{n}.example.test/object",
                   "storage_region": f"moved-region-{n}", "encryption_key_id": f"moved-kms-{n}"},
        under_project=True,
    ),
    # The tenant's own row is created by the schema owner and never deleted within the tenant: only its
    # updates go through the flush hook.
    "tenants": Writer(
        Tenant,
        None,
        lambda n: {"billing_email": f"billing-{n}@secret.example.test", "subscription_status": f"secret-{n}",
                   "subscription_expires_at": datetime(2033, 3, 3, tzinfo=UTC)},
        under_project=False,
        deletable=False,
    ),
}

ROLE_READS = sorted({str(p) for p in Permission} - {str(p) for p in FIELD_PERMISSIONS})


# -- the world: rows written by create, update and delete on two projects; three callers -------------------


@dataclass(slots=True)
class World:
    tenant: TenantRef
    one: uuid.UUID
    two: uuid.UUID
    # (table, "kept" | "gone", project slot "one" | "two") -> entity id; kept rows were created and
    # updated, gone rows created and deleted.
    entities: dict[tuple[str, str, str], uuid.UUID] = field(default_factory=dict)
    project_of: dict[uuid.UUID, uuid.UUID | None] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, uuid.UUID] = field(default_factory=dict)


def _uow(app_engine: AsyncEngine, tenant: TenantRef) -> UnitOfWork:
    context = AuditContext(tenant_id=tenant.id, user_id=tenant.system_user_id, system_process="test",
                           request_id="trail-guard")
    return UnitOfWork(app_engine, chain=TEST_AUDIT_CHAIN, context=context, redaction=REDACTION, notify=False)


async def _create(app_engine: AsyncEngine, tenant: TenantRef, obj: Any) -> uuid.UUID:
    async with _uow(app_engine, tenant) as uow:
        uow.add(obj)
        await uow.flush()
        entity_id: uuid.UUID = obj.id
    return entity_id


async def _update(app_engine: AsyncEngine, tenant: TenantRef, writer: Writer, entity_id: uuid.UUID, n: int) -> None:
    async with _uow(app_engine, tenant) as uow:
        uow.assign(await uow.lock(writer.model, entity_id), writer.update(n))


async def _delete(app_engine: AsyncEngine, tenant: TenantRef, writer: Writer, entity_id: uuid.UUID) -> None:
    async with _uow(app_engine, tenant) as uow:
        await uow.delete(await uow.lock(writer.model, entity_id))


async def _role(owner_engine: AsyncEngine, tenant: TenantRef, name: str, permissions: list[str]) -> uuid.UUID:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        role = await make(conn, "roles", tenant, name=name, permissions=json.dumps(permissions))
    role_id: uuid.UUID = role.id
    return role_id


async def _caller(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, tenant: TenantRef,
    grants: list[tuple[uuid.UUID, uuid.UUID | None]],
) -> tuple[uuid.UUID, str]:
    """A signed-in user holding (role, project or None for tenant-wide) assignments."""
    user = await make_login_user(owner_engine, tenant, roles=[])
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        for role_id, project in grants:
            await conn.execute(
                text("INSERT INTO user_roles (tenant_id, user_id, role_id, opportunity_project_id, assigned_by)"
                     " VALUES (:t, :u, :r, :p, :by)"),
                {"t": tenant.id, "u": user.id, "r": role_id, "p": project, "by": tenant.system_user_id},
            )
    return user.id, await sign_in(client, user)


@pytest.fixture(scope="module")
async def world(owner_engine: AsyncEngine, app_engine: AsyncEngine, read_app: Any) -> World:
    from tests.support.http import app_client

    tenant = await create_tenant(owner_engine, "Trail guard")
    counter = iter(range(1, 10_000))
    projects = WRITERS["opportunity_projects"]
    one = await _create(app_engine, tenant, _project(tenant, uuid.uuid4(), next(counter)))
    two = await _create(app_engine, tenant, _project(tenant, uuid.uuid4(), next(counter)))
    w = World(tenant, one, two)
    slots = {"one": one, "two": two}
    for table, writer in WRITERS.items():
        for slot, project in slots.items():
            if table == "tenants" and slot == "two":
                continue  # one tenant row
            if table == "opportunity_projects":
                kept: uuid.UUID = project
            elif table == "tenants":
                kept = tenant.id
            else:
                assert writer.create is not None
                kept = await _create(app_engine, tenant, writer.create(tenant, project, next(counter)))
            await _update(app_engine, tenant, writer, kept, next(counter))
            w.entities[(table, "kept", slot)] = kept
            w.project_of[kept] = project if writer.under_project else None
            if writer.deletable:
                assert writer.create is not None
                gone = await _create(app_engine, tenant, writer.create(tenant, project, next(counter)))
                await _delete(app_engine, tenant, writer, gone)
                w.entities[(table, "gone", slot)] = gone
                own_project = gone if table == "opportunity_projects" else project  # a project is its own
                w.project_of[gone] = own_project if writer.under_project else None
    assert projects.under_project
    reads = await _role(owner_engine, tenant, "Trail reader", ROLE_READS)
    fields = await _role(owner_engine, tenant, "Guarded fields", sorted(str(p) for p in FIELD_PERMISSIONS))
    async with app_client(read_app) as client:
        callers: dict[str, list[tuple[uuid.UUID, uuid.UUID | None]]] = {
            "without": [(reads, None)],
            "project": [(reads, None), (fields, one)],
            "tenant": [(reads, None), (fields, None)],
        }
        for name, grants in callers.items():
            w.users[name], w.tokens[name] = await _caller(client, owner_engine, tenant, grants)
    return w


# -- the cases, generated from FIELD_RULES ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    table: str
    column: str
    path: str  # "changeHistory" | "history" | "auditLogs"
    kind: str  # "kept" (created and updated) | "gone" (created and deleted)

    @property
    def id(self) -> str:
        return f"{self.table}.{self.column}-{self.path}-{self.kind}"


def _cases() -> list[Case]:
    cases: list[Case] = []
    for (table, column) in FIELD_RULES:
        writer = WRITERS.get(table)
        if writer is None:
            continue  # the meta-test below fails
        kinds = ["kept", "gone"] if writer.deletable else ["kept"]
        in_history = column not in OPERATIONAL_COLUMNS.get(table, frozenset())  # never a change_history row
        for kind in kinds:
            cases.append(Case(table, column, "auditLogs", kind))
            if in_history:
                cases.append(Case(table, column, "changeHistory", kind))
                if kind == "kept":  # a deleted row has no `history` field to ask
                    cases.append(Case(table, column, "history", kind))
    return cases


CASES = _cases()
_ACTIONS = {"kept": {"create", "update"}, "gone": {"create", "delete"}}

_CHANGE_FIELDS = "fieldName changeCategory rowId oldValue newValue"
_LOG_FIELDS = "rowId actionType beforeValues afterValues changedFields"


def _document(case: Case, entity_id: uuid.UUID) -> tuple[str, dict[str, Any], list[str]]:
    """The query for one case and entity, its variables and the path to its list of trail rows."""
    if case.path == "changeHistory":
        query = ("query ($id: UUID!, $f: String!) { changeHistory(entityId: $id, filter: {fieldName: {eq: $f}})"
                 f" {{ nodes {{ {_CHANGE_FIELDS} }} }} }}")
        return query, {"id": str(entity_id), "f": case.column}, ["changeHistory", "nodes"]
    if case.path == "history":
        type_name = _TYPE_OF_TABLE[case.table]
        query = (f"query ($id: ID!) {{ node(id: $id) {{ ... on {type_name} {{ history(first: 100)"
                 f" {{ nodes {{ {_CHANGE_FIELDS} }} }} }} }} }}")
        return query, {"id": _gid(type_name, entity_id)}, ["node", "history", "nodes"]
    query = ("query ($id: UUID!) { auditLogs(first: 100, filter: {entityId: {eq: $id}})"
             f" {{ nodes {{ {_LOG_FIELDS} }} }} }}")
    return query, {"id": str(entity_id)}, ["auditLogs", "nodes"]


def _dig(data: Any, path: list[str]) -> list[dict[str, Any]]:
    for step in path:
        assert data is not None, path
        data = data[step]
    assert isinstance(data, list)
    return data


async def _stored(owner_engine: AsyncEngine, tenant: TenantRef, path: str, ids: list[str]) -> dict[str, Any]:
    """The stored values of trail rows (as the schema owner, JSON decoded), by row id."""
    table = "audit_logs" if path == "auditLogs" else "change_history"
    names = ["before_values", "after_values", "changed_fields"] if path == "auditLogs" else ["old_value", "new_value"]
    columns = ", ".join(f"CAST({n} AS text) AS {n}" for n in names)
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = (await conn.execute(text(f"SELECT id, {columns} FROM {table} WHERE id = ANY(:ids)"),
                                   {"ids": [uuid.UUID(i) for i in ids]})).mappings().all()
    return {str(row["id"]): {n: None if row[n] is None else json.loads(row[n]) for n in names} for row in rows}


async def _denials(owner_engine: AsyncEngine, tenant: TenantRef, request_id: str) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        result = await conn.execute(
            text("SELECT permission_checked, field_path, denied_count FROM permission_audit"
                 " WHERE request_id = :r ORDER BY field_path"),
            {"r": request_id},
        )
        return list(result.all())


def test_every_guarded_column_has_a_case_on_every_path_that_can_carry_it() -> None:
    covered = {(c.table, c.column, c.path, c.kind) for c in CASES}
    for (table, column) in FIELD_RULES:
        assert table in WRITERS, f"no writer for {table}: its guarded columns have no case"
        assert (table, column, "auditLogs", "kept") in covered
        if WRITERS[table].deletable:
            assert (table, column, "auditLogs", "gone") in covered
        if column not in OPERATIONAL_COLUMNS.get(table, frozenset()):
            assert {(table, column, "changeHistory", "kept"), (table, column, "history", "kept")} <= covered
    # Every table the cases write has guarded columns (no stale writer).
    assert set(WRITERS) == {table for table, _ in FIELD_RULES}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_a_guarded_value_is_served_only_where_its_field_is_readable(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: World, case: Case
) -> None:
    permission = FIELD_RULES[(case.table, case.column)]
    value_fields = ("beforeValues", "afterValues") if case.path == "auditLogs" else ("oldValue", "newValue")
    for slot in ("one", "two"):
        entity_id = world.entities.get((case.table, case.kind, slot))
        if entity_id is None:
            continue
        query, variables, list_path = _document(case, entity_id)
        for caller in ("without", "project", "tenant"):
            response = await gql_response(client, query, variables, token=world.tokens[caller])
            assert response.status_code == 200, response.text
            body = response.json()
            rows = _dig(body["data"], list_path)
            if case.path == "history":
                rows = [r for r in rows if r["fieldName"] == case.column]
            actions = {(r.get("changeCategory") or r.get("actionType", "")).lower() for r in rows}
            expected_actions = _ACTIONS[case.kind] if case.table != "tenants" else {"update"}
            assert actions == expected_actions, (caller, body)
            stored = await _stored(owner_engine, world.tenant, case.path, [r["rowId"] for r in rows])
            readable = caller == "tenant" or (
                caller == "project" and world.project_of[entity_id] is not None
                and world.project_of[entity_id] == world.one
            )
            errors = body.get("errors", [])
            denials = await _denials(owner_engine, world.tenant, response.headers["x-request-id"])
            if readable:
                assert errors == [] and denials == [], body
                for row in rows:
                    if case.path == "auditLogs":
                        assert row["beforeValues"] == stored[row["rowId"]]["before_values"]
                        assert row["afterValues"] == stored[row["rowId"]]["after_values"]
                        assert row["changedFields"] == stored[row["rowId"]]["changed_fields"]
                    else:
                        assert row["oldValue"] == stored[row["rowId"]]["old_value"]
                        assert row["newValue"] == stored[row["rowId"]]["new_value"]
                continue
            if case.path == "auditLogs":
                assert errors == [], body  # documents are served with the value withheld, not refused
                for row in rows:
                    for name in value_fields:
                        document = row[name]
                        if document is None:
                            continue
                        if case.column in document:
                            assert document[case.column] == WITHHELD, (caller, row)
                        # Only guarded values are withheld: every other key is served as stored.
                        raw = stored[row["rowId"]]["before_values" if name == "beforeValues" else "after_values"]
                        assert document == {k: WITHHELD if (case.table, k) in FIELD_RULES else v
                                            for k, v in raw.items()}
                    assert row["changedFields"] == stored[row["rowId"]]["changed_fields"]  # names only
                assert any(case.column in (row[n] or {}) for row in rows for n in value_fields)
            else:
                for row in rows:
                    assert row["oldValue"] is None and row["newValue"] is None, (caller, row)
                assert errors and all(e["extensions"] == {"code": "FORBIDDEN", "permission": permission.value}
                                      for e in errors), body
                refused = {tuple(p for p in e["path"] if not isinstance(p, int)) for e in errors}
                assert refused == {(*list_path, "oldValue"), (*list_path, "newValue")}, body
            # Audited like any other denial: one permission_audit row per refused path, with its count.
            assert denials, body
            paths = [d.field_path for d in denials]
            assert len(paths) == len(set(paths)), denials
            assert {d.permission_checked for d in denials} <= {str(p) for p in FIELD_PERMISSIONS}
            assert any(d.permission_checked == permission.value for d in denials), denials
            expected_paths = {".".join([*list_path, n]) for n in value_fields}
            assert set(paths) <= expected_paths, denials


# -- rows about entities the caller may not read -----------------------------------------------------------


@dataclass(slots=True)
class TypeWorld:
    tenant: TenantRef
    refs: dict[str, uuid.UUID]
    change_rows: dict[str, uuid.UUID]
    log_rows: dict[str, uuid.UUID]
    event_row: uuid.UUID
    tokens: dict[str, str]


@pytest.fixture(scope="module")
async def type_world(owner_engine: AsyncEngine, read_app: Any) -> TypeWorld:
    from tests.support.http import app_client

    tenant = await create_tenant(owner_engine, "Trail rows")
    change_rows: dict[str, uuid.UUID] = {}
    log_rows: dict[str, uuid.UUID] = {}
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        refs = await populate_every_table(conn, tenant)
        refs["tenants"] = tenant.id
        for entity_type, table in ENTITY_TABLES.items():
            entity_id = refs[table]
            change_rows[entity_type] = (await make(
                conn, "change_history", tenant, refs, entity_type=entity_type, entity_id=entity_id,
                field_name="probe", old_value=json.dumps("a"), new_value=json.dumps("b"),
            )).id
            log_rows[entity_type] = (await make(
                conn, "audit_logs", tenant, action_type="probe", entity_type=entity_type, entity_id=entity_id,
            )).id
        event_row = (await make(conn, "audit_logs", tenant, action_type="probe", entity_type="session",
                                entity_id=uuid.uuid4())).id
    roles = {
        "history": await _role(owner_engine, tenant, "History only", [P.HISTORY_READ.value]),
        "audit": await _role(owner_engine, tenant, "Audit only", [P.AUDIT_READ.value]),
        "all": await _role(owner_engine, tenant, "Everything", [p.value for p in Permission]),
    }
    tokens = {}
    async with app_client(read_app) as client:
        for name, role in roles.items():
            _user, tokens[name] = await _caller(client, owner_engine, tenant, [(role, None)])
    return TypeWorld(tenant, refs, change_rows, log_rows, event_row, tokens)


ENTITY_TYPES = sorted(ENTITY_TABLES)


def test_every_entity_type_has_a_case_and_names_its_type_s_table() -> None:
    assert set(ENTITY_TYPES) == set(ENTITY_TARGETS)
    # schema/entities.py's map (documents read through a narrower Table of the same name) agrees.
    assert {k: table.name for k, (_target, table) in ENTITY_TARGETS.items()} == dict(ENTITY_TABLES)
    assert set(ENTITY_TABLES.values()) <= set(READ_RULES)
    assert TRAIL_TABLES == set(VALUE_COLUMNS)


TRAIL_QUERY = """
query ($id: UUID!, $change: ID!, $log: ID!) {
  changeHistory(entityId: $id, filter: {fieldName: {eq: "probe"}}) { totalCount nodes { rowId } }
  auditLogs(filter: {entityId: {eq: $id}, actionType: {eq: "probe"}}) { totalCount nodes { rowId } }
  change: node(id: $change) { id }
  log: node(id: $log) { id }
}"""


@pytest.mark.parametrize("entity_type", ENTITY_TYPES)
async def test_the_trail_of_an_entity_is_served_only_where_the_entity_is(
    client: httpx.AsyncClient, type_world: TypeWorld, entity_type: str
) -> None:
    rule = READ_RULES[ENTITY_TABLES[entity_type]]
    entity_id = type_world.refs[ENTITY_TABLES[entity_type]]
    change_id, log_id = type_world.change_rows[entity_type], type_world.log_rows[entity_type]
    variables = {"id": str(entity_id), "change": _gid("ChangeHistory", change_id), "log": _gid("AuditLog", log_id)}
    for caller, trail_permission in (("history", P.HISTORY_READ), ("audit", P.AUDIT_READ), ("all", None)):
        response = await gql_response(client, TRAIL_QUERY, variables, token=type_world.tokens[caller])
        body = response.json()
        assert "errors" not in body, body
        data = body["data"]
        entity_readable = trail_permission is None or rule.permission in (None, trail_permission)
        changes = [n["rowId"] for n in data["changeHistory"]["nodes"]]
        logs = [n["rowId"] for n in data["auditLogs"]["nodes"]]
        sees_changes = entity_readable and caller in ("history", "all")
        sees_logs = entity_readable and caller in ("audit", "all")
        assert changes == ([str(change_id)] if sees_changes else []), (caller, body)
        assert data["changeHistory"]["totalCount"] == len(changes)
        assert logs == ([str(log_id)] if sees_logs else []), (caller, body)
        assert (data["change"] is not None) == sees_changes and (data["log"] is not None) == sees_logs, body


async def test_event_rows_need_only_the_audit_permission(client: httpx.AsyncClient, type_world: TypeWorld) -> None:
    query = "query ($id: ID!) { node(id: $id) { ... on AuditLog { entityType } } }"
    body = (await gql_response(client, query, {"id": _gid("AuditLog", type_world.event_row)},
                               token=type_world.tokens["audit"])).json()
    assert body == {"data": {"node": {"entityType": "session"}}}


# -- project-scoped grants on the entity's rule, deleted rows by their recorded project -------------------------


async def test_a_project_scoped_reader_sees_the_trail_of_its_project_s_rows_only(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: World
) -> None:
    tenant = world.tenant
    trail = await _role(owner_engine, tenant, "Trail only", [P.HISTORY_READ.value, P.AUDIT_READ.value])
    plans = await _role(owner_engine, tenant, "Plans on one", [P.CAPTURE_PLAN_READ.value, P.OPPORTUNITY_READ.value])
    _user, token = await _caller(client, owner_engine, tenant, [(trail, None), (plans, world.one)])
    query = """query ($id: UUID!) {
      changeHistory(entityId: $id) { totalCount }
      auditLogs(filter: {entityId: {eq: $id}}) { totalCount }
    }"""
    for table in ("capture_plans", "opportunity_projects"):
        for kind in ("kept", "gone"):
            for slot in ("one", "two"):
                entity_id = world.entities[(table, kind, slot)]
                body = (await gql_response(client, query, {"id": str(entity_id)}, token=token)).json()
                everything = (await gql_response(client, query, {"id": str(entity_id)},
                                                 token=world.tokens["tenant"])).json()
                assert "errors" not in body, body
                visible = world.project_of[entity_id] == world.one
                # All of a readable entity's trail (its create, update or delete rows), or none of it.
                expected = everything["data"] if visible else {"changeHistory": {"totalCount": 0},
                                                               "auditLogs": {"totalCount": 0}}
                assert body["data"] == expected, (table, kind, slot, body)
                assert everything["data"]["auditLogs"]["totalCount"] == 2, everything
    # Not under a project: a project-scoped grant never reaches them.
    source = world.entities[("external_opportunity_sources", "kept", "one")]
    body = (await gql_response(client, query, {"id": str(source)}, token=token)).json()
    assert body["data"] == {"changeHistory": {"totalCount": 0}, "auditLogs": {"totalCount": 0}}


async def test_an_activity_s_trail_follows_its_target_s_project(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: World
) -> None:
    tenant = world.tenant
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        plan_one = world.entities[("capture_plans", "kept", "one")]
        plan_two = world.entities[("capture_plans", "kept", "two")]
        refs = {"opportunity_projects": world.one}
        on_one = await make(conn, "activities", tenant, refs, entity_type="capture_plan", entity_id=plan_one)
        on_two = await make(conn, "activities", tenant, refs, entity_type="capture_plan", entity_id=plan_two)
        for activity in (on_one, on_two):
            await make(conn, "change_history", tenant, refs, entity_type="activity", entity_id=activity.id,
                       field_name="subject", old_value=json.dumps("a"), new_value=json.dumps("b"))
    trail = await _role(owner_engine, tenant, "History reader", [P.HISTORY_READ.value])
    acts = await _role(owner_engine, tenant, "Activities on one", [P.ACTIVITY_READ.value])
    _user, token = await _caller(client, owner_engine, tenant, [(trail, None), (acts, world.one)])
    query = "query ($id: UUID!) { changeHistory(entityId: $id) { totalCount } }"
    for activity, count in ((on_one, 1), (on_two, 0)):
        body = (await gql_response(client, query, {"id": str(activity.id)}, token=token)).json()
        assert body == {"data": {"changeHistory": {"totalCount": count}}}, body


async def test_deleted_rows_under_a_project_through_a_parent_or_a_target_keep_their_project(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, app_engine: AsyncEngine, world: World
) -> None:
    """A deleted document association finds its project through its (live) document, a deleted activity
    through the capture plan it was about, both from the values their deleting audit row recorded."""
    tenant = world.tenant
    gone: dict[str, uuid.UUID] = {}
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        for slot, project in (("one", world.one), ("two", world.two)):
            refs = {"opportunity_projects": project}
            document = await make(conn, "documents", tenant, refs, opportunity_project_id=project)
            gone[f"association-{slot}"] = (await make(
                conn, "document_associations", tenant, {**refs, "documents": document.id},
            )).id
            gone[f"activity-{slot}"] = (await make(
                conn, "activities", tenant, refs, entity_type="capture_plan",
                entity_id=world.entities[("capture_plans", "kept", slot)],
            )).id
    for name, entity_id in gone.items():
        model = DocumentAssociation if name.startswith("association") else Activity
        async with _uow(app_engine, tenant) as uow:
            await uow.delete(await uow.lock(model, entity_id))
    trail = await _role(owner_engine, tenant, "Trail of deleted rows", [P.HISTORY_READ.value, P.AUDIT_READ.value])
    reads = await _role(owner_engine, tenant, "Documents and activities on one",
                        [P.DOCUMENT_READ.value, P.ACTIVITY_READ.value])
    _user, token = await _caller(client, owner_engine, tenant, [(trail, None), (reads, world.one)])
    query = """query ($id: UUID!) {
      changeHistory(entityId: $id) { totalCount }
      auditLogs(filter: {entityId: {eq: $id}}) { totalCount nodes { actionType } }
    }"""
    for name, entity_id in gone.items():
        body = (await gql_response(client, query, {"id": str(entity_id)}, token=token)).json()
        assert "errors" not in body, body
        if name.endswith("-one"):
            assert body["data"]["changeHistory"]["totalCount"] > 0, (name, body)
            assert body["data"]["auditLogs"]["nodes"] == [{"actionType": "DELETE"}], (name, body)
        else:
            assert body["data"] == {"changeHistory": {"totalCount": 0},
                                    "auditLogs": {"totalCount": 0, "nodes": []}}, (name, body)


# -- filters on value columns ----------------------------------------------------------------------------


def _scope(tenant_wide: set[str], per_project: dict[uuid.UUID, frozenset[str]] | None = None) -> ReadScope:
    grants = Grants(tenant_wide=frozenset(tenant_wide), per_project=per_project or {})
    return ReadScope(Principal(PrincipalKind.SESSION, uuid.uuid4(), uuid.uuid4(), grants))


@pytest.mark.parametrize(("table", "column"), [(t, c) for t, cs in sorted(VALUE_COLUMNS.items()) for c in sorted(cs)])
def test_a_filter_or_order_on_a_value_column_needs_every_field_permission_tenant_wide(table: str, column: str) -> None:
    from models import Base

    trail = Base.metadata.tables[table]
    everything = {p.value for p in Permission}
    _scope(everything).check_columns(trail, [column])  # holds them all: allowed
    _scope(everything).check_columns(trail, ["entity_type", "entity_id"])  # other columns are not values
    for missing in sorted(FIELD_PERMISSIONS):
        with pytest.raises(FieldDenied) as refused:
            _scope(everything - {missing.value}, {uuid.uuid4(): frozenset({missing.value})}).check_columns(
                trail, [column]
            )
        assert refused.value.permission == missing and refused.value.column == column
