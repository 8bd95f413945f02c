"""The executor's allowlist (pure, pglast): what may run, what is refused and why."""

from __future__ import annotations

import pytest
from pglast import parse_sql

from streams.execute.allowlist import Name, Refused, action_of, check_statement

REJECTED = [
    ("CREATE INDEX CONCURRENTLY i ON bookings (vendor_id); DROP TABLE bookings", "exactly one statement"),
    ("ANALYZE bookings; ANALYZE bookings", "exactly one statement"),
    ("", "exactly one statement is allowed, got 0"),
    ("CREATE INDEX CONCURRENTLY ON", "not valid SQL"),
    ("DROP TABLE bookings", "DROP TABLE is not allowed"),
    ("DROP SCHEMA public CASCADE", "DROP SCHEMA is not allowed"),
    ("TRUNCATE bookings", "TRUNCATE is not allowed"),
    ("DELETE FROM bookings", "DELETE is not allowed"),
    ("SELECT pg_sleep(10)", "SELECT is not allowed"),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE bookings'; END $$", "DO is not allowed"),
    ("CREATE INDEX i ON bookings (vendor_id)", "without CONCURRENTLY"),
    ("CREATE UNIQUE INDEX CONCURRENTLY i ON bookings (vendor_id)", "UNIQUE"),
    ("CREATE INDEX CONCURRENTLY ON bookings (vendor_id)", "explicit index name"),
    ("CREATE INDEX CONCURRENTLY i ON bookings (vendor_id) TABLESPACE pg_default", "TABLESPACE"),
    ("VACUUM FULL bookings", "VACUUM FULL is not allowed"),
    ("VACUUM (FULL) bookings", "VACUUM FULL is not allowed"),
    ("VACUUM (ANALYZE, FULL false) bookings", "VACUUM FULL is not allowed"),
    ("VACUUM", "exactly one table, got 0"),
    ("ANALYZE bookings, vendors", "exactly one table, got 2"),
    ("REINDEX TABLE bookings", "without CONCURRENTLY"),
    ("REINDEX (CONCURRENTLY false) INDEX i", "without CONCURRENTLY"),
    ("REINDEX SCHEMA CONCURRENTLY public", "only REINDEX INDEX or REINDEX TABLE"),
    ("DROP INDEX i", "without CONCURRENTLY"),
    ("DROP INDEX CONCURRENTLY i CASCADE", "CASCADE"),
    ("CREATE INDEX CONCURRENTLY i ON pg_catalog.pg_class (relname)", "system"),
    ("CREATE INDEX CONCURRENTLY i ON pg_class (relname)", "system catalog"),
    ("ANALYZE information_schema.tables", "system"),
    ("VACUUM pg_toast.pg_toast_1234", "system"),
    ("REINDEX (CONCURRENTLY) TABLE pg_temp_3.x", "system"),
    ("ANALYZE dbopt.dbopt_audit", "dbopt's own schema"),
    ("CREATE INDEX CONCURRENTLY i ON bookings ((vendor_id + (SELECT max(id) FROM vendors)))", "subquery"),
    ("CREATE INDEX CONCURRENTLY i ON bookings (vendor_id) WHERE EXISTS (SELECT 1 FROM vendors)", "subquery"),
    ('CREATE INDEX CONCURRENTLY "i; DROP TABLE bookings; --" ON bookings (vendor_id)', "injection"),
    ('ANALYZE "bookings; DROP TABLE bookings"', "injection"),
    ('CREATE INDEX CONCURRENTLY i ON bookings ("a"" ; b")', "injection"),
    ('CREATE INDEX CONCURRENTLY i ON "public\'--".bookings (a)', "injection"),
    ("CREATE INDEX CONCURRENTLY i ON bookings (vendor_id) WHERE status = $1", "ParamRef"),
    ("CREATE INDEX CONCURRENTLY i ON bookings ((count(*)))", "aggregate"),
    ("CREATE INDEX CONCURRENTLY i ON bookings (vendor_id) WHERE created_at > CURRENT_DATE", "SQLValueFunction"),
    ("CREATE INDEX CONCURRENTLY i ON x.y.bookings (a)", "database-qualified"),
]


