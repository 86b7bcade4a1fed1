"""Writes of a tenant's configuration entries and of its security settings (FedRAMP floors).

As in resolvers/capture/mutations.py: each function runs inside a unit of work and changes rows
only through it (the flush hook audits them: tenant_configurations is a high-risk entity, so every
audit row of these writes has risk_level HIGH); permissions are declared on the GraphQL fields.

Two kinds of entries live in `tenant_configurations`:

- **Security settings**, keys `security.<name>`, read by auth/policy.py (`load_policy`): written
  only by `update_security_settings`, typed and range-checked here, and on a tenant with
  `fedramp_compliant` held to the FedRAMP floors (`FEDRAMP_FLOORS`: lockout after at most 3
  failures, idle timeouts of at most 15 minutes, MFA required). A request that would weaken a floor
  is refused whole (VALIDATION, `FloorRefused`) and the refusal is audited as a high-risk event
  (`record_refusal`, its own transaction: the refused change is rolled back, its evidence is not).
  The settings as a whole carry one version, `settings_version`: the latest `updated_at` of the
  tenant's security rows (null while none is stored); a change names the version it read.
- **Other entries** (`create_configuration` / `update_configuration` / `delete_configuration`): any
  other key, a JSON value of its declared `config_type`. An entry with `is_encrypted` stores its
  value sealed with the server's `SecretBox` (auth/crypto.py, AES-256-GCM) bound to the tenant and
  the key, as {"v": 1, "sealed_secret": token}: the API reads it as null, and the audit trail
  records it "[redacted]" (the key name is secret-looking to auth.audit.redact). Entries are
  deleted for good (the key falls back to its default), their DELETE audit row keeping the stored
  value as it was (redacted when sealed).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from auth.audit import AuthEvent, RequestMeta, record_caller_event
from auth.crypto import SecretBox, config_aad
from auth.permissions import Permission
from auth.policy import SECURITY_PREFIX, TenantSecurityPolicy, policy_from
from auth.principal import Principal
from models import Tenant, TenantConfiguration
from models.enums import RiskLevel
from models.errors import Conflict, Invalid
from models.side_effects import SideEffectWriter
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import (
    Failure,
    RuleContext,
    ValidationFailed,
    custom_rule,
    declare,
    length_rule,
    range_rule,
    validate,
)

__all__ = [
    "CONFIG_TYPES",
    "FEDRAMP_FLOORS",
    "SECURITY_SETTINGS",
    "FloorRefused",
    "Setting",
    "config_aad",
    "create_configuration",
    "current_settings",
    "delete_configuration",
    "open_configuration_value",
    "record_refusal",
    "update_configuration",
    "update_security_settings",
]


@dataclass(frozen=True, slots=True)
class Setting:
    """One security setting: its type and its allowed range (whole numbers) or length (texts)."""

    kind: type
    low: int = 1
    high: int = 100


#: Every configurable field of auth.policy.TenantSecurityPolicy, with its allowed values.
SECURITY_SETTINGS: Mapping[str, Setting] = {
    "lockout_threshold": Setting(int, 1, 100),
    "lockout_window_minutes": Setting(int, 1, 1440),
    "lockout_minutes": Setting(int, 1, 10_080),
    "idle_timeout_minutes": Setting(int, 1, 1440),
    "admin_idle_timeout_minutes": Setting(int, 1, 1440),
    "absolute_timeout_minutes": Setting(int, 1, 10_080),
    "mfa_required": Setting(bool),
    "inactive_disable_days": Setting(int, 1, 3650),
    "sso_allow_email_linking": Setting(bool),
    "sso_jit_provisioning": Setting(bool),
    "sso_jit_role": Setting(str, 1, 100),
}
_NOT_SETTINGS = {"tenant_id", "tenant_name", "fedramp", "max_users", "tenant_active"}
if set(SECURITY_SETTINGS) != {f.name for f in dataclasses.fields(TenantSecurityPolicy)} - _NOT_SETTINGS:
    raise RuntimeError("SECURITY_SETTINGS must list every configurable field of TenantSecurityPolicy")

#: What a FedRAMP-compliant tenant's settings must satisfy: (setting, test, the rule in words).
FEDRAMP_FLOORS: tuple[tuple[str, Any, str], ...] = (
    ("lockout_threshold", lambda v: v <= 3, "at most 3 failed sign-ins before lockout (AC-7)"),
    ("idle_timeout_minutes", lambda v: v <= 15, "an idle timeout of at most 15 minutes (AC-11, AC-12)"),
    ("admin_idle_timeout_minutes", lambda v: v <= 15, "an idle timeout of at most 15 minutes (AC-11, AC-12)"),
    ("mfa_required", lambda v: v is True, "multi-factor authentication required (IA-2)"),
)
#: The pseudo-entity of the security settings in the validation registry (docs/validation.md).
SETTINGS_ENTITY = "tenant_security_settings"
_FLOOR = "fedramp_floor"


def _floor_rule(name: str, test: Any, rule: str) -> Any:
    words = name.replace("_", " ")

    async def check(ctx: RuleContext) -> Failure | None:
        value = ctx.values[name]
        if value is None or test(value):
            return None
        fedramp = await ctx.uow.session.scalar(select(Tenant.fedramp_compliant).where(Tenant.id == ctx.uow.tenant_id))
        return Failure(f"This tenant is FedRAMP-compliant: {words} must be {rule}.") if fedramp else None

    return custom_rule(
        SETTINGS_ENTITY, name, _FLOOR, check=check,
        sentence=f"On a FedRAMP-compliant tenant, {words}: {rule}; a weaker value is refused and the refusal audited.",
    )


declare(
    *(range_rule(SETTINGS_ENTITY, name, low=spec.low, high=spec.high)
      for name, spec in SECURITY_SETTINGS.items() if spec.kind is int),
    length_rule(SETTINGS_ENTITY, "sso_jit_role", SECURITY_SETTINGS["sso_jit_role"].high),
    *(_floor_rule(name, test, rule) for name, test, rule in FEDRAMP_FLOORS),
)

#: The declared types of configuration values, and what JSON each accepts.
CONFIG_TYPES: Mapping[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "json": lambda v: isinstance(v, dict | list),
}
_KEY = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")
_VALUE_MAX_BYTES = 65_536
_SETTINGS_LABEL = "tenant.security_settings.changed"
_REFUSED = AuthEvent.TENANT_SETTING_REFUSED


class FloorRefused(ValidationFailed):
    """A change that would weaken a FedRAMP floor of a FedRAMP-compliant tenant (VALIDATION): the
    registry's refusal, with the setting and the value refused (for the audit row)."""

    def __init__(self, refused: ValidationFailed, value: Any) -> None:
        super().__init__(refused.message, field=refused.field or "", rule=refused.rule)
        self.setting = refused.field or ""
        self.value = value


