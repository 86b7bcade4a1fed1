"""OIDC access-token verification: a tenant's issuer configuration, its JWKS, and every check a bearer
token must pass before anything trusts what it says.

Flow for one request:
1. `issuer_of(token)` reads the *unverified* `iss` claim. Its only use is to choose which configured
   `OidcProvider` (tenant) to verify against; nothing else may read an unverified claim.
2. `verify_access_token(token, provider, jwks)` parses the header before any key is touched, refuses
   algorithms outside the provider's pinned list (`none` and HS* can never be on it), refuses headers
   that carry or point at a key (`jwk`, `jku`, `x5u`, `x5c`), looks the `kid` up in the provider's own
   JWKS (never in anything the token names), checks the key's type against `alg`, verifies the
   signature with that one key, then checks `iss`, `aud`, `sub`, `exp`, `nbf` and `iat`.
3. Failures raise `TokenRejected` with a stable `RejectReason` code for logs and audit rows; callers
   answer every one of them with the same generic 401 (`JwksUnavailable`, an IdP outage, may be a 503).

Signatures and JWKs are handled by joserfc, the JOSE library Authlib depends on: the installed Authlib
(1.9) deprecates `authlib.jose` in its favour. The claim checks are written out here so each failure
maps to one reason code in a fixed order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import httpx
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, RSAKey
from joserfc.jws import JWSRegistry, deserialize_compact

from auth.exceptions import ConfigurationError, JwksUnavailable, TokenRejected
from auth.outbound import OutboundPolicy

__all__ = [
    "JwksCache",
    "OidcProvider",
    "RejectReason",
    "VerifiedToken",
    "issuer_of",
    "verify_access_token",
]

logger = logging.getLogger(__name__)


class RejectReason(StrEnum):
    """Why a token was refused. Stable strings: they end up in audit rows and dashboards."""

    MALFORMED = "MALFORMED"  # not a compact JWS, bad base64/JSON, duplicate members, too large
    ALG_NOT_ALLOWED = "ALG_NOT_ALLOWED"  # alg missing or outside the provider's pinned list
    KEY_REFERENCE_HEADER = "KEY_REFERENCE_HEADER"  # jwk, jku, x5u or x5c in the header
    UNSUPPORTED_HEADER = "UNSUPPORTED_HEADER"  # crit or b64: extensions we do not implement
    MISSING_KID = "MISSING_KID"
    UNKNOWN_KID = "UNKNOWN_KID"  # not in the JWKS, even after the one allowed refetch
    KEY_ALG_MISMATCH = "KEY_ALG_MISMATCH"  # the kid's key type, curve or JWK alg does not fit alg
    BAD_SIGNATURE = "BAD_SIGNATURE"
    MISSING_CLAIM = "MISSING_CLAIM"  # iss, aud, sub or exp absent
    WRONG_ISSUER = "WRONG_ISSUER"
    WRONG_AUDIENCE = "WRONG_AUDIENCE"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"  # nbf or iat in the future, beyond the leeway
    JWKS_UNAVAILABLE = "JWKS_UNAVAILABLE"  # raised as JwksUnavailable


# alg -> (kty, crv). Asymmetric signatures only: "none" and HS* are absent on purpose, so no provider
# configuration can enable them (HS256 with the public key as secret is the classic confusion).
_SUPPORTED_ALGORITHMS: Final[Mapping[str, tuple[str, str | None]]] = MappingProxyType(
    {
        "RS256": ("RSA", None),
        "RS384": ("RSA", None),
        "RS512": ("RSA", None),
        "PS256": ("RSA", None),
        "PS384": ("RSA", None),
        "PS512": ("RSA", None),
        "ES256": ("EC", "P-256"),
        "ES384": ("EC", "P-384"),
        "ES512": ("EC", "P-521"),
    }
)
# Headers that embed a key or tell us where to fetch one: trusting them lets the token pick its own key.
_KEY_REFERENCE_HEADERS: Final = frozenset({"jwk", "jku", "x5u", "x5c"})
_UNSUPPORTED_HEADERS: Final = frozenset({"crit", "b64"})

_MAX_TOKEN_CHARS: Final = 16 * 1024
_MAX_JWKS_BYTES: Final = 1024 * 1024
_MAX_JWKS_KEYS: Final = 100
_MAX_KID_CHARS: Final = 256
_MIN_RSA_BITS: Final = 2048
_JWKS_FETCH_TIMEOUT: Final = 5.0
_MAX_LEEWAY_SECONDS: Final = 300
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class OidcProvider:
    """One tenant's OIDC issuer as configured by an administrator (never taken from a token).

    `issuer` is compared exactly with `iss`; `audience` must be `aud` or one of its entries.
    """

    issuer: str
    audience: str
    jwks_uri: str
    allowed_algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_seconds: int = 60
    jwks_cache_ttl_seconds: float = 300.0
    # After a fetch (or a failed one), an unknown kid waits this long before it may cause another:
    # a flood of random kids cannot make us hammer the IdP.
    jwks_min_refetch_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience or not self.jwks_uri:
            raise ConfigurationError("OIDC provider needs an issuer, an audience and a jwks_uri")
        algorithms = tuple(self.allowed_algorithms)
        if not algorithms:
            raise ConfigurationError("OIDC provider needs at least one allowed algorithm")
        refused = [alg for alg in algorithms if alg not in _SUPPORTED_ALGORITHMS]
        if refused:
            raise ConfigurationError(
                f"OIDC algorithms {refused} are not allowed; choose from {sorted(_SUPPORTED_ALGORITHMS)}"
            )
        object.__setattr__(self, "allowed_algorithms", algorithms)
        if not 0 <= self.leeway_seconds <= _MAX_LEEWAY_SECONDS:
            raise ConfigurationError(f"OIDC leeway must be between 0 and {_MAX_LEEWAY_SECONDS} seconds")
        if not 0 < self.jwks_cache_ttl_seconds:
            raise ConfigurationError("JWKS cache TTL must be positive")
        if not 0 <= self.jwks_min_refetch_seconds <= self.jwks_cache_ttl_seconds:
            raise ConfigurationError("JWKS minimum refetch interval must be between 0 and the cache TTL")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a verified access token says. `audience` is the provider's audience that matched."""

    issuer: str
    subject: str
    audience: str
    claims: Mapping[str, Any]
    amr: tuple[str, ...]
    email: str | None
    # True only for a JSON `true`: email linking relies on it, so "true" strings and the like do not count.
    email_verified: bool
    expires_at: datetime


