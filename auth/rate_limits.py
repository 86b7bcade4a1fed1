"""Rate limits per client address, per user and per tenant (issue 17; docs/api.md "Rate limits").

Two kinds of budget, both token buckets run as GCRA (one "due" time per bucket: a request costing n
units is admitted when the bucket would still hold them, i.e. when its due time plus n units' worth
of time is at most one period ahead of now; a full period's allowance can be spent at once):

- Ordinary GraphQL traffic, counted in root fields (schema/rate_limit_extension.py: a document of 30
  aliased root fields costs 30), is limited IN PROCESS (`LocalBuckets`): no database write per read.
  The settings give each limit per deployment and the number of processes sharing it
  (GWM_RATE_LIMIT_PROCESSES); each process enforces its share, ceil(limit / processes) per minute.
  Behind a balancer spreading requests evenly, the deployment admits about the configured rate; an
  uneven spread refuses a client earlier than that, never later than the process share allows.
- Sign-in and the other sensitive operations (`SENSITIVE_PATHS`, `SENSITIVE_MUTATIONS`) are
  limited through PostgreSQL (`SharedBuckets`, migration 0021): every process and machine charges
  the same buckets, so adding processes does not multiply an attacker's guesses. One statement per
  attempt (`gwm_rate.take`), on its own pooled connection, outside any request transaction.

Every check charges its buckets all or nothing: a request refused by one bucket (its address)
spends nothing from the others (its account, its tenant), so one noisy address cannot drain the
budget of a tenant it is refused by. The shared buckets are keyed by SHA-256 digests of the address,
account or tenant (the table never holds an address or an email); the in-process ones by the values
themselves. A limit of 0 turns that bucket off.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, INTEGER
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import bindparam
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from auth.exceptions import AuthRequestError
from auth.http import error_response, parse_json_object, request_meta, subdomain_of
from auth.principal import Principal

__all__ = [
    "PERIOD_SECONDS",
    "SENSITIVE_MUTATIONS",
    "SENSITIVE_PATHS",
    "LocalBuckets",
    "RateLimitConfig",
    "RateLimiter",
    "Refusal",
    "SharedBuckets",
    "address_key",
    "limit_sensitive_routes",
    "limiter_of",
]

# Every limit is an allowance per minute.
PERIOD_SECONDS = 60.0

# HTTP endpoints whose every call is charged to the shared (PostgreSQL) buckets.
SENSITIVE_PATHS = frozenset({
    "/auth/login",
    "/auth/password/reset/request",
    "/auth/password/reset",
    "/auth/password/change",
    "/auth/invitations/accept",
    "/auth/mfa/enroll",
    "/auth/mfa/confirm",
    "/auth/mfa/verify",
    "/auth/mfa/recovery",
})
# Mutations charged to the shared buckets as well (each root field once), beside the ordinary charge:
# they mint credentials, check a second factor, send email, or reach out of the network.
SENSITIVE_MUTATIONS = frozenset({
    "apiKeyCreate",
    "mfaEnrollmentStart",
    "mfaEnrollmentConfirm",
    "userInvite",
    "userSetTemporaryPassword",
    "sourceTestConnection",
})


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """The limits, per minute (server/settings.py GWM_RATE_LIMIT_*, GWM_SENSITIVE_LIMIT_*); 0: no limit.

    `per_*`: root fields of GraphQL operations per deployment, shared out over `processes`;
    `sensitive_per_*`: sensitive attempts per deployment, counted in PostgreSQL.
    """

    per_address: int = 100_000
    per_user: int = 100_000
    per_tenant: int = 100_000
    processes: int = 1
    sensitive_per_address: int = 10_000
    sensitive_per_user: int = 10_000
    sensitive_per_tenant: int = 10_000

    def share(self, limit: int) -> int:
        """This process's part of a per-deployment `limit` (0 stays 0: no limit)."""
        return math.ceil(limit / max(self.processes, 1)) if limit > 0 else 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused by a limit: which bucket (`address`, `user`, `tenant`), and when to come back."""

    scope: str
    retry_after: int  # whole seconds, at least 1
    sensitive: bool = False

    @property
    def message(self) -> str:
        what = "sensitive operations (sign-in, credentials)" if self.sensitive else "GraphQL root fields"
        return (
            f"Rate limit of {what} per {self.scope} reached; retry after {self.retry_after} s."
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after), "cache-control": "no-store"}

    def extensions(self) -> dict[str, object]:
        return {"code": "RATE_LIMITED", "limit": self.scope, "retryAfter": self.retry_after}


@functools.lru_cache(maxsize=4096)
def address_key(address: str | None) -> str | None:
    """The budget an address belongs to: an IPv4 address itself, an IPv6 address its /64 (one host
    usually holds a whole /64, and would otherwise rotate through it), an IPv4-mapped one its IPv4."""
    if address is None or ":" not in address:
        return address
    try:
        parsed = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.IPv6Network((parsed, 64), strict=False))


def _digest(kind: str, value: str) -> bytes:
    # surrogatepass: a client's text (a sign-in email) may hold a lone surrogate; it still names one bucket.
    return hashlib.sha256(f"{kind}\x00{value}".encode("utf-8", "surrogatepass")).digest()


def _whole_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


class LocalBuckets:
    """In-process GCRA buckets: key -> the time (monotonic seconds) the bucket's next unit is due.

    Single-threaded (the event loop), so a check and its charge cannot interleave. The map forgets
    buckets that are full again whenever it has grown by `sweep_every` entries since the last sweep.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, sweep_every: int = 4096) -> None:
        self.clock = clock
        self._due: dict[Hashable, float] = {}
        self._sweep_every = sweep_every
        self._sweep_at = sweep_every

    def __len__(self) -> int:
        return len(self._due)

    def take(self, buckets: Sequence[tuple[str, Hashable, int]], cost: int) -> Refusal | None:
        """Charge `cost` units to every (scope, key, limit per period) bucket, or to none of them."""
        now = self.clock()
        due_of = self._due
        planned: list[tuple[Hashable, float]] = []
        worst = 0.0
        worst_scope = ""
        for scope, key, limit in buckets:
            if limit <= 0:
                continue
            due = due_of.get(key, now)
            due = (due if due > now else now) + PERIOD_SECONDS * (cost if cost < limit else limit) / limit
            wait = due - PERIOD_SECONDS - now
            if wait > 0:
                if wait > worst:
                    worst, worst_scope = wait, scope
            else:
                planned.append((key, due))
        if worst_scope:
            return Refusal(worst_scope, _whole_seconds(worst))
        for key, due in planned:
            due_of[key] = due
        if len(due_of) >= self._sweep_at:
            self._due = {k: d for k, d in due_of.items() if d > now}
            self._sweep_at = len(self._due) + self._sweep_every
        return None


