"""SDK sketches in the windows, without servers: intervals never straddle a pane, a sketch counts
exactly what its executions would have counted as events, and a watermark waits for the slower input."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from streams.client.sketch import interval_of
from streams.ingest.reader import Execution, Statement
from streams.ingest.sketches import SketchInput
from streams.records import WindowStats
from streams.windows import PartitionWindows, QuantileSketch, WindowSpec
from streams.windows.engine import EVENTS, SKETCHES

SPEC = WindowSpec(tumbling_ms=60_000, hop_ms=60_000, hopping_ms=300_000, grace_ms=10_000)
STATEMENT = Statement("f1", "SELECT * FROM bookings WHERE id = $1", "SELECT", ("bookings",), "booking", "critical")
BASE = 1_800_000_000_000 // 60_000 * 60_000


@pytest.mark.parametrize(("interval_ms", "pane_ms"), [(10_000, 60_000), (7_000, 60_000), (13_000, 30_000),
                                                      (60_000, 60_000), (90_000, 60_000), (1_000, 60_000)])
def test_an_interval_never_straddles_a_pane(interval_ms: int, pane_ms: int) -> None:
    rng = random.Random(interval_ms + pane_ms)
    for _ in range(5_000):
        t = BASE + rng.randrange(0, 3_600_000)
        start, end = interval_of(t, interval_ms, pane_ms)
        assert start <= t < end <= start + interval_ms
        assert start // pane_ms == (end - 1) // pane_ms  # one pane
        assert start % interval_ms == 0 or start % pane_ms == 0  # epoch-aligned, or cut at a pane start
        assert interval_of(end - 1, interval_ms, pane_ms) == (start, end) == interval_of(start, interval_ms, pane_ms)


def _sketch(durations: list[float], start: int, errors: int = 0, rows: int = 0) -> SketchInput:
    bins = QuantileSketch()
    for d in durations:
        bins.add(d)
    keys = sorted(bins.bins)
    return SketchInput("svc", start, start + 999, None, STATEMENT, tuple(keys), tuple(bins.bins[k] for k in keys),
                       bins.zeros, len(durations), errors, rows, math.fsum(durations), min(durations), max(durations))  # fmt: skip


def _close_all(windows: PartitionWindows) -> list[WindowStats]:
    windows.hold(EVENTS, False)
    windows.hold(SKETCHES, False)
    windows.tick(BASE + 3_600_000, 0)
    closing = windows.closing(emitted_at=0)
    assert closing is not None
    return [r for r in closing.records if r.window_kind == "tumbling"]


def test_a_sketch_counts_exactly_what_its_executions_count_as_events() -> None:
    rng = np.random.default_rng(4)
    durations = [float(x) for x in np.concatenate([rng.lognormal(2, 1.2, 3000), np.zeros(40)])]
    as_events, as_sketches = PartitionWindows(0, SPEC, 10), PartitionWindows(0, SPEC, 10)
    for i, d in enumerate(durations):
        as_events.add(Execution("svc", BASE + i * 10, d, i % 97 == 0, 2, None, STATEMENT), i)
    chunks = [durations[i : i + 700] for i in range(0, len(durations), 700)]  # several sketches, one pane
    for j, chunk in enumerate(chunks):
        errors = sum(1 for i in range(j * 700, j * 700 + len(chunk)) if i % 97 == 0)
        as_sketches.add_sketch(_sketch(chunk, BASE + j * 1000, errors, 2 * len(chunk)), j)
    got, want = _close_all(as_sketches), _close_all(as_events)
    assert len(got) == len(want) == 2  # the query row and the context row
    for a, b in zip(got, want, strict=True):
        assert (a.count, a.errors, a.rows, a.min_ms, a.max_ms) == (b.count, b.errors, b.rows, b.min_ms, b.max_ms)
        assert a.sum_ms == pytest.approx(b.sum_ms, rel=1e-12)
        assert (a.p50_ms, a.p95_ms, a.p99_ms) == (b.p50_ms, b.p95_ms, b.p99_ms)  # the same bins
        for q, value in ((0.5, a.p50_ms), (0.95, a.p95_ms), (0.99, a.p99_ms)):
            exact = float(np.quantile(durations, q, method="lower"))
            assert abs(value - exact) <= 0.005 * exact + 1e-12


def test_the_watermark_waits_for_an_input_that_holds_it() -> None:
    windows = PartitionWindows(0, SPEC, 10)
    windows.hold(SKETCHES, True)  # the sketches partition has unread records
    for i in range(10):  # events far ahead: five minutes
        windows.add(Execution("svc", BASE + i * 30_000, 1.0, False, 1, None, STATEMENT), i)
    assert not windows.due and windows.clock.horizon is None
    assert windows.add_sketch(_sketch([5.0, 6.0], BASE + 1_000), 0) == "applied"  # not late
    assert windows.clock.watermark == BASE + 1_999  # the slower input's mark
    windows.hold(SKETCHES, False)  # read up, and quiet: the events' mark counts alone
    assert windows.due
    first = [r for r in windows.closing(emitted_at=0).records  # type: ignore[union-attr]
             if r.window_kind == "tumbling" and r.window_start == BASE]  # fmt: skip
    assert {r.count for r in first} == {4}  # two events and both sketched executions
    assert windows.add_sketch(_sketch([7.0], BASE + 2_000), 1) == "late"


def test_changelog_round_trip_keeps_sketch_panes_and_marks() -> None:
    windows = PartitionWindows(0, SPEC, 10)
    windows.add(Execution("svc", BASE + 5, 3.0, False, 1, None, STATEMENT), 0)
    windows.add_sketch(_sketch([1.0, 2.0, 4.0], BASE + 10_000), 0)
    records = windows.checkpoint()
    restored = PartitionWindows(0, SPEC, 10)
    restored.load(records)
    assert restored.clock.marks == windows.clock.marks and restored.holds == [True, True]
    assert restored.add_sketch(_sketch([1.0], BASE + 10_000), 0) == "replayed"  # its offset is in the pane
    assert [(r.count, r.sum_ms) for r in _close_all(restored)] == [(4, 10.0), (4, 10.0)]


def test_a_sketch_that_does_not_add_up_is_rejected_with_its_reason() -> None:
    from streams.config import load_settings
    from streams.ingest import Rejected
    from streams.ingest.sketches import SketchReader
    from streams.serde import Codec

    settings, codec = load_settings({}), Codec()
    now = BASE + 30_000
    good = {
        "sketch_id": "s-1", "service": "svc", "instance_id": "pod-1", "interval_start": BASE, "interval_end": BASE + 10_000,
        "last_event_time": BASE + 9_000, "fingerprint": "f1", "query_text": "SELECT * FROM bookings WHERE id = $1",
        "statement_type": "SELECT", "tables": ["bookings"], "database": None, "vendor_category": None, "wedding_id": None,
        "relative_accuracy": 0.005, "count": 4, "errors": 1, "rows": 4, "sum_ms": 10.0, "min_ms": 0.0, "max_ms": 6.0,
        "zero_count": 1, "bin_keys": [0, 139, 180], "bin_counts": [1, 1, 1],
    }  # fmt: skip

    reader = SketchReader(codec, settings, SPEC)

    def read(**changes: object) -> object:
        value = codec.encode("StatementSketch", {**good, **changes}, topic="t")
        return reader.read(value, now)

    accepted = read()
    assert isinstance(accepted, SketchInput) and accepted.statement.context == "booking"
    bad = {
        "accuracy": {"relative_accuracy": 0.01},
        "counts": {"count": 5},
        "bins": {"bin_keys": [139, 0, 180]},
        "empty bin": {"bin_counts": [1, 0, 2]},
        "lengths": {"bin_counts": [1, 2]},
        "errors": {"errors": 5},
        "nan": {"sum_ms": math.nan},
        "min over max": {"min_ms": 7.0},
        "straddles": {"interval_start": BASE + 55_000, "interval_end": BASE + 65_000, "last_event_time": BASE + 56_000},
        "last outside": {"last_event_time": BASE + 10_000},
    }  # fmt: skip
    for name, changes in bad.items():
        verdict = read(**changes)
        assert isinstance(verdict, Rejected) and verdict.reason == "invalid_sketch", name
    # the statement fields follow the QueryEvent rules (and reasons)
    assert read(statement_type="DROP").reason == "unknown_statement_type"  # type: ignore[attr-defined]
    assert read(interval_start=BASE - 7_200_000, interval_end=BASE - 7_190_000,
                last_event_time=BASE - 7_191_000).reason == "too_old"  # type: ignore[attr-defined]  # fmt: skip
    event = codec.encode("QueryEvent", {"event_id": "e", "service": "s", "instance_id": "i", "event_time": BASE,
                                        "query_text": "SELECT 1", "statement_type": "SELECT", "duration_ms": 1.0},
                         topic="t")  # fmt: skip
    assert reader.read(event, now).reason == "not_a_statement_sketch"  # type: ignore[union-attr]
    assert reader.read(b"junk", now).reason == "undecodable"  # type: ignore[union-attr]
    # a known statement: its own fields are still checked, with check_event's reasons
    assert read(service=" ").reason == "missing_field"  # type: ignore[attr-defined]
    assert read(wedding_id="w" * 300).reason == "too_large"  # type: ignore[attr-defined]
    assert isinstance(read(sketch_id="s-2"), SketchInput)


def test_records_taken_in_while_the_watermark_waited_are_emitted() -> None:
    """The first watermark comes after records (the other input held it): their windows still close."""
    windows = PartitionWindows(0, SPEC, 10)
    windows.hold(SKETCHES, True)  # e.g. the sketches partition's end not known yet
    for i in range(6):
        windows.add(Execution("svc", BASE + i * 60_000, 5.0, False, 1, None, STATEMENT), i)
    assert windows.clock.horizon is None and not windows.due
    windows.hold(SKETCHES, False)  # it turns out empty: the events' mark counts alone
    assert windows.due
    tumbling = [r for r in windows.closing(emitted_at=0).records if r.window_kind == "tumbling"]  # type: ignore[union-attr]
    # the watermark is the last event (minute 5): minutes 0-3 are closed, 4 and 5 still in grace or open
    assert sorted({r.window_start for r in tumbling}) == [BASE + i * 60_000 for i in range(4)]
