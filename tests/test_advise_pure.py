"""Pure tests of the advisor: SQL analysis, candidate indexes, coverage and the choice (no servers)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pglast import ast, parse_sql

from streams.advise import maintenance, priority, unused
from streams.advise.analysis import (
    ConstantFilter,
    OrderColumn,
    ParamUse,
    TextPredicate,
    UnsupportedStatement,
    analyze_sql,
)
from streams.advise.candidates import (
    INDEX_PREFIX,
    ExistingIndex,
    IndexCandidate,
    analyze_statement,
    candidates_for,
    covering_index,
    normalize_expression,
    or_sets,
    text_candidates,
)
from streams.advise.evaluate import (
    CandidateCost,
    QueryEvaluation,
    QueryInput,
    TableStats,
    choose,
    stale_reason,
    union_columns,
)
from streams.advise.representative import ColumnStats, value_for
from streams.advise.sweep import blocked, interval_s
from streams.config import AdviseSettings, Settings
from streams.domain.calendar import Calendar
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


# --- issue 16: text search, expressions, OR groups, sets, unions, maintenance, unused, sweeps ---------------



def test_text_search_predicates_and_their_gin_candidates() -> None:
    shape = analyze_sql(
        "SELECT * FROM vendors WHERE name ILIKE $1 AND to_tsvector('english', description) @@ plainto_tsquery('english', $2) "
        "AND attributes @> $3 AND search @@ to_tsquery($4)"
    )
    (usage,) = shape.tables
    assert usage.text_search == [
        TextPredicate("trigram", "name", False, "~~*"),
        TextPredicate("fulltext", "to_tsvector('english', description)", True, "@@"),
        TextPredicate("containment", "attributes", False, "@>"),
        TextPredicate("fulltext", "search", False, "@@"),
    ]
    assert shape.params[1] == ParamUse("vendors", None, "name", False, "pattern")
    assert shape.params[2].role == "tsquery" and shape.params[3].role == "containment"
    creates = [c.create_sql() for c in text_candidates(usage)]
    assert creates[0].endswith("ON vendors USING gin (name gin_trgm_ops)")
    assert creates[1].endswith("USING gin ((to_tsvector('english', description)))")
    assert creates[2].endswith("USING gin (attributes jsonb_path_ops)")
    assert text_candidates(usage)[0].extensions == ("pg_trgm",) and not text_candidates(usage)[0].hypothetical
    # to_tsvector without a configuration depends on a setting: not an indexable expression
    assert analyze_sql("SELECT * FROM vendors WHERE to_tsvector(description) @@ $1").tables[0].text_search == []


def test_expression_keys_or_groups_and_what_is_not_understood() -> None:
    shape = analyze_sql("SELECT * FROM guests g WHERE lower(g.email) = $1 AND (g.table_no = 3 OR g.meal_choice = $2) "
                        "AND my_func(g.id) = 7 AND NOT g.rsvp_status = 'x'")
    (usage,) = shape.tables
    assert usage.equality == ["lower(email)"] and usage.expressions == ["lower(email)"]
    ((first, second),) = shape.or_groups
    assert first.equality == ["table_no"] and second.equality == ["meal_choice"]
    assert [c.column_names for c in or_sets(shape)[0]] == [("table_no",), ("meal_choice",)]
    assert [why.split(":")[0] for why in shape.not_understood] == ["my_func(g.id) = 7", "NOT g.rsvp_status = 'x'"]
    (expr,) = [c for c in candidates_for(shape) if c.columns[0].expression]
    assert "((lower(email)))" in expr.create_sql()
    assert normalize_expression("to_tsvector('english'::regconfig, description)") == "to_tsvector('english', description)"
    # ids in an IN list are never a partial-index predicate; strings may be (pg_stats decides)
    assert analyze_sql("SELECT * FROM bookings WHERE id IN (1, 2, 3)").tables[0].constant_filters == []


def test_gin_and_expression_coverage() -> None:
    trigram = text_candidates(analyze_sql("SELECT * FROM vendors WHERE name LIKE $1").tables[0])[0]
    assert covering_index(trigram, [ExistingIndex("g", ("name",), method="gist", opclasses=("gist_trgm_ops",))])
    assert covering_index(trigram, [ExistingIndex("b", ("name",))]) is None  # a B-tree serves no ILIKE '%x%'
    lower = IndexCandidate("vendors", "public", (OrderColumn("lower(email)", expression=True),))
    found = covering_index(lower, [ExistingIndex("e", (None,), expressions=("lower(email)",))])
    assert found is not None and found.name == "e"
    assert covering_index(lower, [ExistingIndex("e", ("email",))]) is None


def test_candidate_names_of_plain_btrees_never_changed() -> None:
    # names (hence command ids) of plain B-tree candidates are what they were before issue 16
    cand = IndexCandidate("bookings", "public", (OrderColumn("vendor_id"), OrderColumn("status")))
    assert cand.name == "dbopt_idx_bookings_vendor_id_status_" + cand.name.rsplit("_", 1)[1]
    import hashlib

    legacy = repr(("public", "bookings", (OrderColumn("vendor_id"), OrderColumn("status")), None))
    assert "expression" not in legacy and cand.name.endswith(hashlib.sha256(legacy.encode()).hexdigest()[:8])


def test_choose_takes_index_sets_and_batch_unions() -> None:
    a = IndexCandidate("bookings", "public", (OrderColumn("vendor_id"),))
    p = IndexCandidate("payments", "public", (OrderColumn("booking_id"),))
    ev = QueryEvaluation(QueryInput("join", "SELECT 1"), cost_before=2000,
                         costs=[CandidateCost(a, 2000, 900), CandidateCost(a, 2000, 20, companions=(p,))])
    decision = choose([ev], AdviseSettings(min_cost=100))
    assert [x.candidate for x in decision.proposals] == [a, p]
    assert decision.proposals[1].together == (a.name,)
    shapes = [analyze_sql("SELECT * FROM weddings WHERE city = $1 AND wedding_date = $2"),
              analyze_sql("SELECT * FROM weddings WHERE wedding_date = $1")]
    assert union_columns(shapes) == {(None, "weddings"): ["wedding_date", "city"]}


def test_representative_values_come_from_pg_stats() -> None:
    stats = ColumnStats("text", 4, ("completed", "confirmed", "pending"), (0.4, 0.3, 0.2),
                        tuple(f"2026-01-{d:02d}" for d in range(1, 21)), ())
    eq, low = ParamUse("b", None, "status", False, "eq"), ParamUse("b", None, "created_at", False, "lower")
    assert [value_for(eq, stats, i) for i in range(3)] == ["completed", "confirmed", "pending"]
    assert value_for(low, stats, 0) == "2026-01-19"  # a recent range, from the histogram
    words = ColumnStats("text", -1, (), (), ("Smith Florists Co. 12", "Kim Venues Co. 7"), ())
    assert value_for(ParamUse("v", None, "name", False, "pattern"), words, 0) in ("%smith%", "%florists%", "%venues%")
    docs = ColumnStats("jsonb", -1, ('{"style": "beach", "vegan_options": true}',), (0.1,), (), ())
    assert value_for(ParamUse("v", None, "attributes", False, "containment"), docs, 0) == '{"style": "beach"}'


def test_maintenance_rules_and_verification() -> None:
    s = AdviseSettings()
    behind = maintenance.TableHealth("public", "t", 100_000, 40_000, 0, True, True, 20_050)
    assert maintenance.vacuum_reason(behind, s) is not None
    coming = maintenance.TableHealth("public", "t", 100_000, 19_000, 0, True, True, 20_050)
    assert maintenance.vacuum_reason(coming, s) is None  # autovacuum has not reached its trigger: not behind
    disabled = maintenance.TableHealth("public", "t", 100_000, 25_000, 0, True, False, 20_050)
    vac = maintenance.vacuum_reason(disabled, s)
    assert vac is not None and vac.sql == "VACUUM(ANALYZE) public.t" and vac.evidence["n_dead_tup"] == 25_000
    assert maintenance.vacuum_reason(maintenance.TableHealth("public", "t", 100, 900, 0, True, False, 50), s) is None
    idx = maintenance.IndexHealth("public", "t", "i", 20 * 2**20, 0.6, "pgstattuple")
    assert maintenance.reindex_reason(idx, s).sql == "REINDEX (CONCURRENTLY) INDEX public.i"  # type: ignore[union-attr]
    assert maintenance.reindex_reason(maintenance.IndexHealth("public", "t", "i", 2**20, 0.9, "estimate"), s) is None
    assert maintenance.verify("vacuum", {"n_dead_tup": 1000}, {"n_dead_tup": 10}) == (True, "dead tuples 1000 -> 10")
    assert maintenance.verify("reindex", {"index_bytes": 2**21}, {"index_bytes": 2**21})[0] is False


def _use(index: str, keys: tuple[str, ...], scans: int = 0, enforces: bool = False, days: float = 40) -> unused.IndexUse:
    return unused.IndexUse("public", "bookings", index, 2**20, scans, enforces, True, "btree", keys,
                           tuple(1 for _ in keys), tuple(0 for _ in keys), 5000, days, index.startswith("dbopt_idx_"))


def test_unused_and_prefix_duplicates() -> None:
    uses = [_use("bookings_pkey", ("id",), enforces=True), _use("a", ("wedding_id",), scans=5),
            _use("b", ("wedding_id", "status"), scans=9), _use("dbopt_idx_x", ("vendor_id",)),
            _use("young", ("amount",), days=3)]
    assert [f.index.index for f in unused.unused(uses, 35)] == ["dbopt_idx_x"]
    (dup,) = unused.prefix_duplicates(uses)
    assert dup.index.index == "a" and "is a prefix of public.b" in dup.reason and "MiB" in dup.reason


def test_priorities_and_sweep_schedule() -> None:
    assert priority.priority("critical", 0.9) == 90 and priority.priority("medium", 0.9) == 45
    assert priority.priority("high", 2.0) == 75
    settings = Settings()
    calendar = Calendar(timezone="UTC", freeze_weekdays=("sat",))
    assert interval_s(settings, calendar, datetime(2026, 6, 1, tzinfo=timezone.utc)) == 14_400  # peak season
    assert interval_s(settings, calendar, datetime(2026, 12, 1, tzinfo=timezone.utc)) == 43_200
    assert interval_s(settings.with_overrides(advise=AdviseSettings(sweep_interval_s=600)), calendar,
                      datetime(2026, 6, 1, tzinfo=timezone.utc)) == 600
    assert "ceremony hours" in (blocked(calendar, datetime(2026, 5, 2, 12, tzinfo=timezone.utc)) or "")
    assert blocked(calendar, datetime(2026, 5, 2, 23, tzinfo=timezone.utc)) is not None  # the whole wedding day
    assert blocked(calendar, datetime(2026, 5, 4, 12, tzinfo=timezone.utc)) is None


def test_no_proposal_is_a_prefix_of_another() -> None:
    date = IndexCandidate("weddings", "public", (OrderColumn("wedding_date"),))
    both = IndexCandidate("weddings", "public", (OrderColumn("wedding_date"), OrderColumn("city")))
    email = IndexCandidate("weddings", "public", (OrderColumn("contact_email"),))
    evs = [QueryEvaluation(QueryInput("two", "SELECT 1"), cost_before=2000, costs=[CandidateCost(both, 2000, 10)]),
           QueryEvaluation(QueryInput("or", "SELECT 1"), cost_before=2000,
                           costs=[CandidateCost(date, 2000, 30, companions=(email,))])]
    proposals = choose(evs, AdviseSettings(min_cost=100)).proposals
    assert [p.candidate for p in proposals] == [both, email]
    assert set(proposals[0].fingerprints) == {"two", "or"}
