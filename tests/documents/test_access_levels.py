"""Access levels on every path: a restricted or confidential document never reaches a user outside its
readers (docs/enums.md, AccessLevel; auth/rules.py, the documents rule).

The paths are generated from the schema: every field whose type is a document, a document connection,
or something hanging under a document (associations, access logs), plus the roots (`documents`, the
search, `node`, `nodes`, `activities`, the trail: `changeHistory`, `auditLogs`). Each path is read by
callers outside the readers (a Tenant Admin holding every permission, a Capture Manager on the
document's project) on both read paths (the compiled one and the field-by-field executor): no hidden
document's id, global id or name appears anywhere in the answer. The same paths read by a named reader
and by the uploader do show them, so the check is not vacuous.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from graphql import GraphQLObjectType, get_named_type
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from schema.schema import schema as gql_schema
from server.app import create_app
from tests.conftest import Database
from tests.support.db import TenantRef, create_tenant
from tests.support.factories import make
from tests.support.graphql import sign_in
from tests.support.http import LoginUser, app_client, make_login_user
from tests.support.http import test_settings as settings_for

MARK = "zebracorn"  # a word only the world's documents contain (the search path finds them by it)


def _gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


@dataclass
class World:
    tenant: TenantRef
    project: uuid.UUID
    other_project: uuid.UUID
    category: uuid.UUID
    users: dict[str, LoginUser]
    open_doc: uuid.UUID  # project_team, in `project`
    hidden: dict[str, uuid.UUID]  # name -> id of every restricted/confidential document
    tenant_doc: uuid.UUID  # access level tenant, in `other_project`
    rows: dict[str, uuid.UUID] = field(default_factory=dict)  # other rows by purpose

    def secrets(self) -> list[str]:
        """What must never appear in an outsider's answer: ids, global ids and names of hidden rows."""
        out: list[str] = []
        for name, row_id in self.hidden.items():
            out += [str(row_id), _gid("Document", row_id), name]
        for key in ("hidden_association", "pointer_association", "hidden_activity"):
            out.append(str(self.rows[key]))
        return out


async def _world(owner_engine: AsyncEngine) -> World:
    tenant = await create_tenant(owner_engine, "Access levels")
    users = {
        "uploader": await make_login_user(owner_engine, tenant, roles=["Capture Manager"]),
        "reader": await make_login_user(owner_engine, tenant, roles=["Tenant Admin"]),
        "admin": await make_login_user(owner_engine, tenant, roles=["Tenant Admin"]),
        "scoped": await make_login_user(owner_engine, tenant, roles=[]),
    }
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        project = await make(conn, "opportunity_projects", tenant)
        other_project = await make(conn, "opportunity_projects", tenant)
        category = await make(conn, "document_categories", tenant)
        refs = {"opportunity_projects": project.id, "users": users["uploader"].id}
        change = await make(conn, "external_data_changes", tenant, refs)  # brought a hidden and the open one
        await conn.execute(
            text(
                "INSERT INTO user_roles (tenant_id, user_id, role_id, opportunity_project_id, assigned_by)"
                " SELECT :t, :u, id, :p, :by FROM roles WHERE tenant_id = :t AND name = 'Capture Manager'"
            ),
            {"t": tenant.id, "u": users["scoped"].id, "p": project.id, "by": tenant.system_user_id},
        )

        async def doc(name: str, level: str, **extra: Any) -> uuid.UUID:
            row = await make(
                conn, "documents", tenant, refs, name=name, access_level=level, category_id=category.id,
                opportunity_project_id=extra.pop("opportunity_project_id", project.id),
                uploaded_by=users["uploader"].id, extracted_text=f"{MARK} {name} text", **extra,
            )
            return uuid.UUID(str(row.id))

        open_doc = await doc(f"Open {MARK}", "project_team", is_current_version=False,
                             external_data_change_id=change.id)
        hidden: dict[str, uuid.UUID] = {}
        for level in ("restricted", "confidential"):
            name = f"Secret-{level}-{uuid.uuid4().hex[:8]}"
            hidden[name] = await doc(name, level, is_current_version=level != "restricted",  # versions below
                                     external_data_change_id=change.id)
        # A restricted version made from the open document, and an open version made from a restricted one.
        version_name = f"Secret-version-{uuid.uuid4().hex[:8]}"
        hidden[version_name] = await doc(version_name, "restricted", parent_document_id=open_doc, version_number=2)
        restricted = next(iter(hidden.values()))
        open_version = await doc(f"Open version {MARK}", "project_team", parent_document_id=restricted,
                                 version_number=2)
        no_project_name = f"Secret-unfiled-{uuid.uuid4().hex[:8]}"
        hidden[no_project_name] = await doc(no_project_name, "confidential", opportunity_project_id=None)
        tenant_doc = await doc(f"Tenant wide {MARK}", "tenant", opportunity_project_id=other_project.id)
        for document_id in hidden.values():
            await conn.execute(
                text("INSERT INTO document_readers (tenant_id, document_id, user_id, added_by)"
                     " VALUES (:t, :d, :u, :by)"),
                {"t": tenant.id, "d": document_id, "u": users["reader"].id, "by": users["uploader"].id},
            )
        rows: dict[str, uuid.UUID] = {"open_version": open_version, "change": change.id}
        drefs = {**refs, "documents": restricted}
        rows["hidden_association"] = (await make(conn, "document_associations", tenant, drefs)).id
        rows["pointer_association"] = (
            await make(conn, "document_associations", tenant, {**refs, "documents": open_doc},
                       entity_type="document", entity_id=restricted)
        ).id
        rows["hidden_activity"] = (
            await make(conn, "activities", tenant, refs, entity_type="document", entity_id=restricted)
        ).id
        await make(conn, "activity_participants", tenant, {"activities": rows["hidden_activity"]})
        rows["hidden_log"] = (
            await make(conn, "document_access_logs", tenant, drefs, user_id=users["reader"].id)
        ).id
        for document_id in hidden.values():
            await make(conn, "change_history", tenant, refs, entity_type="document", entity_id=document_id,
                       field_name="name", old_value=json.dumps(f"old {MARK}"), new_value=json.dumps("new"))
            await make(conn, "audit_logs", tenant, refs, entity_type="document", entity_id=document_id,
                       action_type="document.updated", before_values=json.dumps({"name": "before"}))
        await make(conn, "change_history", tenant, refs, entity_type="document_association",
                   entity_id=rows["hidden_association"], field_name="notes", old_value=json.dumps("a"),
                   new_value=json.dumps("b"))
        await make(conn, "change_history", tenant, refs, entity_type="activity",
                   entity_id=rows["hidden_activity"], field_name="subject", old_value=json.dumps("a"),
                   new_value=json.dumps("b"))
    return World(tenant, project.id, other_project.id, category.id, users, open_doc, hidden, tenant_doc, rows)


