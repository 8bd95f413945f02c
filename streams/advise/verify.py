"""Did an applied index help? Pure: window history in, a keep-or-roll-back verdict out.

The advisor feeds every closed tumbling WindowStats row into a :class:`History`. When the
executor reports an index ``applied`` at time *t*, a :class:`Pending` verification starts:

* read side — for each fingerprint the index was built for, the median p95 of the last
  ``verify_windows`` windows that ended by *t* ("before"; the command's evidence p95 when the
  history has none) and of the first ``verify_windows`` windows that started at or after *t*
  ("after"). The window that contains *t* is mixed and ignored. The figures compared are the
  worst (highest) served fingerprint's, before and after.
* write side — for the INSERT/UPDATE/DELETE fingerprints touching the table, per window the
  highest p95, then the median over the same before/after windows. Only windows in which a write
  fingerprint ran at least ``write_min_count`` times count: the p95 of a handful of statements is
  their slowest one, and one slow insert on a busy host is not a regression the index caused.

It is kept when the read p95 fell by at least ``verify_min_gain`` and the write p95 did not grow
beyond ``write_tolerance`` (relative) *and* ``write_floor_ms`` (absolute, so noise on a 0.2 ms
insert is not a regression). Otherwise it is rolled back.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Mapping

from streams.config import AdviseSettings
from streams.records import OptimizationCommand, OptimizationResult, WindowStats

WRITE_TYPES = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})


@dataclass(frozen=True, slots=True)
class PastWindow:
    start: int
    end: int
    count: int
    p95_ms: float


def same_table(a: str, b: str) -> bool:
    """``public.bookings`` and ``bookings`` name the same table (the default schema is implied)."""
    return a.rpartition(".")[2] == b.rpartition(".")[2] and (
        "." not in a or "." not in b or a == b
    )


class History:
    """Recent closed tumbling windows per fingerprint, with each fingerprint's type and tables."""

    def __init__(self, max_windows: int) -> None:
        self._max = max_windows
        self._points: dict[str, dict[int, PastWindow]] = {}
        self._meta: dict[str, tuple[str | None, tuple[str, ...]]] = {}

    def add(self, window: WindowStats) -> bool:
        """Remember one window row; False when it is not a new tumbling fingerprint row."""
        fp = window.fingerprint
        if not fp or window.window_kind != "tumbling":
            return False
        points = self._points.setdefault(fp, {})
        start = window.window_start
        if start in points:
            return False  # a redelivered window: emit-final means the first copy is the value
        points[start] = PastWindow(start, window.window_end, window.count, window.p95_ms)
        if len(points) > self._max:
            del points[min(points)]
        self._meta[fp] = (window.statement_type, window.tables)
        return True

    def snapshot(self) -> dict[str, Any]:
        """JSON-able copy of the history (the advisor's durable state)."""
        return {
            "points": {fp: [[p.start, p.end, p.count, p.p95_ms] for p in pts.values()] for fp, pts in self._points.items()},
            "meta": {fp: [kind, list(tables)] for fp, (kind, tables) in self._meta.items()},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self._points = {
            fp: {int(p[0]): PastWindow(int(p[0]), int(p[1]), int(p[2]), float(p[3])) for p in pts}
            for fp, pts in state.get("points", {}).items()
        }
        self._meta = {fp: (kind, tuple(tables)) for fp, (kind, tables) in state.get("meta", {}).items()}

    def points(self, fingerprint: str) -> list[PastWindow]:
        """The remembered windows of ``fingerprint``, oldest first."""
        points = self._points.get(fingerprint, {})
        return [points[start] for start in sorted(points)]

    def write_fingerprints(self, table: str) -> list[str]:
        return sorted(
            fp
            for fp, (kind, tables) in self._meta.items()
            if kind in WRITE_TYPES and any(same_table(t, table) for t in tables)
        )

    def calls_per_s(self, fingerprint: str, last: int = 5) -> float | None:
        points = self.points(fingerprint)[-last:]
        seconds = sum(p.end - p.start for p in points) / 1000
        return sum(p.count for p in points) / seconds if seconds > 0 else None

    def write_rate(self, table: str) -> float | None:
        """Rows written per second to ``table`` (statements per second, from the write fingerprints)."""
        rates = [self.calls_per_s(fp) for fp in self.write_fingerprints(table)]
        known = [r for r in rates if r is not None]
        return sum(known) if known else None


@dataclass(slots=True)
class Pending:
    """An applied index waiting for its verdict."""

    command_id: str
    table: str
    index_name: str
    sql: str
    rollback_sql: str
    applied_at: int  # epoch ms
    fingerprints: tuple[str, ...] = ()
    p95_before_ms: float | None = None  # the command's evidence, used when history has no "before"
    cost_before: float | None = None
    cost_after: float | None = None
    service: str | None = None
    context: str | None = None
    database: str | None = None  # the DBOPT_DATABASES name of the target (None: the default database)


@dataclass(frozen=True, slots=True)
class Verdict:
    keep: bool
    reason: str
    p95_before_ms: float | None = None
    p95_after_ms: float | None = None
    write_p95_before_ms: float | None = None
    write_p95_after_ms: float | None = None

    FIGURES: ClassVar[tuple[str, ...]] = ("p95_before_ms", "p95_after_ms", "write_p95_before_ms", "write_p95_after_ms")


def decide(
    p95_before: float | None,
    p95_after: float | None,
    write_before: float | None,
    write_after: float | None,
    settings: AdviseSettings,
) -> tuple[bool, str]:
    """Keep (True) or roll back (False), with the reason and the figures."""
    if write_before is not None and write_after is not None:
        allowed = max(write_before * (1 + settings.write_tolerance), write_before + settings.write_floor_ms)
        if write_after > allowed:
            return False, (
                f"writes regressed: table write p95 {write_before:.1f} -> {write_after:.1f} ms "
                f"(tolerated up to {allowed:.1f} ms)"
            )
    if p95_before is None or p95_after is None:
        return True, "not judged on reads: no windows of the served queries before and after the index"
    needed = p95_before * (1 - settings.verify_min_gain)
    if p95_after <= needed:
        return True, f"p95 {p95_before:.1f} -> {p95_after:.1f} ms (-{1 - p95_after / p95_before:.0%})"
    return False, f"p95 did not improve enough: {p95_before:.1f} -> {p95_after:.1f} ms (needed <= {needed:.1f} ms)"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _split(points: list[PastWindow], at: int, n: int) -> tuple[list[PastWindow], list[PastWindow]]:
    before = [p for p in points if p.end <= at][-n:]
    after = [p for p in points if p.start >= at][:n]
    return before, after


def _write_side(history: History, pending: Pending, n: int, min_count: int) -> tuple[float | None, float | None]:
    per_window: dict[int, PastWindow] = {}
    for fp in history.write_fingerprints(pending.table):
        for p in history.points(fp):
            if p.count < min_count:
                continue
            if p.start not in per_window or p.p95_ms > per_window[p.start].p95_ms:
                per_window[p.start] = p
    before, after = _split(sorted(per_window.values(), key=lambda p: p.start), pending.applied_at, n)
    return _median([p.p95_ms for p in before]), _median([p.p95_ms for p in after])


def judge(pending: Pending, history: History, settings: AdviseSettings, now_ms: int) -> Verdict | None:
    """The verdict once ``verify_windows`` after-windows exist (or the timeout passed); else None."""
    n = settings.verify_windows
    timed_out = now_ms - pending.applied_at >= settings.verify_timeout_s * 1000
    befores: list[float] = []
    afters: list[float] = []
    complete = False
    for fp in pending.fingerprints:
        before, after = _split(history.points(fp), pending.applied_at, n)
        if not after:
            continue
        complete = complete or len(after) >= n
        afters.append(_median([p.p95_ms for p in after]))  # type: ignore[arg-type]
        if before:
            befores.append(_median([p.p95_ms for p in before]))  # type: ignore[arg-type]
    if not complete and not timed_out:
        return None
    p95_before = max(befores) if befores else pending.p95_before_ms
    p95_after = max(afters) if afters else None
    write_before, write_after = _write_side(history, pending, n, settings.write_min_count)
    keep, reason = decide(p95_before, p95_after, write_before, write_after, settings)
    if keep and (write_before is None or write_after is None) and history.write_fingerprints(pending.table):
        reason += f"; writes not judged: no windows of {settings.write_min_count}+ writes before and after"
    return Verdict(keep, reason, p95_before, p95_after, write_before, write_after)


@dataclass
class Verifier:
    """Pending verifications and the commands' evidence, fed by the advisor's consumer."""

    settings: AdviseSettings
    history: History = field(init=False)
    pending: dict[str, Pending] = field(default_factory=dict)
    evidence: dict[str, OptimizationCommand] = field(default_factory=dict)  # command_id -> command
    done: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.history = History(self.settings.history_windows)

    def on_command(self, command: OptimizationCommand) -> None:
        if command.action == "create_index" and command.fingerprints:
            self.evidence[command.command_id] = command
            waiting = self.pending.get(command.command_id)
            if waiting is not None:
                _fill(waiting, command)

    def on_result(self, result: OptimizationResult, index_name: str | None) -> Pending | None:
        """Start verifying an applied CREATE INDEX (``index_name`` parsed by the caller)."""
        cid = result.command_id
        if result.status != "applied" or not index_name or cid in self.done or cid in self.pending:
            return None
        pending = Pending(
            command_id=cid,
            table=result.table or "",
            index_name=index_name,
            sql=result.sql,
            rollback_sql=result.rollback_sql or "",
            applied_at=result.finished_at,
            database=result.database,
        )
        command = self.evidence.get(cid)
        if command is not None:
            _fill(pending, command)
        self.pending[cid] = pending
        return pending

    def snapshot(self) -> dict[str, Any]:
        """JSON-able copy of the verifier's state (the advisor's durable state)."""
        return {
            "history": self.history.snapshot(),
            "pending": {cid: {**asdict(p), "fingerprints": list(p.fingerprints)} for cid, p in self.pending.items()},
            "evidence": {cid: command.to_avro() for cid, command in self.evidence.items()},
            "done": sorted(self.done),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.history.restore(state.get("history", {}))
        self.pending = {
            cid: Pending(**{**p, "fingerprints": tuple(p["fingerprints"])}) for cid, p in state.get("pending", {}).items()
        }
        self.evidence = {cid: OptimizationCommand.from_avro(c) for cid, c in state.get("evidence", {}).items()}
        self.done = set(state.get("done", ()))

    def due(self, now_ms: int) -> list[tuple[Pending, Verdict]]:
        """Pending verifications that have their verdict now (removed from the pending set)."""
        out = []
        for cid, pending in sorted(self.pending.items()):
            timed_out = now_ms - pending.applied_at >= self.settings.verify_timeout_s * 1000
            if not pending.fingerprints and not timed_out:
                continue  # the command's evidence has not arrived yet
            verdict = judge(pending, self.history, self.settings, now_ms)
            if verdict is None:
                continue
            del self.pending[cid]
            self.done.add(cid)
            out.append((pending, verdict))
        return out


def _fill(pending: Pending, command: OptimizationCommand) -> None:
    pending.fingerprints = command.fingerprints
    pending.p95_before_ms = command.p95_before_ms
    pending.cost_before = command.cost_before
    pending.cost_after = command.cost_after
    pending.service = command.service
    pending.context = command.context
    pending.database = command.database
    pending.table = pending.table or command.table or ""
    pending.rollback_sql = pending.rollback_sql or command.rollback_sql or ""
