"""Mutations of the tenant's configuration entries and security settings, and the settings' query.

Each field is one audited transaction (schema/mutation_kit.py); the domain functions are in
resolvers/identity/tenant_settings.py. All need `tenant:admin`. Every audit row of these writes has
risk level HIGH (tenant configurations are a high-risk entity). On a FedRAMP-compliant tenant a
security-settings change that would weaken a floor (lockout after more than 3 failures, an idle
timeout over 15 minutes, MFA not required) is refused with VALIDATION, and the refusal is audited
(`tenant.security_settings.refused`, high risk, access not granted). A configuration entry with
`isEncrypted` is stored sealed (AES-256-GCM) and reads null.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import strawberry
from sqlalchemy import select
from strawberry import relay
from strawberry.types.unset import UNSET

from auth.permissions import Permission
from auth.policy import SECURITY_PREFIX, TenantSecurityPolicy, policy_from
from models import Tenant as TenantModel
from models import TenantConfiguration as ConfigurationModel
from models.idempotency import idempotent
from models.unit_of_work import UnitOfWork
from resolvers.identity import tenant_settings
from schema.context import Info
from schema.identity import TenantConfiguration
from schema.mutation_kit import (
    IDEMPOTENCY_KEY,
    UPDATED_AT,
    Args,
    Deleted,
    Done,
    Entity,
    mutation,
    node_id,
    removes,
)
from schema.mutation_kit import row_id as ref_row_id
from schema.permissions import requires
from schema.scalars import JSON
from schema.writes import write

__all__ = [
    "TenantConfigurationCreateInput",
    "TenantConfigurationDeleteInput",
    "TenantConfigurationUpdateInput",
    "TenantMutation",
    "TenantSecuritySettings",
    "TenantSecuritySettingsQuery",
    "TenantSecuritySettingsUpdateInput",
]

_PERMISSIONS = (Permission.TENANT_ADMIN,)
_VALUE = (
    "The value, JSON of the configType. With isEncrypted it is stored sealed (AES-256-GCM) and never returned."
)


@strawberry.input(description="A new configuration entry (security settings have tenantSecuritySettingsUpdate).")
class TenantConfigurationCreateInput:
    config_key: str = strawberry.field(
        description="1 to 100 characters: lower-case letters, digits and underscores in dot-separated parts, "
        "unique in the tenant; not under security."
    )
    config_type: str = strawberry.field(description="One of string, integer, number, boolean, json.")
    config_value: JSON = strawberry.field(description=_VALUE)
    is_encrypted: bool | None = strawberry.field(default=None, description="Store the value sealed; default false.")
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to a configuration entry: only the fields given change.")
class TenantConfigurationUpdateInput:
    id: relay.GlobalID | None = node_id("TenantConfiguration")
    row_id: uuid.UUID | None = ref_row_id("TenantConfiguration")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    config_type: str | None = strawberry.field(
        default=UNSET, description="One of string, integer, number, boolean, json; a change needs configValue too."
    )
    config_value: JSON | None = strawberry.field(default=UNSET, description=_VALUE)
    is_encrypted: bool | None = strawberry.field(
        default=UNSET, description="Store the value sealed (or no longer); a change needs configValue too."
    )


@strawberry.input(description="Delete a configuration entry: its key falls back to its default.")
class TenantConfigurationDeleteInput:
    id: relay.GlobalID | None = node_id("TenantConfiguration")
    row_id: uuid.UUID | None = ref_row_id("TenantConfiguration")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)


_SETTING_TEXT = {
    "lockout_threshold": "Failed sign-ins within the lockout window that lock the account (1 to 100; FedRAMP: "
    "at most 3).",
    "lockout_window_minutes": "The window failed sign-ins are counted in, in minutes (1 to 1440).",
    "lockout_minutes": "How long a locked account stays locked, in minutes (1 to 10080).",
    "idle_timeout_minutes": "Idle minutes after which a session ends (1 to 1440; FedRAMP: at most 15).",
    "admin_idle_timeout_minutes": "Idle minutes after which an administrator's session ends (1 to 1440; FedRAMP: "
    "at most 15).",
    "absolute_timeout_minutes": "Minutes after sign-in at which any session ends (1 to 10080).",
    "mfa_required": "Password users must use multi-factor authentication (FedRAMP: must be true).",
    "inactive_disable_days": "Days without sign-in after which an account is deactivated (1 to 3650).",
    "sso_allow_email_linking": "A single sign-on identity may be linked to an existing user by email.",
    "sso_jit_provisioning": "Single sign-on creates unknown users on first sign-in.",
    "sso_jit_role": "The role users created by single sign-on get (1 to 100 characters).",
}


@strawberry.type(description="The tenant's security settings in force (defaults: FedRAMP Moderate's values).")
class TenantSecuritySettings:
    fedramp_compliant: bool = strawberry.field(
        description="The tenant must keep the FedRAMP floors (set by the platform, not by the tenant)."
    )
    updated_at: datetime.datetime | None = strawberry.field(
        description="The settings' version: the latest change of any of them (null while all are defaults); "
        "give it as updatedAt to tenantSecuritySettingsUpdate."
    )
    lockout_threshold: int = strawberry.field(description=_SETTING_TEXT["lockout_threshold"])
    lockout_window_minutes: int = strawberry.field(description=_SETTING_TEXT["lockout_window_minutes"])
    lockout_minutes: int = strawberry.field(description=_SETTING_TEXT["lockout_minutes"])
    idle_timeout_minutes: int = strawberry.field(description=_SETTING_TEXT["idle_timeout_minutes"])
    admin_idle_timeout_minutes: int = strawberry.field(description=_SETTING_TEXT["admin_idle_timeout_minutes"])
    absolute_timeout_minutes: int = strawberry.field(description=_SETTING_TEXT["absolute_timeout_minutes"])
    mfa_required: bool = strawberry.field(description=_SETTING_TEXT["mfa_required"])
    inactive_disable_days: int = strawberry.field(description=_SETTING_TEXT["inactive_disable_days"])
    sso_allow_email_linking: bool = strawberry.field(description=_SETTING_TEXT["sso_allow_email_linking"])
    sso_jit_provisioning: bool = strawberry.field(description=_SETTING_TEXT["sso_jit_provisioning"])
    sso_jit_role: str = strawberry.field(description=_SETTING_TEXT["sso_jit_role"])

    @classmethod
    def of(cls, policy: TenantSecurityPolicy, version: datetime.datetime | None) -> TenantSecuritySettings:
        values = {name: getattr(policy, name) for name in tenant_settings.SECURITY_SETTINGS}
        return cls(fedramp_compliant=policy.fedramp, updated_at=version, **values)


@strawberry.input(description="Security settings to change: only the fields given change (null is refused).")
class TenantSecuritySettingsUpdateInput:
    updated_at: datetime.datetime | None = strawberry.field(
        description="TenantSecuritySettings.updatedAt as you read it (null while all are defaults); CONFLICT if "
        "the settings changed since."
    )
    lockout_threshold: int | None = strawberry.field(default=UNSET, description=_SETTING_TEXT["lockout_threshold"])
    lockout_window_minutes: int | None = strawberry.field(
        default=UNSET, description=_SETTING_TEXT["lockout_window_minutes"]
    )
    lockout_minutes: int | None = strawberry.field(default=UNSET, description=_SETTING_TEXT["lockout_minutes"])
    idle_timeout_minutes: int | None = strawberry.field(
        default=UNSET, description=_SETTING_TEXT["idle_timeout_minutes"]
    )
    admin_idle_timeout_minutes: int | None = strawberry.field(
        default=UNSET, description=_SETTING_TEXT["admin_idle_timeout_minutes"]
    )
    absolute_timeout_minutes: int | None = strawberry.field(
        default=UNSET, description=_SETTING_TEXT["absolute_timeout_minutes"]
    )
    mfa_required: bool | None = strawberry.field(default=UNSET, description=_SETTING_TEXT["mfa_required"])
    inactive_disable_days: int | None = strawberry.field(
        default=UNSET, description=_SETTING_TEXT["inactive_disable_days"]
    )
    sso_allow_email_linking: bool | None = strawberry.field(
        default=UNSET, description=_SETTING_TEXT["sso_allow_email_linking"]
    )
    sso_jit_provisioning: bool | None = strawberry.field(
        default=UNSET, description=_SETTING_TEXT["sso_jit_provisioning"]
    )
    sso_jit_role: str | None = strawberry.field(default=UNSET, description=_SETTING_TEXT["sso_jit_role"])


def _secret_free(values: dict[str, Any]) -> dict[str, Any]:
    """An input's values for the idempotency hash: a value to be sealed is left out."""
    return {k: v for k, v in values.items() if k != "config_value"} if values.get("is_encrypted") else values


