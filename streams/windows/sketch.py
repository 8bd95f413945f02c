"""A mergeable quantile sketch with a bounded relative error (DDSketch's log mapping, sparse store).

The index <-> value mapping is ddsketch's :class:`LogarithmicMapping`; the store is a plain
``{bin index: count}`` dict so the sketch serializes to a small JSON-able dict (ddsketch 3's own
serialization needs protobuf). Quantiles follow the *lower* order statistic: ``quantile(q)``
estimates the element of rank ``floor(q * (n - 1))`` (0-based) of the sorted values, which is what
``numpy.quantile(x, q, method="lower")`` returns, within ``relative_accuracy`` (default 0.5%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.005


@lru_cache(maxsize=8)
def _mapping(relative_accuracy: float) -> LogarithmicMapping:
    return LogarithmicMapping(relative_accuracy)


@dataclass
class QuantileSketch:
    """Counts of non-negative values in logarithmic bins; values <= 0 are counted in ``zeros``."""

    relative_accuracy: float = RELATIVE_ACCURACY
    bins: dict[int, int] = field(default_factory=dict)
    zeros: int = 0
    count: int = 0
    min: float = math.inf
    max: float = -math.inf

    def add(self, value: float) -> None:
        if value > 0:
            key = _mapping(self.relative_accuracy).key(value)
            self.bins[key] = self.bins.get(key, 0) + 1
        else:
            self.zeros += 1
        self.count += 1
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def merge(self, other: "QuantileSketch") -> None:
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("cannot merge sketches of different relative accuracy")
        for key, n in other.bins.items():
            self.bins[key] = self.bins.get(key, 0) + n
        self.zeros += other.zeros
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float:
        """Estimate of the lower order statistic of rank ``floor(q * (count - 1))``."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            raise ValueError("quantile of an empty sketch")
        rank = math.floor(q * (self.count - 1))
        if rank < self.zeros:
            return max(self.min, 0.0)
        seen = self.zeros
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen > rank:
                value = _mapping(self.relative_accuracy).value(key)
                return min(max(value, self.min), self.max)
        return self.max  # unreachable when counts are consistent

    def to_dict(self) -> dict[str, Any]:
        keys = sorted(self.bins)
        return {
            "a": self.relative_accuracy,
            "k": keys,
            "c": [self.bins[k] for k in keys],
            "z": self.zeros,
            "n": self.count,
            "lo": self.min if self.count else None,
            "hi": self.max if self.count else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantileSketch":
        count = int(data["n"])
        return cls(
            relative_accuracy=float(data["a"]),
            bins=dict(zip((int(k) for k in data["k"]), (int(c) for c in data["c"]), strict=True)),
            zeros=int(data["z"]),
            count=count,
            min=float(data["lo"]) if count else math.inf,
            max=float(data["hi"]) if count else -math.inf,
        )
