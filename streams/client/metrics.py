"""Prometheus counters of the SDK and a rate-limited logger for drops."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally

from prometheus_client import Counter

EVENTS_SENT = Counter(
    "dbopt_sdk_events_sent_total", "QueryEvents acknowledged by Kafka.", ["service"]
)
EVENTS_DROPPED = Counter(
    "dbopt_sdk_events_dropped_total",
    "QueryEvents the SDK gave up on instead of blocking or raising into the service.",
    ["service", "reason"],
)


class DropLog:
    """Logs drops at most once per ``interval_s``, with the counts accumulated since the last line."""

    def __init__(self, logger: logging.Logger, service: str, interval_s: float) -> None:
        self._logger = logger
        self._service = service
        self._interval_s = interval_s
        self._pending: Tally[str] = Tally()
        self._last = float("-inf")
        self._lock = threading.Lock()

    def record(self, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._pending[reason] += 1
            if now - self._last < self._interval_s:
                return
            pending, self._pending, self._last = dict(self._pending), Tally(), now
        self._logger.warning(
            "dbopt SDK for service %s dropped QueryEvents (not blocking the service): %s",
            self._service,
            ", ".join(f"{reason}={count}" for reason, count in sorted(pending.items())),
        )
