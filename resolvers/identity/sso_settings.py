"""A tenant's single sign-on settings: its SAML identity provider, its OpenID provider, and the
linking and provisioning switches, written as one high-risk change.

They live where the sign-in code reads them, in `tenant_configurations`:

- `auth.saml` (JSON, read by auth/routes_saml.py): {"idp_entity_id", "idp_sso_url", "idp_x509_cert",
  "required_authn_contexts", "clock_skew_seconds"?}, taken from the IdP's metadata XML, which is
  parsed with python3-saml's metadata parser (`OneLogin_Saml2_IdPMetadataParser`) and must name an
  entity id, an HTTP-Redirect single sign-on URL and exactly one signing certificate; the result is
  checked as the sign-in code will use it (`auth.routes_saml.tenant_config`: certificate usable,
  an MFA tenant lists its MFA contexts). Nothing here can relax what sign-in demands (signed
  assertions, audience, recipient): those are fixed in auth/saml.py.
- `auth.oidc` (JSON, read by auth/oidc_login.py and auth/oidc_browser.py): {"issuer", "client_id",
  "audience", "jwks_uri", "display_name"?, "algorithms"?}. The issuer and JWKS URLs are checked
  against the outbound guard's static rules (auth/outbound.py) when saved; the addresses they
  resolve to are checked at every fetch.
- `auth.oidc.client_secret`: the client secret, write-only, sealed with the server's SecretBox
  (auth/crypto.py) bound to tenant and key, as every sealed configuration value
  (resolvers/identity/tenant_settings.py); it is never returned (the API says only whether one is
  set) and the audit trail records it "[redacted]".
- `security.sso_allow_email_linking`, `security.sso_jit_provisioning`, `security.sso_jit_role`: the
  switches auth/sso.py reads (also settable with tenantSecuritySettingsUpdate); the provisioning role
  must exist and must not grant administration.

The settings carry one version, the latest `updated_at` of those rows (null while none is stored);
a change names the version it read (CONFLICT otherwise). The tenant row is locked first, so
concurrent changes queue. Every row written is labelled `tenant.sso_settings.changed`; tenant
configurations are a high-risk entity, so every audit row has risk level HIGH.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from lxml.etree import XMLSyntaxError
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from sqlalchemy import select

from auth.crypto import SecretBox
from auth.exceptions import SamlConfigError
from auth.outbound import OutboundPolicy, OutboundRefused
from auth.policy import SECURITY_PREFIX, policy_from
from auth.routes_saml import tenant_config
from models import Role, Tenant, TenantConfiguration
from models.errors import Conflict, Invalid
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import Failure, RuleContext, custom_rule, declare, length_rule, range_rule, validate
from resolvers.identity.tenant_settings import config_aad, current_settings

__all__ = [
    "OIDC_ENTITY",
    "OIDC_KEY",
    "SAML_ENTITY",
    "SAML_KEY",
    "SECRET_KEY",
    "SSO_ENTITY",
    "SWITCHES",
    "CurrentSso",
    "OidcTarget",
    "SamlTarget",
    "current_sso",
    "parse_idp_metadata",
    "update_sso_settings",
]

SAML_KEY: Final = "auth.saml"
OIDC_KEY: Final = "auth.oidc"
SECRET_KEY: Final = "auth.oidc.client_secret"  # noqa: S105 - a configuration key name
SWITCHES: Final = ("sso_allow_email_linking", "sso_jit_provisioning", "sso_jit_role")
_KEYS: Final = (SAML_KEY, OIDC_KEY, SECRET_KEY, *(f"{SECURITY_PREFIX}{name}" for name in SWITCHES))
_LABEL: Final = "tenant.sso_settings.changed"

#: Pseudo-entities of the validation registry (docs/validation.md).
SSO_ENTITY: Final = "tenant_sso_settings"
SAML_ENTITY: Final = "tenant_sso_saml"
OIDC_ENTITY: Final = "tenant_sso_oidc"

_MAX_METADATA_CHARS: Final = 100_000  # schema/input_guard.MAX_TEXT_LENGTH
_SUPPORTED_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


# -- the validation rules ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SamlTarget:
    """What the SAML rules check against: the tenant's public SAML URLs and MFA requirement."""

    public_url: str = "https://gwm.invalid"
    subdomain: str = "tenant"
    requires_mfa: bool = False


