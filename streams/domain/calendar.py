"""The wedding platform's calendar (pure): local time, season, freeze days, ceremony hours and
wedding-day criticality. The clock is injected, so every rule is testable at any instant.

* Local time is the platform's time zone (``DBOPT_TIMEZONE``).
* Freeze days (``DBOPT_FREEZE_WEEKDAYS``, default ``sat``; empty disables) are wedding days:
  no automatic schema change runs on them unless the command is an emergency.
* Ceremony hours are 08:00-22:00 local: the most protected part of a freeze day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from enum import IntEnum
from typing import Callable
from zoneinfo import ZoneInfo

from streams.config import Settings
from streams.domain.slo import season as _season_of
from streams.domain.vocabulary import WEEKDAYS, Season, Weekday

CEREMONY_START = time(8, 0)
CEREMONY_END = time(22, 0)

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


class WeddingCriticality(IntEnum):
    """How much is at stake right now, 1-5."""

    ROUTINE = 1  # no weddings
    ELEVATED = 2  # wedding tomorrow
    HIGH = 3  # wedding today
    CRITICAL = 4  # wedding in progress (freeze day, ceremony hours)
    EMERGENCY = 5  # incident during a wedding (an emergency command on a freeze day)


@dataclass(frozen=True)
class Calendar:
    timezone: str = "UTC"
    freeze_weekdays: tuple[Weekday, ...] = ("sat",)
    clock: Clock = field(default=system_clock, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock = system_clock) -> "Calendar":
        return cls(timezone=settings.timezone, freeze_weekdays=settings.freeze_weekdays, clock=clock)

    def now(self) -> datetime:
        """The clock's instant in platform local time."""
        instant = self.clock()
        if instant.tzinfo is None:
            raise ValueError("the calendar clock must return an aware datetime")
        return instant.astimezone(ZoneInfo(self.timezone))

    def season(self, at: datetime | None = None) -> Season:
        """``peak`` (Apr-Oct), ``proposal`` (Nov-Feb) or ``off`` (March)."""
        local = at or self.now()
        return _season_of(int(local.timestamp() * 1000), self.timezone)

    def is_freeze_day(self, at: datetime | None = None) -> bool:
        local = (at or self.now()).astimezone(ZoneInfo(self.timezone))
        return WEEKDAYS[local.weekday()] in self.freeze_weekdays

    def in_ceremony_hours(self, at: datetime | None = None) -> bool:
        local = (at or self.now()).astimezone(ZoneInfo(self.timezone))
        return CEREMONY_START <= local.time() < CEREMONY_END

    def freeze_ends(self, at: datetime | None = None) -> datetime | None:
        """Local midnight starting the next day that is not a freeze day (None: every day is)."""
        local = (at or self.now()).astimezone(ZoneInfo(self.timezone))
        day = local.date()
        for _ in range(7):
            day += timedelta(days=1)
            if WEEKDAYS[day.weekday()] not in self.freeze_weekdays:
                return datetime.combine(day, time(0, 0), ZoneInfo(self.timezone))
        return None

    def criticality(self, emergency: bool = False, at: datetime | None = None) -> WeddingCriticality:
        local = (at or self.now()).astimezone(ZoneInfo(self.timezone))
        if self.is_freeze_day(local):
            if emergency:
                return WeddingCriticality.EMERGENCY
            return WeddingCriticality.CRITICAL if self.in_ceremony_hours(local) else WeddingCriticality.HIGH
        if self.is_freeze_day(local + timedelta(days=1)):
            return WeddingCriticality.ELEVATED
        return WeddingCriticality.ROUTINE
