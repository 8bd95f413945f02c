"""``dbopt demo-db init`` against a scratch PostgreSQL database, with the catalog as the oracle."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from streams.cli import main
from streams.config import Settings
from streams.demo.load import init_demo_db
from streams.demo.schema import TABLE_NAMES, VENDOR_CATEGORIES, chunks, plan_rows
from streams.demo.workload import SLOW_BOOKING_QUERY

BOOKINGS = 40_000


# -- pure ------------------------------------------------------------------------------------


def test_chunks_cover_every_id_once() -> None:
    for total, size in [(1, 1), (10, 3), (250_000, 100_000), (7, 100)]:
        ids = [i for lo, hi in chunks(total, size) for i in range(lo, hi + 1)]
        assert ids == list(range(1, total + 1))
        assert all(hi - lo + 1 <= size for lo, hi in chunks(total, size))
    with pytest.raises(ValueError):
        chunks(10, 0)


def test_plan_rows_scales_with_bookings() -> None:
    rows = plan_rows(1_000_000)
    assert rows["bookings"] == 1_000_000
    assert set(rows) == set(TABLE_NAMES)
    assert rows["vendors"] == 20_000 and rows["weddings"] == 250_000
    assert plan_rows(1)["vendors"] >= len(VENDOR_CATEGORIES)  # every category has vendors
    with pytest.raises(ValueError):
        plan_rows(0)


def test_fourteen_vendor_categories() -> None:
    assert len(set(VENDOR_CATEGORIES)) == 14


def test_bad_bookings_argument_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo-db", "init", "--bookings", "zero"])
    assert exit_info.value.code == 2
    assert "--bookings: 'zero' is not a whole number" in capsys.readouterr().err


# -- against PostgreSQL ----------------------------------------------------------------------


def _catalog(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        indexes = conn.execute(
            "SELECT c.relname, i.indisprimary FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        ).fetchall()
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # type: ignore[index]
        fks = conn.execute(
            "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
        ).fetchall()
    return {"tables": tables, "indexes": indexes, "counts": counts, "fks": [r[0] for r in fks]}


@pytest.mark.infra
def test_init_creates_tables_with_primary_keys_only_and_reruns_from_scratch(infra: Settings, scratch_db: str) -> None:
    lines: list[str] = []
    reports = init_demo_db(infra, scratch_db, BOOKINGS, chunk_rows=15_000, say=lines.append)

    catalog = _catalog(scratch_db)
    assert catalog["tables"] == sorted(TABLE_NAMES)
    assert len(catalog["indexes"]) == len(TABLE_NAMES)  # one index per table ...
    assert all(primary for _, primary in catalog["indexes"])  # ... and it is the primary key
    assert catalog["counts"] == plan_rows(BOOKINGS)
    assert {r.name: r.rows for r in reports} == plan_rows(BOOKINGS)
    assert "bookings" in catalog["fks"]  # foreign keys exist, with no index behind them
    # progress: one line per chunk (bookings 40,000 rows in chunks of 15,000 -> 3 lines)
    assert sum(line.strip().startswith("bookings") for line in lines) == 3

    with psycopg.connect(scratch_db, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(DISTINCT category), count(*) FILTER (WHERE category <> ALL(%s)) FROM vendors",
                    (list(VENDOR_CATEGORIES),))
        assert cur.fetchone() == (14, 0)
        cur.execute("SELECT array_agg(DISTINCT status ORDER BY status) FROM bookings")
        assert cur.fetchone() == (["cancelled", "completed", "confirmed", "pending"],)
        # identities continue after the loaded ids
        cur.execute("INSERT INTO bookings (wedding_id, vendor_id, status, event_date, amount)"
                    " VALUES (1, 1, 'pending', '2025-06-01', 100) RETURNING id")
        assert cur.fetchone() == (BOOKINGS + 1,)
        # things that re-running init must remove (an index on a demo table) or keep (a foreign table)
        cur.execute("CREATE INDEX extra_idx ON bookings (vendor_id)")
        cur.execute("CREATE TABLE keep_me (id int PRIMARY KEY)")

    init_demo_db(infra, scratch_db, BOOKINGS // 2, say=lines.append)
    catalog = _catalog(scratch_db)
    assert catalog["tables"] == sorted([*TABLE_NAMES, "keep_me"])
    assert "extra_idx" not in {name for name, _ in catalog["indexes"]}
    assert all(primary for _, primary in catalog["indexes"])
    assert {t: n for t, n in catalog["counts"].items() if t != "keep_me"} == plan_rows(BOOKINGS // 2)


def _plan(conn: psycopg.Connection[Any], sql: str, params: tuple[object, ...]) -> str:
    row = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
    assert row is not None
    return json.dumps(row[0])


@pytest.mark.infra
def test_slow_booking_query_scans_bookings_until_indexed(infra: Settings, scratch_db: str) -> None:
    init_demo_db(infra, scratch_db, BOOKINGS, say=lambda _: None)
    params = (17, "2025-06-01")
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        before = _plan(conn, SLOW_BOOKING_QUERY.sql, params)
        assert '"Seq Scan"' in before and '"Relation Name": "bookings"' in before
        assert '"Index' not in before
        conn.execute(
            "CREATE INDEX bookings_vendor_date ON bookings (vendor_id, event_date)"
            " WHERE status IN ('confirmed', 'pending')"
        )
        conn.execute("ANALYZE bookings")
        after = _plan(conn, SLOW_BOOKING_QUERY.sql, params)
    assert "bookings_vendor_date" in after and '"Seq Scan"' not in after
