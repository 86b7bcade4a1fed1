"""The sync worker: `gwm sync` processes sharing one database, a worker killed mid-job, graceful stop,
failures recorded, `gwm sync budget` and `gwm serve --with-sync` (real processes where it matters)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import text

from auth.crypto import SecretBox
from auth.outbound import OutboundPolicy
from models.db import set_tenant
from resolvers.external_data.mutations import seal_credentials
from sync.schedule import (
    JobKind,
    JobOutcome,
    budget_state,
    claim_jobs,
    fingerprint_key,
    key_fingerprint,
    set_budget_limits,
)
from sync.worker import JobContext, SyncServices, Worker
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.sync import schedule_support
from tests.sync.schedule_support import SECRET_KEYS, SyncDb, add_polling, add_project, add_source, new_tenant
from tests.sync.worker_jobs import SHARED_KEY

sync_db = schedule_support.sync_db  # the fixture: a database of this module's own

ROOT = Path(__file__).resolve().parents[2]
GWM = [sys.executable, "-m", "server.cli"]
FAR = datetime(2090, 1, 1, tzinfo=UTC)


def _env(db: SyncDb, work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    env.update(db.env(), GWM_TEST_SYNC_DIR=str(work), GWM_LOG_LEVEL="warning", **extra)
    return env


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _files(work: Path, name: str) -> list[str]:
    folder = work / name
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def _drain(db: SyncDb, at: datetime = FAR) -> None:
    """Lease away everything due at `at` from earlier tests (until long after any real or test time)."""
    while await claim_jobs(db.app, worker="drain", now=at, lease=timedelta(days=3650), max_jobs=100):
        pass


def _services(db: SyncDb) -> SyncServices:
    return SyncServices(
        engine=db.app,
        chain=TEST_AUDIT_CHAIN,
        secret_box=SecretBox.from_setting(SECRET_KEYS),
        fingerprint_key=fingerprint_key(SECRET_KEYS),
        outbound=OutboundPolicy.from_setting(None),
    )


async def _tenant_with_refreshes(db: SyncDb, count: int) -> tuple[TenantRef, uuid.UUID, list[uuid.UUID]]:
    t = await new_tenant(db)
    source = await add_source(db.owner, t)
    configs = [await add_polling(db.owner, t, await add_project(db.owner, t, source), source) for _ in range(count)]
    return t, source, configs


async def test_two_gwm_sync_processes_never_run_one_job_at_once_and_stay_within_the_budget(
    sync_db: SyncDb, tmp_path: Path
) -> None:
    await _drain(sync_db)
    t, source, configs = await _tenant_with_refreshes(sync_db, 12)
    fingerprint = key_fingerprint(fingerprint_key(SECRET_KEYS), SHARED_KEY)
    limit = 9  # 13 jobs (12 refreshes and the source's search) each want one call: the budget's edge
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        await set_budget_limits(conn, t.id, fingerprint, daily_limit=limit, hourly_limit=None)

    command = [*GWM, "sync", "--once", "--lease-seconds", "30", "--jobs", "tests.sync.worker_jobs:JOBS"]
    procs = [_start(command, _env(sync_db, tmp_path)) for _ in range(2)]
    outputs = []
    for proc in procs:
        out, _ = await asyncio.to_thread(proc.communicate, timeout=180)
        outputs.append(out.decode())
        assert proc.returncode == 0, out.decode()

    assert _files(tmp_path, "violations") == []
    assert len(_files(tmp_path, "started")) == 2  # both processes ran jobs, meeting at the barrier
    done = _files(tmp_path, "done")
    ran = [name.split(".")[0] for name in done]
    assert len(ran) == len(set(ran)) == 13  # every job exactly once: 12 refreshes and the source's search
    assert {str(c) for c in configs} <= set(ran)
    assert len({name.split(".")[1] for name in done}) == 2  # shared between the two processes
    calls = _files(tmp_path, "calls")
    assert sum(name.endswith(".ok") for name in calls) == limit
    assert sum(name.endswith(".refused") for name in calls) == 13 - limit
    assert sum(int(o.split(" sync job")[0].split()[-1]) for o in outputs) == 13
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        assert (await budget_state(conn, t.id, fingerprint, datetime.now(UTC))).used_today == limit
        leased = await conn.scalar(text("SELECT count(*) FROM polling_configurations WHERE claimed_by IS NOT NULL"))
        polled = await conn.scalar(
            text("SELECT count(*) FROM polling_configurations WHERE last_poll_timestamp IS NOT NULL")
        )
        search = (
            await conn.execute(text("SELECT * FROM sync_schedules WHERE external_source_id = :s"), {"s": source})
        ).one()
    assert (leased, polled) == (0, 12)
    assert search.claimed_by is None and search.last_attempt_at is not None


async def _leases(db: SyncDb, t: TenantRef) -> dict[uuid.UUID, datetime]:
    async with db.app.begin() as conn:
        await set_tenant(conn, t.id)
        rows = await conn.execute(
            text(
                "SELECT id, claimed_until FROM sync_schedules WHERE claimed_by IS NOT NULL"
                " UNION ALL SELECT id, claimed_until FROM polling_configurations WHERE claimed_by IS NOT NULL"
            )
        )
        return {row.id: row.claimed_until for row in rows}


async def test_a_job_whose_worker_was_killed_is_taken_by_another_after_its_lease(
    sync_db: SyncDb, tmp_path: Path
) -> None:
    await _drain(sync_db)
    t, source, (config,) = await _tenant_with_refreshes(sync_db, 1)
    proc = _start(
        [*GWM, "sync", "--concurrency", "2", "--lease-seconds", "10", "--jobs", "tests.sync.worker_jobs:JOBS"],
        _env(sync_db, tmp_path, GWM_TEST_SYNC_MODE="hang"),
    )
    try:
        deadline = time.monotonic() + 60
        while len(_files(tmp_path, "hanging")) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            await asyncio.sleep(0.1)
        hanging = set(_files(tmp_path, "hanging"))
        assert str(config) in hanging and len(hanging) == 2  # the refresh and the source's search, both mid-job
        first = await _leases(sync_db, t)
        await asyncio.sleep(4.5)  # the lease is renewed while the job runs (every third of it)
        assert all(until > first[job] for job, until in (await _leases(sync_db, t)).items())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    killed_at = datetime.now(UTC)

    seen: list[uuid.UUID] = []

    async def finish(ctx: JobContext) -> JobOutcome:
        seen.append(ctx.job.job_id)
        return JobOutcome.done()

    # Still leased right after the kill (its last renewal was at most a second before)...
    assert await claim_jobs(sync_db.app, worker="early", now=killed_at, max_jobs=10) == []
    # ...and taken once the lease has run out.
    clock_offset = timedelta(seconds=11)
    worker = Worker(_services(sync_db), dict.fromkeys(JobKind, finish), clock=lambda: datetime.now(UTC) + clock_offset)
    assert await worker.run_once() == 1
    assert await worker.run_once() == 1
    assert str(config) in {str(j) for j in seen} and len(seen) == 2
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        refresh = (await conn.execute(text("SELECT * FROM polling_configurations WHERE id = :i"), {"i": config})).one()
        search = (
            await conn.execute(text("SELECT * FROM sync_schedules WHERE external_source_id = :s"), {"s": source})
        ).one()
    assert refresh.claimed_by is None and refresh.last_poll_timestamp > killed_at
    assert search.claimed_by is None and search.last_success_at > killed_at


async def test_a_failing_job_is_recorded_and_backs_off(sync_db: SyncDb) -> None:
    now = FAR + timedelta(days=400)
    await _drain(sync_db, now)
    t = await new_tenant(sync_db)
    source = await add_source(sync_db.owner, t)

    async def broken(ctx: JobContext) -> JobOutcome:
        raise RuntimeError("the source answered nonsense")

    worker = Worker(_services(sync_db), {JobKind.SOURCE_SEARCH: broken}, clock=lambda: now)
    assert await worker.run_once() == 1
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        row = (
            await conn.execute(text("SELECT * FROM sync_schedules WHERE external_source_id = :s"), {"s": source})
        ).one()
    assert row.consecutive_errors == 1
    assert row.last_error_message == "RuntimeError: the source answered nonsense"
    assert row.next_poll_at == now + timedelta(minutes=5) and row.claimed_by is None
    assert await worker.run_once() == 0  # backing off: nothing due


async def test_stop_lets_the_job_under_way_finish_and_release(sync_db: SyncDb) -> None:
    now = FAR + timedelta(days=500)
    await _drain(sync_db, now)
    t = await new_tenant(sync_db)
    source = await add_source(sync_db.owner, t)
    started, proceed = asyncio.Event(), asyncio.Event()

    async def slow(ctx: JobContext) -> JobOutcome:
        started.set()
        await proceed.wait()
        return JobOutcome.done()

    worker = Worker(_services(sync_db), {JobKind.SOURCE_SEARCH: slow}, clock=lambda: now, idle_seconds=0.05)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 30)
    worker.stop()
    await asyncio.sleep(0.1)
    assert not task.done()  # still finishing its job
    proceed.set()
    await asyncio.wait_for(task, 30)
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        row = (
            await conn.execute(text("SELECT * FROM sync_schedules WHERE external_source_id = :s"), {"s": source})
        ).one()
    assert (row.claimed_by, row.last_success_at, row.next_poll_at) == (None, now, now + timedelta(hours=6))


async def test_gwm_sync_budget_sets_a_sources_key_limits(sync_db: SyncDb, tmp_path: Path) -> None:
    t = await new_tenant(sync_db)
    source = await add_source(sync_db.owner, t)
    sealed = seal_credentials(SecretBox.from_setting(SECRET_KEYS), t.id, source, {"api_key": "role-key"})
    async with sync_db.owner.begin() as conn:
        await set_tenant(conn, t.id)
        await conn.execute(
            text("UPDATE external_opportunity_sources SET api_credentials_encrypted = CAST(:c AS jsonb) WHERE id = :i"),
            {"c": json.dumps(sealed), "i": source},
        )
    command = [*GWM, "sync", "budget", "--tenant", t.subdomain, "--source", str(source), "--daily", "1000"]
    result = await asyncio.to_thread(
        subprocess.run, command, env=_env(sync_db, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "1000 calls a day, no hourly limit" in result.stdout
    fingerprint = key_fingerprint(fingerprint_key(SECRET_KEYS), "role-key")
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        state = await budget_state(conn, t.id, fingerprint, datetime.now(UTC))
    assert (state.daily_limit, state.hourly_limit) == (1000, None)

    missing = [*GWM, "sync", "budget", "--tenant", t.subdomain, "--source", str(uuid.uuid4()), "--daily", "5"]
    result = await asyncio.to_thread(
        subprocess.run, missing, env=_env(sync_db, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "no source" in result.stderr
    keyless = [*GWM, "sync", "budget", "--tenant", t.subdomain, "--source", str(t.manual_source_id), "--daily", "5"]
    result = await asyncio.to_thread(
        subprocess.run, keyless, env=_env(sync_db, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "no api_key" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_with_sync_runs_a_worker_beside_the_api(sync_db: SyncDb, tmp_path: Path) -> None:
    work = tmp_path
    await _drain(sync_db)
    t, _, (config,) = await _tenant_with_refreshes(sync_db, 1)
    port = _free_port()
    proc = _start(
        [*GWM, "serve", "--with-sync", "--no-migrate", "--port", str(port), "--jobs", "tests.sync.worker_jobs:JOBS"],
        _env(sync_db, work, GWM_TEST_SYNC_MODE="hang"),
    )
    try:
        deadline = time.monotonic() + 60
        healthy = False
        while time.monotonic() < deadline and not (healthy and _files(work, "hanging")):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                healthy = (
                    await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/healthz", timeout=1)
                ).status_code == 200
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        assert healthy and len(_files(work, "hanging")) == 1  # the API answers while the worker runs a job
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        leased = await conn.scalar(text("SELECT count(*) FROM sync_schedules WHERE claimed_by IS NOT NULL"))
        leased += await conn.scalar(
            text("SELECT count(*) FROM polling_configurations WHERE id = :i AND claimed_by IS NOT NULL"), {"i": config}
        )
    assert leased == 1


async def test_serve_with_sync_refuses_several_server_processes(sync_db: SyncDb, tmp_path: Path) -> None:
    command = [*GWM, "serve", "--with-sync", "--workers", "2", "--no-migrate"]
    result = await asyncio.to_thread(
        subprocess.run, command, env=_env(sync_db, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "--with-sync runs one worker" in result.stderr


async def test_gwm_sync_refuses_a_job_table_it_cannot_load(sync_db: SyncDb, tmp_path: Path) -> None:
    for spec, message in (("nowhere", "module:attribute"), ("tests.sync.nothing:JOBS", "cannot load")):
        result = await asyncio.to_thread(
            subprocess.run,
            [*GWM, "sync", "--once", "--jobs", spec],
            env=_env(sync_db, tmp_path),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2 and message in result.stderr, result.stderr


async def test_gwm_sync_stops_on_sigterm(sync_db: SyncDb, tmp_path: Path) -> None:
    await _drain(sync_db)
    proc = _start(
        [*GWM, "sync", "--idle-seconds", "0.2", "--jobs", "tests.sync.worker_jobs:JOBS"], _env(sync_db, tmp_path)
    )
    try:
        deadline = time.monotonic() + 60
        connected = 0
        while not connected and time.monotonic() < deadline:  # claiming (its signal handlers are set by then)
            assert proc.poll() is None
            async with sync_db.owner.connect() as conn:
                connected = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gwm-sync'"
                        " AND datname = current_database()"
                    )
                )
            await asyncio.sleep(0.1)
        assert connected
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    assert code == 0