@pytest.mark.parametrize(("sql", "why"), REJECTED)
def test_rejected_with_reason(sql: str, why: str) -> None:
    with pytest.raises(Refused) as info:
        check_statement(sql)
    assert why in info.value.reason


def test_create_index_collects_functions_and_deparses() -> None:
    stmt = check_statement(
        "create index concurrently dbopt_idx_b on public.bookings (vendor_id, lower(email)) "
        "/* comment */ where status in ('confirmed', 'pending') and coalesce(pg_catalog.abs(amount), 0) > 10"
    )
    assert stmt.action == "create_index"
    assert stmt.target == Name("public", "bookings") and stmt.target_kind == "table"
    assert stmt.index_name == "dbopt_idx_b"
    assert set(stmt.functions_to_check) == {Name(None, "lower"), Name("pg_catalog", "abs")}
    assert "comment" not in stmt.sql_to_run
    assert len(parse_sql(stmt.sql_to_run)) == 1
    # what runs is PostgreSQL's own rendering of the parse tree, and is stable under re-validation
    assert check_statement(stmt.sql_to_run).sql_to_run == stmt.sql_to_run


def test_volatile_calls_are_collected_for_the_catalog_check() -> None:
    stmt = check_statement("CREATE INDEX CONCURRENTLY i ON bookings ((pg_sleep(1)::text))")
    assert Name(None, "pg_sleep") in stmt.functions_to_check


@pytest.mark.parametrize(
    ("sql", "action", "target", "kind"),
    [
        ("DROP INDEX CONCURRENTLY public.dbopt_idx_b", "drop_index", Name("public", "dbopt_idx_b"), "index"),
        ("DROP INDEX CONCURRENTLY IF EXISTS dbopt_idx_b", "drop_index", Name(None, "dbopt_idx_b"), "index"),
        ("ANALYZE bookings", "analyze", Name(None, "bookings"), "table"),
        ("ANALYZE VERBOSE bookings (vendor_id)", "analyze", Name(None, "bookings"), "table"),
        ("VACUUM (ANALYZE, SKIP_LOCKED) bookings", "vacuum", Name(None, "bookings"), "table"),
        ("REINDEX INDEX CONCURRENTLY dbopt_idx_b", "reindex", Name(None, "dbopt_idx_b"), "index"),
        ("REINDEX (CONCURRENTLY) TABLE bookings", "reindex", Name(None, "bookings"), "table"),
        ('CREATE INDEX CONCURRENTLY "Idx_Mixed" ON "Bookings" ("VendorId")', "create_index", Name(None, "Bookings"), "table"),
    ],
)
def test_allowed(sql: str, action: str, target: Name, kind: str) -> None:
    stmt = check_statement(sql)
    assert (stmt.action, stmt.target, stmt.target_kind) == (action, target, kind)
    assert action_of(sql) == action


def test_action_of_unknown_for_anything_else() -> None:
    assert action_of("DROP TABLE bookings") == "unknown"
    assert action_of("ANALYZE a; ANALYZE b") == "unknown"
    assert action_of("not sql at all") == "unknown"
    assert action_of("CREATE INDEX i ON t (a)") == "create_index"  # classified, though rejected later


def test_index_probe_parts_for_the_catalog() -> None:
    stmt = check_statement("CREATE INDEX CONCURRENTLY i ON vendors USING gin (name gin_trgm_ops, (lower(email)) COLLATE \"C\") "
                    "WHERE status = 'x'")
    assert stmt.method == "gin" and stmt.opclasses == (Name(None, "gin_trgm_ops"),)
    assert stmt.extensions == ("pg_trgm",)
    assert stmt.probe_expressions == ("name", 'lower(email) COLLATE "C"', "status = 'x'")
    assert check_statement("ANALYZE t").probe_expressions == ()
