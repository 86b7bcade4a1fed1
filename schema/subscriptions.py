"""The Subscription type: live change alerts over graphql-transport-ws (schema/websocket.py).

Events come from the process's live bus (live/bus.py): one committed change batch of the caller's
tenant at a time. What a delivery sends is read with the subscriber's tenant and its permissions as
they are at that moment, through the read machinery of the queries:

- The rows a batch names are read once per (tenant, permission set) for all subscribers sharing it
  (`BatchReader`, the bus's reader): `readable()` with that set's ReadScope, so the row rules hold.
  Rules that depend on the user (own rows: users, user_roles, user_sessions) are read again per
  subscriber through its own loaders. The batch's change_history rows are read the same way, so the
  trail rule (resolvers/common/trail_guard.py) decides which are served and their guarded values
  are withheld per field when served (`ChangeHistory.oldValue`/`newValue`).
- The objects sent are the query types (`ExternalDataChange`, `OpportunityProject`, `Activity`,
  `ChangeHistory`) built from those rows: their fields resolve like a query's, field rules
  (@requiresPermission) included, with a read connection of the delivery's own.
- Permissions are re-read when their cache expires (the earliest assignment expiry, the session's
  deadline, the re-check interval) and when a role change is announced; an ended session closes
  the socket with 4401, a deactivated user or tenant with 4403.
- Some events may have been missed (the LISTEN connection was lost, or the subscriber's queue
  overflowed): the subscriber gets an event with `resync` set (the last batch delivered and when)
  and catches up with `externalDataChanges(filter: {changeTimestamp: {gte: ...}})` or
  `viewer.notifications`. A subscriber whose queue overflows again before it read that event gets
  an error (code SUBSCRIPTION_OVERFLOW, in a `next` message) and its subscription completes.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from sqlalchemy import Table, select
from strawberry import relay

import models
from auth.principal import Principal
from auth.rules import ENTITY_TABLES, READ_RULES
from live.access import Access, load_access
from live.bus import Bus
from live.events import AccessEnded, Resync
from models.db import RequestConnection
from models.enums import EntityType, ImpactLevel
from resolvers.common.loaders import columns_of, readable
from resolvers.common.scope import ReadScope
from schema.activities import Activity
from schema.audit import ChangeHistory
from schema.context import Info
from schema.external_data import ExternalDataChange
from schema.opportunities import OpportunityProject
from schema.websocket import SubscriptionContext, TransportWSHandler

__all__ = ["BatchReader", "SharedRead", "Subscription"]

_NIL = uuid.UUID(int=0)
_IMPACT_ORDER = {level: i for i, level in enumerate(ImpactLevel)}
_CHANGES: Table = models.ChangeHistory.__table__
#: Types whose read rule depends on who reads (own rows; access levels: named readers and the uploader of
#: restricted documents): read per subscriber, not shared. The shared read of the trail has no user, so a
#: restricted document's changes reach no subscriber there.
_OWN_TABLES = frozenset(
    name for name, rule in READ_RULES.items() if rule.own is not None or rule.levels is not None
)


# -- the shared read ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SharedRead:
    """What one (tenant, permission set) may read of one batch."""

    rows: dict[tuple[str, uuid.UUID], Any]
    changes: list[Any]
    # (entity type, id) -> names of the fields the batch changed (whatever the reader may see:
    # used only to tell an assignment from another change, never sent).
    fields: dict[tuple[str, uuid.UUID], frozenset[str]]


class BatchReader:
    """The bus's reader: one read per batch and (tenant, permission set), shared by its subscribers."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._principals: dict[tuple[uuid.UUID, Hashable], Principal] = {}

    def register(self, key: Hashable, principal: Principal) -> None:
        """Remember the grants a bus key stands for (the reader is called with the key alone)."""
        self._principals[(principal.tenant_id, key)] = dataclasses.replace(principal, user_id=_NIL)

    async def __call__(self, batch: Any, key: Hashable) -> SharedRead:
        principal = self._principals[(batch.tenant_id, key)]
        scope = ReadScope(principal)
        db = RequestConnection(self.engine, batch.tenant_id, read_only=True)
        try:
            rows: dict[tuple[str, uuid.UUID], Any] = {}
            for entity_type in sorted(batch.entity_types):
                table_name = ENTITY_TABLES.get(entity_type)
                if table_name is None or table_name in _OWN_TABLES or table_name not in models.Base.metadata.tables:
                    continue
                table: Table = models.Base.metadata.tables[table_name]
                ids = batch.ids(entity_type)
                stmt = readable(select(*columns_of(table)), table, scope).where(table.c.id.in_(ids))
                for row in (await db.execute(stmt)).all():
                    rows[(entity_type, row.id)] = row
            trail = readable(select(*columns_of(_CHANGES)), _CHANGES, scope).where(
                _CHANGES.c.change_batch_id == batch.batch_id
            ).order_by(_CHANGES.c.change_timestamp, _CHANGES.c.id)
            changes = list((await db.execute(trail)).all())
            names = select(_CHANGES.c.entity_type, _CHANGES.c.entity_id, _CHANGES.c.field_name).where(
                _CHANGES.c.change_batch_id == batch.batch_id
            )
            fields: dict[tuple[str, uuid.UUID], set[str]] = {}
            for entity_type, entity_id, field_name in (await db.execute(names)).all():
                fields.setdefault((entity_type, entity_id), set()).add(field_name)
        finally:
            await db.close()
        return SharedRead(rows, changes, {k: frozenset(v) for k, v in fields.items()})