@dataclass(frozen=True, slots=True)
class OidcTarget:
    """What the OpenID rules check against: the operator's outbound policy."""

    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)


def _outbound_rule(name: str, words: str) -> Any:
    async def check(ctx: RuleContext) -> Failure | None:
        value = ctx.values.get(name)
        if value is None:
            return None
        target = ctx.row if isinstance(ctx.row, OidcTarget) else OidcTarget()
        try:
            target.outbound.check_url(str(value))
        except OutboundRefused as refused:
            return Failure(f"The {words} is refused: {refused.detail}.")
        return None

    return custom_rule(
        OIDC_ENTITY, name, "outbound",
        sentence=f"The {words} must pass the outbound guard's static rules (auth/outbound.py): https, a host, no "
        "credentials, no private, loopback or link-local address unless its host:port is on GWM_OUTBOUND_ALLOW.",
        check=check, sample={name: "https://127.0.0.1:1/"},
    )


async def _check_algorithms(ctx: RuleContext) -> Failure | None:
    value = ctx.values.get("algorithms")
    if value is None:
        return None
    refused = [a for a in value if a not in _SUPPORTED_ALGORITHMS]
    if not value or refused:
        return Failure(f"algorithms must be one or more of {', '.join(_SUPPORTED_ALGORITHMS)}.")
    return None


async def _check_metadata(ctx: RuleContext) -> Failure | None:
    value = ctx.values.get("metadata_xml")
    if value is None:
        return None
    target = ctx.row if isinstance(ctx.row, SamlTarget) else SamlTarget()
    try:
        parsed = parse_idp_metadata(str(value))
        contexts = ctx.values.get("required_authn_contexts") or []
        tenant_config(target.public_url, target.subdomain, {**parsed, "required_authn_contexts": list(contexts)},
                      _mfa_policy(target.requires_mfa))
    except Invalid as bad:
        return Failure(bad.message)
    except SamlConfigError as bad:
        return Failure(f"The identity provider's metadata is not usable: {bad.detail}.",
                       field="required_authn_contexts" if _about_contexts(bad.detail) else None)
    return None


def _about_contexts(detail: str) -> bool:
    return "MFA" in detail or "required_authn_contexts" in detail


async def _check_role(ctx: RuleContext) -> Failure | None:
    name = ctx.values.get("sso_jit_role")
    if name is None:
        return None
    permissions = await ctx.uow.session.scalar(
        select(Role.permissions).where(Role.tenant_id == ctx.uow.tenant_id, Role.name == name)
    )
    if permissions is None:
        return Failure(f"There is no role named {name!r}.")
    if any(isinstance(p, str) and p.endswith(":admin") for p in permissions):
        return Failure(f"The role {name!r} grants administration: provisioning never creates an administrator.")
    return None


declare(
    length_rule(SAML_ENTITY, "metadata_xml", _MAX_METADATA_CHARS),
    custom_rule(
        SAML_ENTITY, "metadata_xml", "metadata",
        sentence="The identity provider's metadata must parse (python3-saml's metadata parser) and name an entity "
        "id, an HTTP-Redirect single sign-on URL and exactly one usable signing certificate; on a tenant that "
        "requires MFA the MFA AuthnContextClassRefs must be listed.",
        check=_check_metadata, sample={"metadata_xml": "<not metadata"},
    ),
    range_rule(SAML_ENTITY, "clock_skew_seconds", low=0, high=300),
    length_rule(OIDC_ENTITY, "issuer", 500),
    length_rule(OIDC_ENTITY, "client_id", 255),
    length_rule(OIDC_ENTITY, "audience", 500),
    length_rule(OIDC_ENTITY, "jwks_uri", 2000),
    length_rule(OIDC_ENTITY, "display_name", 100),
    length_rule(OIDC_ENTITY, "client_secret", 1024),
    _outbound_rule("issuer", "issuer URL"),
    _outbound_rule("jwks_uri", "JWKS URL"),
    custom_rule(
        OIDC_ENTITY, "algorithms", "supported",
        sentence=f"The ID token algorithms must be one or more of {', '.join(_SUPPORTED_ALGORITHMS)} (never none "
        "or HS*).",
        check=_check_algorithms, sample={"algorithms": ["HS256"]},
    ),
    custom_rule(
        SSO_ENTITY, "sso_jit_role", "role",
        sentence="The role given to users created by single sign-on must exist and must not grant any *:admin "
        "permission.",
        check=_check_role, sample={"sso_jit_role": "No such role 7f3c"},
    ),
)


