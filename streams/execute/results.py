"""OptimizationResult records (pure): the executor's final word on each command."""

from __future__ import annotations

import time
from typing import Any

from .audit import AuditRow

RESULT_STATUSES = ("applied", "rejected", "deferred", "failed", "duplicate", "rolled_back", "kept")
_EVIDENCE = ("p95_before_ms", "cost_before", "cost_after")


def result_record(
    command_id: str,
    status: str,
    reason: str,
    sql: str,
    *,
    executor_id: str,
    table: str | None = None,
    rollback_sql: str | None = None,
    index_name: str | None = None,
    duration_ms: float | None = None,
    command: dict[str, Any] | None = None,
    finished_at: int | None = None,
) -> dict[str, Any]:
    if status not in RESULT_STATUSES:
        raise ValueError(f"unknown result status {status!r}")
    evidence = {name: (command or {}).get(name) for name in _EVIDENCE}
    return {
        "command_id": command_id,
        "status": status,
        "reason": reason,
        "table": table,
        "sql": sql,
        "rollback_sql": rollback_sql,
        "index_name": index_name,
        "finished_at": int(time.time() * 1000) if finished_at is None else finished_at,
        "duration_ms": duration_ms,
        "p95_after_ms": None,
        "write_p95_before_ms": None,
        "write_p95_after_ms": None,
        "executor_id": executor_id,
        **evidence,
    }


def from_row(row: AuditRow, executor_id: str, *, status: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """The result an audit row stands for (``status``/``reason`` override, e.g. for duplicates)."""
    return result_record(
        row.command_id,
        status or row.status,
        row.reason if reason is None else reason,
        row.sql,
        executor_id=executor_id,
        table=row.table_name,
        rollback_sql=row.rollback_sql,
        index_name=row.index_name,
        duration_ms=row.duration_ms,
        command=row.command,
        finished_at=int(row.finished_at.timestamp() * 1000) if row.finished_at else None,
    )
