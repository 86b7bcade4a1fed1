"""Idempotent creates: a client's `idempotencyKey` makes a retried create return the first result.

A key belongs to one user of one tenant and lives 24 hours (`RETENTION`) in `idempotency_keys`,
with the mutation it was used for, a SHA-256 of the request (`request_hash`) and the entity the
create produced. Inside the mutation's transaction, `claim`:

1. takes a transaction-level advisory lock on (tenant, user, key) without waiting: if another
   transaction holds it, a request with this key is running right now and this one is refused at
   once (`IdempotencyInProgress`, CONFLICT) rather than queued behind it;
2. reads the key's unexpired row: the same mutation and request hash is a retry, answered with
   the stored result (`IdempotencyClaim.replay`; the caller re-reads that entity and writes
   nothing); anything else reuses the key for a different request (`IdempotencyKeyReused`);
3. otherwise the caller creates the entity and calls `IdempotencyClaim.record` in the same
   transaction, so the key exists exactly when the entity does: a create that fails or rolls
   back leaves no key, and its retry runs afresh.

`idempotent` does all of that around a create function inside a unit of work
(models/unit_of_work.py), which is how the create mutations use it.

The lock and the read are two statements on purpose: under READ COMMITTED every statement takes
a new snapshot, so a read issued after the lock is granted sees the row of a transaction that
committed (and so released the lock) before; one statement doing both would read with a snapshot
taken before the lock was granted. The caller's transaction must therefore be READ COMMITTED
(PostgreSQL's default). Expired rows are ignored here, overwritten by `record` when their key is
used again, and deleted by the nightly sweep (`purge_expired`).

The table is operational state, not business data: the audit trail does not record it.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import CheckConstraint, Index, String, UniqueConstraint, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAt, TenantScoped, Timestamptz, Uuid, UUIDPrimaryKey, tenant_fk
from models.errors import Conflict, DomainError, Invalid, NotFound

if TYPE_CHECKING:  # models.unit_of_work imports the audit trail, which imports this module
    from models.unit_of_work import UnitOfWork

__all__ = [
    "KEY_MAX_LENGTH",
    "LOCK_CLASS",
    "RETENTION",
    "IdempotencyClaim",
    "IdempotencyInProgress",
    "IdempotencyKey",
    "IdempotencyKeyInvalid",
    "IdempotencyKeyReused",
    "StoredResult",
    "claim",
    "idempotent",
    "lock_scope",
    "purge_expired",
    "request_hash",
    "validate_key",
]

#: How long a key answers retries.
RETENTION = datetime.timedelta(hours=24)
#: Longest key accepted, in characters (a UUID is 36; room for a client's own scheme).
KEY_MAX_LENGTH = 200
#: First argument of pg_try_advisory_xact_lock(int4, int4) ("GWI"); the second is
#: hashtext(lock_scope(...)). Distinct from the audit chain's classes ("GWA" + 1..3); a 32-bit
#: hash collision between two live keys only makes one answer CONFLICT while the other runs.
LOCK_CLASS = 0x47574900


class IdempotencyKey(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """A create's idempotency key: which request used it and which entity that request created."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id", "key"),
        # The nightly purge runs per tenant (row-level security adds tenant_id = ...).
        Index(None, "tenant_id", "expires_at"),
        CheckConstraint("char_length(key) >= 1", name="key_not_empty"),
        CheckConstraint("request_hash ~ '^[0-9a-f]{64}$'", name="request_hash_format"),
        tenant_fk("user_id", "users", ondelete="CASCADE"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    key: Mapped[str] = mapped_column(String(KEY_MAX_LENGTH), nullable=False)
    # The GraphQL mutation field the key was used with (opportunityProjectCreate...).
    mutation: Mapped[str] = mapped_column(String(100), nullable=False)
    # SHA-256 (hex) of the mutation name and its canonical input without the key (`request_hash`).
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    # The entity the create produced: its entity type (as in audit_logs.entity_type) and id.
    result_type: Mapped[str] = mapped_column(String(63), nullable=False)
    result_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    expires_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False)


# -- errors --------------------------------------------------------------------------------------

# The input field every refusal here is about (models/errors.py: relative to the mutation's input).
_FIELD = "idempotency_key"


class IdempotencyKeyInvalid(Invalid):
    """VALIDATION: the key is empty or longer than KEY_MAX_LENGTH characters."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field=_FIELD)


class IdempotencyKeyReused(DomainError):
    """IDEMPOTENCY_KEY_REUSED: the key was used within RETENTION for a different request."""

    code = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, message: str) -> None:
        super().__init__(message, field=_FIELD)


class IdempotencyInProgress(Conflict):
    """CONFLICT: a request with the same key is running now; retry once it has finished."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field=_FIELD)


