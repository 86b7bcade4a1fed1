"""Every mutation of the served schema, four ways, from one input factory per mutation
(tests/support/mutation_matrix.py; factories in tests/support/factories_<domain>.py):

- success: the entity is written, with its audit_logs row and change_history rows;
- permission denied: refused FORBIDDEN naming the permission, nothing changed, the refusal
  audited (self-service mutations: another user's object is answered as missing, and audited);
- cross tenant: another tenant's ids behave as missing (NOT_FOUND), nothing changed there;
- stale updatedAt (updates, archives, deletes): CONFLICT carrying the row's current updatedAt.

All of it over HTTP against the app, on committed data under two tenants shared by the module.
"""

from __future__ import annotations

import functools
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from graphql import GraphQLNonNull, GraphQLObjectType, get_named_type, parse
from graphql.language import FieldDefinitionNode, ObjectTypeDefinitionNode, StringValueNode
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from strawberry.relay import from_base64

from auth.permissions import SYSTEM_ROLES
from models import Base
from schema.schema import schema
from server.app import create_app
from tests.conftest import Database
from tests.support.audit_trail import expect_audit
from tests.support.db import create_tenant
from tests.support.http import app_client
from tests.support.http import test_settings as settings_for
from tests.support.mutation_matrix import (
    STALE_KINDS,
    Caller,
    Case,
    MatrixContext,
    Spec,
    Tenancy,
    input_type,
    is_missing,
    payload_entity,
    randomized,
    registry,
    served_mutations,
    snapshot,
    stale_time,
)

SPECS = registry()
FIELDS = sorted(SPECS)



def _carries_updated_at(field: str) -> bool:
    found = input_type(field)
    return found is not None and "updatedAt" in found.fields


# Updates, archives and deletes must carry updatedAt (W12); any other mutation whose input carries
# one (a restore, an action on a row) is checked the same way.
STALE_FIELDS = sorted(
    f for f, s in SPECS.items() if s.immutable is None and (s.kind in STALE_KINDS or _carries_updated_at(f))
)


def _success_params() -> list[Any]:
    # Each success case is marked as showing its mutation's audit trail (test_audit_coverage.py).
    return [pytest.param(f, marks=pytest.mark.audits(f), id=f) for f in FIELDS]


# -- fixtures: the app and two tenants shared by the module ------------------------------------------


class _Outbox:
    """A local SMTP server's handler (aiosmtpd calls `handle_DATA` by name) accepting every message:
    invitations need a mail server to be sent (their content is tested in tests/auth)."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 Message accepted for delivery"


@pytest.fixture(scope="module")
def smtp_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    controller = Controller(_Outbox(), hostname="127.0.0.1", port=port, ready_timeout=5)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def matrix_app(database: Database, smtp_port: int) -> Starlette:
    return create_app(settings_for(database.app_url, smtp_host="127.0.0.1", smtp_port=smtp_port))


@pytest.fixture(scope="module")
async def matrix_client(matrix_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(matrix_app) as http:
        yield http


@pytest.fixture(scope="module")
async def home(owner_engine: AsyncEngine) -> Tenancy:
    return Tenancy(await create_tenant(owner_engine, "Matrix home"))


@pytest.fixture(scope="module")
async def away(owner_engine: AsyncEngine) -> Tenancy:
    return Tenancy(await create_tenant(owner_engine, "Matrix away"))


def _ctx(client: httpx.AsyncClient, engine: AsyncEngine, tenancy: Tenancy, spec: Spec, **kw: Any) -> MatrixContext:
    return MatrixContext(client=client, engine=engine, tenancy=tenancy, spec=spec, **kw)


async def _actor(ctx: MatrixContext) -> Caller:
    """Who succeeds: a shared caller of the spec's roles; a user of its own for self-service."""
    if ctx.spec.kind == "self-service":
        return await ctx.sign_in(await ctx.user(*ctx.spec.actor_roles))
    return await ctx.caller(*ctx.spec.actor_roles)


def _tables(spec: Spec, case: Case) -> tuple[str, ...]:
    return (spec.table, *case.tables)


