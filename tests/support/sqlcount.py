"""Count the SQL statements an engine sends, to catch N+1 patterns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["assert_sql_count", "capture_statements", "count_statements"]


@contextmanager
def count_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Collect every statement `engine` executes inside the block."""
    statements: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


@contextmanager
def assert_sql_count(engine: AsyncEngine, expected: int) -> Iterator[list[str]]:
    """Fail unless exactly `expected` statements run inside the block."""
    with count_statements(engine) as statements:
        yield statements
    if len(statements) != expected:
        listing = "\n---\n".join(statements)
        raise AssertionError(f"expected {expected} SQL statements, got {len(statements)}:\n{listing}")


@contextmanager
def capture_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement `engine` executes, with its transactions' boundaries as "BEGIN [READ ONLY]",
    "COMMIT" and "ROLLBACK" entries (the driver sends those itself, so they are not statements)."""
    log: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        log.append(statement)

    def begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get("postgresql_readonly")
        log.append("BEGIN READ ONLY" if read_only else "BEGIN")

    def commit(conn: Any) -> None:
        log.append("COMMIT")

    def rollback(conn: Any) -> None:
        log.append("ROLLBACK")

    hooks: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", before), ("begin", begin), ("commit", commit), ("rollback", rollback),
    ]
    for name, hook in hooks:
        event.listen(engine.sync_engine, name, hook)
    try:
        yield log
    finally:
        for name, hook in hooks:
            event.remove(engine.sync_engine, name, hook)
