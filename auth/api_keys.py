"""API keys for service integrations that cannot use OIDC: create, revoke, list.

A key is shown once (`gwm_` + 256 random bits) and stored as its SHA-256 (auth.tokens); it acts
with the permissions of one role of its tenant, tenant-wide, and always expires (1 to 365 days).
Presenting it (`Authorization: Bearer gwm_...`) is handled by `AuthService._authenticate_api_key`,
which refuses revoked and expired keys and tracks `last_used_at` (written, and audited, at most once
a minute). Audit rows name the key by id; the key itself never reaches a row or a log. Creating and
revoking a key run in one unit of work (auth/audited.py): the api_keys row and its event row
(`auth.api_key.created` / `auth.api_key.revoked`) commit together.

Rules beyond the permission to manage keys (API_KEY_ADMIN, declared on the GraphQL fields):
- only a person manages keys: a key cannot create or revoke keys, so revoking a leaked key cannot
  leave keys it minted behind (NOT_A_PERSON);
- a key's role may not grant more than its creator holds tenant-wide (ROLE_EXCEEDS_YOUR_PERMISSIONS),
  so the permission to manage keys is not a way to gain other permissions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from auth.audit import AuthEvent, RequestMeta
from auth.audited import caller_unit
from auth.exceptions import AuthRequestError
from auth.permissions import Permission
from auth.principal import Principal, PrincipalKind
from auth.service import AuthService
from auth.tokens import new_api_key
from models.access_events import AccessKind, access_ended
from models.db import set_tenant
from models.enums import RiskLevel

__all__ = [
    "MAX_EXPIRY_DAYS",
    "MAX_NAME_LENGTH",
    "ApiKeyRecord",
    "create_api_key",
    "get_api_key",
    "list_api_keys",
    "revoke_api_key",
]

MAX_EXPIRY_DAYS = 365
MAX_NAME_LENGTH = 100

_COLUMNS = (
    "k.id, k.tenant_id, k.name, k.key_prefix, k.role_id, r.name AS role_name, k.expires_at, k.revoked_at,"
    " k.revoked_by, k.last_used_at, k.created_at, k.created_by"
)
_FROM = " FROM api_keys k JOIN roles r ON r.id = k.role_id AND r.tenant_id = k.tenant_id"


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An api_keys row without its hash."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    key_prefix: str
    role_id: uuid.UUID
    role_name: str
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: uuid.UUID | None
    last_used_at: datetime | None
    created_at: datetime
    created_by: uuid.UUID

    @classmethod
    def from_row(cls, row: Any) -> ApiKeyRecord:
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


async def create_api_key(
    service: AuthService,
    principal: Principal,
    *,
    name: str,
    role_name: str,
    expires_in_days: int,
    meta: RequestMeta,
) -> tuple[ApiKeyRecord, str]:
    """A new key of the caller's tenant; returns the row and the key (shown once, never stored)."""
    _require_person(principal)
    name = " ".join(name.split())
    if not name:
        raise AuthRequestError(400, "NAME_REQUIRED", "Give the key a name.", field="name")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise AuthRequestError(
            400, "INVALID_NAME", "The name may not contain control characters.", field="name"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise AuthRequestError(
            400, "NAME_TOO_LONG", f"The name may have at most {MAX_NAME_LENGTH} characters.", field="name"
        )
    if isinstance(expires_in_days, bool) or not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
        raise AuthRequestError(
            400, "INVALID_EXPIRY", f"A key expires after 1 to {MAX_EXPIRY_DAYS} days.", field="expiresInDays"
        )
    now = service.now()
    key, key_hash, prefix = new_api_key()
    unit = caller_unit(service, principal, meta, field="apiKeyCreate", permission=Permission.API_KEY_ADMIN.value)
    async with unit as uow:
        conn = uow.connection
        role = (
            await conn.execute(
                text("SELECT id, name, permissions FROM roles WHERE tenant_id = :t AND name = :n"),
                {"t": principal.tenant_id, "n": role_name},
            )
        ).first()
        if role is None:
            raise AuthRequestError(404, "ROLE_NOT_FOUND", "There is no role of that name.", field="roleName")
        excess = {p for p in role.permissions or [] if isinstance(p, str)} - principal.grants.tenant_wide
        if excess:
            raise AuthRequestError(
                403,
                "ROLE_EXCEEDS_YOUR_PERMISSIONS",
                "A key may not be given permissions you do not hold: " + ", ".join(sorted(excess)) + ".",
                field="roleName",
            )
        taken = await conn.scalar(
            text("SELECT 1 FROM api_keys WHERE tenant_id = :t AND name = :n"),
            {"t": principal.tenant_id, "n": name},
        )
        if taken:
            raise _name_taken()
        try:
            row = (
                await conn.execute(
                    text(
                        "WITH k AS (INSERT INTO api_keys (tenant_id, name, key_prefix, key_hash, role_id,"  # noqa: S608
                        " expires_at, created_by, created_at)"
                        " VALUES (:t, :n, :prefix, :h, :role, :exp, :by, :now) RETURNING *)"
                        f" SELECT {_COLUMNS} FROM k JOIN roles r ON r.id = k.role_id"
                    ),
                    {
                        "t": principal.tenant_id,
                        "n": name,
                        "prefix": prefix,
                        "h": key_hash,
                        "role": role.id,
                        "exp": now + timedelta(days=expires_in_days),
                        "by": principal.user_id,
                        "now": now,
                    },
                )
            ).one()
        except IntegrityError:  # the same name created concurrently (the transaction rolls back)
            raise _name_taken() from None
        record = ApiKeyRecord.from_row(row)
        uow.record_event(
            AuthEvent.API_KEY_CREATED,
            entity_type="api_key",
            entity_id=record.id,
            risk=RiskLevel.MEDIUM,
            description=f"API key {record.name!r} created with role {record.role_name!r}",
            details={
                "name": record.name,
                "role": record.role_name,
                "key_prefix": record.key_prefix,
                "expires_at": record.expires_at,
            },
        )
    return record, key


async def revoke_api_key(
    service: AuthService, principal: Principal, key_id: uuid.UUID, *, meta: RequestMeta
) -> ApiKeyRecord:
    """Revoke one of the tenant's keys at once; the next request with it gets 401."""
    _require_person(principal)
    now = service.now()
    unit = caller_unit(service, principal, meta, field="apiKeyRevoke", permission=Permission.API_KEY_ADMIN.value)
    async with unit as uow:
        conn = uow.connection
        revoked = await conn.scalar(
            text(
                "UPDATE api_keys SET revoked_at = :now, revoked_by = :by"
                " WHERE id = :k AND tenant_id = :t AND revoked_at IS NULL RETURNING id"
            ),
            {"k": key_id, "t": principal.tenant_id, "now": now, "by": principal.user_id},
        )
        row = (
            await conn.execute(
                text(f"SELECT {_COLUMNS}{_FROM} WHERE k.id = :k AND k.tenant_id = :t"),
                {"k": key_id, "t": principal.tenant_id},
            )
        ).first()
        if row is None:  # another tenant's key is simply not there
            raise AuthRequestError(404, "NOT_FOUND", "There is no API key with that id.", field="id")
        if revoked is None:
            raise AuthRequestError(409, "ALREADY_REVOKED", "The key was already revoked.", field="id")
        record = ApiKeyRecord.from_row(row)
        await access_ended(conn, AccessKind.API_KEY_REVOKED, tenant_id=principal.tenant_id, api_key_id=key_id)
        uow.record_event(
            AuthEvent.API_KEY_REVOKED,
            entity_type="api_key",
            entity_id=record.id,
            risk=RiskLevel.MEDIUM,
            description=f"API key {record.name!r} revoked",
            details={"name": record.name, "revoked_at": record.revoked_at},
        )
    return record


async def list_api_keys(
    service: AuthService, principal: Principal, *, include_revoked: bool = False
) -> list[ApiKeyRecord]:
    """The tenant's keys, newest first; revoked ones only when asked."""
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        rows = (
            await conn.execute(
                text(
                    f"SELECT {_COLUMNS}{_FROM} WHERE k.tenant_id = :t"
                    " AND (CAST(:all AS boolean) OR k.revoked_at IS NULL) ORDER BY k.created_at DESC, k.id"
                ),
                {"t": principal.tenant_id, "all": include_revoked},
            )
        ).all()
    return [ApiKeyRecord.from_row(r) for r in rows]


async def get_api_key(service: AuthService, principal: Principal, key_id: uuid.UUID) -> ApiKeyRecord | None:
    """One key of the caller's tenant, or None."""
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        row = (
            await conn.execute(
                text(f"SELECT {_COLUMNS}{_FROM} WHERE k.id = :k AND k.tenant_id = :t"),
                {"k": key_id, "t": principal.tenant_id},
            )
        ).first()
    return None if row is None else ApiKeyRecord.from_row(row)


def _require_person(principal: Principal) -> None:
    if principal.kind is PrincipalKind.API_KEY:
        raise AuthRequestError(
            403, "NOT_A_PERSON", "API keys cannot manage API keys; a signed-in administrator must do it."
        )


def _name_taken() -> AuthRequestError:
    return AuthRequestError(
        409,
        "NAME_TAKEN",
        "The tenant already has a key of that name (revoked keys keep theirs).",
        field="name",
    )
