"""Every outbound call of a sync job: budget first, then the outbound guard, retries, the call log
and the source's health.

One `SyncCaller` per worker (it owns one guarded httpx client). For each call
(`request`, or a connector fetching through `http(...)`), and for each attempt of it:

1. A budget slot is reserved first (`Budget.reserve(now)`: one slot, committed, the counter row
   locked FOR UPDATE by the budget). No slot: nothing is sent or logged and `BudgetExhausted`
   says when the next window starts (`retry_at`), for the job to be rescheduled then.
2. The request goes through the outbound guard (auth/outbound.py): the allow-list of host:port,
   every resolved address checked, every redirect hop checked again, the body bounded
   (`CallSettings.max_bytes`) and the whole exchange, redirects included, bounded by the source's
   `timeout_seconds` (a float: sub-second values work).
3. The attempt is logged in `api_integration_logs` (the URL with `api_key` and any other
   credential-looking parameter redacted, the status, the response time, the size, the error) and
   the source's health is updated (`connection_status`, `consecutive_errors`,
   `last_error_message`, `last_successful_call`; for a project's refresh also its polling
   configuration's `consecutive_errors`, `average_response_time_ms`, `success_rate_percentage`
   over its last 100 calls), all in ONE unit of work as the tenant's system user (process
   `sync.calls`): the log row and the health commit together or not at all. The log table is
   operational (docs/decisions.md W11) and the health columns are operational columns of audited
   tables (models/audit_trail.py `OPERATIONAL_COLUMNS`), so no audit row is written for them; the
   unit of work is still the one write path for the audited source row. No transaction is open
   while the request is in flight.
4. Transport errors, timeouts, 429, 5xx and a 2xx declared as JSON that does not parse are retried:
   `1 + retry_attempts` attempts in all (a project's polling configuration: `1 + max_retries`),
   waiting `base_delay_seconds * backoff_multiplier ** (n - 1)` after the n-th failed attempt; a
   429 or 503 with `Retry-After` (seconds or an HTTP date, read against the injected clock) waits
   that long instead. A wait longer than `max_wait_seconds` is not slept here: `RetryLater`
   carries the instant, for the job to be rescheduled. Refusals of the guard (an address or a
   redirect off the allow-list, a body over the limit) are not retried: `CallFailed` with the
   refusal's reason. Any other HTTP status is returned to the connector, which reads it (SAM.gov's
   404 "No Data found" is an empty page) or raises `ConnectorError` with the API's message.
   After the last attempt an HTTP answer is returned as it is, no answer raises `CallFailed`
   (a final 429 raises `RetryLater`).

Waits and timestamps come from the injected `clock` and `sleep` (tests assert the wait values
and never sleep); response times from `timer` (a monotonic clock).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Final, Protocol, Self

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.audited import system_unit
from auth.outbound import OutboundPolicy, OutboundRefused, OutboundResponse, RefusalReason
from models.audit_chain import AuditChain
from models.enums import ConnectionStatus
from models.external_data import ApiIntegrationLog, ExternalOpportunitySource, PollingConfiguration
from sync.connectors.base import ConnectorError, QueryParams

__all__ = [
    "PROCESS",
    "REDACTED",
    "Budget",
    "BudgetExhausted",
    "CallClient",
    "CallError",
    "CallFailed",
    "CallSettings",
    "CallStatistics",
    "CallTarget",
    "RetryLater",
    "SyncCaller",
    "backoff_wait",
    "call_statistics",
    "redact_headers",
    "redact_url",
    "retry_after_seconds",
]

PROCESS: Final = "sync.calls"
REDACTED: Final = "[redacted]"
#: Failed calls in a row after which a source is `failing` rather than `degraded`.
FAILING_AFTER: Final = 3
#: Calls a polling configuration's average response time and success rate are taken over.
STATISTICS_WINDOW: Final = 100

# Query parameters and headers whose values never reach the log: keys, tokens, secrets, passwords,
# credentials, signatures, session and authorization values ("keyword" is not a key).
_SECRET_NAME: Final = re.compile(r"key(?!word)|token|secret|pass|credential|signature|^sig$|auth|session|cookie", re.I)
_RETRIED_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
# Refusals that say nothing about the destination's configuration: retried like network errors.
_TRANSIENT_REFUSALS: Final = frozenset({RefusalReason.TIMEOUT, RefusalReason.UNRESOLVABLE})
# Response headers kept in the log (the body is not kept: its size is).
_LOGGED_HEADERS: Final = ("content-type", "content-length", "retry-after", "x-ratelimit-limit",
                          "x-ratelimit-remaining", "location")

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]
Timer = Callable[[], float]


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- what a job gives -------------------------------------------------------------------------------


class Budget(Protocol):
    """The call budget of the source's API key (sync/schedule.py implements it)."""

    async def reserve(self, now: datetime) -> bool:
        """Take one call slot now (committed before returning); False when the window is full."""
        ...

    def next_window(self, now: datetime) -> datetime:
        """When the next window with room starts (the job is rescheduled then)."""
        ...


