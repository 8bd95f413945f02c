"""Pane and window arithmetic: which pane an event lands in, which windows close, which panes retire.

All times are epoch milliseconds; windows are aligned to the epoch and half-open ``[start, end)``.
Only *panes* of ``gcd(tumbling, hop)`` milliseconds are stored; a tumbling or hopping window is
the merge of the panes it covers, computed when it closes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

from streams.config import WindowSettings
from streams.records import WindowKind


@dataclass(frozen=True)
class Window:
    kind: WindowKind
    start: int
    end: int


def _ceil_to(value: int, step: int) -> int:
    """The smallest multiple of ``step`` strictly greater than ``value``."""
    return (value // step + 1) * step


@dataclass(frozen=True)
class WindowSpec:
    tumbling_ms: int
    hop_ms: int
    hopping_ms: int
    grace_ms: int

    def __post_init__(self) -> None:
        if min(self.tumbling_ms, self.hop_ms, self.hopping_ms) <= 0 or self.grace_ms < 0:
            raise ValueError("window sizes must be positive and grace non-negative")
        if self.hopping_ms % self.hop_ms:
            raise ValueError("the hopping window size must be a multiple of its hop")

    @classmethod
    def from_settings(cls, settings: WindowSettings) -> "WindowSpec":
        return cls(settings.tumbling_ms, settings.hop_ms, settings.hopping_ms, settings.grace_ms)

    @property
    def pane_ms(self) -> int:
        return math.gcd(self.tumbling_ms, self.hop_ms)

    def pane_start(self, event_time: int) -> int:
        return event_time - event_time % self.pane_ms

    def first_close(self, event_time: int) -> int:
        """End of the earliest-ending window that contains ``event_time``."""
        return min(_ceil_to(event_time, self.tumbling_ms), _ceil_to(event_time, self.hop_ms))

    def last_close(self, pane_start: int) -> int:
        """End of the latest-ending window that contains the pane starting at ``pane_start``."""
        tumbling_end = _ceil_to(pane_start, self.tumbling_ms)
        hopping_end = (pane_start + self.hopping_ms) // self.hop_ms * self.hop_ms
        return max(tumbling_end, hopping_end)

    def horizon(self, watermark: int) -> int:
        """Every window whose end is <= the horizon is closed at this watermark."""
        return watermark - self.grace_ms

    def is_late(self, event_time: int, horizon: int) -> bool:
        """An event is late when a window containing it has already closed: it then joins none,
        so every window is either complete or untouched by it."""
        return self.first_close(event_time) <= horizon

    def closing(self, old_horizon: int, new_horizon: int) -> Iterator[Window]:
        """Windows whose end lies in ``(old_horizon, new_horizon]``, in order of end."""
        for kind, step, size in (
            ("tumbling", self.tumbling_ms, self.tumbling_ms),
            ("hopping", self.hop_ms, self.hopping_ms),
        ):
            end = _ceil_to(old_horizon, step)
            while end <= new_horizon:
                yield Window(kind, end - size, end)  # type: ignore[arg-type]
                end += step

    def panes(self, window: Window) -> range:
        return range(window.start, window.end, self.pane_ms)
