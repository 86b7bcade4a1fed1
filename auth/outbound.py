"""The outbound guard: every request to a URL a tenant can set (an OpenID issuer, its discovery
document, JWKS and token endpoints; later the sync sources) goes through it.

What it enforces, in order:
1. Static rules, checkable when the URL is saved (`OutboundPolicy.check_url`): `https` (plain `http`
   only to a destination on the operator's allow-list), a host, no credentials in the URL, no IP
   literal or `localhost` name that is not global unless its `host:port` is on the allow-list.
2. At connect time (`GuardedTransport`, through httpcore's network backend): the host name is resolved
   ONCE, EVERY resolved address is checked (private, loopback, link-local, multicast, reserved and any
   other address `ipaddress` does not call global is refused unless the `host:port` is on the
   allow-list), and the TCP connection is made to a checked address. The name is never resolved a
   second time, so a DNS answer that changes between check and connection (rebinding) cannot steer
   the connection. TLS still uses the name: httpcore sends it as SNI and verifies the certificate
   against it, and the Host header is the name, because only the socket's address is substituted.
3. Every request goes through the transport, so every redirect hop is checked again (statically and
   at connect). `fetch` follows redirects itself (at most `max_redirects`), and bounds the body
   (`max_bytes`, counted after content decoding) and the whole exchange (`timeout_seconds`).

The allow-list (setting GWM_OUTBOUND_ALLOW) holds `host:port` entries, matched against the URL's host
as written (lower-cased) and its effective port; it is how an operator lets tenants reach an identity
provider on a private network, and how tests reach servers on 127.0.0.1.

Refusals raise `OutboundRefused` (an `httpx.TransportError`, so code that already handles transport
failures fails closed) with a stable `reason` code.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import httpcore
import httpx

__all__ = [
    "GuardedTransport",
    "OutboundPolicy",
    "OutboundRefused",
    "OutboundResponse",
    "RefusalReason",
    "Resolver",
    "parse_allow_list",
    "system_resolver",
]

# (host, port) -> every address the name resolves to, as strings. Injected in tests.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


class RefusalReason(StrEnum):
    """Why the guard refused. Stable strings: they appear in logs and in validation messages."""

    NOT_A_URL = "NOT_A_URL"
    SCHEME = "SCHEME"  # not https (or http to a destination not on the allow-list)
    CREDENTIALS = "CREDENTIALS"  # user:password@ in the URL
    NO_HOST = "NO_HOST"
    ADDRESS_NOT_ALLOWED = "ADDRESS_NOT_ALLOWED"  # a non-global address not on the allow-list
    UNRESOLVABLE = "UNRESOLVABLE"
    TOO_MANY_REDIRECTS = "TOO_MANY_REDIRECTS"
    BAD_REDIRECT = "BAD_REDIRECT"  # a redirect without a usable Location
    TOO_LARGE = "TOO_LARGE"
    TIMEOUT = "TIMEOUT"


class OutboundRefused(httpx.TransportError):
    """The guard refused a destination or a response. `reason` is a RefusalReason."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message