@dataclass(frozen=True, slots=True)
class CallTarget:
    """Whose call it is: the log row's and the health's rows."""

    tenant_id: uuid.UUID
    source_id: uuid.UUID
    project_id: uuid.UUID | None = None
    polling_configuration_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class CallSettings:
    """How one call is made: the source's settings, a polling configuration's where it has them."""

    timeout_seconds: float = 30.0
    retry_attempts: int = 3  # retries after the first attempt
    backoff_multiplier: float = 2.0
    base_delay_seconds: float = 1.0
    max_wait_seconds: float = 60.0
    max_bytes: int = 32 * 1024 * 1024  # a SAM.gov page of 1,000 notices is several MB
    # Statuses the connector reads as an empty answer, logged as successful calls (SAM.gov's 404
    # "No Data found").
    empty_statuses: frozenset[int] = frozenset({404})

    def __post_init__(self) -> None:
        if not self.timeout_seconds > 0:
            raise ValueError("timeout_seconds must be positive")
        if self.retry_attempts < 0:
            raise ValueError("retry_attempts must not be negative")
        if self.backoff_multiplier < 1:
            raise ValueError("backoff_multiplier must be at least 1")
        if self.base_delay_seconds < 0 or self.max_wait_seconds < 0:
            raise ValueError("waits must not be negative")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be positive")

    @classmethod
    def for_source(
        cls,
        source: ExternalOpportunitySource,
        polling: PollingConfiguration | None = None,
        **overrides: float | int | frozenset[int],
    ) -> CallSettings:
        """The source's `timeout_seconds` and `retry_attempts`; for a project's own refresh its
        polling configuration's `max_retries` and `backoff_multiplier` win."""
        values: dict[str, float | int | frozenset[int]] = {
            "timeout_seconds": float(source.timeout_seconds),
            "retry_attempts": int(source.retry_attempts),
        }
        if polling is not None:
            values["retry_attempts"] = int(polling.max_retries)
            values["backoff_multiplier"] = float(polling.backoff_multiplier)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def attempts(self) -> int:
        return 1 + self.retry_attempts


# --- errors ---------------------------------------------------------------------------------------


