"""The inbox's part of `gwm jobs run` (server/inbox_jobs.py): reminders 7, 2 and 1 UTC days before a
deadline, across midnight UTC with an injected clock; the daily digest for the right users, once,
with two runs at once, through a real SMTP server (aiosmtpd on 127.0.0.1); the purge.

Committed data under a tenant of its own; the jobs run as the schema owner, as `gwm jobs run` does.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audit import RequestMeta
from auth.mailer import SmtpMailer
from models.db import set_tenant
from server.inbox_jobs import days_away, inbox_tenant, send_digests, send_reminders
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.http import make_login_user

META = RequestMeta(request_id="test-inbox-jobs", endpoint="gwm jobs run", method="JOB")
DEADLINE = datetime(2026, 3, 10, 0, 30, tzinfo=UTC)
PUBLIC = "https://crm.example.test"


@dataclass
class Mailbox:
    port: int
    messages: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd calls it by name
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox(port)
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


class World:
    def __init__(self, owner: AsyncEngine, tenant: TenantRef) -> None:
        self.owner, self.tenant = owner, tenant

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

    async def project(self, *, manager: uuid.UUID | None = None, deadline: datetime | None = None,
                      status: str = "active") -> uuid.UUID:
        project_id = await self.scalar(
            "INSERT INTO opportunity_projects (tenant_id, project_name, external_source_id, external_opportunity_id,"
            " project_status, assigned_capture_manager, created_by)"
            " VALUES (:t, :n, :s, :k, :st, :m, :u) RETURNING id",
            n=f"Pursuit {uuid.uuid4().hex[:6]}", s=self.tenant.manual_source_id, k=uuid.uuid4().hex, st=status,
            m=manager, u=self.tenant.system_user_id,
        )
        if deadline is not None:
            await self.scalar(
                "INSERT INTO external_opportunity_data (tenant_id, opportunity_project_id, data_snapshot_timestamp,"
                " version_number, is_current_version, raw_json_data, response_due_date)"
                " VALUES (:t, :p, now(), 1, true, CAST(:raw AS jsonb), :d)",
                p=project_id, raw=json.dumps({"noticeId": "x"}), d=deadline,
            )
        assert isinstance(project_id, uuid.UUID)
        return project_id

    async def activity(self, project_id: uuid.UUID, *, assignee: uuid.UUID, due: datetime,
                       status: str = "pending", participants: tuple[uuid.UUID, ...] = ()) -> uuid.UUID:
        activity_id = await self.scalar(
            "INSERT INTO activities (tenant_id, entity_type, entity_id, activity_type, subject, due_date,"
            " assigned_to, status, created_by)"
            " VALUES (:t, 'opportunity_project', :p, 'meeting', 'Orals rehearsal', :d, :a, :s, :u) RETURNING id",
            p=project_id, d=due, a=assignee, s=status, u=self.tenant.system_user_id,
        )
        for user_id in participants:
            await self.scalar(
                "INSERT INTO activity_participants (tenant_id, activity_id, participant_type, participant_id,"
                " added_by) VALUES (:t, :a, 'user', :u, :by)",
                a=activity_id, u=user_id, by=self.tenant.system_user_id,
            )
        assert isinstance(activity_id, uuid.UUID)
        return activity_id

    async def notification(self, user_id: uuid.UUID, *, impact: str, title: str, read: bool = False,
                           project_id: uuid.UUID | None = None, created: datetime | None = None) -> uuid.UUID:
        found = await self.scalar(
            "INSERT INTO notifications (tenant_id, user_id, kind, impact_level, title, entity_type, entity_id,"
            " opportunity_project_id, read_at, created_at)"
            " VALUES (:t, :u, 'external_data_change', :i, :title, 'external_data_change', gen_random_uuid(), :p,"
            " CASE WHEN :r THEN now() END, coalesce(:c, now())) RETURNING id",
            u=user_id, i=impact, title=title, p=project_id, r=read, c=created,
        )
        assert isinstance(found, uuid.UUID)
        return found

    async def reminders(self) -> list[Any]:
        return await self.rows(
            "SELECT user_id, impact_level, title, entity_type, entity_id, due_at, opportunity_project_id"
            " FROM notifications WHERE kind = 'deadline_reminder' ORDER BY created_at, user_id, entity_type"
        )


@pytest.fixture
def world(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> World:
    return World(owner_engine, fresh_tenant)


async def _remind(world: World, now: datetime) -> int:
    return await send_reminders(world.owner, TEST_AUDIT_CHAIN, world.tenant.id, now=now, meta=META)


def test_days_are_counted_in_utc_calendar_days() -> None:
    assert days_away(DEADLINE, datetime(2026, 3, 8, 23, 59, tzinfo=UTC)) == 2
    assert days_away(DEADLINE, datetime(2026, 3, 9, 0, 1, tzinfo=UTC)) == 1
    # a clock in another zone counts by its UTC date: 00:30 on the 9th in Berlin is 23:30 UTC on the 8th
    assert days_away(DEADLINE, datetime(2026, 3, 9, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))) == 2


async def test_reminders_across_midnight_utc(world: World, owner_engine: AsyncEngine) -> None:
    manager = await make_login_user(owner_engine, world.tenant, roles=("Capture Manager",))
    assignee = await make_login_user(owner_engine, world.tenant, roles=("BD Analyst",))
    helper = await make_login_user(owner_engine, world.tenant, roles=("BD Analyst",))
    project_id = await world.project(manager=manager.id, deadline=DEADLINE)
    activity_id = await world.activity(project_id, assignee=assignee.id, due=DEADLINE, participants=(helper.id,))
    # neither a completed activity nor a closed project is reminded of
    await world.activity(project_id, assignee=assignee.id, due=DEADLINE, status="completed")
    await world.project(manager=manager.id, deadline=DEADLINE, status="won")

    # one minute before midnight UTC on the 8th: the deadline (00:30 on the 10th) is 2 days away
    before_midnight = datetime(2026, 3, 8, 23, 59, tzinfo=UTC)
    assert await _remind(world, before_midnight) == 5
    two = await world.reminders()
    # the activity reaches its assignee and participant; the project's response deadline reaches who
    # works on it: the capture manager and the people of its open activities
    assert sorted((r.user_id, r.entity_type, r.impact_level) for r in two) == sorted([
        (assignee.id, "activity", "high"), (helper.id, "activity", "high"),
        (manager.id, "opportunity_project", "high"), (assignee.id, "opportunity_project", "high"),
        (helper.id, "opportunity_project", "high"),
    ])
    assert {r.title for r in two if r.entity_type == "activity"} == {"Activity due in 2 days: Orals rehearsal"}
    assert all(r.due_at == DEADLINE and r.opportunity_project_id == project_id for r in two)
    assert {r.entity_id for r in two if r.entity_type == "activity"} == {activity_id}
    produced = len(two)
    # the same instant again, and later the same UTC day: nothing new
    assert await _remind(world, before_midnight) == 0
    assert await _remind(world, before_midnight - timedelta(hours=20)) == 0
    assert len(await world.reminders()) == produced

    # two minutes later it is the 9th in UTC: 1 day away, a critical reminder for each again
    after_midnight = before_midnight + timedelta(minutes=2)
    written = await _remind(world, after_midnight)
    assert written == produced
    one = (await world.reminders())[produced:]
    assert {r.impact_level for r in one} == {"critical"}
    assert {r.title for r in one if r.entity_type == "activity"} == {"Activity due in 1 day: Orals rehearsal"}
    assert await _remind(world, after_midnight + timedelta(hours=23)) == 0

    # 7 days before: medium; 6, 5, 4 and 3 days before: nothing
    assert await _remind(world, datetime(2026, 3, 3, 12, 0, tzinfo=UTC)) == produced
    for day in (4, 5, 6, 7):
        assert await _remind(world, datetime(2026, 3, day, 12, 0, tzinfo=UTC)) == 0
    sends = await world.rows("SELECT key, notification_id, item_count FROM notification_sends WHERE kind = 'reminder'")
    assert len(sends) == 3 * produced and all(s.notification_id is not None and s.item_count == 1 for s in sends)
    assert {s.key.rsplit(":", 1)[1] for s in sends} == {"7", "2", "1"}

    # a moved deadline is a new one: reminded again
    later = DEADLINE + timedelta(days=3)
    await world.scalar("UPDATE activities SET due_date = :d WHERE id = :a", d=later, a=activity_id)
    assert await _remind(world, later - timedelta(days=1)) == 2


async def test_two_runs_at_once_remind_once(world: World, owner_engine: AsyncEngine) -> None:
    assignee = await make_login_user(owner_engine, world.tenant, roles=("BD Analyst",))
    project_id = await world.project()
    await world.activity(project_id, assignee=assignee.id, due=DEADLINE)
    now = DEADLINE - timedelta(days=2)
    results = await asyncio.gather(*(_remind(world, now) for _ in range(3)))
    assert sorted(results) == [0, 0, 1]
    assert len(await world.reminders()) == 1


def _mailer(port: int) -> SmtpMailer:
    return SmtpMailer("127.0.0.1", port, "GWM CRM <no-reply@gwm.example>", timeout=5)


async def test_the_digest_goes_to_the_right_users_once_with_two_runs_at_once(
    world: World, owner_engine: AsyncEngine, mailbox: Mailbox
) -> None:
    reader = await make_login_user(owner_engine, world.tenant, roles=("Capture Manager",), first_name="Ada")
    opted_out = await make_login_user(owner_engine, world.tenant, roles=("Capture Manager",))
    quiet = await make_login_user(owner_engine, world.tenant, roles=("Capture Manager",))
    locked_out = await make_login_user(owner_engine, world.tenant, roles=())
    project_id = await world.project(manager=reader.id)
    high = await world.notification(reader.id, impact="high", title="Amended notice (high): Hull maintenance",
                                    project_id=project_id)
    critical = await world.notification(reader.id, impact="critical", title="Cancelled notice (critical): Radar")
    await world.notification(reader.id, impact="medium", title="Updated notice (medium): not in a digest")
    await world.notification(reader.id, impact="critical", title="Already read", read=True)
    await world.notification(opted_out.id, impact="critical", title="Opted out")
    await world.scalar("INSERT INTO notification_preferences (tenant_id, user_id, digest_enabled)"
                       " VALUES (:t, :u, false)", u=opted_out.id)
    await world.notification(quiet.id, impact="low", title="Low only")
    # an item about a project the user may not read is left out (and with nothing else, no digest)
    await world.notification(locked_out.id, impact="critical", title="Not yours any more", project_id=project_id)

    now = datetime(2026, 3, 9, 6, 0, tzinfo=UTC)
    mailers = [_mailer(mailbox.port), _mailer(mailbox.port)]
    try:
        runs = await asyncio.gather(*(
            inbox_tenant(owner_engine, TEST_AUDIT_CHAIN, world.tenant.id, now=now, meta=META, mailer=m,
                         public_url=PUBLIC, retention_days=90)
            for m in mailers
        ))
        assert sorted(r.digests_sent for r in runs) == [0, 1]
        (message,) = mailbox.messages
        assert message.rcpt_tos == [reader.email]
        body = message.content.decode()
        assert "Subject: GWM CRM: 2 unread high and critical notifications" in body
        assert "[CRITICAL] Cancelled notice (critical): Radar" in body and f"{PUBLIC}/notifications/{critical}" in body
        assert "[HIGH] Amended notice (high): Hull maintenance" in body and f"{PUBLIC}/notifications/{high}" in body
        assert body.index("Radar") < body.index("Hull maintenance")  # critical first
        for absent in ("not in a digest", "Already read", "Opted out", "Low only", "Not yours any more"):
            assert absent not in body
        (sent,) = await world.rows("SELECT user_id, key, item_count FROM notification_sends WHERE kind = 'digest'")
        assert (sent.user_id, sent.key, sent.item_count) == (reader.id, "2026-03-09", 2)

        # later the same UTC day: nothing; the next day, still unread: the next digest
        assert await send_digests(owner_engine, TEST_AUDIT_CHAIN, world.tenant.id, now=now + timedelta(hours=17),
                                  meta=META, mailer=mailers[0], public_url=PUBLIC) == 0
        assert await send_digests(owner_engine, TEST_AUDIT_CHAIN, world.tenant.id, now=now + timedelta(days=1),
                                  meta=META, mailer=mailers[0], public_url=PUBLIC) == 1
        assert [m.rcpt_tos for m in mailbox.messages] == [[reader.email], [reader.email]]
    finally:
        for m in mailers:
            await m.aclose()


async def test_a_failed_delivery_is_tried_again(world: World, owner_engine: AsyncEngine, mailbox: Mailbox) -> None:
    reader = await make_login_user(owner_engine, world.tenant, roles=("Capture Manager",))
    await world.notification(reader.id, impact="critical", title="Cancelled notice (critical): Sonar")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    now = datetime(2026, 3, 9, 6, 0, tzinfo=UTC)
    broken, working = _mailer(closed), _mailer(mailbox.port)
    try:
        assert await send_digests(owner_engine, TEST_AUDIT_CHAIN, world.tenant.id, now=now, meta=META,
                                  mailer=broken, public_url=PUBLIC) == 0
        assert await world.rows("SELECT 1 FROM notification_sends WHERE kind = 'digest'") == []
        assert await send_digests(owner_engine, TEST_AUDIT_CHAIN, world.tenant.id, now=now, meta=META,
                                  mailer=working, public_url=PUBLIC) == 1
        assert [m.rcpt_tos for m in mailbox.messages] == [[reader.email]]
    finally:
        await broken.aclose()
        await working.aclose()


async def test_old_items_are_purged(world: World, owner_engine: AsyncEngine) -> None:
    user = await make_login_user(owner_engine, world.tenant, roles=("Viewer",))
    now = datetime.now(UTC)
    old = await world.notification(user.id, impact="low", title="Old", created=now - timedelta(days=31))
    kept = await world.notification(user.id, impact="low", title="Recent", created=now - timedelta(days=29))
    run = await inbox_tenant(owner_engine, TEST_AUDIT_CHAIN, world.tenant.id, now=now, meta=META, mailer=None,
                             public_url=PUBLIC, retention_days=30)
    assert run.notifications_purged == 1 and run.digests_sent == 0
    assert {r.id for r in await world.rows("SELECT id FROM notifications")} == {kept}
    assert old != kept
