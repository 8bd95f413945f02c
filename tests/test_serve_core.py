"""dbopt serve's pure core: the bounded view, colours, optimizations, recommendations, auth, chart."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from streams.commands import build_command, sign
from streams.config import ConfigError, Settings, load_settings
from streams.domain.calendar import Calendar
from streams.execute.policy import Request, decide
from streams.records import Alert, NotificationResult, OptimizationResult, WindowStats
from streams.serve.actions import ActionError, Actions
from streams.serve.auth import Authenticator, User, hash_password, parse_users
from streams.serve.chart import render
from streams.serve.store import Store
from streams.serve.view import AuditEntry, OperatorDecision, View, recommendation_reason, status_colour

NOW = 1_773_748_800_000  # 2026-03-17T12:00Z, a Tuesday in the off season
WEDNESDAY = datetime(2026, 3, 18, 12, tzinfo=timezone.utc)
KEY = b"serve-core-key"
MIN = 60_000


def view(aggressiveness: str = "moderate", **serve: Any) -> View:
    settings = Settings(freeze_weekdays=("sat",))
    settings = settings.with_overrides(serve=settings.serve.with_overrides(**serve),
                                       executor=settings.executor.with_overrides(aggressiveness=aggressiveness))
    calendar = Calendar("UTC", ("sat",), clock=lambda: datetime.fromtimestamp(NOW / 1000, timezone.utc))
    return View(settings, clock=lambda: NOW, calendar=calendar)


def window(i: int, p95: float, *, service: str = "booking-service", context: str = "booking",
           fingerprint: str | None = None, kind: str = "tumbling", count: int = 600, errors: int = 6,
           wid: str | None = None) -> WindowStats:
    start = NOW - (10 - i) * MIN
    return WindowStats(
        window_id=wid or f"{kind}-{service}-{context}-{fingerprint}-{i}", window_kind=kind,  # type: ignore[arg-type]
        window_start=start, window_end=start + MIN, service=service, fingerprint=fingerprint, context=context,
        criticality="critical", count=count, errors=errors, min_ms=1.0, max_ms=p95 * 3, sum_ms=count * 5.0,
        p50_ms=p95 / 3, p95_ms=p95, p99_ms=p95 * 2, query_text="SELECT * FROM bookings WHERE vendor_id = $1"
        if fingerprint else None,
    )


def alert(state: str, i: int, *, severity: str = "high", kind: str = "slo") -> Alert:
    start = NOW - (10 - i) * MIN
    return Alert(alert_id=f"{kind}-{state}-{i}", state=state, severity=severity, kind=kind,  # type: ignore[arg-type]
                 service="booking-service", context="booking", p95_ms=80.0, threshold_ms=50.0,
                 window_start=start, window_end=start + MIN, message=f"p95 {state}", created_at=start + MIN)


def test_colours() -> None:
    kw: dict[str, Any] = {"warn_ratio": 0.8, "stale_ms": 300_000}
    assert status_colour(60, 50, [], NOW, NOW, **kw) == "red"
    assert status_colour(41, 50, [], NOW, NOW, **kw) == "amber"
    assert status_colour(30, 50, [], NOW, NOW, **kw) == "green"
    assert status_colour(30, 50, ["warning"], NOW, NOW, **kw) == "amber"  # still firing: not resolved yet
    assert status_colour(30, 50, ["critical"], NOW, NOW, **kw) == "red"
    assert status_colour(30, 50, [], NOW - 400_000, NOW, **kw) == "grey"  # no recent window
    assert status_colour(None, 50, [], None, NOW, **kw) == "grey"


def test_contexts_show_the_last_window_against_the_slo_worst_first() -> None:
    v = view()
    for i in range(5):
        assert v.add(window(i, 20.0 + i * 10)) == "windows"
    v.add(window(4, 30.0, service="vendor-api", context="vendor_search"))
    v.add(window(4, 999.0, kind="hopping"))  # hopping windows are not the view's unit
    booking, vendor = v.contexts()
    assert (booking.service, booking.p95_ms, booking.slo_ms, booking.colour) == ("booking-service", 60.0, 50.0, "red")
    assert booking.count == 600 and booking.per_s == pytest.approx(10.0) and booking.error_share == pytest.approx(0.01)
    assert (vendor.context, vendor.slo_ms, vendor.colour) == ("vendor_search", 100.0, "green")
    assert [p.p95_ms for p in v.windows("booking-service")] == [20.0, 30.0, 40.0, 50.0, 60.0]


def test_windows_are_deduplicated_bounded_and_kept_for_the_retention() -> None:
    v = view(max_windows_per_key=3, max_keys=2, retention_s=5 * 60)
    assert v.add(window(8, 10.0)) == "windows"
    assert v.add(window(8, 99.0)) is None  # the same window_id again: the first record wins
    assert v.add(window(1, 10.0)) is None  # ended before the retention
    for i in (5, 6, 7, 9):
        v.add(window(i, float(i)))
    assert [p.p95_ms for p in v.windows("booking-service")] == [7.0, 10.0, 9.0]  # the last 3 by start
    v.add(window(9, 1.0, fingerprint="fp1"))
    v.add(window(9, 1.0, fingerprint="fp2"))  # a third series: the least recently updated goes
    assert v.windows("booking-service") == [] and len(v.windows("booking-service", "fp2")) == 1


def test_alerts_latest_state_per_condition_with_notifications() -> None:
    v = view()
    assert v.add(alert("firing", 3, severity="critical")) == "alerts"
    assert v.add(alert("firing", 3, severity="critical")) is None
    v.add(window(9, 30.0))
    assert v.contexts()[0].colour == "red" and v.contexts()[0].firing[0].kind == "slo"
    v.add(NotificationResult(notification_id="slo-firing-3", source="alert", channel="slack", status="delivered",
                             severity="critical", state="firing", attempts=1, finished_at=NOW))
    firing = v.alerts().firing
    assert [(a.alert_id, [n.channel for n in a.notifications]) for a in firing] == [("slo-firing-3", ["slack"])]
    v.add(alert("resolved", 6))
    v.add(alert("firing", 2))  # an older record of the same condition arrives late: still resolved
    alerts = v.alerts()
    assert alerts.firing == [] and [a.alert_id for a in alerts.resolved] == ["slo-resolved-6"]
    assert alerts.resolved[0].fired_at == alerts.resolved[0].window_end - 3 * MIN
    assert [n.notification_id for n in alerts.resolved[0].notifications] == ["slo-firing-3"]
    assert v.contexts()[0].colour == "green"


def command(sql: str, origin: str = "advisor", **kw: Any) -> Any:
    action = kw.pop("action", "create_index")
    return sign(build_command(origin, action, sql, created_at=kw.pop("created_at", NOW - 5 * MIN), **kw), KEY)


def result(command_id: str, status: str, at: int, **kw: Any) -> OptimizationResult:
    return OptimizationResult(command_id=command_id, status=status, reason=f"{status}!", sql="-",  # type: ignore[arg-type]
                              finished_at=at, **kw)


def test_optimizations_join_commands_results_audit_and_windows() -> None:
    v = view()
    create = command("CREATE INDEX CONCURRENTLY i1 ON bookings (vendor_id)", rollback_sql="DROP INDEX CONCURRENTLY i1",
                     service="booking-service", context="booking", fingerprints=["fp1"], p95_before_ms=80.0,
                     cost_before=5000.0, cost_after=40.0)
    v.add(create)
    assert v.optimizations()[0].status == "sent"
    v.add(result(create.command_id, "applied", NOW - 4 * MIN, index_name="public.i1"))
    v.add(result(create.command_id, "duplicate", NOW - 3 * MIN))  # a redelivery's answer changes nothing
    for i in (7, 8, 9):
        v.add(window(i, 12.0, fingerprint="fp1"))
    o = v.optimization(create.command_id)
    assert o is not None and (o.status, o.index_name, o.p95_before_ms) == ("applied", "public.i1", 80.0)
    assert (o.p95_after_ms, o.p95_after_source, o.applied_at) == (12.0, "observed", NOW - 4 * MIN)
    v.add(result(create.command_id, "kept", NOW - MIN, p95_after_ms=11.0))
    o = v.optimization(create.command_id)
    assert o is not None and (o.status, o.verdict, o.p95_after_ms, o.p95_after_source) == ("kept", "kept", 11.0, "verifier")
    chart = v.service("booking-service", "fp1").charts[0]
    assert [(m.status, m.at_ms) for m in chart.markers] == [("applied", NOW - 4 * MIN)]

    undo = command("DROP INDEX CONCURRENTLY i1", origin="verifier", action="drop_index", rollback_of=create.command_id,
                   fingerprints=["fp1"], created_at=NOW - MIN // 2)
    v.add(undo)
    v.add(result(undo.command_id, "rolled_back", NOW - MIN // 3))
    v.add(result(create.command_id, "rolled_back", NOW - MIN // 3))
    o = v.optimization(create.command_id)
    assert o is not None and (o.verdict, o.rolled_back_by, o.rolled_back_at) == ("kept", undo.command_id, NOW - MIN // 3)
    markers = v.service("booking-service", "fp1").charts[0].markers
    assert [m.status for m in markers] == ["applied", "rolled_back"]

    # history older than the topics: from the executor's audit table
    old = command("ANALYZE bookings", action="analyze", created_at=NOW - 9 * MIN)
    assert v.add_audit([AuditEntry(old, "applied", "applied in 3 ms", "public.bookings", None, None, 3.0,
                                   NOW - 9 * MIN, NOW - 9 * MIN + 10, "x")])
    assert v.optimization(old.command_id).status == "applied"  # type: ignore[union-attr]
    assert [o.command_id for o in v.optimizations()][-1] == old.command_id  # the newest first


def test_recommendations_follow_the_policy_and_the_decisions() -> None:
    v = view()  # aggressiveness moderate: a drop_index from the advisor waits for a person
    drop = command("DROP INDEX CONCURRENTLY old_idx", action="drop_index")
    create = command("CREATE INDEX CONCURRENTLY i2 ON bookings (status)")
    v.add(drop)
    v.add(create)
    v.add(result(drop.command_id, "rejected", NOW - MIN))
    recs = v.recommendations()
    assert [(r.id, r.state) for r in recs] == [(drop.command_id, "pending")]
    assert "not applied automatically at aggressiveness moderate" in recs[0].why
    v.add_decision(OperatorDecision(drop.command_id, "dismissed", "olivia", NOW, None))
    assert [(r.state, r.decision.decided_by) for r in v.recommendations()] == [("dismissed", "olivia")]  # type: ignore[union-attr]

    rec = view("recommend")
    rec.add(create)
    rec.add(command("CREATE INDEX CONCURRENTLY i3 ON bookings (email)", origin="operator"))  # a person's: not waiting
    assert [r.id for r in rec.recommendations()] == [create.command_id]
    rec.add(result(create.command_id, "applied", NOW))  # it ran anyway (the level changed since)
    assert rec.recommendations()[0].state == "done"


def test_recommend_level_defers_every_automatic_command_and_the_reason_says_so() -> None:
    calendar = Calendar("UTC", ("sat",), clock=lambda: WEDNESDAY)
    for origin, rollback in (("advisor", False), ("verifier", True)):
        decision = decide(Request(origin, "analyze", "public.bookings", is_rollback=rollback),
                          aggressiveness="recommend", max_indexes_per_table=10, busy_tables=frozenset(),
                          calendar=calendar)
        assert decision.verdict == "defer" and decision.until is None and "recommend" in decision.reason
    operator = decide(Request("operator", "create_index", "public.bookings", index_count=1),
                      aggressiveness="recommend", max_indexes_per_table=10, busy_tables=frozenset(), calendar=calendar)
    assert operator.verdict == "allow"
    assert recommendation_reason(command("ANALYZE x", action="analyze"), "moderate", "off") is None
    assert load_settings({"DBOPT_AGGRESSIVENESS": "Recommend"}).executor.aggressiveness == "recommend"


def test_users_roles_and_hashes() -> None:
    hashed = hash_password("correct horse", rounds=4)
    assert "," not in hashed and ":" not in hashed and hashed.startswith("$2")
    users = parse_users(f"olivia:operator:{hashed}, vic:viewer:{hashed}")
    assert {u.name: u.role for u in users.values()} == {"olivia": "operator", "vic": "viewer"}
    assert hashed not in repr(users)
    auth = Authenticator(users)
    assert auth.authenticate("olivia", "correct horse") == users["olivia"]
    assert auth.authenticate("olivia", "correct horse") == users["olivia"]  # remembered
    assert auth.authenticate("olivia", "wrong") is None and auth.authenticate("nobody", "correct horse") is None
    for bad, why in ((f"x:admin:{hashed}", "role must be viewer or operator"), ("x:viewer:plain", "not a bcrypt hash"),
                     (f"x:viewer:{hashed},x:operator:{hashed}", "listed twice"), ("x:viewer", "not name:role:hash")):
        with pytest.raises(ValueError, match=why):
            parse_users(bad)
    with pytest.raises(ConfigError) as caught:
        load_settings({"DBOPT_UI_USERS": f"x:root:{hashed}"})
    assert "DBOPT_UI_USERS" in str(caught.value) and hashed not in str(caught.value)
    with pytest.raises(ValueError, match="72 bytes"):
        hash_password("x" * 73)


def test_chart_draws_lines_slo_and_markers_and_escapes_text() -> None:
    v = view()
    for i in range(4):
        v.add(window(i + 5, 30.0 + 10 * i, fingerprint="fp<1>"))
    v.add(command("CREATE INDEX CONCURRENTLY i1 ON bookings (vendor_id)", fingerprints=["fp<1>"]))
    opt = v.optimizations()[0]
    v.add(result(opt.command_id, "applied", NOW - 3 * MIN))
    svg = render(v.service("booking-service", "fp<1>").charts[0], "UTC")
    assert svg.startswith("<svg") and 'data-last-p95="60.0"' in svg and 'data-slo="50.0"' in svg
    assert svg.count("<polyline") == 3 and "SLO 50 ms" in svg and "marker-applied" in svg
    assert "fp<1>" not in svg and "fp&lt;1&gt;" in svg
    assert svg.count('class="dot breach"') == 1  # only the 60 ms window is above the 50 ms SLO


def test_a_recommendation_for_a_person_only_is_never_sent() -> None:
    v = view()
    by_hand = command("CREATE EXTENSION pg_trgm", action="create_extension", recommendation=True)
    v.add(by_hand)
    (rec,) = v.recommendations()
    assert rec.by_hand and rec.state == "pending" and "never runs it" in rec.why
    actions = Actions(v.settings, v, Store(v.settings))  # refused before anything is signed, stored or sent
    with pytest.raises(ActionError) as refused:
        actions.approve(by_hand.command_id, User("olivia", "operator", "-"))
    assert refused.value.status == 409 and "by hand" in refused.value.message
