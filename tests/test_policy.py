"""Executor policy (pure): aggressiveness, index cap, one operation per table, freeze days."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from streams.domain.calendar import Calendar
from streams.execute.policy import PolicyDecision, Request, decide

WEDNESDAY_MARCH = datetime(2027, 3, 17, 12, tzinfo=timezone.utc)  # off season, no freeze
WEDNESDAY_JULY = datetime(2026, 7, 15, 12, tzinfo=timezone.utc)  # peak season
SATURDAY_NOON = datetime(2027, 3, 20, 12, tzinfo=timezone.utc)


def run(request: Request, when: datetime = WEDNESDAY_MARCH, level: str = "moderate",
        busy: frozenset[str] = frozenset()) -> PolicyDecision:
    calendar = Calendar("UTC", ("sat",), clock=lambda: when)
    return decide(request, aggressiveness=level, max_indexes_per_table=10, busy_tables=busy, calendar=calendar)


@pytest.mark.parametrize(
    ("level", "allowed"),
    [
        ("conservative", {"analyze", "vacuum"}),
        ("moderate", {"analyze", "vacuum", "create_index", "reindex"}),
        ("aggressive", {"analyze", "vacuum", "create_index", "reindex", "drop_index"}),
    ],
)
def test_aggressiveness_levels_for_automatic_commands(level: str, allowed: set[str]) -> None:
    for action in ("analyze", "vacuum", "create_index", "reindex", "drop_index"):
        decision = run(Request("advisor", action, "public.bookings", index_count=2), level=level)
        assert (decision.verdict == "allow") == (action in allowed), (level, action, decision)
        if decision.verdict == "reject":
            assert f"aggressiveness {level}" in decision.reason and "recommendation" in decision.reason


def test_aggressive_acts_as_moderate_in_high_season() -> None:
    decision = run(Request("advisor", "drop_index", "public.bookings"), when=WEDNESDAY_JULY, level="aggressive")
    assert decision.verdict == "reject" and "aggressive acts as moderate in peak season" in decision.reason


def test_operator_commands_and_rollbacks_are_not_limited_by_aggressiveness() -> None:
    assert run(Request("operator", "drop_index", "public.bookings"), level="conservative").verdict == "allow"
    rollback = Request("verifier", "drop_index", "public.bookings", is_rollback=True)
    assert run(rollback, level="conservative").verdict == "allow"


def test_at_most_ten_indexes_per_table() -> None:
    assert run(Request("advisor", "create_index", "public.bookings", index_count=9)).verdict == "allow"
    full = run(Request("operator", "create_index", "public.bookings", index_count=10))
    assert full.verdict == "reject" and "at most 10" in full.reason


def test_one_operation_per_table() -> None:
    decision = run(Request("advisor", "analyze", "public.bookings"), busy=frozenset({"public.bookings"}))
    assert decision.verdict == "defer" and "in progress" in decision.reason and decision.until is not None
    assert run(Request("advisor", "analyze", "public.vendors"), busy=frozenset({"public.bookings"})).verdict == "allow"


def test_freeze_day_defers_until_it_ends_and_emergency_passes() -> None:
    decision = run(Request("operator", "create_index", "public.bookings", index_count=1), when=SATURDAY_NOON)
    assert decision.verdict == "defer"
    assert "freeze day" in decision.reason and "CRITICAL" in decision.reason
    assert decision.until == datetime(2027, 3, 21, tzinfo=timezone.utc)
    emergency = run(Request("operator", "create_index", "public.bookings", emergency=True, index_count=1),
                    when=SATURDAY_NOON)
    assert emergency.verdict == "allow" and "emergency" in emergency.reason
