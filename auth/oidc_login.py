"""OIDC bearer access tokens as principals: `authenticate_oidc(service, token, meta)`.

`AuthService.authenticate` sends every JWT-shaped bearer credential here. Per request, stateless
(no session row):

1. The unverified `iss` and `aud` only choose the tenant: `gwm_oidc_provider(issuer, audience)` for
   each audience (a list is tried entry by entry, at most `MAX_AUDIENCES`, in one statement). No
   tenant: refused. More than one tenant trusting the same issuer and audience: refused (a
   configuration error that would let one tenant's IdP users act in another), and audited in each.
2. The token is verified against that tenant's configuration (`auth.oidc.verify_access_token`: pinned
   algorithms, the tenant's own JWKS, `iss`, `aud`, `exp`, `nbf`, `iat`) with the service's clock.
3. The user is found, linked or provisioned by `auth.sso.resolve_user` (`email_verified` must be JSON
   true for linking; provisioning needs it too).
4. MFA: when the tenant requires MFA, or the user has enrolled TOTP (which a bearer token cannot
   present), the token's `amr` (RFC 8176) must show more than one factor: either `mfa`, or a
   possession factor (`otp`, `hwk`, `swk`, `sc`) together with a knowledge (`pwd`, `pin`, `kba`) or
   inherence factor (`fpt`, `face`, `iris`, `retina`, `vbm`). A possession factor alone is one
   factor; `sms` and `tel` are not counted (NIST SP 800-63B restricts them), an IdP that accepts
   them can still say `mfa`. A token without `amr` does not show MFA.

Refusals raise `Unauthenticated`: `INVALID_TOKEN` for every token problem (the reason is in the
audit row only), `SSO_ACCOUNT_UNAVAILABLE` when the token is good but names no usable account, and
`IDP_MFA_REQUIRED` when MFA was required and not shown. Each refusal is audited
(OIDC_TOKEN_REJECTED, with the reason) once the tenant is known. An unreachable key set
(`JwksUnavailable`) is answered like a bad token (401, fail closed) and audited as JWKS_UNAVAILABLE.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Final

from sqlalchemy import text

from auth.audit import AuthEvent, RequestMeta, record_event
from auth.audited import route_unit
from auth.exceptions import ConfigurationError, TokenRejected, Unauthenticated
from auth.oidc import OidcProvider, RejectReason, VerifiedToken, issuer_of, verify_access_token
from auth.policy import load_policy
from auth.principal import Principal, PrincipalKind, load_grants
from auth.service import AuthService
from auth.sso import ExternalIdentity, SsoReason, SsoRefused, resolve_user
from models.credentials import IdentityProvider
from models.enums import RiskLevel

__all__ = ["MAX_AUDIENCES", "amr_shows_mfa", "authenticate_oidc", "provider_from_config"]

_log = logging.getLogger(__name__)

MAX_AUDIENCES: Final = 5
"""Audiences of one token tried for a tenant; the configured one must be among the first five."""

_MAX_TOKEN_CHARS: Final = 16 * 1024
_MAX_CLAIM_CHARS: Final = 500  # user_identities.issuer; longer issuers or audiences match nothing
_DEFAULT_ALGORITHMS: Final = ("RS256", "ES256")

_KNOWLEDGE: Final = frozenset({"pwd", "pin", "kba"})
_POSSESSION: Final = frozenset({"otp", "hwk", "swk", "sc"})
_INHERENCE: Final = frozenset({"fpt", "face", "iris", "retina", "vbm"})

# Reasons that mean someone tried to make us trust a key or algorithm we do not trust.
_HIGH_RISK: Final = frozenset(
    {
        RejectReason.ALG_NOT_ALLOWED,
        RejectReason.KEY_REFERENCE_HEADER,
        RejectReason.UNSUPPORTED_HEADER,
        RejectReason.KEY_ALG_MISMATCH,
        RejectReason.BAD_SIGNATURE,
    }
)
_LOW_RISK: Final = frozenset({RejectReason.EXPIRED, RejectReason.JWKS_UNAVAILABLE})

INVALID_TOKEN: Final = "INVALID_TOKEN"  # noqa: S105 - an error code
_INVALID_MESSAGE: Final = "The access token is not valid."
_ACCOUNT_CODE: Final = "SSO_ACCOUNT_UNAVAILABLE"
_ACCOUNT_MESSAGE: Final = "The access token is valid, but its user has no usable account here."
_MFA_CODE: Final = "IDP_MFA_REQUIRED"
_MFA_MESSAGE: Final = "Sign in at your identity provider with multi-factor authentication."


def amr_shows_mfa(amr: Iterable[str]) -> bool:
    """True when the `amr` values show more than one authentication factor (module docstring)."""
    methods = set(amr)
    if "mfa" in methods:
        return True
    return bool(methods & _POSSESSION) and bool(methods & (_KNOWLEDGE | _INHERENCE))


def provider_from_config(config: object) -> OidcProvider:
    """The tenant's `auth.oidc` entry as an OidcProvider, or ConfigurationError."""
    if not isinstance(config, Mapping):
        raise ConfigurationError("auth.oidc must be a JSON object")
    values = {name: config.get(name) for name in ("issuer", "audience", "jwks_uri")}
    if not all(isinstance(v, str) and v for v in values.values()):
        raise ConfigurationError("auth.oidc needs string issuer, audience and jwks_uri")
    algorithms = config.get("algorithms", list(_DEFAULT_ALGORITHMS))
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise ConfigurationError("auth.oidc algorithms must be a list of algorithm names")
    return OidcProvider(
        issuer=str(values["issuer"]),
        audience=str(values["audience"]),
        jwks_uri=str(values["jwks_uri"]),
        allowed_algorithms=tuple(algorithms),
    )


