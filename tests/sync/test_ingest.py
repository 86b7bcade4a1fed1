"""sync/ingest.py against the real database: versions and amendment numbers, classified changes,
follow-up activities and who gets them, overrides respected, descriptions, a poll that changes
nothing writing nothing.

Committed data under a tenant of its own; `ingest` runs on the application role (gwm_app, row-level
security) through the system user's unit of work, as the sync worker does.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from sync.connectors.base import NormalisedNotice
from sync.connectors.samgov import normalise_record
from sync.diff import follow_up_due, payload_hash
from sync.ingest import (
    DescriptionUnavailable,
    find_project,
    group_by_lineage,
    ingest,
    ingest_missing,
    mark_error,
    tracked_lineages,
)
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.http import make_login_user
from tests.sync.fake_samgov import notice

NOW = datetime(2026, 2, 10, 15, 0, tzinfo=UTC)
SOLNUM = "N00024-26-R-0001"
ORIGINAL = f"{1:032x}"
AMENDMENT_1 = f"{2:032x}"
AMENDMENT_2 = f"{3:032x}"


def record(notice_id: str, **overrides: Any) -> NormalisedNotice:
    raw = notice(1, noticeId=notice_id, solicitationNumber=f"  {SOLNUM.lower()} ", title="Hull maintenance",
                 description=f"https://api.sam.gov/prod/opportunities/v1/noticedesc?noticeid={notice_id}")
    raw.update(overrides)
    normalised = normalise_record(raw)
    assert isinstance(normalised, NormalisedNotice)
    return normalised


class World:
    """A tenant with a SAM.gov source, and helpers to read what ingest wrote."""

    def __init__(self, owner: AsyncEngine, app: AsyncEngine, tenant: TenantRef, source_id: uuid.UUID) -> None:
        self.owner, self.app, self.tenant, self.source_id = owner, app, tenant, source_id

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.owner.connect() as conn:
            await set_tenant(conn, self.tenant.id)
            found = list((await conn.execute(text(sql), {"t": self.tenant.id, **params})).all())
            await conn.rollback()
        return found

    async def execute(self, sql: str, **params: Any) -> Any:
        async with self.owner.begin() as conn:
            await set_tenant(conn, self.tenant.id)
            result = await conn.execute(text(sql), {"t": self.tenant.id, **params})
            return result.scalar() if result.returns_rows else None

    async def project(self, *, key: str = SOLNUM, manager: uuid.UUID | None = None) -> uuid.UUID:
        """A project created from a source reference: pending, no data yet."""
        project_id = await self.execute(
            "INSERT INTO opportunity_projects (tenant_id, project_name, external_source_id, external_opportunity_id,"
            " sync_status, assigned_capture_manager, created_by)"
            " VALUES (:t, 'Hull maintenance pursuit', :s, :k, 'pending', :m, :u) RETURNING id",
            s=self.source_id, k=key, m=manager, u=self.tenant.system_user_id,
        )
        assert isinstance(project_id, uuid.UUID)
        return project_id

    async def ingest(self, *notices: NormalisedNotice, now: datetime = NOW, **kwargs: Any) -> Any:
        return await ingest(self.app, TEST_AUDIT_CHAIN, self.tenant.id, self.source_id, list(notices), now=now,
                            **kwargs)

    async def versions(self, project_id: uuid.UUID) -> list[Any]:
        return await self.rows(
            "SELECT * FROM external_opportunity_data WHERE opportunity_project_id = :p ORDER BY version_number",
            p=project_id,
        )

    async def changes(self, project_id: uuid.UUID) -> list[Any]:
        return await self.rows(
            "SELECT * FROM external_data_changes WHERE opportunity_project_id = :p"
            " ORDER BY change_timestamp, created_at",
            p=project_id,
        )

    async def activities(self, project_id: uuid.UUID) -> list[Any]:
        return await self.rows(
            "SELECT * FROM activities WHERE entity_id = :p ORDER BY created_at, due_date", p=project_id
        )

    async def counts(self) -> dict[str, int]:
        tables = ("external_opportunity_data", "external_data_changes", "activities", "activity_participants",
                  "audit_logs", "change_history", "opportunity_projects")
        out = {}
        for table in tables:
            out[table] = (await self.rows(f"SELECT count(*) AS n FROM {table} WHERE tenant_id = :t"))[0].n
        out["project_updated_at"] = hash(
            tuple(r.updated_at for r in await self.rows("SELECT updated_at FROM opportunity_projects"
                                                        " WHERE tenant_id = :t ORDER BY id"))
        )
        return out


@pytest.fixture
async def world(owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef) -> World:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        source_id = await conn.scalar(
            text(
                "INSERT INTO external_opportunity_sources (tenant_id, source_name, api_endpoint, api_version,"
                " authentication_type, api_credentials_encrypted, created_by)"
                " VALUES (:t, 'SAM.gov', 'http://127.0.0.1:1', 'v2', 'api_key', CAST(:c AS jsonb), :u) RETURNING id"
            ),
            {"t": fresh_tenant.id, "c": json.dumps({"sealed": "x"}), "u": fresh_tenant.system_user_id},
        )
    assert isinstance(source_id, uuid.UUID)
    return World(owner_engine, app_engine, fresh_tenant, source_id)


async def test_a_pending_project_is_filled_by_its_first_poll(world: World) -> None:
    project_id = await world.project()
    first = record(ORIGINAL)
    assert first.lineage_key == SOLNUM
    result = await world.ingest(first)
    assert result.project_id == project_id and not result.created and len(result.versions) == 1
    (version,) = await world.versions(project_id)
    assert (version.version_number, version.amendment_number, version.is_current_version) == (1, 0, True)
    assert version.notice_id == ORIGINAL and version.raw_json_data == dict(first.raw)
    assert version.title == "Hull maintenance" and version.set_aside_type == "SBA"
    assert version.response_due_date == datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
    assert version.naics_codes == "336611" and version.resource_links == []
    (change,) = await world.changes(project_id)
    assert (change.change_type, change.impact_level) == ("created", "informational")
    assert await world.activities(project_id) == []
    (project,) = await world.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=project_id)
    assert project.sync_status == "synced" and project.sync_error_message is None
    assert project.version_hash == payload_hash(first.raw) and project.last_synced_at == NOW
    assert (project.title, project.solicitation_number) == ("Hull maintenance", SOLNUM.lower())
    assert (project.agency_name, project.contracting_office) == ("DEPT OF DEFENSE", "NAVSEA HQ")
    assert project.external_opportunity_url == f"https://sam.gov/workspace/contract/opp/{1:032x}/view"
    # the project's columns were written by the system user as the sync process, with history
    history = await world.rows(
        "SELECT field_name, change_source, changed_by_system_process FROM change_history WHERE entity_id = :p",
        p=project_id,
    )
    assert {h.field_name for h in history} >= {"title", "sync_status", "version_hash"}
    assert {(h.change_source, h.changed_by_system_process) for h in history} == {("system", "sync.ingest")}


async def test_amendments_versions_changes_and_follow_ups(world: World, owner_engine: AsyncEngine) -> None:
    manager = await make_login_user(owner_engine, world.tenant, roles=("Capture Manager",))
    project_id = await world.project(manager=manager.id)
    await world.ingest(record(ORIGINAL))
    # amendment 1: a new noticeId, the deadline moved earlier -> critical
    earlier = record(AMENDMENT_1, responseDeadLine="2026-02-20T16:00:00-05:00")
    result = await world.ingest(earlier, now=NOW + timedelta(hours=1))
    assert len(result.versions) == 1 and len(result.activities) == 1
    # amendment 2: the same notice updated with an attachment -> high, not a new amendment number
    attached = record(AMENDMENT_1, responseDeadLine="2026-02-20T16:00:00-05:00",
                      resourceLinks=["https://sam.gov/files/sow.pdf"])
    await world.ingest(attached, now=NOW + timedelta(hours=2))
    versions = await world.versions(project_id)
    assert [(v.version_number, v.amendment_number, v.is_current_version, v.notice_id) for v in versions] == [
        (1, 0, False, ORIGINAL), (2, 1, False, AMENDMENT_1), (3, 1, True, AMENDMENT_1)
    ]
    assert versions[2].resource_links == ["https://sam.gov/files/sow.pdf"]
    changes = await world.changes(project_id)
    assert [(c.change_type, c.impact_level) for c in changes] == [
        ("created", "informational"), ("amended", "critical"), ("updated", "high")
    ]
    assert set(changes[1].changed_fields) == {"noticeId", "responseDeadLine"}
    assert changes[1].previous_values["responseDeadLine"] == "2026-03-02T16:00:00-05:00"
    assert changes[1].new_values["responseDeadLine"] == "2026-02-20T16:00:00-05:00"
    assert changes[2].changed_fields == ["resourceLinks"] and changes[2].external_source_id == world.source_id
    activities = await world.activities(project_id)
    assert len(activities) == 2
    for activity, change, at in zip(activities, changes[1:], (1, 2), strict=True):
        assert activity.assigned_to == manager.id and activity.triggered_by_external_change
        assert activity.external_change_reference == change.id and activity.activity_type == "follow_up"
        assert activity.due_date == follow_up_due("2026-02-20T16:00:00-05:00", NOW + timedelta(hours=at))
        assert activity.due_date < datetime(2026, 2, 20, 21, 0, tzinfo=UTC)
        assert activity.created_by == world.tenant.system_user_id
    assert [a.priority for a in activities] == ["critical", "high"]
    (project,) = await world.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=project_id)
    assert project.version_hash == payload_hash(attached.raw)


async def test_a_poll_with_unchanged_data_writes_nothing(world: World) -> None:
    project_id = await world.project()
    first = record(ORIGINAL)
    await world.ingest(first)
    before = await world.counts()
    # the same record again: padding, a reordered key set, other links and uiLink do not count
    again = dict(first.raw)
    again["title"] = "  Hull maintenance  "
    again["links"] = [{"rel": "self", "href": "https://api.sam.gov/elsewhere"}]
    normalised = normalise_record(again)
    assert isinstance(normalised, NormalisedNotice)
    calls: list[str] = []

    async def describe(url: str) -> str | None:
        calls.append(url)
        return "text"

    for at in (1, 2):
        result = await world.ingest(normalised, now=NOW + timedelta(hours=at), describe=describe)
        assert result.project_id == project_id and not result.wrote
    assert await world.counts() == before
    assert calls == []


async def test_a_multi_notice_first_fill_counts_every_notice_id_and_is_stable(world: World) -> None:
    project_id = await world.project()
    presolicitation = record(ORIGINAL, type="Presolicitation", postedDate="2026-01-10")
    solicitation = record(AMENDMENT_1, postedDate="2026-02-02")
    await world.ingest(solicitation, presolicitation)
    versions = await world.versions(project_id)
    assert [(v.notice_id, v.amendment_number, v.is_current_version) for v in versions] == [
        (ORIGINAL, 0, False), (AMENDMENT_1, 1, True)
    ]
    before = await world.counts()
    result = await world.ingest(presolicitation, solicitation, now=NOW + timedelta(hours=1))
    assert not result.wrote and await world.counts() == before


async def test_impact_levels_without_follow_up(world: World) -> None:
    project_id = await world.project()
    await world.ingest(record(ORIGINAL))
    await world.ingest(record(ORIGINAL, title="HULL MAINTENANCE"), now=NOW + timedelta(hours=1))
    await world.ingest(record(ORIGINAL, title="Hull and deck maintenance"), now=NOW + timedelta(hours=2))
    await world.ingest(record(ORIGINAL, title="Hull and deck maintenance", archiveDate="2026-05-01"),
                       now=NOW + timedelta(hours=3))
    changes = await world.changes(project_id)
    assert [(c.change_type, c.impact_level) for c in changes] == [
        ("created", "informational"), ("updated", "informational"), ("updated", "medium"), ("updated", "low"),
    ]
    assert await world.activities(project_id) == []
    assert [v.amendment_number for v in await world.versions(project_id)] == [0, 0, 0, 0]


async def test_set_aside_change_is_critical_and_goes_to_the_admins_without_a_capture_manager(
    world: World, owner_engine: AsyncEngine
) -> None:
    first_admin = await make_login_user(owner_engine, world.tenant, roles=("Tenant Admin",))
    second_admin = await make_login_user(owner_engine, world.tenant, roles=("Tenant Admin",))
    await make_login_user(owner_engine, world.tenant, roles=("Tenant Admin",), is_active=False)
    await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    project_id = await world.project()
    await world.ingest(record(ORIGINAL))
    result = await world.ingest(record(ORIGINAL, typeOfSetAside="8A"), now=NOW + timedelta(hours=1))
    (activity_id,) = result.activities
    (activity,) = await world.activities(project_id)
    assert activity.id == activity_id and activity.assigned_to == first_admin.id
    participants = await world.rows("SELECT * FROM activity_participants WHERE activity_id = :a", a=activity_id)
    assert [(p.participant_type, p.participant_id) for p in participants] == [("user", second_admin.id)]
    assert [(c.change_type, c.impact_level) for c in await world.changes(project_id)][-1] == ("updated", "critical")


async def test_an_active_override_keeps_the_project_field(world: World) -> None:
    project_id = await world.project()
    await world.ingest(record(ORIGINAL))
    await world.execute(
        "INSERT INTO opportunity_project_overrides (tenant_id, opportunity_project_id, field_name,"
        " original_external_value, override_value, created_by)"
        " VALUES (:t, :p, 'title', '\"Hull maintenance\"', '\"Our hull pursuit\"', :u)",
        p=project_id, u=world.tenant.system_user_id,
    )
    await world.execute("UPDATE opportunity_projects SET title = 'Our hull pursuit' WHERE id = :p", p=project_id)
    await world.ingest(record(AMENDMENT_1, title="Hull and deck maintenance", solicitationNumber=SOLNUM),
                       now=NOW + timedelta(hours=1))
    (project,) = await world.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=project_id)
    assert project.title == "Our hull pursuit"  # overridden: kept
    assert project.solicitation_number == SOLNUM  # not overridden: taken
    assert (await world.versions(project_id))[-1].title == "Hull and deck maintenance"
    # once the override is switched off, the next version's title is taken again
    await world.execute("UPDATE opportunity_project_overrides SET is_active = false WHERE opportunity_project_id = :p",
                        p=project_id)
    await world.ingest(record(AMENDMENT_2, title="Deck maintenance"), now=NOW + timedelta(hours=2))
    (project,) = await world.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=project_id)
    assert project.title == "Deck maintenance"


async def test_descriptions_are_fetched_for_new_notice_ids_of_tracked_projects_only(world: World) -> None:
    calls: list[str] = []
    answers: dict[str, str | None] = {ORIGINAL: "Scope: hull work.", AMENDMENT_1: None}

    async def describe(url: str) -> str | None:
        calls.append(url)
        return answers[url.rsplit("=", 1)[1]]

    # not tracked: nothing written, nothing fetched
    untracked = await world.ingest(record(ORIGINAL), describe=describe)
    assert untracked.project_id is None and calls == []
    project_id = await world.project()
    result = await world.ingest(record(ORIGINAL), describe=describe)
    assert result.descriptions_fetched == 1 and len(calls) == 1
    # an update of the same notice keeps the text without another call
    await world.ingest(record(ORIGINAL, archiveDate="2026-05-01"), describe=describe, now=NOW + timedelta(hours=1))
    assert len(calls) == 1
    # "Description Not Found": the new version has none; the project keeps its text
    await world.ingest(record(AMENDMENT_1), describe=describe, now=NOW + timedelta(hours=2))
    assert len(calls) == 2
    versions = await world.versions(project_id)
    assert [v.description for v in versions] == ["Scope: hull work.", "Scope: hull work.", None]
    (project,) = await world.rows("SELECT description FROM opportunity_projects WHERE id = :p", p=project_id)
    assert project.description == "Scope: hull work."


async def test_a_description_without_budget_still_writes_the_version(world: World) -> None:
    project_id = await world.project()

    async def no_budget(url: str) -> str | None:
        raise DescriptionUnavailable("daily budget spent")

    result = await world.ingest(record(ORIGINAL), describe=no_budget)
    assert len(result.versions) == 1 and result.descriptions_fetched == 0
    assert (await world.versions(project_id))[0].description is None


async def test_create_find_and_tracked_lineages(world: World) -> None:
    result = await world.ingest(record(ORIGINAL), create=True)
    assert result.created and result.project_id is not None
    async with world.app.connect() as conn:
        await set_tenant(conn, world.tenant.id)
        assert await find_project(conn, world.source_id, SOLNUM) == result.project_id
        assert await tracked_lineages(conn, world.source_id, [SOLNUM, "OTHER"]) == {SOLNUM: result.project_id}
        assert await tracked_lineages(conn, world.source_id, []) == {}
        await conn.rollback()
    (project,) = await world.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=result.project_id)
    assert (project.project_name, project.sync_status) == ("Hull maintenance", "synced")
    await world.execute("UPDATE opportunity_projects SET project_status = 'lost' WHERE id = :p", p=result.project_id)
    async with world.app.connect() as conn:
        await set_tenant(conn, world.tenant.id)
        assert await tracked_lineages(conn, world.source_id) == {}
        await conn.rollback()
    grouped = group_by_lineage([record(ORIGINAL), record(AMENDMENT_1), record("f" * 32, solicitationNumber=None)])
    assert {key: len(items) for key, items in grouped.items()} == {SOLNUM: 2, "f" * 32: 1}


async def test_a_notice_gone_is_recorded_once_as_removed(world: World, owner_engine: AsyncEngine) -> None:
    manager = await make_login_user(owner_engine, world.tenant, roles=("Capture Manager",))
    project_id = await world.project(manager=manager.id)
    pending = await world.project(key="NEVER-SEEN")
    assert not (await ingest_missing(world.app, TEST_AUDIT_CHAIN, world.tenant.id, world.source_id, pending,
                                     now=NOW)).wrote
    await world.ingest(record(ORIGINAL))
    for at in (1, 2):
        await ingest_missing(world.app, TEST_AUDIT_CHAIN, world.tenant.id, world.source_id, project_id,
                             now=NOW + timedelta(hours=at))
    changes = await world.changes(project_id)
    assert [(c.change_type, c.impact_level) for c in changes] == [("created", "informational"), ("removed", "critical")]
    (activity,) = await world.activities(project_id)
    assert activity.assigned_to == manager.id and activity.priority == "critical"


async def test_sync_errors_are_kept_true(world: World) -> None:
    project_id = await world.project()
    first = record(ORIGINAL)
    await world.ingest(first)
    mark: Callable[[str], Awaitable[bool]] = lambda message: mark_error(  # noqa: E731
        world.app, TEST_AUDIT_CHAIN, world.tenant.id, project_id, message
    )
    assert await mark("SAM.gov answered 500: boom")
    before = await world.counts()
    assert not await mark("SAM.gov answered 500: boom")  # said already: nothing written
    assert await world.counts() == before
    (project,) = await world.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=project_id)
    assert (project.sync_status, project.sync_error_message) == ("error", "SAM.gov answered 500: boom")
    # the next successful poll, even with unchanged data, puts it right
    result = await world.ingest(first, now=NOW + timedelta(hours=1))
    assert result.versions == [] and set(result.project_fields) == {"sync_status", "sync_error_message",
                                                                     "last_synced_at"}
    (project,) = await world.rows("SELECT * FROM opportunity_projects WHERE id = :p", p=project_id)
    assert (project.sync_status, project.sync_error_message) == ("synced", None)
    assert len(await world.versions(project_id)) == 1


async def test_two_workers_taking_in_the_same_notice_write_one_version(world: World) -> None:
    project_id = await world.project()
    await world.ingest(record(ORIGINAL))
    amendment = record(AMENDMENT_1, responseDeadLine="2026-02-20T16:00:00-05:00")
    first, second = await asyncio.gather(
        world.ingest(amendment, now=NOW + timedelta(hours=1)), world.ingest(amendment, now=NOW + timedelta(hours=1))
    )
    assert sorted([len(first.versions), len(second.versions)]) == [0, 1]
    assert [v.notice_id for v in await world.versions(project_id)] == [ORIGINAL, AMENDMENT_1]
    assert len(await world.changes(project_id)) == 2 and len(await world.activities(project_id)) == 1