# -- payload types ------------------------------------------------------------------------------


@strawberry.type(description="Events may have been missed: catch up by query, then keep listening.")
class LiveResync:
    last_batch_id: uuid.UUID | None = strawberry.field(
        description="The last change batch delivered before the gap (null: none yet)."
    )
    last_at: datetime | None = strawberry.field(
        description="When that batch arrived: query `externalDataChanges` changed since a little before it,"
        " and `viewer.notifications`, to catch up."
    )
    reason: str = strawberry.field(
        description="Why: `reconnect` (the server lost its database listener) or `overflow` (events came faster"
        " than this client read them)."
    )


@strawberry.type(description="A detected change of external data, or a resync notice.")
class ExternalDataChangedEvent:
    change: ExternalDataChange | None = strawberry.field(description="The change (null on a resync notice).")
    resync: LiveResync | None = strawberry.field(description="Set when events may have been missed.")


@strawberry.type(description="An opportunity project changed (a committed write), or a resync notice.")
class OpportunityProjectChangedEvent:
    project: OpportunityProject | None = strawberry.field(
        description="The project as it is after the change (null on a resync notice)."
    )
    batch_id: uuid.UUID | None = strawberry.field(description="The change batch (its `history` rows share it).")
    resync: LiveResync | None = strawberry.field(description="Set when events may have been missed.")


@strawberry.type(description="An activity was assigned to the viewer, or a resync notice.")
class ActivityAssignedEvent:
    activity: Activity | None = strawberry.field(description="The activity (null on a resync notice).")
    resync: LiveResync | None = strawberry.field(description="Set when events may have been missed.")


@strawberry.type(description="One entity a committed batch wrote that the subscriber may read.")
class ChangedEntity:
    entity_type: EntityType = strawberry.field(description="The kind of record.")
    entity_id: uuid.UUID = strawberry.field(description="Its rowId.")
    node_id: relay.GlobalID = strawberry.field(description="Its global id, for `node(id:)` and cache keys.")


@strawberry.type(description="A committed change batch (one mutation or one sync write), or a resync notice.")
class ChangeBatchEvent:
    batch_id: uuid.UUID | None = strawberry.field(description="The batch (null on a resync notice).")
    entities: list[ChangedEntity] = strawberry.field(
        description="The entities written that the subscriber may read (others are left out)."
    )
    changes: list[ChangeHistory] = strawberry.field(
        description="The batch's field changes the subscriber may read, guarded values withheld as in `history`."
    )
    resync: LiveResync | None = strawberry.field(description="Set when events may have been missed.")


# -- the delivery loop --------------------------------------------------------------------------


def _resync(event: Resync) -> LiveResync:
    return LiveResync(last_batch_id=event.last_batch, last_at=event.last_at, reason=str(event.reason))


_TYPE_NAMES = {
    EntityType.OPPORTUNITY_PROJECT.value: "OpportunityProject",
}


