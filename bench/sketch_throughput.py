"""Statement executions one ``dbopt worker`` process takes per second when the services send
sketches (``DBOPT_SDK_MODE=sketch``) instead of events.

    .venv/bin/python bench/sketch_throughput.py [--sketches 200000] [--per-sketch 100]

A topic is filled once with ``--sketches`` StatementSketch records as a fleet would send them:
50 services x 4 instances x 10 statements, each sending one sketch per 10 s interval (about 17
minutes of event time, two hours ago), each sketch carrying ``--per-sketch`` executions
(lognormal durations, binned exactly as the SDK bins them). ``--per-sketch 100`` is a statement
run 10 times a second on one instance. The worker reads it with a fresh group and an empty events
topic; measured from launch until every offset is committed, and in steady state (10 % -> 100 %).
Executions per second = sketches per second x executions per sketch.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from common import MAX_AGE_MS, bench_settings, committed, ensure_topic, send, total, worker_env
from compare import drain, load

from streams.config import Settings
from streams.kafka import clients
from streams.serde import Codec
from streams.sql import normalize
from streams.windows.sketch import MAPPING

TEXTS = (
    "SELECT * FROM bookings WHERE wedding_id = $1 AND status = $2",
    "SELECT * FROM bookings WHERE vendor_id = $1 ORDER BY event_date",
    "SELECT id, name FROM vendors WHERE city = $1 ORDER BY rating DESC LIMIT $2",
    "SELECT * FROM vendors WHERE category = $1",
    "UPDATE guests SET rsvp = $1 WHERE id = $2",
    "SELECT count(*) FROM guests WHERE wedding_id = $1",
    "INSERT INTO payments (booking_id, amount) VALUES ($1, $2)",
    "SELECT * FROM payments WHERE booking_id = $1",
    "SELECT * FROM timeline WHERE wedding_id = $1 ORDER BY starts_at",
    "DELETE FROM invitations WHERE id = $1",
)
SERVICES, INSTANCES, STATEMENTS, INTERVAL_MS = 50, 4, len(TEXTS), 10_000


def fill(settings: Settings, topic: str, sketches: int, per_sketch: int) -> int:
    ensure_topic(settings, topic)
    have = total(settings, topic)
    if have >= sketches:
        print(f"reusing {topic}: {have} sketches")
        return have
    codec = Codec.from_settings(settings)
    producer = clients.producer(settings, linger_ms=50, compression_type="zstd")
    rng = np.random.default_rng(8)
    statements = [normalize(text) for text in TEXTS]
    start = (int(time.time() * 1000) - 2 * 3600 * 1000) // 60_000 * 60_000
    senders = SERVICES * INSTANCES * STATEMENTS
    print(f"filling {topic} with {sketches - have} sketches of {per_sketch} executions ...")
    for n in range(have, sketches):
        interval, sender = divmod(n, senders)
        service, rest = divmod(sender, INSTANCES * STATEMENTS)
        instance, statement = divmod(rest, STATEMENTS)
        durations = rng.lognormal(2.0 + statement / 10, 1.0, per_sketch)
        keys, counts = np.unique(np.ceil(np.log2(durations) * MAPPING.multiplier).astype(int), return_counts=True)
        begin = start + interval * INTERVAL_MS
        stmt = statements[statement]
        record = {
            "sketch_id": uuid.uuid4().hex, "service": f"service-{service}", "instance_id": f"pod-{instance}",
            "interval_start": begin, "interval_end": begin + INTERVAL_MS, "last_event_time": begin + INTERVAL_MS - 1,
            "fingerprint": stmt.fingerprint, "query_text": stmt.query_text, "statement_type": stmt.statement_type,
            "tables": list(stmt.tables), "database": None, "vendor_category": None, "wedding_id": None,
            "relative_accuracy": MAPPING.relative_accuracy, "count": per_sketch, "errors": 0, "rows": per_sketch,
            "sum_ms": float(durations.sum()), "min_ms": float(durations.min()), "max_ms": float(durations.max()),
            "zero_count": 0, "bin_keys": keys.tolist(), "bin_counts": counts.tolist(),
        }  # fmt: skip
        send(producer, topic, record["service"].encode(), codec.encode("StatementSketch", record, topic=topic))
        producer.poll(0)
    producer.flush()
    return total(settings, topic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sketches", type=int, default=200_000)
    parser.add_argument("--per-sketch", type=int, default=100)
    parser.add_argument("--stage", choices=("all", "windows"), default="all",
                        help="the whole worker (default), or its windows stage alone (dbopt worker --stage windows)")
    args = parser.parse_args()
    settings = bench_settings()
    topic = f"dbopt.bench.statement-sketches.{args.sketches // 1000}k-{args.per_sketch}"
    n = fill(settings, topic, args.sketches, args.per_sketch)
    events = f"dbopt.bench.no-events.{uuid.uuid4().hex[:8]}"  # the worker reads it too: empty
    env, app_id = worker_env(settings, events, DBOPT_TOPIC_STATEMENT_SKETCHES=topic,
                             DBOPT_INGEST_MAX_AGE_MS=str(MAX_AGE_MS))  # fmt: skip
    log = Path(tempfile.mkstemp(prefix="dbopt-bench-sketches-", suffix=".log")[1])
    print(f"dbopt worker ({load()}) ...", flush=True)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--stage", args.stage, "--log-level",
                                 "warning"], env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        overall, steady = drain(proc, lambda: committed(settings, app_id, topic), n, log)
    print(f"done ({load()})")
    clients.admin(settings).delete_topics([events])
    print(f"{n:,} sketches x {args.per_sketch} executions = {n * args.per_sketch:,} executions")
    print(f"| `dbopt worker --stage {args.stage}`, 1 process | sketches/s | executions represented/s |")
    print("|---|---|---|")
    print(f"| launch to all committed | {overall:,.0f} | {overall * args.per_sketch:,.0f} |")
    print(f"| steady (10 % -> 100 %) | {steady:,.0f} | {steady * args.per_sketch:,.0f} |")


if __name__ == "__main__":
    main()
