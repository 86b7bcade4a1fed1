"""The tenant's single sign-on settings: one mutation (tenantSsoSettingsUpdate) and one query
(tenantSsoSettings), both `tenant:admin`.

The domain function is resolvers/identity/sso_settings.py (where the settings are stored, what is
checked). The OpenID client secret is write-only: it is stored sealed and never returned; the query
says only `clientSecretSet`. Every audit row of the change has risk level HIGH and records the
secret "[redacted]".
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import strawberry
from sqlalchemy import select
from strawberry.types.unset import UNSET

from auth.permissions import Permission
from auth.policy import SECURITY_PREFIX, policy_from
from models import Tenant as TenantModel
from models import TenantConfiguration as ConfigurationModel
from models.unit_of_work import UnitOfWork
from resolvers.identity import sso_settings
from resolvers.identity.tenant_settings import current_settings
from schema.context import Info
from schema.mutation_kit import Args, Done, Entity, mutation
from schema.permissions import requires
from schema.writes import write

__all__ = [
    "OidcProviderInput",
    "OidcProviderSettings",
    "SamlProviderInput",
    "SamlProviderSettings",
    "TenantSsoMutation",
    "TenantSsoSettings",
    "TenantSsoSettingsQuery",
    "TenantSsoSettingsUpdateInput",
]

_PERMISSIONS = (Permission.TENANT_ADMIN,)
_CONTEXTS = (
    "The AuthnContextClassRef values that count as multi-factor sign-in at the IdP; required when the tenant "
    "requires MFA (sign-in refuses other contexts then)."
)
_SKEW = "Clock skew allowed on the assertion's Conditions, in seconds (0 to 300; default 120)."
_ALGORITHMS = "ID and access token signature algorithms accepted (default RS256 and ES256; never none or HS*)."
_LINKING = "A single sign-on identity may be linked to an existing user with the same verified email."
_JIT = "Single sign-on creates unknown users (verified email, within the user limit) on first sign-in."
_JIT_ROLE = "The role users created by single sign-on get: an existing role granting no *:admin permission."


@strawberry.input(description="The tenant's SAML identity provider, taken from its metadata.")
class SamlProviderInput:
    metadata_xml: str = strawberry.field(
        description="The IdP's SAML 2.0 metadata XML (at most 100,000 characters): its entity id, HTTP-Redirect "
        "SingleSignOnService and its one signing certificate are used. Signed assertions stay required."
    )
    required_authn_contexts: list[str] | None = strawberry.field(default=None, description=_CONTEXTS)
    clock_skew_seconds: int | None = strawberry.field(default=None, description=_SKEW)


@strawberry.input(description="The tenant's OpenID provider (a confidential client when a secret is set).")
class OidcProviderInput:
    issuer: str = strawberry.field(
        description="The issuer URL, exactly as the provider's tokens carry it in iss (https; checked by the "
        "outbound guard)."
    )
    client_id: str = strawberry.field(description="This server's client id at the provider.")
    jwks_uri: str = strawberry.field(
        description="The provider's JSON Web Key Set URL (https; checked by the outbound guard)."
    )
    audience: str | None = strawberry.field(
        default=None, description="The aud bearer access tokens must carry; default the client id."
    )
    display_name: str | None = strawberry.field(
        default=None, description="The provider's name on the sign-in button (at most 100 characters)."
    )
    algorithms: list[str] | None = strawberry.field(default=None, description=_ALGORITHMS)
    client_secret: str | None = strawberry.field(
        default=UNSET,
        description="The client secret (write-only, stored encrypted, never returned). Left out: the stored one "
        "stays; null: removed (a public client, PKCE only).",
    )


@strawberry.input(description="Single sign-on settings to change: only the parts given change.")
class TenantSsoSettingsUpdateInput:
    updated_at: datetime.datetime | None = strawberry.field(
        description="TenantSsoSettings.updatedAt as you read it (null while nothing is stored); CONFLICT if the "
        "settings changed since."
    )
    saml: SamlProviderInput | None = strawberry.field(
        default=UNSET, description="The SAML identity provider: replaces the stored one; null removes it."
    )
    oidc: OidcProviderInput | None = strawberry.field(
        default=UNSET, description="The OpenID provider: replaces the stored one; null removes it (and its secret)."
    )
    sso_allow_email_linking: bool | None = strawberry.field(default=UNSET, description=_LINKING)
    sso_jit_provisioning: bool | None = strawberry.field(default=UNSET, description=_JIT)
    sso_jit_role: str | None = strawberry.field(default=UNSET, description=_JIT_ROLE)


@strawberry.type(description="The tenant's SAML identity provider as stored.")
class SamlProviderSettings:
    idp_entity_id: str = strawberry.field(description="The IdP's entity id (the Issuer its responses carry).")
    idp_sso_url: str = strawberry.field(description="Where sign-in requests go (HTTP-Redirect binding).")
    signing_certificate_sha256: str | None = strawberry.field(
        description="SHA-256 fingerprint of the IdP signing certificate, colon-separated hex."
    )
    required_authn_contexts: list[str] = strawberry.field(description=_CONTEXTS)
    clock_skew_seconds: int | None = strawberry.field(description=_SKEW + " Null: the default.")


@strawberry.type(description="The tenant's OpenID provider as stored (the client secret is never shown).")
class OidcProviderSettings:
    issuer: str = strawberry.field(description="The issuer URL.")
    client_id: str = strawberry.field(description="This server's client id at the provider.")
    audience: str = strawberry.field(description="The aud bearer access tokens must carry.")
    jwks_uri: str = strawberry.field(description="The provider's JSON Web Key Set URL.")
    display_name: str | None = strawberry.field(description="The provider's name on the sign-in button.")
    algorithms: list[str] | None = strawberry.field(description=_ALGORITHMS + " Null: the default.")
    client_secret_set: bool = strawberry.field(description="A client secret is stored (it is never returned).")


@strawberry.type(description="The tenant's single sign-on settings.")
class TenantSsoSettings:
    updated_at: datetime.datetime | None = strawberry.field(
        description="The settings' version: the latest change of any part (null while nothing is stored); give it "
        "as updatedAt to tenantSsoSettingsUpdate."
    )
    saml: SamlProviderSettings | None = strawberry.field(description="The SAML identity provider; null: none.")
    oidc: OidcProviderSettings | None = strawberry.field(description="The OpenID provider; null: none.")
    sso_allow_email_linking: bool = strawberry.field(description=_LINKING)
    sso_jit_provisioning: bool = strawberry.field(description=_JIT)
    sso_jit_role: str = strawberry.field(description=_JIT_ROLE)

    @classmethod
    def of(cls, current: sso_settings.CurrentSso, defaults: Any) -> TenantSsoSettings:
        saml = current.plain(sso_settings.SAML_KEY)
        oidc = current.plain(sso_settings.OIDC_KEY)

        def switch(name: str) -> Any:
            value = current.plain(f"{SECURITY_PREFIX}{name}")
            return getattr(defaults, name) if value is None else value

        return cls(
            updated_at=current.version,
            saml=_saml(saml) if isinstance(saml, dict) else None,
            oidc=_oidc(oidc, sso_settings.SECRET_KEY in current.rows) if isinstance(oidc, dict) else None,
            sso_allow_email_linking=bool(switch("sso_allow_email_linking")),
            sso_jit_provisioning=bool(switch("sso_jit_provisioning")),
            sso_jit_role=str(switch("sso_jit_role")),
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _saml(entry: dict[str, Any]) -> SamlProviderSettings:
    certificate = entry.get("idp_x509_cert")
    skew = entry.get("clock_skew_seconds")
    contexts = entry.get("required_authn_contexts")
    return SamlProviderSettings(
        idp_entity_id=_text(entry.get("idp_entity_id")),
        idp_sso_url=_text(entry.get("idp_sso_url")),
        signing_certificate_sha256=sso_settings.certificate_fingerprint(certificate)
        if isinstance(certificate, str)
        else None,
        required_authn_contexts=[c for c in contexts if isinstance(c, str)] if isinstance(contexts, list) else [],
        clock_skew_seconds=skew if isinstance(skew, int) and not isinstance(skew, bool) else None,
    )


def _oidc(entry: dict[str, Any], secret_set: bool) -> OidcProviderSettings:
    algorithms = entry.get("algorithms")
    display = entry.get("display_name")
    return OidcProviderSettings(
        issuer=_text(entry.get("issuer")),
        client_id=_text(entry.get("client_id") or entry.get("audience")),
        audience=_text(entry.get("audience")),
        jwks_uri=_text(entry.get("jwks_uri")),
        display_name=display if isinstance(display, str) else None,
        algorithms=[a for a in algorithms if isinstance(a, str)] if isinstance(algorithms, list) else None,
        client_secret_set=secret_set,
    )


async def _read(uow: UnitOfWork) -> TenantSsoSettings:
    current = await sso_settings.current_sso(uow)
    return TenantSsoSettings.of(current, (await current_settings(uow)).policy)


def _provider(value: Any, names: tuple[str, ...]) -> dict[str, Any] | bool | None:
    """False: not given (left as it is); None: removed; else the given fields (UNSET ones left out)."""
    if value is UNSET:
        return False
    if value is None:
        return None
    return {name: getattr(value, name) for name in names if getattr(value, name) is not UNSET}


async def _sso_update(args: Args[TenantSsoSettingsUpdateInput]) -> Done:
    given = args.input
    context = args.context
    found: dict[str, TenantSsoSettings] = {}

    async def change(uow: UnitOfWork) -> uuid.UUID:
        changed = await sso_settings.update_sso_settings(
            uow,
            box=context.auth.secret_box,
            outbound=context.auth.outbound,
            public_url=context.auth.public_url,
            seen=given.updated_at,
            saml=_provider(given.saml, ("metadata_xml", "required_authn_contexts", "clock_skew_seconds")),
            oidc=_provider(
                given.oidc,
                ("issuer", "client_id", "jwks_uri", "audience", "display_name", "algorithms", "client_secret"),
            ),
            switches={
                name: getattr(given, name) for name in sso_settings.SWITCHES if getattr(given, name) is not UNSET
            },
        )
        found["settings"] = await _read(uow)
        return changed

    await write(args.info, change, permissions=_PERMISSIONS)
    return Done(node=found["settings"])


@strawberry.type
class TenantSsoMutation:
    tenant_sso_settings_update = mutation(
        "tenantSsoSettingsUpdate",
        input=TenantSsoSettingsUpdateInput,
        input_description="The settings' updatedAt as read and the parts to change.",
        permission=Permission.TENANT_ADMIN,
        service=_sso_update,
        returns=Entity(TenantSsoSettings, "single sign-on settings as changed", field="sso_settings"),
        description="Change the tenant's single sign-on settings (SAML identity provider, OpenID provider and "
        "its write-only client secret, identity linking and provisioning); audited as a high-risk change.",
    )


@strawberry.type
class TenantSsoSettingsQuery:
    @strawberry.field(
        description="The caller's tenant's single sign-on settings, with their version (the client secret is "
        "never returned).",
        extensions=[requires(Permission.TENANT_ADMIN)],
    )
    async def tenant_sso_settings(self, info: Info) -> TenantSsoSettings | None:
        db = info.context.loaders.db
        tenant = (
            await db.execute(
                select(
                    TenantModel.name, TenantModel.fedramp_compliant, TenantModel.max_users, TenantModel.is_active
                ).where(TenantModel.id == db.tenant_id)
            )
        ).one()
        rows = (
            await db.execute(
                select(
                    ConfigurationModel.config_key,
                    ConfigurationModel.config_value,
                    ConfigurationModel.updated_at,
                    ConfigurationModel.is_encrypted,
                ).where(
                    ConfigurationModel.tenant_id == db.tenant_id,
                    ConfigurationModel.config_key.in_(
                        (
                            sso_settings.SAML_KEY,
                            sso_settings.OIDC_KEY,
                            sso_settings.SECRET_KEY,
                            *(f"{SECURITY_PREFIX}{n}" for n in sso_settings.SWITCHES),
                        )
                    ),
                )
            )
        ).all()
        by_key: dict[str, Any] = {row.config_key: row for row in rows}
        current = sso_settings.CurrentSso(by_key, max((r.updated_at for r in by_key.values()), default=None))
        stored = {k: r.config_value for k, r in by_key.items() if k.startswith(SECURITY_PREFIX) and not r.is_encrypted}
        defaults = policy_from(
            db.tenant_id, tenant.name, tenant.fedramp_compliant, tenant.max_users, tenant.is_active, stored
        )
        return TenantSsoSettings.of(current, defaults)
