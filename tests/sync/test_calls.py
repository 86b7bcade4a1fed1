"""Every outbound call of a sync job (sync/calls.py), against the fake SAM.gov on a real uvicorn on
127.0.0.1 through the outbound guard: 429 with Retry-After, 500, timeouts, malformed JSON, an
oversized body, a redirect to a loopback address not on the allow-list, a source name resolving to a
refused address. Each is logged in api_integration_logs, backed off or refused, and recovered from;
the log row and the source's health commit together or not at all.

Waits are computed against an injected clock and asserted as values (nothing sleeps for real but the
fake's slow answer); names resolve through the policy's injected resolver (no DNS, no traffic off
loopback).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from auth.outbound import OutboundPolicy, RefusalReason
from models.db import set_tenant
from models.errors import NotFound
from models.external_data import ExternalOpportunitySource, PollingConfiguration
from sync.calls import (
    REDACTED,
    Budget,
    BudgetExhausted,
    CallFailed,
    CallSettings,
    CallStatistics,
    CallTarget,
    RetryLater,
    SyncCaller,
    _scrub,
    backoff_wait,
    call_statistics,
    redact_headers,
    redact_url,
    retry_after_seconds,
)
from sync.connectors.base import ConnectorError, SearchQuery, SearchWindow
from sync.connectors.samgov import SamGovConnector
from sync.schedule import KeyBudget, budget_state, key_fingerprint, set_budget_limits
from tests.support.clock import FakeClock
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.factories import make
from tests.sync.fake_samgov import (
    API_KEY,
    FakeSamGov,
    malformed,
    notice,
    oversized,
    redirect,
    serve,
    slow,
    status,
)

M = TypeVar("M")
START = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)
QUERY = SearchQuery(window=SearchWindow(date(2026, 2, 1), date(2026, 2, 28)))
SEARCH = "/opportunities/v2/search"


class Waits:
    """The injected sleeper: records each wait and moves the clock by it, never sleeps."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.values: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.values.append(seconds)
        self.clock.advance(seconds=seconds)


class SlotBudget:
    """A budget of `slots` calls (the Budget protocol; the real one is the schedule table's)."""

    def __init__(self, slots: int = 100) -> None:
        self.slots = slots
        self.reserved: list[datetime] = []

    async def reserve(self, now: datetime) -> bool:
        if self.slots <= 0:
            return False
        self.slots -= 1
        self.reserved.append(now)
        return True

    def next_window(self, now: datetime) -> datetime:
        return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


class StubResolver:
    """Answers names from a table and counts the questions: nothing reaches DNS."""

    def __init__(self, answers: dict[str, Sequence[str]]) -> None:
        self.answers = answers
        self.calls: Counter[str] = Counter()

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls[host] += 1
        if host not in self.answers:
            raise OSError(f"{host}: no such name")
        return self.answers[host]


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[FakeSamGov, str]]:
    fake = FakeSamGov(notices=[notice(1), notice(2)])
    with serve(fake) as base_url:
        yield fake, base_url


@pytest.fixture
def fake(live: tuple[FakeSamGov, str]) -> FakeSamGov:
    served, _ = live
    served.script.clear()
    served.requests.clear()
    return served


@pytest.fixture
def base_url(live: tuple[FakeSamGov, str]) -> str:
    return live[1]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def waits(clock: FakeClock) -> Waits:
    return Waits(clock)


@pytest.fixture
def resolver() -> StubResolver:
    return StubResolver({"sam.example.test": ["127.0.0.2"], "private.example.test": ["10.1.2.3"]})


@pytest.fixture
async def caller(
    app_engine: AsyncEngine, base_url: str, clock: FakeClock, waits: Waits, resolver: StubResolver
) -> AsyncIterator[SyncCaller]:
    policy = OutboundPolicy.from_setting(base_url.removeprefix("http://"), resolver=resolver)
    async with SyncCaller(engine=app_engine, chain=TEST_AUDIT_CHAIN, policy=policy, clock=clock, sleep=waits) as made:
        yield made


