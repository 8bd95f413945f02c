"""Pure tests of streams.sql (no servers)."""

from __future__ import annotations

import pytest
from pglast import parser

from streams.sql import NormalizedStatement, SqlParseError, StatementCache, normalize

# (statement, literal fragments that must not survive into query_text)
LITERAL_CASES = [
    ("SELECT * FROM guests WHERE full_name = 'Zoë Hartley' AND email = 'zoe.hartley@example.com'",
     ["Zoë", "Hartley", "zoe.hartley", "example.com"]),
    ("INSERT INTO payments (booking_id, amount, paid_at) VALUES (918273, 4321.99, '2031-07-19 14:05:00')",
     ["918273", "4321.99", "2031-07-19", "14:05"]),
    ("UPDATE bookings SET status = 'cancelled', note = E'call Mrs. O\\'Neil' WHERE id IN (55501, 55502, 55503)",
     ["cancelled", "Neil", "55501", "55502", "55503"]),
    ("DELETE FROM timeline_events WHERE starts_at < DATE '2029-12-31' - INTERVAL '30 days'",
     ["2029-12-31", "30 days"]),
    ("SELECT id FROM vendors WHERE price_cents BETWEEN 150000 AND 275000 AND tags && ARRAY['boho','rustic'] LIMIT 25",
     ["150000", "275000", "boho", "rustic", "25"]),
    ("/* guest: ann@example.org */ SELECT 1 FROM guests WHERE phone = '+1-555-0199' -- ann\n",
     ["ann@example.org", "555-0199", "ann"]),
    ("COMMENT ON TABLE guests IS 'ask Priya Raman before changing'", ["Priya", "Raman"]),
    ("SELECT x'DEADBEEF', b'1011', U&'d\\0061t\\+000061', 1e42, -77123 FROM vendors",
     ["DEADBEEF", "1011", "0061", "1e42", "77123"]),
]


@pytest.mark.parametrize(("sql", "fragments"), LITERAL_CASES)
def test_no_literal_survives_in_query_text(sql: str, fragments: list[str]) -> None:
    text = normalize(sql).query_text
    for fragment in fragments:
        assert fragment not in text, (fragment, text)
    # independent check with PostgreSQL's own scanner: no constant token is left
    assert not [t for t in parser.scan(text) if t.name in {"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"}]


@pytest.mark.parametrize(
    ("variant_a", "variant_b", "expected_text"),
    [
        pytest.param(
            "select * from guests where email = 'a@x.org' and wedding_id in (1, 2, 3) and rsvp_on > date '2030-01-01'",
            "SELECT *\n  FROM guests -- other literals, other layout\n WHERE email='zz@y.com' AND wedding_id IN (99) "
            "AND rsvp_on > DATE '2031-05-05'",
            "SELECT * FROM guests WHERE email = $1 AND wedding_id IN ($2) AND rsvp_on > CAST($3 AS date)",
            id="literals-layout-comments-in-list",
        ),
        pytest.param(
            "INSERT INTO guests (name, email) VALUES ('A', 'a@x')",
            "INSERT INTO guests (name, email) VALUES ('A', 'a@x'), ('B', 'b@x'), ('C', 'c@x')",
            "INSERT INTO guests (name, email) VALUES ($1, $2)",
            id="multirow-values",
        ),
        pytest.param(
            "SELECT 1 FROM t WHERE x = ANY(ARRAY[1,2,3])",
            "SELECT 1 FROM t WHERE x = ANY(ARRAY[7])",
            "SELECT $1 FROM t WHERE x = ANY(ARRAY[$2])",
            id="array",
        ),
        pytest.param(
            "WITH x AS (SELECT * FROM t WHERE a IN (1)) SELECT * FROM x WHERE b IN (2)",
            "WITH x AS (SELECT * FROM t WHERE a IN (1, 2, 3)) SELECT * FROM x WHERE b IN (4, 5)",
            "WITH x AS (SELECT * FROM t WHERE a IN ($1)) SELECT * FROM x WHERE b IN ($2)",
            id="lists-inside-with",
        ),
    ],
)
def test_same_statement_different_literals_same_fingerprint_and_text(
    variant_a: str, variant_b: str, expected_text: str
) -> None:
    a, b = normalize(variant_a), normalize(variant_b)
    assert a.fingerprint == b.fingerprint
    assert a.query_text == b.query_text == expected_text


