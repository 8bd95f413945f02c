"""Event-time windowed latency statistics (pure): sketches, panes, the per-partition state machine.

Names are imported on first use, so ``streams.windows.sketch`` (which the SDK's sketch mode
imports) loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Closing": "engine",
    "PaneStats": "aggregate",
    "PartitionWindows": "engine",
    "QuantileSketch": "sketch",
    "StatsKey": "aggregate",
    "Window": "panes",
    "WindowSpec": "panes",
    "window_id": "aggregate",
    "window_stats": "aggregate",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
