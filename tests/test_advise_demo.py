"""The advisor on the demo database (``dbopt demo-db init``, small): real PostgreSQL 15, HypoPG,
sampled builds, pg_stats — the planner and EXPLAIN ANALYZE are the oracles.

One demo database per module (built in about a second), vendors topped up so vendor search has
something to search; tests that change data work on their own tables or put things back.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Iterator

import psycopg
import pytest

from streams.advise import maintenance
from streams.advise.evaluate import Evaluator, QueryInput
from streams.advise.sweep import Sweeper
from streams.commands import build_command, sign
from streams.config import AdviseSettings, Settings
from streams.demo.load import init_demo_db
from streams.domain.calendar import Calendar
from streams.execute.allowlist import check_statement
from streams.execute.audit import Audit
from streams.records import OptimizationResult

pytestmark = pytest.mark.infra

KEY = b"advise-demo-key"
BOOKINGS = 60_000
VENDOR_COPIES = 20  # vendors x 21: enough rows for a GIN index to pay on the sample
SATURDAY_NOON = datetime(2026, 5, 2, 12, 0, tzinfo=timezone.utc)  # peak season, a wedding day
MONDAY_NOON = datetime(2026, 5, 4, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def demo(infra: Settings) -> Iterator[str]:
    """URL of a fresh demo database (dropped afterwards). Its role's default search path starts with
    a schema named like the role (``dbopt``, created by the audit): tests name ``public`` explicitly."""
    name = f"t_demo_{uuid.uuid4().hex[:8]}"
    url = infra.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    demo_url = f"{url.rpartition('/')[0]}/{name}"
    try:
        init_demo_db(infra, demo_url, BOOKINGS, say=lambda _: None)
        with psycopg.connect(demo_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO vendors (name, category, city, email, rating, base_price, is_active, created_at, "
                "description, attributes) SELECT name || ' ' || g, category, city, 'v' || g || '.' || email, rating, "
                f"base_price, is_active, created_at, description, attributes FROM vendors, generate_series(1, {VENDOR_COPIES}) g"
            )
            conn.execute("ANALYZE vendors")
        yield demo_url
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def advise(infra: Settings, url: str, *queries: QueryInput, **overrides: object) -> tuple:
    settings = infra.with_overrides(advise=AdviseSettings(min_cost=100, **overrides))
    evaluator = Evaluator.connect(settings, url)
    try:
        return evaluator.advise(list(queries))
    finally:
        evaluator.close()


def literal_cost(url: str, statement: str, *indexes: str) -> float:
    """The planner's cost of ``statement`` once ``indexes`` really exist (built, then dropped)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for create in indexes:
            conn.execute(create.replace(" CONCURRENTLY", ""))
        try:
            (plan,) = conn.execute(f"EXPLAIN (FORMAT JSON) {statement}").fetchone()  # type: ignore[misc]
            return float(plan[0]["Plan"]["Total Cost"])
        finally:
            for create in indexes:
                name = check_statement(create).index_name
                conn.execute(f"DROP INDEX IF EXISTS {name}")


# --- vendor search: trigram, full text, jsonb ---------------------------------------------------------

ILIKE = "SELECT id, name, city FROM vendors WHERE name ILIKE $1 AND is_active"


