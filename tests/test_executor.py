"""The executor against the real broker and a real PostgreSQL scratch database."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator, cast

import msgspec
import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from clienv import dbopt
from streams.commands import build_command, sign
from streams.config import Settings
from streams.domain.calendar import Calendar
from streams.execute.agent import run_executor
from streams.execute.allowlist import action_of
from streams.execute.executor import Executor, RunReport
from streams.kafka.consume import assigned_consumer, read_messages
from streams.records import OptimizationCommand, OptimizationResult
from streams.serde import Codec

# commands are sent with a plain producer before the executor (which ensures its topics) starts
pytestmark = pytest.mark.usefixtures("created_topics")

KEY = "executor-test-key"
CIC = "CREATE INDEX CONCURRENTLY dbopt_idx_bookings_vendor ON bookings (vendor_id)"

SEED = """
CREATE TABLE bookings (id serial PRIMARY KEY, vendor_id int NOT NULL, status text NOT NULL, email text);
INSERT INTO bookings (vendor_id, status, email)
    SELECT g % 97, CASE WHEN g % 3 = 0 THEN 'confirmed' ELSE 'pending' END, 'guest' || g || '@example.org'
    FROM generate_series(1, 2000) g;
CREATE TABLE side_effects (at timestamptz DEFAULT now(), x int);
CREATE FUNCTION evil(x int) RETURNS int LANGUAGE plpgsql VOLATILE AS
    $$ BEGIN INSERT INTO side_effects (x) VALUES (x); RETURN x; END $$;
"""


def seed(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED)


@pytest.fixture
def xs(settings: Settings, scratch_db: str) -> Settings:
    """Settings for one executor test: private topics, a seeded scratch database, no freeze day."""
    seed(scratch_db)
    return exec_settings(settings, scratch_db)


def exec_settings(settings: Settings, url: str, **executor: Any) -> Settings:
    return settings.with_overrides(
        database_url=url,
        command_key=KEY,
        freeze_weekdays=(),
        executor=settings.executor.with_overrides(
            consumer_group=f"dbopt-executor-{uuid.uuid4().hex[:8]}",
            poll_timeout_s=0.2,
            db_retry_max_s=1.0,
            deferred_recheck_s=3600.0,
            **executor,
        ),
    )


def command(sql: str, origin: str = "operator", key: str = KEY, **kw: Any) -> OptimizationCommand:
    action = kw.pop("action", None) or action_of(sql)
    return sign(build_command(origin, action, sql, **kw), key.encode())


def send(settings: Settings, *values: OptimizationCommand | bytes) -> None:
    codec = Codec.from_settings(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    topic = settings.topics.commands
    errors: list[KafkaError] = []
    for value in values:
        if isinstance(value, bytes):  # the commands topic is compacted: every record needs a key
            key, data = b"garbage", value
        else:
            key, data = value.command_id.encode(), codec.encode_record(value, topic=topic)
        producer.produce(topic, key=key, value=data, on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors, errors


def results(settings: Settings, count: int, timeout: float = 30.0) -> list[OptimizationResult]:
    codec = Codec.from_settings(settings)
    deadline = time.monotonic() + timeout
    while True:  # the results topic exists once the executor produced to it
        try:
            consumer = assigned_consumer(settings, settings.topics.results)
            break
        except LookupError:
            assert time.monotonic() < deadline, "no results topic"
            time.sleep(0.5)
    try:
        msgs = [m for m in read_messages(consumer, max_messages=count, idle_timeout=timeout) if m.error() is None]
    finally:
        consumer.close()
    decoded = [codec.decode_record(m.value()) for m in msgs]
    assert all(isinstance(r, OptimizationResult) for r in decoded)
    return cast(list[OptimizationResult], decoded)


def run(settings: Settings, calendar: Calendar | None = None, **kw: Any) -> RunReport:
    kw.setdefault("once", True)
    kw.setdefault("idle_timeout", 3.0)
    return run_executor(Executor(settings, calendar=calendar), **kw)


def snapshot(url: str) -> dict[str, Any]:
    """Everything a bad command could have changed, read from the catalog."""
    with psycopg.connect(url) as conn:
        return {
            "relations": conn.execute(
                "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbopt') AND n.nspname NOT LIKE 'pg_toast%' "
                "ORDER BY 1, 2"
            ).fetchall(),
            "indexes": conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1").fetchall(),
            "columns": conn.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2"
            ).fetchall(),
            "rows": conn.execute("SELECT count(*), sum(vendor_id) FROM bookings").fetchone(),
            "side_effects": conn.execute("SELECT count(*) FROM side_effects").fetchone(),
        }


def index_state(url: str, name: str) -> bool | None:
    """pg_index.indisvalid of ``name`` (None: no such index)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s", (name,)
        ).fetchone()
    return None if row is None else bool(row[0])


