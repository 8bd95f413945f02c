"""``dbopt collect``: the pure core (deltas and resets, server snapshots, statements over their SLO)
and the reads against the real database and broker (sessions in pg_stat_activity, a statement run
exactly M times, a reset, the pg_monitor role, a database that is down)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from streams.collect.agent import CollectStage
from streams.collect.core import (
    ActivityRow,
    Delta,
    ServerFacts,
    SloWatch,
    StatementRead,
    StatementRow,
    StatementStatsBuilder,
    deltas,
    server_snapshot,
)
from streams.collect.read import Reader
from streams.config import CollectSettings, Settings
from streams.kafka.health import Health
from streams.kafka.loop import run_stage
from streams.records import Alert, ServerSnapshot, StatementStats
from test_pool_watch import read_records

T0 = 1_750_000_000_000  # June 2025
SETTINGS = Settings()


# -- pure: deltas -----------------------------------------------------------------------------------


def row(queryid: int, calls: int, total: float = 0.0, *, query: str = "SELECT * FROM bookings WHERE id = $1",
        dbid: int = 5) -> StatementRow:  # fmt: skip
    return StatementRow(userid=10, dbid=dbid, queryid=queryid, toplevel=True, query=query, calls=calls,
                        total_exec_ms=total, max_exec_ms=total, rows=calls, shared_blks_hit=2 * calls,
                        shared_blks_read=calls // 2)


def read(at: int, *rows: StatementRow, reset: int | None = 1) -> StatementRead:
    return StatementRead(at_ms=at, stats_reset_ms=reset, rows=rows, database_names={5: "shop"})


def by_id(ds: list[Delta]) -> dict[int, tuple[int, float, bool, int]]:
    return {d.row.queryid: (d.calls, d.total_exec_ms, d.reset, d.since_ms) for d in ds}


def test_first_read_is_the_baseline_then_deltas_count_only_what_ran() -> None:
    first = read(T0, row(1, 10, 50.0), row(2, 4, 8.0))
    assert deltas(None, first) == []
    second = read(T0 + 10_000, row(1, 17, 64.0), row(2, 4, 8.0), row(3, 2, 1.0))
    assert by_id(deltas(first, second)) == {1: (7, 14.0, False, T0), 3: (2, 1.0, False, T0)}  # 2 did not run


def test_a_reset_entry_counts_from_zero_and_is_flagged() -> None:
    before = read(T0, row(1, 100, 500.0), row(2, 50, 50.0))
    after = read(T0 + 10_000, row(1, 3, 9.0), row(2, 55, 60.0))  # 1 was reset (or evicted and re-added)
    assert by_id(deltas(before, after)) == {1: (3, 9.0, True, T0), 2: (5, 10.0, False, T0)}


def test_a_full_reset_counts_every_entry_from_the_reset() -> None:
    before = read(T0, row(1, 100, 500.0), row(2, 50, 50.0), reset=1)
    after = read(T0 + 10_000, row(1, 120, 700.0), row(2, 5, 5.0), reset=T0 + 4_000)  # 120 > 100: still a reset
    assert by_id(deltas(before, after)) == {1: (120, 700.0, True, T0 + 4_000), 2: (5, 5.0, True, T0 + 4_000)}


def test_stats_records_carry_the_fingerprint_context_and_mean() -> None:
    builder = StatementStatsBuilder(SETTINGS, "db1")
    current = read(T0 + 10_000, row(1, 14, 70.0))
    (delta,) = deltas(read(T0, row(1, 4, 20.0)), current)
    stats = builder.build(delta, current)
    assert (stats.calls, stats.total_exec_ms, stats.mean_exec_ms, stats.rows) == (10, 50.0, 5.0, 10)
    assert (stats.context, stats.criticality, stats.tables, stats.statement_type) == ("booking", "critical", ("bookings",), "SELECT")
    assert stats.fingerprint and stats.query_text == "SELECT * FROM bookings WHERE id = $1"
    assert (stats.server, stats.database, stats.interval_start, stats.interval_end) == ("db1", "shop", T0, T0 + 10_000)
    odd = builder.build(Delta(row(9, 1, query="NOTIFY ch, $1"), 1, 0.1, 0, 0, 0, False, T0), current)
    assert odd.fingerprint is None and odd.query_text == "NOTIFY ch, $1"  # unparsable: kept, never alerted


# -- pure: server snapshot and SLO -----------------------------------------------------------------


def test_server_snapshot_groups_connections_by_database_application_and_state() -> None:
    facts = ServerFacts(max_connections=100, reserved_connections=3, database="shop", databases=("shop", "postgres"))
    rows = [
        ActivityRow("shop", "booking", "active", None, 40),
        ActivityRow("shop", "booking", "active", "Lock", 9_000),
        ActivityRow("shop", "booking", "idle", "Client", None),
        ActivityRow("shop", "booking", "idle in transaction", "Client", 120_000),
        ActivityRow("shop", "", None, None, None),
        ActivityRow("postgres", "psql", "idle in transaction (aborted)", None, 5),
    ]
    snap = server_snapshot("db1", facts, rows, T0)
    assert (snap.total_connections, snap.max_connections, snap.reserved_connections) == (6, 100, 3)
    groups = {(g.database, g.application_name): g for g in snap.connections}
    booking = groups[("shop", "booking")]
    assert (booking.active, booking.waiting_on_lock, booking.idle, booking.idle_in_transaction) == (2, 1, 1, 1)
    assert groups[("shop", "")].other == 1 and groups[("postgres", "psql")].idle_in_transaction == 1
    assert (snap.longest_transaction_ms, snap.longest_transaction_application) == (120_000, "booking")
    assert snap.longest_transaction_state == "idle in transaction"
    assert ServerSnapshot.from_avro(snap.to_avro()) == snap


def stats(i: int, calls: int, mean: float, fingerprint: str = "fp1", context: str = "booking") -> StatementStats:
    return StatementStats(
        server="db1", database="shop", interval_start=T0 + i * 10_000, interval_end=T0 + (i + 1) * 10_000,
        queryid=1, fingerprint=fingerprint, query_text="SELECT * FROM bookings WHERE id = $1", context=context,
        criticality="critical", calls=calls, total_exec_ms=calls * mean, mean_exec_ms=mean, max_exec_ms=mean,
    )


def test_statements_over_their_slo_with_enough_calls_fire_and_resolve() -> None:
    watch = SloWatch(SETTINGS, "db1")  # 20 calls, 3 intervals to fire and to resolve; booking SLO 50 ms
    steps = [watch.judge([s], s.interval_end) for s in [
        stats(0, 30, 80), stats(1, 5, 900), stats(2, 30, 70), stats(3, 40, 60), stats(4, 30, 55), stats(5, 30, 10),
        stats(6, 30, 10), stats(7, 2, 10), stats(8, 30, 10),
    ]]
    assert [[a.state for a in step] for step in steps] == [[], [], [], ["firing"], [], [], [], [], ["resolved"]]
    fired: Alert = steps[3][0]
    assert (fired.kind, fired.service, fired.fingerprint, fired.context, fired.metric) == (
        "statement", "db1", "fp1", "booking", "mean_ms")
    assert (fired.p95_ms, fired.threshold_ms, fired.severity) == (60.0, 50.0, "high")
    assert fired.query_text == "SELECT * FROM bookings WHERE id = $1" and "pg_stat_statements" in fired.message


def test_queryids_of_one_fingerprint_are_judged_together() -> None:
    watch = SloWatch(SETTINGS.with_overrides(collect=CollectSettings(fire_after=1)), "db1")
    # 15 calls at 30 ms and 15 at 90 ms: 30 calls, mean 60 ms > 50
    (alert,) = watch.judge([stats(0, 15, 30), stats(0, 15, 90)], T0)
    assert alert.p95_ms == 60.0


# -- against the database -------------------------------------------------------------------------


def collect_settings(settings: Settings, url: str, **changes: Any) -> Settings:
    return settings.with_overrides(collect=CollectSettings(database_url=url, **changes))


def app_conn(url: str, app: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, application_name=app, autocommit=True)


def test_collect_sees_the_sessions_in_pg_stat_activity(infra: Settings, scratch_db: str) -> None:
    app = f"svc-{uuid.uuid4().hex[:6]}"
    with app_conn(scratch_db, app) as setup:
        setup.execute("CREATE TABLE bookings (id int)")
    idle, locker, waiter, sleeper = (app_conn(scratch_db, app) for _ in range(4))
    threads = []
    try:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE bookings IN ACCESS EXCLUSIVE MODE")  # then idle in transaction
        threads = [threading.Thread(target=c.execute, args=(q,)) for c, q in
                   ((waiter, "SELECT count(*) FROM bookings"), (sleeper, "SELECT pg_sleep(2)"))]
        for t in threads:
            t.start()
        time.sleep(0.5)
        reader = Reader(collect_settings(infra, scratch_db))
        try:
            snap = server_snapshot("db1", reader.facts(), reader.activity(), T0)
        finally:
            reader.close()
        (group,) = [g for g in snap.connections if g.application_name == app]
        assert group.database == scratch_db.rpartition("/")[2]
        assert (group.active, group.waiting_on_lock, group.idle, group.idle_in_transaction) == (2, 1, 1, 1)
        assert snap.max_connections > 0 and snap.reserved_connections >= 3
        assert group.database in snap.databases and snap.total_connections >= 4
        assert snap.longest_transaction_ms is not None and snap.longest_transaction_ms >= 400
    finally:
        locker.execute("ROLLBACK")
        for t in threads:
            t.join(10)
        for c in (idle, locker, waiter, sleeper):
            c.close()


@pytest.fixture
def statements_db(scratch_db: str) -> str:
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO bookings SELECT g, 'new' FROM generate_series(1, 100) g")
    return scratch_db


def run_times(url: str, m: int, sql: str = "SELECT status FROM bookings WHERE id = %s") -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(m):
            conn.execute(sql, (i + 1,))


def test_a_statement_run_m_times_shows_m_calls_and_a_reset_is_handled(infra: Settings, statements_db: str) -> None:
    settings = collect_settings(infra, statements_db)
    builder = StatementStatsBuilder(settings, "db1")
    reader = Reader(settings)
    try:
        schema = reader.statements_schema()
        assert schema is not None

        def ours(previous: StatementRead, current: StatementRead) -> list[StatementStats]:
            return [builder.build(d, current) for d in deltas(previous, current)
                    if d.row.query.startswith("SELECT status FROM bookings")]

        first = reader.statements(schema)
        run_times(statements_db, 7)
        second = reader.statements(schema)
        (s,) = ours(first, second)
        assert (s.calls, s.rows, s.reset, s.context) == (7, 7, False, "booking")
        assert s.database == statements_db.rpartition("/")[2] and s.mean_exec_ms == s.total_exec_ms / 7
        run_times(statements_db, 2)
        third = reader.statements(schema)
        assert [(x.calls, x.reset) for x in ours(second, third)] == [(2, False)]
        with psycopg.connect(statements_db, autocommit=True) as conn:  # reset this one entry only
            conn.execute("SELECT pg_stat_statements_reset(userid, dbid, queryid) FROM pg_stat_statements "
                         "WHERE query LIKE 'SELECT status FROM bookings%%' AND dbid = "
                         "(SELECT oid FROM pg_database WHERE datname = current_database())")
        run_times(statements_db, 3)
        fourth = reader.statements(schema)
        assert [(x.calls, x.reset) for x in ours(third, fourth)] == [(3, True)]  # never 3 - 9
        assert all(r.dbid == fourth.rows[0].dbid for r in fourth.rows)  # only this database's statements
    finally:
        reader.close()


@pytest.fixture
def monitor_role(infra: Settings, scratch_db: str) -> Iterator[str]:
    """A login role holding nothing but pg_monitor; its URL to the scratch database."""
    name, password = f"t_collect_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin_url = infra.database_url.get_secret_value()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        conn.execute(f"GRANT pg_monitor TO {name}")
    params = conninfo_to_dict(scratch_db)
    yield make_conninfo(**{**params, "user": name, "password": password})
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE {name}")


def test_a_read_only_pg_monitor_role_is_enough(infra: Settings, statements_db: str, monitor_role: str) -> None:
    run_times(statements_db, 1)
    settings = collect_settings(infra, monitor_role)
    other = app_conn(statements_db, "other-role-app")
    try:
        other.execute("BEGIN")
        other.execute("SELECT 1")
        reader = Reader(settings)
        try:
            snap = server_snapshot("db1", reader.facts(), reader.activity(), T0)
            current = reader.statements(reader.statements_schema() or "public")
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                reader.conn.execute("CREATE TABLE nope (x int)")
        finally:
            reader.close()
        # another role's session: its state is visible (pg_read_all_stats), so not "other"
        (group,) = [g for g in snap.connections if g.application_name == "other-role-app"]
        assert group.idle_in_transaction == 1 and group.other == 0
        texts = [r.query for r in current.rows]
        assert any(t.startswith("SELECT status FROM bookings") for t in texts)
        assert "<insufficient privilege>" not in texts
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_the_stage_reads_on_time_and_alerts_on_slow_statements(created_topics: Settings, statements_db: str) -> None:
    settings = collect_settings(created_topics, statements_db, min_calls=3, fire_after=1, interval_s=10)
    stage = CollectStage(settings)
    try:
        first = list(stage.tick(T0))
        assert [type(e.record) for e in first] == [ServerSnapshot]  # the baseline read
        assert list(stage.tick(T0 + 5_000)) == []  # not due yet
        run_times(statements_db, 4, "SELECT pg_sleep(0.06), status FROM bookings WHERE id = %s")  # booking SLO 50 ms
        second = list(stage.tick(T0 + 10_000))
    finally:
        stage.close()
    by_type: dict[type, list[Any]] = {}
    for emit in second:
        by_type.setdefault(type(emit.record), []).append(emit)
    (slow,) = [e.record for e in by_type[StatementStats] if "pg_sleep" in e.record.query_text]
    assert slow.calls == 4 and slow.mean_exec_ms > 50 and slow.context == "booking"
    (alert,) = [e for e in by_type[Alert]]
    assert alert.topic == settings.topics.alerts and alert.key == alert.record.alert_id
    assert (alert.record.kind, alert.record.state, alert.record.fingerprint) == ("statement", "firing", slow.fingerprint)
    assert {e.topic for e in by_type[StatementStats]} == {settings.topics.statement_stats}
    assert {e.key for e in second} - {alert.key} == {stage.server}


def test_collect_runs_in_the_shared_loop_without_input_topics(created_topics: Settings, statements_db: str) -> None:
    settings = collect_settings(created_topics, statements_db, interval_s=0.2)
    stage = CollectStage(settings, reads=3)
    started = time.monotonic()
    run_stage(settings, stage, group_id=f"collect-{uuid.uuid4().hex[:6]}", stop=threading.Event(), poll_timeout_s=0.1)
    stage.close()
    assert time.monotonic() - started < 30
    snaps = read_records(settings, settings.topics.server_snapshots, lambda rs: len(rs) >= 3)
    assert len(snaps) == 3 and all(isinstance(s, ServerSnapshot) and s.up for s in snaps)
    assert snaps[0].database == statements_db.rpartition("/")[2]


def test_a_database_that_is_down_is_reported_and_retried_with_backoff(infra: Settings) -> None:
    settings = collect_settings(infra, "postgresql://nobody:x@127.0.0.1:1/gone", retry_max_s=3)
    health = Health("collect")
    health.set_ready(True)
    stage = CollectStage(settings, health)
    attempts = []
    for now in range(0, 12_001, 250):
        emits = list(stage.tick(now))
        if emits:
            (emit,) = emits
            assert isinstance(emit.record, ServerSnapshot) and not emit.record.up and emit.record.error
            assert emit.record.database == "gone" and emit.key == "127.0.0.1:1/gone"
            attempts.append(now)
    assert attempts == [0, 1000, 3000, 6000, 9000, 12000]  # 1 s, 2 s, then at most 3 s apart
    assert not health.ready and "database unreachable" in health.describe()["problem"]
