"""Retention run by `gwm jobs run` (server/retention.py): ended sessions and old integration logs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from server.retention import PURGED_ACTION, purge_tenant, run_retention
from server.settings import Settings, SettingsError
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_CHAIN, TEST_AUDIT_KEYS, TenantRef
from tests.support.factories import make

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)


async def _sessions(owner_engine: AsyncEngine, tenant: TenantRef) -> dict[str, uuid.UUID]:
    """One session per case, named by what retention must do with it (90 days)."""
    cases: dict[str, dict[str, Any]] = {
        "live": {"is_active": True, "expires_at": NOW + DAY, "last_activity_at": NOW},
        "terminated_long_ago": {"is_active": False, "terminated_at": NOW - 100 * DAY,
                                "last_activity_at": NOW - 100 * DAY, "expires_at": NOW - 99 * DAY},
        "terminated_recently": {"is_active": False, "terminated_at": NOW - 10 * DAY,
                                "last_activity_at": NOW - 10 * DAY, "expires_at": NOW + DAY},
        "ended_without_time": {"is_active": False, "last_activity_at": NOW - 95 * DAY},
        "expired_long_ago": {"is_active": True, "expires_at": NOW - 91 * DAY, "last_activity_at": NOW - 80 * DAY},
        "expired_recently": {"is_active": True, "expires_at": NOW - 10 * DAY, "last_activity_at": NOW - 11 * DAY},
        "unused_without_expiry": {"is_active": True, "expires_at": None, "last_activity_at": NOW - 200 * DAY},
    }
    ids: dict[str, uuid.UUID] = {}
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        user = await make(conn, "users", tenant)
        for name, columns in cases.items():
            ids[name] = (await make(conn, "user_sessions", tenant, {"users": user.id}, **columns)).id
    return ids


async def _logs(owner_engine: AsyncEngine, tenant: TenantRef) -> dict[str, uuid.UUID]:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        return {
            name: (await make(conn, "api_integration_logs", tenant, api_call_timestamp=when)).id
            for name, when in (("old", NOW - 91 * DAY), ("recent", NOW - 89 * DAY), ("today", NOW))
        }


async def _ids(owner_engine: AsyncEngine, tenant: TenantRef, table: str) -> set[uuid.UUID]:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        return set((await conn.execute(text(f"SELECT id FROM {table}"))).scalars())


async def _events(owner_engine: AsyncEngine, tenant: TenantRef) -> list[Any]:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        return list((await conn.execute(
            text("SELECT after_values, operation_description, user_id, entity_id FROM audit_logs "
                 "WHERE action_type = :a ORDER BY seq"), {"a": PURGED_ACTION}
        )).all())


async def test_ended_sessions_and_old_integration_logs_go_and_the_purge_is_audited(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    sessions = await _sessions(owner_engine, fresh_tenant)
    logs = await _logs(owner_engine, fresh_tenant)
    deleted = await purge_tenant(owner_engine, TEST_AUDIT_CHAIN, fresh_tenant.id, now=NOW,
                                 session_days=90, integration_log_days=90)
    assert deleted == (4, 1)
    assert await _ids(owner_engine, fresh_tenant, "user_sessions") == {
        sessions["live"], sessions["terminated_recently"], sessions["expired_recently"]
    }
    assert await _ids(owner_engine, fresh_tenant, "api_integration_logs") == {logs["recent"], logs["today"]}

    (event,) = await _events(owner_engine, fresh_tenant)
    assert event.entity_id == fresh_tenant.id and event.user_id == fresh_tenant.system_user_id
    details = event.after_values
    assert details["user_sessions"]["deleted"] == 4 and details["user_sessions"]["retention_days"] == 90
    assert details["api_integration_logs"] == {
        "deleted": 1, "before": (NOW - 90 * DAY).isoformat(), "retention_days": 90
    }
    assert event.operation_description.startswith(
        f"gwm jobs run (retention): 4 session(s) ended before {(NOW - 90 * DAY).isoformat()} and 1 integration log(s)"
    )

    # Nothing left to delete: no audit row either.
    assert await purge_tenant(owner_engine, TEST_AUDIT_CHAIN, fresh_tenant.id, now=NOW,
                              session_days=90, integration_log_days=90) == (0, 0)
    assert len(await _events(owner_engine, fresh_tenant)) == 1

    # A shorter period reaches further; a live session is never deleted, however short.
    assert await purge_tenant(owner_engine, TEST_AUDIT_CHAIN, fresh_tenant.id, now=NOW,
                              session_days=1, integration_log_days=1) == (2, 1)
    assert await _ids(owner_engine, fresh_tenant, "user_sessions") == {sessions["live"]}
    assert await _ids(owner_engine, fresh_tenant, "api_integration_logs") == {logs["today"]}


async def test_run_retention_visits_every_tenant_and_leaves_others_data_alone(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, tenant_a: TenantRef
) -> None:
    await _sessions(owner_engine, fresh_tenant)
    await _logs(owner_engine, fresh_tenant)
    before_a = await _ids(owner_engine, tenant_a, "user_sessions")
    report = await run_retention(owner_engine, TEST_AUDIT_CHAIN, session_days=90, integration_log_days=90, now=NOW)
    assert report.tenants >= 2 and report.failed == []
    assert report.sessions_purged >= 4 and report.integration_logs_purged >= 1
    assert str(report).startswith(f"retention over {report.tenants} tenant(s): ended sessions purged ")
    assert await _ids(owner_engine, tenant_a, "user_sessions") <= before_a


def test_retention_settings_have_defaults_and_bounds() -> None:
    base = {"GWM_SECRET_KEYS": "k1:" + "A" * 43 + "="}
    settings = Settings.from_env(base)
    assert (settings.session_retention_days, settings.integration_log_retention_days) == (90, 90)
    settings = Settings.from_env({**base, "GWM_SESSION_RETENTION_DAYS": "30",
                                  "GWM_INTEGRATION_LOG_RETENTION_DAYS": "400"})
    assert (settings.session_retention_days, settings.integration_log_retention_days) == (30, 400)
    with pytest.raises(SettingsError, match="GWM_SESSION_RETENTION_DAYS must be at least 1"):
        Settings.from_env({**base, "GWM_SESSION_RETENTION_DAYS": "0"})
    with pytest.raises(SettingsError, match="GWM_INTEGRATION_LOG_RETENTION_DAYS"):
        Settings.from_env({**base, "GWM_INTEGRATION_LOG_RETENTION_DAYS": "soon"})


async def test_gwm_jobs_run_applies_the_configured_periods(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    sessions = await _sessions(owner_engine, fresh_tenant)
    logs = await _logs(owner_engine, fresh_tenant)
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    env.update(
        DATABASE_URL=database.owner_url,
        GWM_APP_DATABASE_URL=database.app_url,
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=",
        GWM_AUDIT_KEYS=TEST_AUDIT_KEYS,
        GWM_SESSION_RETENTION_DAYS="1",
        GWM_INTEGRATION_LOG_RETENTION_DAYS="95",
    )
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "server.cli", "jobs", "run"],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "retention over " in result.stdout and "ended sessions purged " in result.stdout
    assert await _ids(owner_engine, fresh_tenant, "user_sessions") == {sessions["live"]}
    assert await _ids(owner_engine, fresh_tenant, "api_integration_logs") == {logs["old"], logs["recent"],
                                                                              logs["today"]}
