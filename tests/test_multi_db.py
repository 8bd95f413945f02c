"""Several databases: the demo database created twice under two names (DBOPT_DATABASES), one
``dbopt executor --database NAME`` per database, each applying only its own commands, with its own
audit, lock and consumer group; windows (through a real worker), alerts, commands and results carry
the database."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from clienv import DBOPT, dbopt, settings_env
from faults_harness import window_reader
from streams.commands import build_command, sign
from streams.config import Settings, database_url_of, load_settings, settings_database
from streams.detect.detector import Detector
from streams.records import WindowStats
from streams.serde import Codec
from test_executor import KEY, results, send
from worker_harness import Event, WorkerProcess, produce, worker_env, worker_settings

CIC = "CREATE INDEX CONCURRENTLY dbopt_idx_bookings_wedding ON bookings (wedding_id)"


@pytest.fixture
def two_demo_dbs(infra: Settings) -> Iterator[dict[str, str]]:
    """name -> URL of two new databases, each holding the demo schema and data (``dbopt demo-db init``)."""
    base_url = infra.database_url.get_secret_value()
    base = base_url.rpartition("/")[0]
    names = {f"wedding_{tag}": f"t_{tag}_{uuid.uuid4().hex[:8]}" for tag in ("eu", "us")}
    with psycopg.connect(base_url, autocommit=True) as conn:
        for db in names.values():
            conn.execute(f'CREATE DATABASE "{db}"')
    try:
        urls = {name: f"{base}/{db}" for name, db in names.items()}
        for url in urls.values():
            proc = dbopt(infra, "demo-db", "init", "--bookings", "2000", "--database-url", url, timeout=180)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        yield urls
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            for db in names.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _audit(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("SELECT command_id, status, database FROM dbopt.dbopt_audit ORDER BY command_id").fetchall()


def _has_index(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass('public.dbopt_idx_bookings_wedding') IS NOT NULL").fetchone() == (True,)


def test_databases_setting_selects_by_name_and_defaults_to_the_single_url() -> None:
    s = load_settings({"DBOPT_DATABASE_URL": "postgresql://u:p@h:1/main",
                       "DBOPT_DATABASES": json.dumps({"wedding_eu": "postgresql://u:p@h:1/eu"})})
    assert settings_database(s, "wedding_eu") == "wedding_eu"
    assert settings_database(s, "main") is None and settings_database(s, None) is None  # the default one
    assert database_url_of(s, "wedding_eu").get_secret_value().endswith("/eu")
    assert database_url_of(s, "unknown").get_secret_value().endswith("/main")
    assert "p@" not in repr(s.databases)  # passwords masked


def test_alerts_carry_the_database_of_their_window() -> None:
    detector = Detector(load_settings({}))
    alerts = []
    for i in range(3):
        for database in ("wedding_eu", "wedding_us"):
            window = WindowStats(window_id=f"{database}-{i}", window_kind="tumbling", window_start=i * 60_000,
                                 window_end=(i + 1) * 60_000, service="booking-service", fingerprint="fp1",
                                 context="booking", count=100, errors=0, min_ms=1.0, max_ms=900.0, p50_ms=200.0,
                                 p95_ms=400.0 if database == "wedding_eu" else 5.0, p99_ms=900.0, database=database)
            alerts += detector.observe(window, now_ms=0)
    # the same service and fingerprint in two databases are two series: only the slow one fires
    assert {(a.kind, a.database) for a in alerts} == {("slo", "wedding_eu")}


def test_one_executor_per_database_applies_only_its_own_commands(settings: Settings, two_demo_dbs: dict[str, str]) -> None:
    eu, us = two_demo_dbs["wedding_eu"], two_demo_dbs["wedding_us"]
    xs = settings.with_overrides(database_url=eu, databases=two_demo_dbs, command_key=KEY, freeze_weekdays=())
    from streams.kafka.topics import ensure_topics

    ensure_topics(xs)

    def cmd(sql: str, database: str | None) -> Any:
        return sign(build_command("advisor", "create_index" if sql.startswith("CREATE") else "analyze", sql,
                                  table="bookings", context="booking", database=database), KEY.encode())

    for_eu, for_us = cmd(CIC, "wedding_eu"), cmd(CIC, "wedding_us")
    analyze_us = cmd("ANALYZE bookings", "wedding_us")
    for_default = cmd("ANALYZE vendors", None)  # the default database's executor answers it, not these two
    assert len({for_eu.command_id, for_us.command_id}) == 2  # the same statement for two databases: two commands
    send(xs, for_eu, for_us, analyze_us, for_default)

    group = f"exec-{uuid.uuid4().hex[:8]}"
    env = settings_env(xs, DBOPT_COMMAND_KEY=KEY, DBOPT_FREEZE_WEEKDAYS="", DBOPT_DATABASES=json.dumps(two_demo_dbs),
                       DBOPT_EXECUTOR_GROUP=group, DBOPT_EXECUTOR_STABILIZE_CRITICAL_S="0")
    procs = [subprocess.Popen([DBOPT, "executor", "--database", name, "--once", "--idle-timeout", "4"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in ("wedding_eu", "wedding_us")]  # both at once: each holds the lock of its own database
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    # each reads every command (its own group) and applies its database's only
    assert "4 command(s); 1 applied" in outputs[0] and "4 command(s); 2 applied" in outputs[1], outputs

    assert _has_index(eu) and _has_index(us)
    assert _audit(eu) == [{"command_id": for_eu.command_id, "status": "applied", "database": "wedding_eu"}]
    assert sorted((r["command_id"], r["status"], r["database"]) for r in _audit(us)) == sorted(
        [(for_us.command_id, "applied", "wedding_us"), (analyze_us.command_id, "applied", "wedding_us")])
    by_id = {r.command_id: r for r in results(xs, 3)}
    assert set(by_id) == {for_eu.command_id, for_us.command_id, analyze_us.command_id}  # nothing for the default one
    assert {(r.status, r.database) for r in by_id.values()} == {("applied", "wedding_eu"), ("applied", "wedding_us")}

    bad = dbopt(xs, "executor", "--database", "nope", "--once", DBOPT_COMMAND_KEY=KEY,
                DBOPT_DATABASES=json.dumps(two_demo_dbs))
    assert bad.returncode == 2 and "not a name in DBOPT_DATABASES" in bad.stderr


def test_the_events_database_selects_the_windows_database(settings: Settings, tmp_path: Path) -> None:
    """Through a real worker: the same service and fingerprint in two named databases (and in one not in
    DBOPT_DATABASES, which counts for the default) are three separate series of windows."""
    settings = worker_settings(settings, partitions=2).with_overrides(
        databases={"wedding_eu": "postgresql://u:p@h:1/eu", "wedding_us": "postgresql://u:p@h:1/us"})
    codec = Codec.from_settings(settings)
    topic = settings.topics.query_events
    base = (int(time.time() * 1000) - 20 * 60_000) // 60_000 * 60_000
    counts = {"wedding_eu": 30, "wedding_us": 20, "unlisted": 10}
    raw = [(b"booking-service", codec.encode("QueryEvent", {**Event("booking-service", 0, base + i * 500, 5.0).record(),
                                                               "database": database}, topic=topic))
           for database, n in counts.items() for i in range(n)]
    raw.sort(key=lambda kv: codec.decode(kv[1]).record["event_time"])  # in event-time order: none is late
    env = worker_env(settings, f"t-multi-{uuid.uuid4().hex[:8]}", tmp_path / "data",
                     DBOPT_DATABASES=json.dumps({k: v.get_secret_value() for k, v in settings.databases.items()}))
    worker = WorkerProcess(env, tmp_path / "w.log")
    reader = window_reader(settings)
    try:
        produce(settings, [], raw=raw)
        deadline = time.monotonic() + 120
        while len([r for r in reader.first.values() if r["window_kind"] == "tumbling" and r["fingerprint"] is None]) < 3:
            assert time.monotonic() < deadline, "no windows"
            worker.check_alive()
            reader.poll(1.0)
        reader.poll(2)
    finally:
        reader.close()
        worker.stop()
    by_database = {r["database"]: r["count"] for r in reader.first.values()
                   if r["window_kind"] == "tumbling" and r["fingerprint"] is None}
    assert by_database == {"wedding_eu": 30, "wedding_us": 20, None: 10}
