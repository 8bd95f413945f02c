"""Per-statement cost of the dbopt SDK inside a service.

Measures, per statement: normalization on a cache miss (pglast parse + fingerprint + canonical
text), a cache hit (what a repeated statement costs), building the event, the full
``emit_statement`` path (cache hit + Avro encoding + librdkafka enqueue + poll(0)) against the
local broker, and ``emit_statement`` in sketch mode (cache hit + counting the execution in its
statement's sketch; the sketches go out once per interval). Run (servers up: ``make up``):

    .venv/bin/python bench/sdk_cost.py --iterations 20000
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Callable

from confluent_kafka.admin import NewTopic

from streams.client import EventProducer
from streams.client.events import query_event
from streams.config import load_settings
from streams.kafka import clients
from streams.sql import StatementCache, normalize

STATEMENTS = [
    "SELECT b.id, b.status, v.name FROM bookings b JOIN vendors v ON v.id = b.vendor_id "
    "WHERE b.wedding_id = 48213 AND v.category = 'photography' ORDER BY b.created_at DESC LIMIT 20",
    "INSERT INTO payments (booking_id, amount, currency, paid_at) VALUES (918273, 4321.99, 'EUR', now())",
    "UPDATE guests SET rsvp = 'yes', email = 'zoe.hartley@example.com' WHERE id = 77123",
    "SELECT count(*) FROM timeline_events WHERE wedding_id = 48213 AND starts_at BETWEEN '2031-07-19' AND '2031-07-20'",
    "DELETE FROM guests WHERE wedding_id = 48213 AND id IN (1, 2, 3, 4, 5)",
]


def per_call_us(fn: Callable[[int], object], iterations: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of the mean cost of one call, in microseconds."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for i in range(iterations):
            fn(i)
        runs.append((time.perf_counter_ns() - start) / iterations / 1000)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20000, help="calls per measured run (default 20000)")
    args = parser.parse_args()
    n = args.iterations
    settings = load_settings()
    k = len(STATEMENTS)

    # cache miss: every call normalizes a statement text never seen before (different literal)
    miss = per_call_us(lambda i: normalize(STATEMENTS[i % k].replace("48213", str(i))), max(n // 10, 100))
    cache = StatementCache(settings.sdk_statement_cache)
    hit = per_call_us(lambda i: cache.get(STATEMENTS[i % k]), n)
    build = per_call_us(
        lambda i: query_event(
            sql=STATEMENTS[i % k], cache=cache, service="bench", instance_id="bench-1", duration_ms=1.0,
            rows=1, error=None, event_time_ms=None, context={},
        ),
        n,
    )

    topic = f"dbopt.bench.sdk-cost.{uuid.uuid4().hex[:8]}"
    admin = clients.admin(settings)
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(timeout=30)
    bench_settings = settings.with_overrides(topics=settings.topics.with_overrides(query_events=topic))
    with EventProducer(bench_settings, "bench-service", instance_id="bench-1") as producer:
        emit = per_call_us(lambda i: producer.emit_statement(STATEMENTS[i % k], 1.0, 1), n)
        left = producer.flush(60)
        dropped = dict(producer.dropped)
    # sketch mode (DBOPT_SDK_MODE=sketch): each call lands in its statement's sketch; one record per
    # statement and 10 s interval goes to Kafka (sent by close() here)
    sketches = topic.replace("sdk-cost", "sdk-cost-sketches")
    for future in admin.create_topics([NewTopic(sketches, 1, 1)]).values():
        future.result(timeout=30)
    sketch_settings = settings.with_overrides(sdk_mode="sketch", topics=settings.topics.with_overrides(
        query_events=topic, statement_sketches=sketches))  # fmt: skip
    with EventProducer(sketch_settings, "bench-service", instance_id="bench-1") as producer:
        sketched = per_call_us(lambda i: producer.emit_statement(STATEMENTS[i % k], 0.5 + i % 97, 1), n)
        producer.close(60)
        sketch_records = producer._sketches.sketches_sent if producer._sketches else 0  # noqa: SLF001
        represented, sketch_dropped = producer.sent, dict(producer.dropped)
    for future in admin.delete_topics([topic, sketches]).values():
        future.result(timeout=30)

    print(f"iterations per run: {n} (cache miss: {max(n // 10, 100)}), median of 5 runs")
    print(f"normalize, cache miss          {miss:8.1f} us/statement")
    print(f"normalize, cache hit           {hit:8.2f} us/statement")
    print(f"build event (cache hit)        {build:8.1f} us/statement")
    print(f"emit_statement (hit, to Kafka) {emit:8.1f} us/statement")
    print(f"not delivered after flush: {left}; dropped: {dropped or 'none'}")
    print(f"emit_statement, sketch mode (hit) {sketched:5.2f} us/statement")
    print(f"sketch mode: {represented} executions delivered in {sketch_records} StatementSketch records; "
          f"dropped: {sketch_dropped or 'none'}")


if __name__ == "__main__":
    main()
