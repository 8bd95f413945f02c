"""Which candidate indexes are worth building: the planner decides, through HypoPG or a sampled build.

For each query: its plan cost on a *generic* plan (the plan for unknown ``$n`` values — what
a prepared statement in a service gets), then, per candidate that no existing index covers,
the cost with that candidate as a HypoPG hypothetical index. PostgreSQL 15 has no
``EXPLAIN (GENERIC_PLAN)`` (that is 16), so the query is prepared and explained as
``EXPLAIN EXECUTE stmt(NULL, ...)`` with ``plan_cache_mode = force_generic_plan``: the NULLs
are never looked at, the generic plan is built from the parameter types alone. Each
measurement prepares afresh, because a cached plan would not see a new hypothetical index.

Besides the generic plan, a statement with parameters is planned with up to three sets of
*representative values* from ``pg_stats`` (:mod:`streams.advise.representative`): a generic plan
assumes a default range selectivity, so ``status = $1 AND created_at >= $2`` looks as expensive
with an index as without. A candidate's gain is the better of the generic plan's and the mean of
the representative plans' (a service's prepared statement gets custom plans too).

Candidates are measured alone and in *sets* (one index per side of a join, one per branch of an
OR): only together can they serve such statements. A set is kept when it cuts the best of its
members' cost by at least ``min_improvement`` again. Across a batch, the union of the equality
columns the statements ask of one table is one more candidate for each of them.

GIN and GiST candidates (trigram, full text, jsonb) cannot be modelled by HypoPG: they are built
on a sampled copy (:mod:`streams.advise.sampled`) and their gain is the measured drop of the
execution time. An extension they need that is not installed (``pg_trgm``) is never created: the
decision lists it for a human.

Partial-index predicates survive only for frequent values of a low-cardinality column (a status:
at most ``partial_max_distinct`` distinct values, the value among ``most_common_vals`` with at least
``partial_min_frequency``); a date, a city, an e-mail or an id would serve one value only.

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
import statistics
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import psycopg
from psycopg import sql

from streams import db
from streams.advise import representative
from streams.advise.analysis import QueryShape, TableUsage, UnsupportedStatement, analyze_sql
from streams.advise.candidates import (
    ExistingIndex,
    IndexCandidate,
    candidates_for,
    covering_index,
    normalize_expression,
    or_sets,
    union_candidate,
    unique_keys,
)
from streams.advise.sampled import METHOD as SAMPLED, SampledBuilder, fill_parameters
from streams.config import AdviseSettings, Settings
from streams.records import Alert
from streams.sql import SqlParseError

_STMT = "dbopt_advise_stmt"
HYPOPG = "HypoPG"
GENERIC = "generic plan"
LITERAL = "literal values"
REPRESENTATIVE = "representative values"


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
    """What one candidate — or a set of indexes measured together — does to one query."""

    candidate: IndexCandidate
    cost_before: float
    cost_after: float
    companions: tuple[IndexCandidate, ...] = ()  # the other indexes of a set
    method: str = HYPOPG  # HypoPG, or a sampled build
    plan: str = GENERIC  # which plans the figures come from
    measured_gain: float | None = None  # a sampled build's measured drop of the execution time
    evidence: Mapping[str, float] = field(default_factory=dict)

    @property
    def members(self) -> tuple[IndexCandidate, ...]:
        return (self.candidate, *self.companions)

    @property
    def key(self) -> str:
        return "+".join(sorted(m.name for m in self.members))

    @property
    def improvement(self) -> float:
        if self.measured_gain is not None:
            return self.measured_gain
        return 1.0 - self.cost_after / self.cost_before if self.cost_before > 0 else 0.0

    def describe(self) -> str:
        return " + ".join(m.describe() for m in self.members)


@dataclass(slots=True)
class QueryEvaluation:
    query: QueryInput
    shape: QueryShape | None = None
    cost_before: float | None = None
    costs: list[CandidateCost] = field(default_factory=list)
    covered: list[tuple[IndexCandidate, str]] = field(default_factory=list)  # (candidate, existing index)
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # what was not tried, and why
    missing_extensions: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)  # how the statement was planned


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
    serves: tuple[CandidateCost, ...]  # per served query, cost before/after with this index (or its set)
    fingerprints: tuple[str, ...]
    p95_before_ms: float | None
    reason: str
    method: str = HYPOPG
    together: tuple[str, ...] = ()  # the other indexes of its set

    @property
    def cost_before(self) -> float:
        return max(c.cost_before for c in self.serves)

    @property
    def cost_after(self) -> float:
        return max(self.serves, key=lambda c: c.cost_before).cost_after

    @property
    def gain(self) -> float:
        return max(c.improvement for c in self.serves)

    @property
    def evidence(self) -> dict[str, float]:
        figures: dict[str, float] = {"gain": round(self.gain, 4)}
        for cc in self.serves:
            figures.update(cc.evidence)
        return figures


@dataclass(slots=True)
class AdvisorDecision:
    """What the advisor decides for the queries it evaluated: indexes to propose, tables to analyze,
    candidates it turned down, fingerprints nothing helps, extensions a human may install."""

    proposals: list[Proposal] = field(default_factory=list)
    analyze: list[tuple[TableStats, str]] = field(default_factory=list)  # (table, why stale)
    rejected: list[tuple[IndexCandidate, str]] = field(default_factory=list)
    unserved: list[tuple[str, str]] = field(default_factory=list)  # (fingerprint, why nothing helps)
    extensions: list[tuple[str, str]] = field(default_factory=list)  # (extension a human may install, why)


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
    cost: CandidateCost,
    serves: list[tuple[QueryEvaluation, CandidateCost]],
    write_rates: Mapping[str, float],
    settings: AdviseSettings,
) -> str | None:
    """Why the indexes' write overhead outweighs their read savings, or None when they pay off.

    Both sides in planner cost per second: reads save ``calls/s x (cost before - after)``
    per served query; every written row costs ``index_write_cost`` more per index. Unknown rates
    (no stream data, e.g. ``dbopt analyze``) skip the check.
    """
    rates = [write_rates.get(m.table) for m in cost.members]
    rate = sum(r for r in rates if r is not None and r > 0)
    if rate <= 0:
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


def _nothing_tested(ev: QueryEvaluation) -> str:
    """Why no candidate was measured: what the statement asks that the advisor did not understand."""
    shape = ev.shape
    parts = list(shape.not_understood) if shape else []
    if shape and shape.ambiguous:
        parts.append(f"unqualified columns {', '.join(shape.ambiguous)} in a statement over several tables")
    parts += ev.notes
    if not parts:
        return "no candidate tested: the statement filters, joins and sorts on no column"
    return "no candidate tested; not understood: " + "; ".join(parts)


def choose(
    evaluations: Iterable[QueryEvaluation],
    settings: AdviseSettings,
    write_rates: Mapping[str, float] | None = None,
) -> AdvisorDecision:
    """The fewest indexes that serve the most expensive queries (pure; see module docstring)."""
    write_rates = write_rates or {}
    decision = AdvisorDecision()
    serves: dict[str, list[tuple[QueryEvaluation, CandidateCost]]] = {}
    by_key: dict[str, CandidateCost] = {}
    evaluations = list(evaluations)
    for ev in evaluations:
        fp = ev.query.fingerprint
        for extension in ev.missing_extensions:
            why = f"{fp}: a {extension} index could not be validated (extension not installed; dbopt never creates it)"
            decision.extensions.append((extension, why))
        if ev.error:
            decision.unserved.append((fp, ev.error))
            continue
        if ev.cost_before is None or ev.cost_before < settings.min_cost:
            decision.unserved.append((fp, f"plan cost {ev.cost_before:.0f} below the floor {settings.min_cost:.0f}"))
            continue
        good = [cc for cc in ev.costs if cc.improvement >= settings.min_improvement]
        for cc in ev.costs:
            if cc.improvement < settings.min_improvement:
                decision.rejected.append((cc.candidate, f"cuts {fp} cost by {cc.improvement:.0%} only ({cc.method})"))
        if not good:
            if ev.covered:
                why = "already served by " + ", ".join(sorted({name for _, name in ev.covered}))
            elif not ev.costs:
                why = _nothing_tested(ev)
            else:
                why = f"no candidate cuts the cost by {settings.min_improvement:.0%}"
            decision.unserved.append((fp, why))
        for cc in good:
            serves.setdefault(cc.key, []).append((ev, cc))
            by_key.setdefault(cc.key, cc)
    for key in sorted(serves):
        overhead = _write_check(by_key[key], serves[key], write_rates, settings)
        if overhead:
            decision.rejected.append((by_key[key].candidate, overhead))
            del serves[key]
    uncovered = {ev.query.fingerprint for entries in serves.values() for ev, _ in entries}
    for entries in serves.values():
        entries.sort(key=lambda e: e[0].query.fingerprint)
    proposed: set[str] = set()
    while uncovered:
        def score(key: str) -> tuple[int, float, bool, int, int, str]:
            # most new fingerprints, then most cost saved, then the more general (not partial),
            # then fewer and narrower indexes; the key makes ties deterministic
            entries = serves[key]
            members = by_key[key].members
            gain = round(sum(cc.cost_before - cc.cost_after for _, cc in entries), 1)
            new = len({ev.query.fingerprint for ev, _ in entries} & uncovered)  # noqa: B023 - max() calls it this turn
            return (new, gain, all(m.predicate is None for m in members), -len(members),
                    -sum(len(m.columns) for m in members), key)

        best = max(serves, key=score)
        entries = serves.pop(best)
        fps = tuple(ev.query.fingerprint for ev, _ in entries)
        if not set(fps) & uncovered:
            break
        uncovered -= set(fps)
        p95s = [ev.query.p95_ms for ev, _ in entries if ev.query.p95_ms is not None]
        chosen = by_key[best]
        reason = "; ".join(
            f"{ev.query.fingerprint}: cost {cc.cost_before:.0f} -> {cc.cost_after:.0f} (-{cc.improvement:.0%}, "
            f"{cc.method}, {cc.plan})"
            for ev, cc in entries
        )
        for member in chosen.members:
            if member.name in proposed:
                continue
            proposed.add(member.name)
            others = tuple(m.name for m in chosen.members if m is not member)
            decision.proposals.append(
                Proposal(
                    candidate=member,
                    serves=tuple(cc for _, cc in entries),
                    fingerprints=fps,
                    p95_before_ms=max(p95s) if p95s else None,
                    reason=reason + (f"; together with {', '.join(others)}" if others else ""),
                    method=chosen.method,
                    together=others,
                )
            )
    decision.proposals = _without_prefixes(decision.proposals)
    return decision


def _without_prefixes(proposals: list[Proposal]) -> list[Proposal]:
    """Never two proposals where one B-tree is a prefix of another on the same table: the longer
    one serves every scan the shorter one would (its fingerprints join the longer one's)."""
    def prefix_of(short: IndexCandidate, long: IndexCandidate) -> bool:
        return (short.table == long.table and short.schema == long.schema and short.method == long.method == "btree"
                and short.predicate is None and long.predicate is None and len(short.columns) < len(long.columns)
                and long.columns[: len(short.columns)] == short.columns)

    kept = list(proposals)
    for short in proposals:
        longer = next((p for p in kept if prefix_of(short.candidate, p.candidate)), None)
        if longer is None:
            continue
        kept.remove(short)
        merged = replace(
            longer,
            fingerprints=tuple(dict.fromkeys((*longer.fingerprints, *short.fingerprints))),
            serves=longer.serves + tuple(c for c in short.serves if c not in longer.serves),
            reason=f"{longer.reason}; also serves {', '.join(short.fingerprints)} in place of {short.candidate.describe()}",
        )
        kept[kept.index(longer)] = merged
    return kept


def union_columns(shapes: Iterable[QueryShape]) -> dict[tuple[str | None, str], list[str]]:
    """Per (schema, table): the equality columns of all statements that ask for two or more
    distinct ones together, the most shared first (a shared prefix serves them all)."""
    counts: dict[tuple[str | None, str], Counter[str]] = {}
    order: dict[tuple[str | None, str], list[str]] = {}
    statements: Counter[tuple[str | None, str]] = Counter()
    for shape in shapes:
        for usage in shape.tables:
            columns = [c for c in usage.equality if c not in usage.expressions]
            if not columns:
                continue
            key = (usage.schema, usage.table)
            statements[key] += 1
            counts.setdefault(key, Counter()).update(columns)
            for c in columns:
                if c not in order.setdefault(key, []):
                    order[key].append(c)
    return {
        key: sorted(order[key], key=lambda c: (-counts[key][c], order[key].index(c)))  # noqa: B023 - used at once
        for key in counts
        if statements[key] >= 2 and len(order[key]) >= 2
    }


# --- database --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    label: str  # GENERIC, LITERAL or REPRESENTATIVE
    text: str  # EXPLAIN target: EXECUTE for the generic plan, the statement with literals otherwise
    generic: bool


def _plan_cost(conn: psycopg.Connection[Any], shape: QueryShape, plan: _Plan) -> float:
    """Total cost of one plan of ``shape`` (the generic plan is prepared afresh each time)."""
    if plan.generic:
        conn.execute(f"PREPARE {_STMT} AS {shape.sql}")
        try:
            row = conn.execute(f"EXPLAIN (FORMAT JSON) {plan.text}").fetchone()
        finally:
            conn.execute(f"DEALLOCATE {_STMT}")
    else:
        row = conn.execute(f"EXPLAIN (FORMAT JSON) {plan.text}").fetchone()
    doc = row[0] if row else None
    if isinstance(doc, str):
        doc = json.loads(doc)
    assert isinstance(doc, list)
    return float(doc[0]["Plan"]["Total Cost"])


def _best(plans: list[_Plan], before: list[float], after: list[float]) -> tuple[str, float, float]:
    """(plan label, cost before, cost after) of the kind of plan on which the index gains most:
    the generic (or literal) plan, or the mean of the representative plans."""
    kinds: dict[str, tuple[list[float], list[float]]] = {}
    for plan, b, a in zip(plans, before, after, strict=True):
        pair = kinds.setdefault(plan.label, ([], []))
        pair[0].append(b)
        pair[1].append(a)
    options = [(label, statistics.mean(b), statistics.mean(a)) for label, (b, a) in kinds.items()]
    return max(options, key=lambda o: (1 - o[2] / o[1]) if o[1] > 0 else 0.0)


class Evaluator:
    """Catalog reads and HypoPG measurements on one dedicated, read-only session; sampled builds
    (GIN/GiST) on a second, writable one (:class:`~streams.advise.sampled.SampledBuilder`)."""

    def __init__(self, conn: psycopg.Connection, settings: AdviseSettings, sampler: SampledBuilder | None = None) -> None:
        self.conn = conn
        self.settings = settings
        self.sampler = sampler
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
        self._stats: dict[tuple[str, str, str], representative.ColumnStats | None] = {}

    @classmethod
    def connect(cls, settings: Settings, url: str | None = None) -> Evaluator:
        """An evaluator on ``url`` (default: the configured database), search path pinned."""
        sampler = SampledBuilder(lambda: db.connect(settings, url=url, application_name="dbopt-advisor-sample"),
                                 settings.advise)
        return cls(db.connect(settings, url=url, application_name="dbopt-advisor"), settings.advise, sampler)

    def close(self) -> None:
        self.conn.close()
        if self.sampler is not None:
            self.sampler.close()

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
            "SELECT ic.relname, i.indisvalid, i.indpred IS NOT NULL, am.amname, i.indisunique, "
            " array(SELECT a.attname FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) "
            "       WITH ORDINALITY k(attnum, ord) "
            "       LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "       ORDER BY k.ord)::text[], "
            " array(SELECT CASE WHEN k.attnum = 0 THEN pg_get_indexdef(i.indexrelid, k.ord::int, true) END "
            "       FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) WITH ORDINALITY k(attnum, ord) "
            "       ORDER BY k.ord)::text[], "
            " array(SELECT CASE WHEN oc.opcdefault THEN NULL ELSE oc.opcname END "
            "       FROM unnest(i.indclass::oid[]) WITH ORDINALITY c(oid, ord) JOIN pg_opclass oc ON oc.oid = c.oid "
            "       ORDER BY c.ord)::text[] "
            "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam "
            "WHERE i.indrelid = %s",
            (oid,),
        ).fetchall()
        return [
            ExistingIndex(name, tuple(cols), partial=partial, valid=valid, method=method,
                          expressions=tuple(normalize_expression(e) if e else None for e in exprs),
                          opclasses=tuple(opclasses), unique=unique)
            for name, valid, partial, method, unique, cols, exprs, opclasses in rows
        ]

    def table_stats(self, oid: int) -> TableStats | None:
        row = self.conn.execute(
            "SELECT schemaname, relname, n_live_tup, n_mod_since_analyze, "
            " (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL) "
            "FROM pg_stat_user_tables WHERE relid = %s",
            (oid,),
        ).fetchone()
        return TableStats(row[0], row[1], int(row[2]), int(row[3]), bool(row[4])) if row else None

    def column_stats(self, schema: str, table: str, column: str) -> representative.ColumnStats | None:
        key = (schema, table, column)
        if key not in self._stats:
            self._stats[key] = representative.column_stats(self.conn, schema, table, column)
        return self._stats[key]

    def installed_extensions(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT extname FROM pg_extension").fetchall()}

    def _hypopg(self, function: str, *args: object) -> psycopg.Cursor:
        """Call a HypoPG function, qualified with the extension's schema."""
        call = sql.SQL("SELECT * FROM {}({})").format(
            sql.Identifier(self.hypopg_schema, function), sql.SQL(", ").join([sql.Placeholder()] * len(args))
        )
        return self.conn.execute(call, args)

    def _hypothetical_costs(self, shape: QueryShape, plans: list[_Plan], members: tuple[IndexCandidate, ...]) -> list[float]:
        oids = [self._hypopg("hypopg_create_index", m.create_sql(concurrently=False)).fetchone()[0] for m in members]  # type: ignore[index]
        try:
            return [_plan_cost(self.conn, shape, plan) for plan in plans]
        finally:
            for oid in oids:
                self._hypopg("hypopg_drop_index", oid)

    def _frequent_filters(self, usage: TableUsage, schema: str, notes: list[str]) -> TableUsage:
        """``usage`` keeping only the constant filters on frequent values of a low-cardinality column."""
        kept = []
        for flt in usage.constant_filters:
            stats = self.column_stats(schema, usage.table, flt.column)
            why = None
            if stats is None:
                why = "no statistics"
            elif not (0 < stats.n_distinct <= self.settings.partial_max_distinct):
                why = f"{stats.n_distinct:g} distinct values (a partial index needs <= {self.settings.partial_max_distinct})"
            else:
                # pg_stats shows booleans as t/f
                rare = [v for v in flt.values if stats.frequency(("f", "t")[v] if isinstance(v, bool) else str(v))
                        < self.settings.partial_min_frequency]
                if rare:
                    why = f"{rare!r} not among its frequent values (>= {self.settings.partial_min_frequency:.0%})"
            if why:
                notes.append(f"no partial index WHERE {flt.column} IN {flt.values!r}: {why}")
            else:
                kept.append(flt)
        return replace(usage, constant_filters=kept)

    def _plans(self, shape: QueryShape, schemas: dict[str, str]) -> list[_Plan]:
        if not shape.param_count:
            return [_Plan(LITERAL, shape.sql, False)]
        args = ", ".join(["NULL"] * shape.param_count)
        plans = [_Plan(GENERIC, f"EXECUTE {_STMT}({args})", True)]
        if any(use.role in ("lower", "upper") for use in shape.params.values()):
            for values in representative.value_sets(self.conn, shape, schemas):
                plans.append(_Plan(REPRESENTATIVE, fill_parameters(shape.sql, values), False))
        return plans

    def evaluate(
        self, query: QueryInput, extra: Mapping[tuple[str | None, str], list[str]] | None = None
    ) -> tuple[QueryEvaluation, list[TableStats]]:
        """Costs before/after of each uncovered candidate (and set) for ``query``, and its tables' statistics.

        ``extra``: per (schema as written, table), the equality columns of a batch (:func:`union_columns`)."""
        ev = QueryEvaluation(query)
        try:
            shape = analyze_sql(query.sql)
        except (SqlParseError, UnsupportedStatement) as exc:
            ev.error = str(exc)
            return ev, []
        tables: list[TableStats] = []
        existing: dict[str, list[ExistingIndex]] = {}
        schemas: dict[str, str] = {}
        resolved: list[TableUsage] = []
        unions: list[IndexCandidate] = []
        for usage in shape.tables:
            found = self.resolve(usage.table, usage.schema)
            if found is None:
                continue  # a CTE name, a view or a table this database does not have
            oid, schema, name = found
            columns = (extra or {}).get((usage.schema, usage.table))
            usage = self._frequent_filters(replace(usage, schema=schema, table=name), schema, ev.notes)
            resolved.append(usage)
            schemas[name] = schema
            existing[name] = self.existing_indexes(oid)
            keys = unique_keys(existing[name])
            if columns and (union := union_candidate(usage, columns, self.settings.max_index_columns, keys)):
                unions.append(union)
            stats = self.table_stats(oid)
            if stats:
                tables.append(stats)
        by_name = {u.table: u for u in resolved}
        groups = [[replace(b, schema=by_name[b.table].schema) for b in group]
                  for group in shape.or_groups if all(b.table in by_name for b in group)]
        ev.shape = replace(shape, tables=resolved, or_groups=groups)
        sampled: dict[str, list[IndexCandidate]] = {}
        try:
            plans = self._plans(ev.shape, schemas)
            ev.plans = sorted({p.label for p in plans})
            before = [_plan_cost(self.conn, ev.shape, plan) for plan in plans]
            ev.cost_before = before[0]
            singles: dict[str, tuple[IndexCandidate, list[float]]] = {}
            for candidate in dict.fromkeys([*candidates_for(ev.shape, self.settings.max_index_columns), *unions]):
                cover = covering_index(candidate, existing.get(candidate.table, ()))
                if cover is not None:
                    ev.covered.append((candidate, cover.name))
                elif candidate.hypothetical:
                    after = self._hypothetical_costs(ev.shape, plans, (candidate,))
                    singles[candidate.name] = (candidate, after)
                    label, b, a = _best(plans, before, after)
                    ev.costs.append(CandidateCost(candidate, b, a, plan=label))
                else:
                    sampled.setdefault(candidate.table, []).append(candidate)
            for members in self._sets(ev.shape, existing, singles):
                after = self._hypothetical_costs(ev.shape, plans, members)
                label, b, a = _best(plans, before, after)
                best_single = min(_best(plans, before, singles[m.name][1])[2] if m.name in singles else b for m in members)
                cost = CandidateCost(members[0], b, a, companions=members[1:], plan=label)
                if a <= (1 - self.settings.min_improvement) * best_single:
                    ev.costs.append(cost)
                else:
                    ev.notes.append(f"the set {cost.describe()} does no better than its best index alone")
        except psycopg.Error as exc:
            ev.error = f"cannot plan the statement: {str(exc).strip().splitlines()[0]}"
        finally:
            self._hypopg("hypopg_reset")
        if sampled and ev.error is None:
            self._sampled(ev, sampled, schemas)
        return ev, tables

    def _sets(self, shape: QueryShape, existing: Mapping[str, list[ExistingIndex]],
              singles: Mapping[str, tuple[IndexCandidate, list[float]]]) -> list[tuple[IndexCandidate, ...]]:
        """Index sets to measure together: one per OR group (an index per branch) and, for a join,
        the best and the most natural (equality + join columns) index of every side."""
        sets: list[tuple[IndexCandidate, ...]] = []
        for members in or_sets(shape, self.settings.max_index_columns):
            uncovered = tuple(m for m in members if covering_index(m, existing.get(m.table, ())) is None)
            if len(uncovered) >= 2 and all(m.hypothetical for m in uncovered) and uncovered not in sets:
                sets.append(uncovered)
        # a side filtered by a unique key (its primary key) is served already
        sides = [u for u in shape.tables if u.join and not set(u.equality) & unique_keys(existing.get(u.table, ()))]
        if len(sides) >= 2:
            best: list[IndexCandidate] = []
            natural: list[IndexCandidate] = []
            for usage in sides:
                own = [(c, after) for c, after in singles.values() if c.table == usage.table and c.predicate is None]
                if not own:
                    continue
                best.append(min(own, key=lambda e: (e[1][0], -len(e[0].columns), e[0].name))[0])
                keys = [*usage.equality, *(j for j in usage.join if j not in usage.equality)]
                natural.append(next((c for c, _ in own if list(c.column_names) == keys[: len(c.columns)]
                                     and len(c.columns) == min(len(keys), self.settings.max_index_columns)), best[-1]))
            for members in (tuple(best), tuple(natural)):
                if len(members) >= 2 and members not in sets:
                    sets.append(members)
        return sets

    def _sampled(self, ev: QueryEvaluation, sampled: dict[str, list[IndexCandidate]], schemas: dict[str, str]) -> None:
        """Validate GIN/GiST candidates by a real build on a sampled copy (see :mod:`streams.advise.sampled`)."""
        assert ev.shape is not None and ev.cost_before is not None
        installed = self.installed_extensions()
        values: dict[int, str | None] = {}
        if ev.shape.params:
            sets = representative.value_sets(self.conn, ev.shape, schemas)
            if not sets:
                ev.notes.append("no representative values for the parameters in pg_stats: GIN/GiST candidates not built")
                return
            values = sets[0]
        if self.sampler is None:
            ev.notes.append("no session for sampled builds: GIN/GiST candidates not built")
            return
        for table, candidates in sampled.items():
            ready = []
            for candidate in candidates:
                missing = [x for x in candidate.extensions if x not in installed]
                if missing:
                    ev.missing_extensions += [x for x in missing if x not in ev.missing_extensions]
                    ev.notes.append(f"{candidate.describe()} needs extension {', '.join(missing)}, not installed: "
                                    f"a human can run CREATE EXTENSION {missing[0]} (dbopt never does)")
                else:
                    ready.append(candidate)
            if not ready:
                continue
            try:
                results = self.sampler.measure(ev.shape.sql, schemas[table], table, ready, values)
            except psycopg.Error as exc:
                ev.notes.append(f"sampled build on {table} failed: {str(exc).strip().splitlines()[0]}")
                continue
            for result in results:
                if result.error:
                    ev.notes.append(f"{result.candidate.describe()} could not be built on the sample: {result.error}")
                    continue
                gain = result.gain
                ev.costs.append(CandidateCost(result.candidate, ev.cost_before, ev.cost_before * (1 - gain),
                                              method=SAMPLED, plan=f"{result.rows} sampled rows",
                                              measured_gain=gain, evidence=result.evidence()))

    def advise(
        self, queries: Iterable[QueryInput], write_rates: Mapping[str, float] | None = None
    ) -> tuple[AdvisorDecision, list[QueryEvaluation]]:
        """Evaluate every query, choose the indexes, and list the tables with stale statistics."""
        queries = list(queries)
        shapes = []
        for query in queries:
            try:
                shapes.append(analyze_sql(query.sql))
            except (SqlParseError, UnsupportedStatement):
                continue
        unions = union_columns(shapes)
        evaluations: list[QueryEvaluation] = []
        stats: dict[str, TableStats] = {}
        for query in queries:
            ev, tables = self.evaluate(query, unions)
            evaluations.append(ev)
            for t in tables:
                stats[t.qualified] = t
        decision = choose(evaluations, self.settings, write_rates)
        for key in sorted(stats):
            why = stale_reason(stats[key], self.settings)
            if why:
                decision.analyze.append((stats[key], why))
        return decision, evaluations

