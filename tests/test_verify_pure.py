"""Pure tests of verification: keep an index that helped, roll back one that did not or slowed writes."""

from __future__ import annotations

import msgspec

from streams.advise.records import kept_result, rollback_command
from streams.advise.verify import History, Pending, Verifier, decide, judge, same_table
from streams.commands import verify
from streams.config import AdviseSettings
from streams.records import OptimizationCommand, OptimizationResult, WindowStats
from streams.serde import Codec

S = AdviseSettings(verify_windows=3, verify_min_gain=0.2, write_tolerance=0.5, write_floor_ms=1.0, verify_timeout_s=600)
MIN = 60_000
APPLIED = 100 * MIN + 30_000  # in the middle of a window: that window is ignored
KEY = b"test-key"


def _window(fp: str, start_min: int, p95: float, kind: str = "SELECT", count: int = 600) -> WindowStats:
    return WindowStats(
        window_id=f"{fp}-{start_min}", window_kind="tumbling", window_start=start_min * MIN,
        window_end=(start_min + 1) * MIN, service="booking-service", fingerprint=fp, context="booking",
        count=count, errors=0, min_ms=p95, max_ms=p95, p50_ms=p95, p95_ms=p95, p99_ms=p95,
        statement_type=kind, tables=("bookings",),
    )


def _history(read_before: float, read_after: float, write_before: float, write_after: float) -> History:
    h = History(30)
    for m in range(95, 100):
        h.add(_window("read", m, read_before))
        h.add(_window("ins", m, write_before, "INSERT"))
    h.add(_window("read", 100, 999.0))  # the window the index was built in: mixed, ignored
    h.add(_window("ins", 100, 999.0, "INSERT"))
    for m in range(101, 104):
        h.add(_window("read", m, read_after))
        h.add(_window("ins", m, write_after, "INSERT"))
    return h


def _pending() -> Pending:
    return Pending(
        command_id="c1",
        table="public.bookings",
        index_name="dbopt_idx_bookings_vendor_id_1",
        sql="CREATE INDEX CONCURRENTLY dbopt_idx_bookings_vendor_id_1 ON public.bookings (vendor_id)",
        rollback_sql="DROP INDEX CONCURRENTLY public.dbopt_idx_bookings_vendor_id_1",
        applied_at=APPLIED,
        fingerprints=("read",),
        p95_before_ms=150.0,
    )


def test_decide() -> None:
    assert decide(100.0, 20.0, 2.0, 2.5, S)[0] is True
    keep, why = decide(100.0, 90.0, 2.0, 2.0, S)
    assert keep is False and "did not improve" in why
    keep, why = decide(100.0, 20.0, 2.0, 6.0, S)
    assert keep is False and "writes regressed" in why and "2.0 -> 6.0" in why
    assert decide(100.0, 20.0, 0.2, 0.9, S)[0] is True  # +350% but under the 1 ms floor: noise
    assert decide(None, None, None, None, S)[0] is True


def test_judge_keeps_an_index_that_helped() -> None:
    verdict = judge(_pending(), _history(120.0, 15.0, 2.0, 2.2), S, now_ms=APPLIED + 5 * MIN)
    assert verdict is not None and verdict.keep
    assert (verdict.p95_before_ms, verdict.p95_after_ms) == (120.0, 15.0)  # the mixed window is not used
    assert (verdict.write_p95_before_ms, verdict.write_p95_after_ms) == (2.0, 2.2)


def test_judge_rolls_back_when_reads_did_not_improve_or_writes_regressed() -> None:
    flat = judge(_pending(), _history(120.0, 110.0, 2.0, 2.0), S, now_ms=APPLIED + 5 * MIN)
    assert flat is not None and not flat.keep
    slow_writes = judge(_pending(), _history(120.0, 15.0, 2.0, 9.0), S, now_ms=APPLIED + 5 * MIN)
    assert slow_writes is not None and not slow_writes.keep and slow_writes.write_p95_after_ms == 9.0


