"""Browser sign-in through a tenant's OpenID provider: the authorization-code flow with PKCE (S256),
`state` and `nonce`, the client side of it done by Authlib's httpx client (`AsyncOAuth2Client`).

The routes are in auth/routes_oidc.py; this module holds what they need:

- `BrowserClient`: the tenant's relying-party settings, read from `tenant_configurations`:
  `auth.oidc` (plain JSON: `issuer`, `audience`, `jwks_uri`, the same entry bearer tokens use,
  plus `client_id`, defaulting to `audience`, and an optional `display_name` for the sign-in
  button) and the sealed entry `auth.oidc.client_secret` (absent: a public client, PKCE only).
- `OidcBrowser`: discovery (`{issuer}/.well-known/openid-configuration`, whose `issuer` must be the
  configured one exactly; cached five minutes), the authorization URL and the code exchange. Every
  outbound request goes through the outbound guard (auth/outbound.py: https or an allow-listed
  host:port, every resolved address checked, size and time bounded); the token endpoint gets 5 s,
  no redirects, and an uncompressed answer of at most 1 MiB.
- `PendingSignIn`: the `state`, `nonce` and PKCE `code_verifier` of one sign-in. The state is
  recorded server-side (saml_authn_requests, under `oidc:<sha256 of the state>`, ten minutes,
  consumed with DELETE ... RETURNING: decision A6) and the three values travel in a cookie sealed
  with the server's SecretBox and bound to the tenant. The row makes the cookie single-use: a
  replayed cookie (with its callback URL) finds no row and is refused before any code is redeemed.
- `verify_id_token`: the ID token is verified like a bearer token (auth/oidc.py, joserfc: pinned
  algorithms, the tenant's own JWKS, `iss`, `exp`, `nbf`, `iat`) with the client id as audience,
  then its `nonce` must be the sealed one and its `azp`, when present, the client id.

Refusals raise `BrowserRefused` with a stable reason code (audit rows only; users see a short
message with a public code).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Final

import httpx

from auth.crypto import SecretBox
from auth.exceptions import AuthError, ConfigurationError
from auth.oidc import JwksCache, OidcProvider, VerifiedToken, verify_access_token
from auth.outbound import OutboundPolicy, OutboundRefused, RefusalReason
from auth.saml_store import DbSamlStateStore

with warnings.catch_warnings():
    # Authlib 1.9 prefers the `httpx2` package and warns once at import when it falls back to httpx,
    # which is what this project installs; the fallback is the same API. authlib.deprecate installs
    # an "always" filter for its warnings on import: imported first here, so the filter below comes
    # before it, and both end with this block.
    import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401

    warnings.filterwarnings("ignore", message="The httpx module is deprecated", category=DeprecationWarning)
    # Authlib ships no type information (no py.typed): its three names are used as Any here.
    from authlib.common.security import generate_token  # type: ignore[import-untyped]
    from authlib.integrations.base_client import OAuthError  # type: ignore[import-untyped]
    from authlib.integrations.httpx_client import AsyncOAuth2Client  # type: ignore[import-untyped]

__all__ = [
    "CONFIG_KEY",
    "SECRET_KEY",
    "STATE_TTL_SECONDS",
    "BrowserClient",
    "BrowserReason",
    "BrowserRefused",
    "OidcBrowser",
    "PendingSignIn",
    "ProviderMetadata",
    "browser_client",
    "consume_state",
    "issue_state",
    "open_pending",
    "seal_pending",
    "verify_id_token",
]

CONFIG_KEY: Final = "auth.oidc"
SECRET_KEY: Final = "auth.oidc.client_secret"  # noqa: S105 - a configuration key name
STATE_TTL_SECONDS: Final = 600
_STATE_PREFIX: Final = "oidc:"
_DEFAULT_ALGORITHMS: Final = ("RS256", "ES256")
_SCOPE: Final = "openid email profile"
_FETCH_TIMEOUT: Final = 5.0
_MAX_BODY: Final = 1024 * 1024
_METADATA_TTL: Final = 300.0
_MAX_DISPLAY_NAME: Final = 60


class BrowserReason(StrEnum):
    """Why a browser sign-in was refused, besides auth.oidc.RejectReason and auth.sso.SsoReason."""

    CONFIG = "CONFIG"  # the tenant's auth.oidc entry or its client secret is unusable
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"  # discovery failed or named another issuer
    IDP_ERROR = "IDP_ERROR"  # the provider answered the callback with ?error=...
    NO_BINDING_COOKIE = "NO_BINDING_COOKIE"  # no sealed sign-in cookie, or one that does not open
    STATE_MISMATCH = "STATE_MISMATCH"  # the callback's state is not the cookie's (login CSRF)
    STATE_REPLAYED = "STATE_REPLAYED"  # the state was used already, expired, or never issued
    CODE_REJECTED = "CODE_REJECTED"  # the token endpoint refused the code (or did not answer)
    NO_ID_TOKEN = "NO_ID_TOKEN"  # noqa: S105 - a reason code; the token response carried no ID token
    NONCE_MISMATCH = "NONCE_MISMATCH"
    AZP_MISMATCH = "AZP_MISMATCH"


class BrowserRefused(AuthError):
    """A browser sign-in is refused; `reason_code` is for the audit row."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or str(reason))
        self.reason_code = str(reason)


