"""`expect_audit`: what a test calls to show a mutation's audit trail (and the meta-test looks for).

A test that shows the audit rows of a mutation carries `@pytest.mark.audits("<mutation field>")`
and calls `expect_audit(...)` for it; tests/writes/test_audit_coverage.py fails when a field of the
served schema's Mutation type has no such test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.audit_trail import AUDITED, REDACTED
from models.db import set_tenant

__all__ = ["expect_audit"]


async def expect_audit(
    engine: AsyncEngine,
    tenant_id: uuid.UUID,
    mutation: str,
    *,
    action: str,
    entity_id: uuid.UUID | str,
    history: Iterable[str] | None = None,
    secrets: Iterable[str] = (),
    user_id: uuid.UUID | None = None,
    operational: bool = False,
    rows_in_request: int | None = None,
) -> tuple[Any, list[Any]]:
    """The one audit_logs row `mutation` wrote about `entity_id` under `action`, and its history.

    `history`: the fields whose change_history rows the change must have written (None: the table
    is not audited by the flush hook, so it must have none). `secrets`: fields that must show as
    changed but only as "[redacted]". `user_id`: the actor the rows must name. `operational`: the
    change touched only operational columns of an audited row (`OPERATIONAL_COLUMNS`, e.g. an
    unlock), so the hook writes nothing and the event row written in its transaction is the
    evidence; it has no history of its own. `rows_in_request`: how many audit_logs rows the
    request wrote in all (one per changed row: 1 for a mutation changing one row).
    """
    entity = uuid.UUID(str(entity_id))
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        logs = (
            await conn.execute(
                text(
                    "SELECT * FROM audit_logs WHERE tenant_id = :t AND entity_id = :e AND action_type = :a"
                    " AND (operation_description LIKE :via OR operation_description LIKE :op) ORDER BY seq"
                ),
                {"t": tenant_id, "e": entity, "a": action, "via": f"{mutation}:%", "op": f"{mutation} (%"},
            )
        ).all()
        in_request = await conn.scalar(
            text("SELECT count(*) FROM audit_logs WHERE tenant_id = :t AND request_id ="
                 " (SELECT request_id FROM audit_logs WHERE tenant_id = :t AND entity_id = :e AND action_type = :a"
                 " ORDER BY seq DESC LIMIT 1)"),
            {"t": tenant_id, "e": entity, "a": action},
        )
        changes = (
            await conn.execute(
                text("SELECT * FROM change_history WHERE tenant_id = :t AND entity_id = :e ORDER BY seq"),
                {"t": tenant_id, "e": entity},
            )
        ).all()
        await conn.rollback()
    assert len(logs) == 1, f"{mutation}: expected one {action} audit row for {entity}, found {len(logs)}"
    (log,) = logs
    if rows_in_request is not None:
        assert in_request == rows_in_request, f"{mutation}: {in_request} audit rows in its request"
    assert log.access_granted is True and log.request_id
    if user_id is not None:
        assert log.user_id == user_id
    hooked = log.entity_type in {entity_type.value for entity_type in AUDITED.values()}
    if operational:
        assert hooked and history is None and log.changed_fields is None, f"{mutation}: not an operational event"
        return log, []
    assert hooked == (history is not None), (
        f"{mutation}: {log.entity_type} is {'' if hooked else 'not '}audited by the flush hook: "
        f"{'name the change_history fields it must have' if hooked else 'pass history=None'}"
    )
    if history is None:
        assert changes == [], f"{mutation}: {action} is an event of an unaudited table, yet has history"
        return log, []
    expected = set(history)
    # The history of this change: rows written by the same actor, about the fields it changed,
    # sharing one change batch.
    ours = [c for c in changes if c.field_name in set(log.changed_fields or [])]
    batches = {c.change_batch_id for c in ours}
    assert len(batches) >= 1, f"{mutation}: no change_history rows for {entity}"
    latest = [c for c in ours if c.change_batch_id == ours[-1].change_batch_id]
    found = {c.field_name for c in latest}
    assert expected <= found, f"{mutation}: history fields {sorted(found)} lack {sorted(expected - found)}"
    assert {c.changed_by_user_id for c in latest} == {log.user_id}
    for name in secrets:
        assert name in log.changed_fields
        for values in (log.before_values or {}, log.after_values or {}):
            assert values.get(name) in (None, REDACTED), f"{mutation}: {name} recorded with its value"
        for change in latest:
            if change.field_name == name:
                assert change.old_value in (None, REDACTED) and change.new_value in (None, REDACTED)
    return log, latest