class _Subscriber:
    """One subscription operation's place on the bus, with its principal kept current."""

    def __init__(self, info: Info) -> None:
        context = info.context
        if not isinstance(context, SubscriptionContext) or context.connection is None:
            raise GraphQLError("Subscriptions are served over WebSocket only.", extensions={"code": "BAD_REQUEST"})
        self.context: SubscriptionContext = context
        self.connection: TransportWSHandler = context.connection
        principal = self.connection.principal
        if principal is None:  # pragma: no cover - the handler refuses subscribe before ack
            raise GraphQLError("Authentication required.", extensions={"code": "UNAUTHENTICATED"})
        self.principal: Principal = principal
        self.access: Access | None = None

    async def load(self) -> Access | None:
        """Read the subscriber's access now; None (the socket closed with its code) when it has ended."""
        view = self.connection.view
        principal = self.principal
        self.access = await load_access(
            self.context.engine, tenant_id=principal.tenant_id, user_id=principal.user_id,
            session_id=principal.session_id, api_key_id=principal.api_key_id, recheck=view.live_recheck,
        )
        code = self.access.state.close_code
        if code is not None:
            await self.connection.close(code, f"Access ended: {self.access.state.value}")
            return None
        self.principal = dataclasses.replace(principal, grants=self.access.grants)
        view.batch_reader.register(self.access.key, self.principal)
        return self.access

    def concerns(self, event: Any) -> bool:
        p = self.principal
        return bool(event.concerns(tenant_id=p.tenant_id, user_id=p.user_id, session_id=p.session_id,
                                   api_key_id=p.api_key_id))

    async def events(
        self, accepts: Callable[[Any], bool], deliver: Callable[[Any, SharedRead], Awaitable[list[Any]]],
        resync: Callable[[LiveResync], Any],
    ) -> AsyncGenerator[Any, None]:
        view = self.connection.view
        bus: Bus = view.live_bus(self.context)
        access = await self.load()
        if access is None:
            return
        p = self.principal
        sub = bus.subscribe(p.tenant_id, access.key, accepts=accepts, user_id=p.user_id,
                            session_id=p.session_id, api_key_id=p.api_key_id)
        try:
            async for event in sub:
                if isinstance(event, AccessEnded):
                    if self.concerns(event):
                        key = access.key
                        if (access := await self.load()) is None:
                            return
                        if access.key != key:
                            sub.rekey(access.key)
                    continue
                if isinstance(event, Resync):
                    yield resync(_resync(event))
                    continue
                shared = event.shared
                if not isinstance(shared, SharedRead):
                    continue
                if access.stale(datetime.now(UTC)):
                    key = access.key
                    if (access := await self.load()) is None:
                        return
                    if access.key != key:
                        sub.rekey(access.key)
                        # This batch was read for the old permission set: read it again for the new one.
                        shared = await view.batch_reader(event.batch, access.key)
                await self.context.begin_delivery(self.principal)
                for item in await deliver(event.batch, shared):
                    yield item
            if sub.closed_reason == "overflow":
                raise GraphQLError(
                    "Subscription dropped: events came faster than this client read them. Subscribe again and"
                    " catch up with externalDataChanges.",
                    extensions={"code": "SUBSCRIPTION_OVERFLOW"},
                )
        finally:
            sub.close()
            await self.context.close()


async def _own_rows(
    context: SubscriptionContext, batch: Any, entity_type: str, shared: SharedRead
) -> list[tuple[uuid.UUID, Any]]:
    """The rows of `entity_type` in `batch` the subscriber may read, in the batch's order."""
    table_name = ENTITY_TABLES.get(entity_type)
    if table_name is None or table_name not in models.Base.metadata.tables:
        return []
    ids = batch.ids(entity_type)
    if table_name not in _OWN_TABLES:
        return [(i, shared.rows[(entity_type, i)]) for i in ids if (entity_type, i) in shared.rows]
    table = models.Base.metadata.tables[table_name]
    loaded = await context.loaders.by_id(table).load_many(ids)
    return [(i, row) for i, row in zip(ids, loaded, strict=True) if row is not None]