@dataclass(frozen=True, slots=True)
class BrowserClient:
    """One tenant's relying-party settings (module docstring)."""

    issuer: str
    client_id: str
    jwks_uri: str
    client_secret: str | None = field(default=None, repr=False)
    algorithms: tuple[str, ...] = _DEFAULT_ALGORITHMS
    display_name: str | None = None

    def provider(self) -> OidcProvider:
        """The verification settings of this client's ID tokens: the audience is the client id."""
        return OidcProvider(
            issuer=self.issuer, audience=self.client_id, jwks_uri=self.jwks_uri, allowed_algorithms=self.algorithms
        )


def browser_client(value: object, client_secret: object = None) -> BrowserClient:
    """The relying-party settings from the `auth.oidc` entry and the opened client secret, or
    ConfigurationError."""
    if not isinstance(value, Mapping):
        raise ConfigurationError("auth.oidc must be a JSON object")
    issuer, audience, jwks_uri = (value.get(name) for name in ("issuer", "audience", "jwks_uri"))
    client_id = value.get("client_id", audience)
    for name, item in (("issuer", issuer), ("client_id", client_id), ("jwks_uri", jwks_uri)):
        if not isinstance(item, str) or not item:
            raise ConfigurationError(f"auth.oidc needs a string {name}")
    algorithms = value.get("algorithms", list(_DEFAULT_ALGORITHMS))
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise ConfigurationError("auth.oidc algorithms must be a list of algorithm names")
    if client_secret is not None and (not isinstance(client_secret, str) or not client_secret):
        raise ConfigurationError("auth.oidc.client_secret must be a non-empty string")
    display = value.get("display_name")
    display_name = display.strip()[:_MAX_DISPLAY_NAME] if isinstance(display, str) and display.strip() else None
    client = BrowserClient(
        issuer=str(issuer),
        client_id=str(client_id),
        jwks_uri=str(jwks_uri),
        client_secret=client_secret,
        algorithms=tuple(algorithms),
        display_name=display_name,
    )
    client.provider()  # the same checks as for bearer tokens (algorithms, non-empty values)
    return client


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """What discovery told us: the endpoints of the issuer the tenant configured."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """One started sign-in: `state` (the callback must echo it), `nonce` (the ID token must carry
    it) and the PKCE `code_verifier` (the token endpoint must receive it)."""

    state: str
    nonce: str
    code_verifier: str

    @classmethod
    def new(cls) -> PendingSignIn:
        # RFC 7636: a verifier of 43 to 128 unreserved characters; authlib's tokens are [A-Za-z0-9].
        return cls(state=generate_token(43), nonce=generate_token(43), code_verifier=generate_token(64))


def _aad(tenant_id: uuid.UUID) -> bytes:
    return f"oidc-browser-sign-in:{tenant_id}".encode()


def seal_pending(box: SecretBox, tenant_id: uuid.UUID, pending: PendingSignIn) -> str:
    """The pending sign-in as a cookie value: encrypted and bound to the tenant."""
    plain = json.dumps({"s": pending.state, "n": pending.nonce, "v": pending.code_verifier}).encode()
    return box.encrypt(plain, _aad(tenant_id))


def open_pending(box: SecretBox, tenant_id: uuid.UUID, sealed: str | None) -> PendingSignIn | None:
    """The pending sign-in a cookie holds, or None when it is absent, tampered with or another tenant's."""
    if not sealed or len(sealed) > 4096:
        return None
    try:
        values = json.loads(box.decrypt(sealed, _aad(tenant_id)))
    except Exception:  # any failure to open (wrong key, tenant, tampering, not JSON) means "no cookie"
        return None
    if not isinstance(values, dict) or not all(isinstance(values.get(k), str) and values[k] for k in "snv"):
        return None
    return PendingSignIn(state=values["s"], nonce=values["n"], code_verifier=values["v"])


