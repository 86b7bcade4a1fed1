"""The Subscription fields against a real uvicorn on 127.0.0.1: real commits, their pg_notify, the
process's listener and bus, and each delivery read with the subscriber's tenant and permissions.

Subscribers of another tenant, without the permission, or scoped to another project receive
nothing; an ended session closes with 4401 and a deactivated user with 4403.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audited import system_unit
from live.events import ChangeBatch
from models import ExternalDataChange
from models.db import set_tenant
from tests.conftest import Database
from tests.live.ws_support import LiveServer, WsClient, live_server, ws_connect
from tests.support.db import TenantRef, create_tenant
from tests.support.http import LoginUser, make_login_user

pytestmark = pytest.mark.server

QUIET = 2.0  # seconds a subscriber that must receive nothing is watched (after a positive delivery)


@dataclass
class World:
    server: LiveServer
    tenant: TenantRef
    admin: str
    viewer: str
    viewer_user: LoginUser
    scoped: str  # Viewer on project p2 only
    nobody: str  # no role at all
    other: str  # a Viewer of another tenant
    manager: str  # Capture Manager (history:read)
    p1: uuid.UUID
    p1_gid: str
    p2: uuid.UUID
    p2_gid: str


async def _project(server: LiveServer, token: str, name: str) -> tuple[uuid.UUID, str]:
    body = await server.graphql(
        token,
        "mutation($i: OpportunityProjectCreateInput!) { opportunityProjectCreate(input: $i) {"
        " opportunityProject { id rowId } errors { message } } }",
        {"i": {"projectName": name}},
    )
    project = body["data"]["opportunityProjectCreate"]["opportunityProject"]
    return uuid.UUID(project["rowId"]), project["id"]


async def _scope_to(owner_engine: AsyncEngine, tenant: TenantRef, user: LoginUser, project: uuid.UUID) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(
            text(
                "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by, opportunity_project_id)"
                " SELECT :t, :u, id, :by, :p FROM roles WHERE tenant_id = :t AND name = 'Viewer'"
            ),
            {"t": tenant.id, "u": user.id, "by": tenant.system_user_id, "p": project},
        )


@pytest.fixture(scope="module")
async def world(database: Database, owner_engine: AsyncEngine, tenant_b: TenantRef) -> AsyncIterator[World]:
    tenant = await create_tenant(owner_engine)
    async with live_server(database.app_url) as server:
        admin = await make_login_user(owner_engine, tenant, roles=("Tenant Admin",))
        viewer = await make_login_user(owner_engine, tenant, roles=("Viewer",))
        scoped = await make_login_user(owner_engine, tenant, roles=())
        nobody = await make_login_user(owner_engine, tenant, roles=())
        manager = await make_login_user(owner_engine, tenant, roles=("Capture Manager",))
        other = await make_login_user(owner_engine, tenant_b, roles=("Viewer",))
        admin_token = await server.sign_in(admin)
        p1, p1_gid = await _project(server, admin_token, "Pursuit One")
        p2, p2_gid = await _project(server, admin_token, "Pursuit Two")
        await _scope_to(owner_engine, tenant, scoped, p2)
        yield World(
            server=server, tenant=tenant, admin=admin_token, viewer=await server.sign_in(viewer), viewer_user=viewer,
            scoped=await server.sign_in(scoped), nobody=await server.sign_in(nobody),
            other=await server.sign_in(other), manager=await server.sign_in(manager),
            p1=p1, p1_gid=p1_gid, p2=p2, p2_gid=p2_gid,
        )


async def _subscriber(server: LiveServer, token: str, query: str, variables: dict[str, Any] | None = None) -> WsClient:
    """A connected, acknowledged client with one subscription `s` (the caller closes `.ws`)."""
    cm = ws_connect(server)
    client = await cm.__aenter__()
    client.cm = cm  # type: ignore[attr-defined]
    assert (await client.init({"authorization": f"Bearer {token}"}))["type"] == "connection_ack"
    await client.subscribe("s", query, variables)
    return client


async def _close(*clients: WsClient) -> None:
    for client in clients:
        await client.cm.__aexit__(None, None, None)  # type: ignore[attr-defined]


async def _settle(world: World) -> None:
    """Give the subscriptions time to reach the bus (subscribe is asynchronous on the server)."""
    bus = world.server.app.state.live_bus
    for _ in range(200):
        await asyncio.sleep(0.05)
        if bus.subscribers >= 1:
            break
    await asyncio.sleep(0.5)


async def _detected_change(world: World, project: uuid.UUID, impact: str) -> uuid.UUID:
    """A change the sync worker would write: through the system unit of work, committed and notified."""
    auth = world.server.app.state.auth
    async with system_unit(auth.engine, auth.writer.chain, world.tenant.id, process="tests.live") as uow:
        change = ExternalDataChange(
            tenant_id=world.tenant.id, opportunity_project_id=project, external_source_id=world.tenant.manual_source_id,
            changed_fields=["response_deadline"], previous_values={"response_deadline": "2027-01-10"},
            new_values={"response_deadline": "2027-01-20"}, change_type="amended", impact_level=impact,
        )
        uow.add(change)
        await uow.flush()
        change_id = change.id
    return change_id


EXTERNAL = (
    "subscription($p: ID, $m: ImpactLevel) { externalDataChanged(projectId: $p, minImpact: $m) {"
    " change { rowId impactLevel newValues opportunityProject { projectName } } resync { reason lastBatchId } } }"
)


async def test_external_data_changed_reaches_only_those_who_may_read_it(world: World) -> None:
    reader = await _subscriber(world.server, world.viewer, EXTERNAL)
    on_p1 = await _subscriber(world.server, world.viewer, EXTERNAL, {"p": world.p1_gid, "m": "MEDIUM"})
    on_p2 = await _subscriber(world.server, world.viewer, EXTERNAL, {"p": world.p2_gid})
    too_low = await _subscriber(world.server, world.viewer, EXTERNAL, {"m": "HIGH"})
    scoped = await _subscriber(world.server, world.scoped, EXTERNAL)
    nobody = await _subscriber(world.server, world.nobody, EXTERNAL)
    other = await _subscriber(world.server, world.other, EXTERNAL)
    try:
        await _settle(world)
        change_id = await _detected_change(world, world.p1, "medium")
        for client in (reader, on_p1):
            message = await client.next_of("s")
            assert message["type"] == "next", message
            change = message["payload"]["data"]["externalDataChanged"]["change"]
            assert change["rowId"] == str(change_id)
            assert change["impactLevel"] == "MEDIUM"
            assert change["opportunityProject"] == {"projectName": "Pursuit One"}
        for silent in (on_p2, too_low, scoped, nobody, other):
            assert await silent.quiet("s", QUIET) == []
        # The scoped subscriber receives its own project's changes.
        await _detected_change(world, world.p2, "high")
        message = await scoped.next_of("s")
        assert message["payload"]["data"]["externalDataChanged"]["change"]["opportunityProject"] == {
            "projectName": "Pursuit Two"
        }
        assert (await too_low.next_of("s"))["type"] == "next"
    finally:
        await _close(reader, on_p1, on_p2, too_low, scoped, nobody, other)


async def test_a_rolled_back_change_sends_nothing(world: World) -> None:
    reader = await _subscriber(world.server, world.viewer, EXTERNAL)
    try:
        await _settle(world)
        auth = world.server.app.state.auth
        with pytest.raises(RuntimeError):
            async with system_unit(auth.engine, auth.writer.chain, world.tenant.id, process="tests.live") as uow:
                uow.add(ExternalDataChange(
                    tenant_id=world.tenant.id, opportunity_project_id=world.p1,
                    external_source_id=world.tenant.manual_source_id, changed_fields=["title"],
                    change_type="updated", impact_level="low",
                ))
                await uow.flush()
                raise RuntimeError("abandoned")
        assert await reader.quiet("s", QUIET) == []
    finally:
        await _close(reader)


PROJECT = "subscription($id: ID!) { opportunityProjectChanged(id: $id) { batchId project { projectName } } }"


async def _rename(world: World, project_gid: str, name: str) -> None:
    body = await world.server.graphql(world.admin, "query($id: ID!) { node(id: $id) { ... on OpportunityProject {"
                                      " updatedAt } } }", {"id": project_gid})
    updated_at = body["data"]["node"]["updatedAt"]
    result = await world.server.graphql(
        world.admin,
        "mutation($i: OpportunityProjectUpdateInput!) { opportunityProjectUpdate(input: $i) { errors { message } } }",
        {"i": {"id": project_gid, "updatedAt": updated_at, "projectName": name}},
    )
    assert result["data"]["opportunityProjectUpdate"]["errors"] == []


async def test_opportunity_project_changed_follows_one_readable_project(world: World) -> None:
    reader = await _subscriber(world.server, world.viewer, PROJECT, {"id": world.p1_gid})
    scoped = await _subscriber(world.server, world.scoped, PROJECT, {"id": world.p1_gid})
    other = await _subscriber(world.server, world.other, PROJECT, {"id": world.p1_gid})
    try:
        await _settle(world)
        await _rename(world, world.p1_gid, "Pursuit One, renamed")
        message = await reader.next_of("s")
        assert message["payload"]["data"]["opportunityProjectChanged"]["project"] == {
            "projectName": "Pursuit One, renamed"
        }
        assert message["payload"]["data"]["opportunityProjectChanged"]["batchId"]
        assert await scoped.quiet("s", QUIET) == []
        assert await other.quiet("s", 0.5) == []
    finally:
        await _close(reader, scoped, other)


async def test_an_invalid_project_id_is_refused_with_an_error(world: World) -> None:
    client = await _subscriber(world.server, world.viewer, PROJECT, {"id": world.viewer_user.id.hex})
    try:
        message = await client.next_of("s")
        assert message["type"] in {"error", "next"}
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] in {"BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED"}
    finally:
        await _close(client)


BATCHES = (
    "subscription($t: [EntityType!]) { changeBatchCommitted(entityTypes: $t) { batchId"
    " entities { entityType entityId nodeId } changes { fieldName newValue } } }"
)


async def test_change_batch_committed_leaves_out_what_the_subscriber_cannot_read(world: World) -> None:
    viewer = await _subscriber(world.server, world.viewer, BATCHES, {"t": ["OPPORTUNITY_PROJECT"]})
    manager = await _subscriber(world.server, world.manager, BATCHES)
    nobody = await _subscriber(world.server, world.nobody, BATCHES)
    only_activities = await _subscriber(world.server, world.manager, BATCHES, {"t": ["ACTIVITY"]})
    try:
        await _settle(world)
        await _rename(world, world.p1_gid, "Pursuit One, again")
        seen = (await viewer.next_of("s"))["payload"]["data"]["changeBatchCommitted"]
        assert seen["entities"] == [
            {"entityType": "OPPORTUNITY_PROJECT", "entityId": str(world.p1), "nodeId": world.p1_gid}
        ]
        assert seen["changes"] == []  # the Viewer may not read change history
        full = (await manager.next_of("s"))["payload"]["data"]["changeBatchCommitted"]
        assert full["batchId"] == seen["batchId"]
        assert {"fieldName": "project_name", "newValue": "Pursuit One, again"} in full["changes"]
        assert await nobody.quiet("s", QUIET) == []
        assert await only_activities.quiet("s", 0.5) == []
    finally:
        await _close(viewer, manager, nobody, only_activities)


ASSIGNED = "subscription { activityAssigned { activity { subject assignee { rowId } } } }"


async def test_activity_assigned_reaches_the_assignee_only(world: World) -> None:
    assignee = await _subscriber(world.server, world.viewer, ASSIGNED)
    bystander = await _subscriber(world.server, world.manager, ASSIGNED)
    try:
        await _settle(world)
        body = await world.server.graphql(
            world.admin,
            "mutation($i: ActivityCreateInput!) { activityCreate(input: $i) { errors { message } } }",
            {"i": {"targetId": world.p1_gid, "activityType": "task", "subject": "Read amendment 3",
                   "assigneeRowId": str(world.viewer_user.id)}},
        )
        assert body["data"]["activityCreate"]["errors"] == []
        message = await assignee.next_of("s")
        assert message["type"] == "next", message
        activity = message["payload"]["data"]["activityAssigned"]["activity"]
        assert activity["subject"] == "Read amendment 3"
        assert activity["assignee"] == {"rowId": str(world.viewer_user.id)}
        assert await bystander.quiet("s", QUIET) == []
    finally:
        await _close(assignee, bystander)


async def test_a_session_that_ends_closes_with_4401(world: World, owner_engine: AsyncEngine) -> None:
    user = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    token = await world.server.sign_in(user)
    client = await _subscriber(world.server, token, EXTERNAL)
    try:
        await _settle(world)
        import httpx

        async with httpx.AsyncClient(base_url=world.server.http_url) as http:
            response = await http.post("/auth/logout", headers={"authorization": f"Bearer {token}"})
            assert response.status_code in {200, 204}, response.text
        code, _ = await client.closed()
        assert code == 4401
    finally:
        await _close(client)


async def test_a_deactivated_user_is_closed_with_4403(world: World, owner_engine: AsyncEngine) -> None:
    user = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    token = await world.server.sign_in(user)
    client = await _subscriber(world.server, token, EXTERNAL)
    try:
        await _settle(world)
        body = await world.server.graphql(
            world.admin, "mutation($i: UserDeactivateInput!) { userDeactivate(input: $i) { errors { message } } }",
            {"i": {"rowId": str(user.id)}},
        )
        assert body["data"]["userDeactivate"]["errors"] == []
        code, _ = await client.closed()
        assert code == 4403
    finally:
        await _close(client)


async def _assignment(owner_engine: AsyncEngine, tenant: TenantRef, user: LoginUser) -> uuid.UUID:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        assignment: uuid.UUID = (
            await conn.execute(text("SELECT id FROM user_roles WHERE user_id = :u"), {"u": user.id})
        ).scalar_one()
    return assignment


async def test_a_subscriber_whose_role_is_removed_stops_receiving_at_once(
    world: World, owner_engine: AsyncEngine
) -> None:
    user = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    losing = await _subscriber(world.server, await world.server.sign_in(user), EXTERNAL)
    control = await _subscriber(world.server, world.viewer, EXTERNAL)
    try:
        await _settle(world)
        body = await world.server.graphql(
            world.admin, "mutation($i: UserRoleRevokeInput!) { userRoleRevoke(input: $i) { errors { message } } }",
            {"i": {"rowId": str(await _assignment(owner_engine, world.tenant, user))}},
        )
        assert body["data"]["userRoleRevoke"]["errors"] == []
        await asyncio.sleep(0.5)  # the role-change notify reaches the process
        change_id = await _detected_change(world, world.p1, "critical")
        seen = await control.next_of("s")
        assert seen["payload"]["data"]["externalDataChanged"]["change"]["rowId"] == str(change_id)
        assert await losing.quiet("s", QUIET) == []
    finally:
        await _close(losing, control)


async def test_a_subscriber_whose_assignment_expires_stops_receiving(
    world: World, owner_engine: AsyncEngine
) -> None:
    user = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    async with owner_engine.begin() as conn:
        await set_tenant(conn, world.tenant.id)
        await conn.execute(text("UPDATE user_roles SET expires_at = now() + interval '3 seconds' WHERE user_id = :u"),
                           {"u": user.id})
    expiring = await _subscriber(world.server, await world.server.sign_in(user), EXTERNAL)
    control = await _subscriber(world.server, world.viewer, EXTERNAL)
    try:
        await _settle(world)
        before = await _detected_change(world, world.p1, "high")
        assert (await expiring.next_of("s"))["payload"]["data"]["externalDataChanged"]["change"]["rowId"] == str(before)
        assert (await control.next_of("s"))["type"] == "next"
        await asyncio.sleep(3.5)  # past the assignment's expiry: no event announces it
        after = await _detected_change(world, world.p1, "high")
        assert (await control.next_of("s"))["payload"]["data"]["externalDataChanged"]["change"]["rowId"] == str(after)
        assert await expiring.quiet("s", QUIET) == []
    finally:
        await _close(expiring, control)


async def test_guarded_values_inside_a_batch_are_withheld_from_who_may_not_read_them(
    world: World, owner_engine: AsyncEngine
) -> None:
    """history:read without opportunity.score:read: the score's change row is served, its values withheld."""
    async with owner_engine.begin() as conn:
        await set_tenant(conn, world.tenant.id)
        role_id = await conn.scalar(
            text("INSERT INTO roles (tenant_id, name, permissions) VALUES (:t, :n, CAST(:p AS jsonb)) RETURNING id"),
            {"t": world.tenant.id, "n": f"History reader {uuid.uuid4().hex[:6]}",
             "p": '["opportunity:read", "history:read"]'},
        )
    user = await make_login_user(owner_engine, world.tenant, roles=())
    async with owner_engine.begin() as conn:
        await set_tenant(conn, world.tenant.id)
        await conn.execute(
            text("INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by) VALUES (:t, :u, :r, :by)"),
            {"t": world.tenant.id, "u": user.id, "r": role_id, "by": world.tenant.system_user_id},
        )
    query = ("subscription { changeBatchCommitted(entityTypes: [OPPORTUNITY_PROJECT]) {"
             " changes { fieldName oldValue newValue } } }")
    reader = await _subscriber(world.server, await world.server.sign_in(user), query)
    manager = await _subscriber(world.server, world.manager, query)
    try:
        await _settle(world)
        body = await world.server.graphql(world.admin, "query($id: ID!) { node(id: $id) { ... on OpportunityProject {"
                                          " updatedAt } } }", {"id": world.p2_gid})
        result = await world.server.graphql(
            world.admin,
            "mutation($i: OpportunityProjectUpdateInput!) { opportunityProjectUpdate(input: $i) {"
            " errors { message } } }",
            {"i": {"id": world.p2_gid, "updatedAt": body["data"]["node"]["updatedAt"], "winProbabilityScore": "0.35"}},
        )
        assert result["data"]["opportunityProjectUpdate"]["errors"] == []
        withheld = (await reader.next_of("s"))["payload"]
        score = [c for c in withheld["data"]["changeBatchCommitted"]["changes"] if c
                 and c["fieldName"] == "win_probability_score"]
        assert score == [{"fieldName": "win_probability_score", "oldValue": None, "newValue": None}], withheld
        assert {e["extensions"]["code"] for e in withheld["errors"]} == {"FORBIDDEN"}
        full = (await manager.next_of("s"))["payload"]
        assert "errors" not in full
        values = {c["fieldName"]: c["newValue"] for c in full["data"]["changeBatchCommitted"]["changes"]}
        assert values["win_probability_score"] in {"0.35", 0.35, "0.3500"}
    finally:
        await _close(reader, manager)


