"""The executor's guard on index expressions, against a real catalog: whatever the advisor proposes,
an index may call only built-in (pg_catalog) or allowlisted-extension (pg_trgm) objects, and only
IMMUTABLE functions — never a user-defined function, which would run with the executor's role."""

from __future__ import annotations

from typing import Iterator

import psycopg
import pytest

from streams.execute import catalog
from streams.execute.allowlist import Refused, check_statement
from streams.execute.audit import Audit

pytestmark = pytest.mark.infra

SEED = """
CREATE TABLE public.vendors (id bigint PRIMARY KEY, name text, email text, description text, n int);
CREATE FUNCTION public.f() RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE FUNCTION public.same(a int, b int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT a = b';
CREATE OPERATOR public.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = public.same);
CREATE FUNCTION public.lower(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x';
"""


@pytest.fixture
def conn(scratch_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(scratch_db, autocommit=True) as c:
        c.execute(SEED)
        c.execute("SET search_path = public")
        yield c


def check(conn: psycopg.Connection, sql: str) -> str | None:
    """The rejection reason, or None when the catalog allows the statement."""
    audit = Audit(conn, "dbopt")
    audit.ensure()
    try:
        catalog.check(conn, check_statement(sql), audit)
    except Refused as exc:
        return exc.reason
    return None


@pytest.mark.parametrize(("sql", "why"), [
    ("CREATE INDEX CONCURRENTLY i ON vendors (id) WHERE public.f()", "function public.f() is not built in"),
    ("CREATE INDEX CONCURRENTLY i ON vendors ((f()))", "function public.f() is not built in"),
    ("CREATE INDEX CONCURRENTLY i ON vendors (id) WHERE n === 3", "operator public.===(integer,integer) is not built in"),
    ("CREATE INDEX CONCURRENTLY i ON vendors ((lower(n)))", "function public.lower(integer) is not built in"),
    ("CREATE INDEX CONCURRENTLY i ON vendors USING gin ((to_tsvector(description)))", "function to_tsvector is STABLE"),
    ("CREATE INDEX CONCURRENTLY i ON vendors ((now() > '2020-01-01'))", "function now is STABLE"),
    ("CREATE INDEX CONCURRENTLY i ON vendors USING gin (name gin_trgm_ops)",
     "needs extension pg_trgm, which is not installed in this database; dbopt never creates extensions: "
     "a human can run CREATE EXTENSION pg_trgm"),
    ("CREATE INDEX CONCURRENTLY i ON vendors ((nosuch(n)))", "function nosuch(integer) does not exist"),
])
def test_refused(conn: psycopg.Connection, sql: str, why: str) -> None:
    reason = check(conn, sql)
    assert reason is not None and why in reason, reason
    assert conn.execute("SELECT count(*) FROM pg_class WHERE relname IN ('i', 'dbopt_probe')").fetchone() == (0,)


def test_built_ins_and_allowlisted_extensions_pass(conn: psycopg.Connection) -> None:
    conn.execute("CREATE EXTENSION pg_trgm")  # a human installed it
    for sql in (
        "CREATE INDEX CONCURRENTLY a ON vendors ((lower(email)))",  # pg_catalog.lower(text), not public.lower(int)
        "CREATE INDEX CONCURRENTLY b ON vendors USING gin ((to_tsvector('english', description)))",
        "CREATE INDEX CONCURRENTLY c ON vendors USING gin (name gin_trgm_ops)",
        "CREATE INDEX CONCURRENTLY d ON vendors USING gist (name gist_trgm_ops) WHERE similarity(name, 'x') > 0.3",
        "CREATE INDEX CONCURRENTLY e ON vendors (n) WHERE email IN ('a', 'b') AND n > 3",
    ):
        assert check(conn, sql) is None, sql
