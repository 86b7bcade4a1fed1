"""Fan-out of live events to the subscribers of one process.

    bus = Bus(LiveConfig())
    bus.set_reader(read)            # async (batch, key) -> shared payload; once per group and batch
    sub = bus.subscribe(tenant_id, key, accepts=lambda b: "opportunity_project" in b.entity_types,
                        user_id=user_id, session_id=session_id)
    try:
        async for event in sub:     # Delivery | Resync | AccessEvent
            ...
    finally:
        sub.close()

Bounds:
- Each subscriber has a queue of `queue_size` events. When an event finds it full, the queue is
  emptied and holds one `Resync(reason="overflow")` naming the last batch the subscriber took; if
  it fills again before the subscriber took that resync, the subscription is closed
  (`closed_reason == "overflow"`, `done` set, the iterator ends). So a subscriber that stops
  reading never holds more than `queue_size` events.
- Subscribers with the same tenant and key (a permission set) form a group; a batch is read once
  per group (the reader), with at most `max_reads` reads at once in the process. Deliveries to a
  group keep the order of the batches. A group with `queue_size` batches still waiting for their
  read skips the next ones; once its reads are done its subscribers get an overflow resync naming
  the last batch they were given.
- Access events always reach the subscribers they concern (a full queue gives way to the resync
  event first, and the access event follows it) and the `on_access` callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Final

from live.config import LiveConfig
from live.events import ChangeBatch, Delivery, Event, Resync
from models.access_events import AccessEvent

__all__ = ["Bus", "Reader", "Subscription"]

_log = logging.getLogger(__name__)

#: The shared read of a group: (batch, group key) -> what every subscriber of the group receives.
Reader = Callable[[ChangeBatch, Hashable], Awaitable[object]]


class _End:
    """The queue's last item once a subscription is closed."""


_END: Final = _End()


class Subscription:
    """One subscriber's bounded queue of events; iterate it, and close it when done."""

    def __init__(
        self,
        bus: Bus,
        tenant_id: uuid.UUID,
        key: Hashable,
        accepts: Callable[[ChangeBatch], bool] | None,
        *,
        user_id: uuid.UUID | None,
        session_id: uuid.UUID | None,
        api_key_id: uuid.UUID | None,
        maxsize: int,
    ) -> None:
        self._bus = bus
        self.tenant_id = tenant_id
        self.key = key
        self.accepts = accepts
        self.user_id = user_id
        self.session_id = session_id
        self.api_key_id = api_key_id
        self.maxsize = maxsize
        # One slot more than the bound, used only by the final end marker of a closed subscription.
        self.queue: asyncio.Queue[Event | _End] = asyncio.Queue(maxsize=maxsize + 1)
        #: The largest number of events the queue held at once (the end marker not counted).
        self.peak = 0
        #: None while open; "closed" (by `close()` or the bus) or "overflow".
        self.closed_reason: str | None = None
        #: Set once the subscription is closed, whatever closed it.
        self.done = asyncio.Event()
        self._resync_pending = False
        self._end_queued = False
        self._last_taken: ChangeBatch | None = None

    # -- the consumer's side -------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self.closed_reason is not None and self.queue.empty():
            raise StopAsyncIteration
        item = await self.queue.get()
        if isinstance(item, _End):
            self._end_queued = False
            raise StopAsyncIteration
        if isinstance(item, Resync):
            self._resync_pending = False
        elif isinstance(item, Delivery):
            self._last_taken = item.batch
        return item

    def close(self) -> None:
        """Stop receiving (safe to call twice); the iterator ends after what it already holds."""
        self._close("closed", drain=False)

    def rekey(self, key: Hashable) -> None:
        """Move to the group of another permission set (after the subscriber's permissions changed)."""
        if self.closed_reason is None and key != self.key:
            self._bus._move(self, key)

    @property
    def size(self) -> int:
        """Events waiting in the queue (the end marker not counted)."""
        return self.queue.qsize() - (1 if self._end_queued else 0)

    # -- the bus's side ------------------------------------------------------------------------

    def _offer(self, event: Event) -> None:
        if self.closed_reason is not None:
            return
        if self.queue.qsize() >= self.maxsize:
            self._overflow()  # the queue gives way to one resync event (or the subscription closes)
            if isinstance(event, AccessEvent) and self.closed_reason is None:
                self._put(event)  # an access event is never dropped (queue_size is at least 2)
            return
        self._put(event)

    def _overflow(self) -> None:
        if self.closed_reason is not None:
            return
        if self._resync_pending:
            _log.info("live subscriber of tenant %s closed: it did not read its resync event", self.tenant_id)
            self._close("overflow", drain=True)
            return
        self._drain()
        last = self._last_taken
        self._put(Resync(last_batch=last.batch_id if last else None, last_at=last.received_at if last else None,
                         reason="overflow"))
        self._resync_pending = True

    def _put(self, event: Event) -> None:
        if isinstance(event, Resync):
            self._resync_pending = self._resync_pending or event.reason == "overflow"
        self.queue.put_nowait(event)
        self.peak = max(self.peak, self.queue.qsize())

    def _drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()

    def _close(self, reason: str, *, drain: bool) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        if drain:
            self._drain()
        self.queue.put_nowait(_END)  # the spare slot: never beyond the bound plus this marker
        self._end_queued = True
        self.done.set()
        self._bus._remove(self)


