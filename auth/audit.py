"""`record_event()`: every authentication and account event, written to audit_logs.

One API for login success and failure, lockout, unlock, MFA, logout, revocation, SSO, invitations,
resets and API key use. It writes through the side-effect writer, so the event persists even
when the request's own transaction rolls back (a failed login, a refused operation). Values are
passed through `redact()` first: no password, token, secret or hash ever reaches an audit row.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from models import AuditLog
from models.enums import RiskLevel
from models.side_effects import SideEffectWriter

if TYPE_CHECKING:
    from auth.principal import Principal

__all__ = ["AuthEvent", "RequestMeta", "inet", "record_caller_event", "record_event", "redact"]


@dataclass(frozen=True, slots=True)
class RequestMeta:
    """Who is asking, from where: what an audit row records about the request."""

    request_id: str
    ip: str | None = None
    user_agent: str | None = None
    endpoint: str | None = None
    method: str | None = None


class AuthEvent(StrEnum):
    """audit_logs.action_type of authentication and account events."""

    LOGIN_SUCCEEDED = "auth.login.succeeded"
    LOGIN_FAILED = "auth.login.failed"
    ACCOUNT_LOCKED = "auth.account.locked"
    ACCOUNT_UNLOCKED = "auth.account.unlocked"
    MFA_ENROLLMENT_STARTED = "auth.mfa.enrollment_started"
    MFA_ENABLED = "auth.mfa.enabled"
    MFA_VERIFIED = "auth.mfa.verified"
    MFA_FAILED = "auth.mfa.failed"
    MFA_RECOVERY_CODE_USED = "auth.mfa.recovery_code_used"
    LOGOUT = "auth.session.logout"
    SESSION_REVOKED = "auth.session.revoked"
    SESSION_EXPIRED = "auth.session.expired"
    PASSWORD_CHANGED = "auth.password.changed"
    PASSWORD_CHANGE_REFUSED = "auth.password.change_refused"
    PASSWORD_RESET_REQUESTED = "auth.password.reset_requested"
    PASSWORD_RESET = "auth.password.reset"
    TEMPORARY_PASSWORD_SET = "auth.password.temporary_set"
    INVITATION_SENT = "auth.invitation.sent"
    INVITATION_ACCEPTED = "auth.invitation.accepted"
    SAML_LOGIN_SUCCEEDED = "auth.saml.succeeded"
    SAML_LOGIN_FAILED = "auth.saml.failed"
    OIDC_TOKEN_REJECTED = "auth.oidc.rejected"
    OIDC_IDENTITY_LINKED = "auth.oidc.identity_linked"
    # Browser sign-in through the tenant's OpenID provider (auth/routes_oidc.py).
    OIDC_LOGIN_SUCCEEDED = "auth.oidc.succeeded"
    OIDC_LOGIN_FAILED = "auth.oidc.login_failed"
    USER_PROVISIONED = "auth.user.provisioned"
    USER_DEACTIVATED = "auth.user.deactivated"
    USER_REACTIVATED = "auth.user.reactivated"
    USER_UPDATED = "auth.user.updated"
    # A change of roles or accounts refused because it would raise someone's privileges or leave
    # the tenant without an administrator (auth/roles.py ESCALATION_CODES; high risk).
    PRIVILEGE_REFUSED = "auth.privilege.refused"
    ROLE_ASSIGNMENT_EXPIRED = "auth.role_assignment.expired"
    ROLE_CREATED = "auth.role.created"
    ROLE_UPDATED = "auth.role.updated"
    ROLE_DELETED = "auth.role.deleted"
    ROLE_GRANTED = "auth.role_assignment.granted"
    ROLE_REVOKED = "auth.role_assignment.revoked"
    API_KEY_CREATED = "auth.api_key.created"
    API_KEY_REVOKED = "auth.api_key.revoked"
    API_KEY_USED = "auth.api_key.used"
    API_KEY_REJECTED = "auth.api_key.rejected"
    ACCESS_DENIED = "auth.access.denied"
    SAML_IDENTITY_LINKED = "auth.saml.identity_linked"
    # An invitation or reset link that was used, expired or presented for the other purpose.
    ACCOUNT_TOKEN_REJECTED = "auth.account_token.rejected"
    # A change of security settings refused because it would weaken a FedRAMP floor (high risk).
    TENANT_SETTING_REFUSED = "tenant.security_settings.refused"
    # Exports (GET /export/*, docs/api.md "Exports"): who exported what, how many rows.
    EXPORT_PIPELINE = "export.pipeline"
    EXPORT_AUDIT_LOG = "export.audit_log"


_SECRET_KEY = re.compile(r"pass|secret|token|hash|credential|api_?key|recovery|otp|code|cookie|authorization", re.I)
REDACTED = "[redacted]"


def redact(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of `values` with every secret-looking key's value replaced, recursively."""
    if values is None:
        return None
    out: dict[str, Any] = {}
    for key, value in values.items():
        if _SECRET_KEY.search(key):
            out[key] = REDACTED
        elif isinstance(value, Mapping):
            out[key] = redact(value)
        else:
            out[key] = value
    return out


def inet(ip: str | None) -> str | None:
    """`ip` as PostgreSQL's inet takes it, or None for a peer that is not an IP address."""
    if ip is None:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:  # e.g. "testclient" or a unix socket peer: not an address
        return None


async def record_event(
    writer: SideEffectWriter,
    *,
    tenant_id: uuid.UUID,
    event: AuthEvent,
    meta: RequestMeta | None,
    user_id: uuid.UUID | None = None,
    session_id: uuid.UUID | str | None = None,
    entity_type: str = "user",
    entity_id: uuid.UUID | None = None,
    granted: bool = True,
    risk: RiskLevel = RiskLevel.LOW,
    description: str | None = None,
    permission: str | None = None,
    details: Mapping[str, Any] | None = None,
    status: int | None = None,
) -> None:
    """Write one audit_logs row for `event`, in its own transaction."""
    row = {
        "tenant_id": tenant_id,
        "user_id": user_id,
        "session_id": None if session_id is None else str(session_id),
        "ip_address": inet(meta.ip) if meta else None,
        "user_agent": meta.user_agent if meta else None,
        "action_type": event.value,
        "entity_type": entity_type,
        "entity_id": entity_id if entity_id is not None else (user_id if entity_type == "user" else None),
        "operation_description": description,
        "after_values": redact(details),
        "access_granted": granted,
        "permission_used": permission,
        "risk_level": risk.value,
        "request_id": meta.request_id if meta else None,
        "api_endpoint": meta.endpoint if meta else None,
        "http_method": meta.method if meta else None,
        "response_status": status,
    }
    await writer.insert(tenant_id, AuditLog.__table__, [row])


async def record_caller_event(
    writer: SideEffectWriter, principal: Principal, event: AuthEvent, meta: RequestMeta | None, **fields: Any
) -> None:
    """`record_event` for what the authenticated caller did: its tenant, user and session (or key)."""
    await record_event(
        writer,
        tenant_id=principal.tenant_id,
        event=event,
        meta=meta,
        user_id=principal.user_id,
        session_id=principal.audit_session,
        **fields,
    )
