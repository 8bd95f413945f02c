"""Which candidate indexes are worth building: the planner decides, through HypoPG.

For each query: its plan cost on a *generic* plan (the plan for unknown ``$n`` values — what
a prepared statement in a service gets), then, per candidate that no existing index covers,
the cost with that candidate as a HypoPG hypothetical index. PostgreSQL 15 has no
``EXPLAIN (GENERIC_PLAN)`` (that is 16), so the query is prepared and explained as
``EXPLAIN EXECUTE stmt(NULL, ...)`` with ``plan_cache_mode = force_generic_plan``: the NULLs
are never looked at, the generic plan is built from the parameter types alone. Each
measurement prepares afresh, because a cached plan would not see a new hypothetical index.

The session is ``default_transaction_read_only`` with a statement timeout: EXPLAIN without
ANALYZE runs nothing, and the text planned is the pglast deparse of one parsed statement.

Unqualified table names in the services' statements resolve against the configured search path
(``DBOPT_DATABASE_SEARCH_PATH``, default ``public``), which :func:`streams.db.connect` pins on the
session: the catalog look-ups and the planner resolve them alike, and every candidate names the
schema its table was resolved in. HypoPG's functions are called qualified with the schema the
extension is installed in, wherever that is.

:func:`choose` (pure) then keeps candidates that cut a meaningfully expensive query's cost by
at least ``min_improvement``, drops those whose write overhead outweighs the read savings,
and picks the fewest indexes serving the most fingerprints (greedy set cover).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

import psycopg
from psycopg import sql

from streams import db
from streams.advise.analysis import QueryShape, UnsupportedStatement, analyze_sql
from streams.advise.candidates import ExistingIndex, IndexCandidate, candidates_for, covering_index
from streams.config import AdviseSettings, Settings
from streams.records import Alert
from streams.sql import SqlParseError

_STMT = "dbopt_advise_stmt"


class EvaluationError(RuntimeError):
    """The database cannot evaluate candidates (for example HypoPG is not installed)."""


@dataclass(frozen=True, slots=True)
class QueryInput:
    """One query to optimize, with what the stream knows about it."""

    fingerprint: str
    sql: str
    p95_ms: float | None = None
    calls_per_s: float | None = None  # observed rate; None when unknown
    service: str | None = None
    context: str | None = None

    @classmethod
    def from_alert(cls, alert: Alert, calls_per_s: float | None) -> QueryInput:
        """The query of a firing alert (one with a fingerprint and its text)."""
        assert alert.fingerprint and alert.query_text
        return cls(alert.fingerprint, alert.query_text, alert.p95_ms, calls_per_s, alert.service, alert.context)


@dataclass(frozen=True, slots=True)
class CandidateCost:
    candidate: IndexCandidate
    cost_before: float
    cost_after: float

    @property
    def improvement(self) -> float:
        return 1.0 - self.cost_after / self.cost_before if self.cost_before > 0 else 0.0


@dataclass(slots=True)
class QueryEvaluation:
    query: QueryInput
    shape: QueryShape | None = None
    cost_before: float | None = None
    costs: list[CandidateCost] = field(default_factory=list)
    covered: list[tuple[IndexCandidate, str]] = field(default_factory=list)  # (candidate, existing index)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TableStats:
    schema: str
    table: str
    n_live_tup: int
    n_mod_since_analyze: int
    analyzed: bool  # last_analyze or last_autoanalyze is set

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True, slots=True)
class Proposal:
    """An index to build, with the evidence for it."""

    candidate: IndexCandidate
    serves: tuple[CandidateCost, ...]  # per served query, cost before/after with this index
    fingerprints: tuple[str, ...]
    p95_before_ms: float | None
    reason: str

    @property
    def cost_before(self) -> float:
        return max(c.cost_before for c in self.serves)

    @property
    def cost_after(self) -> float:
        return max(self.serves, key=lambda c: c.cost_before).cost_after


@dataclass(slots=True)
class Decision:
    proposals: list[Proposal] = field(default_factory=list)
    analyze: list[tuple[TableStats, str]] = field(default_factory=list)  # (table, why stale)
    rejected: list[tuple[IndexCandidate, str]] = field(default_factory=list)
    unserved: list[tuple[str, str]] = field(default_factory=list)  # (fingerprint, why nothing helps)


# --- pure decisions --------------------------------------------------------------------------------


def stale_reason(stats: TableStats, settings: AdviseSettings) -> str | None:
    """Why the planner's statistics of ``stats`` are stale, or None when they are fresh."""
    if not stats.analyzed:
        return "never analyzed"
    limit = max(settings.stale_min_rows, settings.stale_ratio * stats.n_live_tup)
    if stats.n_mod_since_analyze >= limit:
        return (
            f"{stats.n_mod_since_analyze} rows modified since the last ANALYZE "
            f"(>= {limit:.0f}, {settings.stale_ratio:.0%} of {stats.n_live_tup} live rows)"
        )
    return None


