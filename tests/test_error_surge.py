"""Error-rate and surge rules on crafted windows (pure): they fire with hysteresis on bad windows,
stay silent on healthy ones, and ignore replays."""

from __future__ import annotations

from typing import Any

from streams.config import AlertRuleSettings, Settings
from streams.detect.traffic import TrafficDetector
from streams.records import Alert, WindowStats

MINUTE = 60_000
T0 = 1_750_000_000_000 - (1_750_000_000_000 % MINUTE)  # June 2025: peak season
SETTINGS = Settings()  # fire after 2 windows, resolve after 2


def window(i: int, *, service: str = "payment-service", context: str = "payment", criticality: str = "critical",
           count: int = 200, errors: int = 0, fingerprint: str | None = None, kind: str = "tumbling") -> WindowStats:  # fmt: skip
    start = T0 + i * MINUTE
    return WindowStats(
        window_id=f"{kind}-{start}-{service}-{context}-{fingerprint}", window_kind=kind,  # type: ignore[arg-type]
        window_start=start, window_end=start + MINUTE, service=service, fingerprint=fingerprint, context=context,
        criticality=criticality, count=count, errors=errors, min_ms=1.0, max_ms=9.0, p50_ms=2.0, p95_ms=5.0,
        p99_ms=8.0,
    )


class Run:
    def __init__(self, settings: Settings = SETTINGS) -> None:
        self.detector = TrafficDetector(settings)
        self.state: dict[str, Any] = {}

    def feed(self, *windows: WindowStats) -> list[Alert]:
        alerts = []
        for w in windows:
            outcome = self.detector.evaluate(w, self.state, w.window_end + 15_000)
            self.state.update(outcome.state)
            alerts += outcome.alerts
        return alerts


# -- errors --------------------------------------------------------------------------------------


def test_error_share_fires_after_two_windows_and_resolves_after_two_good_ones() -> None:
    run = Run()
    # payment is critical: 2 % is the limit; 6 of 200 = 3 %
    alerts = [run.feed(window(i, errors=e)) for i, e in enumerate([1, 6, 6, 8, 2, 6, 1, 0, 0])]
    states = [[(a.kind, a.state) for a in step] for step in alerts]
    assert states == [[], [], [("errors", "firing")], [], [], [], [], [("errors", "resolved")], []]
    fired = alerts[2][0]
    assert (fired.metric, fired.p95_ms, fired.threshold_ms) == ("error_share", 0.03, 0.02)
    assert fired.severity == "high" and fired.season == "peak" and fired.fingerprint is None
    assert "6 of 200 statements failed (3.0%)" in fired.message


def test_other_contexts_have_the_higher_limit_and_a_minimum_count() -> None:
    run = Run()
    guests = dict(service="guest-service", context="guest_management", criticality="medium")
    assert run.feed(*(window(i, errors=8, **guests) for i in range(5))) == []  # 4 % < 5 %
    run = Run()
    # 4 of 40 = 10 %, but fewer than 5 failed statements; then too few statements to judge
    assert run.feed(*(window(i, count=40, errors=4, **guests) for i in range(5))) == []
    assert run.feed(*(window(5 + i, count=10, errors=9, **guests) for i in range(5))) == []
    fired = run.feed(*(window(10 + i, count=100, errors=12, **guests) for i in range(2)))
    assert [(a.kind, a.state, a.severity) for a in fired] == [("errors", "firing", "warning")]


def test_healthy_windows_never_alert() -> None:
    run = Run()
    assert run.feed(*(window(i, count=180 + i % 40, errors=i % 3) for i in range(60))) == []


def test_fingerprint_rows_and_hopping_windows_are_not_judged() -> None:
    run = Run()
    assert run.feed(*(window(i, errors=100, fingerprint="fp1") for i in range(5))) == []
    assert run.feed(*(window(i, errors=100, kind="hopping") for i in range(5))) == []


def test_a_replayed_window_changes_nothing() -> None:
    run = Run()
    run.feed(window(0, errors=9), window(1, errors=9))
    before = dict(run.state)
    again = run.detector.evaluate(window(1, errors=9), run.state, T0)
    assert again.alerts == [] and again.state == {} and run.state == before


# -- surge ---------------------------------------------------------------------------------------


def service_windows(i: int, counts: dict[str, int], service: str = "booking-service") -> list[WindowStats]:
    """One window of a service: one context row per context."""
    criticality = {"booking": "critical", "vendor_search": "high", "other": "medium"}
    return [window(i, service=service, context=c, criticality=criticality[c], count=n) for c, n in counts.items()]


