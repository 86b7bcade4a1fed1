"""Idempotency keys in the database (models/idempotency.py): claim, replay, reuse, conflict, expiry.

Committed data under a fresh tenant, on the server's role: a retry comes in a transaction of its
own, as it would from a second request. The created entity here is an organization inserted in
the claiming transaction; the mutations' own tests go through GraphQL.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.audit import RequestMeta
from models.db import set_tenant
from models.idempotency import (
    KEY_MAX_LENGTH,
    LOCK_CLASS,
    RETENTION,
    IdempotencyClaim,
    IdempotencyInProgress,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    claim,
    lock_scope,
    purge_expired,
    request_hash,
)
from models.side_effects import SideEffectWriter
from server.jobs import NightlyReport, TenantSweep, sweep_tenant
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef, create_tenant
from tests.support.http import make_login_user

MUTATION = "organizationCreate"


@asynccontextmanager
async def _tx(engine: AsyncEngine, tenant: TenantRef) -> AsyncIterator[AsyncConnection]:
    async with engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        yield conn


async def _claim(
    conn: AsyncConnection, tenant: TenantRef, user_id: uuid.UUID, key: str, name: str, *, mutation: str = MUTATION
) -> IdempotencyClaim:
    return await claim(
        conn,
        tenant_id=tenant.id,
        user_id=user_id,
        key=key,
        mutation=mutation,
        request_hash=request_hash(mutation, {"name": name}),
    )


async def _create(
    engine: AsyncEngine, tenant: TenantRef, user_id: uuid.UUID, key: str, name: str, *, mutation: str = MUTATION
) -> tuple[uuid.UUID, bool]:
    """What a create mutation does: (the organization's id, whether this call created it)."""
    async with _tx(engine, tenant) as conn:
        claimed = await _claim(conn, tenant, user_id, key, name, mutation=mutation)
        if claimed.replay is not None:
            assert claimed.replay.entity_type == "organization"
            return claimed.replay.entity_id, False
        org_id = await _insert_org(conn, tenant, user_id, name)
        await claimed.record("organization", org_id)
        return org_id, True


async def _insert_org(conn: AsyncConnection, tenant: TenantRef, user_id: uuid.UUID, name: str) -> uuid.UUID:
    org_id: uuid.UUID | None = await conn.scalar(
        text("INSERT INTO organizations (tenant_id, name, created_by) VALUES (:t, :n, :u) RETURNING id"),
        {"t": tenant.id, "n": name, "u": user_id},
    )
    assert org_id is not None
    return org_id


async def _count(engine: AsyncEngine, tenant: TenantRef, sql: str, **params: object) -> int:
    async with _tx(engine, tenant) as conn:
        return int(await conn.scalar(text(sql), params) or 0)


async def _keys(engine: AsyncEngine, tenant: TenantRef) -> list[Any]:
    async with _tx(engine, tenant) as conn:
        return list((await conn.execute(text("SELECT * FROM idempotency_keys ORDER BY created_at"))).all())


@pytest.fixture
async def user(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> uuid.UUID:
    return (await make_login_user(owner_engine, fresh_tenant)).id


async def test_a_retry_returns_the_first_result_and_creates_nothing(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    first, created = await _create(app_engine, fresh_tenant, user, "k-1", "Acme")
    again, created_again = await _create(app_engine, fresh_tenant, user, "k-1", "Acme")

    assert created and not created_again and again == first
    assert await _count(app_engine, fresh_tenant, "SELECT count(*) FROM organizations WHERE name = 'Acme'") == 1
    (row,) = await _keys(app_engine, fresh_tenant)
    assert (row.user_id, row.key, row.mutation, row.result_type, row.result_id) == (
        user, "k-1", MUTATION, "organization", first
    )
    assert row.request_hash == request_hash(MUTATION, {"name": "Acme"})
    assert row.expires_at - row.created_at == RETENTION


async def test_the_same_key_with_another_input_or_mutation_is_refused(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    first, _ = await _create(app_engine, fresh_tenant, user, "k-2", "Acme")

    with pytest.raises(IdempotencyKeyReused) as refused:
        await _create(app_engine, fresh_tenant, user, "k-2", "Other name")
    assert refused.value.code == "IDEMPOTENCY_KEY_REUSED" and refused.value.field == "idempotency_key"
    with pytest.raises(IdempotencyKeyReused):
        await _create(app_engine, fresh_tenant, user, "k-2", "Acme", mutation="contactCreate")

    assert await _count(app_engine, fresh_tenant, "SELECT count(*) FROM organizations") == 1
    assert [r.result_id for r in await _keys(app_engine, fresh_tenant)] == [first]


async def test_a_retry_while_the_first_request_runs_is_a_conflict_at_once(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    async with _tx(app_engine, fresh_tenant) as first:
        claimed = await _claim(first, fresh_tenant, user, "k-3", "Acme")
        assert claimed.replay is None
        # The first request is still open: the retry neither waits for it nor creates anything.
        with pytest.raises(IdempotencyInProgress) as conflict:
            await asyncio.wait_for(_create(app_engine, fresh_tenant, user, "k-3", "Acme"), timeout=5)
        assert conflict.value.code == "CONFLICT"
        org_id = await _insert_org(first, fresh_tenant, user, "Acme")
        await claimed.record("organization", org_id)

    # Once it has committed, the retry gets its result.
    assert await _create(app_engine, fresh_tenant, user, "k-3", "Acme") == (org_id, False)
    assert await _count(app_engine, fresh_tenant, "SELECT count(*) FROM organizations") == 1


async def test_the_lock_is_taken_on_tenant_user_and_key(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    # Anyone holding the documented lock makes the key busy: the lock, not the row, decides.
    async with _tx(app_engine, fresh_tenant) as holder:
        await holder.execute(
            text("SELECT pg_advisory_xact_lock(:c, hashtext(:s))"),
            {"c": LOCK_CLASS, "s": lock_scope(fresh_tenant.id, user, "k-4")},
        )
        with pytest.raises(IdempotencyInProgress):
            await _create(app_engine, fresh_tenant, user, "k-4", "Acme")
        # Another key of the same user is free.
        assert (await _create(app_engine, fresh_tenant, user, "k-5", "Acme"))[1]
    assert (await _create(app_engine, fresh_tenant, user, "k-4", "Acme"))[1]


async def test_other_users_and_tenants_have_keys_of_their_own(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    colleague = (await make_login_user(owner_engine, fresh_tenant)).id
    other_tenant = await create_tenant(owner_engine)
    stranger = (await make_login_user(owner_engine, other_tenant)).id

    mine, _ = await _create(app_engine, fresh_tenant, user, "shared", "Acme")
    theirs, created = await _create(app_engine, fresh_tenant, colleague, "shared", "Other name")
    assert created and theirs != mine
    elsewhere, created = await _create(app_engine, other_tenant, stranger, "shared", "Acme")
    assert created and elsewhere not in (mine, theirs)

    assert len(await _keys(app_engine, fresh_tenant)) == 2
    assert len(await _keys(app_engine, other_tenant)) == 1


async def test_an_expired_key_is_ignored_and_replaced(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    first, _ = await _create(app_engine, fresh_tenant, user, "k-6", "Acme")
    async with _tx(owner_engine, fresh_tenant) as conn:
        await conn.execute(
            text(
                "UPDATE idempotency_keys"
                " SET created_at = now() - CAST(:age AS interval), expires_at = now() - interval '1 second'"
            ),
            {"age": RETENTION},
        )

    # Past its 24 hours the key is free again, even for another input, and its row is reused.
    second, created = await _create(app_engine, fresh_tenant, user, "k-6", "Renamed")
    assert created and second != first
    (row,) = await _keys(app_engine, fresh_tenant)
    assert row.result_id == second and row.request_hash == request_hash(MUTATION, {"name": "Renamed"})
    assert row.expires_at > datetime.datetime.now(datetime.UTC) + RETENTION - datetime.timedelta(minutes=5)


async def test_a_failed_create_leaves_no_key_and_the_retry_runs(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    class CreateFailed(Exception):
        pass

    with pytest.raises(CreateFailed):
        async with _tx(app_engine, fresh_tenant) as conn:
            claimed = await _claim(conn, fresh_tenant, user, "k-7", "Acme")
            org_id = await _insert_org(conn, fresh_tenant, user, "Acme")
            await claimed.record("organization", org_id)
            raise CreateFailed  # e.g. a later statement of the mutation fails: all of it rolls back

    assert await _keys(app_engine, fresh_tenant) == []
    retried, created = await _create(app_engine, fresh_tenant, user, "k-7", "Acme")
    assert created and retried != org_id
    assert await _count(app_engine, fresh_tenant, "SELECT count(*) FROM organizations") == 1


async def test_recording_over_a_live_key_written_without_the_lock_is_a_conflict(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    async with _tx(app_engine, fresh_tenant) as conn:
        claimed = await _claim(conn, fresh_tenant, user, "k-8", "Acme")
        # A writer that skipped `claim` stored the key meanwhile (same transaction, for the test).
        await conn.execute(
            text(
                "INSERT INTO idempotency_keys (tenant_id, user_id, key, mutation, request_hash, result_type,"
                " result_id, expires_at) VALUES (:t, :u, 'k-8', :m, :h, 'organization', :r, now() + :ttl)"
            ),
            {"t": fresh_tenant.id, "u": user, "m": MUTATION, "h": "0" * 64, "r": uuid.uuid4(), "ttl": RETENTION},
        )
        with pytest.raises(IdempotencyInProgress):
            await claimed.record("organization", uuid.uuid4())


async def test_a_replayed_claim_cannot_record_again(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    await _create(app_engine, fresh_tenant, user, "k-9", "Acme")
    async with _tx(app_engine, fresh_tenant) as conn:
        replayed = await _claim(conn, fresh_tenant, user, "k-9", "Acme")
        assert replayed.replay is not None
        with pytest.raises(RuntimeError, match="already has its result"):
            await replayed.record("organization", uuid.uuid4())


@pytest.mark.parametrize("key", ["", "x" * (KEY_MAX_LENGTH + 1)])
async def test_keys_must_be_1_to_200_characters(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID, key: str
) -> None:
    with pytest.raises(IdempotencyKeyInvalid) as invalid:
        await _create(app_engine, fresh_tenant, user, key, "Acme")
    assert invalid.value.code == "VALIDATION" and invalid.value.field == "idempotency_key"
    assert "1 to 200 characters" in invalid.value.message


async def test_the_longest_key_is_accepted(app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID) -> None:
    key = "é" * KEY_MAX_LENGTH  # characters, not bytes
    assert (await _create(app_engine, fresh_tenant, user, key, "Acme"))[1]
    assert (await _create(app_engine, fresh_tenant, user, key, "Acme"))[1] is False


async def test_purge_deletes_only_expired_keys_of_the_tenant(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    await _create(app_engine, fresh_tenant, user, "old", "Acme")
    await _create(app_engine, fresh_tenant, user, "new", "Acme")
    async with _tx(owner_engine, fresh_tenant) as conn:
        await conn.execute(text("UPDATE idempotency_keys SET expires_at = now() - interval '1 hour' WHERE key = 'old'"))

    async with _tx(app_engine, fresh_tenant) as conn:
        assert await purge_expired(conn, datetime.datetime.now(datetime.UTC)) == 1
    assert [r.key for r in await _keys(app_engine, fresh_tenant)] == ["new"]


class Stage(enum.Enum):
    QUALIFY = "qualify"


@dataclass
class _Nested:
    when: datetime.datetime
    amount: decimal.Decimal


def test_the_request_hash_is_canonical() -> None:
    utc = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)
    eastern = utc.astimezone(datetime.timezone(datetime.timedelta(hours=-5)))
    project = uuid.uuid4()
    one = {"b": [1, "x"], "a": {"stage": Stage.QUALIFY, "id": project, "due": datetime.date(2027, 1, 31)},
           "n": _Nested(when=utc, amount=decimal.Decimal("1.50"))}
    same = {"n": _Nested(when=eastern, amount=decimal.Decimal("1.5")),
            "a": {"due": datetime.date(2027, 1, 31), "id": project, "stage": "qualify"}, "b": (1, "x")}
    assert request_hash("m", one) == request_hash("m", same)
    assert len(request_hash("m", one)) == 64

    assert request_hash("m", {"a": 1.5}) == request_hash("m", {"a": decimal.Decimal("1.50")})
    # Different values, a different mutation, a string that looks like another type: different.
    assert request_hash("m", {"a": 1}) != request_hash("m", {"a": 2})
    assert request_hash("m", {"a": 1}) != request_hash("n", {"a": 1})
    assert request_hash("m", {"a": None}) != request_hash("m", {})
    assert request_hash("m", {"a": "2027-01-31"}) != request_hash("m", {"a": datetime.date(2027, 1, 31)})
    assert request_hash("m", {"a": True}) != request_hash("m", {"a": 1})
    assert request_hash("m", {"a": 1}) == request_hash("m", {"a": 1.0}) == request_hash("m", {"a": decimal.Decimal(1)})
    # Kinds never encode alike: a JSON object that spells a decimal is not that decimal.
    assert request_hash("m", {"a": 1.5}) != request_hash("m", {"a": {"number": "1.5"}})
    assert request_hash("m", {"a": 1.5}) != request_hash("m", {"a": ["number", "1.5"]})
    assert request_hash("m", {"a": str(uuid.UUID(int=1))}) != request_hash("m", {"a": uuid.UUID(int=1)})

    with pytest.raises(TypeError, match="cannot hash a bytes"):
        request_hash("m", {"a": b"raw"})
    with pytest.raises(TypeError, match="not finite"):
        request_hash("m", {"a": float("nan")})


async def test_the_nightly_sweep_purges_expired_keys(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    await _create(app_engine, fresh_tenant, user, "today", "Acme")
    await _create(app_engine, fresh_tenant, user, "yesterday", "Acme")
    async with _tx(owner_engine, fresh_tenant) as conn:
        await conn.execute(
            text("UPDATE idempotency_keys SET expires_at = now() - interval '1 minute' WHERE key = 'yesterday'")
        )
    now = datetime.datetime.now(datetime.UTC)
    meta = RequestMeta(request_id="test-idempotency-purge", endpoint="gwm jobs run", method="JOB")
    writer = SideEffectWriter(owner_engine, TEST_AUDIT_CHAIN)

    sweep = await sweep_tenant(owner_engine, writer, fresh_tenant.id, now=now, meta=meta)

    assert sweep.idempotency_keys_purged == 1
    assert [r.key for r in await _keys(app_engine, fresh_tenant)] == ["today"]
    # A day later the other one has expired too.
    later = await sweep_tenant(owner_engine, writer, fresh_tenant.id, now=now + RETENTION, meta=meta)
    assert later.idempotency_keys_purged == 1 and await _keys(app_engine, fresh_tenant) == []
    assert "idempotency keys purged 2" in str(_report(sweep, later))


def _report(*sweeps: TenantSweep) -> NightlyReport:
    report = NightlyReport(tenants=1)
    for sweep in sweeps:
        report.add(sweep)
    return report