# -- security settings ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurrentSettings:
    """The tenant's policy as stored now, and the version (latest updated_at) of its rows."""

    policy: TenantSecurityPolicy
    version: datetime.datetime | None
    rows: dict[str, TenantConfiguration]


async def current_settings(uow: UnitOfWork, *, lock: bool = False) -> CurrentSettings:
    """The effective security settings of the unit of work's tenant (rows locked with `lock`)."""
    tenant = await uow.lock(Tenant, uow.tenant_id, what="tenant") if lock else await uow.find(Tenant, uow.tenant_id)
    stmt = select(TenantConfiguration).where(
        TenantConfiguration.tenant_id == uow.tenant_id, TenantConfiguration.config_key.startswith(SECURITY_PREFIX)
    )
    rows = {row.config_key[len(SECURITY_PREFIX) :]: row for row in await uow.session.scalars(stmt)}
    version = max((row.updated_at for row in rows.values()), default=None)
    stored = {f"{SECURITY_PREFIX}{name}": row.config_value for name, row in rows.items() if not row.is_encrypted}
    policy = policy_from(tenant.id, tenant.name, tenant.fedramp_compliant, tenant.max_users, tenant.is_active, stored)
    return CurrentSettings(policy, version, rows)


async def update_security_settings(
    uow: UnitOfWork, seen: datetime.datetime | None, changes: Mapping[str, Any]
) -> uuid.UUID:
    """Set the given security settings of the tenant, read at version `seen` (None: none stored).

    The tenant row is locked first, so concurrent changes of the settings queue; CONFLICT when the
    settings changed since `seen`; FloorRefused when a FedRAMP floor would be weakened."""
    current = await current_settings(uow, lock=True)
    if seen != current.version:
        raise Conflict(
            "The security settings were changed since you read them: read them again and retry with their "
            "current updatedAt.",
            field="updated_at",
            current_updated_at=current.version,
        )
    values = {name: _check_setting(name, value) for name, value in changes.items()}
    try:
        await validate(uow, SETTINGS_ENTITY, values)
    except ValidationFailed as refused:
        if refused.rule.endswith(f".{_FLOOR}"):
            raise FloorRefused(refused, values.get(refused.field or "")) from None
        raise
    for name, value in values.items():
        row = current.rows.get(name)
        kind = {bool: "boolean", int: "integer", str: "string"}[SECURITY_SETTINGS[name].kind]
        if row is None:
            row = TenantConfiguration(tenant_id=uow.tenant_id, config_key=f"{SECURITY_PREFIX}{name}")
            uow.assign(row, {"config_value": value, "config_type": kind, "is_encrypted": False})
            uow.add(row)
        elif not uow.assign(row, {"config_value": value, "config_type": kind, "is_encrypted": False}):
            continue
        uow.label(row, _SETTINGS_LABEL, f"security setting {name} changed")
    await uow.flush()
    return uow.tenant_id


