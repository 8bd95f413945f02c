"""A mergeable quantile sketch with a bounded relative error (DDSketch's logarithmic mapping,
sparse store), shared by the worker and the SDK's sketch mode.

A positive value ``v`` falls in bin ``key(v) = ceil(log2(v) * m)`` with ``m = ln 2 / ln(gamma)``,
``gamma = (1 + a) / (1 - a)``; every value of a bin is within the relative accuracy ``a``
(0.5 %) of the bin's representative ``value(key)``. That is DDSketch's ``LogarithmicMapping``,
written out here so the SDK computes the very same bins without the ddsketch package. Values
<= 0 are counted in ``zeros``. The store is a plain ``{bin: count}`` dict, so two sketches
merge by adding counts, in any order and any grouping (panes into windows, SDK intervals into
panes).

Quantiles follow the *lower* order statistic: ``quantile(q)`` estimates the element of rank
``floor(q * (n - 1))`` (0-based) of the sorted values, which is what
``numpy.quantile(x, q, method="lower")`` returns, within the relative accuracy, clamped to the
exact ``[min, max]``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from itertools import accumulate
from typing import Any

RELATIVE_ACCURACY = 0.005


class Mapping:
    """Value <-> bin of one relative accuracy."""

    __slots__ = ("_scale", "gamma", "multiplier", "relative_accuracy")

    def __init__(self, relative_accuracy: float = RELATIVE_ACCURACY) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError(f"relative accuracy must be in (0, 1), got {relative_accuracy}")
        self.relative_accuracy = relative_accuracy
        mantissa = 2 * relative_accuracy / (1 - relative_accuracy)
        self.gamma = 1 + mantissa
        self.multiplier = math.log(2) / math.log1p(mantissa)  # bins per doubling
        self._scale = 2.0 / (1 + self.gamma)

    def key(self, value: float) -> int:
        """The bin of a positive value."""
        return math.ceil(math.log2(value) * self.multiplier)

    def value(self, key: int) -> float:
        """The representative of a bin: within the relative accuracy of every value in it."""
        return float(2.0 ** (key / self.multiplier) * self._scale)


MAPPING = Mapping()


def mapping(relative_accuracy: float) -> Mapping:
    return MAPPING if relative_accuracy == MAPPING.relative_accuracy else Mapping(relative_accuracy)


class QuantileSketch:
    """Counts of non-negative values in logarithmic bins, with the exact count, min and max."""

    __slots__ = ("bins", "count", "max", "min", "relative_accuracy", "zeros")

    def __init__(self, relative_accuracy: float = RELATIVE_ACCURACY) -> None:
        self.relative_accuracy = relative_accuracy
        self.bins: dict[int, int] = {}
        self.zeros = 0
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        if value > 0:
            key = mapping(self.relative_accuracy).key(value)
            self.bins[key] = self.bins.get(key, 0) + 1
        else:
            self.zeros += 1
        self.count += 1
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: QuantileSketch) -> None:
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("cannot merge sketches of different relative accuracy")
        bins = self.bins
        get = bins.get
        for key, n in other.bins.items():
            bins[key] = get(key, 0) + n
        self.zeros += other.zeros
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float:
        """Estimate of the lower order statistic of rank ``floor(q * (count - 1))``."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """:meth:`quantile` of each of ``qs``: bisections of the cumulative counts of the sorted bins."""
        if any(not 0.0 <= q <= 1.0 for q in qs):
            raise ValueError(f"quantiles must be in [0, 1], got {qs}")
        if self.count == 0:
            raise ValueError("quantile of an empty sketch")
        ranks = [math.floor(q * (self.count - 1)) for q in qs]
        bins = self.bins
        keys = sorted(bins)
        # seen[i]: the values up to and including bin keys[i - 1] (seen[0]: the zeros); C loops
        seen = list(accumulate(map(bins.__getitem__, keys), initial=self.zeros))
        value = mapping(self.relative_accuracy).value
        found: list[float] = []
        for rank in ranks:
            if rank < self.zeros:
                found.append(max(self.min, 0.0))
                continue
            at = bisect_right(seen, rank) - 1  # the first bin whose values reach past the rank
            if at >= len(keys):  # unreachable when counts are consistent
                found.append(self.max)
                continue
            found.append(min(max(value(keys[at]), self.min), self.max))
        return found

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
    def from_dict(cls, data: dict[str, Any]) -> QuantileSketch:
        sketch = cls(float(data["a"]))
        sketch.bins = dict(zip((int(k) for k in data["k"]), (int(c) for c in data["c"]), strict=True))
        sketch.zeros = int(data["z"])
        sketch.count = int(data["n"])
        if sketch.count:
            sketch.min, sketch.max = float(data["lo"]), float(data["hi"])
        return sketch
