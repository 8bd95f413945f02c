"""The simulator: pure workload/pacing checks, then real queries on a scratch demo database
whose QueryEvents are read back from Kafka and decoded."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import psycopg
import pytest

from clienv import dbopt
from streams.config import Settings
from streams.demo.load import init_demo_db
from streams.demo.simulate import percentile, services_arg, simulate
from streams.demo.workload import (
    BASE_SHARE,
    PROFILES,
    QUERIES,
    SERVICES,
    Pacer,
    Population,
    pick,
    service_rates,
    workers_for,
)
from streams.kafka.consume import assigned_consumer, read_messages
from streams.serde import Codec

POP = Population(vendors=400, weddings=5_000, bookings=20_000, payments=20_000, timeline_events=20_000,
                 guests=40_000, notifications=10_000)


# -- pure ------------------------------------------------------------------------------------


def test_base_shares_and_profiles_cover_every_service() -> None:
    assert set(QUERIES) == set(SERVICES) == set(BASE_SHARE)
    assert sum(BASE_SHARE.values()) == pytest.approx(1.0)
    for profile in PROFILES.values():
        assert set(profile.multipliers) == set(SERVICES)


def test_profile_rates() -> None:
    off = service_rates(PROFILES["off-season"], 100)
    assert sum(off.values()) == pytest.approx(100)
    peak = service_rates(PROFILES["peak-season"], 100)
    assert 3.5 < sum(peak.values()) / 100 <= 4.0
    surge = service_rates(PROFILES["proposal-surge"], 100)
    assert surge["booking"] == pytest.approx(10 * off["booking"])
    saturday = service_rates(PROFILES["saturday"], 100)
    share = {s: saturday[s] / sum(saturday.values()) for s in SERVICES}
    assert share["timeline"] + share["guest"] > 2 * (off["timeline"] + off["guest"]) / 100
    only = service_rates(PROFILES["off-season"], 100, ("booking", "guest"))
    assert only == {"booking": pytest.approx(25), "guest": pytest.approx(15)}
    with pytest.raises(ValueError, match="unknown service"):
        service_rates(PROFILES["off-season"], 100, ("booking", "billing"))


def test_pick_follows_the_weights() -> None:
    rng = random.Random(7)
    draws = Counter(pick(rng, "booking").name for _ in range(20_000))
    total_weight = sum(q.weight for q in QUERIES["booking"])
    for query in QUERIES["booking"]:
        assert draws[query.name] / 20_000 == pytest.approx(query.weight / total_weight, abs=0.015)


def test_calls_match_placeholders_and_stay_in_range() -> None:
    rng = random.Random(3)
    for queries in QUERIES.values():
        for query in queries:
            for _ in range(50):
                call = query.make(rng, POP)
                assert len(call.params) == query.sql.count("%s"), query.name
                assert set(call.context) <= {"wedding_id", "vendor_category"}


def test_pacer_keeps_an_open_loop_schedule() -> None:
    pacer = Pacer(rate=10, start=100.0, end=101.0)
    dues = [pacer.claim(100.0) for _ in range(10)]  # claimed early: due times still spaced 0.1 s
    assert dues == pytest.approx([100.0 + i / 10 for i in range(10)])
    assert pacer.claim(100.95) is None  # the 1 s schedule holds exactly 10 slots
    lagging = Pacer(rate=10, start=0.0, end=100.0, max_lag=1.0)
    assert lagging.claim(0.0) == 0.0
    assert lagging.claim(0.5) == pytest.approx(0.1)  # 0.4 s behind: within max_lag, catch up
    assert lagging.claim(5.0) == pytest.approx(5.0)  # 4.8 s behind: the missed slots are skipped, not burst
    assert lagging.skipped == 48
    assert lagging.claim(5.0) == pytest.approx(5.1)
    with pytest.raises(ValueError):
        Pacer(rate=0, start=0, end=1)


def test_workers_for_is_bounded() -> None:
    assert workers_for(0.5) == 1
    assert workers_for(45) == 3
    assert workers_for(10_000) == 4


def test_percentile_matches_numpy() -> None:
    values = [random.Random(1).expovariate(0.1) for _ in range(501)]
    for q in (50, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q, method="inverted_cdf"))


def test_services_argument() -> None:
    assert services_arg("booking, guest,booking") == ("booking", "guest")
    with pytest.raises(Exception, match="billing"):
        services_arg("booking,billing")


# -- against PostgreSQL and Kafka ------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_db(request: pytest.FixtureRequest, infra: Settings) -> Any:
    """One small demo database for this module's tests (dropped afterwards)."""
    import uuid

    name = f"t_sim_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(infra.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{infra.database_url.get_secret_value().rpartition('/')[0]}/{name}"
    init_demo_db(infra, url, 20_000, say=lambda _: None)
    yield url
    with psycopg.connect(infra.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.infra
def test_every_query_is_valid_against_the_demo_schema(demo_db: str) -> None:
    """EXPLAIN (plans without running) each query with generated values: the server is the oracle."""
    rng = random.Random(11)
    with psycopg.connect(demo_db, autocommit=True) as conn:
        for queries in QUERIES.values():
            for query in queries:
                conn.execute("EXPLAIN " + query.sql, query.make(rng, POP).params)


def _new_literals(url: str) -> list[str]:
    """Values the simulator inserted as inline literals (guests past the loaded ids)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT full_name, email FROM guests WHERE id > 40000").fetchall()
    return [value for row in rows for value in row]


@pytest.mark.infra
def test_simulate_emits_literal_free_events_per_service(demo_db: str, settings: Settings) -> None:
    rates = {"booking": 12.0, "vendor": 8.0, "payment": 5.0, "guest": 10.0, "analytics": 2.0}
    result = simulate(settings, demo_db, rates, duration=4.0, seed=5)
    assert result.sent >= 0.8 * sum(rates.values()) * 4
    assert result.errors == 0, [s.error_kinds for s in result.stats.values()]
    assert sum(sent for sent, _ in result.events.values()) == result.sent  # one event per statement

    codec = Codec.from_settings(settings)
    consumer = assigned_consumer(settings, settings.topics.query_events)
    try:
        records = [codec.decode(m.value()).record for m in read_messages(consumer, max_messages=result.sent,
                                                                          idle_timeout=15) if m.error() is None]
    finally:
        consumer.close()
    assert len(records) == result.sent

    assert {r["service"] for r in records} == {f"{s}-service" for s in rates}
    kinds = Counter((r["service"], r["statement_type"]) for r in records)
    assert {"SELECT", "INSERT", "UPDATE"} <= {t for _, t in kinds}
    assert kinds[("booking-service", "SELECT")] > 0 and kinds[("guest-service", "INSERT")] > 0
    assert all(r["query_text"] != "unparsable statement" for r in records), Counter(
        r["service"] for r in records if r["statement_type"] == "UTILITY"
    )
    slow = [r for r in records if r["query_text"].startswith("SELECT id, event_date, amount FROM bookings")]
    assert slow and all(r["tables"] == ["bookings"] for r in slow)

    literals = _new_literals(demo_db)
    assert literals, "the guest service inserted guests with inline literal names and e-mails"
    texts = "\n".join(r["query_text"] for r in records)
    assert not [v for v in literals if v in texts]
    assert "@guests.example" not in texts and "'" not in texts


@pytest.mark.infra
def test_simulate_cli_reports_a_missing_demo_database(scratch_db: str, settings: Settings) -> None:
    proc = dbopt(settings, "simulate", "--duration", "1", "--database-url", scratch_db, timeout=60)
    assert proc.returncode == 1
    assert "run `dbopt demo-db init`" in proc.stderr


@pytest.mark.infra
def test_simulate_cli_runs_and_summarizes(demo_db: str, settings: Settings) -> None:
    proc = dbopt(settings, "simulate", "--profile", "saturday", "--rate", "8", "--duration", "2",
                 "--services", "timeline,guest", "--database-url", demo_db, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "done in" in proc.stdout
    summary = {line.split()[0] for line in proc.stdout.splitlines() if line.split()}
    assert {"timeline", "guest"} <= summary and "booking" not in summary
