"""The simulator's services run on real psycopg pools watched by ``watch_pool``; the ``wedding-day``
profile drives the notification service's pool into saturation (clients waiting), and the pool
monitor turns its snapshots into a pool alert with a recommended size."""

from __future__ import annotations

import pytest

from streams.config import Settings
from streams.demo.simulate import simulate
from streams.demo.workload import PROFILES, service_rates, threads_for
from streams.pools import PoolMonitor
from streams.records import PoolSnapshot
from test_pool_watch import read_records
from test_simulate import demo_db  # noqa: F401 - the module-scoped demo database fixture

pytestmark = pytest.mark.infra


def test_wedding_day_saturates_the_notification_pool(demo_db: str, created_topics: Settings) -> None:  # noqa: F811
    settings = created_topics
    profile = PROFILES["wedding-day"]
    rates = service_rates(profile, 15.0, ("notification", "guest"))
    assert threads_for(rates["notification"], profile.hold_ms["notification"]) > profile.pool_size["notification"]
    result = simulate(settings, demo_db, rates, duration=11.0, seed=3, hold_ms=profile.hold_ms,
                      pool_size=profile.pool_size)
    assert result.sent > 0 and result.errors == 0, [s.error_kinds for s in result.stats.values()]

    snaps = read_records(settings, settings.topics.pool_snapshots, lambda rs: len(rs) >= 4)
    assert all(isinstance(s, PoolSnapshot) for s in snaps)
    by_service: dict[str, list[PoolSnapshot]] = {}
    for s in snaps:
        by_service.setdefault(s.service, []).append(s)
    assert set(by_service) == {"notification-service", "guest-service"}
    notification = by_service["notification-service"]
    assert all(s.max_size == 4 for s in notification)
    assert max(s.waiting for s in notification) >= 1 and max(s.in_use for s in notification) == 4
    assert max(s.checkout_wait_p95_ms or 0 for s in notification) > 50
    assert all(s.waiting == 0 for s in by_service["guest-service"])

    monitor, state, alerts = PoolMonitor(settings), {}, []
    for s in sorted(snaps, key=lambda s: s.snapshot_time):
        outcome = monitor.on_record(s, state, s.snapshot_time)
        state.update({k: v for k, v in outcome.state.items() if v is not None})
        alerts += outcome.alerts
    fired = [a for a in alerts if a.state == "firing"]
    assert [(a.kind, a.service) for a in fired] == [("pool", "notification-service")]
    assert fired[0].recommended_max_size is None or fired[0].recommended_max_size > 4