async def test_an_api_key_authenticates_a_subscription(world: World) -> None:
    body = await world.server.graphql(
        world.admin,
        "mutation { apiKeyCreate(input: {name: \"alerts feed\", roleName: \"Viewer\", expiresInDays: 5}) {"
        " key errors { message } } }",
    )
    key = body["data"]["apiKeyCreate"]["key"]
    client = await _subscriber(world.server, key, EXTERNAL)
    try:
        await _settle(world)
        change_id = await _detected_change(world, world.p1, "low")
        message = await client.next_of("s")
        assert message["payload"]["data"]["externalDataChanged"]["change"]["rowId"] == str(change_id)
    finally:
        await _close(client)


async def test_a_resync_reaches_the_subscribers_with_the_last_batch(world: World) -> None:
    client = await _subscriber(world.server, world.viewer, EXTERNAL)
    try:
        await _settle(world)
        bus = world.server.app.state.live_bus
        last = ChangeBatch(batch_id=uuid.uuid4(), tenant_id=world.tenant.id, entities=(),
                           received_at=datetime.datetime.now(datetime.UTC))
        bus.resync(last)
        message = await client.next_of("s")
        assert message["payload"]["data"]["externalDataChanged"] == {
            "change": None, "resync": {"reason": "reconnect", "lastBatchId": str(last.batch_id)}
        }
    finally:
        await _close(client)


