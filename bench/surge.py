"""Surge: 5x the simulator's peak rate for 60 s, then back to the peak rate — how fast the worker's
lag returns to near zero.

    .venv/bin/python bench/surge.py [--factor 5] [--surge-s 60] [--base-s 30] [--after-s 120]

The peak rate is the busiest profile of ``dbopt simulate`` (``streams.demo.workload.PROFILES``) at its
default base rate. The SDK (``EventProducer``) emits live QueryEvents at that rate for ``--base-s``,
at ``--factor`` times it for ``--surge-s``, then at the peak rate again for ``--after-s``; one
``dbopt worker`` consumes. Every second the lag (the events topic's end offsets minus the worker
group's committed offsets) is sampled. Reported: the largest lag, and the time from the end of the
surge until the lag is "near zero" — at most what the peak rate produces in 5 s (the worker commits
every few seconds, so a lag of a few seconds of traffic is its steady state).

Local servers (``make up``); the run uses its own topics and worker group. Results are printed and
written to ``bench/results/surge.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from streams.client.producer import EventProducer
from streams.config import Settings, TopicPolicy, Topics, load_settings
from streams.demo.workload import PROFILES, service_rates
from streams.kafka.topics import ensure_topics

HERE = Path(__file__).resolve().parent
DBOPT = str(Path(sys.executable).with_name("dbopt"))
PARTITIONS = 6
SIMULATOR_BASE_RATE = 20.0  # `dbopt simulate --rate`'s default (the off-season base, queries/s)
SQL = ("SELECT * FROM bookings WHERE vendor_id = $1", "SELECT * FROM payments WHERE id = $1",
       "SELECT * FROM vendors WHERE city = $1", "UPDATE guests SET rsvp = $1 WHERE id = $2")


def peak_rate(base: float = SIMULATOR_BASE_RATE) -> tuple[str, float]:
    """The busiest simulator profile and its total rate (queries/s)."""
    name, rates = max(((p.name, service_rates(p, base)) for p in PROFILES.values()), key=lambda x: sum(x[1].values()))
    return name, sum(rates.values())


def lag(consumer: Consumer, topic: str) -> int:
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    committed = {tp.partition: max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10)}
    return sum(consumer.get_watermark_offsets(tp, timeout=10)[1] - committed[tp.partition] for tp in parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=float, default=5.0)
    parser.add_argument("--surge-s", type=float, default=60.0)
    parser.add_argument("--base-s", type=float, default=30.0)
    parser.add_argument("--after-s", type=float, default=120.0)
    args = parser.parse_args()
    profile, peak = peak_rate()
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{name: f"{value}.bench-surge-{suffix}" for name, value in Topics().all().items()})
    settings: Settings = load_settings().with_overrides(topics=topics, topic_policy=TopicPolicy(partitions=PARTITIONS))
    ensure_topics(settings)
    app_id = f"bench-surge-{suffix}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}
    env |= {"DBOPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "DBOPT_TOPIC_PARTITIONS": str(PARTITIONS),
            "DBOPT_WORKER_APP_ID": app_id, "DBOPT_WORKER_WEB_PORT": "0"}
    env |= {f"DBOPT_TOPIC_{name.upper()}": topic for name, topic in topics.all().items()}
    rng = np.random.default_rng(14)
    samples: list[tuple[float, str, int]] = []
    phases = (("base", peak, args.base_s), ("surge", peak * args.factor, args.surge_s), ("after", peak, args.after_s))
    with tempfile.TemporaryDirectory() as tmp:
        from socket import socket

        with socket() as s:
            s.bind(("127.0.0.1", 0))
            env["DBOPT_WORKER_WEB_PORT"] = str(s.getsockname()[1])
        worker = subprocess.Popen([DBOPT, "worker", "--log-level", "warning"], env=env | {"DBOPT_WORKER_DATA_DIR": tmp},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sdks = [EventProducer(settings, f"{svc}-service") for svc in ("booking", "payment", "vendor", "guest",
                                                                      "timeline", "notification")]
        watcher = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": app_id})
        phase_now = ["base"]
        started = time.monotonic()
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                samples.append((round(time.monotonic() - started, 1), phase_now[0], lag(watcher, topics.query_events)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent = 0
        try:
            time.sleep(15)  # the worker joins its group
            started = time.monotonic()
            offered = 0.0  # events due by the end of the finished phases
            surge_end = 0.0
            for name, rate, seconds in phases:  # open-loop pacing: the events due so far, every 10 ms
                phase_now[0] = name
                phase_start = time.monotonic()
                while (elapsed := time.monotonic() - phase_start) < seconds:
                    while sent < offered + elapsed * rate:
                        sdks[sent % len(sdks)].emit_statement(SQL[sent % len(SQL)], float(rng.lognormal(2.0, 1.0)),
                                                              rows=1)
                        sent += 1
                    time.sleep(0.01)
                offered += seconds * rate
                if name == "surge":
                    surge_end = time.monotonic() - started
            for sdk in sdks:
                sdk.close(timeout=30)
        finally:
            stop.set()
            sampler.join(5)
            worker.terminate()
            worker.wait(60)
            watcher.close()
    near_zero = peak * 5
    after = [(t, n) for t, phase, n in samples if phase == "after"]
    recovered = next((t - surge_end for t, n in after if n <= near_zero), None)
    result = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "profile": profile, "peak_rate_qps": round(peak, 1), "surge_rate_qps": round(peak * args.factor, 1),
        "surge_s": args.surge_s, "events_sent": sent, "max_lag": max(n for _, _, n in samples),
        "near_zero_lag": round(near_zero), "lag_near_zero_after_surge_s": None if recovered is None else round(recovered, 1),
        "lag_samples": samples,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "lag_samples"}, indent=1))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "surge.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