async def _configuration_create(uow: UnitOfWork, args: Args[TenantConfigurationCreateInput]) -> uuid.UUID:
    box = args.context.auth.secret_box
    return await idempotent(
        uow, args.input.idempotency_key, mutation="tenantConfigurationCreate", values=_secret_free(args.values),
        create=lambda: tenant_settings.create_configuration(uow, box, args.values),
    )


async def _configuration_update(uow: UnitOfWork, args: Args[TenantConfigurationUpdateInput]) -> uuid.UUID:
    assert args.id is not None
    return await tenant_settings.update_configuration(
        uow, args.context.auth.secret_box, args.id, args.updated_at, args.values
    )


async def _settings_update(args: Args[TenantSecuritySettingsUpdateInput]) -> Done:
    found: dict[str, TenantSecuritySettings] = {}

    async def change(uow: UnitOfWork) -> uuid.UUID:
        tenant_id = await tenant_settings.update_security_settings(uow, args.input.updated_at, args.values)
        current = await tenant_settings.current_settings(uow)
        found["settings"] = TenantSecuritySettings.of(current.policy, current.version)
        return tenant_id

    try:
        await write(args.info, change, permissions=_PERMISSIONS)
    except tenant_settings.FloorRefused as refused:
        context = args.context
        await tenant_settings.record_refusal(
            context.auth.writer, context.principal, context.meta, refused, field=args.info.field_name
        )
        raise
    return Done(node=found["settings"])


