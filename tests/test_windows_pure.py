"""Pure window logic: sketch accuracy and merge, pane arithmetic, watermark/closing rules,
replay idempotence of the per-partition state machine (no servers)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pytest

from streams.config import load_settings
from streams.ingest.reader import Execution, Statement
from streams.records import WindowStats
from streams.windows import PartitionWindows, QuantileSketch, Window, WindowSpec
from streams.windows.aggregate import PaneStats

QS = (0.5, 0.95, 0.99)


def _distributions(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "lognormal": rng.lognormal(mean=2.0, sigma=1.0, size=n),
        "bimodal": np.concatenate([rng.normal(5, 1, n // 2).clip(0.01), rng.normal(200, 20, n - n // 2)]),
        "uniform": rng.uniform(0.5, 500, n),
        "with_zeros": np.concatenate([np.zeros(n // 10), rng.exponential(30, n - n // 10)]),
    }


def _assert_close(estimate: float, exact: float) -> None:
    assert abs(estimate - exact) <= 0.01 * abs(exact) + 1e-12, (estimate, exact)


@pytest.mark.parametrize("name", ["lognormal", "bimodal", "uniform", "with_zeros"])
def test_sketch_quantiles_within_one_percent_of_numpy_lower(name: str) -> None:
    rng = np.random.default_rng(7)
    for n in (1, 2, 17, 1000, 20_000):
        values = _distributions(rng, max(n, 10))[name][:n]
        sketch = QuantileSketch()
        for v in values:
            sketch.add(float(v))
        assert sketch.count == n
        for q in QS:
            _assert_close(sketch.quantile(q), float(np.quantile(values, q, method="lower")))


def test_sketch_merge_equals_sketch_of_union_and_round_trips() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.lognormal(1, 1.5, 3000) for _ in range(5)]
    merged = QuantileSketch()
    for part in parts:
        s = QuantileSketch()
        for v in part:
            s.add(float(v))
        merged.merge(QuantileSketch.from_dict(s.to_dict()))
    union = np.concatenate(parts)
    assert merged.count == union.size
    assert merged.min == union.min() and merged.max == union.max()
    for q in QS:
        _assert_close(merged.quantile(q), float(np.quantile(union, q, method="lower")))


def test_sketch_rejects_bad_use() -> None:
    with pytest.raises(ValueError):
        QuantileSketch().quantile(0.5)
    s = QuantileSketch()
    s.add(1.0)
    with pytest.raises(ValueError):
        s.quantile(1.5)
    with pytest.raises(ValueError):
        s.merge(QuantileSketch(relative_accuracy=0.01))


SPEC = WindowSpec(tumbling_ms=60_000, hop_ms=60_000, hopping_ms=300_000, grace_ms=10_000)


def test_pane_math_defaults() -> None:
    assert SPEC.pane_ms == 60_000
    assert SPEC.pane_start(125_000) == 120_000
    assert SPEC.first_close(125_000) == 180_000
    assert SPEC.first_close(120_000) == 180_000  # end is exclusive
    # the pane [120 s, 180 s) is in hopping windows ending 180..420 s
    assert SPEC.last_close(120_000) == 420_000
    assert list(SPEC.panes(Window("hopping", 120_000, 420_000))) == [120_000, 180_000, 240_000, 300_000, 360_000]
    assert list(SPEC.closing(120_000, 180_000)) == [Window("tumbling", 120_000, 180_000), Window("hopping", -120_000, 180_000)]
    assert list(SPEC.closing(180_000, 239_999)) == []


def test_pane_math_uneven_sizes() -> None:
    spec = WindowSpec(tumbling_ms=120_000, hop_ms=180_000, hopping_ms=360_000, grace_ms=0)
    assert spec.pane_ms == 60_000
    # t = 70 s: tumbling [0,120), hopping ends at 180 and 360
    assert spec.first_close(70_000) == 120_000
    assert spec.last_close(60_000) == 360_000
    assert not spec.is_late(70_000, 119_999) and spec.is_late(70_000, 120_000)
    with pytest.raises(ValueError):
        WindowSpec(tumbling_ms=60_000, hop_ms=60_000, hopping_ms=90_000, grace_ms=0)


def test_spec_from_settings() -> None:
    spec = WindowSpec.from_settings(load_settings({}).windows)
    assert (spec.tumbling_ms, spec.hop_ms, spec.hopping_ms, spec.grace_ms) == (60_000, 60_000, 300_000, 10_000)


class Changelog:
    """One partition's compacted changelog topic: the latest value per key, deletions applied."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def write(self, records: Iterable[tuple[bytes, bytes | None]]) -> None:
        for key, value in records:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def restore(self, cap: int = 10) -> PartitionWindows:
        windows = PartitionWindows(0, SPEC, cap)
        windows.load(self.data.items())
        return windows

    def commit(self, windows: PartitionWindows) -> None:
        """What the stage writes when it hands a partition over: two checkpoints (the second
        stores the emitted horizon the first one's flush acknowledged)."""
        self.write(windows.checkpoint())
        self.write(windows.checkpoint())