class CallError(ConnectorError):
    """A call that produced no answer to read. `retry_at`: when the job should try again (None: a
    refusal that only a change of configuration can cure)."""

    def __init__(
        self, message: str, *, retry_at: datetime | None, status_code: int | None = None, attempts: int = 0
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_at = retry_at
        self.attempts = attempts


class BudgetExhausted(CallError):
    """No budget slot: nothing was sent. `retry_at` is the start of the next window."""


class RetryLater(CallError):
    """The source asked for a wait (429 / Retry-After) longer than a job waits in-process."""


class CallFailed(CallError):
    """No usable answer after all attempts (network errors, timeouts), or a refusal of the guard
    (`reason`: the RefusalReason, not retried)."""

    def __init__(
        self,
        message: str,
        *,
        retry_at: datetime | None,
        reason: RefusalReason | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, retry_at=retry_at, attempts=attempts)
        self.reason = reason


# --- pure helpers ---------------------------------------------------------------------------------


def redact_url(url: str | httpx.URL) -> str:
    """The URL as it may be logged: user info dropped, secret-looking query values `[redacted]`."""
    parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    base = parsed.copy_with(query=None, fragment=None, username=None, password=None)
    items = parsed.params.multi_items()
    if not items:
        return str(base)
    query = str(httpx.QueryParams([(key, REDACTED if _SECRET_NAME.search(key) else value) for key, value in items]))
    return f"{base}?{query.replace('%5Bredacted%5D', REDACTED)}"


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers as they may be logged: secret-looking ones (Authorization, X-Api-Key, Cookie) redacted."""
    return {name.lower(): REDACTED if _SECRET_NAME.search(name) else value for name, value in headers.items()}


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP date (a past date is 0).
    None when absent or unreadable."""
    if value is None:
        return None
    text_value = value.strip()
    if text_value.isdigit():
        return float(int(text_value))
    try:
        when = email.utils.parsedate_to_datetime(text_value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_wait(settings: CallSettings, failed_attempt: int) -> float:
    """The wait after the `failed_attempt`-th (1-based) failed attempt."""
    return settings.base_delay_seconds * settings.backoff_multiplier ** (failed_attempt - 1)


_SECRET_IN_TEXT: Final = re.compile(
    r"((?:key(?!word)|token|secret|pass\w*|credential\w*|signature|sig|auth\w*|session\w*)=)[^&\s'\"()<>]+", re.I
)


def _scrub(message: str) -> str:
    """An error text as it may be logged: any `name=value` of a secret-looking name redacted (an
    exception may quote the URL it failed on)."""
    return _SECRET_IN_TEXT.sub(lambda match: match.group(1) + REDACTED, message)


def _declares_json(headers: httpx.Headers) -> bool:
    media = str(headers.get("content-type", "")).split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = str(headers.get(name, "")).strip()
    return int(value) if value.isdigit() else None


# --- one attempt ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Attempt:
    """What one attempt produced, as the log and the health record it."""

    number: int
    started_at: datetime
    response: OutboundResponse | None = None
    error: str | None = None
    refusal: RefusalReason | None = None
    elapsed_ms: int = 0
    retry: bool = False  # worth another attempt
    wait: float | None = None  # Retry-After, seconds

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status_code


class SyncCaller:
    """Makes the calls of sync jobs (see the module docstring). Use it as an async context manager,
    or call `aclose()`: it owns one guarded httpx client."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        chain: AuditChain,
        policy: OutboundPolicy,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        timer: Timer = time.perf_counter,
        user_agent: str = "gwm-crm-sync",
    ) -> None:
        self._engine = engine
        self._chain = chain
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._timer = timer
        self._headers = {"accept": "application/json", "user-agent": user_agent}
        # No client-side timeout: the whole exchange is bounded per call by the source's timeout.
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def http(self, target: CallTarget, settings: CallSettings, budget: Budget) -> CallClient:
        """The adapter a connector fetches through (`.get(url, params=...)`)."""
        return CallClient(self, target, settings, budget)

    async def request(
        self,
        target: CallTarget,
        settings: CallSettings,
        budget: Budget,
        method: str,
        url: str | httpx.URL,
        *,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call, with its attempts. Returns the last HTTP answer (any status; see the module
        docstring for which are retried). Raises BudgetExhausted, RetryLater or CallFailed."""
        full = httpx.Request(method, url, params=params).url
        sent_headers = {**self._headers, **(headers or {})}
        for number in range(1, settings.attempts + 1):
            now = self._clock()
            if not await budget.reserve(now):
                retry_at = budget.next_window(now)
                raise BudgetExhausted(
                    f"the call budget is used up until {retry_at.isoformat()}", retry_at=retry_at, attempts=number - 1
                )
            attempt = await self._attempt(number, now, method, full, sent_headers, settings)
            await self._record(target, settings, method, full, sent_headers, attempt)
            last = number == settings.attempts
            if not attempt.retry:
                if attempt.response is not None:
                    return _as_httpx(method, attempt.response)
                raise CallFailed(
                    attempt.error or "refused", retry_at=None, reason=attempt.refusal, attempts=number
                )
            wait = attempt.wait if attempt.wait is not None else backoff_wait(settings, number)
            if wait > settings.max_wait_seconds or (last and attempt.status == 429):
                retry_at = self._clock() + timedelta(seconds=wait)
                raise RetryLater(
                    f"{attempt.error}; to be tried again in {wait:g} s", retry_at=retry_at,
                    status_code=attempt.status, attempts=number,
                )
            if last:
                if attempt.response is not None:
                    return _as_httpx(method, attempt.response)
                retry_at = self._clock() + timedelta(seconds=wait)
                raise CallFailed(
                    f"{attempt.error} (after {number} attempt{'s' if number > 1 else ''})",
                    retry_at=retry_at, reason=attempt.refusal, attempts=number,
                )
            await self._sleep(wait)
        raise AssertionError("unreachable: settings.attempts >= 1")  # pragma: no cover

    async def _attempt(
        self,
        number: int,
        started_at: datetime,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        settings: CallSettings,
    ) -> _Attempt:
        attempt = _Attempt(number=number, started_at=started_at)
        policy = dataclasses.replace(self._policy, timeout_seconds=settings.timeout_seconds)
        if self._client is None:
            self._client = self._policy.client(timeout=None)
        start = self._timer()
        try:
            attempt.response = await policy.fetch(
                str(url), client=self._client, method=method, headers=headers, max_bytes=settings.max_bytes
            )
        except OutboundRefused as exc:
            attempt.refusal = exc.reason
            attempt.error = f"refused: {exc}"
            attempt.retry = exc.reason in _TRANSIENT_REFUSALS
        except httpx.TimeoutException as exc:
            attempt.error = f"timed out after {settings.timeout_seconds:g} s ({type(exc).__name__})"
            attempt.retry = True
        except httpx.HTTPError as exc:
            attempt.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            attempt.retry = True
        attempt.elapsed_ms = max(0, round((self._timer() - start) * 1000))
        if attempt.error is not None:
            attempt.error = _scrub(attempt.error)
        response = attempt.response
        if response is None:
            return attempt
        status = response.status_code
        if status in _RETRIED_STATUSES:
            attempt.error = f"HTTP {status}"
            attempt.retry = True
            if status in (429, 503):
                attempt.wait = retry_after_seconds(response.headers.get("retry-after"), self._clock())
        elif 200 <= status < 300 and _declares_json(response.headers):
            try:
                json.loads(response.content)
            except (ValueError, UnicodeDecodeError) as exc:
                attempt.error = f"malformed JSON: {exc}"
                attempt.retry = True
        elif status >= 400 and status not in settings.empty_statuses:
            attempt.error = f"HTTP {status}"
        return attempt

    async def _record(
        self,
        target: CallTarget,
        settings: CallSettings,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        attempt: _Attempt,
    ) -> None:
        """The attempt's log row and the health it implies, in one unit of work."""
        success = attempt.error is None
        response = attempt.response
        logged_headers = (
            None
            if response is None
            else {name: response.headers[name] for name in _LOGGED_HEADERS if name in response.headers}
        )
        log = ApiIntegrationLog(
            id=uuid.uuid4(),
            tenant_id=target.tenant_id,
            external_source_id=target.source_id,
            opportunity_project_id=target.project_id,
            api_call_timestamp=attempt.started_at,
            endpoint_called=redact_url(url)[:500],
            http_method=method.upper()[:10],
            http_status=attempt.status,
            request_headers=redact_headers(headers),
            request_payload=None,
            response_headers=redact_headers(logged_headers) if logged_headers is not None else None,
            response_payload=None if response is None else {"bytes": len(response.content)},
            error_message=attempt.error,
            processing_time_ms=attempt.elapsed_ms,
            rate_limit_remaining=None if response is None else _int_header(response.headers, "x-ratelimit-remaining"),
            success=success,
            retry_attempt=attempt.number,
        )
        async with system_unit(self._engine, self._chain, target.tenant_id, process=PROCESS, notify=False) as uow:
            # FOR NO KEY UPDATE (the health columns are no key), not the FOR UPDATE of uow.lock: that
            # would block the KEY SHARE locks foreign keys take on the source, and deadlock with an
            # ingest of the same project (it holds the project FOR UPDATE and then inserts rows
            # referencing the source, while this unit's log row waits on the project).
            await uow.connection.execute(
                select(ExternalOpportunitySource.id)
                .where(ExternalOpportunitySource.id == target.source_id)
                .with_for_update(key_share=True)
            )
            source = await uow.find(ExternalOpportunitySource, target.source_id)
            uow.add(log)
            await uow.flush()
            if success:
                health: dict[str, object] = {
                    "consecutive_errors": 0,
                    "last_successful_call": attempt.started_at,
                }
                status = ConnectionStatus.HEALTHY
            else:
                errors = source.consecutive_errors + 1
                health = {"consecutive_errors": errors, "last_error_message": attempt.error}
                permanent = (attempt.refusal is not None and not attempt.retry) or attempt.status in (401, 403)
                status = ConnectionStatus.FAILING if permanent or errors >= FAILING_AFTER else ConnectionStatus.DEGRADED
            if source.connection_status != ConnectionStatus.DISABLED:
                health["connection_status"] = status.value
            uow.assign(source, health)
            if target.polling_configuration_id is not None:
                polling = await uow.lock(PollingConfiguration, target.polling_configuration_id)
                stats = await call_statistics(
                    uow.connection, target.tenant_id, target.source_id, project_id=polling.opportunity_project_id
                )
                uow.assign(
                    polling,
                    {
                        "consecutive_errors": 0 if success else polling.consecutive_errors + 1,
                        "average_response_time_ms": stats.average_response_time_ms,
                        "success_rate_percentage": stats.success_rate_percentage,
                    },
                )



@dataclass(frozen=True, slots=True)
class CallStatistics:
    """A source's (or one project's) recent calls: how many (at most the window), the average
    response time of those that got an answer, and the share that succeeded."""

    calls: int
    average_response_time_ms: int | None
    success_rate_percentage: Decimal | None


async def call_statistics(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    source_id: uuid.UUID,
    *,
    project_id: uuid.UUID | None = None,
    window: int = STATISTICS_WINDOW,
) -> CallStatistics:
    """Statistics over the last `window` logged calls of a source (of one project's refresh with
    `project_id`), read from api_integration_logs; the tenant must be set on `conn`. The source's
    own average response time and success rate (source health) are read here, a polling
    configuration's are also kept on its row."""
    row = (
        await conn.execute(
            text(
                "SELECT count(*) AS calls,"
                " round(avg(processing_time_ms) FILTER (WHERE http_status IS NOT NULL)) AS average,"
                " round(100.0 * avg(success::int), 2) AS rate"
                " FROM (SELECT processing_time_ms, http_status, success FROM api_integration_logs"
                "       WHERE tenant_id = :t AND external_source_id = :s"
                "         AND (CAST(:p AS uuid) IS NULL OR opportunity_project_id = CAST(:p AS uuid))"
                "       ORDER BY api_call_timestamp DESC, created_at DESC LIMIT :n) recent"
            ),
            {"t": tenant_id, "s": source_id, "p": project_id, "n": window},
        )
    ).one()
    return CallStatistics(
        calls=int(row.calls),
        average_response_time_ms=None if row.average is None else int(row.average),
        success_rate_percentage=None if row.rate is None else Decimal(row.rate),
    )


def _as_httpx(method: str, answer: OutboundResponse) -> httpx.Response:
    """The guard's bounded answer as an httpx.Response for the connector (already decoded)."""
    headers = httpx.Headers(
        [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in ("content-encoding", "content-length",
                                                                               "transfer-encoding")]
    )
    return httpx.Response(
        answer.status_code, headers=headers, content=answer.content, request=httpx.Request(method, answer.url)
    )


class CallClient:
    """What a connector fetches through: `get` as on an httpx.AsyncClient, made by a SyncCaller for
    one target, with its settings and budget."""

    def __init__(self, caller: SyncCaller, target: CallTarget, settings: CallSettings, budget: Budget) -> None:
        self._caller = caller
        self.target = target
        self.settings = settings
        self._budget = budget

    async def get(self, url: httpx.URL | str, *, params: QueryParams | None = None) -> httpx.Response:
        return await self._caller.request(self.target, self.settings, self._budget, "GET", url, params=params)
