"""The mutation matrix: one input factory per mutation of the served schema.

A factory knows how to build what one mutation needs under a tenant (rows through the API or the
row factories of tests/support/factories.py) and returns the mutation's variables. The generated
tests of tests/writes/test_mutation_matrix.py run every registered mutation four ways:

- success: the entity is written (created, changed, archived, restored, deleted), with its
  audit_logs row and change_history rows (`tests.support.audit_trail.expect_audit`);
- permission denied: a caller of `denied_role` is refused FORBIDDEN naming `permission`, nothing
  changes, and the refusal is an audit_logs row (`auth.access.denied`); a self-service mutation
  instead tries another user's object: answered as missing, nothing changes, audited;
- cross tenant: the factory builds under another tenant and the caller sends those ids: they
  behave as missing (NOT_FOUND), nothing changes there;
- stale updatedAt (updates, archives, deletes): CONFLICT on `input.updatedAt`, nothing changes,
  and the error carries the row's current updatedAt where the error type has such a field.

Factories register with `@matrix(...)` in modules `tests/support/factories_<domain>.py`, found
and imported by `registry()`; /tmp/team/MATRIX_API.md (and docs in this module) describe the API.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from graphql import (
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLType,
    get_named_type,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.relay import from_base64, to_base64

from models.db import set_tenant
from schema.schema import schema
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import sign_in
from tests.support.http import LoginUser, make_login_user

__all__ = [
    "KINDS",
    "Caller",
    "Case",
    "Kind",
    "MatrixContext",
    "Spec",
    "document_for",
    "is_missing",
    "matrix",
    "randomized",
    "registry",
    "served_mutations",
    "wire",
]

Kind = Literal["create", "update", "archive", "restore", "delete", "action", "self-service"]
KINDS: tuple[Kind, ...] = ("create", "update", "archive", "restore", "delete", "action", "self-service")
#: Kinds whose input carries the updatedAt the client read (docs/decisions.md W12).
STALE_KINDS: frozenset[Kind] = frozenset({"update", "archive", "delete"})

_SUPPORT = Path(__file__).resolve().parent


def is_missing(code: str) -> bool:
    """An error code saying the row named is not there (NOT_FOUND, USER_NOT_FOUND, UNKNOWN_ROLE)."""
    return code == "NOT_FOUND" or code.endswith("_NOT_FOUND") or code.startswith("UNKNOWN_")


def wire(value: datetime) -> str:
    """A timestamp as the API writes it (microseconds, UTC)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Caller:
    """A signed-in user of a tenant."""

    user: LoginUser
    token: str

    @property
    def id(self) -> uuid.UUID:
        return self.user.id


@dataclass(slots=True)
class Case:
    """What a factory returns: the variables of one call and what the tests need to judge it.

    `variables`: the GraphQL variables, by argument name (`{"input": {...}}`, `{"userId": ...}`).
    `entity_id`: the row the call acts on (None on a create: read from the payload).
    `stale`: the variables with a stale updatedAt (updates, archives, deletes); None: derived by
        putting a time one second before the row's `updated_at` into `input.updatedAt`.
    `verify`: an extra check after the success call, given the entity's row as stored now (None when
        gone) and the payload.
    `tables`: further tables (besides the spec's) that must not change when the call is refused.
    `owner`: for self-service mutations, the user whose object this is (the success caller).
    """

    variables: dict[str, Any]
    entity_id: uuid.UUID | None = None
    stale: dict[str, Any] | None = None
    verify: Callable[[Any, dict[str, Any]], Awaitable[None]] | None = None
    tables: tuple[str, ...] = ()
    owner: Caller | None = None


