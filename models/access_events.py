"""Access-ending notifications: what ends or narrows a live subscriber's right to receive.

Sessions are not audited tables and an expiry writes nothing, so the audit notify of a change
batch (models/unit_of_work.py, channel `gwm_changes`) does not cover them. The writes that end a
session, deactivate a user or a tenant, revoke an API key or change a role call `access_ended` on
the connection of their own transaction: PostgreSQL delivers a NOTIFY only when that transaction
commits, so a rolled-back change announces nothing. Each gateway process LISTENs on
`ACCESS_CHANNEL` (live/listener.py) and closes or re-checks its subscribers at once.

The payload is a small JSON object: `{"kind": ..., "tenant": uuid, "user": uuid|null,
"session": uuid|null, "except_session": uuid|null, "role": uuid|null, "api_key": uuid|null,
"reason": text|null}`. When `tenant_id` is not given, the transaction's `app.tenant_id` is used.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["ACCESS_CHANNEL", "AccessEvent", "AccessKind", "access_ended", "parse_access_event"]

#: The LISTEN channel of access-ending events.
ACCESS_CHANNEL = "gwm_access"


class AccessKind(StrEnum):
    """What happened; the subscriber it concerns decides what follows (docs/api.md, Subscriptions)."""

    #: One session ended (logout, revocation, a timeout noticed, ...): `session`, `reason`.
    SESSION_ENDED = "session_ended"
    #: Every session of `user` ended but `except_session` (password change, expired role, lock).
    USER_SESSIONS_ENDED = "user_sessions_ended"
    #: `user` was deactivated (whatever credential its subscribers used).
    USER_DEACTIVATED = "user_deactivated"
    #: The tenant was deactivated.
    TENANT_DEACTIVATED = "tenant_deactivated"
    #: Permissions changed: `user`'s assignments (grant, revoke), or `role`'s permissions (every holder).
    ROLE_CHANGED = "role_changed"
    #: The API key `api_key` was revoked.
    API_KEY_REVOKED = "api_key_revoked"


_NOTIFY = text(
    "SELECT pg_notify(:channel, CAST(CAST(:payload AS jsonb)"
    " || jsonb_build_object('tenant', coalesce(CAST(:tenant AS text),"
    " nullif(current_setting('app.tenant_id', true), ''))) AS text))"
)


async def access_ended(
    conn: AsyncConnection,
    kind: AccessKind,
    *,
    tenant_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    session_id: uuid.UUID | None = None,
    except_session: uuid.UUID | None = None,
    role_id: uuid.UUID | None = None,
    api_key_id: uuid.UUID | None = None,
    reason: str | None = None,
) -> None:
    """Announce `kind` on ACCESS_CHANNEL when `conn`'s transaction commits (one statement)."""
    body: dict[str, Any] = {
        "kind": kind.value,
        "user": _text(user_id),
        "session": _text(session_id),
        "except_session": _text(except_session),
        "role": _text(role_id),
        "api_key": _text(api_key_id),
        "reason": reason,
    }
    await conn.execute(
        _NOTIFY,
        {"channel": ACCESS_CHANNEL, "payload": json.dumps(body), "tenant": _text(tenant_id)},
    )


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """One access-ending notification, parsed."""

    kind: AccessKind
    tenant_id: uuid.UUID
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    except_session: uuid.UUID | None = None
    role_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    reason: str | None = None

    def concerns(
        self,
        *,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID | None,
        session_id: uuid.UUID | None = None,
        api_key_id: uuid.UUID | None = None,
    ) -> bool:
        """True when a subscriber of this tenant, user, session or API key is affected."""
        if tenant_id != self.tenant_id:
            return False
        match self.kind:
            case AccessKind.TENANT_DEACTIVATED:
                return True
            case AccessKind.SESSION_ENDED:
                return session_id is not None and session_id == self.session_id
            case AccessKind.USER_SESSIONS_ENDED:
                return (
                    session_id is not None
                    and user_id == self.user_id
                    and session_id != self.except_session
                )
            case AccessKind.USER_DEACTIVATED:
                return user_id == self.user_id
            case AccessKind.API_KEY_REVOKED:
                return api_key_id is not None and api_key_id == self.api_key_id
            case AccessKind.ROLE_CHANGED:
                # A role's permissions changed: any holder may be affected (re-check is cheap).
                return self.user_id is None or user_id == self.user_id
        return False  # pragma: no cover - every kind is matched above


def parse_access_event(payload: str) -> AccessEvent:
    """The event a notification on ACCESS_CHANNEL carries; ValueError if it is not one."""
    data = json.loads(payload)
    if not isinstance(data, dict) or not data.get("tenant"):
        raise ValueError("an access event names its tenant")
    reason = data.get("reason")
    return AccessEvent(
        kind=AccessKind(data["kind"]),
        tenant_id=uuid.UUID(str(data["tenant"])),
        user_id=_uuid(data.get("user")),
        session_id=_uuid(data.get("session")),
        except_session=_uuid(data.get("except_session")),
        role_id=_uuid(data.get("role")),
        api_key_id=_uuid(data.get("api_key")),
        reason=reason if isinstance(reason, str) else None,
    )


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _uuid(value: object) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(str(value))
