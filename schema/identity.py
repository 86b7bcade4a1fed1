"""Identity in GraphQL: the viewer, users, tenants, roles, sessions, API keys, and their mutations.

Only non-secret fields exist here: no password hash, TOTP secret, session token hash or key hash
(tests/test_graphql_schema.py checks the SDL). Values shown once are fields of the payload that
creates them and nowhere else: `ApiKeyCreatePayload.key`, `MfaEnrollment` (the TOTP secret while
enrolling) and `MfaEnrollmentConfirmPayload.recoveryCodes`.

What `viewer` means for each kind of caller:
- a session or OIDC token: the signed-in user, their unexpired role assignments and active sessions;
- an API key: the tenant's system user (the actor recorded on everything the key does), the key's
  one role (tenant-wide, expiring with the key), no sessions, and `apiKey` set to the key.
`permissions` is always the effective tenant-wide permission set the request is checked against.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import strawberry
from strawberry import relay
from strawberry.types.base import get_object_definition

from auth.api_keys import MAX_EXPIRY_DAYS, ApiKeyRecord
from auth.permissions import Permission
from auth.principal import Principal, PrincipalKind
from resolvers.identity import mutations, queries
from models import User as UserModel
from schema.context import Info
from schema.node import EntityNode
from schema.errors import UserError, payload_or_errors
from schema.permissions import requires

__all__ = [
    "ApiKey",
    "IdentityMutation",
    "IdentityQuery",
    "RoleAssignment",
    "Session",
    "Tenant",
    "User",
    "Viewer",
]


CredentialKind = strawberry.enum(
    PrincipalKind, name="CredentialKind", description="How the caller authenticated."
)


@strawberry.type(description="A person who signs in to the tenant, or the tenant's system user.")
class User(EntityNode, relay.Node):
    _table = UserModel.__table__

    row_id: uuid.UUID
    email: str
    first_name: str
    last_name: str
    title: str | None
    phone: str | None
    avatar_url: str | None
    is_active: bool
    is_system: bool = strawberry.field(description="The tenant's non-person actor (API keys act as it).")
    is_saml_user: bool
    email_verified: bool
    mfa_enabled: bool
    must_change_password: bool
    locked_until: datetime | None = strawberry.field(description="Set while the account is locked (AC-7).")
    last_login_at: datetime | None
    created_at: datetime


@strawberry.type(description="The customer organisation the caller belongs to.")
class Tenant:
    id: uuid.UUID
    name: str
    subdomain: str
    plan_type: str
    is_active: bool
    fedramp_compliant: bool
    max_users: int

    @classmethod
    def from_row(cls, row: Any) -> Tenant:
        return cls(**{name: getattr(row, name) for name in _FIELDS[cls]})


@strawberry.type(description="A named set of permissions.")
class Role:
    id: uuid.UUID
    name: str
    description: str | None
    is_system_role: bool
    permissions: list[str] = strawberry.field(description="Permission strings (resource:action).")

    @classmethod
    def from_row(cls, row: Any) -> Role:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            is_system_role=row.is_system_role,
            permissions=sorted(p for p in row.permissions or [] if isinstance(p, str)),
        )


@strawberry.type(description="A role the caller acts with: tenant-wide, or on one opportunity project.")
class RoleAssignment:
    role: Role
    opportunity_project_id: uuid.UUID | None = strawberry.field(
        description="Null: the role applies tenant-wide."
    )
    expires_at: datetime | None


@strawberry.type(description="A signed-in session (its token is never shown again after sign-in).")
class Session:
    id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime
    last_activity_at: datetime
    expires_at: datetime | None
    ip_address: str | None
    user_agent: str | None
    is_active: bool
    terminated_at: datetime | None
    termination_reason: str | None
    mfa_verified: bool
    current: bool = strawberry.field(description="True for the session this request is made with.")

    @classmethod
    def from_row(cls, row: Any, principal: Principal) -> Session:
        values = {name: getattr(row, name) for name in _FIELDS[cls] if name != "current"}
        return cls(**values, current=row.id == principal.session_id)


@strawberry.type(description="A key for a service integration; the key itself is shown only when created.")
class ApiKey:
    id: uuid.UUID
    name: str
    key_prefix: str = strawberry.field(description="The key's first characters, to tell keys apart.")
    role_id: uuid.UUID
    role_name: str
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: uuid.UUID | None
    last_used_at: datetime | None = strawberry.field(description="Updated at most once a minute.")
    created_at: datetime
    created_by: uuid.UUID

    @classmethod
    def from_record(cls, record: ApiKeyRecord) -> ApiKey:
        return cls(**{name: getattr(record, name) for name in _FIELDS[cls]})


@strawberry.type(description="The caller: who, in which tenant, with which roles and permissions.")
class Viewer:
    _principal: strawberry.Private[Principal]

    @strawberry.field(description="How the caller authenticated.")
    def credential(self) -> PrincipalKind:
        return self._principal.kind

    @strawberry.field(description="Effective tenant-wide permissions of this request, sorted.")
    def permissions(self) -> list[str]:
        return sorted(self._principal.grants.tenant_wide)

    @strawberry.field(description="The signed-in user; for an API key, the tenant's system user.")
    async def user(self, info: Info) -> User:
        row = await queries.user(info.context.auth, self._principal, self._principal.user_id)
        if row is None:  # the middleware resolved this principal a moment ago
            raise RuntimeError("the caller's user row is not visible")
        return User.from_row(row)

    @strawberry.field
    async def tenant(self, info: Info) -> Tenant:
        return Tenant.from_row(await queries.tenant(info.context.auth, self._principal))

    @strawberry.field(description="Unexpired role assignments; for an API key, its role.")
    async def roles(self, info: Info) -> list[RoleAssignment]:
        rows = await queries.role_assignments(info.context.auth, self._principal)
        return [
            RoleAssignment(
                role=Role.from_row(r),
                opportunity_project_id=r.opportunity_project_id,
                expires_at=r.expires_at,
            )
            for r in rows
        ]

    @strawberry.field(description="The caller's sessions that are still usable (none for an API key).")
    async def sessions(self, info: Info) -> list[Session]:
        rows = await queries.active_sessions(info.context.auth, self._principal)
        return [Session.from_row(r, self._principal) for r in rows]

    @strawberry.field(description="The API key the request was made with, if any.")
    async def api_key(self, info: Info) -> ApiKey | None:
        record = await queries.caller_api_key(info.context.auth, self._principal)
        return None if record is None else ApiKey.from_record(record)


_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.python_name for f in get_object_definition(cls, strict=True).fields)
    for cls in (Tenant, Session, ApiKey)
}


# -- inputs and payloads -----------------------------------------------------------------------


@strawberry.input
class ApiKeyCreateInput:
    name: str = strawberry.field(description="Unique within the tenant, at most 100 characters.")
    role_name: str = strawberry.field(description="The role of the tenant whose permissions the key gets.")
    expires_in_days: int = strawberry.field(description=f"1 to {MAX_EXPIRY_DAYS}: every key expires.")


@strawberry.input
class UserInviteInput:
    email: str
    first_name: str
    last_name: str
    roles: list[str] = strawberry.field(description="Names of roles of the tenant (system or custom).")


@strawberry.type(description="A TOTP secret being enrolled: show it to the user once (QR code or typed in).")
class MfaEnrollment:
    provisioning_uri: str = strawberry.field(description="otpauth:// URI; contains the secret.")
    secret: str = strawberry.field(description="The base32 secret, for manual entry.")


@strawberry.type
class MfaEnrollmentStartPayload:
    enrollment: MfaEnrollment | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class MfaEnrollmentConfirmPayload:
    user: User | None = None
    recovery_codes: list[str] | None = strawberry.field(
        default=None, description="Single-use recovery codes, shown this once."
    )
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class SessionRevokePayload:
    session: Session | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ApiKeyCreatePayload:
    api_key: ApiKey | None = None
    key: str | None = strawberry.field(
        default=None, description="The key, shown this once: send it as `Authorization: Bearer <key>`."
    )
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ApiKeyRevokePayload:
    api_key: ApiKey | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UserInvitePayload:
    user: User | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UserUnlockPayload:
    user: User | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UserDeactivatePayload:
    user: User | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UserSetTemporaryPasswordPayload:
    user: User | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


# -- root fields -------------------------------------------------------------------------------


async def _session_owner(context: Any, session_id: uuid.UUID) -> uuid.UUID | None:
    return await mutations.session_owner(context.auth, context.principal, session_id)


@strawberry.type
class IdentityQuery:
    @strawberry.field(description="The caller.")
    def viewer(self, info: Info) -> Viewer:
        return Viewer(_principal=info.context.principal)

    @strawberry.field(
        description="The tenant's API keys, newest first.", extensions=[requires(Permission.API_KEY_ADMIN)]
    )
    async def api_keys(self, info: Info, include_revoked: bool = False) -> list[ApiKey]:
        ctx = info.context
        records = await queries.api_keys(ctx.auth, ctx.principal, include_revoked=include_revoked)
        return [ApiKey.from_record(r) for r in records]


@strawberry.type
class IdentityMutation:
    @strawberry.mutation(description="Begin TOTP enrolment for the signed-in user (password sessions only).")
    async def mfa_enrollment_start(self, info: Info) -> MfaEnrollmentStartPayload:
        ctx = info.context

        async def work() -> MfaEnrollmentStartPayload:
            enrollment = await mutations.mfa_enrollment_start(ctx.auth, ctx.principal, ctx.meta)
            return MfaEnrollmentStartPayload(
                enrollment=MfaEnrollment(
                    provisioning_uri=enrollment.provisioning_uri, secret=enrollment.secret
                )
            )

        return await payload_or_errors(MfaEnrollmentStartPayload, work())

    @strawberry.mutation(description="Turn MFA on with a code from the authenticator; returns recovery codes")
    async def mfa_enrollment_confirm(self, info: Info, code: str) -> MfaEnrollmentConfirmPayload:
        ctx = info.context

        async def work() -> MfaEnrollmentConfirmPayload:
            codes = await mutations.mfa_enrollment_confirm(ctx.auth, ctx.principal, code, ctx.meta)
            row = await queries.user(ctx.auth, ctx.principal, ctx.principal.user_id)
            return MfaEnrollmentConfirmPayload(
                user=None if row is None else User.from_row(row), recovery_codes=codes
            )

        return await payload_or_errors(MfaEnrollmentConfirmPayload, work())

    @strawberry.mutation(
        description="End a session now: your own, or any of the tenant's with user:admin.",
        extensions=[requires(Permission.USER_ADMIN, unless_owner=("session_id", _session_owner))],
    )
    async def session_revoke(self, info: Info, session_id: uuid.UUID) -> SessionRevokePayload:
        ctx = info.context

        async def work() -> SessionRevokePayload:
            row = await mutations.session_revoke(ctx.auth, ctx.principal, session_id, ctx.meta)
            return SessionRevokePayload(session=Session.from_row(row, ctx.principal))

        return await payload_or_errors(SessionRevokePayload, work())

    @strawberry.mutation(
        description="Create an API key scoped to one role; the key is in the payload, this once.",
        extensions=[requires(Permission.API_KEY_ADMIN)],
    )
    async def api_key_create(self, info: Info, input: ApiKeyCreateInput) -> ApiKeyCreatePayload:
        ctx = info.context

        async def work() -> ApiKeyCreatePayload:
            record, key = await mutations.api_key_create(
                ctx.auth,
                ctx.principal,
                name=input.name,
                role_name=input.role_name,
                expires_in_days=input.expires_in_days,
                meta=ctx.meta,
            )
            return ApiKeyCreatePayload(api_key=ApiKey.from_record(record), key=key)

        return await payload_or_errors(ApiKeyCreatePayload, work(), under=("input",))

    @strawberry.mutation(
        description="Revoke an API key at once.", extensions=[requires(Permission.API_KEY_ADMIN)]
    )
    async def api_key_revoke(self, info: Info, id: uuid.UUID) -> ApiKeyRevokePayload:
        ctx = info.context

        async def work() -> ApiKeyRevokePayload:
            record = await mutations.api_key_revoke(ctx.auth, ctx.principal, id, ctx.meta)
            return ApiKeyRevokePayload(api_key=ApiKey.from_record(record))

        return await payload_or_errors(ApiKeyRevokePayload, work())

    @strawberry.mutation(
        description="Invite a person by email (a single-use link valid 24 hours).",
        extensions=[requires(Permission.USER_ADMIN)],
    )
    async def user_invite(self, info: Info, input: UserInviteInput) -> UserInvitePayload:
        ctx = info.context

        async def work() -> UserInvitePayload:
            row = await mutations.user_invite(
                ctx.auth,
                ctx.principal,
                email=input.email,
                first_name=input.first_name,
                last_name=input.last_name,
                role_names=list(input.roles),
                meta=ctx.meta,
            )
            return UserInvitePayload(user=User.from_row(row))

        return await payload_or_errors(UserInvitePayload, work(), under=("input",))

    @strawberry.mutation(description="Lift a lockout.", extensions=[requires(Permission.USER_ADMIN)])
    async def user_unlock(self, info: Info, user_id: uuid.UUID) -> UserUnlockPayload:
        ctx = info.context

        async def work() -> UserUnlockPayload:
            row = await mutations.user_unlock(ctx.auth, ctx.principal, user_id, ctx.meta)
            return UserUnlockPayload(user=User.from_row(row))

        return await payload_or_errors(UserUnlockPayload, work())

    @strawberry.mutation(
        description="Disable an account and end its sessions.", extensions=[requires(Permission.USER_ADMIN)]
    )
    async def user_deactivate(self, info: Info, user_id: uuid.UUID) -> UserDeactivatePayload:
        ctx = info.context

        async def work() -> UserDeactivatePayload:
            row = await mutations.user_deactivate(ctx.auth, ctx.principal, user_id, ctx.meta)
            return UserDeactivatePayload(user=User.from_row(row))

        return await payload_or_errors(UserDeactivatePayload, work())

    @strawberry.mutation(
        description="Set a temporary password the user must change at the next sign-in.",
        extensions=[requires(Permission.USER_ADMIN)],
    )
    async def user_set_temporary_password(
        self, info: Info, user_id: uuid.UUID, password: str
    ) -> UserSetTemporaryPasswordPayload:
        ctx = info.context

        async def work() -> UserSetTemporaryPasswordPayload:
            row = await mutations.user_set_temporary_password(
                ctx.auth, ctx.principal, user_id, password, ctx.meta
            )
            return UserSetTemporaryPasswordPayload(user=User.from_row(row))

        return await payload_or_errors(UserSetTemporaryPasswordPayload, work())

