"""Source health, sourcePollNow and sourceTestConnection (issue 14) for tenant admins.

`ExternalOpportunitySource.health` shows the connection state, the last error (masked), the calls
the source's API key used and has left today and the next poll; `sourcePollNow` makes the next poll
due now within the budget; `sourceTestConnection` makes one call through the sync call path (budget
slot, outbound guard, call log, health) to the fake SAM.gov served on 127.0.0.1.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from strawberry.relay import to_base64

from models.db import set_tenant
from resolvers.external_data.mutations import seal_credentials
from server.app import create_app
from sync.schedule import fingerprint_key, key_fingerprint
from tests.conftest import Database
from tests.support.audit_trail import expect_audit
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql, sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for
from tests.sync.fake_samgov import API_KEY, FakeSamGov, notice, serve, status

HEALTH = """
query ($id: ID!) { node(id: $id) { ... on ExternalOpportunitySource { rowId connectionStatus health {
  connectionStatus consecutiveErrors lastSuccessfulCall lastErrorMessage callsUsedToday callsLeftToday
  dailyCallLimit nextPollAt lastPollSuccessAt recentCalls averageResponseTimeMs successRatePercentage } } } }
"""
POLL_NOW = """
mutation ($i: SourcePollNowInput!) { sourcePollNow(input: $i) {
  externalOpportunitySource { rowId health { nextPollAt callsLeftToday } } errors { code field message } } }
"""
TEST = """
mutation ($i: SourceTestConnectionInput!) { sourceTestConnection(input: $i) {
  externalOpportunitySource { rowId health { connectionStatus callsUsedToday } }
  succeeded httpStatus responseTimeMs message errors { code field message } } }
