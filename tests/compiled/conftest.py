"""Two apps over one database, the compiled read path on in one and off in the other, and a world to read.

The world is committed data of two tenants. In tenant A: four opportunity projects (one archived)
with contacts, organizations (a three-level tree), documents (one deleted), capture plans,
proposals, activities, external data, overrides and history under them; the callers are a tenant
admin, a Capture Manager holding the role on two of the four projects only (and on a third until
yesterday: expired), a Viewer (no score or strategy permissions) and, in tenant B (a project of
its own), a tenant admin. Both apps share one secret key, so a session token signed in on one is
valid on the other.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from server.app import create_app
from tests.conftest import Database
from tests.support.db import TenantRef, create_tenant
from tests.support.factories import make
from tests.support.graphql import sign_in
from tests.support.http import LoginUser, app_client, make_login_user, test_settings


def global_id(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


@dataclass(frozen=True, slots=True)
class Caller:
    """A signed-in principal: its name in reports, its token and tenant."""

    name: str
    token: str
    tenant: TenantRef
    user_id: uuid.UUID


@dataclass(slots=True)
class World:
    tenant: TenantRef
    other_tenant: TenantRef
    projects: list[uuid.UUID] = field(default_factory=list)  # tenant A's, P3 archived
    scoped_projects: list[uuid.UUID] = field(default_factory=list)  # the scoped manager's
    other_project: uuid.UUID | None = None
    uuids: list[uuid.UUID] = field(default_factory=list)  # ids of every row made (filter values)
    node_ids: list[tuple[str, str]] = field(default_factory=list)  # (type name, global id)
    strings: list[str] = field(default_factory=list)  # values seen in string columns


@dataclass(frozen=True, slots=True)
class Apps:
    on: Starlette
    off: Starlette


@dataclass(frozen=True, slots=True)
class Clients:
    on: httpx.AsyncClient
    off: httpx.AsyncClient
    on_app: Starlette
    off_app: Starlette


@pytest.fixture(scope="package")
def apps(database: Database) -> Apps:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    keys = f"t1:{key}"
    return Apps(
        on=create_app(test_settings(database.app_url, secret_keys=keys, compiled_reads=True)),
        off=create_app(test_settings(database.app_url, secret_keys=keys, compiled_reads=False)),
    )


@pytest.fixture(scope="package")
async def clients(apps: Apps) -> AsyncIterator[Clients]:
    async with app_client(apps.on) as on, app_client(apps.off) as off:
        yield Clients(on=on, off=off, on_app=apps.on, off_app=apps.off)


async def _project_subtree(
    conn: Any, tenant: TenantRef, refs: dict[str, Any], world: World, n: int, **columns: Any
) -> uuid.UUID:
    statuses = ["active", "on_hold", "won", "active"]
    stages = ["phase_1", "phase_3", "phase_0", "phase_5"]
    priorities = ["high", "low", "critical", "medium"]
    project = await make(
        conn, "opportunity_projects", tenant, refs,
        project_name=f"Pursuit {n} O'Neil \"quoted\"", project_status=statuses[n % 4],
        pipeline_stage=stages[n % 4], priority_level=priorities[n % 4],
        solicitation_number=f"SOL-{n:03d}", agency_name=["Navy", "Army", None, "GSA"][n % 4],
        assigned_capture_manager=refs["users"] if n != 3 else None, strategic_value_score=[55, None, 12.5, 90][n % 4],
        **columns,
    )
    under = {**refs, "opportunity_projects": project.id}
    world.uuids.append(project.id)
    world.node_ids.append(("OpportunityProject", global_id("OpportunityProject", project.id)))
    world.strings.append(project.project_name)
    for i in range(2):
        contact = refs["contact_list"][(n + i) % len(refs["contact_list"])]
        await make(conn, "opportunity_project_contacts", tenant, {**under, "contacts": contact},
                   influence_level=[3, None][i])
        document = await make(
            conn, "documents", tenant, under, opportunity_project_id=project.id,
            name=f"Proposal volume {n}.{i}", category_id=refs["document_categories"] if i == 0 else None,
            document_type=["rfp", "amendment"][i],
            file_size_bytes=[2**53 + 1, 0][i],  # past a double's exact integers
            tags='["a", {"z": 1, "b": [true, null]}]' if i == 0 else "[]",
        )
        world.uuids.append(document.id)
        world.node_ids.append(("Document", global_id("Document", document.id)))
    if n == 0:  # a deleted document: left out unless includeDeleted
        await make(conn, "documents", tenant, under, opportunity_project_id=project.id, name="Withdrawn volume",
                   is_deleted=True, deleted_at=datetime(2026, 5, 1, tzinfo=UTC))
    plan = await make(conn, "capture_plans", tenant, under, win_strategy=f"Win by price {n}",
                      decision_date=date(2026, 3, n + 1), plan_name=f"Plan {n}")
    world.node_ids.append(("CapturePlan", global_id("CapturePlan", plan.id)))
    await make(conn, "proposals", tenant, under)
    for entity_type, entity_id in (("opportunity_project", project.id), ("capture_plan", plan.id)):
        activity = await make(
            conn, "activities", tenant, under, entity_type=entity_type, entity_id=entity_id,
            # Microseconds with trailing zeros and none at all: both paths must spell them alike.
            activity_date=datetime(2026, 2, n + 1, 9, 30, 15, [123456, 123450, 100000, 0][n % 4], tzinfo=UTC),
            subject=f"Call with agency {n} \\ back-slash",
        )
        world.node_ids.append(("Activity", global_id("Activity", activity.id)))
    await make(conn, "external_opportunity_data", tenant, under)
    await make(conn, "opportunity_project_overrides", tenant, under, field_name="title",
               override_value='"Overridden title"')
    await make(conn, "external_data_changes", tenant, under)
    await make(conn, "change_history", tenant, under, entity_id=project.id, old_value='"a"', new_value='"b"')
    project_id: uuid.UUID = project.id
    return project_id


async def _build_world(owner_engine: AsyncEngine) -> World:
    tenant = await create_tenant(owner_engine, "Compiled reads A")
    other = await create_tenant(owner_engine, "Compiled reads B")
    world = World(tenant=tenant, other_tenant=other)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        refs: dict[str, Any] = {}
        manager = await make(conn, "users", tenant)
        refs["users"] = manager.id
        world.node_ids.append(("User", global_id("User", manager.id)))
        refs["external_opportunity_sources"] = (await make(conn, "external_opportunity_sources", tenant)).id
        refs["document_categories"] = (await make(conn, "document_categories", tenant)).id
        parent: uuid.UUID | None = None
        orgs = []
        for i, name in enumerate(["Department of Navy", "NAVSEA", "NAVSEA Office 05", "Acme Prime"]):
            org = await make(conn, "organizations", tenant, name=name, organization_type=["agency", "sub", "office",
                             "prime"][i], parent_organization_id=parent if i < 3 else None)
            parent = org.id if i < 3 else parent
            orgs.append(org.id)
            world.uuids.append(org.id)
            world.strings.append(name)
            world.node_ids.append(("Organization", global_id("Organization", org.id)))
        contacts = []
        for i in range(4):
            contact = await make(conn, "contacts", tenant, organization_id=orgs[i % 4] if i < 3 else None,
                                 last_name=f"Smith-{i}", email=f"c{i}@agency.example" if i % 2 == 0 else None,
                                 first_name=["Zoë 𝄞", "Line\u2028Sep", "Tab\tand\x01ctl", ""][i],
                                 title=["  padded  ", None, "It's \"x\" \\ y", "</script>"][i], is_active=i != 3)
            contacts.append(contact.id)
            world.uuids.append(contact.id)
            world.node_ids.append(("Contact", global_id("Contact", contact.id)))
        refs["contact_list"] = contacts
        refs["contacts"] = contacts[0]
        scores = [40, None, 75.5, 10]
        for n in range(4):
            archived = {"archived_at": datetime(2026, 4, 1, tzinfo=UTC)} if n == 2 else {}
            world.projects.append(await _project_subtree(
                conn, tenant, refs, world, n, win_probability_score=scores[n], **archived))
    world.scoped_projects = world.projects[:2]
    async with owner_engine.begin() as conn:
        await set_tenant(conn, other.id)
        refs_b: dict[str, Any] = {"users": (await make(conn, "users", other)).id}
        refs_b["contacts"] = (await make(conn, "contacts", other)).id
        refs_b["contact_list"] = [refs_b["contacts"]]
        refs_b["document_categories"] = (await make(conn, "document_categories", other)).id
        world.other_project = await _project_subtree(conn, other, refs_b, world, 1, win_probability_score=66)
    world.uuids.append(uuid.UUID(int=7))
    world.node_ids.append(("OpportunityProject", global_id("OpportunityProject", uuid.UUID(int=7))))  # no row
    world.node_ids.append(("Invalid", base64.b64encode(b"PageInfo:1").decode()))  # not a Node type
    world.node_ids.append(("Invalid", "not base64!"))
    world.strings.extend(["Pursuit", "NAV", "O'Neil", '"quoted"', "\\", "%", "_", "Smith-1", "zz-none"])
    return world


@pytest.fixture(scope="package")
async def world(owner_engine: AsyncEngine) -> World:
    return await _build_world(owner_engine)


async def _scoped_manager(owner_engine: AsyncEngine, world: World) -> LoginUser:
    """Capture Manager on the first two projects, and on the fourth until yesterday (expired)."""
    user = await make_login_user(owner_engine, world.tenant, roles=[])
    expired = datetime.now(UTC) - timedelta(days=1)
    grants = [(p, None) for p in world.scoped_projects] + [(world.projects[3], expired)]
    async with owner_engine.begin() as conn:
        await set_tenant(conn, world.tenant.id)
        for project, expires_at in grants:
            await conn.execute(
                text(
                    "INSERT INTO user_roles"
                    " (tenant_id, user_id, role_id, opportunity_project_id, assigned_by, expires_at)"
                    " SELECT :t, :u, id, :p, :by, :e FROM roles WHERE tenant_id = :t AND name = 'Capture Manager'"
                ),
                {"t": world.tenant.id, "u": user.id, "p": project, "by": world.tenant.system_user_id,
                 "e": expires_at},
            )
    return user


@pytest.fixture(scope="package")
async def callers(owner_engine: AsyncEngine, world: World, clients: Clients) -> dict[str, Caller]:
    """The four principals, signed in once (on the off app; the token serves both)."""
    users = {
        "admin": await make_login_user(owner_engine, world.tenant, roles=["Tenant Admin"]),
        "scoped_manager": await _scoped_manager(owner_engine, world),
        "viewer": await make_login_user(owner_engine, world.tenant, roles=["Viewer"]),
        "other_tenant_admin": await make_login_user(owner_engine, world.other_tenant, roles=["Tenant Admin"]),
    }
    return {
        name: Caller(name=name, token=await sign_in(clients.off, user), tenant=user.tenant, user_id=user.id)
        for name, user in users.items()
    }