def _entity_id(payload: dict[str, Any]) -> uuid.UUID | None:
    """The row a payload names: its entity's rowId (or UUID id), or a delete's deletedRowId."""
    if payload.get("deletedRowId"):
        return uuid.UUID(payload["deletedRowId"])
    for name, value in payload.items():
        if name == "errors" or not isinstance(value, dict):
            continue
        for key in ("rowId", "id"):
            try:
                return uuid.UUID(str(value.get(key)))
            except ValueError:
                continue
    if payload.get("deletedId"):
        try:
            return uuid.UUID(payload["deletedId"])
        except ValueError:
            return None
    return None


def _codes(payload: dict[str, Any]) -> list[str]:
    return [e["code"] for e in payload["errors"]]


async def _row(ctx: MatrixContext, table: str, row_id: uuid.UUID) -> Any:
    found = await ctx.all(f"SELECT * FROM {table} WHERE id = :i", i=row_id)
    return found[0] if found else None


async def _denials(ctx: MatrixContext, caller: Caller) -> list[Any]:
    return await ctx.all(
        "SELECT * FROM audit_logs WHERE tenant_id = :t AND user_id = :u AND NOT access_granted ORDER BY seq",
        u=caller.id,
    )


# -- meta-tests ------------------------------------------------------------------------------------


def test_every_mutation_has_a_factory() -> None:
    served = set(served_mutations())
    missing = sorted(served - set(SPECS))
    assert missing == [], f"mutations without a matrix factory (tests/support/factories_<domain>.py): {missing}"
    unknown = sorted(set(SPECS) - served)
    assert unknown == [], f"matrix factories for mutations the schema does not serve: {unknown}"


def test_factories_live_in_the_discovered_domain_modules() -> None:
    support = Path(__file__).resolve().parents[1] / "support"
    modules = {f"tests.support.{p.stem}" for p in support.glob("factories_*.py")}
    registering = {spec.module for spec in SPECS.values()}
    assert registering <= modules, f"factories registered outside tests/support/factories_*.py: {registering - modules}"
    assert modules <= registering, f"factories_*.py modules registering nothing: {sorted(modules - registering)}"


@functools.cache
def _declared_permissions() -> dict[str, str | None]:
    """Mutation field -> the permission its @requiresPermission directive names (exported SDL)."""
    found: dict[str, str | None] = {}
    for definition in parse(schema.as_str()).definitions:
        if isinstance(definition, ObjectTypeDefinitionNode) and definition.name.value == "Mutation":
            for f in definition.fields or ():
                assert isinstance(f, FieldDefinitionNode)
                found[f.name.value] = None
                for directive in f.directives or ():
                    if directive.name.value == "requiresPermission":
                        for argument in directive.arguments or ():
                            if argument.name.value == "permission":
                                assert isinstance(argument.value, StringValueNode)
                                found[f.name.value] = argument.value.value
    return found


@pytest.mark.parametrize("field", FIELDS)
def test_the_factory_names_the_declared_permission_and_fitting_roles(field: str) -> None:
    spec = SPECS[field]
    declared = _declared_permissions()[field]
    roles = {role.value: {p.value for p in permissions} for role, permissions in SYSTEM_ROLES.items()}
    if spec.kind == "self-service":
        # Any signed-in caller may act on its own objects (an admin permission may reach others').
        assert spec.permission is None and spec.denied_role in roles
        return
    assert spec.permission == declared, f"{field} declares {declared}, its factory says {spec.permission}"
    assert spec.denied_role is not None and spec.permission not in roles[spec.denied_role]
    assert any(spec.permission in roles[r] for r in spec.actor_roles)
    if spec.immutable is not None:
        assert spec.kind == "delete" and "updated_at" not in Base.metadata.tables[spec.table].c, (
            f"{field}: {spec.table} rows change (updated_at), so its delete must check updatedAt")
    elif spec.kind in STALE_KINDS:
        found = input_type(field)
        assert found is not None and "updatedAt" in found.fields, (
            f"{field} is a {spec.kind}: its input must carry updatedAt (docs/decisions.md W12)")


#: Creates of the identity administration that predate idempotent creates (W20) and take no key.
_CREATES_WITHOUT_KEY = frozenset({"apiKeyCreate", "roleCreate", "userInvite", "userRoleGrant"})