def _write_check(
    candidate: IndexCandidate,
    serves: list[tuple[QueryEvaluation, CandidateCost]],
    write_rates: Mapping[str, float],
    settings: AdviseSettings,
) -> str | None:
    """Why the index's write overhead outweighs its read savings, or None when it pays off.

    Both sides in planner cost per second: reads save ``calls/s x (cost before - after)``
    per served query; every written row costs ``index_write_cost`` more. Unknown rates
    (no stream data, e.g. ``dbopt analyze``) skip the check.
    """
    rate = write_rates.get(candidate.table)
    if rate is None or rate <= 0:
        return None
    saved = 0.0
    for ev, cc in serves:
        if ev.query.calls_per_s is None:
            return None
        saved += ev.query.calls_per_s * (cc.cost_before - cc.cost_after)
    overhead = rate * settings.index_write_cost
    if overhead >= saved:
        return f"write overhead {overhead:.0f} cost/s ({rate:.1f} writes/s) outweighs read savings {saved:.0f} cost/s"
    return None


def choose(
    evaluations: Iterable[QueryEvaluation],
    settings: AdviseSettings,
    write_rates: Mapping[str, float] | None = None,
) -> Decision:
    """The fewest candidates that serve the most expensive queries (pure; see module docstring)."""
    write_rates = write_rates or {}
    decision = Decision()
    serves: dict[str, list[tuple[QueryEvaluation, CandidateCost]]] = {}
    by_name: dict[str, IndexCandidate] = {}
    evaluations = list(evaluations)
    for ev in evaluations:
        fp = ev.query.fingerprint
        if ev.error:
            decision.unserved.append((fp, ev.error))
            continue
        if ev.cost_before is None or ev.cost_before < settings.min_cost:
            decision.unserved.append((fp, f"plan cost {ev.cost_before:.0f} below the floor {settings.min_cost:.0f}"))
            continue
        good = [cc for cc in ev.costs if cc.improvement >= settings.min_improvement]
        for cc in ev.costs:
            if cc.improvement < settings.min_improvement:
                decision.rejected.append((cc.candidate, f"cuts {fp} cost by {cc.improvement:.0%} only"))
        if not good:
            why = "already served by " + ", ".join(sorted({name for _, name in ev.covered})) if ev.covered else (
                f"no candidate cuts the cost by {settings.min_improvement:.0%}"
            )
            decision.unserved.append((fp, why))
        for cc in good:
            serves.setdefault(cc.candidate.name, []).append((ev, cc))
            by_name[cc.candidate.name] = cc.candidate
    for name in sorted(serves):
        overhead = _write_check(by_name[name], serves[name], write_rates, settings)
        if overhead:
            decision.rejected.append((by_name[name], overhead))
            del serves[name]
    uncovered = {ev.query.fingerprint for entries in serves.values() for ev, _ in entries}
    for entries in serves.values():
        entries.sort(key=lambda e: e[0].query.fingerprint)
    while uncovered:
        def score(name: str) -> tuple[int, float, bool, int, str]:
            # most new fingerprints, then most cost saved, then the more general (not partial)
            # and narrower index; the name makes ties deterministic
            entries = serves[name]
            gain = round(sum(cc.cost_before - cc.cost_after for _, cc in entries), 1)
            new = len({ev.query.fingerprint for ev, _ in entries} & uncovered)  # noqa: B023 - max() calls it this turn
            return (new, gain, by_name[name].predicate is None, -len(by_name[name].columns), name)

        best = max(serves, key=score)
        entries = serves.pop(best)
        fps = tuple(ev.query.fingerprint for ev, _ in entries)
        if not set(fps) & uncovered:
            break
        uncovered -= set(fps)
        p95s = [ev.query.p95_ms for ev, _ in entries if ev.query.p95_ms is not None]
        decision.proposals.append(
            Proposal(
                candidate=by_name[best],
                serves=tuple(cc for _, cc in entries),
                fingerprints=fps,
                p95_before_ms=max(p95s) if p95s else None,
                reason="; ".join(
                    f"{ev.query.fingerprint}: cost {cc.cost_before:.0f} -> {cc.cost_after:.0f} "
                    f"(-{cc.improvement:.0%})"
                    for ev, cc in entries
                ),
            )
        )
    return decision


# --- database --------------------------------------------------------------------------------------


