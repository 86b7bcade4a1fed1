"""The nested pursuit read (bench/queries/nested_pursuit.graphql): statements do not grow with rows."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql
from tests.support.roundtrips import count_round_trips
from tests.support.sqlcount import count_statements

QUERY = (Path(__file__).resolve().parents[2] / "bench" / "queries" / "nested_pursuit.graphql").read_text()
# projects; their capture managers, contact links, documents and capture plans; the links' contacts;
# the contacts' organizations: one statement per relation per level.
RELATION_STATEMENTS = 7


async def _pursuits(owner_engine: AsyncEngine, tenant: TenantRef, count: int) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        manager = await make(conn, "users", tenant)
        org = await make(conn, "organizations", tenant)
        for _ in range(count):
            project = await make(conn, "opportunity_projects", tenant, assigned_capture_manager=manager.id)
            refs = {"opportunity_projects": project.id}
            for _ in range(2):
                contact = await make(conn, "contacts", tenant, organization_id=org.id)
                await make(conn, "opportunity_project_contacts", tenant, {**refs, "contacts": contact.id})
                await make(conn, "documents", tenant, refs, opportunity_project_id=project.id)
            await make(conn, "capture_plans", tenant, refs)


async def test_statements_are_the_same_for_5_and_50_projects(
    executor_client: httpx.AsyncClient, executor_app: Starlette, client: httpx.AsyncClient, read_app: Starlette,
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str,
) -> None:
    await _pursuits(owner_engine, fresh_tenant, 50)
    counts = []
    for first in (5, 50):
        with count_statements(executor_app.state.engine) as statements:
            body = await gql(executor_client, QUERY, {"first": first}, token=admin_token)
        projects = body["data"]["opportunityProjects"]["nodes"]
        assert len(projects) == first
        assert all(len(p["contacts"]["nodes"]) == 2 and len(p["documents"]["nodes"]) == 2 for p in projects)
        assert all(p["contacts"]["nodes"][0]["contact"]["organization"]["name"] for p in projects)
        start = max((i for i, s in enumerate(statements) if "set_config" in s), default=-1)
        counts.append(len(statements[start + 1 :]))
    assert counts == [RELATION_STATEMENTS, RELATION_STATEMENTS], counts
    # Compiled, the same read is one statement whatever the page size (counted at the driver).
    compiled = []
    for first in (5, 50):
        with count_round_trips(read_app.state.engine) as trips:
            body = await gql(client, QUERY, {"first": first}, token=admin_token)
        assert len(body["data"]["opportunityProjects"]["nodes"]) == first
        compiled.append(len([t for t in trips if "opportunity_projects" in t.sql and t.kind != "prepare"]))
    assert compiled == [1, 1], compiled
