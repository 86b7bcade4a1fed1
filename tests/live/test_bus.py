"""The bus of one process: bounded queues, shared and bounded reads, order, access events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Hashable

import pytest

from live.bus import Bus
from live.config import LiveConfig
from live.events import ChangeBatch, Delivery, Resync, parse_change_payload
from models.access_events import AccessEvent, AccessKind, parse_access_event
from models.unit_of_work import notification_payload

TENANT = uuid.uuid4()
OTHER_TENANT = uuid.uuid4()


def _batch(tenant: uuid.UUID = TENANT, kind: str = "opportunity_project") -> ChangeBatch:
    return ChangeBatch(batch_id=uuid.uuid4(), tenant_id=tenant, entities=((kind, uuid.uuid4()),))


async def _take(sub: object) -> object:
    return await asyncio.wait_for(anext(sub), 5)  # type: ignore[call-overload]


async def test_a_subscriber_that_stops_reading_gets_a_resync_then_is_closed_within_its_bound() -> None:
    bus = Bus(LiveConfig(queue_size=4))
    sub = bus.subscribe(TENANT, "k")
    batches = [_batch() for _ in range(4)]
    for batch in batches:
        bus.publish(batch)
    await bus.drain()
    assert sub.size == 4 and sub.closed_reason is None

    bus.publish(_batch())  # full: the queue gives way to one resync event
    await bus.drain()
    assert sub.size == 1
    for _ in range(3):
        bus.publish(_batch())
    await bus.drain()
    assert sub.size == 4
    bus.publish(_batch())  # full again and the resync not taken: closed
    await bus.drain()
    assert sub.closed_reason == "overflow" and sub.done.is_set()
    assert sub.peak <= 4 and sub.size == 0
    assert bus.subscribers == 0
    with pytest.raises(StopAsyncIteration):
        await _take(sub)


async def test_a_subscriber_that_reads_again_after_an_overflow_resyncs_from_what_it_took() -> None:
    bus = Bus(LiveConfig(queue_size=2))
    sub = bus.subscribe(TENANT, "k")
    first = _batch()
    bus.publish(first)
    await bus.drain()
    taken = await _take(sub)
    assert isinstance(taken, Delivery) and taken.batch == first
    for _ in range(3):
        bus.publish(_batch())
    await bus.drain()
    event = await _take(sub)
    assert event == Resync(last_batch=first.batch_id, last_at=first.received_at, reason="overflow")
    later = _batch()
    bus.publish(later)
    await bus.drain()
    event = await _take(sub)
    assert isinstance(event, Delivery) and event.batch == later
    assert sub.peak <= 2
    sub.close()


async def test_one_read_per_tenant_and_permission_set() -> None:
    calls: list[tuple[uuid.UUID, Hashable]] = []

    async def reader(batch: ChangeBatch, key: Hashable) -> object:
        calls.append((batch.batch_id, key))
        return f"read for {key}"

    bus = Bus(LiveConfig(), reader=reader)
    same = [bus.subscribe(TENANT, "viewer") for _ in range(3)]
    admin = bus.subscribe(TENANT, "admin")
    elsewhere = bus.subscribe(OTHER_TENANT, "viewer")
    batch = _batch()
    bus.publish(batch)
    await bus.drain()
    assert sorted(str(key) for _, key in calls) == ["admin", "viewer"]  # two groups, two reads
    assert bus.reads == 2
    for sub in same:
        event = await _take(sub)
        assert isinstance(event, Delivery) and event.shared == "read for viewer" and event.batch == batch
    event = await _take(admin)
    assert isinstance(event, Delivery) and event.shared == "read for admin"
    assert elsewhere.size == 0  # another tenant's subscriber: nothing, and no read for it
    await bus.aclose()


async def test_reads_at_once_are_bounded_and_each_group_keeps_the_order_of_batches() -> None:
    running = 0
    most = 0
    gate = asyncio.Event()

    async def reader(batch: ChangeBatch, key: Hashable) -> object:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        # Later batches finish first: the order of delivery must not follow.
        await asyncio.sleep(0.001 * (10 - len(batch.entities)))
        running -= 1
        return None

    bus = Bus(LiveConfig(max_reads=2, queue_size=16), reader=reader)
    subs = [bus.subscribe(TENANT, f"key {i}") for i in range(5)]
    batches = [
        ChangeBatch(uuid.uuid4(), TENANT, tuple(("activity", uuid.uuid4()) for _ in range(n + 1))) for n in range(4)
    ]
    for batch in batches:
        bus.publish(batch)
    await asyncio.sleep(0.05)
    assert running == 2  # five groups times four batches waiting; two reads at once
    gate.set()
    await bus.drain()
    assert most == 2
    for sub in subs:
        got = [await _take(sub) for _ in batches]
        assert got == [Delivery(batch) for batch in batches]
    await bus.aclose()


async def test_a_filter_leaves_batches_out_and_spares_their_read() -> None:
    reads: list[Hashable] = []

    async def reader(batch: ChangeBatch, key: Hashable) -> object:
        reads.append(key)
        return None

    bus = Bus(LiveConfig(), reader=reader)
    projects = bus.subscribe(TENANT, "k", accepts=lambda b: "opportunity_project" in b.entity_types)
    bus.publish(_batch(kind="activity"))
    await bus.drain()
    assert reads == [] and projects.size == 0
    wanted = _batch(kind="opportunity_project")
    bus.publish(wanted)
    await bus.drain()
    event = await _take(projects)
    assert isinstance(event, Delivery) and event.batch == wanted
    assert reads == ["k"]
    projects.close()


async def test_a_failed_read_resyncs_its_group() -> None:
    async def reader(batch: ChangeBatch, key: Hashable) -> object:
        raise RuntimeError("database gone")

    bus = Bus(LiveConfig(), reader=reader)
    sub = bus.subscribe(TENANT, "k")
    bus.publish(_batch())
    await bus.drain()
    event = await _take(sub)
    assert isinstance(event, Resync) and event.reason == "overflow"
    sub.close()


async def test_a_group_whose_reads_cannot_keep_up_is_told_to_resync() -> None:
    gate = asyncio.Event()

    async def reader(batch: ChangeBatch, key: Hashable) -> object:
        await gate.wait()
        return None

    bus = Bus(LiveConfig(queue_size=2, max_reads=1), reader=reader)
    sub = bus.subscribe(TENANT, "k")
    batches = [_batch() for _ in range(3)]
    for batch in batches:  # two reads waiting: the third batch is skipped for this group
        bus.publish(batch)
    gate.set()
    got = [await _take(sub) for _ in range(3)]
    assert got == [
        Delivery(batches[0]),
        Delivery(batches[1]),
        Resync(last_batch=batches[1].batch_id, last_at=batches[1].received_at, reason="overflow"),
    ]
    assert sub.peak <= 2
    sub.close()


async def test_rekey_moves_a_subscriber_to_the_read_of_its_new_permissions() -> None:
    async def reader(batch: ChangeBatch, key: Hashable) -> object:
        return key

    bus = Bus(LiveConfig(), reader=reader)
    sub = bus.subscribe(TENANT, "before")
    sub.rekey("after")
    bus.publish(_batch())
    await bus.drain()
    event = await _take(sub)
    assert isinstance(event, Delivery) and event.shared == "after"
    sub.close()
    assert bus.subscribers == 0


async def test_access_events_reach_the_subscribers_they_concern_even_with_a_full_queue() -> None:
    bus = Bus(LiveConfig(queue_size=2))
    user, session, other_session, key = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    mine = bus.subscribe(TENANT, "k", user_id=user, session_id=session)
    my_other = bus.subscribe(TENANT, "k", user_id=user, session_id=other_session)
    with_key = bus.subscribe(TENANT, "k", user_id=uuid.uuid4(), api_key_id=key)
    seen: list[AccessEvent] = []
    remove = bus.on_access(seen.append)
    for _ in range(2):
        bus.publish(_batch())
    await bus.drain()
    assert mine.size == 2

    ended = AccessEvent(AccessKind.SESSION_ENDED, TENANT, session_id=session, reason="logout")
    bus.access(ended)
    # The full queue gave way to a resync event, and the access event follows it.
    assert mine.size == 2 and isinstance(await _take(mine), Resync) and await _take(mine) == ended
    assert my_other.size == 2  # the other session goes on

    everything_but = AccessEvent(AccessKind.USER_SESSIONS_ENDED, TENANT, user_id=user, except_session=session)
    bus.access(everything_but)
    assert isinstance(await _take(my_other), Resync) and await _take(my_other) == everything_but
    assert mine.size == 0

    bus.access(AccessEvent(AccessKind.API_KEY_REVOKED, TENANT, api_key_id=key))
    assert isinstance(await _take(with_key), Resync) and isinstance(await _take(with_key), AccessEvent)
    bus.access(AccessEvent(AccessKind.TENANT_DEACTIVATED, OTHER_TENANT))
    assert mine.size == 0  # another tenant's event
    assert [event.kind for event in seen] == [
        AccessKind.SESSION_ENDED, AccessKind.USER_SESSIONS_ENDED, AccessKind.API_KEY_REVOKED,
        AccessKind.TENANT_DEACTIVATED,
    ]
    remove()
    await bus.aclose()


def test_which_subscribers_an_access_event_concerns() -> None:
    user, session = uuid.uuid4(), uuid.uuid4()

    def concerns(event: AccessEvent, **who: uuid.UUID | None) -> bool:
        return event.concerns(tenant_id=TENANT, **who)

    assert concerns(AccessEvent(AccessKind.USER_DEACTIVATED, TENANT, user_id=user), user_id=user)
    assert not concerns(AccessEvent(AccessKind.USER_DEACTIVATED, TENANT, user_id=user), user_id=uuid.uuid4())
    assert concerns(AccessEvent(AccessKind.ROLE_CHANGED, TENANT, role_id=uuid.uuid4()), user_id=user)
    assert concerns(AccessEvent(AccessKind.ROLE_CHANGED, TENANT, user_id=user), user_id=user)
    assert not concerns(AccessEvent(AccessKind.ROLE_CHANGED, TENANT, user_id=user), user_id=uuid.uuid4())
    # An OIDC caller has no session: the end of sessions does not concern it.
    assert not concerns(AccessEvent(AccessKind.USER_SESSIONS_ENDED, TENANT, user_id=user), user_id=user)
    assert concerns(AccessEvent(AccessKind.TENANT_DEACTIVATED, TENANT), user_id=None)
    assert not AccessEvent(AccessKind.TENANT_DEACTIVATED, TENANT).concerns(tenant_id=OTHER_TENANT, user_id=None)
    assert not concerns(AccessEvent(AccessKind.SESSION_ENDED, TENANT, session_id=session), user_id=user)


def test_payloads_parse_and_refuse_what_is_not_one() -> None:
    batch_id, entity = uuid.uuid4(), uuid.uuid4()
    notice = parse_change_payload(notification_payload(TENANT, batch_id, [("activity", entity)]))
    assert notice.batch.batch_id == batch_id and notice.batch.entities == (("activity", entity),)
    assert not notice.truncated
    with pytest.raises(ValueError):
        parse_change_payload("[]")
    with pytest.raises(KeyError):
        parse_change_payload('{"tenant": "x"}')
    with pytest.raises(ValueError):
        parse_access_event('{"kind": "session_ended"}')  # no tenant
    with pytest.raises(ValueError):
        parse_access_event(f'{{"kind": "nonsense", "tenant": "{TENANT}"}}')
    event = parse_access_event(f'{{"kind": "role_changed", "tenant": "{TENANT}", "user": null, "reason": 3}}')
    assert event == AccessEvent(AccessKind.ROLE_CHANGED, TENANT)


def test_the_configuration_refuses_values_that_cannot_work() -> None:
    assert LiveConfig.from_env({}) == LiveConfig()
    assert not LiveConfig.from_env({"GWM_SUBSCRIPTIONS": "off"}).enabled
    assert LiveConfig.from_env({"GWM_LIVE_QUEUE_SIZE": "5", "GWM_LIVE_MAX_READS": "3"}).queue_size == 5
    with pytest.raises(ValueError, match="on or off"):
        LiveConfig.from_env({"GWM_SUBSCRIPTIONS": "maybe"})
    with pytest.raises(ValueError, match="queue_size"):
        LiveConfig.from_env({"GWM_LIVE_QUEUE_SIZE": "1"})
    with pytest.raises(ValueError, match="max_reads"):
        LiveConfig(max_reads=0)
    with pytest.raises(ValueError, match="positive"):
        LiveConfig(keepalive_seconds=0)
    with pytest.raises(ValueError, match="reconnect_max_seconds"):
        LiveConfig(reconnect_max_seconds=0.01)


async def test_closing_the_bus_cancels_a_read_that_never_ends() -> None:
    async def reader(batch: ChangeBatch, key: Hashable) -> object:
        await asyncio.Event().wait()
        return None

    bus = Bus(LiveConfig(), reader=reader)
    sub = bus.subscribe(TENANT, "k")
    bus.publish(_batch())
    await asyncio.wait_for(bus.aclose(grace=0.1), 5)
    assert sub.closed_reason == "closed" and sub.done.is_set()
    with pytest.raises(StopAsyncIteration):
        await _take(sub)
