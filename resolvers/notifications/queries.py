"""Reading the caller's inbox: a page of notifications, unread first, and the unread count.

Only the caller's own items are read, and of those about a project only the ones whose project the
caller may read now (`opportunity:read`, tenant-wide or on that project): an item stays in the table
when access ends, and comes back into view if access is granted again.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.engine import Result
from sqlalchemy.sql.elements import ColumnElement

from auth.permissions import Permission
from auth.principal import Principal
from models.notifications import Notification, NotificationPreference, Preferences
from resolvers.common.pagination import (
    OrderTerm,
    Page,
    PageArgs,
    decode_cursor,
    encode_cursor,
    keyset_condition,
    order_clauses,
)

__all__ = ["INBOX_ORDER", "inbox_page", "preference_row", "unread_count", "visible_rows", "visible_to"]

NodeT = TypeVar("NodeT")
_T = Notification.__table__


class Reads(Protocol):
    """What the request's read connection offers (models.db.RequestConnection)."""

    async def execute(self, statement: Any) -> Result[Any]: ...


_UNREAD = _T.c.read_at.is_(None).label("unread")
#: Unread first, then newest first; ties by id (so a cursor names one position).
INBOX_ORDER: tuple[OrderTerm, ...] = (
    OrderTerm("unread", _T.c.read_at.is_(None), descending=True),
    OrderTerm("created_at", _T.c.created_at, descending=True),
    OrderTerm("id", _T.c.id, descending=True),
)


def visible_to(principal: Principal) -> ColumnElement[bool]:
    """The caller's own items, less those about projects the caller may not read now."""
    mine = _T.c.user_id == principal.user_id
    grants = principal.grants
    if Permission.OPPORTUNITY_READ.value in grants.tenant_wide:
        return mine
    projects = [p for p, perms in grants.per_project.items() if Permission.OPPORTUNITY_READ.value in perms]
    about = _T.c.opportunity_project_id
    return and_(mine, or_(about.is_(None), about.in_(projects)) if projects else about.is_(None))


def _filters(principal: Principal, *, unread_only: bool, since: datetime.datetime | None) -> list[ColumnElement[bool]]:
    where = [visible_to(principal)]
    if unread_only:
        where.append(_T.c.read_at.is_(None))
    if since is not None:
        where.append(_T.c.created_at > since)
    return where


async def inbox_page(
    db: Reads,
    principal: Principal,
    page: PageArgs,
    make: Callable[[Any], NodeT],
    *,
    unread_only: bool = False,
    since: datetime.datetime | None = None,
) -> Page[NodeT]:
    """A page of the caller's inbox in INBOX_ORDER (`after`/`before` cursors, `since` an instant)."""
    page.validate()
    terms = INBOX_ORDER
    cursor = page.before if page.backwards else page.after
    values = decode_cursor(cursor, terms) if cursor is not None else None
    where = _filters(principal, unread_only=unread_only, since=since)
    stmt: Select[Any] = select(*_T.c, _UNREAD).where(*where)
    paged = stmt
    if values is not None:
        paged = paged.where(keyset_condition(terms, values, forward=not page.backwards))
    paged = paged.order_by(*order_clauses(terms, reverse=page.backwards)).limit(page.limit + 1)
    rows: Sequence[Any] = list((await db.execute(paged)).all())
    has_more = len(rows) > page.limit
    rows = list(rows[: page.limit])
    if page.backwards:
        rows.reverse()

    def cursor_at(i: int) -> str:
        mapping = rows[i]._mapping
        return encode_cursor([mapping[t.name] for t in terms])

    async def count() -> int:
        return int((await db.execute(select(func.count()).select_from(_T).where(*where))).scalar_one())

    if page.backwards:
        has_next, has_previous = page.before is not None, has_more
    else:
        has_next, has_previous = has_more, page.after is not None
    return Page(
        [make(r) for r in rows], has_next_page=has_next, has_previous_page=has_previous,
        cursor_at=cursor_at, count=count,
    )


async def unread_count(db: Reads, principal: Principal) -> int:
    """How many of the caller's visible items are unread."""
    stmt = select(func.count()).select_from(_T).where(visible_to(principal), _T.c.read_at.is_(None))
    return int((await db.execute(stmt)).scalar_one())


async def preference_row(db: Reads, user_id: uuid.UUID) -> tuple[uuid.UUID | None, Preferences, Any]:
    """The user's preference: its row id (None without a row), values, and updated_at (None without a row)."""
    p = NotificationPreference
    row = (
        await db.execute(
            select(p.id, p.min_impact_level, p.digest_enabled, p.updated_at).where(p.user_id == user_id)
        )
    ).one_or_none()
    if row is None:
        return None, Preferences(), None
    return row.id, Preferences(row.min_impact_level, row.digest_enabled), row.updated_at


async def visible_rows(db: Reads, principal: Principal, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """The caller's visible items among `ids` (for `node(id:)`), by id."""
    if not ids:
        return {}
    rows = (await db.execute(select(_T).where(_T.c.id.in_(list(ids)), visible_to(principal)))).all()
    return {row.id: row for row in rows}
