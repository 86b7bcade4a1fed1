"""OIDC access-token verification against a test issuer: keys made here, JWKS served by a real uvicorn
on 127.0.0.1, tokens (good and malicious) encoded by a small helper independent of the library."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from auth.exceptions import AuthError, ConfigurationError, JwksUnavailable, TokenRejected
from auth.oidc import JwksCache, OidcProvider, RejectReason, issuer_of, verify_access_token
from auth.outbound import OutboundPolicy

ISSUER = "https://idp.example.test/realms/acme"
AUDIENCE = "api://gwm-crm"

# --- keys and JWKs ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int, length: int | None = None) -> str:
    return _b64(value.to_bytes(length or (value.bit_length() + 7) // 8, "big"))


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "n": _uint(numbers.n), "e": _uint(numbers.e), **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "kid": kid,
        "crv": "P-256",
        "x": _uint(numbers.x, 32),
        "y": _uint(numbers.y, 32),
        **extra,
    }


@dataclass(frozen=True)
class Keys:
    rsa: RSAPrivateKey
    ec: EllipticCurvePrivateKey
    other_rsa: RSAPrivateKey  # the attacker's, or the next one after a rotation
    rsa_kid: str = "rsa-1"
    ec_kid: str = "ec-1"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [rsa_jwk(self.rsa, self.rsa_kid), ec_jwk(self.ec, self.ec_kid)]}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        other_rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


# --- a JWT encoder that will also produce what a careful library refuses to ------------------------


def encode(
    header: dict[str, Any], claims: dict[str, Any] | str, key: object = None, *, sign_as: str | None = None
) -> str:
    """A compact JWS signed with `sign_as` (default: the header's alg), whatever the header says."""
    payload = claims if isinstance(claims, str) else json.dumps(claims)
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(payload.encode())}".encode()
    alg = sign_as or header.get("alg")
    if alg == "none":
        signature = b""
    elif alg == "HS256":
        assert isinstance(key, bytes)
        signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    elif alg == "RS256":
        assert isinstance(key, rsa.RSAPrivateKey)
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        raise AssertionError(alg)
    return f"{signing_input.decode()}.{_b64(signature)}"


