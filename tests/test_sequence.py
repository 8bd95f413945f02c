"""Wedding-aware sequencing: the pure order (:mod:`streams.execute.sequence`), then the executor
releasing the commands a freeze day deferred in that order, one table at a time, with the
stabilization pauses and the window check between tables; and the safe rollout: old commands
expire (never replayed blindly), ``recommend`` applies nothing automatic."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from itertools import pairwise
from typing import Any

import psycopg

from streams.config import ExecutorSettings, Settings
from streams.domain.calendar import Calendar
from streams.execute.sequence import Due, LatestWindow, Sequencer, Tiers, plan, settled
from streams.records import WindowStats
from test_executor import command, exec_settings, results, run, send

TIERS = Tiers.from_settings(ExecutorSettings())


def due(cid: str, table: str | None, context: str | None = None, service: str | None = None, **kw: Any) -> Due:
    return Due(cid, table, context, service, **kw)


def test_tiers_follow_the_seeds_critical_support_rest() -> None:
    assert [TIERS.tier(c, None) for c in ("booking", "payment", "vendor_search", "timeline")] == [0, 0, 0, 0]
    assert TIERS.tier("other", "notification-service") == 1
    assert TIERS.tier("other", "analytics-worker") == 1
    assert TIERS.tier("integration", None) == 1
    assert TIERS.tier("guest_management", "guest-service") == 2
    assert TIERS.tier(None, None) == 2
    assert TIERS.pauses_s == (60.0, 30.0, 15.0)


def test_plan_orders_by_tier_then_emergency_priority_age_one_table_per_step() -> None:
    items = [
        due("g1", "public.guests", "guest_management", "guest-service", created_at=1),
        due("n1", "public.notifications", "other", "notification-service", created_at=2),
        due("b2", "public.bookings", "booking", "booking-service", created_at=5),
        due("p1", "public.payments", "payment", "payment-service", created_at=9, priority=90),
        due("b1", "public.bookings", "booking", "booking-service", created_at=3),
        due("x1", None, None, None, created_at=0),
        due("n2", "public.notifications", "other", "notification-service", created_at=1),
        due("e1", "public.guests", "guest_management", None, created_at=99, emergency=True),
    ]
    steps = plan(items, TIERS)
    assert [(s.table, s.command_ids) for s in steps] == [
        # an emergency first, and the other command on its table with it: one table at a time
        ("public.guests", ("e1", "g1")),
        ("public.payments", ("p1",)),  # critical, the higher priority first
        ("public.bookings", ("b1", "b2")),  # critical, the older command first
        ("public.notifications", ("n2", "n1")),  # support
        (None, ("x1",)),  # the rest; a command without a table is a step of its own
    ]
    assert [s.pause_s for s in steps] == [15.0, 60.0, 60.0, 30.0, 15.0]
    assert [s.tier_name for s in steps][1:] == ["critical", "critical", "support", "rest"]
    assert plan(reversed(items), TIERS) == steps  # arrival order does not matter
    assert plan([], TIERS) == []


def test_settled_judges_the_changed_contexts_latest_windows_only() -> None:
    def slo(context: str, _at: int) -> float:
        return {"booking": 50.0}.get(context, 200.0)

    breach = LatestWindow("booking", "booking-service", 120_000, 80.0, 500)
    quiet = LatestWindow("booking", "booking-service", 120_000, 80.0, 3)  # too few queries to judge
    other = LatestWindow("payment", "payment-service", 120_000, 900.0, 500)
    assert settled(frozenset({"booking"}), [breach], slo, 20)[0] is False
    assert "p95 80.0 ms is over its SLO 50 ms" in settled(frozenset({"booking"}), [breach], slo, 20)[1]
    assert settled(frozenset({"booking"}), [quiet, other], slo, 20)[0] is True
    assert settled(frozenset({"booking"}), [], slo, 20)[0] is True


def test_sequencer_pauses_holds_on_a_breach_and_gives_up_holding_after_the_limit() -> None:
    seq = Sequencer(hold_max_s=100)
    step = plan([due("b1", "public.bookings", "booking")], TIERS)[0]
    breach = [LatestWindow("booking", "booking-service", 1, 999.0, 500)]
    assert seq.may_start(0, lambda: breach, lambda c, t: 50.0, 20) == (True, "no step is stabilizing")
    seq.ran(step, now=1000)
    assert seq.busy(1059) and not seq.busy(1060)
    assert seq.may_start(1030, lambda: [], lambda c, t: 50.0, 20)[0] is False
    ok, why = seq.may_start(1060, lambda: breach, lambda c, t: 50.0, 20)
    assert not ok and why.startswith("holding")
    assert seq.may_start(1159, lambda: breach, lambda c, t: 50.0, 20)[0] is False
    assert seq.may_start(1160, lambda: breach, lambda c, t: 50.0, 20)[0] is True  # held 100 s: go on
    assert any("held 100 s" in line for line in seq.log)


# -- the executor: the end of a freeze is not a stampede -------------------------------------------------

SEED = """
CREATE TABLE bookings (id serial PRIMARY KEY, vendor_id int NOT NULL);
CREATE TABLE notifications (id serial PRIMARY KEY, guest_id int NOT NULL);
CREATE TABLE guests (id serial PRIMARY KEY, wedding_id int NOT NULL);
INSERT INTO bookings (vendor_id) SELECT g % 50 FROM generate_series(1, 500) g;
INSERT INTO notifications (guest_id) SELECT g % 70 FROM generate_series(1, 500) g;
INSERT INTO guests (wedding_id) SELECT g % 30 FROM generate_series(1, 500) g;
"""
SATURDAY = Calendar("UTC", ("sat",), clock=lambda: datetime(2026, 11, 21, 11, tzinfo=timezone.utc))
MONDAY = Calendar("UTC", ("sat",), clock=lambda: datetime(2026, 11, 23, 9, tzinfo=timezone.utc))


def _breaching_booking_window(settings: Settings) -> None:
    """A closed booking window far over its SLO on the windows topic: the sequence must hold after bookings."""
    from streams.kafka import clients
    from streams.serde import Codec

    record = WindowStats(window_id="w-breach", window_kind="tumbling", window_start=0, window_end=60_000,
                         service="booking-service", context="booking", count=500, errors=0, min_ms=1.0,
                         max_ms=900.0, p50_ms=400.0, p95_ms=800.0, p99_ms=900.0)
    producer = clients.producer(settings)
    topic = settings.topics.latency_windows
    producer.produce(topic, key=b"booking-service", value=Codec.from_settings(settings).encode_record(record, topic=topic))
    assert producer.flush(30) == 0


def test_freeze_end_releases_deferred_commands_in_tier_order_with_pauses(settings: Settings, scratch_db: str) -> None:
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute(SEED)
    xs = exec_settings(settings, scratch_db, stabilize_critical_s=2.0, stabilize_support_s=1.0,
                       stabilize_rest_s=0.5, sequence_hold_max_s=3.0)
    xs = xs.with_overrides(freeze_weekdays=("sat",))
    from streams.kafka.topics import ensure_topics

    ensure_topics(xs)
    # arrival order: the least critical first; created a millisecond apart, so that within the
    # critical tier the older command is known (commands made in the same millisecond are ordered
    # by their ids)
    created = int(time.time() * 1000)
    cmds = {
        "guests": command("CREATE INDEX CONCURRENTLY dbopt_idx_guests_w ON guests (wedding_id)",
                          service="guest-service", context="guest_management", created_at=created),
        "notifications": command("CREATE INDEX CONCURRENTLY dbopt_idx_notif_g ON notifications (guest_id)",
                                 service="notification-service", created_at=created + 1),
        "bookings": command("CREATE INDEX CONCURRENTLY dbopt_idx_bookings_v ON bookings (vendor_id)",
                            service="booking-service", context="booking", created_at=created + 2),
        "bookings2": command("ANALYZE bookings", service="booking-service", context="booking",
                             created_at=created + 3),
    }
    send(xs, *cmds.values())
    report = run(xs, calendar=SATURDAY, max_commands=4)
    assert report.statuses == {"deferred": 4}  # the freeze day: nothing runs
    _breaching_booking_window(xs)

    # Monday: Sunday 00:00, the end of the freeze, has come for all of them at once
    report = run(xs, calendar=MONDAY, idle_timeout=12.0)
    assert report.statuses == {"applied": 4}
    with psycopg.connect(scratch_db) as conn:
        rows = conn.execute("SELECT command_id, started_at, finished_at FROM dbopt.dbopt_audit ORDER BY started_at").fetchall()
    order = {cid: name for name, c in cmds.items() for cid in [c.command_id]}
    assert [order[r[0]] for r in rows] == ["bookings", "bookings2", "notifications", "guests"]
    gap = {order[b[0]]: (b[1] - a[2]).total_seconds() for a, b in pairwise(rows)}
    assert gap["bookings2"] < 2.0  # the same table: one step, no pause in between
    assert gap["notifications"] >= 2.0 + 3.0  # critical pause, then held by the breaching booking window
    assert gap["guests"] >= 1.0  # the support pause (nothing breaches for notifications: no hold)


# -- safe rollout: no blind replay of history, recommend applies nothing ---------------------------------


def test_old_commands_expire_with_their_age_and_recommend_applies_nothing(settings: Settings, scratch_db: str) -> None:
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute(SEED)
    xs = exec_settings(settings, scratch_db, max_command_age_s=24 * 3600.0, stabilize_critical_s=0.0,
                       stabilize_rest_s=0.0, aggressiveness="recommend")
    from streams.kafka.topics import ensure_topics

    ensure_topics(xs)
    two_days_ago = int(time.time() * 1000) - 2 * 86_400_000 - 3_600_000
    stale = command("CREATE INDEX CONCURRENTLY dbopt_idx_old ON bookings (vendor_id)", created_at=two_days_ago)
    stale_auto = command("ANALYZE guests", origin="advisor", created_at=two_days_ago)
    fresh_auto = command("CREATE INDEX CONCURRENTLY dbopt_idx_auto ON guests (wedding_id)", origin="advisor")
    fresh_operator = command("ANALYZE bookings")
    send(xs, stale, stale_auto, fresh_auto, fresh_operator)
    report = run(xs, max_commands=4)
    by_id = {r.command_id: r for r in results(xs, 4)}
    for old in (stale, stale_auto):  # reported expired with their age, never applied
        assert by_id[old.command_id].status == "expired"
        assert "created 2 d 1 h ago" in by_id[old.command_id].reason
    # recommend: an automatic command waits for a person; an operator's runs
    assert by_id[fresh_auto.command_id].status == "deferred" and "recommend" in by_id[fresh_auto.command_id].reason
    assert by_id[fresh_operator.command_id].status == "applied"
    assert report.statuses == {"expired": 2, "deferred": 1, "applied": 1}
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'dbopt_idx_%'").fetchone() == (0,)
        assert conn.execute("SELECT status, count(*) FROM dbopt.dbopt_audit GROUP BY 1 ORDER BY 1").fetchall() == [
            ("applied", 1), ("deferred", 1), ("expired", 2)]
