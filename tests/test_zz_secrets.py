"""No password, token, key, TOTP secret or recovery code used anywhere in the suite reached an
audit row or a log line. Runs last (tests/conftest.py orders it), after every test that used one."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from tests.support.secrets import LOG_LINES, SECRETS


async def test_no_secret_reached_an_audit_row_or_a_log_line(owner_engine: AsyncEngine) -> None:
    if len(SECRETS) < 20:
        pytest.fail(f"only {len(SECRETS)} secrets were collected: run the whole suite (the check needs its data)")
    async with owner_engine.connect() as conn:
        tenants = (await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars().all()
        await conn.rollback()
    dumps: list[str] = []
    for tenant_id in tenants:
        async with owner_engine.connect() as conn:
            await set_tenant(conn, tenant_id)
            rows = (await conn.execute(text("SELECT * FROM audit_logs"))).all()
            dumps.extend(repr(tuple(row)) for row in rows)
            await conn.rollback()
    assert len(dumps) > 100, "the suite writes many audit rows; too few means this check looks at nothing"
    audit_text = "\n".join(dumps)
    log_text = "\n".join(LOG_LINES)
    leaked_to_audit = sorted(s for s in SECRETS if s in audit_text)
    leaked_to_logs = sorted(s for s in SECRETS if s in log_text)
    where = [line[:300] for line in dumps if any(s in line for s in leaked_to_audit)][:3]
    assert leaked_to_audit == [], f"{len(leaked_to_audit)} secret(s) found in audit rows: {where}"
    assert leaked_to_logs == [], f"{len(leaked_to_logs)} secret(s) found in log lines"