async def test_a_subscriber_that_falls_behind_twice_gets_a_subscription_overflow_error(world: World) -> None:
    client = await _subscriber(world.server, world.viewer, EXTERNAL)
    try:
        await _settle(world)
        bus = world.server.app.state.live_bus
        subs = [s for g in bus._groups.values() for s in g.members if s.user_id == world.viewer_user.id]
        assert subs, "the subscription is on the bus"
        for _ in range(3 * subs[0].maxsize):  # faster than anyone reads: no await in between
            bus.resync(None)
        assert all(s.size <= s.maxsize for s in subs)  # the queue never passes its bound
        seen = [await client.next_of("s")]
        while seen[-1]["type"] == "next" and "errors" not in seen[-1]["payload"]:  # resyncs taken before
            seen.append(await client.next_of("s"))
        assert seen[-1]["payload"]["errors"][0]["extensions"]["code"] == "SUBSCRIPTION_OVERFLOW", seen
        assert seen[-1]["payload"]["data"] is None
        assert (await client.next_of("s"))["type"] == "complete"
        await client.send({"type": "ping"})
        assert await client.receive() == {"type": "pong"}  # the connection stays open
    finally:
        await _close(client)


async def test_a_batch_over_the_notify_size_limit_arrives_whole(world: World) -> None:
    client = await _subscriber(
        world.server, world.manager,
        "subscription { changeBatchCommitted(entityTypes: [EXTERNAL_DATA_CHANGE]) { batchId entities { entityId } } }",
    )
    try:
        await _settle(world)
        auth = world.server.app.state.auth
        ids: set[str] = set()
        async with system_unit(auth.engine, auth.writer.chain, world.tenant.id, process="tests.live") as uow:
            changes = [
                ExternalDataChange(
                    tenant_id=world.tenant.id, opportunity_project_id=world.p1,
                    external_source_id=world.tenant.manual_source_id, changed_fields=["title"],
                    change_type="updated", impact_level="low",
                )
                for _ in range(160)  # 160 entities: about 10 KB of notification, over NOTIFY_LIMIT
            ]
            for change in changes:
                uow.add(change)
            await uow.flush()
            ids = {str(change.id) for change in changes}
        message = await client.next_of("s", wait=60)
        got = {e["entityId"] for e in message["payload"]["data"]["changeBatchCommitted"]["entities"]}
        assert got == ids
    finally:
        await _close(client)


async def test_a_revoked_api_key_is_closed_with_4401(world: World) -> None:
    body = await world.server.graphql(
        world.admin,
        "mutation { apiKeyCreate(input: {name: \"revoked feed\", roleName: \"Viewer\", expiresInDays: 5}) {"
        " key apiKey { id } errors { message } } }",
    )
    created = body["data"]["apiKeyCreate"]
    client = await _subscriber(world.server, created["key"], EXTERNAL)
    try:
        await _settle(world)
        revoked = await world.server.graphql(
            world.admin, "mutation($i: ApiKeyRevokeInput!) { apiKeyRevoke(input: $i) { errors { message } } }",
            {"i": {"id": created["apiKey"]["id"]}},
        )
        assert revoked["data"]["apiKeyRevoke"]["errors"] == []
        code, _ = await client.closed()
        assert code == 4401
    finally:
        await _close(client)
