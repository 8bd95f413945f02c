"""Validate an index HypoPG cannot model (GIN, GiST) by building it for real on a sampled copy.

HypoPG plans only B-tree hypothetical indexes, so a trigram, full-text or jsonb index is measured
instead: at most ``DBOPT_ADVISE_SAMPLE_ROWS`` rows of the table are copied (``TABLESAMPLE SYSTEM``
when the table is larger) into an UNLOGGED table of the scratch schema
(``DBOPT_ADVISE_SAMPLE_SCHEMA``), analyzed, and the statement — rewritten to read the copy, its
``$n`` replaced by representative values drawn from the table's statistics, never a service's
literals — runs under ``EXPLAIN (ANALYZE, BUFFERS)`` ``DBOPT_ADVISE_SAMPLE_RUNS`` times before
and after each candidate is built on the copy. The gain is the drop of the median execution
time, and counts only when the plan uses the index. Every step runs under
``statement_timeout`` (``DBOPT_ADVISE_SAMPLE_TIMEOUT_MS``); UPDATE/DELETE run in a transaction
that is rolled back; the copy is dropped whatever happens. Nothing touches the real table but a
sampled read.
"""

from __future__ import annotations

import json
import statistics
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import psycopg
from pglast import ast, parser
from pglast.stream import RawStream
from pglast.visitors import Visitor
from psycopg import sql

from streams.advise.candidates import IndexCandidate
from streams.config import AdviseSettings

METHOD = "sampled build"


@dataclass(frozen=True, slots=True)
class Run:
    """The median of several ``EXPLAIN (ANALYZE, BUFFERS)`` runs of one statement."""

    ms: float
    buffers: int  # shared blocks hit + read by the whole plan
    cost: float  # the planner's total cost on the copy
    plan: str  # the last run's plan (JSON text)


@dataclass(frozen=True, slots=True)
class SampledResult:
    candidate: IndexCandidate
    rows: int  # rows in the sampled copy
    before: Run
    after: Run | None  # None: the build failed (see error)
    used: bool  # the plan after the build reads the index
    error: str | None = None

    @property
    def gain(self) -> float:
        """Measured drop of the execution time (0 when the index is not used or was not built)."""
        if self.after is None or not self.used or self.before.ms <= 0:
            return 0.0
        return max(0.0, 1.0 - self.after.ms / self.before.ms)

    def evidence(self) -> dict[str, float]:
        figures = {"sample_rows": float(self.rows), "sampled_ms_before": self.before.ms,
                   "sampled_buffers_before": float(self.before.buffers)}
        if self.after is not None:
            figures |= {"sampled_ms_after": self.after.ms, "sampled_buffers_after": float(self.after.buffers)}
        return figures


class _Rewrite(Visitor):
    """Points the statement's references to one table at the sampled copy and fills ``$n``."""

    def __init__(self, values: Mapping[int, str | None], table: tuple[str, str] | None, copy: tuple[str, str] | None) -> None:
        super().__init__()
        self.values, self.table, self.copy = values, table, copy

    def visit_RangeVar(self, ancestors: object, node: ast.RangeVar) -> None:
        if self.table and self.copy and node.relname == self.table[1] and node.schemaname in (None, self.table[0]):
            if node.alias is None:  # column references may still say table.column
                node.alias = ast.Alias(aliasname=self.table[1])
            node.schemaname, node.relname = self.copy

    def visit_ParamRef(self, ancestors: object, node: ast.ParamRef) -> ast.A_Const:
        value = self.values.get(node.number or 0)
        if value is None:
            return ast.A_Const(isnull=True)
        return ast.A_Const(isnull=False, val=ast.String(sval=value))


def rewrite(statement: str, values: Mapping[int, str | None], table: tuple[str, str] | None = None,
            copy: tuple[str, str] | None = None) -> str:
    """``statement`` with literals for its parameters (NULL where ``values`` has none), reading
    ``copy`` (schema, name) instead of ``table`` (schema, name) when both are given."""
    tree = parser.parse_sql(statement)
    _Rewrite(values, table, copy)(tree)
    return RawStream()(tree)


def fill_parameters(statement: str, values: Mapping[int, str | None]) -> str:
    """``statement`` with its ``$n`` replaced by the literals ``values``."""
    return rewrite(statement, values)


def _buffers(plan: dict[str, Any]) -> int:
    return int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


class SampledBuilder:
    """Sampled builds on one writable session (``connect`` opens it when first needed)."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], settings: AdviseSettings) -> None:
        self.connect = connect
        self.settings = settings
        self._conn: psycopg.Connection[Any] | None = None

    def _session(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = self.connect()
            conn.autocommit = True
            conn.execute(f"SET statement_timeout = {int(self.settings.sample_timeout_ms)}")
            conn.execute("SET lock_timeout = '2s'")
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.settings.sample_schema)))
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _explain(self, conn: psycopg.Connection[Any], statement: str) -> Run:
        runs: list[tuple[float, int, float, str]] = []
        for _ in range(self.settings.sample_runs + 1):  # the first run only warms the cache
            with conn.transaction(force_rollback=True):  # an UPDATE/DELETE changes nothing, even on the copy
                (doc,) = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}").fetchone()  # type: ignore[misc]
            doc = json.loads(doc) if isinstance(doc, str) else doc
            top = doc[0]
            runs.append((float(top["Execution Time"]), _buffers(top["Plan"]), float(top["Plan"]["Total Cost"]),
                         json.dumps(top["Plan"])))
        measured = runs[1:]
        return Run(statistics.median(r[0] for r in measured), int(statistics.median(r[1] for r in measured)),
                   measured[-1][2], measured[-1][3])

    def measure(self, statement: str, schema: str, table: str, candidates: list[IndexCandidate],
                values: dict[int, str | None]) -> list[SampledResult]:
        """Build each candidate on one sampled copy of ``schema.table`` and time ``statement`` before/after."""
        conn = self._session()
        copy = (self.settings.sample_schema, f"s_{table[:40]}_{uuid.uuid4().hex[:8]}")
        target = sql.Identifier(*copy)
        source = sql.Identifier(schema, table)
        limit = int(self.settings.sample_rows)
        try:
            (estimate,) = conn.execute(
                "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                (f"{sql.Identifier(schema).as_string(conn)}.{sql.Identifier(table).as_string(conn)}",),
            ).fetchone()  # type: ignore[misc]
            sample = (
                sql.SQL("TABLESAMPLE SYSTEM ({})").format(sql.Literal(min(100.0, 120.0 * limit / estimate)))
                if estimate > limit else sql.SQL("")
            )
            conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} AS SELECT * FROM {} {} LIMIT {}").format(
                target, source, sample, sql.Literal(limit)))
            conn.execute(sql.SQL("ANALYZE {}").format(target))
            (rows,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()  # type: ignore[misc]
            on_copy = rewrite(statement, values, (schema, table), copy)
            before = self._explain(conn, on_copy)
            results = []
            for candidate in candidates:
                build = IndexCandidate(copy[1], copy[0], candidate.columns, candidate.predicate, candidate.method)
                index = build.name
                try:
                    conn.execute(build.create_sql(concurrently=False))
                except psycopg.Error as exc:
                    if conn.broken:
                        raise
                    results.append(SampledResult(candidate, int(rows), before, None, False,
                                                 str(exc).strip().splitlines()[0]))
                    continue
                try:
                    after = self._explain(conn, on_copy)
                finally:
                    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(copy[0], index)))
                results.append(SampledResult(candidate, int(rows), before, after, index in after.plan))
            return results
        finally:
            if not conn.broken:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