def test_writes_are_judged_only_on_windows_with_enough_statements() -> None:
    """Six inserts a window: their p95 is their slowest one, so a slow one does not roll back the index."""
    h = History(30)
    for m in range(95, 100):
        h.add(_window("read", m, 120.0))
        h.add(_window("ins", m, 2.0, "INSERT", count=6))
    for m in range(101, 104):
        h.add(_window("read", m, 15.0))
        h.add(_window("ins", m, 9.0, "INSERT", count=6))
    verdict = judge(_pending(), h, S, now_ms=APPLIED + 5 * MIN)
    assert verdict is not None and verdict.keep, verdict
    assert verdict.write_p95_before_ms is None and verdict.write_p95_after_ms is None
    assert "writes not judged: no windows of 20+ writes" in verdict.reason
    for m in range(101, 104):  # a second, busy write fingerprint that did regress is judged
        h.add(_window("upd", m - 6, 2.0, "UPDATE", count=20))
        h.add(_window("upd", m, 9.0, "UPDATE", count=20))
    verdict = judge(_pending(), h, S, now_ms=APPLIED + 5 * MIN)
    assert verdict is not None and not verdict.keep and "writes regressed: table write p95 2.0 -> 9.0" in verdict.reason


def test_judge_waits_for_enough_windows_then_times_out() -> None:
    h = History(30)
    h.add(_window("read", 99, 120.0))
    h.add(_window("read", 101, 15.0))
    assert judge(_pending(), h, S, now_ms=APPLIED + 2 * MIN) is None
    late = judge(_pending(), h, S, now_ms=APPLIED + 601_000)
    assert late is not None and late.keep and late.p95_after_ms == 15.0


def test_history_ignores_redelivered_and_context_rows_and_bounds_memory() -> None:
    h = History(3)
    assert h.add(_window("a", 1, 5.0))
    assert not h.add(_window("a", 1, 50.0))  # redelivered window keeps its first value
    assert not h.add(msgspec.structs.replace(_window("a", 2, 5.0), fingerprint=None))
    assert not h.add(msgspec.structs.replace(_window("a", 2, 5.0), window_kind="hopping"))
    for m in range(2, 6):
        h.add(_window("a", m, float(m)))
    assert [p.start // MIN for p in h.points("a")] == [3, 4, 5]
    assert h.calls_per_s("a") == 10.0  # 600 per 60 s window
    h.add(_window("w", 5, 1.0, "UPDATE"))
    assert h.write_fingerprints("public.bookings") == ["w"] and h.write_rate("bookings") == 10.0
    assert same_table("public.bookings", "bookings") and not same_table("a.bookings", "b.bookings")


def test_verifier_waits_for_evidence_and_builds_signed_records() -> None:
    v = Verifier(S)
    result = OptimizationResult(command_id="c1", status="applied", reason="", table="public.bookings",
                                sql=_pending().sql, rollback_sql=_pending().rollback_sql, finished_at=APPLIED)
    assert v.on_result(msgspec.structs.replace(result, status="rejected"), "x") is None
    pending = v.on_result(result, "dbopt_idx_bookings_vendor_id_1")
    assert pending is not None and pending.fingerprints == ()
    v.history = _history(120.0, 110.0, 2.0, 2.0)
    assert v.due(APPLIED + 5 * MIN) == []  # no evidence: which fingerprints to judge is unknown
    v.on_command(OptimizationCommand(command_id="c1", created_at=0, origin="advisor", action="create_index",
                                     sql=_pending().sql, fingerprints=("read",), p95_before_ms=150.0, signature=""))
    ((done, verdict),) = v.due(APPLIED + 5 * MIN)
    assert not verdict.keep and v.pending == {} and v.on_result(result, "x") is None  # judged once
    command = rollback_command(done, verdict, KEY)
    assert verify(command, KEY) and command.origin == "verifier" and command.action == "drop_index"
    assert command.rollback_of == "c1" and command.sql == done.rollback_sql
    assert "120.0" in command.reason and "110.0" in command.reason
    kept = kept_result(done, verdict, now_ms=1)
    assert kept.status == "kept" and kept.command_id == "c1" and kept.p95_after_ms == 110.0
    codec = Codec()
    codec.validate(command.SCHEMA, command.to_avro())
    codec.validate(kept.SCHEMA, kept.to_avro())
