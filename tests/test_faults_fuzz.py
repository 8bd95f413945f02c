"""Fault: 10,000 fuzzed inputs mixed with good events, through a real ``dbopt worker``.

The bad inputs are generated with hypothesis from a recorded seed (``FAULTS_SEED``, default 14;
the seed and the count of each kind are written to ``<run dir>/faults/fuzz-<seed>.json``): random
bytes, truncated Avro, valid Avro with hostile values (NaN, infinite, negative and huge durations,
event times far in the future or the past, ~1 MB strings, blank required fields), unknown schema
fingerprints, Confluent framing without a registry, wrong magic bytes. Expected: every bad record in
the DLQ with a reason (matched by its source partition and offset), no good event lost (every window
equals numpy's), the worker alive and stopping cleanly.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import KafkaError, Message, Producer
from hypothesis import HealthCheck, Phase, given, seed, settings as hsettings, strategies as st

from faults_harness import window_reader
from streams.config import Settings, run_dir
from streams.kafka.consume import assigned_consumer, read_messages
from streams.serde import Codec
from worker_harness import (
    MINUTE,
    Event,
    WorkerProcess,
    expected_windows,
    window_key,
    worker_env,
    worker_settings,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]
SEED = int(os.environ.get("FAULTS_SEED", "14"))
BAD = int(os.environ.get("FAULTS_FUZZ_INPUTS", "10000"))
GOOD = 3000
HUGE = 900_000  # "1 MB" strings: as large as a record may be under the broker's default 1 MB limit
CHECKOUT = Path(__file__).resolve().parents[1]


def _valid_event(now_ms: int) -> dict[str, Any]:
    return Event("svc-fuzz", 0, now_ms - 5 * MINUTE, 12.5).record()


# (kind, weight): how the 10,000 are spread; the ~1 MB strings are kept rare (each is a 1 MB record)
KINDS = (("random_bytes", 20), ("truncated_avro", 20), ("hostile_duration", 15), ("hostile_time", 15),
         ("huge_string", 1), ("blank_field", 9), ("unknown_fingerprint", 10), ("confluent_no_registry", 5),
         ("wrong_magic", 10))
KIND_OF = [kind for kind, weight in KINDS for _ in range(weight)]


def bad_inputs(codec: Codec, topic: str, now_ms: int) -> st.SearchStrategy[tuple[str, bytes]]:
    """One bad record value and its kind."""
    body = codec.encode("QueryEvent", _valid_event(now_ms), topic=topic)[10:]  # the Avro body, no header

    def hostile(**fields: Any) -> bytes:
        return codec.encode("QueryEvent", {**_valid_event(now_ms), **fields}, topic=topic)

    hour = 3600 * 1000
    by_kind: dict[str, st.SearchStrategy[bytes]] = {
        "random_bytes": st.binary(min_size=0, max_size=300),
        "truncated_avro": st.integers(0, len(body) + 9).map(lambda n: hostile()[:n]),
        "hostile_duration": st.one_of(
            st.sampled_from([math.nan, math.inf, -math.inf]), st.floats(max_value=-1e-9, allow_nan=False),
            st.floats(min_value=24 * hour + 1.0, allow_infinity=False, allow_nan=False),
        ).map(lambda d: hostile(duration_ms=d)),
        "hostile_time": st.one_of(
            st.integers(now_ms + 2 * hour, 2**62), st.integers(-(2**62), now_ms - 7 * hour),
        ).map(lambda t: hostile(event_time=t)),
        "huge_string": st.tuples(st.sampled_from(["query_text", "service", "instance_id"]),
                                 st.characters(min_codepoint=97, max_codepoint=122)).map(
            lambda f: hostile(**{f[0]: f[1] * HUGE})),
        "blank_field": st.tuples(st.sampled_from(["service", "instance_id", "event_id", "query_text"]),
                                 st.sampled_from(["", " ", "\t\n"])).map(lambda f: hostile(**{f[0]: f[1]})),
        "unknown_fingerprint": st.binary(min_size=8, max_size=8).filter(
            lambda fp: fp not in codec.schemas.by_fingerprint).map(lambda fp: b"\xc3\x01" + fp + body),
        "confluent_no_registry": st.integers(0, 2**31 - 1).map(lambda i: b"\x00" + i.to_bytes(4, "big") + body),
        "wrong_magic": st.binary(min_size=2, max_size=2).filter(lambda m: m != b"\xc3\x01" and m[:1] != b"\x00").map(
            lambda m: m + hostile()[2:]),
    }
    return st.sampled_from(KIND_OF).flatmap(lambda kind: by_kind[kind].map(lambda value: (kind, value)))


def generate(codec: Codec, topic: str, now_ms: int, n: int, fuzz_seed: int) -> list[tuple[str, bytes]]:
    """``n`` bad inputs from hypothesis, reproducible from ``fuzz_seed`` (generation only: no shrinking)."""
    found: list[tuple[str, bytes]] = []

    @seed(fuzz_seed)
    @hsettings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
               suppress_health_check=list(HealthCheck))
    @given(bad_inputs(codec, topic, now_ms))
    def collect(item: tuple[str, bytes]) -> None:
        found.append(item)

    collect()
    return found


def test_fuzzed_inputs_all_dead_lettered_no_good_event_lost(settings: Settings, tmp_path: Path) -> None:
    settings = worker_settings(settings, partitions=4)
    codec = Codec.from_settings(settings)
    topic = settings.topics.query_events
    now_ms = int(time.time() * 1000)
    started = time.monotonic()
    bad = generate(codec, topic, now_ms, BAD, SEED)
    top_up = SEED
    while len(bad) < BAD:  # hypothesis may stop a little short: more from the next seeds
        top_up += 1
        bad += generate(codec, topic, now_ms, BAD - len(bad), top_up)
    generated_s = time.monotonic() - started
    kinds = Counter(kind for kind, _ in bad)
    record = run_dir(CHECKOUT) / "faults" / f"fuzz-{SEED}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"seed": SEED, "top_up_seeds": list(range(SEED + 1, top_up + 1)),
                                  "inputs": len(bad), "kinds": kinds, "generated_s": round(generated_s, 1)}, indent=1))

    rng = np.random.default_rng(SEED)
    base = (now_ms - 30 * MINUTE) // MINUTE * MINUTE
    good = [Event(f"svc-{i % 5}", i % 3, base + i * 300, round(float(d), 3))
            for i, d in enumerate(rng.lognormal(2.0, 1.0, GOOD))]  # in event-time order: none is late
    mixed: list[tuple[str, bytes, bytes | None]] = [("good", e.service.encode(), codec.encode(
        "QueryEvent", e.record(), topic=topic)) for e in good]
    shuffle = random.Random(SEED)
    for kind, value in bad:  # bad records anywhere in between, on any partition; good ones keep their order
        mixed.insert(shuffle.randrange(len(mixed) + 1), (kind, f"svc-{shuffle.randrange(5)}".encode(), value))

    delivered: dict[tuple[int, int], str] = {}
    errors: list[KafkaError] = []
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for kind, key, value in mixed:
        def report(err: KafkaError | None, msg: Message, kind: str = kind) -> None:
            if err is not None:
                errors.append(err)
            elif kind != "good":
                delivered[(msg.partition(), msg.offset())] = kind
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors[:3]
    assert len(delivered) == BAD

    worker = WorkerProcess(worker_env(settings, f"t-fuzz-{uuid.uuid4().hex[:8]}", tmp_path / "data"), tmp_path / "w.log")
    reader = window_reader(settings)
    try:
        expected = expected_windows(good)
        reader.wait_for(expected.keys(), timeout=400, workers=[worker])
        reader.poll(3)
        worker.check_alive()
        dlq = assigned_consumer(settings, settings.topics.dlq)
        try:
            dead = [codec.decode(m.value()).record for m in read_messages(dlq, max_messages=BAD + 1, idle_timeout=20)
                    if not m.error()]
        finally:
            dlq.close()
    finally:
        reader.close()
        assert worker.stop() == 0, f"seed {SEED}: the worker did not stop cleanly"

    # 100 % of the bad ones in the DLQ, each with a reason, none twice; no good one there
    by_source = {(d["source_partition"], d["source_offset"]): d for d in dead}
    assert len(by_source) == len(dead), f"seed {SEED}: a bad record was dead-lettered twice"
    assert set(by_source) == set(delivered), (f"seed {SEED}", len(set(delivered) - set(by_source)),
                                              len(set(by_source) - set(delivered)))
    assert all(d["reason"] and d["reason"] != "late" for d in dead), f"seed {SEED}"
    reasons = Counter((delivered[k], d["reason"]) for k, d in by_source.items())
    record.write_text(json.dumps({**json.loads(record.read_text()),
                                  "reasons": {f"{k} -> {r}": n for (k, r), n in sorted(reasons.items())}}, indent=1))
    # 0 good events lost: every window exactly as numpy says
    got = {window_key(r): r for r in reader.first.values()}
    assert set(got) == set(expected), f"seed {SEED}"
    for key, values in expected.items():
        assert got[key]["count"] == values.size, (f"seed {SEED}", key)
        exact = float(np.quantile(values, 0.95, method="lower"))
        assert abs(got[key]["p95_ms"] - exact) <= 0.01 * exact, (f"seed {SEED}", key)
    total = sum(r["count"] for r in reader.first.values() if r["window_kind"] == "tumbling" and r["fingerprint"] is None)
    assert total == GOOD, f"seed {SEED}"
