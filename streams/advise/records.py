"""The records the advisor writes: signed commands (indexes, ANALYZE, rollbacks) and "kept" results.

Pure. Ids are deterministic (``streams.commands.command_id``): the same index proposed twice,
by this process or after a restart, is the same command, which the executor runs once.
"""

from __future__ import annotations

from streams.advise.candidates import analyze_statement
from streams.advise.evaluate import Proposal, TableStats
from streams.advise.verify import Pending, Verdict
from streams.commands import build_command, sign
from streams.records import Alert, OptimizationCommand, OptimizationResult


def index_command(proposal: Proposal, alert: Alert | None, key: bytes, priority: int = 0) -> OptimizationCommand:
    """The signed CREATE INDEX CONCURRENTLY command for ``proposal``, with its evidence, the extensions
    it needs and its priority."""
    candidate = proposal.candidate
    return sign(
        build_command(
            "advisor",
            "create_index",
            candidate.create_sql(),
            rollback_sql=candidate.drop_sql(),
            table=candidate.qualified_table,
            service=alert.service if alert else None,
            context=alert.context if alert else None,
            fingerprints=proposal.fingerprints,
            p95_before_ms=proposal.p95_before_ms,
            cost_before=proposal.cost_before,
            cost_after=proposal.cost_after,
            reason=f"index {candidate.describe()} (validated by {proposal.method}): {proposal.reason}",
            priority=priority,
            evidence=proposal.evidence,
            requires=candidate.extensions,
            database=alert.database if alert else None,
        ),
        key,
    )


def analyze_command(stats: TableStats, why: str, fingerprints: tuple[str, ...], key: bytes,
                    database: str | None = None) -> OptimizationCommand:
    """The signed ANALYZE command for a table whose statistics are stale."""
    return sign(
        build_command(
            "advisor",
            "analyze",
            analyze_statement(stats.table, stats.schema),
            table=stats.qualified,
            fingerprints=fingerprints,
            reason=f"statistics of {stats.qualified} are stale: {why}",
            database=database,
        ),
        key,
    )


def rollback_command(pending: Pending, verdict: Verdict, key: bytes) -> OptimizationCommand:
    """The signed DROP INDEX CONCURRENTLY undoing ``pending``'s command, with the figures."""
    figures = ", ".join(
        f"{name}={getattr(verdict, name):.1f}" for name in Verdict.FIGURES if getattr(verdict, name) is not None
    )
    return sign(
        build_command(
            "verifier",
            "drop_index",
            pending.rollback_sql,
            rollback_sql=pending.sql,
            table=pending.table,
            rollback_of=pending.command_id,
            service=pending.service,
            context=pending.context,
            fingerprints=pending.fingerprints,
            p95_before_ms=verdict.p95_before_ms,
            cost_before=pending.cost_before,
            cost_after=pending.cost_after,
            reason=f"rollback of {pending.index_name}: {verdict.reason} ({figures})",
            database=pending.database,
        ),
        key,
    )


def kept_result(pending: Pending, verdict: Verdict, now_ms: int) -> OptimizationResult:
    """The result saying an applied index was verified and kept."""
    return OptimizationResult(
        command_id=pending.command_id,
        status="kept",
        reason=f"verified: {verdict.reason}",
        table=pending.table or None,
        sql=pending.sql,
        rollback_sql=pending.rollback_sql or None,
        index_name=pending.index_name,
        finished_at=now_ms,
        p95_before_ms=verdict.p95_before_ms,
        p95_after_ms=verdict.p95_after_ms,
        write_p95_before_ms=verdict.write_p95_before_ms,
        write_p95_after_ms=verdict.write_p95_after_ms,
        cost_before=pending.cost_before,
        cost_after=pending.cost_after,
        executor_id="verifier",
    )
