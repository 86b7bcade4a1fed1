"""The suite's watch on audited writes: DML on an audited table outside a unit of work fails the run.

`install()` (tests/conftest.py, once per session) listens to `before_cursor_execute` on every
SQLAlchemy engine of the process (every engine `models.db.create_engine` makes: the app's, the
jobs', the CLI's, the tests'). For each INSERT/UPDATE/DELETE whose target is an audited table
(`models.audit_trail.AUDITED`, docs/decisions.md W11), it finds the code that issued it: the
innermost frame of this repository on the call stack (across the greenlet SQLAlchemy's asyncio
layer runs statements in, up to the awaiting coroutines). The statement is accepted when

- the connection is a unit of work's, inside its flush hook (`models.audit_trail.in_flush`): the
  write is audited with its change_history in the same transaction; or
- the issuing code is on the allow-list: `gwm db seed` (server/seed/, a bulk load that writes one
  event row) and `gwm tenant import` / `purge` (server/tenant_transfer.py: a tenant's rows inserted
  as exported, with one `tenant.import` event row; a whole tenant deleted through the owner-only
  gwm_delete_tenant()); or
- the issuing code is a test's own (tests/): fixtures that build the data a test starts from.

Anything else (an application path writing users, roles, ... with its own SQL) is recorded with
its table and its origin (file, line, function) and the run fails at its end with the list
(`report()`). With `GWM_DML_REPORT=<path>` the list is also written to that file.
Statements of other processes (a server or CLI started as a subprocess) are not seen here.
"""

from __future__ import annotations

import importlib
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from models.audit_trail import audited_dml_table, in_flush

__all__ = ["ALLOWED", "Violation", "capture", "install", "report", "violations"]

_REPO = Path(__file__).resolve().parents[2]
_VENV = _REPO / ".venv"
_SELF = Path(__file__).resolve()

#: Code allowed to write audited tables in bulk, around the flush hook (the issue's whole list).
ALLOWED: tuple[str, ...] = ("server/seed/", "server/tenant_transfer.py")

Violation = tuple[str, str]  # (table, "path:line function")

_FIRST_WORD = re.compile(r"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*(?:insert|update|delete|with|merge)\b", re.I | re.S)
_seen: Counter[Violation] = Counter()
_captures: list[list[Violation]] = []
_lock = threading.Lock()
_installed = False


def _frames() -> Iterator[FrameType]:
    frame: FrameType | None = sys._getframe(2)
    current: Any = importlib.import_module("greenlet").getcurrent()
    while True:
        while frame is not None:
            yield frame
            frame = frame.f_back
        current = getattr(current, "parent", None)
        if current is None:
            return
        frame = current.gr_frame


def origin() -> str | None:
    """`path:line function` of the innermost frame of this repository's code (tests included)."""
    for frame in _frames():
        path = Path(frame.f_code.co_filename)
        if path == _SELF or not path.is_absolute():
            continue
        if path.is_relative_to(_REPO) and not path.is_relative_to(_VENV):
            return f"{path.relative_to(_REPO)}:{frame.f_lineno} {frame.f_code.co_name}"
    return None


def _before_cursor_execute(
    conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    if _FIRST_WORD.match(statement) is None:  # DDL (a function body may hold DML text), SELECT, ...
        return
    table = audited_dml_table(statement)
    if table is None or in_flush(conn):
        return
    where = origin()
    if where is None or where.startswith("tests/") or where.startswith(ALLOWED):
        return
    with _lock:
        if _captures:
            _captures[-1].append((table, where))
        else:
            _seen[(table, where)] += 1


def install() -> None:
    """Listen on every engine of the process (idempotent)."""
    global _installed
    if not _installed:
        event.listen(Engine, "before_cursor_execute", _before_cursor_execute)
        _installed = True


@contextmanager
def capture() -> Iterator[list[Violation]]:
    """Collect the violations of the block into the yielded list instead of failing the run
    (for the test of this guard itself)."""
    found: list[Violation] = []
    with _lock:
        _captures.append(found)
    try:
        yield found
    finally:
        with _lock:
            _captures.remove(found)


def violations() -> dict[Violation, int]:
    with _lock:
        return dict(_seen)


def report() -> str:
    """The run's violations as Markdown ('' when there are none)."""
    found = violations()
    if not found:
        return ""
    lines = [
        "# Audited tables written outside a unit of work",
        "",
        "Each line: table, the code that issued the statement, how many statements.",
        "Route these writes through `auth.audited` / `models.unit_of_work.UnitOfWork`.",
        "",
    ]
    for (table, where), count in sorted(found.items()):
        lines.append(f"- `{table}` from `{where}` ({count}x)")
    return "\n".join(lines) + "\n"