def _unverified_audiences(token: str) -> list[str]:
    """The token's `aud` entries, UNVERIFIED, only to look the tenant up; [] when unreadable."""
    parts = token.split(".")
    if len(token) > _MAX_TOKEN_CHARS or len(parts) != 3:
        return []
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return []
    audience = payload.get("aud") if isinstance(payload, dict) else None
    candidates = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
    audiences: list[str] = []
    for value in candidates:
        if isinstance(value, str) and value and len(value) <= _MAX_CLAIM_CHARS and value not in audiences:
            audiences.append(value)
        if len(audiences) == MAX_AUDIENCES:
            break
    return audiences


def _invalid() -> Unauthenticated:
    return Unauthenticated(INVALID_TOKEN, _INVALID_MESSAGE)


async def _reject(
    service: AuthService,
    tenant_id: uuid.UUID,
    meta: RequestMeta,
    reason: str,
    *,
    risk: RiskLevel = RiskLevel.MEDIUM,
    user_id: uuid.UUID | None = None,
    issuer: str | None = None,
) -> None:
    await record_event(
        service.writer,
        tenant_id=tenant_id,
        event=AuthEvent.OIDC_TOKEN_REJECTED,
        meta=meta,
        user_id=user_id,
        granted=False,
        risk=risk,
        description=f"OIDC access token refused: {reason}",
        details={"reason": reason, "issuer": issuer},
        status=401,
    )


async def authenticate_oidc(service: AuthService, token: str, meta: RequestMeta) -> Principal:
    """The principal an OIDC access token stands for; Unauthenticated otherwise (module docstring)."""
    issuer = issuer_of(token)
    audiences = _unverified_audiences(token)
    if issuer is None or len(issuer) > _MAX_CLAIM_CHARS or not audiences:
        raise _invalid()
    async with service.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT DISTINCT p.tenant_id, p.config FROM unnest(CAST(:auds AS text[])) AS a(aud)"
                    " CROSS JOIN LATERAL gwm_oidc_provider(:iss, a.aud) AS p"
                ),
                {"iss": issuer, "auds": audiences},
            )
        ).all()
        await conn.rollback()
    if not rows:
        raise _invalid()  # no tenant trusts this issuer: nothing to audit against
    if len({row.tenant_id for row in rows}) > 1:
        _log.warning("OIDC issuer %r / audiences %r are trusted by more than one tenant", issuer, audiences)
        for row in rows:
            await _reject(
                service, row.tenant_id, meta, "AMBIGUOUS_PROVIDER", risk=RiskLevel.HIGH, issuer=issuer
            )
        raise _invalid()
    tenant_id: uuid.UUID = rows[0].tenant_id

    try:
        provider = provider_from_config(rows[0].config)
    except ConfigurationError as exc:
        _log.warning("tenant %s: auth.oidc configuration unusable: %s", tenant_id, exc)
        await _reject(service, tenant_id, meta, "CONFIG", issuer=issuer)
        raise _invalid() from None
    if service.jwks is None:
        await _reject(service, tenant_id, meta, RejectReason.JWKS_UNAVAILABLE, issuer=issuer)
        raise _invalid()
    try:
        verified = await verify_access_token(token, provider, service.jwks, now=service.now().timestamp())
    except TokenRejected as exc:
        reason = exc.reason_code  # JwksUnavailable carries JWKS_UNAVAILABLE
        risk = RiskLevel.MEDIUM
        if reason in _HIGH_RISK:
            risk = RiskLevel.HIGH
        elif reason in _LOW_RISK:
            risk = RiskLevel.LOW
        await _reject(service, tenant_id, meta, str(reason), risk=risk, issuer=issuer)
        raise _invalid() from None
    return await _principal(service, tenant_id, verified, meta)


async def _principal(
    service: AuthService, tenant_id: uuid.UUID, verified: VerifiedToken, meta: RequestMeta
) -> Principal:
    identity = ExternalIdentity(
        provider=IdentityProvider.OIDC,
        issuer=verified.issuer,
        subject=verified.subject,
        email=verified.email,
        email_verified=verified.email_verified,
        first_name=_claim(verified, "given_name"),
        last_name=_claim(verified, "family_name"),
    )
    mfa_shown = amr_shows_mfa(verified.amr)
    try:
        # One unit of work: a link or a provisioning commits with its audit rows (auth/sso.py).
        async with route_unit(service, tenant_id, meta, field="oidc bearer token") as uow:
            conn = uow.connection
            policy = await load_policy(conn, tenant_id)
            if policy.requires_mfa and not mfa_shown:
                raise SsoRefused(SsoReason.MFA_NOT_ASSERTED)
            user = await resolve_user(uow, policy, identity, service.now())
            if user.mfa_enabled and not mfa_shown:
                # Rolls back a link made just now as well: nothing changes for a refused token.
                raise SsoRefused(SsoReason.MFA_NOT_ASSERTED, user.user_id)
            grants = await load_grants(conn, user.user_id)
    except SsoRefused as exc:
        await _reject(service, tenant_id, meta, exc.reason_code, user_id=exc.user_id, issuer=verified.issuer)
        if exc.reason_code == SsoReason.MFA_NOT_ASSERTED:
            raise Unauthenticated(_MFA_CODE, _MFA_MESSAGE) from None
        raise Unauthenticated(_ACCOUNT_CODE, _ACCOUNT_MESSAGE) from None
    return Principal(
        kind=PrincipalKind.OIDC,
        tenant_id=tenant_id,
        user_id=user.user_id,
        grants=grants,
        session_id=None,
        mfa_satisfied=True,
    )


def _claim(verified: VerifiedToken, name: str) -> str | None:
    value = verified.claims.get(name)
    return value if isinstance(value, str) and value.strip() else None
