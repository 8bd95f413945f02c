"""Close-to-output latency of a live ``dbopt worker``: from the moment a window can close to its
WindowStats, and to its Alert, on their topics.

    .venv/bin/python bench/close_latency.py [--windows 12] [--window-ms 10000] [--rate 400]

A producer sends live QueryEvents (event time = now) at ``--rate`` events/s to the six partitions of
a fresh topic: background services with fast statements in every partition, and for each window
ten new services whose booking statement takes 80-150 ms — over the booking SLO (50 ms), so each
of them fires an alert on its first window (``DBOPT_DETECT_FIRE_AFTER=1``). Windows are
``--window-ms`` long (tumbling = hop, hopping = 5 of them) with a 2 s grace, so the run sees many.

A window [start, end) *can close* once its partition holds an event with event time >= end + grace
(the watermark passes end + grace): that event's acknowledgement by the broker is the start. The
stop is when a consumer of the latency-windows (or alerts) topic, in this process, receives the
record. Reported: p50, p99 and max over every tumbling WindowStats and every Alert.
"""

from __future__ import annotations

import argparse
import bisect
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import bench_settings, free_port
from compare import load
from confluent_kafka import KafkaError, Message
from confluent_kafka.admin import NewTopic

from streams.config import Settings
from streams.kafka import clients
from streams.kafka.consume import assigned_consumer
from streams.serde import Codec

PARTITIONS = 6
GRACE_MS = 2_000
FAST = "SELECT * FROM vendors WHERE city = $1"
SLOW = "SELECT * FROM bookings WHERE wedding_id = $1"


def produce(settings: Settings, topic: str, rate: int, until: float, window_ms: int,
            acks: dict[int, list[tuple[int, float]]], partition_of: dict[str, int]) -> None:  # fmt: skip
    """Live events until ``until`` (monotonic); ``acks[partition]``: (event time, ack wall time)."""
    codec = Codec.from_settings(settings)
    producer = clients.producer(settings, linger_ms=5)
    rng = np.random.default_rng(5)
    lock = threading.Lock()

    def acked(err: KafkaError | None, msg: Message, event_time: int) -> None:
        if err is None:
            with lock:
                acks[msg.partition()].append((event_time, time.time()))  # type: ignore[index]

    sent = 0
    started = time.monotonic()
    while time.monotonic() < until:
        now_ms = int(time.time() * 1000)
        if rng.random() < 0.8:
            index = int(rng.integers(0, 2 * PARTITIONS))
            service, partition, text, duration = f"bg-{index}", index % PARTITIONS, FAST, float(rng.uniform(1, 8))
        else:
            index = int(rng.integers(0, 10))
            service = f"w{now_ms // window_ms}-{index}"
            partition, text, duration = index % PARTITIONS, SLOW, float(rng.uniform(80, 150))
        partition_of[service] = partition
        record = {
            "event_id": uuid.uuid4().hex, "service": service, "instance_id": "bench", "event_time": now_ms,
            "query_text": text, "statement_type": "SELECT", "tables": [], "duration_ms": duration, "rows": 1,
        }  # fmt: skip
        producer.produce(topic, key=service.encode(), value=codec.encode("QueryEvent", record, topic=topic),
                         partition=partition, on_delivery=lambda err, msg, t=now_ms: acked(err, msg, t))  # fmt: skip
        producer.poll(0)
        sent += 1
        pause = started + sent / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    producer.flush(30)