DROP = object()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-123",
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "email": "ada@example.test",
        "email_verified": True,
        "amr": ["pwd", "otp"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def rs256(keys: Keys, kid: str | None = None, **overrides: Any) -> str:
    return encode({"alg": "RS256", "typ": "JWT", "kid": kid or keys.rsa_kid}, claims(**overrides), keys.rsa)


# --- the JWKS server --------------------------------------------------------------------------------


class JwksServer:
    """A Starlette app on a real uvicorn in a background thread; counts the requests per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.document: dict[str, Any] = {"keys": []}
        self.status = 200
        self.body: bytes | None = None  # served instead of the document when set
        self.delay = 0.0
        app = Starlette(
            routes=[
                Route("/jwks", self._jwks),
                Route("/redirect", self._redirect),
                Route("/attacker/jwks", self._attacker),
            ]
        )
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, lifespan="off", ws="none", http="h11", log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="jwks-server", daemon=True
        )

    @property
    def allow(self) -> OutboundPolicy:
        """An outbound policy with this server (and nothing else) on the allow-list."""
        return OutboundPolicy.from_setting(self.base_url.removeprefix("http://"))

    def reset(self, document: dict[str, Any]) -> None:
        self.hits.clear()
        self.document, self.status, self.body, self.delay = document, 200, None, 0.0

    @property
    def requests(self) -> int:
        return self.hits["/jwks"]

    async def _jwks(self, request: Request) -> Response:
        self.hits[request.url.path] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.body is not None:
            return Response(self.body, status_code=self.status, media_type="application/json")
        return JSONResponse(self.document, status_code=self.status)

    async def _redirect(self, request: Request) -> Response:
        self.hits[request.url.path] += 1
        return RedirectResponse(request.query_params.get("to", "/jwks"), status_code=302)

    async def _attacker(self, request: Request) -> Response:
        self.hits[request.url.path] += 1
        return JSONResponse({"keys": []})

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("JWKS test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
        assert not self._thread.is_alive(), "JWKS test server did not stop"


@pytest.fixture(scope="module")
def _jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(_jwks_server: JwksServer, keys: Keys) -> JwksServer:
    _jwks_server.reset(keys.jwks())
    return _jwks_server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(server: JwksServer) -> OidcProvider:
    return OidcProvider(issuer=ISSUER, audience=AUDIENCE, jwks_uri=f"{server.base_url}/jwks")


@pytest.fixture
async def jwks(clock: FakeClock, server: JwksServer) -> AsyncIterator[JwksCache]:
    async with JwksCache(outbound=server.allow, clock=clock) as cache:
        yield cache


async def rejected(token: str, provider: OidcProvider, jwks: JwksCache) -> str:
    with pytest.raises(TokenRejected) as info:
        await verify_access_token(token, provider, jwks)
    assert isinstance(info.value, AuthError)
    return info.value.reason_code


# --- good tokens ------------------------------------------------------------------------------------


async def test_good_rs256_token_is_accepted(keys: Keys, provider: OidcProvider, jwks: JwksCache) -> None:
    exp = int(time.time()) + 300
    verified = await verify_access_token(rs256(keys, exp=exp), provider, jwks)
    assert (verified.issuer, verified.subject, verified.audience) == (ISSUER, "user-123", AUDIENCE)
    assert verified.amr == ("pwd", "otp")
    assert (verified.email, verified.email_verified) == ("ada@example.test", True)
    assert verified.expires_at == datetime.fromtimestamp(exp, UTC)
    assert verified.claims["sub"] == "user-123"


async def test_good_es256_token_is_accepted(keys: Keys, provider: OidcProvider, jwks: JwksCache) -> None:
    token = encode({"alg": "ES256", "kid": keys.ec_kid}, claims(sub="user-ec"), keys.ec)
    assert (await verify_access_token(token, provider, jwks)).subject == "user-ec"


async def test_audience_list_containing_ours_is_accepted_and_leeway_applies(
    keys: Keys, provider: OidcProvider, jwks: JwksCache
) -> None:
    now = int(time.time())
    token = rs256(keys, aud=["other-api", AUDIENCE], exp=now - 30, nbf=now + 30, iat=now + 30)
    assert (await verify_access_token(token, provider, jwks)).audience == AUDIENCE


async def test_email_verified_counts_only_as_json_true(
    keys: Keys, provider: OidcProvider, jwks: JwksCache
) -> None:
    for value in ("true", 1, DROP):
        verified = await verify_access_token(rs256(keys, email_verified=value), provider, jwks)
        assert verified.email_verified is False, value
    assert (await verify_access_token(rs256(keys, amr="pwd"), provider, jwks)).amr == ()


# --- refused tokens ---------------------------------------------------------------------------------

TokenFactory = Callable[[Keys, JwksServer], str]


def _public_pem(keys: Keys) -> bytes:
    return keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _tampered(keys: Keys, _: JwksServer) -> str:
    header, _payload, signature = rs256(keys).split(".")
    return ".".join([header, _b64(json.dumps(claims(sub="admin")).encode()), signature])


REFUSED: dict[str, tuple[TokenFactory, RejectReason]] = {
    "alg none": (
        lambda k, _: encode({"alg": "none", "kid": k.rsa_kid}, claims()),
        RejectReason.ALG_NOT_ALLOWED,
    ),
    "alg NONE": (
        lambda k, _: encode({"alg": "NONE", "kid": k.rsa_kid}, claims(), sign_as="none"),
        RejectReason.ALG_NOT_ALLOWED,
    ),
    "HS256 keyed with the RSA public key PEM": (
        lambda k, _: encode({"alg": "HS256", "kid": k.rsa_kid}, claims(), _public_pem(k)),
        RejectReason.ALG_NOT_ALLOWED,
    ),
    "alg missing": (
        lambda k, _: encode({"kid": k.rsa_kid}, claims(), k.rsa, sign_as="RS256"),
        RejectReason.ALG_NOT_ALLOWED,
    ),
    "RS512, supported but not pinned": (
        lambda k, _: encode({"alg": "RS512", "kid": k.rsa_kid}, claims(), k.rsa, sign_as="RS256"),
        RejectReason.ALG_NOT_ALLOWED,
    ),
    "wrong aud": (lambda k, _: rs256(k, aud="api://someone-else"), RejectReason.WRONG_AUDIENCE),
    "aud list without ours": (lambda k, _: rs256(k, aud=["a", "b"]), RejectReason.WRONG_AUDIENCE),
    "wrong iss": (lambda k, _: rs256(k, iss="https://evil.example.test/"), RejectReason.WRONG_ISSUER),
    "iss differs by a trailing slash": (lambda k, _: rs256(k, iss=ISSUER + "/"), RejectReason.WRONG_ISSUER),
    "expired beyond leeway": (lambda k, _: rs256(k, exp=int(time.time()) - 61), RejectReason.EXPIRED),
    "nbf in the future": (lambda k, _: rs256(k, nbf=int(time.time()) + 3600), RejectReason.NOT_YET_VALID),
    "iat in the future": (lambda k, _: rs256(k, iat=int(time.time()) + 3600), RejectReason.NOT_YET_VALID),
    "missing exp": (lambda k, _: rs256(k, exp=DROP), RejectReason.MISSING_CLAIM),
    "missing sub": (lambda k, _: rs256(k, sub=DROP), RejectReason.MISSING_CLAIM),
    "missing iss": (lambda k, _: rs256(k, iss=DROP), RejectReason.MISSING_CLAIM),
    "missing aud": (lambda k, _: rs256(k, aud=DROP), RejectReason.MISSING_CLAIM),
    "exp NaN": (lambda k, _: rs256(k, exp=float("nan")), RejectReason.MALFORMED),
    "exp as string": (lambda k, _: rs256(k, exp=str(int(time.time()) + 300)), RejectReason.MALFORMED),
    "exp as bool": (lambda k, _: rs256(k, exp=True), RejectReason.MALFORMED),
    "empty sub": (lambda k, _: rs256(k, sub=""), RejectReason.MALFORMED),
    "embedded jwk header (attacker key)": (
        lambda k, _: encode(
            {"alg": "RS256", "kid": k.rsa_kid, "jwk": rsa_jwk(k.other_rsa, k.rsa_kid)}, claims(), k.other_rsa
        ),
        RejectReason.KEY_REFERENCE_HEADER,
    ),
    "jku header": (
        lambda k, s: encode(
            {"alg": "RS256", "kid": "attacker", "jku": f"{s.base_url}/attacker/jwks"}, claims(), k.other_rsa
        ),
        RejectReason.KEY_REFERENCE_HEADER,
    ),
    "x5u header": (
        lambda k, s: encode({"alg": "RS256", "kid": k.rsa_kid, "x5u": f"{s.base_url}/x"}, claims(), k.rsa),
        RejectReason.KEY_REFERENCE_HEADER,
    ),
    "x5c header": (
        lambda k, _: encode({"alg": "RS256", "kid": k.rsa_kid, "x5c": ["MIIB"]}, claims(), k.rsa),
        RejectReason.KEY_REFERENCE_HEADER,
    ),
    "crit header": (
        lambda k, _: encode({"alg": "RS256", "kid": k.rsa_kid, "crit": ["exp"], "exp": 1}, claims(), k.rsa),
        RejectReason.UNSUPPORTED_HEADER,
    ),
    "missing kid": (lambda k, _: encode({"alg": "RS256"}, claims(), k.rsa), RejectReason.MISSING_KID),
    "unknown kid": (lambda k, _: rs256(k, kid="no-such-kid"), RejectReason.UNKNOWN_KID),
    "another key under a known kid": (
        lambda k, _: encode({"alg": "RS256", "kid": k.rsa_kid}, claims(), k.other_rsa),
        RejectReason.BAD_SIGNATURE,
    ),
    "payload changed after signing": (_tampered, RejectReason.BAD_SIGNATURE),
    "signature stripped": (lambda k, _: rs256(k).rsplit(".", 1)[0] + ".", RejectReason.BAD_SIGNATURE),
    "EC key's kid with RS256": (
        lambda k, _: encode({"alg": "RS256", "kid": k.ec_kid}, claims(), k.rsa),
        RejectReason.KEY_ALG_MISMATCH,
    ),
    "RSA key's kid with ES256": (
        lambda k, _: encode({"alg": "ES256", "kid": k.rsa_kid}, claims(), k.ec),
        RejectReason.KEY_ALG_MISMATCH,
    ),
    "duplicate claim member": (
        lambda k, _: encode(
            {"alg": "RS256", "kid": k.rsa_kid},
            json.dumps(claims())[:-1] + f', "sub": "admin", "sub": "{uuid.uuid4()}"}}',
            k.rsa,
        ),
        RejectReason.MALFORMED,
    ),
    "empty string": (lambda k, _: "", RejectReason.MALFORMED),
    "not a JWT": (lambda k, _: "not-a-jwt", RejectReason.MALFORMED),
    "two segments": (lambda k, _: ".".join(rs256(k).split(".")[:2]), RejectReason.MALFORMED),
    "four segments": (lambda k, _: rs256(k) + ".x", RejectReason.MALFORMED),
    "header not JSON": (
        lambda k, _: _b64(b"{nope") + "." + rs256(k).split(".", 1)[1],
        RejectReason.MALFORMED,
    ),
    "header a JSON array": (
        lambda k, _: _b64(b"[]") + "." + rs256(k).split(".", 1)[1],
        RejectReason.MALFORMED,
    ),
    "non-base64url characters": (lambda k, _: "eyJ+/=." + rs256(k).split(".", 1)[1], RejectReason.MALFORMED),
    "oversized": (lambda k, _: rs256(k, padding="x" * 20_000), RejectReason.MALFORMED),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_token_is_refused(
    case: str, keys: Keys, server: JwksServer, provider: OidcProvider, jwks: JwksCache
) -> None:
    factory, reason = REFUSED[case]
    assert await rejected(factory(keys, server), provider, jwks) == reason
    assert server.hits["/attacker/jwks"] == 0  # a key URL named by a token is never fetched


def test_rejection_carries_the_code_but_no_token_material(keys: Keys) -> None:
    error = TokenRejected(RejectReason.BAD_SIGNATURE)
    assert error.reason_code == "BAD_SIGNATURE" and str(error) == "BAD_SIGNATURE"
    assert issubclass(JwksUnavailable, TokenRejected) and issubclass(TokenRejected, AuthError)


@pytest.mark.parametrize("algorithms", [("none",), ("HS256",), ("RS256", "HS512"), ("EdDSA",), ()])
def test_provider_refuses_symmetric_and_none_algorithms(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError):
        OidcProvider(
            issuer=ISSUER, audience=AUDIENCE, jwks_uri="https://x/jwks", allowed_algorithms=algorithms
        )


async def test_algorithm_outside_the_providers_pin_is_refused(
    keys: Keys, server: JwksServer, jwks: JwksCache
) -> None:
    rs_only = OidcProvider(
        issuer=ISSUER, audience=AUDIENCE, jwks_uri=f"{server.base_url}/jwks", allowed_algorithms=("RS256",)
    )
    token = encode({"alg": "ES256", "kid": keys.ec_kid}, claims(), keys.ec)
    assert await rejected(token, rs_only, jwks) == RejectReason.ALG_NOT_ALLOWED
    assert server.requests == 0  # refused from the header alone


def test_issuer_of_reads_only_the_unverified_iss(keys: Keys) -> None:
    assert issuer_of(rs256(keys)) == ISSUER
    assert issuer_of(encode({"alg": "none"}, claims(iss="https://anyone/"))) == "https://anyone/"
    for token in ("", "garbage", "a.b", rs256(keys, iss=42), rs256(keys, iss=DROP), "x" * 20_000):
        assert issuer_of(token) is None


# --- JWKS fetching and caching ----------------------------------------------------------------------


async def test_two_verifications_fetch_the_key_set_once(
    keys: Keys, server: JwksServer, provider: OidcProvider, jwks: JwksCache
) -> None:
    await verify_access_token(rs256(keys), provider, jwks)
    await verify_access_token(encode({"alg": "ES256", "kid": keys.ec_kid}, claims(), keys.ec), provider, jwks)
    assert server.requests == 1


async def test_key_set_is_refetched_after_its_ttl(
    keys: Keys, server: JwksServer, provider: OidcProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    await verify_access_token(rs256(keys), provider, jwks)
    clock.advance(provider.jwks_cache_ttl_seconds - 1)
    await verify_access_token(rs256(keys), provider, jwks)
    assert server.requests == 1
    clock.advance(2)
    await verify_access_token(rs256(keys), provider, jwks)
    assert server.requests == 2


async def test_unknown_kids_refetch_at_most_once_per_interval(
    keys: Keys, server: JwksServer, provider: OidcProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    await verify_access_token(rs256(keys), provider, jwks)
    assert server.requests == 1
    for _ in range(20):  # a flood of random kids right after the fetch: no refetch
        assert await rejected(rs256(keys, kid=uuid.uuid4().hex), provider, jwks) == RejectReason.UNKNOWN_KID
    assert server.requests == 1
    clock.advance(provider.jwks_min_refetch_seconds)
    for _ in range(20):
        assert await rejected(rs256(keys, kid=uuid.uuid4().hex), provider, jwks) == RejectReason.UNKNOWN_KID
    assert server.requests == 2
    # known kids keep working from the cache meanwhile
    await verify_access_token(rs256(keys), provider, jwks)
    assert server.requests == 2


async def test_concurrent_misses_share_one_fetch(
    keys: Keys, server: JwksServer, provider: OidcProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    server.delay = 0.2
    results = await asyncio.gather(*(verify_access_token(rs256(keys), provider, jwks) for _ in range(25)))
    assert len(results) == 25 and server.requests == 1
    clock.advance(provider.jwks_min_refetch_seconds)
    unknown = [rs256(keys, kid=uuid.uuid4().hex) for _ in range(25)]
    outcomes = await asyncio.gather(
        *(verify_access_token(t, provider, jwks) for t in unknown), return_exceptions=True
    )
    assert all(isinstance(o, TokenRejected) and o.reason_code == RejectReason.UNKNOWN_KID for o in outcomes)
    assert server.requests == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch(
    keys: Keys, server: JwksServer, provider: OidcProvider, jwks: JwksCache
) -> None:
    server.delay = 0.2
    first = asyncio.create_task(verify_access_token(rs256(keys), provider, jwks))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(verify_access_token(rs256(keys), provider, jwks))
    first.cancel()
    assert (await second).subject == "user-123"
    assert server.requests == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_rotated_key_is_picked_up_by_the_refetch(
    keys: Keys, server: JwksServer, provider: OidcProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    await verify_access_token(rs256(keys), provider, jwks)
    server.document = {"keys": [*keys.jwks()["keys"], rsa_jwk(keys.other_rsa, "rsa-2")]}
    clock.advance(provider.jwks_min_refetch_seconds)
    rotated = encode({"alg": "RS256", "kid": "rsa-2"}, claims(sub="rotated"), keys.other_rsa)
    assert (await verify_access_token(rotated, provider, jwks)).subject == "rotated"
    assert server.requests == 2
    # once the old key is withdrawn and the TTL passes, its tokens stop verifying
    server.document = {"keys": [rsa_jwk(keys.other_rsa, "rsa-2")]}
    clock.advance(provider.jwks_cache_ttl_seconds)
    assert await rejected(rs256(keys), provider, jwks) == RejectReason.UNKNOWN_KID


async def test_unusable_keys_in_the_set_are_ignored(
    keys: Keys, server: JwksServer, provider: OidcProvider, jwks: JwksCache
) -> None:
    # A key too short to trust, published by a misconfigured IdP: the verifier must drop it.
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    secret = _public_pem(keys)
    server.document = {
        "keys": [
            {"kty": "oct", "kid": "hmac", "k": _b64(secret)},
            rsa_jwk(small, "small"),
            rsa_jwk(keys.rsa, "for-encryption", use="enc"),
            rsa_jwk(keys.rsa, "no-verify", key_ops=["encrypt"]),
            rsa_jwk(keys.rsa, "twice"),
            rsa_jwk(keys.other_rsa, "twice"),
            rsa_jwk(keys.rsa, "pinned-ps256", alg="PS256"),
            {
                "kty": "EC",
                "kid": "bad-point",
                "crv": "P-256",
                "x": _b64(b"\x01" * 32),
                "y": _b64(b"\x02" * 32),
            },
            "not an object",
            rsa_jwk(keys.rsa, keys.rsa_kid),
        ]
    }
    assert await rejected(encode({"alg": "HS256", "kid": "hmac"}, claims(), secret), provider, jwks) == (
        RejectReason.ALG_NOT_ALLOWED
    )
    for kid in ("hmac", "small", "for-encryption", "no-verify", "twice", "bad-point"):
        token = encode({"alg": "RS256", "kid": kid}, claims(), small if kid == "small" else keys.rsa)
        assert await rejected(token, provider, jwks) == RejectReason.UNKNOWN_KID, kid
    pinned = encode({"alg": "RS256", "kid": "pinned-ps256"}, claims(), keys.rsa)
    assert await rejected(pinned, provider, jwks) == RejectReason.KEY_ALG_MISMATCH
    assert (await verify_access_token(rs256(keys), provider, jwks)).subject == "user-123"


@pytest.mark.parametrize(
    "setup",
    [
        "status 500",
        "not JSON",
        "no keys array",
        "larger than 1 MiB",
        "redirect off the allow-list",
        "not on the allow-list",
    ],
)
async def test_jwks_failures_fail_closed(
    setup: str, keys: Keys, server: JwksServer, clock: FakeClock, provider: OidcProvider
) -> None:
    uri, outbound = provider.jwks_uri, server.allow
    if setup == "status 500":
        server.status, server.body = 500, b"{}"
    elif setup == "not JSON":
        server.body = b"<html>"
    elif setup == "no keys array":
        server.body = b'{"keys": {}}'
    elif setup == "larger than 1 MiB":
        server.document = {"keys": keys.jwks()["keys"], "padding": "x" * (1024 * 1024)}
    elif setup == "redirect off the allow-list":
        # The same server under another loopback address: not on the list, so the hop is refused.
        port = server.base_url.rsplit(":", 1)[1]
        uri = f"{server.base_url}/redirect?to=http://127.0.0.2:{port}/jwks"
    else:
        outbound = OutboundPolicy()  # loopback and plain http, with nothing on the allow-list
    failing = OidcProvider(issuer=ISSUER, audience=AUDIENCE, jwks_uri=uri)
    async with JwksCache(outbound=outbound, clock=clock) as cache:
        with pytest.raises(JwksUnavailable) as info:
            await verify_access_token(rs256(keys), failing, cache)
    assert info.value.reason_code == RejectReason.JWKS_UNAVAILABLE
    assert server.requests == (0 if setup in {"not on the allow-list", "redirect off the allow-list"} else 1)


async def test_failed_fetch_is_not_retried_within_the_interval(
    keys: Keys, server: JwksServer, provider: OidcProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    server.status, server.body = 503, b"{}"
    for _ in range(5):
        with pytest.raises(JwksUnavailable):
            await verify_access_token(rs256(keys), provider, jwks)
    assert server.requests == 1
    server.status, server.body = 200, None
    clock.advance(provider.jwks_min_refetch_seconds)
    assert (await verify_access_token(rs256(keys), provider, jwks)).subject == "user-123"
    assert server.requests == 2
