"""Count the round trips to PostgreSQL at the driver, transaction control and raw asyncpg use included.

`tests/support/sqlcount.py` sees the statements SQLAlchemy executes; it misses what the driver sends
by itself (BEGIN, COMMIT and ROLLBACK are asyncpg simple queries, a first use of a statement on a
connection is a prepare exchange before the execute) and whatever runs on the raw asyncpg
connection. This counter sits one level lower: every connection of the engine checked out inside the
block gets its asyncpg protocol wrapped, and each protocol operation that waits for the server's
answer (one request, one ReadyForQuery) is recorded as a RoundTrip. The wrapping is removed when
the connection goes back to the pool and when the block ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["RoundTrip", "count_round_trips"]

# asyncpg Protocol coroutines that each send one request and wait for its ReadyForQuery.
_EXCHANGES = frozenset({
    "query",  # simple query: BEGIN ..., COMMIT, ROLLBACK, execute() without arguments
    "prepare",  # Parse + Describe + Sync (a statement's first use on a connection, or introspection)
    "bind_execute", "bind_execute_many", "bind", "execute", "close_portal", "close_statement",
    "copy_in", "copy_out",
})
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "START TRANSACTION", "SAVEPOINT", "RELEASE", "END")


@dataclass(frozen=True, slots=True)
class RoundTrip:
    kind: str  # the asyncpg protocol operation
    sql: str

    @property
    def is_transaction_control(self) -> bool:
        return self.kind == "query" and self.sql.lstrip().upper().startswith(_CONTROL)

    def __str__(self) -> str:
        return f"{self.kind}: {' '.join(self.sql.split())[:160]}"


class _CountingProtocol:
    """Forwards every attribute to asyncpg's protocol; records the exchanges before they start."""

    def __init__(self, inner: Any, log: list[RoundTrip]) -> None:
        self._gwm_inner = inner
        self._gwm_log = log

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._gwm_inner, name)
        if name not in _EXCHANGES:
            return value
        log = self._gwm_log

        async def exchange(*args: Any, **kwargs: Any) -> Any:
            log.append(RoundTrip(name, _sql_of(name, args, kwargs)))
            return await value(*args, **kwargs)

        return exchange


def _sql_of(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if kind == "query":
        return str(args[0] if args else kwargs.get("query", ""))
    if kind == "prepare":
        return str(args[1] if len(args) > 1 else kwargs.get("query", ""))
    if kind in {"copy_in", "copy_out"}:
        return str(args[0] if args else kwargs.get("copy_stmt", ""))
    state = kwargs.get("state", args[0] if args else None)
    return str(getattr(state, "query", ""))


@contextmanager
def count_round_trips(engine: AsyncEngine) -> Iterator[list[RoundTrip]]:
    """Every round trip the driver makes on `engine`'s connections checked out inside the block."""
    log: list[RoundTrip] = []
    wrapped: list[Any] = []

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if not isinstance(driver._protocol, _CountingProtocol):
            driver._protocol = _CountingProtocol(driver._protocol, log)
            wrapped.append(driver)

    def checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            _unwrap(dbapi_connection.driver_connection)

    hooks: list[tuple[str, Callable[..., None]]] = [("checkout", checkout), ("checkin", checkin)]
    for name, hook in hooks:
        event.listen(engine.sync_engine, name, hook)
    try:
        yield log
    finally:
        for name, hook in hooks:
            event.remove(engine.sync_engine, name, hook)
        for driver in wrapped:
            _unwrap(driver)


def _unwrap(driver: Any) -> None:
    protocol = driver._protocol
    if isinstance(protocol, _CountingProtocol):
        driver._protocol = protocol._gwm_inner