"""


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeSamGov, str]]:
    fake = FakeSamGov(notices=[notice(1, postedDate=datetime.now(UTC).date().isoformat())])
    with serve(fake) as base_url:
        yield fake, base_url


@pytest.fixture(scope="module")
def sync_app(database: Database, fake_server: tuple[FakeSamGov, str]) -> Starlette:
    _, base_url = fake_server
    return create_app(settings_for(database.app_url, outbound_allow=base_url.removeprefix("http://")))


@pytest.fixture
async def sync_client(sync_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(sync_app) as http:
        yield http


class Sources:
    """A tenant with an admin and a capture manager signed in, and helpers to make sources."""

    def __init__(self, app: Starlette, client: httpx.AsyncClient, owner: AsyncEngine, tenant: TenantRef,
                 fake: FakeSamGov, base_url: str) -> None:
        self.app, self.client, self.owner, self.tenant = app, client, owner, tenant
        self.fake, self.base_url = fake, base_url
        self.admin = self.manager = ""
        self.admin_id = uuid.UUID(int=0)
        self.fingerprint = key_fingerprint(fingerprint_key(app.state.settings.secret_keys), API_KEY)

    async def source(self, *, endpoint: str | None = None, api_key: str | None = API_KEY, **columns: Any) -> Any:
        async with self.owner.begin() as conn:
            await set_tenant(conn, self.tenant.id)
            row = await make(conn, "external_opportunity_sources", self.tenant,
                             api_endpoint=endpoint or self.base_url, **columns)
            if api_key is not None:
                sealed = seal_credentials(self.app.state.auth.secret_box, self.tenant.id, row.id, {"api_key": api_key})
                await conn.execute(text("UPDATE external_opportunity_sources SET api_credentials_encrypted ="
                                        " CAST(:c AS jsonb) WHERE id = :id"), {"c": json.dumps(sealed), "id": row.id})
        return row

    async def execute(self, sql: str, **params: Any) -> None:
        async with self.owner.begin() as conn:
            await set_tenant(conn, self.tenant.id)
            await conn.execute(text(sql), {"t": self.tenant.id, **params})

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.owner.connect() as conn:
            await set_tenant(conn, self.tenant.id)
            found = (await conn.execute(text(sql), {"t": self.tenant.id, **params})).all()
            await conn.rollback()
        return list(found)

    async def budget(self, *, used: int, limit: int = 10, day: datetime | None = None) -> None:
        day = day or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        await self.execute(
            "INSERT INTO sync_key_budgets (tenant_id, key_fingerprint, daily_limit, day_started_at, day_count,"
            " hour_started_at, hour_count) VALUES (:t, :f, :l, :d, :u, :d, 0)"
            " ON CONFLICT (tenant_id, key_fingerprint) DO UPDATE SET daily_limit = :l, day_started_at = :d,"
            " day_count = :u",
            f=self.fingerprint, l=limit, d=day, u=used,
        )

    async def schedule(self, source_id: uuid.UUID, *, next_poll_at: datetime, **columns: Any) -> None:
        await self.execute(
            "INSERT INTO sync_schedules (tenant_id, external_source_id, next_poll_at, key_fingerprint,"
            " last_success_at) VALUES (:t, :s, :n, :f, :ls)",
            s=source_id, n=next_poll_at, f=self.fingerprint, ls=columns.get("last_success_at"),
        )

    async def health(self, source_id: uuid.UUID, token: str | None = None, **kwargs: Any) -> dict[str, Any]:
        body = await gql(self.client, HEALTH, {"id": to_base64("ExternalOpportunitySource", str(source_id))},
                         token=token or self.admin, **kwargs)
        return body


@pytest.fixture
async def sources(
    sync_app: Starlette, sync_client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef,
    fake_server: tuple[FakeSamGov, str],
) -> Sources:
    fake, base_url = fake_server
    fake.script.clear()
    found = Sources(sync_app, sync_client, owner_engine, fresh_tenant, fake, base_url)
    admin = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])
    found.admin, found.admin_id = await sign_in(sync_client, admin), admin.id
    found.manager = await sign_in(sync_client, await make_login_user(owner_engine, fresh_tenant,
                                                                      roles=["Capture Manager"]))
    return found


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- health -------------------------------------------------------------------------------------------


async def test_health_shows_connection_errors_budget_and_next_poll(sources: Sources) -> None:
    success = datetime(2026, 2, 1, 12, tzinfo=UTC)
    source = await sources.source(connection_status="degraded", consecutive_errors=2, last_successful_call=success,
                                  last_error_message="SAM.gov answered 500 for /search?api_key=abc123&limit=1")
    next_poll = datetime.now(UTC) + timedelta(hours=3)
    await sources.schedule(source.id, next_poll_at=next_poll, last_success_at=success)
    await sources.budget(used=3, limit=10)
    health = (await sources.health(source.id))["data"]["node"]["health"]
    assert health["connectionStatus"] == "DEGRADED" and health["consecutiveErrors"] == 2
    assert _instant(health["lastSuccessfulCall"]) == success
    assert "abc123" not in health["lastErrorMessage"] and "SAM.gov answered 500" in health["lastErrorMessage"]
    assert (health["callsUsedToday"], health["callsLeftToday"], health["dailyCallLimit"]) == (3, 7, 10)
    assert _instant(health["nextPollAt"]) == next_poll and _instant(health["lastPollSuccessAt"]) == success

    # yesterday's count is not today's
    await sources.budget(used=9, limit=10, day=datetime.now(UTC) - timedelta(days=1, hours=1))
    health = (await sources.health(source.id))["data"]["node"]["health"]
    assert (health["callsUsedToday"], health["callsLeftToday"]) == (0, 10)


async def test_a_source_never_polled_has_no_schedule_and_an_unknown_budget(sources: Sources) -> None:
    source = await sources.source()
    health = (await sources.health(source.id))["data"]["node"]["health"]
    assert health["connectionStatus"] == "UNKNOWN"
    assert (health["callsUsedToday"], health["callsLeftToday"], health["dailyCallLimit"], health["nextPollAt"]) == (
        0, None, None, None)
    assert (health["recentCalls"], health["averageResponseTimeMs"], health["successRatePercentage"]) == (0, None, None)


async def test_health_is_for_source_admins_only(sources: Sources) -> None:
    source = await sources.source()
    body = await sources.health(source.id, token=sources.manager, errors=True)
    assert body["data"]["node"]["rowId"] == str(source.id) and body["data"]["node"]["health"] is None
    assert [(e["extensions"]["code"], e["extensions"]["permission"], e["path"]) for e in body["errors"]] == [
        ("FORBIDDEN", "source:admin", ["node", "health"])]


# -- poll now -----------------------------------------------------------------------------------------


@pytest.mark.audits("sourcePollNow")
async def test_poll_now_makes_the_next_poll_due_now(sources: Sources) -> None:
    source = await sources.source()
    await sources.schedule(source.id, next_poll_at=datetime.now(UTC) + timedelta(hours=5))
    await sources.budget(used=4)
    before = datetime.now(UTC)
    body = await gql(sources.client, POLL_NOW, {"i": {"rowId": str(source.id)}}, token=sources.admin)
    payload = body["data"]["sourcePollNow"]
    assert payload["errors"] == []
    health = payload["externalOpportunitySource"]["health"]
    assert before - timedelta(seconds=5) <= _instant(health["nextPollAt"]) <= datetime.now(UTC)
    assert health["callsLeftToday"] == 6  # asking for a poll spends nothing
    await expect_audit(sources.owner, sources.tenant.id, "sourcePollNow", action="sync.source.poll_requested",
                       entity_id=source.id, history=None, user_id=sources.admin_id, rows_in_request=1)


async def test_poll_now_schedules_a_source_the_worker_has_not_seen(sources: Sources) -> None:
    source = await sources.source()
    body = await gql(sources.client, POLL_NOW, {"i": {"rowId": str(source.id)}}, token=sources.admin)
    assert body["data"]["sourcePollNow"]["errors"] == []
    (row,) = await sources.rows("SELECT next_poll_at, key_fingerprint FROM sync_schedules WHERE"
                                " external_source_id = :s AND saved_search_id IS NULL", s=source.id)
    assert row.key_fingerprint == sources.fingerprint and row.next_poll_at <= datetime.now(UTC)


async def test_poll_now_is_refused_without_budget_or_on_a_source_that_is_not_polled(sources: Sources) -> None:
    source = await sources.source()
    later = datetime.now(UTC) + timedelta(hours=5)
    await sources.schedule(source.id, next_poll_at=later)
    await sources.budget(used=10, limit=10)
    body = await gql(sources.client, POLL_NOW, {"i": {"rowId": str(source.id)}}, token=sources.admin)
    payload = body["data"]["sourcePollNow"]
    assert payload["externalOpportunitySource"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("BUDGET_EXHAUSTED", None)]
    assert "10 calls" in payload["errors"][0]["message"]
    (row,) = await sources.rows("SELECT next_poll_at FROM sync_schedules WHERE external_source_id = :s", s=source.id)
    assert row.next_poll_at == later

    inactive = await sources.source(is_active=False)
    for target in (inactive.id, sources.tenant.manual_source_id):
        body = await gql(sources.client, POLL_NOW, {"i": {"rowId": str(target)}}, token=sources.admin)
        assert [(e["code"], e["field"]) for e in body["data"]["sourcePollNow"]["errors"]] == [
            ("VALIDATION", ["input", "rowId"])]
    missing = await gql(sources.client, POLL_NOW, {"i": {"rowId": str(uuid.uuid4())}}, token=sources.admin)
    assert [e["code"] for e in missing["data"]["sourcePollNow"]["errors"]] == ["NOT_FOUND"]
    denied = await gql(sources.client, POLL_NOW, {"i": {"rowId": str(source.id)}}, token=sources.manager,
                       errors=True)
    assert [(e["extensions"]["code"], e["extensions"]["permission"]) for e in denied["errors"]] == [
        ("FORBIDDEN", "source:admin")]


# -- test connection --------------------------------------------------------------------------------


@pytest.mark.audits("sourceTestConnection")
async def test_a_connection_test_is_one_budgeted_call_to_the_source(sources: Sources) -> None:
    source = await sources.source(connection_status="failing", consecutive_errors=4)
    await sources.budget(used=2)
    calls = len(sources.fake.requests)
    body = await gql(sources.client, TEST, {"i": {"rowId": str(source.id)}}, token=sources.admin)
    payload = body["data"]["sourceTestConnection"]
    assert payload["errors"] == []
    assert (payload["succeeded"], payload["httpStatus"], payload["message"]) == (True, 200, None)
    assert 0 <= payload["responseTimeMs"] < 30_000
    assert payload["externalOpportunitySource"]["health"] == {"connectionStatus": "HEALTHY", "callsUsedToday": 3}
    (request,) = sources.fake.requests[calls:]
    assert ("limit", "1") in request and ("api_key", API_KEY) in request
    (log,) = await sources.rows("SELECT endpoint_called, http_status, success FROM api_integration_logs"
                                " WHERE external_source_id = :s", s=source.id)
    assert log.success and log.http_status == 200 and API_KEY not in log.endpoint_called
    health = (await sources.health(source.id))["data"]["node"]["health"]
    assert (health["recentCalls"], health["successRatePercentage"]) == (1, "100.00")
    assert health["averageResponseTimeMs"] is not None and health["averageResponseTimeMs"] >= 0
    log_event, _ = await expect_audit(sources.owner, sources.tenant.id, "sourceTestConnection",
                                      action="sync.source.connection_tested", entity_id=source.id, history=None,
                                      user_id=sources.admin_id)
    assert log_event.after_values["succeeded"] is True


async def test_a_failing_source_is_reported_not_raised(sources: Sources) -> None:
    source = await sources.source(retry_attempts=3)
    sources.fake.script.append(status(500, message="Internal failure"))
    calls = len(sources.fake.requests)
    body = await gql(sources.client, TEST, {"i": {"rowId": str(source.id)}}, token=sources.admin)
    payload = body["data"]["sourceTestConnection"]
    assert payload["errors"] == [] and payload["succeeded"] is False
    assert payload["httpStatus"] == 500 and "500" in payload["message"]
    assert len(sources.fake.requests) == calls + 1  # a test is one call: no retries
    health = (await sources.health(source.id))["data"]["node"]["health"]
    assert health["consecutiveErrors"] == 1 and health["connectionStatus"] == "DEGRADED"
    assert (health["recentCalls"], health["successRatePercentage"]) == (1, "0.00")
    # a later success: one of two
    body = await gql(sources.client, TEST, {"i": {"rowId": str(source.id)}}, token=sources.admin)
    assert body["data"]["sourceTestConnection"]["succeeded"] is True
    health = (await sources.health(source.id))["data"]["node"]["health"]
    assert (health["recentCalls"], health["successRatePercentage"], health["connectionStatus"]) == (
        2, "50.00", "HEALTHY")


async def test_a_wrong_key_and_a_refused_address_are_reported(sources: Sources) -> None:
    wrong = await sources.source(api_key="not-the-key")
    body = await gql(sources.client, TEST, {"i": {"rowId": str(wrong.id)}}, token=sources.admin)
    payload = body["data"]["sourceTestConnection"]
    assert (payload["succeeded"], payload["httpStatus"]) == (False, 403)
    assert "not-the-key" not in json.dumps(payload)
    refused = await sources.source(endpoint="http://127.0.0.2:9")
    calls = len(sources.fake.requests)
    body = await gql(sources.client, TEST, {"i": {"rowId": str(refused.id)}}, token=sources.admin)
    payload = body["data"]["sourceTestConnection"]
    assert (payload["succeeded"], payload["httpStatus"]) == (False, None) and payload["message"]
    assert len(sources.fake.requests) == calls


async def test_a_connection_test_needs_budget_and_source_admin(sources: Sources) -> None:
    source = await sources.source()
    await sources.budget(used=10, limit=10)
    calls = len(sources.fake.requests)
    body = await gql(sources.client, TEST, {"i": {"rowId": str(source.id)}}, token=sources.admin)
    payload = body["data"]["sourceTestConnection"]
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("BUDGET_EXHAUSTED", None)]
    assert payload["succeeded"] is None and len(sources.fake.requests) == calls
    assert await sources.rows("SELECT 1 FROM api_integration_logs WHERE external_source_id = :s", s=source.id) == []
    denied = await gql(sources.client, TEST, {"i": {"rowId": str(source.id)}}, token=sources.manager, errors=True)
    assert [(e["extensions"]["code"], e["extensions"]["permission"]) for e in denied["errors"]] == [
        ("FORBIDDEN", "source:admin")]
    assert len(sources.fake.requests) == calls


async def test_health_of_many_sources_is_read_in_as_many_statements_as_of_one(sources: Sources) -> None:
    from tests.support.sqlcount import count_statements

    query = "{ externalOpportunitySources(first: 50) { nodes { rowId health { callsUsedToday nextPollAt " \
            "recentCalls successRatePercentage } } } }"
    counts = []
    for more in (1, 8):
        for _ in range(more):
            source = await sources.source()
            await sources.schedule(source.id, next_poll_at=datetime.now(UTC))
        with count_statements(sources.app.state.engine) as statements:
            body = await gql(sources.client, query, token=sources.admin)
        assert all(n["health"] is not None for n in body["data"]["externalOpportunitySources"]["nodes"])
        counts.append(sum("sync_schedules" in s or "api_integration_logs" in s for s in statements))
    assert counts == [2, 2], counts
