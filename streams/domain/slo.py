"""p95 latency SLO of a business context, season-aware (pure).

"Season-aware" means: the SLO threshold for a window is the context's base p95 SLO times the
multiplier configured for the season the window starts in, in the platform's local time
(``DBOPT_TIMEZONE``). Seasons: peak (April-October), proposal (November-February), off
(March). All multipliers default to 1.0, so out of the box the thresholds are exactly the
documented SLOs; an operator can, for example, tighten booking in proposal season by setting
``DBOPT_SEASON_SLO_MULTIPLIERS='{"proposal": 0.8}'``.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from streams.config import DomainSettings
from streams.domain.vocabulary import Season

_PEAK_MONTHS = range(4, 11)  # April..October
_PROPOSAL_MONTHS = (11, 12, 1, 2)


def season(epoch_ms: int, timezone: str) -> Season:
    """``peak``, ``proposal`` or ``off`` for an instant, judged in the platform's time zone."""
    month = datetime.fromtimestamp(epoch_ms / 1000, ZoneInfo(timezone)).month
    if month in _PEAK_MONTHS:
        return "peak"
    if month in _PROPOSAL_MONTHS:
        return "proposal"
    return "off"


def base_slo_ms(context: str, domain: DomainSettings) -> float:
    return domain.slo_p95_ms.get(context, domain.default_slo_p95_ms)


def slo_ms(context: str, epoch_ms: int, domain: DomainSettings, timezone: str) -> float:
    """The p95 threshold (ms) for ``context`` at ``epoch_ms``."""
    multiplier = domain.season_slo_multipliers.get(season(epoch_ms, timezone), 1.0)
    return base_slo_ms(context, domain) * multiplier
