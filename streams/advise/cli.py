"""``dbopt analyze "SQL"``: the advisor's analysis of one statement, as a DBA would run it by hand.

Prints what the statement asks of each table, every candidate index with its HypoPG plan cost
before and after (or the existing index that already covers it), and the decision with its
reasons. Nothing is changed in the database: the session is read-only and HypoPG indexes
are hypothetical. Raw SQL with literals is welcome here (constant filters become partial
index candidates); nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

import psycopg

from streams.advise.analysis import QueryShape, UnsupportedStatement, analyze_sql
from streams.advise.candidates import analyze_statement
from streams.advise.evaluate import AdvisorDecision, EvaluationError, Evaluator, QueryEvaluation, QueryInput
from streams.config import load_settings
from streams.sql import SqlParseError, normalize

HELP = "analyze one SQL statement: predicates, candidate indexes with HypoPG costs, and the decision"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", help="one SELECT, UPDATE or DELETE statement ($n placeholders or literals)")
    parser.add_argument("--database-url", help="database to evaluate against (default: DBOPT_DATABASE_URL)")
    parser.add_argument("--p95-ms", type=float, default=None, help="observed p95 to quote as evidence")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def _shape_lines(shape: QueryShape) -> list[str]:
    limit = "" if not shape.has_limit else f", LIMIT {shape.limit if shape.limit is not None else '$n'}"
    lines = [f"statement: {shape.statement_type} with {shape.param_count} parameter(s){limit}"]
    for t in shape.tables:
        lines.append(f"table {t.qualified}" + (f" (as {', '.join(t.aliases)})" if t.aliases else ""))
        parts = [
            ("equality", ", ".join(t.equality)),
            ("range", ", ".join(t.range)),
            ("join", ", ".join(t.join)),
            ("order by", ", ".join(o.column + (" DESC" if o.descending else "") for o in t.order_by)),
            ("constant filters", "; ".join(f"{f.column} IN {f.values!r}" for f in t.constant_filters)),
            ("text search", "; ".join(f"{x.key} {x.operator} ({x.kind})" for x in t.text_search)),
        ]
        lines += [f"  {name}: {value}" for name, value in parts if value]
    for number, group in enumerate(shape.or_groups, 1):
        branches = " OR ".join("(" + ", ".join([*b.equality, *b.range, *(x.key for x in b.text_search)]) + ")" for b in group)
        lines.append(f"OR group {number}: {branches}")
    if shape.ambiguous:
        lines.append(f"unqualified columns not attributed to a table: {', '.join(shape.ambiguous)}")
    lines += [f"not understood: {why}" for why in shape.not_understood]
    return lines


def _evaluation_lines(ev: QueryEvaluation) -> list[str]:
    if ev.error:
        return [f"cannot evaluate: {ev.error}"]
    lines = [f"plan cost (no new index, {ev.plans[0] if ev.plans else 'generic plan'}): {ev.cost_before:.1f}"
             + (f"; also planned with {', '.join(ev.plans[1:])}" if len(ev.plans) > 1 else ""), "candidates:"]
    for cc in sorted(ev.costs, key=lambda c: c.cost_after):
        lines.append(
            f"  {cc.describe():60s} cost {cc.cost_before:10.1f} -> {cc.cost_after:10.1f}  "
            f"({-cc.improvement:+.0%})  validated by {cc.method} ({cc.plan})"
        )
        if cc.evidence:
            lines.append("      measured: " + ", ".join(f"{k}={v:g}" for k, v in cc.evidence.items()))
    for candidate, existing in ev.covered:
        lines.append(f"  {candidate.describe():60s} already covered by index {existing}")
    if not ev.costs and not ev.covered:
        lines.append("  none tested")
    lines += [f"note: {note}" for note in ev.notes]
    return lines


def _decision_lines(decision: AdvisorDecision) -> list[str]:
    lines = ["decision:"]
    for p in decision.proposals:
        lines += [
            f"  CREATE: {p.candidate.create_sql()}",
            f"    because: {p.reason}",
            f"    validated by: {p.method}",
            f"    rollback: {p.candidate.drop_sql()}",
        ]
    for stats, why in decision.analyze:
        lines.append(f"  {analyze_statement(stats.table, stats.schema)}: statistics are stale ({why})")
    for _, why in decision.unserved:
        lines.append(f"  no index: {why}")
    for extension, why in decision.extensions:
        lines.append(f"  recommendation for a human: CREATE EXTENSION {extension} ({why})")
    return lines


def _as_json(shape: QueryShape, ev: QueryEvaluation | None, decision: AdvisorDecision | None, error: str | None) -> str:
    return json.dumps(analysis_document(shape, ev, decision, error), indent=2, default=str)


def analysis_document(
    shape: QueryShape, ev: QueryEvaluation | None, decision: AdvisorDecision | None, error: str | None
) -> dict[str, Any]:
    """The analysis as one JSON-able document (``--json``, and ``POST /api/analyze`` of dbopt serve)."""
    doc: dict[str, Any] = {"shape": asdict(shape), "error": error}
    if ev is not None:
        doc["cost_before"] = ev.cost_before
        doc["candidates"] = [
            {"index": c.describe(), "names": [m.name for m in c.members], "cost_before": c.cost_before,
             "cost_after": c.cost_after, "improvement": c.improvement, "method": c.method, "plan": c.plan,
             "evidence": dict(c.evidence)}
            for c in ev.costs
        ]
        doc["notes"] = ev.notes
        doc["plans"] = ev.plans
        doc["covered"] = [{"index": c.describe(), "by": name} for c, name in ev.covered]
        doc["evaluation_error"] = ev.error
    if decision is not None:
        doc["decision"] = {
            "create": [
                {"sql": p.candidate.create_sql(), "rollback_sql": p.candidate.drop_sql(), "reason": p.reason,
                 "cost_before": p.cost_before, "cost_after": p.cost_after, "fingerprints": list(p.fingerprints),
                 "method": p.method, "together_with": list(p.together)}
                for p in decision.proposals
            ],
            "analyze": [{"sql": analyze_statement(s.table, s.schema), "reason": why} for s, why in decision.analyze],
            "no_index": [why for _, why in decision.unserved],
            "extensions": [{"extension": x, "reason": why} for x, why in decision.extensions],
        }
    return doc


def run(args: argparse.Namespace) -> int:
    try:
        shape = analyze_sql(args.sql)
        fingerprint = normalize(args.sql).fingerprint
    except (SqlParseError, UnsupportedStatement) as exc:
        print(f"dbopt analyze: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()
    ev: QueryEvaluation | None = None
    decision: AdvisorDecision | None = None
    error: str | None = None
    try:
        evaluator = Evaluator.connect(settings, args.database_url)
        try:
            decision, (ev,) = evaluator.advise([QueryInput(fingerprint, args.sql, p95_ms=args.p95_ms)])
        finally:
            evaluator.close()
    except (psycopg.Error, EvaluationError) as exc:
        error = f"cannot evaluate against the database: {str(exc).strip().splitlines()[0]}"
    if args.json:
        print(_as_json(shape, ev, decision, error))
    else:
        lines = _shape_lines(shape)
        if ev is not None:
            lines += _evaluation_lines(ev)
        if decision is not None:
            lines += _decision_lines(decision)
        print("\n".join(lines))
        if error:
            print(f"dbopt analyze: {error}", file=sys.stderr)
    return 1 if error or (ev is not None and ev.error) else 0
