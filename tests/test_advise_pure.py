"""Pure tests of the advisor: SQL analysis, candidate indexes, coverage and the choice (no servers)."""

from __future__ import annotations

import pytest
from pglast import ast, parse_sql

from streams.advise.analysis import ConstantFilter, OrderColumn, UnsupportedStatement, analyze_sql
from streams.advise.candidates import (
    INDEX_PREFIX,
    ExistingIndex,
    IndexCandidate,
    analyze_statement,
    candidates_for,
    covering_index,
)
from streams.advise.evaluate import CandidateCost, QueryEvaluation, QueryInput, TableStats, choose, stale_reason
from streams.config import AdviseSettings
from streams.sql import SqlParseError

BOOKING = (
    "SELECT b.id, v.name FROM bookings AS b JOIN vendors v ON v.id = b.vendor_id "
    "WHERE b.status IN ('confirmed', 'pending') AND b.event_date BETWEEN $1 AND $2 "
    "AND b.wedding_id = $3 AND $4 < b.amount ORDER BY b.created_at DESC LIMIT 10"
)


def test_predicates_per_table_with_aliases() -> None:
    shape = analyze_sql(BOOKING)
    bookings, vendors = shape.table("bookings"), shape.table("vendors")
    assert bookings is not None and vendors is not None
    assert bookings.aliases == ["b"]
    assert bookings.equality == ["status", "wedding_id"]
    assert bookings.range == ["event_date", "amount"]  # BETWEEN, and a reversed comparison
    assert bookings.join == ["vendor_id"] and vendors.join == ["id"]
    assert bookings.order_by == [OrderColumn("created_at", descending=True)]
    assert bookings.constant_filters == [ConstantFilter("status", ("confirmed", "pending"))]
    assert shape.limit == 10 and shape.has_limit and shape.param_count == 4


def test_update_delete_and_what_is_left_out() -> None:
    upd = analyze_sql("UPDATE bookings SET status = $1 WHERE id = $2 AND (notes = $3 OR amount > $4)")
    assert upd.statement_type == "UPDATE"
    assert upd.tables[0].equality == ["id"] and upd.tables[0].range == []  # OR branches filter no row for sure
    dele = analyze_sql("DELETE FROM public.guests g USING weddings w WHERE w.id = g.wedding_id AND w.status = $1")
    guests = dele.table("public.guests")
    assert guests is not None and guests.schema == "public" and guests.join == ["wedding_id"]
    amb = analyze_sql("SELECT * FROM a JOIN b ON a.id = b.a_id WHERE x = $1")
    assert amb.ambiguous == ["x"] and all(not t.equality for t in amb.tables)


@pytest.mark.parametrize(
    "sql, error",
    [
        ("SELECT 1; SELECT 2", UnsupportedStatement),
        ("DROP TABLE bookings", UnsupportedStatement),
        ("SELECT 1", UnsupportedStatement),
        ("SELEC * FROM x", SqlParseError),
    ],
)
def test_unsupported_statements_say_why(sql: str, error: type) -> None:
    with pytest.raises(error):
        analyze_sql(sql)


def _by_columns(sql: str) -> dict[tuple[tuple[str, ...], ConstantFilter | None], IndexCandidate]:
    return {(c.column_names, c.predicate): c for c in candidates_for(analyze_sql(sql))}


def test_multi_column_order_is_equality_then_range_then_order_by() -> None:
    cands = _by_columns(
        "SELECT * FROM bookings WHERE event_date > $1 AND vendor_id = $2 ORDER BY created_at LIMIT 5"
    )
    assert (("vendor_id", "event_date", "created_at"), None) in cands
    assert (("vendor_id", "created_at"), None) in cands
    for single in ("vendor_id", "event_date", "created_at"):
        assert ((single,), None) in cands
    # never range before equality, never order by before range
    for cols, _ in cands:
        if "vendor_id" in cols:
            assert cols[0] == "vendor_id"
        if "event_date" in cols and "created_at" in cols:
            assert cols.index("event_date") < cols.index("created_at")


def test_partial_index_from_constant_in_list() -> None:
    cands = _by_columns("SELECT * FROM bookings WHERE status IN ('confirmed', 'pending') AND vendor_id = $1")
    flt = ConstantFilter("status", ("confirmed", "pending"))
    partial = cands[(("vendor_id",), flt)]
    stmt = parse_sql(partial.create_sql())[0].stmt
    assert isinstance(stmt, ast.IndexStmt) and stmt.concurrent and stmt.whereClause is not None
    assert "WHERE status IN ('confirmed', 'pending')" in partial.create_sql()
    keyed = analyze_sql("SELECT * FROM bookings WHERE vendor_id = 7 AND paid = true AND status = 'pending'")
    assert keyed.tables[0].constant_filters == [ConstantFilter("paid", (True,)), ConstantFilter("status", ("pending",))]
    # placeholders make no partial index: the value is unknown
    assert not any(p for _, p in _by_columns("SELECT * FROM bookings WHERE status IN ($1) AND vendor_id = $2"))