def parse_allow_list(value: str | None) -> frozenset[tuple[str, int]]:
    """`"idp.internal:443, 127.0.0.1:8443, [::1]:9000"` -> {(host, port)}. Raises ValueError."""
    entries: set[tuple[str, int]] = set()
    for raw in (value or "").split(","):
        item = raw.strip()
        if not item:
            continue
        host, sep, port_text = item.rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"outbound allow-list entry {item!r} is not host:port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if ":" in host:  # a bare IPv6 address must be bracketed: "::1:443" is ambiguous
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"outbound allow-list entry {item!r} is not host:port") from None
            if not raw.strip().startswith("["):
                raise ValueError(f"outbound allow-list entry {item!r}: write IPv6 addresses as [addr]:port, host:port")
        entries.add((_normal_host(host), int(port_text)))
    return frozenset(entries)


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))  # one spelling per address ("::0001" -> "::1")
    except ValueError:
        return host


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_public_address(address: IPAddress) -> bool:
    """True for an address a tenant-set URL may reach without being on the allow-list."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_public_address(mapped)
        if address.teredo is not None:
            return False
        if address in _NAT64:  # a NAT64 gateway would carry it on to the embedded IPv4 address
            return is_public_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    # is_global leaves out private, loopback, link-local, shared (100.64/10), reserved, documentation
    # and unspecified ranges; multicast is refused on top (some multicast ranges count as global).
    return address.is_global and not address.is_multicast


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """Every address the system resolver gives for host (A and AAAA), resolved once."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in seen:
            seen.append(address)
    return seen


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    """A bounded response: the final URL (after redirects), status, headers and the whole body."""

    url: str
    status_code: int
    headers: httpx.Headers
    content: bytes


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """The operator's outbound rules. One per process (server/app.py builds it from settings)."""

    allow: frozenset[tuple[str, int]] = frozenset()
    resolver: Resolver = field(default=system_resolver, compare=False)
    max_bytes: int = 1024 * 1024
    timeout_seconds: float = 10.0
    max_redirects: int = 5

    @classmethod
    def from_setting(cls, value: str | None, **kwargs: typing.Any) -> OutboundPolicy:
        return cls(allow=parse_allow_list(value), **kwargs)

    def allowed(self, host: str, port: int) -> bool:
        return (_normal_host(host), port) in self.allow

    def check_url(self, url: str | httpx.URL) -> httpx.URL:
        """The static rules (no DNS): usable when a tenant saves a URL. Returns the parsed URL."""
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise OutboundRefused(RefusalReason.NOT_A_URL, "not a URL") from exc
        if parsed.scheme not in _DEFAULT_PORTS:
            raise OutboundRefused(RefusalReason.SCHEME, "the URL must use https")
        if not parsed.host:
            raise OutboundRefused(RefusalReason.NO_HOST, "the URL names no host")
        # The host as it goes on the wire (IDNA names as punycode): what connect time sees too.
        host = _normal_host(parsed.raw_host.decode("ascii"))
        if parsed.userinfo:
            raise OutboundRefused(RefusalReason.CREDENTIALS, "the URL must not carry credentials")
        port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
        listed = self.allowed(host, port)
        if parsed.scheme == "http" and not listed:
            raise OutboundRefused(RefusalReason.SCHEME, "the URL must use https")
        if not listed:
            literal = _literal_address(host)
            if (
                (literal is not None and not is_public_address(literal))
                or host == "localhost"
                or host.endswith(".localhost")
            ):
                raise OutboundRefused(RefusalReason.ADDRESS_NOT_ALLOWED, f"{host}:{port} is not a public address")
        return parsed

    async def resolve_checked(self, host: str, port: int) -> list[str]:
        """Resolve host once and check every address; the addresses to connect to, in order."""
        host = _normal_host(host)
        literal = _literal_address(host)
        if literal is not None:
            addresses: Sequence[str] = [str(literal)]
        else:
            try:
                addresses = await self.resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise OutboundRefused(RefusalReason.UNRESOLVABLE, f"{host} does not resolve") from exc
        if not addresses:
            raise OutboundRefused(RefusalReason.UNRESOLVABLE, f"{host} does not resolve")
        parsed: list[IPAddress] = []
        for text in addresses:
            address = _literal_address(text.split("%", 1)[0])  # a scope id never makes an address public
            if address is None:
                raise OutboundRefused(RefusalReason.UNRESOLVABLE, f"{host} resolved to {text!r}")
            parsed.append(address)
        if not self.allowed(host, port):
            refused = [str(a) for a in parsed if not is_public_address(a)]
            if refused:
                # One bad answer refuses the name: a later connection attempt could land on it.
                raise OutboundRefused(
                    RefusalReason.ADDRESS_NOT_ALLOWED,
                    f"{host}:{port} resolves to {', '.join(refused)}, which is not on the outbound allow-list",
                )
        return [str(a) for a in parsed]

    def transport(self, **kwargs: typing.Any) -> GuardedTransport:
        """An httpx transport whose every connection goes through this policy."""
        return GuardedTransport(self, **kwargs)

    def client(self, **kwargs: typing.Any) -> httpx.AsyncClient:
        """An httpx.AsyncClient on a guarded transport: environment proxies ignored, redirects not
        followed by default (each hop a client chooses to follow is checked by the transport anyway),
        the policy's time bound per operation. Keyword arguments go to httpx.AsyncClient."""
        kwargs.setdefault("timeout", self.timeout_seconds)
        kwargs.setdefault("follow_redirects", False)
        verify = kwargs.pop("verify", True)
        return httpx.AsyncClient(transport=self.transport(verify=verify), trust_env=False, **kwargs)

    async def fetch(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> OutboundResponse:
        """One guarded exchange: redirects followed here, each hop checked; body and time bounded.

        `client` must be one made by `client()` (or carrying a GuardedTransport); without it a
        client is made for this call. Raises OutboundRefused, or httpx errors for network failures.
        """
        limit = self.max_bytes if max_bytes is None else max_bytes
        own = client is None
        active = self.client() if client is None else client
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await self._follow(active, url, method, headers or {}, limit)
        except TimeoutError:
            raise OutboundRefused(
                RefusalReason.TIMEOUT, f"no complete answer within {self.timeout_seconds} s"
            ) from None
        finally:
            if own:
                await active.aclose()

    async def _follow(
        self, client: httpx.AsyncClient, url: str, method: str, headers: Mapping[str, str], limit: int
    ) -> OutboundResponse:
        current = self.check_url(url)
        for _hop in range(self.max_redirects + 1):
            async with client.stream(method, current, headers=headers, follow_redirects=False) as response:
                if response.status_code in _REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise OutboundRefused(RefusalReason.BAD_REDIRECT, "redirect without a Location")
                    try:
                        current = self.check_url(current.join(location))
                    except httpx.InvalidURL as exc:
                        raise OutboundRefused(RefusalReason.BAD_REDIRECT, "redirect to something not a URL") from exc
                    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                        method = "GET"
                    continue
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise OutboundRefused(RefusalReason.TOO_LARGE, f"the answer is larger than {limit} bytes")
                body = bytearray()
                async for chunk in response.aiter_bytes():  # after content decoding: bombs stop too
                    body += chunk
                    if len(body) > limit:
                        raise OutboundRefused(RefusalReason.TOO_LARGE, f"the answer is larger than {limit} bytes")
                return OutboundResponse(str(current), response.status_code, response.headers, bytes(body))
        raise OutboundRefused(RefusalReason.TOO_MANY_REDIRECTS, f"more than {self.max_redirects} redirects")


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the name resolved and checked here: connect_tcp gets the URL's
    host name, connects to a checked address of it, and never lets the name be resolved again."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # The lookup counts against the connect timeout (httpx's), else the policy's time bound.
        try:
            async with asyncio.timeout(self._policy.timeout_seconds if timeout is None else timeout):
                addresses = await self._policy.resolve_checked(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took too long") from None
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused(RefusalReason.ADDRESS_NOT_ALLOWED, "unix sockets are not outbound destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport that applies an OutboundPolicy to every request: the URL's static rules
    before anything is sent, the address rules at connect time. No proxies (a proxy would do the
    resolving). Give it to any httpx client (Authlib's included) that talks to a tenant-set URL."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        verify: ssl.SSLContext | str | bool = True,
        limits: httpx.Limits = httpx.Limits(max_connections=20, max_keepalive_connections=5),  # noqa: B008
    ) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        self._policy = policy
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._policy.check_url(request.url)
        return await super().handle_async_request(request)
