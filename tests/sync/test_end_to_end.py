"""Acceptance 1 of the sync issue, end to end: the sync worker (sync/worker.py) running the jobs of
sync/jobs.py against a fake SAM.gov on a real uvicorn on 127.0.0.1, through the outbound guard, the
budget of the source's key and the call log, into a database of its own (the claim spans tenants).

A project created from a source reference waits in `pending`; the fake plays the original notice
(among 2,500 others: the window search pages through three pages of 1,000), then two amendments
(new noticeIds, the same solicitation number): the response deadline moved earlier, then an
attachment added. Three versions, an `amended` change of critical then of high impact, one follow-up
activity for each, the project's fields updated except the overridden title; polling again with
unchanged data writes nothing but the call log and the schedule.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from starlette.responses import Response

from auth.crypto import SecretBox
from auth.outbound import OutboundPolicy
from models.db import set_tenant
from resolvers.external_data.mutations import seal_credentials
from sync.connectors.base import NormalisedNotice, SearchWindow
from sync.connectors.samgov import normalise_record
from sync.diff import follow_up_due
from sync.jobs import JOBS, belongs_to_lineage, refresh_window
from sync.schedule import Job, JobKind, JobOutcome, OutcomeKind, fingerprint_key, key_fingerprint, set_budget_limits
from sync.worker import JobContext, SyncServices, Worker
from tests.support.clock import FakeClock
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef, create_tenant
from tests.support.http import make_login_user
from tests.sync.fake_samgov import API_KEY, FakeSamGov, notice, serve, status
from tests.sync.schedule_support import SECRET_KEYS, SyncDb, sync_db

__all__ = ["sync_db"]  # the module's own database (fixture)

SOLNUM = "N00024-26-R-0001"
ORIGINAL, AMENDMENT_1, AMENDMENT_2 = (f"{n:032x}" for n in (900001, 900002, 900003))
DEADLINE = "2026-03-02T16:00:00-05:00"
EARLIER = "2026-02-20T16:00:00-05:00"
DAY_1 = datetime(2026, 2, 2, 15, 0, tzinfo=UTC)
ATTACHMENT = "https://sam.gov/api/prod/opps/v3/opportunities/resources/files/sow/download"


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[FakeSamGov, str]]:
    fake = FakeSamGov()
    with serve(fake) as base_url:
        yield fake, base_url


def revision(base_url: str, notice_id: str, posted: str, **overrides: Any) -> dict[str, Any]:
    """A revision of the tracked solicitation as SAM.gov returns it (its description on the fake)."""
    values: dict[str, Any] = {
        "noticeId": notice_id, "solicitationNumber": SOLNUM, "title": "Hull maintenance, DDG class",
        "postedDate": posted, "responseDeadLine": DEADLINE,
        "description": f"{base_url}/prod/opportunities/v1/noticedesc?noticeid={notice_id}",
        "uiLink": f"https://sam.gov/opp/{notice_id}/view",
    }
    return notice(900001, **(values | overrides))


@dataclass
class Scene:
    db: SyncDb
    fake: FakeSamGov
    base_url: str
    tenant: TenantRef
    source_id: uuid.UUID
    project_id: uuid.UUID
    manager_id: uuid.UUID
    clock: FakeClock
    worker: Worker

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.db.owner.connect() as conn:
            await set_tenant(conn, self.tenant.id)
            found = list((await conn.execute(text(sql), {"t": self.tenant.id, **params})).all())
            await conn.rollback()
        return found

    async def count(self, table: str) -> int:
        return int((await self.rows(f"SELECT count(*) AS n FROM {table} WHERE tenant_id = :t"))[0].n)

    async def poll(self) -> int:
        """Run every job due now (the source's window search and the project's refresh)."""
        ran = 0
        while (batch := await self.worker.run_once()) > 0:
            ran += batch
        return ran


@pytest.fixture(scope="module")
async def scene(sync_db: SyncDb, live: tuple[FakeSamGov, str]) -> AsyncIterator[Scene]:
    fake, base_url = live
    tenant = await create_tenant(sync_db.owner)
    box = SecretBox.from_setting(SECRET_KEYS)
    fingerprint_hmac = fingerprint_key(SECRET_KEYS)
    manager = await make_login_user(sync_db.owner, tenant, roles=("Capture Manager",))
    async with sync_db.owner.begin() as conn:
        await set_tenant(conn, tenant.id)
        source_id = await conn.scalar(
            text(
                "INSERT INTO external_opportunity_sources (tenant_id, source_name, api_endpoint, api_version,"
                " authentication_type, api_credentials_encrypted, created_by)"
                " VALUES (:t, 'SAM.gov', :url, 'v2', 'api_key', '{}', :u) RETURNING id"
            ),
            {"t": tenant.id, "url": base_url, "u": tenant.system_user_id},
        )
        assert isinstance(source_id, uuid.UUID)
        sealed = seal_credentials(box, tenant.id, source_id, {"api_key": API_KEY})
        await conn.execute(
            text("UPDATE external_opportunity_sources SET api_credentials_encrypted = CAST(:c AS jsonb) WHERE id = :s"),
            {"c": json.dumps(sealed), "s": source_id},
        )
        # a project created from a source reference: pending until its first poll fills it
        project_id = await conn.scalar(
            text(
                "INSERT INTO opportunity_projects (tenant_id, project_name, external_source_id,"
                " external_opportunity_id, sync_status, title, assigned_capture_manager, created_by)"
                " VALUES (:t, 'DDG hull pursuit', :s, :k, 'pending', 'Our hull pursuit', :m, :u) RETURNING id"
            ),
            {"t": tenant.id, "s": source_id, "k": SOLNUM, "m": manager.id, "u": tenant.system_user_id},
        )
        assert isinstance(project_id, uuid.UUID)
        await conn.execute(
            text(
                "INSERT INTO opportunity_project_overrides (tenant_id, opportunity_project_id, field_name,"
                " override_value, override_reason, created_by)"
                " VALUES (:t, :p, 'title', '\"Our hull pursuit\"', 'our own name', :u)"
            ),
            {"t": tenant.id, "p": project_id, "u": tenant.system_user_id},
        )
        await conn.execute(
            text(
                "INSERT INTO polling_configurations (tenant_id, opportunity_project_id, external_source_id,"
                " polling_frequency_minutes, next_poll_timestamp, created_by)"
                " VALUES (:t, :p, :s, 720, :due, :u)"
            ),
            {"t": tenant.id, "p": project_id, "s": source_id, "due": DAY_1, "u": tenant.system_user_id},
        )
        # a key with a SAM.gov role: about 1,000 calls a day
        await set_budget_limits(conn, tenant.id, key_fingerprint(fingerprint_hmac, API_KEY), daily_limit=1000,
                                hourly_limit=None)
    clock = FakeClock(DAY_1)
    port = base_url.rsplit(":", 1)[1]
    services = SyncServices(engine=sync_db.app, chain=TEST_AUDIT_CHAIN, secret_box=box,
                            fingerprint_key=fingerprint_hmac, outbound=OutboundPolicy.from_setting(f"127.0.0.1:{port}"))
    worker = Worker(services, JOBS, clock=clock, batch=4)
    yield Scene(sync_db, fake, base_url, tenant, source_id, project_id, manager.id, clock, worker)


def _fillers() -> list[dict[str, Any]]:
    return [notice(n, postedDate="2026-01-20") for n in range(1, 2501)]


async def test_the_first_poll_pages_through_and_fills_the_pending_project(scene: Scene) -> None:
    scene.fake.notices = [*_fillers(), revision(scene.base_url, ORIGINAL, "2026-02-02")]
    scene.fake.descriptions = {ORIGINAL: "Hull maintenance of DDG-51 class destroyers."}
    assert await scene.poll() == 2  # the source's window search and the project's refresh
    offsets = [dict(request).get("offset") for request in scene.fake.requests if "solnum" not in dict(request)]
    assert offsets == ["0", "1000", "2000"]  # 2,501 records: three pages of 1,000
    window = dict(scene.fake.requests[0])
    assert (window["postedFrom"], window["postedTo"], window["limit"]) == ("01/03/2026", "02/02/2026", "1000")
    (project,) = await scene.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=scene.project_id)
    assert project.sync_status == "synced" and project.last_synced_at == DAY_1
    assert project.title == "Our hull pursuit"  # overridden
    assert (project.solicitation_number, project.agency_name) == (SOLNUM, "DEPT OF DEFENSE")
    assert project.description == "Hull maintenance of DDG-51 class destroyers."
    (version,) = await scene.rows("SELECT * FROM external_opportunity_data WHERE tenant_id = :t")
    assert (version.notice_id, version.amendment_number, version.version_number) == (ORIGINAL, 0, 1)
    assert len(scene.fake.description_requests) == 1  # one description, of the one tracked notice
    # no project was made for the 2,500 notices nobody tracks
    assert await scene.count("opportunity_projects") == 1
    logs = await scene.rows("SELECT endpoint_called FROM api_integration_logs WHERE tenant_id = :t")
    assert len(logs) == 5 and all(API_KEY not in log.endpoint_called for log in logs)


async def test_two_amendments_make_three_versions_with_their_changes_and_follow_ups(scene: Scene) -> None:
    # amendment 1: a new noticeId, the response deadline moved earlier
    scene.clock.advance(days=1)
    scene.fake.notices = [*_fillers(), revision(scene.base_url, AMENDMENT_1, "2026-02-03", responseDeadLine=EARLIER)]
    scene.fake.descriptions[AMENDMENT_1] = "Hull maintenance of DDG-51 class destroyers. Deadline moved."
    await scene.poll()
    # amendment 2: another noticeId, an attachment added
    scene.clock.advance(days=1)
    scene.fake.notices = [*_fillers(), revision(scene.base_url, AMENDMENT_2, "2026-02-04", responseDeadLine=EARLIER,
                                                resourceLinks=[ATTACHMENT])]
    await scene.poll()  # no description for it on the fake: "Description Not Found"
    versions = await scene.rows(
        "SELECT * FROM external_opportunity_data WHERE opportunity_project_id = :p ORDER BY version_number",
        p=scene.project_id,
    )
    assert [(v.version_number, v.notice_id, v.amendment_number, v.is_current_version) for v in versions] == [
        (1, ORIGINAL, 0, False), (2, AMENDMENT_1, 1, False), (3, AMENDMENT_2, 2, True)
    ]
    assert versions[2].resource_links == [ATTACHMENT] and versions[2].description is None
    assert versions[1].response_due_date == datetime(2026, 2, 20, 21, 0, tzinfo=UTC)
    changes = await scene.rows(
        "SELECT * FROM external_data_changes WHERE opportunity_project_id = :p ORDER BY change_timestamp",
        p=scene.project_id,
    )
    assert [(c.change_type, c.impact_level) for c in changes] == [
        ("created", "informational"), ("amended", "critical"), ("amended", "high")
    ]
    assert "responseDeadLine" in changes[1].changed_fields and "resourceLinks" in changes[2].changed_fields
    activities = await scene.rows(
        "SELECT * FROM activities WHERE entity_id = :p ORDER BY due_date", p=scene.project_id
    )
    assert [a.external_change_reference for a in activities] == [changes[1].id, changes[2].id]
    assert {a.assigned_to for a in activities} == {scene.manager_id}
    assert [a.due_date for a in activities] == [follow_up_due(EARLIER, DAY_1 + timedelta(days=1)),
                                                 follow_up_due(EARLIER, DAY_1 + timedelta(days=2))]
    assert all(a.due_date < datetime(2026, 2, 20, 21, 0, tzinfo=UTC) for a in activities)
    (project,) = await scene.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=scene.project_id)
    assert project.title == "Our hull pursuit"  # the overridden field is kept
    assert project.external_opportunity_url == f"https://sam.gov/opp/{AMENDMENT_2}/view"  # the others follow
    assert project.description == "Hull maintenance of DDG-51 class destroyers. Deadline moved."
    assert project.last_synced_at == DAY_1 + timedelta(days=2)


async def test_polling_again_with_unchanged_data_writes_only_the_call_log_and_the_schedule(scene: Scene) -> None:
    tables = ("external_opportunity_data", "external_data_changes", "activities", "activity_participants",
              "audit_logs", "change_history", "opportunity_projects", "opportunity_project_overrides")
    before = {table: await scene.count(table) for table in tables}
    project_before = await scene.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=scene.project_id)
    logs_before = await scene.count("api_integration_logs")
    schedule_sql = "SELECT last_success_at, next_poll_at FROM sync_schedules WHERE tenant_id = :t"
    schedule_before = await scene.rows(schedule_sql)
    descriptions_before = len(scene.fake.description_requests)
    scene.clock.advance(days=1)
    assert await scene.poll() == 2
    assert {table: await scene.count(table) for table in tables} == before
    assert await scene.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=scene.project_id) == project_before
    # one call each: the window search (the window now holds only the tracked notice) and the refresh
    assert await scene.count("api_integration_logs") == logs_before + 2
    assert len(scene.fake.description_requests) == descriptions_before
    (schedule,) = await scene.rows(schedule_sql)
    assert schedule.last_success_at == DAY_1 + timedelta(days=3) and schedule != schedule_before[0]
    (polling,) = await scene.rows("SELECT last_poll_timestamp FROM polling_configurations WHERE tenant_id = :t")
    assert polling.last_poll_timestamp == DAY_1 + timedelta(days=3)


async def test_the_window_starts_a_day_before_the_last_success(scene: Scene) -> None:
    searches = [dict(r) for r in scene.fake.requests if "solnum" not in dict(r) and dict(r).get("offset") == "0"]
    assert [(s["postedFrom"], s["postedTo"]) for s in searches] == [
        ("01/03/2026", "02/02/2026"), ("02/01/2026", "02/03/2026"), ("02/02/2026", "02/04/2026"),
        ("02/03/2026", "02/05/2026"),
    ]


def _normalised(**overrides: Any) -> NormalisedNotice:
    record = normalise_record(notice(7, **overrides))
    assert isinstance(record, NormalisedNotice)
    return record


def test_lineage_membership_of_split_and_plain_keys() -> None:
    navy = _normalised(solicitationNumber="W912-26-0001")
    assert belongs_to_lineage(navy, "W912-26-0001")
    assert belongs_to_lineage(navy, "W912-26-0001@017.1700")
    assert not belongs_to_lineage(navy, "W912-26-0001@097.9700")
    assert not belongs_to_lineage(navy, "W912-26-0002")
    special = _normalised(solicitationNumber=None)
    assert belongs_to_lineage(special, f"{7:032x}")


def test_refresh_window() -> None:
    now = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
    assert refresh_window(date(2026, 5, 10), now) == SearchWindow(date(2026, 5, 9), date(2026, 6, 1))
    assert refresh_window(None, now) == SearchWindow(date(2025, 6, 2), date(2026, 6, 1))
    assert refresh_window(date(2024, 1, 1), now) == SearchWindow(date(2025, 6, 2), date(2026, 6, 1))


# --- the jobs' error paths, each job run directly for a tenant of its own ----------------------------


@dataclass
class Lone:
    """A tenant with a SAM.gov source on the fake and one tracked project, for one job at a time."""

    db: SyncDb
    fake: FakeSamGov
    tenant: TenantRef
    source_id: uuid.UUID
    project_id: uuid.UUID
    polling_id: uuid.UUID
    services: SyncServices
    fingerprint: str

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.db.owner.connect() as conn:
            await set_tenant(conn, self.tenant.id)
            found = list((await conn.execute(text(sql), {"t": self.tenant.id, **params})).all())
            await conn.rollback()
        return found

    async def execute(self, sql: str, **params: Any) -> None:
        async with self.db.owner.begin() as conn:
            await set_tenant(conn, self.tenant.id)
            await conn.execute(text(sql), {"t": self.tenant.id, **params})

    async def run(self, kind: JobKind, now: datetime) -> JobOutcome:
        clock = FakeClock(now)
        worker = Worker(self.services, JOBS, clock=clock)
        refresh = kind is JobKind.PROJECT_REFRESH
        job = Job(kind=kind, job_id=self.polling_id if refresh else uuid.uuid4(), tenant_id=self.tenant.id,
                  external_source_id=self.source_id, saved_search_id=None,
                  opportunity_project_id=self.project_id if refresh else None,
                  claimed_until=now + timedelta(minutes=10), worker=worker.name)
        ctx = JobContext(job=job, services=self.services, clock=clock, started_at=now, _worker=worker)
        return await JOBS[kind](ctx)


@pytest.fixture
async def lone(sync_db: SyncDb, live: tuple[FakeSamGov, str]) -> AsyncIterator[Lone]:
    fake, base_url = live
    fake.notices, fake.script, fake.before_page, fake.answer = [], [], None, None
    tenant = await create_tenant(sync_db.owner)
    box = SecretBox.from_setting(SECRET_KEYS)
    fingerprint_hmac = fingerprint_key(SECRET_KEYS)
    async with sync_db.owner.begin() as conn:
        await set_tenant(conn, tenant.id)
        source_id = await conn.scalar(
            text(
                "INSERT INTO external_opportunity_sources (tenant_id, source_name, api_endpoint, api_version,"
                " authentication_type, api_credentials_encrypted, retry_attempts, created_by)"
                " VALUES (:t, 'SAM.gov', :url, 'v2', 'api_key', '{}', 0, :u) RETURNING id"
            ),
            {"t": tenant.id, "url": base_url, "u": tenant.system_user_id},
        )
        assert isinstance(source_id, uuid.UUID)
        sealed = seal_credentials(box, tenant.id, source_id, {"api_key": API_KEY})
        await conn.execute(
            text("UPDATE external_opportunity_sources SET api_credentials_encrypted = CAST(:c AS jsonb) WHERE id = :s"),
            {"c": json.dumps(sealed), "s": source_id},
        )
        project_id = await conn.scalar(
            text(
                "INSERT INTO opportunity_projects (tenant_id, project_name, external_source_id,"
                " external_opportunity_id, sync_status, created_by)"
                " VALUES (:t, 'Lone pursuit', :s, :k, 'pending', :u) RETURNING id"
            ),
            {"t": tenant.id, "s": source_id, "k": SOLNUM, "u": tenant.system_user_id},
        )
        polling_id = await conn.scalar(
            text(
                "INSERT INTO polling_configurations (tenant_id, opportunity_project_id, external_source_id,"
                " max_retries, next_poll_timestamp, created_by)"
                " VALUES (:t, :p, :s, 0, NULL, :u) RETURNING id"
            ),
            {"t": tenant.id, "p": project_id, "s": source_id, "u": tenant.system_user_id},
        )
        fingerprint = key_fingerprint(fingerprint_hmac, API_KEY)
        await set_budget_limits(conn, tenant.id, fingerprint, daily_limit=100, hourly_limit=None)
    assert isinstance(project_id, uuid.UUID) and isinstance(polling_id, uuid.UUID)
    port = base_url.rsplit(":", 1)[1]
    services = SyncServices(engine=sync_db.app, chain=TEST_AUDIT_CHAIN, secret_box=box,
                            fingerprint_key=fingerprint_hmac, outbound=OutboundPolicy.from_setting(f"127.0.0.1:{port}"))
    yield Lone(sync_db, fake, tenant, source_id, project_id, polling_id, services, fingerprint)
    fake.notices, fake.script, fake.before_page, fake.answer = [], [], None, None


async def test_a_refresh_that_fails_marks_the_project_until_the_next_success(lone: Lone) -> None:
    lone.fake.script = [status(500, message="SAM.gov is down")]
    outcome = await lone.run(JobKind.PROJECT_REFRESH, DAY_1)
    assert outcome.kind is OutcomeKind.FAILED and "500" in (outcome.error or "")
    (project,) = await lone.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=lone.project_id)
    assert project.sync_status == "error" and "SAM.gov is down" in project.sync_error_message
    lone.fake.notices = [revision("http://127.0.0.1:1", ORIGINAL, "2026-02-02")]
    assert (await lone.run(JobKind.PROJECT_REFRESH, DAY_1 + timedelta(hours=1))).kind is OutcomeKind.DONE
    (project,) = await lone.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=lone.project_id)
    assert (project.sync_status, project.sync_error_message) == ("synced", None)


async def test_without_budget_a_job_is_deferred_and_sends_nothing(lone: Lone) -> None:
    async with lone.db.owner.begin() as conn:
        await set_tenant(conn, lone.tenant.id)
        await set_budget_limits(conn, lone.tenant.id, lone.fingerprint, daily_limit=0, hourly_limit=None)
    sent = len(lone.fake.requests)
    for kind in (JobKind.SOURCE_SEARCH, JobKind.PROJECT_REFRESH):
        outcome = await lone.run(kind, DAY_1)
        assert outcome.kind is OutcomeKind.DEFERRED and outcome.retry_at == datetime(2026, 2, 3, tzinfo=UTC)
        assert outcome.key_fingerprint == lone.fingerprint
    assert len(lone.fake.requests) == sent
    (project,) = await lone.rows("SELECT sync_status FROM opportunity_projects WHERE id = :p", p=lone.project_id)
    assert project.sync_status == "pending"  # not an error of the source


async def test_a_tracked_notice_no_longer_returned_is_removed_once(lone: Lone) -> None:
    lone.fake.notices = [revision("http://127.0.0.1:1", ORIGINAL, "2026-02-02")]
    assert (await lone.run(JobKind.PROJECT_REFRESH, DAY_1)).kind is OutcomeKind.DONE
    lone.fake.notices = []
    for hours in (1, 2):
        assert (await lone.run(JobKind.PROJECT_REFRESH, DAY_1 + timedelta(hours=hours))).kind is OutcomeKind.DONE
    changes = await lone.rows(
        "SELECT change_type, impact_level FROM external_data_changes WHERE opportunity_project_id = :p"
        " ORDER BY change_timestamp", p=lone.project_id,
    )
    assert [(c.change_type, c.impact_level) for c in changes] == [("created", "informational"), ("removed", "critical")]
    assert len(await lone.rows("SELECT id FROM activities WHERE entity_id = :p", p=lone.project_id)) == 1


async def test_a_search_cut_short_fails_so_its_window_is_searched_again(lone: Lone) -> None:
    lone.fake.notices = [notice(n, postedDate="2026-02-01") for n in range(1, 1201)]

    def vanish(server: FakeSamGov, offset: int) -> None:
        if offset == 0:  # from the second page on, empty pages although 1,200 were announced
            server.answer = lambda request: Response(
                b'{"totalRecords": 1200, "opportunitiesData": []}', media_type="application/json"
            )

    lone.fake.before_page = vanish
    outcome = await lone.run(JobKind.SOURCE_SEARCH, DAY_1)
    assert outcome.kind is OutcomeKind.FAILED and "before its last page" in (outcome.error or "")


async def test_a_source_without_an_api_key_is_not_searched(lone: Lone) -> None:
    await lone.execute("UPDATE external_opportunity_sources SET api_credentials_encrypted = '{}' WHERE id = :s",
                       s=lone.source_id)
    sent = len(lone.fake.requests)
    outcome = await lone.run(JobKind.SOURCE_SEARCH, DAY_1)
    assert outcome.kind is OutcomeKind.FAILED and "no api_key" in (outcome.error or "")
    assert len(lone.fake.requests) == sent


async def test_an_archived_project_or_an_inactive_source_is_left_alone(lone: Lone) -> None:
    sent = len(lone.fake.requests)
    await lone.execute("UPDATE opportunity_projects SET archived_at = now(), archived_by = :u WHERE id = :p",
                       u=lone.tenant.system_user_id, p=lone.project_id)
    assert (await lone.run(JobKind.PROJECT_REFRESH, DAY_1)).kind is OutcomeKind.DONE
    await lone.execute("UPDATE external_opportunity_sources SET is_active = false WHERE id = :s", s=lone.source_id)
    assert (await lone.run(JobKind.SOURCE_SEARCH, DAY_1)).kind is OutcomeKind.DONE
    assert len(lone.fake.requests) == sent


async def test_a_notice_without_a_solicitation_number_is_refreshed_by_its_notice_id(lone: Lone) -> None:
    special = f"{424242:032x}"
    await lone.execute("UPDATE opportunity_projects SET external_opportunity_id = :k WHERE id = :p",
                       k=special, p=lone.project_id)
    lone.fake.notices = [notice(424242, solicitationNumber=None, type="Special Notice", postedDate="2026-02-01"),
                         notice(5, postedDate="2026-02-01")]
    assert (await lone.run(JobKind.PROJECT_REFRESH, DAY_1)).kind is OutcomeKind.DONE
    assert dict(lone.fake.requests[-1])["noticeid"] == special
    versions = await lone.rows("SELECT notice_id FROM external_opportunity_data WHERE opportunity_project_id = :p",
                               p=lone.project_id)
    assert [v.notice_id for v in versions] == [special]
    # the next refresh asks for the version's notice id again, and finds nothing new
    assert (await lone.run(JobKind.PROJECT_REFRESH, DAY_1 + timedelta(hours=1))).kind is OutcomeKind.DONE
    assert dict(lone.fake.requests[-1])["noticeid"] == special
    assert len(await lone.rows("SELECT id FROM external_opportunity_data WHERE opportunity_project_id = :p",
                               p=lone.project_id)) == 1
