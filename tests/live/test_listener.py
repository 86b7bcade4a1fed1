"""The LISTEN connection on a real database: committed batches reach subscribers, a rolled-back
one sends nothing, a truncated notification arrives whole, a killed connection comes back with a
resync event, a consumer that stops reading stays within its bound, and every access-ending
change sends its notify."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth import accounts, api_keys, roles
from auth.audit import RequestMeta
from auth.audited import system_unit
from auth.permissions import Permission, SystemRole
from auth.principal import Grants, Principal, PrincipalKind
from auth.service import AuthService
from auth.sessions import TerminationReason, create_session, terminate_session, terminate_user_sessions
from live.bus import Bus, Subscription
from live.config import LiveConfig
from live.events import ChangeBatch, Delivery, Event, Resync
from live.listener import Listener, connector_for
from models.access_events import AccessEvent, AccessKind
from models.crm import Organization
from models.db import set_tenant
from models.tenancy import Tenant
from models.unit_of_work import NOTIFY_LIMIT, notification_payload
from server.app import create_app
from tests.conftest import Database
from tests.support import http as test_http
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef, create_tenant
from tests.support.http import make_login_user

WAIT = 30.0  # generous: the machine is shared


def _config(**overrides: float) -> LiveConfig:
    values: dict[str, float] = {
        "queue_size": 8,
        "reconnect_min_seconds": 0.05,
        "reconnect_max_seconds": 0.5,
        "keepalive_seconds": 1.0,
    }
    values.update(overrides)
    return LiveConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def live(app_engine: AsyncEngine) -> AsyncIterator[tuple[Bus, Listener]]:
    bus = Bus(_config())
    listener = Listener(connector_for(app_engine), bus)
    await listener.start(wait=WAIT)
    assert listener.listening.is_set(), "the LISTEN connection did not come up"
    try:
        yield bus, listener
    finally:
        await listener.stop()
        await bus.aclose()


async def _commit_organizations(
    app_engine: AsyncEngine, tenant: TenantRef, count: int = 1, *, fail: bool = False
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """Insert `count` organizations in one unit of work as the server's role; `fail` rolls it back."""
    tag = uuid.uuid4().hex[:6]
    orgs = [
        Organization(tenant_id=tenant.id, name=f"Live org {i} {tag}", created_by=tenant.system_user_id)
        for i in range(count)
    ]
    with pytest.raises(RuntimeError) if fail else contextlib.nullcontext():
        async with system_unit(app_engine, TEST_AUDIT_CHAIN, tenant.id, process="tests.live") as uow:
            for org in orgs:
                uow.add(org)
            await uow.flush()
            if fail:
                raise RuntimeError("rolled back on purpose")
    return uow.change_batch_id, [org.id for org in orgs]


async def _next(sub: Subscription) -> Event:
    return await asyncio.wait_for(anext(sub), WAIT)


async def _delivery(sub: Subscription) -> ChangeBatch:
    event = await _next(sub)
    assert isinstance(event, Delivery), event
    return event.batch


async def test_a_committed_batch_reaches_a_subscriber(
    live: tuple[Bus, Listener], app_engine: AsyncEngine, fresh_tenant: TenantRef, tenant_b: TenantRef
) -> None:
    bus, _ = live
    sub = bus.subscribe(fresh_tenant.id, "k")
    other = bus.subscribe(tenant_b.id, "k")
    batch_id, ids = await _commit_organizations(app_engine, fresh_tenant)
    batch = await _delivery(sub)
    assert batch.batch_id == batch_id
    assert batch.tenant_id == fresh_tenant.id
    assert batch.ids("organization") == ids
    assert "organization" in batch.entity_types
    await bus.drain()
    assert other.size == 0  # another tenant's subscriber receives nothing
    sub.close()
    other.close()