Factory = Callable[["MatrixContext"], Awaitable[Case]]
#: A custom denied or cross-tenant test for a mutation the generic one cannot express.
Check = Callable[["MatrixContext"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Spec:
    """A mutation's entry in the matrix (see `matrix`)."""

    field: str
    kind: Kind
    table: str
    entity_type: str
    action: str
    permission: str | None
    denied_role: str | None
    factory: Factory
    history: frozenset[str] | None
    secrets: frozenset[str] = frozenset()
    operational: bool = False
    actor_roles: tuple[str, ...] = ("Tenant Admin",)
    cross_tenant: Literal["missing", "own_tenant"] = "missing"
    denied: Check | None = None
    foreign: Check | None = None
    node: str | None = None
    immutable: str | None = None
    rows_in_request: int | None = 1
    module: str = ""


_REGISTRY: dict[str, Spec] = {}
_LOADED = False


def matrix(
    field: str,
    *,
    kind: Kind,
    table: str,
    entity_type: str,
    action: str,
    permission: str | None,
    denied_role: str | None,
    history: set[str] | frozenset[str] | None,
    secrets: set[str] | frozenset[str] = frozenset(),
    operational: bool = False,
    actor_roles: tuple[str, ...] = ("Tenant Admin",),
    cross_tenant: Literal["missing", "own_tenant"] = "missing",
    denied: Check | None = None,
    foreign: Check | None = None,
    node: str | None = None,
    immutable: str | None = None,
    rows_in_request: int | None = 1,
) -> Callable[[Factory], Factory]:
    """Register the decorated factory as the one for mutation `field`.

    `kind`: create / update / archive / restore / delete / action / self-service.
    `table`, `entity_type`: the entity's table and the audit_logs.entity_type of its success row.
    `action`: the audit_logs.action_type of the success row ("CREATE", "UPDATE", "auth.role.created").
    `permission`: the catalog permission the mutation declares (None for self-service ones).
    `denied_role`: a system role without it, whose caller the denied test uses (self-service: the
        role of the other user trying the owner's object).
    `history`, `secrets`, `operational`: passed to expect_audit (history None: table not hooked).
    `actor_roles`: the roles of the caller of the success and cross-tenant tests.
    `cross_tenant`: "missing" (the other tenant's ids are NOT_FOUND) or "own_tenant" (the input
        names no row at all, e.g. roleCreate: the test shows the row lands in the caller's tenant
        and the other tenant is untouched).
    `denied`, `foreign`: custom tests replacing the generic denied / cross-tenant ones.
    `node`: the GraphQL type of the target (for global ids); default: the payload's entity type.
    `immutable`: for a delete of rows that are never changed (no updated_at column, so nothing
        can be stale): why; the meta-test checks the table indeed has no updated_at.
    `rows_in_request`: how many audit_logs rows the successful request writes in all (one per row
        it changes: 1 unless the mutation changes several rows, e.g. a user and its role grant).
    """
    if kind not in KINDS:
        raise ValueError(f"{field}: unknown kind {kind!r}")

    def register(factory: Factory) -> Factory:
        if field in _REGISTRY:
            raise ValueError(f"{field}: a factory is already registered in {_REGISTRY[field].module}")
        _REGISTRY[field] = Spec(
            field=field, kind=kind, table=table, entity_type=entity_type, action=action,
            permission=permission, denied_role=denied_role, factory=factory,
            history=None if history is None else frozenset(history), secrets=frozenset(secrets),
            operational=operational, actor_roles=actor_roles, cross_tenant=cross_tenant,
            denied=denied, foreign=foreign, node=node, immutable=immutable,
            rows_in_request=rows_in_request, module=factory.__module__,
        )
        return factory

    return register


def registry() -> Mapping[str, Spec]:
    """Every registered factory, after importing every tests/support/factories_<domain>.py."""
    global _LOADED
    if not _LOADED:
        for module in sorted(pkgutil.iter_modules([str(_SUPPORT)]), key=lambda m: m.name):
            if module.name.startswith("factories_"):
                importlib.import_module(f"tests.support.{module.name}")
        _LOADED = True
    return _REGISTRY


def served_mutations() -> dict[str, GraphQLField]:
    mutation = schema._schema.mutation_type
    assert mutation is not None
    return dict(mutation.fields)


# -- documents generated from the schema ------------------------------------------------------------


def _unwrap(type_: GraphQLType) -> GraphQLType:
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        type_ = type_.of_type
    return type_


def _selection(type_: GraphQLObjectType, depth: int) -> str:
    """Scalar fields of `type_` (without arguments), and the ids of its object fields."""
    parts: list[str] = []
    for name, f in type_.fields.items():
        inner = _unwrap(f.type)
        if any(isinstance(a.type, GraphQLNonNull) for a in f.args.values()):
            continue
        if isinstance(inner, GraphQLScalarType) or not hasattr(inner, "fields"):
            if f.args or name in {"provisioningUri"}:
                continue
            parts.append(name)
        elif isinstance(inner, GraphQLObjectType) and depth > 0:
            parts.append(f"{name} {{ {_selection(inner, depth - 1)} }}")
    return " ".join(parts) or "__typename"


def document_for(field_name: str) -> str:
    """`mutation Matrix($a: T!, ...) { field(a: $a, ...) { ... } }` selecting the whole payload:
    the entity's own scalar fields (guarded ones come back null or FORBIDDEN for a caller without
    their permission: the tests only read rowId, updatedAt, archivedAt), deleted ids, errors."""
    f = served_mutations()[field_name]
    args = ", ".join(f"${name}: {arg.type}" for name, arg in f.args.items())
    passed = ", ".join(f"{name}: ${name}" for name in f.args)
    payload = get_named_type(f.type)
    assert isinstance(payload, GraphQLObjectType)
    parts: list[str] = []
    for name, sub in payload.fields.items():
        inner = _unwrap(sub.type)
        if isinstance(inner, GraphQLObjectType):
            wanted = [n for n in ("id", "rowId", "updatedAt", "archivedAt") if n in inner.fields]
            if name == "errors":
                wanted = [n for n, e in inner.fields.items() if isinstance(_unwrap(e.type), GraphQLScalarType)]
            parts.append(f"{name} {{ {' '.join(wanted) or '__typename'} }}")
        else:
            parts.append(name)
    head = f"mutation Matrix({args})" if args else "mutation Matrix"
    call = f"{field_name}({passed})" if passed else field_name
    return f"{head} {{ {call} {{ {' '.join(parts)} }} }}"


def payload_entity(field_name: str) -> tuple[str, str] | None:
    """(payload field, GraphQL type) of the entity a payload returns, if it returns one."""
    payload = get_named_type(served_mutations()[field_name].type)
    assert isinstance(payload, GraphQLObjectType)
    for name, sub in payload.fields.items():
        inner = _unwrap(sub.type)
        if name != "errors" and isinstance(inner, GraphQLObjectType) and "rowId" in inner.fields:
            return name, inner.name
    return None


def input_type(field_name: str, argument: str = "input") -> GraphQLInputObjectType | None:
    arg = served_mutations()[field_name].args.get(argument)
    if arg is None:
        return None
    found = get_named_type(arg.type)
    return found if isinstance(found, GraphQLInputObjectType) else None


# -- the context a factory works in -----------------------------------------------------------------


IdStyle = Literal["row", "global"]


class Tenancy:
    """One tenant's shared state for a test module: callers by roles, signed in once."""

    def __init__(self, tenant: TenantRef) -> None:
        self.tenant = tenant
        self.callers: dict[tuple[str, ...], Caller] = {}


class MatrixContext:
    """What a factory is given: where to build (`tenant`), who will call, and helpers.

    `tenant` is the tenant the factory builds in: the caller's own, except in the cross-tenant test
    where the factory builds under another tenant than the caller's. `subject` is the user whose
    objects a self-service factory makes (the caller in the success test, another user of the
    same tenant in the denied test). `id_style` says how `target`/`ref` name rows: by rowId
    ("row") or by Relay global id ("global"), where the input accepts it.
    """

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        engine: AsyncEngine,
        tenancy: Tenancy,
        spec: Spec,
        subject: Caller | None = None,
        id_style: IdStyle = "row",
    ) -> None:
        self.client = client
        self.engine = engine
        self.tenancy = tenancy
        self.tenant = tenancy.tenant
        self.spec = spec
        self.field = spec.field
        self.subject = subject
        self.id_style = id_style

    # rows ------------------------------------------------------------------------------------

    async def make(self, table: str, refs: Mapping[str, Any] | None = None, **values: Any) -> Any:
        """A committed row of `table` in the tenant (tests/support/factories.py defaults)."""
        async with self.engine.begin() as conn:
            await set_tenant(conn, self.tenant.id)
            return await make(conn, table, self.tenant, refs, **values)

    async def all(self, sql: str, **params: Any) -> list[Any]:
        """Rows of `sql` read as the schema owner with the tenant set (`:t` is the tenant id)."""
        async with self.engine.connect() as conn:
            await set_tenant(conn, self.tenant.id)
            result = (await conn.execute(text(sql), {"t": self.tenant.id, **params})).all()
            await conn.rollback()
        return list(result)

    async def one(self, sql: str, **params: Any) -> Any:
        found = await self.all(sql, **params)
        assert len(found) == 1, found
        return found[0]

    async def execute(self, sql: str, **params: Any) -> None:
        """A committed statement as the schema owner (setting up state, e.g. locking a user)."""
        async with self.engine.begin() as conn:
            await set_tenant(conn, self.tenant.id)
            await conn.execute(text(sql), {"t": self.tenant.id, **params})

    # people -----------------------------------------------------------------------------------

    async def user(self, *roles: str, **columns: Any) -> LoginUser:
        """A new committed user of the tenant with a password and these system roles."""
        return await make_login_user(self.engine, self.tenant, roles=roles, **columns)

    async def sign_in(self, user: LoginUser) -> Caller:
        """A new session of `user`."""
        return Caller(user, await sign_in(self.client, user))

    async def caller(self, *roles: str) -> Caller:
        """A signed-in user with these roles, shared by the tests of the module."""
        key = tuple(sorted(roles))
        if key not in self.tenancy.callers:
            self.tenancy.callers[key] = await self.sign_in(await self.user(*roles))
        return self.tenancy.callers[key]

    # calls -----------------------------------------------------------------------------------

    async def call(
        self, caller: Caller, variables: dict[str, Any], field_name: str | None = None
    ) -> dict[str, Any]:
        """The response body of `field_name` (default: this mutation) sent by `caller`."""
        name = field_name or self.field
        files = _uploads_in(variables, "variables")
        if files:  # the GraphQL multipart request (documentUpload...), with its preflight header
            operations = {"query": document_for(name), "variables": _without_uploads(variables)}
            response = await self.client.post(
                "/graphql",
                data={"operations": json.dumps(operations), "map": json.dumps({str(i): [p] for i, (p, _) in
                                                                                 enumerate(files)})},
                files={str(i): (f.name, f.content, "application/octet-stream") for i, (_, f) in enumerate(files)},
                headers={"authorization": f"Bearer {caller.token}", "graphql-require-preflight": "1"},
            )
        else:
            response = await self.client.post(
                "/graphql",
                json={"query": document_for(name), "variables": variables},
                headers={"authorization": f"Bearer {caller.token}"},
            )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def run(self, caller: Caller, field_name: str, variables: dict[str, Any]) -> dict[str, Any]:
        """Another mutation's payload, which must succeed (building state through the API)."""
        body = await self.call(caller, variables, field_name)
        assert "errors" not in body, body
        payload: dict[str, Any] = body["data"][field_name]
        assert payload["errors"] == [], payload
        return payload

    # naming rows in inputs -------------------------------------------------------------------

    def target(self, row_id: uuid.UUID | str, *, node: str | None = None, argument: str = "input") -> dict[str, Any]:
        """The input fields naming the mutation's target: `{"rowId": ...}` or `{"id": <global id>}`
        where the input has them (Relay inputs), else `{"id": "<uuid>"}`."""
        fields = _input_fields(self.field, argument)
        node = node or self.spec.node or _target_node(self.field)
        if self.id_style == "global" and "id" in fields and _is_id(fields["id"]) and node:
            return {"id": to_base64(node, str(row_id))}
        if "rowId" in fields:
            return {"rowId": str(row_id)}
        if "id" in fields and _is_id(fields["id"]) and node:
            return {"id": to_base64(node, str(row_id))}
        return {"id": str(row_id)}

    def ref(self, name: str, row_id: uuid.UUID | str | None, *, node: str | None = None,
            argument: str = "input") -> dict[str, Any]:
        """The input fields naming a referenced row: `ref("opportunityProject", id)` gives
        `{"opportunityProjectRowId": ...}` or `{"opportunityProjectId": <global id or uuid>}`."""
        fields = _input_fields(self.field, argument)
        value = None if row_id is None else str(row_id)
        node = node or name[:1].upper() + name[1:]
        assert node in schema._schema.type_map, f"{name}: no GraphQL type {node}; pass ref(..., node='TheNodeType')"
        global_field = fields.get(f"{name}Id")
        if value is not None and self.id_style == "global" and global_field is not None and _is_id(global_field):
            return {f"{name}Id": to_base64(node, value)}
        if f"{name}RowId" in fields:
            return {f"{name}RowId": value}
        if global_field is not None and _is_id(global_field) and value is not None:
            return {f"{name}Id": to_base64(node, value)}
        return {f"{name}Id": value}

    def args(self, row_id: uuid.UUID | str | None = None, **values: Any) -> dict[str, Any]:
        """The variables of a call of this mutation: its target `row_id` (if any) and `values` by
        GraphQL name, inside `input` when the mutation takes one (values its input type lacks stay
        top-level arguments); for a mutation with plain arguments, the target goes to its UUID one."""
        arguments = served_mutations()[self.field].args
        if "input" in arguments:
            fields = _input_fields(self.field, "input")
            inner: dict[str, Any] = {} if row_id is None else self.target(row_id)
            outer: dict[str, Any] = {}
            for name, value in values.items():
                (inner if name in fields else outer)[name] = value
            return {"input": inner, **outer}
        found = dict(values)
        if row_id is not None:
            (name,) = [n for n, a in arguments.items() if str(a.type) in {"UUID!", "ID!"} and n not in values]
            found[name] = str(row_id)
        return found

    def updated_at(self, row: Any) -> dict[str, str]:
        return {"updatedAt": wire(row.updated_at)}


def _input_fields(field_name: str, argument: str) -> dict[str, Any]:
    found = input_type(field_name, argument)
    return {} if found is None else dict(found.fields)


def _is_id(input_field: Any) -> bool:
    named = get_named_type(input_field.type)
    return named is not None and named.name == "ID"


def _target_node(field_name: str) -> str | None:
    entity = payload_entity(field_name)
    return None if entity is None else entity[1]


def stale_time(value: datetime) -> str:
    """An updatedAt the client could have read before the row's last change."""
    return wire(value - timedelta(seconds=1))


@dataclass(slots=True)
class Snapshot:
    """A fingerprint of tables of one tenant, to show that a refused call changed nothing."""

    rows: dict[str, str] = field(default_factory=dict)


async def snapshot(engine: AsyncEngine, tenant_id: uuid.UUID, tables: tuple[str, ...]) -> Snapshot:
    found = Snapshot()
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        for table in sorted(set(tables)):
            digest = await conn.scalar(
                text(f"SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '')"
                     f" FROM {table} x WHERE tenant_id = :t"),
                {"t": tenant_id},
            )
            found.rows[table] = str(digest)
        for table in ("change_history",):
            found.rows[table] = str(await conn.scalar(
                text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"), {"t": tenant_id}))
        found.rows["audit_logs (changes)"] = str(await conn.scalar(
            text("SELECT count(*) FROM audit_logs WHERE tenant_id = :t AND access_granted"
                 " AND action_type NOT IN ('auth.login.succeeded', 'auth.session.created')"),
            {"t": tenant_id},
        ))
        await conn.rollback()
    return found


@dataclass(frozen=True)
class FileUpload:
    """A file in a factory's variables (an `Upload` variable): the call becomes a multipart request."""

    name: str
    content: bytes


def _uploads_in(value: Any, path: str) -> list[tuple[str, FileUpload]]:
    if isinstance(value, FileUpload):
        return [(path, value)]
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _uploads_in(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in _uploads_in(v, f"{path}.{i}")]
    return []


def _without_uploads(value: Any) -> Any:
    if isinstance(value, FileUpload):
        return None
    if isinstance(value, dict):
        return {k: _without_uploads(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_uploads(v) for v in value]
    return value


def randomized(value: Any) -> Any:
    """`value` (variables) with every row id in it, UUID or global id, replaced by a new random one
    of the same form: what a caller would send naming rows that do not exist."""
    if isinstance(value, dict):
        return {k: randomized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [randomized(v) for v in value]
    if isinstance(value, str):
        try:
            uuid.UUID(value)
        except ValueError:
            pass
        else:
            return str(uuid.uuid4())
        decoded = _global_id(value)
        if decoded is not None:
            return to_base64(decoded, str(uuid.uuid4()))
    return value


def _global_id(value: str) -> str | None:
    """The type name of a Relay global id `value` naming a row by UUID, else None."""
    try:
        name, node_id = from_base64(value)
        uuid.UUID(node_id)
    except ValueError:
        return None
    return name or None