@strawberry.type
class TenantMutation:
    tenant_configuration_create = mutation(
        "tenantConfigurationCreate",
        input=TenantConfigurationCreateInput,
        input_description="The entry's key, type and value.",
        permission=Permission.TENANT_ADMIN,
        run=_configuration_create,
        returns=Entity(TenantConfiguration, "configuration entry created"),
        description="Add a configuration entry of the tenant (an encrypted value is never returned).",
    )
    tenant_configuration_update = mutation(
        "tenantConfigurationUpdate",
        input=TenantConfigurationUpdateInput,
        input_description="The entry, the updatedAt read, and what to change.",
        permission=Permission.TENANT_ADMIN,
        run=_configuration_update,
        returns=Entity(TenantConfiguration, "configuration entry as changed"),
        description="Change a configuration entry read at updatedAt.",
    )
    tenant_configuration_delete = mutation(
        "tenantConfigurationDelete",
        input=TenantConfigurationDeleteInput,
        input_description="The entry and the updatedAt read.",
        permission=Permission.TENANT_ADMIN,
        run=removes(tenant_settings.delete_configuration),
        returns=Deleted(TenantConfiguration, "configuration entry"),
        description="Delete a configuration entry read at updatedAt (its key falls back to its default).",
    )
    tenant_security_settings_update = mutation(
        "tenantSecuritySettingsUpdate",
        input=TenantSecuritySettingsUpdateInput,
        input_description="The settings' updatedAt as read and the settings to change.",
        permission=Permission.TENANT_ADMIN,
        service=_settings_update,
        returns=Entity(TenantSecuritySettings, "security settings as changed", field="security_settings"),
        description="Change the tenant's security settings (lockout, timeouts, MFA, SSO); on a FedRAMP-compliant "
        "tenant a change weakening a floor is refused and audited.",
    )


@strawberry.type
class TenantSecuritySettingsQuery:
    @strawberry.field(
        description="The caller's tenant's security settings in force, with their version.",
        extensions=[requires(Permission.TENANT_ADMIN)],
    )
    async def tenant_security_settings(self, info: Info) -> TenantSecuritySettings | None:
        db = info.context.loaders.db
        tenant = (
            await db.execute(
                select(TenantModel.name, TenantModel.fedramp_compliant, TenantModel.max_users, TenantModel.is_active)
                .where(TenantModel.id == db.tenant_id)
            )
        ).one()
        rows = (
            await db.execute(
                select(ConfigurationModel.config_key, ConfigurationModel.config_value, ConfigurationModel.updated_at,
                       ConfigurationModel.is_encrypted)
                .where(ConfigurationModel.tenant_id == db.tenant_id,
                       ConfigurationModel.config_key.startswith(SECURITY_PREFIX))
            )
        ).all()
        stored = {row.config_key: row.config_value for row in rows if not row.is_encrypted}
        policy = policy_from(db.tenant_id, tenant.name, tenant.fedramp_compliant, tenant.max_users, tenant.is_active,
                             stored)
        return TenantSecuritySettings.of(policy, max((row.updated_at for row in rows), default=None))
