"""Recovery figures: how long each process takes to be useful again after a restart.

    .venv/bin/python bench/recovery.py [--keys 100000] [--runs 3]

* **worker**: ``--keys`` live keys (distinct (service, fingerprint) pairs, each with an open window)
  are in the worker's state when it is stopped; a new worker process (fresh data directory, so the
  state comes back from the changelog, as on another machine) is started and one event per
  partition closes those windows. Measured: process start -> first emitted window (state restore
  included), and -> all of the closed windows emitted.
* **executor** and **advisor**: process start -> ``/readyz`` 200 (partitions assigned, durable
  state loaded: the executor's audit checks, the advisor's saved state), for a restart of an
  existing consumer group.

Local servers (``make up``); every run uses its own topics, groups and scratch database.
Results are printed and written to ``bench/results/recovery.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg

from streams.config import Settings, TopicPolicy, Topics, load_settings
from streams.kafka import clients
from streams.kafka.consume import assigned_consumer
from streams.kafka.topics import ensure_topics
from streams.serde import Codec

HERE = Path(__file__).resolve().parent
DBOPT = str(Path(sys.executable).with_name("dbopt"))
PARTITIONS = 6
MINUTE = 60_000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}
    env |= {"DBOPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "DBOPT_DATABASE_URL": settings.database_url.get_secret_value(),
            "DBOPT_TOPIC_PARTITIONS": str(PARTITIONS)}
    env |= {f"DBOPT_TOPIC_{name.upper()}": topic for name, topic in settings.topics.all().items()}
    return env | extra


def _settings() -> Settings:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{name: f"{value}.bench-recovery-{suffix}" for name, value in Topics().all().items()})
    settings = load_settings().with_overrides(topics=topics, topic_policy=TopicPolicy(partitions=PARTITIONS))
    ensure_topics(settings)
    return settings


# -- worker ------------------------------------------------------------------------------------------


def _produce(settings: Settings, records: list[tuple[str, dict[str, Any]]]) -> None:
    codec = Codec.from_settings(settings)
    topic = settings.topics.query_events
    producer = clients.producer(settings, **{"linger.ms": 50, "compression.type": "zstd"})
    for i, (key, record) in enumerate(records):
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=codec.encode("QueryEvent", record, topic=topic))
                break
            except BufferError:
                producer.poll(0.5)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def _event(service: str, fp: int, t: int) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "service": service, "instance_id": "bench", "event_time": t,
            "fingerprint": f"fp-{fp:04d}", "query_text": f"SELECT * FROM t{fp} WHERE id = $1",
            "statement_type": "SELECT", "tables": [f"t{fp}"], "duration_ms": 1.0 + fp % 50, "rows": 1,
            "error": None, "database": None, "vendor_category": None, "wedding_id": None}


def _committed(settings: Settings, group: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        topic = settings.topics.query_events
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def worker_restart(keys: int) -> dict[str, float]:
    settings = _settings()
    app_id = f"bench-recovery-{uuid.uuid4().hex[:8]}"
    services = max(1, keys // 1000)
    # the windows stay open: event times 2 minutes ahead (the ingest accepts 5), so neither the
    # stream nor the idle tick closes them before the restart
    t = (int(time.time() * 1000) + 2 * MINUTE) // MINUTE * MINUTE + 1_000
    records = [(f"svc-{s:03d}", _event(f"svc-{s:03d}", fp, t)) for s in range(services) for fp in range(keys // services)]
    _produce(settings, records)
    base_env = _env(settings, DBOPT_WORKER_APP_ID=app_id, DBOPT_WORKER_TICK_INTERVAL_MS="500",
                    DBOPT_WINDOW_IDLE_TIMEOUT_MS="2000", DBOPT_INGEST_MAX_FINGERPRINTS_PER_SERVICE="1000")
    with tempfile.TemporaryDirectory() as tmp:
        first = subprocess.Popen([DBOPT, "worker", "--log-level", "warning"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL,
                                 env=base_env | {"DBOPT_WORKER_DATA_DIR": f"{tmp}/a", "DBOPT_WORKER_WEB_PORT": str(_free_port())})
        fill_started = time.monotonic()
        while _committed(settings, app_id) < len(records):
            assert first.poll() is None, "the worker died while taking the keys in"
            time.sleep(1)
        fill_s = time.monotonic() - fill_started
        first.terminate()
        first.wait(120)
        reader = assigned_consumer(settings, settings.topics.latency_windows, last=0)
        # one event per partition (services spread over them) past the open windows' end + grace
        _produce(settings, [(f"svc-{s:03d}", _event(f"svc-{s:03d}", 0, t + 2 * MINUTE)) for s in range(services)])
        started = time.monotonic()
        second = subprocess.Popen([DBOPT, "worker", "--log-level", "warning"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL,
                                  env=base_env | {"DBOPT_WORKER_DATA_DIR": f"{tmp}/b", "DBOPT_WORKER_WEB_PORT": str(_free_port())})
        first_window = all_windows = None
        seen = 0
        expected = keys + services  # a tumbling window per query key and per context key
        try:
            while all_windows is None and time.monotonic() - started < 900:
                msg = reader.poll(0.5)
                if msg is None or msg.error():
                    continue
                record = Codec.from_settings(settings).decode(msg.value()).record
                if record["window_kind"] != "tumbling" or record["window_start"] != t // MINUTE * MINUTE:
                    continue
                seen += 1
                if first_window is None:
                    first_window = time.monotonic() - started
                if seen >= expected:
                    all_windows = time.monotonic() - started
        finally:
            second.terminate()
            second.wait(120)
            reader.close()
    return {"keys": keys, "fill_s": round(fill_s, 1), "restart_to_first_window_s": round(first_window or -1, 1),
            "restart_to_all_windows_s": round(all_windows or -1, 1), "windows": seen}


# -- executor and advisor ----------------------------------------------------------------------------


def _ready_after(cmd: list[str], env: dict[str, str], port: int) -> float:
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - started < 120:
            assert proc.poll() is None, f"{cmd} exited with {proc.returncode}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{cmd} not ready after 120 s")
    finally:
        proc.terminate()
        proc.wait(60)


def stage_restarts(runs: int) -> dict[str, dict[str, float]]:
    settings = _settings()
    base = settings.database_url.get_secret_value()
    name = f"bench_recovery_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{base.rpartition('/')[0]}/{name}"
    try:
        settings = settings.with_overrides(database_url=url)
        figures: dict[str, dict[str, float]] = {}
        for stage, group_var, port_var in (("executor", "DBOPT_EXECUTOR_GROUP", "DBOPT_EXECUTOR_PROBE_PORT"),
                                           ("advisor", "DBOPT_ADVISOR_GROUP", "DBOPT_ADVISE_PROBE_PORT")):
            group = f"bench-{stage}-{uuid.uuid4().hex[:8]}"
            times = []
            for _ in range(runs + 1):  # the first start is a cold one (new group, no state yet)
                port = _free_port()
                env = _env(settings, DBOPT_COMMAND_KEY="bench", **{group_var: group, port_var: str(port)})
                times.append(_ready_after([DBOPT, stage], env, port))
            figures[stage] = {"cold_start_s": round(times[0], 2),
                              "restart_median_s": round(statistics.median(times[1:]), 2),
                              "restart_max_s": round(max(times[1:]), 2)}
        return figures
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="live keys in the worker's state")
    parser.add_argument("--runs", type=int, default=3, help="restarts of the executor and the advisor")
    args = parser.parse_args()
    out: dict[str, Any] = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out["stages"] = stage_restarts(args.runs)
    print(json.dumps(out["stages"], indent=1), flush=True)
    out["worker"] = worker_restart(args.keys)
    print(json.dumps(out["worker"], indent=1), flush=True)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "recovery.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
