"""Job functions for the worker tests' `gwm sync` processes (`--jobs tests.sync.worker_jobs:JOBS`).

They talk to the test through files under $GWM_TEST_SYNC_DIR, so several processes can be watched:

- mode "barrier" (default): a job marks itself in flight (`inflight/<job id>`, created exclusively:
  finding it there already means two workers run one job at once and is written to `violations/`),
  waits until another process has started a job too (a barrier across processes, at most 60 s),
  reserves one call of the shared key's budget (`calls/<job id>.<pid>.ok|refused`), holds the job a
  moment, and ends it (`done/<job id>.<pid>`): done, or deferred to the budget's next window;
- mode "hang": the job marks itself (`hanging/<job id>`) and never ends (the test kills the process).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sync.schedule import JobKind, JobOutcome
from sync.worker import JobContext, JobFunction

__all__ = ["JOBS", "SHARED_KEY"]

#: The API key every job spends its call on (one budget row).
SHARED_KEY = "shared-test-key"


def _dir(name: str) -> Path:
    path = Path(os.environ["GWM_TEST_SYNC_DIR"]) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


async def _barrier() -> None:
    started = _dir("started")
    (started / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(list(started.iterdir())) >= 2:
            return
        await asyncio.sleep(0.05)


async def _job(ctx: JobContext) -> JobOutcome:
    job_id = str(ctx.job.job_id)
    if os.environ.get("GWM_TEST_SYNC_MODE") == "hang":
        (_dir("hanging") / job_id).touch()
        await asyncio.sleep(3600)
    pid = os.getpid()
    try:
        fd = os.open(_dir("inflight") / job_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
    except FileExistsError:
        (_dir("violations") / f"{job_id}.{pid}").touch()
        return JobOutcome.failed("ran twice at once")
    try:
        await _barrier()
        budget = ctx.budget(SHARED_KEY)
        reserved = await budget.reserve(ctx.now())
        (_dir("calls") / f"{job_id}.{pid}.{'ok' if reserved else 'refused'}").touch()
        await asyncio.sleep(0.2)
    finally:
        (_dir("inflight") / job_id).unlink()
        (_dir("done") / f"{job_id}.{pid}").touch()
    if not reserved:
        return JobOutcome.deferred(budget.next_window(ctx.now()), key_fingerprint=budget.fingerprint)
    return JobOutcome.done(key_fingerprint=budget.fingerprint)


JOBS: dict[JobKind, JobFunction] = {kind: _job for kind in JobKind}
