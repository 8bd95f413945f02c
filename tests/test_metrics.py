"""Metric names follow Prometheus conventions and render in the text format (pure)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from streams.observe.metrics import ALERTS, DLQ_RECORDS, render


def test_names_types_and_units() -> None:
    DLQ_RECORDS.labels("too_old").inc()
    ALERTS.labels("critical", "firing").inc()
    families = {f.name: f for f in text_string_to_metric_families(render().decode())}
    expected = {
        "dbopt_events_in": "counter",
        "dbopt_dlq_records": "counter",
        "dbopt_late_events": "counter",
        "dbopt_fingerprint_overflow": "counter",
        "dbopt_windows_emitted": "counter",
        "dbopt_alerts": "counter",
        "dbopt_consumer_lag_messages": "gauge",
        "dbopt_processing_seconds": "histogram",
    }
    assert {name: families[name].type for name in expected} == expected
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    # counters are exposed with the _total suffix
    assert samples[("dbopt_dlq_records_total", (("reason", "too_old"),))] >= 1
    assert samples[("dbopt_alerts_total", (("severity", "critical"), ("state", "firing")))] >= 1
