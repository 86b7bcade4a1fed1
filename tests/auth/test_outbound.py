"""The outbound guard (auth/outbound.py): static URL rules, every resolved address checked with the
resolver stubbed, the connection made to the checked address (TLS still verified against the name),
every redirect hop checked, size and time bounded.

Network traffic goes to 127.0.0.1 only: refusals are shown with loopback addresses that are not on
the allow-list, and names resolve through an injected resolver (no DNS is asked).
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from auth.outbound import OutboundPolicy, OutboundRefused, RefusalReason, parse_allow_list
from server.settings import Settings, SettingsError


class StubResolver:
    """Answers from a table and counts the questions: nothing reaches DNS."""

    def __init__(self, answers: dict[str, Sequence[str]]) -> None:
        self.answers = answers
        self.calls: Counter[str] = Counter()

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls[host] += 1
        if host not in self.answers:
            raise OSError(f"{host}: no such name")
        return self.answers[host]


class Upstream:
    """A small Starlette app on a real uvicorn (127.0.0.1, background thread), optionally over TLS."""

    def __init__(self, certfile: Path | None = None, keyfile: Path | None = None) -> None:
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []
        app = Starlette(
            routes=[
                Route("/doc", self._doc, methods=["GET", "POST"]),
                Route("/redirect", self._redirect),
                Route("/loop", self._loop),
                Route("/big", self._big),
                Route("/slow", self._slow),
            ]
        )
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan="off",
            ws="none",
            http="h11",
            log_level="warning",
            ssl_certfile=str(certfile) if certfile else None,
            ssl_keyfile=str(keyfile) if keyfile else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="outbound-upstream", daemon=True
        )

    async def _doc(self, request: Request) -> Response:
        self.hits["/doc"] += 1
        self.hosts.append(request.headers.get("host", ""))
        return JSONResponse({"ok": True, "method": request.method})

    async def _redirect(self, request: Request) -> Response:
        self.hits["/redirect"] += 1
        return RedirectResponse(request.query_params["to"], status_code=int(request.query_params.get("status", "302")))

    async def _loop(self, request: Request) -> Response:
        self.hits["/loop"] += 1
        return RedirectResponse("/loop", status_code=302)

    async def _big(self, request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield b"x" * 1024

        return StreamingResponse(chunks(), media_type="application/octet-stream")  # no Content-Length

    async def _slow(self, request: Request) -> Response:
        await asyncio.sleep(2)
        return JSONResponse({"late": True})

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("upstream test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _reset(upstream: Upstream) -> None:
    upstream.hits.clear()
    upstream.hosts.clear()


def policy(allow: str = "", answers: dict[str, Sequence[str]] | None = None, **kwargs: object) -> OutboundPolicy:
    return OutboundPolicy.from_setting(allow, resolver=StubResolver(answers or {}), **kwargs)


# --- the allow-list setting -------------------------------------------------------------------------


def test_allow_list_entries_are_host_port_pairs() -> None:
    assert parse_allow_list(" IdP.Internal:443, 127.0.0.1:8443,[::0001]:9000 ,") == {
        ("idp.internal", 443),
        ("127.0.0.1", 8443),
        ("::1", 9000),
    }
    assert parse_allow_list(None) == frozenset()


@pytest.mark.parametrize(
    "entry", ["idp.internal", "idp.internal:", ":443", "idp:0", "idp:65536", "idp:https", "::1:443"]
)
def test_malformed_allow_list_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_allow_list(entry)
    with pytest.raises(SettingsError, match="GWM_OUTBOUND_ALLOW"):
        Settings.from_env({"GWM_OUTBOUND_ALLOW": entry})


def test_allow_list_setting_is_read_from_the_environment() -> None:
    assert Settings.from_env({"GWM_OUTBOUND_ALLOW": "idp.internal:443"}).outbound_allow == "idp.internal:443"
    assert Settings.from_env({}).outbound_allow is None


# --- static rules (what a tenant's settings are checked against when saved) -------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("not a url at all", RefusalReason.SCHEME),
        ("ftp://idp.example.com/", RefusalReason.SCHEME),
        ("http://idp.example.com/", RefusalReason.SCHEME),
        ("https:///path-only", RefusalReason.NO_HOST),
        ("https://user:pw@idp.example.com/", RefusalReason.CREDENTIALS),
        ("https://127.0.0.1/", RefusalReason.ADDRESS_NOT_ALLOWED),
        ("https://127.0.0.1:8443/", RefusalReason.ADDRESS_NOT_ALLOWED),  # listed at another port only
        ("https://[::1]/", RefusalReason.ADDRESS_NOT_ALLOWED),
        ("https://[::ffff:127.0.0.1]/", RefusalReason.ADDRESS_NOT_ALLOWED),
        ("https://169.254.169.254/latest/meta-data/", RefusalReason.ADDRESS_NOT_ALLOWED),
        ("https://10.0.0.8/", RefusalReason.ADDRESS_NOT_ALLOWED),
        ("https://100.64.0.1/", RefusalReason.ADDRESS_NOT_ALLOWED),
        ("https://0.0.0.0/", RefusalReason.ADDRESS_NOT_ALLOWED),
        ("https://localhost/", RefusalReason.ADDRESS_NOT_ALLOWED),
        ("https://idp.localhost/", RefusalReason.ADDRESS_NOT_ALLOWED),
    ],
)
def test_static_rules_refuse(url: str, reason: RefusalReason) -> None:
    with pytest.raises(OutboundRefused) as info:
        policy("127.0.0.1:9443").check_url(url)
    assert info.value.reason == reason
    assert isinstance(info.value, httpx.TransportError)  # transport-failure handlers fail closed on it


def test_static_rules_accept_public_https_and_listed_destinations() -> None:
    guard = policy("127.0.0.1:9443,idp.internal:8080")
    assert guard.check_url("https://login.example.com/realms/a").host == "login.example.com"
    assert guard.check_url("https://93.184.216.34/").host == "93.184.216.34"
    assert guard.check_url("https://127.0.0.1:9443/jwks").port == 9443
    assert guard.check_url("http://IDP.internal:8080/").host == "idp.internal"  # http only when listed
    assert guard.check_url("https://bücher.example/").raw_host == b"xn--bcher-kva.example"


async def test_names_are_matched_and_resolved_as_they_go_on_the_wire() -> None:
    resolver = StubResolver({"xn--bcher-kva.example": ["10.0.0.9"]})
    guard = OutboundPolicy.from_setting("xn--bcher-kva.example:443", resolver=resolver)
    assert guard.check_url("https://bücher.example/").port is None  # listed under its punycode form
    assert await guard.resolve_checked("xn--bcher-kva.example", 443) == ["10.0.0.9"]


# --- addresses: resolved once, every one checked ----------------------------------------------------


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["93.184.216.34", "127.0.0.1"],  # one bad answer among good ones refuses the name
        ["::1"],
        ["::ffff:127.0.0.1"],
        ["fe80::1%eth0"],
        ["169.254.169.254"],
        ["192.168.1.10"],
        ["fd00::1"],
        ["224.0.0.251"],
        ["2002:7f00:1::1"],  # 6to4 wrapping 127.0.0.1
        ["64:ff9b::7f00:1"],  # NAT64 of 127.0.0.1
        ["100.64.0.1"],  # shared address space (carrier-grade NAT)
    ],
)
async def test_a_name_resolving_to_a_non_global_address_is_refused(addresses: list[str]) -> None:
    guard = policy(answers={"idp.example.com": addresses})
    with pytest.raises(OutboundRefused) as info:
        await guard.resolve_checked("idp.example.com", 443)
    assert info.value.reason == RefusalReason.ADDRESS_NOT_ALLOWED
    assert "not on the outbound allow-list" in str(info.value)


async def test_a_public_name_is_resolved_once_and_its_addresses_returned() -> None:
    resolver = StubResolver({"idp.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})
    guard = OutboundPolicy(resolver=resolver)
    assert await guard.resolve_checked("IDP.example.com.", 443) == ["93.184.216.34", "2606:2800:220:1::1"]
    assert resolver.calls == Counter({"idp.example.com": 1})


async def test_a_slow_lookup_is_bounded_by_the_connect_timeout() -> None:
    async def stalling(host: str, port: int) -> Sequence[str]:
        await asyncio.sleep(5)
        return ["93.184.216.34"]

    guard = OutboundPolicy(resolver=stalling)
    started = time.monotonic()
    async with guard.client(timeout=httpx.Timeout(5.0, connect=0.2)) as client:
        with pytest.raises(httpx.ConnectTimeout):
            await client.get("https://idp.example.com/jwks")
    assert time.monotonic() - started < 2


async def test_an_unresolvable_name_is_refused() -> None:
    guard = policy(answers={"empty.example.com": []})
    for name in ("nowhere.example.com", "empty.example.com"):
        with pytest.raises(OutboundRefused) as info:
            await guard.resolve_checked(name, 443)
        assert info.value.reason == RefusalReason.UNRESOLVABLE


async def test_a_listed_name_may_resolve_to_a_private_address() -> None:
    guard = policy("idp.internal:443", {"idp.internal": ["10.1.2.3"]})
    assert await guard.resolve_checked("idp.internal", 443) == ["10.1.2.3"]
    with pytest.raises(OutboundRefused):
        await guard.resolve_checked("idp.internal", 8443)  # the list names host AND port


# --- real exchanges with 127.0.0.1 ------------------------------------------------------------------


async def test_the_connection_goes_to_the_checked_address_under_the_name(upstream: Upstream) -> None:
    resolver = StubResolver({"idp.test": ["127.0.0.1"]})
    guard = OutboundPolicy.from_setting(f"idp.test:{upstream.port}", resolver=resolver)
    response = await guard.fetch(f"http://idp.test:{upstream.port}/doc")
    assert response.status_code == 200 and response.content == b'{"ok":true,"method":"GET"}'
    # idp.test exists only in the stub: the socket went to the address the guard checked, the Host
    # header still names the host, and the name was resolved exactly once.
    assert upstream.hosts == [f"idp.test:{upstream.port}"]
    assert resolver.calls == Counter({"idp.test": 1})


async def test_a_rebinding_name_is_refused_before_any_connection(upstream: Upstream) -> None:
    # The name an administrator saved passes the static rules; at fetch time it resolves to loopback.
    guard = policy(answers={"rebind.example.com": ["127.0.0.1"]})
    guard.check_url(f"https://rebind.example.com:{upstream.port}/doc")
    with pytest.raises(OutboundRefused) as info:
        await guard.fetch(f"https://rebind.example.com:{upstream.port}/doc")
    assert info.value.reason == RefusalReason.ADDRESS_NOT_ALLOWED
    assert upstream.hits["/doc"] == 0


async def test_loopback_not_on_the_list_is_refused_before_any_connection(upstream: Upstream) -> None:
    for url in (f"http://127.0.0.1:{upstream.port}/doc", f"https://127.0.0.1:{upstream.port}/doc"):
        with pytest.raises(OutboundRefused) as info:
            await policy(f"127.0.0.1:{upstream.port + 1}").fetch(url)
        assert info.value.reason in (RefusalReason.SCHEME, RefusalReason.ADDRESS_NOT_ALLOWED)
    assert upstream.hits["/doc"] == 0


async def test_redirects_are_followed_and_every_hop_checked(upstream: Upstream) -> None:
    port = upstream.port
    guard = policy(f"127.0.0.1:{port}", {"inside.test": ["127.0.0.1"]})
    followed = await guard.fetch(f"http://127.0.0.1:{port}/redirect?to=/doc")
    assert followed.status_code == 200 and followed.url == f"http://127.0.0.1:{port}/doc"

    hops = {
        f"http://127.0.0.2:{port}/doc": RefusalReason.SCHEME,  # another loopback address, not listed
        f"https://127.0.0.2:{port}/doc": RefusalReason.ADDRESS_NOT_ALLOWED,
        f"https://inside.test:{port}/doc": RefusalReason.ADDRESS_NOT_ALLOWED,  # a name resolving to loopback
        "https://user:pw@example.com/": RefusalReason.CREDENTIALS,
        "file:///etc/passwd": RefusalReason.SCHEME,
    }
    for target, reason in hops.items():
        with pytest.raises(OutboundRefused) as info:
            await guard.fetch(str(httpx.URL(f"http://127.0.0.1:{port}/redirect", params={"to": target})))
        assert info.value.reason == reason, target
    assert upstream.hits["/doc"] == 1  # only the allowed hop arrived


async def test_a_redirect_loop_stops(upstream: Upstream) -> None:
    with pytest.raises(OutboundRefused) as info:
        await policy(f"127.0.0.1:{upstream.port}", max_redirects=3).fetch(f"http://127.0.0.1:{upstream.port}/loop")
    assert info.value.reason == RefusalReason.TOO_MANY_REDIRECTS
    assert upstream.hits["/loop"] == 4


async def test_the_body_is_bounded(upstream: Upstream) -> None:
    guard = policy(f"127.0.0.1:{upstream.port}", max_bytes=16 * 1024)
    with pytest.raises(OutboundRefused) as info:
        await guard.fetch(f"http://127.0.0.1:{upstream.port}/big")
    assert info.value.reason == RefusalReason.TOO_LARGE
    assert len((await guard.fetch(f"http://127.0.0.1:{upstream.port}/big", max_bytes=64 * 1024)).content) == 65536


async def test_the_exchange_is_bounded_in_time(upstream: Upstream) -> None:
    started = time.monotonic()
    with pytest.raises(OutboundRefused) as info:
        await policy(f"127.0.0.1:{upstream.port}", timeout_seconds=0.3).fetch(f"http://127.0.0.1:{upstream.port}/slow")
    assert info.value.reason == RefusalReason.TIMEOUT
    assert time.monotonic() - started < 1.5


async def test_any_httpx_client_on_the_guarded_transport_is_checked(upstream: Upstream) -> None:
    # What a library client (Authlib's token request) gets: the policy's client or transport.
    port = upstream.port
    async with policy(f"127.0.0.1:{port}").client() as client:
        assert (await client.post(f"http://127.0.0.1:{port}/doc")).json() == {"ok": True, "method": "POST"}
        moved = await client.get(f"http://127.0.0.1:{port}/redirect", params={"to": f"https://127.0.0.2:{port}/doc"})
        assert moved.status_code == 302  # the client does not follow by default ...
        with pytest.raises(OutboundRefused):  # ... and a hop it is told to follow is checked
            await client.get(
                f"http://127.0.0.1:{port}/redirect",
                params={"to": f"https://127.0.0.2:{port}/doc"},
                follow_redirects=True,
            )
    async with httpx.AsyncClient(transport=policy().transport()) as plain:
        with pytest.raises(OutboundRefused):
            await plain.post(f"http://127.0.0.1:{port}/doc")
    assert upstream.hits["/doc"] == 1


# --- TLS: the certificate is verified against the name while the socket goes to the address ---------


def _certificate(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp / "cert.pem", tmp / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certfile, keyfile


async def test_tls_is_verified_against_the_name_not_the_address(tmp_path: Path) -> None:
    certfile, keyfile = _certificate(tmp_path, "idp.test")
    server = Upstream(certfile, keyfile)
    server.start()
    try:
        trust = ssl.create_default_context(cafile=str(certfile))
        guard = OutboundPolicy.from_setting(
            f"idp.test:{server.port},other.test:{server.port}",
            resolver=StubResolver({"idp.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}),
        )
        async with guard.client(verify=trust) as client:
            response = await guard.fetch(f"https://idp.test:{server.port}/doc", client=client)
            assert response.status_code == 200
            # Same address, another name: the certificate does not cover it, so TLS fails.
            with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|hostname"):
                await guard.fetch(f"https://other.test:{server.port}/doc", client=client)
        assert server.hosts == [f"idp.test:{server.port}"]
    finally:
        server.stop()