@pytest.mark.parametrize("field", FIELDS)
def test_the_payload_and_input_fit_the_kind(field: str) -> None:
    """Relay conventions by kind: a true delete returns `deletedId: ID` (for @deleteRecord) and
    `deletedRowId: UUID`; archives and restores return the node, updates and creates what they
    wrote; creates take an optional idempotencyKey (W20)."""
    spec = SPECS[field]
    payload = get_named_type(served_mutations()[field].type)
    assert isinstance(payload, GraphQLObjectType)
    types = {name: str(f.type) for name, f in payload.fields.items()}
    assert types.get("errors") == "[UserError!]!"
    if spec.kind == "delete":
        assert (types.get("deletedId"), types.get("deletedRowId")) == ("ID", "UUID"), types
    elif spec.kind in {"archive", "restore"}:  # clients drop or add the edge of the node returned
        assert payload_entity(field) is not None, f"{field} ({spec.kind}) returns no node: {types}"
    elif spec.kind in {"create", "update"}:
        assert len(types) > 1, f"{field} ({spec.kind}) returns nothing but errors"
    if spec.kind == "create" and field not in _CREATES_WITHOUT_KEY:
        found = input_type(field)
        assert found is not None and "idempotencyKey" in found.fields, f"{field}: no idempotencyKey (W20)"
        assert not isinstance(found.fields["idempotencyKey"].type, GraphQLNonNull)


# -- success ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", _success_params())
async def test_success(
    field: str, matrix_client: httpx.AsyncClient, owner_engine: AsyncEngine, home: Tenancy
) -> None:
    spec = SPECS[field]
    ctx = _ctx(matrix_client, owner_engine, home, spec)
    actor = await _actor(ctx)
    ctx.subject = actor
    case = await spec.factory(ctx)
    before: Any = None if case.entity_id is None else await _row(ctx, spec.table, case.entity_id)

    body = await ctx.call(actor, case.variables)
    assert "errors" not in body, body
    payload = body["data"][field]
    assert payload["errors"] == [], payload
    entity_id = case.entity_id or _entity_id(payload)
    assert entity_id is not None, payload
    if case.entity_id is not None and spec.kind != "delete" and _entity_id(payload) is not None:
        assert _entity_id(payload) == case.entity_id

    stored: Any = await _row(ctx, spec.table, entity_id)
    if spec.kind == "delete":
        assert stored is None, f"{field}: the row is still there"
        if "deletedRowId" in payload:
            assert payload["deletedRowId"] == str(entity_id)
        assert payload.get("deletedId"), payload
        deleted = payload["deletedId"]
        if "deletedRowId" in payload:  # Relay: the global id of the node, usable with @deleteRecord
            assert from_base64(deleted)[1] == str(entity_id), deleted
    else:
        assert stored is not None and stored.tenant_id == home.tenant.id
    if spec.kind == "update":
        assert stored.updated_at > before.updated_at
    if spec.kind == "archive":
        assert stored.archived_at is not None and before.archived_at is None
    if spec.kind == "restore":
        assert stored.archived_at is None and before.archived_at is not None

    log, _ = await expect_audit(
        owner_engine, home.tenant.id, field, action=spec.action, entity_id=entity_id, history=spec.history,
        secrets=spec.secrets, user_id=actor.id, operational=spec.operational,
        rows_in_request=spec.rows_in_request,
    )
    assert log.entity_type == spec.entity_type
    if spec.permission is not None:
        assert spec.permission in (log.permission_used or "").split(","), log.permission_used
    for name, value in payload.items():  # the node returned is the row as committed
        if isinstance(value, dict) and value.get("updatedAt") and stored is not None:
            assert _instant(value["updatedAt"]) == stored.updated_at, (name, value)
    if case.verify is not None:
        await case.verify(stored, payload)


# -- permission denied -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", FIELDS)
async def test_permission_denied(
    field: str, matrix_client: httpx.AsyncClient, owner_engine: AsyncEngine, home: Tenancy
) -> None:
    spec = SPECS[field]
    ctx = _ctx(matrix_client, owner_engine, home, spec)
    if spec.denied is not None:
        await spec.denied(ctx)
        return
    assert spec.denied_role is not None
    intruder = await ctx.caller(spec.denied_role)
    if spec.kind == "self-service":
        # The object is another user's: the caller holds no admin permission over it.
        ctx.subject = await ctx.sign_in(await ctx.user(*spec.actor_roles))
    else:
        ctx.subject = intruder
    case = await spec.factory(ctx)
    tables = _tables(spec, case)
    denials = len(await _denials(ctx, intruder))
    kept = await snapshot(owner_engine, home.tenant.id, tables)

    body = await ctx.call(intruder, case.variables)

    if spec.kind == "self-service":
        payload = body["data"][field]
        assert "errors" not in body and payload is not None, body
        assert payload["errors"] and all(is_missing(c) for c in _codes(payload)), payload
    else:
        errors = body.get("errors") or []
        assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"], body
        assert errors[0]["extensions"]["permission"] == spec.permission
        assert body["data"][field] is None
    assert await snapshot(owner_engine, home.tenant.id, tables) == kept, f"{field}: a refused call changed rows"
    new = (await _denials(ctx, intruder))[denials:]
    assert len(new) == 1, [tuple(r) for r in new]
    (denial,) = new
    assert denial.access_granted is False and field in (denial.operation_description or "")
    if spec.permission is not None:
        assert denial.action_type == "auth.access.denied" and denial.permission_used == spec.permission


