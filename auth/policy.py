"""Per-tenant security policy: lockout, session timeouts, MFA and SSO options.

Defaults are FedRAMP Moderate's values for every tenant (AC-7: 3 failures in 15 minutes lock for
30 minutes; AC-12/AC-11: 15-minute idle timeout, 10 for administrators; 12-hour absolute
session; AC-2(3): disable after 90 days of inactivity). A tenant may tighten or loosen them in
tenant_configurations under `security.<name>`; `tenants.fedramp_compliant` makes MFA mandatory
for password users whatever the configuration says.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "SECURITY_PREFIX",
    "TenantSecurityPolicy",
    "active_seats",
    "load_policy",
    "policy_from",
    "policy_from_text",
]

SECURITY_PREFIX = "security."
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TenantSecurityPolicy:
    tenant_id: uuid.UUID
    tenant_name: str
    fedramp: bool = False
    lockout_threshold: int = 3
    lockout_window_minutes: int = 15
    lockout_minutes: int = 30
    idle_timeout_minutes: int = 15
    admin_idle_timeout_minutes: int = 10
    absolute_timeout_minutes: int = 12 * 60
    mfa_required: bool = False
    inactive_disable_days: int = 90
    sso_allow_email_linking: bool = False
    sso_jit_provisioning: bool = False
    sso_jit_role: str = "Viewer"
    max_users: int = 100
    # A deactivated tenant's sessions, keys and tokens stop working at their next request.
    tenant_active: bool = True

    @property
    def requires_mfa(self) -> bool:
        """FedRAMP tenants always require MFA of password users."""
        return self.fedramp or self.mfa_required

    @property
    def lockout_window(self) -> timedelta:
        return timedelta(minutes=self.lockout_window_minutes)

    @property
    def lockout_duration(self) -> timedelta:
        return timedelta(minutes=self.lockout_minutes)

    def idle_timeout(self, *, admin: bool) -> timedelta:
        return timedelta(minutes=self.admin_idle_timeout_minutes if admin else self.idle_timeout_minutes)

    @property
    def absolute_timeout(self) -> timedelta:
        return timedelta(minutes=self.absolute_timeout_minutes)


_CONFIGURABLE = {
    f.name: f.type
    for f in fields(TenantSecurityPolicy)
    if f.name not in {"tenant_id", "tenant_name", "fedramp", "max_users", "tenant_active"}
}


def _coerce(name: str, value: Any) -> Any:
    kind = _CONFIGURABLE[name]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"security.{name} must be true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"security.{name} must be a positive whole number")
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"security.{name} must be a non-empty string")
    return value


async def load_policy(conn: AsyncConnection, tenant_id: uuid.UUID) -> TenantSecurityPolicy:
    """The policy of `tenant_id`; the connection's transaction must be scoped to that tenant."""
    tenant = (
        await conn.execute(
            text("SELECT name, fedramp_compliant, max_users, is_active FROM tenants WHERE id = :t"),
            {"t": tenant_id},
        )
    ).one()
    rows = await conn.execute(
        text(
            "SELECT config_key, config_value FROM tenant_configurations"
            " WHERE tenant_id = :t AND config_key LIKE 'security.%' AND NOT is_encrypted"
        ),
        {"t": tenant_id},
    )
    return policy_from(
        tenant_id, tenant.name, tenant.fedramp_compliant, tenant.max_users, tenant.is_active, dict(rows.all())
    )


def policy_from(
    tenant_id: uuid.UUID,
    name: str,
    fedramp: bool,
    max_users: int,
    active: bool,
    security: dict[str, Any],
) -> TenantSecurityPolicy:
    """The policy from the tenant's columns and its `security.*` configuration entries."""
    policy = TenantSecurityPolicy(
        tenant_id=tenant_id, tenant_name=name, fedramp=fedramp, max_users=max_users, tenant_active=active
    )
    changes: dict[str, Any] = {}
    for key, value in security.items():
        name = key[len(SECURITY_PREFIX) :]
        if name in _CONFIGURABLE:
            try:
                changes[name] = _coerce(name, value)
            except ValueError as exc:
                # The default is FedRAMP Moderate's value: keeping it is the safe reading of a typo.
                _log.warning("tenant %s: ignoring %s (%s)", tenant_id, key, exc)
    return replace(policy, **changes) if changes else policy


@functools.lru_cache(maxsize=1024)
def policy_from_text(
    tenant_id: uuid.UUID,
    name: str,
    fedramp: bool,
    max_users: int,
    active: bool,
    security: str | None,
) -> TenantSecurityPolicy:
    """`policy_from` with the `security.*` entries as the JSON text of an object (None: no entries), as the
    principal lookup returns them: worked out once per distinct set of values, not on every request (the
    policy is immutable; a changed setting or tenant column is another key)."""
    return policy_from(tenant_id, name, fedramp, max_users, active, json.loads(security) if security else {})


async def active_seats(conn: AsyncConnection, tenant_id: uuid.UUID) -> int:
    """Users counted against `tenants.max_users`: active people (the system user is not one)."""
    seats = await conn.scalar(
        text("SELECT count(*) FROM users WHERE tenant_id = :t AND is_active AND NOT is_system"), {"t": tenant_id}
    )
    return int(seats or 0)
