"""`OpportunityProject.unacknowledgedHighImpactChangeCount`: HIGH and CRITICAL changes nobody has
acknowledged, counted per project in one batched statement, only over changes the caller reads."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql, sign_in
from tests.support.http import make_login_user
from tests.support.sqlcount import count_statements

QUERY = """
query ($first: Int) {
  opportunityProjects(first: $first, orderBy: [{field: CREATED_AT, direction: ASC}]) {
    nodes { rowId unacknowledgedHighImpactChangeCount }
  }
}
"""
ACKED = datetime(2026, 3, 1, tzinfo=UTC)

# (impact level, acknowledged) of the changes of each project, and the count the field must give.
PLANS: list[tuple[list[tuple[str, bool]], int]] = [
    ([("high", False), ("critical", False), ("critical", False)], 3),
    ([("high", True), ("critical", True), ("medium", False), ("low", False), ("informational", False)], 0),
    ([], 0),
    ([("critical", False), ("high", True), ("medium", False)], 1),
]


async def _projects(owner_engine: AsyncEngine, tenant: TenantRef, plans: list[tuple[list[tuple[str, bool]], int]]
                    ) -> list[tuple[uuid.UUID, int]]:
    made: list[tuple[uuid.UUID, int]] = []
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        for index, (changes, expected) in enumerate(plans):
            project = await make(conn, "opportunity_projects", tenant,
                                 created_at=datetime(2026, 1, 1, tzinfo=UTC).replace(second=index % 60,
                                                                                     minute=index // 60))
            for level, acknowledged in changes:
                await make(conn, "external_data_changes", tenant, {"opportunity_projects": project.id},
                           impact_level=level, acknowledged_at=ACKED if acknowledged else None)
            made.append((project.id, expected))
    return made


async def test_the_count_is_high_and_critical_changes_not_yet_acknowledged(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    made = await _projects(owner_engine, fresh_tenant, PLANS)
    body = await gql(client, QUERY, {"first": 10}, token=admin_token)
    got = [(n["rowId"], n["unacknowledgedHighImpactChangeCount"]) for n in body["data"]["opportunityProjects"]["nodes"]]
    assert got == [(str(pid), expected) for pid, expected in made]


async def test_acknowledging_a_change_lowers_the_count(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    ((project_id, _),) = await _projects(owner_engine, fresh_tenant, [([("critical", False), ("high", False)], 2)])
    async with owner_engine.connect() as conn:
        await set_tenant(conn, fresh_tenant.id)
        change_id = await conn.scalar(
            text("SELECT id FROM external_data_changes WHERE opportunity_project_id = :p AND impact_level = 'high'"),
            {"p": project_id},
        )
        await conn.rollback()
    done = await gql(
        client,
        "mutation ($i: ExternalDataChangeAcknowledgeInput!) { externalDataChangeAcknowledge(input: $i) "
        "{ errors { code } externalDataChange { opportunityProject { unacknowledgedHighImpactChangeCount } } } }",
        {"i": {"rowId": str(change_id), "notes": "Seen"}},
        token=admin_token,
    )
    payload = done["data"]["externalDataChangeAcknowledge"]
    assert payload["errors"] == []
    assert payload["externalDataChange"]["opportunityProject"]["unacknowledgedHighImpactChangeCount"] == 1


async def test_one_statement_whatever_the_number_of_projects(
    client: httpx.AsyncClient, read_app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef,
    admin_token: str,
) -> None:
    await _projects(owner_engine, fresh_tenant, [([("high", False), ("critical", False)], 2)] * 30)
    counts: list[int] = []
    for first in (3, 30):
        with count_statements(read_app.state.engine) as statements:
            body = await gql(client, QUERY, {"first": first}, token=admin_token)
        nodes = body["data"]["opportunityProjects"]["nodes"]
        assert [n["unacknowledgedHighImpactChangeCount"] for n in nodes] == [2] * first
        counts.append(sum("external_data_changes" in s for s in statements))
    assert counts == [1, 1], counts


async def test_changes_the_caller_cannot_read_are_not_counted(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    """A role with opportunity:read but without external_data:read sees the project and a count of 0;
    a grant of external_data:read on one project counts that project's changes only."""
    made = await _projects(owner_engine, fresh_tenant, [([("critical", False)], 1), ([("high", False)], 1)])
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        blind = await make(conn, "roles", fresh_tenant, name="Projects only",
                           permissions=json.dumps(["opportunity:read"]))
        reader = await make(conn, "roles", fresh_tenant, name="Change reader",
                            permissions=json.dumps(["external_data:read"]))
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Projects only"])
    token = await sign_in(client, user)
    body = await gql(client, QUERY, {"first": 10}, token=token)
    assert [n["unacknowledgedHighImpactChangeCount"] for n in body["data"]["opportunityProjects"]["nodes"]] == [0, 0]

    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await conn.execute(
            text("INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by, opportunity_project_id)"
                 " VALUES (:t, :u, :r, :by, :p)"),
            {"t": fresh_tenant.id, "u": user.id, "r": reader.id, "by": fresh_tenant.system_user_id,
             "p": made[1][0]},
        )
    assert blind.id != reader.id
    body = await gql(client, QUERY, {"first": 10}, token=token)
    got: list[Any] = [n["unacknowledgedHighImpactChangeCount"] for n in body["data"]["opportunityProjects"]["nodes"]]
    assert got == [0, 1]