STATEMENT = Statement("f1", "SELECT $1", "SELECT", ("bookings",), "booking", "critical")


def _execution(t: int, duration: float, fingerprint: str = "f1", service: str = "svc") -> Execution:
    statement = STATEMENT if fingerprint == "f1" else Statement(fingerprint, "SELECT $1", "SELECT", ("bookings",),
                                                                 "booking", "critical")  # fmt: skip
    return Execution(service, t, duration, False, 1, None, statement)


def _emit(windows: PartitionWindows, emitted: list[WindowStats]) -> None:
    assert windows.due
    closing = windows.closing(emitted_at=0)
    assert closing is not None
    emitted.extend(closing.records)


def _run(store: Changelog, events: list[tuple[int, int, float]], emitted: list[WindowStats], cap: int = 10) -> list[str]:
    """Feed (offset, time, duration) in order through a state restored from the changelog per event."""
    outcomes = []
    for offset, t, d in events:
        windows = store.restore(cap)
        outcomes.append(windows.add(_execution(t, d), offset))
        if windows.due:
            _emit(windows, emitted)
        store.commit(windows)
    return outcomes


def test_windows_close_by_watermark_with_grace_and_late_events_are_dropped() -> None:
    store, emitted = Changelog(), []
    base = 600_000
    _run(store, [(0, base + 1_000, 10.0), (1, base + 59_000, 20.0)], emitted)
    # watermark at base+69 s: horizon base+59 s < window end base+60 s: nothing closed yet
    _run(store, [(2, base + 69_000, 30.0), (3, base + 30_000, 40.0)], emitted)
    assert emitted == []
    # out of order but within grace: lands in the first window
    _run(store, [(4, base + 70_000, 50.0)], emitted)  # horizon base+60 s: first tumbling window closes
    first = [r for r in emitted if r.window_kind == "tumbling" and r.window_start == base]
    assert {r.fingerprint for r in first} == {"f1", None}
    assert all(r.count == 3 for r in first)  # 10, 20, 40 ms
    assert all(r.max_ms == 40.0 and r.min_ms == 10.0 for r in first)
    before = list(emitted)
    outcomes = _run(store, [(5, base + 5_000, 1_000.0)], emitted)  # beyond grace
    assert outcomes == ["late"] and emitted == before


def test_replayed_events_are_not_counted_twice() -> None:
    store, emitted = Changelog(), []
    base = 600_000
    events = [(i, base + i * 1_000, float(i + 1)) for i in range(50)]
    _run(store, events[:30], emitted)
    outcomes = _run(store, events[20:], emitted)  # offsets 20..29 replayed
    assert outcomes[:10] == ["replayed"] * 10 and set(outcomes[10:]) == {"applied"}
    windows = store.restore()
    windows.tick(base + 3_600_000, allowed_lateness_ms=0)
    _emit(windows, emitted)
    store.commit(windows)
    tumbling = [r for r in emitted if r.window_kind == "tumbling" and r.fingerprint == "f1"]
    assert sum(r.count for r in tumbling) == 50
    hopping = [r for r in emitted if r.window_kind == "hopping" and r.fingerprint == "f1"]
    assert sum(r.count for r in hopping) == 50 * 5  # each minute pane is in five hopping windows
    assert len({r.window_id for r in emitted}) == len(emitted)
    # every pane retired once no open window needs it: only the clock and the cap remain
    assert sorted(k[:1] for k in store.data) == [b"c", b"k"]


def test_tick_does_not_touch_a_fresh_partition() -> None:
    store = Changelog()
    windows = store.restore()
    windows.tick(10**12, allowed_lateness_ms=0)
    assert not windows.due
    store.write(windows.checkpoint())
    assert store.data == {}


def test_fingerprint_cap_overflows_into_other() -> None:
    store, emitted = Changelog(), []
    windows = store.restore(cap=2)
    for i, fp in enumerate(["a", "b", "c", "d", "a"]):
        windows.add(_execution(600_000 + i, 1.0, fingerprint=fp), i)
    assert windows.overflowed == {"svc": 2}
    store.commit(windows)
    windows = store.restore(cap=2)
    windows.tick(10**9, allowed_lateness_ms=0)
    _emit(windows, emitted)
    counts = {r.fingerprint: r.count for r in emitted if r.window_kind == "tumbling"}
    assert counts == {"a": 2, "b": 1, "other": 2, None: 5}
    assert all(r.query_text == "" for r in emitted if r.fingerprint == "other")