def _check_setting(name: str, value: Any) -> Any:
    spec = SECURITY_SETTINGS.get(name)
    if spec is None:
        raise Invalid(f"{name.replace('_', ' ')} is no security setting.", field=name)
    words = name.replace("_", " ")
    if value is None:
        raise Invalid(f"{words} cannot be cleared.", field=name)
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise Invalid(f"{words} must be true or false.", field=name)
        return value
    if spec.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"{words} must be a whole number.", field=name)
        return value  # its range: the registry's rule
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{words} must not be empty.", field=name)
    return value.strip()


async def record_refusal(
    writer: SideEffectWriter, principal: Principal, meta: RequestMeta | None, refused: FloorRefused, *, field: str
) -> None:
    """The audit row of a refused weakening of a FedRAMP floor (high risk, access not granted)."""
    await record_caller_event(
        writer,
        principal,
        _REFUSED,
        meta,
        entity_type="tenant",
        entity_id=principal.tenant_id,
        granted=False,
        risk=RiskLevel.HIGH,
        description=f"{field}: refused, {refused.setting} would weaken a FedRAMP floor"[:500],
        permission=Permission.TENANT_ADMIN.value,
        details={"setting": refused.setting, "value": refused.value, "rule": refused.rule, "reason": refused.message},
    )


# -- other configuration entries ------------------------------------------------------------------


def open_configuration_value(box: SecretBox, row: TenantConfiguration) -> Any:
    """The value of an entry in the clear (decrypted when sealed); for server code, never the API."""
    if not row.is_encrypted:
        return row.config_value
    return json.loads(box.decrypt(row.config_value["sealed_secret"], config_aad(row.tenant_id, row.config_key)))