def _project_id(value: relay.GlobalID | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        if value.type_name != "OpportunityProject":
            raise ValueError
        return uuid.UUID(value.node_id)
    except ValueError:
        raise GraphQLError(
            "Not an OpportunityProject id.", extensions={"code": "BAD_USER_INPUT", "field": "projectId"}
        ) from None


def _at_least(level: ImpactLevel | None, minimum: ImpactLevel | None) -> bool:
    if minimum is None:
        return True
    return level is not None and _IMPACT_ORDER[ImpactLevel(level)] >= _IMPACT_ORDER[minimum]


def _types_accept(types: Iterable[str]) -> Callable[[Any], bool]:
    wanted = frozenset(types)
    return lambda batch: bool(wanted & batch.entity_types)


@strawberry.type(description="Live change alerts (graphql-transport-ws over WebSocket at /graphql; docs/api.md).")
class Subscription:
    @strawberry.subscription(
        description="Detected changes of external data the caller may read: of one project (`projectId`), or of"
        " every project it may see; only at or above `minImpact` when given."
    )
    async def external_data_changed(
        self,
        info: Info,
        project_id: Annotated[
            relay.GlobalID | None, strawberry.argument(description="Only this OpportunityProject's changes.")
        ] = None,
        min_impact: Annotated[
            ImpactLevel | None, strawberry.argument(description="Only changes of this impact or higher.")
        ] = None,
    ) -> AsyncGenerator[ExternalDataChangedEvent, None]:
        project = _project_id(project_id)
        subscriber = _Subscriber(info)
        kind = EntityType.EXTERNAL_DATA_CHANGE.value

        async def deliver(batch: Any, shared: SharedRead) -> list[Any]:
            out = []
            for _, row in await _own_rows(subscriber.context, batch, kind, shared):
                if project is not None and row.opportunity_project_id != project:
                    continue
                if not _at_least(row.impact_level, min_impact):
                    continue
                out.append(ExternalDataChangedEvent(change=ExternalDataChange.from_row(row), resync=None))
            return out

        async for event in subscriber.events(
            _types_accept([kind]), deliver, lambda r: ExternalDataChangedEvent(change=None, resync=r)
        ):
            yield event

    @strawberry.subscription(description="Committed changes of one opportunity project the caller may read.")
    async def opportunity_project_changed(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="The OpportunityProject's global id.")],
    ) -> AsyncGenerator[OpportunityProjectChangedEvent, None]:
        project = _project_id(id)
        subscriber = _Subscriber(info)
        kind = EntityType.OPPORTUNITY_PROJECT.value

        async def deliver(batch: Any, shared: SharedRead) -> list[Any]:
            row = shared.rows.get((kind, project)) if project is not None else None
            if row is None:
                return []
            return [OpportunityProjectChangedEvent(
                project=OpportunityProject.from_row(row), batch_id=batch.batch_id, resync=None
            )]

        async for event in subscriber.events(
            lambda batch: project is not None and project in batch.ids(kind),
            deliver,
            lambda r: OpportunityProjectChangedEvent(project=None, batch_id=None, resync=r),
        ):
            yield event

    @strawberry.subscription(
        description="Activities assigned to the viewer (created for it, or reassigned to it) that it may read."
    )
    async def activity_assigned(self, info: Info) -> AsyncGenerator[ActivityAssignedEvent, None]:
        subscriber = _Subscriber(info)
        kind = EntityType.ACTIVITY.value

        async def deliver(batch: Any, shared: SharedRead) -> list[Any]:
            out = []
            viewer = subscriber.principal.user_id
            for activity_id, row in await _own_rows(subscriber.context, batch, kind, shared):
                if row.assigned_to != viewer or "assigned_to" not in shared.fields.get((kind, activity_id), ()):
                    continue
                out.append(ActivityAssignedEvent(activity=Activity.from_row(row), resync=None))
            return out

        async for event in subscriber.events(
            _types_accept([kind]), deliver, lambda r: ActivityAssignedEvent(activity=None, resync=r)
        ):
            yield event

    @strawberry.subscription(
        description="Every committed change batch of the tenant that wrote something the caller may read (of the"
        " given `entityTypes` only, when given): for clients keeping a cache fresh."
    )
    async def change_batch_committed(
        self,
        info: Info,
        entity_types: Annotated[
            list[EntityType] | None, strawberry.argument(description="Only batches writing these kinds of record.")
        ] = None,
    ) -> AsyncGenerator[ChangeBatchEvent, None]:
        subscriber = _Subscriber(info)
        wanted = frozenset(EntityType(t).value for t in entity_types) if entity_types else None

        async def deliver(batch: Any, shared: SharedRead) -> list[Any]:
            entities: list[ChangedEntity] = []
            for entity_type in sorted(batch.entity_types):
                if wanted is not None and entity_type not in wanted:
                    continue
                for entity_id, _ in await _own_rows(subscriber.context, batch, entity_type, shared):
                    entities.append(ChangedEntity(
                        entity_type=EntityType(entity_type), entity_id=entity_id,
                        node_id=relay.GlobalID(_type_name(entity_type), str(entity_id)),
                    ))
            if not entities:
                return []
            seen = {(e.entity_type.value, e.entity_id) for e in entities}
            changes = [
                node for row in shared.changes
                if (row.entity_type, row.entity_id) in seen and (node := ChangeHistory.from_row(row)) is not None
            ]
            return [ChangeBatchEvent(batch_id=batch.batch_id, entities=entities, changes=changes, resync=None)]

        accepts = (lambda batch: bool(wanted & batch.entity_types)) if wanted is not None else None
        async for event in subscriber.events(
            accepts or (lambda batch: True), deliver,
            lambda r: ChangeBatchEvent(batch_id=None, entities=[], changes=[], resync=r),
        ):
            yield event


def _type_name(entity_type: str) -> str:
    """The GraphQL type of an entity type's rows (`opportunity_project` -> `OpportunityProject`)."""
    return _TYPE_NAMES.get(entity_type) or "".join(part.capitalize() for part in entity_type.split("_"))