class Db:
    """The test tenant's rows, made and read as the schema owner."""

    def __init__(self, engine: AsyncEngine, tenant: TenantRef) -> None:
        self.engine = engine
        self.tenant = tenant

    async def make(self, table: str, refs: dict[str, Any] | None = None, **values: Any) -> Any:
        async with self.engine.begin() as conn:
            await set_tenant(conn, self.tenant.id)
            return await make(conn, table, self.tenant, refs, **values)

    async def all(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            await set_tenant(conn, self.tenant.id)
            found = (await conn.execute(text(sql), {"t": self.tenant.id, **params})).all()
            await conn.rollback()
        return list(found)

    async def logs(self) -> list[Any]:
        return await self.all(
            "SELECT * FROM api_integration_logs WHERE tenant_id = :t ORDER BY created_at, retry_attempt"
        )

    async def orm(self, model: type[M], entity_id: uuid.UUID) -> M:
        async with AsyncSession(self.engine) as session:
            await set_tenant(session, self.tenant.id)
            found = await session.get(model, entity_id)
            assert found is not None
            return found

    async def source(self, source_id: uuid.UUID) -> Any:
        (row,) = await self.all("SELECT * FROM external_opportunity_sources WHERE id = :s", s=source_id)
        return row


@pytest.fixture
def db(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> Db:
    return Db(owner_engine, fresh_tenant)


@pytest.fixture
async def source(db: Db, base_url: str) -> Any:
    return await db.make("external_opportunity_sources", api_endpoint=base_url, source_name="SAM.gov")


def target(db: Db, source: Any, **more: uuid.UUID) -> CallTarget:
    return CallTarget(tenant_id=db.tenant.id, source_id=source.id, **more)


def settings(**values: Any) -> CallSettings:
    return CallSettings(**{"timeout_seconds": 5.0, "retry_attempts": 3, **values})


def samgov(caller: SyncCaller, call_target: CallTarget, call_settings: CallSettings, budget: Budget,
           base_url: str) -> SamGovConnector:
    return SamGovConnector(caller.http(call_target, call_settings, budget), api_key=API_KEY, base_url=base_url)


# --- pure rules --------------------------------------------------------------------------------


def test_retry_after_reads_seconds_and_http_dates_against_the_given_clock() -> None:
    assert retry_after_seconds("7", START) == 7.0
    assert retry_after_seconds(" 120 ", START) == 120.0
    assert retry_after_seconds(format_datetime(START + timedelta(seconds=42), usegmt=True), START) == 42.0
    assert retry_after_seconds(format_datetime(START - timedelta(hours=1), usegmt=True), START) == 0.0
    assert retry_after_seconds("soon", START) is None
    assert retry_after_seconds("-5", START) is None
    assert retry_after_seconds(None, START) is None


def test_backoff_grows_by_the_multiplier() -> None:
    assert [backoff_wait(settings(backoff_multiplier=2.0), n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert [backoff_wait(settings(backoff_multiplier=1.5, base_delay_seconds=2.0), n) for n in (1, 2)] == [2.0, 3.0]


def test_credentials_never_reach_the_log_text() -> None:
    assert redact_url("https://user:pw@api.sam.gov/opportunities/v2/search?api_key=abc&postedFrom=01/02/2026"
                      "&access_token=t&client_secret=s&keyword=boats") == (
        "https://api.sam.gov/opportunities/v2/search?api_key=[redacted]&postedFrom=01%2F02%2F2026"
        "&access_token=[redacted]&client_secret=[redacted]&keyword=boats"
    )
    assert redact_url("https://api.sam.gov/x") == "https://api.sam.gov/x"
    assert _scrub("ConnectError for https://h/x?api_key=abc&limit=1 (token=t1)") == (
        "ConnectError for https://h/x?api_key=[redacted]&limit=1 (token=[redacted])"
    )
    assert redact_headers({"Authorization": "Bearer x", "X-Api-Key": "k", "Accept": "application/json"}) == {
        "authorization": REDACTED, "x-api-key": REDACTED, "accept": "application/json"
    }


def test_settings_come_from_the_source_and_a_polling_configuration_wins_for_its_refresh() -> None:
    source = ExternalOpportunitySource(timeout_seconds=Decimal("0.25"), retry_attempts=4)
    assert (CallSettings.for_source(source).timeout_seconds, CallSettings.for_source(source).retry_attempts) == (
        0.25, 4
    )
    polling = PollingConfiguration(max_retries=1, backoff_multiplier=Decimal("1.50"))
    chosen = CallSettings.for_source(source, polling)
    assert (chosen.timeout_seconds, chosen.retry_attempts, chosen.backoff_multiplier, chosen.attempts) == (
        0.25, 1, 1.5, 2
    )
    with pytest.raises(ValueError, match="timeout_seconds"):
        CallSettings(timeout_seconds=0)
    with pytest.raises(ValueError, match="backoff_multiplier"):
        CallSettings(backoff_multiplier=0.5)


# --- from the fake server ----------------------------------------------------------------------


async def test_429_with_retry_after_waits_what_the_server_asks_then_recovers(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str, waits: Waits, clock: FakeClock
) -> None:
    budget = SlotBudget()
    fake.script += [
        status(429, headers={"Retry-After": "7"}),
        # an HTTP date: 12 s after the clock as it stands after the first wait
        status(429, headers={"Retry-After": format_datetime(START + timedelta(seconds=19), usegmt=True)}),
    ]
    page = await samgov(caller, target(db, source), settings(), budget, base_url).search(QUERY)
    assert [n.notice_id for n in page.notices] == [notice(1)["noticeId"], notice(2)["noticeId"]]
    assert waits.values == [7.0, 12.0]
    assert budget.reserved == [START, START + timedelta(seconds=7), START + timedelta(seconds=19)]
    logs = await db.logs()
    assert [(r.http_status, r.success, r.retry_attempt) for r in logs] == [(429, False, 1), (429, False, 2),
                                                                           (200, True, 3)]
    assert [r.api_call_timestamp for r in logs] == budget.reserved
    assert logs[0].error_message == "HTTP 429" and logs[0].response_headers["retry-after"] == "7"
    assert all(API_KEY not in r.endpoint_called and "api_key=[redacted]" in r.endpoint_called for r in logs)
    assert logs[2].endpoint_called.startswith(f"{base_url}{SEARCH}?api_key=[redacted]&postedFrom=02%2F01%2F2026")
    assert logs[2].response_payload["bytes"] > 100 and logs[2].processing_time_ms >= 0
    health = await db.source(source.id)
    assert (health.connection_status, health.consecutive_errors) == ("healthy", 0)
    assert health.last_successful_call == START + timedelta(seconds=19)
    assert health.last_error_message == "HTTP 429"  # the last error, kept for the admin to see


async def test_a_retry_after_longer_than_a_job_waits_reschedules_instead_of_sleeping(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str, waits: Waits
) -> None:
    fake.script.append(status(429, headers={"Retry-After": "3600"}))
    with pytest.raises(RetryLater) as raised:
        await samgov(caller, target(db, source), settings(), SlotBudget(), base_url).search(QUERY)
    assert raised.value.retry_at == START + timedelta(hours=1) and raised.value.status_code == 429
    assert waits.values == []
    assert [(r.http_status, r.success) for r in await db.logs()] == [(429, False)]


async def test_500_backs_off_by_the_multiplier_and_the_connector_reads_the_last_answer(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str, waits: Waits
) -> None:
    budget = SlotBudget()
    fake.script += [status(500, message="boom")] * 3
    connector = samgov(caller, target(db, source), settings(retry_attempts=2, backoff_multiplier=3.0), budget, base_url)
    with pytest.raises(ConnectorError) as raised:
        await connector.search(QUERY)
    assert raised.value.status_code == 500 and "boom" in str(raised.value)
    assert waits.values == [1.0, 3.0]
    assert len(budget.reserved) == 3 and len(fake.requests) == 3
    assert [(r.http_status, r.success, r.error_message) for r in await db.logs()] == [(500, False, "HTTP 500")] * 3
    health = await db.source(source.id)
    assert (health.connection_status, health.consecutive_errors, health.last_error_message) == ("failing", 3,
                                                                                                "HTTP 500")
    assert health.last_successful_call is None

    # recovered: the next call answers, the health is true again
    assert len((await connector.search(QUERY)).notices) == 2
    health = await db.source(source.id)
    assert (health.connection_status, health.consecutive_errors) == ("healthy", 0)
    assert health.last_successful_call is not None
    # the source's own average response time and success rate, read from its call log
    async with db.engine.connect() as conn:
        await set_tenant(conn, db.tenant.id)
        stats = await call_statistics(conn, db.tenant.id, source.id)
        assert await call_statistics(conn, db.tenant.id, source.id, window=1) == CallStatistics(
            1, (await db.logs())[-1].processing_time_ms, Decimal("100.00")
        )
    assert (stats.calls, stats.success_rate_percentage) == (4, Decimal("25.00"))
    assert stats.average_response_time_ms is not None


async def test_a_sub_second_timeout_configured_on_the_source_is_logged_and_retried(
    caller: SyncCaller, fake: FakeSamGov, db: Db, base_url: str, waits: Waits
) -> None:
    source = await db.make("external_opportunity_sources", api_endpoint=base_url, timeout_seconds=Decimal("0.3"),
                           retry_attempts=2)
    configured = CallSettings.for_source(await db.orm(ExternalOpportunitySource, source.id))
    assert (configured.timeout_seconds, configured.attempts) == (0.3, 3)
    fake.script.append(slow(2.0))
    connector = samgov(caller, target(db, source), configured, SlotBudget(), base_url)
    page = await connector.search(QUERY)
    assert page.total_records == 2
    assert waits.values == [1.0]
    first, second = await db.logs()
    assert (first.http_status, first.success, second.http_status, second.success) == (None, False, 200, True)
    assert "TIMEOUT" in first.error_message and "0.3 s" in first.error_message
    assert 250 <= first.processing_time_ms < 1500  # the configured 0.3 s, not the fake's 2 s
    assert (await db.source(source.id)).connection_status == "healthy"


async def test_a_timeout_on_every_attempt_fails_with_a_time_to_try_again(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str, waits: Waits
) -> None:
    fake.script += [slow(1.0), slow(1.0)]
    connector = samgov(caller, target(db, source), settings(timeout_seconds=0.2, retry_attempts=1), SlotBudget(),
                       base_url)
    with pytest.raises(CallFailed) as raised:
        await connector.search(QUERY)
    assert raised.value.reason == RefusalReason.TIMEOUT and raised.value.attempts == 2
    assert raised.value.retry_at == START + timedelta(seconds=1 + 2)  # after the 1 s wait, the next would be 2 s
    assert waits.values == [1.0]
    health = await db.source(source.id)
    assert (health.connection_status, health.consecutive_errors) == ("degraded", 2)
    assert "TIMEOUT" in health.last_error_message


async def test_malformed_json_is_an_error_retried_then_read(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str, waits: Waits
) -> None:
    fake.script.append(malformed())
    page = await samgov(caller, target(db, source), settings(), SlotBudget(), base_url).search(QUERY)
    assert len(page.notices) == 2 and waits.values == [1.0]
    first, second = await db.logs()
    assert (first.http_status, first.success) == (200, False) and first.error_message.startswith("malformed JSON")
    assert second.success

    # with no retries left the answer reaches the connector, which refuses it
    fake.script.append(malformed())
    with pytest.raises(ConnectorError, match="malformed JSON"):
        await samgov(caller, target(db, source), settings(retry_attempts=0), SlotBudget(), base_url).search(QUERY)
    health = await db.source(source.id)
    assert (health.connection_status, health.consecutive_errors) == ("degraded", 1)


async def test_an_oversized_body_is_refused_not_retried(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str, waits: Waits
) -> None:
    budget = SlotBudget()
    fake.script.append(oversized(50_000))
    connector = samgov(caller, target(db, source), settings(max_bytes=20_000), budget, base_url)
    with pytest.raises(CallFailed) as raised:
        await connector.search(QUERY)
    assert raised.value.reason == RefusalReason.TOO_LARGE and raised.value.retry_at is None
    assert waits.values == [] and len(budget.reserved) == 1
    (log,) = await db.logs()
    assert (log.http_status, log.success) == (None, False) and "TOO_LARGE" in log.error_message
    assert (await db.source(source.id)).connection_status == "failing"
    # recovered: a normal answer fits
    assert len((await connector.search(QUERY)).notices) == 2
    assert (await db.source(source.id)).connection_status == "healthy"


@pytest.mark.parametrize("host", ["127.0.0.2", "[::1]"])
async def test_a_redirect_to_a_loopback_address_off_the_allow_list_is_refused(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str, waits: Waits, host: str
) -> None:
    port = base_url.rsplit(":", 1)[1]
    fake.script.append(redirect(f"https://{host}:{port}{SEARCH}"))
    with pytest.raises(CallFailed) as raised:
        await samgov(caller, target(db, source), settings(), SlotBudget(), base_url).search(QUERY)
    assert raised.value.reason == RefusalReason.ADDRESS_NOT_ALLOWED and raised.value.retry_at is None
    assert len(fake.requests) == 1 and waits.values == []
    (log,) = await db.logs()
    assert not log.success and "ADDRESS_NOT_ALLOWED" in log.error_message
    health = await db.source(source.id)
    assert (health.connection_status, health.consecutive_errors) == ("failing", 1)


@pytest.mark.parametrize("name", ["sam.example.test", "private.example.test"])
async def test_a_source_url_resolving_to_a_refused_address_is_refused_before_connecting(
    caller: SyncCaller, db: Db, source: Any, resolver: StubResolver, waits: Waits, name: str
) -> None:
    budget = SlotBudget()
    connector = SamGovConnector(caller.http(target(db, source), settings(), budget), api_key=API_KEY,
                                base_url=f"https://{name}")
    with pytest.raises(CallFailed) as raised:
        await connector.search(QUERY)
    assert raised.value.reason == RefusalReason.ADDRESS_NOT_ALLOWED
    assert resolver.calls[name] == 1 and waits.values == [] and len(budget.reserved) == 1
    (log,) = await db.logs()
    assert log.endpoint_called.startswith(f"https://{name}{SEARCH}?api_key=[redacted]")
    assert "not on the outbound allow-list" in log.error_message


async def test_no_budget_slot_sends_nothing_and_names_the_next_window(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str, waits: Waits, clock: FakeClock
) -> None:
    clock.advance(minutes=25)
    with pytest.raises(BudgetExhausted) as raised:
        await samgov(caller, target(db, source), settings(), SlotBudget(0), base_url).search(QUERY)
    assert raised.value.retry_at == datetime(2026, 12, 5, 13, 0, tzinfo=UTC)
    assert fake.requests == [] and await db.logs() == []
    assert (await db.source(source.id)).connection_status == "unknown"

    # the budget runs out between attempts: the wait is taken, the next attempt is not sent
    fake.script.append(status(500))
    with pytest.raises(BudgetExhausted):
        await samgov(caller, target(db, source), settings(), SlotBudget(1), base_url).search(QUERY)
    assert len(fake.requests) == 1 and waits.values == [1.0]
    assert [r.http_status for r in await db.logs()] == [500]


async def test_a_projects_refresh_uses_its_max_retries_and_keeps_its_statistics(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str, waits: Waits
) -> None:
    project = await db.make("opportunity_projects", {"external_opportunity_sources": source.id})
    polling_row = await db.make(
        "polling_configurations", {"opportunity_projects": project.id, "external_opportunity_sources": source.id},
        max_retries=1, backoff_multiplier=Decimal("1.5"),
    )
    source_orm = ExternalOpportunitySource(timeout_seconds=5, retry_attempts=3)
    polling_orm = PollingConfiguration(max_retries=polling_row.max_retries,
                                       backoff_multiplier=polling_row.backoff_multiplier)
    call_settings = CallSettings.for_source(source_orm, polling_orm, base_delay_seconds=2.0)
    refresh = target(db, source, project_id=project.id, polling_configuration_id=polling_row.id)
    connector = samgov(caller, refresh, call_settings, SlotBudget(), base_url)
    fake.script += [status(503), status(503)]
    with pytest.raises(ConnectorError):
        await connector.fetch(SearchQuery(window=QUERY.window, solicitation_number=notice(1)["solicitationNumber"]))
    assert waits.values == [2.0]  # two attempts (max_retries 1 wins over the source's 3)
    (polling,) = await db.all("SELECT * FROM polling_configurations WHERE id = :p", p=polling_row.id)
    assert (polling.consecutive_errors, polling.success_rate_percentage) == (2, Decimal("0.00"))
    assert polling.average_response_time_ms is not None

    found = await connector.fetch(SearchQuery(window=QUERY.window, solicitation_number=notice(1)["solicitationNumber"]))
    assert [n.notice_id for n in found] == [notice(1)["noticeId"]]
    (polling,) = await db.all("SELECT * FROM polling_configurations WHERE id = :p", p=polling_row.id)
    assert (polling.consecutive_errors, polling.success_rate_percentage) == (0, Decimal("33.33"))
    assert {r.opportunity_project_id for r in await db.logs()} == {project.id}
    # health columns are operational: the calls wrote no audit or history rows
    assert await db.all("SELECT id FROM audit_logs WHERE tenant_id = :t AND entity_id IN (:s, :p)",
                        s=source.id, p=polling_row.id) == []


async def test_the_log_row_and_the_health_commit_together_or_not_at_all(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str
) -> None:
    # the polling configuration named is not there: the unit fails after the log row was flushed
    broken = target(db, source, polling_configuration_id=uuid.uuid4())
    with pytest.raises(NotFound):
        await samgov(caller, broken, settings(), SlotBudget(), base_url).search(QUERY)
    assert len(fake.requests) == 1
    assert await db.logs() == []
    health = await db.source(source.id)
    assert (health.connection_status, health.consecutive_errors, health.last_successful_call) == ("unknown", 0, None)


async def test_request_headers_are_logged_redacted(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str
) -> None:
    response = await caller.request(
        target(db, source), settings(), SlotBudget(), "GET", f"{base_url}{SEARCH}",
        params=[("api_key", API_KEY), ("postedFrom", "02/01/2026"), ("postedTo", "02/28/2026"), ("limit", "1")],
        headers={"X-Api-Key": API_KEY},
    )
    assert response.status_code == 200 and isinstance(response, httpx.Response)
    assert response.json()["totalRecords"] == 2
    (log,) = await db.logs()
    assert log.request_headers["x-api-key"] == REDACTED and log.request_headers["accept"] == "application/json"
    assert API_KEY not in str(log.request_headers) and API_KEY not in log.endpoint_called


async def test_a_refused_key_is_not_retried_and_no_data_found_is_a_successful_empty_answer(
    caller: SyncCaller, fake: FakeSamGov, db: Db, source: Any, base_url: str, waits: Waits
) -> None:
    budget = SlotBudget()
    wrong_key = SamGovConnector(caller.http(target(db, source), settings(), budget), api_key="not-the-key",
                                base_url=base_url)
    with pytest.raises(ConnectorError) as raised:
        await wrong_key.search(QUERY)
    assert raised.value.status_code == 403 and "invalid api_key" in str(raised.value)
    assert waits.values == [] and len(budget.reserved) == 1
    (log,) = await db.logs()
    assert (log.http_status, log.success, log.error_message) == (403, False, "HTTP 403")
    assert "not-the-key" not in log.endpoint_called
    assert (await db.source(source.id)).connection_status == "failing"

    fake.script.append(status(404, message="No Data found"))
    page = await samgov(caller, target(db, source), settings(), budget, base_url).search(QUERY)
    assert (page.total_records, page.notices) == (0, ())
    assert [(r.http_status, r.success) for r in await db.logs()] == [(403, False), (404, True)]
    assert (await db.source(source.id)).connection_status == "healthy"


async def test_the_key_budget_of_the_schedule_is_reserved_before_every_attempt(
    caller: SyncCaller, app_engine: AsyncEngine, fake: FakeSamGov, db: Db, source: Any, base_url: str, waits: Waits
) -> None:
    fingerprint = key_fingerprint(b"fingerprint-key-for-tests", API_KEY)
    async with db.engine.begin() as conn:
        await set_tenant(conn, db.tenant.id)
        await set_budget_limits(conn, db.tenant.id, fingerprint, daily_limit=2, hourly_limit=None)
    budget = KeyBudget(app_engine, db.tenant.id, fingerprint)
    fake.script += [status(500), status(500)]
    with pytest.raises(BudgetExhausted) as raised:
        await samgov(caller, target(db, source), settings(), budget, base_url).search(QUERY)
    # two attempts used the day's two calls; the third was not sent and waits for the next day
    assert raised.value.retry_at == datetime(2026, 12, 6, tzinfo=UTC) and raised.value.attempts == 2
    assert len(fake.requests) == 2 and waits.values == [1.0, 2.0]
    assert [r.http_status for r in await db.logs()] == [500, 500]
    async with db.engine.connect() as conn:
        await set_tenant(conn, db.tenant.id)
        state = await budget_state(conn, db.tenant.id, fingerprint, START)
    assert (state.used_today, state.left_today) == (2, 0)