def test_different_statements_differ() -> None:
    a = normalize("SELECT * FROM guests WHERE email = 'x'")
    b = normalize("SELECT * FROM guests WHERE phone = 'x'")
    assert a.fingerprint != b.fingerprint
    assert a.query_text != b.query_text


def test_placeholders_numbered_in_text_order() -> None:
    text = normalize("SELECT $2, 'a', $1 FROM t WHERE y = 5").query_text
    assert text == "SELECT $1, $2, $3 FROM t WHERE y = $4"


@pytest.mark.parametrize(
    ("sql", "statement_type"),
    [
        ("SELECT 1", "SELECT"),
        ("insert into a values (1)", "INSERT"),
        ("update a set x = 1", "UPDATE"),
        ("delete from a", "DELETE"),
        ("MERGE INTO a USING b ON a.id = b.id WHEN MATCHED THEN DELETE", "MERGE"),
        ("WITH d AS (DELETE FROM a RETURNING *) SELECT * FROM d", "SELECT"),
        ("CREATE INDEX CONCURRENTLY ON bookings (wedding_id)", "UTILITY"),
        ("BEGIN", "UTILITY"),
        ("SET statement_timeout = 5000", "UTILITY"),
        ("SELECT 1; DELETE FROM a", "SELECT"),
    ],
)
def test_statement_type(sql: str, statement_type: str) -> None:
    assert normalize(sql).statement_type == statement_type


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("SELECT * FROM Guests g JOIN weddings w ON w.id = g.wedding_id", ("guests", "weddings")),
        ("SELECT * FROM public.bookings, bookings", ("bookings", "public.bookings")),
        ("WITH recent AS (SELECT * FROM bookings) SELECT * FROM recent JOIN vendors USING (vendor_id)",
         ("bookings", "vendors")),
        # a CTE named like a table: inside its own (non-recursive) body the name is the real table
        ("WITH payments AS (SELECT * FROM payments WHERE amount > 0) SELECT * FROM payments", ("payments",)),
        ("INSERT INTO payments (id) SELECT id FROM bookings WHERE id IN (SELECT booking_id FROM timeline_events)",
         ("bookings", "payments", "timeline_events")),
        ("UPDATE bookings b SET status = 'x' FROM vendors v WHERE v.id = b.vendor_id", ("bookings", "vendors")),
        ("DELETE FROM guests USING weddings WHERE weddings.id = guests.wedding_id", ("guests", "weddings")),
        ("SELECT now()", ()),
    ],
)
def test_tables(sql: str, tables: tuple[str, ...]) -> None:
    assert normalize(sql).tables == tables


@pytest.mark.parametrize("sql", ["SELEC * FROM guests WHERE name = 'Jane'", "SELECT * FROM", "", "  -- nothing\n"])
def test_unparsable_raises_clear_error(sql: str) -> None:
    with pytest.raises(SqlParseError, match="SQL") as info:
        normalize(sql)
    assert isinstance(info.value, ValueError)


def test_statement_cache_hits_and_bounds() -> None:
    cache = StatementCache(maxsize=2)
    first = cache.get("SELECT * FROM guests WHERE id = 1")
    assert isinstance(first, NormalizedStatement)
    assert cache.get("SELECT * FROM guests WHERE id = 1") is first
    assert (cache.hits, cache.misses) == (1, 1)
    cache.get("SELECT 2")
    cache.get("SELECT 3")  # evicts the least recently used entry
    assert len(cache) == 2
    cache.get("SELECT * FROM guests WHERE id = 1")
    assert cache.misses == 4


def test_statement_cache_caches_parse_errors() -> None:
    cache = StatementCache(maxsize=8)
    for _ in range(3):
        with pytest.raises(SqlParseError):
            cache.get("SELECT FROM WHERE")
    assert (cache.hits, cache.misses) == (2, 1)


def test_statement_cache_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StatementCache(0)
