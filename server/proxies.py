"""Which peers are believed: GWM_TRUSTED_PROXIES and the client address behind them.

Only a peer inside one of the configured networks (the reverse proxies and load balancers in front
of the server) may tell the server who the client is (`X-Forwarded-For`, or RFC 7239 `Forwarded`
when there is no `X-Forwarded-For`), which request id to use (`X-Request-ID`) and which trace the
request belongs to (`traceparent`). Everyone else's headers are ignored: the client address is the
TCP peer's.

Behind trusted proxies the forwarded chain is read from the right (the hop nearest to the server)
and trusted hops are skipped: the first hop that is not a trusted proxy is the client address (the
rightmost untrusted hop). Entries a client wrote itself sit to the left of that hop and are never
reached; a malformed entry stops the walk, and the last hop that was read is used. When every hop
is trusted the leftmost one is the client.

The middleware (server/middleware.py) resolves the address once per request and stores it in
`scope["state"]["client_address"]` and in the request's `RequestMeta.ip`, which audit rows, the
sign-in lockout and the rate limits use. Layers below `server/` read it from there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import Headers
from starlette.types import Scope

__all__ = ["CLIENT_ADDRESS_KEY", "TrustedProxies", "client_address"]

# Where the middleware stores the resolved address in `scope["state"]`.
CLIENT_ADDRESS_KEY = "client_address"
# A forwarded chain longer than this is not walked further (a header is not a work queue).
_MAX_HOPS = 32

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    """The networks of GWM_TRUSTED_PROXIES and what they make believable."""

    __slots__ = ("_networks",)

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: tuple[_Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    @property
    def configured(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str | None) -> bool:
        """True when `address` (the TCP peer or a forwarded hop) is one of the trusted proxies."""
        if address is None or not self._networks:
            return False
        parsed = _parse(address)
        return parsed is not None and any(parsed in network for network in self._networks)

    def peer_trusted(self, scope: Scope) -> bool:
        """True when the request's TCP peer is a trusted proxy (its X-Request-ID and traceparent count)."""
        client = scope.get("client")
        return client is not None and self.trusts(client[0])

    def resolve(self, scope: Scope, headers: Headers | None = None) -> str | None:
        """The client address of the request: the peer, or behind trusted proxies the rightmost untrusted hop."""
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        if peer is None or not self.trusts(peer):
            return peer
        headers = headers if headers is not None else Headers(scope=scope)
        hops = _forwarded_for(headers)
        address = peer
        for hop in reversed(hops[-_MAX_HOPS:]):
            parsed = _parse(hop)
            if parsed is None:
                break  # a malformed entry: the last hop read stands
            address = str(parsed)
            if not any(parsed in network for network in self._networks):
                break  # the rightmost untrusted hop
        return address


def client_address(scope: Scope) -> str | None:
    """The client address the middleware resolved for this request (the TCP peer when it did not run)."""
    state: Any = scope.get("state") or {}
    if CLIENT_ADDRESS_KEY in state:
        value = state[CLIENT_ADDRESS_KEY]
        return value if isinstance(value, str) else None
    client = scope.get("client")
    return client[0] if client else None


def _parse(value: str) -> _Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6] or [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_for(headers: Headers) -> list[str]:
    """The hops of X-Forwarded-For (every such header, in order), else the `for=` of Forwarded."""
    xff = headers.getlist("x-forwarded-for")
    if xff:
        return [part.strip() for line in xff for part in line.split(",") if part.strip()]
    hops: list[str] = []
    for line in headers.getlist("forwarded"):
        for element in line.split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.strip().lower() == "for":
                    hops.append(value.strip().strip('"'))
    return hops
