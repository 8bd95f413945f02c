"""Throughput of one ``dbopt worker`` process draining a pre-filled topic, measured in the same
run as a plain confluent-kafka consume-and-decode loop over the same topic.

    .venv/bin/python bench/worker_throughput.py [--events 1000000] [--partitions 6]

The input topic (``dbopt.bench.query-events.v1`` by default) is filled once with ``--events``
QueryEvents and reused by later runs. Event times lie within the last days, so the worker runs
with a matching ``DBOPT_INGEST_MAX_AGE_MS``; every run uses a fresh Faust app id (consumer group,
changelog topics) and fresh output topics, so it drains the whole topic.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from streams.config import Settings, Topics, load_settings
from streams.kafka import clients
from streams.serde import Codec

QUERIES = (
    ("SELECT * FROM bookings WHERE id = $1", ["bookings"]),
    ("SELECT * FROM vendors WHERE city = $1 ORDER BY rating DESC LIMIT $2", ["vendors"]),
    ("UPDATE guests SET rsvp = $1 WHERE id = $2", ["guests"]),
    ("INSERT INTO payments (booking_id, amount) VALUES ($1, $2)", ["payments"]),
)
MAX_AGE_MS = 30 * 24 * 3600 * 1000


def _total(settings: Settings, topic: str) -> int:
    consumer = clients.consumer(settings, f"bench-{uuid.uuid4().hex}")
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions)
    finally:
        consumer.close()


def fill(settings: Settings, topic: str, events: int, partitions: int) -> None:
    admin = clients.admin(settings)
    if topic not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result()
    have = _total(settings, topic)
    if have >= events:
        print(f"reusing {topic}: {have} events")
        return
    codec = Codec.from_settings(settings)
    producer = clients.producer(settings, linger_ms=50, compression_type="zstd")
    rng = np.random.default_rng(1)
    start = (int(time.time() * 1000) - 2 * 3600 * 1000) // 60_000 * 60_000
    n = events - have
    times = np.sort(start + rng.integers(0, 3600 * 1000, n))
    durations = rng.lognormal(2.0, 1.0, n)
    print(f"filling {topic} with {n} events ...")
    for i in range(n):
        service = f"service-{i % 20}"
        text, tables = QUERIES[i % len(QUERIES)]
        record = {
            "event_id": uuid.uuid4().hex, "service": service, "instance_id": "bench", "event_time": int(times[i]),
            "fingerprint": f"{i % 7:016x}", "query_text": text, "statement_type": text.split()[0], "tables": tables,
            "duration_ms": float(durations[i]), "rows": 1, "error": None,
        }  # fmt: skip
        while True:
            try:
                producer.produce(topic, key=service.encode(), value=codec.encode("QueryEvent", record, topic=topic))
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    producer.flush()


def plain_loop(settings: Settings, topic: str, events: int) -> float:
    """events/s of consume + decode with confluent-kafka, no processing."""
    codec = Codec.from_settings(settings)
    consumer = clients.consumer(settings, f"bench-plain-{uuid.uuid4().hex}")
    consumer.subscribe([topic])
    seen = 0
    started = None
    while seen < events:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error():
                continue
            if started is None:
                started = time.perf_counter()
            codec.decode(msg.value())
            seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return seen / elapsed


def _committed(settings: Settings, group: str, topic: str) -> int:
    consumer = clients.consumer(settings, group)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        offsets = consumer.committed([TopicPartition(topic, p) for p in meta.partitions], timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        consumer.close()


def worker_drain(settings: Settings, topic: str, events: int) -> tuple[float, float]:
    """(events/s from launch to all committed, events/s from 10% to 100% committed) of one worker."""
    suffix = uuid.uuid4().hex[:8]
    app_id = f"bench-worker-{suffix}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}
    env.update(
        DBOPT_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        DBOPT_TOPIC_QUERY_EVENTS=topic,
        DBOPT_TOPIC_LATENCY_WINDOWS=f"dbopt.bench.latency-windows.{suffix}",
        DBOPT_TOPIC_DLQ=f"dbopt.bench.dlq.{suffix}",
        DBOPT_TOPIC_ALERTS=f"dbopt.bench.alerts.{suffix}",
        DBOPT_WORKER_APP_ID=app_id,
        DBOPT_WORKER_DATA_DIR=tempfile.mkdtemp(prefix="dbopt-bench-"),
        DBOPT_WORKER_WEB_PORT=str(_free_port()),
        DBOPT_INGEST_MAX_AGE_MS=str(MAX_AGE_MS),
    )
    log = Path(tempfile.mkstemp(prefix="dbopt-bench-worker-", suffix=".log")[1])
    launched = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--log-level", "warning"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            t10 = None
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"worker exited with {proc.returncode}; log: {log}")
                done = _committed(settings, app_id, topic)
                now = time.perf_counter()
                if t10 is None and done >= events // 10:
                    t10, n10 = now, done
                if done >= events:
                    break
                time.sleep(1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    return events / (now - launched), (events - n10) / (now - t10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--topic", default="dbopt.bench.query-events.v1")
    args = parser.parse_args()
    settings = load_settings().with_overrides(topics=Topics())
    fill(settings, args.topic, args.events, args.partitions)
    total = _total(settings, args.topic)
    plain = plain_loop(settings, args.topic, total)
    print(f"plain confluent-kafka consume+decode: {plain:,.0f} events/s over {total} events")
    overall, steady = worker_drain(settings, args.topic, total)
    print(f"dbopt worker (1 process): {overall:,.0f} events/s including startup, {steady:,.0f} events/s steady (10%..100%)")


if __name__ == "__main__":
    main()
