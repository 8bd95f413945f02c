"""``watch_pool`` against a real pool, database and broker: snapshots carry the pool's own figures
and the interval's checkout waits and timeouts, sync and async pools alike; pooled connections
still report their statements; ``stop()`` hands the pool back."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable

import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from streams.client import EventProducer, instrument, watch_pool
from streams.client.pool import CheckoutTimes
from streams.config import Settings
from streams.kafka.consume import assigned_consumer
from streams.records import PoolSnapshot, QueryEvent
from streams.serde import Codec


def read_records(settings: Settings, topic: str, until: Callable[[list[Any]], bool], timeout: float = 20.0) -> list[Any]:
    """Typed records of ``topic`` from the start, until ``until(records)`` holds (or ``timeout``)."""
    codec = Codec.from_settings(settings)
    consumer = assigned_consumer(settings, topic)
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(records) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                records.append(codec.decode_record(msg.value()))
    finally:
        consumer.close()
    return records


def hold(pool: ConnectionPool[Any], seconds: float, outcomes: list[str]) -> None:
    try:
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(%s)", (seconds,))
        outcomes.append("ok")
    except PoolTimeout:
        outcomes.append("timeout")


def test_snapshots_carry_the_pool_figures_waits_and_timeouts(created_topics: Settings, scratch_db: str) -> None:
    settings = created_topics
    producer = EventProducer(settings, "booking-service", instance_id="booking-1")
    pool = ConnectionPool(scratch_db, min_size=1, max_size=2, timeout=0.4, open=True,
                          configure=lambda conn: instrument(conn, producer))
    watch = watch_pool(pool, producer, interval=0.5, name="primary")
    try:
        pool.wait(10)
        outcomes: list[str] = []
        threads = [threading.Thread(target=hold, args=(pool, 1.2, outcomes)) for _ in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join(10)
        assert sorted(outcomes) == ["ok", "ok", "timeout", "timeout"]
        time.sleep(1.2)  # the interval with the timeouts is reported
    finally:
        watch.stop()
        pool.close()
        producer.close()
    assert pool.getconn.__func__ is ConnectionPool.getconn  # type: ignore[attr-defined]  # handed back

    assert watch.sent >= 4 and not watch.dropped
    snaps = read_records(settings, settings.topics.pool_snapshots, lambda rs: len(rs) >= watch.sent)
    assert len(snaps) == watch.sent and all(isinstance(s, PoolSnapshot) for s in snaps)
    assert {(s.service, s.instance_id, s.pool_name) for s in snaps} == {("booking-service", "booking-1", "primary")}
    assert all(s.max_size == 2 and s.min_size == 1 and s.database == scratch_db.rpartition("/")[2] for s in snaps)
    assert all(s.in_use + s.idle == s.size and s.in_use <= 2 for s in snaps)
    busy = [s for s in snaps if s.in_use == 2 and s.waiting >= 1]
    assert busy, snaps  # two held, the others queued
    assert sum(s.timeouts for s in snaps) == 2 and sum(s.checkouts for s in snaps) >= 4
    waited = [s for s in snaps if s.checkout_wait_max_ms is not None and s.checkout_wait_max_ms >= 350]
    assert waited and all(s.checkout_wait_p95_ms is not None for s in waited)
    assert all(s.interval_ms > 0 for s in snaps)
    # the pooled connections reported their statements through the SDK
    events = read_records(settings, settings.topics.query_events, lambda rs: len(rs) >= 2)
    assert [e.query_text for e in events if isinstance(e, QueryEvent)][:2] == ["SELECT pg_sleep($1)"] * 2


def test_async_pool_is_watched_from_a_thread(created_topics: Settings, scratch_db: str) -> None:
    settings = created_topics
    producer = EventProducer(settings, "guest-service", instance_id="guest-1")

    async def main() -> None:
        pool = AsyncConnectionPool(scratch_db, min_size=1, max_size=1, open=False)
        await pool.open(wait=True)
        watch = watch_pool(pool, producer, interval=0.3)

        async def use() -> None:
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_sleep(0.3)")

        await asyncio.gather(use(), use(), use())
        await asyncio.sleep(0.4)
        watch.stop()
        await pool.close()

    asyncio.run(main())
    producer.close()
    snaps = [r for r in read_records(settings, settings.topics.pool_snapshots,
                                     lambda rs: sum(r.checkouts for r in rs) >= 3) if isinstance(r, PoolSnapshot)]
    assert sum(s.checkouts for s in snaps) == 3, snaps
    assert max(s.checkout_wait_max_ms or 0 for s in snaps) >= 250  # two tasks queued behind the one connection
    assert all(s.service == "guest-service" and s.pool_name == "default" and s.max_size == 1 for s in snaps)


def test_the_service_never_waits_for_the_broker(settings: Settings, scratch_db: str) -> None:
    dead = settings.with_overrides(kafka_bootstrap="127.0.0.1:1")
    producer = EventProducer(dead, "vendor-service", extra_config={"message.timeout.ms": 500})
    with ConnectionPool(scratch_db, min_size=1, max_size=2, open=True) as pool:
        watch = watch_pool(pool, producer, interval=0.05)
        started = time.perf_counter()
        for _ in range(50):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        assert time.perf_counter() - started < 5
        time.sleep(0.3)
        watch.stop()
    producer.close(timeout=1)


def test_checkout_times_p95_and_reservoir() -> None:
    times = CheckoutTimes(capacity=100, seed=7)
    assert times.drain() == (0, 0, None, None)
    for i in range(1, 101):
        times.record(float(i))
    times.record(5000.0, timed_out=True)
    count, timeouts, p95, longest = times.drain()
    assert (count, timeouts, longest) == (101, 1, 5000.0)
    assert p95 is not None and 90 <= p95 <= 100  # 100 kept of 101: p95 of the sample
    assert times.drain() == (0, 0, None, None)


def test_interval_must_be_positive(settings: Settings) -> None:
    producer = EventProducer(settings, "svc")
    pool = ConnectionPool("postgresql://x@127.0.0.1:1/none", open=False)
    with pytest.raises(ValueError, match="interval"):
        watch_pool(pool, producer, interval=0)
    producer.close(timeout=0.1)
