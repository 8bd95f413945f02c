"""``watch_pool``: a psycopg_pool pool's state, every few seconds, as PoolSnapshot records.

    pool = ConnectionPool(url, max_size=20, configure=lambda conn: instrument(conn, producer))
    watch = watch_pool(pool, producer, interval=5.0, name="default")
    ...
    watch.stop()

A daemon thread samples the pool every ``interval`` seconds and queues one PoolSnapshot on the
producer's connection (topic ``DBOPT_TOPIC_POOL_SNAPSHOTS``, keyed by service). The pool's own
figures come from ``pool.get_stats()`` (psycopg_pool's documented stats: ``pool_min``, ``pool_max``,
``pool_size``, ``pool_available``, ``requests_waiting``): size, max, in use (= size - available),
idle, waiting. ``get_stats`` only has the *sum* of the waits of queued requests, so the interval's
checkout-wait p95, longest wait, number of checkouts and of timeouts come from timing each
checkout: the watch replaces the pool object's ``getconn`` with a timed call of the original
(``pool.connection()`` goes through it), and ``stop()`` puts the original back.

What runs on the service's threads is that timing only (two clock reads and an append under a
lock); sampling, encoding and producing happen on the sampler thread, which never raises: a full
producer queue or a failed delivery is counted in ``watch.dropped``. The SDK's statement events
work on pooled connections as on any other: instrument each connection the pool opens with the
pool's ``configure`` callback, as above.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter as Tally
from typing import Any

from confluent_kafka import KafkaError, Message
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from streams.client.producer import EventProducer
from streams.kafka.topics import ensure_in_background
from streams.records import PoolSnapshot

log = logging.getLogger(__name__)

MAX_SAMPLES = 4096  # checkout waits kept per interval; beyond, a uniform reservoir of this many


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without float surprises
    return ordered[int(rank) - 1]


class CheckoutTimes:
    """The checkout waits of the current interval; filled by the service's threads, drained by the sampler."""

    def __init__(self, capacity: int = MAX_SAMPLES, seed: int | None = None) -> None:
        self.capacity = capacity
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._waits: list[float] = []
        self._count = 0
        self._timeouts = 0
        self._longest = 0.0

    def record(self, wait_ms: float, timed_out: bool = False) -> None:
        with self._lock:
            self._count += 1
            self._timeouts += timed_out
            self._longest = max(self._longest, wait_ms)
            if len(self._waits) < self.capacity:
                self._waits.append(wait_ms)
            else:  # reservoir sampling: every wait of the interval is kept with the same chance
                slot = self._rng.randrange(self._count)
                if slot < self.capacity:
                    self._waits[slot] = wait_ms

    def drain(self) -> tuple[int, int, float | None, float | None]:
        """(checkouts, timeouts, p95 ms, longest ms) since the last drain; the waits are None without checkouts."""
        with self._lock:
            waits, count, timeouts, longest = self._waits, self._count, self._timeouts, self._longest
            self._reset()
        if not count:
            return 0, 0, None, None
        return count, timeouts, percentile(waits, 95), longest


def _timed_getconn(pool: ConnectionPool[Any] | AsyncConnectionPool[Any], times: CheckoutTimes) -> Any:
    original = pool.getconn  # the bound method of the class

    if isinstance(pool, AsyncConnectionPool):

        async def getconn_async(timeout: float | None = None) -> Any:
            started = time.perf_counter()
            try:
                conn = await original(timeout)
            except PoolTimeout:
                times.record((time.perf_counter() - started) * 1000, timed_out=True)
                raise
            times.record((time.perf_counter() - started) * 1000)
            return conn

        return getconn_async

    def getconn(timeout: float | None = None) -> Any:
        started = time.perf_counter()
        try:
            conn = original(timeout)
        except PoolTimeout:
            times.record((time.perf_counter() - started) * 1000, timed_out=True)
            raise
        times.record((time.perf_counter() - started) * 1000)
        return conn

    return getconn


class PoolWatch:
    """The handle :func:`watch_pool` returns: ``stop()`` ends the sampling and the checkout timing."""

    def __init__(
        self, pool: ConnectionPool[Any] | AsyncConnectionPool[Any], producer: EventProducer, interval: float, name: str
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be a positive number of seconds")
        self.pool, self.producer, self.interval, self.name = pool, producer, interval, name
        self.topic = producer.settings.topics.pool_snapshots
        dbname = conninfo_to_dict(pool.conninfo).get("dbname") if isinstance(pool.conninfo, str) else None
        self.database = producer.database or (None if dbname is None else str(dbname))
        self.times = CheckoutTimes()
        self.sent = 0
        self.dropped: Tally[str] = Tally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last = time.monotonic()
        ensure_in_background(producer.settings, ["pool_snapshots"], log)
        pool.getconn = _timed_getconn(pool, self.times)  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._run, name=f"dbopt-pool-{name}", daemon=True)
        self._thread.start()

    def snapshot(self, now_ms: int | None = None) -> PoolSnapshot:
        """The pool now, with the checkout figures since the previous snapshot."""
        stats = self.pool.get_stats()
        checkouts, timeouts, p95, longest = self.times.drain()
        now = time.monotonic()
        interval_ms, self._last = int((now - self._last) * 1000), now
        size, available = stats.get("pool_size", 0), stats.get("pool_available", 0)
        return PoolSnapshot(
            service=self.producer.service,
            instance_id=self.producer.instance_id,
            pool_name=self.name,
            snapshot_time=int(time.time() * 1000) if now_ms is None else now_ms,
            size=size,
            max_size=stats.get("pool_max", 0),
            in_use=max(0, size - available),
            idle=available,
            waiting=stats.get("requests_waiting", 0),
            database=self.database,
            min_size=stats.get("pool_min", 0),
            interval_ms=interval_ms,
            checkouts=checkouts,
            checkout_wait_p95_ms=p95,
            checkout_wait_max_ms=longest,
            timeouts=timeouts,
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.producer.produce_record(self.topic, self.snapshot(), self._delivered)
            except BufferError:
                self._drop("buffer_full")
            except Exception:  # the service must never notice: count it and keep sampling
                log.debug("dbopt SDK: pool snapshot of %s failed", self.name, exc_info=True)
                self._drop("snapshot_error")

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._drop("delivery_failed")
            return
        with self._lock:
            self.sent += 1

    def _drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] += 1

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sampling and give the pool its own ``getconn`` back (snapshots queued are still delivered)."""
        self._stop.set()
        self._thread.join(timeout)
        self.pool.__dict__.pop("getconn", None)


def watch_pool(
    pool: ConnectionPool[Any] | AsyncConnectionPool[Any],
    producer: EventProducer,
    interval: float = 5.0,
    name: str = "default",
) -> PoolWatch:
    """Emit a PoolSnapshot of ``pool`` every ``interval`` seconds from a background thread."""
    return PoolWatch(pool, producer, interval, name)