async def create_configuration(uow: UnitOfWork, box: SecretBox, values: Mapping[str, Any]) -> uuid.UUID:
    """A new configuration entry (not a security setting: those have their own mutation)."""
    values = {k: v for k, v in values.items() if v is not None}
    key = str(values.get("config_key") or "")
    if not _KEY.fullmatch(key) or len(key) > 100:
        raise Invalid(
            "config key must be 1 to 100 lower-case letters, digits and underscores, in dot-separated parts.",
            field="config_key",
        )
    _not_security(key, "config_key")
    await validate(uow, "tenant_configurations", {k: v for k, v in values.items() if k != "config_value"})
    encrypted = bool(values.get("is_encrypted"))
    kind = values.get("config_type")
    row = TenantConfiguration(tenant_id=uow.tenant_id, config_key=key)
    stored = _stored_value(box, uow.tenant_id, key, kind, values.get("config_value"), encrypted=encrypted)
    uow.assign(row, {"config_type": kind, "is_encrypted": encrypted, "config_value": stored})
    uow.add(row)
    await uow.flush()
    return row.id


async def update_configuration(
    uow: UnitOfWork, box: SecretBox, config_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]
) -> uuid.UUID:
    """Change the value, type or encryption of an entry read at `seen`. A change of type or of
    encryption needs the value too (a sealed value cannot be re-read to convert it)."""
    row = await uow.lock(TenantConfiguration, config_id, updated_at=seen, what="tenant configuration")
    _not_security(row.config_key, "id")
    await validate(uow, "tenant_configurations", {k: v for k, v in changes.items() if k != "config_value"}, row=row)
    kind = changes.get("config_type", row.config_type)
    encrypted = changes.get("is_encrypted", row.is_encrypted)
    if encrypted is None:
        raise Invalid("is encrypted cannot be cleared.", field="is_encrypted")
    if "config_value" not in changes:
        if kind != row.config_type or encrypted != row.is_encrypted:
            raise Invalid("A change of type or encryption needs the value too.", field="config_value")
        return row.id
    stored = _stored_value(box, uow.tenant_id, row.config_key, kind, changes["config_value"], encrypted=encrypted)
    if not row.is_encrypted and not encrypted and stored == row.config_value and kind == row.config_type:
        return row.id
    uow.assign(row, {"config_type": kind, "is_encrypted": encrypted, "config_value": stored})
    await uow.flush()
    return row.id


async def delete_configuration(uow: UnitOfWork, config_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Delete an entry read at `seen`: its key falls back to its default."""
    row = await uow.lock(TenantConfiguration, config_id, updated_at=seen, what="tenant configuration")
    _not_security(row.config_key, "id")
    await uow.delete(row)
    await uow.flush()
    return config_id


def _not_security(key: str, field: str) -> None:
    if key.startswith(SECURITY_PREFIX):
        raise Invalid("Security settings are changed with tenantSecuritySettingsUpdate.", field=field)
    if key in _SSO_KEYS:  # checked there: metadata parsed, URLs guarded, the secret sealed
        raise Invalid("Single sign-on settings are changed with tenantSsoSettingsUpdate.", field=field)


#: The entries resolvers/identity/sso_settings.py owns.
_SSO_KEYS = frozenset({"auth.saml", "auth.oidc", "auth.oidc.client_secret"})


def _stored_value(
    box: SecretBox, tenant_id: uuid.UUID, key: str, kind: Any, value: Any, *, encrypted: bool
) -> Any:
    check = CONFIG_TYPES.get(kind) if isinstance(kind, str) else None
    if check is None:
        raise Invalid(f"config type must be one of {', '.join(CONFIG_TYPES)}.", field="config_type")
    if value is None or not check(value):
        raise Invalid(f"config value must be a JSON {kind}.", field="config_value")
    plain = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    if len(plain) > _VALUE_MAX_BYTES:
        raise Invalid(f"config value takes at most {_VALUE_MAX_BYTES} bytes.", field="config_value")
    if not encrypted:
        return value
    return {"v": 1, "sealed_secret": box.encrypt(plain, config_aad(tenant_id, key))}