def test_vendor_search_gets_a_trigram_index_validated_by_a_sampled_build(infra: Settings, demo: str) -> None:
    # without pg_trgm: nothing is built, and CREATE EXTENSION is proposed to a human
    decision, (ev,) = advise(infra, demo, QueryInput("ilike", ILIKE))
    assert decision.proposals == []
    assert [x for x, _ in decision.extensions] == ["pg_trgm"] and ev.missing_extensions == ["pg_trgm"]
    with psycopg.connect(demo, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'").fetchone() == (0,)
        conn.execute("CREATE EXTENSION pg_trgm")  # the human's step
    try:
        decision, _ = advise(infra, demo, QueryInput("ilike", ILIKE),
                             QueryInput("fts", "SELECT id FROM vendors WHERE search @@ plainto_tsquery('english', $1)"),
                             QueryInput("json", "SELECT id FROM vendors WHERE attributes @> $1"))
    finally:
        with psycopg.connect(demo, autocommit=True) as conn:
            conn.execute("DROP EXTENSION pg_trgm")
    by_table = {p.candidate.describe(): p for p in decision.proposals}
    trigram = by_table["public.vendors USING gin (name gin_trgm_ops)"]
    assert trigram.method == "sampled build" and trigram.fingerprints == ("ilike",)
    (measured,) = trigram.serves
    ev_figures = measured.evidence
    assert ev_figures["sampled_ms_after"] <= 0.5 * ev_figures["sampled_ms_before"]  # the measured gain
    assert measured.improvement >= 0.5 and ev_figures["sample_rows"] > 20_000
    assert trigram.candidate.extensions == ("pg_trgm",)
    assert "public.vendors USING gin (search)" in by_table
    assert "public.vendors USING gin (attributes jsonb_path_ops)" in by_table
    # the scratch copies are gone
    with psycopg.connect(demo, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'dbopt_scratch'").fetchone() == (0,)


# --- B-tree advice --------------------------------------------------------------------------------------

TWO_EQ = "SELECT id, couple_name FROM weddings WHERE city = 'Chicago' AND wedding_date = '2025-06-14'"
JOIN = ("SELECT b.id, p.amount FROM bookings b JOIN payments p ON p.booking_id = b.id "
        "WHERE b.vendor_id = 42 AND p.status = 'failed'")
OR = "SELECT id FROM weddings WHERE contact_email = 'couple42@mail.example' OR wedding_date = '2025-03-01'"
LOWER = "SELECT id, name FROM vendors WHERE lower(email) = 'vendor7@vendors.example'"


def test_two_column_equality_gets_a_plain_two_column_index(infra: Settings, demo: str) -> None:
    decision, (ev,) = advise(infra, demo, QueryInput("two", TWO_EQ))
    (proposal,) = decision.proposals
    assert proposal.candidate.predicate is None  # a city is never a predicate
    assert set(proposal.candidate.column_names) == {"city", "wedding_date"}
    assert any("no partial index WHERE city" in note for note in ev.notes)
    assert not any(cc.candidate.predicate for cc in ev.costs)


def test_a_join_gets_an_index_on_each_side(infra: Settings, demo: str) -> None:
    decision, (_ev,) = advise(infra, demo, QueryInput("join", JOIN))
    tables = {p.candidate.table: p for p in decision.proposals}
    assert set(tables) == {"bookings", "payments"}
    assert "booking_id" in tables["payments"].candidate.column_names
    assert tables["bookings"].candidate.column_names[0] == "vendor_id"
    assert tables["bookings"].together == (tables["payments"].candidate.name,)
    # the planner agrees: both real indexes together serve it far better than either alone
    both = literal_cost(demo, JOIN, *(p.candidate.create_sql() for p in decision.proposals))
    one = min(literal_cost(demo, JOIN, p.candidate.create_sql()) for p in decision.proposals)
    assert both <= 0.5 * one


def test_an_or_gets_one_index_per_branch(infra: Settings, demo: str) -> None:
    decision, (_ev,) = advise(infra, demo, QueryInput("or", OR))
    assert sorted(p.candidate.column_names for p in decision.proposals) == [("contact_email",), ("wedding_date",)]
    before = literal_cost(demo, OR)
    after = literal_cost(demo, OR, *(p.candidate.create_sql() for p in decision.proposals))
    assert after <= 0.5 * before


def test_lower_email_gets_an_expression_index(infra: Settings, demo: str) -> None:
    decision, _ = advise(infra, demo, QueryInput("lower", LOWER))
    (proposal,) = decision.proposals
    assert proposal.candidate.columns[0].expression and proposal.candidate.column_names == ("lower(email)",)
    assert proposal.method == "HypoPG"
    create = proposal.candidate.create_sql()
    assert "((lower(email)))" in create and check_statement(create).action == "create_index"
    assert literal_cost(demo, LOWER, create) <= 0.5 * literal_cost(demo, LOWER)


def test_a_frequent_status_may_get_a_partial_index(infra: Settings, demo: str) -> None:
    sql = "SELECT id FROM bookings WHERE status = 'cancelled' AND vendor_id = 42"
    _, (ev,) = advise(infra, demo, QueryInput("status", sql))
    partial = [cc for cc in ev.costs if cc.candidate.predicate is not None]
    assert partial and all(cc.candidate.predicate.column == "status" for cc in partial)
    assert not any("no partial index WHERE status" in note for note in ev.notes)


def test_batch_union_and_representative_values(infra: Settings, demo: str) -> None:
    # two statements on weddings: one index on the union of their equality columns serves both
    decision, _ = advise(infra, demo, QueryInput("a", TWO_EQ),
                         QueryInput("b", "SELECT id FROM weddings WHERE wedding_date = $1"))
    (proposal,) = decision.proposals
    assert set(proposal.fingerprints) == {"a", "b"} and proposal.candidate.column_names[0] == "wedding_date"
    # the stream path: an equality plus a range, planned with values from pg_stats as well as generically
    stream = "SELECT id FROM bookings WHERE status = $1 AND created_at >= $2"
    decision, (ev,) = advise(infra, demo, QueryInput("recent", stream))
    assert "representative values" in ev.plans
    (proposal,) = decision.proposals
    assert proposal.candidate.column_names == ("status", "created_at")
    assert any(cc.plan == "representative values" for cc in proposal.serves)


def test_dbopt_analyze_names_the_method_and_what_it_did_not_understand(infra: Settings, demo: str) -> None:
    def analyze(sql: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "streams.cli", "analyze", sql, "--database-url", demo],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = analyze(LOWER)
    assert "validated by HypoPG" in out and "CREATE INDEX CONCURRENTLY" in out
    out = analyze("SELECT id FROM vendors WHERE name ILIKE '%florist%'")
    assert "text search: name ~~* (trigram)" in out
    assert "recommendation for a human: CREATE EXTENSION pg_trgm" in out  # not installed in the demo database
    out = analyze("SELECT id FROM bookings WHERE amount::int % 7 = 3")
    assert "not understood: CAST(amount AS integer) % 7 = 3" in out and "no candidate tested; not understood" in out


# --- maintenance, unused and duplicate indexes, sweeps ----------------------------------------------------


def dead_tuples_visible(conn: psycopg.Connection, table: str, dead: int) -> None:
    """Wait until the cumulative statistics show ``dead`` dead tuples in ``table`` (they are flushed
    asynchronously, at most a few seconds after the writing session went idle)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    for _ in range(100):
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s", (table,)).fetchone()
        if row and row[0] >= dead:
            return
        time.sleep(0.1)
    raise AssertionError(f"the statistics never showed {dead} dead tuples in {table}")


def sweeper(infra: Settings, url: str, **advise: object) -> Sweeper:
    settings = infra.with_overrides(database_url=url, freeze_weekdays=("sat",),
                                    advise=AdviseSettings(**advise))
    return Sweeper(settings, KEY, calendar=Calendar.from_settings(settings))


def test_dead_tuples_get_a_vacuum_that_reduces_them(infra: Settings, demo: str) -> None:
    with psycopg.connect(demo, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.events_log WITH (autovacuum_enabled = false) AS "
                     "SELECT g AS id, 'x' || g AS payload FROM generate_series(1, 50000) g")
        conn.execute("ANALYZE public.events_log")
        conn.execute("DELETE FROM public.events_log WHERE id % 2 = 0")
        dead_tuples_visible(conn, "events_log", 25_000)
    try:
        sweep = sweeper(infra, demo)
        commands = sweep.sweep(None, int(MONDAY_NOON.timestamp() * 1000))
        (vacuum,) = [c for c in commands if c.action == "vacuum" and c.table == "public.events_log"]
        assert vacuum.figure("n_dead_tup") == 25_000 and "autovacuum is disabled" in vacuum.reason
        assert vacuum.priority > 0 and not vacuum.recommendation
        # the executor runs it (here: the statement it would run) and reports it applied
        sweep.on_command(vacuum)
        with psycopg.connect(demo, autocommit=True) as conn:
            conn.execute(check_statement(vacuum.sql).sql_to_run)
        now = int(MONDAY_NOON.timestamp() * 1000)
        sweep.on_result(OptimizationResult(command_id=vacuum.command_id, status="applied", reason="", sql=vacuum.sql,
                                           finished_at=now))
        _, checked = sweep.tick(now + 10_000)
        (result,) = checked
        assert result.status == "kept" and result.reason == "verified: dead tuples 25000 -> 0"
    finally:
        with psycopg.connect(demo, autocommit=True) as conn:
            conn.execute("DROP TABLE public.events_log")


def test_unused_and_duplicate_indexes(infra: Settings, demo: str) -> None:
    settings = infra.with_overrides(command_key=KEY.decode())
    made_by_dbopt = "dbopt_idx_guests_meal_choice_test"
    create = f"CREATE INDEX CONCURRENTLY {made_by_dbopt} ON public.guests (meal_choice)"
    with psycopg.connect(demo, autocommit=True) as conn:
        conn.execute(create)
        conn.execute("CREATE INDEX by_hand_payments_method ON payments (method)")
        conn.execute("CREATE INDEX by_hand_bookings_wedding ON bookings (wedding_id)")
        conn.execute("CREATE INDEX by_hand_bookings_wedding_status ON bookings (wedding_id, status)")
        conn.execute("SELECT count(*) FROM bookings WHERE wedding_id = 7 AND status = 'pending'")
        audit = Audit(conn, settings.executor.audit_schema)
        audit.ensure()
        command = sign(build_command("advisor", "create_index", create, table="public.guests"), KEY)
        audit.save(command, "applied", "test", "test", sql_text=create, table="public.guests",
                   index_name=f"public.{made_by_dbopt}")
    try:
        commands = sweeper(infra, demo, unused_min_age_days=0).sweep(None, int(MONDAY_NOON.timestamp() * 1000))
        drops = {c.sql.rsplit(".", 1)[-1]: c for c in commands if c.action == "drop_index"}
        own = drops[made_by_dbopt]
        assert not own.recommendation and "no scan" in own.reason and own.figure("index_bytes")
        human = drops["by_hand_payments_method"]
        assert human.recommendation and "a recommendation for a human" in human.reason
        assert "MiB" in human.reason and "index writes" in human.reason  # size and write cost
        duplicate = drops["by_hand_bookings_wedding"]
        assert "is a prefix of public.by_hand_bookings_wedding_status" in duplicate.reason or "no scan" in duplicate.reason
        assert not any(name.endswith("_pkey") for name in drops)  # a constraint's index is never reported
        # with the real observation period (35 days) a fresh statistics epoch reports only duplicates
        commands = sweeper(infra, demo).sweep(None, int(MONDAY_NOON.timestamp() * 1000))
        reasons = [c.reason for c in commands if c.action == "drop_index"]
        assert reasons and all("is a prefix of" in r for r in reasons)
    finally:
        with psycopg.connect(demo, autocommit=True) as conn:
            for name in (made_by_dbopt, "by_hand_payments_method", "by_hand_bookings_wedding",
                         "by_hand_bookings_wedding_status"):
                conn.execute(f"DROP INDEX IF EXISTS {name}")


def test_a_sweep_never_runs_on_a_freeze_day(infra: Settings, demo: str) -> None:
    with psycopg.connect(demo, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.frozen_log WITH (autovacuum_enabled = false) AS SELECT g AS id FROM generate_series(1, 20000) g")
        conn.execute("DELETE FROM public.frozen_log WHERE id % 2 = 0")
        dead_tuples_visible(conn, "frozen_log", 10_000)
    try:
        sweep = sweeper(infra, demo, sweep_interval_s=3600)
        start = int(SATURDAY_NOON.timestamp() * 1000) - 2 * 3_600_000
        assert sweep.tick(start) == ([], [])  # the first sweep comes one interval later
        assert sweep.tick(int(SATURDAY_NOON.timestamp() * 1000)) == ([], [])  # due, but a wedding day
        commands, _ = sweep.tick(int(MONDAY_NOON.timestamp() * 1000))
        assert any(c.action == "vacuum" and c.table == "public.frozen_log" for c in commands), [(c.sql, c.reason) for c in commands]
    finally:
        with psycopg.connect(demo, autocommit=True) as conn:
            conn.execute("DROP TABLE public.frozen_log")


def test_reindex_of_a_bloated_index_is_verified(infra: Settings, demo: str) -> None:
    with psycopg.connect(demo, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.churn WITH (autovacuum_enabled = false) AS SELECT g AS id FROM generate_series(1, 200000) g")
        conn.execute("CREATE INDEX churn_id ON public.churn (id)")
        conn.execute("DELETE FROM public.churn WHERE id % 10 <> 0")
        dead_tuples_visible(conn, "churn", 180_000)
        conn.execute("VACUUM public.churn")  # leaves the index pages mostly empty
    try:
        with psycopg.connect(demo, autocommit=True) as conn:
            (index,) = maintenance.read_indexes(conn, ["public"], 0, "churn_id")
        assert index.bloat > 0.5 and index.source == "estimate"
        sweep = sweeper(infra, demo, reindex_min_bytes=0)
        commands = sweep.sweep(None, int(MONDAY_NOON.timestamp() * 1000))
        (reindex,) = [c for c in commands if c.action == "reindex" and c.sql.endswith(".churn_id")]
        assert reindex.sql == "REINDEX (CONCURRENTLY) INDEX public.churn_id" and reindex.figure("bloat_ratio")
        sweep.on_command(reindex)
        with psycopg.connect(demo, autocommit=True) as conn:
            conn.execute(check_statement(reindex.sql).sql_to_run)
        now = int(MONDAY_NOON.timestamp() * 1000)
        sweep.on_result(OptimizationResult(command_id=reindex.command_id, status="applied", reason="",
                                           sql=reindex.sql, finished_at=now))
        (result,) = sweep.tick(now + 10_000)[1]
        assert result.reason.startswith("verified: index size")
    finally:
        with psycopg.connect(demo, autocommit=True) as conn:
            conn.execute("DROP TABLE public.churn")