_TAKE = text("SELECT gwm_rate.take(:keys, :limits, :period, :cost)").bindparams(
    bindparam("keys", type_=ARRAY(BYTEA)), bindparam("limits", type_=ARRAY(INTEGER))
)


class SharedBuckets:
    """The buckets every process shares, in PostgreSQL (`gwm_rate.take`, migration 0021)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def take(self, buckets: Sequence[tuple[str, bytes, int]], cost: int = 1) -> Refusal | None:
        """Charge `cost` to every (scope, key, limit) bucket, or to none; one statement, autocommitted."""
        wanted: dict[bytes, tuple[str, int]] = {}
        for scope, key, limit in buckets:
            if limit > 0:
                wanted.setdefault(key, (scope, limit))
        if not wanted:
            return None
        keys = sorted(wanted)  # the function locks in this order
        async with self.engine.connect() as conn:
            answer = await conn.scalar(
                _TAKE, {"keys": keys, "limits": [wanted[k][1] for k in keys], "period": PERIOD_SECONDS, "cost": cost}
            )
            await conn.commit()
        wait, worst = (float(answer[0]), int(answer[1])) if answer else (0.0, 0)
        if worst == 0:
            return None
        return Refusal(wanted[keys[worst - 1]][0], _whole_seconds(wait), sensitive=True)


class RateLimiter:
    """The deployment's limits (`config`) over this process's buckets and the shared ones."""

    def __init__(self, config: RateLimitConfig, engine: AsyncEngine, *, local: LocalBuckets | None = None) -> None:
        self.config = config
        self.local = local or LocalBuckets()
        # This process's shares of the per-deployment limits of ordinary traffic.
        self._shares = tuple(config.share(limit) for limit in (config.per_address, config.per_user, config.per_tenant))
        self.shared = SharedBuckets(engine)

    def charge_operation(self, address: str | None, principal: Principal, cost: int) -> Refusal | None:
        """Charge a GraphQL operation's root fields to the caller's address, user and tenant (in process)."""
        per_address, per_user, per_tenant = self._shares
        caller = ("key", principal.api_key_id) if principal.api_key_id is not None else ("user", principal.user_id)
        buckets = (
            ("address", ("address", address_key(address)), per_address),
            ("user", caller, per_user),
            ("tenant", ("tenant", principal.tenant_id), per_tenant),
        )
        return self.local.take(buckets, cost if cost > 1 else 1)

    async def charge_sensitive(
        self, address: str | None, *, user: str | None, tenant: str | None, cost: int = 1
    ) -> Refusal | None:
        """Charge sensitive attempts to the shared buckets of the address, the account and the tenant.

        `user` names the account (a user id, an API key, or tenant + email for a sign-in); `tenant`
        a tenant id or the subdomain asked for. Either may be unknown (None): that bucket is skipped.
        """
        c = self.config
        buckets = [("address", _digest("sensitive-address", address_key(address) or "-"), c.sensitive_per_address)]
        if user is not None:
            buckets.append(("user", _digest("sensitive-user", user), c.sensitive_per_user))
        if tenant is not None:
            buckets.append(("tenant", _digest("sensitive-tenant", tenant), c.sensitive_per_tenant))
        return await self.shared.take(buckets, max(cost, 1))


def _caller(principal: Principal) -> str:
    """An API key is its own caller (every key of a tenant acts as the tenant's system user)."""
    return f"key:{principal.api_key_id}" if principal.api_key_id is not None else f"user:{principal.user_id}"


def caller_keys(principal: Principal) -> tuple[str, str]:
    """(user, tenant) as the sensitive buckets name them for an authenticated caller."""
    return _caller(principal), str(principal.tenant_id)


def limiter_of(scope: Mapping[str, Any]) -> RateLimiter | None:
    """The application's limiter (`app.state.rate_limits`, set by server/app.py), if any."""
    app = scope.get("app")
    state = getattr(app, "state", None)
    limiter = getattr(state, "rate_limits", None)
    return limiter if isinstance(limiter, RateLimiter) else None


def _account(request: Request, body: bytes) -> tuple[str | None, str | None]:
    """(account, tenant) a public sign-in style request names: tenant + email, and the tenant asked for."""
    try:
        data = parse_json_object(body)
    except AuthRequestError:
        data = {}
    tenant = data.get("tenant")
    subdomain = (tenant if isinstance(tenant, str) else None) or subdomain_of(request.headers.get("host"))
    tenant_key = subdomain.strip().lower() if subdomain else None
    email = data.get("email")
    if isinstance(email, str) and email.strip():
        return f"{tenant_key or ''}\x00{email.strip().lower()}", tenant_key
    return None, tenant_key


def _limited(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def limited(request: Request) -> Response:
        limiter = limiter_of(request.scope)
        if limiter is not None:
            principal = (request.scope.get("state") or {}).get("principal")
            # The account a body names (sign-in, reset request) even when a session cookie came along;
            # otherwise the signed-in caller (MFA, password change). The body stays cached for the route.
            user, tenant = _account(request, await request.body())
            if user is None and isinstance(principal, Principal):
                user, tenant = caller_keys(principal)
            refusal = await limiter.charge_sensitive(request_meta(request).ip, user=user, tenant=tenant)
            if refusal is not None:
                return error_response(429, "RATE_LIMITED", refusal.message, **refusal.headers)
        return await endpoint(request)

    limited.__name__ = getattr(endpoint, "__name__", "limited")
    limited.__doc__ = endpoint.__doc__
    return limited


def limit_sensitive_routes(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """`routes` with every route of `SENSITIVE_PATHS` charged to the shared buckets before it runs."""
    out: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route) and route.path in SENSITIVE_PATHS:
            route = Route(
                route.path, _limited(route.endpoint), methods=sorted(route.methods or ()), name=route.name
            )
        out.append(route)
    return out
