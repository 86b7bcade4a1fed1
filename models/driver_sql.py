"""SQLAlchemy statements of the write path run on the driver's connection, compiled once.

A statement through SQLAlchemy's asyncio layer costs about 70 us of the server's CPU besides the
driver's own 15 (a greenlet switch, an execution context, per-parameter processing, a result object):
more than the Python of the write it carries. `fetch` runs a statement on the asyncpg connection of an
`AsyncConnection` inside its transaction, as SQLAlchemy would send it: the SQL text its compiler renders
for the connection's dialect (with the bind casts), each parameter through its type's bind processor (the
JSON serializer, booleans, bytes), in the compiled order; rows come back as the driver returns them, as a
text() statement's do through SQLAlchemy. A driver error is raised as SQLAlchemy raises it (a `DBAPIError`
wrapping the adapter's translation of the driver's exception, parameters hidden, the connection
invalidated on a disconnect), so callers and `translate_error` see the same exceptions.

Only where nothing listens to the statement: SQLAlchemy's execution events do not see it (the audit
trail's guard and the test suite's DML watch look at audited tables; the chained audit tables are not).
`None` when the connection is not the asyncpg adapter's or has no transaction begun: the caller runs the
statement through SQLAlchemy instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql.elements import ClauseElement

__all__ = ["Compiled", "close", "commit", "compiled", "fetch", "pool_has_room"]


class Compiled:
    """A statement compiled for one dialect: its SQL text and how to lay out its parameters."""

    __slots__ = ("_binds", "_results", "_steps", "_typed", "direct", "sql", "statement")

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...] | None = None) -> None:
        done: Any = statement.compile(dialect=dialect, column_keys=None if keys is None else list(keys))
        names: Sequence[str] = done.positiontup or ()
        processors: Mapping[str, Callable[[Any], Any] | None] = done._bind_processors
        self.statement = statement  # kept alive: the cache is keyed by its id
        self.sql: str = done.string
        self._binds: Mapping[str, Any] = dict(done.binds)  # rendered name -> its BindParameter
        self._steps: tuple[tuple[str, Callable[[Any], Any] | None], ...] = tuple(
            (name, processors.get(name)) for name in names
        )
        # Python-side column defaults SQLAlchemy's execution would compute into parameters: not run here.
        self.direct = not (getattr(done, "insert_prefetch", None) or getattr(done, "update_prefetch", None))
        # The types of the returned columns (a textual statement has none: its values are the driver's).
        columns = getattr(done, "_result_columns", None) or ()
        self._typed: tuple[Any, ...] | None = tuple(column[3] for column in columns) if columns else None
        self._results: tuple[tuple[int, Callable[[Any], Any]], ...] | None = None

    def result_processors(
        self, dialect: Any, attributes: Sequence[Any]
    ) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
        """(position, processor) of each returned column whose type processes the driver's value, worked
        out as SQLAlchemy's result does (from the column's type and the driver's type oid), once."""
        found = self._results
        if found is None:
            typed = self._typed
            found = ()
            if typed is not None and len(typed) == len(attributes):
                pairs = ((i, kind._cached_result_processor(dialect, attribute.type.oid))
                         for i, (kind, attribute) in enumerate(zip(typed, attributes, strict=True)))
                found = tuple((i, process) for i, process in pairs if process is not None)
            self._results = found
        return found

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        """The driver's positional arguments for `params` (bind name -> value). A parameter not given takes its
        bound value, as in SQLAlchemy; one that is required (no bound value) raises KeyError, and the caller
        leaves the statement to SQLAlchemy, which refuses it."""
        arguments: list[Any] = []
        for name, process in self._steps:
            value = params[name] if name in params else self._bound(name)
            arguments.append(value if value is None or process is None else process(value))
        return arguments

    def _bound(self, name: str) -> Any:
        bind = self._binds[name]
        if bind.required:
            raise KeyError(name)
        return bind.effective_value


# (id of the statement, id of the dialect, column keys of an INSERT) -> its compiled form.
_COMPILED: dict[tuple[int, int, tuple[str, ...] | None], Compiled] = {}


def compiled(statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...] | None = None) -> Compiled:
    """`statement` compiled for `dialect`, once (statements of the write path are built once and kept);
    `keys`: the columns an INSERT is given (SQLAlchemy compiles one per set of them, as here)."""
    key = (id(statement), id(dialect), keys)
    done = _COMPILED.get(key)
    if done is None or done.statement is not statement:
        done = _COMPILED[key] = Compiled(statement, dialect, keys)
    return done