def test_join_columns_become_candidates() -> None:
    cands = _by_columns("SELECT * FROM weddings w JOIN bookings b ON b.wedding_id = w.id WHERE w.couple = $1")
    assert (("wedding_id",), None) in cands
    assert (("couple", "id"), None) in cands  # equality first, then the join column


def test_statements_names_and_quoting() -> None:
    cand = IndexCandidate("Odd Table", "public", (OrderColumn("Col"), OrderColumn("b", True)))
    again = IndexCandidate("Odd Table", "public", (OrderColumn("Col"), OrderColumn("b", True)))
    assert cand.name == again.name and cand.name.startswith(INDEX_PREFIX) and len(cand.name) <= 63
    create = parse_sql(cand.create_sql())[0].stmt
    assert isinstance(create, ast.IndexStmt) and create.concurrent
    assert create.relation.relname == "Odd Table" and create.idxname == cand.name
    assert [e.name for e in create.indexParams] == ["Col", "b"]
    drop = parse_sql(cand.drop_sql())[0].stmt
    assert isinstance(drop, ast.DropStmt) and drop.concurrent
    assert [s.sval for s in drop.objects[0]] == ["public", cand.name]
    long = IndexCandidate("t" * 60, None, (OrderColumn("c" * 60),))
    assert len(long.name) <= 63 and long.name != IndexCandidate("t" * 60, None, (OrderColumn("c" * 61),)).name
    assert analyze_statement("bookings", "public") == "ANALYZE public.bookings"


def test_existing_index_coverage() -> None:
    cand = IndexCandidate("bookings", "public", (OrderColumn("vendor_id"), OrderColumn("event_date")))
    assert covering_index(cand, [ExistingIndex("i1", ("vendor_id", "event_date", "status"))]).name == "i1"
    assert covering_index(cand, [ExistingIndex("i2", ("event_date", "vendor_id"))]) is None  # wrong order
    assert covering_index(cand, [ExistingIndex("i3", ("vendor_id",))]) is None  # shorter
    assert covering_index(cand, [ExistingIndex("i4", ("vendor_id", "event_date"), valid=False)]) is None
    assert covering_index(cand, [ExistingIndex("i5", ("vendor_id", "event_date"), partial=True)]) is None
    assert covering_index(cand, [ExistingIndex(cand.name, ("x",), partial=True)]) is not None  # itself
    assert covering_index(cand, [ExistingIndex("i6", (None, "vendor_id"))]) is None  # expression first


def _cost(candidate: IndexCandidate, before: float, after: float) -> CandidateCost:
    return CandidateCost(candidate, before, after)


def _eval(fp: str, before: float, costs: list[tuple[IndexCandidate, float]], rate: float | None = None) -> QueryEvaluation:
    return QueryEvaluation(
        QueryInput(fp, "SELECT 1", p95_ms=100.0, calls_per_s=rate),
        cost_before=before,
        costs=[_cost(c, before, after) for c, after in costs],
    )


A = IndexCandidate("bookings", "public", (OrderColumn("vendor_id"),))
B = IndexCandidate("bookings", "public", (OrderColumn("vendor_id"), OrderColumn("status")))
C = IndexCandidate("bookings", "public", (OrderColumn("event_date"),))


def test_choose_prefers_one_index_serving_more_queries() -> None:
    settings = AdviseSettings(min_cost=100, min_improvement=0.5)
    decision = choose(
        [
            _eval("q1", 2000, [(A, 100), (B, 50), (C, 1900)]),
            _eval("q2", 2000, [(A, 200)]),
            _eval("q3", 50, [(C, 1)]),  # too cheap to matter
        ],
        settings,
    )
    assert [p.candidate for p in decision.proposals] == [A]
    assert decision.proposals[0].fingerprints == ("q1", "q2")
    assert decision.proposals[0].cost_before == 2000
    assert any(fp == "q3" and "floor" in why for fp, why in decision.unserved)
    assert any(c == C for c, _ in decision.rejected)  # -5% only


def test_choose_weighs_write_overhead() -> None:
    settings = AdviseSettings(min_cost=100, index_write_cost=10.0)
    evs = [_eval("q1", 2000, [(A, 100)], rate=0.1)]  # saves 190 cost/s
    heavy = choose(evs, settings, write_rates={"bookings": 50.0})  # costs 500 cost/s
    assert heavy.proposals == [] and "write overhead" in heavy.rejected[-1][1]
    light = choose(evs, settings, write_rates={"bookings": 1.0})
    assert [p.candidate for p in light.proposals] == [A]


def test_stale_statistics() -> None:
    s = AdviseSettings(stale_ratio=0.1, stale_min_rows=1000)
    assert stale_reason(TableStats("public", "t", 100_000, 50, analyzed=False), s) == "never analyzed"
    assert stale_reason(TableStats("public", "t", 100_000, 20_000, analyzed=True), s) is not None
    assert stale_reason(TableStats("public", "t", 100_000, 5_000, analyzed=True), s) is None
    assert stale_reason(TableStats("public", "t", 100, 500, analyzed=True), s) is None  # below min rows
