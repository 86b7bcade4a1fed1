"""Settings of the live bus and its LISTEN connection (environment variables, documented defaults)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LiveConfig"]


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """How one process delivers live events (README, "Live alerts")."""

    # GWM_SUBSCRIPTIONS: on (default) | off. Off: no LISTEN connection, no bus, no subscriptions.
    enabled: bool = True
    # GWM_LIVE_QUEUE_SIZE: events queued per subscriber (at least 2). A full queue is replaced by
    # one resync event; filling again before that event is read closes the subscription.
    queue_size: int = 64
    # GWM_LIVE_MAX_READS: shared reads (one per tenant and permission set and batch) running at
    # once in the process.
    max_reads: int = 16
    # GWM_LIVE_SESSION_RECHECK_SECONDS: a subscriber's session, user, tenant and permissions are
    # read again at least this often (access-ending notifies act at once; this catches expiries).
    session_recheck_seconds: float = 60.0
    # GWM_LIVE_RECONNECT_MAX_SECONDS: the LISTEN connection's reconnect backoff starts at
    # reconnect_min_seconds, doubles after each failure, and stops growing here.
    reconnect_max_seconds: float = 30.0
    reconnect_min_seconds: float = 0.1
    # GWM_LIVE_KEEPALIVE_SECONDS: how often the LISTEN connection is probed (a silent network
    # loss is noticed within about this long).
    keepalive_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.queue_size < 2:
            raise ValueError("queue_size must be at least 2")
        if self.max_reads < 1:
            raise ValueError("max_reads must be at least 1")
        if min(self.session_recheck_seconds, self.reconnect_min_seconds, self.keepalive_seconds) <= 0:
            raise ValueError("intervals must be positive")
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError("reconnect_max_seconds must not be below reconnect_min_seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LiveConfig:
        env = os.environ if env is None else env
        switch = (env.get("GWM_SUBSCRIPTIONS") or "on").strip().lower()
        if switch not in {"on", "off"}:
            raise ValueError("GWM_SUBSCRIPTIONS must be on or off")
        return cls(
            enabled=switch == "on",
            queue_size=int(env.get("GWM_LIVE_QUEUE_SIZE") or 64),
            max_reads=int(env.get("GWM_LIVE_MAX_READS") or 16),
            session_recheck_seconds=float(env.get("GWM_LIVE_SESSION_RECHECK_SECONDS") or 60),
            reconnect_max_seconds=float(env.get("GWM_LIVE_RECONNECT_MAX_SECONDS") or 30),
            keepalive_seconds=float(env.get("GWM_LIVE_KEEPALIVE_SECONDS") or 10),
        )