@dataclass(eq=False)
class _Group:
    tenant_id: uuid.UUID
    key: Hashable
    members: set[Subscription] = field(default_factory=set)
    tail: asyncio.Task[None] | None = None
    pending: int = 0
    behind: bool = False


class Bus:
    """The subscribers of one process and the fan-out to them (see the module docstring)."""

    def __init__(self, config: LiveConfig | None = None, *, reader: Reader | None = None) -> None:
        self.config = config or LiveConfig()
        self._reader = reader
        self._reads = asyncio.Semaphore(self.config.max_reads)
        self._groups: dict[tuple[uuid.UUID, Hashable], _Group] = {}
        self._by_tenant: dict[uuid.UUID, set[_Group]] = {}
        self._access_callbacks: list[Callable[[AccessEvent], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: The last batch handed to the subscribers' groups (None before the first).
        self.last_batch: ChangeBatch | None = None
        #: Shared reads run so far (one per group and batch), for tests and the benchmark.
        self.reads = 0

    def set_reader(self, reader: Reader | None) -> None:
        """The shared read each group's delivery carries (`Delivery.shared`); None: deliver batches alone."""
        self._reader = reader

    def on_access(self, callback: Callable[[AccessEvent], None]) -> Callable[[], None]:
        """Call `callback` with every access event of the process; returns a function removing it."""
        self._access_callbacks.append(callback)
        return lambda: self._access_callbacks.remove(callback) if callback in self._access_callbacks else None

    @property
    def subscribers(self) -> int:
        return sum(len(group.members) for group in self._groups.values())

    def subscribe(
        self,
        tenant_id: uuid.UUID,
        key: Hashable,
        *,
        accepts: Callable[[ChangeBatch], bool] | None = None,
        user_id: uuid.UUID | None = None,
        session_id: uuid.UUID | None = None,
        api_key_id: uuid.UUID | None = None,
    ) -> Subscription:
        """A new subscriber of `tenant_id`'s batches, sharing reads with the others of the same key."""
        sub = Subscription(
            self, tenant_id, key, accepts, user_id=user_id, session_id=session_id, api_key_id=api_key_id,
            maxsize=self.config.queue_size,
        )
        self._group(tenant_id, key).members.add(sub)
        return sub

    # -- what the listener hands over ----------------------------------------------------------

    def publish(self, batch: ChangeBatch) -> None:
        """Deliver one committed batch to every subscriber of its tenant that accepts it."""
        self.last_batch = batch
        for group in list(self._by_tenant.get(batch.tenant_id, ())):
            members = [sub for sub in group.members if _accepts(sub, batch)]
            if not members:
                continue
            if self._reader is None and group.tail is None:
                for sub in members:  # nothing to read: straight into the queues
                    sub._offer(Delivery(batch=batch))
                continue
            if group.pending >= self.config.queue_size:
                group.behind = True  # its reads cannot keep up: skipped, and a resync once they are done
                continue
            group.pending += 1
            previous = group.tail
            task = asyncio.get_running_loop().create_task(self._deliver(group, batch, members, previous))
            group.tail = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def resync(self, last_batch: ChangeBatch | None, *, reason: str = "reconnect") -> None:
        """Tell every subscriber that events may have been missed since `last_batch`."""
        event = Resync(
            last_batch=last_batch.batch_id if last_batch else None,
            last_at=last_batch.received_at if last_batch else None,
            reason=reason,
        )
        for group in list(self._groups.values()):
            for sub in list(group.members):
                sub._offer(event)

    def access(self, event: AccessEvent) -> None:
        """Hand an access event to the subscribers it concerns and to the `on_access` callbacks."""
        for group in list(self._by_tenant.get(event.tenant_id, ())):
            for sub in list(group.members):
                if event.concerns(
                    tenant_id=sub.tenant_id, user_id=sub.user_id, session_id=sub.session_id, api_key_id=sub.api_key_id
                ):
                    sub._offer(event)
        for callback in list(self._access_callbacks):
            try:
                callback(event)
            except Exception:
                _log.exception("live access callback failed")

    async def drain(self) -> None:
        """Wait until every delivery started so far has reached the queues (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Close every subscription; deliveries still under way after `grace` seconds are cancelled."""
        for group in list(self._groups.values()):
            for sub in list(group.members):
                sub._close("closed", drain=False)
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    # -- inside --------------------------------------------------------------------------------

    async def _deliver(
        self, group: _Group, batch: ChangeBatch, members: list[Subscription], previous: asyncio.Task[None] | None
    ) -> None:
        shared: object = None
        failed = False
        try:
            if self._reader is not None:
                async with self._reads:
                    self.reads += 1
                    try:
                        shared = await self._reader(batch, group.key)
                    except Exception:
                        _log.exception("live read of batch %s failed", batch.batch_id)
                        failed = True
            if previous is not None:
                await asyncio.wait([previous])  # keep the group's order of batches
        finally:
            group.pending -= 1
            if group.tail is asyncio.current_task():
                group.tail = None
        for sub in members:
            if failed:
                sub._overflow()  # what it would have received is unknown: it catches up instead
            else:
                sub._offer(Delivery(batch=batch, shared=shared))
        if group.behind and group.pending == 0:
            group.behind = False
            skipped = Resync(last_batch=batch.batch_id, last_at=batch.received_at, reason="overflow")
            for sub in list(group.members):
                sub._offer(skipped)

    def _group(self, tenant_id: uuid.UUID, key: Hashable) -> _Group:
        group = self._groups.get((tenant_id, key))
        if group is None:
            group = _Group(tenant_id, key)
            self._groups[(tenant_id, key)] = group
            self._by_tenant.setdefault(tenant_id, set()).add(group)
        return group

    def _remove(self, sub: Subscription) -> None:
        group = self._groups.get((sub.tenant_id, sub.key))
        if group is None:
            return
        group.members.discard(sub)
        if not group.members:
            del self._groups[(sub.tenant_id, sub.key)]
            tenant_groups = self._by_tenant.get(sub.tenant_id)
            if tenant_groups is not None:
                tenant_groups.discard(group)
                if not tenant_groups:
                    del self._by_tenant[sub.tenant_id]

    def _move(self, sub: Subscription, key: Hashable) -> None:
        self._remove(sub)
        sub.key = key
        self._group(sub.tenant_id, key).members.add(sub)


def _accepts(sub: Subscription, batch: ChangeBatch) -> bool:
    if sub.accepts is None:
        return True
    try:
        return sub.accepts(batch)
    except Exception:
        _log.exception("live subscriber filter failed")
        return False
