"""The priority every advisor command carries (0-100, higher first), pure.

``priority = round(100 x weight(criticality of the table's context) x gain)``: a booking index that
cuts a query's cost by 90% outranks a guest-list index with the same gain and a VACUUM of a table
that is 5% dead. Weights: critical 1.0, high 0.75, medium 0.5, low 0.25. The gain is what the
command is expected to achieve, measured: the cost (HypoPG) or time (sampled build) an index
saves, the dead share of a table for VACUUM, the estimated bloat for REINDEX, the modified share
for ANALYZE; dropping an unused or duplicate index is housekeeping (:data:`HOUSEKEEPING`).
The executor's sequencing orders commands of one tier by it (``streams.execute.sequence``).
"""

from __future__ import annotations

from typing import Iterable

from streams.config import Settings
from streams.domain.contexts import classify

WEIGHTS = {"critical": 1.0, "high": 0.75, "medium": 0.5, "low": 0.25}
HOUSEKEEPING = 0.25  # the gain of dropping an index nobody uses: less write work, no read gains


def priority(criticality: str, gain: float) -> int:
    """0-100 from a criticality (critical/high/medium/low) and a gain in [0, 1]."""
    return round(100 * WEIGHTS.get(criticality, WEIGHTS["medium"]) * min(1.0, max(0.0, gain)))


def of_tables(settings: Settings, tables: Iterable[str], gain: float) -> tuple[int, str]:
    """(priority, context) of a command touching ``tables``: their context decides the weight."""
    found = classify(tables, settings.domain)
    return priority(found.criticality, gain), found.context
