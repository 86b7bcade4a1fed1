"""Authentication state beyond the seed: recovery codes, linked identities, account tokens,
API keys and the SAML request/replay caches.

All are tenant-owned (row-level security like every other table); the few lookups that happen
before a tenant is known (an account token or API key presented alone) go through SECURITY DEFINER
functions (migration 0002). Secrets are never stored: only SHA-256 digests of random tokens.
"""

from __future__ import annotations

import datetime
import uuid
from enum import StrEnum

from sqlalchemy import Index, PrimaryKeyConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import (
    Base,
    CreatedAt,
    TenantScoped,
    Timestamptz,
    Uuid,
    UUIDPrimaryKey,
    tenant_fk,
    values_check,
)

__all__ = [
    "AccountToken",
    "AccountTokenPurpose",
    "ApiKey",
    "IdentityProvider",
    "MfaRecoveryCode",
    "SamlAssertionSeen",
    "SamlAuthnRequest",
    "UserIdentity",
]


class IdentityProvider(StrEnum):
    """user_identities.provider: the kind of external identity linked to a user."""

    OIDC = "oidc"
    SAML = "saml"


class AccountTokenPurpose(StrEnum):
    """account_tokens.purpose: what a single-use emailed token lets its holder do."""

    INVITATION = "invitation"
    PASSWORD_RESET = "password_reset"


class MfaRecoveryCode(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """One of a user's single-use MFA recovery codes (SHA-256 of the normalized code)."""

    __tablename__ = "mfa_recovery_codes"
    __table_args__ = (
        UniqueConstraint("user_id", "code_hash"),
        tenant_fk("user_id", "users", ondelete="CASCADE"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    code_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    used_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)


class UserIdentity(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """An external identity (OIDC issuer+subject, SAML IdP+NameID) that signs in as a user."""

    __tablename__ = "user_identities"
    __table_args__ = (
        UniqueConstraint("tenant_id", "provider", "issuer", "subject"),
        Index(None, "user_id"),
        values_check("provider", IdentityProvider),
        tenant_fk("user_id", "users", ondelete="CASCADE"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    provider: Mapped[str] = mapped_column(String(10), nullable=False)
    issuer: Mapped[str] = mapped_column(String(500), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    last_used_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)


class AccountToken(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """A single-use invitation or password-reset token, valid until expires_at (hash only)."""

    __tablename__ = "account_tokens"
    __table_args__ = (
        Index(None, "user_id", "purpose"),
        values_check("purpose", AccountTokenPurpose),
        tenant_fk("user_id", "users", ondelete="CASCADE"),
        tenant_fk("created_by", "users", ondelete=None),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    purpose: Mapped[str] = mapped_column(String(20), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    expires_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False)
    used_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    # The admin who invited or reset; NULL for a reset the user asked for.
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class ApiKey(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """A key for a service integration: acts with one role's permissions until it expires or is revoked."""

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        Index(None, "role_id"),
        tenant_fk("role_id", "roles", ondelete=None),
        tenant_fk("created_by", "users", ondelete=None),
        tenant_fk("revoked_by", "users", ondelete=None),
    )

    name: Mapped[str] = mapped_column(String(100), nullable=False)
    # The first characters of the key, shown in lists so people can tell keys apart.
    key_prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    role_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    expires_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False)
    revoked_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    revoked_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    last_used_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)


class SamlAuthnRequest(TenantScoped, CreatedAt, Base):
    """An AuthnRequest we issued; its id must come back as InResponseTo once, before expires_at."""

    __tablename__ = "saml_authn_requests"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "request_id"),)

    request_id: Mapped[str] = mapped_column(String(100), nullable=False)
    expires_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False)


class SamlAssertionSeen(TenantScoped, CreatedAt, Base):
    """Assertion ids already accepted, kept until their NotOnOrAfter, so a replay is refused."""

    __tablename__ = "saml_assertions_seen"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "assertion_id"),)

    assertion_id: Mapped[str] = mapped_column(String(255), nullable=False)
    not_on_or_after: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False)

