"""Per-pane statistics of one key, their compact binary form, their merge into a window, and the
WindowStats record.

A pane is kept per *key* ``(service, fingerprint, context, database)``: one update per event.
The two rows a window has for a service — the query row (service, fingerprint) and the context
row (service, context) — are both merges of these panes, made when the window closes. A pane
also remembers the last source offset applied to it, which makes re-applying a replayed event
a no-op (see docs/windows.md).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from operator import sub
from typing import Literal

import msgspec

from streams.ingest.reader import Statement
from streams.records import WindowStats
from streams.windows.panes import Window
from streams.windows.sketch import RELATIVE_ACCURACY, QuantileSketch

KeyKind = Literal["q", "c"]  # query row (service, fingerprint) / context row (service, context)
PaneKey = tuple[str, str, str, str | None]  # (service, fingerprint, context, database)


@dataclass(frozen=True)
class StatsKey:
    """One row of a window: a query row (name = fingerprint) or a context row (name = context)."""

    kind: KeyKind
    service: str
    name: str
    database: str | None = None


class PaneStats(QuantileSketch):
    """A sketch of the durations plus exact count (the sketch's), errors, rows, sum, and the
    offset of the last record applied (-1: none). A stored pane also knows where it belongs
    (``source``, ``start``, ``key``) and the statement of its latest record."""

    __slots__ = ("errors", "key", "offset", "rows", "source", "start", "statement", "sum_ms")

    def __init__(self, relative_accuracy: float = RELATIVE_ACCURACY) -> None:
        super().__init__(relative_accuracy)
        self.errors = 0
        self.rows = 0
        self.sum_ms = 0.0
        self.offset = -1
        self.source = 0
        self.start = 0
        self.key: PaneKey | None = None
        self.statement: Statement | None = None

    def add_event(self, duration: float, error: bool, rows: int, offset: int) -> None:
        """One execution (the worker inlines this on its hot path: same arithmetic)."""
        self.add(duration)
        self.errors += error
        self.rows += rows if rows > 0 else 0
        self.sum_ms += duration
        self.offset = offset

    def add_sketch(
        self, keys: Sequence[int], counts: Sequence[int], zeros: int, count: int, errors: int, rows: int, sum_ms: float,
        min_ms: float, max_ms: float, offset: int,
    ) -> None:  # fmt: skip
        """Many executions at once: the bins of an SDK sketch with its exact totals."""
        bins = self.bins
        get = bins.get
        for key, n in zip(keys, counts, strict=True):
            bins[key] = get(key, 0) + n
        self.zeros += zeros
        self.count += count
        self.errors += errors
        self.rows += rows
        self.sum_ms += sum_ms
        if count:
            self.min = min(self.min, min_ms)
            self.max = max(self.max, max_ms)
        self.offset = offset

    def merge(self, other: QuantileSketch) -> None:
        super().merge(other)
        if isinstance(other, PaneStats):
            self.errors += other.errors
            self.rows += other.rows
            self.sum_ms += other.sum_ms
            self.offset = max(self.offset, other.offset)

    def copy(self) -> PaneStats:
        """The totals and bins (a dict copy, in C) without the pane's place and statement."""
        twin = PaneStats(self.relative_accuracy)
        twin.bins = dict(self.bins)
        twin.zeros, twin.count, twin.min, twin.max = self.zeros, self.count, self.min, self.max
        twin.errors, twin.rows, twin.sum_ms, twin.offset = self.errors, self.rows, self.sum_ms, self.offset
        return twin

    def encode(self) -> bytes:
        """The compact changelog value: msgpack of the totals and the bins (keys delta-encoded,
        so most are one byte)."""
        keys = sorted(self.bins)
        deltas = list(map(sub, keys, chain((0,), keys)))
        return _ENCODE((self.count, self.errors, self.rows, self.sum_ms, self.min if self.count else 0.0,
                        self.max if self.count else 0.0, self.zeros, self.offset, self.relative_accuracy,
                        deltas, list(map(self.bins.__getitem__, keys))))  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> PaneStats:
        count, errors, rows, sum_ms, lo, hi, zeros, offset, accuracy, deltas, counts = _DECODE(data)
        stats = cls(accuracy)
        stats.bins = dict(zip(accumulate(deltas), counts, strict=True))
        stats.count, stats.errors, stats.rows, stats.sum_ms, stats.zeros, stats.offset = (
            count, errors, rows, sum_ms, zeros, offset)  # fmt: skip
        if count:
            stats.min, stats.max = lo, hi
        return stats


_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder(
    tuple[int, int, int, float, float, float, int, int, float, list[int], list[int]]
).decode


def window_id(window: Window, key: StatsKey) -> str:
    """Deterministic id of one row of one window: the same after any replay or restart."""
    fingerprint = key.name if key.kind == "q" else ""
    parts = [window.kind, str(window.start), str(window.end), key.service, fingerprint, key.kind, key.name]
    if key.database is not None:  # rows of the default database keep the ids they always had
        parts.append(key.database)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def window_stats(window: Window, key: StatsKey, stats: PaneStats, statement: Statement, emitted_at: int) -> WindowStats:
    """The record of one row of a closed window (``statement``: the row's latest statement)."""
    is_query = key.kind == "q"
    p50, p95, p99 = stats.quantiles((0.50, 0.95, 0.99))
    return WindowStats(
        window_id=window_id(window, key),
        window_kind=window.kind,
        window_start=window.start,
        window_end=window.end,
        service=key.service,
        fingerprint=key.name if is_query else None,
        context=statement.context,
        criticality=statement.criticality,
        count=stats.count,
        errors=stats.errors,
        rows=stats.rows,
        min_ms=stats.min if math.isfinite(stats.min) else 0.0,
        max_ms=stats.max if math.isfinite(stats.max) else 0.0,
        sum_ms=stats.sum_ms,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        statement_type=statement.statement_type if is_query else None,
        query_text=statement.query_text if is_query else None,
        tables=statement.tables if is_query else (),
        emitted_at=emitted_at,
        database=key.database,
    )
