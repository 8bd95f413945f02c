"""Per-pane statistics of one key, their merge into a window, and the WindowStats record.

A key is either a query key (service, fingerprint) or a context key (service, context). A pane
value also remembers the last source offset applied to it, which makes re-applying a replayed
event a no-op (see docs/windows.md).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.records import QueryEvent, WindowStats
from streams.windows.panes import Window
from streams.windows.sketch import QuantileSketch

KeyKind = Literal["q", "c"]  # query key (service, fingerprint) / context key (service, context)


@dataclass(frozen=True)
class StatsKey:
    kind: KeyKind
    service: str
    # fingerprint for a query key, context for a context key
    name: str


@dataclass
class PaneStats:
    count: int = 0
    errors: int = 0
    rows: int = 0
    sum_ms: float = 0.0
    sketch: QuantileSketch = field(default_factory=QuantileSketch)
    # descriptive fields of the key, from its latest event
    context: str = ""
    criticality: str = "medium"
    statement_type: str | None = None
    query_text: str | None = None
    tables: list[str] = field(default_factory=list)
    # last source offset applied (-1: none)
    offset: int = -1

    def add(self, event: QueryEvent, context: str, criticality: str, offset: int) -> None:
        duration = event.duration_ms
        self.count += 1
        self.errors += 1 if event.error else 0
        self.rows += max(event.rows, 0)
        self.sum_ms += duration
        self.sketch.add(duration)
        self.context = context
        self.criticality = criticality
        self.statement_type = event.statement_type
        self.query_text = event.query_text
        self.tables = list(event.tables)
        self.offset = offset

    def merge(self, other: "PaneStats") -> None:
        """Fold a later pane into this one (descriptive fields follow the later pane)."""
        self.count += other.count
        self.errors += other.errors
        self.rows += other.rows
        self.sum_ms += other.sum_ms
        self.sketch.merge(other.sketch)
        self.context = other.context
        self.criticality = other.criticality
        self.statement_type = other.statement_type
        self.query_text = other.query_text
        self.tables = other.tables
        self.offset = max(self.offset, other.offset)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.count,
            "e": self.errors,
            "r": self.rows,
            "s": self.sum_ms,
            "q": self.sketch.to_dict(),
            "ctx": self.context,
            "crit": self.criticality,
            "st": self.statement_type,
            "qt": self.query_text,
            "t": self.tables,
            "o": self.offset,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PaneStats":
        return cls(
            count=data["n"],
            errors=data["e"],
            rows=data["r"],
            sum_ms=data["s"],
            sketch=QuantileSketch.from_dict(data["q"]),
            context=data["ctx"],
            criticality=data["crit"],
            statement_type=data["st"],
            query_text=data["qt"],
            tables=list(data["t"]),
            offset=data["o"],
        )


def window_id(window: Window, key: StatsKey) -> str:
    """Deterministic id of one key's window: the same after any replay or restart."""
    fingerprint = key.name if key.kind == "q" else ""
    parts = [window.kind, str(window.start), str(window.end), key.service, fingerprint, key.kind, key.name]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def window_stats(window: Window, key: StatsKey, stats: PaneStats, emitted_at: int) -> WindowStats:
    """The record of a closed window."""
    is_query = key.kind == "q"
    sketch = stats.sketch
    return WindowStats(
        window_id=window_id(window, key),
        window_kind=window.kind,
        window_start=window.start,
        window_end=window.end,
        service=key.service,
        fingerprint=key.name if is_query else None,
        context=stats.context,
        criticality=stats.criticality,
        count=stats.count,
        errors=stats.errors,
        rows=stats.rows,
        min_ms=sketch.min if math.isfinite(sketch.min) else 0.0,
        max_ms=sketch.max if math.isfinite(sketch.max) else 0.0,
        sum_ms=stats.sum_ms,
        p50_ms=sketch.quantile(0.50),
        p95_ms=sketch.quantile(0.95),
        p99_ms=sketch.quantile(0.99),
        statement_type=stats.statement_type if is_query else None,
        query_text=stats.query_text if is_query else None,
        tables=tuple(stats.tables) if is_query else (),
        emitted_at=emitted_at,
    )
