"""Prometheus metrics of the worker and the ``/metrics`` page on Faust's web server.

Names follow Prometheus conventions: ``dbopt_`` prefix, counters end in ``_total`` (the client
adds it), durations in ``_seconds``. The agents increment the counters; :class:`MetricsSensor`
(installed by :func:`install_metrics_route`) measures, for every event of every agent, the
processing time and the consumer lag of its partition (log end offset - offset - 1).

=====================================  =========  ==================  ===============================
metric                                  type       labels              meaning
=====================================  =========  ==================  ===============================
dbopt_events_in_total                   counter    -                   query events read by ingest
dbopt_sketches_in_total                 counter    -                   statement sketches read by ingest
dbopt_dlq_records_total                 counter    reason              records sent to the DLQ
dbopt_late_events_total                 counter    -                   events later than the grace
dbopt_fingerprint_overflow_total        counter    service             events folded into ``other``
dbopt_windows_emitted_total             counter    kind                closed windows emitted
dbopt_windows_live_keys                 gauge      -                   keys with a pane in an open window
dbopt_windows_live_panes                gauge      -                   panes held for open windows
dbopt_alerts_total                      counter    severity, state     alerts sent
dbopt_consumer_lag_messages             gauge      topic, partition    messages not yet processed
dbopt_context_p95_seconds               gauge      service, context    p95 of the last closed window
dbopt_context_slo_p95_seconds           gauge      service, context    the p95 SLO that applied to it
dbopt_processing_seconds                histogram  topic               time an agent spent on an event
=====================================  =========  ==================  ===============================

The two ``dbopt_context_*`` gauges (set by the detector agent from the tumbling context rows) are
bounded: at most :data:`MAX_CONTEXT_SERIES` (service, context) pairs, the least recently updated
pair's series are removed first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import faust
from faust.sensors import Sensor
from faust.types import TP, EventT, StreamT
from faust.web import Request, Response, View
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

EVENTS_IN = Counter("dbopt_events_in", "Query events read by the ingest agent.")
SKETCHES_IN = Counter("dbopt_sketches_in", "Statement sketches (SDK sketch mode) read by the windows stage.")
DLQ_RECORDS = Counter("dbopt_dlq_records", "Records sent to the dead-letter topic, by reason.", ["reason"])
LATE_EVENTS = Counter("dbopt_late_events", "Events that arrived after their window's grace period.")
FINGERPRINT_OVERFLOW = Counter(
    "dbopt_fingerprint_overflow", "Events folded into the 'other' fingerprint by the per-service cap.", ["service"]
)
WINDOWS_EMITTED = Counter("dbopt_windows_emitted", "Closed windows emitted, by window kind.", ["kind"])
LIVE_KEYS = Gauge("dbopt_windows_live_keys", "Keys (service, fingerprint, context, database) with a pane in an open window.")
LIVE_PANES = Gauge("dbopt_windows_live_panes", "Panes the windows stage holds for its open windows.")
ALERTS = Counter("dbopt_alerts", "Alerts sent, by severity and state.", ["severity", "state"])
CONSUMER_LAG = Gauge(
    "dbopt_consumer_lag_messages", "Messages in a partition not yet processed by this worker.", ["topic", "partition"]
)
CONTEXT_P95 = Gauge(
    "dbopt_context_p95_seconds", "p95 of the last closed tumbling window of a (service, context).", ["service", "context"]
)
CONTEXT_SLO = Gauge(
    "dbopt_context_slo_p95_seconds", "The p95 SLO (season-aware) that applied to that window.", ["service", "context"]
)
MAX_CONTEXT_SERIES = 500


class LastWindows:
    """Sets the ``dbopt_context_*`` gauges, keeping at most ``limit`` (service, context) label sets."""

    def __init__(self, limit: int = MAX_CONTEXT_SERIES) -> None:
        self.limit = limit
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def set(self, service: str, context: str, p95_ms: float, slo_ms: float) -> None:
        key = (service, context)
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            old, _ = self._seen.popitem(last=False)
            CONTEXT_P95.remove(*old)
            CONTEXT_SLO.remove(*old)
        CONTEXT_P95.labels(*key).set(p95_ms / 1000)
        CONTEXT_SLO.labels(*key).set(slo_ms / 1000)


LAST_WINDOWS = LastWindows()
PROCESSING = Histogram(
    "dbopt_processing_seconds",
    "Time an agent spent on one event.",
    ["topic"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class MetricsSensor(Sensor):
    """Processing time and consumer lag of every event an agent handles."""

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT, event: EventT) -> dict[str, Any] | None:
        return {"started": time.perf_counter()}

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: StreamT, event: EventT, state: dict[str, Any] | None = None
    ) -> None:
        if state is not None:
            PROCESSING.labels(tp.topic).observe(time.perf_counter() - state["started"])
        highwater = stream.app.consumer.highwater(tp)
        if highwater is not None:
            CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(highwater - offset - 1, 0))


def render(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in Prometheus text exposition format."""
    return generate_latest(registry)


def install_metrics_route(app: faust.App) -> None:
    """Serve ``/metrics`` on the app's web server and measure every agent's events."""
    app.sensors.add(MetricsSensor())

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        # aiohttp refuses a charset inside content_type=, so the full header is set directly
        return web.bytes(render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
