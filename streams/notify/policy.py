"""Delivery decisions (pure: time is passed in, nothing sleeps): rate limits, the emergency
bypass, circuit breakers and the retry schedule.

Why not aiolimiter / pybreaker / tenacity: those make the same decisions by waiting or by
wrapping the call, with their state in memory and their own clock. Here a decision must be
*recorded* (a held notification waits in the ledger for its digest, a retry waits in the ledger
for its time, so both survive a restart) and be testable at any instant, so the decisions are
these small functions and the waiting is the channel worker's (:mod:`streams.notify.dispatch`).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smh])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Rate:
    count: int
    period_s: float

    def __str__(self) -> str:
        return f"{self.count}/{self.period_s:g}s"


def parse_rate(raw: str) -> Rate | None:
    """``"20/1m"``, ``"5/10m"``, ``"100/h"``; empty or ``none``: no limit. ValueError otherwise."""
    if not raw.strip() or raw.strip().lower() == "none":
        return None
    found = _RATE.match(raw)
    if not found or int(found[1]) < 1 or found[2] == "0":
        raise ValueError(f"{raw!r} is not a rate: use COUNT/PERIOD such as 20/1m, 5/10m, 100/h (or none)")
    return Rate(int(found[1]), int(found[2] or 1) * _UNIT_S[found[3]])


class RateLimiter:
    """A sliding window: at most ``rate.count`` sends in any ``rate.period_s`` seconds."""

    def __init__(self, rate: Rate | None, sent: Iterable[float] = ()) -> None:
        self.rate = rate
        self._sent: deque[float] = deque(sorted(sent))

    def _prune(self, now: float) -> None:
        if self.rate is not None:
            while self._sent and self._sent[0] <= now - self.rate.period_s:
                self._sent.popleft()

    def allows(self, now: float) -> bool:
        self._prune(now)
        return self.rate is None or len(self._sent) < self.rate.count

    def record(self, now: float) -> None:
        if self.rate is not None:
            self._sent.append(now)

    def reopens_at(self, now: float) -> float:
        """When a send is allowed again (``now`` if it is)."""
        if self.allows(now):
            return now
        assert self.rate is not None
        return self._sent[0] + self.rate.period_s


def admits(emergency: bool, limiter: RateLimiter, now: float) -> bool:
    """Send now (True) or hold for the digest (False). The emergency bypass always sends."""
    return emergency or limiter.allows(now)


CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
BREAKER_GAUGE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


@dataclass
class Breaker:
    """Per channel: open after ``failures_to_open`` consecutive failed attempts; after
    ``cooldown_s`` one probe is let through (half-open); its success closes the breaker, its
    failure opens it again for another cool-down."""

    failures_to_open: int
    cooldown_s: float
    state: str = CLOSED
    failures: int = 0
    opened_at: float = field(default=0.0)

    def allows(self, now: float) -> bool:
        if self.state == OPEN and now >= self.opened_at + self.cooldown_s:
            self.state = HALF_OPEN
        return self.state != OPEN

    def probe_at(self) -> float:
        return self.opened_at + self.cooldown_s

    def succeeded(self) -> None:
        self.state, self.failures = CLOSED, 0

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.failures_to_open:
            self.state, self.opened_at = OPEN, now


def retry_delay(attempt: int, *, base_s: float, max_s: float, jitter: float,
                retry_after_s: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential, capped,
    with "equal jitter" (``jitter`` in [0, 1) picks a point in the upper half, so retries of many
    notifications spread out but never come back at once). A ``Retry-After`` is honoured: the
    delay is never shorter than what the service asked for."""
    exponential = min(max_s, base_s * 2 ** (attempt - 1))
    delay = exponential / 2 + jitter * exponential / 2
    return max(delay, retry_after_s) if retry_after_s is not None else delay