def test_a_crash_after_the_first_close_s_checkpoint_re_emits_it_after_the_restore() -> None:
    """The first close of a partition is emitted and checkpointed, and the process dies before the
    next checkpoint (the records may be lost): the restored state must emit those windows again,
    and every later one. (A checkpoint then stored no emitted horizon: the restored partition
    never emitted anything again.)"""
    store, emitted = Changelog(), []
    base = 600_000
    windows = store.restore()
    for offset, t in enumerate(range(base, base + 75_000, 5_000)):  # up to base+70 s: [base, base+60 s) closes
        windows.add(_execution(t, float(offset + 1)), offset)
    _emit(windows, emitted)
    assert {r.window_start for r in emitted if r.window_kind == "tumbling"} == {base}
    store.write(windows.checkpoint())  # one checkpoint; killed before the next: the emitted records may be lost
    restored = store.restore()
    restored.tick(base + 3_600_000, allowed_lateness_ms=0)
    again: list[WindowStats] = []
    _emit(restored, again)
    tumbling = {r.window_start: r.count for r in again if r.window_kind == "tumbling" and r.fingerprint is None}
    assert tumbling == {base: 12, base + 60_000: 3}  # the first close again, then the rest


def test_a_pane_retired_before_its_updates_were_written_is_still_written() -> None:
    """Events reach a window's pane after a checkpoint, the window closes (its panes leave memory)
    and the next checkpoint is written, its offsets committed; the process dies before the close is
    acknowledged. The restored state re-emits the window: it must hold every event (the retired
    pane's last updates were dropped instead of written: the re-emission had fewer events)."""
    store, emitted = Changelog(), []
    base = 600_000
    windows = store.restore()
    for offset in range(5):
        windows.add(_execution(base + offset * 1_000, 1.0), offset)
    store.write(windows.checkpoint())  # c0: five events of [base, base+60 s)
    for offset in range(5, 10):
        windows.add(_execution(base + offset * 1_000, 2.0), offset)  # five more, after c0
    windows.add(_execution(base + 400_000, 3.0), 10)  # every window holding base's pane closes: it is retired
    _emit(windows, emitted)
    first = next(r for r in emitted if r.window_kind == "tumbling" and r.window_start == base and r.fingerprint)
    assert first.count == 10
    store.write(windows.checkpoint())  # c1 (offsets up to 10 committed); killed before the next one
    restored = store.restore()
    again: list[WindowStats] = []
    _emit(restored, again)
    second = next(r for r in again if r.window_kind == "tumbling" and r.window_start == base and r.fingerprint)
    assert (second.count, second.sum_ms) == (first.count, first.sum_ms) == (10, 15.0)


def test_keys_and_texts_are_held_once_also_after_a_restore() -> None:
    """Memory at many keys (bench/README, worker memory): a key's tuple is stored once, however many
    equal tuples its records bring, and keys whose statements share a text share one string — in
    the live state and in one restored from the changelog."""
    store, live = Changelog(), PartitionWindows(0, SPEC, 10)
    base = 600_000
    for offset, fingerprint in enumerate(("f1", "f2", "f1", "f2")):
        live.add(_execution(base + offset * 1_000, 5.0, fingerprint, service="".join(["s", "vc"])), offset)
    store.commit(live)
    for windows in (live, store.restore()):
        keys = list(windows.statements)
        assert len(keys) == 2
        assert all(k is v for k, v in windows._keys.items())  # the index of keys holds no second copy
        for key in keys:  # every pane of a key holds the very tuple the statements hold
            assert all(k is key for bucket in windows.panes[0].values() for k in bucket if k == key)
            assert windows.statements[key].query_text is windows.statements[keys[0]].query_text


def test_a_pane_no_record_reached_for_a_checkpoint_interval_is_kept_encoded_and_counts_the_same() -> None:
    """Memory: a quiet key's pane in the newest minute is held encoded after a whole checkpoint
    interval without records (a busy key's stays decoded), and its window is unchanged by that."""
    windows, emitted = PartitionWindows(0, SPEC, 10), []
    base = 600_000
    windows.add(_execution(base + 1_000, 7.0, "quiet"), 0)
    windows.add(_execution(base + 2_000, 3.0, "busy"), 1)
    windows.checkpoint()
    windows.add(_execution(base + 3_000, 4.0, "busy"), 2)
    windows.checkpoint()  # "quiet" was written by the first and untouched since; "busy" was written again
    bucket = windows.panes[0][base]
    kinds = {key[1]: type(pane) for key, pane in bucket.items()}
    assert kinds == {"quiet": bytes, "busy": PaneStats}
    windows.add(_execution(base + 4_000, 9.0, "quiet"), 3)  # decoded again by its next record
    windows.tick(base + 3_600_000, allowed_lateness_ms=0)
    _emit(windows, emitted)
    tumbling = {r.fingerprint: r for r in emitted if r.window_kind == "tumbling" and r.fingerprint is not None}
    assert (tumbling["quiet"].count, tumbling["quiet"].min_ms, tumbling["quiet"].max_ms) == (2, 7.0, 9.0)
    assert (tumbling["busy"].count, tumbling["busy"].sum_ms) == (2, 7.0)
