"""Resident memory of one ``dbopt worker`` process holding ``--keys`` live window keys.

    .venv/bin/python bench/worker_memory.py [--keys 100000] [--events-per-key 4]

A fresh topic gets ``--keys`` distinct (service, fingerprint) keys — 100 services, each with
keys/100 fingerprints (within DBOPT_INGEST_MAX_FINGERPRINTS_PER_SERVICE), over ten statement
texts — each with ``--events-per-key`` events spread over the last three minutes, so every key
has panes in open windows (the hopping windows keep a pane five minutes). The worker (default
settings, RocksDB for the Faust agents' tables) drains the topic; then its RSS (``VmRSS`` of
/proc) and its ``dbopt_windows_live_keys`` / ``dbopt_windows_live_panes`` gauges are read. The
baseline is the same worker idle on an empty topic. Measured for the whole worker and for the
windows stage alone (``dbopt worker --stage windows``; the Faust agents then run elsewhere).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from common import bench_settings, committed, send, total, worker_env
from confluent_kafka.admin import NewTopic

from streams.config import Settings
from streams.kafka import clients
from streams.serde import Codec

TEXTS = tuple(f"SELECT * FROM bookings WHERE vendor_id = $1 AND status = $2 LIMIT {i + 1}" for i in range(10))


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def gauge(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def _create(settings: Settings, topic: str) -> None:
    admin = clients.admin(settings)  # kept alive until the topic exists
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[topic].result()


def fill(settings: Settings, topic: str, keys: int, per_key: int) -> int:
    _create(settings, topic)
    codec = Codec.from_settings(settings)
    producer = clients.producer(settings, linger_ms=50, compression_type="zstd")
    rng = np.random.default_rng(3)
    now = int(time.time() * 1000)
    services, per_service = 100, keys // 100
    n = 0
    for round_ in range(per_key):  # every key once per round, rounds in event-time order
        base = now - 180_000 + round_ * 180_000 // per_key
        for k in range(services * per_service):
            service = f"service-{k % services}"
            record = {
                "event_id": uuid.uuid4().hex, "service": service, "instance_id": "bench",
                "event_time": base + int(rng.integers(0, 180_000 // per_key)), "fingerprint": f"{k:016x}",
                "query_text": TEXTS[k % len(TEXTS)], "statement_type": "SELECT", "tables": ["bookings"],
                "duration_ms": float(rng.lognormal(2.0, 1.0)), "rows": 1, "error": None,
            }  # fmt: skip
            send(producer, topic, service.encode(), codec.encode("QueryEvent", record, topic=topic))
            n += 1
        producer.flush()
    return n


def measure(settings: Settings, topic: str, events: int, stage: str) -> tuple[float, float, float, float]:
    """(RSS MB once drained and a minute after, live keys, seconds to drain) of a worker on ``topic``."""
    env, app_id = worker_env(settings, topic)
    port = int(env["DBOPT_WORKER_WEB_PORT"])
    log = Path(tempfile.mkstemp(prefix="dbopt-bench-memory-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--stage", stage, "--log-level",
                                 "warning"], env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        started = time.perf_counter()
        try:
            while committed(settings, app_id, topic) < events or (events == 0 and time.perf_counter() - started < 20):
                if proc.poll() is not None:
                    raise SystemExit(f"worker exited with {proc.returncode}; log: {log}")
                time.sleep(1)
            drained = time.perf_counter() - started
            time.sleep(3)  # a tick: the gauges are current
            at_drain, keys = rss_mb(proc.pid), gauge(port, "dbopt_windows_live_keys")
            time.sleep(60)  # a minute on: the windows of the first minutes closed, the agents judged them
            return at_drain, rss_mb(proc.pid), keys, drained
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--events-per-key", type=int, default=4)
    parser.add_argument("--stages", default="all,windows",
                        help="which worker to measure: all (dbopt worker), windows (--stage windows) or both")
    args = parser.parse_args()
    stages = [stage for stage in ("all", "windows") if stage in args.stages.split(",")]
    settings = bench_settings()
    empty = f"dbopt.bench.memory-empty.{uuid.uuid4().hex[:8]}"
    _create(settings, empty)
    idle = {stage: measure(settings, empty, 0, stage)[0] for stage in stages}
    topics = [empty]
    names = {"all": "dbopt worker", "windows": "dbopt worker --stage windows"}
    for stage, name in ((stage, names[stage]) for stage in stages):
        topic = f"dbopt.bench.memory.{uuid.uuid4().hex[:8]}"  # a fresh one each: the same age when read
        topics.append(topic)
        n = fill(settings, topic, args.keys, args.events_per_key)
        assert total(settings, topic) == n
        at_drain, later, keys, drained = measure(settings, topic, n, stage)
        print(f"{name}: idle {idle[stage]:.0f} MB; {n:,} events ({args.keys:,} keys x {args.events_per_key} over "
              f"the last 3 minutes) drained in {drained:.0f} s, {keys:,.0f} live keys: RSS {at_drain:.0f} MB, "
              f"a minute later {later:.0f} MB", flush=True)
    admin = clients.admin(settings)
    for future in admin.delete_topics(topics).values():
        future.result()


if __name__ == "__main__":
    main()