def _explain_cost(conn: psycopg.Connection, shape: QueryShape) -> float:
    """Total cost of the generic plan of ``shape.sql`` (prepared afresh each time)."""
    conn.execute(f"PREPARE {_STMT} AS {shape.sql}")
    try:
        args = f"({', '.join(['NULL'] * shape.param_count)})" if shape.param_count else ""
        row = conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {_STMT}{args}").fetchone()
    finally:
        conn.execute(f"DEALLOCATE {_STMT}")
    assert row is not None  # EXPLAIN answers one row
    plan = row[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Total Cost"])


class Evaluator:
    """Catalog reads and HypoPG measurements on one dedicated, read-only session."""

    def __init__(self, conn: psycopg.Connection, settings: AdviseSettings) -> None:
        self.conn = conn
        self.settings = settings
        conn.autocommit = True
        conn.execute("SET default_transaction_read_only = on")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"SET statement_timeout = {int(settings.statement_timeout_ms)}")
        installed = conn.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'hypopg'"
        ).fetchone()
        if not installed:
            raise EvaluationError(
                "the HypoPG extension is not installed in this database (CREATE EXTENSION hypopg)"
            )
        self.hypopg_schema: str = installed[0]

    @classmethod
    def connect(cls, settings: Settings, url: str | None = None) -> "Evaluator":
        """An evaluator on ``url`` (default: the configured database), search path pinned."""
        return cls(db.connect(settings, url=url, application_name="dbopt-advisor"), settings.advise)

    def close(self) -> None:
        self.conn.close()

    def resolve(self, table: str, schema: str | None) -> tuple[int, str, str] | None:
        """(oid, schema, name) of an ordinary or partitioned table, via the pinned search path."""
        row = self.conn.execute(
            "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(CASE WHEN %s::text IS NULL THEN '' ELSE quote_ident(%s) || '.' END "
            "|| quote_ident(%s)) AND c.relkind IN ('r', 'p')",
            (schema, schema, table),
        ).fetchone()
        return (int(row[0]), row[1], row[2]) if row else None

    def existing_indexes(self, oid: int) -> list[ExistingIndex]:
        rows = self.conn.execute(
            "SELECT ic.relname, i.indisvalid, i.indpred IS NOT NULL, "
            " array(SELECT a.attname FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) "
            "       WITH ORDINALITY k(attnum, ord) "
            "       LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "       ORDER BY k.ord)::text[] "
            "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = %s",
            (oid,),
        ).fetchall()
        return [ExistingIndex(name, tuple(cols), partial=partial, valid=valid) for name, valid, partial, cols in rows]

    def table_stats(self, oid: int) -> TableStats | None:
        row = self.conn.execute(
            "SELECT schemaname, relname, n_live_tup, n_mod_since_analyze, "
            " (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL) "
            "FROM pg_stat_user_tables WHERE relid = %s",
            (oid,),
        ).fetchone()
        return TableStats(row[0], row[1], int(row[2]), int(row[3]), bool(row[4])) if row else None

    def _hypopg(self, function: str, *args: object) -> psycopg.Cursor:
        """Call a HypoPG function, qualified with the extension's schema."""
        call = sql.SQL("SELECT * FROM {}({})").format(
            sql.Identifier(self.hypopg_schema, function), sql.SQL(", ").join([sql.Placeholder()] * len(args))
        )
        return self.conn.execute(call, args)

    def _hypothetical_cost(self, shape: QueryShape, candidate: IndexCandidate) -> float:
        row = self._hypopg("hypopg_create_index", candidate.create_sql(concurrently=False)).fetchone()
        assert row is not None  # hypopg_create_index answers (indexrelid, indexname)
        oid = row[0]
        try:
            return _explain_cost(self.conn, shape)
        finally:
            self._hypopg("hypopg_drop_index", oid)

    def evaluate(self, query: QueryInput) -> tuple[QueryEvaluation, list[TableStats]]:
        """Cost before/after of each uncovered candidate for ``query``, and its tables' statistics."""
        ev = QueryEvaluation(query)
        try:
            shape = analyze_sql(query.sql)
        except (SqlParseError, UnsupportedStatement) as exc:
            ev.error = str(exc)
            return ev, []
        tables: list[TableStats] = []
        existing: dict[str, list[ExistingIndex]] = {}
        resolved = []
        for usage in shape.tables:
            found = self.resolve(usage.table, usage.schema)
            if found is None:
                continue  # a CTE name, a view or a table this database does not have
            oid, schema, name = found
            resolved.append(replace(usage, schema=schema, table=name))
            existing[name] = self.existing_indexes(oid)
            stats = self.table_stats(oid)
            if stats:
                tables.append(stats)
        ev.shape = replace(shape, tables=resolved)
        try:
            ev.cost_before = _explain_cost(self.conn, shape)
            for candidate in candidates_for(ev.shape, self.settings.max_index_columns):
                cover = covering_index(candidate, existing.get(candidate.table, ()))
                if cover is not None:
                    ev.covered.append((candidate, cover.name))
                    continue
                ev.costs.append(CandidateCost(candidate, ev.cost_before, self._hypothetical_cost(shape, candidate)))
        except psycopg.Error as exc:
            ev.error = f"cannot plan the statement: {str(exc).strip().splitlines()[0]}"
        finally:
            self._hypopg("hypopg_reset")
        return ev, tables

    def advise(
        self, queries: Iterable[QueryInput], write_rates: Mapping[str, float] | None = None
    ) -> tuple[Decision, list[QueryEvaluation]]:
        """Evaluate every query, choose the indexes, and list the tables with stale statistics."""
        evaluations: list[QueryEvaluation] = []
        stats: dict[str, TableStats] = {}
        for query in queries:
            ev, tables = self.evaluate(query)
            evaluations.append(ev)
            for t in tables:
                stats[t.qualified] = t
        decision = choose(evaluations, self.settings, write_rates)
        for key in sorted(stats):
            why = stale_reason(stats[key], self.settings)
            if why:
                decision.analyze.append((stats[key], why))
        return decision, evaluations