# -- request hash ----------------------------------------------------------------------------------


def request_hash(mutation: str, values: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of `mutation` and `values` (the input without the key), encoded canonically.

    Every value is encoded as [kind, value], so values of different kinds never encode alike (a
    JSON object cannot pass for a decimal): numbers (int, float, Decimal) by their normalized
    decimal text, so 1.5 and 1.50 agree; UUIDs as text; datetimes in ISO 8601, aware ones in UTC,
    so two offsets naming one instant agree; dates; Enums by their value; mappings with sorted
    keys; lists and tuples alike; dataclasses by their fields. Anything else is a TypeError.
    """
    body = [mutation, _canonical(values)]
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def _canonical(value: Any) -> list[Any]:
    if value is None:
        return ["null"]
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int | float | decimal.Decimal):
        number = decimal.Decimal(repr(value)) if isinstance(value, float) else decimal.Decimal(value)
        if not number.is_finite():
            raise TypeError("cannot hash a number that is not finite in an idempotent request")
        return ["number", str(number.normalize())]
    if isinstance(value, str):
        return ["string", value]
    if isinstance(value, uuid.UUID):
        return ["uuid", str(value)]
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC)
        return ["datetime", value.isoformat()]
    if isinstance(value, datetime.date):
        return ["date", value.isoformat()]
    if isinstance(value, Mapping):
        return ["object", {str(k): _canonical(v) for k, v in value.items()}]
    if isinstance(value, list | tuple):
        return ["list", [_canonical(v) for v in value]]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ["object", {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}]
    raise TypeError(f"cannot hash a {type(value).__name__} in an idempotent request")


# -- claiming a key --------------------------------------------------------------------------------


def lock_scope(tenant_id: uuid.UUID, user_id: uuid.UUID, key: str) -> str:
    """The text whose hashtext() is the second key of the advisory lock on (tenant, user, key)."""
    return f"{tenant_id}:{user_id}:{key}"


def validate_key(key: str) -> None:
    """Refuse a key that is empty or longer than KEY_MAX_LENGTH characters."""
    if not 1 <= len(key) <= KEY_MAX_LENGTH:
        raise IdempotencyKeyInvalid(f"idempotencyKey must be 1 to {KEY_MAX_LENGTH} characters long")


@dataclasses.dataclass(frozen=True, slots=True)
class StoredResult:
    """What the first request with a key created."""

    entity_type: str
    entity_id: uuid.UUID
    created_at: datetime.datetime


_LOCK = text("SELECT pg_try_advisory_xact_lock(:cls, hashtext(:scope))")
_FIND = text(
    "SELECT mutation, request_hash, result_type, result_id, created_at FROM idempotency_keys"
    " WHERE tenant_id = :t AND user_id = :u AND key = :k AND expires_at > now()"
)
# An expired row of the same key (not purged yet) is replaced; an unexpired one is left alone and
# nothing is returned, which `record` reports as a conflict.
_RECORD = text(
    "INSERT INTO idempotency_keys"
    " (tenant_id, user_id, key, mutation, request_hash, result_type, result_id, created_at, expires_at)"
    " VALUES (:t, :u, :k, :m, :h, :rt, :rid, now(), now() + :ttl)"
    " ON CONFLICT (tenant_id, user_id, key) DO UPDATE SET"
    " mutation = EXCLUDED.mutation, request_hash = EXCLUDED.request_hash,"
    " result_type = EXCLUDED.result_type, result_id = EXCLUDED.result_id,"
    " created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at"
    " WHERE idempotency_keys.expires_at <= now()"
    " RETURNING id"
)


class IdempotencyClaim:
    """The outcome of `claim`: a stored result to replay, or the right to create and `record`."""

    __slots__ = ("_conn", "_hash", "_key", "_mutation", "_recorded", "_tenant_id", "_user_id", "replay")

    def __init__(
        self,
        conn: AsyncConnection,
        *,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        key: str,
        mutation: str,
        request_hash: str,
        replay: StoredResult | None,
    ) -> None:
        self._conn = conn
        self._tenant_id = tenant_id
        self._user_id = user_id
        self._key = key
        self._mutation = mutation
        self._hash = request_hash
        self._recorded = False
        self.replay = replay

    async def record(self, entity_type: str, entity_id: uuid.UUID) -> None:
        """Store the created entity under the key, in the transaction that created it."""
        if self.replay is not None or self._recorded:
            raise RuntimeError("this idempotency key already has its result")
        stored = await self._conn.scalar(
            _RECORD,
            {
                "t": self._tenant_id,
                "u": self._user_id,
                "k": self._key,
                "m": self._mutation,
                "h": self._hash,
                "rt": entity_type,
                "rid": entity_id,
                "ttl": RETENTION,
            },
        )
        if stored is None:
            # Only a writer that skipped the lock can get here; the caller's transaction (and
            # with it the entity just created) must roll back.
            raise IdempotencyInProgress("another request with this idempotencyKey completed first")
        self._recorded = True


async def claim(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    key: str,
    mutation: str,
    request_hash: str,
) -> IdempotencyClaim:
    """Claim `key` for this request in `conn`'s transaction (READ COMMITTED, tenant set).

    Raises IdempotencyKeyInvalid, IdempotencyInProgress or IdempotencyKeyReused; otherwise the
    claim either carries `replay` (answer with that entity, write nothing) or must be `record`ed
    once the entity exists. The lock is held until the transaction ends.
    """
    validate_key(key)
    locked = await conn.scalar(_LOCK, {"cls": LOCK_CLASS, "scope": lock_scope(tenant_id, user_id, key)})
    if not locked:
        raise IdempotencyInProgress("a request with this idempotencyKey is still running; retry when it has finished")
    row = (await conn.execute(_FIND, {"t": tenant_id, "u": user_id, "k": key})).first()
    replay = None
    if row is not None:
        if row.mutation != mutation or row.request_hash != request_hash:
            raise IdempotencyKeyReused(
                "this idempotencyKey was already used for a different request in the last 24 hours"
            )
        replay = StoredResult(entity_type=row.result_type, entity_id=row.result_id, created_at=row.created_at)
    return IdempotencyClaim(
        conn,
        tenant_id=tenant_id,
        user_id=user_id,
        key=key,
        mutation=mutation,
        request_hash=request_hash,
        replay=replay,
    )


async def purge_expired(conn: AsyncConnection, now: datetime.datetime) -> int:
    """Delete the keys of the connection's tenant that expired at or before `now`; their count."""
    result = await conn.execute(text("DELETE FROM idempotency_keys WHERE expires_at <= :now"), {"now": now})
    return int(result.rowcount)


async def idempotent(
    uow: UnitOfWork,
    key: str | None,
    *,
    mutation: str,
    values: Mapping[str, Any],
    create: Callable[[], Awaitable[uuid.UUID]],
) -> uuid.UUID:
    """The id of the entity `create` makes in `uow`, made once per idempotency key.

    Without a key, `create` simply runs. With one, the key is claimed for (`mutation`, `values`:
    the input without the key) first: a retry returns the stored entity's id without calling
    `create` or writing anything (NotFound if that entity has been deleted since); otherwise
    `create` runs and the key is stored with the audited entity it created, in the same
    transaction. Raises the refusals of `claim`.
    """
    if key is None:
        return await create()
    user_id = uow.actor_id
    if user_id is None:
        raise RuntimeError("an idempotency key belongs to a user: this unit of work has no actor")
    claimed = await claim(
        uow.connection,
        tenant_id=uow.tenant_id,
        user_id=user_id,
        key=key,
        mutation=mutation,
        request_hash=request_hash(mutation, values),
    )
    if claimed.replay is not None:
        await _check_still_there(uow, claimed.replay)
        return claimed.replay.entity_id
    entity_id = await create()
    await uow.flush()
    entity_type = next((kind for kind, written in uow.entities if written == entity_id), None)
    if entity_type is None:
        raise RuntimeError(f"{mutation} returned {entity_id}, which is no audited row it wrote")
    await claimed.record(entity_type, entity_id)
    return entity_id


async def _check_still_there(uow: UnitOfWork, stored: StoredResult) -> None:
    from models.audit_trail import AUDITED

    model = next((m for m, kind in AUDITED.items() if kind.value == stored.entity_type), None)
    if model is None:
        raise RuntimeError(f"idempotency key result of unknown entity type {stored.entity_type!r}")
    table = model.__table__
    found = await uow.connection.scalar(
        select(table.c.id).where(table.c.tenant_id == uow.tenant_id, table.c.id == stored.entity_id)
    )
    if found is None:
        what = stored.entity_type.replace("_", " ")
        raise NotFound(
            f"The {what} first created with this idempotencyKey has been deleted since.", field=_FIELD
        )