# -- cross tenant ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", FIELDS)
async def test_cross_tenant(
    field: str, matrix_client: httpx.AsyncClient, owner_engine: AsyncEngine, home: Tenancy, away: Tenancy
) -> None:
    spec = SPECS[field]
    here = _ctx(matrix_client, owner_engine, home, spec)
    if spec.foreign is not None:
        await spec.foreign(here)
        return
    actor = await _actor(here)
    # The factory builds under the other tenant (naming rows by global id where the input takes one).
    there = _ctx(matrix_client, owner_engine, away, spec, id_style="global")
    there.subject = await there.sign_in(await there.user(*spec.actor_roles)) if spec.kind == "self-service" else None
    if spec.cross_tenant == "own_tenant":
        there.subject = actor
    case = await spec.factory(there)
    tables = _tables(spec, case)
    theirs = await snapshot(owner_engine, away.tenant.id, tables)
    ours = await snapshot(owner_engine, home.tenant.id, tables)

    body = await here.call(actor, case.variables)
    assert "errors" not in body, body
    payload = body["data"][field]

    assert await snapshot(owner_engine, away.tenant.id, tables) == theirs, f"{field} changed the other tenant"
    if spec.cross_tenant == "own_tenant":
        # Nothing in the input names a row: the call succeeds, in the caller's tenant only.
        assert payload["errors"] == [], payload
        entity_id = case.entity_id or _entity_id(payload)
        assert entity_id is not None
        stored = await _row(here, spec.table, entity_id)
        assert stored is not None and stored.tenant_id == home.tenant.id
        return
    # Behaving as missing: the same answer as for ids that name no row at all.
    assert payload["errors"], payload
    assert all(v is None for k, v in payload.items() if k != "errors"), payload
    assert await snapshot(owner_engine, home.tenant.id, tables) == ours, f"{field} changed the caller's tenant"
    nowhere = await here.call(actor, randomized(case.variables))
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        (e["code"], e["field"]) for e in nowhere["data"][field]["errors"]], (payload, nowhere)
    assert all(is_missing(c) or c == "VALIDATION" for c in _codes(payload)), payload


# -- stale updatedAt ---------------------------------------------------------------------------------


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.parametrize("field", STALE_FIELDS)
async def test_stale_updated_at_is_a_conflict(
    field: str, matrix_client: httpx.AsyncClient, owner_engine: AsyncEngine, home: Tenancy
) -> None:
    spec = SPECS[field]
    found = input_type(field)
    assert found is not None and "updatedAt" in found.fields, f"{field}: no updatedAt in its input (W12)"
    ctx = _ctx(matrix_client, owner_engine, home, spec)
    actor = await _actor(ctx)
    ctx.subject = actor
    case = await spec.factory(ctx)
    assert case.entity_id is not None
    row = await _row(ctx, spec.table, case.entity_id)
    variables = case.stale or {**case.variables, "input": {**case.variables["input"],
                                                           "updatedAt": stale_time(row.updated_at)}}
    tables = _tables(spec, case)
    kept = await snapshot(owner_engine, home.tenant.id, tables)

    body = await ctx.call(actor, variables)
    assert "errors" not in body, body
    payload = body["data"][field]
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("CONFLICT", ["input", "updatedAt"])], payload
    assert all(v is None for k, v in payload.items() if k != "errors"), payload
    assert await snapshot(owner_engine, home.tenant.id, tables) == kept
    (error,) = payload["errors"]
    # The row's current updatedAt comes with the CONFLICT: a client can merge without reading again.
    assert error["currentUpdatedAt"] is not None and _instant(error["currentUpdatedAt"]) == row.updated_at
