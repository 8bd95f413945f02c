"""Business contexts, criticality precedence and season-aware SLOs (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from streams.config import ConfigError, DomainSettings, load_settings
from streams.domain.contexts import classify
from streams.domain.slo import season, slo_ms

DOMAIN = DomainSettings()


def ms(year: int, month: int, day: int, hour: int = 12) -> int:
    return int(datetime(year, month, day, hour, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        (["bookings"], ("booking", "critical")),
        (["public.reservations"], ("booking", "critical")),
        (["Availability"], ("booking", "critical")),
        (["invoices"], ("payment", "critical")),
        (["transactions"], ("payment", "critical")),
        (["suppliers"], ("vendor_search", "high")),
        (["services"], ("vendor_search", "high")),
        (["schedule"], ("timeline", "high")),
        (["timeline_events"], ("timeline", "high")),
        (["events"], ("timeline", "high")),
        (["rsvp"], ("guest_management", "medium")),
        (["audit_log"], ("other", "medium")),
        ([], ("other", "medium")),
    ],
)
def test_default_rules(tables: list[str], expected: tuple[str, str]) -> None:
    found = classify(tables, DOMAIN)
    assert (found.context, found.criticality) == expected


def test_most_critical_context_wins_then_rule_order() -> None:
    assert classify(["guests", "vendors"], DOMAIN).context == "vendor_search"  # high beats medium
    assert classify(["timeline", "payments"], DOMAIN).context == "payment"  # critical beats high
    assert classify(["payments", "bookings"], DOMAIN).context == "booking"  # both critical: first rule
    assert classify(["vendors", "schedule"], DOMAIN).context == "vendor_search"


def test_rules_from_environment() -> None:
    env = {
        "DBOPT_CONTEXT_RULES": '{"honeymoon": {"criticality": "high", "tables": ["Trips"]},'
        ' "booking": {"criticality": "critical", "tables": ["bookings"]}}',
        "DBOPT_SLO_P95_MS": '{"honeymoon": 75}',
        "DBOPT_SEASON_SLO_MULTIPLIERS": '{"peak": 1.5}',
    }
    settings = load_settings(env)
    assert classify(["trips"], settings.domain).context == "honeymoon"
    assert classify(["trips", "bookings"], settings.domain).context == "booking"
    assert classify(["payments"], settings.domain).context == "other"  # rules were replaced
    assert slo_ms("honeymoon", ms(2025, 6, 1), settings.domain, "UTC") == 75 * 1.5
    assert slo_ms("booking", ms(2025, 12, 1), settings.domain, "UTC") == 50.0  # default SLO kept


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DBOPT_CONTEXT_RULES", "[1, 2]"),
        ("DBOPT_CONTEXT_RULES", '{"x": {"criticality": "urgent", "tables": ["t"]}}'),
        ("DBOPT_CONTEXT_RULES", '{"x": {"criticality": "high"}}'),
        ("DBOPT_CONTEXT_RULES", "{not json"),
        ("DBOPT_SLO_P95_MS", '{"booking": -5}'),
        ("DBOPT_SEASON_SLO_MULTIPLIERS", '{"winter": 2}'),
        ("DBOPT_DETECT_WINDOW_KINDS", "sliding"),
        ("DBOPT_DETECT_REGRESSION_FACTOR", "0.5"),
    ],
)
def test_bad_configuration_says_what_is_wrong(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize(
    ("month", "expected"),
    [(1, "proposal"), (2, "proposal"), (3, "off"), (4, "peak"), (7, "peak"), (10, "peak"), (11, "proposal"), (12, "proposal")],
)
def test_seasons(month: int, expected: str) -> None:
    assert season(ms(2025, month, 15), "UTC") == expected


def test_season_uses_platform_time_zone() -> None:
    instant = ms(2025, 3, 31, 23)  # 23:00 UTC on 31 March is already April in Berlin
    assert season(instant, "UTC") == "off"
    assert season(instant, "Europe/Berlin") == "peak"


def test_slo_defaults_and_multipliers() -> None:
    june = ms(2025, 6, 1)
    assert [slo_ms(c, june, DOMAIN, "UTC") for c in ("booking", "vendor_search", "payment", "timeline")] == [
        50.0,
        100.0,
        20.0,
        30.0,
    ]
    assert slo_ms("guest_management", june, DOMAIN, "UTC") == 200.0
    assert slo_ms("other", june, DOMAIN, "UTC") == 200.0
    tighter = DomainSettings(season_slo_multipliers={"peak": 1.0, "proposal": 0.8, "off": 1.0})
    assert slo_ms("booking", ms(2025, 12, 1), tighter, "UTC") == pytest.approx(40.0)
    assert slo_ms("booking", june, tighter, "UTC") == 50.0
