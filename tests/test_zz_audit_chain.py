"""Every audit row the suite wrote, by any code path, entered through the audit chain: `gwm audit
verify` over every tenant of the session's database passes. Runs last (tests/conftest.py orders it),
after every test that wrote audit rows (all with the session's key, tests/support/db.py)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Database
from tests.support.db import TEST_AUDIT_KEYS


async def test_every_audit_row_of_the_run_verifies(database: Database, owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as conn:
        tenants = (await conn.execute(text("SELECT count(*) FROM gwm_tenant_ids()"))).scalar_one()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    env.update(DATABASE_URL=database.owner_url, GWM_APP_DATABASE_URL=database.app_url, GWM_AUDIT_KEYS=TEST_AUDIT_KEYS)
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "server.cli", "audit", "verify"],
        env=env, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=240,
    )
    failures = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert result.returncode == 0, "\n".join(failures[:10]) or result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 * tenants + 1
    summary = re.fullmatch(r"verified (\d+) tenant\(s\), (\d+) audit rows: ok", lines[-1])
    assert summary is not None and int(summary.group(1)) == tenants, lines[-1]