@pytest.fixture(scope="module")
async def world(owner_engine: AsyncEngine) -> World:
    return await _world(owner_engine)


@pytest.fixture(scope="module")
def compiled_app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url))


@pytest.fixture(scope="module")
def executor_app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url, compiled_reads=False))


@pytest.fixture(params=["compiled", "executor"])
async def client(request: pytest.FixtureRequest, compiled_app: Starlette, executor_app: Starlette
                 ) -> AsyncIterator[httpx.AsyncClient]:
    app = compiled_app if request.param == "compiled" else executor_app
    async with app_client(app) as http:
        yield http


# -- the paths ---------------------------------------------------------------------------------------

_CONNECTION = "first: 50"
_DOC = "rowId id name"
_ASSOC = f"rowId entityId document {{ {_DOC} }} target {{ ... on Document {{ {_DOC} }} }}"
_LOG = f"rowId document {{ {_DOC} }}"
#: What to select under each type a path ends in.
_SELECT = {
    "Document": _DOC,
    "DocumentConnection": f"nodes {{ {_DOC} }}",
    "DocumentAssociation": _ASSOC,
    "DocumentAssociationConnection": f"nodes {{ {_ASSOC} }}",
    "DocumentAccessLog": _LOG,
    "DocumentAccessLogConnection": f"nodes {{ {_LOG} }}",
}
#: Where each owner type of a path is reached from: a node id of the world's rows (the parent reads
#: the child path through `node`).
_OWNERS: dict[str, Callable[[World], list[str]]] = {
    "OpportunityProject": lambda w: [_gid("OpportunityProject", w.project)],
    "Tenant": lambda w: [_gid("Tenant", w.tenant.id)],
    "User": lambda w: [_gid("User", w.users["uploader"].id), _gid("User", w.users["reader"].id)],
    "Document": lambda w: [_gid("Document", w.open_doc), _gid("Document", w.rows["open_version"])],
    "DocumentCategory": lambda w: [_gid("DocumentCategory", w.category)],
    "DocumentAssociation": lambda w: [_gid("DocumentAssociation", w.rows["pointer_association"])],
    "DocumentAccessLog": lambda w: [_gid("DocumentAccessLog", w.rows["hidden_log"])],
    "ExternalDataChange": lambda w: [_gid("ExternalDataChange", w.rows["change"])],
    # Types that only link documents (no document hangs under them in this world): read for completeness.
    "Organization": lambda w: [], "Contact": lambda w: [], "CapturePlan": lambda w: [], "Proposal": lambda w: [],
}
_NOT_READS = {"DocumentConnection", "DocumentEdge", "DocumentAssociationConnection", "DocumentAssociationEdge",
              "DocumentAccessLogConnection", "DocumentAccessLogEdge"}


def _schema_paths() -> list[tuple[str, str, str]]:
    """(owner type, field, field's type) of every object field that reaches a document or a row under one."""
    out = []
    for gql_type in gql_schema._schema.type_map.values():
        if not isinstance(gql_type, GraphQLObjectType) or gql_type.name.startswith("__"):
            continue
        if gql_type.name in _NOT_READS or gql_type.name.endswith("Payload") or gql_type.name in ("Query", "Mutation"):
            continue
        for name, definition in gql_type.fields.items():
            named = get_named_type(definition.type).name
            if named in _SELECT:
                out.append((gql_type.name, name, named))
    return sorted(out)


