"""The platform calendar with an injected clock (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from streams.config import load_settings
from streams.domain.calendar import Calendar, WeddingCriticality


def at(text: str) -> Calendar:
    """A calendar in Europe/Berlin whose clock is frozen at a UTC instant."""
    instant = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    return Calendar(timezone="Europe/Berlin", freeze_weekdays=("sat",), clock=lambda: instant)


def test_local_time_decides_the_freeze_day() -> None:
    # Friday 23:30 UTC is already Saturday 00:30 in Berlin (CET, UTC+1 in November)
    cal = at("2026-11-20T23:30:00")
    assert cal.now().strftime("%a %H:%M") == "Sat 00:30"
    assert cal.is_freeze_day()
    assert not at("2026-11-20T22:30:00").is_freeze_day()


@pytest.mark.parametrize(
    ("utc", "season"),
    [("2026-04-01T00:00:00", "peak"), ("2026-10-31T12:00:00", "peak"), ("2026-11-01T12:00:00", "proposal"),
     ("2027-02-28T12:00:00", "proposal"), ("2027-03-15T12:00:00", "off"), ("2026-03-31T22:30:00", "peak")],
)
def test_seasons(utc: str, season: str) -> None:
    assert at(utc).season() == season  # the last one is April 1st already in Berlin (CEST)


def test_ceremony_hours_are_08_to_22_local() -> None:
    assert not at("2026-11-21T06:59:00").in_ceremony_hours()  # 07:59 local
    assert at("2026-11-21T07:00:00").in_ceremony_hours()  # 08:00
    assert at("2026-11-21T20:59:00").in_ceremony_hours()  # 21:59
    assert not at("2026-11-21T21:00:00").in_ceremony_hours()  # 22:00


def test_wedding_day_criticality_levels() -> None:
    assert at("2026-11-18T12:00:00").criticality() == WeddingCriticality.ROUTINE  # Wednesday
    assert at("2026-11-20T12:00:00").criticality() == WeddingCriticality.ELEVATED  # Friday: wedding tomorrow
    assert at("2026-11-21T05:00:00").criticality() == WeddingCriticality.HIGH  # Saturday 06:00
    assert at("2026-11-21T12:00:00").criticality() == WeddingCriticality.CRITICAL  # Saturday, ceremonies
    assert at("2026-11-21T12:00:00").criticality(emergency=True) == WeddingCriticality.EMERGENCY
    assert [level.value for level in WeddingCriticality] == [1, 2, 3, 4, 5]


def test_freeze_ends_at_the_next_unfrozen_local_midnight() -> None:
    cal = Calendar("Europe/Berlin", ("fri", "sat", "sun"), clock=lambda: datetime(2026, 11, 20, 12, tzinfo=timezone.utc))
    ends = cal.freeze_ends()
    assert ends is not None and ends.isoformat() == "2026-11-23T00:00:00+01:00"
    every_day = Calendar("UTC", ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    assert every_day.freeze_ends() is None


def test_empty_freeze_setting_disables_the_freeze() -> None:
    settings = load_settings({"DBOPT_FREEZE_WEEKDAYS": "", "DBOPT_TIMEZONE": "Europe/Berlin"})
    cal = Calendar.from_settings(settings, clock=lambda: datetime(2026, 11, 21, 12, tzinfo=timezone.utc))
    assert not cal.is_freeze_day()
    assert load_settings({}).freeze_weekdays == ("sat",)


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        Calendar(clock=lambda: datetime(2026, 1, 1)).now()
