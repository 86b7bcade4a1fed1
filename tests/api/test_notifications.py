"""The inbox over HTTP: a user who was offline finds an external data change in
`viewer.notifications`; activities assigned; marking read (one, all); the preference; who sees what.

Committed data under a tenant of its own. External data changes are written by the sync ingest
(sync/ingest.py, as the sync worker does, on the application role); activities through GraphQL.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.relay import to_base64

from models.db import set_tenant
from sync.connectors.base import NormalisedNotice
from sync.connectors.samgov import normalise_record
from sync.ingest import ingest
from tests.support.audit_trail import expect_audit
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.graphql import gql, sign_in
from tests.support.http import make_login_user
from tests.sync.fake_samgov import notice

NOW = datetime(2026, 2, 10, 15, 0, tzinfo=UTC)
SOLNUM = "N00024-26-R-0777"

INBOX = """
query($first: Int, $after: String, $unreadOnly: Boolean, $since: DateTime) {
  viewer { notifications(first: $first, after: $after, unreadOnly: $unreadOnly, since: $since) {
    unreadCount totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id rowId kind impactLevel title subjectType subjectRowId subjectId
                          opportunityProjectRowId changeBatchId read readAt createdAt dueAt
                          opportunityProject { rowId projectName } } } } }
}"""
MARK = """
mutation($input: NotificationMarkReadInput!) {
  notificationMarkRead(input: $input) { notification { rowId read readAt } errors { code field message } }
}"""
MARK_ALL = """
mutation($input: NotificationMarkAllReadInput!) {
  notificationMarkAllRead(input: $input) {
    markedCount viewer { notifications { unreadCount } } errors { code field }
  }
}"""
PREFERENCE = "query { viewer { notificationPreference { rowId minImpactLevel digestEnabled updatedAt } } }"
SET_PREFERENCE = """
mutation($input: NotificationPreferenceUpdateInput!) {
  notificationPreferenceUpdate(input: $input) {
    notificationPreference { rowId minImpactLevel digestEnabled updatedAt } errors { code field currentUpdatedAt }
  }
}"""


def _notice(notice_id: str, **overrides: Any) -> NormalisedNotice:
    raw = notice(1, noticeId=notice_id, solicitationNumber=SOLNUM, title="Hull maintenance",
                 description=f"https://api.sam.gov/prod/opportunities/v1/noticedesc?noticeid={notice_id}")
    raw.update(overrides)
    normalised = normalise_record(raw)
    assert isinstance(normalised, NormalisedNotice)
    return normalised


class Tenancy:
    def __init__(self, owner: AsyncEngine, app: AsyncEngine, tenant: TenantRef) -> None:
        self.owner, self.app, self.tenant = owner, app, tenant

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.owner.connect() as conn:
            await set_tenant(conn, self.tenant.id)
            found = list((await conn.execute(text(sql), {"t": self.tenant.id, **params})).all())
            await conn.rollback()
        return found

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.owner.begin() as conn:
            await set_tenant(conn, self.tenant.id)
            result = await conn.execute(text(sql), {"t": self.tenant.id, **params})
            return result.scalar() if result.returns_rows else None

    async def source(self) -> uuid.UUID:
        source_id = await self.scalar(
            "INSERT INTO external_opportunity_sources (tenant_id, source_name, api_endpoint, api_version,"
            " authentication_type, api_credentials_encrypted, created_by)"
            " VALUES (:t, 'SAM.gov', 'http://127.0.0.1:1', 'v2', 'api_key', CAST(:c AS jsonb), :u) RETURNING id",
            c=json.dumps({"sealed": "x"}), u=self.tenant.system_user_id,
        )
        assert isinstance(source_id, uuid.UUID)
        return source_id

    async def project(self, source_id: uuid.UUID, *, manager: uuid.UUID | None = None,
                      proposal_manager: uuid.UUID | None = None, key: str = SOLNUM) -> uuid.UUID:
        project_id = await self.scalar(
            "INSERT INTO opportunity_projects (tenant_id, project_name, external_source_id, external_opportunity_id,"
            " sync_status, assigned_capture_manager, assigned_proposal_manager, created_by)"
            " VALUES (:t, 'Hull maintenance pursuit', :s, :k, 'pending', :m, :pm, :u) RETURNING id",
            s=source_id, k=key, m=manager, pm=proposal_manager, u=self.tenant.system_user_id,
        )
        assert isinstance(project_id, uuid.UUID)
        return project_id

    async def notification(self, user_id: uuid.UUID, *, project_id: uuid.UUID | None = None,
                           impact: str = "high", title: str = "Something happened") -> uuid.UUID:
        found = await self.scalar(
            "INSERT INTO notifications (tenant_id, user_id, kind, impact_level, title, entity_type, entity_id,"
            " opportunity_project_id) VALUES (:t, :u, 'external_data_change', :i, :title, 'opportunity_project',"
            " coalesce(:p, gen_random_uuid()), :p) RETURNING id",
            u=user_id, i=impact, title=title, p=project_id,
        )
        assert isinstance(found, uuid.UUID)
        return found


@pytest.fixture
async def world(owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef) -> Tenancy:
    return Tenancy(owner_engine, app_engine, fresh_tenant)


async def _inbox(client: httpx.AsyncClient, token: str, **variables: Any) -> dict[str, Any]:
    body = await gql(client, INBOX, variables, token=token)
    found: dict[str, Any] = body["data"]["viewer"]["notifications"]
    return found


# -- an offline user finds the change --------------------------------------------------------------


async def test_an_offline_user_finds_an_external_change_in_the_inbox(
    client: httpx.AsyncClient, world: Tenancy, owner_engine: AsyncEngine
) -> None:
    manager = await make_login_user(owner_engine, world.tenant, roles=("Capture Manager",))
    picky = await make_login_user(owner_engine, world.tenant, roles=("Proposal Manager",))
    scoped = await make_login_user(owner_engine, world.tenant, roles=())
    outsider = await make_login_user(owner_engine, world.tenant, roles=("Capture Manager",))
    source_id = await world.source()
    project_id = await world.project(source_id, manager=manager.id, proposal_manager=picky.id)
    # a project-scoped role holder works on the project too
    await world.scalar(
        "INSERT INTO user_roles (tenant_id, user_id, role_id, opportunity_project_id, assigned_by)"
        " SELECT :t, :u, id, :p, :by FROM roles WHERE tenant_id = :t AND name = 'Viewer'",
        u=scoped.id, p=project_id, by=world.tenant.system_user_id,
    )
    await world.scalar(
        "INSERT INTO notification_preferences (tenant_id, user_id, min_impact_level) VALUES (:t, :u, 'critical')",
        u=picky.id,
    )
    # nobody is signed in while the sync worker takes in the notice and then its amendment
    await ingest(world.app, TEST_AUDIT_CHAIN, world.tenant.id, source_id, [_notice(f"{1:032x}")], now=NOW)
    await ingest(world.app, TEST_AUDIT_CHAIN, world.tenant.id, source_id,
                 [_notice(f"{2:032x}", resourceLinks=["https://sam.gov/files/sow.pdf"])],
                 now=NOW + timedelta(hours=1))
    changes = await world.rows(
        "SELECT id, impact_level, notification_sent FROM external_data_changes WHERE opportunity_project_id = :p"
        " ORDER BY change_timestamp", p=project_id,
    )
    assert [c.impact_level for c in changes] == ["informational", "high"]
    assert all(c.notification_sent for c in changes)
    amended = changes[1]
    batch = (await world.rows(
        "SELECT DISTINCT change_batch_id FROM change_history WHERE entity_id = :e", e=amended.id))[0].change_batch_id

    # later, the capture manager signs in and finds it (and the follow-up assigned to them)
    token = await sign_in(client, manager)
    inbox = await _inbox(client, token)
    kinds = {(e["node"]["kind"], e["node"]["impactLevel"]) for e in inbox["edges"]}
    assert kinds == {("EXTERNAL_DATA_CHANGE", "HIGH"), ("ACTIVITY_ASSIGNED", "HIGH")}
    assert inbox["unreadCount"] == 2 and inbox["totalCount"] == 2
    (change,) = [e["node"] for e in inbox["edges"] if e["node"]["kind"] == "EXTERNAL_DATA_CHANGE"]
    assert change["subjectType"] == "ExternalDataChange" and change["subjectRowId"] == str(amended.id)
    assert change["subjectId"] == to_base64("ExternalDataChange", amended.id)
    assert change["changeBatchId"] == str(batch) and change["read"] is False and change["readAt"] is None
    assert change["opportunityProject"] == {"rowId": str(project_id), "projectName": "Hull maintenance pursuit"}
    assert "Hull maintenance pursuit" in change["title"] and "high" in change["title"]
    # the informational first version reached nobody (below every default threshold)
    assert all(e["node"]["subjectRowId"] != str(changes[0].id) for e in inbox["edges"])
    # the project-scoped holder sees it too; the proposal manager's threshold is critical; outsiders nothing
    assert [e["node"]["kind"] for e in (await _inbox(client, await sign_in(client, scoped)))["edges"]] == [
        "EXTERNAL_DATA_CHANGE"]
    assert (await _inbox(client, await sign_in(client, picky)))["edges"] == []
    assert (await _inbox(client, await sign_in(client, outsider)))["totalCount"] == 0


async def test_catching_up_with_since_and_after(client: httpx.AsyncClient, world: Tenancy,
                                                owner_engine: AsyncEngine) -> None:
    user = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    first = [await world.notification(user.id, title=f"Old {i}") for i in range(3)]
    token = await sign_in(client, user)
    page = await _inbox(client, token, first=2)
    assert len(page["edges"]) == 2 and page["pageInfo"]["hasNextPage"]
    rest = await _inbox(client, token, first=2, after=page["pageInfo"]["endCursor"])
    assert len(rest["edges"]) == 1 and not rest["pageInfo"]["hasNextPage"]
    assert {e["node"]["rowId"] for e in page["edges"] + rest["edges"]} == {str(i) for i in first}
    seen = max(datetime.fromisoformat(e["node"]["createdAt"].replace("Z", "+00:00"))
               for e in page["edges"] + rest["edges"])
    newer = await world.notification(user.id, title="New")
    caught = await _inbox(client, token, since=seen.isoformat().replace("+00:00", "Z"))
    assert [e["node"]["rowId"] for e in caught["edges"]] == [str(newer)]
    bad = await gql(client, INBOX, {"after": "not a cursor"}, token=token, errors=True)
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_unread_first_then_newest(client: httpx.AsyncClient, world: Tenancy, owner_engine: AsyncEngine) -> None:
    user = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    older = await world.notification(user.id, title="Older")
    newer = await world.notification(user.id, title="Newer")
    token = await sign_in(client, user)
    await gql(client, MARK, {"input": {"rowId": str(newer)}}, token=token)
    inbox = await _inbox(client, token)
    assert [e["node"]["rowId"] for e in inbox["edges"]] == [str(older), str(newer)]
    assert inbox["unreadCount"] == 1
    unread = await _inbox(client, token, unreadOnly=True)
    assert [e["node"]["rowId"] for e in unread["edges"]] == [str(older)]


# -- activities assigned ------------------------------------------------------------------------------


async def test_an_activity_assigned_to_someone_else_reaches_their_inbox(
    client: httpx.AsyncClient, world: Tenancy, owner_engine: AsyncEngine
) -> None:
    admin = await make_login_user(owner_engine, world.tenant, roles=("Tenant Admin",))
    analyst = await make_login_user(owner_engine, world.tenant, roles=("BD Analyst",))
    project_id = await world.project(await world.source())
    token = await sign_in(client, admin)
    create = """mutation($input: ActivityCreateInput!) {
      activityCreate(input: $input) { activity { rowId updatedAt } errors { code field } } }"""
    due = (NOW + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    body = await gql(client, create, {"input": {
        "targetRowId": str(project_id), "targetType": "OPPORTUNITY_PROJECT", "activityType": "meeting",
        "subject": "Review the SOW", "priority": "HIGH", "dueDate": due, "assigneeRowId": str(analyst.id),
    }}, token=token)
    payload = body["data"]["activityCreate"]
    assert payload["errors"] == []
    activity_id = payload["activity"]["rowId"]
    mine = await gql(client, create, {"input": {
        "targetRowId": str(project_id), "targetType": "OPPORTUNITY_PROJECT", "activityType": "meeting",
        "subject": "My own", "assigneeRowId": str(admin.id),
    }}, token=token)
    assert mine["data"]["activityCreate"]["errors"] == []

    inbox = await _inbox(client, await sign_in(client, analyst))
    (item,) = [e["node"] for e in inbox["edges"]]
    assert (item["kind"], item["impactLevel"], item["subjectType"]) == ("ACTIVITY_ASSIGNED", "HIGH", "Activity")
    assert item["subjectRowId"] == activity_id and item["title"] == "Activity assigned to you: Review the SOW"
    assert item["opportunityProjectRowId"] == str(project_id) and item["dueAt"] == due.replace("Z", ".000000Z")
    # assigning yourself writes nothing; the admin's inbox is empty
    assert (await _inbox(client, token))["totalCount"] == 0

    reassign = """mutation($input: ActivityReassignInput!) {
      activityReassign(input: $input) { activity { rowId } errors { code field } } }"""
    body = await gql(client, reassign, {"input": {
        "rowId": activity_id, "updatedAt": payload["activity"]["updatedAt"], "assigneeRowId": str(admin.id)}},
        token=await sign_in(client, analyst))
    assert body["data"]["activityReassign"]["errors"] == []
    (back,) = [e["node"] for e in (await _inbox(client, token))["edges"]]
    assert back["kind"] == "ACTIVITY_ASSIGNED" and back["subjectRowId"] == activity_id


# -- marking read ----------------------------------------------------------------------------------


@pytest.mark.audits("notificationMarkRead")
async def test_mark_read(client: httpx.AsyncClient, world: Tenancy, owner_engine: AsyncEngine) -> None:
    user = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    item = await world.notification(user.id)
    token = await sign_in(client, user)
    body = await gql(client, MARK, {"input": {"id": to_base64("Notification", item)}}, token=token)
    payload = body["data"]["notificationMarkRead"]
    assert payload["errors"] == [] and payload["notification"]["read"] is True
    read_at = payload["notification"]["readAt"]
    await expect_audit(owner_engine, world.tenant.id, "notificationMarkRead", action="notification.read",
                       entity_id=item, history=None, user_id=user.id, rows_in_request=1)
    # again: nothing changes, no second event
    again = (await gql(client, MARK, {"input": {"rowId": str(item)}}, token=token))["data"]["notificationMarkRead"]
    assert again["errors"] == [] and again["notification"]["readAt"] == read_at
    assert len(await world.rows("SELECT 1 FROM audit_logs WHERE action_type = 'notification.read'"
                                " AND entity_id = :e", e=item)) == 1
    assert (await _inbox(client, token))["unreadCount"] == 0


async def test_another_users_notification_is_missing_and_the_attempt_audited(
    client: httpx.AsyncClient, world: Tenancy, owner_engine: AsyncEngine
) -> None:
    owner = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    intruder = await make_login_user(owner_engine, world.tenant, roles=("Tenant Admin",))
    item = await world.notification(owner.id)
    token = await sign_in(client, intruder)
    payload = (await gql(client, MARK, {"input": {"rowId": str(item)}}, token=token))["data"]["notificationMarkRead"]
    assert payload["notification"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("NOT_FOUND", ["input", "rowId"])]
    nowhere = (await gql(client, MARK, {"input": {"rowId": str(uuid.uuid4())}}, token=token))["data"]
    assert [(e["code"], e["field"]) for e in nowhere["notificationMarkRead"]["errors"]] == [
        ("NOT_FOUND", ["input", "rowId"])]
    (stored,) = await world.rows("SELECT read_at FROM notifications WHERE id = :i", i=item)
    assert stored.read_at is None
    (denial,) = await world.rows(
        "SELECT * FROM audit_logs WHERE user_id = :u AND NOT access_granted AND entity_id = :e", u=intruder.id, e=item)
    assert denial.action_type == "auth.access.denied" and "notificationMarkRead" in denial.operation_description
    # node(id:) answers the owner, and null to anyone else
    node = "query($id: ID!) { node(id: $id) { id ... on Notification { rowId title } } }"
    gid = to_base64("Notification", item)
    assert (await gql(client, node, {"id": gid}, token=token))["data"]["node"] is None
    owned = (await gql(client, node, {"id": gid}, token=await sign_in(client, owner)))["data"]["node"]
    assert owned == {"id": gid, "rowId": str(item), "title": "Something happened"}
    # the owner's inbox is untouched; the intruder's is empty
    assert (await _inbox(client, await sign_in(client, owner)))["unreadCount"] == 1
    assert (await _inbox(client, token))["totalCount"] == 0
    # a malformed or foreign-type global id
    wrong = (await gql(client, MARK, {"input": {"id": to_base64("Activity", item)}}, token=token))["data"]
    assert [e["code"] for e in wrong["notificationMarkRead"]["errors"]] == ["NOT_FOUND"]
    both = (await gql(client, MARK, {"input": {"id": to_base64("Notification", item), "rowId": str(item)}},
                      token=token))["data"]
    assert [e["code"] for e in both["notificationMarkRead"]["errors"]] == ["VALIDATION"]


@pytest.mark.audits("notificationMarkAllRead")
async def test_mark_all_read(client: httpx.AsyncClient, world: Tenancy, owner_engine: AsyncEngine) -> None:
    user = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    other = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    for _ in range(3):
        await world.notification(user.id)
    theirs = await world.notification(other.id)
    token = await sign_in(client, user)
    payload = (await gql(client, MARK_ALL, {"input": {}}, token=token))["data"]["notificationMarkAllRead"]
    assert payload["errors"] == [] and payload["markedCount"] == 3
    assert payload["viewer"]["notifications"]["unreadCount"] == 0
    log, _ = await expect_audit(owner_engine, world.tenant.id, "notificationMarkAllRead",
                                action="notification.all_read", entity_id=user.id, history=None, user_id=user.id)
    assert log.after_values == {"count": 3}
    (stored,) = await world.rows("SELECT read_at FROM notifications WHERE id = :i", i=theirs)
    assert stored.read_at is None  # another user's items stay unread
    # up to an instant only
    cutoff = datetime.now(UTC)
    later = await world.notification(user.id)
    await world.scalar("UPDATE notifications SET created_at = :c WHERE id = :i", c=cutoff + timedelta(minutes=5),
                       i=later)
    early = await world.notification(user.id)
    await world.scalar("UPDATE notifications SET created_at = :c WHERE id = :i", c=cutoff - timedelta(minutes=5),
                       i=early)
    payload = (await gql(client, MARK_ALL, {"input": {"before": cutoff.isoformat().replace("+00:00", "Z")}},
                         token=token))["data"]["notificationMarkAllRead"]
    assert payload["markedCount"] == 1 and payload["viewer"]["notifications"]["unreadCount"] == 1


# -- the preference ------------------------------------------------------------------------------------


@pytest.mark.audits("notificationPreferenceUpdate")
async def test_preference(client: httpx.AsyncClient, world: Tenancy, owner_engine: AsyncEngine) -> None:
    user = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    token = await sign_in(client, user)
    defaults = (await gql(client, PREFERENCE, token=token))["data"]["viewer"]["notificationPreference"]
    assert defaults == {"rowId": None, "minImpactLevel": "MEDIUM", "digestEnabled": True, "updatedAt": None}
    body = await gql(client, SET_PREFERENCE, {"input": {"minImpactLevel": "HIGH"}}, token=token)
    payload = body["data"]["notificationPreferenceUpdate"]
    assert payload["errors"] == []
    pref = payload["notificationPreference"]
    assert (pref["minImpactLevel"], pref["digestEnabled"]) == ("HIGH", True) and pref["rowId"]
    log, _ = await expect_audit(owner_engine, world.tenant.id, "notificationPreferenceUpdate",
                                action="notification.preferences.changed", entity_id=pref["rowId"], history=None,
                                user_id=user.id)
    assert log.after_values == {"before": {"min_impact_level": "medium"}, "after": {"min_impact_level": "high"}}
    assert (await gql(client, PREFERENCE, token=token))["data"]["viewer"]["notificationPreference"] == pref
    # with the updatedAt read: accepted; a stale one: CONFLICT carrying the current value
    fresh = await gql(client, SET_PREFERENCE, {"input": {"digestEnabled": False, "updatedAt": pref["updatedAt"]}},
                      token=token)
    changed = fresh["data"]["notificationPreferenceUpdate"]["notificationPreference"]
    assert changed["digestEnabled"] is False and changed["minImpactLevel"] == "HIGH"
    stale = await gql(client, SET_PREFERENCE, {"input": {"digestEnabled": True, "updatedAt": pref["updatedAt"]}},
                      token=token)
    errors = stale["data"]["notificationPreferenceUpdate"]["errors"]
    assert [(e["code"], e["field"]) for e in errors] == [("CONFLICT", ["input", "updatedAt"])]
    assert errors[0]["currentUpdatedAt"] == changed["updatedAt"]
    # another user's preference is their own: untouched
    other = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    other_pref = (await gql(client, PREFERENCE, token=await sign_in(client, other)))["data"]["viewer"]
    assert other_pref["notificationPreference"]["minImpactLevel"] == "MEDIUM"
    bad = await gql(client, SET_PREFERENCE, {"input": {"minImpactLevel": "SEVERE"}}, token=token, errors=True)
    assert "SEVERE" in bad["errors"][0]["message"]


async def test_the_threshold_decides_what_reaches_the_inbox(
    client: httpx.AsyncClient, world: Tenancy, owner_engine: AsyncEngine
) -> None:
    manager = await make_login_user(owner_engine, world.tenant, roles=("Capture Manager",))
    token = await sign_in(client, manager)
    await gql(client, SET_PREFERENCE, {"input": {"minImpactLevel": "INFORMATIONAL"}}, token=token)
    source_id = await world.source()
    await world.project(source_id, manager=manager.id)
    await ingest(world.app, TEST_AUDIT_CHAIN, world.tenant.id, source_id, [_notice(f"{1:032x}")], now=NOW)
    inbox = await _inbox(client, token)
    assert [(e["node"]["kind"], e["node"]["impactLevel"]) for e in inbox["edges"]] == [
        ("EXTERNAL_DATA_CHANGE", "INFORMATIONAL")]


# -- who sees what ---------------------------------------------------------------------------------


async def test_items_of_projects_the_caller_cannot_read_are_left_out(
    client: httpx.AsyncClient, world: Tenancy, owner_engine: AsyncEngine, tenant_b: TenantRef
) -> None:
    user = await make_login_user(owner_engine, world.tenant, roles=())
    source_id = await world.source()
    project_id = await world.project(source_id)
    hidden = await world.notification(user.id, project_id=project_id)
    plain = await world.notification(user.id)
    token = await sign_in(client, user)
    inbox = await _inbox(client, token)
    assert [e["node"]["rowId"] for e in inbox["edges"]] == [str(plain)] and inbox["unreadCount"] == 1
    # a grant on the project brings it back into view
    await world.scalar(
        "INSERT INTO user_roles (tenant_id, user_id, role_id, opportunity_project_id, assigned_by)"
        " SELECT :t, :u, id, :p, :by FROM roles WHERE tenant_id = :t AND name = 'Viewer'",
        u=user.id, p=project_id, by=world.tenant.system_user_id,
    )
    token = await sign_in(client, user)
    assert {e["node"]["rowId"] for e in (await _inbox(client, token))["edges"]} == {str(plain), str(hidden)}
    # another tenant's user sees none of it, and cannot mark it read
    stranger = await make_login_user(owner_engine, tenant_b, roles=("Tenant Admin",))
    theirs = await sign_in(client, stranger)
    assert all(e["node"]["rowId"] not in {str(plain), str(hidden)} for e in (await _inbox(client, theirs))["edges"])
    payload = (await gql(client, MARK, {"input": {"rowId": str(plain)}}, token=theirs))["data"]
    assert [e["code"] for e in payload["notificationMarkRead"]["errors"]] == ["NOT_FOUND"]


async def test_signed_out_callers_get_nothing(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ viewer { notifications { unreadCount } } }"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"