def _mfa_policy(requires_mfa: bool) -> Any:
    return policy_from(uuid.UUID(int=0), "", False, 1, True, {f"{SECURITY_PREFIX}mfa_required": requires_mfa})


# -- SAML metadata ----------------------------------------------------------------------------------


def parse_idp_metadata(xml: str) -> dict[str, Any]:
    """The `auth.saml` fields from an IdP's metadata XML, or Invalid (field metadata_xml)."""
    try:
        parsed = OneLogin_Saml2_IdPMetadataParser.parse(
            xml.encode(), required_sso_binding=OneLogin_Saml2_Constants.BINDING_HTTP_REDIRECT
        )
    except (XMLSyntaxError, ValueError, TypeError, Exception) as exc:  # python3-saml raises plain Exception
        raise Invalid(
            f"The identity provider's metadata is not XML metadata ({type(exc).__name__}).", field="metadata_xml"
        ) from None
    idp = parsed.get("idp") or {}
    entity_id = idp.get("entityId")
    sso_url = (idp.get("singleSignOnService") or {}).get("url")
    if not entity_id:
        raise Invalid("The identity provider's metadata names no IDPSSODescriptor entity id.", field="metadata_xml")
    if not sso_url:
        raise Invalid(
            "The identity provider's metadata has no HTTP-Redirect SingleSignOnService.", field="metadata_xml"
        )
    multi = idp.get("x509certMulti") or {}
    certificates = [idp["x509cert"]] if idp.get("x509cert") else list(multi.get("signing", []))
    distinct = list(dict.fromkeys(certificates))
    if len(distinct) != 1:
        raise Invalid(
            f"The identity provider's metadata must hold exactly one signing certificate (it holds {len(distinct)}).",
            field="metadata_xml",
        )
    return {"idp_entity_id": entity_id, "idp_sso_url": sso_url, "idp_x509_cert": distinct[0]}


def certificate_fingerprint(certificate: str) -> str | None:
    """SHA-256 of the certificate's DER, as colon-separated hex (what IdP consoles show)."""
    body = "".join(line for line in certificate.splitlines() if "-----" not in line)
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except ValueError:
        return None
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


# -- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurrentSso:
    """The stored SSO rows by key, and their version (latest updated_at; None while none exists)."""

    rows: dict[str, TenantConfiguration]
    version: datetime.datetime | None

    def plain(self, key: str) -> Any:
        row = self.rows.get(key)
        return None if row is None or row.is_encrypted else row.config_value


async def current_sso(uow: UnitOfWork) -> CurrentSso:
    stmt = select(TenantConfiguration).where(
        TenantConfiguration.tenant_id == uow.tenant_id, TenantConfiguration.config_key.in_(_KEYS)
    )
    rows = {row.config_key: row for row in await uow.session.scalars(stmt)}
    return CurrentSso(rows, max((row.updated_at for row in rows.values()), default=None))


# -- writing ----------------------------------------------------------------------------------------


