"""Pool monitor (pure): pool alerts with time hysteresis, the connection budget, pool-size advice,
severity from criticality and the wedding calendar, replay safety."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from streams.config import PoolSettings, Settings
from streams.domain.calendar import Calendar
from streams.pools import PoolMonitor, service_class
from streams.records import Alert, PoolSnapshot, ServerSnapshot

# Wednesday 2025-06-11 10:00 UTC: peak season, no wedding today or tomorrow (freeze day: Saturday)
T0 = int(datetime(2025, 6, 11, 10, 0, tzinfo=timezone.utc).timestamp() * 1000)
SATURDAY_NOON = int(datetime(2025, 6, 14, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
SETTINGS = Settings()


def snap(t: int, *, service: str = "booking-service", instance: str = "i1", pool: str = "default", in_use: int = 2,
         max_size: int = 10, waiting: int = 0, timeouts: int = 0, database: str = "dbopt", min_size: int = 1) -> PoolSnapshot:  # fmt: skip
    return PoolSnapshot(
        service=service, instance_id=instance, pool_name=pool, snapshot_time=t, size=max(in_use, min_size),
        max_size=max_size, in_use=in_use, idle=max(0, min_size - in_use), waiting=waiting, database=database,
        min_size=min_size, interval_ms=5000, checkouts=10, checkout_wait_p95_ms=1.0, checkout_wait_max_ms=2.0,
        timeouts=timeouts,
    )


def server(t: int, max_connections: int = 100, reserved: int = 3) -> ServerSnapshot:
    return ServerSnapshot(server="db1", database="dbopt", snapshot_time=t, max_connections=max_connections,
                          reserved_connections=reserved, total_connections=12, databases=("dbopt", "postgres"))


class Run:
    """A monitor with a dict as its state, applying every outcome like the agent does."""

    def __init__(self, settings: Settings = SETTINGS) -> None:
        self.monitor = PoolMonitor(settings, Calendar.from_settings(settings))
        self.state: dict[str, Any] = {}
        self.alerts: list[Alert] = []

    def feed(self, *records: PoolSnapshot | ServerSnapshot) -> list[Alert]:
        new = []
        for record in records:
            outcome = self.monitor.on_record(record, self.state, record.snapshot_time + 50)
            for key, value in outcome.state.items():
                if value is None:
                    self.state.pop(key, None)
                else:
                    self.state[key] = value
            new += outcome.alerts
        self.alerts += new
        return new


def test_utilization_fires_after_the_sustain_period_and_resolves_after_the_calm_one() -> None:
    run = Run()  # 0.75 for 15 s fires; 30 s calm resolves
    assert run.feed(*(snap(T0 + i * 5000, in_use=8) for i in range(3))) == []  # 0 s, 5 s, 10 s of pressure
    (fired,) = run.feed(snap(T0 + 15_000, in_use=8))
    assert (fired.kind, fired.state, fired.metric, fired.pool_name) == ("pool", "firing", "utilization", "default")
    assert fired.p95_ms == 0.8 and fired.threshold_ms == 0.75
    assert fired.window_start == T0 and fired.window_end == T0 + 15_000
    assert fired.context == "booking" and fired.severity == "high"  # critical service, utilization only
    assert run.feed(*(snap(T0 + 20_000 + i * 5000, in_use=9) for i in range(3))) == []  # stays quiet while firing
    assert run.feed(*(snap(T0 + 35_000 + i * 5000, in_use=2) for i in range(6))) == []  # 25 s calm
    (resolved,) = run.feed(snap(T0 + 65_000, in_use=2))
    assert resolved.state == "resolved" and resolved.severity == fired.severity
    assert resolved.alert_id != fired.alert_id and resolved.recommended_max_size is None


def test_a_waiting_client_fires_at_once_with_a_higher_severity_and_the_advice() -> None:
    run = Run()
    (fired,) = run.feed(snap(T0, in_use=10, waiting=3))
    assert fired.severity == "critical"  # critical service, clients waiting
    # peak demand 13 / 0.75 x 2 (peak season) = 34.7 -> 35 per instance, no server known: no cap
    assert fired.recommended_max_size == 35 and fired.season == "peak"
    assert "recommended max_size 35 per instance (peak demand 13, x2 peak season)" in fired.message
    assert "3 waiting" in fired.message


def test_a_dip_below_the_threshold_restarts_the_sustain_clock() -> None:
    run = Run()
    run.feed(snap(T0, in_use=8), snap(T0 + 10_000, in_use=8), snap(T0 + 12_000, in_use=2))
    assert run.feed(snap(T0 + 20_000, in_use=8), snap(T0 + 30_000, in_use=8)) == []
    assert [a.state for a in run.feed(snap(T0 + 35_000, in_use=8))] == ["firing"]


def test_healthy_pool_never_alerts() -> None:
    run = Run()
    run.feed(*(snap(T0 + i * 5000, in_use=i % 7) for i in range(200)))  # at most 60 %
    assert run.alerts == []


def test_instances_are_judged_together_and_a_quiet_pool_resolves() -> None:
    run = Run()
    # two instances at 6/10: 60 % together, nobody waits
    assert run.feed(snap(T0, instance="a", in_use=6), snap(T0 + 1, instance="b", in_use=6)) == []
    (fired,) = run.feed(snap(T0 + 5000, instance="a", in_use=10, waiting=1))
    assert "16/20 connections in use (80%) over 2 instance(s), 1 waiting" in fired.message
    # both instances stop reporting; another service's snapshots move the clock past the stale limit
    quiet = run.feed(snap(T0 + 70_000, service="guest-service", in_use=1))
    assert [(a.service, a.state) for a in quiet] == [("booking-service", "resolved")]


def test_replayed_or_older_snapshots_change_nothing() -> None:
    run = Run()
    run.feed(snap(T0, in_use=10, waiting=2))
    before = dict(run.state)
    again = run.monitor.on_record(snap(T0, in_use=10, waiting=2), run.state, T0 + 99)
    assert again.alerts == [] and again.state == {} and run.state == before


def test_alert_ids_are_deterministic() -> None:
    first, second = Run(), Run()
    records = [snap(T0, in_use=10, waiting=1), *(snap(T0 + 5000 * i) for i in range(1, 9))]
    assert [a.alert_id for a in first.feed(*records)] == [a.alert_id for a in second.feed(*records)]
    assert len(first.alerts) == 2


def test_budget_alert_when_the_maxima_exceed_what_the_server_allows() -> None:
    run = Run(SETTINGS.with_overrides(pools=PoolSettings(sustain_s=0)))
    run.feed(server(T0, max_connections=100, reserved=3))  # 97 allowed
    assert run.feed(snap(T0 + 1, instance="a", max_size=40, in_use=1),
                    snap(T0 + 2, instance="b", max_size=40, in_use=1)) == []  # 80
    (fired,) = run.feed(snap(T0 + 3, service="vendor-service", max_size=20, in_use=1))  # 100 > 97
    assert (fired.kind, fired.state, fired.service, fired.metric) == ("budget", "firing", "db1", "connections")
    assert (fired.p95_ms, fired.threshold_ms) == (100.0, 97.0)
    assert "booking-service/default 2x40" in fired.message and "vendor-service/default 1x20" in fired.message
    assert fired.severity == "high"  # a critical service among the contributors, magnitude < 2x
    # a pool of another database does not count
    assert run.feed(snap(T0 + 4, service="x-service", max_size=500, database="other")) == []
    # the vendor pool shrinks: back within the budget (resolve_s: 30 s of calm)
    run.feed(snap(T0 + 5, service="vendor-service", max_size=10, in_use=1))
    (resolved,) = run.feed(snap(T0 + 40_000, service="vendor-service", max_size=10, in_use=1),
                           snap(T0 + 40_001, instance="a", max_size=40, in_use=1),
                           snap(T0 + 40_002, instance="b", max_size=40, in_use=1))
    assert (resolved.kind, resolved.state) == ("budget", "resolved")


def test_advice_is_capped_by_the_budget() -> None:
    run = Run()
    run.feed(server(T0, max_connections=60, reserved=4))  # 56 allowed
    run.feed(snap(T0 + 1, service="vendor-service", instance="v", max_size=20, in_use=1))
    (fired,) = run.feed(snap(T0 + 2, instance="a", max_size=10, in_use=10, waiting=5),
                        snap(T0 + 3, instance="b", max_size=10, in_use=10, waiting=5))[:1]
    # wanted ceil(15 / 0.75 x 2) = 40 per instance; the budget leaves (56 - 20) // 2 = 18
    views, budgets = run.monitor.views(run.state)
    booking = next(v for v in views if v.service == "booking-service")
    assert booking.advice.recommended == 18 and booking.advice.capped
    assert booking.instances == 2 and booking.waiting == 10 and booking.alert == "firing"
    assert budgets[0].allowed == 56 and budgets[0].pool_maxima == 40 and not budgets[0].over
    assert fired.recommended_max_size is not None
    # another pool takes the whole budget: growth stops, but no shrink below the configured 10
    run.feed(snap(T0 + 10, service="analytics", instance="x", max_size=100, in_use=1))
    booking = next(v for v in run.monitor.views(run.state)[0] if v.service == "booking-service")
    assert booking.advice.recommended == 10 and booking.advice.capped


def test_season_multiplier_and_min_size() -> None:
    october = int(datetime(2025, 11, 12, 10, 0, tzinfo=timezone.utc).timestamp() * 1000)  # proposal season: x1
    run = Run()
    (fired,) = run.feed(snap(october, in_use=3, max_size=3, waiting=1, min_size=8))
    assert fired.season == "proposal"
    assert fired.recommended_max_size == 8  # ceil(4 / 0.75) = 6, below the pool's min_size


def test_wedding_day_raises_severity_and_ceremony_hours_withhold_the_advice() -> None:
    run = Run()
    run.feed(snap(SATURDAY_NOON, service="guest-service", in_use=8))
    (fired,) = run.feed(snap(SATURDAY_NOON + 15_000, service="guest-service", in_use=8))
    assert fired.severity == "warning"  # medium x utilization = info, one step up on a wedding day
    assert fired.recommended_max_size is None and "advice withheld" in fired.message


def test_service_class_from_the_name_or_the_setting() -> None:
    assert service_class("payment-service", SETTINGS) == ("payment", "critical")
    assert service_class("vendor-api", SETTINGS) == ("vendor_search", "high")
    assert service_class("analytics", SETTINGS) == ("other", "medium")
    custom = SETTINGS.with_overrides(pools=PoolSettings(service_criticality={"analytics": "critical"}))
    assert service_class("analytics", custom) == ("other", "critical")