PATHS = _schema_paths()


def _root_queries(world: World) -> list[str]:
    every = ", ".join(json.dumps(_gid("Document", d)) for d in [*world.hidden.values(), world.open_doc])
    return [
        f"{{ documents({_CONNECTION}, filter: {{includeDeleted: true}}) {{ totalCount nodes {{ {_DOC} }} }} }}",
        f'{{ documents(search: "{MARK}", {_CONNECTION}) {{ totalCount nodes {{ {_DOC} searchSnippet }} }} }}',
        f"{{ nodes(ids: [{every}]) {{ ... on Document {{ {_DOC} }} }} }}",
        *(f'{{ node(id: "{_gid("Document", d)}") {{ ... on Document {{ {_DOC} }} }} }}' for d in world.hidden.values()),
        f"{{ activities({_CONNECTION}) {{ nodes {{ rowId entityId participants {{ nodes {{ rowId }} }} }} }} }}",
        f"{{ auditLogs({_CONNECTION}) {{ nodes {{ entityId beforeValues afterValues }} }} }}",
        *(f'{{ changeHistory(entityId: "{d}", {_CONNECTION}) {{ nodes {{ entityId oldValue newValue }} }} }}'
          for d in world.hidden.values()),
        f'{{ node(id: "{_gid("DocumentAssociation", world.rows["hidden_association"])}")'
        f" {{ ... on DocumentAssociation {{ {_ASSOC} }} }} }}",
        f'{{ node(id: "{_gid("Activity", world.rows["hidden_activity"])}") {{ ... on Activity {{ rowId }} }} }}',
    ]


def _path_queries(world: World) -> list[str]:
    out = []
    for owner, name, named in PATHS:
        args = f"({_CONNECTION})" if named.endswith("Connection") else ""
        for node_id in _OWNERS[owner](world):
            out.append(f'{{ node(id: "{node_id}") {{ ... on {owner} {{ {name}{args} {{ {_SELECT[named]} }} }} }} }}')
    return out


def test_every_path_to_a_document_is_covered() -> None:
    """A new field reaching documents fails here until the world reads it."""
    assert PATHS, "no document paths found in the schema"
    assert {owner for owner, _, _ in PATHS} <= set(_OWNERS), sorted({o for o, _, _ in PATHS} - set(_OWNERS))


async def _answers(client: httpx.AsyncClient, user: LoginUser, queries: list[str]) -> list[str]:
    token = await sign_in(client, user)
    out = []
    for query in queries:
        response = await client.post("/graphql", json={"query": query}, headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        out.append(response.text)
    return out


@pytest.mark.parametrize("caller", ["admin", "scoped"])
async def test_outsiders_never_see_a_hidden_document(client: httpx.AsyncClient, world: World, caller: str) -> None:
    queries = _root_queries(world) + _path_queries(world)
    answers = await _answers(client, world.users[caller], queries)
    secrets = world.secrets()
    leaks = [(q, s) for q, a in zip(queries, answers, strict=True) for s in secrets if s in a]
    assert not leaks, leaks[:5]
    failed = [q for q, a in zip(queries, answers, strict=True)
              if "INTERNAL_SERVER_ERROR" in a or "GRAPHQL_VALIDATION_FAILED" in a]
    assert not failed, failed  # an answer that failed shows nothing, and proves nothing either
    # The open document of the project is read by both (the reads are not empty for other reasons).
    assert str(world.open_doc) in answers[0]


@pytest.mark.parametrize("caller", ["reader", "uploader"])
async def test_readers_and_the_uploader_see_them(client: httpx.AsyncClient, world: World, caller: str) -> None:
    queries = _root_queries(world)
    answers = await _answers(client, world.users[caller], queries)
    for name, document_id in world.hidden.items():
        assert name in answers[0] and str(document_id) in answers[0], (caller, name)  # the root list
        assert str(document_id) in answers[2]  # nodes
    if caller == "reader":  # a Tenant Admin named as reader: the trail about them too
        trail = " ".join(a for q, a in zip(queries, answers, strict=True) if "auditLogs" in q or "changeHistory" in q)
        for document_id in world.hidden.values():
            assert trail.count(str(document_id)) >= 2, document_id
    for name in world.hidden:
        assert name in answers[1], (caller, name)  # the search


async def test_a_tenant_level_document_is_read_beyond_the_granted_projects(
    client: httpx.AsyncClient, world: World
) -> None:
    """`tenant`: a Capture Manager on another project reads it; `project_team` of that project: not."""
    (answer,) = await _answers(client, world.users["scoped"], _root_queries(world)[:1])
    assert str(world.tenant_doc) in answer
    assert str(world.open_doc) in answer