async def update_sso_settings(
    uow: UnitOfWork,
    *,
    box: SecretBox,
    outbound: OutboundPolicy,
    public_url: str,
    seen: datetime.datetime | None,
    saml: Mapping[str, Any] | bool | None,
    oidc: Mapping[str, Any] | bool | None,
    switches: Mapping[str, Any],
) -> uuid.UUID:
    """Change the tenant's SSO settings read at version `seen`.

    `saml` / `oidc`: False leaves the provider as it is, None removes it, a mapping replaces it
    (SAML: metadata_xml, required_authn_contexts?, clock_skew_seconds?; OpenID: issuer, client_id,
    jwks_uri, audience?, display_name?, algorithms?, and client_secret: absent keeps the stored one,
    None removes it, a string replaces it). `switches`: the SWITCHES to set. Returns the id of the
    last row written (the tenant's id when nothing changed)."""
    tenant = await uow.lock(Tenant, uow.tenant_id, what="tenant")
    current = await current_sso(uow)
    if seen != current.version:
        raise Conflict(
            "The single sign-on settings were changed since you read them: read them again and retry with their "
            "current updatedAt.",
            field="updated_at",
            current_updated_at=current.version,
        )
    written: list[TenantConfiguration] = []
    requires_mfa = (await current_settings(uow)).policy.requires_mfa

    if saml is not False:
        if saml is None or saml is True:
            await _remove(uow, current, SAML_KEY, written)
        else:
            values = {k: v for k, v in saml.items() if v is not None}
            await validate(uow, SAML_ENTITY, values, row=SamlTarget(public_url, tenant.subdomain, requires_mfa),
                           under="saml")
            entry = parse_idp_metadata(values["metadata_xml"])
            entry["required_authn_contexts"] = [c.strip() for c in values.get("required_authn_contexts") or []]
            if "clock_skew_seconds" in values:
                entry["clock_skew_seconds"] = values["clock_skew_seconds"]
            _put(uow, current, SAML_KEY, "json", entry, written)

    if oidc is not False:
        if oidc is None or oidc is True:
            await _remove(uow, current, OIDC_KEY, written)
            await _remove(uow, current, SECRET_KEY, written)
        else:
            values = {k: (v.strip() if isinstance(v, str) and k != "client_secret" else v) for k, v in oidc.items()}
            for name in ("issuer", "client_id", "jwks_uri"):
                if not values.get(name):
                    raise Invalid(f"{name.replace('_', ' ')} must not be empty.", field=f"oidc.{name}")
            if "client_secret" in values and values["client_secret"] is not None and not values["client_secret"]:
                raise Invalid("client secret must not be empty (null removes it).", field="oidc.client_secret")
            await validate(uow, OIDC_ENTITY, {k: v for k, v in values.items() if v is not None},
                           row=OidcTarget(outbound), under="oidc")
            entry = {name: values[name] for name in ("issuer", "client_id", "jwks_uri")}
            entry["audience"] = values.get("audience") or values["client_id"]
            if values.get("display_name"):
                entry["display_name"] = values["display_name"]
            if values.get("algorithms"):
                entry["algorithms"] = list(values["algorithms"])
            _put(uow, current, OIDC_KEY, "json", entry, written)
            if "client_secret" in values:
                secret = values["client_secret"]
                if secret is None:
                    await _remove(uow, current, SECRET_KEY, written)
                else:
                    sealed = {"v": 1, "sealed_secret": box.encrypt(json.dumps(secret).encode(),
                                                                    config_aad(uow.tenant_id, SECRET_KEY))}
                    _put(uow, current, SECRET_KEY, "string", sealed, written, encrypted=True)

    if switches:
        checked: dict[str, Any] = {}
        for name, value in switches.items():
            if value is None:
                raise Invalid(f"{name.replace('_', ' ')} cannot be cleared.", field=name)
            if name == "sso_jit_role":
                if not isinstance(value, str) or not value.strip():
                    raise Invalid("sso jit role must not be empty.", field=name)
                value = value.strip()
            checked[name] = value
        await validate(uow, "tenant_security_settings", checked)
        await validate(uow, SSO_ENTITY, checked)
        for name, value in checked.items():
            kind = "string" if name == "sso_jit_role" else "boolean"
            _put(uow, current, f"{SECURITY_PREFIX}{name}", kind, value, written)

    await uow.flush()
    return written[-1].id if written else uow.tenant_id


def _put(
    uow: UnitOfWork,
    current: CurrentSso,
    key: str,
    kind: str,
    value: Any,
    written: list[TenantConfiguration],
    *,
    encrypted: bool = False,
) -> None:
    row = current.rows.get(key)
    values = {"config_value": value, "config_type": kind, "is_encrypted": encrypted}
    if row is None:
        row = TenantConfiguration(tenant_id=uow.tenant_id, config_key=key)
        uow.assign(row, values)
        uow.add(row)
    elif not uow.assign(row, values):
        return
    uow.label(row, _LABEL, f"single sign-on setting {key} changed")
    written.append(row)


async def _remove(uow: UnitOfWork, current: CurrentSso, key: str, written: list[TenantConfiguration]) -> None:
    row = current.rows.get(key)
    if row is None:
        return
    uow.label(row, _LABEL, f"single sign-on setting {key} removed")
    await uow.delete(row)
    written.append(row)