# --- JWKS -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _PublicKey:
    kid: str
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own "alg", when the IdP pins one
    key: RSAKey | ECKey

    def fits(self, alg: str) -> bool:
        kty, crv = _SUPPORTED_ALGORITHMS[alg]
        return self.kty == kty and self.crv == crv and self.alg in (None, alg)


@dataclass(slots=True)
class _JwksEntry:
    keys: Mapping[str, _PublicKey] | None = None
    fetched_at: float = -math.inf  # last successful fetch
    attempted_at: float = -math.inf  # last fetch started, successful or not
    inflight: asyncio.Task[None] | None = field(default=None, repr=False)


class _JwksFetchError(Exception):
    pass


class _Malformed(Exception):
    pass


class JwksCache:
    """JSON Web Key Sets fetched over HTTPS and cached per `jwks_uri`.

    A key set is reused for the provider's TTL. A kid missing from a fresh set causes one refetch
    (key rotation), at most once per `jwks_min_refetch_seconds`; concurrent misses share that one
    fetch. A failed fetch is not retried within that interval either, and once the TTL has passed
    without a successful fetch verification fails closed with `JwksUnavailable`.

    Every fetch goes through the outbound guard (auth/outbound.py, `outbound`: the operator's
    policy): `https` only (`http` only to an allow-listed host:port), every address of the name
    checked and connected to, each redirect hop checked again; the body is capped at 1 MiB and the
    whole fetch at 5 seconds. Symmetric (`oct`) keys, RSA keys under 2048 bits, keys without a kid
    and kids that appear twice are dropped. The cache owns its guarded client; `aclose()` closes it.
    One instance per process and event loop (it is not thread-safe), shared by all tenants.
    """

    def __init__(
        self,
        *,
        outbound: OutboundPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbound = OutboundPolicy() if outbound is None else outbound
        self._client: httpx.AsyncClient | None = None
        self._clock = clock
        self._entries: dict[str, _JwksEntry] = {}

    async def __aenter__(self) -> JwksCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        tasks = [e.inflight for e in self._entries.values() if e.inflight is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def get_key(self, provider: OidcProvider, kid: str) -> _PublicKey:
        """The provider's key with this kid. Raises TokenRejected(UNKNOWN_KID) or JwksUnavailable."""
        entry = self._entries.setdefault(provider.jwks_uri, _JwksEntry())
        if self._is_fresh(entry, provider):
            assert entry.keys is not None
            key = entry.keys.get(kid)
            if key is not None:
                return key
        await self._refresh(entry, provider)
        if not self._is_fresh(entry, provider):
            raise JwksUnavailable(RejectReason.JWKS_UNAVAILABLE, "no current key set for the issuer")
        assert entry.keys is not None
        key = entry.keys.get(kid)
        if key is None:
            raise TokenRejected(RejectReason.UNKNOWN_KID)
        return key

    def _is_fresh(self, entry: _JwksEntry, provider: OidcProvider) -> bool:
        return entry.keys is not None and self._clock() - entry.fetched_at < provider.jwks_cache_ttl_seconds

    async def _refresh(self, entry: _JwksEntry, provider: OidcProvider) -> None:
        # No await between the check and the assignment: one task starts the fetch, the others join it.
        if entry.inflight is None:
            now = self._clock()
            if now - entry.attempted_at < provider.jwks_min_refetch_seconds:
                return
            entry.attempted_at = now
            entry.inflight = asyncio.create_task(self._fetch_into(entry, provider.jwks_uri))
        # shield: a cancelled request must not cancel the fetch the other waiters share.
        await asyncio.shield(entry.inflight)

    async def _fetch_into(self, entry: _JwksEntry, uri: str) -> None:
        try:
            keys = await self._fetch(uri)
        except (_JwksFetchError, httpx.HTTPError, TimeoutError) as exc:
            logger.warning("JWKS fetch from %s failed: %s", uri, type(exc).__name__ + f": {exc}")
        else:
            entry.keys = MappingProxyType(keys)
            entry.fetched_at = self._clock()
        finally:
            entry.inflight = None

    async def _fetch(self, uri: str) -> dict[str, _PublicKey]:
        if self._client is None:
            self._client = self._outbound.client(timeout=_JWKS_FETCH_TIMEOUT)
        async with asyncio.timeout(_JWKS_FETCH_TIMEOUT):
            # The guard checks the URL and every address and redirect hop, and bounds the body
            # (counted after content decoding, so a compressed bomb stops at the limit too).
            response = await self._outbound.fetch(
                uri,
                client=self._client,
                headers={"Accept": "application/jwk-set+json, application/json"},
                max_bytes=_MAX_JWKS_BYTES,
            )
        if response.status_code != 200:
            raise _JwksFetchError(f"HTTP status {response.status_code}")
        return _parse_jwks(response.content)


def _parse_jwks(body: bytes) -> dict[str, _PublicKey]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _JwksFetchError("key set is not JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _JwksFetchError("key set has no 'keys' array")
    keys: dict[str, _PublicKey] = {}
    ambiguous: set[str] = set()
    for raw in document["keys"][:_MAX_JWKS_KEYS]:
        key = _import_public_key(raw)
        if key is None:
            continue
        # Two keys under one kid: we could not tell which one the IdP meant, so neither is used.
        if key.kid in keys or key.kid in ambiguous:
            ambiguous.add(key.kid)
            keys.pop(key.kid, None)
            continue
        keys[key.kid] = key
    return keys


def _import_public_key(raw: object) -> _PublicKey | None:
    """A verification key from one JWKS member, or None when it cannot safely be used."""
    if not isinstance(raw, dict):
        return None
    kid, kty, alg = raw.get("kid"), raw.get("kty"), raw.get("alg")
    if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_CHARS:
        return None
    if raw.get("use", "sig") != "sig":
        return None
    key_ops = raw.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    if alg is not None and alg not in _SUPPORTED_ALGORITHMS:
        return None
    try:
        # Only the public members are imported: private parts a misconfigured IdP publishes are ignored.
        if kty == "RSA":
            n, e = raw.get("n"), raw.get("e")
            if not isinstance(n, str) or not isinstance(e, str):
                return None
            if int.from_bytes(_b64url_decode(n), "big").bit_length() < _MIN_RSA_BITS:
                return None
            rsa = RSAKey.import_key({"kty": "RSA", "n": n, "e": e})
            return _PublicKey(kid=kid, kty="RSA", crv=None, alg=alg, key=rsa)
        if kty == "EC":
            crv, x, y = raw.get("crv"), raw.get("x"), raw.get("y")
            if crv not in ("P-256", "P-384", "P-521") or not isinstance(x, str) or not isinstance(y, str):
                return None
            ec = ECKey.import_key({"kty": "EC", "crv": crv, "x": x, "y": y})
            return _PublicKey(kid=kid, kty="EC", crv=crv, alg=alg, key=ec)
    except (_Malformed, JoseError, ValueError, TypeError) as exc:
        logger.warning("JWKS key %r skipped: %s", kid, type(exc).__name__)
        return None
    return None  # "oct" (symmetric), OKP and anything else: never a verification key here


# --- tokens -----------------------------------------------------------------------------------------


def _b64url_decode(segment: str) -> bytes:
    if not _B64URL.fullmatch(segment):
        raise _Malformed("not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _Malformed("not base64url") from exc


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins; a signed document with duplicates is refused outright.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Malformed("duplicate member")
    return result


def _json_object(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url_decode(segment), object_pairs_hook=_no_duplicate_members)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise _Malformed("not JSON") from exc
    if not isinstance(value, dict):
        raise _Malformed("not a JSON object")
    return value


def _segments(token: object) -> list[str]:
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
        raise _Malformed("not a token of acceptable size")
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _Malformed("not a compact JWS")
    return parts


def issuer_of(token: str) -> str | None:
    """The token's `iss` claim, UNVERIFIED: use it only to choose the provider to verify against.

    Nothing else may act on it: the verified issuer is `VerifiedToken.issuer`, after
    `verify_access_token` has compared it exactly with the chosen provider's. Returns None for
    anything that is not a compact JWS with a string `iss`; never raises.
    """
    try:
        issuer = _json_object(_segments(token)[1]).get("iss")
    except _Malformed:
        return None
    return issuer if isinstance(issuer, str) and issuer else None


async def verify_access_token(
    token: str,
    provider: OidcProvider,
    jwks: JwksCache,
    *,
    now: float | None = None,
) -> VerifiedToken:
    """Verify a bearer access token against one provider's configuration.

    Raises TokenRejected (with a RejectReason) for every refusal and JwksUnavailable when the
    provider's keys cannot be had. `now` (Unix seconds) is for tests.
    """
    try:
        segments = _segments(token)
        header = _json_object(segments[0])
    except _Malformed as exc:
        raise TokenRejected(RejectReason.MALFORMED, str(exc)) from None

    # Everything the header decides is settled before any key is looked up or any network is used.
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in provider.allowed_algorithms:
        raise TokenRejected(RejectReason.ALG_NOT_ALLOWED)
    if not _KEY_REFERENCE_HEADERS.isdisjoint(header):
        raise TokenRejected(RejectReason.KEY_REFERENCE_HEADER)
    if not _UNSUPPORTED_HEADERS.isdisjoint(header):
        raise TokenRejected(RejectReason.UNSUPPORTED_HEADER)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected(RejectReason.MISSING_KID)
    if len(kid) > _MAX_KID_CHARS:
        raise TokenRejected(RejectReason.UNKNOWN_KID)

    key = await jwks.get_key(provider, kid)
    if not key.fits(alg):
        raise TokenRejected(RejectReason.KEY_ALG_MISMATCH)

    # One key, one algorithm: joserfc cannot pick anything the header names. Unregistered header
    # parameters (some IdPs add their own) are tolerated; the ones that matter were refused above.
    registry = JWSRegistry(algorithms=[alg], strict_check_header=False)
    try:
        deserialize_compact(token, key.key, registry=registry)
    except BadSignatureError:
        raise TokenRejected(RejectReason.BAD_SIGNATURE) from None
    except JoseError as exc:
        raise TokenRejected(RejectReason.MALFORMED, type(exc).__name__) from None

    try:
        claims = _json_object(segments[1])
    except _Malformed as exc:
        raise TokenRejected(RejectReason.MALFORMED, str(exc)) from None
    return _check_claims(claims, provider, time.time() if now is None else now)


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int; NaN compares false with everything (an exp of NaN would never expire).
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejected(RejectReason.MALFORMED, f"'{name}' is not a NumericDate")
    return float(value)


def _check_claims(claims: dict[str, Any], provider: OidcProvider, now: float) -> VerifiedToken:
    for name in ("iss", "aud", "sub", "exp"):
        if claims.get(name) is None:
            raise TokenRejected(RejectReason.MISSING_CLAIM, name)

    issuer = claims["iss"]
    if not isinstance(issuer, str) or issuer != provider.issuer:
        raise TokenRejected(RejectReason.WRONG_ISSUER)
    audience = claims["aud"]
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or provider.audience not in audiences:
        raise TokenRejected(RejectReason.WRONG_AUDIENCE)
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise TokenRejected(RejectReason.MALFORMED, "'sub' is not a non-empty string")

    leeway = provider.leeway_seconds
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    assert exp is not None
    if exp <= now - leeway:
        raise TokenRejected(RejectReason.EXPIRED)
    if nbf is not None and nbf > now + leeway:
        raise TokenRejected(RejectReason.NOT_YET_VALID, "nbf")
    if iat is not None and iat > now + leeway:
        raise TokenRejected(RejectReason.NOT_YET_VALID, "iat")
    try:
        expires_at = datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        raise TokenRejected(RejectReason.MALFORMED, "'exp' is out of range") from None

    amr = claims.get("amr")
    email = claims.get("email")
    return VerifiedToken(
        issuer=issuer,
        subject=subject,
        audience=provider.audience,
        claims=MappingProxyType(claims),
        amr=tuple(m for m in amr if isinstance(m, str)) if isinstance(amr, list) else (),
        email=email if isinstance(email, str) and email else None,
        email_verified=claims.get("email_verified") is True,
        expires_at=expires_at,
    )