async def fetch(
    conn: AsyncConnection, statement: ClauseElement, params: Mapping[str, Any], *, insert: bool = False
) -> list[asyncpg.Record] | None:
    """The rows of `statement` with `params`, run on `conn`'s driver connection inside its transaction;
    None (nothing sent) when that cannot be done here and SQLAlchemy should run it. `insert`: an INSERT
    whose columns are the parameters given (compiled once per set of them)."""
    sync = conn.sync_connection
    if sync is None or sync.closed or sync.invalidated:
        return None
    fairy: Any = sync.connection
    adapter = fairy.dbapi_connection
    driver = fairy.driver_connection
    if not isinstance(driver, asyncpg.Connection) or getattr(adapter, "_transaction", None) is None:
        return None
    dialect: Any = sync.dialect
    done = compiled(statement, dialect, tuple(sorted(params)) if insert else None)
    if not done.direct:
        return None
    try:
        arguments = done.arguments(params)
    except Exception:  # a value its type refuses: SQLAlchemy raises its own error for it
        return None
    try:
        # The adapter's own cache of prepared statements (the one SQLAlchemy's execution uses).
        prepared, attributes = await adapter._prepare(done.sql, dialect._invalidate_schema_cache_asof)
        rows: list[asyncpg.Record] = await prepared.fetch(*arguments)
    except Exception as error:
        _raise_as_sqlalchemy(sync, adapter, done.sql, error)
    except BaseException:
        _invalidate(sync)
        raise
    processors = done.result_processors(dialect, attributes)
    if processors:
        return [_processed(row, processors) for row in rows]
    return rows


def _processed(row: asyncpg.Record, processors: tuple[tuple[int, Callable[[Any], Any]], ...]) -> Any:
    values = list(row.values())
    for index, process in processors:
        values[index] = process(values[index])
    return _Row(row.keys(), values)


class _Row(dict[str, Any]):
    """A returned row after its columns' result processors: by name (a mapping) and by position."""

    __slots__ = ("_values",)

    def __init__(self, keys: Any, values: list[Any]) -> None:
        super().__init__(zip(keys, values, strict=True))
        self._values = values

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int | slice):
            return self._values[key]
        return super().__getitem__(key)


def _raise_as_sqlalchemy(sync: Any, adapter: Any, sql: str, error: Exception) -> NoReturn:
    """Raise `error` as SQLAlchemy's execution would: translated by the adapter, wrapped in DBAPIError."""
    dialect = sync.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    try:
        adapter._handle_exception(error)  # raises the adapter's translation (or `error` itself)
    except dbapi_error as translated:
        invalidated = bool(dialect.is_disconnect(translated, adapter, None))
        if invalidated:
            sync.invalidate(translated)
        raise DBAPIError.instance(
            sql,
            None,
            translated,
            dbapi_error,
            hide_parameters=True,
            dialect=dialect,
            connection_invalidated=invalidated,
        ) from translated
    raise error  # the adapter always raises; this only restates it for the type checker


async def commit(conn: AsyncConnection) -> bool:
    """COMMIT `conn`'s transaction as the asyncio adapter does (its own discard of the driver's transaction),
    without SQLAlchemy's greenlet; errors raised as SQLAlchemy raises them. SQLAlchemy's transaction object
    stays open with nothing left to end on the server: closing the connection rolls it back without a
    statement (`close`). False (nothing sent) when SQLAlchemy must commit: not the asyncpg adapter, no
    driver transaction, a nested transaction, or listeners of the connection's commit or rollback events."""
    sync = conn.sync_connection
    if sync is None or sync.closed or sync.invalidated or not sync.in_transaction() or sync.in_nested_transaction():
        return False
    if sync.dispatch.commit or sync.dispatch.rollback:
        return False
    fairy: Any = sync.connection
    adapter = fairy.dbapi_connection
    transaction = getattr(adapter, "_transaction", None)
    if not isinstance(fairy.driver_connection, asyncpg.Connection) or transaction is None:
        return False
    try:
        await adapter._call_and_discard(transaction.commit)
    except Exception as error:
        _raise_as_sqlalchemy(sync, adapter, "COMMIT", error)
    except BaseException:
        _invalidate(sync)
        raise
    return True


def _invalidate(sync: Any) -> None:
    """What SQLAlchemy does when a cancellation (or another exit exception) interrupts a statement: the
    connection, in an unknown state, is invalidated (closed, never pooled again)."""
    if not sync.closed and not sync.invalidated:
        sync.invalidate()


def close(conn: AsyncConnection) -> bool:
    """Close `conn` (back to its pool) without a greenlet where that does no I/O: no driver transaction left
    to roll back, and a pool queue with room (the checkin closes nothing). False (nothing done) otherwise:
    the caller awaits SQLAlchemy's close."""
    sync = conn.sync_connection
    if sync is None or sync.closed or sync.invalidated:
        return False
    fairy: Any = sync.connection
    if getattr(fairy.dbapi_connection, "_transaction", True) is not None or not pool_has_room(fairy):
        return False
    sync.close()
    return True


def pool_has_room(pooled: Any) -> bool:
    """True when checking the pooled connection `pooled` in puts it into its pool's queue (a QueuePool with
    room), where the checkin closes nothing: the asyncio adapter's close would await the driver, which only a
    greenlet can."""
    pool: Any = getattr(pooled, "_pool", None)
    return (
        isinstance(pool, QueuePool) and pooled.dbapi_connection is not None and pool.checkedin() < pool.size()
    )
