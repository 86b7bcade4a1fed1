"""The database-backed `SamlStateStore`: issued AuthnRequest ids and seen assertion ids, per tenant.

Every process of every machine shares these two tables (migration 0002, docs/decisions.md A6), so a
response is accepted once wherever it lands. Each operation is a single statement in its own short
transaction, scoped to the tenant by row-level security and by an explicit `tenant_id` filter:

- `consume_request_id`: `DELETE ... RETURNING`: of two processes racing on one request id, exactly
  one gets the row back; an expired row is deleted too, and refused.
- `remember_assertion`: `INSERT ... ON CONFLICT DO NOTHING RETURNING`: True only for the first
  insert of an assertion id; a replay finds the row and gets nothing back.

Time decisions use the service's clock. Expired request ids are purged when new ones are issued;
`purge_expired` (for the nightly job) also clears assertion ids past their `not_on_or_after`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.exceptions import SamlRejected
from auth.saml import SamlReason
from models.db import set_tenant

__all__ = ["REQUEST_TTL", "DbSamlStateStore", "purge_expired"]

REQUEST_TTL: Final = timedelta(minutes=10)
"""How long an issued AuthnRequest id may be answered."""

# Column widths (models/credentials.py). Longer values can never have been stored.
_MAX_REQUEST_ID: Final = 100
_MAX_ASSERTION_ID: Final = 255


class DbSamlStateStore:
    """`auth.saml.SamlStateStore` over saml_authn_requests / saml_assertions_seen for one tenant.

    `subdomain` is the tenant name `auth.saml` passes back (`SamlTenantConfig.tenant`); a call for
    any other tenant is refused rather than answered with this tenant's rows.
    """

    def __init__(
        self, engine: AsyncEngine, *, tenant_id: uuid.UUID, subdomain: str, clock: Callable[[], datetime]
    ) -> None:
        self._engine = engine
        self._tenant_id = tenant_id
        self._subdomain = subdomain
        self._clock = clock

    async def issue_request(self, request_id: str, ttl: timedelta = REQUEST_TTL) -> datetime:
        """Record an AuthnRequest id we are about to send; return when it stops being answerable."""
        if not request_id or len(request_id) > _MAX_REQUEST_ID:
            raise ValueError("request id must be 1..100 characters")
        now = self._clock()
        expires_at = now + ttl
        async with self._engine.begin() as conn:
            await set_tenant(conn, self._tenant_id)
            # Keeps the table at about ten minutes of sign-in attempts per tenant.
            await conn.execute(
                text("DELETE FROM saml_authn_requests WHERE tenant_id = :t AND expires_at <= :now"),
                {"t": self._tenant_id, "now": now},
            )
            await conn.execute(
                text(
                    "INSERT INTO saml_authn_requests (tenant_id, request_id, expires_at, created_at)"
                    " VALUES (:t, :r, :exp, :now)"
                ),
                {"t": self._tenant_id, "r": request_id, "exp": expires_at, "now": now},
            )
        return expires_at

    async def consume_request_id(self, tenant: str, request_id: str) -> bool:
        if tenant != self._subdomain or not request_id or len(request_id) > _MAX_REQUEST_ID:
            return False
        async with self._engine.begin() as conn:
            await set_tenant(conn, self._tenant_id)
            expires_at = await conn.scalar(
                text(
                    "DELETE FROM saml_authn_requests WHERE tenant_id = :t AND request_id = :r"
                    " RETURNING expires_at"
                ),
                {"t": self._tenant_id, "r": request_id},
            )
        return expires_at is not None and expires_at > self._clock()

    async def remember_assertion(self, tenant: str, assertion_id: str, not_on_or_after: datetime) -> bool:
        if tenant != self._subdomain:
            return False
        if not assertion_id or len(assertion_id) > _MAX_ASSERTION_ID:
            # Cannot be remembered, so it could be replayed: refuse it outright.
            raise SamlRejected(SamlReason.INVALID, "assertion id longer than the replay cache holds")
        async with self._engine.begin() as conn:
            await set_tenant(conn, self._tenant_id)
            inserted = await conn.scalar(
                text(
                    "INSERT INTO saml_assertions_seen (tenant_id, assertion_id, not_on_or_after, created_at)"
                    " VALUES (:t, :a, :until, :now)"
                    " ON CONFLICT (tenant_id, assertion_id) DO NOTHING RETURNING assertion_id"
                ),
                {"t": self._tenant_id, "a": assertion_id, "until": not_on_or_after, "now": self._clock()},
            )
        return inserted is not None


async def purge_expired(engine: AsyncEngine, tenant_id: uuid.UUID, now: datetime) -> tuple[int, int]:
    """Delete one tenant's expired request ids and assertion ids; return (requests, assertions).

    An assertion id is kept until its `not_on_or_after` (which `auth.saml` already extends past
    every validity window and skew), so purging it can never re-open a replay.
    """
    async with engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        requests = await conn.execute(
            text("DELETE FROM saml_authn_requests WHERE tenant_id = :t AND expires_at <= :now"),
            {"t": tenant_id, "now": now},
        )
        assertions = await conn.execute(
            text("DELETE FROM saml_assertions_seen WHERE tenant_id = :t AND not_on_or_after <= :now"),
            {"t": tenant_id, "now": now},
        )
    return int(requests.rowcount), int(assertions.rowcount)