def closable_at(times: list[int], acks: list[float], window_end: int) -> float | None:
    """Wall time the first event with event time >= end + grace was acknowledged in a partition
    (``times`` ascending; ``acks[i]``: the earliest acknowledgement of ``times[i:]``)."""
    at = bisect.bisect_left(times, window_end + GRACE_MS)
    return acks[at] if at < len(acks) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=12, help="windows to measure")
    parser.add_argument("--window-ms", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=400, help="events per second")
    args = parser.parse_args()
    settings = bench_settings()
    suffix = uuid.uuid4().hex[:8]
    topics = settings.topics.with_overrides(**{name: f"{topic}.latency-{suffix}" for name, topic
                                               in settings.topics.all().items()})  # fmt: skip
    settings = settings.with_overrides(topics=topics)
    admin = clients.admin(settings)
    for future in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics.all().values()]).values():
        future.result()
    deadline = time.monotonic() + 30  # created is not yet visible to a new client's metadata request
    while set(topics.all().values()) - set(admin.list_topics(timeout=10).topics) and time.monotonic() < deadline:
        time.sleep(0.2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}
    env.update({f"DBOPT_TOPIC_{name.upper()}": topic for name, topic in topics.all().items()})
    port = free_port()
    window = str(args.window_ms)
    env.update(
        DBOPT_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, DBOPT_WORKER_APP_ID=f"bench-latency-{suffix}",
        DBOPT_WORKER_DATA_DIR=tempfile.mkdtemp(prefix="dbopt-bench-"), DBOPT_WORKER_WEB_PORT=str(port),
        DBOPT_WINDOW_TUMBLING_MS=window, DBOPT_WINDOW_HOP_MS=window, DBOPT_WINDOW_HOPPING_MS=str(5 * args.window_ms),
        DBOPT_WINDOW_GRACE_MS=str(GRACE_MS), DBOPT_DETECT_FIRE_AFTER="1", DBOPT_DETECT_MIN_SAMPLES="5",
    )  # fmt: skip
    log = Path(tempfile.mkstemp(prefix="dbopt-bench-latency-", suffix=".log")[1])
    codec = Codec.from_settings(settings)
    received: dict[str, list[tuple[float, dict]]] = defaultdict(list)  # type: ignore[type-arg]
    stop = threading.Event()

    def collect(topic: str) -> None:
        consumer = assigned_consumer(settings, topic)
        while not stop.is_set():
            for msg in consumer.consume(100, timeout=0.2):
                if msg.error() is None:
                    received[topic].append((time.time(), codec.decode(msg.value()).record))
        consumer.close()

    readers = [threading.Thread(target=collect, args=(t,)) for t in (topics.latency_windows, topics.alerts)]
    for reader in readers:
        reader.start()
    print(f"worker ({load()}) ...", flush=True)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--log-level", "warning"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                        break
                except OSError:
                    time.sleep(0.5)
            acks: dict[int, list[tuple[int, float]]] = defaultdict(list)
            partition_of: dict[str, int] = {}
            run_s = (args.windows + 1) * args.window_ms / 1000
            produce(settings, topics.query_events, args.rate, time.monotonic() + run_s, args.window_ms, acks,
                    partition_of)  # fmt: skip
            time.sleep(GRACE_MS / 1000 + 5)  # the last windows' records arrive
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            stop.set()
            for reader in readers:
                reader.join()
    ordered = {}
    for partition, pairs in acks.items():
        pairs.sort()
        earliest = list(np.minimum.accumulate([ack for _, ack in pairs][::-1])[::-1])
        ordered[partition] = ([t for t, _ in pairs], earliest)
    print(f"done ({load()})")
    for name, topic, keep in (("WindowStats (tumbling)", topics.latency_windows, lambda r: r["window_kind"] == "tumbling"),
                              ("Alert", topics.alerts, lambda r: r["state"] == "firing")):  # fmt: skip
        latencies = []
        for at, record in received[topic]:
            partition = partition_of.get(record["service"])
            if partition is None or not keep(record):
                continue
            start = closable_at(*ordered[partition], record["window_end"])
            if start is not None:
                latencies.append((at - start) * 1000)
        values = np.array(latencies)
        print(f"{name}: {values.size} records, latency p50 {np.percentile(values, 50):.0f} ms, "
              f"p99 {np.percentile(values, 99):.0f} ms, max {values.max():.0f} ms")
    for future in admin.delete_topics(list(topics.all().values())).values():
        future.result()


if __name__ == "__main__":
    main()