def audit_row(url: str, command_id: str) -> dict[str, Any] | None:
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM dbopt.dbopt_audit WHERE command_id = %s", (command_id,)).fetchone()


def committed_offset(settings: Settings) -> int:
    """The highest offset the executor's group committed on any commands partition (< 0: none)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.executor.consumer_group})
    try:
        topic = settings.topics.commands
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return max(tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10))
    finally:
        consumer.close()


# -- malicious and malformed commands ----------------------------------------------------------------

CORPUS = [
    ("several statements", CIC + "; DROP TABLE bookings", "exactly one statement"),
    ("drop table", "DROP TABLE bookings", "DROP TABLE is not allowed"),
    ("truncate", "TRUNCATE bookings", "TRUNCATE is not allowed"),
    ("side-effecting function", "CREATE INDEX CONCURRENTLY dbopt_idx_evil ON bookings ((evil(vendor_id)))",
     "function evil is VOLATILE, not IMMUTABLE"),
    ("pg_sleep in predicate", "CREATE INDEX CONCURRENTLY dbopt_idx_sleep ON bookings (vendor_id) "
     "WHERE pg_sleep(1) IS NOT NULL", "function pg_sleep is VOLATILE"),
    ("subquery", "CREATE INDEX CONCURRENTLY dbopt_idx_sub ON bookings (vendor_id) "
     "WHERE vendor_id IN (SELECT x FROM side_effects)", "subquery"),
    ("injection via index name", 'CREATE INDEX CONCURRENTLY "x; DROP TABLE bookings; --" ON bookings (vendor_id)',
     "injection"),
    ("injection via table name", 'ANALYZE "bookings; DROP TABLE bookings"', "injection"),
    ("vacuum full", "VACUUM FULL bookings", "VACUUM FULL is not allowed"),
    ("vacuum full option", "VACUUM (FULL, ANALYZE) bookings", "VACUUM FULL is not allowed"),
    ("non-concurrent index", "CREATE INDEX dbopt_idx_plain ON bookings (vendor_id)", "without CONCURRENTLY"),
    ("system catalog", "CREATE INDEX CONCURRENTLY dbopt_idx_cat ON pg_catalog.pg_class (relname)", "system"),
    ("system catalog unqualified", "ANALYZE pg_class", "system catalog"),
    ("missing table", "CREATE INDEX CONCURRENTLY dbopt_idx_x ON no_such_table (a)", "does not exist"),
    ("not a user table", "REINDEX (CONCURRENTLY) INDEX bookings_pkey", ""),  # allowed kind, runs: see below
    ("drop of an index dbopt did not create", "DROP INDEX CONCURRENTLY bookings_pkey", "not created by dbopt"),
    ("select", "SELECT pg_sleep(5)", "SELECT is not allowed"),
]


def test_malicious_and_malformed_commands_are_rejected_with_reasons(xs: Settings) -> None:
    before = snapshot(xs.database_url.get_secret_value())
    corpus = [(name, sql, why) for name, sql, why in CORPUS if why]
    good = [command(sql) for _, sql, _ in corpus]
    forged = command("ANALYZE bookings", key="not-the-key")
    unsigned = msgspec.structs.replace(command("VACUUM bookings"), signature="")
    tampered = msgspec.structs.replace(command("ANALYZE side_effects"), sql="DROP TABLE bookings")
    mislabeled = command("DROP INDEX CONCURRENTLY bookings_pkey", action="analyze")
    send(xs, *good, forged, unsigned, tampered, mislabeled, b"\x00garbage", b"not avro at all")
    total = len(good) + 6

    report = run(xs, max_commands=total)
    assert report.processed == total
    by_id = {r.command_id: r for r in results(xs, total)}
    assert len(by_id) == total
    assert {r.status for r in by_id.values()} == {"rejected"}

    for (name, _sql, why), cmd in zip(corpus, good, strict=True):
        result = by_id[cmd.command_id]
        assert why in result.reason, (name, result.reason)
        assert audit_row(xs.database_url.get_secret_value(), cmd.command_id)["status"] == "rejected"  # type: ignore[index]
    unverified = [r for r in by_id.values() if r.command_id.startswith("unverified:")]
    reasons = sorted(r.reason for r in unverified)
    assert sum("forged" in r and forged.command_id in r for r in reasons) == 1
    assert sum("forged" in r and tampered.command_id in r for r in reasons) == 1
    assert sum("unsigned" in r and unsigned.command_id in r for r in reasons) == 1
    assert sum("undecodable" in r for r in reasons) == 2
    # a forged command never gets an audit row under the id it claims
    assert audit_row(xs.database_url.get_secret_value(), forged.command_id) is None
    assert "says 'analyze'" in by_id[mislabeled.command_id].reason

    assert snapshot(xs.database_url.get_secret_value()) == before


# -- applied once, never twice --------------------------------------------------------------------------


def test_submit_cli_apply_and_redelivery_is_a_duplicate(xs: Settings) -> None:
    proc = dbopt(xs, "command", "submit", "--sql", CIC, "--reason", "slow booking lookups",
                 DBOPT_COMMAND_KEY=KEY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    command_id = proc.stdout.strip().splitlines()[-1]
    assert len(command_id) == 32

    report = run(xs)
    assert report.statuses["applied"] == 1
    (applied,) = results(xs, 1)
    assert applied.command_id == command_id and applied.status == "applied"
    assert applied.index_name == "public.dbopt_idx_bookings_vendor"
    assert applied.rollback_sql == "DROP INDEX CONCURRENTLY public.dbopt_idx_bookings_vendor"
    assert applied.table == "public.bookings" and applied.duration_ms > 0
    assert index_state(xs.database_url.get_secret_value(), "dbopt_idx_bookings_vendor") is True
    first = audit_row(xs.database_url.get_secret_value(), command_id)
    assert first is not None and first["status"] == "applied" and first["result_emitted"]

    # the same command again (a redelivery, or an operator pressing enter twice)
    proc = dbopt(xs, "command", "submit", "--sql", CIC, DBOPT_COMMAND_KEY=KEY)
    assert proc.stdout.strip().splitlines()[-1] == command_id
    report = run(xs)
    assert report.statuses == {"duplicate": 1}
    again = results(xs, 2)[1]
    assert again.command_id == command_id and again.status == "duplicate"
    assert "already applied" in again.reason
    assert audit_row(xs.database_url.get_secret_value(), command_id) == first  # not run again: same timings


def test_submit_without_key_is_a_clear_error(xs: Settings) -> None:
    proc = dbopt(xs, "command", "submit", "--sql", "ANALYZE bookings", DBOPT_COMMAND_KEY="")
    assert proc.returncode != 0
    assert "DBOPT_COMMAND_KEY is not set" in proc.stdout + proc.stderr


# -- freeze days ---------------------------------------------------------------------------------------------


def test_freeze_day_defers_emergency_runs_and_deferred_runs_after_the_freeze(xs: Settings) -> None:
    frozen = xs.with_overrides(freeze_weekdays=("sat",), timezone="Europe/Berlin")
    saturday = Calendar("Europe/Berlin", ("sat",), clock=lambda: datetime(2026, 11, 21, 11, tzinfo=timezone.utc))
    monday = Calendar("Europe/Berlin", ("sat",), clock=lambda: datetime(2026, 11, 23, 9, tzinfo=timezone.utc))
    normal = command(CIC)
    emergency = command("ANALYZE bookings", emergency=True, reason="incident during a wedding")
    send(frozen, normal, emergency)

    report = run(frozen, calendar=saturday, max_commands=2)
    by_id = {r.command_id: r for r in results(frozen, 2)}
    assert by_id[normal.command_id].status == "deferred"
    assert "freeze day" in by_id[normal.command_id].reason
    assert "2026-11-22T00:00:00+01:00" in by_id[normal.command_id].reason
    assert by_id[emergency.command_id].status == "applied"
    assert "emergency" in by_id[emergency.command_id].reason
    assert report.statuses == {"deferred": 1, "applied": 1}
    assert index_state(xs.database_url.get_secret_value(), "dbopt_idx_bookings_vendor") is None
    with psycopg.connect(xs.database_url.get_secret_value()) as conn:  # ANALYZE really ran
        assert conn.execute("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables "
                            "WHERE relname = 'bookings'").fetchone() == (True,)

    # the executor re-examines deferred commands on start (and every DBOPT_EXECUTOR_DEFERRED_RECHECK_S)
    report = run(frozen, calendar=monday, idle_timeout=1.0)
    assert report.statuses == {"applied": 1}
    assert results(frozen, 3)[2].status == "applied"
    assert index_state(xs.database_url.get_secret_value(), "dbopt_idx_bookings_vendor") is True


# -- an interrupted CREATE INDEX CONCURRENTLY ----------------------------------------------------------------


def test_interrupted_create_index_leaves_an_invalid_index_the_next_start_drops(xs: Settings) -> None:
    impatient = xs.with_overrides(executor=xs.executor.with_overrides(lock_timeout_ms=1000))
    cmd = command(CIC)
    send(impatient, cmd)
    blocker = psycopg.connect(xs.database_url.get_secret_value())  # an open write transaction: CIC must wait for it
    try:
        blocker.execute("INSERT INTO bookings (vendor_id, status) VALUES (1, 'pending')")
        run(impatient, max_commands=1)
        (failed,) = results(impatient, 1)
        assert failed.status == "failed" and "lock timeout" in failed.reason
        assert index_state(xs.database_url.get_secret_value(), "dbopt_idx_bookings_vendor") is False  # INVALID, left behind
    finally:
        blocker.rollback()
        blocker.close()

    proc = dbopt(impatient, "executor", "--once", "--idle-timeout", "1", DBOPT_COMMAND_KEY=KEY,
                 DBOPT_EXECUTOR_GROUP=impatient.executor.consumer_group, DBOPT_FREEZE_WEEKDAYS="")
    assert proc.returncode == 0, proc.stderr
    assert "dropped invalid index public.dbopt_idx_bookings_vendor" in proc.stdout
    assert index_state(xs.database_url.get_secret_value(), "dbopt_idx_bookings_vendor") is None


# -- PostgreSQL unavailable ------------------------------------------------------------------------------------


@pytest.fixture
def future_db(infra: Settings, scratch_db: str) -> Iterator[tuple[str, str]]:
    """(template, url of a database that does not exist yet); the template is the seeded scratch db."""
    seed(scratch_db)
    name = f"t_future_{uuid.uuid4().hex[:8]}"
    base, _, _ = infra.database_url.get_secret_value().rpartition("/")
    yield scratch_db.rpartition("/")[2], f"{base}/{name}"
    with psycopg.connect(infra.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_database_unavailable_command_waits_uncommitted_then_applies(
    settings: Settings, infra: Settings, future_db: tuple[str, str]
) -> None:
    template, url = future_db
    xs = exec_settings(settings, url)
    cmd = command(CIC)
    send(xs, cmd)
    executor = Executor(xs)
    report: list[RunReport] = []
    thread = threading.Thread(target=lambda: report.append(run_executor(executor, max_commands=1)), daemon=True)
    thread.start()
    try:
        time.sleep(4)  # the executor retries the missing database with backoff
        assert thread.is_alive()
        assert committed_offset(xs) < 0  # nothing committed: the command is not lost
        with psycopg.connect(infra.database_url.get_secret_value(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{url.rpartition("/")[2]}" TEMPLATE "{template}"')
        thread.join(60)
        assert not thread.is_alive()
    finally:
        executor.stop.set()
        thread.join(10)
    (result,) = results(xs, 1)
    assert result.command_id == cmd.command_id and result.status == "applied"
    assert index_state(url, "dbopt_idx_bookings_vendor") is True
    assert committed_offset(xs) == 1


# -- rollback --------------------------------------------------------------------------------------------------


def test_rollback_command_drops_the_index_and_marks_the_original_rolled_back(xs: Settings) -> None:
    original = command(CIC, origin="advisor", fingerprints=["fp1"], p95_before_ms=120.0)
    send(xs, original)
    run(xs, max_commands=1)
    (applied,) = results(xs, 1)
    assert applied.status == "applied" and applied.p95_before_ms == 120.0

    wrong = command("DROP INDEX CONCURRENTLY bookings_pkey", origin="verifier", rollback_of=original.command_id)
    rollback = command(applied.rollback_sql, origin="verifier", rollback_of=original.command_id)
    send(xs, wrong, rollback)
    run(xs, max_commands=2)
    later = results(xs, 4)[1:]
    by_id: dict[str, list[str]] = {}
    for r in later:
        by_id.setdefault(r.command_id, []).append(r.status)
    assert by_id[wrong.command_id] == ["rejected"]
    assert by_id[rollback.command_id] == ["rolled_back"]
    assert by_id[original.command_id] == ["rolled_back"]
    assert index_state(xs.database_url.get_secret_value(), "dbopt_idx_bookings_vendor") is None
    row = audit_row(xs.database_url.get_secret_value(), original.command_id)
    assert row is not None and row["status"] == "rolled_back" and rollback.command_id in row["reason"]


def test_emergency_from_a_non_operator_is_rejected(xs: Settings) -> None:
    record = build_command("operator", "analyze", "ANALYZE bookings")
    forged_emergency = sign(
        msgspec.structs.replace(record, origin="advisor", emergency=True,
                                command_id=build_command("advisor", "analyze", "ANALYZE bookings").command_id),
        KEY.encode(),
    )
    send(xs, forged_emergency)
    run(xs, max_commands=1)
    (result,) = results(xs, 1)
    assert result.status == "rejected" and "only an operator" in result.reason


def test_killed_executor_mid_create_index_is_recovered_on_next_start(xs: Settings) -> None:
    import subprocess

    from clienv import DBOPT, settings_env

    cmd = command(CIC)
    send(xs, cmd)
    blocker = psycopg.connect(xs.database_url.get_secret_value())  # keeps CIC waiting after it registered the index
    blocker.execute("INSERT INTO bookings (vendor_id, status) VALUES (1, 'pending')")
    env = settings_env(xs, DBOPT_COMMAND_KEY=KEY, DBOPT_FREEZE_WEEKDAYS="",
                       DBOPT_EXECUTOR_GROUP=xs.executor.consumer_group, DBOPT_EXECUTOR_LOCK_TIMEOUT_MS="600000")
    proc = subprocess.Popen([DBOPT, "executor", "--max-commands", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while index_state(xs.database_url.get_secret_value(), "dbopt_idx_bookings_vendor") is not False:
            assert time.monotonic() < deadline and proc.poll() is None, "CIC never started"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait(10)
    with psycopg.connect(xs.database_url.get_secret_value(), autocommit=True) as conn:  # its session dies with it
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'dbopt-executor' AND datname = current_database()")
    blocker.rollback()
    blocker.close()
    assert index_state(xs.database_url.get_secret_value(), "dbopt_idx_bookings_vendor") is False

    report = run(xs, idle_timeout=2.0)
    assert report.interrupted == [cmd.command_id]
    assert report.dropped_invalid_indexes == ["public.dbopt_idx_bookings_vendor"]
    assert index_state(xs.database_url.get_secret_value(), "dbopt_idx_bookings_vendor") is None
    statuses = [(r.command_id, r.status) for r in results(xs, 2)]
    assert statuses == [(cmd.command_id, "failed"), (cmd.command_id, "duplicate")]  # never re-run
    row = audit_row(xs.database_url.get_secret_value(), cmd.command_id)
    assert row is not None and row["status"] == "failed" and "interrupted" in row["reason"]


# -- two executors ---------------------------------------------------------------------------------------------


def test_an_executor_waits_while_another_holds_the_executor_lock(xs: Settings) -> None:
    """The session advisory lock: while another session (a first executor) holds it, nothing is applied."""
    send(xs, command("ANALYZE bookings"))
    holder = psycopg.connect(xs.database_url.get_secret_value(), autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (xs.executor.advisory_lock_key,))
    executor = Executor(xs)
    reports: list[RunReport] = []
    thread = threading.Thread(target=lambda: reports.append(run_executor(executor, max_commands=1)), daemon=True)
    thread.start()
    try:
        time.sleep(4)
        assert thread.is_alive() and not reports  # still waiting for the lock
        with psycopg.connect(xs.database_url.get_secret_value()) as conn:
            assert conn.execute("SELECT to_regclass('dbopt.dbopt_audit')").fetchone() == (None,)  # has done nothing
    finally:
        holder.close()  # the first executor goes away: its session lock is released
    thread.join(timeout=60)
    assert reports and reports[0].statuses["applied"] == 1
    assert [r.status for r in results(xs, 1)] == ["applied"]