def test_surge_over_the_baseline_fires_with_the_season_and_resolves() -> None:
    run = Run()
    alerts: list[list[Alert]] = []
    # baseline ~300 per window (booking 200 + other 100); windows 6 and 7 are 5x; a later row judges each
    totals = [300, 290, 310, 305, 295, 300, 1500, 1500, 320, 300, 310, 305]
    for i, total in enumerate(totals):
        alerts.append(run.feed(*service_windows(i, {"booking": total * 2 // 3, "other": total - total * 2 // 3})))
    states = [[(a.kind, a.state) for a in step] for step in alerts]
    # window i is judged when window i+1 arrives: 7 fires (second surging window), 9 resolves
    assert states[8] == [("surge", "firing")] and states[10] == [("surge", "resolved")]
    assert sum(len(s) for s in states) == 2
    fired = alerts[8][0]
    assert fired.window_start == T0 + 7 * MINUTE and fired.context == "booking"
    assert (fired.metric, fired.p95_ms, fired.baseline_ms, fired.threshold_ms) == ("events_per_window", 1500.0, 300.0, 1200.0)
    assert fired.season == "peak" and "peak season" in fired.message and "5.0x its baseline" in fired.message
    assert fired.severity == "high"  # critical context, 1.25x the limit


def test_surge_needs_a_baseline_and_a_minimum_count() -> None:
    run = Run()
    # a fresh service ramps up: no baseline yet, nothing judged
    assert run.feed(*(w for i, n in enumerate([10, 50, 400, 900]) for w in service_windows(i, {"booking": n}))) == []
    small = Run(SETTINGS.with_overrides(alert_rules=AlertRuleSettings(surge_min_events=1000)))
    counts = [100] * 6 + [500, 500, 500, 100]
    assert small.feed(*(w for i, n in enumerate(counts) for w in service_windows(i, {"booking": n}))) == []


def test_steady_or_seasonal_growth_does_not_surge() -> None:
    run = Run()
    counts = [int(300 * 1.1 ** (i / 5)) for i in range(60)]  # +10 % every 5 minutes
    assert run.feed(*(w for i, n in enumerate(counts) for w in service_windows(i, {"booking": n, "other": n // 2}))) == []


def test_replayed_rows_are_not_counted_twice() -> None:
    run = Run()
    for i in range(6):
        run.feed(*service_windows(i, {"booking": 300}))
    # window 6 arrives twice (a replay): still 300, no surge when window 7 closes it
    run.feed(*service_windows(6, {"booking": 150, "other": 150}))
    run.feed(*service_windows(6, {"booking": 150, "other": 150}))
    assert run.feed(*service_windows(7, {"booking": 300})) == []
    assert run.state['["surge", "tumbling", "booking-service"]']["baseline"][-1] == 300


def test_every_new_alert_kind_renders_as_a_notification() -> None:
    from streams.domain.calendar import Calendar
    from streams.notify.model import ALERT_KINDS, from_alert

    run = Run()
    errors = run.feed(*(window(i, errors=9) for i in range(2)))
    surge = run.feed(*(w for i, n in enumerate([300] * 6 + [1500] * 3)
                       for w in service_windows(i, {"booking": n})))
    others = [
        Alert(alert_id=kind, state="firing", severity="high", kind=kind, service="db1", context="booking",  # type: ignore[arg-type]
              fingerprint="fp1" if kind == "statement" else None, p95_ms=value, threshold_ms=limit,
              window_start=T0, window_end=T0 + MINUTE, metric=metric)
        for kind, value, limit, metric in (("budget", 306.0, 197.0, "connections"), ("statement", 61.0, 50.0, "mean_ms"),
                                           ("pool", 1.0, 0.75, "utilization"))
    ]
    rendered = {a.kind: from_alert(a, Calendar()) for a in [*errors, *surge, *others]}
    assert set(rendered) == set(ALERT_KINDS) - {"slo", "regression"}
    assert "errors 4.5% (limit 2.0%)" in rendered["errors"].message.title
    assert "1,500 events per window (limit 1,200)" in rendered["surge"].message.title
    assert "pool maxima 306 vs 197 connections allowed" in rendered["budget"].message.title
    assert "mean 61" in rendered["statement"].message.title and "pool at 100%" in rendered["pool"].message.title


def test_each_database_is_its_own_series() -> None:
    from msgspec.structs import replace

    run = Run()
    # shop-a fails, shop-b is healthy: shop-b's good windows neither resolve nor hide shop-a's breach
    alerts = []
    for i in range(3):
        alerts += run.feed(replace(window(i, errors=9), database="shop-a"), replace(window(i, errors=0), database="shop-b"))
    assert [(a.kind, a.state, a.database) for a in alerts] == [("errors", "firing", "shop-a")]
