"""The per-event path compared, in one run over the same pre-filled topic: a plain confluent-kafka
consume-and-decode loop, one ``dbopt worker`` process, and the same job in Quix Streams.

    .venv/bin/python bench/compare.py [--events 1000000] [--partitions 6] [--skip-quix]

The topic (``dbopt.bench.query-events.v1`` for 1,000,000 events) is filled once with QueryEvents
(20 services x 7 fingerprints, event times over one hour, zstd as the SDK sends them) and reused.
Each reader starts from the beginning with a fresh consumer group:

* **raw**: ``consume()`` + ``Codec.decode`` (Avro), nothing else — the ceiling of any Python reader;
* **dbopt**: ``dbopt worker`` (windows, detector, pools agents) with fresh output topics; measured
  from launch until every offset is committed, and in steady state (10 % -> 100 % committed);
* **quix**: ``bench/peers/quix_job.py`` in the benchmark-only virtualenv ``.run/bench-peers``
  (``make bench-peers``); done when its windowing stage (after the repartition topic) committed
  every record, steady state likewise.

The load average of the machine is printed before each reader (2 shared cores: other work
running at the same time slows every reader).
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
from collections.abc import Callable
from pathlib import Path

from common import bench_settings, committed, fill, total, worker_env

from streams.config import Settings
from streams.kafka import clients
from streams.serde import Codec

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / ".run" / "bench-peers" / "bin" / "python"


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def raw_loop(settings: Settings, topic: str, events: int) -> float:
    """events/s of consume + decode with confluent-kafka, no processing (first record to last)."""
    codec = Codec.from_settings(settings)
    consumer = clients.consumer(settings, f"bench-raw-{uuid.uuid4().hex}")
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


def drain(proc: subprocess.Popen[bytes], progress: Callable[[], int], events: int, log: Path) -> tuple[float, float]:
    """(events/s from launch until ``progress()`` reaches ``events``, events/s from 10 % to 100 %)."""
    launched = time.perf_counter()
    t10 = n10 = None
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"exited with {proc.returncode}; log: {log}")
            done = progress()
            now = time.perf_counter()
            if t10 is None and done >= events // 10:
                t10, n10 = now, done
            if done >= events:
                break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert t10 is not None and n10 is not None
    return events / (now - launched), (events - n10) / (now - t10)


def dbopt_worker(settings: Settings, topic: str, events: int) -> tuple[float, float]:
    env, app_id = worker_env(settings, topic)
    log = Path(tempfile.mkstemp(prefix="dbopt-bench-worker-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--log-level", "warning"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        return drain(proc, lambda: committed(settings, app_id, topic), events, log)


def quix(settings: Settings, topic: str, events: int) -> tuple[float, float]:
    if not PEERS_PYTHON.exists():
        raise SystemExit(f"{PEERS_PYTHON} is missing: run `make bench-peers` (or pass --skip-quix)")
    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    repartition = f"repartition__{group}--{topic}--service_fingerprint"
    log = Path(tempfile.mkstemp(prefix="dbopt-bench-quix-", suffix=".log")[1])
    command = [str(PEERS_PYTHON), str(ROOT / "bench" / "peers" / "quix_job.py"), "--broker", settings.kafka_bootstrap,
               "--topic", topic, "--group", group, "--output", f"bench-quix-out-{group}",
               "--state-dir", tempfile.mkdtemp(prefix="dbopt-bench-quix-")]  # fmt: skip

    def progress() -> int:
        # the windowing stage reads the repartition topic: done when it committed every record
        return committed(settings, group, repartition) if total(settings, repartition) >= events else 0

    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        return drain(proc, progress, events, log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--topic", help="default: dbopt.bench.query-events.v1 (1M), dbopt.bench.query-events.<N>")
    parser.add_argument("--skip-quix", action="store_true")
    args = parser.parse_args()
    topic = args.topic or ("dbopt.bench.query-events.v1" if args.events == 1_000_000
                           else f"dbopt.bench.query-events.{args.events // 1000}k")  # fmt: skip
    settings = bench_settings()
    n = fill(settings, topic, args.events, args.partitions)
    rows = []
    print(f"raw loop ({load()}) ...", flush=True)
    raw = raw_loop(settings, topic, n)
    rows.append(("plain confluent-kafka `consume()` + `Codec.decode`", raw, raw))
    print(f"dbopt worker ({load()}) ...", flush=True)
    rows.append(("`dbopt worker`, 1 process", *dbopt_worker(settings, topic, n)))
    if not args.skip_quix:
        print(f"Quix Streams ({load()}) ...", flush=True)
        rows.append(("Quix Streams job (`bench/peers/quix_job.py`), 1 process", *quix(settings, topic, n)))
    print(f"done ({load()})\n")
    print(f"{n:,} events of {topic}")
    print("| reader | events/s, launch to all committed | events/s, steady (10 % -> 100 %) | vs raw (steady) |")
    print("|---|---|---|---|")
    for name, overall, steady in rows:
        print(f"| {name} | {overall:,.0f} | {steady:,.0f} | {steady / raw:.2f}x |")


if __name__ == "__main__":
    main()
