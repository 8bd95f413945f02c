"""Event-time windowed latency statistics (pure): sketches, panes, the per-partition state machine."""

from streams.windows.aggregate import PaneStats, StatsKey, window_id, window_stats
from streams.windows.engine import Closing, PartitionWindows, Store
from streams.windows.panes import Window, WindowSpec
from streams.windows.sketch import QuantileSketch

__all__ = [
    "Closing",
    "PaneStats",
    "PartitionWindows",
    "QuantileSketch",
    "StatsKey",
    "Store",
    "Window",
    "WindowSpec",
    "window_id",
    "window_stats",
]
