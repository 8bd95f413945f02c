"""The pure core of dbopt notify: routing, rate limits and the bypass, digests, breakers, the
retry schedule and message rendering. No server, no clock: every instant is passed in."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import ConfigError
from streams.domain.calendar import Calendar
from streams.notify.model import Action, Notification, condition_key, digest, from_alert, from_result
from streams.notify.policy import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    Rate,
    RateLimiter,
    admits,
    parse_rate,
    retry_delay,
)
from streams.notify.routing import DEFAULT_ROUTES, channels_for, load_routes, parse_routes
from streams.records import Alert, OptimizationResult

SATURDAY = 1_777_730_587_125  # 2026-05-02T14:03:07Z, peak season, ceremony hours
FRIDAY = SATURDAY - 24 * 3600 * 1000
CAL = Calendar(timezone="UTC", freeze_weekdays=("sat",))


def alert(severity: str = "critical", state: str = "firing", *, at: int = FRIDAY, kind: str = "slo",
          alert_id: str | None = None, service: str = "booking-service", context: str = "booking") -> Alert:
    return Alert(
        alert_id=alert_id or f"al-{severity}-{state}-{at}", state=state, severity=severity, kind=kind,
        service=service, context=context, fingerprint="a6c3085224957fd8", p95_ms=61.5, threshold_ms=50.0,
        baseline_ms=12.0, window_start=at - 60_000, window_end=at,
        query_text="SELECT * FROM bookings WHERE wedding_id = $1", message="", created_at=at + 10,
    )


def result(status: str = "applied") -> OptimizationResult:
    return OptimizationResult(
        command_id="cmd-1", status=status, reason="index built", table="bookings",
        sql="CREATE INDEX CONCURRENTLY dbopt_bookings_wedding_id ON bookings (wedding_id)",
        rollback_sql="DROP INDEX CONCURRENTLY dbopt_bookings_wedding_id", index_name="dbopt_bookings_wedding_id",
        finished_at=FRIDAY, p95_before_ms=61.5, p95_after_ms=4.25,
    )


def note(severity: str = "critical", state: str = "firing", **kw: object) -> Notification:
    return from_alert(alert(severity, state, **kw), CAL)  # type: ignore[arg-type]


# -- routing ------------------------------------------------------------------------------------


def test_default_routes() -> None:
    assert channels_for(note("critical"), DEFAULT_ROUTES) == ("pagerduty", "slack", "sms")
    assert channels_for(note("high"), DEFAULT_ROUTES) == ("slack", "email")
    assert channels_for(note("warning"), DEFAULT_ROUTES) == ("slack",)
    assert channels_for(note("info"), DEFAULT_ROUTES) == ()
    assert channels_for(from_result(result("failed"), CAL), DEFAULT_ROUTES) == ("slack",)
    assert channels_for(from_result(result("applied"), CAL), DEFAULT_ROUTES) == ("slack",)


def test_resolved_goes_where_the_firing_went() -> None:
    resolved = note("critical", "resolved")
    assert channels_for(resolved, DEFAULT_ROUTES, firing_channels=("slack",)) == ("slack",)
    assert channels_for(resolved, DEFAULT_ROUTES, firing_channels=()) == ()
    # firing unknown (before the ledger existed): routed like any alert
    assert channels_for(resolved, DEFAULT_ROUTES, firing_channels=None) == ("pagerduty", "slack", "sms")


def test_routing_file_goes_first_and_matches_every_field(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "routes:\n"
        "  - match: {severity: critical, context: [payment]}\n"
        "    channels: [pagerduty, email]\n"
        "  - match: {service: analytics-service}\n"
        "    channels: []\n"
        "  - match: {kind: result, state: [failed, rolled_back]}\n"
        "    channels: [slack, email, webhook]\n"
        "  - match: {kind: regression, state: firing}\n"
        "    channels: [webhook]\n"
    )
    routes = load_routes(path)
    assert channels_for(note("critical", context="payment"), routes) == ("pagerduty", "email")
    assert channels_for(note("critical", context="booking"), routes) == ("pagerduty", "slack", "sms")  # defaults
    assert channels_for(note("critical", service="analytics-service"), routes) == ()
    assert channels_for(from_result(result("failed"), CAL), routes) == ("slack", "email", "webhook")
    assert channels_for(from_result(result("applied"), CAL), routes) == ("slack",)
    assert channels_for(note("warning", kind="regression"), routes) == ("webhook",)
    assert parse_routes({"routes": [], "defaults": False}) == ()


@pytest.mark.parametrize("doc, words", [
    ({"routes": [{"match": {"colour": "red"}, "channels": []}]}, "cannot match on ['colour']"),
    ({"routes": [{"match": {}, "channels": ["fax"]}]}, "channels must be a list of"),
    ({"routes": [{"match": {"severity": "urgent"}, "channels": []}]}, "severity ['urgent'] unknown"),
    ({"routes": [{"channels": ["slack"]}]}, "exactly the keys"),
    ({"routes": {}, "defaults": True}, "'routes' must be a list"),
    ({"defaults": "yes"}, "true or false"),
])
def test_bad_routing_file_says_why(doc: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_routes(doc)


def test_unreadable_routing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_routes(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("routes: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_routes(tmp_path / "bad.yaml")


# -- rate limits, bypass, digest ------------------------------------------------------------------


def test_parse_rate() -> None:
    assert parse_rate("20/1m") == Rate(20, 60)
    assert parse_rate("5/10m") == Rate(5, 600)
    assert parse_rate("100/h") == Rate(100, 3600)
    assert parse_rate("none") is None and parse_rate("") is None
    for bad in ("20", "0/1m", "5/0m", "x/1m", "5/10d"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_sliding_window_holds_then_reopens() -> None:
    limiter = RateLimiter(Rate(3, 60))
    for t in (0.0, 10.0, 20.0):
        assert limiter.allows(t)
        limiter.record(t)
    assert not limiter.allows(30.0)
    assert limiter.reopens_at(30.0) == 60.0
    assert limiter.allows(60.0)  # the first send left the window
    assert RateLimiter(None).allows(0.0)
    restored = RateLimiter(Rate(2, 60), sent=[5.0, 1.0])  # restored from the ledger after a restart
    assert not restored.allows(30.0) and restored.reopens_at(30.0) == 61.0


def test_emergency_bypass() -> None:
    limiter = RateLimiter(Rate(1, 60), sent=[0.0])
    assert not admits(False, limiter, 1.0)
    assert admits(True, limiter, 1.0)
    assert note("critical", at=FRIDAY).emergency
    assert note("high", at=SATURDAY).emergency  # a freeze day
    assert not note("high", at=FRIDAY).emergency
    assert not note("warning", at=SATURDAY).emergency
    assert not from_alert(alert("high", at=SATURDAY), Calendar(freeze_weekdays=())).emergency


def test_digest_is_one_deterministic_notification() -> None:
    held = [note("warning", at=FRIDAY + i * 1000) for i in range(25)]
    one, again = digest("slack", "", held), digest("slack", "", list(reversed(held)))
    assert one == again
    assert one.notification_id.startswith("digest:slack:")
    assert one.message.title == "DIGEST: 25 notification(s) held back by the slack rate limit"
    assert len(one.message.items) == 21 and one.message.items[-1] == "... and 5 more"
    assert one.severity == "warning" and not one.emergency
    assert digest("sms", "+1555", held).notification_id != digest("sms", "+1556", held).notification_id


# -- breaker and retry schedule -----------------------------------------------------------------


def test_breaker_opens_probes_and_closes() -> None:
    breaker = Breaker(failures_to_open=5, cooldown_s=30)
    for t in range(4):
        breaker.failed(float(t))
        assert breaker.state == CLOSED and breaker.allows(float(t))
    breaker.failed(4.0)
    assert breaker.state == OPEN and not breaker.allows(20.0) and breaker.probe_at() == 34.0
    assert breaker.allows(34.0) and breaker.state == HALF_OPEN  # one probe
    breaker.failed(35.0)  # the probe failed: open for another cool-down
    assert breaker.state == OPEN and not breaker.allows(60.0) and breaker.allows(65.0)
    breaker.succeeded()
    assert breaker.state == CLOSED and breaker.failures == 0


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = Breaker(failures_to_open=3, cooldown_s=1)
    breaker.failed(0.0), breaker.failed(0.0), breaker.succeeded(), breaker.failed(0.0), breaker.failed(0.0)
    assert breaker.state == CLOSED


def test_retry_delay_exponential_capped_jittered_and_honours_retry_after() -> None:
    low = [retry_delay(n, base_s=1, max_s=60, jitter=0.0) for n in range(1, 9)]
    high = [retry_delay(n, base_s=1, max_s=60, jitter=0.999) for n in range(1, 9)]
    assert low == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert all(h > lo and h < 2 * lo for h, lo in zip(high, low, strict=True))
    assert retry_delay(1, base_s=1, max_s=60, jitter=0.5, retry_after_s=120) == 120
    assert retry_delay(6, base_s=1, max_s=60, jitter=0.0, retry_after_s=1) == 16


# -- messages -------------------------------------------------------------------------------------


def test_alert_message_has_what_people_need() -> None:
    n = from_alert(alert("critical", at=SATURDAY), CAL, ui_url="https://dbopt.example",
                   actions=[Action("cmd-1", "create_index", "applied", "dbopt_bookings_wedding_id")])
    facts = dict(n.message.facts)
    assert n.message.title == (
        "FIRING critical: booking-service (booking, query a6c3085224957fd8) p95 61.5 ms > SLO 50.0 ms"
    )
    assert facts["Service"] == "booking-service" and facts["Context"] == "booking"
    assert facts["Latency"] == "p95 61.5 ms > SLO 50.0 ms"
    assert facts["Window"] == "2026-05-02 14:02:07–14:03:07 UTC"
    assert facts["Season"] == "peak" and facts["Wedding day"] == "4 critical"
    assert facts["Fingerprint"] == "a6c3085224957fd8"
    assert facts["dbopt"] == "create_index cmd-1: applied (dbopt_bookings_wedding_id)"
    assert n.message.statement == "SELECT * FROM bookings WHERE wedding_id = $1"
    assert n.message.link == "https://dbopt.example/services/booking-service?fingerprint=a6c3085224957fd8"
    assert from_alert(alert(), CAL).message.link is None
    assert dict(from_alert(alert(), CAL).message.facts)["dbopt"] == "analysing (no command yet)"


def test_same_condition_same_key_whatever_the_window() -> None:
    firing, resolved = note("critical", "firing", at=FRIDAY), note("critical", "resolved", at=FRIDAY + 600_000)
    assert firing.condition_key == resolved.condition_key != note("critical", service="payment-service").condition_key
    assert firing.notification_id != resolved.notification_id
    assert firing.condition_key == condition_key("slo", "booking-service", "booking", "a6c3085224957fd8")
    assert resolved.message.title.startswith("RESOLVED critical") and "back within SLO" in resolved.message.title


def test_result_message_and_round_trip_through_json() -> None:
    n = from_result(result("rolled_back"), CAL, command=Action("cmd-1", "create_index", "rolled_back",
                                                               service="booking-service", context="booking",
                                                               fingerprints=("a6c3085224957fd8",)))
    assert n.notification_id == "result:cmd-1:rolled_back" and n.kind == "result" and n.severity == "warning"
    assert n.message.title == "ROLLED BACK: dbopt_bookings_wedding_id for booking-service"
    assert dict(n.message.facts)["p95"] == "61.5 ms → 4.2 ms"
    assert Notification.from_json(n.to_json()) == n
    assert Notification.from_json(digest("slack", "", [n]).to_json()) == digest("slack", "", [n])