async def test_a_rolled_back_change_sends_nothing(
    live: tuple[Bus, Listener], app_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    bus, _ = live
    sub = bus.subscribe(fresh_tenant.id, "k")
    rolled_back, _ = await _commit_organizations(app_engine, fresh_tenant, fail=True)
    committed, _ = await _commit_organizations(app_engine, fresh_tenant)
    # Notifications arrive in commit order: the first thing received is the committed batch.
    batch = await _delivery(sub)
    assert batch.batch_id == committed != rolled_back
    await bus.drain()
    assert sub.size == 0
    sub.close()


async def test_a_batch_over_the_notify_limit_arrives_whole(
    live: tuple[Bus, Listener], app_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    bus, _ = live
    sub = bus.subscribe(fresh_tenant.id, "k")
    count = 250
    entities = [("organization", uuid.uuid4()) for _ in range(count)]
    payload = json.loads(notification_payload(fresh_tenant.id, uuid.uuid4(), entities))
    assert payload.get("truncated") is True and len(payload["entities"]) < count  # over NOTIFY_LIMIT
    assert NOTIFY_LIMIT < 8000

    batch_id, ids = await _commit_organizations(app_engine, fresh_tenant, count)
    batch = await _delivery(sub)
    assert batch.batch_id == batch_id
    assert sorted(batch.ids("organization")) == sorted(ids)
    assert len(batch.entities) == count
    sub.close()


async def test_a_killed_listen_connection_reconnects_and_resyncs(
    live: tuple[Bus, Listener], app_engine: AsyncEngine, fresh_tenant: TenantRef, database: Database
) -> None:
    bus, listener = live
    sub = bus.subscribe(fresh_tenant.id, "k")
    before, _ = await _commit_organizations(app_engine, fresh_tenant)
    assert (await _delivery(sub)).batch_id == before
    old_pid = listener.backend_pid
    assert old_pid is not None and listener.connections == 1

    superuser = await asyncpg.connect(database.superuser_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        assert await superuser.fetchval("SELECT pg_terminate_backend($1)", old_pid) is True
    finally:
        await superuser.close()

    event = await _next(sub)
    assert isinstance(event, Resync), event
    assert event.reason == "reconnect"
    assert event.last_batch == before  # the last batch delivered before the loss
    assert event.last_at is not None
    assert listener.connections == 2
    assert listener.backend_pid is not None and listener.backend_pid != old_pid

    after, _ = await _commit_organizations(app_engine, fresh_tenant)
    assert (await _delivery(sub)).batch_id == after
    sub.close()


async def test_a_consumer_that_stops_reading_stays_within_its_bound(
    live: tuple[Bus, Listener], app_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    bus, _ = live
    bound = bus.config.queue_size
    stalled = bus.subscribe(fresh_tenant.id, "k")
    reader = bus.subscribe(fresh_tenant.id, "k")
    seen: list[uuid.UUID] = []
    count = 2 * bound + 3

    async def read() -> None:
        async for event in reader:
            assert isinstance(event, Delivery), event  # a subscriber that keeps reading never resyncs
            seen.append(event.batch.batch_id)
            if len(seen) == count:
                return

    reading = asyncio.create_task(read())
    sizes: list[int] = []
    committed = []
    for _ in range(count):
        committed.append((await _commit_organizations(app_engine, fresh_tenant))[0])
        sizes.append(stalled.size)
    await asyncio.wait_for(reading, WAIT)
    assert seen == committed
    await bus.drain()
    assert max(sizes) <= bound
    assert stalled.peak <= bound
    assert stalled.queue.qsize() <= bound
    # It never read: the first overflow left a resync, the second closed it.
    assert stalled.closed_reason == "overflow"
    assert stalled.done.is_set()
    with pytest.raises(StopAsyncIteration):
        await _next(stalled)
    reader.close()


# -- access-ending notifies ----------------------------------------------------------------------


class _Collected:
    def __init__(self, bus: Bus) -> None:
        self.events: asyncio.Queue[AccessEvent] = asyncio.Queue()
        self.remove = bus.on_access(self.events.put_nowait)

    async def next(self, tenant_id: uuid.UUID) -> AccessEvent:
        while True:
            event = await asyncio.wait_for(self.events.get(), WAIT)
            if event.tenant_id == tenant_id:
                return event


@pytest.fixture
async def service(database: Database) -> AsyncIterator[AuthService]:
    app = create_app(test_http.test_settings(database.app_url), live=LiveConfig(enabled=False))
    assert app.state.live_bus is None  # subscriptions off: no bus, no LISTEN connection
    try:
        yield app.state.auth
    finally:
        await app.state.engine.dispose()


def _admin(tenant: TenantRef, user_id: uuid.UUID) -> Principal:
    return Principal(
        kind=PrincipalKind.SESSION,
        tenant_id=tenant.id,
        user_id=user_id,
        grants=Grants(frozenset(p.value for p in Permission)),
        session_id=uuid.uuid4(),
    )


META = RequestMeta(request_id="tests.live")


async def _session(app_engine: AsyncEngine, tenant: TenantRef, user_id: uuid.UUID) -> uuid.UUID:
    async with app_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        _, session_id = await create_session(
            conn, tenant_id=tenant.id, user_id=user_id, now=datetime.now(UTC), absolute_timeout=timedelta(hours=1),
            mfa_verified=False, ip=None, user_agent=None, permissions_snapshot={},
        )
    return session_id


async def test_session_ends_notify(
    live: tuple[Bus, Listener], app_engine: AsyncEngine, owner_engine: AsyncEngine
) -> None:
    bus, _ = live
    tenant = await create_tenant(owner_engine)
    user = await make_login_user(owner_engine, tenant)
    collected = _Collected(bus)
    first = await _session(app_engine, tenant, user.id)
    second = await _session(app_engine, tenant, user.id)
    sub = bus.subscribe(tenant.id, "k", user_id=user.id, session_id=first)
    bystander = bus.subscribe(tenant.id, "k", user_id=user.id, session_id=second)

    # Rolled back: nothing is announced.
    async with app_engine.connect() as conn:
        await conn.begin()
        await set_tenant(conn, tenant.id)
        assert await terminate_session(conn, first, TerminationReason.LOGOUT, datetime.now(UTC))
        await conn.rollback()
    # Committed: the session's subscriber hears it, the other session's does not.
    async with app_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        assert await terminate_session(conn, first, TerminationReason.REVOKED, datetime.now(UTC))
    event = await collected.next(tenant.id)
    assert (event.kind, event.session_id, event.reason) == (AccessKind.SESSION_ENDED, first, "revoked")
    assert await _next(sub) == event
    assert bystander.size == 0

    # Every session of the user but one (a password change).
    async with app_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await terminate_user_sessions(
            conn, user.id, TerminationReason.PASSWORD_CHANGED, datetime.now(UTC), except_session=first
        )
    event = await collected.next(tenant.id)
    assert (event.kind, event.user_id, event.except_session) == (AccessKind.USER_SESSIONS_ENDED, user.id, first)
    assert await _next(bystander) == event
    collected.remove()
    sub.close()
    bystander.close()


async def test_deactivation_role_changes_and_key_revocation_notify(
    live: tuple[Bus, Listener], owner_engine: AsyncEngine, service: AuthService
) -> None:
    bus, _ = live
    tenant = await create_tenant(owner_engine)
    admin = await make_login_user(owner_engine, tenant, roles=(SystemRole.TENANT_ADMIN.value,))
    user = await make_login_user(owner_engine, tenant)
    principal = _admin(tenant, admin.id)
    collected = _Collected(bus)

    viewer_role = await _role_id(owner_engine, tenant, SystemRole.VIEWER.value)
    analyst_role = await _role_id(owner_engine, tenant, SystemRole.BD_ANALYST.value)
    granted = await roles.grant_role(
        service, principal, user_id=user.id, meta=META, role_id=analyst_role,
        project_id=None, expires_at=None,
    )
    event = await collected.next(tenant.id)
    assert (event.kind, event.user_id) == (AccessKind.ROLE_CHANGED, user.id)

    await roles.revoke_role(service, principal, user_role_id=granted.id, meta=META)
    event = await collected.next(tenant.id)
    assert (event.kind, event.user_id, event.role_id) == (AccessKind.ROLE_CHANGED, user.id, granted.role_id)

    first, second = sorted(p.value for p in Permission)[:2]
    custom = await roles.create_role(
        service, principal, meta=META, name=f"Live {uuid.uuid4().hex[:6]}", description=None, permissions=[first]
    )
    renamed = await roles.update_role(  # a change that leaves the permissions alone announces nothing
        service, principal, role_id=custom.id, meta=META, updated_at=custom.updated_at, name=None,
        description="renamed", permissions=None,
    )
    await roles.update_role(
        service, principal, role_id=custom.id, meta=META, updated_at=renamed.updated_at, name=None,
        description=None, permissions=[first, second],
    )
    event = await collected.next(tenant.id)
    assert (event.kind, event.user_id, event.role_id) == (AccessKind.ROLE_CHANGED, None, custom.id)
    assert viewer_role != custom.id

    record, _key = await api_keys.create_api_key(
        service, principal, name="live", role_name="Viewer", expires_in_days=5, meta=META
    )
    await api_keys.revoke_api_key(service, principal, record.id, meta=META)
    event = await collected.next(tenant.id)
    assert (event.kind, event.api_key_id) == (AccessKind.API_KEY_REVOKED, record.id)

    sub = bus.subscribe(tenant.id, "k", user_id=user.id)  # e.g. an OIDC caller: no session of ours
    await accounts.deactivate_user(service, principal, user_id=user.id, meta=META)
    event = await collected.next(tenant.id)
    assert (event.kind, event.user_id) == (AccessKind.USER_DEACTIVATED, user.id)
    assert await _next(sub) == event
    collected.remove()
    sub.close()


async def test_tenant_deactivation_notifies(
    live: tuple[Bus, Listener], owner_engine: AsyncEngine
) -> None:
    bus, _ = live
    tenant = await create_tenant(owner_engine)
    collected = _Collected(bus)
    sub = bus.subscribe(tenant.id, "k", user_id=uuid.uuid4())
    async with system_unit(owner_engine, TEST_AUDIT_CHAIN, tenant.id, process="tests.live") as uow:
        uow.assign(await uow.lock(Tenant, tenant.id), {"is_active": False})
    event = await collected.next(tenant.id)  # from the trigger of migration 0011
    assert event.kind is AccessKind.TENANT_DEACTIVATED
    assert await _next(sub) == event
    # Saving the tenant again while it is inactive announces nothing more.
    async with system_unit(owner_engine, TEST_AUDIT_CHAIN, tenant.id, process="tests.live") as uow:
        uow.assign(await uow.lock(Tenant, tenant.id), {"name": "Renamed while inactive"})
    while (await _delivery(sub)).batch_id != uow.change_batch_id:  # up to the rename's own batch
        pass
    assert collected.events.empty()  # its access notify would have come before its batch
    collected.remove()
    sub.close()


async def _role_id(owner_engine: AsyncEngine, tenant: TenantRef, name: str) -> uuid.UUID:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        role_id = await conn.scalar(
            text("SELECT id FROM roles WHERE tenant_id = :t AND name = :n"), {"t": tenant.id, "n": name}
        )
    assert isinstance(role_id, uuid.UUID)
    return role_id


async def test_the_app_listens_only_while_it_runs_and_only_with_subscriptions_on(
    database: Database, app_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    app = create_app(test_http.test_settings(database.app_url), live=_config())
    bus, listener = app.state.live_bus, app.state.live_listener
    assert isinstance(bus, Bus) and isinstance(listener, Listener)
    assert not listener.listening.is_set()  # nothing before the lifespan
    async with test_http.app_client(app):
        pid = listener.backend_pid
        assert listener.listening.is_set() and pid is not None
        sub = bus.subscribe(fresh_tenant.id, "k")
        batch_id, _ = await _commit_organizations(app_engine, fresh_tenant)
        assert (await _delivery(sub)).batch_id == batch_id
    assert not listener.listening.is_set() and listener.backend_pid is None
    assert sub.closed_reason == "closed"  # the bus closed its subscribers on the way out
    async with app_engine.connect() as conn:
        still_there = await conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid})
    assert still_there == 0  # the LISTEN connection is closed with the app

    # The same app run again (a test client per test, a server restarted in-process) listens again at once.
    async with test_http.app_client(app):
        assert listener.listening.is_set() and listener.backend_pid not in (None, pid)
        again = bus.subscribe(fresh_tenant.id, "k")
        batch_id, _ = await _commit_organizations(app_engine, fresh_tenant)
        assert (await _delivery(again)).batch_id == batch_id

    off = create_app(test_http.test_settings(database.app_url), live=LiveConfig(enabled=False))
    assert off.state.live_bus is None and off.state.live_listener is None
    await off.state.engine.dispose()


async def test_an_unreachable_database_is_retried_with_growing_delays(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, unused_tcp_port: int
) -> None:
    real = connector_for(app_engine)
    attempts: list[float] = []

    async def connect() -> asyncpg.Connection:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) <= 4:  # nothing listens on this port: refused, like a database that is down
            return await asyncpg.connect(host="127.0.0.1", port=unused_tcp_port, user="gwm_app", database="x")
        return await real()

    bus = Bus(_config(reconnect_min_seconds=0.05, reconnect_max_seconds=0.3))
    listener = Listener(connect, bus)
    await listener.start(wait=WAIT)
    try:
        assert listener.listening.is_set() and listener.connections == 1 and len(attempts) == 5
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2 and gaps[3] >= 0.3  # doubling, then capped
        assert gaps[3] < 0.3 + 5  # capped at reconnect_max_seconds (with room for a loaded machine)
        sub = bus.subscribe(fresh_tenant.id, "k")
        # A notification that is not one of ours is ignored; the next batch still arrives.
        async with app_engine.begin() as conn:
            await conn.execute(text("SELECT pg_notify('gwm_changes', 'not json')"))
        batch_id, _ = await _commit_organizations(app_engine, fresh_tenant)
        assert (await _delivery(sub)).batch_id == batch_id
        assert bus.last_batch is not None and bus.last_batch.batch_id == batch_id
        sub.close()
    finally:
        await listener.stop()
        await bus.aclose()
