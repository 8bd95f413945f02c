"""dbopt never depends on a connection's ``search_path``.

PostgreSQL's default ``search_path`` is ``"$user", public``. dbopt connects as role ``dbopt`` and
its executor creates its audit schema ``dbopt``: from then on an unqualified ``CREATE TABLE``
lands in ``dbopt`` and an unqualified name may resolve there. These tests arm that trap in a
scratch database (a schema named like the connecting role, made by the real executor) and check
that the demo, the advisor and the executor still agree on where the target tables are — in
both orders, with the real ``dbopt`` commands.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from clienv import dbopt
from streams import db
from streams.advise.evaluate import Evaluator, QueryInput
from streams.config import AdviseSettings, ConfigError, Settings, load_settings
from streams.demo.schema import TABLE_NAMES
from streams.demo.workload import SLOW_BOOKING_QUERY
from streams.execute.audit import TABLE as AUDIT_TABLE
from streams.sql import normalize

KEY = "search-path-test-key"
BOOKINGS = "2000"


def _env(settings: Settings, url: str, **extra: str) -> dict[str, str]:
    return {
        "DBOPT_DATABASE_URL": url,
        "DBOPT_COMMAND_KEY": KEY,
        "DBOPT_EXECUTOR_GROUP": f"dbopt-executor-{uuid.uuid4().hex[:8]}",
        "DBOPT_FREEZE_WEEKDAYS": "",
        **extra,
    }


def _ok(settings: Settings, env: dict[str, str], *args: str) -> str:
    proc = dbopt(settings, *args, timeout=120, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _execute(settings: Settings, env: dict[str, str], statement: str) -> tuple[str, str, str | None]:
    """Submit ``statement`` with ``dbopt command submit``, run ``dbopt executor --once``: (status, reason, table)."""
    command_id = _ok(settings, env, "command", "submit", "--sql", statement).strip().splitlines()[-1]
    _ok(settings, env, "executor", "--once", "--idle-timeout", "1")
    with psycopg.connect(env["DBOPT_DATABASE_URL"]) as conn:
        row = conn.execute(
            sql.SQL("SELECT status, reason, table_name FROM {} WHERE command_id = %s").format(
                sql.Identifier(settings.executor.audit_schema, AUDIT_TABLE)
            ),
            (command_id,),
        ).fetchone()
    assert row is not None, f"no audit row for {statement}"
    return row[0], row[1], row[2]


def _arm_role_schema(url: str) -> str:
    """Give the connecting role a schema of its own name; return that name (PostgreSQL's default path now starts there)."""
    with psycopg.connect(url, autocommit=True) as conn:
        role = conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(role)))
        assert conn.execute("SELECT current_schemas(false)").fetchone() == ([role, "public"],)
    return str(role)


def _schemas_of_demo_tables(url: str) -> dict[str, set[str]]:
    """Schema -> demo tables in it, from pg_catalog."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND c.relname = ANY(%s)",
            (list(TABLE_NAMES),),
        ).fetchall()
    found: dict[str, set[str]] = {}
    for schema, name in rows:
        found.setdefault(schema, set()).add(name)
    return found


def _advise_slow_query(settings: Settings, url: str) -> set[str]:
    """The tables the advisor resolves the demo's slow query (as the SDK reports it) to, and checks it plans."""
    statement = normalize(SLOW_BOOKING_QUERY.sql % (17, "'2025-06-01'")).query_text
    assert "bookings" in statement and "public." not in statement  # unqualified, as services write it
    evaluator = Evaluator.connect(settings.with_overrides(advise=AdviseSettings(min_cost=0)), url)
    try:
        ev, _ = evaluator.evaluate(QueryInput("slow", statement))
    finally:
        evaluator.close()
    assert ev.error is None and ev.shape is not None and ev.cost_before
    assert ev.costs, "no candidate was measured"
    assert {c.candidate.qualified_table for c in ev.costs} == {t.qualified for t in ev.shape.tables}
    return {t.qualified for t in ev.shape.tables}


def test_demo_after_the_executor_creates_its_tables_in_public(settings: Settings, scratch_db: str) -> None:
    env = _env(settings, scratch_db)
    # the executor runs first (any command): it creates its audit schema, named like the role here
    status, reason, _ = _execute(settings, env, "ANALYZE weddings")
    assert status == "rejected" and "does not exist" in reason
    role = _arm_role_schema(scratch_db)

    _ok(settings, env, "demo-db", "init", "--bookings", BOOKINGS)

    assert _schemas_of_demo_tables(scratch_db) == {"public": set(TABLE_NAMES)}
    assert _advise_slow_query(settings, scratch_db) == {"public.bookings"}
    status, reason, table = _execute(settings, env, "ANALYZE bookings")
    assert (status, table) == ("applied", "public.bookings"), reason
    assert role not in _schemas_of_demo_tables(scratch_db)


def test_executor_after_the_demo_resolves_past_a_same_named_table_in_the_role_schema(
    settings: Settings, scratch_db: str
) -> None:
    env = _env(settings, scratch_db)
    _ok(settings, env, "demo-db", "init", "--bookings", BOOKINGS)
    status, reason, table = _execute(settings, env, "ANALYZE bookings")
    assert (status, table) == ("applied", "public.bookings"), reason
    # a bookings table in the role's schema (what the old demo left behind): PostgreSQL's default
    # search path now finds it first; dbopt must not
    role = _arm_role_schema(scratch_db)
    decoy = sql.Identifier(role, "bookings")
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE public.bookings)").format(decoy))
        found = conn.execute("SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = to_regclass('bookings')")
        assert found.fetchone() == (role,)

    assert _advise_slow_query(settings, scratch_db) == {"public.bookings"}
    status, reason, table = _execute(settings, env, "VACUUM bookings")
    assert (status, table) == ("applied", "public.bookings"), reason
    _ok(settings, env, "demo-db", "init", "--bookings", BOOKINGS)  # again: drops and recreates its own tables only
    assert _schemas_of_demo_tables(scratch_db) == {"public": set(TABLE_NAMES), role: {"bookings"}}


def test_a_configured_search_path_moves_the_demo_and_the_advisor_together(settings: Settings, scratch_db: str) -> None:
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA app")
    _arm_role_schema(scratch_db)
    env = _env(settings, scratch_db, DBOPT_DATABASE_SEARCH_PATH="app,public")

    _ok(settings, env, "demo-db", "init", "--bookings", BOOKINGS)

    assert _schemas_of_demo_tables(scratch_db) == {"app": set(TABLE_NAMES)}
    app = settings.with_overrides(database_search_path=("app", "public"))
    assert _advise_slow_query(app, scratch_db) == {"app.bookings"}
    with db.connect(app, url=scratch_db, application_name="dbopt-test") as conn:
        assert conn.execute("SELECT current_schemas(false)").fetchone() == (["app", "public"],)
        conn.execute("RESET ALL")
        assert conn.execute("SELECT replace(current_setting('search_path'), ' ', '')").fetchone() == ("app,public",)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('"$user",public', "not a plain lowercase schema name"),
        ("Public", "not a plain lowercase schema name"),
        ("pg_catalog", "not a plain lowercase schema name"),
        ("public,dbopt", "dbopt's own schema"),
    ],
)
def test_search_path_setting_is_checked(value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="DBOPT_DATABASE_SEARCH_PATH") as info:
        load_settings({"DBOPT_DATABASE_SEARCH_PATH": value})
    assert problem in str(info.value)
    assert load_settings({}).database_search_path == ("public",)