def _state_id(state: str) -> str:
    return _STATE_PREFIX + hashlib.sha256(state.encode()).hexdigest()


async def issue_state(store: DbSamlStateStore, state: str) -> None:
    """Record the state server-side for STATE_TTL_SECONDS (only its hash is stored)."""
    await store.issue_request(_state_id(state), timedelta(seconds=STATE_TTL_SECONDS))


async def consume_state(store: DbSamlStateStore, subdomain: str, state: str) -> bool:
    """True for the first use of an issued, unexpired state; False ever after."""
    return await store.consume_request_id(subdomain, _state_id(state))


# --- the provider --------------------------------------------------------------------------------


class _FetchError(Exception):
    pass


@dataclass(slots=True)
class _CachedMetadata:
    metadata: ProviderMetadata
    fetched_at: float


class OidcBrowser:
    """The relying party's outbound side, shared by all tenants of one process (see the module).

    Every request goes through the outbound guard (auth/outbound.py): discovery with
    `OutboundPolicy.fetch`, the token endpoint through Authlib's client on the guard's transport.
    """

    def __init__(self, outbound: OutboundPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._outbound = outbound
        self._clock = clock
        self._metadata: dict[str, _CachedMetadata] = {}

    async def metadata(self, client: BrowserClient) -> ProviderMetadata:
        """The issuer's endpoints (discovery, cached); BrowserRefused(PROVIDER_UNAVAILABLE) otherwise."""
        cached = self._metadata.get(client.issuer)
        if cached is not None and self._clock() - cached.fetched_at < _METADATA_TTL:
            return cached.metadata
        url = client.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = await self._outbound.fetch(url, headers={"accept": "application/json"}, max_bytes=_MAX_BODY)
            if response.status_code != 200:
                raise _FetchError(f"HTTP status {response.status_code}")
            try:
                document = json.loads(response.content)
            except ValueError as exc:
                raise _FetchError("the document is not JSON") from exc
            metadata = _metadata_from(document, client.issuer)
            # The browser is sent to the one, the server posts the code to the other: both https
            # (or allow-listed), no credentials in them.
            self._outbound.check_url(metadata.authorization_endpoint)
            self._outbound.check_url(metadata.token_endpoint)
        except (_FetchError, httpx.HTTPError, TimeoutError) as exc:
            raise BrowserRefused(BrowserReason.PROVIDER_UNAVAILABLE, f"discovery: {exc}") from None
        self._metadata[client.issuer] = _CachedMetadata(metadata, self._clock())
        return metadata

    def _oauth(self, client: BrowserClient, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=client.client_id,
            client_secret=client.client_secret,
            # A confidential client authenticates with HTTP Basic; a public one sends its id only.
            token_endpoint_auth_method="client_secret_basic" if client.client_secret else "none",
            scope=_SCOPE,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            # The guard's transport checks the endpoint's every address; no redirects, no proxies;
            # the answer is read up to _MAX_BODY bytes.
            transport=_CappedTransport(self._outbound.transport(), _MAX_BODY),
            headers={"accept-encoding": "identity"},
            trust_env=False,
            follow_redirects=False,
            timeout=_FETCH_TIMEOUT,
        )

    async def authorization_url(
        self, client: BrowserClient, metadata: ProviderMetadata, redirect_uri: str, pending: PendingSignIn
    ) -> str:
        """Where to send the browser: the provider's authorization endpoint with state, nonce, PKCE."""
        async with self._oauth(client, redirect_uri) as oauth:
            url, _ = oauth.create_authorization_url(
                metadata.authorization_endpoint,
                state=pending.state,
                code_verifier=pending.code_verifier,
                nonce=pending.nonce,
            )
        return str(url)

    async def exchange(
        self, client: BrowserClient, metadata: ProviderMetadata, redirect_uri: str, code: str, pending: PendingSignIn
    ) -> str:
        """Redeem the code (with the PKCE verifier) for the ID token; BrowserRefused otherwise."""
        try:
            self._outbound.check_url(metadata.token_endpoint)
            async with self._oauth(client, redirect_uri) as oauth, asyncio.timeout(_FETCH_TIMEOUT):
                token = await oauth.fetch_token(
                    metadata.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=pending.code_verifier,
                    redirect_uri=redirect_uri,
                )
        except OAuthError as exc:  # the provider's own refusal (invalid_grant, invalid_client, ...)
            raise BrowserRefused(BrowserReason.CODE_REJECTED, f"token endpoint: {exc.error}") from None
        except (httpx.TransportError, TimeoutError) as exc:  # unreachable, refused by the guard, too slow or large
            raise BrowserRefused(
                BrowserReason.PROVIDER_UNAVAILABLE, f"token endpoint: {type(exc).__name__}: {exc}"
            ) from None
        except (httpx.HTTPError, ValueError) as exc:  # an HTTP error status, an answer that is not a token
            raise BrowserRefused(BrowserReason.CODE_REJECTED, f"token endpoint: {type(exc).__name__}") from None
        id_token = token.get("id_token") if isinstance(token, Mapping) else None
        if not isinstance(id_token, str) or not id_token:
            raise BrowserRefused(BrowserReason.NO_ID_TOKEN)
        return id_token


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, limit: int) -> None:
        self._stream = stream
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._stream:
            seen += len(chunk)
            if seen > self._limit:
                raise OutboundRefused(RefusalReason.TOO_LARGE, f"the answer is larger than {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


class _CappedTransport(httpx.AsyncBaseTransport):
    """A transport whose answers stop at `limit` bytes and come uncompressed (Authlib reads the token
    answer whole)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        declared = response.headers.get("content-length", "")
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            # Asked for identity (`_oauth`): a compressed answer could inflate far past the limit.
            await response.aclose()
            raise OutboundRefused(RefusalReason.TOO_LARGE, "a compressed answer was not asked for")
        if declared.isdigit() and int(declared) > self._limit:
            await response.aclose()
            raise OutboundRefused(RefusalReason.TOO_LARGE, f"the answer is larger than {self._limit} bytes")
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self._limit),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def _metadata_from(document: object, issuer: str) -> ProviderMetadata:
    if not isinstance(document, dict):
        raise _FetchError("discovery document is not a JSON object")
    if document.get("issuer") != issuer:
        # OpenID Connect Discovery 1.0 section 4.3: a document for another issuer is not this one's.
        raise _FetchError("discovery document names another issuer")
    endpoints = {name: document.get(name) for name in ("authorization_endpoint", "token_endpoint")}
    if not all(isinstance(value, str) and value for value in endpoints.values()):
        raise _FetchError("discovery document lacks the authorization or token endpoint")
    methods = document.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise _FetchError("the provider does not support PKCE with S256")
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=str(endpoints["authorization_endpoint"]),
        token_endpoint=str(endpoints["token_endpoint"]),
    )


async def verify_id_token(
    id_token: str, client: BrowserClient, jwks: JwksCache, pending: PendingSignIn, *, now: float
) -> VerifiedToken:
    """The verified ID token (module docstring). Raises auth.exceptions.TokenRejected (signature, issuer, audience,
    times, JwksUnavailable) or BrowserRefused (nonce, azp)."""
    verified = await verify_access_token(id_token, client.provider(), jwks, now=now)
    nonce = verified.claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), pending.nonce.encode()):
        raise BrowserRefused(BrowserReason.NONCE_MISMATCH)
    azp = verified.claims.get("azp")
    if azp is not None and azp != client.client_id:
        raise BrowserRefused(BrowserReason.AZP_MISMATCH)
    return verified
