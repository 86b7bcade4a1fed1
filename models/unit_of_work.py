"""The unit of work: one audited transaction for one write (a GraphQL mutation field, a job step).

    async with UnitOfWork(engine, chain=chain, context=AuditContext(...), redaction=redaction) as uow:
        project = await uow.lock(OpportunityProject, project_id, updated_at=seen)
        uow.assign(project, {"priority_level": "high"})
    # committed here; an exception inside the block rolls everything back

What it guarantees:

- One connection of the server's role, one READ COMMITTED transaction, the tenant set
  (`set_tenant`) before anything else. `uow.session` is an `AsyncSession` bound to that
  connection whose class is `AuditedSession`: every flush of an audited entity writes its
  audit_logs and change_history rows in the same transaction (models/audit_trail.py), and no
  statement can write an audited table around the flush. `uow.connection` is the same
  connection, for plain statements that must share the transaction (e.g. an idempotency key).
- Optimistic concurrency: `lock()` reads the row `FOR UPDATE` (so concurrent writers queue) and
  refuses with `Conflict` unless its `updated_at` is exactly the value the caller read, and this
  transaction's timestamp is later than it (docs/decisions.md W12: the row's `updated_at` then
  always moves forward, so a value a client saw is never produced again by another write).
- On leaving the block: a final flush, then `pg_notify('gwm_changes', ...)` once if audited rows
  changed (inside the transaction, so only a commit announces anything), then COMMIT, then the
  `on_commit` callbacks. Any failure up to and including the COMMIT rolls back the change, its
  audit rows and its notification together.
- The common flush, one changed object (its row read by `lock`) or one new object of an audited
  model with plain column values, is one `UPDATE ... RETURNING` or `INSERT ... RETURNING` of its own
  (`_flush_one_update`, `_flush_one_insert`), without the ORM's flush machinery: the object, the audit
  and history rows and the guard end up exactly as after the ORM's flush (docs/decisions.md W29).
  Every other flush is the ORM's. Those statements, `lock`'s and `find`'s row reads, the audit rows'
  append and COMMIT run on the driver's connection where they can (models/driver_sql.py, W30).
- Database errors the caller can cause (a unique value taken, a reference to a missing row, a
  value outside a CHECK, a lost concurrency race) become `models.errors` exceptions naming the
  column where PostgreSQL says which; anything else propagates unchanged (a bug or an outage).

The surface: `lock(model, id, updated_at=)` (FOR UPDATE, optimistic check), `find(model, id)`
(FOR KEY SHARE: exists and stays), `assign(obj, {column: value})` (checked against the column
types; returns what changed), `add(obj)`, `await delete(obj)`, `archive(obj)`, `await flush()`,
`on_commit(callback)`, `set_reason(text)` (audit_logs.change_reason), `set_permission(text)`,
`set_actor(user_id)`, `label(obj, action, description)` (the audit row of `obj`'s change carries
`action`, e.g. `auth.role.created`, instead of CREATE/UPDATE/DELETE), `record_event(action, ...)`
(one audit_logs row for a change of a table the hook does not audit, e.g. an API key created or a
session revoked: written after the last flush, before COMMIT, in the same transaction);
`connection`, `session`, `context`, `change_batch_id`, `actor_id`, `tenant_id`, `entities`,
`audit_rows`. Errors: `models.errors.NotFound` / `Conflict` / `Invalid` (field = column name).

The notification payload is `{"tenant": id, "batch": change_batch_id, "entities": [{"type":
entity type, "id": id}, ...]}`, kept under PostgreSQL's 8000-byte limit: when the list would not
fit it is cut and `"truncated": true` is added (the batch id finds every row in change_history).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Any, Self, TypeVar

import asyncpg
from sqlalchemy import (
    ForeignKeyConstraint,
    Numeric,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import ColumnProperty, RelationshipProperty, object_mapper
from sqlalchemy.orm import class_mapper as object_mapper_of
from sqlalchemy.orm.base import PASSIVE_NO_INITIALIZE, instance_state
from sqlalchemy.orm.exc import StaleDataError, UnmappedColumnError
from sqlalchemy.orm.persistence import _collect_insert_commands
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.selectable import Select

from models.audit_chain import AuditChain
from models.audit_trail import AUDITED, AuditContext, AuditedSession, AuditTrail, Redaction, TrailError
from models.base import Base
from models.db import set_tenant
from models.driver_sql import close as driver_close
from models.driver_sql import commit as driver_commit
from models.driver_sql import fetch
from models.enums import RiskLevel
from models.errors import Conflict, DomainError, Invalid, NotFound

__all__ = ["CHANNEL", "NOTIFY_LIMIT", "UnitOfWork", "notification_payload", "translate_error"]

_log = logging.getLogger(__name__)

#: The LISTEN channel of committed change batches.
CHANNEL = "gwm_changes"
#: Bytes a notification payload may take (PostgreSQL refuses 8000 or more; room left for safety).
NOTIFY_LIMIT = 7900

M = TypeVar("M")


class UnitOfWork:
    """One transaction, tenant-scoped and audited; see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        chain: AuditChain,
        context: AuditContext,
        redaction: Redaction,
        notify: bool = True,
        connection: AsyncConnection | None = None,
    ) -> None:
        self._engine = engine
        self._trail = AuditTrail(context=context, chain=chain, redaction=redaction)
        self._notify = notify
        # `connection`: a READ COMMITTED transaction already begun with `app.tenant_id` set to this
        # unit's tenant (the request's, whose caller lookup began it: models/db.py
        # `RequestConnection.detach`), taken over instead of beginning one: the unit commits or rolls
        # it back and closes the connection, as its own.
        self._adopted = connection
        self._conn: AsyncConnection | None = None
        self._session: AsyncSession | None = None
        self._remove_guard: Callable[[], None] | None = None
        self._on_commit: list[Callable[[], Awaitable[None]]] = []
        self._finished = False
        self.committed = False

    # -- the transaction -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        adopted, self._adopted = self._adopted, None
        conn = adopted if adopted is not None else await self._engine.connect()
        try:
            if adopted is None:
                # The audit chain appends under READ COMMITTED (models/audit_chain.py); so do the
                # optimistic checks, which must see the latest committed row once its lock is granted.
                await conn.execution_options(isolation_level="READ COMMITTED")
                await conn.begin()
                if not await _begin_scoped(conn, self._trail.context.tenant_id):
                    await set_tenant(conn, self._trail.context.tenant_id)
            self._remove_guard = self._trail.guard(conn.sync_connection)  # type: ignore[arg-type]
            session = AsyncSession(
                bind=conn,
                sync_session_class=AuditedSession,
                expire_on_commit=False,
                autoflush=False,
                join_transaction_mode="rollback_only",
            )
            self._trail.install(session.sync_session)
        except BaseException:
            await _discard(conn)
            raise
        self._conn, self._session = conn, session
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.commit()
            return
        await self.rollback()
        if isinstance(exc, DBAPIError):
            domain = translate_error(exc)
            if domain is not None:
                raise domain from exc

    async def commit(self) -> None:
        """Flush, announce the batch, COMMIT, then run the on_commit callbacks."""
        if self._finished:
            return
        try:
            await self.flush(announce=True)
            if self._trail.events_pending:
                await self.connection.run_sync(self._trail.write_events)
            if self._notify and self._trail.entities and not self._trail.announced:
                payload = notification_payload(
                    self._trail.context.tenant_id, self._trail.context.change_batch_id, self._trail.entities
                )
                await self.connection.execute(
                    text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
                )
            if not await driver_commit(self.connection):
                await self.connection.commit()
        except DBAPIError as exc:
            await self.rollback()
            domain = translate_error(exc)
            if domain is not None:
                raise domain from exc
            raise
        except BaseException:
            await self.rollback()
            raise
        self.committed = True
        await self._close()
        for callback in self._on_commit:
            try:
                await callback()
            except Exception:  # committed already: a failing callback must not report the write as failed
                _log.exception("on_commit callback failed after batch %s", self.change_batch_id)

    async def rollback(self) -> None:
        """Roll back everything (safe to call twice, and on a broken connection)."""
        if self._finished:
            return
        conn = self._conn
        try:
            if self._session is not None:
                await self._session.close()
            if conn is not None and not conn.closed:
                await conn.rollback()
        except Exception:
            # The connection is gone (terminated backend, network): PostgreSQL rolls back by itself.
            if conn is not None:
                await conn.invalidate()
        finally:
            await self._close()

    async def _close(self) -> None:
        self._finished = True
        conn, self._conn = self._conn, None
        session, self._session = self._session, None
        remove_guard, self._remove_guard = self._remove_guard, None
        if remove_guard is not None:
            remove_guard()
        if session is not None:
            if session.sync_session._transaction is None:
                session.sync_session.close()  # nothing begun: forgets its objects, no I/O (no greenlet)
            else:
                await session.close()
        if conn is not None and not driver_close(conn):
            await _discard(conn)

    def on_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` after a successful COMMIT (not after a rollback); its errors are logged."""
        self._on_commit.append(callback)

    # -- access ----------------------------------------------------------------------------------

    @property
    def connection(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open")
        return self._conn

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("the unit of work is not open")
        return self._session

    @property
    def context(self) -> AuditContext:
        return self._trail.context

    @property
    def change_batch_id(self) -> uuid.UUID:
        return self._trail.context.change_batch_id

    @property
    def actor_id(self) -> uuid.UUID | None:
        return self._trail.context.user_id

    @property
    def tenant_id(self) -> uuid.UUID:
        return self._trail.context.tenant_id

    @property
    def entities(self) -> list[tuple[str, uuid.UUID]]:
        """(entity type, id) of every audited row changed so far."""
        return list(self._trail.entities)

    @property
    def audit_rows(self) -> tuple[int, int]:
        """How many (audit_logs, change_history) rows this unit of work has appended."""
        return self._trail.audit_rows, self._trail.history_rows

    def stored(self, table: str, entity_id: uuid.UUID) -> dict[str, Any] | None:
        """Every column of the row as this unit of work last wrote it or read it under its row lock (the
        audit trail's "before" of its next change, forgotten whenever a statement outside a flush may have
        changed rows behind the session); None when it does not know the row."""
        return self._trail.known_row(table, entity_id)

    def set_reason(self, reason: str | None) -> None:
        """Record `reason` as the change_reason of the audit rows of the next flushes."""
        self._trail.set_reason(reason)

    def set_actor(self, user_id: uuid.UUID | None) -> None:
        """Record `user_id` as the actor of the writes of the next flushes (and of queued events)."""
        self._trail.context = dataclasses.replace(self._trail.context, user_id=user_id)

    def label(self, obj: Any, action: str, description: str | None = None) -> None:
        """The audit row of `obj`'s change (in any later flush) carries `action` as its action_type
        and `description` as its operation description; change_history keeps the plain category."""
        self._trail.label(obj, action, description)

    def record_event(
        self,
        action: str,
        *,
        entity_type: str,
        entity_id: uuid.UUID | None,
        description: str | None = None,
        details: Mapping[str, Any] | None = None,
        risk: RiskLevel = RiskLevel.LOW,
        granted: bool = True,
    ) -> None:
        """One audit_logs row, in this transaction, for a change of a table the hook does not audit
        (docs/decisions.md W11): `details` go to after_values, secret-looking keys redacted."""
        self._trail.event(
            action,
            entity_type=entity_type,
            entity_id=entity_id,
            description=description,
            details=details,
            risk=risk,
            granted=granted,
        )

    def set_permission(self, permission: str | None) -> None:
        """The permission(s) recorded as having granted the writes of the next flushes."""
        self._trail.context = dataclasses.replace(self._trail.context, permission=permission)

    # -- reading and writing ---------------------------------------------------------------------

    def defer_audit_rows(self) -> None:
        """Keep the audit and history rows of every flush until the batch is complete (the next
        `flush(announce=True)`, or the commit), then append them all in two round trips, the second
        also sending the batch's notification: one round trip less than a notification of its own,
        and two less per further flush. The rows are in the same transaction either way; only the
        moment they are inserted moves (nothing in the unit reads them back)."""
        self._trail.defer = True

    async def flush(self, *, announce: bool = False) -> None:
        """Write pending changes (and their audit rows); database refusals become domain errors.

        `announce=True`: the batch is complete with this flush (only reads follow until the end):
        the rows `defer_audit_rows` kept are appended now, their statement sending the notification
        (and the commit none). A later change of an entity the notification does not name is refused
        (TrailError), so the one notification names every entity of the batch.
        """
        try:
            if (
                not await self._flush_one_update()
                and not await self._flush_one_insert()
                and not self.session.sync_session._is_clean()  # a clean session's flush does nothing
            ):
                await self.session.flush()
            if announce:
                await self._append_deferred()
        except DBAPIError as exc:
            domain = translate_error(exc)
            if domain is not None:
                raise domain from exc
            raise

    async def _flush_one_update(self) -> bool:
        """The flush of the common case, without the ORM's flush machinery: one changed object (nothing
        added or deleted), of an audited model, whose changed attributes are plain columns given plain
        values, and whose row this unit of work holds locked and knows (`lock`, or an earlier flush that
        wrote it). Then one `UPDATE ... SET <changed columns> WHERE id = ... RETURNING <every column>`,
        built once per model and set of columns, does what the flush's UPDATE does; the object takes the
        returned values as loaded and committed (as after a flush), and the audit trail records the change
        from the known row ("before") and the returned one ("after"), exactly as the flush hook does
        (`AuditTrail.record_update`). False (nothing done) for anything else: the ORM's flush handles it."""
        session = self.session.sync_session
        if session._new or session._deleted:
            return False
        modified = session.identity_map._modified
        if len(modified) != 1:
            return False
        (state,) = modified
        found = _single_row(state, "update")
        if found is None or state.key is None:
            return False
        obj, model, plan, mapper = found
        columns = plan[0]
        values = state.dict
        changed: dict[str, Any] = {}
        for key in state.committed_state:
            if key not in columns:
                return False  # a relationship, the primary key, or an attribute that is not a column
            history = state.manager[key].impl.get_history(state, values, PASSIVE_NO_INITIALIZE)
            if history.added:
                value = history.added[0]
                if isinstance(value, ClauseElement):
                    return False  # a SQL expression (e.g. now()): the ORM renders it
                changed[key] = value
        if not changed:
            return False
        table: Table = mapper.local_table
        before = self.stored(table.name, obj.id)
        if before is None:
            return False
        keys = tuple(sorted(changed))
        params = {f"gwm_set_{key}": changed[key] for key in keys}
        params["gwm_row_id"] = obj.id
        row = await self._flush_statement(_update_statement(model, keys), params, direct=True)
        if row is None:  # what the ORM's flush raises when its UPDATE matches no row
            raise StaleDataError(
                f"UPDATE statement on table '{table.name}' expected to update 1 row(s); 0 were matched."
            )
        await self._flushed(state, obj, plan[1], before, row)
        return True

    async def _flush_one_insert(self) -> bool:
        """`_flush_one_update`'s counterpart for the common create: one new object (nothing changed or
        deleted), of an audited model, with plain column values only (no relationship set, no SQL
        expression). Its INSERT takes the values the ORM's flush would send (the ORM's own collection of
        them: NULLs, defaults), returns every column, and the object becomes persistent with the returned
        values, as after a flush; the audit trail records it as the flush hook does. False (nothing done)
        for anything else."""
        session = self.session.sync_session
        if len(session._new) != 1 or session._deleted or session.identity_map._modified:
            return False
        (state,) = session._new
        found = _single_row(state, "insert")
        if found is None:
            return False
        obj, model, plan, mapper = found
        values = state.dict
        known = plan[2]
        if any(key not in known and key != "_sa_instance_state" for key in values):
            return False  # a relationship or collection set: the ORM's flush orders and links the rows
        table: Table = mapper.local_table
        conn = self.connection
        ((_, _, params, _, _, value_params, _, _),) = _collect_insert_commands(  # type: ignore[no-untyped-call]
            table, [(state, values, mapper, conn.sync_connection)]
        )
        if value_params:
            return False  # a SQL expression: the ORM renders it
        row = await self._flush_statement(_insert_statement(model), params, direct=True, insert=True)
        if row is None:
            raise TrailError(f"an inserted {table.name} row was not returned")
        await self._flushed(state, obj, plan[1], None, row)
        return True

    async def _flush_statement(
        self, statement: Any, params: dict[str, Any], *, direct: bool = False, insert: bool = False
    ) -> Any:
        """A single-row path's statement, run as the flush's own DML (the guard lets it through); its row.
        `direct`: run on the driver's connection where it can be (models/driver_sql.py: the same SQL, parameters
        and returned values, without SQLAlchemy's execution); `insert`: an INSERT of the columns given."""
        trail = self._trail
        trail.flushing = True
        try:
            rows = await fetch(self.connection, statement, params, insert=insert) if direct else None
            if rows is None:
                return (await self.connection.execute(statement, params)).mappings().first()
            return rows[0] if rows else None
        finally:
            trail.flushing = False

    async def _flushed(
        self, state: Any, obj: Any, columns: Any, before: dict[str, Any] | None, row: Mapping[str, Any]
    ) -> None:
        """The object takes the returned row and becomes persistent as after a flush; the audit trail records
        the write (queued when the unit's audit rows are deferred, so no statement is run here)."""
        after = dict(row)
        values = state.dict
        for name, key in columns:
            values[key] = after[name]
        self.session.sync_session._register_persistent({state})
        trail, conn = self._trail, self.connection
        if trail.defer and not trail.announced and conn.sync_connection is not None:
            trail.record_write(conn.sync_connection, obj, before, after)
        else:
            await conn.run_sync(trail.record_write, obj, before, after)

    async def _append_deferred(self) -> None:
        trail = self._trail
        if trail.defer and not trail.announced:
            notify = None
            if self._notify and trail.entities:
                context = trail.context
                notify = (CHANNEL, notification_payload(context.tenant_id, context.change_batch_id, trail.entities))
            await trail.append_queued_async(self.connection, notify)

    async def lock(
        self, model: type[M], entity_id: uuid.UUID, *, updated_at: Any = None, what: str = "", field: str = "id"
    ) -> M:
        """The row `entity_id` of `model`, locked (FOR UPDATE) until the end of the transaction.

        NotFound (on `field`) when it does not exist for this tenant. With `updated_at` (the
        value the caller read), Conflict unless the row still has exactly that value and this
        transaction began after it was written (so the write about to be made moves updated_at
        forward).
        """
        label = what or _label(model)
        obj, tx_now = await self._row(model, entity_id, label, field, key_share=False)
        self._trail.locked(obj)  # read under its row lock: the flush needs no second read of it
        if updated_at is not None:
            current = obj.updated_at
            if current != updated_at:
                raise Conflict(
                    f"The {label} was changed since you read it: read it again and retry with its "
                    "current updatedAt.",
                    field="updated_at",
                    current_updated_at=current,
                )
            if not tx_now > current:
                raise Conflict(
                    f"The {label} is being changed by another request: retry.",
                    field="updated_at",
                    current_updated_at=current,
                )
        return obj  # type: ignore[no-any-return]

    async def find(self, model: type[M], entity_id: uuid.UUID, *, what: str = "", field: str = "id") -> M:
        """The row `entity_id` of `model`, kept from being deleted (FOR KEY SHARE) until the end of
        the transaction, without blocking its other writers; NotFound (on `field`) when absent."""
        obj, _ = await self._row(model, entity_id, what or _label(model), field, key_share=True)
        return obj  # type: ignore[no-any-return]

    async def _row(self, model: Any, entity_id: uuid.UUID, label: str, field: str, *, key_share: bool) -> Any:
        params = {"gwm_row_id": entity_id, "gwm_tenant_id": self.tenant_id}
        try:
            row = await self._row_direct(model, params, key_share)
            if row is False:
                row = (await self.session.execute(_row_statement(model, key_share), params)).first()
        except DBAPIError as exc:
            domain = translate_error(exc)
            if domain is not None:
                raise domain from exc
            raise
        if row is None:
            raise NotFound(f"There is no {label} with this id.", field=field)
        return row

    async def rows(self, statement: Any, params: Mapping[str, Any]) -> Sequence[Any]:
        """The rows of a SELECT in this transaction (by position), run on the driver's connection where it can
        be (models/driver_sql.py: the same SQL and values, without SQLAlchemy's execution), else through
        SQLAlchemy. Anything but a SELECT goes through SQLAlchemy (where the audit trail's guard sees it)."""
        found = await fetch(self.connection, statement, params) if isinstance(statement, Select) else None
        if found is None:
            return (await self.connection.execute(statement, params)).all()
        return found

    async def _row_direct(self, model: Any, params: dict[str, Any], key_share: bool) -> Any:
        """`_row` without the ORM's loading: the row read on the driver's connection (models/driver_sql.py) by
        the same SELECT of every column, and the object made persistent from it as the ORM's load makes a new
        one (identity key, identity map, every column loaded and committed). (object, transaction instant),
        None when there is no such row, False (nothing sent) where the ORM's load must do it: a model the plan
        does not cover, load listeners, or an object of the row already in the session (the ORM refreshes it)."""
        plan = _load_plan(model)
        if plan is None:
            return False
        identity_class, manager, columns = plan
        session = self.session.sync_session
        identity_map = session.identity_map
        if (
            (identity_class, (params["gwm_row_id"],), None) in identity_map
            or manager.dispatch.load
            or manager.dispatch.refresh
            or session.dispatch.loaded_as_persistent
        ):
            return False
        rows = await fetch(self.connection, _core_row_statement(model, key_share), params)
        if rows is None:
            return False
        if not rows:
            return None
        row = rows[0]
        key = (identity_class, (row["id"],), None)
        if key in identity_map:  # the id given differed in form from the row's: let the ORM refresh the object
            return False
        obj = manager.new_instance()
        state: Any = instance_state(obj)
        values = state.dict
        for name, attribute in columns:
            values[attribute] = row[name]
        state.key = key
        state.identity_token = None
        state.session_id = session.hash_key
        identity_map._add_unpresent(state, key)
        state._commit_all(values, identity_map)
        return obj, row["tx_now"]

    def add(self, obj: Any) -> None:
        self.session.add(obj)

    async def delete(self, obj: Any) -> None:
        await self.session.delete(obj)

    def archive(self, obj: Any) -> None:
        """Mark `obj` archived now (the transaction's instant, as updated_at) by the actor."""
        obj.archived_at = func.now()
        obj.archived_by = self.actor_id

    def assign(self, obj: Any, values: Mapping[str, Any]) -> list[str]:
        """Set columns of `obj` from `values` (column name -> value), checked against the column
        types (required, length, decimal places and range): Invalid names the field. Returns the
        names whose value differs from the current one."""
        table = object_mapper(obj).local_table
        changed: list[str] = []
        for name, raw in values.items():
            column = table.c[name]
            value = check_value(column, raw.value if isinstance(raw, enum.Enum) else raw)
            if _differs(getattr(obj, name, None), value):
                setattr(obj, name, value)
                changed.append(name)
        return changed


def check_value(column: Any, value: Any) -> Any:
    """`value` for `column` if it fits the column's type; Invalid (with the column as field) if not."""
    name = column.name
    if value is None:
        if not column.nullable:
            raise Invalid(f"{_words(name)} is required.", field=name)
        return None
    kind = column.type
    if isinstance(kind, String) and kind.length is not None and isinstance(value, str) and len(value) > kind.length:
        raise Invalid(f"{_words(name)} must be at most {kind.length} characters long.", field=name)
    if isinstance(kind, Numeric) and isinstance(value, Decimal) and kind.precision is not None:
        scale = kind.scale or 0
        exponent = value.as_tuple().exponent
        if not isinstance(exponent, int):
            raise Invalid(f"{_words(name)} must be a finite number.", field=name)
        if abs(value) >= Decimal(10) ** (kind.precision - scale):
            raise Invalid(f"{_words(name)} is out of range.", field=name)
        if exponent < -scale and value != value.quantize(Decimal(1).scaleb(-scale)):
            raise Invalid(f"{_words(name)} takes at most {scale} decimal places.", field=name)
    return value


def notification_payload(tenant_id: uuid.UUID, batch_id: uuid.UUID, entities: list[tuple[str, uuid.UUID]]) -> str:
    """The JSON announced on CHANNEL for one committed batch, under NOTIFY_LIMIT bytes."""
    head = {"tenant": str(tenant_id), "batch": str(batch_id)}
    items = [{"type": kind, "id": str(entity_id)} for kind, entity_id in entities]
    payload = json.dumps({**head, "entities": items}, separators=(",", ":"))
    if len(payload.encode()) <= NOTIFY_LIMIT:
        return payload
    room = NOTIFY_LIMIT - len(json.dumps({**head, "entities": [], "truncated": True}, separators=(",", ":")))
    kept: list[dict[str, str]] = []
    for item in items:
        size = len(json.dumps(item, separators=(",", ":"))) + 1  # and its comma
        if size > room:
            break
        kept.append(item)
        room -= size
    return json.dumps({**head, "entities": kept, "truncated": True}, separators=(",", ":"))


# -- database errors the caller can cause ---------------------------------------------------------

_KEY = re.compile(r"Key \(([^)]*)\)")
_STILL_REFERENCED = re.compile(
    r'update or delete on table "([a-z_]+)" violates (?:RESTRICT setting of )?foreign key constraint "[^"]*"'
    r' on table "([a-z_]+)"'
)
_CONCURRENCY_STATES = frozenset({"40001", "40P01", "55P03"})


def translate_error(exc: DBAPIError) -> DomainError | None:
    """The domain error a database refusal stands for, or None when it is not the caller's doing.

    Only column and table names from the error's fields reach the message: never the values in
    PostgreSQL's detail text.
    """
    orig = getattr(exc, "orig", None)
    cause = getattr(orig, "__cause__", None)
    state = getattr(cause, "sqlstate", None) or getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    detail = str(getattr(cause, "detail", "") or "")
    table = getattr(cause, "table_name", None)
    constraint = getattr(cause, "constraint_name", None)
    if state == "23505":  # unique_violation
        column = _constraint_column(constraint) or _last_key_column(detail)
        return Conflict(
            f"Another {_singular(table)} already has this {_words(column) if column else 'value'}.", field=column
        )
    if state in ("23503", "23001"):  # foreign_key_violation, restrict_violation
        # PostgreSQL leaves the key out of the detail on tables with row-level security: the
        # constraint's name says which columns it covers.
        column = _constraint_column(constraint) or _last_key_column(detail)
        still = _STILL_REFERENCED.match(str(cause or ""))
        if still is not None:  # a delete (or key change) of a row that others reference
            referenced, referencing = still.group(1), still.group(2).replace("_", " ")
            return Conflict(f"The {_singular(referenced)} is still referenced by {referencing}.")
        return Invalid(f"{_words(column) if column else 'A reference'} names a row that does not exist.", field=column)
    if state == "23514":  # check_violation
        column = _check_column(constraint, table)
        return Invalid(f"{_words(column) if column else 'A value'} is not an allowed value.", field=column)
    if state == "23502":  # not_null_violation
        column = getattr(cause, "column_name", None)
        return Invalid(f"{_words(column) if column else 'A value'} is required.", field=column)
    if state in ("22001", "22003", "22P02", "22007", "22008"):  # too long, out of range, bad text/date
        return Invalid("A value does not fit its field.")
    if state in _CONCURRENCY_STATES:
        return Conflict("The change collided with a concurrent one: retry.")
    return None


@functools.cache
def _constraint_columns() -> dict[str, tuple[str, ...]]:
    """Database constraint name -> its columns, for every unique and foreign key of the models."""
    preparer = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    found: dict[str, tuple[str, ...]] = {}
    for table in Base.metadata.tables.values():
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint | ForeignKeyConstraint) and constraint.name is not None:
                name = preparer.format_constraint(constraint)
                if name is not None:
                    found[name] = tuple(c.name for c in constraint.columns)
        for index in table.indexes:
            if index.unique and index.name is not None:
                name = preparer.format_constraint(index)
                if name is not None:
                    found[name] = tuple(str(c.name) for c in index.columns)
    return found


def _constraint_column(constraint: str | None) -> str | None:
    """The column a caller controls in a unique or foreign key: the last one besides tenant_id."""
    columns = [c for c in _constraint_columns().get(constraint or "", ()) if c != "tenant_id"]
    return columns[-1] if columns else None


def _last_key_column(detail: str) -> str | None:
    match = _KEY.search(detail)
    if not match:
        return None
    columns = [c.strip().strip('"') for c in match.group(1).split(",") if c.strip() != "tenant_id"]
    return columns[-1] if columns else None


def _check_column(constraint: str | None, table: str | None) -> str | None:
    # values_check names: ck_<table>_<column>_values (models/base.py).
    if not constraint or not table:
        return None
    prefix, suffix = f"ck_{table}_", "_values"
    if constraint.startswith(prefix) and constraint.endswith(suffix):
        return constraint[len(prefix) : -len(suffix)]
    return None


def _singular(table: str | None) -> str:
    if not table:
        return "row"
    words = table.replace("_", " ")
    return words[:-1] if words.endswith("s") else words


def _words(name: str) -> str:
    return name.replace("_", " ")


def _label(model: type) -> str:
    return _singular(getattr(model, "__tablename__", None))


def _tenant_condition(model: Any, tenant_id: Any) -> list[Any]:
    if getattr(model, "__tablename__", None) == "tenants":
        return [model.id == tenant_id]
    return [model.tenant_id == tenant_id] if hasattr(model, "tenant_id") else []


@functools.lru_cache(maxsize=512)
def _row_statement(model: Any, key_share: bool) -> Any:
    """`lock`'s (FOR UPDATE) or `find`'s (FOR KEY SHARE) statement for `model`, built once: the row
    `gwm_row_id` of the tenant `gwm_tenant_id`, with the transaction's instant."""
    tenant: Any = bindparam("gwm_tenant_id")  # each takes its column's type
    return (
        select(model, func.now().label("tx_now"))
        .where(model.id == bindparam("gwm_row_id"), *_tenant_condition(model, tenant))
        .with_for_update(read=key_share, key_share=key_share)
        .execution_options(populate_existing=True)
    )


@functools.lru_cache(maxsize=512)
def _core_row_statement(model: Any, key_share: bool) -> Any:
    """`_row_statement` as a Core SELECT of the table's columns (and the transaction's instant): what
    `_row_direct` reads, the same row the ORM's statement reads."""
    table = model.__table__
    tenant: Any = bindparam("gwm_tenant_id")
    return (
        select(*table.columns, func.now().label("tx_now"))
        .where(table.c.id == bindparam("gwm_row_id", type_=table.c.id.type), *_tenant_condition(model, tenant))
        .with_for_update(read=key_share, key_share=key_share)
    )


# Relationship loading strategies that load nothing with the object's own row (the ORM's load of the row
# sets nothing for them either).
_LAZY = frozenset({"select", "raise", "raise_on_sql", "noload", "write_only", "dynamic", True})


@functools.cache
def _load_plan(model: Any) -> tuple[Any, Any, tuple[tuple[str, str], ...]] | None:
    """What `UnitOfWork._row_direct` needs of `model` (its identity class, class manager, and (column name,
    attribute key) of every column), or None when the ORM's load of `select(model)` would do more than
    set every column of the table: a model `_update_plan` does not cover, a deferred column, a column
    property outside the table, or a relationship loaded eagerly."""
    plan = _update_plan(model)
    if plan is None:
        return None
    mapper = object_mapper_of(model)
    table = mapper.local_table
    for prop in mapper.column_attrs:
        if prop.deferred or len(prop.columns) != 1 or getattr(prop.columns[0], "table", None) is not table:
            return None
    if any(prop.lazy not in _LAZY for prop in mapper.relationships):
        return None
    return mapper._identity_class, mapper.class_manager, plan[1]


# attribute key -> column (every column but the primary key); (column name, attribute key) of every column;
# the attribute keys of every column.
_Plan = tuple[dict[str, Any], tuple[tuple[str, str], ...], frozenset[str]]


@functools.cache
def _single_row(state: Any, operation: str) -> tuple[Any, Any, _Plan, Any] | None:
    """(object, model, plan, mapper) of the object `state` tracks when its single-row `operation` ("update" or
    "insert") may skip the ORM's flush: the object alive, its model planned (`_update_plan`), and no mapper
    listener of the operation to run; None otherwise."""
    obj: Any = state.obj()
    if obj is None:
        return None
    model: Any = type(obj)
    plan = _update_plan(model)
    if plan is None:
        return None
    mapper = state.mapper
    if getattr(mapper.dispatch, f"before_{operation}") or getattr(mapper.dispatch, f"after_{operation}"):
        return None
    return obj, model, plan, mapper


def _update_plan(model: Any) -> _Plan | None:
    """What `UnitOfWork._flush_one_update` and `_flush_one_insert` need of `model`, or None when they do
    not take their path: (attribute key -> its column, for every column but the primary key; (column
    name, attribute key) of every column; the attribute keys of every column). Only audited models mapped
    plainly to their own table: no inheritance, no version counter, every column one attribute, no
    property but columns and relationships."""
    if model not in AUDITED:
        return None
    mapper = object_mapper_of(model)
    table: Table = mapper.local_table  # type: ignore[assignment]
    if mapper.inherits is not None or mapper.version_id_col is not None or mapper.persist_selectable is not table:
        return None
    primary = [column.name for column in table.primary_key]
    if primary != ["id"]:
        return None
    keys: dict[str, Any] = {}
    names: list[tuple[str, str]] = []
    if any(not isinstance(prop, ColumnProperty | RelationshipProperty) for prop in mapper.iterate_properties):
        return None  # a synonym, composite or other property the plain paths do not know
    for column in table.columns:
        try:
            prop = mapper.get_property_by_column(column)
        except UnmappedColumnError:
            return None
        if len(prop.columns) != 1:
            return None
        names.append((column.name, prop.key))
        if column.name != "id":
            keys[prop.key] = column
    return keys, tuple(names), frozenset(key for _, key in names)


@functools.lru_cache(maxsize=1024)
def _update_statement(model: Any, keys: tuple[str, ...]) -> Any:
    """`UPDATE <table> SET <the columns of keys> WHERE id = :gwm_row_id RETURNING <every column>`, built
    once per model and set of attributes (so compiled once): the flush's UPDATE of one row, with the
    every-column RETURNING the audit trail's guard gives it (models/audit_trail.py)."""
    plan = _update_plan(model)
    assert plan is not None
    columns = plan[0]
    table = model.__table__
    return (
        update(table)
        .where(table.c.id == bindparam("gwm_row_id", type_=table.c.id.type))
        .values({columns[key]: bindparam(f"gwm_set_{key}", type_=columns[key].type) for key in keys})
        .returning(*table.columns)
    )


@functools.cache
def _insert_statement(model: Any) -> Any:
    """`INSERT INTO <table> ... RETURNING <every column>`, built once per model; its columns are those of
    the parameters given (SQLAlchemy compiles it once per set of them)."""
    table = model.__table__
    return insert(table).returning(*table.columns)


def _differs(current: Any, value: Any) -> bool:
    # Decimals compare by value: 75 and 75.00 are stored alike in a numeric(5,2) column, so
    # writing one over the other would change nothing but updated_at.
    return bool(current != value)


class _ScopedTransaction:
    """The transaction SQLAlchemy's asyncpg adapter drives (start, commit, rollback: the protocol of
    asyncpg's own Transaction it keeps in `_transaction`), begun with the tenant setting in one simple
    query: `BEGIN ISOLATION LEVEL READ COMMITTED; SELECT set_config('app.tenant_id', ..., true)`, one
    round trip instead of two. The tenant id is a UUID written by `uuid.UUID` itself (no quoting
    needed); COMMIT and ROLLBACK are the statements asyncpg's Transaction sends."""

    __slots__ = ("_driver", "_sql")

    def __init__(self, driver: asyncpg.Connection, tenant_id: uuid.UUID | str | None) -> None:
        tenant = "" if tenant_id is None else str(uuid.UUID(str(tenant_id)))
        self._driver = driver
        self._sql = f"BEGIN ISOLATION LEVEL READ COMMITTED; SELECT set_config('app.tenant_id', '{tenant}', true)"

    async def start(self) -> None:
        await self._driver.execute(self._sql)

    async def commit(self) -> None:
        await self._driver.execute("COMMIT;")

    async def rollback(self) -> None:
        await self._driver.execute("ROLLBACK;")


async def _begin_scoped(conn: AsyncConnection, tenant_id: uuid.UUID | str | None) -> bool:
    """Begin `conn`'s READ COMMITTED transaction scoped to `tenant_id` in one round trip; False (nothing
    sent) when the driver or its adapter is not the asyncpg one this knows, and the caller begins it as
    usual. A failure leaves the connection invalidated (it may be inside a failed transaction)."""
    pooled = await conn.get_raw_connection()
    adapter: Any = pooled.dbapi_connection
    driver = pooled.driver_connection
    if (
        not isinstance(driver, asyncpg.Connection)
        or getattr(adapter, "_transaction", False) is not None
        or getattr(adapter, "isolation_level", None) != "read_committed"
        or getattr(adapter, "readonly", None) is not False
        or getattr(adapter, "deferrable", None) is not False
        or driver.is_in_transaction()
    ):
        return False
    transaction = _ScopedTransaction(driver, tenant_id)
    try:
        await transaction.start()
    except BaseException:
        await conn.invalidate()
        raise
    adapter._transaction = transaction  # what the adapter records once it has begun one itself
    return True


async def _discard(conn: AsyncConnection) -> None:
    try:
        await conn.close()
    except Exception:  # a connection that died is dropped from the pool by close()'s own handling
        _log.debug("closing a unit of work's connection failed", exc_info=True)
