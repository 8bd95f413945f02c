"""Detector: SLO and regression conditions, hysteresis, duplicates, severity (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from streams.config import DetectSettings, Settings
from streams.detect import Detector, severity
from streams.records import Alert, WindowStats
from streams.serde import Codec

MINUTE = 60_000
T0 = 1_750_000_000_000 - (1_750_000_000_000 % MINUTE)  # June 2025: peak season, SLO multiplier 1.0
SETTINGS = Settings()


def window(i: int, p95: float, *, fingerprint: str | None = "fp1", count: int = 100, context: str = "booking",
           criticality: str = "critical", kind: str = "tumbling") -> WindowStats:  # fmt: skip
    start = T0 + i * MINUTE
    return WindowStats(
        window_id=f"{kind}-{start}-{fingerprint}-{context}",
        window_kind=kind,  # type: ignore[arg-type]
        window_start=start,
        window_end=start + MINUTE,
        service="booking-service",
        fingerprint=fingerprint,
        context=context,
        criticality=criticality,
        count=count,
        errors=0,
        min_ms=1.0,
        max_ms=p95 * 2,
        p50_ms=p95 / 2,
        p95_ms=p95,
        p99_ms=p95 * 1.5,
        query_text="SELECT * FROM bookings WHERE id = $1" if fingerprint else None,
    )


def feed(detector: Detector, p95s: list[float], **kw: Any) -> list[list[Alert]]:
    return [detector.observe(window(i, p, **kw), now_ms=T0 + (i + 2) * MINUTE) for i, p in enumerate(p95s)]


def slo_only() -> Detector:
    # regression needs a baseline; keep it out of the way with an unreachable minimum
    return Detector(SETTINGS.with_overrides(detect=DetectSettings(baseline_min_windows=10_000)))


def test_breach_fires_once_stays_quiet_and_resolves_after_two_good_windows() -> None:
    detector = slo_only()
    # booking SLO is 50 ms
    alerts = feed(detector, [40, 60, 70, 80, 90, 45, 60, 40, 30, 20])
    states = [[(a.kind, a.state) for a in step] for step in alerts]
    assert states == [[], [], [("slo", "firing")], [], [], [], [], [], [("slo", "resolved")], []]
    fired, resolved = alerts[2][0], alerts[8][0]
    assert fired.threshold_ms == 50.0 and fired.p95_ms == 70.0
    assert fired.window_start == T0 + 2 * MINUTE
    assert fired.severity == resolved.severity == "high"  # critical context, 1.4x
    assert fired.alert_id != resolved.alert_id


def test_single_breaching_window_does_not_fire() -> None:
    assert sum(len(a) for a in feed(slo_only(), [40, 60, 40, 60, 40, 60])) == 0


def test_duplicate_and_stale_windows_are_ignored() -> None:
    detector = slo_only()
    w1, w2 = window(1, 80), window(2, 80)
    assert detector.observe(w1, T0) == []
    fired = detector.observe(w2, T0)
    assert [a.state for a in fired] == ["firing"]
    assert detector.observe(w2, T0) == []  # the same window emitted again after a crash
    assert detector.observe(w1, T0) == []  # an older one
    # a fresh detector on the same stored state (a restart) does not fire again either
    restarted = Detector(detector.settings, detector.state)
    assert restarted.observe(w2, T0) == []
    assert restarted.observe(window(3, 90), T0) == []


def test_alert_ids_are_deterministic() -> None:
    a = feed(slo_only(), [80, 80])[1][0]
    b = feed(slo_only(), [80, 80])[1][0]
    assert a.alert_id == b.alert_id and len(a.alert_id) == 32


def test_windows_with_too_few_samples_are_neutral() -> None:
    detector = slo_only()
    alerts = [detector.observe(window(i, 500, count=c), T0) for i, c in enumerate([5, 100, 5, 5, 100])]
    assert [[a.state for a in step] for step in alerts] == [[], [], [], [], ["firing"]]


def test_neutral_windows_store_nothing() -> None:
    """A statement that never has enough samples keeps no state; one with state is not rewritten."""
    detector = slo_only()
    for i in range(3):
        assert detector.evaluate(window(i, 500, count=5, fingerprint="rare"), T0).state is None
    assert detector.state == {}
    detector.observe(window(3, 500, count=100), T0)
    stored = dict(detector.state)
    assert detector.evaluate(window(4, 500, count=5), T0).state is None
    assert detector.state == stored
    assert detector.observe(window(3, 500, count=100), T0) == []  # the judged window replayed: ignored


def test_hopping_windows_are_ignored_by_default_and_configurable() -> None:
    assert feed(slo_only(), [80, 80, 80], kind="hopping") == [[], [], []]
    both = Detector(SETTINGS.with_overrides(detect=DetectSettings(window_kinds=("tumbling", "hopping"))))
    assert [len(a) for a in feed(both, [80, 80], kind="hopping", fingerprint=None)] == [0, 1]


def test_context_rows_use_the_context_slo() -> None:
    detector = slo_only()
    # timeline SLO 30 ms, other 200 ms
    assert len(feed(detector, [35, 35], fingerprint=None, context="timeline", criticality="high")[1]) == 1
    assert feed(detector, [150, 150], fingerprint=None, context="other", criticality="medium") == [[], []]


def test_fire_and_resolve_counts_are_configurable() -> None:
    settings = SETTINGS.with_overrides(detect=DetectSettings(fire_after=3, resolve_after=1, baseline_min_windows=10_000))
    alerts = feed(Detector(settings), [80, 80, 80, 10])
    assert [[a.state for a in step] for step in alerts] == [[], [], ["firing"], ["resolved"]]


def test_regression_needs_a_baseline_and_the_floor() -> None:
    # context "other" (SLO 200 ms) keeps the SLO condition quiet
    detector = Detector(SETTINGS)
    kw = {"context": "other", "criticality": "medium"}
    # no baseline yet: a jump in the first windows is not judged
    early = feed(detector, [30, 30, 4, 4, 4], **kw)
    assert all(step == [] for step in early)
    # baseline median 4 ms; 3x = 12 ms, but the floor is 10 ms: 9 ms is not a regression
    d2 = Detector(SETTINGS)
    quiet = feed(d2, [3, 3, 3, 9, 9, 9], **kw)
    assert all(step == [] for step in quiet)
    d3 = Detector(SETTINGS)
    loud = feed(d3, [4, 4, 4, 40, 40, 40, 4, 4], **kw)
    states = [[(a.kind, a.state) for a in step] for step in loud]
    assert states == [[], [], [], [], [("regression", "firing")], [], [], [("regression", "resolved")]]
    fired = loud[4][0]
    assert fired.baseline_ms == 4.0 and fired.threshold_ms == 12.0
    assert fired.severity == "warning"  # medium criticality, 40/12 = 3.3x


def test_regressing_windows_stay_out_of_the_baseline() -> None:
    detector = Detector(SETTINGS.with_overrides(detect=DetectSettings(baseline_windows=3)))
    feed(detector, [4, 4, 4] + [40] * 10, context="other", criticality="medium")
    (state,) = detector.state.values()
    assert state["baseline"] == [4, 4, 4] and state["regression"]["firing"]


def test_regression_is_not_judged_on_context_rows() -> None:
    detector = Detector(SETTINGS)
    alerts = feed(detector, [4, 4, 4, 40, 40, 40], fingerprint=None, context="other", criticality="medium")
    assert all(step == [] for step in alerts)


@pytest.mark.parametrize(
    ("criticality", "p95", "expected"),
    [
        ("critical", 60, "high"),
        ("critical", 100, "critical"),
        ("high", 60, "warning"),
        ("high", 150, "high"),
        ("high", 250, "critical"),
        ("medium", 99, "info"),
        ("medium", 100, "warning"),
        ("medium", 250, "high"),
    ],
)
def test_severity_table(criticality: str, p95: float, expected: str) -> None:
    assert severity(criticality, p95, 50.0) == expected


def test_alerts_fit_the_alert_schema() -> None:
    codec = Codec()
    detector = Detector(SETTINGS)
    alerts = [a for step in feed(detector, [4, 4, 4, 80, 80, 4, 4]) for a in step]
    assert {(a.kind, a.state) for a in alerts} == {
        ("slo", "firing"), ("slo", "resolved"), ("regression", "firing"), ("regression", "resolved"),
    }  # fmt: skip
    for alert in alerts:
        assert codec.decode_record(codec.encode_record(alert, topic="dbopt.alerts.v1")) == alert
