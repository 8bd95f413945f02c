"""The executor's OptimizationResult of an audit row (pure).

Every result the executor sends stands for an audit row, except the rejection of a record that is
not a verified command (no row may be written under an id a forger chose). Either way the result is
an :class:`~streams.records.OptimizationResult`, which checks its status when it is built: that
record is the one builder of results, here and in the advisor's verifier (``kept``).
"""

from __future__ import annotations

import time
from typing import cast

from streams.records import OptimizationResult, ResultStatus

from .audit import AuditRow


def from_row(row: AuditRow, executor_id: str, *, status: str | None = None, reason: str | None = None) -> OptimizationResult:
    """The result an audit row stands for (``status``/``reason`` override, e.g. for duplicates)."""
    return OptimizationResult(
        command_id=row.command_id,
        status=cast(ResultStatus, status or row.status),  # checked by OptimizationResult
        reason=row.reason if reason is None else reason,
        table=row.table_name,
        sql=row.sql,
        rollback_sql=row.rollback_sql,
        index_name=row.index_name,
        finished_at=int(row.finished_at.timestamp() * 1000) if row.finished_at else int(time.time() * 1000),
        duration_ms=row.duration_ms,
        p95_before_ms=row.command.p95_before_ms,
        cost_before=row.command.cost_before,
        cost_after=row.command.cost_after,
        executor_id=executor_id,
        database=row.database,
    )


def unverified(key: str, reason: str, sql: str, executor_id: str) -> OptimizationResult:
    """The rejection of a record that is not a verified command, under its ``key`` (no audit row)."""
    return OptimizationResult(
        command_id=key, status="rejected", reason=reason, sql=sql, finished_at=int(time.time() * 1000),
        executor_id=executor_id,
    )
