"""``dbopt pools`` reads the snapshots back from the real broker: the table and ``--json`` show each
pool's utilization, waits, recommended size and alert state, and each server's budget."""

from __future__ import annotations

import json
import time

from confluent_kafka import Producer

from clienv import dbopt
from streams.config import Settings
from streams.records import PoolSnapshot, ServerSnapshot
from streams.serde import Codec


def produce(settings: Settings, *records: PoolSnapshot | ServerSnapshot) -> None:
    codec = Codec.from_settings(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for r in records:
        topic = settings.topics.pool_snapshots if isinstance(r, PoolSnapshot) else settings.topics.server_snapshots
        key = r.service if isinstance(r, PoolSnapshot) else r.server
        producer.produce(topic, key=key.encode(), value=codec.encode_record(r, topic))
    assert producer.flush(10) == 0


def pool(t: int, service: str, instance: str, in_use: int, max_size: int, waiting: int = 0) -> PoolSnapshot:
    return PoolSnapshot(service=service, instance_id=instance, snapshot_time=t, size=max_size, max_size=max_size,
                        in_use=in_use, idle=max_size - in_use, waiting=waiting, database="shop", min_size=2,
                        interval_ms=5000, checkouts=40, checkout_wait_p95_ms=250.0 if waiting else 0.5)


def test_pools_table_and_json(created_topics: Settings) -> None:
    settings = created_topics
    now = int(time.time() * 1000)
    produce(
        settings,
        ServerSnapshot(server="db1", database="shop", snapshot_time=now - 9000, max_connections=50,
                       reserved_connections=3, total_connections=31, databases=("shop",)),
        pool(now - 8000, "booking-service", "b1", 10, 10, waiting=4),
        pool(now - 7000, "booking-service", "b2", 10, 10, waiting=2),
        pool(now - 6000, "guest-service", "g1", 1, 5),
        pool(now - 60 * 60_000, "gone-service", "x", 5, 5),  # outside the window
    )
    done = dbopt(settings, "pools", "--json", "--since", "600")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    pools = {p["service"]: p for p in view["pools"]}
    assert set(pools) == {"booking-service", "guest-service"}
    booking = pools["booking-service"]
    assert (booking["instances"], booking["in_use"], booking["max_size"], booking["waiting"]) == (2, 20, 20, 6)
    assert booking["utilization"] == 1.0 and booking["alert"] == "firing" and booking["checkout_wait_p95_ms"] == 250.0
    # peak demand 14 (10 in use + 4 waiting) / 0.75 = 19 x the season; the budget (47 - 5) // 2 = 21 caps it
    advice = booking["advice"]
    assert (advice["peak_demand"] == 14 and advice["recommended"] in (19, 21)) or advice["held"]
    assert pools["guest-service"]["alert"] == "ok" and pools["guest-service"]["advice"]["recommended"] == 2
    (server,) = view["servers"]
    assert (server["server"], server["allowed"], server["pool_maxima"], server["over"]) == ("db1", 47, 25, False)
    assert server["contributors"][0] == {"service": "booking-service", "pool": "default", "instances": 2, "max_size": 10}

    table = dbopt(settings, "pools", "--since", "600")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split()[:4] == ["service", "pool", "inst", "in"]
    booking_line = next(line for line in lines if line.startswith("booking-service"))
    assert "20/20" in booking_line and "100%" in booking_line and "firing" in booking_line
    assert any(line.startswith("server db1: max_connections 50 - 3 reserved = 47 allowed; pool maxima 25") for line in lines)


def test_pools_without_its_topics_is_a_usage_error(settings: Settings) -> None:
    done = dbopt(settings, "pools")
    assert done.returncode == 2 and "does not exist" in done.stderr
