"""One worker thread per channel: a slow or broken channel never delays the others.

Each worker owns its channel, a PostgreSQL connection, the channel's breaker and its rate
limiters (one per target). It takes due deliveries from the ledger one at a time (so at most one
request per channel is ever in flight), holds what its rate limit refuses, makes the digest when
the window reopens, and records every outcome in the ledger before it takes the next one.

A session advisory lock per channel makes one worker the channel's only sender across every
``dbopt notify`` process sharing the ledger; the others stand by and take over when its session
ends (a crash included). On (re)start the rate limiters are rebuilt from the ledger; deliveries
left pending by a crash are simply due again (at-least-once: only a delivery in flight at the
very moment of a crash can reach its service twice, and every channel carries a stable id the
receiver can drop it by).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from typing import Callable

import psycopg

from streams import db
from streams.config import Settings

from . import model
from .channels.base import Channel, DeliveryError
from .ledger import Delivery, Ledger
from .metrics import BREAKER_STATE, DELIVERY_SECONDS, NOTIFICATIONS
from .policy import BREAKER_GAUGE, Breaker, RateLimiter, admits, parse_rate, retry_delay

log = logging.getLogger("dbopt.notify.dispatch")
Clock = Callable[[], float]


def channel_lock_key(channel: str) -> int:
    return zlib.crc32(f"dbopt-notify:{channel}".encode()) | (0x6E6F74 << 32)  # "not" in the high bits


class ChannelWorker(threading.Thread):
    def __init__(self, settings: Settings, channel: Channel, stop: threading.Event, *,
                 clock: Clock = time.time, jitter: Callable[[], float] = random.random) -> None:
        super().__init__(name=f"notify-{channel.name}", daemon=True)
        self.settings, self.channel, self.stop, self.clock, self.jitter = settings, channel, stop, clock, jitter
        n = settings.notify
        self.rate = parse_rate(getattr(n, f"{channel.name}_rate"))
        self.breaker = Breaker(n.breaker_failures, n.breaker_cooldown_s)
        self.limiters: dict[str, RateLimiter] = {}
        self.wake = threading.Event()
        self.active = threading.Event()  # holds the channel's lock (for tests and health)
        BREAKER_STATE.labels(channel.name).set(0)

    def run(self) -> None:
        delay = 0.5
        try:
            while not self.stop.is_set():
                try:
                    with db.connect(self.settings, application_name=f"dbopt-notify-{self.channel.name}") as conn:
                        delay = 0.5
                        self._serve(Ledger(conn, self.settings.executor.audit_schema), conn)
                except psycopg.Error as exc:  # the server went away, or the ledger is not usable yet
                    self.active.clear()
                    log.warning("%s: ledger unavailable (%s); retrying in %.1fs", self.channel.name, exc, delay)
                    self.stop.wait(delay)
                    delay = min(delay * 2, self.settings.executor.db_retry_max_s)
        finally:
            self.channel.close()

    def _serve(self, ledger: Ledger, conn: psycopg.Connection) -> None:
        key = channel_lock_key(self.channel.name)
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]:  # type: ignore[index]
            if self.stop.wait(1.0):
                return
        self.active.set()
        period = self.rate.period_s if self.rate else 0.0
        sent = ledger.recent_sends(self.channel.name, self.clock() - period) if self.rate else {}
        self.limiters = {target: RateLimiter(self.rate, times) for target, times in sent.items()}
        while not self.stop.is_set():
            now = self.clock()
            self._digests(ledger, now)
            delivery = ledger.next_due(self.channel.name, now)
            if delivery is None:
                self._sleep(ledger.next_attempt_at(self.channel.name), now)
                continue
            n = delivery.notification
            if n.kind != model.DIGEST_KIND and not admits(n.emergency, self._limiter(delivery.target), now):
                ledger.hold(delivery, f"held by the {self.channel.name} rate limit {self.rate}")
                NOTIFICATIONS.labels(self.channel.name, "held").inc()
                continue
            if not self.breaker.allows(now):
                self._sleep(self.breaker.probe_at(), now)
                continue
            self._attempt(ledger, delivery)

    def _limiter(self, target: str) -> RateLimiter:
        if target not in self.limiters:
            self.limiters[target] = RateLimiter(self.rate)
        return self.limiters[target]

    def _digests(self, ledger: Ledger, now: float) -> None:
        if self.rate is None:
            return
        for target, members in ledger.held(self.channel.name).items():
            if self._limiter(target).allows(now):
                digest = model.digest(self.channel.name, target, [m.notification for m in members],
                                      ui_url=self.settings.ui_url)
                ledger.make_digest(digest, self.channel.name, target, members, now)
                NOTIFICATIONS.labels(self.channel.name, "digested").inc(len(members))

    def _sleep(self, until: float | None, now: float) -> None:
        timeout = self.settings.notify.idle_poll_s
        if until is not None:
            timeout = min(timeout, max(until - now, 0.0))
        if self.wake.wait(timeout):
            self.wake.clear()

    def _attempt(self, ledger: Ledger, delivery: Delivery) -> None:
        name, attempts = self.channel.name, delivery.attempts + 1
        try:
            self.channel.send(delivery.notification, delivery.target)
        except DeliveryError as exc:
            now = self.clock()
            if not exc.retryable:
                ledger.finish(delivery, "failed", attempts, now, f"not retried: {exc.reason}")
                NOTIFICATIONS.labels(name, "failed").inc()
                log.error("%s: %s failed for good: %s", name, delivery.notification.notification_id, exc.reason)
            else:
                self.breaker.failed(now)
                if attempts >= self.settings.notify.max_attempts:
                    ledger.finish(delivery, "failed", attempts, now, f"gave up after {attempts} attempts: {exc.reason}")
                    NOTIFICATIONS.labels(name, "failed").inc()
                    log.error("%s: gave up on %s: %s", name, delivery.notification.notification_id, exc.reason)
                else:
                    n = self.settings.notify
                    wait = retry_delay(attempts, base_s=n.retry_base_s, max_s=n.retry_max_s, jitter=self.jitter(),
                                       retry_after_s=exc.retry_after_s)
                    ledger.retry(delivery, attempts, now + wait, exc.reason)
                    NOTIFICATIONS.labels(name, "retried").inc()
                    log.warning("%s: attempt %d of %s failed (%s); next in %.1fs", name, attempts,
                                delivery.notification.notification_id, exc.reason, wait)
        else:
            now = self.clock()
            self.breaker.succeeded()
            self._limiter(delivery.target).record(now)
            ledger.finish(delivery, "delivered", attempts, now)
            NOTIFICATIONS.labels(name, "delivered").inc()
            DELIVERY_SECONDS.labels(name).observe(max(now - delivery.created_at, 0.0))
        BREAKER_STATE.labels(name).set(BREAKER_GAUGE[self.breaker.state])


class Dispatcher:
    """The channel workers of one ``dbopt notify`` process."""

    def __init__(self, settings: Settings, channels: dict[str, Channel], stop: threading.Event) -> None:
        self.workers = {name: ChannelWorker(settings, channel, stop) for name, channel in channels.items()}

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()

    def wake(self) -> None:
        for worker in self.workers.values():
            worker.wake.set()

    def join(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for worker in self.workers.values():
            worker.join(max(deadline - time.monotonic(), 0.0))
